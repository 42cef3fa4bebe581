// Path counts and norms-on-path by dynamic programming over the graph (see paths.h for the recurrences).
#include "analysis/paths.h"

#include <algorithm>
#include <cstdio>
#include <unordered_map>
#include <unordered_set>

namespace skipgrad {

namespace {

bool is_norm(const GraphNode& n) { return n.kind == "op" && n.family == "norm"; }

// A per-head norm inside an attention branch (HybridNorm's QKV norms, QK-norm).
bool is_qkv_norm(const GraphNode& n) {
  return is_norm(n) && (n.name.find("q_norm") != std::string::npos || n.name.find("k_norm") != std::string::npos ||
                        n.name.find("v_norm") != std::string::npos);
}

// Take the min/max of the running value `acc` (-1 = none yet) with a candidate.
void take_min(int64_t& acc, int64_t v) { acc = acc < 0 ? v : std::min(acc, v); }
void take_max(int64_t& acc, int64_t v) { acc = std::max(acc, v); }

// Whether node `a` is an ancestor of node `b` (b reads a, directly or through other nodes). Ids are in
// topological order, so the search back from b never goes below a's id: it visits only the nodes between them.
bool is_ancestor(const Graph& g, int64_t a, int64_t b) {
  std::vector<int64_t> todo = {b};
  std::unordered_set<int64_t> seen = {b};
  while (!todo.empty()) {
    const int64_t v = todo.back();
    todo.pop_back();
    for (int64_t in : g.nodes[v].inputs) {
      if (in == a) return true;
      if (in > a && seen.insert(in).second) todo.push_back(in);
    }
  }
  return false;
}

// The inputs of residual add `r` that are its branch (the sublayer output added to the stream): the op inputs
// that are not themselves residual adds; if several remain, drop those that feed another one (the branch is
// computed from the stream, never the other way round: this finds the stream when it comes straight from the
// embedding or an embedding norm); then those inside r's scope; then those that are not norms (in Post-LN the
// stream arrives from the previous sublayer's norm).
std::vector<int64_t> branch_inputs(const Graph& g, const GraphNode& r) {
  std::vector<int64_t> cand;
  for (int64_t in : r.inputs)
    if (g.nodes[in].kind == "op" && !is_residual_add(g.nodes[in]) &&
        std::find(cand.begin(), cand.end(), in) == cand.end())
      cand.push_back(in);
  auto narrow = [&](auto keep) {
    if (cand.size() < 2) return;
    std::vector<int64_t> kept;
    for (int64_t c : cand)
      if (keep(c)) kept.push_back(c);
    if (!kept.empty()) cand = kept;
  };
  narrow([&](int64_t c) {
    for (int64_t other : cand)
      if (other != c && is_ancestor(g, c, other)) return false;
    return true;
  });
  narrow([&](int64_t c) { return !r.scope.empty() && in_scope(g.nodes[c].name, r.scope); });
  narrow([&](int64_t c) { return !is_norm(g.nodes[c]); });
  return cand;
}

std::string fmt_paths(double p) {
  char buf[48];
  if (p < 1e15) std::snprintf(buf, sizeof buf, "%.0f", p);
  else std::snprintf(buf, sizeof buf, "%.3e", p);
  return buf;
}

std::string fmt_range(int64_t lo, int64_t hi) {
  if (lo < 0) return "-";
  return lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
}

}  // namespace

PathStats analyze_paths(const Graph& g, int64_t loss_node_id) {
  g.validate("analyze_paths");  // nodes after the loss too: the sublayer search reads them
  const int64_t n = (int64_t)g.nodes.size();
  check(loss_node_id >= 0 && loss_node_id < n, "analyze_paths", ": loss node id ", loss_node_id,
        " is not in the graph (", n, " nodes)");
  PathStats s;
  s.loss = loss_node_id;
  s.nodes.assign(n, NodePaths{});
  NodePaths& loss = s.nodes[loss_node_id];
  loss.paths = 1;
  loss.min_norms = loss.max_norms = loss.min_norms_outer = loss.max_norms_outer = 0;

  // Reverse topological order = decreasing id: when we reach u, every user of u (a larger id) has pushed its
  // counts into u, so u's are final; u then pushes them into its inputs. Nodes after the loss cannot reach it.
  for (int64_t u = loss_node_id; u >= 0; u--) {
    const GraphNode& node = g.nodes[u];
    const NodePaths& pu = s.nodes[u];
    if (!pu.reaches_loss()) continue;
    // A norm's Jacobian lies on the edge from its normalised input (argument 0); its gain and bias see only
    // the output gradient times x_hat (or 1), so paths through those edges do not count it.
    int64_t norm = is_norm(node) ? 1 : 0;
    int64_t outer = norm && !is_qkv_norm(node) ? 1 : 0;
    for (size_t j = 0; j < node.inputs.size(); j++) {
      int64_t v = node.inputs[j];
      int64_t nj = j == 0 ? norm : 0, oj = j == 0 ? outer : 0;
      NodePaths& pv = s.nodes[v];
      pv.paths += pu.paths;
      take_min(pv.min_norms, nj + pu.min_norms);
      take_max(pv.max_norms, nj + pu.max_norms);
      take_min(pv.min_norms_outer, oj + pu.min_norms_outer);
      take_max(pv.max_norms_outer, oj + pu.max_norms_outer);
    }
  }

  for (const GraphParam& p : g.params) s.params.emplace_back(p.name, s.at(p.node));

  // Sublayer outputs: residual and dual adds, and the branch each adds to the stream; those of this loss's graph
  // only (a tape can hold an earlier forward's nodes, under the same names, that reach no loss here).
  std::unordered_set<int64_t> listed;
  for (const GraphNode& r : g.nodes) {
    if (!is_residual_add(r) || !s.nodes[r.id].reaches_loss()) continue;
    // (every "residual_add" also ends in "dual_add", so test the longer suffix)
    bool residual = r.name.size() >= 12 && r.name.compare(r.name.size() - 12, 12, "residual_add") == 0;
    std::string kind = residual ? "residual_add" : "dual_add";
    for (int64_t b : branch_inputs(g, r))
      if (listed.insert(b).second)
        s.sublayers.push_back({b, g.nodes[b].name, "branch", layer_scope(g.nodes[b].name), s.nodes[b]});
    if (listed.insert(r.id).second) s.sublayers.push_back({r.id, r.name, kind, layer_scope(r.name), s.nodes[r.id]});
  }

  // Layers: extremes over each numbered layer's parameters and residual/dual adds.
  std::unordered_map<std::string, size_t> layer_index;
  auto layer_for = [&](const std::string& scope) -> LayerPaths& {
    auto [it, fresh] = layer_index.try_emplace(scope, s.layers.size());
    if (fresh) s.layers.push_back(LayerPaths{scope});
    return s.layers[it->second];
  };
  for (const GraphNode& v : g.nodes) {
    const NodePaths& pv = s.nodes[v.id];
    bool param = v.kind == "param", add = is_residual_add(v);
    if (!(param || add)) continue;
    std::string scope = layer_scope(v.name);
    if (scope.empty()) continue;
    LayerPaths& L = layer_for(scope);
    if (!pv.reaches_loss()) continue;
    if (param) {
      L.params++;
      L.max_param_paths = std::max(L.max_param_paths, pv.paths);
      take_min(L.param_min_norms, pv.min_norms);
      take_max(L.param_max_norms, pv.max_norms);
      take_min(L.param_min_norms_outer, pv.min_norms_outer);
      take_max(L.param_max_norms_outer, pv.max_norms_outer);
      L.norm_free = L.norm_free || pv.norm_free();
    } else {
      take_min(L.output_min_norms, pv.min_norms);
      take_max(L.output_max_norms, pv.max_norms);
    }
  }
  return s;
}

PathStats analyze_paths(const Graph& g) {
  for (int64_t i = (int64_t)g.nodes.size() - 1; i >= 0; i--)
    if (g.nodes[i].kind == "op") return analyze_paths(g, i);
  fail("analyze_paths", ": the graph has no op node (was anything recorded? does an input require grad?)");
}

const NodePaths& PathStats::at(int64_t id) const {
  check(id >= 0 && id < (int64_t)nodes.size(), "PathStats", ": no node with id ", id);
  return nodes[id];
}

const NodePaths& PathStats::param(const std::string& name) const {
  for (const auto& [pname, stats] : params)
    if (pname == name) return stats;
  fail("PathStats", ": no parameter named '", name, "'");
}

const LayerPaths& PathStats::layer(const std::string& scope) const {
  for (const LayerPaths& L : layers)
    if (L.scope == scope) return L;
  fail("PathStats", ": no layer scope '", scope, "'");
}

std::string paths_markdown(const Graph& g, const PathStats& s) {
  std::string out = "Loss node: `" + g.at(s.loss).name + "` (#" + std::to_string(s.loss) + ")\n\n";
  // Leaves that require grad but have no name are counted as inputs, not parameters: say why the columns are 0.
  int64_t unnamed = 0;
  for (const GraphNode& v : g.nodes) unnamed += v.kind == "input" && v.requires_grad;
  if (g.params.empty() && unnamed > 0)
    out += "Note: " + std::to_string(unnamed) + " leaves require grad but have no name, so no layer has parameters "
           "here: call Module::name_parameters() on the model (or Tensor::named) before the forward.\n\n";
  out += "| layer | params | max paths | norms on param paths (min-max) | without q/k/v norms | norms after its "
         "residual adds | norm-free path |\n|---|---|---|---|---|---|---|\n";
  for (const LayerPaths& L : s.layers)
    out += "| " + L.scope + " | " + std::to_string(L.params) + " | " + fmt_paths(L.max_param_paths) + " | " +
           fmt_range(L.param_min_norms, L.param_max_norms) + " | " +
           fmt_range(L.param_min_norms_outer, L.param_max_norms_outer) + " | " +
           fmt_range(L.output_min_norms, L.output_max_norms) + " | " + (L.norm_free ? "yes" : "no") + " |\n";
  out += "\n| sublayer output | kind | paths | norms (min-max) | without q/k/v norms | norm-free path |\n"
         "|---|---|---|---|---|---|\n";
  for (const SublayerPaths& b : s.sublayers)
    out += "| `" + b.name + "` | " + b.kind + " | " + fmt_paths(b.stats.paths) + " | " +
           fmt_range(b.stats.min_norms, b.stats.max_norms) + " | " +
           fmt_range(b.stats.min_norms_outer, b.stats.max_norms_outer) + " | " +
           (b.stats.norm_free() ? "yes" : "no") + " |\n";
  return out;
}

}  // namespace skipgrad
