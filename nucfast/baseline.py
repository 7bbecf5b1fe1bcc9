"""No-learning baseline: haematoxylin channel (colour deconvolution) + Otsu + the attention post-processing.

``haematoxylin_baseline(rgb)`` -> instance labels. It is the reference point below which a trained model is
not worth shipping, and an annotation-free pseudo-label source for the attention network.
"""

from __future__ import annotations

import numpy as np
import torch

from .postprocess import attention_instances
from .stain import _to_float_chw, rgb_to_hed

__all__ = ["haematoxylin_map", "haematoxylin_baseline"]


def haematoxylin_map(rgb) -> np.ndarray:
    """Haematoxylin concentration (Ruifrok-Johnston colour deconvolution, as ``skimage.color.rgb2hed``)."""
    x, _ = _to_float_chw(rgb, "rgb")
    if x.ndim != 3:
        raise ValueError(f"rgb must be one image, got shape {tuple(x.shape)}")
    return rgb_to_hed(x.to(torch.float64))[0].cpu().numpy()


def haematoxylin_baseline(rgb, *, normalizer=None, return_binary: bool = False):
    """Segment nuclei without learning: H channel > Otsu threshold, then
    :func:`nucfast.postprocess.attention_instances` (equal to its scipy/scikit-image reference,
    ``nucfast.postprocess.reference.attention_instances_reference``: tested).

    Parameters
    ----------
    rgb : uint8 (H, W, 3) or float (3, H, W) in [0, 1]
    normalizer : optional fitted stain normaliser applied first (e.g. Reinhard to the training target)
    return_binary : also return the thresholded mask
    """
    from skimage.filters import threshold_otsu  # optional dependency (scikit-image)

    if normalizer is not None:
        rgb = normalizer.transform(rgb)
    h = haematoxylin_map(rgb)
    binary = h > threshold_otsu(h)
    labels = attention_instances(binary)
    return (labels, binary) if return_binary else labels
