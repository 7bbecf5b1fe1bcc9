"""Connected-component labelling (scipy.ndimage.label numbering) and small-object/hole removal."""

from __future__ import annotations

import math
import warnings

import torch

from ._backend import as_tensor, ops

__all__ = ["label", "remove_small_objects", "remove_small_holes"]

_MASK_DTYPES = (
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.uint16,
    torch.int32,
    torch.uint32,
    torch.int64,
    torch.float32,
    torch.float64,
)
_LABEL_DTYPES = (
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.uint16,
    torch.int32,
    torch.uint32,
    torch.int64,
)


def _check_connectivity(connectivity) -> int:
    if isinstance(connectivity, bool) or connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-connected) or 2 (8-connected), got {connectivity!r}")
    return int(connectivity)


def _as_bool(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.bool else t != 0


def label(mask, *, connectivity: int = 1, _emulated: bool = False):
    """Label the connected components of a 2-D mask.

    Numbering is identical to ``scipy.ndimage.label``: components get 1..num in raster order of their
    first pixel, background 0.

    Parameters
    ----------
    mask : (H, W) ndarray or Tensor
        Foreground = non-zero (bool, integer or floating dtype; NaN is rejected).
    connectivity : {1, 2}, optional
        1: 4-connectivity (scipy's default structure), 2: 8-connectivity.

    Returns
    -------
    labels : (H, W) int32 ndarray or Tensor (same kind and device as ``mask``)
    num : int
        Number of components.

    Examples
    --------
    >>> import numpy as np
    >>> lab, n = label(np.array([[1, 0, 1], [1, 0, 0]], bool))
    >>> n
    2
    """
    connectivity = _check_connectivity(connectivity)
    t, back = as_tensor(mask, "mask", ndim=2, dtypes=_MASK_DTYPES, finite=True)
    op = ops.label_emulated if _emulated else ops.label
    lab, num = op(_as_bool(t), connectivity)
    return back(lab), int(num)


def _size_threshold(old, max_size, old_name: str):
    """The inclusive size threshold. Like scikit-image 0.26, the deprecated ``min_size`` /
    ``area_threshold`` is passed on as ``max_size`` (objects of that size or smaller are removed:
    the old strict comparison is unreachable through scikit-image's public API)."""
    if old is not None:
        warnings.warn(
            f"Parameter `{old_name}` is deprecated (as in scikit-image 0.26); use `max_size`. Note that, "
            "as in scikit-image 0.26, its value is used as max_size: sizes <= the value are removed.",
            FutureWarning,
            stacklevel=3,
        )
        if max_size is not None:
            raise ValueError(f"both {old_name} (deprecated) and max_size are given; use only max_size")
        max_size = old
    if max_size is None:
        max_size = 64
    if isinstance(max_size, bool) or not isinstance(max_size, int | float) or max_size != max_size:
        raise TypeError(f"max_size must be a number, got {max_size!r}")
    return max_size


def _int_threshold(threshold) -> int:
    """Sizes are integers: ``size <= threshold`` iff ``size <= floor(threshold)`` (capped for the op)."""
    if threshold >= 2**62:
        return 2**62
    return max(math.floor(threshold), -1)


def _remove_small(t: torch.Tensor, threshold, connectivity: int, emulated: bool, holes: bool = False):
    """Clear the components of ``t`` (holes: of ``~t``) with ``threshold`` pixels or fewer; for holes the
    result is the filled mask."""
    if t.dtype == torch.bool and t.device.type == "cpu" and not emulated:  # one native pass (runs)
        return ops.remove_small(t, _int_threshold(threshold), connectivity, holes)
    if holes:
        return ~_remove_small(~t, threshold, connectivity, emulated)
    if t.dtype == torch.bool:
        op = ops.label_emulated if emulated else ops.label
        ccs = op(t, connectivity)[0].long()
    else:
        ccs = t.long()
        if ccs.numel() and int(ccs.min()) < 0:
            raise ValueError("ar: negative labels are not supported (relabel with nucfast.label first)")
    if ccs.numel() == 0:
        return t.clone()
    if int(ccs.max()) > max(ccs.numel(), 1 << 16):  # huge label values: count on compacted ids
        ccs = torch.unique(ccs, return_inverse=True)[1]  # (as region_stats; bincount would be O(max label))
    sizes = torch.bincount(ccs.reshape(-1))
    too_small = sizes <= threshold
    drop = too_small[ccs]
    if t.dtype in (torch.uint16, torch.uint32):  # few kernels for these dtypes
        return t.long().masked_fill(drop, 0).to(t.dtype)
    return t.masked_fill(drop, 0)


def remove_small_objects(ar, min_size=None, *, connectivity: int = 1, max_size=None, _emulated: bool = False):
    """Remove small connected components (scikit-image 0.26 ``remove_small_objects`` semantics).

    Parameters
    ----------
    ar : (H, W) bool or integer ndarray or Tensor
        A bool mask is labelled first (``connectivity``); an integer array is taken as a label image
        whose label values are the objects (a label split in several pieces counts as one object,
        its size is its total pixel count), labels must be non-negative.
    min_size : int, optional
        Deprecated alias of ``max_size`` (FutureWarning). As in scikit-image 0.26 -- whose decorator
        forwards it to ``max_size`` -- objects with ``min_size`` pixels **or fewer** are removed, not
        only smaller ones. For the classic "fewer than n pixels" use ``max_size=n - 1``.
    connectivity : {1, 2}, optional
        Used to label a bool ``ar``.
    max_size : int, optional
        Remove objects with ``max_size`` pixels **or fewer** (scikit-image 0.26 ``max_size``).
        Default 64 when neither threshold is given (as scikit-image).

    Returns
    -------
    out : same kind, dtype and shape as ``ar``
    """
    connectivity = _check_connectivity(connectivity)
    t, back = as_tensor(ar, "ar", ndim=2, dtypes=_LABEL_DTYPES)
    threshold = _size_threshold(min_size, max_size, "min_size")
    if threshold == 0:  # scikit-image's shortcut (skips the negative-label check too)
        return back(t.clone())
    return back(_remove_small(t, threshold, connectivity, _emulated))


def remove_small_holes(
    ar, area_threshold=None, *, connectivity: int = 1, max_size=None, _emulated: bool = False
):
    """Fill small holes (scikit-image 0.26 ``remove_small_holes`` semantics).

    A hole is a connected component of the background (``connectivity``), including components that
    touch the image border (as scikit-image).

    Parameters
    ----------
    ar : (H, W) bool or integer ndarray or Tensor
        Non-zero = foreground. The result is always bool.
    area_threshold : int, optional
        Deprecated alias of ``max_size`` (FutureWarning), inclusive like scikit-image 0.26.
    connectivity : {1, 2}, optional
        Connectivity of the background components.
    max_size : int, optional
        Fill holes with ``max_size`` pixels **or fewer**; default 64 when neither threshold is given.

    Returns
    -------
    out : (H, W) bool, same kind as ``ar``
    """
    connectivity = _check_connectivity(connectivity)
    t, back = as_tensor(ar, "ar", ndim=2, dtypes=_LABEL_DTYPES)
    if t.dtype != torch.bool:
        warnings.warn(
            "Any labeled images will be returned as a boolean array. Did you mean to use a boolean array?",
            UserWarning,
            stacklevel=2,
        )
    threshold = _size_threshold(area_threshold, max_size, "area_threshold")
    b = _as_bool(t)
    if threshold == 0:
        return back(b.clone() if b is t else b)
    return back(_remove_small(b, threshold, connectivity, _emulated, holes=True))


@torch.library.register_fake("nucfast::remove_small")
def _remove_small_fake(mask, max_size, connectivity, holes):
    return torch.empty_like(mask)


@torch.library.register_fake("nucfast::label")
def _label_fake(mask, connectivity=1):
    return torch.empty_like(mask, dtype=torch.int32), mask.new_empty((), dtype=torch.int64)


@torch.library.register_fake("nucfast::label_emulated")
def _label_emulated_fake(mask, connectivity=1):
    return torch.empty_like(mask, dtype=torch.int32), mask.new_empty((), dtype=torch.int64)
