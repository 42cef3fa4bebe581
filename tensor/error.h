// skipgrad::Error and the argument checks every public call uses.
//
// A failed check throws Error with a message that names the op and shows the offending shapes, dtypes or
// devices, e.g. "matmul: inner dimensions differ: [32,64] @ [32,64]". Never an assert, never an abort.
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/shape.h"

namespace skipgrad {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Out of memory, the host's or a device's (tensor/allocator.h): an Error a caller can tell apart, to retry with a
// smaller batch. Its message names the bytes asked for, the scope of the op that asked ("enc.3.ffn") and, in a
// backward, the node whose gradient was being computed.
class OutOfMemoryError : public Error {
 public:
  using Error::Error;
};

// The scope an out-of-memory message names: autograd/ registers its current_scope() here at start-up (tensor/ sits
// below autograd/ and cannot call it). oom_context() is " in scope 'enc.3.ffn'", or "" outside any scope.
void set_oom_context(std::string (*current_scope)());
std::string oom_context();


// "[32,64]"
std::string shape_str(const Shape& s);
// The shortest text that reads back to the same double, in any locale (std::to_chars): a top_p of 1.0000001 is not
// printed as 1, and a checkpoint's kind or optimizer entry round-trips exactly.
std::string number_str(double v);

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  if constexpr (std::is_same_v<T, Shape>) os << shape_str(v);
  else os << v;
  append(os, rest...);
}
}  // namespace detail

// Build a message from pieces: fail("matmul", ": inner dimensions differ: ", a, " @ ", b).
template <class... Parts>
[[noreturn]] void fail(std::string_view op, const Parts&... parts) {
  std::ostringstream os;
  os << op;
  detail::append(os, parts...);
  throw Error(os.str());
}

// check(ok, op, parts...) throws fail(op, parts...) unless ok. Its arguments are evaluated on every call, so a
// part that costs something to build (meta_str(), shape_str(), a scope name) belongs in `if (!ok) fail(...)`:
// these checks run on every op, and on a GPU the host's time per op bounds the step.
template <class... Parts>
void check(bool ok, std::string_view op, const Parts&... parts) {
  if (!ok) [[unlikely]] fail(op, parts...);
}

}  // namespace skipgrad
