// Shape: the std::vector operations the code uses, in place up to Shape::kInline dims and on the heap beyond.
#include "test_util.h"

using namespace sgtest;

namespace {
std::vector<int64_t> v(const Shape& s) { return std::vector<int64_t>(s.begin(), s.end()); }
}  // namespace

TEST_SUITE("tensor") {
  TEST_CASE("Shape behaves as std::vector<int64_t> in place and past kInline dims") {
    for (size_t n : {size_t(0), size_t(3), Shape::kInline, Shape::kInline + 1, size_t(20)}) {
      CAPTURE(n);
      std::vector<int64_t> ref;
      Shape s;
      for (size_t i = 0; i < n; i++) {
        ref.push_back((int64_t)i * 7 - 3);
        s.push_back((int64_t)i * 7 - 3);
      }
      CHECK(v(s) == ref);
      CHECK(s == ref);
      CHECK(s.size() == n);
      // copies and moves, from in place and from the heap, keep the values and leave the source empty (moves)
      Shape copy = s;
      CHECK(copy == s);
      Shape moved = std::move(copy);
      CHECK(moved == s);
      CHECK(copy.empty());
      copy = moved;
      moved = std::move(copy);
      CHECK(moved == s);
      Shape assigned{1, 2};
      assigned = s;
      CHECK(assigned == s);
      // insert at the front, in the middle and at the end; erase them again
      std::vector<int64_t> r = ref;
      Shape t = s;
      r.insert(r.begin(), 100);
      t.insert(t.begin(), 100);
      r.insert(r.begin() + (int64_t)r.size() / 2, 3, 5);
      t.insert(t.begin() + (int64_t)t.size() / 2, 3, 5);
      r.insert(r.end(), {8, 9});
      t.insert(t.end(), {8, 9});
      CHECK(v(t) == r);
      r.erase(r.begin() + 1, r.begin() + 3);
      t.erase(t.begin() + 1, t.begin() + 3);
      r.erase(r.begin());
      t.erase(t.begin());
      CHECK(v(t) == r);
      // a range from the shape itself inserted into it
      r.insert(r.begin(), r.begin(), r.end());
      t.insert(t.begin(), t.begin(), t.end());
      CHECK(v(t) == r);
      t.resize(2, 4);
      r.resize(2, 4);
      CHECK(v(t) == r);
      t.resize(9, 4);
      r.resize(9, 4);
      CHECK(v(t) == r);
    }
    CHECK(Shape(3, 1) == Shape{1, 1, 1});
    CHECK(Shape{3}.size() == 1);
    CHECK(Shape{1, 2} < Shape{1, 3});
    CHECK(Shape{1, 2} != std::vector<int64_t>{1, 2, 3});
    const std::vector<int64_t> back = Shape{4, 5};
    CHECK(back == std::vector<int64_t>{4, 5});
    CHECK_THROWS_AS(Shape{1}.at(1), std::out_of_range);
    CHECK(shape_str(Shape{2, 3, 4, 5, 6, 7, 8}) == "[2,3,4,5,6,7,8]");
    // a tensor of more dims than kInline works as before
    Tensor x = Tensor::arange(0, 256, 1, DType::F64).reshape({2, 2, 2, 2, 2, 2, 2, 2});
    CHECK(x.dim() == 8);
    CHECK(x.sum().item() == 255 * 128);
    CHECK(x.transpose(0, 7).strides() == Shape{1, 64, 32, 16, 8, 4, 2, 128});
    CHECK(x.transpose(0, 7).contiguous().strides() == Shape{128, 64, 32, 16, 8, 4, 2, 1});
  }
}
