// Ops that pick elements by index: topk, sort, gather, index_select, multinomial (argmax's cases are with the
// reductions in test_ops_core.cpp). PyTorch's gather is in the reference file; the CPU-vs-GPU cases run the
// gradient checks below on both devices (test_cuda_sweep.cpp) plus topk and multinomial in test_cuda.cpp.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>

#include "test_util.h"

using namespace sgtest;

namespace {

Tensor i64(std::vector<int64_t> v, Shape s) { return Tensor::from_vector<int64_t>(v, s); }

// topk by sorting a copy of each row: larger first, equal values in index order, NaN first.
std::vector<int64_t> topk_by_sort(const std::vector<double>& x, int64_t rows, int64_t n, int64_t k, bool largest) {
  std::vector<int64_t> out;
  for (int64_t r = 0; r < rows; r++) {
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    const double* row = x.data() + r * n;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      const bool an = std::isnan(row[a]), bn = std::isnan(row[b]);
      if (an != bn) return largest ? an : bn;
      return !an && (largest ? row[a] > row[b] : row[a] < row[b]);
    });
    out.insert(out.end(), order.begin(), order.begin() + k);
  }
  return out;
}

}  // namespace

REGISTER_GRAD_CASES {
  auto gather_at = [](int64_t dim, Tensor idx) {
    // (the index follows x: the CPU-vs-GPU sweep moves the inputs only)
    return [dim, idx](const std::vector<Tensor>& x) { return gather(x[0], dim, idx.to(x[0].device())); };
  };
  return std::vector<GradCase>{
      gc("gather", "dim 1, repeated indices", gather_at(1, i64({0, 2, 2, 1, 1, 1, 3, 0}, {2, 4})), {leaf({2, 4}, 1)}),
      gc("gather", "dim 0, index smaller than x on dim 1",
         gather_at(0, i64({2, 0, 1, 1, 0, 2}, {3, 2})), {leaf({3, 4}, 2)}),
      gc("gather", "dim -1 of a transposed [3,5]", gather_at(-1, i64({4, 0, 1, 3, 3, 2}, {3, 2})),
         {leaf_transposed({3, 5}, 3)}),
      gc("gather", "index_select dim 1 (repeats)",
         [](const std::vector<Tensor>& x) { return index_select(x[0], 1, i64({3, 0, 3}, {3}).to(x[0].device())); },
         {leaf({2, 4}, 4)}),
      gc("gather", "index_select dim 0: whole rows of a [4,2,3] (repeats)",
         [](const std::vector<Tensor>& x) {
           return index_select(x[0].reshape({4, 2, 3}), 0, i64({2, 0, 2}, {3}).to(x[0].device()));
         },
         {leaf({4, 6}, 6)}),
      gc("gather", "topk values, dim 0",
         [](const std::vector<Tensor>& x) { return topk(x[0], 2, 0).values; }, {leaf({5, 3}, 5)}),
      gc("gather", "sort values, descending, dim 1 of a transposed [4,12]",
         [](const std::vector<Tensor>& x) { return sort(x[0], 1, true).values; }, {leaf_transposed({4, 12}, 7)}),
  };
}

TEST_SUITE("ops_index") {
  TEST_CASE("topk: values and indices in order, largest or smallest, any dim") {
    Tensor x = Tensor::from_vector<float>({3, 1, 4, 1, 5, 9, 2, 6}, {2, 4});
    TopK t = topk(x, 2);
    CHECK(t.indices.to_vector<int64_t>() == std::vector<int64_t>{2, 0, 1, 3});
    CHECK(t.values.to_vector<float>() == std::vector<float>{4, 3, 9, 6});
    TopK s = topk(x, 3, 1, false);
    CHECK(s.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 3, 0, 2, 0, 3});  // ties (1, 1) in index order
    CHECK(s.values.to_vector<float>() == std::vector<float>{1, 1, 3, 2, 5, 6});
    TopK c = topk(x, 1, 0);
    CHECK(c.indices.shape() == Shape{1, 4});
    CHECK(c.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 1, 0, 1});
    CHECK(topk(x, 0).values.shape() == Shape{2, 0});
    CHECK(topk(x.to(DType::BF16), 1).values.to(DType::F32).to_vector<float>() == std::vector<float>{4, 9});
    TopK ints = topk(Tensor::from_vector<int64_t>({7, -2, 9}, {3}), 2);
    CHECK(ints.values.dtype() == DType::I64);
    CHECK(ints.values.to_vector<int64_t>() == std::vector<int64_t>{9, 7});
    // int64 values past float64's 2^53 come back exactly
    const int64_t big = (int64_t(1) << 60) + 1, mid = (int64_t(1) << 53) + 1, neg = -(int64_t(1) << 62) - 3;
    TopK bigs = topk(Tensor::from_vector<int64_t>({mid, 3, big, neg}, {4}), 4);
    CHECK(bigs.values.to_vector<int64_t>() == std::vector<int64_t>{big, mid, 3, neg});
    // 0-size dims: empty results of the right shape, as torch
    CHECK(topk(Tensor::zeros({3, 0}), 0, 1).values.shape() == Shape{3, 0});
    CHECK(topk(Tensor::zeros({2, 0, 4}), 2, 2).indices.shape() == Shape{2, 0, 2});
    CHECK(index_select(Tensor::zeros({2, 0, 3}), 2, i64({1, 2}, {2})).shape() == Shape{2, 0, 2});
  }

  TEST_CASE("topk: a NaN is the largest; agrees with sorting on rows with many ties") {
    Tensor x = Tensor::from_vector<double>({1, NAN, 3, NAN}, {4});
    CHECK(topk(x, 3).indices.to_vector<int64_t>() == std::vector<int64_t>{1, 3, 2});
    CHECK(topk(x, 2, 0, false).indices.to_vector<int64_t>() == std::vector<int64_t>{0, 2});
    manual_seed(3);
    Tensor r = mul(Tensor::randn({7, 37}, 0, 1, DType::F64), 2.0);  // rounded to halves: many equal values
    std::vector<double> v = r.to_vector<double>();
    for (double& e : v) e = std::round(e);
    v[5] = NAN;
    Tensor xr = Tensor::from_vector<double>(v, {7, 37});
    for (bool largest : {true, false})
      for (int64_t k : {1, 5, 37}) {
        CAPTURE(largest);
        CAPTURE(k);
        CHECK(topk(xr, k, 1, largest).indices.to_vector<int64_t>() == topk_by_sort(v, 7, 37, k, largest));
        // along dim 0 of the transpose: the same lines, read with a stride
        CHECK(topk(xr.transpose(0, 1), k, 0, largest).indices.transpose(0, 1).contiguous().to_vector<int64_t>() ==
              topk_by_sort(v, 7, 37, k, largest));
      }
  }

  TEST_CASE("sort and argsort: stable, NaNs last ascending and first descending, any dim, as torch.sort") {
    Tensor x = Tensor::from_vector<float>({3, 1, 4, 1, 5, NAN, 2, 6}, {2, 4});
    TopK up = sort(x);
    CHECK(up.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 3, 0, 2, 2, 0, 3, 1});  // ties in index order
    CHECK(up.values.slice(0, 0, 1).to_vector<float>() == std::vector<float>{1, 1, 3, 4});
    CHECK(std::isnan(up.values.to_vector<float>()[7]));
    CHECK(sort(x, 1, true).indices.to_vector<int64_t>() == std::vector<int64_t>{2, 0, 1, 3, 1, 3, 0, 2});
    CHECK(argsort(x, 0).to_vector<int64_t>() == std::vector<int64_t>{0, 0, 1, 0, 1, 1, 0, 1});
    CHECK(argsort(x, 0, true).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 0, 1, 0, 0, 1, 0});
    // 0-d: its own sort; an empty dim: empty results; integers exactly; bfloat16 through float32
    TopK s0 = sort(Tensor::scalar(2.5));
    CHECK(s0.values.shape() == Shape{});
    CHECK(s0.values.item() == 2.5);
    CHECK(s0.indices.to_vector<int64_t>() == std::vector<int64_t>{0});
    CHECK(sort(Tensor::zeros({3, 0})).indices.shape() == Shape{3, 0});
    const int64_t big = (int64_t(1) << 60) + 1;
    CHECK(sort(Tensor::from_vector<int64_t>({big, -4, big - 1}, {3}), 0, true).values.to_vector<int64_t>() ==
          std::vector<int64_t>{big, big - 1, -4});
    CHECK(sort(x.to(DType::BF16)).indices.to_vector<int64_t>() == up.indices.to_vector<int64_t>());
    CHECK_THROWS_WITH_ALL(sort(x, 2), "sort", "dim 2 out of range for float32[2,4] cpu (rank 2)");
    CHECK_THROWS_WITH_ALL(argsort(Tensor(), 0), "argsort");
    // long rows with many ties, both directions, along a strided dim too (the CPU sorts these lines; its scans,
    // for k = 1 and lines of <= 16, are the ones the GPU runs on short lines: the same order either way)
    manual_seed(4);
    std::vector<double> v = mul(Tensor::randn({5, 301}, 0, 1, DType::F64), 3.0).to_vector<double>();
    for (double& e : v) e = std::round(e);
    v[17] = v[400] = NAN;
    Tensor xr = Tensor::from_vector<double>(v, {5, 301});
    for (bool descending : {false, true}) {
      CAPTURE(descending);
      const std::vector<int64_t> want = topk_by_sort(v, 5, 301, 301, descending);
      CHECK(argsort(xr, 1, descending).to_vector<int64_t>() == want);
      CHECK(sort(xr.transpose(0, 1), 0, descending).indices.transpose(0, 1).contiguous().to_vector<int64_t>() ==
            want);
      for (int64_t k : {8, 9, 40}) {
        CAPTURE(k);
        CHECK(topk(xr, k, 1, descending).indices.to_vector<int64_t>() == topk_by_sort(v, 5, 301, k, descending));
      }
    }
  }

  TEST_CASE("topk: errors name the op and the shapes") {
    Tensor x = Tensor::zeros({2, 4});
    CHECK_THROWS_WITH_ALL(topk(x, 5), "topk", "k = 5", "[0, 4]", "[2,4]");
    CHECK_THROWS_WITH_ALL(topk(x, -1), "topk", "k = -1");
    CHECK_THROWS_WITH_ALL(topk(x, 1, 2), "topk");
    CHECK_THROWS_WITH_ALL(topk(x, 1, 2), "topk", "dim 2 out of range for float32[2,4]");
    // a 0-d tensor is a line of one along dim 0 or -1, as torch
    TopK s0 = topk(Tensor::scalar(1.5), 1);
    CHECK(s0.values.shape() == Shape{});
    CHECK(s0.values.item() == 1.5);
    CHECK(s0.indices.to_vector<int64_t>() == std::vector<int64_t>{0});
    CHECK_THROWS_WITH_ALL(topk(Tensor::scalar(1.0), 2), "topk", "k = 2", "k must be 1");
    CHECK_THROWS_WITH_ALL(topk(Tensor::scalar(1.0), 1, 1), "topk", "dim 1 out of range", "0 or -1");
    CHECK_THROWS_WITH_ALL(sort(Tensor::scalar(1.0), 5), "sort", "dim 5 out of range");
    CHECK_THROWS_WITH_ALL(argsort(Tensor::scalar(1.0), -2), "argsort", "dim -2 out of range");
    CHECK_THROWS_WITH_ALL(topk(Tensor(), 1), "topk");
  }

  TEST_CASE("gather: torch.gather's values; repeated indices add their gradients") {
    Tensor x = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3}).requires_grad_(true);
    Tensor y = gather(x, 1, i64({2, 2, 0, 1}, {2, 2}));
    CHECK(y.to_vector<double>() == std::vector<double>{3, 3, 4, 5});
    CHECK(gather(x, 0, i64({1, 0}, {1, 2})).to_vector<double>() == std::vector<double>{4, 2});
    sum(mul(y, Tensor::from_vector<double>({1, 10, 100, 1000}, {2, 2}))).backward();
    CHECK(x.grad().to_vector<double>() == std::vector<double>{0, 0, 11, 100, 1000, 0});
    CHECK(gather(x, 1, Tensor::zeros({2, 0}, DType::I64)).shape() == Shape{2, 0});
    CHECK(gather(Tensor::zeros({2, 0, 3}), 2, Tensor::zeros({2, 0, 1}, DType::I64)).shape() == Shape{2, 0, 1});
    // bfloat16 reads and scatters through the same lookup
    CHECK(gather(x.to(DType::BF16), 1, i64({1}, {1, 1})).to(DType::F64).item() == 2);
  }

  TEST_CASE("gather and index_select: errors name the op, the index and the shapes") {
    Tensor x = Tensor::zeros({2, 3});
    CHECK_THROWS_WITH_ALL(gather(x, 1, i64({0, 3}, {2, 1})), "gather", "index 3", "position 1", "[0, 3)",
                          "dim 1", "[2,3]");
    CHECK_THROWS_WITH_ALL(gather(x, 0, i64({-1}, {1, 1})), "gather", "index -1", "[0, 2)");
    CHECK_THROWS_WITH_ALL(gather(x, 1, Tensor::zeros({2, 1})), "gather", "int64", "float32");
    CHECK_THROWS_WITH_ALL(gather(x, 1, i64({0, 0}, {2})), "gather", "rank", "[2]");
    CHECK_THROWS_WITH_ALL(gather(x, 1, i64({0, 0, 0}, {3, 1})), "gather", "larger", "dim 0");
    CHECK_THROWS_WITH_ALL(index_select(x, 1, i64({0, 5}, {2})), "index_select", "index 5", "position 1",
                          "int64[2]");
    CHECK_THROWS_WITH_ALL(gather(Tensor::zeros({2, 3}, DType::I64), 1, i64({4}, {1, 1})), "gather", "index 4",
                          "int64[2,3]");
    CHECK_THROWS_WITH_ALL(index_select(x, 1, i64({0}, {1, 1})), "index_select", "1-D");
  }

  TEST_CASE("top-k sampling, as docs/using.md shows it: ids picked among the k most likely") {
    Generator gen(4);
    Tensor logits = Tensor::from_vector<float>({0, 5, 1, 4, -9, 3,   // row 0: top 2 are ids 1 and 3
                                                7, 0, 0, 0, 6, 0},  // row 1: ids 0 and 4
                                               {2, 6});
    NoGradGuard no_grad;
    std::set<int64_t> seen[2];
    for (int i = 0; i < 200; i++) {
      TopK best = topk(logits, 2);                                        // [2, 2] logits and ids
      Tensor pick = multinomial(softmax(best.values * (1 / 0.8)), 1, false, &gen);  // [2, 1] positions in the top 2
      Tensor next = gather(best.indices, 1, pick);                        // [2, 1] ids
      CHECK(next.dtype() == DType::I64);
      std::vector<int64_t> ids = next.to_vector<int64_t>();
      seen[0].insert(ids[0]);
      seen[1].insert(ids[1]);
    }
    CHECK(seen[0] == std::set<int64_t>{1, 3});
    CHECK(seen[1] == std::set<int64_t>{0, 4});
    CHECK(gather(i64({10, 11, 12}, {3}), 0, i64({2, 2}, {2})).to_vector<int64_t>() == std::vector<int64_t>{12, 12});
  }

  TEST_CASE("index_select: slices along a dim, as torch.index_select") {
    Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {3, 2});
    Tensor rows = index_select(x, 0, i64({2, 0, 2}, {3}));
    CHECK(rows.shape() == Shape{3, 2});
    CHECK(rows.to_vector<float>() == std::vector<float>{5, 6, 1, 2, 5, 6});
    CHECK(index_select(x, 1, i64({1}, {1})).to_vector<float>() == std::vector<float>{2, 4, 6});
  }

  TEST_CASE("multinomial: frequencies follow the weights; zero weights are never drawn") {
    Generator gen(11);
    Tensor w = Tensor::from_vector<float>({1, 0, 3, 6}, {4});  // not normalised
    const int64_t n = 20000;
    std::vector<int64_t> s = multinomial(w, n, true, &gen).to_vector<int64_t>();
    std::vector<double> freq(4, 0);
    for (int64_t i : s) freq[i] += 1.0 / n;
    CHECK(freq[1] == 0);
    CHECK(std::abs(freq[0] - 0.1) < 0.015);
    CHECK(std::abs(freq[2] - 0.3) < 0.015);
    CHECK(std::abs(freq[3] - 0.6) < 0.015);
    // without replacement: distinct indices; the first draw follows the weights, and all 3 positive ones come out
    std::vector<double> first(4, 0);
    for (int i = 0; i < 3000; i++) {
      std::vector<int64_t> d = multinomial(w, 3, false, &gen).to_vector<int64_t>();
      CHECK(std::set<int64_t>(d.begin(), d.end()) == std::set<int64_t>{0, 2, 3});
      first[d[0]] += 1.0 / 3000;
    }
    CHECK(std::abs(first[3] - 0.6) < 0.04);
    CHECK(std::abs(first[0] - 0.1) < 0.03);
  }

  TEST_CASE("multinomial without replacement: the second draw follows sequential sampling's probabilities") {
    // P(second = j) = sum_{i != j} p_i p_j / (1 - p_i)
    const std::vector<double> p = {0.1, 0.2, 0.3, 0.4};
    Tensor w = Tensor::from_vector<double>(p, {1, 4});
    Generator gen(21);
    const int draws = 4000;
    std::vector<double> second(4, 0);
    Tensor many = multinomial(expand(w, {draws, 4}), 2, false, &gen);  // a row per draw
    std::vector<int64_t> s = many.to_vector<int64_t>();
    for (int i = 0; i < draws; i++) {
      CHECK(s[2 * i] != s[2 * i + 1]);
      second[s[2 * i + 1]] += 1.0 / draws;
    }
    for (int j = 0; j < 4; j++) {
      double expected = 0;
      for (int i = 0; i < 4; i++)
        if (i != j) expected += p[i] * p[j] / (1 - p[i]);
      CAPTURE(j);
      CHECK(std::abs(second[j] - expected) < 0.025);
    }
  }

  TEST_CASE("randint: uniform integers in [low, high), seeded; integer sums, max and min; max and min of all") {
    Generator gen(2);
    Tensor r = Tensor::randint(-3, 4, {7000}, DType::I64, Device::cpu(), &gen);
    CHECK(r.dtype() == DType::I64);
    std::vector<int64_t> v = r.to_vector<int64_t>();
    std::vector<int> count(7, 0);
    for (int64_t x : v) {
      REQUIRE(x >= -3);
      REQUIRE(x < 4);
      count[x + 3]++;
    }
    for (int c : count) CHECK(std::abs(c - 1000) < 120);
    Generator again(2);
    CHECK(Tensor::randint(-3, 4, {7000}, DType::I64, Device::cpu(), &again).to_vector<int64_t>() == v);
    CHECK(Tensor::randint(0, 5, {2, 3}, DType::F32).dtype() == DType::F32);
    CHECK_THROWS_WITH_ALL(Tensor::randint(4, 4, {2}), "randint", "low < high", "[4, 4)");
    CHECK_THROWS_WITH_ALL(Tensor::randint(0, int64_t(1) << 60, {2}), "randint", "2^53");

    // integer sums are exact int64 (torch's), over any dims; counting tokens
    Tensor ids = Tensor::from_vector<int64_t>({5, 0, 7, (int64_t(1) << 60), 0, 3}, {2, 3});
    CHECK(sum(ids).dtype() == DType::I64);
    CHECK(sum(ids).to_vector<int64_t>() == std::vector<int64_t>{15 + (int64_t(1) << 60)});
    CHECK(sum(ids, {0}).to_vector<int64_t>() == std::vector<int64_t>{5 + (int64_t(1) << 60), 0, 10});
    CHECK(sum(ids.transpose(0, 1), {1}, true).shape() == Shape{3, 1});
    CHECK(sum(gt(ids, Tensor::scalar(0, DType::I64)), {1}).to_vector<int64_t>() == std::vector<int64_t>{2, 2});
    CHECK(sum(Tensor::zeros({2, 0}, DType::I32), {1}).to_vector<int64_t>() == std::vector<int64_t>{0, 0});
    CHECK(Tensor::arange(0, 5, 1, DType::I64).sum().item() == 10);
    CHECK(max(ids).to_vector<int64_t>() == std::vector<int64_t>{int64_t(1) << 60});  // exact past 2^53
    CHECK(min(ids, {1}).to_vector<int64_t>() == std::vector<int64_t>{0, 0});
    CHECK(max(ids.transpose(0, 1), {0}, true).to_vector<int64_t>() == std::vector<int64_t>{7, int64_t(1) << 60});
    Tensor i32 = Tensor::from_vector<int32_t>({4, -9, 2}, {3});
    CHECK(min(i32).dtype() == DType::I32);
    CHECK(min(i32).to_vector<int32_t>() == std::vector<int32_t>{-9});
    CHECK_THROWS_WITH_ALL(max(Tensor::zeros({2, 0}, DType::I64), {1}), "max", "empty");
    CHECK(max(Tensor::zeros({0, 3}, DType::I64), {1}).shape() == Shape{0});

    Tensor m = Tensor::from_vector<float>({3, -1, 7, 2}, {2, 2});
    CHECK(max(m).shape() == Shape{});
    CHECK(max(m).item() == 7);
    CHECK(m.min().item() == -1);
  }

  TEST_CASE("multinomial: batches of rows, a seed repeats the draw, bad weights are refused") {
    Tensor w = Tensor::rand({2, 3, 50}, 0, 1, DType::F64);
    Generator a(5), b(5);
    Tensor s1 = multinomial(w, 4, true, &a), s2 = multinomial(w, 4, true, &b);
    CHECK(s1.shape() == Shape{2, 3, 4});
    CHECK(s1.dtype() == DType::I64);
    CHECK(s1.to_vector<int64_t>() == s2.to_vector<int64_t>());
    Tensor d = multinomial(w, 50, false, &a);  // a permutation of each row
    std::vector<int64_t> dv = d.to_vector<int64_t>();
    for (int r = 0; r < 6; r++) CHECK(std::set<int64_t>(dv.begin() + r * 50, dv.begin() + r * 50 + 50).size() == 50);
    Tensor one_hot = Tensor::from_vector<double>({0, 0, 2, 0}, {1, 4});
    CHECK(multinomial(one_hot, 5, true).to_vector<int64_t>() == std::vector<int64_t>(5, 2));

    CHECK_THROWS_WITH_ALL(multinomial(Tensor::from_vector<float>({1, -1}, {2}), 1), "multinomial", "1 of the weights",
                          "negative, inf or NaN");
    CHECK_THROWS_WITH_ALL(multinomial(Tensor::from_vector<float>({1, NAN}, {2}), 1), "multinomial", "NaN");
    CHECK_THROWS_WITH_ALL(multinomial(Tensor::from_vector<float>({1, 1, 0, 0}, {2, 2}), 1), "multinomial",
                          "no positive weight");
    CHECK_THROWS_WITH_ALL(multinomial(Tensor::from_vector<float>({1, 0, 1}, {3}), 3), "multinomial", "only 2",
                          "without replacement");
    CHECK_THROWS_WITH_ALL(multinomial(Tensor::ones({3}), 4), "multinomial", "4 samples", "3 categories");
    CHECK_THROWS_WITH_ALL(multinomial(Tensor::ones({3}), 0), "multinomial", "num_samples");
    CHECK_THROWS_WITH_ALL(multinomial(Tensor::ones({3}, DType::I64), 1), "multinomial", "floating");
    CHECK_THROWS_WITH_ALL(multinomial(Tensor::ones({2, 0}), 1), "multinomial", "category");
    CHECK(multinomial(Tensor::ones({0, 4}), 2, true).shape() == Shape{0, 2});  // no rows: nothing to draw
  }
}
