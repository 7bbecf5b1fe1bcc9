"""Whole-image inference: ``segment_image(rgb, model=...)`` -> instance labels (+ per-nucleus table)."""

from __future__ import annotations

import numpy as np
import torch

from . import models
from .baseline import haematoxylin_baseline
from .models import WEIGHTS_DIR, Model, dihedral_average
from .slide.tissue import image_tissue_sample

__all__ = ["segment_image", "load_model", "SegmentationModel", "WEIGHTS_DIR", "BUILTIN_MODELS"]

#: Deprecated: the model layer's registry (:func:`nucfast.models.names`) replaces this table.
BUILTIN_MODELS = {n: models.spec(n).weights for n in models.names() if models.spec(n).weights}
#: Deprecated alias of :class:`nucfast.models.Model`.
SegmentationModel = Model


def load_model(model="usenet", *, device=None) -> Model:
    """Load a model by name (:func:`nucfast.models.names`) or ``.safetensors`` file (= models.load)."""
    return models.load(model, device=device)


def _as_rgb01(rgb) -> tuple[torch.Tensor, bool, torch.device]:
    is_np = isinstance(rgb, np.ndarray)
    if not (is_np or isinstance(rgb, torch.Tensor)):
        raise TypeError(f"rgb must be a numpy array or a torch tensor, got {type(rgb).__name__}")
    t = torch.from_numpy(np.array(rgb, copy=True)) if is_np else rgb
    dev = t.device
    if t.ndim == 3 and t.shape[-1] in (3, 4) and t.dtype == torch.uint8:
        return t[..., :3].permute(2, 0, 1).float() / 255.0, is_np, dev
    if t.ndim == 3 and t.shape[0] == 3 and t.is_floating_point():
        if not torch.isfinite(t).all():
            raise ValueError("rgb contains NaN or infinite values")
        return t.float().clamp(0, 1), is_np, dev
    raise ValueError(
        f"rgb must be uint8 (H, W, 3) or float (3, H, W) in [0, 1], got {tuple(t.shape)} {t.dtype}"
    )


def _tissue_sample(rgb: np.ndarray, mpp: float) -> list[np.ndarray]:
    """The slide engine's fixed tissue sample of an image (:func:`nucfast.slide.tissue.image_tissue_sample`),
    or the whole image when the tissue detector finds none (small or unusual images)."""
    return image_tissue_sample(rgb, mpp=mpp) or image_tissue_sample(rgb, mpp=mpp, tissue=False)


@torch.no_grad()
def predict(
    model: Model,
    x01: torch.Tensor,
    *,
    tta: bool = False,
    tile: int = 1024,
    context: models.Context | None = None,
) -> torch.Tensor:
    """Network probabilities for one image (3, H, W) in [0, 1] (already stain-normalised): USE-Net ->
    (2, H, W) mask/marker; attention -> (1, H, W) attention map (:meth:`nucfast.models.Model.predict`;
    ``context``: the image-level statistics of :meth:`nucfast.models.Model.fit_context`)."""

    def f(z):
        return model.predict(z, tile=tile, context=context)

    return dihedral_average(f, x01) if tta else f(x01)


def postprocess_probs(model: Model, probs: np.ndarray, postprocess=None) -> np.ndarray:
    """Instances from network probabilities: :meth:`nucfast.models.Model.postprocess` (``postprocess``
    overrides, see segment_image)."""
    return model.postprocess(probs, postprocess)


def nucleus_table(labels: np.ndarray, rgb: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-nucleus table (columns of equal length): label, area, centroid, bbox, shape descriptors."""
    from skimage.measure import regionprops_table

    props = ("label", "area", "centroid", "bbox", "eccentricity", "solidity", "perimeter")
    return regionprops_table(np.ascontiguousarray(labels), properties=props)


def segment_image(
    rgb,
    model="usenet",
    *,
    tta: bool = False,
    normalize: bool = True,
    return_table: bool = False,
    return_probs: bool = False,
    postprocess=None,
    device=None,
    tile: int = 1024,
):
    """Segment the nuclei of one RGB image of any size that fits in memory.

    Parameters
    ----------
    rgb : uint8 array/tensor (H, W, 3) or float tensor (3, H, W) in [0, 1]
        The image; a CUDA tensor runs the network on that device.
    model : a segmentation model name (``"usenet"``, ``"attention"``, ``"baseline"``, ...:
        :func:`nucfast.models.names`), a ``.safetensors`` file, or a :class:`nucfast.models.Model`
    tta : average the network output over the 8 flips/rotations (each mapped back)
    normalize : apply the model's stain normalisation (Reinhard to the target statistics stored with the
        weights; source statistics from the image's tissue sample, the rule ``segment_slide`` uses, so both
        entry points see the same colours; USE-Net's squeeze-excitation gates come from the same sample)
    return_table : also return the per-nucleus table (``skimage.measure.regionprops_table`` columns)
    return_probs : also return the network probabilities (numpy, (C, H, W))
    postprocess : callable replacing the model's post-processing (:func:`postprocess_probs`); USE-Net:
        ``f(p_mask, p_marker)``, attention: ``f(binary)``; both return int labels
    device : run the network here (default: the tensor's device, else CPU)
    tile : images larger than this on a side run in overlapping tiles

    Returns
    -------
    labels : (H, W) int32 instance labels, numpy for numpy input, a tensor on the input's device otherwise
    table : dict of numpy columns (if ``return_table``)
    probs : (C, H, W) numpy float32 (if ``return_probs``)

    Examples
    --------
    >>> labels = nucfast.segment_image(rgb)                        # doctest: +SKIP
    >>> labels, table = nucfast.segment_image(rgb, tta=True, return_table=True)  # doctest: +SKIP
    """
    x, is_np, in_dev = _as_rgb01(rgb)
    m = models.load(model)
    if m.task != "segmentation":
        raise ValueError(f"model {m.name!r} is a {m.task} model, not a segmentation model")
    if m.net is None:  # the no-learning baseline
        if return_probs:
            raise ValueError(f"model {m.name!r} has no network probabilities (return_probs=True)")
        labels = haematoxylin_baseline(x.cpu())
        probs = None
    else:
        dev = torch.device(device) if device is not None else (in_dev if in_dev.type != "cpu" else m.device)
        m.to(dev)
        u8 = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        ctx = m.fit_context(_tissue_sample(u8, m.mpp), normalize=normalize)
        if getattr(rgb, "dtype", None) in (np.uint8, torch.uint8):  # the slide engine's fused op
            x = ctx.normalize_u8(torch.as_tensor(u8).to(dev))
        else:
            x = ctx.normalize(x.to(dev))
        probs = predict(m, x, tta=tta, tile=tile, context=ctx).float().cpu().numpy()
        labels = postprocess_probs(m, probs, postprocess)
    labels = np.ascontiguousarray(np.asarray(labels), dtype=np.int32)
    out_labels = labels if is_np else torch.from_numpy(labels).to(in_dev)
    out = [out_labels]
    if return_table:
        out.append(nucleus_table(labels))
    if return_probs:
        out.append(probs)
    return out[0] if len(out) == 1 else tuple(out)
