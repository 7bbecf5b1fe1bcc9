// Unit tests of kernels/reinhard.h: the cube root and the 1/2.4 power against libm, the identity transform
// (scale 1, shift 0) returning the input bytes.
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/exec_cpu.h"
#include "kernels/reinhard.h"
#include "nf_test.h"

using namespace nf::reinhard;

static std::vector<float> identity_params() {
  std::vector<float> p(kParams, 0.0f);
  for (int v = 0; v < 256; ++v) {
    const double s = v / 255.0;
    p[kLut + v] = static_cast<float>(s > 0.04045 ? std::pow((s + 0.055) / 1.055, 2.4) : s / 12.92);
  }
  const double M[9] = {0.412453, 0.357580, 0.180423, 0.212671, 0.715160, 0.072169, 0.019334, 0.119193, 0.950227};
  const double W[3] = {0.95047, 1.0, 1.08883};
  // inverse of M (cofactors)
  const double det = M[0] * (M[4] * M[8] - M[5] * M[7]) - M[1] * (M[3] * M[8] - M[5] * M[6]) +
                     M[2] * (M[3] * M[7] - M[4] * M[6]);
  const double I[9] = {(M[4] * M[8] - M[5] * M[7]) / det, (M[2] * M[7] - M[1] * M[8]) / det,
                       (M[1] * M[5] - M[2] * M[4]) / det, (M[5] * M[6] - M[3] * M[8]) / det,
                       (M[0] * M[8] - M[2] * M[6]) / det, (M[2] * M[3] - M[0] * M[5]) / det,
                       (M[3] * M[7] - M[4] * M[6]) / det, (M[1] * M[6] - M[0] * M[7]) / det,
                       (M[0] * M[4] - M[1] * M[3]) / det};
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) {
      p[kFwd + 3 * r + c] = static_cast<float>(M[3 * r + c] / W[r]);
      p[kInv + 3 * r + c] = static_cast<float>(I[3 * r + c] * W[c]);
    }
  for (int k = 0; k < 3; ++k) p[kScale + k] = 1.0f;
  return p;
}

NF_TEST(cbrt_and_power_match_libm) {
  for (float x = 1e-6f; x < 2.0f; x *= 1.01f) {  // within 3 ulp
    NF_CHECK(std::fabs(cbrt_pos(x) - std::cbrt(x)) <= 3.6e-7f * std::cbrt(x));
    const float c = cbrt_pos(x);
    NF_CHECK(std::fabs(c * std::sqrt(std::sqrt(c)) - std::pow(x, 1.0f / 2.4f)) <= 1e-6f);
  }
}

NF_TEST(identity_transform_returns_the_bytes) {
  const std::vector<float> p = identity_params();
  std::vector<uint8_t> rgb;
  for (int v = 0; v < 256; v += 5)
    for (int w = 0; w < 256; w += 17) rgb.insert(rgb.end(), {uint8_t(v), uint8_t(w), uint8_t(255 - v), 7});
  const int64_t n = static_cast<int64_t>(rgb.size() / 4);
  std::vector<float> out(3 * n);
  reinhard_device(nf::CpuExec{}, Args{rgb.data(), n, 4, p.data(), out.data()});
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c) NF_CHECK(std::fabs(out[c * n + i] * 255.0f - rgb[4 * i + c]) < 0.01f);
}

NF_TEST_MAIN()
