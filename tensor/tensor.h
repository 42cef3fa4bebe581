// Tensor: a cheap handle to shared storage plus shape, strides, offset, dtype and device.
//
// Views (reshape, transpose, permute, narrow, expand, ...) share storage; contiguous() copies when needed.
// The differentiable methods (views, arithmetic, reductions) are declared here and defined in autograd/, which
// records a node on the tape for each of them; the raw data accessors below never record.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/error.h"

namespace skipgrad {

struct AutogradMeta;  // autograd/node.h
class Generator;      // tensor/random.h

// A block of device memory from the device's caching allocator.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  // How many times the memory was written in place through the API (Tensor::copy_, optimizer steps, gradient
  // clipping; Module::to's new memory goes on from the old count), as torch's version counter: a node compares the
  // versions of the tensors it saved at backward and refuses changed ones.
  std::atomic<uint64_t> version{0};
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;  // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;
  Device device;
  std::shared_ptr<AutogradMeta> autograd;  // null until the tensor takes part in autograd
  // autograd.get(), stored once the metadata is built: what Tensor::autograd_meta() reads, so a thread may test a
  // shared tensor's requires_grad while another gives it metadata (docs/reliability.md, "Threads")
  std::atomic<AutogradMeta*> autograd_published{nullptr};
};

int64_t numel_of(const Shape& s);
// Throws (naming `op`) unless every size is >= 0 and the element count, strides and bytes of the shape fit int64
// (at most 2^60, zeros counted as 1).
void check_shape(const Shape& shape, const char* op);
// Throws (naming `op`) when `value` lies outside an integer dtype's range, NaN included (casting it would be
// undefined); floating dtypes take any value.
void check_fits(double value, DType dtype, const char* op);
Shape contiguous_strides(const Shape& s);
// Wraps a negative dim and checks its range; `op` names the caller in the error.
int64_t normalize_dim(int64_t dim, int64_t ndim, const char* op);
// Numpy broadcasting of two shapes; throws naming `op` when they are incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation (never recorded) ----
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor arange(double start, double end, double step = 1, DType dtype = DType::F32,
                       Device device = Device::cpu());
  // Uniform in [low, high) and normal(mean, std), from `gen` or the default generator (see manual_seed).
  static Tensor rand(const Shape& shape, double low = 0, double high = 1, DType dtype = DType::F32,
                     Device device = Device::cpu(), Generator* gen = nullptr);
  static Tensor randn(const Shape& shape, double mean = 0, double std = 1, DType dtype = DType::F32,
                      Device device = Device::cpu(), Generator* gen = nullptr);
  // Float64 [R, cols] uniform in [0, 1), row r from its own counter: element (r, c) is random_uniform01(seed,
  // row_counters[r] + c) (tensor/random.h), on any device alike. No generator advances: the caller keys the rows
  // (nn::sample_tokens' per-sentence draws).
  static Tensor rand_rows(const std::vector<uint64_t>& row_counters, int64_t cols, uint64_t seed,
                          Device device = Device::cpu());
  // Integers uniform in [low, high) (torch.randint), both within +-2^53; int64 unless dtype says otherwise.
  static Tensor randint(int64_t low, int64_t high, const Shape& shape, DType dtype = DType::I64,
                        Device device = Device::cpu(), Generator* gen = nullptr);
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());
  static Tensor scalar(double v, DType dtype = DType::F32, Device device = Device::cpu());

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return (int64_t)impl().shape.size(); }
  int64_t size(int64_t d) const;
  int64_t numel() const { return numel_of(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().device; }
  bool is_contiguous() const;
  size_t nbytes() const { return (size_t)numel() * dtype_size(dtype()); }
  std::string meta_str() const;  // "float32[2,3] cpu"

  // ---- raw data (never recorded) ----
  void* data_ptr() const;  // storage data + offset
  template <class T> T* data() const;
  double item() const;  // one element; copies from the device
  // One element as T, converted exactly as to_vector<T>() would: item<int64_t>() keeps token ids and counts
  // past 2^53 that the double of item() rounds.
  template <class T> T item() const;
  template <class T> std::vector<T> to_vector() const;  // row-major copy of all elements
  std::string str(int64_t max_per_dim = 6) const;        // shape, dtype and values
  bool shares_storage(const Tensor& o) const { return impl().storage == o.impl().storage; }
  // No other handle, view or saved copy refers to this tensor or its memory (writing to it changes nothing
  // else), and it is a plain contiguous tensor spanning all of that memory (what clone() would give).
  bool sole_owner() const {
    return impl_.use_count() == 1 && impl_->storage.use_count() == 1 && impl_->offset == 0 && is_contiguous() &&
           nbytes() == impl_->storage->nbytes;
  }

  // ---- copies and conversions (recorded when differentiable) ----
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  // In place, not recorded; src broadcast to this shape. With grad on, a source that requires grad and a
  // destination made by a recorded op (a view of a parameter too) are refused: the gradient would be wrong.
  void copy_(const Tensor& src);
  // The in-place write count of this tensor's memory (shared by its views; torch's _version). Code that writes a
  // tensor's memory in place other than by copy_ (an optimizer's fused kernel) calls bump_version() with the write
  // (before it: a write that throws midway is counted).
  uint64_t version() const { return impl().storage->version.load(std::memory_order_relaxed); }
  void bump_version() const { impl().storage->version.fetch_add(1, std::memory_order_relaxed); }

  // ---- autograd ----
  bool requires_grad() const;
  Tensor& requires_grad_(bool on = true);
  bool is_leaf() const;
  Tensor grad() const;           // accumulated gradient of a leaf (or of a tensor with retain_grad)
  void set_grad(const Tensor& g);
  void zero_grad();               // drops the gradient
  void retain_grad();
  Tensor detach() const;          // shares storage, cut from the graph
  // Backward from this tensor. A scalar needs no gradient; otherwise pass one of this tensor's shape.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;
  // Called with the gradient when it is complete; return an undefined Tensor to keep it, or a replacement.
  void register_hook(std::function<Tensor(const Tensor&)> hook);
  // Renames the node that produced this tensor: scope + "." + name (e.g. "enc.3.ffn.residual_add"); on a leaf
  // (a parameter, or data such as a mask; in grad mode), names the leaf as graph dumps show it. Name a tensor on
  // the thread that uses it: a name written while another thread snapshots a graph reading it is a data race.
  Tensor& named(const std::string& name);
  std::string node_name() const;  // the producing node's name, or the leaf's name, or ""
  int64_t node_id() const;        // the producing node's id on the tape, or -1

  // ---- views (differentiable, share storage) ----
  Tensor reshape(const Shape& shape) const;   // view when strides allow, else a copy
  Tensor view(const Shape& shape) const;      // view only; throws when strides do not allow it
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return dim() < 2 ? *this : transpose(-2, -1); }  // the last two dims; 0-d and 1-D as they are
  Tensor permute(const Shape& order) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;  // start < 0 counts from the end (torch)
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor expand(const Shape& shape) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor squeeze() const;

  // ---- common ops as methods (defined in autograd/) ----
  Tensor sum() const;
  Tensor sum(const Shape& dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const Shape& dims, bool keepdim = false) const;
  Tensor max(const Shape& dims, bool keepdim = false) const;
  Tensor min(const Shape& dims, bool keepdim = false) const;
  Tensor max() const;  // over all elements
  Tensor min() const;
  Tensor argmax(int64_t dim, bool keepdim = false) const;
  Tensor matmul(const Tensor& o) const;
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor pow(double e) const;
  Tensor abs() const;
  Tensor relu() const;
  Tensor tanh() const;
  Tensor sigmoid() const;

  TensorImpl& impl() const {
    if (!impl_) throw Error("tensor: use of an undefined Tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  AutogradMeta* autograd_meta() const {
    return impl_ ? impl_->autograd_published.load(std::memory_order_acquire) : nullptr;
  }
  AutogradMeta& ensure_autograd_meta() const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Raw (never-recorded) view constructors shared by the differentiable views and the backends.
Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset);
// Strides for viewing `t` as `shape` without copying, or an empty Shape when impossible.
Shape view_strides(const Tensor& t, const Shape& shape);
// `t` broadcast (zero strides) to `shape`; throws naming `op` when not broadcastable.
Tensor broadcast_to(const Tensor& t, const Shape& shape, const char* op);
// Whether any defined tensor among ts has dtype dt.
inline bool any_of_dtype(std::initializer_list<const Tensor*> ts, DType dt) {
  for (const Tensor* t : ts)
    if (t->defined() && t->dtype() == dt) return true;
  return false;
}

std::ostream& operator<<(std::ostream& os, const Tensor& t);
// Throws "<op>: <what> is an undefined tensor": every op and module checks its tensor arguments with it first.
inline void check_defined(const char* op, const Tensor& t, const char* what = "input") {
  check(t.defined(), op, ": ", what, " is an undefined tensor");
}
std::ostream& operator<<(std::ostream& os, const Shape& s);  // "[2,3]", as shape_str
// normalize_dim for a dim of t: the error names t ("dim 2 out of range for float32[3,4] cpu (rank 2)").
int64_t normalize_dim(int64_t dim, const Tensor& t, const char* op);

}  // namespace skipgrad
