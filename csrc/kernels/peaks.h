// peak_local_max (scikit-image 0.26 semantics): shared per-pixel bodies and the device algorithm.
//
// What scikit-image computes, per pixel p (value v), and what these bodies reproduce:
//  * no labels: p is a local maximum when v == max of the image over p + footprint, positions clamped
//    to the image (maximum_filter mode='nearest'); if EVERY pixel is a local maximum the image is
//    "trivial" and has no peaks; peaks = local maxima with v > threshold, outside the border band.
//  * labels: each label L is processed in the bounding box (roi) of its pixels outside the border band
//    (the band is zeroed in the labels before find_objects); inside the roi, pixels of other labels
//    take the dtype's lowest value; the maximum filter clamps to the roi. If every L pixel of the roi
//    is a local maximum (trivial label), the peaks are instead the "isolated" L pixels: L pixels not in
//    the binary opening (3x3 cross, border 0, roi-local) of the label mask. Peaks need v > threshold.
//    (Pixels of other labels would be peaks only for a threshold below the dtype's lowest value,
//    which the Python wrapper rejects.)
//  * footprint of size 1 (or a 1-pixel image/roi): peaks = v > threshold, no trivial rule.
// Footprint offsets arrive sorted nearest-first so that non-maxima exit after a few reads: only
// candidates are tested against the whole footprint, no maximum filter is materialised.
#pragma once

#include <cstdint>
#include <limits>

#include "common.h"

namespace nf {
namespace peaks {

template <class T, class LT = int64_t>
struct Args {
  const T* img;            // (H, W)
  const LT* labels;        // (H, W) or nullptr; label values in [.., nlab), only those > 0 count
                           // (the device algorithm takes int64 labels, the CPU path also uint8/int32)
  int64_t H, W;
  const int64_t* fdr;      // footprint row offsets (nf)
  const int64_t* fdc;      // footprint col offsets (nf)
  int64_t nf;
  int64_t bh, bw;          // border band widths (rows, cols)
  double thr;              // threshold, compared in double (cmp_f64) or in T
  bool cmp_f64;
  bool no_trivial;         // footprint of size 1: no trivial rule
  int64_t* bbox;           // labels: 4 * (nlab) [rmin, cmin, rmax, cmax] inclusive; unused otherwise
  int64_t* flags;          // per label (or [0] without labels): 1 = has a non-maximum pixel
  uint8_t* out;            // (H, W): local-max flags, then the peak mask
  int64_t nlab;            // max label + 1 (labels mode)
};

template <class T, class LT>
NF_HOST_DEVICE inline bool above(const Args<T, LT>& a, T v) {
  return a.cmp_f64 ? static_cast<double>(v) > a.thr : v > static_cast<T>(a.thr);
}

template <class T, class LT>
NF_HOST_DEVICE inline bool interior(const Args<T, LT>& a, int64_t r, int64_t c) {
  return r >= a.bh && r < a.H - a.bh && c >= a.bw && c < a.W - a.bw;
}

NF_HOST_DEVICE inline int64_t clampi(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : (x > hi ? hi : x); }

// Is pixel i (a candidate: labels mode = interior pixel with label > 0) a local maximum?
template <class T, class LT>
NF_HOST_DEVICE inline bool is_local_max(const Args<T, LT>& a, int64_t i, int64_t r, int64_t c) {
  const T v = a.img[i];
  int64_t r0 = 0, c0 = 0, r1 = a.H - 1, c1 = a.W - 1, L = 0;
  if (a.labels) {
    L = a.labels[i];
    r0 = a.bbox[4 * L];
    c0 = a.bbox[4 * L + 1];
    r1 = a.bbox[4 * L + 2];
    c1 = a.bbox[4 * L + 3];
  }
  const bool v_is_lowest = v == std::numeric_limits<T>::lowest();
  bool attained = false;
  for (int64_t k = 0; k < a.nf; ++k) {
    const int64_t q = clampi(r + a.fdr[k], r0, r1) * a.W + clampi(c + a.fdc[k], c0, c1);
    if (a.labels && a.labels[q] != L) {  // other label: the dtype's lowest value
      attained = attained || v_is_lowest;
      continue;
    }
    const T w = a.img[q];
    if (w > v) return false;
    attained = attained || (w == v);
  }
  return attained;
}

// Erosion of the label-L mask by the 3x3 cross inside roi [r0..r1] x [c0..c1], border 0.
template <class T, class LT>
NF_HOST_DEVICE inline bool eroded(const Args<T, LT>& a, int64_t r, int64_t c, int64_t L, int64_t r0, int64_t c0,
                                  int64_t r1, int64_t c1) {
  if (r <= r0 || r >= r1 || c <= c0 || c >= c1) return false;
  const int64_t q = r * a.W + c;
  return a.labels[q] == L && a.labels[q - 1] == L && a.labels[q + 1] == L && a.labels[q - a.W] == L &&
         a.labels[q + a.W] == L;
}

// L pixel not in the roi-local binary opening of the label mask.
template <class T, class LT>
NF_HOST_DEVICE inline bool isolated(const Args<T, LT>& a, int64_t i, int64_t r, int64_t c) {
  const int64_t L = a.labels[i];
  const int64_t r0 = a.bbox[4 * L], c0 = a.bbox[4 * L + 1], r1 = a.bbox[4 * L + 2], c1 = a.bbox[4 * L + 3];
  const bool opened = eroded(a, r, c, L, r0, c0, r1, c1) || eroded(a, r - 1, c, L, r0, c0, r1, c1) ||
                      eroded(a, r + 1, c, L, r0, c0, r1, c1) || eroded(a, r, c - 1, L, r0, c0, r1, c1) ||
                      eroded(a, r, c + 1, L, r0, c0, r1, c1);
  return !opened;
}

template <class T, class LT>
NF_HOST_DEVICE inline bool is_candidate(const Args<T, LT>& a, int64_t i, int64_t r, int64_t c) {
  if (!a.labels) return true;
  return a.labels[i] > 0 && interior(a, r, c);
}

// ---- bodies ---------------------------------------------------------------------------------------
template <class T>
struct InitLabelsBody {  // i over nlab
  Args<T> a;
  NF_HOST_DEVICE void operator()(int64_t l) const {
    a.bbox[4 * l] = INT64_MAX;
    a.bbox[4 * l + 1] = INT64_MAX;
    a.bbox[4 * l + 2] = -1;
    a.bbox[4 * l + 3] = -1;
    a.flags[l] = 0;
  }
};

// Pass 1 at pixel i = (r, c): local-maximum flag into out[i], "has a non-maximum" flag per label.
template <class T, class LT>
NF_HOST_DEVICE inline void local_max_px(const Args<T, LT>& a, int64_t i, int64_t r, int64_t c) {
  if (!is_candidate(a, i, r, c)) {
    a.out[i] = 0;
    return;
  }
  const int64_t L = a.labels ? a.labels[i] : 0;
  // a pixel that cannot be a peak only matters for the trivial rule, and only until a non-maximum
  // of its label has been seen
  if (!above(a, a.img[i]) && (a.no_trivial || load_relaxed(a.flags + L) != 0)) {
    a.out[i] = 0;
    return;
  }
  const bool lm = is_local_max(a, i, r, c);
  a.out[i] = lm ? 1 : 0;
  if (!lm && load_relaxed(a.flags + L) == 0) store_relaxed(a.flags + L, int64_t(1));
}

// Pass 2 at pixel i = (r, c): the peak mask.
template <class T, class LT>
NF_HOST_DEVICE inline void final_px(const Args<T, LT>& a, int64_t i, int64_t r, int64_t c) {
  if (!is_candidate(a, i, r, c)) {
    a.out[i] = 0;
    return;
  }
  const T v = a.img[i];
  bool peak;
  if (a.labels) {
    const int64_t L = a.labels[i];
    const bool trivial = !a.no_trivial && a.flags[L] == 0;
    peak = (trivial ? isolated(a, i, r, c) : a.out[i] != 0) && above(a, v);
  } else {
    const bool trivial = !a.no_trivial && a.flags[0] == 0;
    peak = !trivial && a.out[i] != 0 && above(a, v) && interior(a, r, c);
  }
  a.out[i] = peak ? 1 : 0;
}

template <class T>
struct BBoxBody {  // per pixel, atomics (device algorithm)
  Args<T> a;
  NF_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t r = i / a.W, c = i - r * a.W;
    if (!is_candidate(a, i, r, c)) return;
    const int64_t L = a.labels[i];
    atomic_min(a.bbox + 4 * L, r);
    atomic_min(a.bbox + 4 * L + 1, c);
    atomic_max(a.bbox + 4 * L + 2, r);
    atomic_max(a.bbox + 4 * L + 3, c);
  }
};

template <class T>
struct LocalMaxBody {
  Args<T> a;
  NF_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t r = i / a.W;
    local_max_px(a, i, r, i - r * a.W);
  }
};

template <class T>
struct FinalBody {
  Args<T> a;
  NF_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t r = i / a.W;
    final_px(a, i, r, i - r * a.W);
  }
};

// The device algorithm: out = skimage's peak mask (before ordering, min_distance spacing, num_peaks).
// Labels mode needs a.labels, a.nlab = max label + 1 (>= 1); a.bbox / a.flags are allocated here.
template <class Exec, class T>
void peak_mask_device(const Exec& ex, Args<T> a) {
  const int64_t n = a.H * a.W;
  if (n == 0) return;
  const int64_t nl = a.labels ? a.nlab : 1;
  auto bbox = ex.template alloc<int64_t>(4 * nl);
  auto flags = ex.template alloc<int64_t>(nl);
  a.bbox = bbox.get();
  a.flags = flags.get();
  ex.launch(nl, InitLabelsBody<T>{a});
  if (a.labels) ex.launch(n, BBoxBody<T>{a});
  ex.launch(n, LocalMaxBody<T>{a});
  ex.launch(n, FinalBody<T>{a});
}

}  // namespace peaks
}  // namespace nf
