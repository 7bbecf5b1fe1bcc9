// Tensor -> nf::peaks::Args adaptation shared by the CPU and CUDA peak_mask ops (ATen only).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

#include "kernels/peaks.h"

namespace nf {

struct PeakInputs {
  at::Tensor image, labels, dr, dc;
  int64_t bh, bw, nlab;

  PeakInputs(const at::Tensor& image_in, const std::optional<at::Tensor>& labels_in, const at::Tensor& offsets,
             int64_t border_rows, int64_t border_cols, int64_t nlab_in, bool narrow_labels = false)
      : bh(border_rows), bw(border_cols), nlab(nlab_in) {
    TORCH_CHECK(image_in.dim() == 2, "peak_mask: image must be 2-D, got ", image_in.dim(), " dimensions");
    image = image_in.contiguous();
    if (labels_in.has_value()) {
      TORCH_CHECK(labels_in->sizes() == image_in.sizes(), "peak_mask: labels has shape ", labels_in->sizes(),
                  " but image has shape ", image_in.sizes());
      const auto lt = labels_in->scalar_type();
      if (narrow_labels) {
        TORCH_CHECK(lt == at::kLong || lt == at::kInt || lt == at::kByte || lt == at::kBool,
                    "peak_mask: labels must be bool, uint8, int32 or int64, got ", lt);
      } else {
        TORCH_CHECK(lt == at::kLong, "peak_mask: labels must be int64, got ", lt);
      }
      TORCH_CHECK(labels_in->device() == image_in.device(), "peak_mask: labels and image on different devices");
      TORCH_CHECK(nlab >= 1, "peak_mask: nlab must be max label + 1 >= 1");
      labels = labels_in->contiguous();
      if (lt == at::kBool) labels = labels.view(at::kByte);
      if (lt == at::kByte || lt == at::kBool) {
        TORCH_CHECK(nlab <= 256, "peak_mask: nlab > 256 with uint8 labels");
      }
    }
    TORCH_CHECK(offsets.dim() == 2 && offsets.size(1) == 2 && offsets.size(0) >= 1 &&
                    offsets.scalar_type() == at::kLong,
                "peak_mask: offsets must be a non-empty (n, 2) int64 tensor");
    TORCH_CHECK(offsets.device() == image_in.device(), "peak_mask: offsets and image on different devices");
    TORCH_CHECK(border_rows >= 0 && border_cols >= 0, "peak_mask: border widths must be >= 0");
    dr = offsets.select(1, 0).contiguous();
    dc = offsets.select(1, 1).contiguous();
  }

  template <class T, class LT = int64_t>
  peaks::Args<T, LT> args(double thr, bool cmp_f64, bool no_trivial, uint8_t* out) const {
    peaks::Args<T, LT> a{};
    a.img = image.data_ptr<T>();
    a.labels = labels.defined() ? labels.data_ptr<LT>() : nullptr;
    a.H = image.size(0);
    a.W = image.size(1);
    a.fdr = dr.data_ptr<int64_t>();
    a.fdc = dc.data_ptr<int64_t>();
    a.nf = dr.numel();
    a.bh = bh;
    a.bw = bw;
    a.thr = thr;
    a.cmp_f64 = cmp_f64;
    a.no_trivial = no_trivial;
    a.out = out;
    a.nlab = labels.defined() ? nlab : 1;
    return a;
  }

  // f(LT{}) for the labels' element type (int64 without labels).
  template <class F>
  void dispatch_labels(F&& f) const {
    if (!labels.defined()) return f(int64_t{});
    switch (labels.scalar_type()) {
      case at::kByte: return f(uint8_t{});
      case at::kInt: return f(int32_t{});
      default: return f(int64_t{});
    }
  }

  template <class F>
  void dispatch(F&& f) const {
    switch (image.scalar_type()) {
      case at::kFloat: return f(float{});
      case at::kDouble: return f(double{});
      case at::kByte: return f(uint8_t{});
      case at::kChar: return f(int8_t{});
      case at::kShort: return f(int16_t{});
      case at::kInt: return f(int32_t{});
      case at::kLong: return f(int64_t{});
      default: TORCH_CHECK(false, "peak_mask: unsupported image dtype ", image.scalar_type());
    }
  }
};

}  // namespace nf
