// The graph as Graphviz DOT: nested clusters per scope (enc -> enc.3 -> enc.3.ffn), nodes coloured by role,
// shapes in the labels, ||dL/dx|| on the edges after backward. Scopes deeper than max_depth collapse into one box
// per scope, and a filter keeps one layer (or one node) and its direct neighbours.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "analysis/graph.h"

namespace skipgrad {

namespace {

const char* role_colour(NodeRole r) {
  switch (r) {
    case NodeRole::Parameter: return "#f6e8a6";
    case NodeRole::Input: return "#e0e0e0";
    case NodeRole::Norm: return "#9ecae1";
    case NodeRole::Residual: return "#fc9272";
    case NodeRole::Attention: return "#c7e9c0";
    case NodeRole::FeedForward: return "#dadaeb";
    case NodeRole::Loss: return "#fdae6b";
    case NodeRole::Other: return "#ffffff";
  }
  return "#ffffff";
}

// The length of the character at s[i] that DOT strings keep as it is (well-formed UTF-8, not a control byte); 0 for
// a byte quoted() writes otherwise (an escape, a space or U+FFFD).
size_t kept_char(std::string_view s, size_t i) {
  const unsigned char c = (unsigned char)s[i];
  if (c < 0x20 || c == 0x7f) return 0;
  return c < 0x80 ? 1 : utf8_sequence(s, i);
}

// A DOT double-quoted string that Graphviz reads back as s, in a label and a tooltip alike:
// - '\n' becomes DOT's line break (labels use it), '"' is escaped;
// - '&' is written as an entity (&#38;): a name holding "&amp;" would render as "&";
// - '\\' is doubled in a label and doubled twice in a tooltip, which Graphviz unescapes once more before it
//   expands \N (the node's name), \G, ... (Graphviz 2.42; an entity, &#92;, is expanded too);
// - a control byte (a NUL ends Graphviz's string) or a byte that does not begin well-formed UTF-8 is U+FFFD, as in
//   the JSON dump; a tab is a space;
// - a string past Graphviz's limit on one quoted string (16 KiB) is written as "..." + "..." pieces.
std::string quoted(std::string_view s, bool tooltip = false) {
  constexpr size_t kPieceBytes = 16000;
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  std::string q = "\"";
  size_t piece = 0;
  auto put = [&](std::string_view token) {  // tokens are never split across pieces
    if (piece + token.size() > kPieceBytes) {
      q += "\" + \"";
      piece = 0;
    }
    q += token;
    piece += token.size();
  };
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    const size_t n = kept_char(s, i);
    if (c == '\n') put("\\n");
    else if (c == '"') put("\\\"");
    else if (c == '\\') put(tooltip ? "\\\\\\\\" : "\\\\");
    else if (c == '&') put("&#38;");
    else if (c == '\t') put(" ");
    else if (n == 0) put(kReplacement);
    else put(s.substr(i, n));
    i += std::max<size_t>(n, 1);
  }
  return q + "\"";
}

std::string fmt_norm(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// The first `depth` components of a dotted name.
std::string prefix_parts(const std::string& name, int depth) {
  size_t pos = 0;
  for (int i = 0; i < depth; i++) {
    pos = name.find('.', pos);
    if (pos == std::string::npos) return name;
    pos++;
  }
  return name.substr(0, pos - 1);
}

int depth_of(const std::string& scope) {
  if (scope.empty()) return 0;
  int d = 1;
  for (char c : scope) d += c == '.';
  return d;
}

// The cluster an item is drawn in: its scope, or that scope's first kMaxClusterDepth components (Graphviz nests
// clusters recursively, and so do we: a scope of 30,000 components overflowed the stack).
constexpr int kMaxClusterDepth = 32;
std::string cluster_of(const std::string& scope) {
  return depth_of(scope) > kMaxClusterDepth ? prefix_parts(scope, kMaxClusterDepth) : scope;
}

// "n12" for node 12, "b3" for box 3.
std::string item_id(char kind, int64_t index) {
  std::string s(1, kind);
  s += std::to_string(index);
  return s;
}

// A collapsed scope drawn as one box.
struct Box {
  std::string scope;
  int64_t nodes = 0, norms = 0, residual_adds = 0, params = 0;
};

// What is drawn: a node ("n<id>") or a box ("b<index>"), in a cluster (its scope, "" = top level).
struct Item {
  std::string dot_id;
  std::string cluster;
  std::string decl;  // the DOT statement that declares it
};

// Whether quoted(s) keeps every character of s as it is (kept_char).
bool dot_lossless(const std::string& s) {
  for (size_t i = 0, n; i < s.size(); i += n)
    if ((n = kept_char(s, i)) == 0) return false;
  return true;
}

struct ClusterTree {
  std::unordered_map<std::string, std::vector<std::string>> children;  // scope -> child scopes, in order
  std::unordered_map<std::string, std::vector<size_t>> items;          // scope -> items drawn directly inside
  std::unordered_map<std::string, size_t> number;                      // scope -> its order of addition
  bool lossless = true;                                                // every scope is one quoted() keeps
  void add_scope(const std::string& scope) {
    if (scope.empty() || children.count(scope)) return;
    std::string parent = scope_of(scope);
    add_scope(parent);
    children[scope];
    children[parent].push_back(scope);
    number.emplace(scope, number.size());
    lossless = lossless && dot_lossless(scope);
  }
  // "cluster_enc.3.ffn", readable; all by number when a scope is one quoted() would change (two such scopes could
  // read alike, and Graphviz would merge them into one cluster)
  std::string cluster_id(const std::string& scope) const {
    return lossless ? quoted("cluster_" + scope) : "cluster_" + std::to_string(number.at(scope));
  }
  void emit(std::string& out, const std::string& scope, const std::vector<Item>& all, int indent) const {
    std::string pad(indent * 2, ' ');
    if (!scope.empty()) {
      out += pad + "subgraph " + cluster_id(scope) + " {\n";
      out += pad + "  label=" + quoted(scope) + "; style=\"rounded\"; color=\"#999999\"; fontsize=11;\n";
    }
    auto it = items.find(scope);
    if (it != items.end())
      for (size_t i : it->second) {
        out += pad;
        out += "  ";
        out += all[i].decl;
        out += '\n';
      }
    auto ch = children.find(scope);
    if (ch != children.end())
      for (const std::string& c : ch->second) emit(out, c, all, indent + 1);
    if (!scope.empty()) out += pad + "}\n";
  }
};

std::string node_decl(const GraphNode& n, const std::string& dot_id) {
  // The name after its scope; the whole name when the scope is not its prefix (a hand-made or edited graph:
  // fuzz/corpus/graph_json/scope_not_prefix.json).
  const size_t k = n.scope.size();
  const bool scoped = k > 0 && n.name.size() > k && n.name.compare(0, k, n.scope) == 0 && n.name[k] == '.';
  std::string last = scoped ? n.name.substr(k + 1) : n.name;
  // label: "residual_add\nadd [2,4]", or "matmul [2,4]" when the name is the op's, or "fc1.weight\n[4,4]"
  std::string label;
  if (n.kind == "op" && last == n.op) {
    label = n.op;
    label += ' ';
  } else {
    label = last;
    label += '\n';
    if (n.kind == "op") {
      label += n.op;
      label += ' ';
    }
  }
  label += shape_str(n.shape);
  NodeRole role = node_role(n);
  std::string decl = dot_id;
  decl += " [label=";
  decl += quoted(label);
  decl += n.kind == "op" ? ", shape=box" : ", shape=ellipse";
  decl += ", fillcolor=\"";
  decl += role_colour(role);
  decl += "\", tooltip=";
  decl += quoted(std::to_string(n.id) + ": " + n.name, /*tooltip=*/true);
  if (role == NodeRole::Residual || role == NodeRole::Norm) decl += ", penwidth=2";
  decl += "];";
  return decl;
}

// "1 norm", "3 norms"
std::string count_of(int64_t n, const char* what) {
  std::string s = std::to_string(n);
  s += ' ';
  s += what;
  if (n != 1) s += 's';
  return s;
}

std::string box_decl(const Box& b, const std::string& dot_id) {
  std::string label = b.scope;
  label += '\n';
  label += count_of(b.nodes, "node");
  // (appended piece by piece: GCC 12 warns falsely, -Wrestrict, on "literal" + temporary string)
  if (b.params) label.append(", ").append(count_of(b.params, "param"));
  if (b.norms) label.append("\n").append(count_of(b.norms, "norm"));
  if (b.residual_adds) label.append(b.norms ? ", " : "\n").append(count_of(b.residual_adds, "residual add"));
  return dot_id + " [label=" + quoted(label) + ", shape=box3d, fillcolor=\"#f0f0f0\", tooltip=" +
         quoted(b.scope, /*tooltip=*/true) + "];";
}

struct EdgeAgg {
  int64_t count = 0;
  int64_t first_source = -1;
  bool several_sources = false;
  bool all_known = true;
  double max_norm = 0;
};

}  // namespace

std::string Graph::to_dot(const DotOptions& opt) const {
  validate("to_dot");
  const int64_t n = (int64_t)nodes.size();
  check(opt.max_depth >= -1, "to_dot", ": max_depth must be -1 (no collapsing) or >= 0, got ", opt.max_depth);
  check(opt.rankdir == "TB" || opt.rankdir == "BT" || opt.rankdir == "LR" || opt.rankdir == "RL", "to_dot",
        ": rankdir must be TB, BT, LR or RL, got '", opt.rankdir, "'");

  // 1. Which nodes to draw: those in the filter's scope and their direct neighbours.
  std::vector<char> keep(n, opt.filter.empty());
  if (!opt.filter.empty()) {
    std::vector<char> seed(n, 0);
    bool any = false;
    for (const GraphNode& v : nodes) {
      if (!in_scope(v.name, opt.filter)) continue;
      seed[v.id] = keep[v.id] = 1;
      any = true;
      for (int64_t u : v.inputs) keep[u] = 1;
    }
    check(any, "to_dot", ": no node is named '", opt.filter, "' or lies in that scope");
    for (const GraphNode& v : nodes)
      for (int64_t u : v.inputs)
        if (seed[u]) keep[v.id] = 1;
  }
  if (!opt.leaves)
    for (const GraphNode& v : nodes)
      if (v.is_leaf()) keep[v.id] = 0;
  // In a collapsed view, an input leaf read in many boxes (a padding mask read by every layer) would draw an edge
  // to each: Graphviz takes minutes to lay those out at 48+48 layers. It is listed in a note instead.
  auto drawn_as = [&](const GraphNode& v) {  // the box's scope, or "#<id>" for the node itself
    if (opt.max_depth >= 0 && depth_of(v.scope) > opt.max_depth) return prefix_parts(v.scope, opt.max_depth + 1);
    std::string id(1, '#');  // (appended: GCC 12 warns falsely, -Wrestrict, on "#" + temporary string)
    return id.append(std::to_string(v.id));
  };
  std::string note;
  if (opt.max_depth >= 0 && opt.max_leaf_fanout >= 0) {
    std::vector<std::unordered_set<std::string>> reader_items(n);
    for (const GraphNode& v : nodes)
      if (keep[v.id])
        for (int64_t u : v.inputs)
          if (keep[u] && nodes[u].kind == "input") reader_items[u].insert(drawn_as(v));
    for (const GraphNode& v : nodes) {
      if (v.kind != "input" || !keep[v.id] || (int64_t)reader_items[v.id].size() <= opt.max_leaf_fanout) continue;
      keep[v.id] = 0;
      note += "\n" + v.name + " " + shape_str(v.shape) + ": read in " + std::to_string(reader_items[v.id].size()) +
              " places";
    }
  }

  // 2. Each kept node is drawn as itself, or as the box of its scope when that scope is deeper than max_depth.
  std::vector<Item> items;
  std::vector<int64_t> item_of(n, -1);
  std::vector<Box> boxes;
  std::vector<int64_t> box_item;
  std::unordered_map<std::string, int64_t> box_index;
  ClusterTree tree;
  for (const GraphNode& v : nodes) {
    if (!keep[v.id]) continue;
    if (opt.max_depth >= 0 && depth_of(v.scope) > opt.max_depth) {
      std::string box_scope = drawn_as(v);
      auto [it, fresh] = box_index.try_emplace(box_scope, (int64_t)boxes.size());
      if (fresh) {
        boxes.push_back({box_scope});
        box_item.push_back((int64_t)items.size());
        const std::string cluster = cluster_of(scope_of(box_scope));
        items.push_back({item_id('b', it->second), cluster, ""});
        tree.add_scope(cluster);
        tree.items[cluster].push_back(items.size() - 1);
      }
      Box& b = boxes[it->second];
      b.nodes++;
      b.norms += v.kind == "op" && v.family == "norm";
      b.residual_adds += is_residual_add(v);
      b.params += v.kind == "param";
      item_of[v.id] = box_item[it->second];
    } else {
      std::string id = item_id('n', v.id);
      const std::string cluster = cluster_of(v.scope);
      items.push_back({id, cluster, node_decl(v, id)});
      tree.add_scope(cluster);
      tree.items[cluster].push_back(items.size() - 1);
      item_of[v.id] = (int64_t)items.size() - 1;
    }
  }
  for (size_t i = 0; i < boxes.size(); i++) items[box_item[i]].decl = box_decl(boxes[i], items[box_item[i]].dot_id);

  // 3. Edges between drawn items, merged where boxes make several tensors run between the same two items.
  std::vector<std::pair<int64_t, int64_t>> edge_order;
  std::unordered_map<int64_t, EdgeAgg> edges;
  for (const GraphNode& v : nodes) {
    if (!keep[v.id]) continue;
    for (int64_t u : v.inputs) {
      if (!keep[u] || item_of[u] == item_of[v.id]) continue;
      int64_t key = item_of[u] * (int64_t)items.size() + item_of[v.id];
      auto [it, fresh] = edges.try_emplace(key);
      if (fresh) edge_order.emplace_back(item_of[u], item_of[v.id]);
      EdgeAgg& e = it->second;
      e.count++;
      if (e.first_source < 0) e.first_source = u;
      else if (e.first_source != u) e.several_sources = true;
      double g = nodes[u].grad_norm;
      if (g < 0) e.all_known = false;
      else if (std::isnan(g) || std::isnan(e.max_norm)) e.max_norm = NAN;  // a NaN gradient shows as nan, not 0
      else e.max_norm = std::max(e.max_norm, g);
    }
  }

  std::string out = "digraph skipgrad {\n  rankdir=" + opt.rankdir +
                    "; compound=true; newrank=true;\n"
                    "  node [style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];\n"
                    "  edge [fontname=\"Helvetica\", fontsize=8, color=\"#555555\"];\n";
  tree.emit(out, "", items, 0);
  if (!note.empty())
    out += "  inputs_not_drawn [shape=note, fillcolor=\"#e0e0e0\", label=" +
           quoted("inputs not drawn (max_leaf_fanout " + std::to_string(opt.max_leaf_fanout) + "):" + note) + "];\n";
  for (const auto& [from, to] : edge_order) {
    const EdgeAgg& e = edges[from * (int64_t)items.size() + to];
    out += "  ";
    out += items[from].dot_id;
    out += " -> ";
    out += items[to].dot_id;
    std::string label;
    if (opt.edge_grad_norms && e.all_known)
      label = std::string(e.several_sources ? "max " : "") + fmt_norm(e.max_norm);
    if (e.count > 1) {
      label += label.empty() ? "x" : " x";
      label += std::to_string(e.count);
    }
    if (!label.empty()) out += " [label=" + quoted(label) + "]";
    out += ";\n";
  }
  out += "}\n";
  return out;
}

void Graph::save_dot(const std::string& path, const DotOptions& opt) const { write_file_atomic(path, to_dot(opt)); }

}  // namespace skipgrad
