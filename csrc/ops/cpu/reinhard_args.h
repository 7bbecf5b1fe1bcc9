// Argument checks and tensor adaptation shared by the CPU and CUDA nucfast::reinhard_u8 kernels.
#pragma once

#include <ATen/ATen.h>

#include "kernels/reinhard.h"

namespace nf {

struct ReinhardInputs {
  at::Tensor rgb, params, out;

  ReinhardInputs(const at::Tensor& rgb_, const at::Tensor& params_) {
    TORCH_CHECK(rgb_.scalar_type() == at::kByte, "reinhard_u8: rgb must be uint8, got ", rgb_.scalar_type());
    TORCH_CHECK(rgb_.dim() == 3 && (rgb_.size(2) == 3 || rgb_.size(2) == 4),
                "reinhard_u8: rgb must be (H, W, 3) or (H, W, 4), got ", rgb_.sizes());
    TORCH_CHECK(params_.scalar_type() == at::kFloat && params_.dim() == 1 && params_.numel() == reinhard::kParams,
                "reinhard_u8: params must be float32 of length ", reinhard::kParams);
    TORCH_CHECK(params_.device() == rgb_.device(), "reinhard_u8: params must be on the device of rgb");
    rgb = rgb_.contiguous();
    params = params_.contiguous();
    out = at::empty({3, rgb.size(0), rgb.size(1)}, rgb.options().dtype(at::kFloat));
  }

  reinhard::Args args() const {
    return {rgb.const_data_ptr<uint8_t>(), rgb.size(0) * rgb.size(1), rgb.size(2), params.const_data_ptr<float>(),
            out.mutable_data_ptr<float>()};
  }
};

}  // namespace nf
