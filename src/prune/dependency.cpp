#include "nnopt/prune/dependency.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include "nnopt/core/error.h"

namespace nnopt {

const char* slice_role_name(SliceRole r) {
  switch (r) {
    case SliceRole::kOut: return "out";
    case SliceRole::kIn: return "in";
    case SliceRole::kBn: return "bn";
  }
  return "?";
}

namespace {

// Union-find over channel elements; a class is locked if any member is.
struct UnionFind {
  std::vector<int64_t> parent;
  std::vector<char> locked;
  int64_t make(bool lock) {
    parent.push_back(static_cast<int64_t>(parent.size()));
    locked.push_back(lock ? 1 : 0);
    return parent.back();
  }
  int64_t find(int64_t a) {
    while (parent[a] != a) {
      parent[a] = parent[parent[a]];
      a = parent[a];
    }
    return a;
  }
  void unite(int64_t a, int64_t b) {
    a = find(a);
    b = find(b);
    if (a == b) return;
    if (a > b) std::swap(a, b);
    parent[b] = a;
    locked[a] = static_cast<char>(locked[a] | locked[b]);
  }
  void lock(int64_t a) { locked[find(a)] = 1; }
  bool is_locked(int64_t a) { return locked[find(a)] != 0; }
};

bool is_depthwise(const Conv2dAttrs& a) {
  return a.groups > 1 && a.groups == a.in_channels && a.groups == a.out_channels;
}

}  // namespace

DependencyGraph::DependencyGraph(const Graph& graph) : graph_(graph) {
  graph_.infer_shapes();
  const auto& nodes = graph_.nodes();
  UnionFind uf;
  // elems[i][c]: the element of channel c of node i's output.
  std::vector<std::vector<int64_t>> elems(nodes.size());
  auto fresh = [&](int64_t n, bool lock) {
    std::vector<int64_t> v(n);
    for (auto& e : v) e = uf.make(lock);
    return v;
  };
  auto lock_all = [&](const std::vector<int64_t>& v) {
    for (auto e : v) uf.lock(e);
  };

  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    const int64_t channels = n.shape.empty() ? 1 : n.shape[0];
    std::vector<const std::vector<int64_t>*> ins;
    for (const auto& in : n.inputs) ins.push_back(&elems[graph_.index_of(in)]);
    auto& out = elems[i];
    switch (n.op) {
      case OpKind::kInput:
        out = fresh(channels, true);
        break;
      case OpKind::kConv2d: {
        const auto& a = n.as<Conv2dAttrs>();
        if (a.groups == 1) {
          out = fresh(channels, false);
        } else if (is_depthwise(a)) {
          out = *ins[0];  // input channel c is output channel c
        } else {
          lock_all(*ins[0]);
          out = fresh(channels, true);
        }
        break;
      }
      case OpKind::kLinear: {
        const Node& src = graph_.node(n.inputs[0]);
        if (src.shape.size() == 1) {
          out = fresh(channels, false);
        } else {  // applied along the last dim of [C, ..., F]: leading channels pass through
          lock_all(*ins[0]);
          out = *ins[0];
        }
        break;
      }
      case OpKind::kBatchNorm:
      case OpKind::kReLU:
      case OpKind::kReLU6:
      case OpKind::kHardswish:
      case OpKind::kMaxPool:
      case OpKind::kAvgPool:
      case OpKind::kGlobalAvgPool:
      case OpKind::kDropout:
      case OpKind::kIdentity:
        out = *ins[0];
        break;
      case OpKind::kFlatten: {
        const Node& src = graph_.node(n.inputs[0]);
        const auto& in = *ins[0];
        if (n.as<FlattenAttrs>().start_dim == 1 && src.shape.size() > 1) {
          int64_t per = 1;
          for (size_t d = 1; d < src.shape.size(); ++d) per *= src.shape[d];
          out.resize(channels);
          for (int64_t f = 0; f < channels; ++f) out[f] = in[f / per];  // [C, H, W] -> [C*H*W]
        } else {
          out = in;
        }
        break;
      }
      case OpKind::kAdd: {
        out = *ins[0];
        bool same = true;
        for (auto* v : ins) same = same && v->size() == out.size();
        if (!same) {  // broadcasting: not prunable
          for (auto* v : ins) lock_all(*v);
          out = fresh(channels, true);
          break;
        }
        for (size_t k = 1; k < ins.size(); ++k)
          for (size_t c = 0; c < out.size(); ++c) uf.unite(out[c], (*ins[k])[c]);
        break;
      }
      case OpKind::kConcat: {
        if (n.as<ConcatAttrs>().dim == 1) {
          for (auto* v : ins) out.insert(out.end(), v->begin(), v->end());  // offsets
        } else {  // concatenated along space: channel c of every input is one channel
          out = *ins[0];
          for (size_t k = 1; k < ins.size(); ++k)
            for (size_t c = 0; c < out.size(); ++c) uf.unite(out[c], (*ins[k])[c]);
        }
        break;
      }
      default:
        throw GraphError(str_cat("dependency analysis: node '", n.name, "' has op ", op_name(n.op),
                                 " that pruning does not know"));
    }
    NNOPT_CHECK(static_cast<int64_t>(out.size()) == channels, GraphError,
                "dependency analysis: node '", n.name, "' maps ", out.size(),
                " channels but its output has ", channels);
  }
  lock_all(elems[graph_.index_of(graph_.output())]);  // the classes stay

  // Parameter slices of each unit (keyed by the element's root).
  std::map<int64_t, PruneUnit> units;
  auto add_slice = [&](int64_t elem, const std::string& node, SliceRole role, int64_t idx) {
    int64_t r = uf.find(elem);
    if (uf.locked[r]) return;
    units[r].slices.push_back({node, role, idx});
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    const auto& out = elems[i];
    if (n.op == OpKind::kConv2d) {
      const auto& a = n.as<Conv2dAttrs>();
      const auto& in = elems[graph_.index_of(n.inputs[0])];
      if (a.groups == 1) {
        for (int64_t c = 0; c < a.out_channels; ++c) add_slice(out[c], n.name, SliceRole::kOut, c);
        for (int64_t c = 0; c < a.in_channels; ++c) add_slice(in[c], n.name, SliceRole::kIn, c);
      } else if (is_depthwise(a)) {
        for (int64_t c = 0; c < a.out_channels; ++c) add_slice(out[c], n.name, SliceRole::kOut, c);
      }
    } else if (n.op == OpKind::kLinear) {
      const Node& src = graph_.node(n.inputs[0]);
      if (src.shape.size() != 1) continue;
      const auto& in = elems[graph_.index_of(n.inputs[0])];
      const auto& a = n.as<LinearAttrs>();
      for (int64_t c = 0; c < a.out_features; ++c) add_slice(out[c], n.name, SliceRole::kOut, c);
      for (int64_t f = 0; f < a.in_features; ++f) add_slice(in[f], n.name, SliceRole::kIn, f);
    } else if (n.op == OpKind::kBatchNorm) {
      for (size_t c = 0; c < out.size(); ++c)
        add_slice(out[c], n.name, SliceRole::kBn, static_cast<int64_t>(c));
    }
  }

  // Units that appear in one node output belong to one group.
  std::map<int64_t, int64_t> unit_id;  // root -> dense id
  std::vector<int64_t> roots;
  for (auto& [r, u] : units) {
    unit_id[r] = static_cast<int64_t>(roots.size());
    roots.push_back(r);
  }
  std::vector<int64_t> gparent(roots.size());
  std::iota(gparent.begin(), gparent.end(), 0);
  auto gfind = [&](int64_t a) {
    while (gparent[a] != a) a = gparent[a] = gparent[gparent[a]];
    return a;
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    int64_t first = -1;
    for (auto e : elems[i]) {
      auto it = unit_id.find(uf.find(e));
      if (it == unit_id.end()) continue;
      if (first < 0) {
        first = it->second;
      } else {
        int64_t a = gfind(first), b = gfind(it->second);
        if (a != b) gparent[std::max(a, b)] = std::min(a, b);
      }
    }
  }
  // Order groups and their units by first appearance in graph order.
  std::map<int64_t, size_t> group_of_root;     // gfind(unit) -> group index
  std::vector<int64_t> index_in_group(roots.size(), -1);
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (auto e : elems[i]) {
      auto it = unit_id.find(uf.find(e));
      if (it == unit_id.end()) continue;
      int64_t u = it->second;
      int64_t gr = gfind(u);
      auto git = group_of_root.find(gr);
      if (git == group_of_root.end()) {
        git = group_of_root.emplace(gr, groups_.size()).first;
        groups_.emplace_back();
      }
      DependencyGroup& g = groups_[git->second];
      if (index_in_group[u] < 0) {
        index_in_group[u] = g.size();
        g.units.push_back(std::move(units[roots[u]]));
      }
    }
  }
  // Tensors, members, producers and names.
  for (size_t i = 0; i < nodes.size(); ++i) {
    std::map<size_t, std::vector<int64_t>> maps;  // group -> channel map of this tensor
    for (size_t c = 0; c < elems[i].size(); ++c) {
      auto it = unit_id.find(uf.find(elems[i][c]));
      if (it == unit_id.end()) continue;
      size_t gi = group_of_root[gfind(it->second)];
      auto& m = maps[gi];
      if (m.empty()) m.assign(elems[i].size(), -1);
      m[c] = index_in_group[it->second];
    }
    for (auto& [gi, m] : maps) groups_[gi].tensors.emplace_back(nodes[i].name, std::move(m));
  }
  for (auto& g : groups_) {
    std::map<size_t, std::string> members;
    std::map<size_t, char> has_out;
    for (const auto& u : g.units)
      for (const auto& s : u.slices) {
        size_t idx = graph_.index_of(s.node);
        members[idx] = s.node;
        if (s.role == SliceRole::kOut) has_out[idx] = 1;
      }
    for (const auto& [idx, name] : members) {
      g.nodes.push_back(name);
      if (!has_out.count(idx)) continue;
      const Node& n = nodes[idx];
      if (g.name.empty()) g.name = name;
      bool dw = n.op == OpKind::kConv2d && is_depthwise(n.as<Conv2dAttrs>());
      if (!dw) g.producers.push_back(name);
    }
    if (g.name.empty()) g.name = g.nodes.front();
  }
  for (auto& g : groups_) find_branch(g);
}

// A group can be emptied if the node outputs that carry it hold only its
// channels, lead (through ops that keep channels apart) to exactly one
// ungrouped conv or linear, and that consumer's output reaches a two-operand
// add through batch norms only. Every node on the way is then dead when the
// group is empty.
void DependencyGraph::find_branch(DependencyGroup& g) const {
  std::set<std::string> carriers;
  for (const auto& [node, map] : g.tensors) {
    if (std::count(map.begin(), map.end(), int64_t{-1}) > 0) return;
    const Node& n = graph_.node(node);
    switch (n.op) {
      case OpKind::kConv2d: case OpKind::kLinear: case OpKind::kBatchNorm: case OpKind::kReLU:
      case OpKind::kReLU6: case OpKind::kHardswish: case OpKind::kMaxPool: case OpKind::kAvgPool:
      case OpKind::kDropout: case OpKind::kIdentity:
        break;
      default:
        return;  // add, concat, flatten, input, ...: channels shared or reshaped
    }
    if (node == graph_.output()) return;
    carriers.insert(node);
  }
  std::string consumer;
  for (const auto& c : carriers)
    for (const auto& k : graph_.consumers(c)) {
      if (carriers.count(k)) continue;
      const Node& kn = graph_.node(k);
      bool takes_in = (kn.op == OpKind::kConv2d && kn.as<Conv2dAttrs>().groups == 1) ||
                      kn.op == OpKind::kLinear;
      if (!takes_in || (!consumer.empty() && consumer != k)) return;
      consumer = k;
    }
  if (consumer.empty()) return;
  std::set<std::string> dead = carriers;
  std::string at = consumer;
  while (true) {
    if (at == graph_.output()) return;
    dead.insert(at);
    auto next = graph_.consumers(at);
    if (next.size() != 1) return;
    const Node& nn = graph_.node(next[0]);
    if (nn.op == OpKind::kBatchNorm) {
      at = next[0];
      continue;
    }
    if (nn.op != OpKind::kAdd || nn.inputs.size() != 2 || nn.inputs[0] == nn.inputs[1]) return;
    const std::string& other = nn.inputs[0] == at ? nn.inputs[1] : nn.inputs[0];
    if (dead.count(other)) return;
    g.branch_join = next[0];
    break;
  }
  for (const auto& n : graph_.nodes())
    if (dead.count(n.name)) g.branch_nodes.push_back(n.name);
}

size_t DependencyGraph::group_index(const std::string& name) const {
  for (size_t i = 0; i < groups_.size(); ++i)
    if (groups_[i].name == name) return i;
  std::string known;
  for (const auto& g : groups_) known += (known.empty() ? "" : ", ") + g.name;
  throw ValueError(str_cat("no dependency group named '", name, "' (groups: ", known, ")"));
}

int64_t DependencyGraph::num_units() const {
  int64_t n = 0;
  for (const auto& g : groups_) n += g.size();
  return n;
}

std::string DependencyGraph::to_string() const {
  std::ostringstream os;
  for (const auto& g : groups_) {
    os << g.name << ": " << g.size() << " channels, producers [";
    for (size_t k = 0; k < g.producers.size(); ++k) os << (k ? ", " : "") << g.producers[k];
    os << "], " << g.nodes.size() << " nodes\n";
  }
  return os.str();
}

}  // namespace nnopt
