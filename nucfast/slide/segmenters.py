"""Per-tile segmenters: ``rgb tile -> (instance labels, per-label scores)``.

The slide engine calls the typed protocol :class:`Segmenter`; any object with the three required members
(``name`` optional) is adapted to it by :func:`as_segmenter`, so trained models and fast kernels plug in
without touching the engine:

- ``name`` (str), ``mpp`` (float: microns per pixel of the resolution it works at),
  ``halo`` (int: pixels of context each side, at ``mpp``, so that every nucleus touching a tile core is
  complete and unaffected by the tile border: largest nucleus + the sum of the kernels' radii);
- optional ``fit(samples)``: slide-level statistics from a fixed, tiling-independent sample of tissue
  patches (list of uint8 RGB arrays), called once before any tile;
- optional ``state()`` -> JSON-able dict (recorded in the run manifest: a resumed run must match it);
- ``__call__(rgb)`` with ``rgb`` a (h, w, 3) uint8 array -> :class:`TileSegmentation`.
- optional ``timing`` dict of cumulative seconds per sub-stage (e.g. ``infer``, ``postprocess``);
- optional ``backend`` (str): where it runs (default ``"cpu"``);
- optional ``stride`` (int, default 1): the engine starts every tile's input window at a multiple of it
  in working pixels (a strided network's output is translation-equivariant only by its stride).

:class:`ModelSegmenter` runs a trained network (USE-Net, the default, or the attention model);
:class:`BaselineSegmenter` is the no-learning baseline: haematoxylin by colour deconvolution, one
slide-level Otsu threshold, then the attention model's post-processing (REFERENCE.md 1, steps 1-4).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .. import models
from ..engines import BackendUnavailableError, cached_onnx, select_backend
from ..engines._quantize import int8_backend
from ..postprocess import attention_instances
from ..postprocess._pipelines import USENET_MARKER_THRESHOLD, USENET_MASK_THRESHOLD, usenet_watershed_device

__all__ = [
    "Segmenter",
    "as_segmenter",
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


def _mean_per_label(labels: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """float32 mean of ``values`` over each label 0..n (per-nucleus scores; index 0 unused)."""
    cnt = np.bincount(labels.ravel(), minlength=n + 1)
    tot = np.bincount(labels.ravel(), weights=values.ravel().astype(np.float64), minlength=n + 1)
    return (tot / np.maximum(cnt, 1)).astype(np.float32)


def _labels_and_scores(labels: torch.Tensor, values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_mean_per_label` on the labels' device, then the label tile (int32) and the scores to the host:
    the device path's only transfer back (the probabilities stay on the device)."""
    lab = labels.reshape(-1).to(torch.int64)
    n = int(lab.max()) if lab.numel() else 0
    cnt = torch.bincount(lab, minlength=n + 1)
    tot = torch.bincount(lab, weights=values.reshape(-1).to(torch.float64), minlength=n + 1)
    scores = (tot / cnt.clamp_min(1)).to(torch.float32)
    return np.ascontiguousarray(labels.to(torch.int32).cpu().numpy()), scores.cpu().numpy()


def attention_postprocess(binary: np.ndarray) -> np.ndarray:
    """The attention post-processing (REFERENCE.md 1 steps 1-4) with the nucfast kernels.

    Identical to ``nucfast.postprocess.reference.attention_instances_reference`` (tested there).
    """
    return attention_instances(np.ascontiguousarray(binary, dtype=bool))


def _reference():
    """The scipy / scikit-image reference post-processing (optional dependencies: imported on demand)."""
    from ..postprocess import reference

    return reference


def _resolve_postprocess(postprocess):
    if postprocess is None or postprocess == "nucfast":
        return attention_postprocess
    if postprocess == "reference":
        return _reference().attention_instances_reference
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
    backend = "cpu"
    stride = 1

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
            tissue = models.tissue_pixels(s)
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
    (:meth:`nucfast.models.Model.postprocess`: for USE-Net the method and thresholds stored with the
    weights).

    Parameters
    ----------
    model : {"usenet", "attention"} or path to weights
    backend : {"auto", "cpu", "cuda", "torch", "onnxruntime", "tensorrt"}
        ``"auto"``/``"cpu"``/``"cuda"`` choose the device and let :func:`nucfast.engines.select_backend`
        pick the engine there (TensorRT when an engine is cached, else torch, on a GPU; on the CPU torch in
        bfloat16 when the model allows it and the CPU has AMX (``Model.bf16``), else onnxruntime); the other
        three force that engine (``"torch"`` in float32).
    mpp : float, optional
        Working resolution (default the model's: 0.25 um/px, the 40x scale of the MoNuSeg training images).
    halo : int, optional
        Context each side (working px; default the model's). USE-Net: 128 (frozen slide-level
        squeeze-excitation gates and windows on its 32-px stride grid make it local: tiled and whole-image
        nuclei agree to >= 99.7 %, docs/SLIDE.md). Attention: 160 = largest
        nucleus (44) + the network's receptive-field radius (83) + the post-processing's reach (~20, rounded
        up): the network is local, so every nucleus touching a core is computed exactly as in a whole-image
        run.
    tta : average over the 8 flips/rotations (8x the inference cost)
    threads : onnxruntime intra-op threads (default: torch's)
    postprocess : {"nucfast", "reference"}
        The model's post-processing with the nucfast kernels (default) or the scipy / scikit-image
        reference of the same steps (benchmarks; identical nuclei).

    device_resident : bool
        The tile stays on the engine's device from normalisation to the label tile (default): uploaded
        through pinned memory on a GPU, normalised, inferred and post-processed there by the nucfast kernels
        (which take tensors), and only the label tile and the per-nucleus scores come back. ``False``: the
        host pipeline of before (probabilities copied to numpy and post-processed there). On the CPU both
        give identical nuclei (tests/test_slide_models.py); the CUDA path has never run (no GPU here).

    Scores: the mean mask probability over each nucleus.
    """

    def __init__(
        self,
        model="usenet",
        *,
        backend: str = "auto",
        mpp: float | None = None,
        halo: int | None = None,
        tta: bool = False,
        threads: int | None = None,
        postprocess: str = "nucfast",
        device_resident: bool = True,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if postprocess not in ("nucfast", "reference"):
            raise ValueError(f"postprocess must be 'nucfast' or 'reference', got {postprocess!r}")
        self.postprocess = postprocess
        self.device_resident = bool(device_resident)
        self.model = models.load(model)
        if self.model.task != "segmentation" or self.model.net is None:
            raise ValueError(f"model {self.model.name!r} is not a segmentation network")
        self.name = self.model.name
        self.mpp = float(mpp if mpp is not None else self.model.mpp)
        self.halo = int(halo if halo is not None else self.model.halo)
        self.tta = bool(tta)
        self.stride = self.model.stride
        # USE-Net runs with frozen slide-level squeeze-excitation gates (an input of its graph), so a tile's
        # probabilities do not depend on the tile; onnxruntime runs the export, TensorRT's engine cache is
        # keyed by it (one export per loaded model)
        self._se = getattr(self.model.net, "n_se_gates", 0) > 0
        if backend in ("auto", "cpu", "cuda"):
            device = "cpu" if backend == "cpu" or not torch.cuda.is_available() else "cuda"
            if backend == "cuda" and device != "cuda":
                raise BackendUnavailableError("backend='cuda' requested but no CUDA device is available")
            bf16 = device == "cpu" and self.model.bf16  # torch bf16 on the CPU: no ONNX export needed
            if device == "cpu" and self.model.int8:  # NUCFAST_CPU_PRECISION=int8: the shipped QDQ graph
                self.engine = int8_backend(self.model, threads=threads)
            else:
                onnx = None if bf16 else cached_onnx(self.model.net, se_gates=self._se)
                self.engine = select_backend(
                    "auto", self.model.net, device=device, onnx=onnx, intra_op_threads=threads, cpu_bf16=bf16
                )
        else:
            onnx = cached_onnx(self.model.net, se_gates=self._se) if backend != "torch" else None
            self.engine = select_backend(backend, self.model.net, onnx=onnx, intra_op_threads=threads)
        self.context: models.Context | None = None  # slide-level statistics, set by fit()
        self.timing = {"normalize": 0.0, "infer": 0.0, "postprocess": 0.0}
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return self.engine.name

    def fit(self, samples) -> None:
        """Slide-level statistics on the engine's fixed tissue sample, as ``segment_image`` does on a whole
        image (:meth:`nucfast.models.Model.fit_context`): Reinhard source statistics (LAB mean/std over the
        tissue pixels) and USE-Net's squeeze-excitation gates."""
        self.context = self.model.fit_context(samples)

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
        if self.context is not None:
            st.update(self.context.state())
        return st

    def _infer(self, x):
        h, w = x.shape[-2:]
        x = models.pad_to_multiple(x, self.stride)
        inputs = self.context.inputs if self._se else {}
        if not self.tta:
            return self.engine(x[None], **inputs)[0, :, :h, :w]
        tta = models.dihedral_average(lambda z: self.engine(z[None], **inputs)[0], x)
        return tta[:, :h, :w].to(torch.float32)

    def _postprocess_on_device(self, probs: torch.Tensor) -> torch.Tensor:
        """The model's post-processing on the probabilities' device: on a GPU, USE-Net's watershed method
        without host synchronisation in Python (``usenet_watershed_device``, identical labels); otherwise
        the model's own (the fast CPU ops)."""
        cfg = self.model.meta.get("postprocess") or {}
        if probs.device.type == "cuda" and self.model.kind == "usenet" and cfg.get("method") == "watershed":
            tm = cfg.get("mask_threshold", USENET_MASK_THRESHOLD)
            tk = cfg.get("marker_threshold", USENET_MARKER_THRESHOLD)
            return usenet_watershed_device(probs[0], probs[1], tm, tk)
        return self.model.postprocess(probs)

    def __call__(self, rgb) -> TileSegmentation:
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
            raise ValueError(f"tile must be uint8 (h, w, 3), got {rgb.shape} {rgb.dtype}")
        t0 = time.perf_counter()
        if self.context is None:
            raise RuntimeError("ModelSegmenter: call fit(samples) before segmenting (slide-level statistics)")
        t = torch.from_numpy(np.require(rgb, requirements=["C"]))
        dev = self.engine.device
        if self.device_resident and dev.type == "cuda":  # pinned host memory -> the engine's device
            t = t.pin_memory().to(dev, non_blocking=True)
        x = self.context.normalize_u8(t)  # the fused op (CPU or CUDA kernel, where the tile is)
        t1 = time.perf_counter()
        probs = self._infer(x).float()
        t2 = time.perf_counter()
        if self.device_resident and self.postprocess == "nucfast":
            # post-processing on the probabilities' device (the nucfast kernels take tensors); only the label
            # tile and the per-nucleus scores come back to the host
            labels, scores = _labels_and_scores(self._postprocess_on_device(probs), probs[0])
        else:  # the host pipeline: probabilities copied to numpy, post-processed there
            probs = probs.cpu().numpy()
            pp = None
            if self.postprocess == "reference":
                ref = _reference()
                cfg = self.model.meta.get("postprocess") or {}
                pp = (
                    (lambda pm, pk: ref.usenet_instances_reference(pm, pk, **cfg))
                    if self.model.kind == "usenet"
                    else ref.attention_instances_reference
                )
            labels = np.ascontiguousarray(self.model.postprocess(probs, pp), dtype=np.int32)
            n = int(labels.max()) if labels.size else 0
            scores = _mean_per_label(labels, probs[0], n)
        t3 = time.perf_counter()
        with self._lock:
            self.timing["normalize"] += t1 - t0
            self.timing["infer"] += t2 - t1
            self.timing["postprocess"] += t3 - t2
        return TileSegmentation(labels, scores)


@runtime_checkable
class Segmenter(Protocol):
    """The segmenter the slide engine calls (see the module docstring for each member's meaning)."""

    name: str
    mpp: float
    halo: int
    backend: str
    stride: int
    timing: dict

    def fit(self, samples: list) -> None: ...

    def state(self) -> dict: ...

    def __call__(self, rgb: np.ndarray) -> TileSegmentation: ...


class _Adapted:
    """A duck-typed segmenter (``__call__``, ``mpp``, ``halo``) completed to :class:`Segmenter`."""

    def __init__(self, obj):
        self._obj = obj
        self.name = str(getattr(obj, "name", type(obj).__name__))
        self.mpp = float(obj.mpp)
        self.halo = int(obj.halo)
        self.backend = str(getattr(obj, "backend", "cpu"))
        self.stride = int(getattr(obj, "stride", 1))

    @property
    def timing(self) -> dict:
        return dict(getattr(self._obj, "timing", {}))

    def fit(self, samples: list) -> None:
        fit = getattr(self._obj, "fit", None)
        if fit is not None:
            fit(samples)

    def state(self) -> dict:
        state = getattr(self._obj, "state", None)
        return state() if state is not None else {"name": self.name}

    def __call__(self, rgb: np.ndarray) -> TileSegmentation:
        res = self._obj(rgb)
        if isinstance(res, TileSegmentation):
            return res
        return TileSegmentation(*res) if isinstance(res, tuple) else TileSegmentation(res)


def as_segmenter(obj) -> Segmenter:
    """``obj`` itself when it implements :class:`Segmenter`, else ``obj`` adapted to it (a ``TypeError``
    when it has not even ``__call__``, ``mpp`` and ``halo``)."""
    if isinstance(obj, Segmenter):
        return obj
    if not callable(obj) or not hasattr(obj, "mpp") or not hasattr(obj, "halo"):
        raise TypeError(
            "model must be a name or a segmenter object (callable with .mpp and .halo attributes)"
        )
    return _Adapted(obj)


#: Deprecated: the segmentation model names are :func:`nucfast.models.names` ``("segmentation")``.
SEGMENTERS = {
    n: (BaselineSegmenter if n == "baseline" else ModelSegmenter) for n in models.names("segmentation")
}


def get_segmenter(model, *, backend: str = "auto", **kwargs):
    """A segmenter: ``"baseline"``; another segmentation model name (:func:`nucfast.models.names`) or a
    ``.safetensors`` file (a :class:`ModelSegmenter` on ``backend``); or an object following the protocol
    above (:func:`as_segmenter`)."""
    if not isinstance(model, str | Path):
        return as_segmenter(model)
    if model == "baseline":
        return BaselineSegmenter(**kwargs)
    if str(model).endswith(".safetensors"):
        return ModelSegmenter(str(model), backend=backend, **kwargs)
    models.spec(str(model))  # the one unknown-model error, listing the names
    return ModelSegmenter(str(model), backend=backend, **kwargs)
