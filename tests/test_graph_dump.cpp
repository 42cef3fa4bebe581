// Graph dumps: DOT (clusters, collapsing, filters; parsed by Graphviz when installed) and JSON (validated against
// docs/graph_schema.json, round-tripped, and refused with a clear message when broken).
#include <nlohmann/json.hpp>

#include <filesystem>
#include <unistd.h>

#include "analysis/graph.h"
#include "analysis/paths.h"
#include "graph_test_util.h"

using namespace sgtest;
namespace fs = std::filesystem;

namespace {

// A small JSON Schema checker: the keywords docs/graph_schema.json uses ($ref, type, const, enum, minimum,
// anyOf, required, properties, additionalProperties, items). Appends one message per violation.
using json = nlohmann::json;
void validate(const json& v, const json& schema, const json& root, const std::string& at,
              std::vector<std::string>& errors) {
  auto type_ok = [&](const std::string& t) {
    return (t == "object" && v.is_object()) || (t == "array" && v.is_array()) || (t == "string" && v.is_string()) ||
           (t == "integer" && v.is_number_integer()) || (t == "number" && v.is_number()) ||
           (t == "boolean" && v.is_boolean()) || (t == "null" && v.is_null());
  };
  if (schema.contains("$ref")) {
    std::string ref = schema["$ref"];
    validate(v, root.at(json::json_pointer(ref.substr(1))), root, at, errors);
  }
  if (schema.contains("type")) {
    bool ok = false;
    if (schema["type"].is_string()) ok = type_ok(schema["type"]);
    else
      for (const auto& t : schema["type"]) ok = ok || type_ok(t);
    if (!ok) errors.push_back(at + ": wrong type " + v.dump());
  }
  if (schema.contains("const") && v != schema["const"]) errors.push_back(at + ": not " + schema["const"].dump());
  if (schema.contains("enum")) {
    bool found = false;
    for (const auto& e : schema["enum"]) found = found || e == v;
    if (!found) errors.push_back(at + ": " + v.dump() + " not in enum");
  }
  if (schema.contains("minimum") && v.is_number() && v.get<double>() < schema["minimum"].get<double>())
    errors.push_back(at + ": below minimum");
  if (schema.contains("anyOf")) {
    bool any = false;
    for (const auto& s : schema["anyOf"]) {
      std::vector<std::string> e;
      validate(v, s, root, at, e);
      any = any || e.empty();
    }
    if (!any) errors.push_back(at + ": matches no anyOf branch: " + v.dump());
  }
  if (v.is_object()) {
    if (schema.contains("required"))
      for (const auto& k : schema["required"])
        if (!v.contains(k.get<std::string>())) errors.push_back(at + ": missing " + k.get<std::string>());
    for (const auto& [k, x] : v.items()) {
      if (schema.contains("properties") && schema["properties"].contains(k))
        validate(x, schema["properties"][k], root, at + "." + k, errors);
      else if (schema.contains("additionalProperties") && schema["additionalProperties"].is_object())
        validate(x, schema["additionalProperties"], root, at + "." + k, errors);
    }
  }
  if (v.is_array() && schema.contains("items"))
    for (size_t i = 0; i < v.size(); i++) validate(v[i], schema["items"], root, at + "[" + std::to_string(i) + "]", errors);
}

DotOptions only(const std::string& prefix) {
  DotOptions o;
  o.filter = prefix;
  return o;
}
DotOptions no_leaves_opt() {
  DotOptions o;
  o.leaves = false;
  return o;
}

fs::path temp_dir() {
  fs::path dir = fs::temp_directory_path() / ("skipgrad_graph_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

}  // namespace

TEST_SUITE("graph") {
  TEST_CASE("DOT: nested clusters, role colours, collapsing by depth, filter, parses with dot") {
    FreshTape tape;
    const int K = 4;
    Tensor loss = build_stack(Topo::PostLN, K);
    Graph g = Graph::from_tape(current_tape());
    std::string dot = g.to_dot();
    CHECK(dot.rfind("digraph skipgrad {", 0) == 0);
    CHECK(dot.find("subgraph \"cluster_enc\" {") != std::string::npos);
    CHECK(dot.find("subgraph \"cluster_enc.3\" {") != std::string::npos);
    CHECK(dot.find("subgraph \"cluster_enc.3.ffn\" {") != std::string::npos);
    CHECK(dot.find("subgraph \"cluster_enc.3\" {") > dot.find("subgraph \"cluster_enc\" {"));
    CHECK(dot.find("#fc9272") != std::string::npos);  // residual add
    CHECK(dot.find("#9ecae1") != std::string::npos);  // norm
    CHECK(dot.find("#f6e8a6") != std::string::npos);  // parameter
    CHECK(dot.find("residual_add\\nadd [2,4]") != std::string::npos);
    CHECK(dot.find("->") != std::string::npos);
    for (size_t p = dot.find("->"); p != std::string::npos; p = dot.find("->", p + 1))
      CHECK(dot.substr(p, dot.find('\n', p) - p).find("label") == std::string::npos);  // no backward, no norms
    CHECK(std::count(dot.begin(), dot.end(), '{') == std::count(dot.begin(), dot.end(), '}'));

    std::string boxed = g.to_dot(depth(1));
    CHECK(boxed.find("cluster_enc.0") == std::string::npos);
    CHECK(boxed.find("cluster_enc\"") != std::string::npos);
    size_t boxes = 0;
    for (size_t p = boxed.find("box3d"); p != std::string::npos; p = boxed.find("box3d", p + 1)) boxes++;
    CHECK(boxes == (size_t)K);  // one per layer
    CHECK(boxed.find("enc.2\\n") != std::string::npos);
    CHECK(boxed.find("1 norm, 1 residual add") != std::string::npos);

    std::string one = g.to_dot(only("enc.1"));
    CHECK(one.find("enc.1.residual_add") != std::string::npos);
    CHECK(one.find("enc.0.ln.layer_norm") != std::string::npos);  // its input, a direct neighbour
    CHECK(one.find("enc.3.") == std::string::npos);
    CHECK(one.find("enc.10") == std::string::npos);
    CHECK_THROWS_WITH_ALL(g.to_dot(only("dec")), "to_dot", "'dec'");
    CHECK_THROWS_WITH_ALL(g.to_dot(depth(-2)), "to_dot", "max_depth");
    std::string no_leaves = g.to_dot(no_leaves_opt());
    CHECK(no_leaves.find("ffn.w") == std::string::npos);

    if (graphviz_available()) {
      fs::path dir = temp_dir();
      for (auto [opt, stem] : {std::pair{DotOptions{}, "full"}, std::pair{depth(1), "boxed"},
                               std::pair{only("enc.1"), "filtered"}}) {
        std::string dot_path = (dir / (std::string(stem) + ".dot")).string();
        std::string svg_path = (dir / (std::string(stem) + ".svg")).string();
        g.save_dot(dot_path, opt);
        render_dot(dot_path, svg_path);
        CHECK(read_file(svg_path).find("<svg") != std::string::npos);
      }
      CHECK_THROWS_WITH_ALL(render_dot((dir / "full.dot").string(), (dir / "x.txt").string()), "render_dot",
                            ".svg");
      fs::remove_all(dir);
    } else {
      MESSAGE("Graphviz 'dot' is not installed: skipping the dot -Tsvg parse check");
    }
  }

  TEST_CASE("DOT of odd names: what Graphviz reads back is the name (long, NUL, bad UTF-8, &amp;, \\N, deep)") {
    const std::vector<std::pair<std::string, std::string>> cases = {  // name -> what the label shows
        {std::string(20000, 'x'), std::string(20000, 'x')},  // past Graphviz's 16 KiB quoted-string limit
        {std::string("a\0b", 3), "a\xEF\xBF\xBD" "b"},          // a NUL ended the string: a syntax error
        {"a\xFC" "b", "a\xEF\xBF\xBD" "b"},                     // Latin-1, as the JSON dump writes it
        {"a&amp;b", "a&amp;amp;b"},                           // (SVG escapes the '&' the label holds)
        {"x\\N\\G", "x\\N\\G"}};                           // a tooltip would expand \N to the node's name
    std::string deep = "s";  // 3,000 scope components: clusters stop at 32 levels (the recursion overflowed)
    for (int i = 0; i < 3000; i++) deep += ".s";
    fs::path dir = temp_dir();
    for (size_t k = 0; k <= cases.size(); k++) {
      FreshTape tape;
      const bool deep_case = k == cases.size();
      const std::string name = deep_case ? deep : cases[k].first;
      Tensor w = Tensor::ones({2}, DType::F64).requires_grad_();
      w.named("w");
      Tensor y;
      {
        Scope s(deep_case ? deep : "blk");
        y = mul(w, 2.0).named(deep_case ? "m" : name);
      }
      sum(y).backward(Tensor(), true);
      const Graph g = Graph::from_tape(current_tape());
      const std::string dot = g.to_dot();
      CHECK(dot.find('\0') == std::string::npos);
      CHECK(dot.size() < 1000000);  // (10,000 components made 500 MB of cluster labels)
      if (!graphviz_available()) continue;
      const std::string dot_path = (dir / "odd.dot").string(), svg_path = (dir / "odd.svg").string();
      g.save_dot(dot_path);
      REQUIRE_NOTHROW(render_dot(dot_path, svg_path));
      const std::string svg = read_file(svg_path);
      if (!deep_case) {
        INFO("case " << k);
        CHECK(svg.find(cases[k].second) != std::string::npos);
        const std::string tooltip = "xlink:title=\"" + std::to_string(g.find("blk." + name)) + ": blk.";
        CHECK(svg.find(tooltip + cases[k].second + "\"") != std::string::npos);
      }
    }
    if (!graphviz_available()) MESSAGE("Graphviz 'dot' is not installed: skipping the dot -Tsvg checks");
    fs::remove_all(dir);
    // two scopes that quoted() writes alike (control bytes are U+FFFD) stay two clusters: numbered
    FreshTape tape;
    Tensor w = Tensor::ones({2}, DType::F64).requires_grad_();
    Tensor y1, y2;
    {
      Scope s(std::string("a\x01"));
      y1 = mul(w, 2.0);
    }
    {
      Scope s(std::string("a\x02"));
      y2 = mul(w, 3.0);
    }
    sum(add(y1, y2)).backward(Tensor(), true);
    const std::string dot = Graph::from_tape(current_tape()).to_dot();
    CHECK(dot.find("subgraph cluster_0 {") != std::string::npos);
    CHECK(dot.find("subgraph cluster_1 {") != std::string::npos);
  }

  TEST_CASE("DOT collapsed: an input read in many boxes goes into a note; text: one equation per node") {
    FreshTape tape;
    const int K = 10;
    const int64_t d = 4;
    Tensor x = leaf({2, d}, 3, 1.0);
    Tensor mask = Tensor::ones({2, d}, DType::F64).named("mask");  // data read in every layer, as a padding mask
    for (int i = 0; i < K; i++) {
      Tensor W = param({d, d}, "enc." + std::to_string(i) + ".w", 10 + i);
      Scope enc("enc"), layer(std::to_string(i));
      x = add(x, mul(tanh(matmul(x, W)), mask)).named("residual_add");
    }
    Tensor loss = sum(x);
    loss.backward({}, /*retain_graph=*/true);
    Graph g = Graph::from_tape(current_tape());
    const GraphNode& m = g.at(g.find("mask"));
    CHECK(m.kind == "input");

    std::string boxed = g.to_dot(depth(0));  // a box per top-level scope: "enc" alone, the mask in 1 place
    CHECK(boxed.find("inputs_not_drawn") == std::string::npos);
    boxed = g.to_dot(depth(1));  // a box per layer: the mask would fan out to 10
    CHECK(boxed.find("inputs_not_drawn") != std::string::npos);
    CHECK(boxed.find("mask [2,4]: read in 10 places") != std::string::npos);
    CHECK(boxed.find("n" + std::to_string(m.id) + " [") == std::string::npos);  // not drawn
    DotOptions all = depth(1);
    all.max_leaf_fanout = -1;
    std::string every = g.to_dot(all);
    CHECK(every.find("inputs_not_drawn") == std::string::npos);
    CHECK(every.find("n" + std::to_string(m.id) + " [") != std::string::npos);
    CHECK(g.to_dot().find("n" + std::to_string(m.id) + " [") != std::string::npos);  // uncollapsed: drawn

    const std::string text = g.to_text();
    CHECK(std::count(text.begin(), text.end(), '\n') == (long)g.nodes.size());
    const GraphNode& last_add = g.at(g.find_all("enc.9.residual_add").at(0));
    std::string line = "#" + std::to_string(last_add.id) + " enc.9.residual_add = add(#" +
                       std::to_string(last_add.inputs[0]) + ", #" + std::to_string(last_add.inputs[1]) +
                       ") float64[2,4] |x| ";
    CHECK(text.find(line) != std::string::npos);
    CHECK(text.find("#" + std::to_string(m.id) + " mask input float64[2,4] |x| 2.828") != std::string::npos);
    CHECK(text.find(" enc.0.w param float64[4,4] |x| ") != std::string::npos);
    CHECK(text.find("|g| ") != std::string::npos);
  }

  TEST_CASE("JSON: validates against docs/graph_schema.json and round-trips, norms included") {
    FreshTape tape;
    Tensor loss = build_stack(Topo::PreLNQNorm, 2);
    loss.backward(Tensor(), true);
    Graph g = Graph::from_tape(current_tape());
    g.nodes[1].value_norm = INFINITY;  // overflowed norms survive as strings
    g.nodes[2].grad_norm = NAN;        // and a NaN gradient (equal to itself in a Graph comparison)
    std::string text = g.to_json();

    json schema = json::parse(read_file(std::string(SKIPGRAD_SOURCE_DIR) + "/docs/graph_schema.json"));
    CHECK(schema["$schema"] == "https://json-schema.org/draft/2020-12/schema");
    json doc = json::parse(text);
    std::vector<std::string> errors;
    validate(doc, schema, schema, "$", errors);
    for (const std::string& e : errors) FAIL_CHECK(e);
    CHECK(errors.empty());
    // And the checker does reject a broken document.
    json broken = doc;
    broken["nodes"][0].erase("shape");
    broken["nodes"][1]["kind"] = "tensor";
    errors.clear();
    validate(broken, schema, schema, "$", errors);
    CHECK(errors.size() == 2);

    CHECK(doc["nodes"][1]["value_norm"] == "Infinity");
    CHECK(doc["nodes"].size() == g.nodes.size());
    CHECK(doc["params"].size() == g.params.size());
    Graph back = Graph::from_json(text);
    CHECK(back == g);
    CHECK(back.to_json() == text);
    CHECK(g.to_dot().find("nan") != std::string::npos);  // the NaN norm's edge reads nan (it read 0)
    // A name that is not UTF-8 (Latin-1 "grüß") is written as U+FFFD, so the document still parses.
    Graph latin1 = g;
    latin1.nodes[0].name = "gr\xfc\xdf";
    CHECK(Graph::from_json(latin1.to_json()).nodes[0].name == "gr\xef\xbf\xbd\xef\xbf\xbd");
    Graph utf8 = g;
    utf8.nodes[0].name = "gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x98\x80";  // valid UTF-8 is kept as it is
    CHECK(Graph::from_json(utf8.to_json()) == utf8);

    // Atomic save and load.
    fs::path dir = temp_dir();
    std::string path = (dir / "graph.json").string();
    g.save_json(path);
    CHECK(Graph::load_json(path) == g);
    for (const auto& entry : fs::directory_iterator(dir)) CHECK(entry.path().filename() == "graph.json");
    fs::remove_all(dir);
  }

  TEST_CASE("JSON: the loader names what is wrong") {
    FreshTape tape;
    Tensor x = param({2}, "x", 1);
    sum(exp(x));
    Graph g = Graph::from_tape(current_tape());
    json doc = json::parse(g.to_json());
    CHECK_THROWS_WITH_ALL(Graph::from_json("{nope"), "graph json", "not valid JSON");
    CHECK_THROWS_WITH_ALL(Graph::from_json("[]"), "graph json", "must be an object");
    json d = doc;
    d["version"] = 2;
    CHECK_THROWS_WITH_ALL(Graph::from_json(d.dump()), "graph json", "version 2");
    d = doc;
    d["nodes"][1].erase("shape");
    CHECK_THROWS_WITH_ALL(Graph::from_json(d.dump()), "graph json", "nodes[1] has no 'shape'");
    d = doc;
    d["nodes"][1]["inputs"] = json::array({2});
    CHECK_THROWS_WITH_ALL(Graph::from_json(d.dump()), "nodes[1] reads node 2", "topological");
    d = doc;
    d["nodes"][2]["grad_norm"] = "big";
    CHECK_THROWS_WITH_ALL(Graph::from_json(d.dump()), "nodes[2].grad_norm must be a number");
    d = doc;
    d["params"][0]["node"] = 1;
    CHECK_THROWS_WITH_ALL(Graph::from_json(d.dump()), "params[0].node = 1 is not a param node");
    CHECK_THROWS_WITH_ALL(Graph::load_json("/nonexistent/graph.json"), "Graph::load_json: cannot open", "No such file");
    // A hand-built graph gets the same checks before it is dumped or analysed (it was indexed unchecked).
    Graph bad = g;
    bad.nodes.back().inputs.push_back(int64_t(1) << 40);
    CHECK_THROWS_WITH_ALL(bad.to_dot(), "to_dot", "reads node 1099511627776", "earlier nodes");
    CHECK_THROWS_WITH_ALL(analyze_paths(bad, 1), "analyze_paths", "reads node 1099511627776");
    CHECK_THROWS_WITH_ALL(bad.users(), "users", "reads node");
    bad = g;
    bad.params[0].node = 99;
    CHECK_THROWS_WITH_ALL(bad.to_dot(), "to_dot", "points at node 99");
    CHECK_THROWS_WITH_ALL(g.save_json("/nonexistent/dir/graph.json"), "write_file_atomic", "cannot create",
                          "No such file");
  }

}
