"""Loading the native extension, and the conversions/validation every public op shares.

Public ops accept numpy arrays or torch tensors (any device) and return the kind that came in:
``t, back = as_tensor(x, "image", ndim=2, dtypes=(...))`` ... ``return back(out)``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from . import _C  # noqa: F401  (registers torch.ops.nucfast.*)

ops = torch.ops.nucfast


#: Ops that are CPU fast paths by design: their Python wrappers send CUDA tensors down another path made of
#: ops that have CUDA kernels (``remove_small``: label + per-label counts, nucfast/_label.py).
CPU_ONLY_OPS = frozenset({"remove_small"})


def build_info() -> dict[str, Any]:
    """What the native extension was built with, and which ops have CUDA kernels.

    Returns
    -------
    dict
        ``cuda_compiled`` (CUDA kernels were compiled into the extension), ``cuda_archs``,
        ``cuda_version`` (nvcc release), ``torch_version`` (built against), ``torch_runtime``,
        ``openmp``, ``compiler``, ``ops`` (every nucfast op) and ``ops_without_cuda``
        (ops lacking a CUDA kernel in this build, apart from ``cpu_only_ops``: :data:`CPU_ONLY_OPS`),
        ``cuda_available`` (a GPU is usable now).
    """
    info = json.loads(ops.build_info())
    names = sorted(
        n
        for n in torch._C._dispatch_get_all_op_names()
        if n.startswith("nucfast::") and n != "nucfast::build_info"
    )
    info["ops"] = [n.split("::", 1)[1] for n in names]
    no_cuda = [
        n.split("::", 1)[1]
        for n in names
        if not n.endswith("_emulated") and not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA")
    ]
    info["ops_without_cuda"] = [n for n in no_cuda if n not in CPU_ONLY_OPS]
    info["cpu_only_ops"] = [n for n in no_cuda if n in CPU_ONLY_OPS]
    info["torch_runtime"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    return info


def _dtype_name(x) -> str:
    return str(getattr(x, "dtype", x)).replace("torch.", "")  # a tensor or a dtype


def as_tensor(
    x,
    name: str,
    *,
    ndim: int | Iterable[int] | None = None,
    dtypes: Iterable[torch.dtype] | None = None,
    finite: bool = False,
    differentiable: bool = False,
) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """Validate ``x`` and return it as a tensor plus a function mapping results back to x's kind.

    Raises TypeError/ValueError naming ``name`` for wrong types, ndim, dtype, or non-finite values, and
    RuntimeError for a tensor that requires grad (with grad mode on) when the op has no autograd formula
    (``differentiable=False``, every op but ``percentile_sigmoid``): without it the output would carry a
    ``grad_fn`` whose backward silently leaves ``x.grad`` at None.
    numpy inputs are wrapped without a copy where possible (bool stays bool).
    """
    if isinstance(x, torch.Tensor):
        t = x
        if not differentiable and t.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(
                f"{name} requires grad, but this nucfast op has no gradient (backward would silently give "
                f"{name}.grad = None); pass {name}.detach() or call it under torch.no_grad()"
            )

        def back(out):
            return out

    elif isinstance(x, np.ndarray):
        if x.dtype.byteorder not in ("=", "|") and x.dtype.byteorder != ("<" if np.little_endian else ">"):
            x = x.astype(x.dtype.newbyteorder("="))
        if any(s < 0 for s in x.strides):  # torch.from_numpy rejects negative strides (x[::-1])
            x = x.copy()  # (not ascontiguousarray: it keeps a negative stride on a size-1 axis)
        try:
            if x.flags.writeable:
                t = torch.from_numpy(x)
            else:  # e.g. a slide reader's tile: nucfast ops only read their inputs
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
                    t = torch.from_numpy(x)
        except TypeError as e:
            raise TypeError(f"{name}: unsupported numpy dtype {x.dtype}") from e

        def back(out):
            return out.cpu().numpy() if isinstance(out, torch.Tensor) else out

    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(t.shape)}"
            )
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            raise TypeError(
                f"{name} has dtype {_dtype_name(t)}; "
                f"expected one of {', '.join(_dtype_name(d) for d in dtypes)}"
            )
    if finite and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t, back


def same_device(**tensors: torch.Tensor) -> torch.device:
    """Check that all tensors share a device; raise naming the odd one out."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    dev = items[0][1].device
    for k, v in items[1:]:
        if v.device != dev:
            raise ValueError(f"{k} is on {v.device} but {items[0][0]} is on {dev}")
    return dev


def same_shape(**tensors: torch.Tensor) -> None:
    """Check that all tensors share a shape; raise naming the mismatch."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    shape = tuple(items[0][1].shape)
    for k, v in items[1:]:
        if tuple(v.shape) != shape:
            raise ValueError(f"{k} has shape {tuple(v.shape)} but {items[0][0]} has shape {shape}")
