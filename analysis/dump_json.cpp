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

namespace {

constexpr const char* kFormat = "skipgrad-graph";
constexpr int kVersion = 1;

// ---- writing: by hand, straight into one string (10^5 nodes in a fraction of a second) ----

void put_string(std::string& out, const std::string& s) {
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if ((unsigned char)c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", (unsigned)(unsigned char)c);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
}

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

void put_key(std::string& out, const char* key, bool first = false) {
  if (!first) out += ',';
  out += '"';
  out += key;
  out += "\":";
}

void put_node(std::string& out, const GraphNode& n) {
  out += '{';
  put_key(out, "id", true);
  put_int(out, n.id);
  put_key(out, "tape_id");
  put_int(out, n.tape_id);
  put_key(out, "kind");
  put_string(out, n.kind);
  put_key(out, "op");
  put_string(out, n.op);
  put_key(out, "family");
  put_string(out, n.family);
  put_key(out, "role");
  put_string(out, role_name(node_role(n)));
  put_key(out, "name");
  put_string(out, n.name);
  put_key(out, "scope");
  put_string(out, n.scope);
  put_key(out, "shape");
  put_ints(out, n.shape);
  put_key(out, "dtype");
  put_string(out, n.dtype);
  put_key(out, "requires_grad");
  out += n.requires_grad ? "true" : "false";
  put_key(out, "inputs");
  put_ints(out, n.inputs);
  put_key(out, "params");
  out += '{';
  for (size_t i = 0; i < n.params.size(); i++) {
    if (i) out += ',';
    put_string(out, n.params[i].first);
    out += ':';
    put_string(out, n.params[i].second);
  }
  out += '}';
  put_key(out, "saved_bytes");
  put_int(out, n.saved_bytes);
  put_key(out, "value_norm");
  put_norm(out, n.value_norm);
  put_key(out, "grad_norm");
  put_norm(out, n.grad_norm);
  out += '}';
}

void put_param(std::string& out, const GraphParam& p) {
  out += '{';
  put_key(out, "name", true);
  put_string(out, p.name);
  put_key(out, "node");
  put_int(out, p.node);
  put_key(out, "shape");
  put_ints(out, p.shape);
  put_key(out, "dtype");
  put_string(out, p.dtype);
  put_key(out, "numel");
  put_int(out, p.numel);
  put_key(out, "value_norm");
  put_norm(out, p.value_norm);
  put_key(out, "grad_norm");
  put_norm(out, p.grad_norm);
  out += '}';
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
Graph Graph::load_json(const std::string& path) { return from_json(read_file(path)); }

}  // namespace skipgrad
