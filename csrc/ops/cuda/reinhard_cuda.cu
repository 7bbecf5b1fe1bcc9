// nucfast::reinhard_u8 on CUDA: the device algorithm of kernels/reinhard.h with CudaExec (current stream).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/cpu/reinhard_args.h"
#include "ops/cuda/cuda_exec.cuh"

namespace {

at::Tensor reinhard_u8_cuda(const at::Tensor& rgb, const at::Tensor& params) {
  const c10::cuda::CUDAGuard guard(rgb.device());
  nf::ReinhardInputs in(rgb, params);
  nf::reinhard::reinhard_device(nf::CudaExec(in.rgb), in.args());
  return in.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nucfast, CUDA, m) { m.impl("reinhard_u8", &reinhard_u8_cuda); }
