// Checkpoints as safetensors files (https://github.com/huggingface/safetensors), readable by the Python package.
//
// Layout: 8-byte little-endian header length N; N bytes of JSON, {"name": {"dtype": "F32", "shape": [..],
// "data_offsets": [begin, end]}, ..., "__metadata__": {"key": "value"}}, padded with spaces to 8 bytes; then the
// raw little-endian data, tensors back to back, offsets relative to the start of the data.
//
// What a checkpoint holds:
//   tensors    the model's parameters and buffers by full name ("enc.0.ffn.fc1.weight"), and with an optimizer
//              its state as "optim.<slot>.<name>" ("optim.m.enc.0.ffn.fc1.weight")
//   metadata   "skipgrad.checksum"      FNV-1a 64 of the data section, 16 hex digits
//              "skipgrad.header_checksum"   FNV-1a 64 of the header's JSON (keys sorted, as nlohmann writes it)
//                                      without this entry: a damaged name, shape, offset or metadata value is
//                                      refused too, a damaged name of this entry included (files written
//                                      before 2026-12-05 have only the data checksum and load)
//              "skipgrad.rng.seed", "skipgrad.rng.offset"   the default generator's state
//              "skipgrad.optim.kind", "skipgrad.optim.step", "skipgrad.optim.lr"   with an optimizer, and
//              "skipgrad.optim.lr_scale", "skipgrad.optim.weight_decay"   each parameter's (ParamGroup), in
//                                      named_params() order, space-separated (files before 2026-12-05: none)
//              "skipgrad.optim.param_names"   that order's names, a JSON array: the values are restored by name,
//                                      so another registration or group order gets each parameter its own
//                                      (files before 2026-12-06: none, restored by position)
//              "skipgrad.optim.settings"   Optimizer::settings(), "beta1=0.9 beta2=0.98 eps=1e-08" (Adam) or
//                                      "momentum=0.9 nesterov=0" (SGD), each number the shortest text that
//                                      reads back exactly (files before 2026-12-06: none)
//              "skipgrad.model"        Module::kind() when the model says (a Transformer: its topology, norm,
//                                      activation...): a file of another kind is refused
//              plus the caller's entries (e.g. "config": the model config as JSON); "skipgrad." is reserved
//
// Writes are atomic (write_file_atomic, tensor/files.h): the file is written to a temporary in the same
// directory, fsync'ed, renamed over the target and the directory fsync'ed, so a crash leaves the old checkpoint or
// the new one, never a mix. Through a symlink the link's target is replaced; a replaced file keeps its permissions.
// Loads validate everything before touching the model: a truncated file, a bad header, a checksum mismatch,
// a missing or unexpected tensor, a shape/dtype that differs from the model's, or a model of another kind (a
// pre_ln checkpoint for a resi_dual model: Module::kind()) throws skipgrad::Error naming the file and the tensor,
// and the model (and optimizer, and RNG) are left as they were.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nn/module.h"
#include "nn/optim.h"
#include "tensor/tensor.h"

namespace skipgrad::nn {

using Metadata = std::map<std::string, std::string>;

// ---- a model's tensors in memory (torch's state_dict / load_state_dict) ----
// Every parameter and buffer by full name, parameters first: the tensors themselves (handles, not copies), as a
// checkpoint holds them.
NamedTensors state_dict(const Module& model);
// Copies `tensors` into the model's parameters and buffers in place (Tensor::copy_: any device, any floating dtype,
// converted; an integer tensor only into one of its own dtype). Strict, as torch's default: every name of the model
// given once, no other name, the same shapes; nothing is copied when a check fails, and the error names the tensor.
void load_state_dict(Module& model, const NamedTensors& tensors);

// ---- checkpoints of a model (and optimizer, step, RNG) ----
void save_checkpoint(const std::string& path, const Module& model, const Optimizer* optimizer = nullptr,
                     const Metadata& metadata = {});
// Copies the file's tensors into the model's parameters and buffers in place (Tensor::copy_); with an
// optimizer, also its state, step count, learning rate, each parameter's lr_scale and weight decay and its
// settings (Adam's betas and eps, SGD's momentum), as torch restores param_groups: the file's values win over the
// optimizer's constructor's (the file must come from the same kind of optimizer; a file without an entry keeps the
// optimizer's values for it); restores the default generator when restore_rng and the file has its state. Optimizer
// tensors in the file are ignored when no optimizer is given. Returns the file's metadata (user entries and
// skipgrad.*).
Metadata load_checkpoint(const std::string& path, Module& model, Optimizer* optimizer = nullptr,
                         bool restore_rng = true);
// The same from a file already read (load_safetensors); `path` names it in errors. For a caller that reads the
// metadata first (a resumed run's vocabulary and options): the file is read once.
struct SafetensorsFile;
Metadata load_checkpoint(const SafetensorsFile& file, const std::string& path, Module& model,
                         Optimizer* optimizer = nullptr, bool restore_rng = true);

// ---- plain safetensors files ----
struct SafetensorsFile {
  NamedTensors tensors;  // cpu tensors, in data order
  Metadata metadata;
  // The tensor of that name, or an undefined Tensor.
  Tensor find(const std::string& name) const;
};
// Writes the tensors (any device, any strides; float32/64, bfloat16, int32/64) atomically, adding the two
// checksums. Names and metadata must be UTF-8 (JSON's text).
void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata = {});
// Reads and validates a whole file; checks "skipgrad.checksum" and "skipgrad.header_checksum" when present (files
// written by other tools have none and load all the same).
SafetensorsFile load_safetensors(const std::string& path);
// The same from the bytes of a whole file already in memory; `path` only names it in error messages.
SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& path = "<memory>");

// FNV-1a 64-bit hash of a byte range (the checkpoint checksum).
uint64_t fnv1a64(const void* data, size_t n, uint64_t hash = 0xcbf29ce484222325ull);

}  // namespace skipgrad::nn
