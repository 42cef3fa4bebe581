// A snapshot of the autograd graph as plain data, and its dumps (Graphviz DOT, JSON).
//
//   Tensor loss = model(batch);
//   loss.backward(Tensor(), /*retain_graph=*/true);      // keep the tape: the dump wants its gradient norms
//   Graph g = Graph::from_tape(current_tape());
//   DotOptions opt;
//   opt.max_depth = 2;                                    // one box per sublayer
//   opt.filter = "enc.3";                                 // layer 3 and its neighbours
//   g.save_dot("layer.dot", opt);                         // then: dot -Tsvg layer.dot -o layer.svg
//   g.save_json("graph.json");                            // docs/graph_schema.json describes it
//
// The snapshot owns no tensors: it holds names, shapes, ids and norms, so it outlives the tape, compares with ==,
// and round-trips through JSON (Graph::from_json(g.to_json()) == g). docs/graph.md explains how to read it.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "tensor/error.h"
#include "tensor/files.h"

namespace skipgrad {

class Tape;
class Tensor;

// Norms compare equal when both are NaN (a NaN gradient round-trips through JSON as NaN).
inline bool same_norm(double a, double b) { return a == b || (a != a && b != b); }

// One vertex: an op recorded on the tape, or a leaf (a parameter or another input) that an op reads.
struct GraphNode {
  int64_t id = -1;       // index in Graph::nodes; nodes are in topological order (inputs before their users)
  int64_t tape_id = -1;  // the op's id on the tape (Tensor::node_id()); -1 for leaves
  std::string kind;      // "op", "param" (a named leaf that requires grad) or "input" (any other leaf)
  std::string op;        // op-table name ("layer_norm"); "param" or "input" for leaves
  std::string family;    // family_name() of the op ("norm", "attention", ...); "leaf" for leaves
  std::string name;      // scoped name "enc.3.ffn.residual_add"; a leaf's parameter name, the name given by
                         // Tensor::named ("enc.pad_mask"), or "input"
  std::string scope;     // the name without its last component: "enc.3.ffn" ("" at top level)
  Shape shape;
  std::string dtype;     // "float32"
  bool requires_grad = false;
  std::vector<int64_t> inputs;  // ids of the nodes this op reads, in argument order (undefined arguments skipped)
  std::vector<std::pair<std::string, std::string>> params;  // op parameters as text: {"eps", "1e-05"}
  int64_t saved_bytes = 0;  // bytes of the tensors the op keeps for backward
  double value_norm = -1;   // L2 norm of the output while the tensor is alive; -1 when unknown
  double grad_norm = -1;    // L2 norm of dL/d(output) after backward (a leaf: of its .grad); -1 when unknown

  bool is_leaf() const { return kind != "op"; }
  // every field (a new one goes into both ties), the norms by same_norm
  bool operator==(const GraphNode& o) const {
    return std::tie(id, tape_id, kind, op, family, name, scope, shape, dtype, requires_grad, inputs, params,
                    saved_bytes) == std::tie(o.id, o.tape_id, o.kind, o.op, o.family, o.name, o.scope, o.shape,
                                             o.dtype, o.requires_grad, o.inputs, o.params, o.saved_bytes) &&
           same_norm(value_norm, o.value_norm) && same_norm(grad_norm, o.grad_norm);
  }
};

// One row of the parameter table: every "param" leaf of the graph.
struct GraphParam {
  std::string name;  // "enc.0.ffn.fc1.weight"
  int64_t node = -1; // its GraphNode id
  Shape shape;
  std::string dtype;
  int64_t numel = 0;
  double value_norm = -1;  // -1 when unknown
  double grad_norm = -1;   // L2 norm of .grad; -1 when it has none
  bool operator==(const GraphParam& o) const {  // every field (a new one goes into both ties), the norms by same_norm
    return std::tie(name, node, shape, dtype, numel) == std::tie(o.name, o.node, o.shape, o.dtype, o.numel) &&
           same_norm(value_norm, o.value_norm) && same_norm(grad_norm, o.grad_norm);
  }
};

struct GraphOptions {
  bool value_norms = true;  // compute ||value|| of every tensor still alive (all of them in one batched reduction)
};

struct DotOptions {
  // Scopes deeper than max_depth components collapse into one box each: 1 draws one box per layer
  // ("enc.3"), 2 one per sublayer ("enc.3.ffn"). -1 draws every node.
  int max_depth = -1;
  // Keep only nodes inside this scope or name (component-wise: "enc.1" keeps "enc.1.ffn.add", not "enc.10...")
  // plus their direct inputs and users. Empty keeps everything.
  std::string filter;
  bool leaves = true;          // draw parameter and input leaves
  // With max_depth >= 0: an input leaf (not a parameter) read in more drawn items than this is left out and named
  // in a note instead (a padding mask read by every layer box). -1 draws them all.
  int max_leaf_fanout = 8;
  bool edge_grad_norms = true; // label each edge with ||dL/dx|| of the tensor x it carries (when known)
  std::string rankdir = "TB";  // Graphviz layout direction: TB (inputs on top) or BT, LR, RL
};

struct Graph {
  std::vector<GraphNode> nodes;
  std::vector<GraphParam> params;

  // Snapshot of every node on the tape and every leaf they read. Norms of outputs still alive are computed
  // (under no-grad); gradient norms are the ones the last backward left (set_track_grad_norms, on by default).
  static Graph from_tape(const Tape& tape, const GraphOptions& opt = {});
  // Parses the JSON that to_json writes (throws Error naming the offending node or key).
  static Graph from_json(const std::string& text);
  static Graph load_json(const std::string& path);

  // One node (and one parameter) per line, so grep and diff work on it too.
  std::string to_json() const;
  // One line per node, as an equation: "#12 enc.0.ffn.residual_add = add(#9, #11) float32[2,4,16] |g| 0.0123".
  std::string to_text() const;
  std::string to_dot(const DotOptions& opt = {}) const;
  // Written atomically: to a temporary file beside `path`, then renamed over it.
  void save_json(const std::string& path) const;
  void save_dot(const std::string& path, const DotOptions& opt = {}) const;

  // Lookups (throw Error when absent).
  const GraphNode& at(int64_t id) const;
  int64_t find(const std::string& name) const;  // the first node with this name
  int64_t id_of(const Tensor& t) const;         // the node that produced t, or t's leaf entry
  std::vector<int64_t> find_all(const std::string& name) const;
  int64_t find_by_tape_id(int64_t tape_id) const;
  // users[i] = ids of the nodes that read node i (one entry per argument, so x*x lists the user twice).
  std::vector<std::vector<int64_t>> users() const;
  // Throws Error (naming `op`) unless every node's id is its position, every input an earlier node and every
  // parameter entry a param node: what the analyses and dumps rely on. Snapshots and from_json always pass;
  // a hand-built graph is checked by analyze_paths, to_dot and users before they index it.
  void validate(const char* op) const;

  bool operator==(const Graph&) const = default;
};

// ---- roles: how the dump colours a node, and what the path analysis calls a residual add ----
enum class NodeRole { Parameter, Input, Norm, Residual, Attention, FeedForward, Loss, Other };
// Checked in this order: Parameter/Input: leaves. Norm: family "norm". Residual: name ends in "residual_add" or
// "dual_add". Loss: family "loss". Attention: family "attention", or a scope component containing
// "attn"/"attention". FeedForward: a scope component containing "ffn"/"mlp"/"feed_forward".
NodeRole node_role(const GraphNode& n);
const char* role_name(NodeRole r);
bool is_residual_add(const GraphNode& n);  // name ends in "residual_add" or "dual_add"

// ---- names ----
std::string scope_of(const std::string& name);          // "enc.3.ffn.add" -> "enc.3.ffn"
std::vector<std::string> name_parts(const std::string& name);  // "enc.3.ffn" -> {"enc", "3", "ffn"}
// The layer a name belongs to: its shortest prefix whose last component is an integer ("enc.3.ffn.add" ->
// "enc.3", "model.layers.7.attn" -> "model.layers.7"); "" when none.
std::string layer_scope(const std::string& name);
// name == prefix, or name starts with prefix + "."  (an empty prefix matches everything).
bool in_scope(const std::string& name, const std::string& prefix);

// ---- JSON text ----
// The length of the well-formed UTF-8 sequence that starts at s[i] (RFC 3629: no overlong forms, no surrogates,
// nothing above U+10FFFF), its code point in *code_point when given; 0 when the bytes there are not one.
size_t utf8_sequence(std::string_view s, size_t i, uint32_t* code_point = nullptr);
// Appends s as a JSON string: quoted, with quotes, backslashes and control characters escaped, and each byte that
// does not begin well-formed UTF-8 written as U+FFFD (the output always parses).
void append_json_string(std::string& out, std::string_view s);

// ---- files ----
// write_file_atomic, check_writable, read_file and shell_quote: tensor/files.h (included here)
// gnuplot: whether it is on the PATH, and running `script` in folder `dir` (the script names its files relative to
// it, so gnuplot parses no path and the shell sees only quoted ones); quiet drops gnuplot's stderr. True on success.
bool gnuplot_available();
bool run_gnuplot(const std::string& dir, const std::string& script, bool quiet = false);
// Graphviz: whether `dot` is on the PATH, and dot_path -> out_path (format from the extension: .svg, .png, .pdf).
bool graphviz_available();
void render_dot(const std::string& dot_path, const std::string& out_path);

}  // namespace skipgrad
