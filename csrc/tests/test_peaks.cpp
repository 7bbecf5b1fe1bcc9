// C++ unit tests of peak_mask_cpu (the 3x3 pre-test, survivors' full test, trivial labels) against a
// brute-force transcription of scikit-image's per-label maximum filter, and against the device
// algorithm (peak_mask_emulated), on random images with plateaus, every label type and odd footprints.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/peaks_core.h"
#include "nf_test.h"

namespace {

struct Fp {
  std::vector<int64_t> dr, dc;
};

Fp disk(int r) {
  Fp f;
  for (int a = -r; a <= r; ++a)
    for (int b = -r; b <= r; ++b)
      if (a * a + b * b <= r * r) {
        f.dr.push_back(a);
        f.dc.push_back(b);
      }
  return f;
}

// scikit-image 0.26 peak_local_max's mask, literally: per label, roi = bounding box of its pixels outside
// the band; other pixels of the roi = lowest; maximum filter clamped to the roi; trivial -> isolated pixels.
std::vector<uint8_t> brute(const std::vector<double>& img, const std::vector<int64_t>* lab, int64_t H, int64_t W,
                           const Fp& f, int64_t bh, int64_t bw, double thr) {
  const int64_t n = H * W;
  std::vector<uint8_t> out(n, 0);
  const bool no_trivial = f.dr.size() == 1 || (!lab && n == 1);
  const double lowest = std::numeric_limits<double>::lowest();
  auto in_band = [&](int64_t r, int64_t c) { return r < bh || r >= H - bh || c < bw || c >= W - bw; };
  int64_t nl = 1;
  if (lab)
    for (int64_t i = 0; i < n; ++i) nl = std::max(nl, (*lab)[i] + 1);
  for (int64_t L = lab ? 1 : 0; L < nl; ++L) {
    auto mine = [&](int64_t r, int64_t c) { return !lab || ((*lab)[r * W + c] == L && !in_band(r, c)); };
    int64_t r0 = H, c0 = W, r1 = -1, c1 = -1;
    for (int64_t r = 0; r < H; ++r)
      for (int64_t c = 0; c < W; ++c)
        if (mine(r, c)) {
          r0 = std::min(r0, r), r1 = std::max(r1, r), c0 = std::min(c0, c), c1 = std::max(c1, c);
        }
    if (r1 < 0) continue;
    std::vector<uint8_t> lm(n, 0);
    bool all_max = true;
    for (int64_t r = r0; r <= r1; ++r)
      for (int64_t c = c0; c <= c1; ++c) {
        const double v = mine(r, c) ? img[r * W + c] : lowest;
        double m = lowest;
        for (size_t k = 0; k < f.dr.size(); ++k) {
          const int64_t rr = std::clamp(r + f.dr[k], r0, r1), cc = std::clamp(c + f.dc[k], c0, c1);
          m = std::max(m, mine(rr, cc) ? img[rr * W + cc] : lowest);
        }
        if (mine(r, c)) {
          lm[r * W + c] = v == m;
          all_max = all_max && v == m;
        }
      }
    auto er = [&](int64_t r, int64_t c) {
      return r > r0 && r < r1 && c > c0 && c < c1 && mine(r, c) && mine(r - 1, c) && mine(r + 1, c) &&
             mine(r, c - 1) && mine(r, c + 1);
    };
    for (int64_t r = r0; r <= r1; ++r)
      for (int64_t c = c0; c <= c1; ++c) {
        if (!mine(r, c) || !(img[r * W + c] > thr)) continue;
        const bool trivial = all_max && !no_trivial;
        bool p;
        if (!lab)
          p = !trivial && lm[r * W + c] && !in_band(r, c);
        else if (trivial)
          p = !(er(r, c) || er(r - 1, c) || er(r + 1, c) || er(r, c - 1) || er(r, c + 1));
        else
          p = lm[r * W + c];
        if (p) out[r * W + c] = 1;
      }
  }
  return out;
}

template <class LT>
std::vector<uint8_t> fast(const std::vector<double>& img, const std::vector<int64_t>* lab, int64_t H, int64_t W,
                          const Fp& f, int64_t bh, int64_t bw, double thr, int64_t nlab, bool emulated) {
  std::vector<LT> l;
  if (lab) l.assign(lab->begin(), lab->end());
  std::vector<uint8_t> out(H * W, 7);
  nf::peaks::Args<double, LT> a{};
  a.img = img.data();
  a.labels = lab ? l.data() : nullptr;
  a.H = H, a.W = W;
  a.fdr = f.dr.data(), a.fdc = f.dc.data(), a.nf = static_cast<int64_t>(f.dr.size());
  a.bh = bh, a.bw = bw, a.thr = thr, a.cmp_f64 = true;
  a.no_trivial = f.dr.size() == 1 || (!lab && H * W == 1);
  a.out = out.data();
  a.nlab = nlab;
  if constexpr (std::is_same_v<LT, int64_t>) {
    if (emulated) {
      nf::peak_mask_emulated<double>(a);
      return out;
    }
  }
  nf::peak_mask_cpu<double, LT>(a);
  return out;
}

}  // namespace

NF_TEST(peaks_fast_equals_brute_and_device_on_random_inputs) {
  std::mt19937_64 rng(7);
  const Fp fps[] = {disk(1), disk(2), disk(7), Fp{{0}, {0}}, Fp{{-1, 0, 1}, {1, 0, -1}}, Fp{{0, 0}, {-1, 2}}};
  int bad = 0;
  for (int it = 0; it < 400; ++it) {
    const int64_t H = 1 + rng() % 23, W = 1 + rng() % 29, n = H * W;
    const int levels = 1 + rng() % 6;
    std::vector<double> img(n);
    for (auto& v : img) v = levels == 6 ? std::uniform_real_distribution<double>(0, 1)(rng) : double(rng() % levels);
    std::vector<int64_t> lab(n);
    const int nlab_used = 1 + rng() % 5;
    for (auto& v : lab) v = (rng() % 10 < 7) ? int64_t(rng() % nlab_used) + (rng() % 4 == 0 ? 0 : 1) : 0;
    if (rng() % 3 == 0)  // blocky labels: long runs, plateaus inside a label
      for (int64_t i = 0; i < n; ++i) lab[i] = lab[(i / W / 4 * 4) * W + i % W / 5 * 5];
    const Fp& f = fps[rng() % 6];
    const int64_t bh = rng() % 3, bw = rng() % 3;
    const double thr = (rng() % 2) ? -1.0 : 0.5;
    const bool use_lab = rng() % 4 != 0;
    const auto* lp = use_lab ? &lab : nullptr;
    const auto ref = brute(img, lp, H, W, f, bh, bw, thr);
    const int64_t nl = nlab_used + 2;
    bad += fast<int64_t>(img, lp, H, W, f, bh, bw, thr, nl, false) != ref;
    bad += fast<int64_t>(img, lp, H, W, f, bh, bw, thr, nl, true) != ref;
    bad += fast<int32_t>(img, lp, H, W, f, bh, bw, thr, nl, false) != ref;
    bad += fast<uint8_t>(img, lp, H, W, f, bh, bw, thr, nl, false) != ref;
  }
  NF_CHECK_EQ(bad, 0);
}

NF_TEST(peaks_plateau_label_is_trivial_and_keeps_isolated_pixels) {
  // one flat 5x5 label (trivial: its peaks are the pixels outside its opening by the 3x3 cross, the four
  // corners) and one single-pixel label (isolated: a peak)
  const int64_t H = 12, W = 12;
  std::vector<double> img(H * W, 1.0);
  std::vector<int64_t> lab(H * W, 0);
  for (int r = 2; r < 7; ++r)
    for (int c = 2; c < 7; ++c) lab[r * W + c] = 1;
  lab[9 * W + 9] = 2;
  const Fp f = disk(2);
  const auto out = fast<uint8_t>(img, &lab, H, W, f, 1, 1, 0.0, 3, false);
  NF_CHECK_EQ(int(out[9 * W + 9]), 1);
  int inside = 0;
  for (int64_t i = 0; i < H * W; ++i) inside += lab[i] == 1 && out[i];
  NF_CHECK_EQ(inside, 4);
  NF_CHECK(out[2 * W + 2] && out[2 * W + 6] && out[6 * W + 2] && out[6 * W + 6]);
  NF_CHECK(out == brute(img, &lab, H, W, f, 1, 1, 0.0));
}

NF_TEST_MAIN()
