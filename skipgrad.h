// skipgrad: one include for the whole C++ API.
#pragma once
#include "analysis/graph.h"
#include "analysis/measure.h"
#include "analysis/paths.h"
#include "autograd/autocast.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "autograd/op_table.h"
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "backends/backend.h"
#include "nn/checkpoint.h"
#include "nn/clip.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "nn/transformer.h"
#include "tensor/allocator.h"
#include "tensor/error.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace sg = skipgrad;
