// The translation example on a device (`--device`): the CPU path of forward_backward, the error without a GPU,
// and, on a GPU, the same training run as on the CPU with one host wait per step.
//
// GPU cases print "skipped: no CUDA device" and pass where there is none (suite `cuda`, like tests/test_cuda.cpp).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "analysis/graph.h"
#include "autograd/ops.h"
#include "eval.h"
#include "nn/checkpoint.h"
#include "nn/clip.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "test_util.h"
#include "translate_test_util.h"
#ifdef SKIPGRAD_WITH_CUDA
#include "backends/cuda/cuda_backend.h"
#endif

using namespace sgtest;
using namespace translate;
namespace fs = std::filesystem;

namespace {

const ScratchDir scratch("skipgrad_device");  // removed when the test process exits
const fs::path& scratch_dir() { return scratch.path(); }

TrainOptions tiny_run(const std::string& device, const std::string& out) {
  TrainOptions o = tiny_train_options(write_tiny_corpus(scratch_dir() / "corpus", 300));
  o.model.dropout = 0.1;  // the GPU draws the same dropout masks as the CPU (tensor/random.h)
  o.max_steps = 20;
  o.eval_sentences = 4;
  o.test_sentences = 4;
  o.beam = 2;
  o.device = device;
  o.out_dir = (scratch_dir() / out).string();
  return o;
}

// Two sentences of made-up ids, padded by collate.
std::vector<Example> two_examples() { return {{{5, 6, 7, Vocab::kEos}, {8, 9}}, {{10, Vocab::kEos}, {11, 12, 13}}}; }

nn::TransformerConfig tiny_config() {
  nn::TransformerConfig c;
  c.enc_layers = c.dec_layers = 1;
  c.d_model = 16;
  c.heads = 2;
  c.d_ff = 32;
  c.vocab = 20;
  c.pad_id = Vocab::kPad;
  c.dropout = 0;
  return c;
}

bool have_cuda() {
  if (cuda_available()) return true;
  MESSAGE("skipped: no CUDA device");
  return false;
}

}  // namespace

TEST_SUITE("translate") {
  TEST_CASE("forward_backward: the loss and global gradient norm of one batch, read back together") {
    manual_seed(3);
    nn::Transformer model(tiny_config());
    Batch b = collate(two_examples(), {0, 1});
    LossAndNorm r = forward_backward(model, b, 0.1);
    // The same quantities the long way round, from the gradients forward_backward left behind.
    const double norm = nn::clip_grad_norm(model.parameters(), 0);
    CHECK(r.grad_norm == doctest::Approx(norm).epsilon(1e-12));
    CHECK(r.grad_norm > 0);
    model.zero_grad();
    NoGradGuard no_grad;
    auto L = nn::label_smoothed_nll(model.forward(b.src, b.tgt_in), b.tgt_out, Vocab::kPad, 0.1);
    CHECK(r.loss == doctest::Approx(L.loss.item()).epsilon(1e-12));
    CHECK(model.device() == Device::cpu());
  }

  TEST_CASE("total_grad_norm and clip_grads_to_norm are clip_grad_norm in two halves") {
    Tensor a = Tensor::zeros({2}).requires_grad_(), c = Tensor::zeros({1}).requires_grad_();
    (a * Tensor::from_vector<float>({3, 0}, {2})).sum().backward();
    (c * 4.0).sum().backward();
    Tensor n = nn::total_grad_norm({a, c});
    CHECK(n.dtype() == DType::F64);
    CHECK(n.item() == doctest::Approx(5.0));
    nn::clip_grads_to_norm({a, c}, 1.0, 5.0);
    CHECK(a.grad().to_vector<float>()[0] == doctest::Approx(3.0 / (5.0 + 1e-6)));
    nn::clip_grads_to_norm({a, c}, 10.0, 1.0);  // under the threshold: untouched
    CHECK(c.grad().item() == doctest::Approx(4.0 / (5.0 + 1e-6)));
    // at total == max_norm both halves scale, as torch's min(1, max_norm / (total + 1e-6)) does
    Tensor e = Tensor::zeros({1}, DType::F64).requires_grad_();
    e.set_grad(Tensor::full({1}, 1.0, DType::F64));
    nn::clip_grads_to_norm({e}, 1.0, nn::total_grad_norm({e}));
    CHECK(e.grad().item() == 1.0 / (1.0 + 1e-6));
    CHECK_FALSE(nn::total_grad_norm({Tensor::zeros({2})}).defined());  // no gradients at all
    CHECK_THROWS_WITH_AS(nn::clip_grads_to_norm({a}, -1.0, 5.0), doctest::Contains("max_norm"), Error);
  }

  TEST_CASE("clip_grads_to_norm of bf16 gradients: the scale in float32, each product rounded once, on every device") {
    std::vector<Device> devices{Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda());
    for (const Device dev : devices)
      for (bool mixed : {false, true}) {  // bf16 alone (the GPU's one launch), and beside float32 (per dtype)
        CAPTURE(dev.str());
        CAPTURE(mixed);
        manual_seed(4);
        Tensor p = Tensor::randn({1000}).to(DType::BF16).to(dev).requires_grad_();
        Tensor q = Tensor::randn({1000}).to(dev).requires_grad_();
        Tensor w = Tensor::randn({1000}).to(DType::BF16).to(dev);
        ((p * w).sum() + (q * w.to(DType::F32)).sum()).backward();
        const std::vector<Tensor> params = mixed ? std::vector<Tensor>{p, q} : std::vector<Tensor>{p};
        const std::vector<float> g0 = p.grad().to(DType::F32).to_vector<float>();
        const Tensor total = nn::total_grad_norm(params);
        const float scale = (float)(1.0 / (total.item() + 1e-6));
        nn::clip_grads_to_norm(params, 1.0, total);  // the device overload (scale_many)
        const std::vector<float> g = p.grad().to(DType::F32).to_vector<float>();
        int off = 0;
        for (size_t i = 0; i < g.size(); i++) off += g[i] != (float)bf16(g0[i] * scale);
        CHECK(off == 0);  // (140 of 1000 differed on the CPU: the scale itself was rounded to bf16)
      }
  }

  TEST_CASE("clip_grads_to_norm with the norm on the device: the host version's gradients, bit for bit") {
    std::vector<Device> devices{Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda());
    for (const Device dev : devices) {
      for (const double max_norm : {0.0, 1.0, 10.0}) {
        for (const bool nan_grad : {false, true}) {
          CAPTURE(dev.str());
          CAPTURE(max_norm);
          CAPTURE(nan_grad);
          Generator g(7);
          auto grads = [&](std::vector<Tensor>& ps) {  // a float32 and a float64 parameter, norm ~5
            ps = {Tensor::zeros({3, 4}, DType::F32, dev).requires_grad_(),
                  Tensor::zeros({5}, DType::F64, dev).requires_grad_()};
            Tensor w0 = Tensor::randn({3, 4}, 0, 1, DType::F32, Device::cpu(), &g).to(dev);
            Tensor w1 = Tensor::randn({5}, 0, 1, DType::F64, Device::cpu(), &g).to(dev);
            ((ps[0] * w0).sum().to(DType::F64) + (ps[1] * w1).sum() * (nan_grad ? NAN : 1.0)).backward();
          };
          std::vector<Tensor> host, device;
          grads(host);
          g = Generator(7);
          grads(device);
          const Tensor norm = nn::total_grad_norm(device);
          nn::clip_grads_to_norm(host, max_norm, nn::total_grad_norm(host).item());
          nn::clip_grads_to_norm(device, max_norm, norm);
          CHECK(host[0].grad().to_vector<float>() == device[0].grad().to_vector<float>());
          const auto h1 = host[1].grad().to_vector<double>(), d1 = device[1].grad().to_vector<double>();
          for (size_t i = 0; i < h1.size(); i++) CHECK((h1[i] == d1[i] || (std::isnan(h1[i]) && std::isnan(d1[i]))));
        }
      }
    }
    Tensor a = Tensor::zeros({2}).requires_grad_();
    (a * 2.0).sum().backward();
    CHECK_THROWS_WITH_AS(nn::clip_grads_to_norm({a}, 1.0, Tensor::ones({2}, DType::F64)),
                         doctest::Contains("one element"), Error);
    std::vector<Tensor*> ts{&a};
    CHECK_THROWS_WITH_AS(backend_for(Device::cpu()).scale_many(ts, Tensor::ones({3})), doctest::Contains("scale_many"),
                         Error);
    if (cuda_available())
      CHECK_THROWS_WITH_ALL(backend_for(Device::cpu()).scale_many(ts, Tensor::ones({1}, DType::F32, Device::cuda())),
                            "scale_many", "cuda:0");
  }

  TEST_CASE("multi-tensor updates of a list naming one tensor twice: applied twice in order, as on the CPU") {
    // One launch would run both entries' blocks at once on a GPU (a race): such lists take the per-tensor path.
    std::vector<Device> devices{Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda());
    for (const Device dev : devices) {
      CAPTURE(dev.str());
      Tensor x = Tensor::full({70000}, 1.5, DType::F32, dev), y = x.narrow(0, 100, 1000);  // y inside x
      std::vector<Tensor*> twice{&x, &x, &y};
      backend_for(dev).scale_many(twice, Tensor::full({1}, 2.0, DType::F64, dev));
      const std::vector<float> v = x.to(Device::cpu()).to_vector<float>();
      CHECK(v[0] == 6.0f);       // 1.5 * 2 * 2
      CHECK(v[100] == 12.0f);    // and once more through y
      CHECK(v[69999] == 6.0f);
      Tensor p = Tensor::full({5}, 1.0, DType::F32, dev), g = Tensor::full({5}, 1.0, DType::F32, dev);
      Tensor m = Tensor::zeros({5}, DType::F32, dev), v2 = Tensor::zeros({5}, DType::F32, dev);
      backend_for(dev).adam_update_many({{&p, &g, &m, &v2, 0.0}, {&p, &g, &m, &v2, 0.0}}, 0.1, 0.9, 0.999, 1e-8,
                                        false, 1);
      Tensor q = Tensor::full({5}, 1.0, DType::F32), mq = Tensor::zeros({5}), vq = Tensor::zeros({5});
      for (int k = 0; k < 2; k++)
        backend_for(Device::cpu()).adam_update(q, Tensor::full({5}, 1.0), mq, vq, 0.1, 0.9, 0.999, 1e-8, 0.0, false, 1);
      CHECK(p.to(Device::cpu()).to_vector<float>() == q.to_vector<float>());
    }
  }

  TEST_CASE("--dyt-stats-every K: each DyT's alpha, input RMS and saturated share, a line after every Kth step's") {
    std::vector<std::string> devices{"cpu"};
    if (cuda_available()) devices.push_back("cuda");  // (the emulator's, in the emulator build)
    std::vector<nlohmann::json> step4;  // per device
    for (const std::string& device : devices) {
      CAPTURE(device);
      TrainOptions o = tiny_run(device, "dyt_stats_" + device);
      o.model.norm = nn::NormKind::DynamicTanh;
      o.model.dropout = 0;
      o.max_steps = 4;
      o.dyt_stats_every = 2;
      train(o);
      std::vector<nlohmann::json> lines;
      std::ifstream in(o.out_dir + "/metrics.jsonl");
      for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
      std::vector<size_t> at;  // the DyT lines
      for (size_t i = 0; i < lines.size(); i++)
        if (lines[i].contains("dyt")) at.push_back(i);
      REQUIRE(at.size() == 2);
      for (size_t k = 0; k < 2; k++) {
        const int64_t step = 2 * (int64_t)(k + 1);
        CHECK(lines[at[k]]["step"] == step);
        CHECK(lines[at[k] - 1]["step"] == step);  // right after its step's line
        CHECK(lines[at[k] - 1].contains("loss"));
        const nlohmann::json& d = lines[at[k]]["dyt"];
        // Pre-LN 1+1: two DyTs in the encoder layer and its final one, three in the decoder layer and its final one
        CHECK(d.size() == 7);
        for (const char* norm : {"enc.0.self_attn_norm", "enc.0.ffn_norm", "enc.final_norm", "dec.0.cross_attn_norm",
                                 "dec.final_norm"}) {
          CAPTURE(norm);
          REQUIRE(d.contains(norm));
          CHECK(d[norm]["alpha"].get<double>() == doctest::Approx(0.5).epsilon(0.05));  // (4 small Adam steps)
          CHECK(d[norm]["rms"].get<double>() > 0);
          CHECK(d[norm]["saturated"].get<double>() >= 0);
          CHECK(d[norm]["saturated"].get<double>() <= 1);
        }
      }
      step4.push_back(lines[at[1]]["dyt"]);
    }
    if (step4.size() == 2)  // the GPU's run trains the same model: the same statistics
      for (const auto& item : step4[0].items())
        CHECK(step4[1][item.key()]["rms"].get<double>() ==
              doctest::Approx(item.value()["rms"].get<double>()).epsilon(1e-4));
    // a model without DyT writes no such line
    TrainOptions ln = tiny_run("cpu", "dyt_stats_ln");
    ln.max_steps = 2;
    ln.dyt_stats_every = 1;
    train(ln);
    std::ifstream in(ln.out_dir + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) CHECK(line.find("\"dyt\"") == std::string::npos);
  }

  TEST_CASE("--sync-every K trains exactly as --sync-every 1: the same losses, norms, evaluations and checkpoints") {
    auto run = [&](int64_t sync_every, const std::string& out) {
      TrainOptions o = tiny_run("cpu", out);
      o.max_steps = 10;
      o.clip_norm = 0.05;  // every step clips: the factor is computed on the device
      o.eval_every = 4;    // forced reads at steps 4 and 8 and at the saves
      o.save_every = 5;
      o.sync_every = sync_every;
      o.grad_norms_every = 3;  // read with the queued values, written after each step's line: the same file
      TrainResult r = train(o);
      std::vector<std::string> lines;  // metrics.jsonl without its wall-clock times
      std::ifstream in(o.out_dir + "/metrics.jsonl");
      for (std::string line; std::getline(in, line);) lines.push_back(line.substr(0, line.find(",\"time\"")));
      return std::make_pair(r, lines);
    };
    const auto [each, each_lines] = run(1, "sync_1");
    const auto [queued, queued_lines] = run(3, "sync_3");
    CHECK(queued.steps == 10);
    CHECK(queued.final_train_loss == each.final_train_loss);
    CHECK(queued.valid_loss == each.valid_loss);
    CHECK(queued.test_bleu == each.test_bleu);
    CHECK(queued_lines == each_lines);
    // 10 steps, evaluations at steps 4 and 8 and the end's at 10, parameter norms at steps 3, 6 and 9
    CHECK(each_lines.size() == 16);
    CHECK(each_lines.back().rfind("{\"step\":10,\"valid_loss\":", 0) == 0);
    CHECK(each_lines[3].rfind("{\"step\":3,\"grad_norms\":{", 0) == 0);  // right after step 3's line
    // update k runs at the schedule's rate for k-1 updates done, as fairseq's: warmup_init_lr first
    const TrainOptions o = tiny_run("cpu", "sync_1");
    const nn::InverseSqrtLR schedule(o.lr, o.warmup, o.warmup_init_lr);
    for (int64_t k : {1, 2, 10}) {
      CAPTURE(k);
      const std::string head = "{\"step\":" + std::to_string(k) + ",";
      auto line = std::find_if(each_lines.begin(), each_lines.end(),
                               [&](const std::string& l) { return l.rfind(head, 0) == 0; });
      REQUIRE(line != each_lines.end());
      const double lr = std::stod(line->substr(line->find("\"lr\":") + 5));
      CHECK(lr == doctest::Approx(schedule.lr(k - 1)).epsilon(1e-5));
    }
    CHECK(schedule.lr(0) == o.warmup_init_lr);
  }

  TEST_CASE("--topology admin: ω is profiled on the first batch before step 1 (ratios growing along each stack)") {
    TrainOptions o = tiny_run("cpu", "admin");
    o.model.topology = "admin";
    o.max_steps = 1;
    o.warmup_init_lr = o.lr = 1e-7;  // the one Adam step moves ω by ~1e-7: what is read back is the profile
    train(o);
    nn::SafetensorsFile ckpt = nn::load_safetensors(o.out_dir + "/checkpoint_last.safetensors");
    auto omega = [&](const std::string& name) {
      std::vector<double> v = ckpt.find(name).to_vector<double>();
      for (double e : v) CHECK(std::abs(e - v[0]) < 1e-6);  // one ratio for the whole vector
      return v[0];
    };
    const double enc_sa = omega("enc.0.self_attn_omega"), enc_ffn = omega("enc.0.ffn_omega");
    const double dec_sa = omega("dec.0.self_attn_omega"), dec_ca = omega("dec.0.cross_attn_omega"),
                 dec_ffn = omega("dec.0.ffn_omega");
    CHECK(std::abs(enc_sa - 1) < 1e-5);  // each stack starts at r = 1
    CHECK(std::abs(dec_sa - 1) < 1e-5);
    CHECK(enc_ffn > 1.01);
    CHECK(dec_ca > 1.01);
    CHECK(dec_ffn > dec_ca);
  }

  TEST_CASE("an unknown or absent device is a clear error before any training") {
    CHECK_THROWS_WITH_AS(train(tiny_run("tpu", "bad_device")), doctest::Contains("tpu"), Error);
    if (!cuda_available())
      CHECK_THROWS_WITH_AS(train(tiny_run("cuda", "no_gpu")), doctest::Contains("cuda:0 requested"), Error);
  }
}

TEST_SUITE("translate") {
  TEST_CASE("--profile-step N: step N's profile is printed and written as a table and a Chrome trace") {
    for (const std::string device : {"cpu", "cuda"}) {
      if (device == "cuda" && !have_cuda()) continue;
      TrainOptions o = tiny_run(device, "profiled_" + device);
      o.max_steps = 3;
      o.profile_step = 2;
      train(o);
      const fs::path table = fs::path(o.out_dir) / "profile_step2.txt";
      const fs::path trace = fs::path(o.out_dir) / "profile_step2.trace.json";
      REQUIRE(fs::exists(table));
      REQUIRE(fs::exists(trace));
      CHECK_FALSE(fs::exists(fs::path(o.out_dir) / "profile_step1.txt"));
      const std::string text = read_file(table.string());
      CHECK(text.find(device == "cpu" ? "profile (cpu)" : "profile (cuda:0)") != std::string::npos);
      for (const char* part : {"enc.*.self_attn.attention", "adamw.step", "backward.leaves", "clip_grad_norm"})
        CHECK_MESSAGE(text.find(part) != std::string::npos, part);
      CHECK(read_file(trace.string()).find("\"traceEvents\"") != std::string::npos);
    }
  }

  TEST_CASE("--autocast bf16: the translation example trains in mixed precision as in float32, within bf16 rounding") {
    TrainOptions f32_o = tiny_run("cpu", "run_f32");
    f32_o.max_steps = 10;
    TrainOptions mixed_o = f32_o;
    mixed_o.out_dir = (scratch_dir() / "run_autocast").string();
    mixed_o.autocast = "bf16";
    const TrainResult f32 = train(f32_o), mixed = train(mixed_o);
    REQUIRE_FALSE(mixed.diverged);
    CHECK(mixed.steps == f32.steps);
    CHECK(mixed.final_train_loss == doctest::Approx(f32.final_train_loss).epsilon(5e-2));
    CHECK(mixed.valid_loss == doctest::Approx(f32.valid_loss).epsilon(5e-2));
    CHECK(std::isfinite(mixed.test_bleu));
    TrainOptions bad = tiny_run("cpu", "run_bad");
    bad.autocast = "fp16";
    CHECK_THROWS_WITH_AS(train(bad), doctest::Contains("--autocast must be off or bf16"), Error);
    if (!have_cuda()) return;
    mixed_o.device = "cuda";
    mixed_o.out_dir += "_gpu";
    const TrainResult gpu = train(mixed_o);
    CHECK(gpu.final_train_loss == doctest::Approx(mixed.final_train_loss).epsilon(1e-2));
  }
}

TEST_SUITE("cuda") {
  TEST_CASE("the translation example trains on the GPU as on the CPU: same losses, BLEU computed, resumable") {
    if (!have_cuda()) return;
    TrainResult cpu = train(tiny_run("cpu", "run_cpu"));
    TrainOptions on_gpu = tiny_run("cuda", "run_gpu");
    on_gpu.sync_every = 4;  // the losses read back every 4 steps: the same run (a CPU test checks it bit for bit)
    TrainResult gpu = train(on_gpu);
    REQUIRE_FALSE(gpu.diverged);
    CHECK(gpu.steps == cpu.steps);
    // 20 Adam steps in float32: only the order of sums differs between the backends.
    CHECK(gpu.final_train_loss == doctest::Approx(cpu.final_train_loss).epsilon(2e-3));
    CHECK(gpu.valid_loss == doctest::Approx(cpu.valid_loss).epsilon(2e-3));
    CHECK(std::isfinite(gpu.test_bleu));
    // A GPU checkpoint resumes on the GPU, and loads for evaluation on the CPU.
    TrainOptions more = tiny_run("cuda", "run_gpu");
    more.max_steps = 25;
    more.resume = true;
    const TrainResult resumed = train(more);
    CHECK(resumed.steps == 25);
    // The resumed run's train loss averages its own 5 steps (it once decayed from 0 to a tenth of the loss).
    CHECK(resumed.final_train_loss > 0.5 * gpu.final_train_loss);
    CHECK(track_grad_norms());  // train() switched tracking off only while it ran
    TrainedModel m = load_trained_model(more.out_dir + "/checkpoint_last.safetensors", "cpu");
    CHECK(m.model->device() == Device::cpu());
  }

#ifdef SKIPGRAD_WITH_CUDA
  TEST_CASE_FIXTURE(EmptyDeviceCache,
                    "a training step waits for the GPU once (to read loss and norm) or, with --sync-every K, never") {
    if (!have_cuda()) return;
    auto& gpu = static_cast<CudaBackend&>(backend_for(Device::cuda()));
    manual_seed(3);
    nn::Transformer model(tiny_config());
    model.to(Device::cuda());
    nn::AdamW opt(model.named_parameters(), {});
    const std::vector<Example> ex = two_examples();
    auto queue_step = [&] {  // as train() does, with --clip-norm 0.1: the clipping factor computed on the device
      Batch b = collate(ex, {0, 1}, Device::cuda());
      Tensor values = forward_backward_queued(model, b, 0.1);
      nn::clip_grads_to_norm(model.parameters(), 0.1, values.narrow(0, 1, 1));
      opt.step();
      opt.zero_grad();
      return values;
    };
    // as train() does; tracking adds one wait per backward (tests/test_cuda.cpp)
    TrackGradNormsGuard norm_tracking_off(false);
    (void)queue_step().to_vector<double>();  // warm-up: cuBLAS handles, the allocator's cache
    int64_t waits = gpu.host_waits();
    const int64_t uploads = gpu.uploads(), staged = gpu.staged_uploads();
    const uint64_t cuda_mallocs = allocator_for(Device::cuda()).stats().os_allocs;
    CHECK(std::isfinite(queue_step().to_vector<double>()[0]));  // --sync-every 1: the read is the one wait
    CHECK(allocator_for(Device::cuda()).stats().os_allocs == cuda_mallocs);  // no cudaMalloc after the first step
    CHECK(gpu.host_waits() - waits == 1);
    INFO("uploads in one step: " << gpu.uploads() - uploads);
    CHECK(gpu.staged_uploads() - staged == gpu.uploads() - uploads);  // the batch went through pinned memory
    CHECK(gpu.uploads() - uploads >= 3);                               // src, tgt_in, tgt_out
    // --sync-every 3: three steps queue with no wait, and their read is one
    waits = gpu.host_waits();
    std::vector<Tensor> values;
    for (int k = 0; k < 3; k++) values.push_back(queue_step());
    CHECK(gpu.host_waits() - waits == 0);
    for (double x : concat(values, 0).to_vector<double>()) CHECK(std::isfinite(x));
    CHECK(gpu.host_waits() - waits == 1);
  }
#endif
}
