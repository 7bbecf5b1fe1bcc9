// Compressed sigmoid with a batch percentile threshold (REFERENCE.md section 1): shared bodies and the
// device algorithm.
//
//   q_b = the value at rank k = floor(p * N) of image b's N logits sorted descending
//   tau = mean_b q_b          (accumulated in double over b = 0..B-1 in order, divided by B, rounded to T)
//   A   = 1 / (1 + exp(-r (a - tau)))   evaluated in T: d = a - tau; t = T(r) * d; A = 1 / (1 + exp(-t))
//
// Selection works on the order-preserving unsigned key of the float (`float_key`): for non-NaN values
// x < y  <=>  key(x) < key(y), with -0.0 mapped to the key of +0.0 (they compare equal, so a sort may put
// either first; we always return +0.0). A value at descending rank k is the key at ascending rank
// N-1-k, found digit by digit with histograms (radix select) -- exact, no sorting, no float compares.
//
// Device algorithm (`percentile_sigmoid_device`): NOT one block per image. Every digit pass is a launch
// over all B*N elements that adds 1 to a per-image global histogram (replicated R times, slot i % R, to
// spread atomic contention on the hot bins), then a launch over B*BINS folds the replicas, then a launch
// over B picks each image's bucket (prefix of the key and remaining rank). 8-bit digits: 4 passes for
// float32, 8 for float64. A launch over one element averages the B quantiles, and a final launch over
// B*N evaluates the sigmoid. NaNs raise a flag in the first pass (or the sigmoid pass when tau is given).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common.h"

namespace nf {
namespace psig {

// ---- order-preserving float keys -------------------------------------------------------------------
template <class T>
struct KeyTraits;
template <>
struct KeyTraits<float> {
  using K = uint32_t;
  static constexpr int kBits = 32;
};
template <>
struct KeyTraits<double> {
  using K = uint64_t;
  static constexpr int kBits = 64;
};

// Monotone key: negative floats have all bits flipped (larger magnitude -> smaller key), non-negative
// ones get the sign bit set. -0.0 is canonicalised to +0.0 first. NaNs get keys above +inf (positive
// sign) or below -inf; callers reject NaN inputs.
// Branch-free (random signs would mispredict): x + 0 turns -0.0 into +0.0 and leaves every other value,
// NaN included, unchanged; the mask is all ones for negative values and just the sign bit otherwise.
template <class T>
NF_HOST_DEVICE inline typename KeyTraits<T>::K float_key(T x) {
  using K = typename KeyTraits<T>::K;
  constexpr int top = KeyTraits<T>::kBits - 1;
  const K u = bits_of(x + T(0));
  const K mask = K(K(0) - (u >> top)) | (K(1) << top);
  return u ^ mask;
}

template <class T>
NF_HOST_DEVICE inline T key_to_float(typename KeyTraits<T>::K k) {
  using K = typename KeyTraits<T>::K;
  constexpr K sign = K(1) << (KeyTraits<T>::kBits - 1);
  return from_bits((k & sign) ? K(k & ~sign) : K(~k));
}

// ---- rank ----------------------------------------------------------------------------------------------
// Descending rank floor(p * N) for 0 <= p < 1 (validated by the caller). In double arithmetic
// fl(p * N) <= N - 1 for every p < 1 and N < 2^53 (p <= 1 - 2^-53, so p*N is at least N*2^-53 below N,
// at least half an ulp of N's binade; it can't round up to N): the clamp only guards huge N.
NF_HOST_DEVICE inline int64_t descending_rank(double p, int64_t n) {
  const double f = floor(p * static_cast<double>(n));
  int64_t k = f <= 0.0 ? int64_t(0) : static_cast<int64_t>(f);
  return k > n - 1 ? n - 1 : k;
}

// ---- sigmoid bodies ------------------------------------------------------------------------------------
// Same expression and order as the torch reference `1 / (1 + torch.exp(-r * (a - tau)))` in dtype T
// (torch casts the Python scalar r to T). Overflow of exp gives A = 0, as in the reference.
// exp for float32 on the host, vectorisable (no table, no call): evaluated in double (argument reduction
// x = k ln2 + r, |r| <= ln2/2, degree-10 Taylor polynomial, relative error < 1e-13) and rounded once to
// float, so it returns the correctly rounded expf(x) except when exp(x) lies within ~1e-13 relative of a
// rounding boundary (then it may differ from a correctly rounded expf by 1 ulp). Overflow gives +inf,
// tiny results round to subnormals or 0, NaN propagates.
inline float exp_f32_host(float xf) {
  // Clamp |x| to 128 (exp already rounds to 0 / inf in float there, and 2^k stays a normal double),
  // in the integer domain: float compares with NaN semantics keep GCC from vectorising the loop.
  int32_t u;
  std::memcpy(&u, &xf, sizeof u);
  const int32_t mag = u & 0x7fffffff, sgn = u & int32_t(0x80000000u);
  const int32_t clamped = (mag > 0x43000000 && mag <= 0x7f800000) ? (sgn | 0x43000000) : u;  // 128.0f; NaN kept
  float xc;
  std::memcpy(&xc, &clamped, sizeof xc);
  const double x = static_cast<double>(xc);
  const double shifter = 0x1.8p52;
  const double kd = x * 0x1.71547652b82fep0 + shifter;  // round(x / ln2) in the low mantissa bits
  uint64_t ki;
  std::memcpy(&ki, &kd, sizeof ki);
  const double k = kd - shifter;
  const double r = (x - k * 0x1.62e42fefa3800p-1) - k * 0x1.ef35793c76730p-45;  // ln2 split hi + lo
  double p = 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const uint64_t sbits = (ki + 1023u) << 52;  // 2^k, |k| <= 185 here
  double scale;
  std::memcpy(&scale, &sbits, sizeof scale);
  return static_cast<float>(p * scale);
}

NF_HOST_DEVICE inline float exp_t(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);  // CUDA's expf: max 2 ulp error (without --use_fast_math)
#else
  return exp_f32_host(x);
#endif
}
NF_HOST_DEVICE inline double exp_t(double x) { return exp(x); }

template <class T>
NF_HOST_DEVICE inline T sigmoid_value(T a, T tau, T r) {
  const T t = r * (a - tau);
  return T(1) / (T(1) + exp_t(-t));
}

// grad_a = grad_A * r * A * (1 - A), left to right, in T (tau is detached).
template <class T>
NF_HOST_DEVICE inline T sigmoid_grad(T g, T a_out, T r) {
  return g * r * a_out * (T(1) - a_out);
}

// ---- index arithmetic (64-bit) -------------------------------------------------------------------------
constexpr int kDigitBits = 8;
constexpr int64_t kBins = int64_t(1) << kDigitBits;
constexpr int64_t kReplicas = 16;

// Slot of element i (image b = i / n) in the replicated per-image histograms [B][R][BINS].
NF_HOST_DEVICE inline int64_t hist_slot(int64_t i, int64_t b, int64_t bin) {
  return (b * kReplicas + i % kReplicas) * kBins + bin;
}

// ---- device-algorithm functors -------------------------------------------------------------------------
template <class T>
struct DeviceArgs {
  using K = typename KeyTraits<T>::K;
  const T* x;        // [B*N], contiguous
  int64_t n;         // elements per image
  int64_t b_count;   // images
  int64_t* hist;     // [B][R][BINS]
  int64_t* total;    // [B][BINS]
  K* prefix;         // [B] key bits decided so far
  int64_t* rem;      // [B] remaining ascending rank within the prefix
  int32_t* nan_flag; // [1]
};

template <class T>
struct ZeroFn {
  int64_t* p;
  NF_HOST_DEVICE void operator()(int64_t i) const { p[i] = 0; }
};

template <class V>
struct SetFn {
  V* p;
  V v;
  NF_HOST_DEVICE void operator()(int64_t) const { *p = v; }
};

template <class T>
struct CopyFn {
  const T* src;
  T* dst;
  NF_HOST_DEVICE void operator()(int64_t) const { *dst = *src; }
};

template <class T>
struct InitFn {
  DeviceArgs<T> a;
  int64_t k_asc;
  NF_HOST_DEVICE void operator()(int64_t b) const {
    a.prefix[b] = 0;
    a.rem[b] = k_asc;
  }
};

// One digit pass: count the digit at `shift` of every element whose higher digits match its image's prefix.
template <class T>
struct HistFn {
  DeviceArgs<T> a;
  int shift;       // bit position of this digit
  bool first;      // first pass: every element matches; also checks for NaN
  NF_HOST_DEVICE void operator()(int64_t i) const {
    using K = typename KeyTraits<T>::K;
    const T v = a.x[i];
    const int64_t b = i / a.n;
    if (first) {
      if (v != v) nf::store_relaxed(a.nan_flag, int32_t(1));
    }
    const K key = float_key(v);
    const int hi = shift + kDigitBits;  // bits at and above `hi` must match the prefix
    if (hi < KeyTraits<T>::kBits && ((key ^ a.prefix[b]) >> hi) != 0) return;
    const int64_t bin = static_cast<int64_t>((key >> shift) & K(kBins - 1));
    nf::atomic_add(&a.hist[hist_slot(i, b, bin)], int64_t(1));
  }
};

// Fold the replicas: one thread per (image, bin).
template <class T>
struct FoldFn {
  DeviceArgs<T> a;
  NF_HOST_DEVICE void operator()(int64_t j) const {
    const int64_t b = j / kBins, bin = j % kBins;
    int64_t s = 0;
    for (int64_t r = 0; r < kReplicas; ++r) s += a.hist[(b * kReplicas + r) * kBins + bin];
    a.total[j] = s;
  }
};

// Pick the bucket holding the remaining rank: one thread per image.
template <class T>
struct PickFn {
  DeviceArgs<T> a;
  int shift;
  NF_HOST_DEVICE void operator()(int64_t b) const {
    using K = typename KeyTraits<T>::K;
    int64_t r = a.rem[b];
    int64_t bin = 0;
    for (; bin < kBins - 1; ++bin) {
      const int64_t c = a.total[b * kBins + bin];
      if (r < c) break;
      r -= c;
    }
    a.rem[b] = r;
    a.prefix[b] = a.prefix[b] | (K(bin) << shift);
  }
};

// tau = (sum_b q_b in double, in order) / B, rounded to T; q_b written too.
template <class T>
struct MeanFn {
  using K = typename KeyTraits<T>::K;
  const K* prefix;
  int64_t b_count;
  T* q;
  T* tau;
  NF_HOST_DEVICE void operator()(int64_t) const {
    double s = 0.0;
    for (int64_t b = 0; b < b_count; ++b) {
      const T v = key_to_float<T>(prefix[b]);
      q[b] = v;
      s += static_cast<double>(v);
    }
    *tau = static_cast<T>(s / static_cast<double>(b_count));
  }
};

template <class T>
struct SigmoidFn {
  const T* x;
  const T* tau;
  T* out;
  T r;
  int32_t* nan_flag;  // non-null: also check for NaN (tau given, no selection pass ran)
  NF_HOST_DEVICE void operator()(int64_t i) const {
    const T v = x[i];
    if (nan_flag != nullptr && v != v) nf::store_relaxed(nan_flag, int32_t(1));
    out[i] = sigmoid_value(v, *tau, r);
  }
};

template <class T>
struct SigmoidGradFn {
  const T* g;
  const T* a_out;
  T* out;
  T r;
  NF_HOST_DEVICE void operator()(int64_t i) const { out[i] = sigmoid_grad(g[i], a_out[i], r); }
};

// ---- the device algorithm ------------------------------------------------------------------------------
// x: [B*N] device pointer; out: [B*N]; q: [B] (per-image quantiles, written when tau_in is null);
// tau_out: [1]; tau_in: [1] device pointer or null (then tau is the batch mean of the quantiles).
// Returns true when x contains a NaN (outputs are then meaningless). Requires B >= 1, N >= 1, 0 <= p < 1.
template <class T, class Exec>
bool percentile_sigmoid_device(const Exec& ex, const T* x, int64_t b_count, int64_t n, double p, double r,
                               const T* tau_in, T* out, T* q, T* tau_out) {
  using K = typename KeyTraits<T>::K;
  auto flag = ex.template alloc<int32_t>(1);
  ex.launch(1, SetFn<int32_t>{flag.get(), 0});
  const int64_t total_n = b_count * n;
  const T* tau_ptr = tau_in;
  if (tau_in == nullptr) {
    auto hist = ex.template alloc<int64_t>(b_count * kReplicas * kBins);
    auto total = ex.template alloc<int64_t>(b_count * kBins);
    auto prefix = ex.template alloc<K>(b_count);
    auto rem = ex.template alloc<int64_t>(b_count);
    DeviceArgs<T> a{x, n, b_count, hist.get(), total.get(), prefix.get(), rem.get(), flag.get()};
    const int64_t k_asc = n - 1 - descending_rank(p, n);
    ex.launch(b_count, InitFn<T>{a, k_asc});
    for (int shift = KeyTraits<T>::kBits - kDigitBits; shift >= 0; shift -= kDigitBits) {
      ex.launch(b_count * kReplicas * kBins, ZeroFn<T>{a.hist});
      ex.launch(total_n, HistFn<T>{a, shift, shift == KeyTraits<T>::kBits - kDigitBits});
      ex.launch(b_count * kBins, FoldFn<T>{a});
      ex.launch(b_count, PickFn<T>{a, shift});
    }
    ex.launch(1, MeanFn<T>{a.prefix, b_count, q, tau_out});
    tau_ptr = tau_out;
  } else {
    ex.launch(1, CopyFn<T>{tau_in, tau_out});
  }
  ex.launch(total_n, SigmoidFn<T>{x, tau_ptr, out, static_cast<T>(r), tau_in != nullptr ? flag.get() : nullptr});
  return ex.read(flag.get()) != 0;
}

template <class T, class Exec>
void percentile_sigmoid_backward_device(const Exec& ex, const T* g, const T* a_out, int64_t n, double r, T* out) {
  ex.launch(n, SigmoidGradFn<T>{g, a_out, out, static_cast<T>(r)});
}

}  // namespace psig
}  // namespace nf
