"""Compressed sigmoid with a batch percentile threshold (the attention output of Sahasrabudhe et al. 2020).

For a batch of logit maps ``a`` (leading dimension = images)::

    q_b = value at rank floor(p * N) of image b's N logits sorted descending
    tau = mean_b q_b
    A   = 1 / (1 + exp(-r (a - tau)))

computed by the fused native op ``torch.ops.nucfast.percentile_sigmoid`` (exact radix select on the
float's integer key, no sort). The gradient treats ``tau`` as a constant (detached):
dA/da = r A (1 - A).

Numerics (what the tests check):

- ``q_b`` is exactly the sort-based value ``sort(a_b, descending)[floor(p N)]``; a quantile of
  -0.0 is returned as +0.0 (they compare equal, a sort may order them either way).
- ``tau`` is the sum of the ``q_b`` accumulated in float64 in batch order, divided by B, rounded to
  the input dtype (``q.double().mean().to(dtype)`` for B < 2^53); ``torch.mean`` in float32 may differ
  from it by an ulp.
- ``A`` is ``1 / (1 + exp(-r (a - tau)))`` evaluated in the input dtype with ``r`` rounded to that
  dtype, the same operations in the same order as the torch expression. float64 uses libm ``exp``
  (bitwise equal to the expression with ``math.exp``); float32 on the CPU uses a vectorised exp that
  returns the correctly rounded result except within ~1e-13 relative of a rounding boundary (measured:
  identical to ``float(exp(double(x)))`` on all but ~1e-5 of inputs, else 1 ulp). CUDA uses ``expf``
  (<= 2 ulp) and ``exp`` (<= 1 ulp). Tolerance against the torch expression: 4 float32 ulps of A
  (``atol=5e-7``).
- ``+-inf`` logits are allowed and follow IEEE arithmetic exactly as the reference formula does (an
  infinite ``q_b`` gives an infinite or NaN ``tau``); NaN logits raise ``ValueError``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._backend import as_tensor, ops

__all__ = ["percentile_sigmoid", "PercentileSigmoid"]

_DTYPES = (torch.float32, torch.float64)


# ---- fake (meta) kernels and autograd ------------------------------------------------------------------
def _fake_forward(logits, p, r, tau):
    return logits.new_empty(logits.shape), logits.new_empty(())


def _fake_backward(grad_A, A, r):
    return A.new_empty(A.shape)


def _setup_context(ctx, inputs, output):
    _, _, r, _ = inputs
    A, tau = output
    ctx.save_for_backward(A)
    ctx.mark_non_differentiable(tau)
    ctx.r = r


def _backward(ctx, grad_A, grad_tau):
    (A,) = ctx.saved_tensors
    grad = None
    if grad_A is not None and ctx.needs_input_grad[0]:
        grad = ops.percentile_sigmoid_backward(grad_A, A, ctx.r)
    return grad, None, None, None


def _setup_context_bw(ctx, inputs, output):
    grad_A, A, r = inputs
    ctx.save_for_backward(grad_A, A)
    ctx.r = r


def _backward_bw(ctx, gg):
    # out = g r A (1 - A): d/dg = r A (1 - A), d/dA = g r (1 - 2A)  (double backward)
    grad_A, A = ctx.saved_tensors
    r = ctx.r
    d_grad = gg * r * A * (1 - A) if ctx.needs_input_grad[0] else None
    d_A = gg * grad_A * r * (1 - 2 * A) if ctx.needs_input_grad[1] else None
    return d_grad, d_A, None


for _name in ("nucfast::percentile_sigmoid", "nucfast::percentile_sigmoid_emulated"):
    torch.library.register_fake(_name)(_fake_forward)
    torch.library.register_autograd(_name, _backward, setup_context=_setup_context)
torch.library.register_fake("nucfast::percentile_sigmoid_backward")(_fake_backward)
torch.library.register_autograd(
    "nucfast::percentile_sigmoid_backward", _backward_bw, setup_context=_setup_context_bw
)


# ---- public API ----------------------------------------------------------------------------------------
def _check_p_r(p, r):
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"p must be a real number, got {type(p).__name__}")
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)):
        raise TypeError(f"r must be a real number, got {type(r).__name__}")
    if not math.isfinite(float(r)):
        raise ValueError(f"r must be finite, got {r}")


def _tau_tensor(tau, like: torch.Tensor) -> torch.Tensor:
    if isinstance(tau, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(tau)
        if t.numel() != 1:
            raise ValueError(f"tau must hold exactly one value, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"tau must be a floating-point value, got dtype {t.dtype}")
        t = t.detach().reshape(()).to(device=like.device, dtype=like.dtype)
    elif isinstance(tau, (int, float, np.integer, np.floating)) and not isinstance(tau, bool):
        t = torch.tensor(float(tau), dtype=like.dtype, device=like.device)
    else:
        raise TypeError(f"tau must be None, a number or a one-element tensor, got {type(tau).__name__}")
    if t.device.type == "cpu" and bool(torch.isnan(t)):
        raise ValueError("tau is NaN")
    return t


def percentile_sigmoid(logits, *, p: float = 0.07, r: float = 20.0, tau=None):
    """Compressed sigmoid of ``logits`` around the batch's mean ``p``-quantile (from the top).

    Parameters
    ----------
    logits : (B, ...) ndarray or Tensor, float32 or float64
        Logit maps; the leading dimension indexes images, the rest is flattened per image
        (N elements each). Any device; non-contiguous inputs are copied. Must not contain NaN.
    p : float, optional
        Fraction of each image's pixels above its threshold, in [0, 1). Image b's threshold
        ``q_b`` is the element at rank ``floor(p * N)`` of its logits sorted descending
        (``p = 0`` is the maximum; ``floor(p * N) <= N - 1`` always holds for ``p < 1``).
    r : float, optional
        Slope (inverse temperature) of the sigmoid.
    tau : float or one-element Tensor, optional
        Use this threshold instead of the batch's (inference with a running tau): no selection runs.

    Returns
    -------
    A : ndarray or Tensor
        ``1 / (1 + exp(-r (logits - tau)))``, shape and dtype of ``logits`` (contiguous).
        Differentiable with respect to ``logits`` with ``tau`` detached.
    tau : 0-dim ndarray or Tensor
        The threshold used: ``mean_b q_b`` (or the given one), dtype of ``logits``, no gradient.

    Raises
    ------
    ValueError
        ``logits`` has no images, empty images or NaN values; ``p`` outside [0, 1); ``r`` not finite.

    Examples
    --------
    >>> import torch, nucfast
    >>> a = torch.arange(10.0).reshape(1, 10)
    >>> A, tau = nucfast.percentile_sigmoid(a, p=0.2, r=1.0)
    >>> float(tau)  # sorted descending: 9, 8, 7, ... rank floor(0.2 * 10) = 2
    7.0
    """
    t, back = as_tensor(logits, "logits", dtypes=_DTYPES, differentiable=True)
    if t.dim() < 1 or t.shape[0] == 0:
        raise ValueError(
            f"logits must have a leading batch dimension of at least one image, got shape {tuple(t.shape)}"
        )
    if t.numel() == 0:
        raise ValueError(f"logits must hold at least one element per image, got shape {tuple(t.shape)}")
    _check_p_r(p, r)
    tau_t = None if tau is None else _tau_tensor(tau, t)
    A, tau_out = ops.percentile_sigmoid(t, float(p), float(r), tau_t)
    return back(A), back(tau_out)


class PercentileSigmoid(nn.Module):
    """The attention head's compressed sigmoid with a running threshold.

    Training: ``tau`` is the batch's mean ``p``-quantile (detached) and the running threshold is
    updated ``tau_run <- (1 - momentum) tau_run + momentum tau`` (the first batch sets it).
    Evaluation: ``tau_run`` is used, so the output does not depend on how images are batched.

    Parameters
    ----------
    p : float, optional
        Fraction of pixels above the threshold, in [0, 1).
    r : float, optional
        Sigmoid slope.
    momentum : float, optional
        Weight of the new batch in the running threshold, in (0, 1].

    Attributes
    ----------
    running_tau : 0-dim Tensor (buffer)
        The running threshold.
    num_batches_tracked : 0-dim int64 Tensor (buffer)
        Training batches seen; 0 means ``running_tau`` is not set yet (evaluation then raises).
    """

    def __init__(self, p: float = 0.07, r: float = 20.0, momentum: float = 0.1):
        super().__init__()
        _check_p_r(p, r)
        if not 0.0 < float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.p, self.r, self.momentum = float(p), float(r), float(momentum)
        self.register_buffer("running_tau", torch.zeros(()))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"logits must be a torch tensor, got {type(logits).__name__}")
        if self.training:
            A, tau = percentile_sigmoid(logits, p=self.p, r=self.r)
            with torch.no_grad():
                tau = tau.to(self.running_tau.dtype)
                first = self.num_batches_tracked == 0
                updated = (1.0 - self.momentum) * self.running_tau + self.momentum * tau
                self.running_tau.copy_(torch.where(first, tau, updated))
                self.num_batches_tracked.add_(1)
            return A
        if int(self.num_batches_tracked) == 0:
            raise RuntimeError(
                "PercentileSigmoid: running_tau is not set; run a training batch (or load a "
                "state dict) before evaluation"
            )
        A, _ = percentile_sigmoid(logits, p=self.p, r=self.r, tau=self.running_tau)
        return A

    def extra_repr(self) -> str:
        return f"p={self.p}, r={self.r}, momentum={self.momentum}"
