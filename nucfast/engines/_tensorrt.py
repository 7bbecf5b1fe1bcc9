"""TensorRT / TensorRT-RTX engine builder with an engine cache.

Two APIs, one builder:

``tensorrt`` (classic TensorRT)
    Builds for the GPU it runs on (needs one). FP16 by ``BuilderFlag.FP16`` on the float32 network; INT8 by
    post-training calibration (``IInt8EntropyCalibrator2`` fed with tissue tiles) when this TensorRT still
    has implicit quantization (8.x-10.x; deprecated since 10.1). TensorRT 11 removed ``BuilderFlag.FP16/INT8``
    and the calibrator: there fp16 and int8 take the strongly typed paths below, as with TensorRT-RTX.
    Arch key: ``sm<major><minor>``.
``tensorrt_rtx`` (TensorRT for RTX; PyPI ``tensorrt-rtx-cu13-libs`` + ``tensorrt-rtx-cu13-bindings``, module
    ``tensorrt_rtx`` or ``tensorrt_rtx_bindings``)
    Builds without a GPU: the engine holds portable code JIT-specialised on the target GPU at load time
    (arch key ``rtx-jit``) unless compute capabilities are given (``sm80+sm86``...). Networks are always
    strongly typed and the builder has no FP16/INT8 flags and no calibrator: precision comes from the graph.
    So ``fp16`` converts the ONNX model to float16 compute (float32 I/O) before parsing, and ``int8``
    inserts Q/DQ nodes with scales calibrated on the tissue tiles (onnxruntime's static quantizer, symmetric
    per-channel weights and per-tensor activations, entropy calibration), which TensorRT(-RTX) executes as
    INT8 kernels where it has them.

Cache: ``<cache_dir>/<key>.engine`` + ``<key>.json``; the key is built from the ONNX bytes' sha256, the API
and its version, the GPU architecture (``sm86``, ``rtx-jit``...), the precision, and a hash of the profiles
(and of the calibration tiles for INT8). A hit returns the stored engine without building.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._errors import BackendUnavailableError
from ._onnx import INPUT_NAME, onnx_sha256

__all__ = [
    "APIS",
    "PRECISIONS",
    "EngineInfo",
    "Profile",
    "TensorRTNotAvailableError",
    "build_engine",
    "default_cache_dir",
    "default_profiles",
    "engine_key",
    "find_cached_engine",
    "gpu_arch",
    "import_tensorrt",
    "load_calibration_tiles",
    "quantize_qdq",
    "read_engine_metadata",
    "to_fp16_onnx",
]

APIS = ("auto", "tensorrt", "tensorrt_rtx")
PRECISIONS = ("fp32", "fp16", "int8")
_INSTALL_HINT = (
    "install TensorRT (`pip install tensorrt`, builds need an NVIDIA GPU) or TensorRT-RTX, which builds "
    "without a GPU (`pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings`; the bindings wheel is "
    "CPython-version specific, e.g. cp311, manylinux_2_28 x86_64)"
)


class TensorRTNotAvailableError(ImportError):
    """The requested TensorRT API is not installed."""


def _import_rtx():
    try:
        return importlib.import_module("tensorrt_rtx")
    except ImportError:
        return importlib.import_module("tensorrt_rtx_bindings")  # name used by the split PyPI wheels


def import_tensorrt(api: str = "auto"):
    """Import a TensorRT Python API: returns ``(module, api_name)``.

    ``"auto"``: with a CUDA GPU, classic TensorRT first then TensorRT-RTX; without one, TensorRT-RTX first
    (the only one that can build without a GPU). Raises :class:`TensorRTNotAvailableError` naming what to
    install.
    """
    if api not in APIS:
        raise ValueError(f"api must be one of {APIS}, got {api!r}")
    order = [api] if api != "auto" else (
        ["tensorrt", "tensorrt_rtx"] if torch.cuda.is_available() else ["tensorrt_rtx", "tensorrt"])
    errors = []
    for name in order:
        try:
            mod = _import_rtx() if name == "tensorrt_rtx" else importlib.import_module("tensorrt")
        except (ImportError, OSError) as e:  # OSError: the shared libraries failed to load
            errors.append(f"{name}: {e}")
            continue
        return mod, name
    raise TensorRTNotAvailableError(f"TensorRT API {api!r} is not available ({'; '.join(errors)}): "
                                    f"{_INSTALL_HINT}")


@dataclass(frozen=True)
class Profile:
    """One optimisation profile for the ``image`` input: (N, 3, H, W) at min, opt and max."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def __post_init__(self):
        for name in ("min", "opt", "max"):
            v = tuple(int(s) for s in getattr(self, name))
            if len(v) != 4 or v[1] != 3 or min(v) < 1:
                raise ValueError(f"profiles: {name} must be (N, 3, H, W) with positive sizes, got {v}")
            object.__setattr__(self, name, v)
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max, strict=True)):
            raise ValueError(f"profiles: need min <= opt <= max in every axis, got {self.min}, {self.opt}, "
                             f"{self.max}")

    def covers(self, shape: Sequence[int]) -> bool:
        return len(shape) == 4 and all(a <= s <= b for a, s, b in zip(self.min, shape, self.max, strict=True))

    def as_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def default_profiles(tile: int = 1024, halo: int = 64, *, max_batch: int = 4,
                     min_size: int = 64) -> list[Profile]:
    """Profiles for the slide engine's tiles: cores of ``tile`` px with ``halo`` px of context each side.

    One profile: batch 1..``max_batch``, sides ``min_size``..``tile + 2 halo`` (tiles at the slide border are
    clipped, hence smaller), optimised for full tiles at the largest batch.
    """
    if tile < 1 or halo < 0 or max_batch < 1 or min_size < 1:
        raise ValueError(f"tile, max_batch, min_size must be >= 1 and halo >= 0, got {tile}, {max_batch}, "
                         f"{min_size}, {halo}")
    side = tile + 2 * halo
    lo = min(min_size, side)
    return [Profile((1, 3, lo, lo), (max_batch, 3, side, side), (max_batch, 3, side, side))]


def _as_profiles(profiles) -> list[Profile]:
    if profiles is None:
        return default_profiles()
    if isinstance(profiles, Profile):
        return [profiles]
    out = []
    for p in profiles:
        if isinstance(p, Profile):
            out.append(p)
        elif isinstance(p, dict):
            out.append(Profile(tuple(p["min"]), tuple(p["opt"]), tuple(p["max"])))
        else:
            out.append(Profile(*p))
    if not out:
        raise ValueError("profiles must not be empty")
    return out


def gpu_arch(api: str, compute_capabilities: Sequence[str] | None = None) -> str:
    """The architecture part of the cache key: ``sm<maj><min>`` (classic, current GPU), ``rtx-jit``
    (TensorRT-RTX portable engine), the joined ``sm..`` targets given to TensorRT-RTX, or ``none``."""
    if api == "tensorrt_rtx":
        if compute_capabilities:
            return "+".join(_norm_cc(c) for c in compute_capabilities)
        return "rtx-jit"
    if not torch.cuda.is_available():
        return "none"
    major, minor = torch.cuda.get_device_capability()
    return f"sm{major}{minor}"


def _norm_cc(cc: str) -> str:
    s = str(cc).lower().replace(".", "").replace("sm_", "").replace("sm", "")
    if not s.isdigit() or len(s) < 2:
        raise ValueError(f"compute_capabilities: expected entries like 'sm86' or '8.6', got {cc!r}")
    return f"sm{s}"


def default_cache_dir() -> Path:
    """``$NUCFAST_ENGINE_CACHE``, else ``~/.cache/nucfast/engines``."""
    env = os.environ.get("NUCFAST_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "nucfast" / "engines"


def engine_key(onnx_sha: str, api: str, version: str, arch: str, precision: str, profiles: Sequence[Profile],
               extra: str = "") -> str:
    """Cache key: ``<onnx sha256[:16]>-<api><version>-<arch>-<precision>-<hash of profiles/extra>``."""
    h = hashlib.sha256(json.dumps([[p.as_dict() for p in profiles], extra], sort_keys=True).encode())
    return f"{onnx_sha[:16]}-{api}{version}-{arch}-{precision}-{h.hexdigest()[:8]}"


@dataclass
class EngineInfo:
    """What :func:`build_engine` produced (or found in the cache)."""

    path: Path
    key: str
    api: str
    version: str
    arch: str
    precision: str
    profiles: list[Profile]
    onnx_sha256: str
    size_bytes: int
    build_seconds: float
    cached: bool

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        d["profiles"] = [p.as_dict() for p in self.profiles]
        return d


def read_engine_metadata(path: str | os.PathLike) -> dict:
    """The ``.json`` sidecar of an engine built by :func:`build_engine` (empty dict when absent)."""
    side = Path(path).with_suffix(".json")
    return json.loads(side.read_text()) if side.is_file() else {}


def _info_from_meta(path: Path, meta: dict, cached: bool) -> EngineInfo:
    return EngineInfo(path=path, key=meta["key"], api=meta["api"], version=meta["version"], arch=meta["arch"],
                      precision=meta["precision"], profiles=_as_profiles(meta["profiles"]),
                      onnx_sha256=meta["onnx_sha256"], size_bytes=path.stat().st_size,
                      build_seconds=meta["build_seconds"], cached=cached)


def find_cached_engine(onnx: bytes | str | os.PathLike, *, precision: str = "fp16",
                       cache_dir: str | os.PathLike | None = None, api: str = "auto",
                       shape: Sequence[int] | None = None) -> Path | None:
    """A cached engine for this ONNX model usable here (installed API version, this GPU), or None.

    ``shape``: only engines with a profile covering this input shape.
    """
    sha = onnx_sha256(onnx)
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not cdir.is_dir():
        return None
    versions = {}  # installed APIs, in preference order -> version
    for name in (["tensorrt", "tensorrt_rtx"] if api == "auto" else [api]):
        try:
            trt, got = import_tensorrt(name)
        except TensorRTNotAvailableError:
            continue
        versions[got] = trt.__version__
    if not versions:
        return None
    here = gpu_arch("tensorrt") if torch.cuda.is_available() else "none"
    found = []
    for side in sorted(cdir.glob(f"{sha[:16]}-*.json")):
        meta = json.loads(side.read_text())
        eng = side.with_suffix(".engine")
        if not eng.is_file() or meta.get("onnx_sha256") != sha or meta.get("precision") != precision:
            continue
        name = meta.get("api")
        if name not in versions or meta.get("version") != versions[name]:
            continue
        arch = meta.get("arch", "")
        if not (arch == here or arch == "rtx-jit" or (name == "tensorrt_rtx" and here in arch.split("+"))):
            continue
        if shape is not None and not any(p.covers(shape) for p in _as_profiles(meta["profiles"])):
            continue
        found.append((list(versions).index(name), arch == "rtx-jit", eng))  # classic first, AOT before JIT
    return min(found)[2] if found else None


# ---------------------------------------------------------------------------------------------------------
# calibration tiles


def _tissue_fraction(rgb: np.ndarray) -> float:
    """Fraction of pixels that look like stained tissue: HSV saturation > 0.07 and not near-black."""
    x = rgb.astype(np.float32)
    mx, mn = x.max(-1), x.min(-1)
    sat = (mx - mn) / np.maximum(mx, 1.0)
    return float(((sat > 0.07) & (mx > 30)).mean())


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_SLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".svslide", ".bif", ".tif", ".tiff"}


def _read_rgb(path: Path) -> np.ndarray | None:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        img = tifffile.imread(path)
    else:
        import cv2

        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is not None and img.ndim == 3 and img.shape[2] >= 3:
            img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    if img is None or img.ndim != 3 or img.shape[2] < 3 or img.dtype != np.uint8:
        return None  # label maps, masks, 16-bit images: not H&E tiles
    return np.ascontiguousarray(img[..., :3])


def _tiles_from_image(img: np.ndarray, tile: int) -> Iterable[np.ndarray]:
    h, w = img.shape[:2]
    for r in range(0, h - tile + 1, tile):
        for c in range(0, w - tile + 1, tile):
            yield img[r : r + tile, c : c + tile]


def _tiles_from_slide(path: Path, tile: int, max_tiles: int) -> Iterable[np.ndarray]:
    import openslide

    sl = openslide.OpenSlide(str(path))
    w, h = sl.dimensions
    step = max(tile, int(np.sqrt(w * h / max(4 * max_tiles, 1))))  # a spread-out grid, ~4x more than needed
    for r in range(0, h - tile + 1, step):
        for c in range(0, w - tile + 1, step):
            yield np.asarray(sl.read_region((c, r), 0, (tile, tile)).convert("RGB"))


def load_calibration_tiles(source, *, tile: int = 256, max_tiles: int = 32,
                           min_tissue: float = 0.5) -> np.ndarray:
    """Tissue tiles for INT8 calibration, as float32 (N, 3, tile, tile) in [0, 1].

    Parameters
    ----------
    source : path or array
        A directory of RGB images (png/jpg/tif; non-RGB-uint8 files such as label maps are skipped), one
        image, a whole-slide image (read with OpenSlide at level 0), or an array: (N, 3, H, W) float in [0, 1]
        or (N, H, W, 3) uint8.
    tile : int
        Tile side (non-overlapping grid, read in sorted file order: deterministic).
    max_tiles : int
    min_tissue : float
        Minimum fraction of tissue pixels (saturation test) for a tile to be kept.
    """
    if tile < 8 or max_tiles < 1 or not 0.0 <= min_tissue <= 1.0:
        raise ValueError(f"tile must be >= 8, max_tiles >= 1, min_tissue in [0, 1]; got {tile}, {max_tiles}, "
                         f"{min_tissue}")
    if isinstance(source, np.ndarray | torch.Tensor):
        arr = np.asarray(source.detach().cpu() if isinstance(source, torch.Tensor) else source)
        if arr.ndim == 4 and arr.shape[-1] == 3 and arr.dtype == np.uint8:
            arr = arr.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        if arr.ndim != 4 or arr.shape[1] != 3 or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError("calibration_tiles: an array must be (N, 3, H, W) float or (N, H, W, 3) uint8, "
                             f"got {arr.shape} {arr.dtype}")
        return np.ascontiguousarray(arr[:max_tiles], dtype=np.float32)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"calibration_tiles: no such file or directory {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        gen = (t for f in files if (im := _read_rgb(f)) is not None for t in _tiles_from_image(im, tile))
    elif path.suffix.lower() in _SLIDE_SUFFIXES - {".tif", ".tiff"} or (
            path.suffix.lower() in (".tif", ".tiff") and _is_pyramid(path)):
        gen = _tiles_from_slide(path, tile, max_tiles)
    else:
        im = _read_rgb(path)
        if im is None:
            raise ValueError(f"calibration_tiles: {path} is not an RGB uint8 image")
        gen = _tiles_from_image(im, tile)
    out = []
    for t in gen:
        if _tissue_fraction(t) >= min_tissue:
            out.append(t)
            if len(out) >= max_tiles:
                break
    if not out:
        raise ValueError(f"calibration_tiles: no {tile}x{tile} tile with >= {min_tissue:.0%} tissue in "
                         f"{path}")
    return np.stack(out).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def _is_pyramid(path: Path) -> bool:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        return len(tf.series) > 0 and len(tf.series[0].levels) > 1


class TileBatcher:
    """Feeds calibration tiles in fixed-size batches (the last partial batch is dropped: TensorRT's
    calibrator contract is one batch size). Used by the classic INT8 calibrator; device-agnostic."""

    def __init__(self, tiles: np.ndarray, batch_size: int):
        if batch_size < 1 or batch_size > len(tiles):
            raise ValueError(f"batch_size must be in [1, {len(tiles)}] (number of calibration tiles), "
                             f"got {batch_size}")
        self.tiles = tiles
        self.batch_size = batch_size
        self.index = 0

    def __len__(self) -> int:
        return len(self.tiles) // self.batch_size

    def next(self, device: str | torch.device = "cpu") -> torch.Tensor | None:
        if self.index + self.batch_size > len(self.tiles):
            return None
        b = torch.from_numpy(self.tiles[self.index : self.index + self.batch_size]).to(device).contiguous()
        self.index += self.batch_size
        return b


def _entropy_calibrator(trt, tiles: np.ndarray, batch_size: int, cache_file: Path | None):
    """A ``trt.IInt8EntropyCalibrator2`` reading tissue tiles; device buffers are torch CUDA tensors."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batcher = TileBatcher(tiles, batch_size)
            self.current: torch.Tensor | None = None  # keep the device batch alive while TensorRT reads it

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names):
            self.current = self.batcher.next("cuda")
            return None if self.current is None else [self.current.data_ptr()]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file is not None and cache_file.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            if cache_file is not None:
                cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()


# ---------------------------------------------------------------------------------------------------------
# graph rewrites for strongly typed builds


def to_fp16_onnx(onnx: bytes) -> bytes:
    """float32 ONNX -> float16 compute with float32 inputs/outputs (onnxruntime's float16 converter)."""
    import onnx as onnx_lib
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = onnx_lib.load_from_string(onnx)
    m16 = convert_float_to_float16(m, keep_io_types=True)
    return m16.SerializeToString()


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizer prints to stdout and warns through the root logger: keep both quiet."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_qdq(
    onnx: bytes, tiles: np.ndarray, *, batch_size: int = 4, extra_inputs: dict | None = None
) -> bytes:
    """Insert INT8 Q/DQ nodes calibrated on ``tiles`` (entropy method, symmetric: TensorRT's convention).

    Weights per output channel, activations per tensor; what a strongly typed TensorRT(-RTX) build executes
    as INT8 where it has INT8 kernels. ``extra_inputs``: the graph's other inputs (e.g. USE-Net's
    ``se_gates`` fitted on the same tiles), fed with every calibration batch.
    """
    extra = {k: np.asarray(v, dtype=np.float32) for k, v in (extra_inputs or {}).items()}
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batcher = TileBatcher(tiles, min(batch_size, len(tiles)))

        def get_next(self):
            b = self.batcher.next()
            return None if b is None else {INPUT_NAME: b.numpy(), **extra}

    with tempfile.TemporaryDirectory(prefix="nucfast-qdq-") as d, _quiet():
        src, dst = Path(d) / "model.onnx", Path(d) / "model.qdq.onnx"
        src.write_bytes(onnx)
        quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Entropy, op_types_to_quantize=["Conv"],
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "QuantizeBias": False},
                        calibration_cache_path=None)
        return dst.read_bytes()


# ---------------------------------------------------------------------------------------------------------
# the builder


_SEVERITY = {"error": "ERROR", "warning": "WARNING", "info": "INFO", "verbose": "VERBOSE"}
_LOGGERS: dict = {}


def _logger(trt, level: str):
    """One logger per API module (TensorRT keeps the first one registered and warns about any other);
    its severity is updated in place."""
    lg = _LOGGERS.get(trt.__name__)
    if lg is None:
        lg = _LOGGERS[trt.__name__] = trt.Logger(getattr(trt.Logger, _SEVERITY[level]))
    lg.min_severity = getattr(trt.Logger, _SEVERITY[level])
    return lg


def build_engine(
    onnx: bytes | str | os.PathLike,
    *,
    precision: str = "fp16",
    profiles: Sequence[Profile] | Profile | None = None,
    calibration_tiles=None,
    calibration_batch: int = 4,
    cache_dir: str | os.PathLike | None = None,
    api: str = "auto",
    compute_capabilities: Sequence[str] | None = None,
    workspace_mb: int | None = None,
    force: bool = False,
    log_level: str = "warning",
) -> EngineInfo:
    """Build (or fetch from the cache) a serialized TensorRT / TensorRT-RTX engine from an ONNX model.

    Parameters
    ----------
    onnx : bytes or path
        A float32 ONNX model from :func:`nucfast.engines.export_onnx` (input ``image``).
    precision : {"fp16", "fp32", "int8"}
    profiles : Profile or list of Profile, optional
        Optimisation profiles for ``image`` (default: :func:`default_profiles`, the slide engine's tiles).
    calibration_tiles : path or array, optional
        Required for ``int8``: see :func:`load_calibration_tiles` (directory of images, image, slide, array).
    calibration_batch : int
    cache_dir : path, optional
        Engine cache (default :func:`default_cache_dir`).
    api : {"auto", "tensorrt", "tensorrt_rtx"}
    compute_capabilities : list of str, optional
        TensorRT-RTX only: build ahead of time for these (``["sm86", "sm89"]``) instead of a portable engine.
    workspace_mb : int, optional
        Builder workspace limit.
    force : bool
        Rebuild even when the cache has the engine.

    Returns
    -------
    EngineInfo
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if log_level not in _SEVERITY:
        raise ValueError(f"log_level must be one of {tuple(_SEVERITY)}, got {log_level!r}")
    if isinstance(onnx, bytes | bytearray):
        data = bytes(onnx)
    else:
        p = Path(onnx)
        if not p.is_file():
            raise FileNotFoundError(f"onnx: no such file {p}")
        data = p.read_bytes()
    profs = _as_profiles(profiles)
    if precision == "int8" and calibration_tiles is None:
        raise ValueError("precision='int8' needs calibration_tiles (a directory of tissue images, a slide, "
                         "or an array of tiles)")
    if precision != "int8" and calibration_tiles is not None:
        raise ValueError(f"calibration_tiles is only used with precision='int8', got precision={precision!r}")
    trt, api_name = import_tensorrt(api)
    if compute_capabilities and api_name != "tensorrt_rtx":
        raise ValueError("compute_capabilities is a TensorRT-RTX option; classic TensorRT builds for the GPU "
                         "it runs on")
    if api_name == "tensorrt" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            "the classic TensorRT builder needs a CUDA GPU and none is available; build with TensorRT-RTX "
            "instead (api='tensorrt_rtx'), which needs no GPU"
        )
    version = trt.__version__
    arch = gpu_arch(api_name, compute_capabilities)
    tiles = None
    extra = ""
    if precision == "int8":
        tiles = load_calibration_tiles(calibration_tiles)
        extra = "calib:" + hashlib.sha256(tiles.tobytes()).hexdigest()
    sha = onnx_sha256(data)
    key = engine_key(sha, api_name, version, arch, precision, profs, extra)
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    eng_path, meta_path = cdir / f"{key}.engine", cdir / f"{key}.json"
    if not force and eng_path.is_file() and meta_path.is_file():
        return _info_from_meta(eng_path, json.loads(meta_path.read_text()), cached=True)

    t0 = time.perf_counter()
    flag_fp16 = getattr(trt.BuilderFlag, "FP16", None)
    flag_int8 = getattr(trt.BuilderFlag, "INT8", None)
    classic_int8 = (api_name == "tensorrt" and flag_int8 is not None
                    and hasattr(trt, "IInt8EntropyCalibrator2"))
    graph = data
    strongly_typed = api_name == "tensorrt_rtx"
    if precision == "fp16" and flag_fp16 is None:
        graph, strongly_typed = to_fp16_onnx(data), True
    elif precision == "int8" and not classic_int8:
        graph, strongly_typed = quantize_qdq(data, tiles, batch_size=calibration_batch), True

    logger = _logger(trt, log_level)
    builder = trt.Builder(logger)
    flags = 0
    nf = trt.NetworkDefinitionCreationFlag
    if strongly_typed and hasattr(nf, "STRONGLY_TYPED"):
        flags |= 1 << int(nf.STRONGLY_TYPED)
    if hasattr(nf, "EXPLICIT_BATCH") and int(version.split(".")[0]) < 10:
        flags |= 1 << int(nf.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(graph):
        errs = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise RuntimeError(f"{api_name} could not parse the ONNX model: {errs}")
    if network.num_inputs != 1 or network.get_input(0).name != INPUT_NAME:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise ValueError(f"onnx: expected one input named {INPUT_NAME!r} (from export_onnx), got {names}")

    config = builder.create_builder_config()
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for p in profs:
        prof = builder.create_optimization_profile()
        prof.set_shape(INPUT_NAME, p.min, p.opt, p.max)
        config.add_optimization_profile(prof)
    if compute_capabilities:
        config.num_compute_capabilities = len(compute_capabilities)
        for i, cc in enumerate(compute_capabilities):
            name = _norm_cc(cc).upper()
            if not hasattr(trt.ComputeCapability, name):
                known = [k for k in trt.ComputeCapability.__members__ if k.startswith("SM")]
                raise ValueError(f"compute_capabilities: {cc!r} is not supported by TensorRT-RTX {version} "
                                 f"(supported: {known})")
            config.set_compute_capability(getattr(trt.ComputeCapability, name), i)
    if precision == "fp16" and flag_fp16 is not None and not strongly_typed:
        config.set_flag(flag_fp16)
    calibrator = None
    if precision == "int8" and classic_int8:
        config.set_flag(flag_int8)
        if flag_fp16 is not None:
            config.set_flag(flag_fp16)  # layers without INT8 kernels fall back to FP16, not FP32
        calibrator = _entropy_calibrator(trt, tiles, min(calibration_batch, len(tiles)),
                                         cdir / f"{key}.calib")
        config.int8_calibrator = calibrator
        shp = (calibrator.get_batch_size(), 3, tiles.shape[2], tiles.shape[3])
        cprof = builder.create_optimization_profile()
        cprof.set_shape(INPUT_NAME, shp, shp, shp)
        config.set_calibration_profile(cprof)

    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError(f"{api_name} {version} failed to build the engine (precision={precision}, "
                           f"arch={arch}); rerun with log_level='verbose' for the builder log")
    seconds = time.perf_counter() - t0
    tmp = eng_path.with_name(eng_path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(memoryview(blob))
    os.replace(tmp, eng_path)
    meta = dict(key=key, api=api_name, version=version, arch=arch, precision=precision,
                profiles=[p.as_dict() for p in profs], onnx_sha256=sha, build_seconds=seconds,
                strongly_typed=strongly_typed, int8_mode=("calibrator" if classic_int8 else "qdq")
                if precision == "int8" else None, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    tmpm = meta_path.with_name(meta_path.name + f".tmp{os.getpid()}")
    tmpm.write_text(json.dumps(meta, indent=1))
    os.replace(tmpm, meta_path)
    return _info_from_meta(eng_path, meta, cached=False)
