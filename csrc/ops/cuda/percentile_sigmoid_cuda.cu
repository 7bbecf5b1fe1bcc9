// nucfast::percentile_sigmoid (+ _backward): CUDA kernels. The device algorithm of
// csrc/kernels/percentile_sigmoid.h (multi-block radix select with per-image global histograms, then a
// fused sigmoid launch) instantiated with nf::CudaExec; the tests run the same algorithm on the CPU as
// nucfast::percentile_sigmoid_emulated. One host synchronisation per forward call: the NaN flag.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../../kernels/percentile_sigmoid.h"
#include "cuda_exec.cuh"
#include "ops/cpu/percentile_sigmoid_args.h"

namespace {

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& logits, double p, double r,
                                                const std::optional<at::Tensor>& tau) {
  const at::Tensor tau_in = nf::psig::check_forward_args(logits, p, tau);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor x = logits.contiguous();
  const int64_t b_count = x.size(0), n = x.numel() / b_count;
  at::Tensor out = at::empty_like(x);
  at::Tensor tau_out = at::empty({}, x.options());
  at::Tensor q = at::empty({b_count}, x.options());
  const nf::CudaExec ex(x);
  bool nan = false;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "percentile_sigmoid_cuda", [&] {
    nan = nf::psig::percentile_sigmoid_device<scalar_t>(
        ex, x.const_data_ptr<scalar_t>(), b_count, n, p, r,
        tau_in.defined() ? tau_in.const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(),
        q.mutable_data_ptr<scalar_t>(), tau_out.mutable_data_ptr<scalar_t>());
  });
  TORCH_CHECK_VALUE(!nan, "logits contains NaN values");
  return {out, tau_out};
}

at::Tensor backward_cuda(const at::Tensor& grad, const at::Tensor& a, double r) {
  nf::psig::check_backward_args(grad, a);
  const c10::cuda::CUDAGuard guard(a.device());
  const at::Tensor g = grad.contiguous(), ac = a.contiguous();
  at::Tensor out = at::empty_like(ac);
  const nf::CudaExec ex(ac);
  AT_DISPATCH_FLOATING_TYPES(ac.scalar_type(), "percentile_sigmoid_backward_cuda", [&] {
    nf::psig::percentile_sigmoid_backward_device<scalar_t>(ex, g.const_data_ptr<scalar_t>(),
                                                           ac.const_data_ptr<scalar_t>(), ac.numel(), r,
                                                           out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nucfast, CUDA, m) {
  m.impl("percentile_sigmoid", &forward_cuda);
  m.impl("percentile_sigmoid_backward", &backward_cuda);
}
