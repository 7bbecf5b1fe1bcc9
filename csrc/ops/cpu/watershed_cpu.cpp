// nucfast::watershed (exact CPU flood; CUDA kernel in ops/cuda/watershed_cuda.cu) and
// nucfast::watershed_emulated (the CUDA algorithm run on the CPU through nf::CpuExec).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "core/watershed.h"
#include "ops/cpu/watershed_args.h"

namespace {

at::Tensor mask_bytes(const std::optional<at::Tensor>& mask) {
  if (!mask.has_value()) return at::Tensor();
  return mask->contiguous().view(at::kByte);
}

// The value checks of the CPU op (a pass over the data, cheaper than torch reductions): ValueError.
template <class T>
bool any_negative(const T* p, int64_t n) {
  bool neg = false;
  for (int64_t i = 0; i < n; ++i) neg |= p[i] < 0;
  return neg;
}

void check_values(const at::Tensor& img, const at::Tensor& mk) {
  const double* ip = img.data_ptr<double>();
  const int64_t n = img.numel();
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) nan |= ip[i] != ip[i];
  TORCH_CHECK_VALUE(!nan, "image contains NaN values");
  const bool neg = mk.scalar_type() == at::kInt ? any_negative(mk.data_ptr<int32_t>(), n)
                                                : any_negative(mk.data_ptr<int64_t>(), n);
  TORCH_CHECK_VALUE(!neg, "markers must be >= 0 (0 = not a marker)");
}

at::Tensor watershed_cpu_op(const at::Tensor& image, const at::Tensor& markers, const std::optional<at::Tensor>& mask,
                            int64_t connectivity, bool watershed_line) {
  nf::check_watershed_args(image, markers, mask, connectivity);
  const at::Tensor img = image.contiguous();
  const at::Tensor mk = markers.contiguous();
  check_values(img, mk);
  const at::Tensor msk = mask_bytes(mask);
  const int64_t H = img.size(0), W = img.size(1);
  at::Tensor out = at::empty({H, W}, mk.options());
  if (H * W == 0) return out;
  const uint8_t* mp = msk.defined() ? msk.data_ptr<uint8_t>() : nullptr;
  if (mk.scalar_type() == at::kInt) {
    nf::watershed_cpu<int32_t>(img.data_ptr<double>(), mk.data_ptr<int32_t>(), mp, H, W,
                               static_cast<int>(connectivity), watershed_line, out.data_ptr<int32_t>());
  } else {
    nf::watershed_cpu<int64_t>(img.data_ptr<double>(), mk.data_ptr<int64_t>(), mp, H, W,
                               static_cast<int>(connectivity), watershed_line, out.data_ptr<int64_t>());
  }
  return out;
}

at::Tensor watershed_emulated_cpu_op(const at::Tensor& image, const at::Tensor& markers,
                                     const std::optional<at::Tensor>& mask, int64_t connectivity) {
  nf::check_watershed_args(image, markers, mask, connectivity);
  const at::Tensor img = image.contiguous();
  const at::Tensor mk64 = markers.to(at::kLong).contiguous();
  check_values(img, mk64);
  const at::Tensor msk = mask_bytes(mask);
  const int64_t H = img.size(0), W = img.size(1);
  at::Tensor out = at::empty({H, W}, mk64.options());
  if (H * W > 0) {
    const int64_t sweeps = nf::watershed_emulated(img.data_ptr<double>(), mk64.data_ptr<int64_t>(),
                                                  msk.defined() ? msk.data_ptr<uint8_t>() : nullptr, H, W,
                                                  static_cast<int>(connectivity), out.data_ptr<int64_t>());
    TORCH_CHECK(sweeps >= 0, "watershed_emulated: relaxation did not converge (internal error)");
  }
  return out.to(markers.scalar_type());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nucfast, m) {
  m.def("watershed(Tensor image, Tensor markers, Tensor? mask, int connectivity, bool watershed_line) -> Tensor");
  m.def("watershed_emulated(Tensor image, Tensor markers, Tensor? mask, int connectivity) -> Tensor");
}

TORCH_LIBRARY_IMPL(nucfast, CPU, m) {
  m.impl("watershed", &watershed_cpu_op);
  m.impl("watershed_emulated", &watershed_emulated_cpu_op);
}
