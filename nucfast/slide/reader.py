"""Whole-slide readers: cuCIM first, then OpenSlide, then tifffile, behind one small interface.

``open_slide(path)`` returns a :class:`SlideReader` whose coordinates are always ``(row, col)`` and
``(height, width)`` (numpy order), in the pixel grid of the requested level, whatever the backend.

Physical pixel size (MPP, microns per pixel) comes from the file's metadata: the Aperio ``MPP`` field of
the ImageDescription (cuCIM's ``spacing()`` ignores it), OpenSlide's ``openslide.mpp-x``, or TIFF
``XResolution`` with a centimetre/inch unit. ``open_slide(path, mpp=...)`` overrides it. A slide without
MPP opens (``reader.mpp is None``); the engine then refuses to segment it unless ``mpp=`` is given,
because silently assuming a resolution would run the model at the wrong scale (see ``require_mpp``).

Integrity (:mod:`nucfast.slide._integrity`): a TIFF-based file is checked before any backend sees it (the
directory chain and every tag value inside the file, tile tables consistent with the image), and every
tile a read touches is verified once by a decoder that reports errors (strict libjpeg for JPEG tiles),
whichever library then decodes the pixels. cuCIM returns blank or stale pixels for truncated or corrupt
tiles; these checks turn that into a :class:`SlideReadError` naming the file, the region and the tile.

Readers are subclasses of :class:`SlideReader` (:class:`CuCIMReader`, :class:`OpenSlideReader`,
:class:`TiffFileReader`), each implementing ``_read_inside``, ``_associated`` and ``_close``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._integrity import SegmentVerifier, SlideReadError, check_pages, check_structure

log = logging.getLogger(__name__)

BACKENDS = ("cucim", "openslide", "tifffile")
#: Plausible microns per pixel: optical scanners resolve ~0.1 um at best, and a slide coarser than 100 um/px
#: shows no cells. An ``mpp=`` outside is refused; a metadata value outside is ignored (as if absent).
MPP_RANGE = (0.01, 100.0)
_ASSOCIATED = ("thumbnail", "label", "macro")


class MissingMPPError(ValueError):
    """The slide has no physical pixel size in its metadata and none was given."""


@dataclass(frozen=True)
class Level:
    """One pyramid level: ``shape`` = (height, width) in its own pixels, ``downsample`` vs level 0."""

    shape: tuple[int, int]
    downsample: float
    tile: tuple[int, int] | None = None


def _parse_aperio_mpp(description: str | None) -> float | None:
    if not description or not description.startswith("Aperio"):
        return None
    m = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", description)
    if not m:
        return None
    try:
        v = float(m.group(1))
    except ValueError:
        return None
    return v if v > 0 and np.isfinite(v) else None


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass
class _TiffInfo:
    """What the integrity checks learned about a TIFF file: an open tifffile handle (closed by the reader),
    MPP, associated pages (name -> page index), the tiled pyramid pages, and the verifier (None for
    flavours the checks do not cover, i.e. NDPI)."""

    tf: object
    mpp: float | None
    mpp_source: str | None
    associated: dict
    verifier: SegmentVerifier | None

    def close(self) -> None:
        if self.verifier is not None:
            self.verifier.close()
        self.tf.close()


def _tiff_inspect(path: Path, size: int) -> _TiffInfo:
    """Structure checks (:func:`check_structure`, :func:`check_pages`) + metadata with tifffile.

    Raises SlideReadError when the header or a directory cannot be read, when a directory, tag value or
    image segment lies past the end of the file (truncated copy), or when the tile tables are inconsistent.
    """
    import tifffile

    tags0 = check_structure(path, size)
    ndpi = 65420 in tags0
    try:
        tf = tifffile.TiffFile(path)
    except Exception as e:  # tifffile raises TiffFileError, ValueError, struct.error, ...
        raise SlideReadError(f"{path}: cannot parse TIFF structure ({type(e).__name__}: {e})") from e
    try:
        pages = list(tf.pages)
        if not pages:
            raise SlideReadError(f"{path}: TIFF has no image directories")
        if not ndpi:
            check_pages(path, pages, size)
        info = _TiffInfo(tf, None, None, {}, None)
        p0 = pages[0]
        desc = p0.description or ""
        mpp = _parse_aperio_mpp(desc)
        if mpp is not None:
            info.mpp, info.mpp_source = mpp, "aperio ImageDescription MPP"
        else:
            tags = p0.tags
            xres = tags.get("XResolution")
            unit = tags.get("ResolutionUnit")
            if xres is not None and unit is not None:
                num, den = xres.value if isinstance(xres.value, tuple) else (xres.value, 1)
                u = int(unit.value)
                per_unit = float(num) / float(den) if den else 0.0
                # 2 = inch, 3 = centimetre; 1 (none) carries no physical size.
                if per_unit > 0 and u in (2, 3):
                    um = 25400.0 if u == 2 else 10000.0
                    info.mpp, info.mpp_source = um / per_unit, "TIFF XResolution"
        # Aperio associated images: pages whose description names them; page 1 untiled = thumbnail.
        for i, p in enumerate(pages[1:], start=1):
            lines = [ln.strip() for ln in (p.description or "").lower().splitlines()]
            for name in ("label", "macro"):
                if any(ln == name or ln.startswith(name + " ") for ln in lines):
                    info.associated[name] = i
            if i == 1 and not p.is_tiled and desc.startswith("Aperio"):
                info.associated["thumbnail"] = i
        if not ndpi:
            for p in pages:  # parse lazily-loaded tables and decoders now, in one thread
                _ = p.jpegtables, p.decode
            info.verifier = SegmentVerifier(path, tf)
    except SlideReadError:
        tf.close()
        raise
    except Exception as e:
        tf.close()
        raise SlideReadError(f"{path}: cannot parse TIFF structure ({type(e).__name__}: {e})") from e
    return info


def _pyramid_pages(tf, assoc_pages) -> list:
    """The tiled RGB(A) pages of the pyramid, finest first (Aperio-style separate pages, or the levels of
    tifffile's first series)."""
    series = tf.series[0]
    first = series.pages[0]
    if len(first.shape) != 3 or first.shape[-1] not in (3, 4):
        raise ValueError(
            f"the full-resolution page {first.index} has shape {tuple(first.shape)} "
            f"({first.samplesperpixel} samples per pixel): not an RGB slide"
        )
    lvl_series = list(series.levels)
    if len(lvl_series) == 1:  # Aperio-style: reduced levels are separate tiled pages
        cand = [p for p in tf.pages if p.is_tiled and p.shape[-1] in (3, 4) and p.index not in assoc_pages]
        pages = cand if cand else [series.pages[0]]
    else:
        pages = [s.pages[0] for s in lvl_series]
    out = []
    for p in pages:
        if out and int(p.shape[0]) >= int(out[-1].shape[0]):
            continue
        out.append(p)
    return out


def _block_mean_u8(strip: np.ndarray, k: int) -> np.ndarray:
    """Means of the ``k`` x ``k`` blocks of a uint8 RGB strip (edge-padded to a multiple of ``k``), rounded
    half to even: the same values as ``rint`` of the float32 mean (exact integer sums, their quotient
    rounded to float32), by 2k integer additions of strided views instead of a float32 copy of the strip
    (4-8x faster)."""
    hh, lw = strip.shape[:2]
    ph, pw = -(-hh // k) * k, -(-lw // k) * k
    if (ph, pw) != (hh, lw):
        strip = np.pad(strip, ((0, ph - hh), (0, pw - lw), (0, 0)), mode="edge")
    if k == 1:
        return np.ascontiguousarray(strip[..., :3])
    v = strip[..., :3].reshape(ph // k, k, pw, 3)
    rows = v[:, 0].astype(np.uint16 if k * 255 < 65536 else np.uint32)
    for i in range(1, k):
        rows += v[:, i]
    cols = rows.reshape(ph // k, pw // k, k, 3)
    s = cols[:, :, 0].astype(np.uint32)
    for j in range(1, k):
        s += cols[:, :, j]
    return np.rint((s / (k * k)).astype(np.float32)).astype(np.uint8)


class SlideReader:
    """Random access to a whole-slide image. Use :func:`open_slide`.

    Subclasses implement ``_read_inside(level, r, c, h, w)`` (a region inside the level),
    ``_associated(name)`` and ``_close()``; this base validates arguments, pads outside the level with white,
    verifies every tile a read touches (:class:`nucfast.slide._integrity.SegmentVerifier`) and turns any
    failure into a :class:`SlideReadError` naming the file and the region.

    Attributes
    ----------
    path : Path
    backend : str
        ``"cucim"``, ``"openslide"`` or ``"tifffile"``.
    levels : list of Level
        ``levels[0]`` is full resolution; ``shape`` is ``(height, width)``.
    mpp : float or None
        Microns per level-0 pixel (override, else from metadata, else None).
    mpp_source : str or None
        Where ``mpp`` came from.
    verified : bool
        Every level is verified tile by tile (a TIFF file; False for formats only OpenSlide reads, which
        rely on OpenSlide's own error reporting).
    """

    backend = "?"

    def __init__(self, path: Path, handle, levels, mpp, mpp_source, assoc, tiff: _TiffInfo | None = None):
        self.path = path
        self._h = handle
        self.levels: list[Level] = levels
        self.mpp: float | None = mpp
        self.mpp_source: str | None = mpp_source
        self._assoc = assoc  # name -> backend-specific key
        self._lock = threading.Lock()  # OpenSlide/tifffile handles are not reliably thread-safe
        self._tiff = tiff
        self._verifier = tiff.verifier if tiff is not None else None
        self._level_pages: list[int | None] = [None] * len(levels)
        self._assoc_pages: dict[str, int] = dict(tiff.associated) if tiff is not None else {}
        if self._verifier is not None:
            pages = list(tiff.tf.pages)
            by_shape = {}
            for p in pages:
                if p.is_tiled and p.index not in set(self._assoc_pages.values()):
                    by_shape.setdefault((int(p.shape[0]), int(p.shape[1])), p.index)
            self._level_pages = [by_shape.get(tuple(lv.shape)) for lv in levels]

    # -- basic properties -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 (height, width)."""
        return self.levels[0].shape

    @property
    def level_count(self) -> int:
        return len(self.levels)

    @property
    def associated_images(self) -> list[str]:
        """Names of the associated images present (subset of thumbnail, label, macro)."""
        return sorted(self._assoc)

    @property
    def verified(self) -> bool:
        return self._verifier is not None and all(p is not None for p in self._level_pages)

    def require_mpp(self) -> float:
        """The slide's MPP, or MissingMPPError telling the user how to pass it."""
        if self.mpp is None:
            raise MissingMPPError(
                f"{self.path}: the file has no physical pixel size (MPP) in its metadata; pass mpp=<microns "
                f"per pixel> (CLI: --mpp), e.g. 0.25 for a 40x scan or 0.5 for 20x"
            )
        return self.mpp

    def best_level_for_downsample(self, downsample: float) -> int:
        """Index of the coarsest level whose downsample is <= ``downsample`` (+1% tolerance)."""
        best = 0
        for i, lv in enumerate(self.levels):
            if lv.downsample <= downsample * 1.01:
                best = i
        return best

    # -- pixels -----------------------------------------------------------------------------
    def read_region(self, level: int, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """Read ``size = (h, w)`` pixels of ``level`` starting at ``location = (row, col)`` in that level.

        Pixels outside the level are white (255). Returns a C-contiguous uint8 array (h, w, 3).
        Raises SlideReadError naming the file, the region and the tile when a tile is corrupt or the
        backend fails to decode.
        """
        if not 0 <= level < len(self.levels):
            raise ValueError(f"level must be in [0, {len(self.levels)}), got {level}")
        r, c = (int(v) for v in location)
        h, w = (int(v) for v in size)
        if h < 0 or w < 0:
            raise ValueError(f"size must be non-negative, got {size}")
        if h == 0 or w == 0:
            return np.zeros((h, w, 3), np.uint8)
        if self._h is None:
            raise ValueError(f"{self.path}: the reader is closed")
        try:
            out = self._read(level, r, c, h, w)
        except Exception as e:
            raise SlideReadError(
                f"{self.path}: failed to read region level={level} (row={r}, col={c}) size=({h}, {w}) "
                f"with {self.backend} ({type(e).__name__}: {e})"
            ) from e
        return np.ascontiguousarray(out)

    def read_region_tensor(self, level: int, location, size, device="cpu"):
        """Like :meth:`read_region` but a torch uint8 tensor (h, w, 3) on ``device``.

        With cuCIM and a CUDA device the decode happens on the GPU (``device="cuda"`` in cuCIM) and the
        array reaches torch through DLPack (CuPy) without a host copy; otherwise the host array is
        wrapped (zero copy) and moved. One code path: the host branch is what runs on this machine.
        """
        import torch

        dev = torch.device(device)
        if dev.type == "cuda" and self.backend == "cucim":  # pragma: no cover - no GPU here
            import cupy as cp

            r, c = location
            h, w = size
            self._verify(level, int(r), int(c), int(h), int(w))
            ds = self.levels[level].downsample
            reg = self._h.read_region((round(c * ds), round(r * ds)), (int(w), int(h)), level, device="cuda")
            return torch.from_dlpack(cp.asarray(reg)[..., :3]).contiguous()
        return torch.from_numpy(self.read_region(level, location, size)).to(dev)

    def _verify(self, level, r, c, h, w) -> None:
        """Verify the tiles of ``level`` under the region (clipped to the level) before they are decoded."""
        page = self._level_pages[level] if self._verifier is not None else None
        if page is None:
            return
        lh, lw = self.levels[level].shape
        r0, r1, c0, c1 = max(r, 0), min(r + h, lh), max(c, 0), min(c + w, lw)
        if r1 > r0 and c1 > c0:
            self._verifier.check(page, r0, c0, r1, c1)

    def _read(self, level, r, c, h, w):
        """Read the part of the region inside the level; the rest is white (same for every backend)."""
        lh, lw = self.levels[level].shape
        out = np.full((h, w, 3), 255, np.uint8)
        r0, r1 = max(r, 0), min(r + h, lh)
        c0, c1 = max(c, 0), min(c + w, lw)
        if r1 > r0 and c1 > c0:
            self._verify(level, r0, c0, r1 - r0, c1 - c0)
            a = self._read_inside(level, r0, c0, r1 - r0, c1 - c0)
            if a.shape[:2] != (r1 - r0, c1 - c0):
                raise ValueError(f"the backend returned {a.shape[:2]} pixels for {(r1 - r0, c1 - c0)}")
            out[r0 - r : r1 - r, c0 - c : c1 - c] = a
        return out

    def _read_inside(self, level, r, c, h, w) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _associated(self, name: str) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (``"thumbnail"``, ``"label"``, ``"macro"``) as uint8 RGB (h, w, 3)."""
        name = name.lower()
        if name not in self._assoc:
            raise KeyError(f"{self.path}: no associated image {name!r}; present: {self.associated_images}")
        try:
            if self._verifier is not None and name in self._assoc_pages:
                self._verifier.check_page(self._assoc_pages[name])
            a = self._associated(name)
        except Exception as e:
            raise SlideReadError(f"{self.path}: failed to read associated image {name!r} ({e})") from e
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        return np.ascontiguousarray(a[..., :3])

    def thumbnail(self, max_size: int = 1024) -> tuple[np.ndarray, float]:
        """A downsampled RGB view of the whole slide with its longest side <= ``max_size``.

        Computed from the pyramid (coarsest level that is still >= max_size, area-averaged by an
        integer factor, read in strips so memory stays bounded), not from the associated thumbnail,
        so its geometry is exact. Returns ``(image, downsample)`` with downsample relative to level 0
        (``thumb[i, j]`` covers level-0 rows ``i*downsample ... (i+1)*downsample``).
        """
        return self.thumbnails([max_size])[0]

    def thumbnails(self, sizes) -> list[tuple[np.ndarray, float]]:
        """:meth:`thumbnail` for each of ``sizes``, the ones read from the same level decoding it once
        (the tissue mask's and the overlay's)."""
        H0, W0 = self.shape
        plans = []
        for max_size in sizes:
            li = self.best_level_for_downsample(max(max(H0, W0) / max_size, 1.0))
            lh, lw = self.levels[li].shape
            plans.append((li, max(1, int(np.ceil(max(lh, lw) / max_size)))))
        out: list = [None] * len(plans)
        for li in sorted({li for li, _ in plans}):
            lh, lw = self.levels[li].shape
            ks = sorted({k for lv, k in plans if lv == li})
            step = int(np.lcm.reduce(ks))  # strips start on every factor's block grid
            rows_per_strip = max(1, (8 << 20) // max(1, lw * 3 * step)) * step  # ~8 MB strips
            thumbs = {k: np.empty((-(-lh // k), -(-lw // k), 3), np.uint8) for k in ks}
            for r in range(0, lh, rows_per_strip):
                strip = self.read_region(li, (r, 0), (min(rows_per_strip, lh - r), lw))
                for k in ks:
                    blk = _block_mean_u8(strip, k)
                    thumbs[k][r // k : r // k + len(blk)] = blk
            for n, (lv, k) in enumerate(plans):
                if lv == li:
                    out[n] = (thumbs[k], self.levels[li].downsample * k)
        return out

    def close(self) -> None:
        h, self._h = self._h, None
        if h is None:
            return
        try:
            self._close_handle(h)
        except Exception:  # closing must never mask the real error
            pass
        if self._tiff is not None:
            try:
                self._tiff.close()
            except Exception:
                pass

    def _close_handle(self, h) -> None:
        if hasattr(h, "close"):
            h.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, backend={self.backend!r}, shape={self.shape}, "
            f"levels={len(self.levels)}, mpp={self.mpp})"
        )


# -- backends -------------------------------------------------------------------------------------
def _cufile_settings() -> None:
    """cuFile (GPUDirect Storage, which cuCIM loads when torch has preloaded ``libcufile``) writes
    ``cufile.log`` into the working directory unless ``CUFILE_LOGFILE_PATH`` says otherwise: send it to a
    per-user folder of the temp directory (a user's own setting wins). Must run before ``import cucim``
    (cuFile opens its log when cuCIM's library is loaded)."""
    if "CUFILE_LOGFILE_PATH" not in os.environ:
        import tempfile

        d = Path(tempfile.gettempdir()) / f"nucfast-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        d.mkdir(exist_ok=True)
        os.environ["CUFILE_LOGFILE_PATH"] = str(d / "cufile.log")


def _cuda_driver_present() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


class _CudaLessCuFileLines:
    """On a host without the CUDA driver, cuFile's driver open fails and prints ``dlopen error
    libcuda.so.1 ... cuFile initialization failed`` to the C stdout, once when cuCIM's library loads and
    once when its slide plug-in loads; no cuFile setting silences it (``CUFILE_LOGGING_LEVEL`` and
    ``cufile.json`` ``logging.level`` were tried). Only around those two calls, and only on such hosts,
    file descriptor 1 goes to a temporary file whose text is logged at DEBUG level (logger
    ``nucfast.slide.reader``); nothing else is redirected."""

    def __enter__(self):
        import sys
        import tempfile

        self.active = not _cuda_driver_present()
        if self.active:
            sys.stdout.flush()
            self.tmp = tempfile.TemporaryFile()
            self.saved = os.dup(1)
            os.dup2(self.tmp.fileno(), 1)
        return self

    def __exit__(self, *exc):
        if self.active:
            os.dup2(self.saved, 1)
            os.close(self.saved)
            self.tmp.seek(0)
            text = self.tmp.read().decode(errors="replace").strip()
            self.tmp.close()
            if text:
                log.debug("cuCIM/cuFile start-up output (no CUDA driver on this host): %s", text)
        return False


_cucim_started = False


def _import_cuimage():
    """cuCIM's ``CuImage`` (optional heavy dependency, RAPIDS). Without a CUDA device cuCIM is imported with
    CuPy hidden: its package ``__init__`` imports CuPy (0.5-0.7 s) for its GPU image functions only,
    which a CPU reader never calls; CuPy stays importable afterwards (it is not cached as missing)."""
    import sys

    import torch

    if "cucim" in sys.modules or "cupy" in sys.modules or torch.cuda.is_available():
        from cucim import CuImage

        return CuImage
    sys.modules["cupy"] = None  # type: ignore[assignment]  # "import cupy" raises ImportError
    try:
        from cucim import CuImage
    except ImportError:  # a cuCIM that needs CuPy to import: import it normally
        sys.modules.pop("cupy", None)
        from cucim import CuImage
    finally:
        sys.modules.pop("cupy", None)
    return CuImage


class CuCIMReader(SlideReader):
    """cuCIM (``CuImage``): fastest; GPU decode when a CUDA device reads (``read_region_tensor``)."""

    backend = "cucim"

    @staticmethod
    def open(path: Path):
        global _cucim_started
        _cufile_settings()
        with _CudaLessCuFileLines() if not _cucim_started else contextlib.nullcontext():
            CuImage = _import_cuimage()
            im = CuImage(str(path))  # the first open loads the slide plug-in (and its cuFile)
        _cucim_started = True
        res = im.resolutions
        levels = []
        for (w, h), ds, tile in zip(
            res["level_dimensions"], res["level_downsamples"], res["level_tile_sizes"], strict=True
        ):
            levels.append(Level((int(h), int(w)), float(ds), (int(tile[1]), int(tile[0]))))
        md = im.metadata if isinstance(im.metadata, dict) else {}
        mpp = None
        try:
            mpp = float(md.get("aperio", {}).get("MPP")) if md.get("aperio", {}).get("MPP") else None
        except (TypeError, ValueError):
            mpp = None
        assoc = {n.lower(): n for n in im.associated_images if n.lower() in _ASSOCIATED}
        return im, levels, mpp, assoc

    def _read_inside(self, level, r, c, h, w):
        ds = self.levels[level].downsample
        # cuCIM takes (x, y) in level-0 coordinates and (w, h) in level pixels.
        reg = self._h.read_region((round(c * ds), round(r * ds)), (w, h), level)
        return np.asarray(reg)[..., :3]

    def _associated(self, name):
        return np.asarray(self._h.associated_image(self._assoc[name]))


class OpenSlideReader(SlideReader):
    """OpenSlide: every format it knows (libjpeg warnings are errors there too)."""

    backend = "openslide"

    @staticmethod
    def open(path: Path):
        import openslide

        s = openslide.OpenSlide(str(path))
        levels = [
            Level((int(h), int(w)), float(ds))
            for (w, h), ds in zip(s.level_dimensions, s.level_downsamples, strict=True)
        ]
        mpp = s.properties.get("openslide.mpp-x")
        mpp = float(mpp) if mpp else None
        assoc = {n.lower(): n for n in s.associated_images.keys() if n.lower() in _ASSOCIATED}
        return s, levels, mpp, assoc

    def _read_inside(self, level, r, c, h, w):
        ds = self.levels[level].downsample
        with self._lock:
            im = self._h.read_region((round(c * ds), round(r * ds)), level, (w, h))
        a = np.asarray(im)  # RGBA, transparent outside the slide
        rgb = a[..., :3].copy()
        rgb[a[..., 3] == 0] = 255
        return rgb

    def _associated(self, name):
        with self._lock:
            return np.asarray(self._h.associated_images[self._assoc[name]].convert("RGB"))


class TiffFileReader(SlideReader):
    """tifffile: pure Python + imagecodecs; tiles decoded one by one by the verifier (no zarr, no asyncio),
    with a small cache of decoded tiles (``cache_bytes``)."""

    backend = "tifffile"
    cache_bytes = 64 << 20

    @staticmethod
    def open(path: Path, tiff: _TiffInfo):
        if tiff.verifier is None:
            raise ValueError("this TIFF flavour (NDPI) is read by OpenSlide, not by the tifffile reader")
        pages = _pyramid_pages(tiff.tf, set(tiff.associated.values()))
        levels = []
        for p in pages:
            if p.dtype != np.uint8:
                raise ValueError(f"page {p.index} has {p.dtype} pixels; only 8-bit RGB slides are supported")
            h, w = int(p.shape[0]), int(p.shape[1])
            t = (int(p.tilelength), int(p.tilewidth)) if p.is_tiled else None
            h0 = levels[0].shape[0] if levels else h
            levels.append(Level((h, w), h0 / h if h else 1.0, t))
        return [p.index for p in pages], levels, None, dict(tiff.associated)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._level_pages = list(self._h)  # the pages the levels were built from
        self._cache: OrderedDict = OrderedDict()
        self._cached = 0

    def _segment(self, page: int, seg: int):
        key = (page, seg)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        a, pos = self._verifier.decode(page, seg)
        with self._lock:
            self._cache[key] = (a, pos)
            self._cached += a.nbytes
            while self._cached > self.cache_bytes and len(self._cache) > 1:
                _, (old, _) = self._cache.popitem(last=False)
                self._cached -= old.nbytes
        return a, pos

    def _read_inside(self, level, r, c, h, w):
        page = self._level_pages[level]
        p = self._verifier.page(page)
        spp = int(p.samplesperpixel)
        planar = int(p.planarconfig) == 2 and spp > 1
        out = np.empty((h, w, spp), np.uint8)
        for seg in self._verifier.segments(page, r, c, r + h, c + w):
            a, (plane, sr, sc) = self._segment(page, seg)
            rr0, rr1 = max(r, sr), min(r + h, sr + a.shape[0])
            cc0, cc1 = max(c, sc), min(c + w, sc + a.shape[1])
            if rr1 <= rr0 or cc1 <= cc0:
                continue
            src = a[rr0 - sr : rr1 - sr, cc0 - sc : cc1 - sc]
            if planar:
                out[rr0 - r : rr1 - r, cc0 - c : cc1 - c, plane] = src[..., 0]
            else:
                out[rr0 - r : rr1 - r, cc0 - c : cc1 - c] = src
        if spp < 3:
            out = np.repeat(out[..., :1], 3, axis=2)
        return out[..., :3]

    def _associated(self, name):
        with self._lock:
            return self._tiff.tf.pages[self._assoc[name]].asarray()

    def _close_handle(self, h) -> None:
        self._cache.clear()


def _plausible_mpp(v: float | None, path: Path) -> bool:
    if v is None:
        return False
    if MPP_RANGE[0] <= v <= MPP_RANGE[1]:
        return True
    log.warning("%s: ignoring the implausible MPP %g in the file's metadata", path, v)
    return False


_READERS = {"cucim": CuCIMReader, "openslide": OpenSlideReader, "tifffile": TiffFileReader}


def open_slide(path, mpp: float | None = None, backend: str = "auto") -> SlideReader:
    """Open a whole-slide image.

    Parameters
    ----------
    path : str or Path
        Slide file (Aperio SVS, generic/pyramidal TIFF, and what OpenSlide reads).
    mpp : float, optional
        Microns per level-0 pixel; overrides the file's metadata (needed for files without it).
    backend : {"auto", "cucim", "openslide", "tifffile"}
        ``"auto"`` tries cuCIM, then OpenSlide, then tifffile.

    Returns
    -------
    SlideReader
        A :class:`CuCIMReader`, :class:`OpenSlideReader` or :class:`TiffFileReader`.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    SlideReadError
        Truncated, corrupt or unsupported file (the message names the file and each backend's reason);
        later, from ``read_region``, a corrupt tile (naming the region and the tile).

    Examples
    --------
    >>> with open_slide("CMU-1-Small-Region.svs") as s:  # doctest: +SKIP
    ...     tile = s.read_region(0, (0, 0), (512, 512))
    """
    path = Path(os.fspath(path))
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if mpp is not None:
        mpp = float(mpp)
        if not (mpp > 0 and np.isfinite(mpp)):
            raise ValueError(f"mpp must be a positive finite number of microns per pixel, got {mpp}")
        if not MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
            raise ValueError(
                f"mpp={mpp:g} microns per pixel is implausible (expected {MPP_RANGE[0]:g}..{MPP_RANGE[1]:g}; "
                "e.g. 0.25 for a 40x scan, 0.5 for 20x)"
            )
    if not path.exists():
        raise FileNotFoundError(f"slide file not found: {path}")
    if path.is_dir():
        raise SlideReadError(f"{path}: is a directory, not a slide file")
    try:
        size = path.stat().st_size
        tiff = _is_tiff(path) if size >= 4 else False
    except OSError as e:
        raise SlideReadError(f"{path}: cannot read file ({e})") from e
    if size == 0:
        raise SlideReadError(f"{path}: empty file")
    info = _tiff_inspect(path, size) if tiff else None
    order = BACKENDS if backend == "auto" else (backend,)
    errors = []
    try:
        for name in order:
            if name == "tifffile" and not tiff:
                errors.append("tifffile: not a TIFF file")
                continue
            cls = _READERS[name]
            try:
                opened = cls.open(path, info) if name == "tifffile" else cls.open(path)
                handle, levels, file_mpp, assoc = opened
            except ImportError as e:
                errors.append(f"{name}: not installed ({e})")
                continue
            except Exception as e:
                errors.append(f"{name}: {type(e).__name__}: {e}")
                continue
            if not levels or min(levels[0].shape) <= 0:
                errors.append(f"{name}: no image levels")
                continue
            src = None
            if mpp is not None:
                the_mpp, src = mpp, "override"
            elif info is not None and _plausible_mpp(info.mpp, path):
                the_mpp, src = info.mpp, info.mpp_source
            elif _plausible_mpp(file_mpp, path):
                the_mpp, src = file_mpp, f"{name} metadata"
            else:
                the_mpp = None
            reader = cls(path, handle, levels, the_mpp, src, assoc, info)
            info = None  # owned by the reader now
            return reader
    finally:
        if info is not None:
            info.close()
    raise SlideReadError(f"{path}: unsupported or corrupt slide file; " + "; ".join(errors))
