// Structural gradient-path analysis: read off the graph alone how the loss's gradient reaches every node.
//
// The gradient of the loss with respect to a node's output is a sum over the directed paths from that node to the
// loss of the product of the Jacobians of the nodes on the path. For every node (leaves included) we count those
// paths and the least and the most normalisation nodes on them, by dynamic programming over the DAG in reverse
// topological order (one pass over the edges; no path is enumerated):
//
//   paths(loss) = 1,          paths(v)     = sum over users u of v (one term per argument)  paths(u)
//   min_norms(loss) = 0,      min_norms(v) = min over users u of  [u is a norm, v its input 0] + min_norms(u)
//                             max_norms(v) = max over users u of  [u is a norm, v its input 0] + max_norms(u)
//
// so the norms counted are those whose Jacobian the gradient of v's output passes through: the users on the path,
// not v itself, and a norm only where the path enters through the tensor it normalises (argument 0), not through
// its gain or bias. TOPOLOGIES.md §6's "norms on the shortest path to the output of sublayer k" is min_norms of that
// output. docs/graph.md gives the expected numbers for Post-LN, Pre-LN and the others.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "analysis/graph.h"

namespace skipgrad {

struct NodePaths {
  // Number of distinct paths to the loss, as a double: exact up to 2^53, then rounded (relative error 1e-16),
  // +infinity past 1.8e308 (a 24+24-layer encoder-decoder has ~1e50). 0 when the node does not reach the loss.
  double paths = 0;
  // Least / most norm nodes (family "norm") on a path to the loss; -1 when the node does not reach it.
  int64_t min_norms = -1, max_norms = -1;
  // The same, not counting the per-head norms inside attention branches: nodes whose name contains
  // "q_norm", "k_norm" or "v_norm" (qk_norm too). HybridNorm's QKV norms sit only there.
  int64_t min_norms_outer = -1, max_norms_outer = -1;

  bool reaches_loss() const { return paths > 0; }
  // Some path to the loss crosses no norm at all (the gradient has an identity-like route past every norm).
  bool norm_free() const { return reaches_loss() && min_norms == 0; }
  bool operator==(const NodePaths&) const = default;
};

// A sublayer output: a residual add ("...residual_add"), a ResiDual dual-stream add ("...dual_add"), or the
// branch output a residual add adds to the stream (see docs/graph.md for how the branch input is recognised).
struct SublayerPaths {
  int64_t node = -1;
  std::string name;
  std::string kind;   // "residual_add", "dual_add" or "branch"
  std::string layer;  // layer_scope(name): "enc.3"; "" when outside any numbered layer
  NodePaths stats;
};

// One numbered layer scope ("enc.3", "dec.0"): the extremes over its parameters and its sublayer outputs.
struct LayerPaths {
  std::string scope;
  int64_t params = 0;             // parameter leaves in the layer that reach the loss
  double max_param_paths = 0;     // the most paths from one of them
  int64_t param_min_norms = -1;   // min over its parameters of min_norms
  int64_t param_max_norms = -1;   // max over its parameters of max_norms
  int64_t param_min_norms_outer = -1, param_max_norms_outer = -1;
  int64_t output_min_norms = -1;  // min/max over its residual/dual adds (each sublayer's, before any norm after it)
  int64_t output_max_norms = -1;
  bool norm_free = false;         // some parameter of the layer has a norm-free path to the loss
};

struct PathStats {
  int64_t loss = -1;                     // graph id of the loss node
  std::vector<NodePaths> nodes;          // indexed by graph id
  std::vector<std::pair<std::string, NodePaths>> params;  // the parameter table's order
  std::vector<SublayerPaths> sublayers;  // in graph order
  std::vector<LayerPaths> layers;        // in order of first appearance

  const NodePaths& at(int64_t id) const;
  const NodePaths& param(const std::string& name) const;  // throws when no such parameter
  const LayerPaths& layer(const std::string& scope) const;
};

// Throws Error when loss_node_id is not a node of the graph.
PathStats analyze_paths(const Graph& g, int64_t loss_node_id);
// Same, with the loss taken to be the last op node of the graph.
PathStats analyze_paths(const Graph& g);

// Markdown tables (layers, then sublayer outputs) for reports and the command line.
std::string paths_markdown(const Graph& g, const PathStats& s);

}  // namespace skipgrad
