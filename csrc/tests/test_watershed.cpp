// C++ unit tests of the watershed core: heaps, small floods with known answers, exact vs emulated
// agreement on tie-free inputs, and index arithmetic past 2^31 elements.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/watershed.h"
#include "kernels/watershed.h"
#include "nf_test.h"

using nf::ws_detail::ExactHeap;
using nf::ws_detail::ExactItem;
using nf::ws_detail::ordered_key;
using nf::ws_detail::PackedExactItem;
using nf::ws_detail::LevelQueue;

NF_TEST(ordered_key_is_monotone) {
  const double v[] = {-INFINITY, -1e300, -2.5, -1.0, -1e-300, -0.0, 0.0, 1e-300, 1.0, 2.5, 1e300, INFINITY};
  for (size_t i = 1; i < sizeof v / sizeof v[0]; ++i) {
    if (v[i - 1] == v[i]) {
      NF_CHECK(ordered_key(v[i - 1]) == ordered_key(v[i]));
    } else {
      NF_CHECK(ordered_key(v[i - 1]) < ordered_key(v[i]));
    }
    NF_CHECK((nf::ws::signed_key(v[i - 1]) < nf::ws::signed_key(v[i])) == (v[i - 1] < v[i]));
  }
}

// Drives a LevelQueue the way the flood does (every pushed key >= the last popped key; equal keys of the
// current level, i.e. plateaus; keys falling in the current bucket; start items before the first pop)
// and checks every pop against the (key, age) minimum of a plain list.
static void level_queue_trial(std::mt19937_64& rng, int64_t n, double spread, int levels) {
  std::vector<double> val(n);
  std::vector<int32_t> nxt(n, -7);
  LevelQueue<int32_t> q;
  q.reset(val.data(), nxt.data(), 0.0, spread, n);
  struct Ref {
    double key;
    int64_t age;
    int32_t idx;
  };
  std::vector<Ref> ref;
  int64_t age = 0;
  int32_t next = 0;
  std::uniform_real_distribution<double> u(0.0, spread);
  auto key_at_least = [&](double lo) {
    // quantised keys (many ties) inside [lo, spread]
    double k = levels > 0 ? std::floor(u(rng) * levels / spread) * spread / levels : u(rng);
    return k < lo ? lo : k;
  };
  const int32_t nstart = static_cast<int32_t>(1 + rng() % 4);
  for (; next < nstart && next < n; ++next) {  // starts: (key, age) order, age 0
    val[next] = key_at_least(0.0);
    ref.push_back({val[next], 0, next});
  }
  std::stable_sort(ref.begin(), ref.end(), [](const Ref& a, const Ref& b) { return a.key < b.key; });
  for (const Ref& r : ref) q.push_start(r.idx);
  int32_t p;
  while (q.pop(p)) {
    NF_CHECK(!ref.empty());
    size_t best = 0;
    for (size_t i = 1; i < ref.size(); ++i)
      if (ref[i].key < ref[best].key || (ref[i].key == ref[best].key && ref[i].age < ref[best].age)) best = i;
    NF_CHECK_EQ(p, ref[best].idx);
    const double cur = ref[best].key;
    NF_CHECK(q.current_key() == cur);
    ref.erase(ref.begin() + static_cast<int64_t>(best));
    const int pushes = static_cast<int>(rng() % 4);
    for (int k = 0; k < pushes && next < n; ++k, ++next) {
      const int kind = static_cast<int>(rng() % 3);
      double key = kind == 0 ? cur : key_at_least(cur);  // a plateau, or anything above
      if (kind == 1) key = std::min(spread, cur + (key - cur) * 1e-3);  // likely the same bucket
      val[next] = key;
      ref.push_back({key, ++age, next});
      if (key <= cur) {
        q.push_level(next);
      } else {
        q.push_above(next, key);
      }
    }
  }
  NF_CHECK(ref.empty());
}

NF_TEST(level_queue_pops_in_key_then_age_order) {
  std::mt19937_64 rng(3);
  for (int t = 0; t < 300; ++t) level_queue_trial(rng, 1 + static_cast<int64_t>(rng() % 400), 10.0, t % 3 == 0 ? 0 : 1 + t % 7);
  // degenerate ranges: a single key (one bucket), and a huge range
  for (int t = 0; t < 20; ++t) level_queue_trial(rng, 200, 1e300, 3);
  std::vector<double> val = {2.0, 2.0, 2.0};
  std::vector<int32_t> nxt(3);
  LevelQueue<int32_t> q;
  q.reset(val.data(), nxt.data(), 2.0, 2.0, 3);
  NF_CHECK_EQ(q.buckets(), 1);
  q.push_start(1);
  q.push_start(0);
  int32_t p;
  NF_CHECK(q.pop(p) && p == 1);
  q.push_level(2);
  NF_CHECK(q.pop(p) && p == 0);
  NF_CHECK(q.pop(p) && p == 2);
  NF_CHECK(!q.pop(p));
}

NF_TEST(exact_heap_matches_skimage_tie_order) {
  // skimage's heap (heap_general.pxi): push A(5,0) B(5,0) X(1,3) Y(9,4) -> [X, B, A, Y]; popping X moves
  // Y to the root, which sifts down to the left child B (A is not strictly smaller than B), so B comes
  // out before A although it was pushed later.
  ExactHeap<PackedExactItem> h;
  h.push(PackedExactItem::make(5, 0, 10));  // A
  h.push(PackedExactItem::make(5, 0, 11));  // B
  h.push(PackedExactItem::make(1, 3, 12));  // X
  h.push(PackedExactItem::make(9, 4, 13));  // Y
  NF_CHECK_EQ(h.pop().index(), int64_t(12));
  NF_CHECK_EQ(h.pop().index(), int64_t(11));
  NF_CHECK_EQ(h.pop().index(), int64_t(10));
  NF_CHECK_EQ(h.pop().index(), int64_t(13));
  // Different ages: ordinary (key, age) order; the 32-byte item keeps 64-bit indices.
  ExactHeap<ExactItem> g;
  for (int64_t i = 0; i < 100; ++i) g.push(ExactItem::make(uint64_t(i % 10), uint64_t(100 - i), (int64_t(1) << 35) + i, i));
  uint64_t pk = 0, pa = 0;
  for (int64_t i = 0; i < 100; ++i) {
    const ExactItem e = g.pop();
    NF_CHECK(e.key > pk || (e.key == pk && e.age() > pa) || i == 0);
    NF_CHECK_EQ(e.label, e.index() - (int64_t(1) << 35));
    pk = e.key;
    pa = e.age();
  }
}

template <class L>
std::vector<L> run(const std::vector<double>& img, const std::vector<L>& mk, const std::vector<uint8_t>* mask,
                   int64_t H, int64_t W, int conn = 1, bool line = false) {
  std::vector<L> out(img.size(), L(-7));
  nf::watershed_cpu<L>(img.data(), mk.data(), mask ? mask->data() : nullptr, H, W, conn, line, out.data());
  return out;
}

NF_TEST(ridge_splits_two_basins) {
  const std::vector<double> img = {0, 1, 2, 1, 0};
  const std::vector<int32_t> mk = {1, 0, 0, 0, 2};
  const auto out = run<int32_t>(img, mk, nullptr, 1, 5);
  const std::vector<int32_t> want = {1, 1, 1, 2, 2};  // the ridge pixel: first popped neighbour (left)
  NF_CHECK(out == want);
  const auto line = run<int32_t>(img, mk, nullptr, 1, 5, 1, true);
  const std::vector<int32_t> want_line = {1, 1, 0, 2, 2};
  NF_CHECK(line == want_line);
}

NF_TEST(plateau_goes_to_nearest_marker_and_mask_blocks) {
  const int64_t H = 3, W = 7;
  const std::vector<double> img(H * W, 0.0);
  std::vector<int64_t> mk(H * W, 0);
  mk[1 * W + 0] = 3;
  mk[1 * W + 6] = 9;
  std::vector<uint8_t> mask(H * W, 1);
  for (int64_t r = 0; r < H; ++r) mask[r * W + 4] = 0;  // a wall: 9 floods only columns 5-6
  const auto out = run<int64_t>(img, mk, &mask, H, W);
  for (int64_t r = 0; r < H; ++r) {
    for (int64_t c = 0; c < 4; ++c) NF_CHECK_EQ(out[r * W + c], int64_t(3));
    NF_CHECK_EQ(out[r * W + 4], int64_t(0));
    for (int64_t c = 5; c < 7; ++c) NF_CHECK_EQ(out[r * W + c], int64_t(9));
  }
}

NF_TEST(empty_markers_and_empty_image) {
  const std::vector<double> img = {3, 1, 2, 5};
  const std::vector<int32_t> mk = {0, 0, 0, 0};
  const auto out = run<int32_t>(img, mk, nullptr, 2, 2);
  for (auto v : out) NF_CHECK_EQ(v, 0);
  int32_t dummy = 0;
  nf::watershed_cpu<int32_t>(nullptr, nullptr, nullptr, 0, 5, 1, false, &dummy);  // no-op
  NF_CHECK_EQ(dummy, 0);
}

NF_TEST(emulated_matches_exact_on_distinct_values) {
  // Distinct values, one pixel per marker: the (C, hop, parents' order) rule reproduces the flood.
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  int64_t differ = 0, total = 0;
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t H = 17 + trial, W = 23;
    std::vector<double> img(H * W);
    for (auto& v : img) v = u(rng);
    std::vector<int64_t> mk(H * W, 0);
    for (int k = 1; k <= 5; ++k) mk[rng() % (H * W)] = k;
    for (int conn = 1; conn <= 2; ++conn) {
      const auto exact = run<int64_t>(img, mk, nullptr, H, W, conn);
      std::vector<int64_t> emu(H * W, -7);
      NF_CHECK(nf::watershed_emulated(img.data(), mk.data(), nullptr, H, W, conn, emu.data()) >= 0);
      for (int64_t i = 0; i < H * W; ++i) differ += exact[i] != emu[i];
      total += H * W;
    }
  }
  NF_CHECK(differ * 1000 < total);  // < 1e-3
}

// scikit-image's flood written out directly on its heap replica (no components, no level queues, no
// tie check): the reference for the fast path on inputs full of equal-valued markers of different labels.
static std::vector<int32_t> skimage_flood(const std::vector<double>& img, const std::vector<int32_t>& mk,
                                          const std::vector<uint8_t>& mask, int64_t H, int64_t W, int conn) {
  std::vector<int32_t> out(H * W, 0);
  ExactHeap<ExactItem> h;
  for (int64_t i = 0; i < H * W; ++i)
    if (mask[i] && mk[i] > 0) {
      out[i] = mk[i];
      h.push(ExactItem::make(ordered_key(img[i]), 0, i));
    }
  const int dr[8] = {-1, 0, 0, 1, -1, -1, 1, 1}, dc[8] = {0, -1, 1, 0, -1, 1, -1, 1};
  uint64_t age = 1;
  while (h.items > 0) {
    const ExactItem e = h.pop();
    const int64_t r = e.index() / W, c = e.index() % W;
    for (int k = 0; k < (conn == 2 ? 8 : 4); ++k) {
      const int64_t rr = r + dr[k], cc = c + dc[k];
      if (rr < 0 || rr >= H || cc < 0 || cc >= W) continue;
      const int64_t n = rr * W + cc;
      if (!mask[n] || out[n] != 0) continue;
      out[n] = out[e.index()];
      h.push(ExactItem::make(std::max(ordered_key(img[n]), e.key), ++age, n));
    }
  }
  return out;
}

NF_TEST(exact_flood_matches_replica_with_tied_markers) {
  // Few grey levels, many markers of few labels: equal-valued markers of different labels compete in
  // almost every component, so the tie check flags and the replica fallback runs (and must agree).
  std::mt19937_64 rng(11);
  int64_t cases = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const int64_t H = 1 + static_cast<int64_t>(rng() % 30), W = 1 + static_cast<int64_t>(rng() % 30);
    const int levels = 1 + static_cast<int>(rng() % 4);
    std::vector<double> img(H * W);
    std::vector<int32_t> mk(H * W, 0);
    std::vector<uint8_t> mask(H * W, 1);
    for (auto& v : img) v = static_cast<double>(rng() % levels);
    const int nm = static_cast<int>(rng() % 16), nl = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < nm; ++k) mk[rng() % (H * W)] = 1 + static_cast<int32_t>(rng() % nl);
    if (trial % 2)
      for (auto& m : mask) m = (rng() % 10) < 8;
    for (int conn = 1; conn <= 2; ++conn) {
      const auto want = skimage_flood(img, mk, mask, H, W, conn);
      const auto got = run<int32_t>(img, mk, &mask, H, W, conn);
      NF_CHECK(got == want);
      ++cases;
    }
  }
  NF_CHECK_EQ(cases, int64_t(800));
}

NF_TEST(indices_past_2_to_31) {
  // A 1 x (2^31 + 6) image has pixel indices above INT32_MAX; the device bodies' neighbour arithmetic
  // must stay in 64 bits (checked on the bodies directly: allocating 2^31 pixels is too much here).
  const int64_t W = (int64_t(1) << 31) + 6;
  nf::ws::Args a{nullptr, nullptr, nullptr, 3, W, 8};
  int64_t n = -1;
  const int64_t r = 2, c = W - 1;
  NF_CHECK(nf::ws::neighbour(a, r, c, 0, n));
  NF_CHECK_EQ(n, (r - 1) * W + c);
  NF_CHECK(!nf::ws::neighbour(a, r, c, 2, n));  // right of the last column
  NF_CHECK(nf::ws::neighbour(a, r, c, 4, n));
  NF_CHECK_EQ(n, (r - 1) * W + c - 1);
  NF_CHECK_EQ(nf::ws::direction(a, (r - 1) * W + c - 1, r * W + c), 7);
  NF_CHECK_EQ(nf::ws::direction(a, r * W + c, (r - 1) * W + c), 0);
  // The packed heap item is only used below 2^31 padded pixels; the wide one keeps 64-bit indices.
  const auto it = ExactItem::make(1, 2, (int64_t(1) << 33) + 5);
  NF_CHECK_EQ(it.index(), (int64_t(1) << 33) + 5);
}

NF_TEST_MAIN()
