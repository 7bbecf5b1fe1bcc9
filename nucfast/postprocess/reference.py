"""Reference (scipy / scikit-image) implementations of the two instance post-processings.

These are the correctness oracles for the fast pipelines and the "scipy backend" of the slide engine. They
follow /work/shared/docs/REFERENCE.md sections 1 (attention model, section 3.4 of the paper) and 2 (USE-Net)
literally; every library call is spelled out so the semantics are those of the installed scipy and
scikit-image 0.26. Arrays are made C-contiguous before they reach scikit-image (its watershed silently
returns unflooded markers for Fortran-ordered ``markers``/``mask``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "attention_instances_reference",
    "usenet_instances_reference",
    "cross_dilate_labels_reference",
    "USENET_MASK_THRESHOLD",
    "USENET_MARKER_THRESHOLD",
]

USENET_MASK_THRESHOLD = 0.1
USENET_MARKER_THRESHOLD = 0.1
USENET_MIN_MASK = 50  # objects < 50 px are removed from the mask (before and after the cut)
USENET_MIN_MARKER = 20  # marker blobs < 20 px are removed
USENET_MAX_HOLE = 100  # holes < 100 px are filled

_CROSS = ndi.generate_binary_structure(2, 1)
_FULL = ndi.generate_binary_structure(2, 2)


def _as_2d(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, cols), got shape {a.shape}")
    return a


def _as_prob(x, name: str) -> np.ndarray:
    a = _as_2d(x, name)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point probability map, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(a)


def attention_instances_reference(binary) -> np.ndarray:
    """Post-processing of the attention model (REFERENCE.md 1, paper section 3.4), with scipy/scikit-image.

    1. opening disk(2), closing disk(2), opening disk(1), closing disk(1) (``scipy.ndimage``, border 0);
    2. ``d = gaussian_filter(distance_transform_edt(b), sigma=1)`` in float64 (truncate 4, mode reflect);
    3. ``peak_local_max(d, footprint=disk(7), labels=b)`` (default ``exclude_border``), markers =
       ``scipy.ndimage.label`` of the peak image (4-connectivity);
    4. ``watershed(-d, markers, mask=b)`` (connectivity 1, compactness 0, no line).

    Parameters
    ----------
    binary : (rows, cols) array_like of bool
        Foreground mask (e.g. attention map > 0.5). Non-bool input is converted with ``!= 0``.

    Returns
    -------
    labels : (rows, cols) ndarray of int32
        Instance labels, 0 = background.
    """
    from skimage.feature import peak_local_max
    from skimage.morphology import disk
    from skimage.segmentation import watershed

    b = _as_2d(binary, "binary")
    b = np.ascontiguousarray(b != 0) if b.dtype != bool else np.ascontiguousarray(b)
    b = ndi.binary_opening(b, structure=disk(2))
    b = ndi.binary_closing(b, structure=disk(2))
    b = ndi.binary_opening(b, structure=disk(1))
    b = ndi.binary_closing(b, structure=disk(1))
    b = np.ascontiguousarray(b)
    d = ndi.gaussian_filter(ndi.distance_transform_edt(b).astype(np.float64), sigma=1)
    coords = peak_local_max(d, footprint=disk(7), labels=b)
    peaks = np.zeros(b.shape, dtype=bool)
    if len(coords):
        peaks[tuple(coords.T)] = True
    markers, _ = ndi.label(peaks)
    labels = watershed(-d, np.ascontiguousarray(markers), mask=b)
    return np.ascontiguousarray(labels, dtype=np.int32)


def cross_dilate_labels_reference(labels) -> np.ndarray:
    """Dilate each label by a 3x3 cross onto background pixels, in increasing label order (later wins).

    Literal loop over labels (the oracle). Pixels of other labels are never overwritten (an 8-connected
    labelling never has two labels 4-adjacent, so in USE-Net's use only background is reached).
    """
    lab = np.ascontiguousarray(_as_2d(labels, "labels"))
    out = lab.copy()
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        # grow the bounding box by one pixel (clipped) so the dilation fits
        sl2 = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(sl, lab.shape, strict=True)
        )
        grown = ndi.binary_dilation(lab[sl2] == i, structure=_CROSS)
        region = out[sl2]
        region[grown & (lab[sl2] == 0)] = i
    return out


def usenet_instances_reference(
    p_mask,
    p_marker,
    *,
    mask_threshold: float = USENET_MASK_THRESHOLD,
    marker_threshold: float = USENET_MARKER_THRESHOLD,
    method: str = "ridges",
) -> np.ndarray:
    """USE-Net post-processing (REFERENCE.md 2) with scipy/scikit-image.

    1. ``mask = p_mask > 0.1`` minus objects < 50 px; ``marker = p_marker > 0.1`` minus objects < 20 px
       (``remove_small_objects``, connectivity 1, i.e. ``max_size=49`` / ``19``);
    2. ridges: ``watershed(edt(~marker), label(marker), watershed_line=True) == 0`` (marker blobs labelled
       with 8-connectivity, watershed connectivity 1): the SKIZ lines between marker blobs;
    3. ``mask[ridges] = False``; remove objects < 50 px; fill holes < 100 px (``remove_small_holes``,
       connectivity 1, ``max_size=99``);
    4. label with 8-connectivity (raster order); dilate each label by a 3x3 cross onto the background,
       later labels winning (:func:`cross_dilate_labels_reference`).

    When ``marker`` is empty there are no ridges (the watershed has no seeds) and the mask is kept whole.

    ``method="watershed"``: mask = (p_mask > t) minus objects < 50 px, holes < 100 px filled; seeds =
    ``label((p_marker > t_k) & mask`` minus blobs < 10 px, 8-conn); ``watershed(-(p_mask + p_marker), seeds,
    mask=mask)`` in float64; each mask component left without a seed becomes one more label (numbered after
    the seeds in raster order).

    Parameters
    ----------
    p_mask, p_marker : (rows, cols) float arrays
        Sigmoid probabilities of the mask and shape-marker heads.

    Returns
    -------
    labels : (rows, cols) ndarray of int32
    """
    from skimage.measure import label as sk_label
    from skimage.morphology import remove_small_holes, remove_small_objects
    from skimage.segmentation import watershed

    pm = _as_prob(p_mask, "p_mask")
    pk = _as_prob(p_marker, "p_marker")
    if pm.shape != pk.shape:
        raise ValueError(f"p_mask and p_marker must have the same shape, got {pm.shape} and {pk.shape}")
    if method == "watershed":
        mask = remove_small_objects(np.ascontiguousarray(pm > mask_threshold), max_size=USENET_MIN_MASK - 1)
        mask = remove_small_holes(mask, max_size=USENET_MAX_HOLE - 1)
        marker = remove_small_objects(np.ascontiguousarray((pk > marker_threshold) & mask), max_size=9)
        seeds, n = ndi.label(marker, structure=_FULL)
        energy = -(pm.astype(np.float64) + pk.astype(np.float64))
        lab = watershed(energy, seeds.astype(np.int32), mask=mask).astype(np.int32)
        rest = mask & (lab == 0)
        extra, _ = ndi.label(rest, structure=_FULL)
        lab[rest] = extra[rest] + n
        return lab
    if method != "ridges":
        raise ValueError(f"method must be 'ridges' or 'watershed', got {method!r}")
    mask = remove_small_objects(np.ascontiguousarray(pm > mask_threshold), max_size=USENET_MIN_MASK - 1)
    marker = remove_small_objects(np.ascontiguousarray(pk > marker_threshold), max_size=USENET_MIN_MARKER - 1)
    if marker.any():
        seeds = np.ascontiguousarray(sk_label(marker, connectivity=2))
        dist = ndi.distance_transform_edt(~marker)
        ws = watershed(dist, seeds, watershed_line=True)
        mask = mask & (ws != 0)
    mask = remove_small_objects(np.ascontiguousarray(mask), max_size=USENET_MIN_MASK - 1)
    mask = remove_small_holes(np.ascontiguousarray(mask), max_size=USENET_MAX_HOLE - 1)
    lab, _ = ndi.label(mask, structure=_FULL)
    return cross_dilate_labels_reference(lab.astype(np.int32))
