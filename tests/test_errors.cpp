// Bad input never crashes: every op family throws skipgrad::Error naming the op and showing the shapes,
// dtypes or devices at fault.
#include <cmath>
#include <cstdint>

#include "backends/backend.h"
#include "test_util.h"

using namespace sgtest;

namespace {
Tensor f32(const Shape& s) { return Tensor::zeros(s, DType::F32); }
Tensor f64(const Shape& s) { return Tensor::zeros(s, DType::F64); }
Tensor i64(const Shape& s) { return Tensor::zeros(s, DType::I64); }
}  // namespace

TEST_SUITE("errors") {
  TEST_CASE("elementwise: shapes, dtypes, undefined inputs") {
    CHECK_THROWS_WITH_ALL(add(f32({2, 3}), f32({4, 3})), "add", "[2,3]", "[4,3]", "broadcast");
    CHECK_THROWS_WITH_ALL(f32({2, 3}) - f32({2}), "sub", "[2,3]", "[2]");
    CHECK_THROWS_WITH_ALL(mul(f32({3, 1, 4}), f32({2, 3})), "mul", "[3,1,4]", "[2,3]");
    CHECK_THROWS_WITH_ALL(div(f32({5}), f32({4})), "div", "[5]", "[4]");
    CHECK_THROWS_WITH_ALL(maximum(f32({2}), f32({3})), "maximum", "[2]", "[3]");
    CHECK_THROWS_WITH_ALL(minimum(f32({2}), f32({3})), "minimum", "[2]", "[3]");
    CHECK_THROWS_WITH_ALL(f64({2}) + f32({2}), "add", "float64", "float32");
    CHECK_THROWS_WITH_ALL(mul(f32({2}), i64({2})), "mul", "float32", "int64");
    CHECK_THROWS_WITH_ALL(add(Tensor(), f32({2})), "add", "undefined");
    CHECK_THROWS_WITH_ALL(mul(f32({2}), Tensor()), "mul", "undefined");
    CHECK_THROWS_WITH_ALL(exp(Tensor()), "exp", "undefined");
    // the Tensor methods name themselves too
    Tensor none;
    CHECK_THROWS_WITH_ALL(none.requires_grad_(), "requires_grad_", "undefined");
    CHECK_THROWS_WITH_ALL(none.detach(), "detach", "undefined");
    CHECK_THROWS_WITH_ALL(none.clone(), "clone", "undefined");
    CHECK_THROWS_WITH_ALL(none.contiguous(), "contiguous", "undefined");
    CHECK_THROWS_WITH_ALL(none.to(DType::F64), "to", "undefined");
    CHECK_THROWS_WITH_ALL(none.to(Device::cpu()), "to", "undefined");
    CHECK_THROWS_WITH_ALL(none.unsqueeze(0), "unsqueeze", "undefined");
    CHECK_THROWS_WITH_ALL(none.set_grad(f32({2})), "set_grad", "undefined");
    CHECK_THROWS_WITH_ALL(none.copy_(f32({2})), "copy_", "undefined");
    CHECK_THROWS_WITH_ALL(none.retain_grad(), "retain_grad", "undefined");
    CHECK_THROWS_WITH_ALL(none.register_hook([](const Tensor& g) { return g; }), "register_hook", "undefined");
    CHECK_THROWS_WITH_ALL(none.flatten(), "flatten", "undefined");
    CHECK_THROWS_WITH_ALL(none.squeeze(), "squeeze", "undefined");
    CHECK_THROWS_WITH_ALL(none.squeeze(0), "squeeze", "undefined");
    CHECK_THROWS_WITH_ALL(none.narrow(0, 0, 1), "narrow", "undefined");
    CHECK_THROWS_WITH_ALL(none.select(0, 0), "select", "undefined");
    CHECK_THROWS_WITH_ALL(chunk(none, 2, 0), "chunk", "undefined");
    CHECK_THROWS_WITH_ALL(none.item(), "item", "undefined");
    CHECK_THROWS_WITH_ALL(none.to_vector<float>(), "to_vector", "undefined");
    CHECK_THROWS_WITH_ALL(f32({2}).copy_(none), "copy_", "source", "undefined");
    CHECK_THROWS_WITH_ALL(nn::label_smoothed_nll(none, Tensor::zeros({2}, DType::I64), 1, 0.1), "label_smoothed_nll",
                          "logits", "undefined");
    CHECK_THROWS_WITH_ALL(log(i64({2})), "log", "int64");
    CHECK_THROWS_WITH_ALL(gelu(i64({2})), "gelu", "int64");
    CHECK_THROWS_WITH_ALL(mul(i64({2}), 2.0), "mul_scalar", "int64");
    CHECK_THROWS_WITH_ALL(eq(f32({2}), f32({3})), "eq", "[2]", "[3]");
  }

  TEST_CASE("matmul and linear") {
    CHECK_THROWS_WITH_ALL(matmul(f32({32, 64}), f32({32, 64})), "matmul: inner dimensions differ: [32,64] @ [32,64]");
    CHECK_THROWS_WITH_ALL(matmul(f32({2, 3, 4}), f32({3, 4, 5})), "matmul", "batch", "[2,3,4] @ [3,4,5]");
    CHECK_THROWS_WITH_ALL(matmul(f32({3}), f32({4})), "matmul", "inner dimensions", "[3]", "[4]");
    CHECK_THROWS_WITH_ALL(matmul(f32({2, 3}), f32({4})), "matmul", "[2,3]", "[4]");
    CHECK_THROWS_WITH_ALL(matmul(f32({2, 3}), f32({2, 3}), true, true), "matmul: inner dimensions differ: [2,3]^T @ [2,3]^T");
    CHECK_THROWS_WITH_ALL(matmul(f32({}), f32({2})), "matmul", "0-d");
    CHECK_THROWS_WITH_ALL(matmul(f32({3}), f32({3, 2}), true, false), "matmul", "transpose");
    CHECK_THROWS_WITH_ALL(matmul(f64({2, 2}), f32({2, 2})), "matmul", "float64", "float32");
    CHECK_THROWS_WITH_ALL(matmul(i64({2, 2}), i64({2, 2})), "matmul", "int64");
    CHECK_THROWS_WITH_ALL(matmul(Tensor(), f32({2, 2})), "matmul", "undefined");
    CHECK_THROWS_WITH_ALL(linear(f32({2, 3}), f32({4, 5})), "linear", "[2,3]", "[4,5]");
    CHECK_THROWS_WITH_ALL(linear(f32({2, 3}), f32({3})), "linear", "weight", "[3]");
    CHECK_THROWS_WITH_ALL(linear(f32({2, 3}), f32({4, 3}), f32({5})), "linear", "bias", "[5]");
    CHECK_THROWS_WITH_ALL(linear(f32({2, 3}), f32({4, 3}), f64({4})), "linear", "float32", "float64");
    CHECK_THROWS_WITH_ALL(linear(f32({2, 3}), Tensor()), "linear", "weight", "undefined");
    CHECK_THROWS_WITH_ALL(linear(f32({}), f32({4, 3})), "linear", "[]");
    // a product with a dimension past 2^31 - 1 is refused before OpenBLAS's int would wrap it (checked first:
    // the operands here are never read)
    GemmArgs g;
    g.m = 1ll << 31;
    g.n = g.k = g.lda = g.ldb = g.ldc = 1;
    CHECK_THROWS_WITH_ALL(backend_for(Device::cpu()).gemm(g), "gemm", "2147483648", "does not fit OpenBLAS's int");
  }

  TEST_CASE("reductions") {
    CHECK_THROWS_WITH_ALL(sum(f32({2, 3}), {2}), "sum", "dim 2", "rank 2");
    CHECK_THROWS_WITH_ALL(mean(f32({2, 3}), {-3}), "mean", "dim -3");
    CHECK_THROWS_WITH_ALL(sum(f32({2, 3}), {1, -1}), "sum", "twice", "[1,-1]");
    CHECK_THROWS_WITH_ALL(max(f32({0, 3}), {0}), "max", "empty", "[0,3]");
    CHECK_THROWS_WITH_ALL(min(f32({0, 3}), {0}), "min", "empty", "[0,3]", "no minimum");
    CHECK_THROWS_WITH_ALL(mean(i64({2})), "mean", "int64");  // (sum of integers is exact; mean needs floats)
    CHECK_THROWS_WITH_ALL(sum(Tensor()), "sum", "undefined");
    CHECK_THROWS_WITH_ALL(sum(f32({}), {1}), "sum", "dim 1", "float32[] cpu", "0 or -1");  // (0, -1: itself)
    CHECK_THROWS_WITH_ALL(sum_to(f32({2, 3}), {4}), "sum_to", "[2,3]", "[4]");
  }

  TEST_CASE("views") {
    Tensor x = f32({2, 3});
    CHECK_THROWS_WITH_ALL(x.reshape({4, 2}), "reshape", "[4,2]", "6");
    CHECK_THROWS_WITH_ALL(x.reshape({-1, -1}), "reshape", "-1");
    CHECK_THROWS_WITH_ALL(x.reshape({4, -1}), "reshape", "[4,-1]", "6");
    CHECK_THROWS_WITH_ALL(x.reshape({-2, 3}), "reshape", "[-2,3]");
    CHECK_THROWS_WITH_ALL(x.t().view({6}), "view", "[3,2]", "reshape()");
    CHECK_THROWS_WITH_ALL(reshape(Tensor(), {2}), "reshape", "undefined");
    CHECK_THROWS_WITH_ALL(x.transpose(0, 2), "transpose", "dim 2", "rank 2");
    CHECK_THROWS_WITH_ALL(x.permute({0, 0}), "permute", "repeated", "[0,0]");
    CHECK_THROWS_WITH_ALL(x.permute({1, 0, 2}), "permute", "[1,0,2]", "[2,3]");
    CHECK_THROWS_WITH_ALL(x.permute({0, 2}), "permute", "dim 2");
    CHECK_THROWS_WITH_ALL(x.slice(1, 4, 6), "slice", "[4, 6)", "size 3", "[2,3]");
    CHECK_THROWS_WITH_ALL(x.slice(1, 0, 5), "slice", "size 3");
    CHECK_THROWS_WITH_ALL(x.slice(1, -4, 2), "slice", "-4");
    CHECK_THROWS_WITH_ALL(x.slice(0, 2, 1), "slice", "[2, 1)");
    CHECK_THROWS_WITH_ALL(x.slice(1, 0, 3, 0), "slice", "step");
    CHECK_THROWS_WITH_ALL(x.slice(2, 0, 1), "slice", "dim 2");
    CHECK_THROWS_WITH_ALL(x.narrow(1, 2, 2), "narrow", "[2, 4)", "size 3");
    CHECK_THROWS_WITH_ALL(x.select(0, 2), "select", "index 2", "size 2");
    CHECK_THROWS_WITH_ALL(x.select(0, -3), "select", "index -3");
    CHECK_THROWS_WITH_ALL(x.expand({4, 3}), "expand", "[2,3]", "[4,3]");
    CHECK_THROWS_WITH_ALL(x.expand({3}), "expand", "[2,3]", "[3]");
    CHECK_THROWS_WITH_ALL(x.expand({-1, 2, 3}), "expand", "-1");
    CHECK_THROWS_WITH_ALL(f32({1, 3}).expand({-2, 3}), "expand", "[-2,3]");
    CHECK_THROWS_WITH_ALL(x.unsqueeze(3), "unsqueeze", "dim 3");
    CHECK_THROWS_WITH_ALL(x.squeeze(2), "squeeze", "dim 2");
    CHECK_THROWS_WITH_ALL(f32({2, 3, 4}).flatten(2, 1), "flatten", "start");
    CHECK_THROWS_WITH_ALL(x.size(2), "size", "dim 2");
    // 0-d tensors have no dims to index (transpose and squeeze take 0 and -1, as torch: test_edge_shapes.cpp)
    CHECK_THROWS_WITH_ALL(f32({}).size(0), "size", "rank 0");
    CHECK_THROWS_WITH_ALL(f32({}).transpose(0, 1), "transpose", "dim 1", "0 or -1");
    CHECK_THROWS_WITH_ALL(f32({}).slice(0, 0, 1), "slice", "rank 0");
    CHECK_THROWS_WITH_ALL(f32({}).squeeze(1), "squeeze", "dim 1", "0 or -1");
  }

  TEST_CASE("concat, stack, split, chunk") {
    CHECK_THROWS_WITH_ALL(concat({f32({2, 3}), f32({2, 3, 1})}, 0), "concat", "rank", "[2,3]", "[2,3,1]");
    CHECK_THROWS_WITH_ALL(concat({f32({2, 3}), f32({2, 4})}, 0), "concat", "[2,3]", "[2,4]");
    CHECK_THROWS_WITH_ALL(concat({f32({2, 3}), f64({2, 3})}, 0), "concat", "float32", "float64");
    CHECK_THROWS_WITH_ALL(concat({}, 0), "concat", "no tensors");
    CHECK_THROWS_WITH_ALL(concat({f32({2}), Tensor()}, 0), "concat", "undefined");
    CHECK_THROWS_WITH_ALL(concat({f32({2, 3})}, 2), "concat", "dim 2");
    CHECK_THROWS_WITH_ALL(stack({f32({2, 3}), f32({3, 2})}, 0), "stack", "[2,3]", "[3,2]");
    CHECK_THROWS_WITH_ALL(stack({Tensor(), f32({2})}, 0), "stack", "undefined");
    CHECK_THROWS_WITH_ALL(stack({}, 0), "stack", "no tensors");
    CHECK_THROWS_WITH_ALL(split(f32({4}), 0, 0), "split", "positive");
    CHECK_THROWS_WITH_ALL(chunk(f32({4}), 0, 0), "chunk", "positive");
    CHECK_THROWS_WITH_ALL(split(f32({4}), 2, 1), "split", "dim 1");
  }

  TEST_CASE("creation, data access, autograd misuse") {
    CHECK_THROWS_WITH_ALL(i64({2}).requires_grad_(), "requires_grad_", "int64");
    CHECK_THROWS_WITH_ALL(f32({2}).item(), "item", "2 elements");
    CHECK_THROWS_WITH_ALL(Tensor().item(), "undefined");
    CHECK_THROWS_WITH_ALL(Device::parse("tpu"), "Device::parse", "tpu");
    CHECK_THROWS_WITH_ALL(Device::parse("cuda:x"), "Device::parse", "cuda:x");
    CHECK_THROWS_WITH_ALL(Device::parse("cuda:-1"), "Device::parse", "cuda:-1");
    CHECK(Device::parse("cuda:1") == Device::cuda(1));
    CHECK(Device::parse("cpu") == Device::cpu());
    CHECK_THROWS_WITH_ALL(Tensor::from_vector<float>({1, 2, 3}, {2, 2}), "from_vector", "3 values", "[2,2]");
    CHECK_THROWS_WITH_ALL(Tensor::zeros({2, -1}), "negative", "[2,-1]");
    CHECK_THROWS_WITH_ALL(Tensor::rand({2}, 0, 1, DType::I64), "rand", "int64");
    CHECK_THROWS_WITH_ALL(Tensor::randn({2}, 0, 1, DType::I32), "randn", "int32");
    CHECK_THROWS_WITH_ALL(Tensor::arange(0, 3, 0), "arange", "step");
    CHECK_THROWS_WITH_ALL(f32({2}).data<double>(), "data", "float32", "float64");
    CHECK_THROWS_WITH_ALL(f32({2, 3}).copy_(f32({4})), "copy_", "[4]", "[2,3]");
    CHECK_THROWS_WITH_ALL(f32({2}).copy_(Tensor()), "copy_", "undefined");
    CHECK_THROWS_WITH_ALL(f32({2}).backward(), "backward", "does not require grad");
    CHECK_THROWS_WITH_ALL(Tensor().backward(), "backward", "undefined");
    CHECK_THROWS_WITH_ALL(f32({2}).retain_grad(), "retain_grad", "does not require grad");
    Tensor p = f32({2, 3}).requires_grad_();
    CHECK_THROWS_WITH_ALL(p.set_grad(f32({3, 2})), "set_grad", "[3,2]", "[2,3]");
    CHECK_THROWS_WITH_ALL(op_info("no_such_op"), "op_info", "no_such_op");
    if (!cuda_available()) CHECK_THROWS_WITH_ALL(Tensor::zeros({2}, DType::F32, Device::cuda()), "cuda");
  }

  TEST_CASE("edge cases from a bad-input sweep: no crash, no overflow, no silent wrong answer") {
    // integer division would trap on a zero divisor (SIGFPE): refused, whatever the values
    CHECK_THROWS_WITH_ALL(div(Tensor::ones({3}, DType::I64), i64({3})), "div", "int64", "floating");
    // a broadcast destination: one memory location would receive several elements
    CHECK_THROWS_WITH_ALL(f32({3, 1}).expand({3, 4}).copy_(f32({3, 4})), "copy_", "broadcast", "stride 0");
    // source and destination in the same memory: the source is read whole before anything is written
    Tensor x = Tensor::arange(0, 10);
    x.slice(0, 1, 10).copy_(x.slice(0, 0, 9));
    CHECK(x.to_vector<float>() == std::vector<float>{0, 0, 1, 2, 3, 4, 5, 6, 7, 8});
    Tensor m = Tensor::arange(0, 9).reshape({3, 3});
    m.copy_(m.t());
    CHECK(m.to_vector<float>() == std::vector<float>{0, 3, 6, 1, 4, 7, 2, 5, 8});
    // element counts past int64 (or past 2^60) are refused before they wrap
    const int64_t big = int64_t(1) << 32;
    CHECK_THROWS_WITH_ALL(f32({1, 1}).expand({big, big}), "expand", "too large");
    CHECK_THROWS_WITH_ALL(f32({1}).reshape({big + 1, big - 1, big + 1, big - 1}), "reshape", "too large");
    CHECK_THROWS_WITH_ALL(f32({4}).narrow(0, 1, INT64_MAX), "narrow", "past int64");
    CHECK(f32({4}).slice(0, 1, 4, INT64_MAX).shape() == Shape{1});  // no overflow in the size or the stride
    CHECK(f32({7}).slice(0, 1, 7, 4).shape() == Shape{2});
    CHECK_THROWS_WITH_ALL(Tensor::arange(0, INFINITY), "arange", "finite");
    CHECK_THROWS_WITH_ALL(Tensor::arange(0, NAN), "arange", "finite");
    CHECK_THROWS_WITH_ALL(Tensor::arange(0, 1e30), "arange", "too many");
    // float -> integer: values that do not fit are refused where given, and conversions saturate (NaN -> 0) on
    // every device, as a GPU's conversion instructions do
    CHECK_THROWS_WITH_ALL(Tensor::full({2}, INFINITY, DType::I64), "full", "inf", "int64");
    CHECK_THROWS_WITH_ALL(Tensor::full({2}, 3e9, DType::I32), "full", "int32");
    CHECK_THROWS_WITH_ALL(masked_fill(i64({2}), i64({2}), NAN), "masked_fill", "nan", "int64");
    const Tensor wide = Tensor::from_vector<float>({NAN, 1e30f, -1e30f, -2.7f, 3e9f}, {5});
    for (Device dev : {Device::cpu(), Device::cuda()}) {
      if (dev.is_cuda() && !cuda_available()) continue;
      CHECK(wide.to(dev).to(DType::I32).to_vector<int32_t>() ==
            std::vector<int32_t>{0, INT32_MAX, INT32_MIN, -2, INT32_MAX});
      CHECK(wide.to(dev).to(DType::I64).to_vector<int64_t>() ==
            std::vector<int64_t>{0, INT64_MAX, INT64_MIN, -2, 3000000000});
    }
    // a gradient hook may change the values, not the shape, dtype or device
    Tensor p = f32({3}).requires_grad_();
    p.register_hook([](const Tensor&) { return f32({5}); });
    CHECK_THROWS_WITH_ALL(sum(p * 2.0).backward(), "backward", "hook", "float32[5]", "float32[3]");
    // zero-element tensors are contiguous (a 0 in any dim), so every op and device takes them
    for (Device dev : {Device::cpu(), Device::cuda()}) {
      if (dev.is_cuda() && !cuda_available()) continue;
      CAPTURE(dev.str());
      Tensor z = Tensor::zeros({3, 0}).to(dev);
      CHECK(z.is_contiguous());
      CHECK(z.to(Device::cpu()).shape() == Shape{3, 0});
      CHECK(softmax(z, -1).shape() == Shape{3, 0});
      CHECK(layer_norm(z, Tensor(), Tensor()).shape() == Shape{3, 0});
      CHECK(cumsum(z, 1).shape() == Shape{3, 0});
      CHECK(dropout(z, 0.5).shape() == Shape{3, 0});
      // no query rows: the key padding mask has nothing to mask
      Tensor q = Tensor::zeros({2, 3, 0, 4}).to(dev), k = Tensor::zeros({2, 3, 5, 4}).to(dev);
      CHECK(attention(q, k, k, Tensor::zeros({2, 5}, DType::I64).to(dev)).shape() == Shape{2, 3, 0, 4});
    }
  }

  TEST_CASE("random fills and initialisers refuse a negative std or low > high (trunc_normal_ would loop forever)") {
    Tensor t = Tensor::zeros({4});
    CHECK_THROWS_WITH_ALL(nn::init::trunc_normal_(t, -1.0), "trunc_normal_", "std must be finite and >= 0, got -1");
    CHECK_THROWS_WITH_ALL(nn::init::trunc_normal_(t, std::nan("")), "trunc_normal_", "std must be");
    CHECK_THROWS_WITH_ALL(nn::Linear(2, 2).reset_trunc_normal(-0.02), "trunc_normal_");
    CHECK_THROWS_WITH_ALL(Tensor::randn({3}, 0, -1), "randn", "std >= 0", "std -1");
    CHECK_THROWS_WITH_ALL(nn::init::normal_(t, 0, -1), "randn", "std >= 0");
    CHECK_THROWS_WITH_ALL(Tensor::rand({3}, 2, 1), "rand", "low <= high", "low 2, high 1");
    CHECK_THROWS_WITH_ALL(nn::init::uniform_(t, 0, INFINITY), "rand", "finite");
    nn::init::trunc_normal_(t, 0.0);  // std 0: zeros, as torch
    CHECK(t.abs().sum().item() == 0);
    CHECK(Tensor::rand({2}, 1, 1).sum().item() == 2);
  }

  TEST_CASE("optimizers: per-parameter getters check the index; a non-leaf parameter is refused") {
    Tensor w = Tensor::ones({3}).requires_grad_();
    nn::Adam opt({{"w", w}});
    CHECK(opt.lr_scale(0) == 1);
    CHECK_THROWS_WITH_ALL(opt.lr_scale(5), "adam.lr_scale", "parameter 5 of 1");
    CHECK_THROWS_WITH_ALL(opt.weight_decay(1000000), "adam.weight_decay", "parameter 1000000 of 1");
    CHECK_THROWS_WITH_ALL(nn::Adam({{"w2", w * 2.0}}), "adam", "'w2' is the result of an op, not a leaf");
  }

  TEST_CASE("integer tensors: cumsum sums into int64 (torch), printing shows every digit") {
    const Tensor big = Tensor::full({3}, 2147483647, DType::I32);
    const Tensor c = cumsum(big, 0);
    CHECK(c.dtype() == DType::I64);
    CHECK(c.to_vector<int64_t>() == std::vector<int64_t>{2147483647, 4294967294, 6442450941});
    CHECK(cumsum(Tensor::ones({2}, DType::I64), 0).dtype() == DType::I64);
    const Tensor ids = Tensor::from_vector<int64_t>({1234567, 31999, 9007199254740993}, {3});
    CHECK(ids.str() == "Tensor(int64[3] cpu) [1234567, 31999, 9007199254740993]");
  }

  TEST_CASE("Module::to moves an accumulated gradient with its parameter (torch's Module.to)") {
    nn::Linear l(3, 2);
    sum(l.forward(Tensor::ones({1, 3}))).backward();
    const std::vector<double> before = l.weight.grad().to_vector<double>();
    l.to(DType::F64);
    REQUIRE(l.weight.grad().defined());
    CHECK(l.weight.grad().dtype() == DType::F64);
    CHECK(l.weight.grad().to_vector<double>() == before);
    if (cuda_available()) {
      l.to(Device::cuda());
      CHECK(l.weight.grad().device() == Device::cuda());
      CHECK(l.weight.grad().to_vector<double>() == before);
    }
  }
}
