// Argument checks shared by the CPU and CUDA percentile_sigmoid ops (ATen only).
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace nf::psig {

// Forward: logits (B, ...) float32/float64 with >= 1 element per image, p in [0, 1), optional scalar tau of
// the same dtype and device. Returns tau as a contiguous 0-dim tensor (undefined when absent).
inline at::Tensor check_forward_args(const at::Tensor& logits, double p, const std::optional<at::Tensor>& tau) {
  TORCH_CHECK_VALUE(logits.dim() >= 1, "logits must have a leading batch dimension, got a 0-dim tensor");
  TORCH_CHECK_TYPE(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble,
                   "logits must be float32 or float64, got ", logits.scalar_type());
  TORCH_CHECK_VALUE(logits.size(0) >= 1, "logits must hold at least one image, got shape ", logits.sizes());
  TORCH_CHECK_VALUE(logits.numel() >= 1, "logits must hold at least one element per image, got shape ",
                    logits.sizes());
  TORCH_CHECK_VALUE(p >= 0.0 && p < 1.0, "p must be in [0, 1), got ", p);
  if (!tau.has_value()) return {};
  TORCH_CHECK_VALUE(tau->numel() == 1, "tau must hold exactly one value, got shape ", tau->sizes());
  TORCH_CHECK_TYPE(tau->scalar_type() == logits.scalar_type(), "tau must have the dtype of logits (",
                   logits.scalar_type(), "), got ", tau->scalar_type());
  TORCH_CHECK_VALUE(tau->device() == logits.device(), "tau is on ", tau->device(), " but logits is on ",
                    logits.device());
  return tau->reshape({}).contiguous();
}

// Backward: grad_A and A of one shape, dtype (float32/float64) and device.
inline void check_backward_args(const at::Tensor& grad, const at::Tensor& a) {
  TORCH_CHECK_VALUE(grad.sizes() == a.sizes(), "grad_A has shape ", grad.sizes(), " but A has shape ", a.sizes());
  TORCH_CHECK_TYPE(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
                   "A must be float32 or float64, got ", a.scalar_type());
  TORCH_CHECK_TYPE(grad.scalar_type() == a.scalar_type(), "grad_A must have the dtype of A (", a.scalar_type(),
                   "), got ", grad.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == a.device(), "grad_A is on ", grad.device(), " but A is on ", a.device());
}

}  // namespace nf::psig
