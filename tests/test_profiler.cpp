// The profiler (autograd/profiler.h): every recorded op and every node's backward is one interval, the intervals
// tile the profile (no gap, no overlap, on the host and on the device), the summaries group them by op and by node
// name with layer numbers as '*', and the Chrome trace is valid JSON with one event per interval and track.
#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <thread>

#include "analysis/profile.h"
#include "cuda_test_util.h"
#include "tensor/allocator.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "nn/transformer.h"

using namespace sgtest;

namespace {

struct FreshTape {
  FreshTape() { current_tape().clear(); }
  ~FreshTape() { current_tape().clear(); }
};

// Intervals follow each other: each starts where the previous ended, the first at 0.
void check_tiled(const std::vector<ProfileEvent>& ev, double host_total, double device_total) {
  double host = 0, device = 0;
  for (const ProfileEvent& e : ev) {
    INFO(e.name);
    CHECK(e.host_ms >= 0);
    CHECK(e.device_ms >= 0);
    CHECK(e.host_start_ms == doctest::Approx(host).epsilon(1e-9));
    CHECK(e.device_start_ms == doctest::Approx(device).epsilon(1e-6).scale(1));
    host = e.host_start_ms + e.host_ms;
    device = e.device_start_ms + e.device_ms;
  }
  CHECK(host == doctest::Approx(host_total));
  CHECK(device == doctest::Approx(device_total).epsilon(1e-6).scale(1));
}

std::map<std::string, int> count_by(const std::vector<ProfileEvent>& ev, ProfilePhase phase) {
  std::map<std::string, int> n;
  for (const ProfileEvent& e : ev)
    if (e.phase == phase) n[e.name]++;
  return n;
}

// Two "layers" of y = relu(x W_i^T + b_i) in scopes enc.0 and enc.1, a sum, backward, an Adam step.
struct TwoLayers {
  nn::Linear l0{4, 4}, l1{4, 4};
  std::vector<std::pair<std::string, Tensor>> params() {
    return {{"l0.weight", l0.weight}, {"l0.bias", l0.bias}, {"l1.weight", l1.weight}, {"l1.bias", l1.bias}};
  }
  Tensor forward(const Tensor& x) {
    Tensor h;
    {
      Scope s("enc.0");
      h = relu(l0.forward(x));
    }
    Scope s("enc.1");
    return relu(l1.forward(h));
  }
};

}  // namespace

TEST_SUITE("profiler") {

TEST_CASE("profiler: one interval per op and per backward, tiling the step; regions; summaries") {
  FreshTape fresh;
  TwoLayers m;
  nn::Adam opt(m.params());
  Tensor x = leaf({3, 4}, 7).to(DType::F32).detach().requires_grad_();
  const size_t before = current_tape().size();
  Profiler prof;
  CHECK(profiling());
  Tensor loss = sum(m.forward(x));
  const size_t recorded = current_tape().size() - before;
  loss.backward();
  opt.step();
  opt.zero_grad();
  prof.stop();
  CHECK_FALSE(profiling());

  const auto& ev = prof.events();
  auto fwd = count_by(ev, ProfilePhase::Forward), bwd = count_by(ev, ProfilePhase::Backward);
  auto regions = count_by(ev, ProfilePhase::Region);
  size_t nf = 0, nb = 0;
  for (auto& [k, v] : fwd) nf += v;
  for (auto& [k, v] : bwd) nb += v;
  CHECK(nf == recorded);  // every recorded op once
  CHECK(nb == recorded);  // every node's backward once (each one here gets a gradient)
  CHECK(fwd == bwd);      // under the same names
  CHECK(fwd.count("enc.0.linear") == 1);
  CHECK(fwd.count("enc.1.relu") == 1);
  CHECK(regions == std::map<std::string, int>{{"backward.enter", 1}, {"backward.leaves", 1}, {"adam.step", 1},
                                              {"adam.zero_grad", 1}});
  check_tiled(ev, prof.host_total_ms(), prof.device_total_ms());
  CHECK(prof.device_total_ms() == prof.host_total_ms());  // a CPU profile: the device's times are the host's

  // by op: linear twice (forward calls), with its backward time; regions under their names
  std::map<std::string, ProfileRow> by_op;
  for (const ProfileRow& r : profile_by_op(prof)) by_op[r.key] = r;
  CHECK(by_op.at("linear").calls == 2);
  CHECK(by_op.at("relu").calls == 2);
  CHECK(by_op.at("adam.step").calls == 1);
  CHECK(by_op.at("adam.step").backward_host_ms == 0);
  double total = 0;
  for (auto& [k, r] : by_op) total += r.host_ms();
  CHECK(total == doctest::Approx(prof.host_total_ms()));
  auto rows = profile_by_op(prof);
  for (size_t i = 1; i < rows.size(); i++) CHECK(rows[i - 1].device_ms() >= rows[i].device_ms());

  // by scope: the two layers' nodes together
  std::map<std::string, ProfileRow> by_scope;
  for (const ProfileRow& r : profile_by_scope(prof)) by_scope[r.key] = r;
  CHECK(by_scope.at("enc.*.linear").calls == 2);
  CHECK(by_scope.at("enc.*.relu").calls == 2);
  CHECK(by_scope.at("sum").calls == 1);
  CHECK(by_scope.count("enc.0.linear") == 0);

  // by layer: in forward order, each layer's forward and backward together, regions as they are
  std::vector<std::string> layers;
  for (const ProfileRow& r : profile_by_layer(prof)) layers.push_back(r.key);
  CHECK(layers == std::vector<std::string>{"enc.0", "enc.1", "sum", "backward.enter", "backward.leaves", "adam.step",
                                           "adam.zero_grad"});
  CHECK(profile_by_layer(prof)[0].calls == 2);  // enc.0's linear and relu
  CHECK(profile_by_layer(prof)[0].backward_host_ms > 0);

  const std::string table = profile_table(prof);
  CHECK(table.find("profile (cpu)") != std::string::npos);
  CHECK(table.find("enc.*.linear") != std::string::npos);
  CHECK(table.find("adam.step") != std::string::npos);
  CHECK(table.find("layer (forward order)") != std::string::npos);
  CHECK(profile_table(prof, 1).find("more)") != std::string::npos);
}

TEST_CASE("profiler: the ops a node's backward calls are part of its backward interval") {
  // linear without a bias computes its weight gradient with matmul, mean's backward and the norm tracking call
  // ops too, and on a GPU the tracked norms come back in one copy (concat, to_device) at the walk's end: none of
  // them may show up as forward intervals of their own between the backward's two regions
  std::vector<Device> devices = {Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  for (const Device& device : devices) {
    CAPTURE(device.str());
    FreshTape fresh;
    Tensor x = leaf({3, 4}, 7).detach().to(device).requires_grad_(),
           w = leaf({5, 4}, 8).detach().to(device).requires_grad_();
    const size_t before = current_tape().size();
    Profiler prof(device);
    Tensor loss = mean(linear(x, w, Tensor()));
    const size_t recorded = current_tape().size() - before;
    loss.backward();
    prof.stop();
    const auto& ev = prof.events();
    size_t enter = ev.size(), leaves = ev.size();
    for (size_t i = 0; i < ev.size(); i++) {
      if (ev[i].name == "backward.enter") enter = i;
      if (ev[i].name == "backward.leaves") leaves = i;
    }
    REQUIRE(enter < leaves);
    REQUIRE(leaves < ev.size());
    for (size_t i = enter + 1; i < leaves; i++) {
      INFO(ev[i].name << " (" << ev[i].op << ")");
      CHECK(ev[i].phase == ProfilePhase::Backward);
    }
    CHECK(leaves - enter - 1 == recorded);  // one interval per node's backward
    CHECK(count_by(ev, ProfilePhase::Backward) == std::map<std::string, int>{{"linear", 1}, {"mean", 1}});
    check_tiled(ev, prof.host_total_ms(), prof.device_total_ms());
  }
}

TEST_CASE("profiler: memory in use at each mark; what a forward leaves allocated") {
  FreshTape fresh;
  Tensor x = leaf({1000}, 3);  // float64: 8000 bytes
  Tensor kept;
  allocator_for(Device::cpu()).empty_cache();  // each block of its own class: none larger left cached by other tests
  Profiler prof;
  {
    NoGradGuard ng;
    kept = exp(x);           // leaves its output allocated
    Tensor dropped = tanh(x);
    dropped = Tensor();      // freed before the next mark: charged to the next op
    Tensor s = sum(x);
  }
  prof.stop();
  const auto& ev = prof.events();
  REQUIRE(ev.size() == 3);
  const int64_t block = (int64_t)CachingAllocator::round_size(8000);
  CHECK(ev[0].name == "exp");
  CHECK(ev[0].bytes_delta == block);
  CHECK(ev[0].bytes_in_use == prof.start_bytes_in_use() + block);
  CHECK(ev[1].bytes_delta == block);   // tanh's output, alive at its mark
  CHECK(ev[2].bytes_delta == -block + (int64_t)CachingAllocator::round_size(8));  // tanh's freed, sum's kept
  CHECK(prof.max_bytes_in_use() == prof.start_bytes_in_use() + 2 * block);
  std::map<std::string, ProfileRow> by_op;
  for (const ProfileRow& r : profile_by_op(prof)) by_op[r.key] = r;
  CHECK(by_op.at("exp").forward_bytes == block);
  CHECK(profile_table(prof).find("fwd MiB") != std::string::npos);
  auto j = nlohmann::json::parse(profile_chrome_trace(prof));
  int counters = 0;
  for (auto& e : j.at("traceEvents"))
    if (e.at("ph") == "C") {
      counters++;
      CHECK(e.at("args").at("cpu").get<double>() >= 0);
    }
  CHECK(counters == 4);  // the start and each mark
}

TEST_CASE("profiler: Chrome trace is JSON with an event per interval") {
  FreshTape fresh;
  Tensor x = leaf({2, 3}, 1);
  Profiler prof;
  {
    Scope s("quote\"d");
    Tensor y = sum(tanh(x));
    y.backward();
  }
  prof.stop();
  auto j = nlohmann::json::parse(profile_chrome_trace(prof));
  int complete = 0;
  for (auto& e : j.at("traceEvents")) {
    if (e.at("ph") != "X") continue;
    complete++;
    CHECK(e.at("tid") == 0);
    CHECK(e.at("dur").get<double>() >= 0);
    CHECK(e.at("args").contains("op"));
  }
  CHECK(complete == (int)prof.events().size());
  CHECK(j.dump().find("quote\\\"d.tanh") != std::string::npos);
}

TEST_CASE("profiler: no-grad ops are profiled; one profiler per thread; results only after stop") {
  FreshTape fresh;
  Tensor x = leaf({2, 2}, 3);
  {
    Profiler prof;
    CHECK_THROWS_WITH_AS(Profiler(), doctest::Contains("already runs on this thread"), Error);
    CHECK_THROWS_WITH_AS(prof.events(), doctest::Contains("call stop() before"), Error);
    {
      NoGradGuard ng;
      Tensor y = exp(x);
    }
    prof.stop();
    prof.stop();  // idempotent
    REQUIRE(prof.events().size() == 1);
    CHECK(prof.events()[0].name == "exp");
    CHECK(prof.events()[0].op == "exp");
    Tensor z = exp(x);  // after stop: not profiled
    CHECK(prof.events().size() == 1);
  }
  CHECK_FALSE(profiling());
  Tensor y = exp(x);  // no profiler: the hooks do nothing
  Profiler again;     // the destroyed one let go of the thread
  again.stop();
  CHECK(again.events().empty());
  CHECK(again.host_total_ms() == 0);
}

TEST_CASE("profiler: stopped or destroyed on another thread, or outliving its thread, it leaves no dangling pointer") {
  auto prof = std::make_unique<Profiler>();
  Tensor a = Tensor::ones({2}).requires_grad_();
  Tensor y = a * a;
  std::thread([&] {
    prof->stop();
    prof.reset();
  }).join();
  CHECK_FALSE(profiling());
  y = a * a;  // recorded with no profiler (it crashed here: the thread still pointed at the freed one)
  Profiler again;  // and this thread may start another
  again.stop();
  CHECK(again.events().size() == 0);
  std::unique_ptr<Profiler> orphan;
  std::thread([&] {
    orphan = std::make_unique<Profiler>();
    Tensor b = Tensor::ones({2}) + 1.0;
  }).join();  // its thread ended while it ran
  orphan->stop();
  CHECK(orphan->events().size() == 1);
  orphan.reset();
  CHECK_FALSE(profiling());
}

TEST_CASE("profiler: a Transformer step, by topology part") {
  FreshTape fresh;
  nn::TransformerConfig cfg;
  cfg.vocab = 16;
  cfg.d_model = 8;
  cfg.heads = 2;
  cfg.d_ff = 16;
  cfg.enc_layers = cfg.dec_layers = 2;
  cfg.topology = "pre_ln";
  cfg.dropout = cfg.attn_dropout = cfg.act_dropout = 0;
  manual_seed(1);
  nn::Transformer model(cfg);
  Tensor src = Tensor::from_vector<int64_t>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor tgt = Tensor::from_vector<int64_t>({2, 3, 4, 5, 6, 7}, {2, 3});
  Profiler prof;
  auto L = nn::label_smoothed_nll(model.forward(src, tgt), tgt, 0, 0.1);
  L.loss.backward();
  prof.stop();
  // each encoder node name occurs as often in both layers: the rows of enc.* count an even number of calls
  std::map<std::string, ProfileRow> rows;
  for (const ProfileRow& r : profile_by_scope(prof)) rows[r.key] = r;
  int enc_rows = 0;
  for (const auto& row : rows)  // (not a structured binding: clang < 16 cannot capture one in CHECK's lambda)
    if (row.first.rfind("enc.*.", 0) == 0) {
      enc_rows++;
      CHECK_MESSAGE((row.second.calls > 0 && row.second.calls % 2 == 0), row.first);
    }
  CHECK(enc_rows > 5);
  // a node named after it was recorded (the residual adds) is profiled under its final name, forward and backward
  CHECK(rows.at("enc.*.ffn.residual_add").calls == 2);
  CHECK(rows.at("enc.*.ffn.residual_add").backward_host_ms > 0);
  check_tiled(prof.events(), prof.host_total_ms(), prof.device_total_ms());
}

TEST_CASE_FIXTURE(EmptyDeviceCache,
                  "profiler: a CUDA step has a device timeline and does not wait for the GPU until stop") {
  if (!have_cuda()) return;
  FreshTape fresh;
  TwoLayers m;
  m.l0.to(Device::cuda());
  m.l1.to(Device::cuda());
  nn::Adam opt(m.params());
  Tensor x = leaf({3, 4}, 7).to(DType::F32).to(Device::cuda()).detach();
  // as in training (the trainer, the benchmark): tracking reads each node's gradient norm back in backward()
  TrackGradNormsGuard norm_tracking_off(false);
  for (int round = 0; round < 2; round++) {  // the second reuses the pooled events
    const int64_t waits = gpu_host_waits();
    Profiler prof(Device::cuda());
    Tensor loss = sum(m.forward(x));
    loss.backward();
    opt.step();
    opt.zero_grad();
    CHECK(gpu_host_waits() == waits);  // marks are queued, not waited for
    prof.stop();
    const auto& ev = prof.events();
    CHECK(ev.size() == 2 * 5 + 4);  // linear, relu twice and sum; their backwards; 4 regions
    check_tiled(ev, prof.host_total_ms(), prof.device_total_ms());
    CHECK(prof.device_total_ms() > 0);
    CHECK(profile_table(prof).find("fwd dev ms") != std::string::npos);
    auto j = nlohmann::json::parse(profile_chrome_trace(prof));
    int device_events = 0;
    for (auto& e : j.at("traceEvents"))
      if (e.at("ph") == "X" && e.at("tid") == 1) device_events++;
    CHECK(device_events == (int)ev.size());
  }
}

}  // TEST_SUITE
