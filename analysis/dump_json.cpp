// The graph as JSON, and back. The format is described by docs/graph_schema.json (JSON Schema 2020-12):
//
//   {"format": "skipgrad-graph", "version": 1,
//    "nodes":  [{"id": 0, "tape_id": -1, "kind": "param", "op": "param", "family": "leaf", "role": "parameter",
//                "name": "enc.0.ffn.fc1.weight", "scope": "enc.0.ffn.fc1", "shape": [1024, 256],
//                "dtype": "float32", "requires_grad": true, "inputs": [], "params": {}, "saved_bytes": 0,
//                "value_norm": 9.1, "grad_norm": 0.02}, ...],
//    "params": [{"name": "enc.0.ffn.fc1.weight", "node": 0, "shape": [1024, 256], "dtype": "float32",
//                "numel": 262144, "value_norm": 9.1, "grad_norm": 0.02}, ...]}
//
// A norm that is unknown is null; a norm that overflowed is the string "Infinity" or "NaN" (JSON has no such
// numbers). "role" is derived from the other fields (node_role) for readers without our code; the loader ignores
// it. One node per line, so the file also greps and diffs well. Written by hand (fast); read with nlohmann/json.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "analysis/graph.h"

#if __has_include(<nlohmann/json.hpp>)
#include <nlohmann/json.hpp>
#define SKIPGRAD_HAVE_JSON 1
#endif

namespace skipgrad {

// ---- writing: by hand, straight into one string (10^5 nodes in a fraction of a second) ----

size_t utf8_sequence(std::string_view s, size_t i, uint32_t* code_point) {
  const unsigned char c = (unsigned char)s[i];
  const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  uint32_t cp = n == 1 ? c : c & (0x7F >> n);
  for (size_t k = 1; k < n; k++) {
    const unsigned char b = (unsigned char)s[i + k];
    if ((b & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (b & 0x3F);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  if (code_point) *code_point = cp;
  return n;
}

// JSON text is UTF-8: a byte that does not start a well-formed sequence (a name in Latin-1) is written as U+FFFD,
// so the document always parses (that name then reads back with U+FFFD in place of the byte).
void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    const size_t n = utf8_sequence(s, i);
    if (n == 0) {
      out += "\\ufffd";
      i++;
      continue;
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if ((unsigned char)c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", (unsigned)(unsigned char)c);
      out += buf;
    } else {
      out.append(s.data() + i, n);
    }
    i += n;
  }
  out += '"';
}

namespace {

constexpr const char* kFormat = "skipgrad-graph";
constexpr int kVersion = 1;

void put_int(std::string& out, int64_t v) {
  char buf[24];
  out.append(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

void put_ints(std::string& out, const std::vector<int64_t>& v) {
  out += '[';
  for (size_t i = 0; i < v.size(); i++) {
    if (i) out += ',';
    put_int(out, v[i]);
  }
  out += ']';
}

// Shortest text that reads back to the same double; null when unknown (< 0), strings for NaN and infinities.
void put_norm(std::string& out, double v) {
  if (std::isnan(v)) out += "\"NaN\"";
  else if (std::isinf(v)) out += v > 0 ? "\"Infinity\"" : "\"-Infinity\"";
  else if (v < 0) out += "null";
  else {
    char buf[32];
    out.append(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
  }
}

// One JSON object, its fields written in call order: `Fields{out}("id", 3)("name", s);` closes at the end of
// the statement. Doubles are norms (put_norm).
class Fields {
 public:
  explicit Fields(std::string& out) : out_(out) { out_ += '{'; }
  ~Fields() { out_ += '}'; }
  Fields& operator()(const char* key, int64_t v) { return put(key), put_int(out_, v), *this; }
  Fields& operator()(const char* key, const std::string& v) { return put(key), append_json_string(out_, v), *this; }
  // a C string is a string, not the bool it would otherwise convert to
  Fields& operator()(const char* key, const char* v) { return (*this)(key, std::string(v)); }
  Fields& operator()(const char* key, const std::vector<int64_t>& v) { return put(key), put_ints(out_, v), *this; }
  Fields& operator()(const char* key, bool v) { return put(key), out_ += v ? "true" : "false", *this; }
  Fields& operator()(const char* key, double v) { return put(key), put_norm(out_, v), *this; }
  Fields& operator()(const char* key, const std::vector<std::pair<std::string, std::string>>& v) {
    put(key);
    out_ += '{';
    for (size_t i = 0; i < v.size(); i++) {
      if (i) out_ += ',';
      append_json_string(out_, v[i].first);
      out_ += ':';
      append_json_string(out_, v[i].second);
    }
    out_ += '}';
    return *this;
  }

 private:
  void put(const char* key) {
    if (!first_) out_ += ',';
    first_ = false;
    out_ += '"';
    out_ += key;
    out_ += "\":";
  }
  std::string& out_;
  bool first_ = true;
};

void put_node(std::string& out, const GraphNode& n) {
  Fields{out}("id", n.id)("tape_id", n.tape_id)("kind", n.kind)("op", n.op)("family", n.family)(
      "role", role_name(node_role(n)))("name", n.name)("scope", n.scope)("shape", n.shape)(
      "dtype", n.dtype)("requires_grad", n.requires_grad)("inputs", n.inputs)("params", n.params)(
      "saved_bytes", n.saved_bytes)("value_norm", n.value_norm)("grad_norm", n.grad_norm);
}

void put_param(std::string& out, const GraphParam& p) {
  Fields{out}("name", p.name)("node", p.node)("shape", p.shape)("dtype", p.dtype)("numel", p.numel)(
      "value_norm", p.value_norm)("grad_norm", p.grad_norm);
}

}  // namespace

std::string Graph::to_json() const {
  std::string out;
  out.reserve(nodes.size() * 300 + params.size() * 150 + 100);
  out += "{\"format\": \"";
  out += kFormat;
  out += "\", \"version\": ";
  put_int(out, kVersion);
  out += ",\n\"nodes\": [";
  for (size_t i = 0; i < nodes.size(); i++) {
    out += i ? ",\n  " : "\n  ";
    put_node(out, nodes[i]);
  }
  out += "\n],\n\"params\": [";
  for (size_t i = 0; i < params.size(); i++) {
    out += i ? ",\n  " : "\n  ";
    put_param(out, params[i]);
  }
  out += "\n]}\n";
  return out;
}

#ifdef SKIPGRAD_HAVE_JSON
using json = nlohmann::ordered_json;  // keeps key order, so op params round-trip in order

namespace {

// ---- loading: every missing key or wrong type names where it is ----

const json& field(const json& obj, const char* key, const std::string& where) {
  check(obj.is_object(), "graph json", ": ", where, " is not an object");
  auto it = obj.find(key);
  check(it != obj.end(), "graph json", ": ", where, " has no '", key, "'");
  return *it;
}
std::string get_string(const json& obj, const char* key, const std::string& where) {
  const json& v = field(obj, key, where);
  check(v.is_string(), "graph json", ": ", where, ".", key, " must be a string, got ", v.dump());
  return v.get<std::string>();
}
int64_t get_int(const json& obj, const char* key, const std::string& where) {
  const json& v = field(obj, key, where);
  check(v.is_number_integer(), "graph json", ": ", where, ".", key, " must be an integer, got ", v.dump());
  return v.get<int64_t>();
}
bool get_bool(const json& obj, const char* key, const std::string& where) {
  const json& v = field(obj, key, where);
  check(v.is_boolean(), "graph json", ": ", where, ".", key, " must be true or false, got ", v.dump());
  return v.get<bool>();
}
Shape get_ints(const json& obj, const char* key, const std::string& where) {
  const json& v = field(obj, key, where);
  check(v.is_array(), "graph json", ": ", where, ".", key, " must be an array of integers, got ", v.dump());
  Shape out;
  out.reserve(v.size());
  for (const json& x : v) {
    check(x.is_number_integer(), "graph json", ": ", where, ".", key, " must hold integers, got ", x.dump());
    out.push_back(x.get<int64_t>());
  }
  return out;
}
double get_norm(const json& obj, const char* key, const std::string& where) {
  const json& v = field(obj, key, where);
  if (v.is_null()) return -1;
  if (v.is_number()) return v.get<double>();
  if (v == "NaN") return std::numeric_limits<double>::quiet_NaN();
  if (v == "Infinity") return std::numeric_limits<double>::infinity();
  if (v == "-Infinity") return -std::numeric_limits<double>::infinity();
  fail("graph json", ": ", where, ".", key, " must be a number, null, \"NaN\" or \"Infinity\", got ", v.dump());
}

GraphNode node_from_json(const json& j, int64_t index) {
  std::string where = "nodes[" + std::to_string(index) + "]";
  GraphNode n;
  n.id = get_int(j, "id", where);
  check(n.id == index, "graph json", ": ", where, " has id ", n.id, "; ids must equal the position in 'nodes'");
  n.tape_id = get_int(j, "tape_id", where);
  n.kind = get_string(j, "kind", where);
  check(n.kind == "op" || n.kind == "param" || n.kind == "input", "graph json", ": ", where, ".kind is '", n.kind,
        "', expected op, param or input");
  n.op = get_string(j, "op", where);
  n.family = get_string(j, "family", where);
  n.name = get_string(j, "name", where);
  n.scope = get_string(j, "scope", where);
  n.shape = get_ints(j, "shape", where);
  n.dtype = get_string(j, "dtype", where);
  n.requires_grad = get_bool(j, "requires_grad", where);
  n.inputs = get_ints(j, "inputs", where);
  for (int64_t in : n.inputs)
    check(in >= 0 && in < n.id, "graph json", ": ", where, " reads node ", in,
          "; inputs must be earlier nodes (the list is in topological order)");
  check(n.kind == "op" || n.inputs.empty(), "graph json", ": ", where, " is a leaf but has inputs");
  const json& params = field(j, "params", where);
  check(params.is_object(), "graph json", ": ", where, ".params must be an object, got ", params.dump());
  for (const auto& [key, value] : params.items()) {
    check(value.is_string(), "graph json", ": ", where, ".params.", key, " must be a string, got ", value.dump());
    n.params.emplace_back(key, value.get<std::string>());
  }
  n.saved_bytes = get_int(j, "saved_bytes", where);
  n.value_norm = get_norm(j, "value_norm", where);
  n.grad_norm = get_norm(j, "grad_norm", where);
  return n;
}

GraphParam param_from_json(const json& j, int64_t index, const Graph& g) {
  std::string where = "params[" + std::to_string(index) + "]";
  GraphParam p;
  p.name = get_string(j, "name", where);
  p.node = get_int(j, "node", where);
  check(p.node >= 0 && p.node < (int64_t)g.nodes.size() && g.nodes[p.node].kind == "param", "graph json", ": ",
        where, ".node = ", p.node, " is not a param node");
  p.shape = get_ints(j, "shape", where);
  p.dtype = get_string(j, "dtype", where);
  p.numel = get_int(j, "numel", where);
  p.value_norm = get_norm(j, "value_norm", where);
  p.grad_norm = get_norm(j, "grad_norm", where);
  return p;
}

}  // namespace

Graph Graph::from_json(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("graph json", ": not valid JSON: ", e.what());
  }
  check(j.is_object(), "graph json", ": the document must be an object");
  check(get_string(j, "format", "document") == kFormat, "graph json", ": 'format' must be \"", kFormat, "\"");
  int64_t version = get_int(j, "version", "document");
  check(version == kVersion, "graph json", ": version ", version, " is not supported (this build reads ", kVersion,
        ")");
  const json& nodes = field(j, "nodes", "document");
  const json& params = field(j, "params", "document");
  check(nodes.is_array() && params.is_array(), "graph json", ": 'nodes' and 'params' must be arrays");
  Graph g;
  g.nodes.reserve(nodes.size());
  for (size_t i = 0; i < nodes.size(); i++) g.nodes.push_back(node_from_json(nodes[i], (int64_t)i));
  for (size_t i = 0; i < params.size(); i++) g.params.push_back(param_from_json(params[i], (int64_t)i, g));
  return g;
}

#else  // built without nlohmann/json

Graph Graph::from_json(const std::string&) {
  fail("graph json", ": skipgrad was built without nlohmann/json, so it cannot read JSON graphs");
}

#endif

void Graph::save_json(const std::string& path) const { write_file_atomic(path, to_json()); }
Graph Graph::load_json(const std::string& path) { return from_json(read_file(path, "Graph::load_json")); }

}  // namespace skipgrad
