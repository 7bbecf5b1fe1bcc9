// Unit tests of the percentile_sigmoid bodies and CPU core: the order-preserving float key, the rank,
// the radix select against std::sort, the device algorithm under different launch orders, and the
// 64-bit index arithmetic of the bodies on a batch of more than 2^31 elements (reserved, not allocated).
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/percentile_sigmoid.h"
#include "kernels/exec_cpu.h"
#include "kernels/percentile_sigmoid.h"
#include "nf_test.h"

using namespace nf::psig;
using nf::bits_of;
using nf::from_bits;

namespace {

template <class T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// Serial Exec running every launch backwards: the device algorithm must not depend on launch order.
struct ReverseExec : nf::CpuExec {
  template <class F>
  void launch(int64_t n, const F& f) const {
    for (int64_t i = n - 1; i >= 0; --i) f(i);
  }
};

// Exec running only the listed indices of each launch (index arithmetic on huge virtual batches).
struct SparseExec : nf::CpuExec {
  const std::vector<int64_t>* idx;
  template <class F>
  void launch(int64_t n, const F& f) const {
    for (int64_t i : *idx)
      if (i < n) f(i);
  }
};

template <class T>
std::vector<T> special_values() {
  using L = std::numeric_limits<T>;
  return {-L::infinity(), -L::max(), T(-1e10), T(-2), T(-1), -L::min(), -L::denorm_min(), T(-0.0), T(0.0),
          L::denorm_min(), L::min(), T(1e-30), T(1), T(2), T(3.5), L::max(), L::infinity()};
}

template <class T>
void check_key_order_specials() {
  const auto v = special_values<T>();
  for (size_t i = 0; i + 1 < v.size(); ++i) {
    if (v[i] == v[i + 1]) {
      NF_CHECK(float_key(v[i]) == float_key(v[i + 1]));  // -0.0 and +0.0
    } else {
      NF_CHECK(float_key(v[i]) < float_key(v[i + 1]));
    }
  }
  for (T x : v) {
    const T back = key_to_float<T>(float_key(x));
    NF_CHECK(same_bits(back, x == T(0) ? T(0) : x));  // -0.0 comes back as +0.0
  }
}

}  // namespace

NF_TEST(float_key_order_float32_sweep) {
  check_key_order_specials<float>();
  // Every 4099th bit pattern (~1M floats of all exponents and signs): key order == value order.
  std::vector<float> xs;
  for (uint64_t u = 0; u <= 0xffffffffu; u += 4099) {
    const float x = from_bits(static_cast<uint32_t>(u));
    if (x == x) xs.push_back(x);
  }
  std::sort(xs.begin(), xs.end());
  int bad = 0;
  for (size_t i = 0; i + 1 < xs.size(); ++i) {
    const bool lt = xs[i] < xs[i + 1];
    bad += lt ? !(float_key(xs[i]) < float_key(xs[i + 1])) : !(float_key(xs[i]) == float_key(xs[i + 1]));
    bad += !same_bits(key_to_float<float>(float_key(xs[i])), xs[i] == 0.0f ? 0.0f : xs[i]);
  }
  NF_CHECK_EQ(bad, 0);
  NF_CHECK(xs.size() > 1000000);
}

NF_TEST(float_key_order_float64_random) {
  check_key_order_specials<double>();
  std::mt19937_64 g(3);
  std::vector<double> xs;
  for (int i = 0; i < 200000; ++i) {
    const double x = from_bits(static_cast<uint64_t>(g()));
    if (x == x) xs.push_back(x);
  }
  std::sort(xs.begin(), xs.end());
  int bad = 0;
  for (size_t i = 0; i + 1 < xs.size(); ++i) {
    bad += (xs[i] < xs[i + 1]) != (float_key(xs[i]) < float_key(xs[i + 1]));
    bad += !same_bits(key_to_float<double>(float_key(xs[i])), xs[i]);
  }
  NF_CHECK_EQ(bad, 0);
}

NF_TEST(nan_keys_lie_outside_the_number_line) {
  const float qnan = std::numeric_limits<float>::quiet_NaN();
  NF_CHECK(float_key(qnan) > float_key(std::numeric_limits<float>::infinity()));
  NF_CHECK(float_key(-qnan) < float_key(-std::numeric_limits<float>::infinity()));
}

NF_TEST(descending_rank_never_reaches_n) {
  const double below_one = std::nextafter(1.0, 0.0);
  const int64_t ns[] = {1, 2, 3, 7, 1000, 262144, (int64_t(1) << 31) + 1, 3000000000LL, (int64_t(1) << 40) + 3,
                        (int64_t(1) << 52) + 1};
  for (int64_t n : ns) {
    NF_CHECK_EQ(descending_rank(below_one, n), n - 1);
    NF_CHECK_EQ(descending_rank(0.0, n), int64_t(0));
    NF_CHECK(descending_rank(0.5, n) == n / 2);
  }
  NF_CHECK_EQ(descending_rank(0.07, 262144), int64_t(18350));
  NF_CHECK_EQ(descending_rank(0.07, 100), int64_t(7));
  NF_CHECK_EQ(descending_rank(1.0, 10), int64_t(9));  // clamp (callers reject p >= 1)
}

template <class T>
static void check_select(std::vector<T> x, int64_t chunks) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<T> sorted = x;
  std::sort(sorted.begin(), sorted.end(), [](T a, T b) { return a > b; });
  for (double p : {0.0, 0.07, 0.31, 0.5, 0.93, std::nextafter(1.0, 0.0)}) {
    const int64_t k = descending_rank(p, n);
    T q = T(-12345);
    NF_CHECK(!select_descending(x.data(), n, k, chunks, &q));
    NF_CHECK(q == sorted[k]);
    if (q == T(0)) NF_CHECK(!std::signbit(q));
  }
}

NF_TEST(select_matches_sort) {
  std::mt19937 g(11);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::uniform_int_distribution<int> ud(-4, 4);
  for (int64_t n : {1, 2, 5, 100, 4097, 100000}) {
    std::vector<float> a(n), b(n), c(n);
    std::vector<double> d(n);
    for (int64_t i = 0; i < n; ++i) {
      a[i] = nd(g);
      b[i] = static_cast<float>(ud(g));                                    // ties
      c[i] = (i % 3 == 0) ? -0.0f : (i % 3 == 1 ? 0.0f : (i % 7 ? -1e-45f : INFINITY));  // zeros, subnormal, inf
      d[i] = static_cast<double>(nd(g)) * 1e-3 + 1.0;  // one exponent: all in the same top bucket
    }
    for (int64_t chunks : {1, 3}) {
      check_select(a, chunks);
      check_select(b, chunks);
      check_select(c, chunks);
      check_select(d, chunks);
    }
  }
}

NF_TEST(select_reports_nan) {
  std::vector<float> x(1000, 1.0f);
  x[999] = std::numeric_limits<float>::quiet_NaN();
  float q = 7.0f;
  NF_CHECK(select_descending(x.data(), 1000, 70, 1, &q));
  NF_CHECK(select_descending(x.data(), 1000, 70, 4, &q));
  NF_CHECK(q == 7.0f);
}

template <class T>
static void check_fast_vs_device(int64_t b_count, int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<double> nd(0.0, 2.0);
  std::vector<T> x(b_count * n);
  for (auto& v : x) v = static_cast<T>(std::round(nd(g) * 4) / 4);  // many ties
  std::vector<T> a1(x.size()), a2(x.size()), a3(x.size()), q1(b_count), q2(b_count), q3(b_count);
  T t1, t2, t3;
  NF_CHECK(!percentile_sigmoid_cpu<T>(x.data(), b_count, n, 0.07, 20.0, nullptr, a1.data(), q1.data(), &t1));
  NF_CHECK(!percentile_sigmoid_emulated<T>(x.data(), b_count, n, 0.07, 20.0, nullptr, a2.data(), q2.data(), &t2));
  NF_CHECK(!percentile_sigmoid_device<T>(ReverseExec{}, x.data(), b_count, n, 0.07, 20.0, nullptr, a3.data(),
                                         q3.data(), &t3));
  double s = 0.0;
  for (int64_t b = 0; b < b_count; ++b) {
    std::vector<T> img(x.begin() + b * n, x.begin() + (b + 1) * n);
    std::sort(img.begin(), img.end(), [](T u, T v) { return u > v; });
    const T want = img[descending_rank(0.07, n)];
    NF_CHECK(q1[b] == want);
    NF_CHECK(same_bits(q2[b], want == T(0) ? T(0) : want));
    NF_CHECK(same_bits(q3[b], q2[b]));
    s += static_cast<double>(want);
  }
  const T tau = static_cast<T>(s / static_cast<double>(b_count));
  NF_CHECK(same_bits(t1, tau) && same_bits(t2, tau) && same_bits(t3, tau));
  int diff = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff += !same_bits(a1[i], a2[i]) || !same_bits(a1[i], a3[i]);
    diff += !same_bits(a1[i], sigmoid_value<T>(x[i], tau, T(20.0)));
  }
  NF_CHECK_EQ(diff, 0);
}

NF_TEST(fast_cpu_equals_device_algorithm) {
  check_fast_vs_device<float>(5, 3001, 1);
  check_fast_vs_device<double>(3, 1777, 2);
  check_fast_vs_device<float>(1, 70000, 3);  // within-image parallel path
  check_fast_vs_device<float>(2, 1, 4);
}

NF_TEST(given_tau_and_nan_in_device_algorithm) {
  std::vector<float> x(600, 0.5f), a(600), q(2);
  const float tau_in = 0.25f;
  float tau = 0.0f;
  NF_CHECK(!percentile_sigmoid_emulated<float>(x.data(), 2, 300, 0.07, 4.0, &tau_in, a.data(), q.data(), &tau));
  NF_CHECK(tau == 0.25f);
  NF_CHECK(same_bits(a[17], sigmoid_value(0.5f, 0.25f, 4.0f)));
  x[599] = std::numeric_limits<float>::quiet_NaN();
  NF_CHECK(percentile_sigmoid_emulated<float>(x.data(), 2, 300, 0.07, 4.0, &tau_in, a.data(), q.data(), &tau));
  NF_CHECK(percentile_sigmoid_emulated<float>(x.data(), 2, 300, 0.07, 4.0, nullptr, a.data(), q.data(), &tau));
  NF_CHECK(percentile_sigmoid_cpu<float>(x.data(), 2, 300, 0.07, 4.0, &tau_in, a.data(), q.data(), &tau));
  NF_CHECK(percentile_sigmoid_cpu<float>(x.data(), 2, 300, 0.07, 4.0, nullptr, a.data(), q.data(), &tau));
}

NF_TEST(exp_f32_host_is_correctly_rounded_almost_always) {
  int64_t n = 0, diff = 0;
  for (uint64_t u = 0; u <= 0xffffffffu; u += 1021) {
    const float x = from_bits(static_cast<uint32_t>(u));
    if (x != x) continue;
    const float want = static_cast<float>(std::exp(static_cast<double>(x)));
    const float got = exp_f32_host(x);
    ++n;
    if (!same_bits(got, want)) {
      ++diff;
      NF_CHECK(std::fabs(static_cast<double>(got) - want) <= std::fabs(std::nextafter(want, INFINITY) - want));
    }
  }
  NF_CHECK(diff * 100000 <= n);  // at most 1e-5 of the inputs, each within one ulp
  NF_CHECK(exp_f32_host(100.0f) == INFINITY && exp_f32_host(-200.0f) == 0.0f && exp_f32_host(0.0f) == 1.0f);
  NF_CHECK(std::isnan(exp_f32_host(std::numeric_limits<float>::quiet_NaN())));
  NF_CHECK(exp_f32_host(-INFINITY) == 0.0f && exp_f32_host(INFINITY) == INFINITY);
}

NF_TEST(backward_formula) {
  std::vector<double> g = {1.0, -2.0, 0.5}, a = {0.5, 0.25, 1.0}, out(3);
  percentile_sigmoid_backward_cpu(g.data(), a.data(), 3, 20.0, out.data());
  NF_CHECK(out[0] == 5.0 && out[1] == -2.0 * 20.0 * 0.25 * 0.75 && out[2] == 0.0);
}

NF_TEST(index_arithmetic_past_2_31) {
  // hist_slot with element indices beyond 2^32.
  const int64_t i = 5000000017LL, n = 3000000000LL, b = i / n;
  NF_CHECK_EQ(b, int64_t(1));
  NF_CHECK_EQ(hist_slot(i, b, 200), (1 * kReplicas + (i % kReplicas)) * kBins + 200);

  // The bodies on a batch of 2 x 2.2e9 floats (2 x 17.6 GB reserved with MAP_NORESERVE, only touched
  // pages exist): a sparse launch runs the histogram and sigmoid bodies at indices past 2^31 and 2^32.
  const int64_t bn = 2200000000LL, total = 2 * bn;
  const size_t bytes = static_cast<size_t>(total) * sizeof(float);
  void* xm = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  void* om = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (xm == MAP_FAILED || om == MAP_FAILED) {
    std::printf("  (skipped the 2 x 17.6 GB reservation: mmap failed)\n");
    if (xm != MAP_FAILED) munmap(xm, bytes);
    if (om != MAP_FAILED) munmap(om, bytes);
    return;
  }
  float* x = static_cast<float*>(xm);
  float* out = static_cast<float*>(om);
  const std::vector<int64_t> idx = {int64_t(1) << 31, (int64_t(1) << 32) + 5, total - 1, bn - 1, 7};
  for (int64_t j : idx) x[j] = 3.0f;
  SparseExec ex;
  ex.idx = &idx;
  std::vector<int64_t> hist(2 * kReplicas * kBins, 0), tot(2 * kBins, 0), rem(2, 0);
  std::vector<uint32_t> prefix(2, 0);
  int32_t flag = 0;
  DeviceArgs<float> a{x, bn, 2, hist.data(), tot.data(), prefix.data(), rem.data(), &flag};
  ex.launch(total, HistFn<float>{a, 24, true});
  const int64_t top = static_cast<int64_t>(float_key(3.0f) >> 24);
  int64_t img0 = 0, img1 = 0;
  for (int64_t r = 0; r < kReplicas; ++r) {
    img0 += hist[(0 * kReplicas + r) * kBins + top];
    img1 += hist[(1 * kReplicas + r) * kBins + top];
  }
  NF_CHECK_EQ(img0, int64_t(3));  // indices 7, bn - 1 and 2^31 lie in image 0
  NF_CHECK_EQ(img1, int64_t(2));  // 2^32 + 5 and total - 1 in image 1
  NF_CHECK_EQ(hist[hist_slot(total - 1, 1, top)], int64_t(1));
  const float tau = 1.0f;
  ex.launch(total, SigmoidFn<float>{x, &tau, out, 2.0f, nullptr});
  for (int64_t j : idx) NF_CHECK(same_bits(out[j], sigmoid_value(3.0f, 1.0f, 2.0f)));
  NF_CHECK(out[(int64_t(1) << 32) + 4] == 0.0f);  // untouched neighbour
  munmap(xm, bytes);
  munmap(om, bytes);
}

NF_TEST_MAIN()
