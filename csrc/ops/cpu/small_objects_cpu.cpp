// nucfast::remove_small (CPU only; other devices use the label + bincount path in nucfast/_label.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "core/small_objects.h"

namespace {

at::Tensor remove_small_cpu_op(const at::Tensor& mask_in, int64_t max_size, int64_t connectivity, bool holes) {
  TORCH_CHECK(mask_in.dim() == 2, "remove_small: mask must be 2-D, got ", mask_in.dim(), " dimensions");
  TORCH_CHECK(mask_in.scalar_type() == at::kBool, "remove_small: mask must be bool, got ", mask_in.scalar_type());
  TORCH_CHECK(connectivity == 1 || connectivity == 2, "remove_small: connectivity must be 1 or 2, got ",
              connectivity);
  const at::Tensor mask = mask_in.contiguous();
  at::Tensor out = at::empty_like(mask, at::MemoryFormat::Contiguous);
  nf::remove_small_cpu(reinterpret_cast<const uint8_t*>(mask.data_ptr<bool>()), mask.size(0), mask.size(1), max_size,
                       connectivity == 2, holes, reinterpret_cast<uint8_t*>(out.data_ptr<bool>()));
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nucfast, m) {
  m.def("remove_small(Tensor mask, int max_size, int connectivity, bool holes) -> Tensor");
}

TORCH_LIBRARY_IMPL(nucfast, CPU, m) { m.impl("remove_small", &remove_small_cpu_op); }
