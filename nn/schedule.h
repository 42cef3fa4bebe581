// Learning-rate schedules: small classes mapping an update count to a learning rate.
//
// `step` is the number of optimizer updates done so far (Optimizer::step_count()), as fairseq's
// lr_scheduler.step_update(num_updates): set the rate before each step with
//   opt.set_lr(schedule.lr(opt.step_count()));  opt.step();
#pragma once
#include <cstdint>
#include <string>

namespace skipgrad::nn {

class LRSchedule {
 public:
  virtual ~LRSchedule() = default;
  virtual double lr(int64_t step) const = 0;
  virtual std::string str() const = 0;  // "inverse_sqrt(lr=0.0005, warmup=4000, warmup_init_lr=1e-07)"
};

// A fixed rate.
class ConstantLR : public LRSchedule {
 public:
  explicit ConstantLR(double lr);
  double lr(int64_t step) const override;
  std::string str() const override;

 private:
  double lr_;
};

// fairseq's inverse_sqrt (fairseq/optim/lr_scheduler/inverse_square_root_schedule.py):
//   step < warmup:  warmup_init_lr + step * (lr - warmup_init_lr) / warmup     (linear warm-up)
//   otherwise:      lr * sqrt(warmup / step)                                    (decay ∝ 1/√step)
// With warmup = 0 (where fairseq divides by zero) the rate is lr / sqrt(max(step, 1)).
class InverseSqrtLR : public LRSchedule {
 public:
  InverseSqrtLR(double lr, int64_t warmup_steps, double warmup_init_lr = 0.0);
  double lr(int64_t step) const override;
  std::string str() const override;

 private:
  double lr_, warmup_init_lr_;
  int64_t warmup_;
};

// Linear warm-up from 0 to lr over warmup steps, then a half cosine from lr down to final_fraction * lr at
// total_steps, constant after:
//   step < warmup:  lr * step / warmup
//   otherwise:      lr_min + (lr - lr_min) * (1 + cos(pi * min(1, (step - warmup) / (total - warmup)))) / 2
class CosineLR : public LRSchedule {
 public:
  CosineLR(double lr, int64_t warmup_steps, int64_t total_steps, double final_fraction = 0.0);
  double lr(int64_t step) const override;
  std::string str() const override;

 private:
  double lr_, final_fraction_;
  int64_t warmup_, total_;
};

}  // namespace skipgrad::nn
