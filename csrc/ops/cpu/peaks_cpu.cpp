// nucfast::peak_mask / nucfast::peak_mask_emulated: schemas and CPU kernels (peak_local_max's mask).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "core/peaks_core.h"
#include "ops/cpu/peaks_args.h"

namespace {

template <bool Emulated>
at::Tensor peak_mask_op(const at::Tensor& image, const std::optional<at::Tensor>& labels,
                        const at::Tensor& offsets, int64_t border_rows, int64_t border_cols, double threshold,
                        bool threshold_f64, bool no_trivial, int64_t nlab) {
  nf::PeakInputs in(image, labels, offsets, border_rows, border_cols, nlab, /*narrow_labels=*/!Emulated);
  at::Tensor out = at::empty(image.sizes(), image.options().dtype(at::kBool));
  uint8_t* o = reinterpret_cast<uint8_t*>(out.data_ptr<bool>());
  in.dispatch([&](auto tag) {
    using T = decltype(tag);
    if constexpr (Emulated) {
      nf::peak_mask_emulated<T>(in.args<T>(threshold, threshold_f64, no_trivial, o));
    } else {
      in.dispatch_labels([&](auto ltag) {
        using LT = decltype(ltag);
        nf::peak_mask_cpu<T, LT>(in.args<T, LT>(threshold, threshold_f64, no_trivial, o));
      });
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nucfast, m) {
  m.def(
      "peak_mask(Tensor image, Tensor? labels, Tensor offsets, int border_rows, int border_cols, float threshold, "
      "bool threshold_f64, bool no_trivial, int nlab) -> Tensor");
  m.def(
      "peak_mask_emulated(Tensor image, Tensor? labels, Tensor offsets, int border_rows, int border_cols, "
      "float threshold, bool threshold_f64, bool no_trivial, int nlab) -> Tensor");
}

TORCH_LIBRARY_IMPL(nucfast, CPU, m) {
  m.impl("peak_mask", &peak_mask_op<false>);
  m.impl("peak_mask_emulated", &peak_mask_op<true>);
}
