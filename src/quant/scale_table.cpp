// ScaleTable: JSON form, checked loading, atomic saving.
#include "nnopt/quant/scale_table.h"

#include <nlohmann/json.hpp>

#include <sstream>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "scheme_json.h"

namespace nnopt {

using nlohmann::json;

json scheme_to_json(const QuantScheme& s) {
  json j;
  j["bits"] = s.bits();
  j["signed"] = s.is_signed();
  j["symmetric"] = s.symmetric();
  j["per_channel"] = s.per_channel();
  j["ch_axis"] = s.ch_axis();
  j["narrow_range"] = s.narrow_range();
  j["quant_min"] = s.quant_min();
  j["quant_max"] = s.quant_max();
  return j;
}

QuantScheme scheme_from_json(const json& j, const std::string& what) {
  NNOPT_CHECK(j.is_object(), ValueError, what, ": must be an object");
  auto need = [&](const char* key) -> const json& {
    NNOPT_CHECK(j.contains(key), ValueError, what, ": missing key '", key, "'");
    return j.at(key);
  };
  auto need_bool = [&](const char* key) {
    const json& v = need(key);
    NNOPT_CHECK(v.is_boolean(), ValueError, what, ": '", key, "' must be true or false, got ", v.dump());
    return v.get<bool>();
  };
  auto need_int = [&](const char* key) {
    const json& v = need(key);
    NNOPT_CHECK(v.is_number_integer(), ValueError, what, ": '", key, "' must be an integer, got ", v.dump());
    return v.get<int64_t>();
  };
  const int64_t bits = need_int("bits");
  NNOPT_CHECK(bits >= 2 && bits <= 8, ValueError, what, ": bits must be in [2, 8], got ", bits);
  QuantScheme s = QuantScheme(bits)
                      .is_signed(need_bool("signed"))
                      .symmetric(need_bool("symmetric"))
                      .per_channel(need_bool("per_channel"))
                      .narrow_range(j.contains("narrow_range") ? need_bool("narrow_range") : false);
  if (j.contains("ch_axis")) {
    const int64_t ax = need_int("ch_axis");
    NNOPT_CHECK(ax >= 0, ValueError, what, ": ch_axis must be >= 0, got ", ax);
    s.ch_axis(ax);
  }
  if (j.contains("quant_min"))
    NNOPT_CHECK(need_int("quant_min") == s.quant_min(), ValueError, what, ": quant_min ",
                j.at("quant_min").dump(), " does not match the scheme (", s.quant_min(), ")");
  if (j.contains("quant_max"))
    NNOPT_CHECK(need_int("quant_max") == s.quant_max(), ValueError, what, ": quant_max ",
                j.at("quant_max").dump(), " does not match the scheme (", s.quant_max(), ")");
  return s;
}

namespace {
constexpr const char* kFormat = "nnopt-scale-table";
constexpr int kVersion = 1;

json record_to_json(const QuantizerRecord& r) {
  json j = scheme_to_json(r.scheme);
  if (!r.observer.empty()) j["observer"] = r.observer;
  if (!r.follows.empty()) j["follows"] = r.follows;
  auto sc = r.qparams.scale.to(torch::kFloat32).contiguous();
  auto zp = r.qparams.zero_point.to(torch::kInt64).contiguous();
  json scales = json::array(), zps = json::array();
  for (int64_t i = 0; i < sc.numel(); ++i) scales.push_back(static_cast<double>(sc.data_ptr<float>()[i]));
  for (int64_t i = 0; i < zp.numel(); ++i) zps.push_back(zp.data_ptr<int64_t>()[i]);
  j["scale"] = scales;
  j["zero_point"] = zps;
  return j;
}

QuantizerRecord record_from_json(const json& j, const std::string& what) {
  NNOPT_CHECK(j.is_object(), ValueError, what, ": must be an object");
  static const char* kKeys[] = {"bits", "signed", "symmetric", "per_channel", "ch_axis",
                                "narrow_range", "quant_min", "quant_max", "observer",
                                "follows", "scale", "zero_point"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* k : kKeys) known = known || it.key() == k;
    NNOPT_CHECK(known, ValueError, what, ": unknown key '", it.key(), "'");
  }
  auto need = [&](const char* key) -> const json& {
    NNOPT_CHECK(j.contains(key), ValueError, what, ": missing key '", key, "'");
    return j.at(key);
  };
  QuantizerRecord r;
  r.scheme = scheme_from_json(j, what);
  for (const char* key : {"observer", "follows"})
    if (j.contains(key)) {
      NNOPT_CHECK(j.at(key).is_string(), ValueError, what, ": '", key, "' must be a string");
      (std::string(key) == "observer" ? r.observer : r.follows) = j.at(key).get<std::string>();
    }
  const json& sc = need("scale");
  const json& zp = need("zero_point");
  NNOPT_CHECK(sc.is_array() && !sc.empty(), ValueError, what, ": 'scale' must be a non-empty array");
  NNOPT_CHECK(zp.is_array(), ValueError, what, ": 'zero_point' must be an array");
  std::vector<float> scales;
  std::vector<int64_t> zps;
  for (const auto& v : sc) {
    NNOPT_CHECK(v.is_number(), ValueError, what, ": scale values must be numbers, got ", v.dump());
    scales.push_back(static_cast<float>(v.get<double>()));
  }
  for (const auto& v : zp) {
    NNOPT_CHECK(v.is_number_integer(), ValueError, what,
                ": zero_point values must be integers, got ", v.dump());
    zps.push_back(v.get<int64_t>());
  }
  r.qparams.scale = torch::tensor(scales, torch::kFloat32);
  r.qparams.zero_point = torch::tensor(zps, torch::kInt64);
  check_qparams(r.scheme, r.qparams, -1, what);
  return r;
}
}  // namespace

std::string ScaleTable::to_json(int indent) const {
  json nodes_j = json::object();
  for (const auto& [name, e] : nodes) {
    json n = json::object();
    if (e.weight) n["weight"] = record_to_json(*e.weight);
    if (e.activation) n["activation"] = record_to_json(*e.activation);
    nodes_j[name] = n;
  }
  json j;
  j["format"] = kFormat;
  j["version"] = kVersion;
  j["nodes"] = nodes_j;
  return j.dump(indent) + "\n";
}

ScaleTable ScaleTable::from_json(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw FileError(str_cat(source, ": not valid JSON: ", e.what()));
  }
  NNOPT_CHECK(j.is_object() && j.value("format", std::string()) == kFormat, FileError, source,
              ": not an nnopt scale table (\"format\" must be \"", kFormat, "\")");
  NNOPT_CHECK(j.contains("version") && j["version"].is_number_integer() &&
                  j["version"].get<int64_t>() == kVersion,
              ValueError, source, ": unsupported version ",
              j.contains("version") ? j["version"].dump() : std::string("(missing)"),
              " (expected ", kVersion, ")");
  NNOPT_CHECK(j.contains("nodes") && j["nodes"].is_object(), ValueError, source,
              ": missing key 'nodes' (an object)");
  ScaleTable t;
  for (auto it = j["nodes"].begin(); it != j["nodes"].end(); ++it) {
    const std::string& name = it.key();
    const json& n = it.value();
    const std::string where = str_cat(source, ": node '", name, "'");
    NNOPT_CHECK(n.is_object(), ValueError, where, ": must be an object");
    ScaleTableEntry e;
    for (auto k = n.begin(); k != n.end(); ++k) {
      if (k.key() == "weight")
        e.weight = record_from_json(k.value(), where + " weight");
      else if (k.key() == "activation")
        e.activation = record_from_json(k.value(), where + " activation");
      else
        throw ValueError(str_cat(where, ": unknown key '", k.key(),
                                 "' (expected 'weight', 'activation')"));
    }
    NNOPT_CHECK(e.weight || e.activation, ValueError, where,
                ": needs a 'weight' or an 'activation' entry");
    t.nodes[name] = std::move(e);
  }
  return t;
}

void ScaleTable::save(const std::string& path) const { write_file_atomic(path, to_json()); }

ScaleTable ScaleTable::load(const std::string& path) {
  return from_json(read_file(path), path);
}

std::string ScaleTable::summary() const {
  std::ostringstream os;
  auto line = [&](const std::string& node, const char* kind, const QuantizerRecord& r) {
    auto sc = r.qparams.scale;
    auto zp = r.qparams.zero_point;
    os << node << "  " << kind << "  " << r.scheme.describe() << "  scale ";
    if (sc.numel() == 1)
      os << sc.item<float>() << "  zero_point " << zp.item<int64_t>();
    else
      os << "[" << sc.min().item<float>() << ", " << sc.max().item<float>() << "] x"
         << sc.numel() << "  zero_point [" << zp.min().item<int64_t>() << ", "
         << zp.max().item<int64_t>() << "]";
    if (!r.follows.empty()) os << "  follows " << r.follows;
    os << "\n";
  };
  for (const auto& [name, e] : nodes) {
    if (e.weight) line(name, "weight", *e.weight);
    if (e.activation) line(name, "activation", *e.activation);
  }
  return os.str();
}

bool ScaleTable::operator==(const ScaleTable& o) const {
  if (nodes.size() != o.nodes.size()) return false;
  auto same = [](const std::optional<QuantizerRecord>& a, const std::optional<QuantizerRecord>& b) {
    if (a.has_value() != b.has_value()) return false;
    if (!a) return true;
    return a->scheme == b->scheme && a->observer == b->observer && a->follows == b->follows &&
           torch::equal(a->qparams.scale.to(torch::kFloat32), b->qparams.scale.to(torch::kFloat32)) &&
           torch::equal(a->qparams.zero_point.to(torch::kInt64),
                        b->qparams.zero_point.to(torch::kInt64));
  };
  for (const auto& [name, e] : nodes) {
    auto it = o.nodes.find(name);
    if (it == o.nodes.end() || !same(e.weight, it->second.weight) ||
        !same(e.activation, it->second.activation))
      return false;
  }
  return true;
}

}  // namespace nnopt
