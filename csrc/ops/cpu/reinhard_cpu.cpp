// nucfast::reinhard_u8: schema and CPU kernel (the per-pixel body of kernels/reinhard.h; one pass, OpenMP
// over pixels, SIMD clones).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/cpu/reinhard_args.h"

namespace {

// The same per-pixel body as the device algorithm, in a loop the compiler vectorises, cloned per ISA and
// picked at load time (-std=c++20 keeps -ffp-contract=off: every clone rounds like the scalar code).
__attribute__((target_clones("avx512f", "avx2", "default"))) void reinhard_loop(const nf::reinhard::Args a) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < a.n; ++i) nf::reinhard::pixel(a, i);
}

at::Tensor reinhard_u8_cpu(const at::Tensor& rgb, const at::Tensor& params) {
  nf::ReinhardInputs in(rgb, params);
  reinhard_loop(in.args());
  return in.out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nucfast, m) { m.def("reinhard_u8(Tensor rgb, Tensor params) -> Tensor"); }

TORCH_LIBRARY_IMPL(nucfast, CPU, m) { m.impl("reinhard_u8", &reinhard_u8_cpu); }
