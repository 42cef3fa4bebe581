// The optimizer's part of a checkpoint (nn/checkpoint.h): the metadata entries that record its kind, step count,
// learning rate, each parameter's lr_scale and weight decay, and its settings (Adam's betas and eps, SGD's
// momentum), written by save_checkpoint and read back, checked, by load_checkpoint, as torch's optimizer
// state_dict records its param_groups. Its state tensors ("optim.m.<name>", ...) are checkpoint.cpp's.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "nn/checkpoint.h"

namespace skipgrad::nn {

// "skipgrad.optim.*" entries of `opt`, each number the shortest text that reads back exactly (std::to_chars).
Metadata optimizer_metadata(const Optimizer& opt);

// What a file says of the optimizer, parsed and checked against `opt`: the same kind, one finite value >= 0 per
// parameter, every setting `opt` has and no other. Entries missing from older files are empty (kept as they are).
struct OptimizerRecord {
  int64_t step = 0;
  double lr = 0;
  std::vector<double> lr_scales, weight_decays;           // [param] or empty
  std::vector<std::pair<std::string, double>> settings;  // Optimizer::settings() order, or empty
};
OptimizerRecord read_optimizer_metadata(const Metadata& meta, const Optimizer& opt, const std::string& path);

// Sets the record's settings, which checks their ranges (Optimizer::set_setting); when one is refused, puts back
// those already set and throws, naming the file. load_checkpoint calls it before it changes anything else.
void restore_optimizer_settings(Optimizer& opt, const OptimizerRecord& record, const std::string& path);
// Sets the rest: step count, learning rate, lr_scales and weight decays (already checked).
void restore_optimizer_record(Optimizer& opt, const OptimizerRecord& record);

// A metadata value that must be a non-negative integer, named with the file in errors.
uint64_t parse_u64(const Metadata& meta, const std::string& key, const std::string& path);

}  // namespace skipgrad::nn
