// Tensor plumbing: creation, seeded random numbers, views that share storage, copies, casts and printing
// (the caching allocator: test_allocator.cpp).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <random>

#include "test_util.h"

using namespace sgtest;

namespace {
// Every element of `t` (row-major) against f(index vector).
void check_values(const Tensor& t, const std::function<double(const Shape&)>& f) {
  std::vector<double> v = t.to_vector<double>();
  Shape idx(t.dim(), 0);
  for (size_t e = 0; e < v.size(); e++) {
    double expected = f(idx);
    INFO("element " << e << " at " << shape_str(idx) << ": got " << v[e] << ", expected " << expected);
    CHECK(v[e] == doctest::Approx(expected));
    for (int64_t d = t.dim() - 1; d >= 0; d--) {
      if (++idx[d] < t.size(d)) break;
      idx[d] = 0;
    }
  }
}
Tensor iota(const Shape& s, DType dt = DType::F32) { return Tensor::arange(0, (double)numel_of(s), 1, dt).reshape(s); }

// The elements of a float32 tensor in row-major order, read straight from storage through its strides
// (independent of every kernel).
std::vector<double> read_strided(const Tensor& t) {
  std::vector<double> out;
  const float* base = static_cast<const float*>(t.impl().storage->data);
  Shape idx(t.dim(), 0);
  for (int64_t e = 0; e < t.numel(); e++) {
    int64_t off = t.offset();
    for (int64_t d = 0; d < t.dim(); d++) off += idx[d] * t.strides()[d];
    out.push_back(base[off]);
    for (int64_t d = t.dim() - 1; d >= 0; d--) {
      if (++idx[d] < t.size(d)) break;
      idx[d] = 0;
    }
  }
  return out;
}

// A random strided view of a fresh tensor: random rank and sizes, then transposes, strided slices and
// expanded size-1 dims.
Tensor random_view(std::mt19937& rng) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  Shape s(pick(1, 4));
  for (int64_t& v : s) v = pick(1, 5);
  Tensor t = add(iota(s), 1.0);
  for (int step = 0, n = (int)pick(0, 4); step < n; step++) {
    int64_t d = pick(0, t.dim() - 1);
    switch (pick(0, 2)) {
      case 0: t = t.transpose(d, pick(0, t.dim() - 1)); break;
      case 1: {
        int64_t start = pick(0, t.size(d) - 1);
        t = t.slice(d, start, pick(start + 1, t.size(d)), pick(1, 2));
        break;
      }
      case 2:
        if (t.size(d) == 1) {
          Shape e = t.shape();
          e[d] = pick(2, 3);
          t = t.expand(e);
        }
        break;
    }
  }
  return t;
}
// A random shape with `numel` elements (size-1 dims included now and then).
Shape random_factorization(int64_t numel, std::mt19937& rng) {
  Shape s;
  int64_t rest = numel;
  for (int64_t f = 2; f <= rest;)
    if (rest % f == 0 && rng() % 2) { s.push_back(f); rest /= f; }
    else if (rest % f == 0 && rng() % 3 == 0) { s.push_back(1); }
    else f++;
  if (rest > 1 || s.empty()) s.push_back(rest);
  std::shuffle(s.begin(), s.end(), rng);
  return s;
}
}  // namespace

TEST_SUITE("tensor") {
  // ---------------------------------------------------------------- creation

  TEST_CASE("zeros, ones, full and scalar") {
    Tensor z = Tensor::zeros({2, 3});
    CHECK(z.shape() == Shape{2, 3});
    CHECK(z.strides() == Shape{3, 1});
    CHECK(z.dtype() == DType::F32);
    CHECK(z.device() == Device::cpu());
    CHECK(z.numel() == 6);
    CHECK(z.nbytes() == 24);
    CHECK(z.is_contiguous());
    check_close(z, {0, 0, 0, 0, 0, 0});
    check_close(Tensor::ones({3}, DType::F64), {1, 1, 1});
    check_close(Tensor::full({2, 2}, 2.5, DType::F64), {2.5, 2.5, 2.5, 2.5});
    CHECK(Tensor::full({2}, 7, DType::I64).to_vector<int64_t>() == std::vector<int64_t>{7, 7});
    CHECK(Tensor::full({2}, -3, DType::I32).to_vector<int32_t>() == std::vector<int32_t>{-3, -3});
    Tensor s = Tensor::scalar(3.0);
    CHECK(s.dim() == 0);
    CHECK(s.numel() == 1);
    CHECK(s.item() == 3.0);
    Tensor e = Tensor::zeros({0, 4});
    CHECK(e.numel() == 0);
    CHECK(e.to_vector<float>().empty());
    CHECK(z.meta_str() == "float32[2,3] cpu");
  }

  TEST_CASE("arange") {
    check_close(Tensor::arange(0, 5), {0, 1, 2, 3, 4});
    check_close(Tensor::arange(1, 2, 0.25, DType::F64), {1, 1.25, 1.5, 1.75});
    check_close(Tensor::arange(5, 0, -2), {5, 3, 1});
    check_close(Tensor::arange(0, 1, 0.3), {0, 0.3, 0.6, 0.9});
    CHECK(Tensor::arange(3, 3).numel() == 0);
    CHECK(Tensor::arange(3, 1).numel() == 0);
    CHECK(Tensor::arange(0, 4, 1, DType::I64).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3});
    // values an integer dtype cannot hold are refused, as full() refuses them (they wrapped around before)
    CHECK_THROWS_WITH_ALL(Tensor::arange(2e9, 2.6e9, 2e8, DType::I32), "arange", "2.4e+09", "does not fit int32");
    CHECK_THROWS_WITH_ALL(Tensor::arange(1e19, 1.3e19, 1e18, DType::I64), "arange", "int64");
    CHECK(Tensor::arange(2e9, 2.6e9, 2e8, DType::I64).to_vector<int64_t>().back() == 2400000000);
  }

  TEST_CASE("from_vector keeps values, shape and dtype") {
    Tensor f = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
    CHECK(f.dtype() == DType::F32);
    CHECK(f.shape() == Shape{2, 3});
    CHECK(f.to_vector<float>() == std::vector<float>{1, 2, 3, 4, 5, 6});
    CHECK(f.data<float>()[4] == 5.0f);
    Tensor d = Tensor::from_vector<double>({0.1, 0.2}, {2, 1});
    CHECK(d.dtype() == DType::F64);
    CHECK(d.to_vector<double>() == std::vector<double>{0.1, 0.2});
    Tensor i = Tensor::from_vector<int64_t>({5, -7}, {2});
    CHECK(i.dtype() == DType::I64);
    CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{5, -7});
    Tensor s = Tensor::from_vector<float>({4}, {});
    CHECK(s.dim() == 0);
    CHECK(s.item() == 4.0);
  }

  TEST_CASE("rand and randn are reproducible from a seeded Generator") {
    Generator g1(42), g2(42), g3(43);
    Tensor a = Tensor::rand({100}, 0, 1, DType::F32, Device::cpu(), &g1);
    Tensor b = Tensor::rand({100}, 0, 1, DType::F32, Device::cpu(), &g2);
    Tensor c = Tensor::rand({100}, 0, 1, DType::F32, Device::cpu(), &g3);
    CHECK(max_abs_diff(a, b) == 0);
    CHECK(max_abs_diff(a, c) > 0);
    CHECK(g1.offset() == 100);
    // the generator moves on: the next draw differs, and restoring its state repeats it
    Tensor a2 = Tensor::randn({50}, 0, 1, DType::F64, Device::cpu(), &g1);
    Generator g4(0);
    g4.set_state(42, 100);
    Tensor a3 = Tensor::randn({50}, 0, 1, DType::F64, Device::cpu(), &g4);
    CHECK(max_abs_diff(a2, a3) == 0);
    CHECK(max_abs_diff(a.slice(0, 0, 50), a2) > 0);
    // same values whatever the dtype
    Generator g5(42);
    Tensor a64 = Tensor::rand({100}, 0, 1, DType::F64, Device::cpu(), &g5);
    CHECK(max_abs_diff(a, a64) < 1e-7);
    // the default generator through manual_seed
    manual_seed(7);
    Tensor d1 = Tensor::randn({10});
    manual_seed(7);
    Tensor d2 = Tensor::randn({10});
    CHECK(max_abs_diff(d1, d2) == 0);
    // float32 rand stays below `high` even where the double draw rounds up to it
    REQUIRE((float)random_uniform01(1, 6989090) == 1.0f);
    Generator edge(0);
    edge.set_state(1, 6989090);
    CHECK(Tensor::rand({1}, 0, 1, DType::F32, Device::cpu(), &edge).item() < 1.0);
    // bounds of rand
    Generator g6(9);
    for (double v : Tensor::rand({1000}, -2, 3, DType::F64, Device::cpu(), &g6).to_vector<double>()) {
      CHECK(v >= -2);
      CHECK(v < 3);
    }
  }

  TEST_CASE("rand_rows: each row from its own counter, whatever rows are beside it") {
    const std::vector<uint64_t> counters = {7, 1ull << 40, 7, ~0ull - 2};  // the last wraps past 2^64
    const Tensor u = Tensor::rand_rows(counters, 5, 11);
    REQUIRE(u.shape() == Shape{4, 5});
    REQUIRE(u.dtype() == DType::F64);
    const std::vector<double> v = u.to_vector<double>();
    for (int64_t r = 0; r < 4; r++)
      for (int64_t c = 0; c < 5; c++) CHECK(v[r * 5 + c] == random_uniform01(11, counters[r] + (uint64_t)c));
    CHECK(max_abs_diff(u.select(0, 0), u.select(0, 2)) == 0);  // one counter, one row
    CHECK(max_abs_diff(Tensor::rand_rows({1ull << 40}, 5, 11).select(0, 0), u.select(0, 1)) == 0);
    CHECK(max_abs_diff(Tensor::rand_rows({7}, 5, 12), Tensor::rand_rows({7}, 5, 11)) > 0);  // the seed keys it
    CHECK(Tensor::rand_rows({}, 5, 1).shape() == Shape{0, 5});
    CHECK(Tensor::rand_rows({3}, 0, 1).shape() == Shape{1, 0});
    CHECK_THROWS_WITH_ALL(Tensor::rand_rows({3}, -1, 1), "rand_rows", "cols must be >= 0");
    // the backend's contract, named
    Tensor f32 = Tensor::empty({2, 3}), counters2 = Tensor::zeros({2}, DType::I64);
    CHECK_THROWS_WITH_ALL(backend_for(Device::cpu()).random_uniform_rows(f32, counters2, 1), "rand_rows",
                          "float64 [R, C]", "float32[2,3]");
    Tensor f64 = Tensor::empty({3, 3}, DType::F64);
    CHECK_THROWS_WITH_ALL(backend_for(Device::cpu()).random_uniform_rows(f64, counters2, 1), "rand_rows",
                          "int64 [R]", "int64[2]");
  }

  TEST_CASE("randn has mean 0 and std 1; rand is uniform") {
    const int64_t n = 100000;
    auto moments = [](const std::vector<double>& v) {
      double m = 0, s = 0;
      for (double x : v) m += x;
      m /= (double)v.size();
      for (double x : v) s += (x - m) * (x - m);
      return std::pair<double, double>{m, std::sqrt(s / (double)v.size())};
    };
    Generator g(123);
    std::vector<double> v = Tensor::randn({n}, 0, 1, DType::F64, Device::cpu(), &g).to_vector<double>();
    auto [m, s] = moments(v);
    CHECK(std::abs(m) < 0.015);
    CHECK(std::abs(s - 1) < 0.015);
    int64_t within1 = 0;
    for (double x : v) within1 += std::abs(x) < 1;
    CHECK((double)within1 / n == doctest::Approx(0.6827).epsilon(0.01));
    auto [m2, s2] = moments(Tensor::randn({n}, 3, 0.5, DType::F32, Device::cpu(), &g).to_vector<double>());
    CHECK(std::abs(m2 - 3) < 0.01);
    CHECK(std::abs(s2 - 0.5) < 0.01);
    auto [m3, s3] = moments(Tensor::rand({n}, 0, 1, DType::F64, Device::cpu(), &g).to_vector<double>());
    CHECK(std::abs(m3 - 0.5) < 0.01);
    CHECK(std::abs(s3 - std::sqrt(1.0 / 12)) < 0.01);
  }

  // ---------------------------------------------------------------- views

  TEST_CASE("reshape is a view when strides allow, including -1") {
    Tensor x = iota({2, 3, 4});
    Tensor r = x.reshape({4, -1});
    CHECK(r.shape() == Shape{4, 6});
    CHECK(r.shares_storage(x));
    check_values(r, [](const Shape& i) { return i[0] * 6 + i[1]; });
    CHECK(x.reshape({-1}).shape() == Shape{24});
    Tensor r3 = x.reshape({2, 1, 12, 1});
    CHECK(r3.shares_storage(x));
    CHECK(r3.strides()[2] == 1);
    CHECK(Tensor::scalar(5).reshape({1, 1}).shape() == Shape{1, 1});
    CHECK(iota({1, 1}).reshape({}).dim() == 0);
    // a reshape view writes through to the base
    x.reshape({24}).narrow(0, 5, 1).copy_(Tensor::full({1}, -1));
    CHECK(x.to_vector<float>()[5] == -1.0f);
  }

  TEST_CASE("reshape of non-viewable strides copies; view() refuses") {
    Tensor x = iota({2, 3, 4});
    Tensor t = x.transpose(1, 2);  // [2,4,3], t[b][i][j] = x[b][j][i]
    CHECK(!t.is_contiguous());
    Tensor merged = t.reshape({2, 12});  // merging the swapped dims needs a copy
    CHECK(!merged.shares_storage(x));
    check_values(merged, [](const Shape& i) { return i[0] * 12 + (i[1] % 3) * 4 + i[1] / 3; });
    CHECK_THROWS_WITH_ALL(t.view({2, 12}), "view", "[2,4,3]", "reshape()");
    Tensor split = t.reshape({2, 2, 2, 3});  // splitting one dim of it is still a view
    CHECK(split.shares_storage(x));
    check_values(split, [](const Shape& i) { return i[0] * 12 + i[3] * 4 + i[1] * 2 + i[2]; });
    CHECK(t.view({2, 2, 2, 3}).shares_storage(x));
    CHECK(x.view({6, 4}).shares_storage(x));
    // a sliced (gappy) tensor merges only the dims that are contiguous with each other
    Tensor s = iota({4, 6}).slice(1, 0, 4);  // [4,4] with row stride 6
    CHECK(s.reshape({4, 2, 2}).shares_storage(s));
    CHECK(!s.reshape({16}).shares_storage(s));
    check_values(s.reshape({16}), [](const Shape& i) { return (i[0] / 4) * 6 + i[0] % 4; });
    // expanded tensors
    Tensor e = iota({3, 1}).expand({3, 4});
    check_values(e.reshape({12}), [](const Shape& i) { return i[0] / 4; });
  }

  TEST_CASE("random strided views: reshape, contiguous and the kernels agree with direct strided reads") {
    std::mt19937 rng(2024);
    for (int trial = 0; trial < 300; trial++) {
      Tensor t = random_view(rng);
      CAPTURE(t.meta_str());
      CAPTURE(shape_str(t.strides()));
      std::vector<double> ref = read_strided(t);
      CHECK(t.contiguous().to_vector<double>() == ref);
      Shape target = random_factorization(t.numel(), rng);
      CAPTURE(shape_str(target));
      Tensor r = t.reshape(target);
      CHECK(r.shape() == target);
      CHECK(read_strided(r) == ref);  // a view must read the same elements in the same order
      if (!view_strides(t, target).empty() || target.empty()) CHECK(r.shares_storage(t));
      // unary and binary kernels on strided operands (the broadcast operand too)
      std::vector<double> y = add(neg(t), t.contiguous() * 3.0).to_vector<double>();
      for (size_t i = 0; i < ref.size(); i++) CHECK(y[i] == 2 * ref[i]);
      Tensor row = t.select(0, 0).unsqueeze(0);  // broadcast along dim 0
      std::vector<double> z = (t - row).to_vector<double>(), rv = read_strided(row);
      for (size_t i = 0; i < ref.size(); i++) CHECK(z[i] == ref[i] - rv[i % rv.size()]);
      // reduction over a random set of dims, against a loop over the reference
      Shape dims;
      for (int64_t d = 0; d < t.dim(); d++)
        if (rng() % 2) dims.push_back(d);
      if (dims.empty()) continue;
      Tensor s = sum(t, dims, true);
      std::vector<double> expect(s.numel(), 0.0);
      Shape idx(t.dim(), 0);
      for (size_t e = 0; e < ref.size(); e++) {
        int64_t o = 0;
        for (int64_t d = 0; d < t.dim(); d++) o = o * s.size(d) + (s.size(d) == 1 ? 0 : idx[d]);
        expect[o] += ref[e];
        for (int64_t d = t.dim() - 1; d >= 0; d--) {
          if (++idx[d] < t.size(d)) break;
          idx[d] = 0;
        }
      }
      check_close(s, expect);
    }
  }

  TEST_CASE("transpose and permute") {
    Tensor x = iota({2, 3});
    Tensor t = x.transpose(0, 1);
    CHECK(t.shape() == Shape{3, 2});
    CHECK(t.strides() == Shape{1, 3});
    CHECK(t.shares_storage(x));
    check_values(t, [](const Shape& i) { return i[1] * 3 + i[0]; });
    CHECK(x.t().shape() == Shape{3, 2});
    Tensor y = iota({2, 3, 4});
    Tensor p = y.permute({2, 0, 1});
    CHECK(p.shape() == Shape{4, 2, 3});
    CHECK(p.shares_storage(y));
    check_values(p, [](const Shape& i) { return i[1] * 12 + i[2] * 4 + i[0]; });
    check_values(y.permute({-1, 1, 0}), [](const Shape& i) { return i[2] * 12 + i[1] * 4 + i[0]; });
  }

  TEST_CASE("slice with step, narrow and select") {
    Tensor x = Tensor::arange(0, 10);
    check_close(x.slice(0, 1, 8, 3), {1, 4, 7});
    check_close(x.slice(0, -3, 10), {7, 8, 9});
    check_close(x.slice(0, 2, -5), {2, 3, 4});
    check_close(x.slice(0, 0, 10, 4), {0, 4, 8});
    CHECK(x.slice(0, 4, 4).numel() == 0);
    Tensor m = iota({3, 4});
    Tensor s = m.slice(1, 1, 4, 2);
    CHECK(s.shape() == Shape{3, 2});
    CHECK(s.shares_storage(m));
    check_values(s, [](const Shape& i) { return i[0] * 4 + 1 + 2 * i[1]; });
    Tensor n = m.narrow(1, 1, 2);
    check_values(n, [](const Shape& i) { return i[0] * 4 + 1 + i[1]; });
    Tensor row = m.select(0, 1);
    CHECK(row.shape() == Shape{4});
    check_close(row, {4, 5, 6, 7});
    Tensor col = m.select(1, -1);
    check_close(col, {3, 7, 11});
    // writes through a strided slice land in the base
    s.copy_(Tensor::full({1}, -1));
    check_close(m.select(0, 0), {0, -1, 2, -1});
  }

  TEST_CASE("expand, unsqueeze, squeeze, flatten") {
    Tensor x = Tensor::from_vector<float>({1, 2, 3}, {3, 1});
    Tensor e = x.expand({2, 3, 4});
    CHECK(e.shape() == Shape{2, 3, 4});
    CHECK(e.strides() == Shape{0, 1, 0});
    CHECK(e.shares_storage(x));
    check_values(e, [](const Shape& i) { return i[1] + 1; });
    CHECK(x.expand({-1, 5}).shape() == Shape{3, 5});
    Tensor y = iota({2, 3});
    CHECK(y.unsqueeze(0).shape() == Shape{1, 2, 3});
    CHECK(y.unsqueeze(-1).shape() == Shape{2, 3, 1});
    CHECK(y.unsqueeze(1).shape() == Shape{2, 1, 3});
    CHECK(y.unsqueeze(1).shares_storage(y));
    Tensor z = iota({1, 2, 1, 3});
    CHECK(z.squeeze().shape() == Shape{2, 3});
    CHECK(z.squeeze(2).shape() == Shape{1, 2, 3});
    CHECK(z.squeeze(1).shape() == Shape{1, 2, 1, 3});  // not size 1: unchanged
    Tensor w = iota({2, 3, 4});
    CHECK(w.flatten().shape() == Shape{24});
    CHECK(w.flatten(1).shape() == Shape{2, 12});
    CHECK(w.flatten(0, 1).shape() == Shape{6, 4});
    CHECK(w.flatten(0, 1).shares_storage(w));
    CHECK(Tensor::scalar(1).flatten().shape() == Shape{1});
    check_values(w.transpose(0, 2).flatten(), [](const Shape& i) {
      int64_t a = i[0] / 6, b = (i[0] / 2) % 3, c = i[0] % 2;  // [4,3,2] -> x[c][b][a]
      return c * 12 + b * 4 + a;
    });
  }

  TEST_CASE("contiguous and clone copy; contiguous of a contiguous tensor does not") {
    Tensor x = iota({3, 4});
    CHECK(x.contiguous().shares_storage(x));
    Tensor t = x.t();
    Tensor c = t.contiguous();
    CHECK(c.is_contiguous());
    CHECK(!c.shares_storage(x));
    check_values(c, [](const Shape& i) { return i[1] * 4 + i[0]; });
    Tensor k = x.clone();
    CHECK(!k.shares_storage(x));
    CHECK(max_abs_diff(k, x) == 0);
    CHECK(iota({3, 1}).expand({3, 4}).contiguous().strides() == Shape{4, 1});
  }

  TEST_CASE("concat, split, chunk, stack") {
    Tensor a = iota({2, 3});
    Tensor b = add(iota({2, 2}), 100.0);
    Tensor c = concat({a, b}, 1);
    CHECK(c.shape() == Shape{2, 5});
    check_close(c, {0, 1, 2, 100, 101, 3, 4, 5, 102, 103});
    check_close(concat({a, a.slice(0, 1, 2)}, 0), {0, 1, 2, 3, 4, 5, 3, 4, 5});
    check_close(concat({a.t(), b}, -2), {0, 3, 1, 4, 2, 5, 100, 101, 102, 103});
    auto parts = split(Tensor::arange(0, 10), 4, 0);
    REQUIRE(parts.size() == 3);
    check_close(parts[0], {0, 1, 2, 3});
    check_close(parts[2], {8, 9});
    CHECK(parts[1].shares_storage(parts[0]));
    auto ch = chunk(Tensor::arange(0, 5), 2, 0);
    REQUIRE(ch.size() == 2);
    check_close(ch[0], {0, 1, 2});
    check_close(ch[1], {3, 4});
    auto cols = chunk(iota({2, 6}), 3, 1);
    REQUIRE(cols.size() == 3);
    check_close(cols[1], {2, 3, 8, 9});
    Tensor s0 = stack({a, add(a, 10.0)}, 0);
    CHECK(s0.shape() == Shape{2, 2, 3});
    check_close(s0, {0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15});
    Tensor s2 = stack({a, add(a, 10.0)}, -1);
    CHECK(s2.shape() == Shape{2, 3, 2});
    check_close(s2, {0, 10, 1, 11, 2, 12, 3, 13, 4, 14, 5, 15});
  }

  TEST_CASE("to(DType) converts values") {
    Tensor x = Tensor::from_vector<float>({1.5f, -2.7f, 3.0f}, {3});
    CHECK(x.to(DType::F32).shares_storage(x));
    Tensor d = x.to(DType::F64);
    CHECK(d.dtype() == DType::F64);
    CHECK(d.to_vector<double>() == std::vector<double>{1.5, (double)-2.7f, 3.0});
    CHECK(x.to(DType::I64).to_vector<int64_t>() == std::vector<int64_t>{1, -2, 3});
    CHECK(x.to(DType::I32).to_vector<int32_t>() == std::vector<int32_t>{1, -2, 3});
    Tensor i = Tensor::from_vector<int64_t>({4, -5}, {2});
    CHECK(i.to(DType::F32).to_vector<float>() == std::vector<float>{4, -5});
    check_close(iota({2, 3}).t().to(DType::F64), {0, 3, 1, 4, 2, 5});
    CHECK(x.to(Device::cpu()).shares_storage(x));
  }

  TEST_CASE("str() prints shape, dtype and values") {
    Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
    CHECK(x.str() == "Tensor(float32[2,3] cpu) [[1, 2, 3], [4, 5, 6]]");
    CHECK(x.t().str() == "Tensor(float32[3,2] cpu) [[1, 4], [2, 5], [3, 6]]");
    CHECK(Tensor::arange(0, 10).str() == "Tensor(float32[10] cpu) [0, 1, 2, ..., 7, 8, 9]");
    CHECK(Tensor::arange(0, 10).str(4) == "Tensor(float32[10] cpu) [0, 1, ..., 8, 9]");
    CHECK(Tensor::scalar(2.5, DType::F64).str() == "Tensor(float64[] cpu) 2.5");
    CHECK(Tensor::zeros({0, 3}).str() == "Tensor(float32[0,3] cpu) []");
    CHECK(Tensor().str() == "Tensor(undefined)");
    CHECK(Tensor::full({2}, 3, DType::I64).str() == "Tensor(int64[2] cpu) [3, 3]");
    // tiny limits still print something sensible and never read out of bounds
    CHECK(Tensor::arange(0, 5).str(0).find("...") != std::string::npos);
    CHECK(Tensor::arange(0, 5).str(1).find("...") != std::string::npos);
    std::ostringstream os;
    os << x;
    CHECK(os.str() == x.str());
  }

  TEST_CASE("item") {
    CHECK(Tensor::scalar(1.25).item() == 1.25);
    CHECK(Tensor::full({1, 1}, -3).item() == -3);
    CHECK(Tensor::full({1}, 9, DType::I64).item() == 9);
    CHECK(iota({2, 3}).select(0, 1).select(0, 2).item() == 5);
    // item<T>() is exact where the double of item() rounds: 2^53 + 1 reads back as itself
    const int64_t big = (int64_t(1) << 53) + 1;
    Tensor id = Tensor::from_vector<int64_t>({big}, {1});
    CHECK(id.item<int64_t>() == big);
    CHECK(id.item() == 9007199254740992.0);
    CHECK(Tensor::scalar(2.5).item<float>() == 2.5f);
    CHECK_THROWS_WITH_ALL(Tensor::zeros({2}).item<int64_t>(), "item", "has 2 elements, expected 1");
  }
}
