// Graph snapshot and the structural gradient-path analysis (TOPOLOGIES.md §6 on toy stacks); the DOT and JSON
// dumps are in test_graph_dump.cpp.
#include <chrono>
#include <cmath>

#include "analysis/graph.h"
#include "analysis/paths.h"
#include "graph_test_util.h"

using namespace sgtest;

namespace {

int64_t input_leaf(const Graph& g) {
  for (const GraphNode& n : g.nodes)
    if (n.kind == "input") return n.id;
  FAIL("no input leaf");
  return -1;
}

const SublayerPaths& sublayer(const PathStats& s, const std::string& name) {
  for (const SublayerPaths& b : s.sublayers)
    if (b.name == name) return b;
  FAIL("no sublayer output " << name);
  return s.sublayers.front();
}

GraphNode hand_node(int64_t id, const std::string& op, const std::string& family, const std::string& name,
                    std::vector<int64_t> inputs) {
  GraphNode n;
  n.id = id;
  n.tape_id = inputs.empty() ? -1 : id;
  n.kind = inputs.empty() ? "input" : "op";
  n.op = op;
  n.family = family;
  n.name = name;
  n.scope = scope_of(name);
  n.shape = {3};
  n.dtype = "float32";
  n.inputs = std::move(inputs);
  return n;
}

}  // namespace

TEST_SUITE("graph") {
  TEST_CASE("snapshot: ops, leaves with parameter names, shapes, params, saved bytes, value norms") {
    FreshTape tape;
    Tensor w = param({3, 2}, "enc.0.ffn.fc1.weight", 1);
    Tensor x = Tensor::from_vector<double>({1, 2, 3}, {1, 3});
    Tensor y;
    {
      Scope s("enc.0.ffn");
      y = softmax(matmul(x, w), -1);
    }
    Tensor loss = sum(y);
    Graph g = Graph::from_tape(current_tape());
    REQUIRE(g.nodes.size() == 5);  // input, param, matmul, softmax, sum
    const GraphNode& mm = g.at(g.find("enc.0.ffn.matmul"));
    CHECK(mm.kind == "op");
    CHECK(mm.family == "matmul");
    CHECK(mm.scope == "enc.0.ffn");
    CHECK(mm.shape == Shape{1, 2});
    CHECK(mm.dtype == "float64");
    REQUIRE(mm.inputs.size() == 2);
    CHECK(g.at(mm.inputs[0]).kind == "input");
    CHECK(g.at(mm.inputs[0]).name == "input");
    CHECK(g.at(mm.inputs[1]).kind == "param");
    CHECK(g.at(mm.inputs[1]).name == "enc.0.ffn.fc1.weight");
    CHECK(g.at(mm.inputs[1]).scope == "enc.0.ffn.fc1");
    CHECK(mm.tape_id >= 0);
    CHECK(mm.params == std::vector<std::pair<std::string, std::string>>{{"trans_a", "false"}, {"trans_b", "false"}});
    const GraphNode& sm = g.at(g.id_of(y));
    CHECK(sm.op == "softmax");
    CHECK(sm.saved_bytes == (int64_t)y.nbytes());
    CHECK(sm.params == std::vector<std::pair<std::string, std::string>>{{"dim", "1"}});
    CHECK(sm.tape_id == mm.tape_id + 1);
    CHECK(sm.value_norm == doctest::Approx(l2(y)));
    CHECK(g.at(g.id_of(loss)).value_norm == doctest::Approx(std::abs(loss.item())));
    REQUIRE(g.params.size() == 1);
    CHECK(g.params[0].name == "enc.0.ffn.fc1.weight");
    CHECK(g.params[0].numel == 6);
    CHECK(g.params[0].grad_norm == -1);  // no backward yet
    for (const GraphNode& n : g.nodes)
      for (int64_t in : n.inputs) CHECK(in < n.id);  // topological order
    CHECK(g.id_of(w) == mm.inputs[1]);
    CHECK_THROWS_WITH_ALL(g.find("nope"), "graph", "no node named 'nope'");
    CHECK_THROWS_WITH_ALL(g.at(99), "graph", "no node with id 99");
    // a tensor whose tape was freed is in no later graph, even where a node of that graph has its name
    Tensor old_loss = sum(mul(w, w));
    old_loss.backward();
    Tensor new_loss = sum(mul(w, 2.0));
    Graph later = Graph::from_tape(current_tape());
    CHECK(later.at(later.id_of(new_loss)).op == "sum");
    CHECK_THROWS_WITH_ALL(later.id_of(old_loss), "graph", "'sum'", "tape that has since been freed");
  }

  TEST_CASE("gradient norms in the snapshot equal the norms of the gradients") {
    FreshTape tape;
    Tensor loss = build_stack(Topo::PreLN, 2);
    loss.backward(Tensor(), /*retain_graph=*/true);
    Graph g = Graph::from_tape(current_tape());
    for (const GraphParam& p : g.params) {
      INFO(p.name);
      CHECK(p.grad_norm >= 0);
      CHECK(g.at(p.node).grad_norm == p.grad_norm);
    }
    CHECK(g.at(g.id_of(loss)).grad_norm == doctest::Approx(1.0));
    for (const GraphNode& n : g.nodes)
      if (n.kind == "op") CHECK(n.grad_norm >= 0);
    // The DOT edges carry them.
    std::string dot = g.to_dot();
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", g.at(g.find("enc.1.residual_add")).grad_norm);
    CHECK(dot.find("[label=\"" + std::string(buf) + "\"]") != std::string::npos);
  }

  TEST_CASE("parameter gradient norm matches .grad after backward") {
    FreshTape tape;
    Tensor w = param({3}, "w", 3);
    Tensor loss = sum(mul(exp(w), w));
    loss.backward(Tensor(), true);
    Graph g = Graph::from_tape(current_tape());
    CHECK(g.params.at(0).grad_norm == doctest::Approx(l2(w.grad())).epsilon(1e-12));
  }

  TEST_CASE("value and gradient norms in double: a view of 1e20s is finite, a bf16 gradient's norm unrounded") {
    FreshTape tape;
    Tensor w = Tensor::from_vector<float>({1e20f, 2e20f, 3e20f, 4e20f, 5e20f, 6e20f}, {2, 3}).requires_grad_();
    Tensor t = w.t();  // a view: its float32 squares would overflow, the norm fits
    Tensor s = sum(mul(t.contiguous(), 1e-20));
    Graph g = Graph::from_tape(current_tape());
    CHECK(g.at(g.id_of(t)).value_norm == doctest::Approx(std::sqrt(91.0) * 1e20).epsilon(1e-6));
    // a bf16 output's gradient norm: its gradient values' norm in double, not rounded to bf16's 8 bits
    current_tape().clear();
    Tensor x = Tensor::from_vector<float>({0.3f, -1.7f, 2.9f}, {3}).requires_grad_();
    Tensor h = x.to(DType::BF16) * 1.0;
    h.retain_grad();
    Tensor loss = sum(mul(h.to(DType::F32), Tensor::from_vector<float>({0.1f, 0.2f, 0.3f}, {3})));
    loss.backward(Tensor(), true);
    const std::vector<double> gh = h.grad().to(DType::F64).to_vector<double>();
    const double want = std::sqrt(gh[0] * gh[0] + gh[1] * gh[1] + gh[2] * gh[2]);
    Graph g2 = Graph::from_tape(current_tape());
    const double got = g2.at(g2.id_of(h)).grad_norm;
    CHECK(got == doctest::Approx(want).epsilon(1e-12));
    CHECK(float(bf16(float(want))) != want);  // bf16 would have rounded it
    // a float32 gradient whose norm passes float32's range (16 elements of 1e38): finite in double
    current_tape().clear();
    Tensor v = Tensor::full({16}, 1.0, DType::F32).requires_grad_();
    Tensor y = v * 1.0;
    sum(y * 1e38).backward(Tensor(), true);
    Graph g3 = Graph::from_tape(current_tape());
    CHECK(g3.at(g3.id_of(y)).grad_norm == doctest::Approx(4e38).epsilon(1e-6));
  }

  TEST_CASE("path counts on a diamond and on x*x, by hand") {
    FreshTape tape;
    Tensor x = param({3}, "x", 1);
    Tensor loss = sum(add(exp(x), tanh(x)));  // x -> exp -> add, x -> tanh -> add: 2 paths
    Graph g = Graph::from_tape(current_tape());
    PathStats s = analyze_paths(g, g.id_of(loss));
    CHECK(s.param("x").paths == 2);
    CHECK(s.at(g.find("exp")).paths == 1);
    CHECK(s.at(g.find("add")).paths == 1);
    CHECK(s.param("x").norm_free());
    current_tape().clear();

    // y = x * x (two edges), z = y + x: paths(x) = 2 * 1 + 1 = 3.
    Tensor loss2 = sum(add(mul(x, x), x));
    Graph g2 = Graph::from_tape(current_tape());
    PathStats s2 = analyze_paths(g2);  // the last op is the loss
    CHECK(s2.loss == g2.id_of(loss2));
    CHECK(s2.param("x").paths == 3);
  }

  TEST_CASE("norms on paths, unreachable nodes and bad loss ids on a hand-built graph") {
    // 0 x; 1 LN(x); 2 relu(x); 3 add(1,2); 4 LN(3); 5 sum(4) = loss; 6 exp(x) (not used by the loss);
    // 7 LN(1) after the loss.
    Graph g;
    g.nodes = {hand_node(0, "input", "leaf", "input", {}),       hand_node(1, "layer_norm", "norm", "a.ln", {0}),
               hand_node(2, "relu", "elementwise", "a.relu", {0}), hand_node(3, "add", "elementwise", "a.residual_add", {1, 2}),
               hand_node(4, "layer_norm", "norm", "a.ln2", {3}),   hand_node(5, "sum", "reduction", "loss", {4}),
               hand_node(6, "exp", "elementwise", "side", {0}),    hand_node(7, "layer_norm", "norm", "after", {1})};
    PathStats s = analyze_paths(g, 5);
    CHECK(s.at(0).paths == 2);
    CHECK(s.at(0).min_norms == 1);  // relu -> add -> LN
    CHECK(s.at(0).max_norms == 2);  // LN -> add -> LN
    CHECK(s.at(1).min_norms == 1);
    CHECK(s.at(3).min_norms == 1);
    CHECK(s.at(4).min_norms == 0);
    CHECK(s.at(4).norm_free());
    CHECK(!s.at(3).norm_free());
    CHECK(s.at(5).paths == 1);
    CHECK(!s.at(6).reaches_loss());
    CHECK(s.at(6).min_norms == -1);
    CHECK(!s.at(7).reaches_loss());
    REQUIRE(s.sublayers.size() == 2);  // the branch (relu: in scope "a", not a norm) and the residual add
    CHECK(s.sublayers[0].name == "a.relu");
    CHECK(s.sublayers[0].kind == "branch");
    CHECK(s.sublayers[1].kind == "residual_add");
    CHECK_THROWS_WITH_ALL(analyze_paths(g, 8), "analyze_paths", "loss node id 8");
    g.nodes[3].inputs = {1, 4};
    CHECK_THROWS_WITH_ALL(analyze_paths(g, 5), "analyze_paths", "reads node 4", "topological");
  }

  TEST_CASE("Post-LN stack: sublayer k output crosses K-k+1 norms on every path (TOPOLOGIES.md §6)") {
    for (int K : {2, 4}) {
      CAPTURE(K);
      FreshTape tape;
      Tensor loss = build_stack(Topo::PostLN, K);
      Graph g = Graph::from_tape(current_tape());
      PathStats s = analyze_paths(g, g.id_of(loss));
      for (int i = 0; i < K; i++) {
        const int k = i + 1;
        const std::string L = "enc." + std::to_string(i);
        CAPTURE(k);
        const double paths = std::ldexp(1.0, K - k);
        for (const NodePaths& p : {sublayer(s, L + ".residual_add").stats, sublayer(s, L + ".ffn.tanh").stats,
                                   s.param(L + ".ffn.w")}) {
          CHECK(p.paths == paths);
          CHECK(p.min_norms == K - k + 1);
          CHECK(p.max_norms == K - k + 1);
          CHECK(p.min_norms_outer == K - k + 1);
          CHECK(!p.norm_free());
        }
        // LN_k's gain enters LN_k through its gain edge: only the K-k norms after it count.
        CHECK(s.param(L + ".ln.gamma").min_norms == K - k);
        // LN_k's output x_k feeds layer k+1 directly and through its branch.
        CHECK(s.at(g.find(L + ".ln.layer_norm")).min_norms == K - k);
        const LayerPaths& lp = s.layer(L);
        CHECK(lp.params == 3);  // w, gamma, beta (wq is not used in Post-LN, so it is not in the graph)
        CHECK(lp.param_min_norms == K - k);
        CHECK(lp.param_max_norms == K - k + 1);
        CHECK(lp.output_min_norms == K - k + 1);
        CHECK(lp.output_max_norms == K - k + 1);
        CHECK(lp.norm_free == (k == K));  // only the last norm's gain and bias skip every norm Jacobian
        CHECK(lp.max_param_paths == paths);
      }
      CHECK(s.at(input_leaf(g)).paths == std::ldexp(1.0, K));
      CHECK(s.at(input_leaf(g)).min_norms == K);
      CHECK(s.param("head.w").norm_free());
      CHECK(s.layers.size() == (size_t)K);
      CHECK(paths_markdown(g, s).find("| enc.0 | 3 | " + std::to_string(1 << (K - 1)) + " | " +
                                      std::to_string(K - 1) + "-" + std::to_string(K)) != std::string::npos);
    }
  }

  TEST_CASE("snapshot norms of large strided views: computed in more than one batch, each right") {
    FreshTape tape;
    // 72 MB views, which the norm kernel copies before reducing: each passes the queue's 64 MiB budget
    Tensor a = Tensor::randn({3000, 3000}, 0, 1, DType::F64).requires_grad_();
    a.named("a");
    Tensor at = a.transpose(0, 1);
    Tensor b = at * 2.0;
    Tensor bt = b.transpose(0, 1);
    Tensor loss = sum(bt * 0.5);
    loss.backward({}, /*retain_graph=*/true);
    const double na = norm2_f64({a}).item();
    Graph g = Graph::from_tape(current_tape());
    CHECK(g.at(g.id_of(at)).value_norm == doctest::Approx(na).epsilon(1e-12));
    CHECK(g.at(g.id_of(b)).value_norm == doctest::Approx(2 * na).epsilon(1e-12));
    CHECK(g.at(g.id_of(bt)).value_norm == doctest::Approx(2 * na).epsilon(1e-12));
    CHECK(g.params.at(0).value_norm == doctest::Approx(na).epsilon(1e-12));
    CHECK(g.params.at(0).grad_norm == doctest::Approx(3000.0).epsilon(1e-12));  // every dL/da = 1
  }

  TEST_CASE("path tables say when trainable leaves have no names (Module::name_parameters not called)") {
    FreshTape tape;
    Tensor w = leaf({2, 2}, 1, 1.0);  // requires grad, unnamed: an "input" leaf to the graph
    Tensor loss = sum(matmul(w, w));
    Graph g = Graph::from_tape(current_tape());
    CHECK(g.params.empty());
    CHECK(paths_markdown(g, analyze_paths(g)).find("1 leaves require grad but have no name") != std::string::npos);
    w.named("w");
    Graph named = Graph::from_tape(current_tape());
    CHECK(named.params.size() == 1);
    CHECK(paths_markdown(named, analyze_paths(named)).find("name_parameters") == std::string::npos);
  }

  TEST_CASE("two forwards on one tape: the sublayer table lists the analysed loss's graph only") {
    FreshTape tape;
    build_stack(Topo::PostLN, 2);  // an earlier forward, never backpropagated: same names, reaches no later loss
    Tensor loss = build_stack(Topo::PostLN, 2);
    Graph g = Graph::from_tape(current_tape());
    CHECK(g.find_all("enc.0.residual_add").size() == 2);
    PathStats s = analyze_paths(g, g.id_of(loss));
    CHECK(s.sublayers.size() == 4);  // per layer: the residual add and its branch, of the second forward
    for (const SublayerPaths& b : s.sublayers) {
      CAPTURE(b.name);
      CHECK(b.stats.reaches_loss());
      CHECK(b.node > g.find("enc.1.ln.layer_norm"));  // after the first forward's last node
    }
  }

  TEST_CASE("Pre-LN stack: 1 norm on the shortest path, K-k+1 on the longest, none norm-free before ln_f") {
    for (int K : {2, 4}) {
      CAPTURE(K);
      FreshTape tape;
      Tensor loss = build_stack(Topo::PreLN, K);
      Graph g = Graph::from_tape(current_tape());
      PathStats s = analyze_paths(g, g.id_of(loss));
      for (int i = 0; i < K; i++) {
        const int k = i + 1;
        const std::string L = "enc." + std::to_string(i);
        CAPTURE(k);
        for (const NodePaths& p : {sublayer(s, L + ".residual_add").stats, sublayer(s, L + ".ffn.tanh").stats,
                                   s.param(L + ".ffn.w"), s.param(L + ".ln.gamma")}) {
          CHECK(p.paths == std::ldexp(1.0, K - k));
          CHECK(p.min_norms == 1);          // straight down the stream to ln_f
          CHECK(p.max_norms == K - k + 1);  // through every later branch's pre-norm, then ln_f
          CHECK(p.max_norms_outer == K - k + 1);
        }
        const LayerPaths& lp = s.layer(L);
        CHECK(lp.param_min_norms == 1);
        CHECK(lp.param_max_norms == K - k + 1);
        CHECK(lp.output_min_norms == 1);
        CHECK(lp.output_max_norms == K - k + 1);
        CHECK(!lp.norm_free);
      }
      CHECK(s.at(input_leaf(g)).paths == std::ldexp(1.0, K));
      CHECK(s.at(input_leaf(g)).min_norms == 1);
      CHECK(s.at(input_leaf(g)).max_norms == K + 1);
      // Every op before the final norm has all its paths through it; only what follows ln_f is norm-free.
      int64_t ln_f = g.find("final_ln.layer_norm");
      for (const GraphNode& n : g.nodes)
        if (n.kind == "op" && n.id < ln_f) CHECK(!s.at(n.id).norm_free());
      CHECK(s.at(ln_f).norm_free());
      CHECK(s.param("final_ln.gamma").norm_free());
      CHECK(s.param("head.w").norm_free());
    }
  }

  TEST_CASE("Pre-LN with per-head q norms: counted in min/max_norms, left out of the _outer counts") {
    const int K = 4;
    FreshTape tape;
    Tensor loss = build_stack(Topo::PreLNQNorm, K);
    Graph g = Graph::from_tape(current_tape());
    PathStats s = analyze_paths(g, g.id_of(loss));
    for (int i = 0; i < K; i++) {
      const int k = i + 1;
      const std::string L = "enc." + std::to_string(i);
      CAPTURE(k);
      const NodePaths& r = sublayer(s, L + ".residual_add").stats;
      CHECK(r.min_norms == 1);
      CHECK(r.max_norms == 1 + 2 * (K - k));  // each later branch: pre-norm and q_norm
      CHECK(r.min_norms_outer == 1);
      CHECK(r.max_norms_outer == 1 + (K - k));
      const NodePaths& wq = s.param(L + ".ffn.wq");  // before its own q_norm
      CHECK(wq.min_norms == 2);
      CHECK(wq.max_norms == 2 + 2 * (K - k));
      CHECK(wq.min_norms_outer == 1);
      CHECK(wq.max_norms_outer == 1 + (K - k));
      CHECK(s.layer(L).param_max_norms_outer == 1 + (K - k));
    }
  }

  TEST_CASE("names: scopes, layers, prefix matching") {
    CHECK(scope_of("enc.3.ffn.add") == "enc.3.ffn");
    CHECK(scope_of("loss") == "");
    CHECK(layer_scope("enc.3.ffn.add") == "enc.3");
    CHECK(layer_scope("model.layers.12.attn.q") == "model.layers.12");
    CHECK(layer_scope("emb.weight") == "");
    CHECK(layer_scope("3.x") == "");
    CHECK(in_scope("enc.1.ffn", "enc.1"));
    CHECK(in_scope("enc.1", "enc.1"));
    CHECK(!in_scope("enc.10.ffn", "enc.1"));
    CHECK(in_scope("enc.10.ffn", "enc."));
    CHECK(name_parts("a.b.c") == std::vector<std::string>{"a", "b", "c"});
    GraphNode n;
    n.kind = "op";
    n.family = "elementwise";
    n.name = "dec.2.cross_attn.matmul";
    n.scope = "dec.2.cross_attn";
    CHECK(node_role(n) == NodeRole::Attention);
    n.scope = "dec.2.ffn";
    CHECK(node_role(n) == NodeRole::FeedForward);
    n.name = "dec.2.dual_add";
    CHECK(node_role(n) == NodeRole::Residual);
  }

  TEST_CASE("a 100000-node chain snapshots, dumps and analyses in under 2 s") {
    FreshTape tape;
    const int64_t N = 100000;
    Tensor x = param({4}, "x", 1);
    Tensor h = x;
    for (int64_t i = 0; i < N - 1; i++) {
      Scope s("block." + std::to_string(i / 1000));
      h = (i % 10 == 9) ? layer_norm(h, Tensor(), Tensor()) : add(h, 1.0);
    }
    Tensor loss = sum(h);
    // The bound is on this process's CPU time, so other jobs on a loaded machine do not make it flaky.
    std::clock_t cpu0 = std::clock();
    auto t0 = std::chrono::steady_clock::now();
    std::string laps;
    auto lap = [&, last = t0](const char* what) mutable {
      auto now = std::chrono::steady_clock::now();
      laps += std::string(what) + " " + std::to_string(std::chrono::duration<double>(now - last).count()) + " s; ";
      last = now;
    };
    Graph g = Graph::from_tape(current_tape());
    lap("snapshot");
    std::string dot = g.to_dot();
    lap("DOT");
    std::string boxed = g.to_dot(depth(1));
    lap("DOT, one box per block");
    std::string text = g.to_json();
    lap("JSON");
    PathStats s = analyze_paths(g, g.id_of(loss));
    lap("paths");
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double cpu_seconds = double(std::clock() - cpu0) / CLOCKS_PER_SEC;
    MESSAGE("100000-node chain: " << laps << "total " << seconds << " s wall, " << cpu_seconds << " s CPU");
    CHECK(cpu_seconds < 2.0 * sgtest::kTimingSlack);
    CHECK(g.nodes.size() == (size_t)N + 1);  // + the leaf
    CHECK(s.param("x").paths == 1);
    CHECK(s.param("x").min_norms == (N - 1) / 10);
    CHECK(Graph::from_json(text) == g);
  }
}
