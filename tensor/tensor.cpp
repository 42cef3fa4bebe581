// Raw tensor plumbing: storage, creation, metadata, raw views, printing. Nothing here records on the tape;
// the differentiable methods of Tensor live in autograd/.
#include "tensor/tensor.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "backends/backend.h"
#include "tensor/allocator.h"
#include "tensor/random.h"

namespace skipgrad {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); i++) {
    if (i) r += ',';
    r += std::to_string(s[i]);
  }
  return r + "]";
}

std::string number_str(double v) {
  char buf[32];  // (the longest double, "-2.2250738585072014e-308", is 24)
  return std::string(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    try {
      size_t pos = 0;
      int i = std::stoi(s.substr(5), &pos);
      if (pos == s.size() - 5 && i >= 0) return cuda(i);
    } catch (...) {
    }
  }
  fail("Device::parse", ": unknown device '", s, "' (expected cpu, cuda or cuda:N)");
}

Storage::Storage(size_t n, Device d) : nbytes(n), device(d) { data = allocator_for(d).allocate(n); }
Storage::~Storage() { allocator_for(device).deallocate(data, nbytes); }

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t v : s) n *= v;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = (int64_t)s.size() - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

int64_t normalize_dim(int64_t dim, int64_t ndim, const char* op) {
  int64_t d = dim < 0 ? dim + ndim : dim;
  // A 0-d tensor has no dim to name: every dim is out of range (no crash on x.size(0) of a scalar).
  if (d < 0 || d >= ndim) fail(op, ": dim ", dim, " out of range for a tensor of rank ", ndim);
  return d;
}

int64_t normalize_dim(int64_t dim, const Tensor& t, const char* op) {
  if (dim < -t.dim() || dim >= t.dim())
    fail(op, ": dim ", dim, " out of range for ", t.meta_str(), " (rank ", t.dim(), ")");
  return normalize_dim(dim, t.dim(), op);  // (the wrap)
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; i++) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    check(da == db || da == 1 || db == 1, op, ": shapes ", a, " and ", b, " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Sizes must be >= 0, and the product of the sizes with zeros counted as 1 (the largest stride) at most 2^60, so
// no element count, stride or byte count derived from the shape can overflow.
void check_shape(const Shape& shape, const char* op) {
  int64_t span = 1;
  for (int64_t v : shape) {
    check(v >= 0, op, ": negative size in shape ", shape);
    check(!__builtin_mul_overflow(span, std::max<int64_t>(v, 1), &span) && span <= (int64_t(1) << 60), op, ": shape ",
          shape, " is too large");
  }
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  check_shape(shape, "empty");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>((size_t)numel_of(shape) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  impl->device = device;
  return Tensor(std::move(impl));
}

void check_fits(double value, DType dtype, const char* op) {
  if (!is_integer(dtype)) return;
  const double limit = dtype == DType::I64 ? 9223372036854775808.0 : 2147483648.0;  // 2^63, 2^31
  check(value >= -limit && value < limit, op, ": ", value, " does not fit ", dtype_name(dtype));
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  check_fits(value, dtype, "full");
  Tensor t = empty(shape, dtype, device);
  backend_for(device).fill(t, value);
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor Tensor::scalar(double v, DType dtype, Device device) { return full({}, v, dtype, device); }

Tensor Tensor::arange(double start, double end, double step, DType dtype, Device device) {
  check(step != 0, "arange", ": step must be non-zero");
  check(std::isfinite(start) && std::isfinite(end) && std::isfinite(step), "arange", ": start ", start, ", end ", end,
        " and step ", step, " must be finite");
  const double n = std::ceil((end - start) / step);
  check(n < 1e18, "arange", ": [", start, ", ", end, ") in steps of ", step, " has too many elements");
  const int64_t count = (int64_t)std::max(0.0, n);
  if (count > 0) {  // the first and last values fit an integer dtype, so every one between does
    check_fits(start, dtype, "arange");
    check_fits(start + (double)(count - 1) * step, dtype, "arange");
  }
  Tensor t = empty({count}, dtype, device);
  backend_for(device).arange(t, start, step);
  return t;
}

Tensor Tensor::rand(const Shape& shape, double low, double high, DType dtype, Device device, Generator* gen) {
  check(is_floating(dtype), "rand", ": dtype must be floating, got ", dtype_name(dtype));
  check(std::isfinite(low) && std::isfinite(high) && low <= high, "rand", ": expects finite low <= high, got low ",
        low, ", high ", high);
  Tensor t = empty(shape, dtype, device);
  Generator& g = gen ? *gen : default_generator();
  uint64_t off = g.advance((uint64_t)t.numel());
  backend_for(device).random_uniform(t, low, high, g.seed(), off);
  return t;
}

Tensor Tensor::rand_rows(const std::vector<uint64_t>& row_counters, int64_t cols, uint64_t seed, Device device) {
  check(cols >= 0, "rand_rows", ": cols must be >= 0, got ", cols);
  const int64_t R = (int64_t)row_counters.size();
  const std::vector<int64_t> counters(row_counters.begin(), row_counters.end());  // the same 64 bits
  Tensor t = empty({R, cols}, DType::F64, device);
  backend_for(device).random_uniform_rows(t, from_vector(counters, {R}, device), seed);
  return t;
}

Tensor Tensor::randn(const Shape& shape, double mean, double std, DType dtype, Device device, Generator* gen) {
  check(is_floating(dtype), "randn", ": dtype must be floating, got ", dtype_name(dtype));
  check(std::isfinite(mean) && std::isfinite(std) && std >= 0, "randn", ": expects a finite mean and std >= 0, got "
        "mean ", mean, ", std ", std);
  Tensor t = empty(shape, dtype, device);
  Generator& g = gen ? *gen : default_generator();
  uint64_t off = g.advance((uint64_t)t.numel());
  backend_for(device).random_normal(t, mean, std, g.seed(), off);
  return t;
}

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  check_shape(shape, "from_vector");
  check((int64_t)values.size() == numel_of(shape), "from_vector", ": ", values.size(), " values for shape ", shape,
        " (", numel_of(shape), " elements)");
  Tensor host = empty(shape, dtype_of<T>(), Device::cpu());
  std::copy(values.begin(), values.end(), host.data<T>());
  return device.is_cpu() ? host : host.to(device);
}
template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int32_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<bf16>&, const Shape&, Device);

int64_t Tensor::size(int64_t d) const { return shape()[normalize_dim(d, dim(), "size")]; }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // no element to be out of place (as PyTorch): a [3, 0] tensor is contiguous
  int64_t acc = 1;
  for (int64_t i = dim() - 1; i >= 0; i--) {
    if (shape()[i] == 1) continue;
    if (strides()[i] != acc) return false;
    acc *= shape()[i];
  }
  return true;
}

std::string Tensor::meta_str() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype())) + shape_str(shape()) + " " + device().str();
}

void* Tensor::data_ptr() const {
  return static_cast<char*>(impl().storage->data) + impl().offset * (int64_t)dtype_size(dtype());
}

template <class T>
T* Tensor::data() const {
  check(dtype() == dtype_of<T>(), "data", ": tensor is ", dtype_name(dtype()), ", requested ",
        dtype_name(dtype_of<T>()));
  if (!device().is_cpu())
    fail("data", ": tensor is on ", device().str(), "; copy it to the cpu first");
  return static_cast<T*>(data_ptr());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int64_t* Tensor::data<int64_t>() const;
template int32_t* Tensor::data<int32_t>() const;
template bf16* Tensor::data<bf16>() const;

template <class T>
std::vector<T> Tensor::to_vector() const {
  check_defined("to_vector", *this, "the tensor");
  Tensor c = Tensor::empty(shape(), dtype_of<T>(), Device::cpu());
  // detach(): reading values records nothing on the tape (to() of a tensor that requires grad would).
  Tensor src = device().is_cpu() ? *this : detach().to(Device::cpu());
  backend_for(Device::cpu()).copy(src, c);
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector() const;
template std::vector<double> Tensor::to_vector() const;
template std::vector<int64_t> Tensor::to_vector() const;
template std::vector<int32_t> Tensor::to_vector() const;
template std::vector<bf16> Tensor::to_vector() const;

template <class T>
T Tensor::item() const {
  check_defined("item", *this, "the tensor");
  if (numel() != 1) fail("item", ": tensor ", meta_str(), " has ", numel(), " elements, expected 1");
  return to_vector<T>()[0];
}
template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template int64_t Tensor::item<int64_t>() const;
template int32_t Tensor::item<int32_t>() const;
template bf16 Tensor::item<bf16>() const;

double Tensor::item() const { return item<double>(); }

std::string Tensor::str(int64_t max_per_dim) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(" << meta_str() << ")";
  // integers exactly (token ids past 1e6, int64 past 2^53), floats to 6 significant digits
  const bool integer = is_integer(dtype());
  const std::vector<double> v = integer ? std::vector<double>() : to_vector<double>();
  const std::vector<int64_t> iv = integer ? to_vector<int64_t>() : std::vector<int64_t>();
  const Shape& s = shape();
  max_per_dim = std::max<int64_t>(max_per_dim, 2);  // one element each side of "..." at least
  os << std::setprecision(6);
  // Print nested brackets, eliding the middle of long dims.
  std::function<void(int64_t, int64_t)> rec = [&](int64_t d, int64_t base) {
    if (d == (int64_t)s.size()) {
      if (integer) os << iv[base];
      else os << v[base];
      return;
    }
    int64_t stride = numel_of(Shape(s.begin() + d + 1, s.end()));
    os << "[";
    for (int64_t i = 0; i < s[d]; i++) {
      if (s[d] > max_per_dim && i == max_per_dim / 2) { os << "..., "; i = s[d] - max_per_dim / 2; }
      rec(d + 1, base + i * stride);
      if (i + 1 < s[d]) os << ", ";
    }
    os << "]";
  };
  os << " ";
  if (numel() > 0 || s.empty()) rec(0, 0); else os << "[]";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }
std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << shape_str(s); }

Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl().storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = base.dtype();
  impl->device = base.device();
  return Tensor(std::move(impl));
}

Shape view_strides(const Tensor& t, const Shape& shape) {
  // Walk both shapes grouping dims whose product match; a group of old dims can be re-split only when the
  // old dims in it are contiguous with each other.
  const Shape& os = t.shape();
  const Shape& ost = t.strides();
  if (numel_of(os) == 0) return contiguous_strides(shape);
  Shape ns(shape.size());
  int64_t oi = 0, ni = 0, on = (int64_t)os.size(), nn = (int64_t)shape.size();
  while (ni < nn || oi < on) {
    // skip size-1 dims
    if (ni < nn && shape[ni] == 1) { ns[ni] = 1; ni++; continue; }
    if (oi < on && os[oi] == 1) { oi++; continue; }
    if (ni >= nn || oi >= on) return {};
    int64_t op = os[oi], np = shape[ni];
    int64_t ob = oi, nb = ni;
    while (op != np) {
      if (op < np) { if (++oi >= on) return {}; op *= os[oi]; }
      else { if (++ni >= nn) return {}; np *= shape[ni]; }
    }
    // old dims ob..oi must be mutually contiguous (ignoring size-1 dims)
    for (int64_t k = ob; k < oi; k++) {
      if (os[k] == 1) continue;
      int64_t next = k + 1;
      while (next <= oi && os[next] == 1) next++;
      if (next <= oi && ost[k] != ost[next] * os[next]) return {};
    }
    int64_t st = ost[oi];
    for (int64_t k = ni; k >= nb; k--) { ns[k] = st; st *= shape[k]; }
    oi++; ni++;
  }
  return ns;
}

Tensor broadcast_to(const Tensor& t, const Shape& shape, const char* op) {
  const Shape& s = t.shape();
  check(s.size() <= shape.size(), op, ": cannot broadcast ", s, " to ", shape);
  Shape st(shape.size(), 0);
  size_t lead = shape.size() - s.size();
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == shape[lead + i]) st[lead + i] = t.strides()[i];
    else check(s[i] == 1, op, ": cannot broadcast ", s, " to ", shape);
  }
  return make_view(t, shape, st, t.offset());
}

}  // namespace skipgrad
