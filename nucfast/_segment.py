"""Whole-image inference: ``segment_image(rgb, model=...)`` -> instance labels (+ per-nucleus table)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import models
from .baseline import haematoxylin_baseline
from .datasets import list_names, read_rgb
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


#: The smallest image side segment_image accepts (every entry point copes with 1 px: padded windows).
MIN_SIDE = 1
#: The largest image segment_image accepts, in pixels (about 3 GB of float32 input alone): larger
#: images are slides, for :func:`nucfast.segment_slide`.
MAX_PIXELS = 1 << 28
#: Fewer non-glass pixels than this (:func:`nucfast.models.tissue_pixels`) and the stain normalisation is
#: skipped (nothing to estimate it from; such an image holds no nucleus, ~6 um^2 at 0.25 um/px).
MIN_TISSUE_PIXELS = 100


def _as_rgb01(rgb) -> tuple[torch.Tensor, bool, torch.device]:
    """The image as float (3, H, W) in [0, 1]: uint8 (H, W, 3|4) or float (3, H, W) already in [0, 1].

    Nothing is guessed: a float image outside [0, 1] (e.g. 0-255 values), a channels-last float image, a
    channels-first uint8 image, an ambiguous (3, W, 3) float image, other dtypes and images smaller than
    ``MIN_SIDE`` or larger than ``MAX_PIXELS`` raise errors saying what was given and what to pass."""
    is_np = isinstance(rgb, np.ndarray)
    if not (is_np or isinstance(rgb, torch.Tensor)):
        raise TypeError(f"rgb must be a numpy array or a torch tensor, got {type(rgb).__name__}")
    shape = tuple(rgb.shape)
    dt = str(rgb.dtype).replace("torch.", "")
    expect = "uint8 (H, W, 3) or float (3, H, W) in [0, 1]"
    if len(shape) != 3:
        raise ValueError(f"rgb must be {expect}, got shape {shape}")
    is_u8 = dt == "uint8"
    is_float = dt in ("float16", "bfloat16", "float32", "float64")
    if is_u8:
        if shape[-1] not in (3, 4):
            hint = " (channels first: use rgb.transpose(1, 2, 0))" if shape[0] in (3, 4) else ""
            raise ValueError(f"uint8 rgb must be (H, W, 3) or (H, W, 4), got shape {shape}{hint}")
        h, w = shape[0], shape[1]
    elif is_float:
        if shape[0] == 3 and shape[-1] == 3:
            raise ValueError(
                f"float rgb of shape {shape} is ambiguous (channels first or last?): pass uint8 (H, W, 3), "
                "or a float (3, H, W) image wider than 3 px"
            )
        if shape[0] != 3:
            hint = " (channels last: use .transpose(2, 0, 1) / .permute(2, 0, 1))" if shape[-1] == 3 else ""
            raise ValueError(f"float rgb must be (3, H, W) in [0, 1], got shape {shape}{hint}")
        h, w = shape[1], shape[2]
    else:
        raise TypeError(f"rgb must be {expect}, got dtype {dt}")
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"rgb is an empty {h}x{w} image")
    if h * w > MAX_PIXELS:
        raise ValueError(
            f"rgb is {h}x{w} = {h * w / 1e6:.0f} MP, more than segment_image's {MAX_PIXELS / 1e6:.0f} MP; "
            "write it as a tiled TIFF and use nucfast.segment_slide (bounded memory)"
        )
    t = torch.from_numpy(np.array(rgb, copy=True)) if is_np else rgb.detach()
    dev = t.device
    if is_u8:
        return t[..., :3].permute(2, 0, 1).float() / 255.0, is_np, dev
    if not bool(torch.isfinite(t).all()):
        raise ValueError("rgb contains NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0 or hi > 1:
        raise ValueError(
            f"float rgb must be in [0, 1], got values in [{lo:g}, {hi:g}]"
            + (" (a 0-255 image: divide by 255 or pass uint8 (H, W, 3))" if hi > 1 else "")
        )
    return t.float(), is_np, dev


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
        The image, not empty and at most ``MAX_PIXELS`` (2^28) px; a CUDA
        tensor runs the network on that device. Nothing is guessed: float values outside [0, 1], other
        layouts and dtypes raise errors.
    model : a segmentation model name (``"usenet"``, ``"attention"``, ``"baseline"``, ...:
        :func:`nucfast.models.names`), a ``.safetensors`` file, or a :class:`nucfast.models.Model`
    tta : average the network output over the 8 flips/rotations (each mapped back)
    normalize : apply the model's stain normalisation (Reinhard to the target statistics stored with the
        weights; source statistics from the image's tissue sample, the rule ``segment_slide`` uses, so both
        entry points see the same colours; USE-Net's squeeze-excitation gates come from the same sample).
        Skipped for an image with fewer than ``MIN_TISSUE_PIXELS`` non-glass pixels (all glass).
    return_table : also return the per-nucleus table (``skimage.measure.regionprops_table`` columns)
    return_probs : also return the network probabilities (numpy, (C, H, W))
    postprocess : callable replacing the model's post-processing (:func:`postprocess_probs`); USE-Net:
        ``f(p_mask, p_marker)``, attention: ``f(binary)``; both return int labels
    device : run the network here (default: the tensor's device, else CPU)
    tile : images larger than this on a side run in overlapping tiles (each window must keep a third of its
        side: USE-Net >= 447, attention >= 288)

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
    if isinstance(tile, bool) or not isinstance(tile, int | np.integer):
        raise TypeError(f"tile must be an integer number of pixels, got {tile!r}")
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
        # an image with (almost) no tissue has no stain statistics to normalise from: run it as is
        has_tissue = int(models.tissue_pixels(u8).sum()) >= MIN_TISSUE_PIXELS
        ctx = m.fit_context(_tissue_sample(u8, m.mpp), normalize=normalize and has_tissue)
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


def calibration_feeds(model: Model, data_dir, *, images: int = 24, crops: int = 2, size: int = 256,
                      seed: int = 0) -> tuple[list[dict], str]:  # fmt: skip
    """Calibration inputs for :func:`nucfast.engines._quantize.quantize_int8`: ``crops`` random ``size``-px
    crops (on the 32-px grid) of each of the first ``images`` training images of ``data_dir`` (never the
    validation images named in the weights' metadata), Reinhard-normalised with the image's own tissue
    statistics and with the SE gates fitted on the same sample, as ``segment_image`` does. Returns the
    feeds and a description for the graph's metadata."""
    val = set(model.meta.get("val_names", []))
    names = [n for n in list_names(Path(data_dir)) if n not in val][:images]
    if not names:
        raise ValueError(f"no training images (NAME.png + NAME_inst.tif, not validation) in {data_dir}")
    rng = np.random.default_rng(seed)
    feeds = []
    for n in names:
        rgb = np.array(read_rgb(Path(data_dir) / f"{n}.png")[..., :3])  # a writable copy
        ctx = model.fit_context(_tissue_sample(rgb, model.mpp))
        x = ctx.normalize_u8(torch.from_numpy(rgb)).numpy()
        H, W = x.shape[1:]
        for _ in range(crops):
            r = int(rng.integers(0, max(H - size, 0) + 1)) // 32 * 32
            c = int(rng.integers(0, max(W - size, 0) + 1)) // 32 * 32
            f = {"image": np.ascontiguousarray(x[None, :, r : r + size, c : c + size])}
            f.update({k: v.numpy().astype(np.float32) for k, v in ctx.inputs.items()})
            feeds.append(f)
    what = (f"{size}-px stain-normalised crops of {len(names)} training images of {Path(data_dir).name} "
            "(validation images excluded), SE gates fitted per image")  # fmt: skip
    return feeds, what
