#include "nnopt/nn/checkpoint.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/quant/attach.h"
#include "nnopt/quant/qat.h"

namespace nnopt {
using json = nlohmann::json;

namespace {
constexpr char kMagic[8] = {'N', 'N', 'O', 'P', 'T', 'C', 'K', '1'};
constexpr uint64_t kPrefix = 16;  // magic + header length

uint64_t fnv1a64(const char* p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(p[i]);
    h *= 1099511628211ULL;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

struct DtypeName {
  torch::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {torch::kFloat32, "float32"}, {torch::kFloat64, "float64"}, {torch::kInt64, "int64"},
    {torch::kInt32, "int32"},     {torch::kInt8, "int8"},       {torch::kUInt8, "uint8"},
    {torch::kBool, "bool"},       {torch::kFloat16, "float16"}, {torch::kInt16, "int16"},
};

const char* dtype_name(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  throw ValueError(str_cat("checkpoint: tensor dtype ", t, " cannot be stored"));
}

bool dtype_from_name(const std::string& s, torch::ScalarType& out) {
  for (const auto& d : kDtypes)
    if (s == d.name) {
      out = d.type;
      return true;
    }
  return false;
}
}  // namespace

std::string checkpoint_bytes(const Checkpoint& ck) {
  json tensors = json::array();
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t0] : ck.tensors) {
    NNOPT_CHECK(t0.defined(), ValueError, "checkpoint: tensor '", name, "' is undefined");
    auto t = t0.detach().to(torch::kCPU).contiguous();
    uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    tensors.push_back({{"name", name},
                       {"dtype", dtype_name(t.scalar_type())},
                       {"shape", t.sizes().vec()},
                       {"offset", offset},
                       {"nbytes", nbytes}});
    offset += nbytes;
    data.push_back(t);
  }
  std::string blob;
  blob.reserve(offset);
  for (const auto& t : data)
    blob.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  json meta;
  try {
    meta = json::parse(ck.meta_json);
  } catch (const json::exception& e) {
    throw ValueError(str_cat("checkpoint: metadata is not valid JSON: ", e.what()));
  }
  json header = {{"graph", json::parse(ck.graph.to_json(-1))},
                 {"meta", meta},
                 {"tensors", tensors},
                 {"data_bytes", offset},
                 {"checksum", hex64(fnv1a64(blob.data(), blob.size()))}};
  std::string h = header.dump();
  uint64_t hl = h.size();
  std::string out;
  out.reserve(kPrefix + h.size() + blob.size());
  out.append(kMagic, 8);
  out.append(reinterpret_cast<const char*>(&hl), 8);
  out += h;
  out += blob;
  return out;
}

void save_checkpoint(const std::string& path, const Checkpoint& ck) {
  write_file_atomic(path, checkpoint_bytes(ck));
}

Checkpoint load_checkpoint(const std::string& path) {
  NNOPT_CHECK(path_exists(path), FileError, path, ": no such file");
  uint64_t size = file_size(path);
  NNOPT_CHECK(size >= kPrefix, FileError, path, ": not an nnopt checkpoint (", size,
              " bytes, too short for the header)");
  std::string bytes = read_file(path);
  NNOPT_CHECK(std::memcmp(bytes.data(), kMagic, 8) == 0, FileError, path,
              ": not an nnopt checkpoint (wrong magic number)");
  uint64_t hl;
  std::memcpy(&hl, bytes.data() + 8, 8);
  NNOPT_CHECK(hl <= size - kPrefix, FileError, path, ": truncated or corrupt: header claims ",
              hl, " bytes but the file has ", size - kPrefix, " after the prefix");
  json header;
  try {
    header = json::parse(bytes.begin() + kPrefix, bytes.begin() + kPrefix + hl);
  } catch (const json::exception&) {
    throw FileError(str_cat(path, ": corrupt checkpoint header (JSON does not parse)"));
  }
  NNOPT_CHECK(header.is_object() && header.contains("graph") && header.contains("tensors") &&
                  header["tensors"].is_array() && header.contains("data_bytes") &&
                  header["data_bytes"].is_number_unsigned() && header.contains("checksum"),
              FileError, path, ": corrupt checkpoint header (missing fields)");
  uint64_t data_bytes = header["data_bytes"];
  uint64_t data_start = kPrefix + hl;
  NNOPT_CHECK(data_bytes == size - data_start, FileError, path,
              ": truncated: header says ", data_bytes, " bytes of tensor data, file holds ",
              size - data_start);
  const char* data = bytes.data() + data_start;
  NNOPT_CHECK(hex64(fnv1a64(data, data_bytes)) == header["checksum"], FileError, path,
              ": checksum mismatch (file is corrupt)");
  Checkpoint ck;
  try {
    ck.graph = Graph::from_json(header["graph"].dump());
  } catch (const GraphError& e) {
    throw FileError(str_cat(path, ": bad graph: ", e.what()));
  }
  ck.meta_json = header.value("meta", json::object()).dump();
  for (const auto& t : header["tensors"]) {
    std::string name = t.value("name", "");
    torch::ScalarType dt;
    NNOPT_CHECK(t.is_object() && !name.empty() && t.contains("dtype") && t["dtype"].is_string() &&
                    dtype_from_name(t["dtype"], dt) && t.contains("shape") &&
                    t["shape"].is_array() && t.contains("offset") &&
                    t["offset"].is_number_unsigned() && t.contains("nbytes") &&
                    t["nbytes"].is_number_unsigned(),
                FileError, path, ": bad tensor entry ", t.dump());
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : t["shape"]) {
      NNOPT_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= data_bytes + 1, FileError, path,
                  ": tensor '", name, "' has an absurd dimension ", d.dump());
      shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
      NNOPT_CHECK(numel <= data_bytes + 1, FileError, path, ": tensor '", name,
                  "' claims more elements than the file holds");
    }
    uint64_t off = t["offset"], nb = t["nbytes"];
    NNOPT_CHECK(nb == numel * c10::elementSize(dt), FileError, path, ": tensor '", name,
                "' size ", nb, " does not match its shape");
    NNOPT_CHECK(off <= data_bytes && nb <= data_bytes - off, FileError, path, ": tensor '", name,
                "' lies outside the data section");
    auto tensor = torch::empty(shape, torch::TensorOptions().dtype(dt));
    std::memcpy(tensor.data_ptr(), data + off, nb);
    NNOPT_CHECK(!ck.tensors.count(name), FileError, path, ": tensor '", name, "' appears twice");
    ck.tensors[name] = tensor;
  }
  return ck;
}

void save_model(const std::string& path, GraphModule& model, const std::string& meta_json) {
  Checkpoint ck;
  ck.graph = model->graph();
  ck.tensors = model->state();
  ck.meta_json = meta_json;
  save_checkpoint(path, ck);
}

GraphModule load_model(const std::string& path, std::string* meta_json) {
  return model_from_checkpoint(load_checkpoint(path), path, meta_json);
}

GraphModule model_from_checkpoint(Checkpoint ck, const std::string& path, std::string* meta_json) {
  GraphModule m(ck.graph);
  // Names starting with "__" are not model tensors (optimizer state in training checkpoints).
  for (auto it = ck.tensors.begin(); it != ck.tensors.end();)
    it = it->first.rfind("__", 0) == 0 ? ck.tensors.erase(it) : std::next(it);
  try {
    // Fake-quant models (quant/ptq.h, save_quantized_model) carry their
    // quantizers as a scale table in the metadata: re-attach them first.
    if (ck.meta_json.find("\"scale_table\"") != std::string::npos) {
      json meta = json::parse(ck.meta_json, nullptr, false);
      if (meta.is_object() && meta.contains("scale_table"))
        apply_scale_table(m, ScaleTable::from_json(meta["scale_table"].dump(), "scale table"));
    }
    // Models that keep non-uniform QAT quantizers (APoT, save_qat_model).
    if (has_qat_transforms(ck.meta_json)) restore_qat_transforms(m, ck.meta_json);
    m->load_state(ck.tensors, true);
  } catch (const ValueError& e) {
    throw FileError(str_cat(path, ": ", e.what()));
  }
  if (meta_json) *meta_json = ck.meta_json;
  return m;
}

}  // namespace nnopt
