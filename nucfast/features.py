"""Hand-crafted per-nucleus morphology and colour features: the baseline Nuc2Vec is measured against.

``handcrafted_features(rgb, labels)`` -> ``(ids, X, names)``: for every label (ascending) its area, major
and minor axis lengths, eccentricity, solidity (scikit-image ``regionprops``), and the mean and standard
deviation over the nucleus' pixels of R, G, B (0-255) and of the haematoxylin and eosin optical densities
(:func:`nucfast.stain.rgb_to_hed`): 15 columns, float64.
"""

from __future__ import annotations

import numpy as np
import torch

from .stain import rgb_to_hed

__all__ = ["handcrafted_features", "FEATURE_NAMES", "MORPHOLOGY"]

MORPHOLOGY = ("area", "axis_major_length", "axis_minor_length", "eccentricity", "solidity")
_CHANNELS = ("R", "G", "B", "H_od", "E_od")
FEATURE_NAMES = MORPHOLOGY + tuple(f"{s}_{c}" for s in ("mean", "std") for c in _CHANNELS)


def handcrafted_features(
    rgb: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features (n, 15) of the nuclei of ``labels`` (H, W) in the uint8 RGB image ``rgb`` (H, W, 3).

    Returns ``(ids int64 (n,), X float64 (n, 15), FEATURE_NAMES)``."""
    from skimage.measure import regionprops_table  # optional heavy dependency (scikit-image)

    rgb = np.asarray(rgb)
    labels = np.ascontiguousarray(labels)
    if rgb.ndim != 3 or rgb.shape[-1] < 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.shape} {rgb.dtype}")
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"labels has shape {labels.shape} but rgb is {rgb.shape[:2]}")
    x = torch.from_numpy(np.ascontiguousarray(rgb[..., :3])).permute(2, 0, 1).double() / 255.0
    hed = rgb_to_hed(x).permute(1, 2, 0).numpy()[..., :2]
    inten = np.concatenate([rgb[..., :3].astype(np.float64), hed], -1)
    t = regionprops_table(
        labels, inten, properties=("label",) + MORPHOLOGY + ("intensity_mean", "intensity_std")
    )
    cols = [t[m] for m in MORPHOLOGY]
    cols += [t[f"intensity_mean-{i}"] for i in range(5)] + [t[f"intensity_std-{i}"] for i in range(5)]
    X = np.stack(cols, 1).astype(np.float64) if len(t["label"]) else np.zeros((0, len(FEATURE_NAMES)))
    return np.asarray(t["label"], np.int64), X, FEATURE_NAMES
