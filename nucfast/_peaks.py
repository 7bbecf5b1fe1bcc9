"""peak_local_max with scikit-image 0.26 semantics (coordinates in the same order, or the peak mask)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ._backend import as_tensor, ops, same_device, same_shape
from ._label import _LABEL_DTYPES

__all__ = ["peak_local_max"]

_IMAGE_DTYPES = (torch.float32, torch.float64, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_NP = {
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.uint8: np.uint8,
    torch.int8: np.int8,
    torch.int16: np.int16,
    torch.int32: np.int32,
    torch.int64: np.int64,
}


def _border_width(exclude_border, min_distance: int) -> tuple[int, int]:
    """skimage's _get_excluded_border_width for 2-D images."""
    if isinstance(exclude_border, bool | np.bool_):
        w = min_distance if exclude_border else 0
        return (w, w)
    if isinstance(exclude_border, int | np.integer):
        if exclude_border < 0:
            raise ValueError("exclude_border cannot be a negative value")
        return (int(exclude_border),) * 2
    if isinstance(exclude_border, tuple):
        if len(exclude_border) != 2:
            raise ValueError(
                "exclude_border should have the same length as the dimensionality of the image (2)"
            )
        for e in exclude_border:
            if not isinstance(e, int | np.integer) or isinstance(e, bool):
                raise ValueError("exclude_border, when expressed as a tuple, must only contain ints")
            if e < 0:
                raise ValueError("exclude_border can not be a negative value")
        return (int(exclude_border[0]), int(exclude_border[1]))
    raise TypeError("exclude_border must be bool, int, or a tuple of 2 ints")


def _footprint_offsets(footprint) -> tuple[np.ndarray, int]:
    """Offsets of the nonzero footprint elements (scipy's centre: index size // 2), nearest first."""
    fp = footprint.detach().cpu().numpy() if isinstance(footprint, torch.Tensor) else np.asarray(footprint)
    if fp.ndim != 2:
        raise ValueError(f"footprint must be 2-D, got shape {fp.shape}")
    if fp.dtype.kind not in "biuf":
        raise TypeError(f"footprint has dtype {fp.dtype}; expected bool or numeric")
    fpb = fp.astype(bool)
    if not fpb.any():
        raise ValueError("footprint must have at least one nonzero element")
    r, c = np.nonzero(fpb)
    dr = r - fp.shape[0] // 2
    dc = c - fp.shape[1] // 2
    order = np.lexsort((dc, dr, dr * dr + dc * dc))
    return np.stack([dr[order], dc[order]], axis=1).astype(np.int64), fp.size


def _threshold(t: torch.Tensor, threshold_abs, threshold_rel, minmax=None):
    """skimage's _get_threshold with numpy's scalar types, and how numpy would compare ``image > thr``.

    ``minmax``: ``torch.aminmax(t)`` when the caller has it already."""
    npdt = _NP[t.dtype]
    if minmax is None and (threshold_abs is None or threshold_rel is not None):
        minmax = torch.aminmax(t)
    threshold = threshold_abs if threshold_abs is not None else npdt(minmax[0].item())
    if threshold_rel is not None:
        threshold = max(threshold, threshold_rel * npdt(minmax[1].item()))
    if isinstance(threshold, torch.Tensor):
        threshold = threshold.item()
    try:
        ct = np.result_type(npdt, threshold)
    except (OverflowError, TypeError):
        ct = np.dtype(np.float64)
    if t.dtype == torch.float32 and ct == np.float32:
        return threshold, float(np.float32(threshold)), False
    if isinstance(threshold, int | np.integer) and not isinstance(threshold, bool):
        info = np.iinfo(npdt) if np.issubdtype(npdt, np.integer) else None
        if info is not None:  # exact integer comparison, clamped into the dtype's range
            thr = min(max(int(threshold), info.min - 1), info.max)
            return threshold, float(thr), True
    return threshold, float(threshold), True


def _neg_key(vals: torch.Tensor) -> torch.Tensor:
    """``-intensities`` as numpy computes it in the image dtype (wraps for unsigned integers)."""
    if vals.dtype == torch.uint8:
        return (256 - vals.to(torch.int16)) % 256
    return torch.neg(vals)


def _order(coords_flat: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """Permutation sorting raster-ordered points by -value, stable (skimage's argsort kind='stable')."""
    return torch.sort(_neg_key(vals), stable=True).indices


def _ensure_spacing(coords: np.ndarray, spacing: float, p_norm: float, max_out) -> np.ndarray:
    """skimage.\\_shared.coord.ensure_spacing: greedy in order, drop points at distance < spacing."""
    if len(coords) == 0:
        return coords
    cell = max(float(spacing), 1.0)
    grid: dict[tuple[int, int], list[int]] = {}
    keep: list[int] = []
    s2 = spacing * spacing
    for i, (r, c) in enumerate(coords.tolist()):
        gr, gc = int(r // cell), int(c // cell)
        ok = True
        for dgr in (-1, 0, 1):
            for dgc in (-1, 0, 1):
                for j in grid.get((gr + dgr, gc + dgc), ()):
                    ar, ac = coords[j]
                    dr, dc = abs(r - int(ar)), abs(c - int(ac))
                    if p_norm == np.inf:
                        d_lt = max(dr, dc) < spacing
                    elif p_norm == 2:
                        d_lt = dr * dr + dc * dc < s2
                    elif p_norm == 1:
                        d_lt = dr + dc < spacing
                    else:
                        d_lt = (dr**p_norm + dc**p_norm) ** (1.0 / p_norm) < spacing
                    if d_lt:
                        ok = False
                        break
                if not ok:
                    break
            if not ok:
                break
        if ok:
            keep.append(i)
            grid.setdefault((gr, gc), []).append(i)
            if max_out is not None and len(keep) >= max_out:
                break
    return coords[keep]


def _high_intensity(coords: np.ndarray, num, min_distance: int, p_norm) -> np.ndarray:
    """skimage's _get_high_intensity_peaks after the sort: spacing, then truncation to ``num``."""
    max_out = int(num) if np.isfinite(num) else None
    if min_distance > 1:
        coords = _ensure_spacing(coords, min_distance, p_norm, max_out)
    if len(coords) > num:
        coords = coords[: int(num)]
    return coords


def _compact_labels(lab: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Positive labels renumbered 1..k in increasing order when the maximum label is huge."""
    mx = int(lab.max()) if lab.numel() else 0
    if mx <= max(lab.numel(), 1 << 16):
        return lab, max(mx, 0) + 1
    u, inv = torch.unique(lab, return_inverse=True)
    npos = int((u > 0).sum())
    nonpos = u.numel() - npos
    return torch.where(lab > 0, inv - nonpos + 1, torch.zeros_like(inv)), npos + 1


def peak_local_max(
    image,
    *,
    min_distance: int = 1,
    threshold_abs=None,
    threshold_rel=None,
    exclude_border=True,
    num_peaks=np.inf,
    footprint=None,
    labels=None,
    num_peaks_per_label=np.inf,
    p_norm=np.inf,
    output: str = "coordinates",
    _emulated: bool = False,
):
    """Find local maxima, exactly as ``skimage.feature.peak_local_max`` (scikit-image 0.26).

    Parameters
    ----------
    image : (H, W) ndarray or Tensor
        float32, float64 or integer; NaN/inf are rejected.
    min_distance : int, optional
        Peaks are separated by at least ``min_distance`` (greedy, highest first) when > 1; the default
        footprint is a (2 * min_distance + 1) square; the default border band width.
    threshold_abs, threshold_rel : float, optional
        Peaks need ``image > max(threshold_abs or image.min(), threshold_rel * image.max())``, both
        computed on the whole image (numpy's scalar types and comparison rules, as scikit-image).
    exclude_border : bool, int or (int, int), optional
        Width of the border band without peaks; ``True`` means ``min_distance`` (not the footprint
        radius). With ``labels`` the band is removed from the labels before each label's bounding box is
        taken, so the maximum filter of a label never sees its pixels in the band.
    num_peaks, num_peaks_per_label : int, optional
        Keep the highest peaks only.
    footprint : (h, w) array_like of bool, optional
        Neighbourhood of the maximum filter (centre at index ``size // 2``).
    labels : (H, W) bool or integer array, optional
        Each label value is searched separately, in its bounding box, other pixels masked to the dtype's
        lowest value; 0 is background.
    p_norm : float, optional
        Minkowski norm of the ``min_distance`` spacing.
    output : {"coordinates", "mask"}, optional
        ``"coordinates"``: (N, 2) int64 in scikit-image's order (per label, highest value first, raster
        order among equals); ``"mask"``: (H, W) bool with the same peaks set (what
        ``scipy.ndimage.label`` takes to make watershed markers).

    Returns
    -------
    (N, 2) int64 coordinates, or (H, W) bool mask; same kind and device as ``image``.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((7, 7)); img[3, 4] = 1; img[3, 2] = 1.5
    >>> peak_local_max(img, min_distance=1)
    array([[3, 2],
           [3, 4]])
    """
    if output not in ("coordinates", "mask"):
        raise ValueError(f"output must be 'coordinates' or 'mask', got {output!r}")
    t, back = as_tensor(image, "image", ndim=2, dtypes=_IMAGE_DTYPES)
    if t.numel() == 0:
        raise ValueError(f"image must not be empty, got shape {tuple(t.shape)}")
    minmax = None
    if t.is_floating_point():  # one reduction: the finite check and the threshold's min / max
        minmax = torch.aminmax(t)
        if not bool(torch.isfinite(minmax[0]) & torch.isfinite(minmax[1])):
            raise ValueError("image contains NaN or infinite values")
    if isinstance(min_distance, bool) or not isinstance(min_distance, int | np.integer) or min_distance < 0:
        raise ValueError(f"min_distance must be a non-negative int, got {min_distance!r}")
    min_distance = int(min_distance)
    for name, v in (("num_peaks", num_peaks), ("num_peaks_per_label", num_peaks_per_label)):
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating) or not v >= 0:
            raise ValueError(f"{name} must be a non-negative number, got {v!r}")
    if not (isinstance(p_norm, int | float) and p_norm >= 1):
        raise ValueError(f"p_norm must be in [1, inf], got {p_norm!r}")
    if (footprint is None or np.size(footprint) == 1) and min_distance < 1:
        warnings.warn(
            "When min_distance < 1, peak_local_max acts as finding "
            "image > max(threshold_abs, threshold_rel * max(image)).",
            RuntimeWarning,
            stacklevel=2,
        )
    bh, bw = _border_width(exclude_border, min_distance)
    threshold, thr, thr_f64 = _threshold(t, threshold_abs, threshold_rel, minmax)
    if footprint is None:
        size = 2 * min_distance + 1
        footprint = np.ones((size, size), dtype=bool)
    offsets, fp_size = _footprint_offsets(footprint)
    off_t = torch.from_numpy(offsets).to(t.device)

    lab = None
    nlab = 1
    if labels is not None:
        lt, _ = as_tensor(labels, "labels", ndim=2, dtypes=_LABEL_DTYPES)
        same_shape(image=t, labels=lt)
        same_device(image=t, labels=lt)
        npdt = _NP[t.dtype]
        bg = np.finfo(npdt).min if np.issubdtype(npdt, np.floating) else np.iinfo(npdt).min
        if bg > threshold:
            raise ValueError(
                "threshold_abs below the image dtype's lowest value is not supported with labels "
                "(scikit-image would report masked-out pixels as peaks)"
            )
        native = t.device.type == "cpu" and not _emulated  # the CPU kernel reads these dtypes as they are
        if native and lt.dtype in (torch.bool, torch.uint8):
            lab, nlab = lt, (2 if lt.dtype == torch.bool else 256)
        elif native and lt.dtype == torch.int32:
            lab, nlab = _compact_labels(lt)
        else:
            lab, nlab = _compact_labels(lt.to(torch.int64))
    no_trivial = fp_size == 1 or (lab is None and t.numel() == 1)
    op = ops.peak_mask_emulated if _emulated else ops.peak_mask
    mask = op(t, lab, off_t, bh, bw, thr, thr_f64, no_trivial, nlab)

    simple = min_distance <= 1 and math.isinf(num_peaks) and math.isinf(num_peaks_per_label)
    if output == "mask" and simple:
        return back(mask)

    flat = torch.nonzero(mask.reshape(-1)).reshape(-1)  # raster order
    vals = t.reshape(-1)[flat]
    perm = _order(flat, vals)
    flat = flat[perm]
    W = t.shape[1]
    if lab is None:
        coords = torch.stack([flat // W, flat % W], 1)
        if not simple:
            coords = torch.from_numpy(
                _high_intensity(coords.cpu().numpy(), num_peaks, min_distance, p_norm)
            ).to(t.device)
    else:
        lv = lab.reshape(-1)[flat].to(torch.int64)
        perm = torch.sort(lv, stable=True).indices
        flat, lv = flat[perm], lv[perm]
        coords = torch.stack([flat // W, flat % W], 1)
        if not simple:
            c_np, l_np = coords.cpu().numpy(), lv.cpu().numpy()
            parts = []
            if len(l_np):
                cuts = np.flatnonzero(np.diff(l_np)) + 1
                for grp in np.split(np.arange(len(l_np)), cuts):
                    parts.append(_high_intensity(c_np[grp], num_peaks_per_label, min_distance, p_norm))
            c_np = np.vstack(parts) if parts else np.empty((0, 2), np.int64)
            if len(c_np) > num_peaks:
                fl = np.sort(c_np[:, 0] * W + c_np[:, 1])
                v = t.reshape(-1)[torch.from_numpy(fl).to(t.device)]
                o = _order(None, v).cpu().numpy()
                fl = fl[o]
                c_np = _high_intensity(np.stack([fl // W, fl % W], 1), num_peaks, min_distance, p_norm)
            coords = torch.from_numpy(np.ascontiguousarray(c_np, dtype=np.int64)).to(t.device)
    coords = coords.to(torch.int64).reshape(-1, 2)
    if output == "mask":
        m = torch.zeros_like(mask)
        m[coords[:, 0], coords[:, 1]] = True
        return back(m)
    return back(coords)


@torch.library.register_fake("nucfast::peak_mask")
def _peak_mask_fake(
    image, labels, offsets, border_rows, border_cols, threshold, threshold_f64, no_trivial, nlab
):
    return torch.empty_like(image, dtype=torch.bool)


@torch.library.register_fake("nucfast::peak_mask_emulated")
def _peak_mask_emulated_fake(
    image, labels, offsets, border_rows, border_cols, threshold, threshold_f64, no_trivial, nlab
):
    return torch.empty_like(image, dtype=torch.bool)
