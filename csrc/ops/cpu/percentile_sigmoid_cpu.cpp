// nucfast::percentile_sigmoid (+ _backward, + _emulated): schemas and CPU kernels.
// Semantics: csrc/kernels/percentile_sigmoid.h; Python wrapper: nucfast/_percentile_sigmoid.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>

#include "core/percentile_sigmoid.h"
#include "ops/cpu/percentile_sigmoid_args.h"

namespace {

template <bool Emulated>
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& logits, double p, double r,
                                           const std::optional<at::Tensor>& tau) {
  const at::Tensor tau_in = nf::psig::check_forward_args(logits, p, tau);
  const at::Tensor x = logits.contiguous();
  const int64_t b_count = x.size(0), n = x.numel() / b_count;
  at::Tensor out = at::empty_like(x);
  at::Tensor tau_out = at::empty({}, x.options());
  at::Tensor q = at::empty({b_count}, x.options());
  bool nan = false;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "percentile_sigmoid", [&] {
    const scalar_t* ti = tau_in.defined() ? tau_in.const_data_ptr<scalar_t>() : nullptr;
    if constexpr (Emulated) {
      nan = nf::psig::percentile_sigmoid_emulated<scalar_t>(x.const_data_ptr<scalar_t>(), b_count, n, p, r, ti,
                                                            out.mutable_data_ptr<scalar_t>(),
                                                            q.mutable_data_ptr<scalar_t>(),
                                                            tau_out.mutable_data_ptr<scalar_t>());
    } else {
      nan = nf::psig::percentile_sigmoid_cpu<scalar_t>(x.const_data_ptr<scalar_t>(), b_count, n, p, r, ti,
                                                       out.mutable_data_ptr<scalar_t>(),
                                                       q.mutable_data_ptr<scalar_t>(),
                                                       tau_out.mutable_data_ptr<scalar_t>());
    }
  });
  TORCH_CHECK_VALUE(!nan, "logits contains NaN values");
  return {out, tau_out};
}

at::Tensor backward_cpu(const at::Tensor& grad, const at::Tensor& a, double r) {
  nf::psig::check_backward_args(grad, a);
  const at::Tensor g = grad.contiguous(), ac = a.contiguous();
  at::Tensor out = at::empty_like(ac);
  AT_DISPATCH_FLOATING_TYPES(ac.scalar_type(), "percentile_sigmoid_backward", [&] {
    nf::psig::percentile_sigmoid_backward_cpu<scalar_t>(g.const_data_ptr<scalar_t>(), ac.const_data_ptr<scalar_t>(),
                                                        ac.numel(), r, out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nucfast, m) {
  m.def("percentile_sigmoid(Tensor logits, float p, float r, Tensor? tau) -> (Tensor, Tensor)");
  m.def("percentile_sigmoid_emulated(Tensor logits, float p, float r, Tensor? tau) -> (Tensor, Tensor)");
  m.def("percentile_sigmoid_backward(Tensor grad_A, Tensor A, float r) -> Tensor");
}

TORCH_LIBRARY_IMPL(nucfast, CPU, m) {
  m.impl("percentile_sigmoid", &forward<false>);
  m.impl("percentile_sigmoid_emulated", &forward<true>);
  m.impl("percentile_sigmoid_backward", &backward_cpu);
}
