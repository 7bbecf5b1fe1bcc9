#include "core/peaks_core.h"

#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/runs.h"
#include "kernels/exec_cpu.h"

namespace nf {
namespace {

// OpenMP loop over rows that stays serial for small images (a parallel region costs more than the work).
template <class F>
void par_rows(int64_t n, int64_t pixels, const F& f) {
#pragma omp parallel for schedule(static) if (pixels > (int64_t(1) << 15))
  for (int64_t i = 0; i < n; ++i) f(i);
}

// Which of the eight 3x3 neighbours the footprint holds, as 0/1 multipliers (k = 3 * (dr + 1) + dc + 1).
struct Ring {
  uint8_t has[9];
};

Ring ring_of(const int64_t* fdr, const int64_t* fdc, int64_t nf) {
  Ring g{};
  for (int64_t k = 0; k < nf; ++k)
    if (fdr[k] >= -1 && fdr[k] <= 1 && fdc[k] >= -1 && fdc[k] <= 1 && (fdr[k] != 0 || fdc[k] != 0))
      g.has[3 * (fdr[k] + 1) + fdc[k] + 1] = 1;
  return g;
}

// The pre-test of one row segment [c0, c1) whose 3x3 neighbours all lie in the candidate region: st[c] = 2
// (survivor: no footprint neighbour of the ring is strictly greater) or 0 (a non-maximum, or not a
// candidate). A neighbour counts only with the same label (labels mode): a pixel of another label is
// the dtype's lowest value in scikit-image's roi, which is never strictly greater. Every neighbour of
// the segment is inside the label's bounding box (it is a candidate of the same label), so the ring's
// positions are their own clamped positions: "strictly greater" here implies it in the full test.
template <class T, class LT, bool kLabels>
__attribute__((target_clones("avx512f", "avx2", "default"))) void pretest_row(const T* __restrict up, const T* __restrict mid, const T* __restrict dn, const LT* __restrict lu,
                 const LT* __restrict lm, const LT* __restrict ld, int64_t c0, int64_t c1, const Ring g,
                 uint8_t* __restrict st) {
  const bool h0 = g.has[0], h1 = g.has[1], h2 = g.has[2], h3 = g.has[3], h5 = g.has[5], h6 = g.has[6],
             h7 = g.has[7], h8 = g.has[8];
  for (int64_t c = c0; c < c1; ++c) {
    const T v = mid[c];
    bool gt;
    if constexpr (kLabels) {
      const LT L = lm[c];
      gt = (h0 & (lu[c - 1] == L) & (up[c - 1] > v)) | (h1 & (lu[c] == L) & (up[c] > v)) |
           (h2 & (lu[c + 1] == L) & (up[c + 1] > v)) | (h3 & (lm[c - 1] == L) & (mid[c - 1] > v)) |
           (h5 & (lm[c + 1] == L) & (mid[c + 1] > v)) | (h6 & (ld[c - 1] == L) & (dn[c - 1] > v)) |
           (h7 & (ld[c] == L) & (dn[c] > v)) | (h8 & (ld[c + 1] == L) & (dn[c + 1] > v));
      st[c] = (L > 0) & !gt ? 2 : 0;
    } else {
      gt = (h0 & (up[c - 1] > v)) | (h1 & (up[c] > v)) | (h2 & (up[c + 1] > v)) | (h3 & (mid[c - 1] > v)) |
           (h5 & (mid[c + 1] > v)) | (h6 & (dn[c - 1] > v)) | (h7 & (dn[c] > v)) | (h8 & (dn[c + 1] > v));
      st[c] = gt ? 0 : 2;
    }
  }
}

// The first index in [c, e) whose label differs from L, else e (uint8 labels: eight at a time).
template <class LT>
inline int64_t run_end(const LT* l, int64_t c, int64_t e, LT L) {
  if constexpr (sizeof(LT) == 1 && std::endian::native == std::endian::little) {
    const uint64_t pat = 0x0101010101010101ull * static_cast<uint8_t>(L);
    for (; c + 8 <= e; c += 8) {
      uint64_t w;
      std::memcpy(&w, l + c, 8);
      if (w != pat) return c + (__builtin_ctzll(w ^ pat) >> 3);  // little-endian: the first differing byte
    }
  }
  while (c < e && l[c] == L) ++c;
  return c;
}

// Is any byte of b[s, e) different from 2 (a non-maximum among candidates)?
inline bool any_not_survivor(const uint8_t* b, int64_t s, int64_t e) {
  constexpr uint64_t twos = 0x0202020202020202ull;
  for (; s + 8 <= e; s += 8) {
    uint64_t w;
    std::memcpy(&w, b + s, 8);
    if (w != twos) return true;
  }
  for (; s < e; ++s)
    if (b[s] != 2) return true;
  return false;
}

}  // namespace

// Three passes over rows (OpenMP):
//  1. pre-test: a candidate with a strictly greater 3x3 neighbour of the footprint (same label) is not
//     a local maximum (st = 0); the others survive (st = 2). Pixels next to the edge of the candidate
//     region survive unconditionally. The same row pass takes each label's bounding box and its "has a
//     non-maximum" flag from the label's horizontal runs.
//  2. survivors (a few per object): the shared full-footprint test (kernels/peaks.h is_local_max, clamped
//     to the bounding box), the threshold, and the flag of any survivor found not to be a maximum.
//  3. only when some label (or the image) is trivial: the shared final body for its pixels.
// The result equals the device algorithm's (peak_mask_emulated), which the tests check.
template <class T, class LT>
void peak_mask_cpu(peaks::Args<T, LT> a) {
  const int64_t H = a.H, W = a.W, n = H * W;
  if (n == 0) return;
  const bool lab = a.labels != nullptr;
  const int64_t nl = lab ? a.nlab : 1;
  std::vector<int64_t> bbox(lab ? 4 * nl : 4), flags(nl);
  a.bbox = bbox.data();
  a.flags = flags.data();
  for (int64_t l = 0; l < nl; ++l) {
    if (lab) {
      a.bbox[4 * l] = INT64_MAX;
      a.bbox[4 * l + 1] = INT64_MAX;
      a.bbox[4 * l + 2] = -1;
      a.bbox[4 * l + 3] = -1;
    }
    a.flags[l] = 0;
  }
  // candidate region [R0, R1) x [C0, C1): the whole image, or the labels outside the border band
  const int64_t R0 = lab ? a.bh : 0, R1 = lab ? H - a.bh : H, C0 = lab ? a.bw : 0, C1 = lab ? W - a.bw : W;
  const Ring g = ring_of(a.fdr, a.fdc, a.nf);
  uint8_t* out = a.out;

  // ---- pass 1 ----
  par_rows(H, n, [&](int64_t r) {
    uint8_t* st = out + r * W;
    if (r < R0 || r >= R1 || C0 >= C1) {
      std::memset(st, 0, static_cast<size_t>(W));
      return;
    }
    const LT* lm = lab ? a.labels + r * W : nullptr;
    std::memset(st, 0, static_cast<size_t>(C0));
    std::memset(st + C1, 0, static_cast<size_t>(W - C1));
    const bool inner_row = r > R0 && r + 1 < R1;
    const int64_t i0 = inner_row ? C0 + 1 : C1, i1 = inner_row ? C1 - 1 : C1;  // inner columns [i0, i1)
    for (int64_t c = C0; c < nf::min(i0, C1); ++c) st[c] = (!lab || lm[c] > 0) ? 2 : 0;
    for (int64_t c = nf::max(i1, i0); c < C1; ++c) st[c] = (!lab || lm[c] > 0) ? 2 : 0;
    if (i0 < i1) {
      const T* mid = a.img + r * W;
      if (lab)
        pretest_row<T, LT, true>(mid - W, mid, mid + W, lm - W, lm, lm + W, i0, i1, g, st);
      else
        pretest_row<T, LT, false>(mid - W, mid, mid + W, nullptr, nullptr, nullptr, i0, i1, g, st);
    }
    if (!lab) {
      if (load_relaxed(a.flags) == 0 && any_not_survivor(st, 0, W)) store_relaxed(a.flags, int64_t(1));
      return;
    }
    int64_t c = C0;
    while (c < C1) {
      const LT L = lm[c];
      const int64_t s = c;
      c = run_end(lm, c + 1, C1, L);
      if (L <= 0) continue;
      int64_t* b = a.bbox + 4 * static_cast<int64_t>(L);
      if (__atomic_load_n(b, __ATOMIC_RELAXED) > r) atomic_min(b, r);
      if (__atomic_load_n(b + 1, __ATOMIC_RELAXED) > s) atomic_min(b + 1, s);
      if (__atomic_load_n(b + 2, __ATOMIC_RELAXED) < r) atomic_max(b + 2, r);
      if (__atomic_load_n(b + 3, __ATOMIC_RELAXED) < c - 1) atomic_max(b + 3, c - 1);
      int64_t* f = a.flags + static_cast<int64_t>(L);
      if (load_relaxed(f) == 0 && any_not_survivor(st, s, c)) store_relaxed(f, int64_t(1));
    }
  });

  // ---- pass 2 ----
  par_rows(H, n, [&](int64_t r) {
    uint8_t* st = out + r * W;
    for (int64_t c = runs::skip_bytes<false>(st, 0, W); c < W; c = runs::skip_bytes<false>(st, c + 1, W)) {
      const int64_t i = r * W + c;
      const int64_t L = lab ? static_cast<int64_t>(a.labels[i]) : 0;
      const bool hi = peaks::above(a, a.img[i]);
      if (!hi && (a.no_trivial || load_relaxed(a.flags + L) != 0)) {
        st[c] = 0;
        continue;
      }
      const bool lm = peaks::is_local_max(a, i, r, c);
      if (!lm && load_relaxed(a.flags + L) == 0) store_relaxed(a.flags + L, int64_t(1));
      st[c] = (lm && hi && (lab || peaks::interior(a, r, c))) ? 1 : 0;
    }
  });

  // ---- pass 3 ----
  if (a.no_trivial) return;
  if (!lab) {
    if (a.flags[0] == 0) std::memset(out, 0, static_cast<size_t>(n));
    return;
  }
  bool any_trivial = false;
  for (int64_t l = 1; l < nl && !any_trivial; ++l) any_trivial = a.flags[l] == 0 && a.bbox[4 * l + 2] >= 0;
  if (!any_trivial) return;
  par_rows(R1 - R0, n, [&](int64_t k) {
    const int64_t r = R0 + k;
    for (int64_t c = C0, i = r * W + C0; c < C1; ++c, ++i) {
      const LT L = a.labels[i];
      if (L > 0 && a.flags[static_cast<int64_t>(L)] == 0) peaks::final_px(a, i, r, c);
    }
  });
}

template <class T>
void peak_mask_emulated(peaks::Args<T> a) {
  peaks::peak_mask_device<CpuExec, T>(CpuExec{}, a);
}

#define NF_PEAKS_INSTANTIATE(T)                              \
  template void peak_mask_cpu<T, uint8_t>(peaks::Args<T, uint8_t> a); \
  template void peak_mask_cpu<T, int32_t>(peaks::Args<T, int32_t> a); \
  template void peak_mask_cpu<T, int64_t>(peaks::Args<T, int64_t> a); \
  template void peak_mask_emulated<T>(peaks::Args<T> a);
NF_PEAKS_INSTANTIATE(float)
NF_PEAKS_INSTANTIATE(double)
NF_PEAKS_INSTANTIATE(uint8_t)
NF_PEAKS_INSTANTIATE(int8_t)
NF_PEAKS_INSTANTIATE(int16_t)
NF_PEAKS_INSTANTIATE(int32_t)
NF_PEAKS_INSTANTIATE(int64_t)
#undef NF_PEAKS_INSTANTIATE

}  // namespace nf
