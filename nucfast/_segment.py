"""Whole-image inference: ``segment_image(rgb, model=...)`` -> instance labels (+ per-nucleus table)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["segment_image", "load_model", "SegmentationModel", "WEIGHTS_DIR", "BUILTIN_MODELS"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUILTIN_MODELS = {"usenet": "usenet_lite.safetensors", "attention": "attention.safetensors"}


class SegmentationModel:
    """A loaded network plus what inference needs: stain normaliser, kind, post-processing."""

    def __init__(self, net: torch.nn.Module, meta: dict[str, Any], kind: str):
        self.net = net.eval()
        self.meta = meta
        self.kind = kind
        self.normalizer = None
        st = meta.get("normalizer") or {}
        if meta.get("norm", "none") == "reinhard" and st:
            from .stain import ReinhardNormalizer

            self.normalizer = ReinhardNormalizer().load_state_dict(
                {k: torch.tensor(v, dtype=torch.float64) for k, v in st.items()}
            )

    def to(self, device) -> SegmentationModel:
        self.net.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def __repr__(self) -> str:
        m = self.meta
        return f"SegmentationModel(kind={self.kind!r}, arch={m.get('arch')!r}, step={m.get('step')})"


def _resolve(model) -> Path:
    if isinstance(model, str) and model in BUILTIN_MODELS:
        p = WEIGHTS_DIR / BUILTIN_MODELS[model]
        if not p.exists():
            raise FileNotFoundError(
                f"model={model!r}: the shipped weights {p.name} are not in {WEIGHTS_DIR} (not trained yet?)"
            )
        return p
    p = Path(model)
    if not p.exists():
        raise FileNotFoundError(
            f"model: no such weights file {p} (or a built-in name: {sorted(BUILTIN_MODELS)})"
        )
    if p.suffix != ".safetensors":
        raise ValueError(f"model: weights must be a .safetensors file (no pickles are loaded), got {p.name}")
    return p


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> SegmentationModel:
    from .train.checkpoint import load_weights

    sd, meta = load_weights(path)
    kind = meta.get("kind", "usenet")
    if kind == "usenet":
        from .models.usenet import USENet

        net = USENet(**meta["config"])
    elif kind == "attention":
        from .models.attention import AttentionNet

        net = AttentionNet(**meta.get("config", {}))
    else:
        raise ValueError(f"model: unknown model kind {kind!r} in {path}")
    net.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()})
    return SegmentationModel(net, meta, kind)


def load_model(model="usenet", *, device=None) -> SegmentationModel:
    """Load a built-in (``"usenet"``, ``"attention"``) or a ``.safetensors`` file (never unpickles)."""
    if isinstance(model, SegmentationModel):
        m = model
    else:
        p = _resolve(model)
        m = _load_cached(str(p), p.stat().st_mtime)
    if device is not None:
        m.to(device)
    return m


_DIHEDRAL = [(k, f) for f in (False, True) for k in range(4)]


def _tf(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, k, (-2, -1))


def _tf_inv(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, -k, (-2, -1))
    return x.flip(-1) if flip else x


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


@torch.no_grad()
def predict(
    model: SegmentationModel, x01: torch.Tensor, *, tta: bool = False, tile: int = 1024
) -> torch.Tensor:
    """Network probabilities for one image (3, H, W) in [0, 1] (already stain-normalised): USE-Net ->
    (2, H, W) mask/marker; attention -> (1, H, W) attention map."""
    if model.kind == "usenet":
        from .train.usenet import predict_probs

        def f(z):
            return predict_probs(model.net, z, tile=tile)
    else:
        from .models.attention import predict_attention

        def f(z):
            return predict_attention(model.net, z, tile=tile)

    return dihedral_average(f, x01) if tta else f(x01)


def dihedral_average(f, x: torch.Tensor) -> torch.Tensor:
    """Mean of ``f`` over the 8 flips/rotations of ``x`` (..., H, W), each output mapped back."""
    acc = None
    for k, fl in _DIHEDRAL:
        p = _tf_inv(f(_tf(x, k, fl).contiguous()), k, fl)
        acc = p if acc is None else acc + p
    return acc / len(_DIHEDRAL)


def postprocess_probs(model: SegmentationModel, probs: np.ndarray, postprocess=None) -> np.ndarray:
    """Instances from network probabilities with the model's post-processing: USE-Net uses the method and
    thresholds selected on the validation images (weights metadata ``postprocess``; the paper's ridges at
    0.1 / 0.1 when absent); attention thresholds at 0.5. ``postprocess`` overrides (see segment_image)."""
    from .postprocess import attention_instances, usenet_instances

    if model.kind == "usenet":
        if postprocess is not None:
            return postprocess(probs[0].astype(np.float64), probs[1].astype(np.float64))
        return usenet_instances(probs[0], probs[1], **(model.meta.get("postprocess") or {}))
    return (postprocess or attention_instances)(probs[0] > 0.5)


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
    model : {"usenet", "attention"}, path to a ``.safetensors`` file, or a :class:`SegmentationModel`
    tta : average the network output over the 8 flips/rotations (each mapped back)
    normalize : apply the model's stain normalisation (fitted target statistics stored with the weights)
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
    m = load_model(model)
    dev = torch.device(device) if device is not None else (in_dev if in_dev.type != "cpu" else m.device)
    m.to(dev)
    x = x.to(dev)
    if normalize and m.normalizer is not None:
        x = m.normalizer.transform(x)
    probs = predict(m, x, tta=tta, tile=tile).float().cpu().numpy()
    labels = postprocess_probs(m, probs, postprocess)
    labels = np.ascontiguousarray(np.asarray(labels), dtype=np.int32)
    out_labels = labels if is_np else torch.from_numpy(labels).to(in_dev)
    out = [out_labels]
    if return_table:
        out.append(nucleus_table(labels))
    if return_probs:
        out.append(probs)
    return out[0] if len(out) == 1 else tuple(out)
