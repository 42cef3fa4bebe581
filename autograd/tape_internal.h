// What the recording side (tape.cpp) and the backward walk (backward.cpp) share; not public API.
#pragma once
#include <string>

#include "tensor/tensor.h"

namespace skipgrad::detail {

// True while this thread's backward() walks its tape: a backward, Tape::clear() or gradcheck() from inside it (a
// hook) would free the nodes being walked. Off before backward's own clear.
extern thread_local bool t_in_backward;
// True while a node's backward runs: the ops it calls (matmul, sum, casts) are part of that node's backward
// interval in a profile, not forward intervals of their own (record() takes no mark for them).
extern thread_local bool t_in_node_backward;

// Anomaly mode's check: "anomaly: <who> produced N NaN/Inf values in <what> float32[2,4] cpu" (one host wait).
void fail_if_nonfinite(const Tensor& t, const std::string& who, const std::string& what);

}  // namespace skipgrad::detail
