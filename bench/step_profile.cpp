// Times the forward, backward and update of one training step of a translation-sized model; used with perf to
// find what dominates. Usage: step_profile [topology] [layers] [d_model] [batch] [len] [steps] [dropout]
// (dropout: the model's three dropout rates, 0 by default)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "nn/loss.h"
#include "nn/optim.h"
#include "nn/transformer.h"
#include "skipgrad.h"

using namespace skipgrad;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  nn::TransformerConfig cfg;
  cfg.topology = argc > 1 ? argv[1] : "pre_ln";
  cfg.enc_layers = cfg.dec_layers = argc > 2 ? std::atoi(argv[2]) : 6;
  cfg.d_model = argc > 3 ? std::atoi(argv[3]) : 256;
  cfg.heads = 4;
  cfg.d_ff = 4 * cfg.d_model;
  cfg.vocab = 1000;
  cfg.dropout = cfg.attn_dropout = cfg.act_dropout = argc > 7 ? std::atof(argv[7]) : 0;
  cfg.pad_id = 0;
  const int64_t B = argc > 4 ? std::atoi(argv[4]) : 32, T = argc > 5 ? std::atoi(argv[5]) : 32;
  const int steps = argc > 6 ? std::atoi(argv[6]) : 5;
  manual_seed(1);
  nn::Transformer model(cfg);
  nn::AdamOptions ao;
  nn::Adam opt(model.named_parameters(), ao);
  Generator g(3);
  Tensor src = Tensor::rand({B, T}, 1, 1000, DType::F64, Device::cpu(), &g).to(DType::I64);
  Tensor tgt = Tensor::rand({B, T}, 1, 1000, DType::F64, Device::cpu(), &g).to(DType::I64);
  set_track_grad_norms(false);
  for (int s = 0; s < steps; s++) {
    auto t0 = Clock::now();
    auto L = nn::label_smoothed_nll(model.forward(src, tgt), tgt, 0, 0.1);
    double loss = L.loss.item();
    auto t1 = Clock::now();
    L.loss.backward();
    auto t2 = Clock::now();
    opt.step();
    opt.zero_grad();
    auto t3 = Clock::now();
    auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    std::printf("step %d loss %.4f  forward %.1f ms  backward %.1f ms  update %.1f ms  total %.1f ms\n", s, loss,
                ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t0, t3));
  }
  return 0;
}
