// Graph snapshot from the tape, lookups, node roles, name helpers, and running gnuplot and Graphviz.
#include "analysis/graph.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <unordered_map>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "autograd/tape.h"

namespace skipgrad {

// ---------------------------------------------------------------- snapshot

namespace {

// The L2 norms a snapshot reports, sqrt(sum x^2) of floating tensors, accumulated in double on each tensor's device
// (a float32 square would overflow past 1.8e19 where the norm itself fits). They are queued while the nodes are
// made and computed together: one norm2_f64 call and one read per device, so a snapshot on a GPU waits for it
// once, not once per node. The norm kernels copy a strided (on the CPU also a bf16) tensor first; once such copies
// would pass kCopyBudget the queue is computed early, so a snapshot's extra memory stays bounded. A norm that cannot
// be had (no tensor, an integer tensor) stays -1.
class NormQueue {
 public:
  void value(int64_t node, const AutogradMeta& m, const GraphOptions& opt) {
    if (opt.value_norms)
      if (std::shared_ptr<TensorImpl> impl = m.value.lock()) add(Tensor(impl), node, &GraphNode::value_norm);
  }
  void grad(int64_t node, const Tensor& g) { add(g, node, &GraphNode::grad_norm); }

  void compute_into(std::vector<GraphNode>& nodes) {
    flush();
    for (const Done& d : done_) nodes[d.node].*d.field = d.norm;
  }

 private:
  static constexpr size_t kCopyBudget = size_t(64) << 20;
  struct Queued {
    std::vector<Tensor> tensors;
    std::vector<int64_t> node;
    std::vector<double GraphNode::*> field;
  };
  struct Done {
    int64_t node;
    double GraphNode::*field;
    double norm;
  };

  void add(const Tensor& t, int64_t node, double GraphNode::*field) {
    if (!t.defined() || !is_floating(t.dtype())) return;
    Queued& q = by_device_[t.device().str()];
    q.tensors.push_back(t);
    q.node.push_back(node);
    q.field.push_back(field);
    if (!t.is_contiguous() || t.dtype() == DType::BF16) copy_bytes_ += t.nbytes();
    if (copy_bytes_ > kCopyBudget) flush();
  }
  void flush() {
    NoGradGuard no_grad;
    for (auto& [device, q] : by_device_) {
      const std::vector<double> norms = norm2_f64(q.tensors).to_vector<double>();
      for (size_t i = 0; i < norms.size(); i++) done_.push_back({q.node[i], q.field[i], norms[i]});
    }
    by_device_.clear();
    copy_bytes_ = 0;
  }

  std::map<std::string, Queued> by_device_;
  std::vector<Done> done_;
  size_t copy_bytes_ = 0;
};

}  // namespace

Graph Graph::from_tape(const Tape& tape, const GraphOptions& opt) {
  Graph g;
  const auto& tape_nodes = tape.nodes();
  g.nodes.reserve(tape_nodes.size() * 3 / 2);
  std::vector<int64_t> op_gid(tape_nodes.size(), -1);  // tape position -> graph id
  std::unordered_map<const AutogradMeta*, int64_t> leaf_gid;
  const int64_t first_tape_id = tape_nodes.empty() ? 0 : tape_nodes.front()->id;
  NormQueue norms;

  // A tensor read by an op is either the output of an earlier node on this tape, or a leaf entry (made once).
  auto input_id = [&](const AutogradMeta& m) -> int64_t {
    if (m.producer && tape.find(m.producer->id) == m.producer) {
      int64_t gid = op_gid[m.producer->id - first_tape_id];
      if (gid >= 0) return gid;
    }
    auto it = leaf_gid.find(&m);
    if (it != leaf_gid.end()) return it->second;
    GraphNode leaf;
    leaf.id = (int64_t)g.nodes.size();
    bool is_param = !m.name.empty() && m.requires_grad && !m.produced;
    leaf.kind = is_param ? "param" : "input";
    leaf.op = leaf.kind;
    leaf.family = "leaf";
    leaf.name = m.name.empty() ? "input" : m.name;
    leaf.scope = m.name.empty() ? "" : scope_of(m.name);
    leaf.shape = m.shape;
    leaf.dtype = dtype_name(m.dtype);
    leaf.requires_grad = m.requires_grad;
    norms.value(leaf.id, m, opt);
    norms.grad(leaf.id, m.grad);
    if (is_param) g.params.push_back({leaf.name, leaf.id, leaf.shape, leaf.dtype, numel_of(leaf.shape)});
    leaf_gid.emplace(&m, leaf.id);
    g.nodes.push_back(std::move(leaf));
    return g.nodes.back().id;
  };

  for (size_t i = 0; i < tape_nodes.size(); i++) {
    const Node& tn = *tape_nodes[i];
    GraphNode n;
    for (const auto& in : tn.inputs)
      if (in) n.inputs.push_back(input_id(*in));
    n.id = (int64_t)g.nodes.size();
    n.tape_id = tn.id;
    n.kind = "op";
    n.op = tn.op ? tn.op->name : "?";
    n.family = tn.op ? family_name(tn.op->family) : "?";
    n.name = tn.name;
    n.scope = scope_of(tn.name);
    if (tn.output) {
      n.shape = tn.output->shape;
      n.dtype = dtype_name(tn.output->dtype);
      n.requires_grad = tn.output->requires_grad;
      norms.value(n.id, *tn.output, opt);
    }
    n.params.reserve(tn.params.size());
    for (const auto& [key, value] : tn.params) n.params.emplace_back(key, param_str(value));
    n.saved_bytes = (int64_t)tn.saved_bytes();
    n.grad_norm = tn.grad_norm;
    op_gid[i] = n.id;
    g.nodes.push_back(std::move(n));
  }
  norms.compute_into(g.nodes);
  for (GraphParam& p : g.params) {
    p.value_norm = g.nodes[p.node].value_norm;
    p.grad_norm = g.nodes[p.node].grad_norm;
  }
  return g;
}

// ---------------------------------------------------------------- text

// "#12 enc.0.ffn.residual_add = add(#9, #11) float32[2,4,16] |g| 0.0123"; a leaf: "#3 enc.0.ffn.fc1.weight param
// float32[32,16]". |x| and |g| are the value and gradient norms, where known.
std::string Graph::to_text() const {
  std::string out;
  char num[40];
  for (const GraphNode& v : nodes) {
    out += "#" + std::to_string(v.id) + " " + v.name;
    if (v.kind == "op") {
      out += " = " + v.op + "(";
      for (size_t j = 0; j < v.inputs.size(); j++) out += (j ? ", #" : "#") + std::to_string(v.inputs[j]);
      out += ")";
    } else {
      out += " " + v.kind;
    }
    out += " " + v.dtype + shape_str(v.shape);
    if (v.value_norm >= 0 || std::isnan(v.value_norm)) {
      std::snprintf(num, sizeof num, " |x| %.4g", v.value_norm);
      out += num;
    }
    if (v.grad_norm >= 0 || std::isnan(v.grad_norm)) {
      std::snprintf(num, sizeof num, " |g| %.4g", v.grad_norm);
      out += num;
    }
    out += '\n';
  }
  return out;
}

// ---------------------------------------------------------------- lookups

const GraphNode& Graph::at(int64_t id) const {
  check(id >= 0 && id < (int64_t)nodes.size(), "graph", ": no node with id ", id, " (the graph has ", nodes.size(),
        " nodes)");
  return nodes[id];
}

std::vector<int64_t> Graph::find_all(const std::string& name) const {
  std::vector<int64_t> ids;
  for (const GraphNode& n : nodes)
    if (n.name == name) ids.push_back(n.id);
  return ids;
}

int64_t Graph::find(const std::string& name) const {
  for (const GraphNode& n : nodes)
    if (n.name == name) return n.id;
  fail("graph", ": no node named '", name, "'");
}

int64_t Graph::find_by_tape_id(int64_t tape_id) const {
  for (const GraphNode& n : nodes)
    if (n.tape_id == tape_id && n.kind == "op") return n.id;
  fail("graph", ": no op with tape id ", tape_id, " in the graph (was it recorded after the snapshot?)");
}

int64_t Graph::id_of(const Tensor& t) const {
  check(t.defined(), "graph", ": id_of an undefined tensor");
  if (t.node_id() >= 0) return find_by_tape_id(t.node_id());
  std::string name = t.node_name();
  // made by an op whose tape has been freed (by a backward or a cleared tape): a node of this graph may carry the
  // same name, but it is not this tensor's
  if (!t.is_leaf())
    fail("graph", ": tensor ", t.meta_str(), " was made by '", name, "' on a tape that has since been freed (a ",
         "backward without retain_graph, or a cleared tape): it is in no graph recorded after that");
  check(!name.empty(), "graph", ": tensor ", t.meta_str(), " is an unnamed leaf; look it up by id instead");
  return find(name);
}

void Graph::validate(const char* op) const {
  for (size_t i = 0; i < nodes.size(); i++) {
    const GraphNode& n = nodes[i];
    check(n.id == (int64_t)i, op, ": node ", i, " ('", n.name, "') has id ", n.id, "; ids must equal positions");
    for (int64_t in : n.inputs)
      check(in >= 0 && in < n.id, op, ": node ", n.id, " ('", n.name, "') reads node ", in,
            "; inputs must be earlier nodes (Graph::nodes is in topological order)");
  }
  for (const GraphParam& p : params)
    check(p.node >= 0 && p.node < (int64_t)nodes.size() && nodes[p.node].kind == "param", op, ": parameter '",
          p.name, "' points at node ", p.node, ", which is not a param node");
}

std::vector<std::vector<int64_t>> Graph::users() const {
  validate("users");
  std::vector<std::vector<int64_t>> out(nodes.size());
  for (const GraphNode& n : nodes)
    for (int64_t in : n.inputs) out.at(in).push_back(n.id);
  return out;
}

// ---------------------------------------------------------------- names and roles

std::string scope_of(const std::string& name) {
  size_t dot = name.rfind('.');
  return dot == std::string::npos ? "" : name.substr(0, dot);
}

std::vector<std::string> name_parts(const std::string& name) {
  std::vector<std::string> parts;
  if (name.empty()) return parts;
  size_t start = 0;
  while (true) {
    size_t dot = name.find('.', start);
    parts.push_back(name.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

std::string layer_scope(const std::string& name) {
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    size_t end = dot == std::string::npos ? name.size() : dot;
    bool integer = end > start;
    for (size_t i = start; i < end; i++) integer = integer && std::isdigit((unsigned char)name[i]);
    if (integer && start > 0) return name.substr(0, end);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return "";
}

bool in_scope(const std::string& name, const std::string& prefix) {
  if (prefix.empty()) return true;
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  return name.size() == prefix.size() || name[prefix.size()] == '.' || prefix.back() == '.';
}

static bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_residual_add(const GraphNode& n) {
  return n.kind == "op" && (ends_with(n.name, "residual_add") || ends_with(n.name, "dual_add"));
}

NodeRole node_role(const GraphNode& n) {
  if (n.kind == "param") return NodeRole::Parameter;
  if (n.kind != "op") return NodeRole::Input;
  if (n.family == "norm") return NodeRole::Norm;
  if (is_residual_add(n)) return NodeRole::Residual;
  if (n.family == "loss") return NodeRole::Loss;
  if (n.family == "attention") return NodeRole::Attention;
  bool attn = false, ffn = false;
  for (const std::string& part : name_parts(n.scope)) {
    attn = attn || part.find("attn") != std::string::npos || part.find("attention") != std::string::npos;
    ffn = ffn || part.find("ffn") != std::string::npos || part.find("mlp") != std::string::npos ||
          part.find("feed_forward") != std::string::npos;
  }
  if (attn) return NodeRole::Attention;
  if (ffn) return NodeRole::FeedForward;
  return NodeRole::Other;
}

const char* role_name(NodeRole r) {
  switch (r) {
    case NodeRole::Parameter: return "parameter";
    case NodeRole::Input: return "input";
    case NodeRole::Norm: return "norm";
    case NodeRole::Residual: return "residual";
    case NodeRole::Attention: return "attention";
    case NodeRole::FeedForward: return "feed_forward";
    case NodeRole::Loss: return "loss";
    case NodeRole::Other: return "other";
  }
  return "other";
}

// ---------------------------------------------------------------- files

bool gnuplot_available() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

bool run_gnuplot(const std::string& dir, const std::string& script, bool quiet) {
  const std::string cmd =
      "cd " + shell_quote(dir) + " && gnuplot " + shell_quote(script) + (quiet ? " 2>/dev/null" : "");
  return std::system(cmd.c_str()) == 0;
}

bool graphviz_available() { return std::system("dot -V >/dev/null 2>&1") == 0; }

void render_dot(const std::string& dot_path, const std::string& out_path) {
  size_t dot = out_path.rfind('.');
  std::string format = dot == std::string::npos ? "" : out_path.substr(dot + 1);
  check(format == "svg" || format == "png" || format == "pdf", "render_dot", ": output '", out_path,
        "' should end in .svg, .png or .pdf");
  check(graphviz_available(), "render_dot", ": Graphviz 'dot' is not on the PATH (Debian: apt-get install graphviz)");
  // dot writes to a pipe (no temporary file anywhere: one of a guessable name in /tmp could be a planted link);
  // write_file_atomic puts the image in place (through symlinks, or to stdout), so out_path is whole or as it was.
  const std::string cmd = "dot -T" + format + " " + shell_quote(dot_path);
  FILE* pipe = ::popen(cmd.c_str(), "r");
  check(pipe != nullptr, "render_dot", ": cannot run '", cmd, "'");
  std::string image;
  char buf[1 << 16];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) image.append(buf, n);
  const int status = ::pclose(pipe);
  check(status == 0 && !image.empty(), "render_dot", ": '", cmd, "' failed");
  write_file_atomic(out_path, std::vector<std::string_view>{image}, "render_dot");
}

}  // namespace skipgrad
