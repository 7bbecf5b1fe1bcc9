// Fused Reinhard stain normalisation: uint8 RGB (H, W, C) -> sRGB->LAB -> per-channel scale/shift in LAB ->
// LAB->sRGB -> float32 (3, H, W) in [0, 1], in one pass (as nucfast.stain.ReinhardNormalizer.transform with
// frozen source statistics, which is the reference).
//
// Every constant comes from Python in `p` (float32, kParams values, on the op's device): the sRGB->linear
// table of the 256 byte values, the RGB->XYZ matrix with the D65 white divided out, the XYZ->RGB matrix
// with the white multiplied in, and scale/shift per LAB channel (target_std / source_std,
// target_mean - source_mean * scale). Cube roots and the 1/2.4 power are computed by the same float code on
// the host and the device (bit-level initial guess + Newton steps; x^(5/12) = c * sqrt(sqrt(c)) with
// c = cbrt(x)), so CPU and CUDA give identical results.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"

#if defined(__CUDACC__)
#define NF_REINHARD_FN __host__ __device__ __forceinline__
#else
#define NF_REINHARD_FN inline __attribute__((always_inline))  // inlined into the CPU kernel's SIMD loop
#endif

namespace nf {
namespace reinhard {

enum : int64_t { kLut = 0, kFwd = 256, kInv = 265, kScale = 274, kShift = 277, kParams = 280 };

struct Args {
  const uint8_t* rgb;  // (n, C) pixels, C >= 3 (extra channels ignored)
  int64_t n, C;
  const float* p;  // kParams
  float* out;      // (3, n)
};

// cube root of x > 0 (normal floats): initial guess within ~5 % from the exponent bits (in float arithmetic,
// so the loop vectorises), two Halley steps (cubic convergence) -> float precision
NF_REINHARD_FN float cbrt_pos(float x) {
  // x > 0: its bits are < 2^31, so signed conversions (no branch, unlike unsigned ones) are exact enough
  const int32_t third = static_cast<int32_t>(static_cast<float>(static_cast<int32_t>(nf::bits_of(x))) * (1.0f / 3.0f));
  float y = nf::from_bits(static_cast<uint32_t>(third) + 709921077u);
  float y3 = y * y * y;
  y = y * (y3 + 2.0f * x) / (2.0f * y3 + x);
  y3 = y * y * y;
  y = y * (y3 + 2.0f * x) / (2.0f * y3 + x);
  return y;
}

NF_REINHARD_FN float lab_f(float t) {  // both sides computed: branch-free, vectorises
  const float c = cbrt_pos(t > 1e-12f ? t : 1e-12f);
  return t > 0.008856f ? c : 7.787f * t + 16.0f / 116.0f;
}

NF_REINHARD_FN float lab_finv(float t) {
  return t > 0.2068966f ? t * t * t : (t - 16.0f / 116.0f) * (1.0f / 7.787f);
}

NF_REINHARD_FN float to_srgb(float lin) {
  const float c = cbrt_pos(lin > 1e-12f ? lin : 1e-12f);
  const float hi = 1.055f * c * sqrtf(sqrtf(c)) - 0.055f;  // lin^(1/2.4) = lin^(1/3) * lin^(1/12)
  const float v = lin > 0.0031308f ? hi : 12.92f * lin;
  return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
}

NF_REINHARD_FN void pixel(const Args& a, int64_t i) {
  const float* p = a.p;
  const uint8_t* px = a.rgb + i * a.C;
  const float r = p[kLut + px[0]], g = p[kLut + px[1]], b = p[kLut + px[2]];
  const float* m = p + kFwd;
  const float fx = lab_f(m[0] * r + m[1] * g + m[2] * b);
  const float fy = lab_f(m[3] * r + m[4] * g + m[5] * b);
  const float fz = lab_f(m[6] * r + m[7] * g + m[8] * b);
  const float L = (116.0f * fy - 16.0f) * p[kScale] + p[kShift];
  const float A = (500.0f * (fx - fy)) * p[kScale + 1] + p[kShift + 1];
  const float B = (200.0f * (fy - fz)) * p[kScale + 2] + p[kShift + 2];
  const float gy = (L + 16.0f) * (1.0f / 116.0f);
  const float gx = gy + A * (1.0f / 500.0f);
  float gz = gy - B * (1.0f / 200.0f);
  gz = gz < 0.0f ? 0.0f : gz;
  const float X = lab_finv(gx), Y = lab_finv(gy), Z = lab_finv(gz);
  const float* q = p + kInv;
  const float lr = q[0] * X + q[1] * Y + q[2] * Z;
  const float lg = q[3] * X + q[4] * Y + q[5] * Z;
  const float lb = q[6] * X + q[7] * Y + q[8] * Z;
  a.out[i] = to_srgb(lr > 0.0f ? lr : 0.0f);
  a.out[a.n + i] = to_srgb(lg > 0.0f ? lg : 0.0f);
  a.out[2 * a.n + i] = to_srgb(lb > 0.0f ? lb : 0.0f);
}

struct PixelFn {
  Args a;
  NF_HOST_DEVICE void operator()(int64_t i) const { pixel(a, i); }
};

// The device algorithm: one launch over the pixels.
template <class Exec>
void reinhard_device(const Exec& ex, const Args& a) {
  ex.launch(a.n, PixelFn{a});
}

}  // namespace reinhard
}  // namespace nf
