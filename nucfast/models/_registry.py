"""The model layer's one registry, one :func:`load` and the :class:`Model` every entry point uses.

Two tables:

- **kinds** (:func:`register_kind`): a network family as written in a weights file's metadata
  (``kind``): its task, how to build the network from the stored ``config``, its working resolution and
  context, and, for segmentation networks, how it predicts and post-processes.
- **names** (:func:`register`): what users type (Python API and every CLI subcommand alike): a kind plus
  either shipped weights (``nucfast/weights/*.safetensors``) or a configuration (untrained networks, for
  ONNX export, engine builds and training). ``baseline`` is the no-learning baseline (no network).

``load(name | path)`` gives a :class:`Model`; an unknown name raises one error listing :func:`names`.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..stain import ReinhardNormalizer, lab_of_pixels_u8, rgb_to_lab
from ._int8 import Int8Net, int8_path, load_int8
from ._weights import file_sha256, load_weights, read_metadata, tensor_shapes

__all__ = [
    "WEIGHTS_DIR",
    "Kind",
    "ModelSpec",
    "Model",
    "Context",
    "register_kind",
    "tissue_pixels",
    "register",
    "kinds",
    "names",
    "spec",
    "load",
    "build_network",
    "unknown_model_error",
    "MAX_PARAMETERS",
    "cpu_bf16",
    "cpu_precision",
]

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
#: Networks larger than this (parameters, counted on the meta device before anything is allocated) are
#: refused: a weights file whose metadata asks for absurd widths fails at once, not after gigabytes.
MAX_PARAMETERS = 500_000_000


def cpu_bf16() -> bool:
    """Whether networks that allow it (``Kind.cpu_bf16``) run in bfloat16 on the CPU.

    ``NUCFAST_CPU_PRECISION=bf16`` / ``fp32`` decides; by default bf16 where the CPU has AMX tiles (bf16
    matrix hardware), the only CPU this was measured on: the shipped USE-Net lite on one 1024² tile, one
    thread, torch bf16 autocast + channels_last 4.5 MP/s vs onnxruntime fp32 2.2, torch fp32 1.2
    (channels_last 1.9) (benchmarks/bench_backends.py::test_shipped_usenet_1024_1thread, 2026-12-02).
    CPUs without AMX (AVX-512 BF16 only, AVX2) keep fp32 (onnxruntime): bf16 there is unmeasured."""
    mode = cpu_precision()
    if mode in ("bf16", "fp32"):
        return mode == "bf16"
    return has_amx()  # auto, and int8 for the networks without an int8 graph


def has_amx() -> bool:
    """The CPU has AMX tiles (bf16 / int8 matrix hardware)."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def cpu_precision() -> str:
    """``NUCFAST_CPU_PRECISION``: ``auto`` (default), ``bf16``, ``fp32`` or ``int8``.

    ``auto``: on a CPU with AMX, torch bf16 for the networks that allow it (:func:`cpu_bf16`); without AMX,
    a segmentation network's shipped int8 QDQ graph on onnxruntime where it has one (:meth:`Model.int8`),
    else float32. Measured on the shipped USE-Net lite, one 1024² tile, one thread
    (benchmarks/bench_backends.py -k shipped, 2026-12-02): torch bf16 197 ms, onnxruntime int8 275-300,
    onnxruntime fp32 393, torch fp32 channels_last 462; with oneDNN capped below AMX
    (``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``) torch bf16 takes 625 ms and with AVX2 4.8 s, so bf16 is used
    only with AMX. Validation AJI: fp32 0.5689, bf16 0.5684, int8 0.5689. The int8 graph's speed on a CPU
    without AMX / VNNI is unmeasured (onnxruntime picks its int8 kernels by CPU features)."""
    import os

    mode = os.environ.get("NUCFAST_CPU_PRECISION", "auto").lower()
    if mode not in ("auto", "bf16", "fp32", "int8"):
        raise ValueError(f"NUCFAST_CPU_PRECISION must be auto, bf16, fp32 or int8, got {mode!r}")
    return mode


@dataclass(frozen=True)
class Kind:
    """A network family.

    task : "segmentation" | "nucleus-embedding" | "tile-embedding" | "tile-generator" | ...
    build : config dict -> nn.Module (the constructor arguments stored as metadata ``config``)
    mpp : working resolution (um/px) the network was trained at
    halo : context pixels each side (at ``mpp``) a tile needs so nuclei touching its core are complete
    predict : segmentation only: ``(net, x01 (3, H, W), tile, **context inputs) -> probabilities (C, H, W)``
    postprocess : segmentation only: ``(probs numpy (C, H, W), metadata) -> int labels``
    fit : optional ``(net, batch (N, 3, h, w) normalised tissue sample) -> {input name: tensor}``: image- or
        slide-level network inputs (USE-Net: frozen squeeze-excitation gates, ``se_gates``)
    stride : the network's total stride: its output is translation-equivariant only by multiples of it, so
        every window (sliding window, slide tile) starts at a multiple of it in image coordinates
    cpu_bf16 : bfloat16 inference on the CPU is allowed (its accuracy change was measured; see
        :func:`cpu_bf16` for when it is used)
    """

    name: str
    task: str
    build: Callable[[dict], nn.Module] | None
    mpp: float = 0.25
    halo: int = 0
    predict: Callable[..., torch.Tensor] | None = None
    postprocess: Callable[[np.ndarray, dict], np.ndarray] | None = None
    fit: Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]] | None = None
    stride: int = 1
    cpu_bf16: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A user-facing name: a kind with shipped ``weights`` (a file in :data:`WEIGHTS_DIR`) or, without
    weights, the ``config`` of an untrained network."""

    name: str
    kind: str
    help: str
    weights: str | None = None
    config: dict = field(default_factory=dict)


_KINDS: dict[str, Kind] = {}
_SPECS: dict[str, ModelSpec] = {}
_LOCK = threading.Lock()


def _add(table: dict, key: str, value, what: str):
    with _LOCK:
        if key in table and table[key] != value:
            raise ValueError(f"{what} {key!r} is already registered")
        table[key] = value
    return value


def register_kind(kind: Kind) -> Kind:
    """Add a network family (a model module calls this once at import)."""
    return _add(_KINDS, kind.name, kind, "model kind")


def register(spec: ModelSpec) -> ModelSpec:
    """Add a user-facing model name."""
    return _add(_SPECS, spec.name, spec, "model name")


def kinds() -> dict[str, Kind]:
    return dict(_KINDS)


def names(task: str | None = None) -> list[str]:
    """Registered model names (sorted), optionally only those of one ``task``."""
    return sorted(n for n, s in _SPECS.items() if task is None or _KINDS[s.kind].task == task)


def unknown_model_error(model, task: str | None = None) -> ValueError:
    """The one error for a model that is neither a registered name nor a weights file."""
    what = f"{task} model" if task else "model"
    return ValueError(
        f"unknown {what} {str(model)!r}: expected one of {', '.join(names(task))} "
        "or a .safetensors weights file"
    )


def spec(name: str, task: str | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of ``name`` (of ``task`` if given), else :func:`unknown_model_error`."""
    s = _SPECS.get(name)
    if s is None or (task is not None and _KINDS[s.kind].task != task):
        raise unknown_model_error(name, task)
    return s


def _plain_keys(shapes: dict) -> dict:
    """State-dict shapes with torch parametrizations (spectral norm) folded back to the plain parameter:
    ``m.parametrizations.weight.original`` -> ``m.weight``, its power-iteration vectors dropped (a network
    built on the meta device may skip spectral norm, which changes no parameter shape)."""
    out = {}
    for k, v in shapes.items():
        if ".parametrizations." in k:
            if not k.endswith(".original"):
                continue
            k = k.replace(".parametrizations.", ".").removesuffix(".original")
        out[k] = v
    return out


def _shape_mismatch(expected: dict, got: dict) -> str | None:
    """What differs between a network's state-dict shapes and a file's tensor shapes (None: they fit)."""
    expected, got = _plain_keys(expected), _plain_keys(got)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if tuple(expected[k]) != tuple(got[k]))
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors missing from the file (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected tensors (e.g. {extra[0]})")
    if wrong:
        k = wrong[0]
        eg = f"{k}: {tuple(got[k])} in the file, the configuration needs {tuple(expected[k])}"
        parts.append(f"{len(wrong)} of other shapes (e.g. {eg})")
    return "; ".join(parts) or None


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Skips the random initialisation of parameters (``torch.nn.init`` and the in-place random / fill
    ops it uses) while a network is built on the meta device: there it computes nothing, and meta
    ``normal_`` would import ``torch._dynamo`` (about a second) through its Python decomposition. A
    torch-function mode is thread-local, so a network built in another thread meanwhile is unaffected."""

    _INIT_OPS = frozenset(
        getattr(torch.Tensor, n)
        for n in ("normal_", "uniform_", "fill_", "zero_", "bernoulli_", "exponential_", "random_")
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._INIT_OPS or getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else next(iter((kwargs or {}).values()), None)
        return func(*args, **(kwargs or {}))


def _meta_network(build, config: dict) -> nn.Module:
    with torch.device("meta"), _SkipInit():
        return build(config)


def build_network(
    kind: str, config: dict | None = None, *, shapes: dict | None = None, init: bool = True
) -> nn.Module:
    """An untrained network of ``kind`` from ``config``, refused before any allocation when it would have
    more than :data:`MAX_PARAMETERS` parameters or, given the tensor ``shapes`` of a weights file, when
    its state dict would not fit them (a file whose metadata asks for other widths fails at once).
    ``init=False``: the network on the meta device, uninitialised, for
    ``load_state_dict(..., assign=True)`` (no random initialisation computed only to be overwritten)."""
    k = _KINDS.get(kind)
    if k is None:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(sorted(_KINDS))})")
    if k.build is None:
        raise ValueError(f"model kind {kind!r} has no network")
    config = dict(config or {})
    try:
        meta_net = _meta_network(k.build, config)
        n = sum(p.numel() for p in meta_net.parameters())
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"invalid {kind} configuration {config}: {e}") from e
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"{kind} configuration {config} has {n:,} parameters (more than {MAX_PARAMETERS:,}): refused"
        )
    if shapes is not None:
        why = _shape_mismatch({n_: tuple(v.shape) for n_, v in meta_net.state_dict().items()}, shapes)
        if why:
            raise ValueError(f"the weights do not fit their {kind} configuration {config}: {why}")
    return k.build(config) if init else meta_net


def tissue_pixels(rgb: np.ndarray) -> np.ndarray:
    """Pixels that are not glass (some channel below 220): what image- and slide-level statistics are
    fitted on."""
    return rgb[..., :3].min(axis=-1) < 220


@dataclass
class Context:
    """Image- or slide-level statistics fitted once on a fixed tissue sample (:meth:`Model.fit_context`),
    so that no value depends on how the image is tiled: the Reinhard normaliser with the sample's source
    statistics, and the network's extra inputs (USE-Net: frozen squeeze-excitation gates ``se_gates``)."""

    normalizer: ReinhardNormalizer | None = None
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Stain-normalise a float image (3, H, W) in [0, 1] (float32 out); identity without a normaliser."""
        if self.normalizer is None:
            return x01
        return self.normalizer.transform(x01, dtype=torch.float32)

    def normalize_u8(self, rgb: torch.Tensor) -> torch.Tensor:
        """Stain-normalise a uint8 image (H, W, 3|4) tensor on any device to float32 (3, H, W) in [0, 1] in
        one fused pass (:meth:`nucfast.stain.ReinhardNormalizer.transform_u8`; without a normaliser / 255)."""
        if self.normalizer is None:
            return rgb[..., :3].permute(2, 0, 1).float() / 255.0
        return self.normalizer.transform_u8(rgb)

    def state(self) -> dict:
        """JSON-able summary (run manifests: a resumed run must fit the same statistics)."""
        st: dict[str, Any] = {}
        if self.normalizer is not None:
            st["source_mean"] = [round(float(v), 6) for v in self.normalizer.source_mean]
            st["source_std"] = [round(float(v), 6) for v in self.normalizer.source_std]
        for k, v in self.inputs.items():
            q = np.round(v.detach().cpu().double().numpy(), 6)
            st[k] = {"n": int(q.size), "sha256": hashlib.sha256(q.tobytes()).hexdigest()[:16]}
        return st


class Model:
    """A loaded network and what inference needs: its kind (task, resolution, context, prediction,
    post-processing), weights metadata, stain normaliser and provenance (``path``, ``sha256``).

    ``Model`` replaces ``nucfast._segment.SegmentationModel`` (kept as an alias).
    """

    def __init__(
        self,
        net: nn.Module | None,
        meta: dict[str, Any],
        kind: str,
        *,
        name: str | None = None,
        path: Path | None = None,
    ):
        self.net = net.eval() if net is not None else None
        self.meta = meta
        self.kind = kind
        self.name = name or kind
        self.path = path
        k = _KINDS[kind]
        self.task = k.task
        self.mpp = float(meta.get("mpp", k.mpp))
        self.halo = int(k.halo)
        self.stride = int(k.stride)
        self.normalizer = None
        st = meta.get("normalizer") or {}
        if meta.get("norm", "none") == "reinhard" and st:
            self.normalizer = ReinhardNormalizer().load_state_dict(
                {k_: torch.tensor(v, dtype=torch.float64) for k_, v in st.items()}
            )

    @functools.cached_property
    def sha256(self) -> str | None:
        """sha256 of the weights file (None for an untrained network)."""
        return file_sha256(self.path) if self.path is not None else None

    def to(self, device) -> Model:
        if self.net is not None:
            self.net.to(device)
        return self

    @property
    def device(self) -> torch.device:
        if self.net is None:
            return torch.device("cpu")
        return next(self.net.parameters()).device

    def _kind(self) -> Kind:
        return _KINDS[self.kind]

    @torch.no_grad()
    def fit_context(self, samples, *, normalize: bool = True) -> Context:
        """Fit the image- or slide-level :class:`Context` on a fixed tissue sample: ``samples`` is a list of
        uint8 RGB patches (h, w, 3) of one shape (``nucfast.slide.tissue.sample_patches``). The Reinhard
        source statistics are the LAB mean / std over the sample's tissue pixels (:func:`tissue_pixels`);
        the network's extra inputs (USE-Net's squeeze-excitation gates) are computed on the normalised
        sample as one batch. ``normalize=False``: no stain normalisation."""
        samples = [np.asarray(s)[..., :3] for s in samples]
        if len({s.shape for s in samples}) > 1:
            raise ValueError(f"samples must share one shape, got {sorted({s.shape for s in samples})}")
        ctx = Context()
        xs = [torch.from_numpy(np.ascontiguousarray(s)).permute(2, 0, 1).double() / 255.0 for s in samples]
        if normalize and self.normalizer is not None:
            labs = [  # the LAB of the tissue pixels: rgb_to_lab(x)[:, tissue], from a table for uint8
                lab_of_pixels_u8(s[tissue_pixels(s)])
                if s.dtype == np.uint8
                else rgb_to_lab(x)[:, torch.from_numpy(tissue_pixels(s))]
                for x, s in zip(xs, samples, strict=True)
            ]
            v = torch.cat(labs, dim=1) if labs else torch.zeros(3, 0, dtype=torch.float64)
            if v.shape[1] < 100:
                raise ValueError("cannot estimate the stain statistics: the tissue sample is empty")
            st = self.normalizer.state_dict()
            ctx.normalizer = ReinhardNormalizer().load_state_dict(
                {"target_mean": st["target_mean"], "target_std": st["target_std"]}
            )
            ctx.normalizer.source_mean, ctx.normalizer.source_std = v.mean(1), v.std(1).clamp_min(1e-6)
        k = self._kind()
        if k.fit is not None and self.net is not None:
            if not xs:
                raise ValueError("cannot fit the network's slide-level inputs: the tissue sample is empty")
            batch = torch.stack([ctx.normalize(x) for x in xs]).float().to(self.device)
            ctx.inputs = {n: t.float().cpu() for n, t in k.fit(self.net, batch).items()}
        return ctx

    @torch.no_grad()
    def predict(self, x01: torch.Tensor, *, tile: int = 1024, context: Context | None = None) -> torch.Tensor:
        """Network probabilities of one stain-normalised image (3, H, W) in [0, 1] (segmentation models):
        USE-Net (2, H, W) mask / marker, attention (1, H, W); larger images run in overlapping windows
        (:func:`nucfast.models.sliding_window`). ``context``: the fitted inputs (:meth:`fit_context`)."""
        k = self._kind()
        if k.predict is None:
            raise ValueError(f"model {self.name!r} ({self.task}) has no dense prediction")
        inputs = context.inputs if context is not None else {}
        if self.int8 and x01.device.type == "cpu":
            return k.predict(self.int8_net(), x01, tile, **inputs).float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16 and x01.device.type == "cpu"):
            return k.predict(self.net, x01, tile, **inputs).float()

    @property
    def bf16(self) -> bool:
        """CPU inference runs in bfloat16 (``Kind.cpu_bf16`` and :func:`cpu_bf16`)."""
        return self._kind().cpu_bf16 and cpu_bf16() and not self.int8

    @property
    def int8(self) -> bool:
        """CPU inference runs the int8 graph (:func:`cpu_precision`): ``int8``, or ``auto`` on a CPU
        without AMX when these weights have an int8 graph beside them."""
        if self.task != "segmentation" or self.net is None:
            return False
        mode = cpu_precision()
        if mode != "auto":
            return mode == "int8"
        if has_amx() or self.path is None:
            return False
        return int8_path(self).is_file()

    def int8_net(self):
        """The int8 graph as a network for ``Kind.predict`` (:class:`nucfast.models._int8.Int8Net`),
        loaded once; raises when there is none for these weights."""
        if getattr(self, "_int8_net", None) is None:
            self._int8_net = Int8Net(load_int8(self))
        return self._int8_net

    def postprocess(self, probs: np.ndarray, override=None) -> np.ndarray:
        """Instances from :meth:`predict`'s probabilities with the post-processing stored with the weights
        (USE-Net: the method and thresholds selected on the validation images; attention: A > 0.5 then its
        post-processing). ``override``: a callable instead, USE-Net ``f(p_mask, p_marker)`` (float64),
        attention ``f(binary)``."""
        if override is not None:
            if probs.shape[0] == 2:
                return override(probs[0].astype(np.float64), probs[1].astype(np.float64))
            return override(probs[0] > 0.5)
        k = self._kind()
        if k.postprocess is None:
            raise ValueError(f"model {self.name!r} ({self.task}) has no post-processing")
        return k.postprocess(probs, self.meta)

    def __repr__(self) -> str:
        m = self.meta
        return f"Model(name={self.name!r}, kind={self.kind!r}, arch={m.get('arch')!r}, step={m.get('step')})"


def _from_file(path: Path, name: str | None) -> Model:
    if path.suffix != ".safetensors":
        raise ValueError(
            f"model: weights must be a .safetensors file (no pickles are loaded), got {path.name}"
        )
    try:
        shapes, meta = tensor_shapes(path), read_metadata(path)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ValueError(f"model: cannot read weights file {path}: {type(e).__name__}: {e}") from e
    if not isinstance(meta, dict):
        raise ValueError(f"model: weights file {path} has metadata that is not a JSON object")
    kind = meta.get("kind", "usenet")
    if kind not in _KINDS:
        raise ValueError(f"model: unknown model kind {kind!r} in {path} (known: {', '.join(sorted(_KINDS))})")
    config = meta.get("config")
    if config is None and "arch" in meta:  # USE-Net files before "config" was stored
        config = {"arch": meta["arch"]}
    if config is None and kind != "attention":
        raise ValueError(f"model: weights file {path} has no usable 'kind'/'config'/'arch' metadata")
    if not isinstance(config or {}, dict):
        raise ValueError(f"model: weights file {path} has a 'config' that is not a JSON object")
    try:
        # checked on the meta device first; built there uninitialised, its tensors are the file's
        net = build_network(kind, config or {}, shapes=shapes, init=False)
    except ValueError as e:
        raise ValueError(f"model: weights file {path}: {e}") from e
    try:
        sd, _ = load_weights(path)
    except Exception as e:
        raise ValueError(f"model: cannot read weights file {path}: {type(e).__name__}: {e}") from e
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    try:
        net.load_state_dict(sd, assign=True)
        ok = not any(t.is_meta for t in (*net.parameters(), *net.buffers()))
    except RuntimeError:  # a network built otherwise on the meta device (pathgan: no spectral norm there)
        ok = False
    try:
        if not ok:  # state outside the state dict, or another structure: built and initialised, then loaded
            net = build_network(kind, config or {})
            net.load_state_dict(sd)
    except RuntimeError as e:
        raise ValueError(f"model: weights file {path} does not fit its {kind} configuration: {e}") from e
    return Model(net, meta, kind, name=name, path=path)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float, name: str | None) -> Model:
    return _from_file(Path(path), name)


def load(model="usenet", *, device=None, pretrained: bool = True) -> Model:
    """Load a model: a registered name (:func:`names`), a ``.safetensors`` weights file (never unpickles)
    or a :class:`Model` (returned as is).

    Shipped weights are loaded once per process and shared (treat ``Model.net`` as read-only; copy it to
    train). ``pretrained=False`` (or a name without shipped weights) gives a freshly initialised network.
    """
    if isinstance(model, Model):
        m = model
    elif isinstance(model, str) and model in _SPECS:
        s = _SPECS[model]
        k = _KINDS[s.kind]
        if s.weights and pretrained:
            p = WEIGHTS_DIR / s.weights
            if not p.exists():
                raise FileNotFoundError(
                    f"model={model!r}: the shipped weights {p.name} are not in {WEIGHTS_DIR}"
                )
            m = _load_cached(str(p), p.stat().st_mtime, s.name)
        elif k.build is None:
            m = Model(None, {"kind": s.kind}, s.kind, name=s.name)
        else:
            m = Model(
                build_network(s.kind, s.config), {"kind": s.kind, "config": s.config}, s.kind, name=s.name
            )
    elif isinstance(model, str | Path) and (Path(model).suffix == ".safetensors" or Path(model).exists()):
        p = Path(model)
        if not p.is_file():
            raise FileNotFoundError(f"model: no such weights file {p} (or a name: {', '.join(names())})")
        m = _load_cached(str(p.resolve()), p.stat().st_mtime, None)
    else:
        raise unknown_model_error(model)
    if device is not None:
        m.to(device)
    return m
