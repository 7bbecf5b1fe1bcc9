"""Fast instance post-processing pipelines built from the nucfast kernels.

Both run on CPU tensors/arrays here and on CUDA tensors where a GPU exists (same code: every step is a
nucfast op or an elementwise torch op). Results equal the scipy/scikit-image references in
``nucfast.postprocess.reference`` (exactly on the CPU; the CUDA watershed may differ on the documented
ties, see nucfast.watershed).
"""

from __future__ import annotations

import torch

from .._backend import as_tensor, ops
from .._edt import distance_transform_edt
from .._filters import gaussian_filter
from .._label import label, remove_small_holes, remove_small_objects
from .._morphology import binary_open_close, disk
from .._peaks import peak_local_max
from .._watershed import watershed

USENET_MASK_THRESHOLD = 0.1
USENET_MARKER_THRESHOLD = 0.1
USENET_METHODS = ("ridges", "watershed")


_DISK7 = torch.from_numpy(disk(7))


def attention_instances(binary_mask):
    """Instances from the attention model's binary nucleus mask (REFERENCE.md 1, paper section 3.4).

    opening disk(2), closing disk(2), opening disk(1), closing disk(1); ``d = gaussian_filter(edt(b), 1)``
    (float64); markers = label(peak_local_max(d, footprint=disk(7), labels=b)); ``watershed(-d, markers,
    mask=b)``.

    Parameters
    ----------
    binary_mask : (rows, cols) bool or uint8 array/tensor
        Foreground (e.g. attention map > 0.5); uint8 is read as ``!= 0``.

    Returns
    -------
    labels : (rows, cols) int32, same kind (numpy/torch) and device as the input. 0 = background.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((64, 64), bool); m[10:30, 10:30] = True
    >>> int(attention_instances(m).max())
    1
    """
    b, back = as_tensor(binary_mask, "binary_mask", ndim=2, dtypes=(torch.bool, torch.uint8))
    b = b != 0 if b.dtype != torch.bool else b
    if b.numel() == 0:  # nothing to segment (scikit-image's peak_local_max raises here)
        return back(torch.zeros(b.shape, dtype=torch.int32, device=b.device))
    b = binary_open_close(b, (2, 1))
    d = gaussian_filter(distance_transform_edt(b), 1.0)
    peaks = peak_local_max(d, footprint=_DISK7.to(d.device), labels=b, output="mask")
    markers, _ = label(peaks)
    return back(watershed(-d, markers, mask=b))


def cross_dilate_labels(labels: torch.Tensor) -> torch.Tensor:
    """Grow every label onto the background pixels 4-adjacent to it; where several labels meet, the
    largest (latest) wins. Equals the per-label loop of ``reference.cross_dilate_labels_reference``."""
    lab = labels
    grown = torch.zeros_like(lab)
    grown[1:, :] = torch.maximum(grown[1:, :], lab[:-1, :])
    grown[:-1, :] = torch.maximum(grown[:-1, :], lab[1:, :])
    grown[:, 1:] = torch.maximum(grown[:, 1:], lab[:, :-1])
    grown[:, :-1] = torch.maximum(grown[:, :-1], lab[:, 1:])
    return torch.where(lab == 0, grown, lab)


def usenet_instances(
    p_mask,
    p_marker,
    *,
    mask_threshold=USENET_MASK_THRESHOLD,
    marker_threshold=USENET_MARKER_THRESHOLD,
    method="ridges",
):
    """Instances from USE-Net's mask and shape-marker probabilities (REFERENCE.md 2).

    mask = (p_mask > 0.1) minus objects < 50 px; marker = (p_marker > 0.1) minus objects < 20 px; ridges =
    ``watershed(edt(~marker), label(marker, 8-conn), watershed_line=True) == 0``; cut the mask along them;
    remove objects < 50 px; fill holes < 100 px; label (8-connectivity); grow each label by a 3x3 cross
    onto the background (later labels win).

    ``method="watershed"`` (nucfast's alternative, chosen per model on validation images): mask =
    (p_mask > t) minus objects < 50 px, holes < 100 px filled; seeds = label((p_marker > t_k) & mask minus
    blobs < 10 px, 8-conn); ``watershed(-(p_mask + p_marker), seeds, mask=mask)`` (float64); every mask
    component without a seed becomes one more label (numbered after the seeds, raster order).

    Parameters
    ----------
    p_mask, p_marker : (rows, cols) float32/float64 arrays/tensors, same shape and device, no NaN.
    method : ``"ridges"`` (the paper's) or ``"watershed"``

    Returns
    -------
    labels : (rows, cols) int32, same kind and device as ``p_mask``.
    """
    if method not in USENET_METHODS:
        raise ValueError(f"method must be one of {USENET_METHODS}, got {method!r}")
    pm, back = as_tensor(p_mask, "p_mask", ndim=2, dtypes=(torch.float32, torch.float64), finite=True)
    pk, _ = as_tensor(p_marker, "p_marker", ndim=2, dtypes=(torch.float32, torch.float64), finite=True)
    if pm.shape != pk.shape:
        raise ValueError(
            f"p_mask and p_marker must have the same shape, got {tuple(pm.shape)} and {tuple(pk.shape)}"
        )
    if pm.device != pk.device:
        raise ValueError(f"p_marker is on {pk.device} but p_mask is on {pm.device}")
    if method == "watershed":
        return back(_usenet_watershed(pm, pk, mask_threshold, marker_threshold))
    mask = remove_small_objects(pm > mask_threshold, max_size=49)
    marker = remove_small_objects(pk > marker_threshold, max_size=19)
    if bool(marker.any()):
        seeds, _ = label(marker, connectivity=2)
        ws = watershed(distance_transform_edt(~marker), seeds, watershed_line=True)
        mask = mask & (ws != 0)
    mask = remove_small_objects(mask, max_size=49)
    mask = remove_small_holes(mask, max_size=99)
    lab, _ = label(mask, connectivity=2)
    return back(cross_dilate_labels(lab))


def _usenet_watershed(pm: torch.Tensor, pk: torch.Tensor, mask_threshold, marker_threshold) -> torch.Tensor:
    mask = remove_small_holes(remove_small_objects(pm > mask_threshold, max_size=49), max_size=99)
    marker = remove_small_objects((pk > marker_threshold) & mask, max_size=9)
    seeds, n = label(marker, connectivity=2)
    energy = pm.to(torch.float64, copy=True).add_(pk).neg_()  # -(p_mask + p_marker) in float64, one buffer
    lab = watershed(energy, seeds, mask=mask)
    rest = mask & (lab == 0)
    extra, _ = label(rest, connectivity=2)
    return torch.where(rest, extra + int(n), lab)


# -- the device path: no host synchronisation in Python ---------------------------------------------
def _drop_small(b: torch.Tensor, max_size: int, connectivity: int) -> torch.Tensor:
    """``remove_small_objects(b, max_size=max_size)`` of a bool tensor with device-side counts only (no
    ``.item()``, no ``bincount`` output size from the data)."""
    ccs = ops.label(b, connectivity)[0].reshape(-1).long()
    sizes = torch.zeros(ccs.numel() + 1, dtype=torch.int64, device=b.device)
    sizes.scatter_add_(0, ccs, torch.ones_like(ccs))
    return b & (sizes[ccs] > max_size).reshape(b.shape)


def usenet_watershed_device(pm: torch.Tensor, pk: torch.Tensor, mask_threshold, marker_threshold):
    """``usenet_instances(pm, pk, method="watershed", ...)`` (identical labels, tested) for the slide engine's
    device-resident path: the raw nucfast ops without the public wrappers' host-side checks (the inputs are
    a network's sigmoid outputs on one device, so finite), with the counts kept on the device, so the Python
    code never waits for the device. The ops themselves still read their component count back (the CUDA
    ``label`` returns it as a host scalar): three reads per tile."""
    mask = ~_drop_small(~_drop_small(pm > mask_threshold, 49, 1), 99, 1)  # objects <= 49 px, holes <= 99 px
    marker = _drop_small((pk > marker_threshold) & mask, 9, 1)
    seeds, n = ops.label(marker, 2)
    energy = pm.to(torch.float64, copy=True).add_(pk).neg_().contiguous()
    lab = ops.watershed(energy, seeds.contiguous(), mask.contiguous(), 1, False)
    rest = mask & (lab == 0)
    extra, _ = ops.label(rest, 2)
    return torch.where(rest, extra + n.to(extra.device, extra.dtype), lab)
