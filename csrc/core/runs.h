// Horizontal runs of a 2-D byte mask joined into connected components by union-find over runs (the
// CPU cores of watershed and remove_small_*): a few runs per object row instead of a pixel-wise search.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace nf {
namespace runs {

// The first index in [c, W) whose byte is zero (kNonzero: skipping nonzero bytes) or nonzero, else W;
// eight bytes at a time.
template <bool kNonzero>
inline int64_t skip_bytes(const uint8_t* b, int64_t c, int64_t W) {
  constexpr uint64_t lo = 0x0101010101010101ull, hi = 0x8080808080808080ull;
  while (c + 8 <= W) {
    uint64_t w;
    std::memcpy(&w, b + c, 8);
    const bool stop = kNonzero ? (((w - lo) & ~w & hi) != 0) : (w != 0);  // a zero byte / a nonzero byte
    if (stop) break;
    c += 8;
  }
  while (c < W && (b[c] != 0) == kNonzero) ++c;
  return c;
}

// Runs in raster order: run i starts at index pos[i] (of the caller's indexing, rows `stride` apart)
// and has len[i] pixels; the runs of row r are [row_first[r], row_first[r + 1]).
template <class I>
struct Runs {
  std::vector<I> pos;
  std::vector<int32_t> len;
  std::vector<int64_t> row_first;
  std::vector<I> up;  // union-find parent; the root of a component is its raster-first run

  void clear(int64_t H) {
    pos.clear();
    len.clear();
    row_first.assign(static_cast<size_t>(H) + 1, 0);
  }
  void add(I p, int64_t n) {
    pos.push_back(p);
    len.push_back(static_cast<int32_t>(n));
  }
  I find(I x) {
    while (up[x] != x) {
      up[x] = up[up[x]];
      x = up[x];
    }
    return x;
  }
  // Joins the runs of consecutive rows that touch (4-connected, or 8-connected when conn8).
  void join(int64_t H, int64_t stride, bool conn8) {
    const int64_t nr = static_cast<int64_t>(pos.size());
    up.resize(static_cast<size_t>(nr));
    for (int64_t i = 0; i < nr; ++i) up[i] = static_cast<I>(i);
    const int64_t slack = conn8 ? 1 : 0;
    for (int64_t r = 1; r < H; ++r) {
      int64_t i = row_first[r - 1], j = row_first[r];
      const int64_t ie = row_first[r], je = row_first[r + 1];
      while (i < ie && j < je) {
        const int64_t a0 = static_cast<int64_t>(pos[i]) + stride, a1 = a0 + len[i] - 1;  // run i, one row down
        const int64_t b0 = pos[j], b1 = b0 + len[j] - 1;
        if (a0 <= b1 + slack && b0 <= a1 + slack) {
          const I x = find(static_cast<I>(i)), y = find(static_cast<I>(j));
          if (x != y) up[x < y ? y : x] = x < y ? x : y;
        }
        if (a1 < b1) {
          ++i;
        } else {
          ++j;
        }
      }
    }
  }
};

}  // namespace runs
}  // namespace nf
