#include "nn/schedule.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "tensor/error.h"

namespace skipgrad::nn {

namespace {
void check_rate(const char* schedule, const char* what, double v) {
  check(std::isfinite(v) && v >= 0, schedule, ": ", what, " must be finite and >= 0, got ", v);
}
void check_step(const char* schedule, int64_t step) {
  check(step >= 0, schedule, ": step must be >= 0, got ", step);
}
}  // namespace

// ---------------------------------------------------------------- constant

ConstantLR::ConstantLR(double lr) : lr_(lr) { check_rate("constant", "lr", lr); }

double ConstantLR::lr(int64_t step) const {
  check_step("constant", step);
  return lr_;
}

std::string ConstantLR::str() const {
  std::ostringstream os;
  os << "constant(lr=" << lr_ << ")";
  return os.str();
}

// ---------------------------------------------------------------- inverse_sqrt

InverseSqrtLR::InverseSqrtLR(double lr, int64_t warmup_steps, double warmup_init_lr)
    : lr_(lr), warmup_init_lr_(warmup_init_lr), warmup_(warmup_steps) {
  check_rate("inverse_sqrt", "lr", lr);
  check_rate("inverse_sqrt", "warmup_init_lr", warmup_init_lr);
  check(warmup_steps >= 0, "inverse_sqrt", ": warmup_steps must be >= 0, got ", warmup_steps);
}

// warm-up: warmup_init_lr + step * (lr - warmup_init_lr) / warmup;  then lr * sqrt(warmup) / sqrt(step)
double InverseSqrtLR::lr(int64_t step) const {
  check_step("inverse_sqrt", step);
  if (step < warmup_) return warmup_init_lr_ + (double)step * (lr_ - warmup_init_lr_) / (double)warmup_;
  if (warmup_ == 0) return lr_ / std::sqrt((double)std::max<int64_t>(step, 1));
  return lr_ * std::sqrt((double)warmup_ / (double)step);
}

std::string InverseSqrtLR::str() const {
  std::ostringstream os;
  os << "inverse_sqrt(lr=" << lr_ << ", warmup=" << warmup_ << ", warmup_init_lr=" << warmup_init_lr_ << ")";
  return os.str();
}

// ---------------------------------------------------------------- cosine

CosineLR::CosineLR(double lr, int64_t warmup_steps, int64_t total_steps, double final_fraction)
    : lr_(lr), final_fraction_(final_fraction), warmup_(warmup_steps), total_(total_steps) {
  check_rate("cosine", "lr", lr);
  check(warmup_steps >= 0, "cosine", ": warmup_steps must be >= 0, got ", warmup_steps);
  check(total_steps > warmup_steps, "cosine", ": total_steps (", total_steps, ") must exceed warmup_steps (",
        warmup_steps, ")");
  check(final_fraction >= 0 && final_fraction <= 1, "cosine", ": final_fraction must be in [0, 1], got ",
        final_fraction);
}

// warm-up: lr * step / warmup;  then lr_min + (lr - lr_min) * (1 + cos(pi * progress)) / 2
double CosineLR::lr(int64_t step) const {
  check_step("cosine", step);
  if (step < warmup_) return lr_ * (double)step / (double)warmup_;
  const double progress = std::min(1.0, (double)(step - warmup_) / (double)(total_ - warmup_));
  const double lr_min = lr_ * final_fraction_;
  return lr_min + (lr_ - lr_min) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

std::string CosineLR::str() const {
  std::ostringstream os;
  os << "cosine(lr=" << lr_ << ", warmup=" << warmup_ << ", total=" << total_ << ", final_fraction="
     << final_fraction_ << ")";
  return os.str();
}

}  // namespace skipgrad::nn
