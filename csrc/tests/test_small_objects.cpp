// C++ unit tests of the run-length components (core/runs.h) and remove_small_cpu, against a pixel-wise
// flood fill on random masks of every width (the byte scans go eight at a time).
#include <cstdint>
#include <random>
#include <vector>

#include "core/runs.h"
#include "core/small_objects.h"
#include "nf_test.h"

namespace {

// Component sizes by a plain stack flood: size_of[i] for every pixel of value `fg`.
std::vector<int64_t> brute_sizes(const std::vector<uint8_t>& m, int64_t H, int64_t W, bool conn8, bool fg) {
  std::vector<int64_t> comp(H * W, -1), size;
  std::vector<int64_t> stack;
  for (int64_t s = 0; s < H * W; ++s) {
    if ((m[s] != 0) != fg || comp[s] >= 0) continue;
    const int64_t id = static_cast<int64_t>(size.size());
    size.push_back(0);
    comp[s] = id;
    stack.push_back(s);
    while (!stack.empty()) {
      const int64_t p = stack.back();
      stack.pop_back();
      ++size[id];
      const int64_t r = p / W, c = p % W;
      for (int dr = -1; dr <= 1; ++dr)
        for (int dc = -1; dc <= 1; ++dc) {
          if ((dr == 0 && dc == 0) || (!conn8 && dr != 0 && dc != 0)) continue;
          const int64_t rr = r + dr, cc = c + dc;
          if (rr < 0 || rr >= H || cc < 0 || cc >= W) continue;
          const int64_t n = rr * W + cc;
          if ((m[n] != 0) == fg && comp[n] < 0) {
            comp[n] = id;
            stack.push_back(n);
          }
        }
    }
  }
  std::vector<int64_t> out(H * W, 0);
  for (int64_t i = 0; i < H * W; ++i) out[i] = comp[i] >= 0 ? size[comp[i]] : 0;
  return out;
}

}  // namespace

NF_TEST(skip_bytes_finds_the_next_change) {
  std::vector<uint8_t> b(37, 0);
  b[9] = 3;
  b[30] = 1;
  NF_CHECK_EQ(nf::runs::skip_bytes<false>(b.data(), 0, 37), int64_t(9));
  NF_CHECK_EQ(nf::runs::skip_bytes<true>(b.data(), 9, 37), int64_t(10));
  NF_CHECK_EQ(nf::runs::skip_bytes<false>(b.data(), 10, 37), int64_t(30));
  NF_CHECK_EQ(nf::runs::skip_bytes<false>(b.data(), 31, 37), int64_t(37));
  std::vector<uint8_t> ones(20, 255);
  NF_CHECK_EQ(nf::runs::skip_bytes<true>(ones.data(), 0, 20), int64_t(20));
}

NF_TEST(runs_join_into_components) {
  // Two diagonal pixels: one component with 8-connectivity, two with 4.
  const int64_t W = 3;
  for (const bool conn8 : {false, true}) {
    nf::runs::Runs<int32_t> R;
    R.clear(2);
    R.row_first[0] = 0;
    R.add(0, 1);  // (0, 0)
    R.row_first[1] = 1;
    R.add(W + 1, 1);  // (1, 1)
    R.row_first[2] = 2;
    R.join(2, W, conn8);
    NF_CHECK_EQ(R.find(1) == R.find(0), conn8);
    NF_CHECK_EQ(R.find(0), 0);  // the root is the raster-first run
  }
}

NF_TEST(remove_small_matches_flood_fill) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t H = 1 + static_cast<int64_t>(rng() % 40), W = 1 + static_cast<int64_t>(rng() % 40);
    const int dens = 1 + static_cast<int>(rng() % 9);
    std::vector<uint8_t> m(H * W);
    for (auto& v : m) v = (rng() % 10) < static_cast<uint64_t>(dens) ? static_cast<uint8_t>(1 + rng() % 255) : 0;
    const int64_t max_size = static_cast<int64_t>(rng() % 30) - 1;
    for (const bool conn8 : {false, true}) {
      for (const bool holes : {false, true}) {
        const auto sizes = brute_sizes(m, H, W, conn8, !holes);
        std::vector<uint8_t> out(H * W, 9);
        nf::remove_small_cpu(m.data(), H, W, max_size, conn8, holes, out.data());
        for (int64_t i = 0; i < H * W; ++i) {
          const bool sel = (m[i] != 0) != holes;  // a pixel of the components considered
          const uint8_t want = sel && sizes[i] <= max_size ? (holes ? 1 : 0) : (m[i] != 0);
          NF_CHECK_EQ(out[i], want);
        }
      }
    }
  }
}

NF_TEST_MAIN()
