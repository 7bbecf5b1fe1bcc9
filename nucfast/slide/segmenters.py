"""Per-tile segmenters: ``rgb tile -> (instance labels, per-label scores)``.

The slide engine only needs this small protocol (duck-typed), so trained models and fast kernels plug in
without touching the engine:

- ``name`` (str), ``mpp`` (float: microns per pixel of the resolution it works at),
  ``halo`` (int: pixels of context each side, at ``mpp``, so that every nucleus touching a tile core is
  complete and unaffected by the tile border: largest nucleus + the sum of the kernels' radii);
- optional ``fit(samples)``: slide-level statistics from a fixed, tiling-independent sample of tissue
  patches (list of uint8 RGB arrays), called once before any tile;
- optional ``state()`` -> JSON-able dict (recorded in the run manifest: a resumed run must match it);
- ``__call__(rgb)`` with ``rgb`` a (h, w, 3) uint8 array -> :class:`TileSegmentation`.
- optional ``timing`` dict of cumulative seconds per sub-stage (e.g. ``infer``, ``postprocess``).

:class:`ModelSegmenter` runs a trained network (USE-Net, the default, or the attention model);
:class:`BaselineSegmenter` is the no-learning baseline: haematoxylin by colour deconvolution, one
slide-level Otsu threshold, then the attention model's post-processing (REFERENCE.md 1, steps 1-4).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "TileSegmentation",
    "BaselineSegmenter",
    "ModelSegmenter",
    "hed_optical_density",
    "get_segmenter",
    "SEGMENTERS",
]


#: ``backend=`` values of the slide engine: a device (the engine picked by ``select_backend``) or an engine.
BACKENDS = ("auto", "cpu", "cuda", "torch", "onnxruntime", "tensorrt")


@dataclass
class TileSegmentation:
    """Result of a segmenter on one tile.

    labels : (h, w) int32 instance labels (0 = background).
    scores : float32 array indexed by label (``scores[k]`` for label k; index 0 unused) or None (= 1).
    hed : optional (h, w, >=2) float haematoxylin/eosin optical densities of the tile, when the segmenter
        computed them anyway (saves the engine's measurement step recomputing them).
    """

    labels: np.ndarray
    scores: np.ndarray | None = None
    hed: np.ndarray | None = None


def hed_optical_density(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin, eosin, DAB optical densities (``skimage.color.rgb2hed``), float32 (h, w, 3)."""
    from skimage.color import rgb2hed

    return rgb2hed(np.asarray(rgb)[..., :3]).astype(np.float32)


def _tissue_pixels(rgb: np.ndarray) -> np.ndarray:
    """Pixels that are not glass (some channel below 220): what slide-level statistics are fitted on."""
    return rgb.min(axis=2) < 220


def _mean_per_label(labels: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """float32 mean of ``values`` over each label 0..n (per-nucleus scores; index 0 unused)."""
    cnt = np.bincount(labels.ravel(), minlength=n + 1)
    tot = np.bincount(labels.ravel(), weights=values.ravel().astype(np.float64), minlength=n + 1)
    return (tot / np.maximum(cnt, 1)).astype(np.float32)


def attention_postprocess(binary: np.ndarray) -> np.ndarray:
    """The attention post-processing (REFERENCE.md 1 steps 1-4) with the nucfast kernels.

    Identical to ``nucfast.postprocess.reference.attention_instances_reference`` (tested there).
    """
    from nucfast.postprocess import attention_instances

    return attention_instances(np.ascontiguousarray(binary, dtype=bool))


def _resolve_postprocess(postprocess):
    if postprocess is None or postprocess == "nucfast":
        return attention_postprocess
    if postprocess == "reference":
        from nucfast.postprocess.reference import attention_instances_reference

        return attention_instances_reference
    if callable(postprocess):
        return postprocess
    raise ValueError(f"postprocess must be 'nucfast', 'reference' or a callable, got {postprocess!r}")


class BaselineSegmenter:
    """No-learning baseline: haematoxylin OD > slide-level Otsu threshold -> attention post-processing.

    Parameters
    ----------
    threshold : float, optional
        Fixed haematoxylin OD threshold; by default estimated once per slide by :meth:`fit` (Otsu on the
        haematoxylin OD of the tissue pixels of the engine's fixed sample patches), so no value depends on
        the tiling.
    mpp : float
        Working resolution (0.25 um/px = 40x, the MoNuSeg scale the post-processing radii were set for).
    halo : int
        Context pixels each side: largest nucleus diameter (~11 um = 44 px) + opening/closing (6) +
        Gaussian (4) + peak footprint (7), rounded up to 64.
    postprocess : {"nucfast", "reference"} or callable, optional
        ``binary mask -> int labels`` implementing REFERENCE.md 1 steps 1-4: the nucfast kernels
        (default) or the scipy / scikit-image reference (for benchmarks), or any callable.

    Scores: fraction of a nucleus's pixels whose haematoxylin OD exceeds the threshold (the morphology
    may add pixels below it), a confidence in [0, 1].
    """

    name = "baseline"

    def __init__(
        self, threshold: float | None = None, *, mpp: float = 0.25, halo: int = 64, postprocess=None
    ):
        if threshold is not None and not (np.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a positive finite OD, got {threshold}")
        self.threshold = threshold
        self._fixed = threshold is not None
        self.mpp = float(mpp)
        self.halo = int(halo)
        self.timing = {"infer": 0.0, "postprocess": 0.0}
        self.postprocess = _resolve_postprocess(postprocess)
        self._lock = threading.Lock()

    def fit(self, samples) -> None:
        """Slide-level Otsu threshold on the haematoxylin OD of tissue pixels of ``samples``."""
        if self._fixed:
            return
        from skimage.filters import threshold_otsu

        vals = []
        for s in samples:
            s = np.asarray(s)
            hed = hed_optical_density(s)
            tissue = _tissue_pixels(s)
            vals.append(hed[..., 0][tissue])
        v = np.concatenate(vals) if vals else np.zeros(0, np.float32)
        if v.size < 100 or np.ptp(v) <= 0:
            raise ValueError("cannot estimate the haematoxylin threshold: the tissue sample is empty or flat")
        self.threshold = float(threshold_otsu(v))

    def state(self) -> dict:
        return {"name": self.name, "threshold": self.threshold, "mpp": self.mpp, "halo": self.halo}

    def __call__(self, rgb) -> TileSegmentation:
        if self.threshold is None:
            raise RuntimeError("BaselineSegmenter: call fit(samples) or pass threshold= before segmenting")
        t0 = time.perf_counter()
        hed = hed_optical_density(rgb)
        h = hed[..., 0]
        fg = h > self.threshold
        t1 = time.perf_counter()
        labels = np.asarray(self.postprocess(fg))
        n = int(labels.max()) if labels.size else 0
        scores = np.ones(n + 1, np.float32)
        if n:
            scores = _mean_per_label(labels, fg, n)
        t2 = time.perf_counter()
        with self._lock:
            self.timing["infer"] += t1 - t0
            self.timing["postprocess"] += t2 - t1
        return TileSegmentation(labels, scores, hed)


class ModelSegmenter:
    """A trained network on tiles: USE-Net (``"usenet"``, the default model) or the attention model
    (``"attention"``), or a ``.safetensors`` weights file.

    Per tile: Reinhard normalisation with **slide-level** source statistics (fitted once by :meth:`fit` on
    the engine's fixed tissue sample, so no value depends on the tiling), inference on the selected
    backend, then the model's post-processing with the nucfast kernels
    (:func:`nucfast._segment.postprocess_probs`: for USE-Net the method and thresholds stored with the
    weights).

    Parameters
    ----------
    model : {"usenet", "attention"} or path to weights
    backend : {"auto", "cpu", "cuda", "torch", "onnxruntime", "tensorrt"}
        ``"auto"``/``"cpu"``/``"cuda"`` choose the device and let :func:`nucfast.engines.select_backend`
        pick the engine there (TensorRT when an engine is cached, else torch, on a GPU; onnxruntime on the
        CPU); the other three force that engine.
    mpp : float
        Working resolution: 0.25 um/px, the 40x scale of the MoNuSeg training images.
    halo : int, optional
        Context each side (working px). USE-Net: 64, the largest nucleus plus the post-processing's reach,
        as for the baseline; its output also depends on the whole input window (squeeze-excitation), so
        tiled results agree closely, not exactly, with whole-image inference, and a wider halo barely
        changes that (measured for 32-128 px, docs/SLIDE.md). Attention: 160 = largest nucleus (44) + the
        network's receptive-field radius (83) + the post-processing's reach (~20, rounded up): the network
        is local, so every nucleus touching a core is computed exactly as in a whole-image run.
    tta : average over the 8 flips/rotations (8x the inference cost)
    threads : onnxruntime intra-op threads (default: torch's)
    postprocess : {"nucfast", "reference"}
        The model's post-processing with the nucfast kernels (default) or the scipy / scikit-image
        reference of the same steps (benchmarks; identical nuclei).

    Scores: the mean mask probability over each nucleus.
    """

    def __init__(
        self,
        model="usenet",
        *,
        backend: str = "auto",
        mpp: float = 0.25,
        halo: int | None = None,
        tta: bool = False,
        threads: int | None = None,
        postprocess: str = "nucfast",
    ):
        import torch

        from nucfast._segment import load_model
        from nucfast.engines import export_onnx, select_backend
        from nucfast.stain import ReinhardNormalizer

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if postprocess not in ("nucfast", "reference"):
            raise ValueError(f"postprocess must be 'nucfast' or 'reference', got {postprocess!r}")
        self.postprocess = postprocess
        self.model = load_model(model)
        self.name = model if isinstance(model, str) and model in ("usenet", "attention") else self.model.kind
        if halo is None:
            halo = 160 if self.model.kind == "attention" else 64
        self.mpp, self.halo, self.tta = float(mpp), int(halo), bool(tta)
        onnx = None
        if backend != "torch":  # onnxruntime runs it; TensorRT's engine cache is keyed by it
            onnx = getattr(self.model, "_onnx", None)
            if onnx is None:  # exported once per loaded weights (load_model caches the model)
                onnx = self.model._onnx = export_onnx(self.model.net)
        if backend in ("auto", "cpu", "cuda"):
            device = "cpu" if backend == "cpu" or not torch.cuda.is_available() else "cuda"
            if backend == "cuda" and device != "cuda":
                raise RuntimeError("backend='cuda' requested but no CUDA device is available")
            self.engine = select_backend(
                "auto", self.model.net, device=device, onnx=onnx, intra_op_threads=threads
            )
        else:
            self.engine = select_backend(backend, self.model.net, onnx=onnx, intra_op_threads=threads)
        self.normalizer = None
        if self.model.normalizer is not None:
            st = self.model.normalizer.state_dict()
            self.normalizer = ReinhardNormalizer().load_state_dict(
                {"target_mean": st["target_mean"], "target_std": st["target_std"]}
            )
        self.timing = {"normalize": 0.0, "infer": 0.0, "postprocess": 0.0}
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return self.engine.name

    def fit(self, samples) -> None:
        """Slide-level Reinhard source statistics: LAB mean/std over the tissue pixels of ``samples``."""
        if self.normalizer is None:
            return
        import torch

        from nucfast.stain import rgb_to_lab

        labs = []
        for s in samples:
            s = np.require(np.asarray(s)[..., :3], requirements=["C", "W"])
            tissue = torch.from_numpy(_tissue_pixels(s))
            lab = rgb_to_lab(torch.from_numpy(s).permute(2, 0, 1).double() / 255.0)
            labs.append(lab[:, tissue])
        v = torch.cat(labs, dim=1) if labs else torch.zeros(3, 0, dtype=torch.float64)
        if v.shape[1] < 100:
            raise ValueError("cannot estimate the slide's stain statistics: the tissue sample is empty")
        self.normalizer.source_mean, self.normalizer.source_std = v.mean(1), v.std(1).clamp_min(1e-6)

    def state(self) -> dict:
        m = self.model.meta
        st = {
            "name": self.name,
            "kind": self.model.kind,
            "arch": m.get("arch"),
            "step": m.get("step"),
            "postprocess": m.get("postprocess"),
            "mpp": self.mpp,
            "halo": self.halo,
            "tta": self.tta,
        }
        if self.normalizer is not None and self.normalizer.source_mean is not None:
            st["source_mean"] = [round(float(v), 6) for v in self.normalizer.source_mean]
            st["source_std"] = [round(float(v), 6) for v in self.normalizer.source_std]
        return st

    def _infer(self, x):
        import torch
        import torch.nn.functional as F

        h, w = x.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x[None], (0, pw, 0, ph), mode=mode)[0]
        if not self.tta:
            return self.engine(x[None])[0, :, :h, :w]
        from nucfast._segment import dihedral_average

        return dihedral_average(lambda z: self.engine(z[None])[0], x)[:, :h, :w].to(torch.float32)

    def __call__(self, rgb) -> TileSegmentation:
        import torch

        from nucfast._segment import postprocess_probs

        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
            raise ValueError(f"tile must be uint8 (h, w, 3), got {rgb.shape} {rgb.dtype}")
        t0 = time.perf_counter()
        x = torch.from_numpy(np.require(rgb[..., :3], requirements=["C", "W"])).permute(2, 0, 1) / 255.0
        if self.normalizer is not None:
            if self.normalizer.source_mean is None:
                raise RuntimeError(
                    "ModelSegmenter: call fit(samples) before segmenting (slide-level stain statistics)"
                )
            x = self.normalizer.transform(x, dtype=torch.float32)
        t1 = time.perf_counter()
        probs = self._infer(x).float().cpu().numpy()
        t2 = time.perf_counter()
        pp = None
        if self.postprocess == "reference":
            from nucfast.postprocess import reference as ref

            cfg = self.model.meta.get("postprocess") or {}
            pp = (
                (lambda pm, pk: ref.usenet_instances_reference(pm, pk, **cfg))
                if self.model.kind == "usenet"
                else ref.attention_instances_reference
            )
        labels = np.ascontiguousarray(postprocess_probs(self.model, probs, pp), dtype=np.int32)
        n = int(labels.max()) if labels.size else 0
        scores = _mean_per_label(labels, probs[0], n)
        t3 = time.perf_counter()
        with self._lock:
            self.timing["normalize"] += t1 - t0
            self.timing["infer"] += t2 - t1
            self.timing["postprocess"] += t3 - t2
        return TileSegmentation(labels, scores)


SEGMENTERS = {"baseline": BaselineSegmenter, "usenet": ModelSegmenter, "attention": ModelSegmenter}


def get_segmenter(model, *, backend: str = "auto", **kwargs):
    """A segmenter: ``"baseline"``; ``"usenet"`` / ``"attention"`` / a ``.safetensors`` file (a
    :class:`ModelSegmenter` on ``backend``); or an object following the protocol above (returned as is)."""
    if not isinstance(model, str | Path):
        if not callable(model) or not hasattr(model, "mpp") or not hasattr(model, "halo"):
            raise TypeError(
                "model must be a name or a segmenter object (callable with .mpp and .halo attributes)"
            )
        return model
    if model == "baseline":
        return BaselineSegmenter(**kwargs)
    if model in SEGMENTERS or str(model).endswith(".safetensors"):
        return ModelSegmenter(model if model in SEGMENTERS else str(model), backend=backend, **kwargs)
    raise ValueError(f"unknown model {model!r}; available: {sorted(SEGMENTERS)} or a .safetensors file")
