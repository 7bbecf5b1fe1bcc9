"""``segment_slide``: whole slide -> nuclei, seam-free, bounded memory, resumable.

Pipeline
--------
1. Open the slide, require its MPP (or ``mpp=``), pick the working resolution = the segmenter's ``mpp``
   (level 0 when within 10%, else the closest finer pyramid level resampled with a global affine map so
   every working pixel has one value whatever the tile).
2. Tissue mask on a thumbnail; tile grid (cores of ``tile`` px) over tissue only.
3. Slide-level statistics (``segmenter.fit``) on a fixed sample of tissue patches chosen from the mask
   (never from the tiling), so no value depends on how tiles are cut or batched.
4. Threads with bounded queues: a decoder reads core + ``halo`` (clipped to the slide, so slide borders
   are image borders exactly as for a whole-image run), ``workers`` threads segment and measure, the
   calling thread writes. Memory is O(queue sizes x tile), independent of the slide size.
5. Seam-free stitching: a nucleus is kept by the one tile whose core contains its centroid
   (``floor(centroid)``); with a halo wider than the largest nucleus plus the kernels' reach, a nucleus
   touching a core is complete and identical in every tile that sees it, hence kept exactly once and never
   cut. Exception (documented, counted in ``SlideResult.cut_nuclei``): a nucleus whose pixels reach the
   outer edge of its tile's halo (inside the slide) may be truncated; and when the post-processing's
   result depends on context farther than the halo (e.g. watershed basins of one clump of touching nuclei
   wider than the halo), the tiled result can differ from a whole-image run there. With the attention
   post-processing one such global dependence is known: ``peak_local_max(labels=mask)`` takes the bounding
   box of *all* foreground (after excluding the image border) as its region and filters with
   ``mode="nearest"`` inside it, so peaks within ~7 px of that box depend on foreground anywhere along
   the slide edge; nuclei within ~15 px of the slide border may therefore be split differently than in a
   whole-image run (test: identical elsewhere; two tilings agree everywhere).
   With a trained network (``ModelSegmenter``) the probabilities themselves depend on the input window
   (USE-Net's squeeze-excitation blocks pool over the whole window), so tiled and whole-image nuclei agree
   closely but not pixel for pixel (measured on a MoNuSeg image: detection F1 > 0.9 between the two, the
   same AJI against the annotation). Each nucleus is still kept once, by its owner tile; where two kept
   nuclei of neighbouring tiles overlap by a few pixels, the one committed first keeps them in the label
   image and one mostly covered is dropped as a duplicate (:mod:`nucfast.slide._labels`); tiles are
   committed in index order, so ids and results do not depend on the number of workers.
6. Resumable: each finished tile is committed atomically as ``tiles/NNNNNN.parquet`` (written to a
   temporary name, fsynced, renamed) after its labels are painted into the zarr; a restarted run skips
   committed tiles (their nuclei are read back, never recomputed) and repaints the others idempotently.
   ``manifest.json`` records the run configuration; resuming with a different one is refused.
7. Finalise (always, cheap): ``nuclei.parquet`` (GeoParquet), ``nuclei.geojson[.gz]`` (QuPath),
   ``labels.zarr`` (OME-NGFF pyramid + metadata), ``nuclei.h5ad`` (AnnData), overlays; each streamed tile
   by tile (:mod:`nucfast.slide.outputs`); ``manifest.json`` gets provenance, counts, outputs, timings.

Disk full (ENOSPC) raises :class:`DiskFullError`; decode failures raise ``SlideReadError`` naming the file
and region; both stop the run with committed tiles kept for a resume.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..engines import BackendUnavailableError
from . import _labels
from . import outputs as _out
from ._embedding import TILE_LATENT_KEY, Embedders
from ._nuclei import COLUMNS as _NUCLEUS_COLUMNS
from ._nuclei import TileNuclei, measure_tile
from ._rundir import (
    RunDir,
    RunDirError,
    committed_prefix,
    damaged_label_chunks,
    lost_label_tiles,
    nucleus_boxes,
    read_manifest,
)
from .reader import SlideReader, open_slide
from .segmenters import BACKENDS, Segmenter, TileSegmentation, get_segmenter
from .tissue import Tile, sample_patches, tile_grid, tissue_mask

__all__ = ["segment_slide", "SlideResult", "DiskFullError", "WorkingGrid", "RunDirError"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: uint32 running ids, labels.zarr/nuclei (OME-NGFF 0.5), WKB polygons
OUTPUTS = ("table", "geojson", "geojson.gz", "zarr", "h5ad", "overlay")
_DEFAULT_OUTPUTS = ("table", "geojson", "zarr", "h5ad", "overlay")


class DiskFullError(OSError):
    """No space left on the output device."""


def _is_enospc(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


@dataclass
class SlideResult:
    """What :func:`segment_slide` produced.

    Attributes
    ----------
    slide : Path
    out_dir : Path
    paths : dict
        ``table`` (nuclei.parquet), ``geojson``, ``labels`` (labels.zarr), ``overlay`` (PNG),
        ``manifest``, ``tiles`` (per-tile directory).
    n_nuclei : int
    tiles_total, tiles_computed, tiles_skipped : int
        ``tiles_skipped`` = tiles committed by an earlier (interrupted) run and not recomputed.
    cut_nuclei : int
        Kept nuclei touching the outer edge of their tile's halo (possibly truncated; 0 when the halo
        suffices).
    duplicates : int
        Nuclei of this run dropped because half or more of their pixels were already taken by a nucleus of
        a neighbouring tile (the overlap rule of :mod:`nucfast.slide._labels`).
    timing : dict
        Seconds per stage (thread-summed for decode/segment/measure; wall for the rest) and ``wall``.
    megapixels : float
        Working-resolution megapixels of the tile cores processed in this run.
    backend, reader, model : str
    mpp, working_mpp, scale : float
        Slide level-0 MPP, segmenter MPP, level-0 pixels per working pixel.
    """

    slide: Path
    out_dir: Path
    paths: dict
    n_nuclei: int
    tiles_total: int
    tiles_computed: int
    tiles_skipped: int
    cut_nuclei: int
    timing: dict
    megapixels: float
    backend: str
    reader: str
    model: str
    mpp: float
    working_mpp: float
    scale: float
    model_state: dict = field(default_factory=dict)
    duplicates: int = 0

    @property
    def table(self):
        """The per-nucleus table as a pyarrow Table (read from ``nuclei.parquet``)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.paths["table"])

    @property
    def mp_per_s(self) -> float:
        return self.megapixels / self.timing["wall"] if self.timing.get("wall") else 0.0


# -- working grid ----------------------------------------------------------------------------------
class WorkingGrid:
    """Pixels of the slide at the segmenter's resolution.

    ``scale`` = level-0 pixels per working pixel. When ``|scale - 1| <= 10%`` the working grid is level 0
    read directly (``scale`` = 1). Otherwise the finest pyramid level with downsample <= scale is read
    and resampled by a global affine map (bilinear, pixel centres aligned), so a working pixel has the
    same value whichever tile it is read for.
    """

    def __init__(self, reader: SlideReader, scale: float):
        self.reader = reader
        if abs(scale - 1.0) <= 0.1:
            scale = 1.0
        self.scale = float(scale)
        if self.scale == 1.0:
            self.level, self.f = 0, 1.0
        else:
            self.level = reader.best_level_for_downsample(self.scale)
            self.f = self.scale / reader.levels[self.level].downsample  # level px per working px
        H0, W0 = reader.shape
        self.shape = (max(1, int(round(H0 / self.scale))), max(1, int(round(W0 / self.scale))))

    def read(self, row: int, col: int, h: int, w: int) -> np.ndarray:
        if self.f == 1.0:
            return self.reader.read_region(self.level, (row, col), (h, w))
        import cv2

        f = self.f
        sr0 = int(np.floor((row + 0.5) * f - 0.5)) - 2
        sc0 = int(np.floor((col + 0.5) * f - 0.5)) - 2
        sh = int(np.ceil((row + h) * f)) - sr0 + 3
        sw = int(np.ceil((col + w) * f)) - sc0 + 3
        src = self.reader.read_region(self.level, (sr0, sc0), (sh, sw))
        # dst (x, y) -> src ((x + col + 0.5) f - 0.5 - sc0, (y + row + 0.5) f - 0.5 - sr0)
        m = np.array([[f, 0, (col + 0.5) * f - 0.5 - sc0], [0, f, (row + 0.5) * f - 0.5 - sr0]], np.float64)
        return cv2.warpAffine(
            src, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
        )


# -- measurements ----------------------------------------------------------------------------------
_COLUMNS = [(n, t) for n, t, *_ in _NUCLEUS_COLUMNS]


def _schema(with_geometry: bool = True, extra=()):
    """Columns of a tile table: :data:`nucfast.slide._nuclei.COLUMNS`, ``geometry``, then ``extra``
    (the embedding columns, :meth:`nucfast.slide._embedding.Embedders.arrow_fields`)."""
    import pyarrow as pa

    fields = [pa.field(n, getattr(pa, t)()) for n, t in _COLUMNS]
    if with_geometry:
        fields.append(pa.field("geometry", pa.binary()))
    return pa.schema(fields + list(extra))


def _measure_tile(tile: Tile, origin, rgb, seg: TileSegmentation, grid_shape, scale, mpp0, working_mpp):
    """Owned nuclei of one tile (:func:`nucfast.slide._nuclei.measure_tile`)."""
    return measure_tile(tile, origin, rgb, seg, grid_shape, scale, mpp0, working_mpp)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_tile_table(path: Path, nuc: TileNuclei, ids, label_px, keep, schema) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    arrays = []
    for f in schema:
        if f.name == "id":
            v = ids
        elif f.name == "label_px":
            v = label_px
        elif f.name == "geometry":
            v = shapely.to_wkb(nuc.polygons[keep]) if len(nuc) else []
        elif f.name == "nuc2vec":
            e = nuc.embedding[keep] if len(nuc) else np.zeros((0, f.type.list_size), np.float32)
            d = f.type.list_size
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(e.ravel(), pa.float32()), d))
            continue
        else:
            v = np.asarray(nuc.cols[f.name])[keep] if len(nuc) else []
        arrays.append(pa.array(v, type=f.type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    if nuc.tile_latent is not None:
        latent = json.dumps([float(x) for x in np.asarray(nuc.tile_latent, np.float32)]).encode()
        table = table.replace_schema_metadata({TILE_LATENT_KEY: latent})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    _atomic_write_bytes(path, sink.getvalue().to_pybytes())


# -- stage helpers ---------------------------------------------------------------------------------
class StageTimer:
    """Seconds per stage: ``with timer("open"): ...`` or ``timer.add("decode", dt)`` from any thread.

    Thread-summed for the stages run by several threads (decode, segment, measure), wall for the others.
    """

    def __init__(self, *stages: str):
        self.seconds = {k: 0.0 for k in stages}
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


@contextmanager
def _disk_full(what):
    """The one disk-full handler: ENOSPC / EDQUOT anywhere in an exception's chain becomes
    :class:`DiskFullError` ``"no space left on device " + what()`` (committed tiles stay for a resume)."""
    try:
        yield
    except DiskFullError:
        raise
    except BaseException as e:
        if _is_enospc(e):
            raise DiskFullError(errno.ENOSPC, f"no space left on device {what()}") from e
        raise


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            if stop.is_set():
                return None


# -- stage 1: plan ----------------------------------------------------------------------------------
#: Bounds on the work one call may ask for (checked before any tile is read; :func:`_check_work`).
MAX_UPSAMPLE = 4.0  # working pixels per level-0 pixel (a slide coarser than that shows no nuclei)
MAX_TILES = 1_000_000  # tiles in the grid (a 1-million-tile grid is a 1000^2-tile slide)
MAX_READ_PIXELS = 1 << 28  # level pixels decoded for one tile (the resampling source)
BYTES_PER_TILE_PIXEL = 64  # measured order of magnitude: RGB, float input, probabilities, labels, stains


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _check_work(reader: SlideReader, seg: Segmenter, grid: WorkingGrid, tile: int, halo: int,
                workers: int, queue_size: int) -> None:  # fmt: skip
    """Refuse, with numbers, the requests whose work or memory one argument would blow up: a working
    resolution more than :data:`MAX_UPSAMPLE` x finer than level 0 (e.g. a wrong ``mpp=1000``), more
    than :data:`MAX_TILES` tiles, one tile decoding more than :data:`MAX_READ_PIXELS` level pixels (e.g.
    ``mpp=1e-6``: a tiny working grid read from a huge level), or tiles in flight needing more memory
    than the machine has."""
    mpp0, src = reader.mpp, reader.mpp_source or "metadata"
    hint = f"check the slide's microns per pixel ({mpp0:g} from {src}; mpp=, CLI: --mpp)"
    if grid.scale < 1.0 / MAX_UPSAMPLE:
        raise ValueError(
            f"{reader.path}: the slide's {mpp0:g} um/px is {1 / grid.scale:.3g}x coarser than the model's "
            f"{seg.mpp:g} um/px working resolution; upsampling more than {MAX_UPSAMPLE:g}x shows no nuclei: "
            + hint
        )
    H, W = grid.shape
    n_tiles = -(-H // tile) * -(-W // tile)
    if n_tiles > MAX_TILES:
        raise ValueError(
            f"{reader.path}: tile={tile} cuts the {W}x{H} working grid into {n_tiles:,} tiles (more than "
            f"{MAX_TILES:,}); use a larger tile or {hint}"
        )
    side_h, side_w = min(tile + 2 * halo, H), min(tile + 2 * halo, W)  # a tile is clipped to the slide
    read_px = (side_h * grid.f + 5) * (side_w * grid.f + 5)
    if read_px > MAX_READ_PIXELS:
        raise ValueError(
            f"{reader.path}: reading one {side_w}x{side_h} working tile would decode {read_px / 1e6:,.0f} MP "
            f"of level {grid.level} ({grid.f:.3g} level px per working px; the slide has no pyramid level "
            f"near the working resolution): use a smaller tile or {hint}"
        )
    in_flight = 2 * queue_size + workers + 1
    need = in_flight * side_h * side_w * BYTES_PER_TILE_PIXEL
    mem = _physical_memory()
    if mem is not None and need > 0.8 * mem:
        raise ValueError(
            f"tile={tile} with halo {halo}, {workers} workers and queue_size={queue_size} holds about "
            f"{in_flight} tiles in flight, ~{need / 2**30:.1f} GiB, more than this machine's "
            f"{mem / 2**30:.1f} GiB: use a smaller tile, fewer workers or a smaller queue_size"
        )


@dataclass
class _Plan:
    """Everything decided before the first tile: resolution, tissue tiles, slide statistics, config."""

    path: Path
    out_dir: Path
    reader: SlideReader
    seg: Segmenter
    grid: WorkingGrid
    mpp0: float
    halo: int
    tiles: list
    config: dict
    embedders: Embedders = field(default_factory=Embedders)
    overlay_thumb: tuple | None = None  # (thumbnail, downsample) for overlay.png, read with the tissue's

    @property
    def schema(self):
        """The tile tables' columns (with the embedding columns of this run)."""
        return _schema(True, self.embedders.arrow_fields())

    @property
    def working_mpp(self) -> float:
        return self.mpp0 * self.grid.scale

    @property
    def manifest(self) -> Path:
        return self.out_dir / "manifest.json"

    @property
    def tiles_dir(self) -> Path:
        return self.out_dir / "tiles"

    @property
    def labels(self) -> Path:
        return self.out_dir / "labels.zarr"


def _plan(path: Path, out_dir: Path, reader: SlideReader, seg: Segmenter, timer: StageTimer, *,
          tile: int, halo: int, tissue: bool, workers: int, queue_size: int,
          embedders: Embedders, overlay: bool = False) -> _Plan:  # fmt: skip
    """Open (working grid), tissue (mask + tile grid), fit (slide-level statistics) and the run config."""
    with timer("open"):
        mpp0 = reader.require_mpp()
        grid = WorkingGrid(reader, float(seg.mpp) / mpp0)
        _check_work(reader, seg, grid, tile, halo, workers, queue_size)
    with timer("tissue"):
        # the overlay's thumbnail too: from the same level, decoded once
        thumbs = reader.thumbnails([1024, _out.OVERLAY_SIZE] if overlay else [1024])
        thumb, thumb_ds = thumbs[0]
        mask = tissue_mask(thumb, downsample=thumb_ds, mpp=mpp0) if tissue else np.ones(thumb.shape[:2], bool)
        mask_ds_w = thumb_ds / grid.scale  # working px per mask px
        tiles = tile_grid(grid.shape, tile, mask, mask_ds_w, margin=halo // 2)
    with timer("fit"):
        seg.fit(sample_patches(grid.read, grid.shape, mask, mask_ds_w))
    st = path.stat()
    config = {
        "format": FORMAT_VERSION,
        "slide": str(path.resolve()),
        "slide_size": st.st_size,
        "slide_mtime_ns": st.st_mtime_ns,
        "fingerprint": _out.slide_fingerprint(path),
        "level0_shape": list(reader.shape),
        "mpp": mpp0,
        "working_shape": list(grid.shape),
        "scale": grid.scale,
        "tile": tile,
        "halo": halo,
        "model": seg.state(),
        **embedders.config(),
    }
    return _Plan(
        path, out_dir, reader, seg, grid, mpp0, halo, tiles, config, embedders, thumbs[1] if overlay else None
    )


def _open_run_dir(plan: _Plan, rundir: RunDir, resume: bool, tile: int):
    """Create or resume the (locked, nucfast-owned) run directory: (label zarr level 0, {committed tile:
    rows}). A resume checks what it trusts (:mod:`nucfast.slide._rundir`): a damaged manifest is refused;
    damaged tile tables and tiles whose nuclei lost their pixels in the label image are recomputed."""
    out_dir, manifest, tiles_dir, zpath = plan.out_dir, plan.manifest, plan.tiles_dir, plan.labels
    with _disk_full(lambda: f"writing to {out_dir}"):
        if manifest.exists() and resume:
            old = read_manifest(manifest)["config"]
            if old.get("format") != plan.config["format"]:
                raise ValueError(
                    f"{out_dir} holds a run written by another nucfast version (run format "
                    f"{old.get('format')}, this nucfast writes format {plan.config['format']}: uint32 ids, "
                    "OME-NGFF labels); it cannot be resumed: pass resume=False (CLI: --no-resume) to "
                    "overwrite, or choose another out_dir"
                )
            if old != plan.config:
                diff = sorted(k for k in set(old) | set(plan.config) if old.get(k) != plan.config.get(k))
                raise ValueError(
                    f"{out_dir} holds a run with a different configuration (differs in {diff}); "
                    f"pass resume=False (CLI: --no-resume) to overwrite, or choose another out_dir"
                )
            if not (zpath / _labels.NAME / "0").exists() and tiles_dir.exists():  # labels lost: tiles void
                for f in tiles_dir.glob("[0-9][0-9][0-9][0-9][0-9][0-9].parquet"):
                    f.unlink()
        else:
            rundir.clean()
            doc = {"config": plan.config, "tiles": [t.index for t in plan.tiles]}
            _atomic_write_bytes(manifest, json.dumps(doc, indent=1).encode())
        tiles_dir.mkdir(exist_ok=True)
        zarr0 = _open_label_array(zpath, plan.grid.shape, tile)
        done = committed_prefix(
            tiles_dir,
            [t.index for t in plan.tiles],
            plan.schema,
            metadata_key=TILE_LATENT_KEY if plan.embedders.tile is not None else None,
        )
        lost = _tiles_on_damaged_chunks(plan, zarr0, done)  # first: deletes undecodable chunks
        lost |= lost_label_tiles(zarr0, tiles_dir, done, plan.grid.scale)
        if lost:  # ids are assigned in tile order: everything from the first lost tile on is recomputed
            first = min(lost)
            for i in [i for i in done if i >= first]:
                log.warning("%s: tile %d is recomputed (labels damaged or missing in %s)", out_dir, i, zpath)
                (tiles_dir / f"{i:06d}.parquet").unlink()
                del done[i]
    return zarr0, done


# -- stages 2-5: read, segment, measure, write (threads with bounded queues) --------------------------
class _Run:
    """One pass over the tiles still to do: a reader thread, ``workers`` segment+measure threads, and the
    calling thread writing (committing) tiles as they finish."""

    def __init__(
        self, plan: _Plan, timer: StageTimer, zarr0, *, workers: int, queue_size: int, progress, next_id: int
    ):
        self.plan, self.timer = plan, timer
        self.labels = _labels.LabelWriter(zarr0, next_id)
        # tiles are committed in index order (deterministic ids); at most this many are read and not yet
        # committed, which bounds the reorder buffer when one tile is slow
        self.slots = threading.Semaphore(2 * queue_size + workers)
        self.workers, self.progress = workers, progress
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.q_in: queue.Queue = queue.Queue(queue_size)
        self.q_out: queue.Queue = queue.Queue(queue_size)
        self.done = self.nuclei = self.cut = self.computed = 0
        self.megapixels = 0.0

    def _thread(self, target, name: str, finish) -> threading.Thread:
        def body():
            try:
                target()
            except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                self.errors.append(e)
                self.stop.set()
            finally:
                finish()

        return threading.Thread(target=body, name=name, daemon=True)

    def read(self, todo: list) -> None:
        """Stage ``decode``: core + halo of each tile, clipped to the slide (its borders = image borders)."""
        grid, halo, s = self.plan.grid, self.plan.halo, self.plan.seg.stride
        H, W = grid.shape
        for tl in todo:
            while not self.slots.acquire(timeout=0.05):
                if self.stop.is_set():
                    return
            if self.stop.is_set():
                return
            t0 = time.perf_counter()
            r0, c0 = max(tl.row - halo, 0) // s * s, max(tl.col - halo, 0) // s * s  # on the stride's grid
            r1, c1 = min(tl.row + tl.height + halo, H), min(tl.col + tl.width + halo, W)
            rgb = grid.read(r0, c0, r1 - r0, c1 - c0)
            self.timer.add("decode", time.perf_counter() - t0)
            if not _put(self.q_in, (tl, (r0, c0), rgb), self.stop):
                return

    def segment_and_measure(self) -> None:
        """Stages ``segment`` (the segmenter on the tile) and ``measure`` (the tile's owned nuclei)."""
        p = self.plan
        while (item := _get(self.q_in, self.stop)) is not None:
            tl, origin, rgb = item
            t0 = time.perf_counter()
            res = p.seg(rgb)
            t1 = time.perf_counter()
            measured = _measure_tile(tl, origin, rgb, res, p.grid.shape, p.grid.scale, p.mpp0, p.working_mpp)
            del res
            self.timer.add("segment", t1 - t0)
            self.timer.add("measure", time.perf_counter() - t1)
            p.embedders(measured, rgb, origin, tl, p.working_mpp, self.timer)  # stages embed, tile_embed
            del rgb
            if not _put(self.q_out, (tl, measured), self.stop):
                return

    def write(self, tl, nuc: TileNuclei, n_tiles: int) -> None:
        """Stage ``write``: paint the labels into the zarr (ids assigned here, in tile order; overlap rule
        in :mod:`nucfast.slide._labels`), then commit the tile table atomically."""
        with (
            self.timer("write"),
            _disk_full(
                lambda: (
                    f"while writing the results of tile {tl.index} to {self.plan.out_dir}; {self.done} tiles "
                    "are committed: free space and rerun to resume"
                )
            ),
        ):
            ids, label_px, keep = self.labels.commit(nuc.patch, len(nuc))
            _write_tile_table(
                self.plan.tiles_dir / f"{tl.index:06d}.parquet", nuc, ids, label_px, keep, self.plan.schema
            )
        self.slots.release()
        self.computed += 1
        self.done += 1
        self.nuclei += len(ids)
        self.cut += nuc.n_cut
        self.megapixels += tl.height * tl.width / 1e6
        if self.progress is not None:
            self.progress(self.done, n_tiles, self.nuclei, self.megapixels)

    def __call__(self, todo: list, n_tiles: int) -> None:
        threads = [self._thread(lambda: self.read(todo), "nucfast-decode", self._end_reading)]
        threads += [
            self._thread(
                self.segment_and_measure, f"nucfast-seg{i}", lambda: _put(self.q_out, None, self.stop)
            )
            for i in range(self.workers)
        ]
        for th in threads:
            th.start()
        finished = 0
        pending: dict = {}  # finished tiles waiting for their turn
        expected = iter([t.index for t in todo])
        nxt = next(expected, None)
        try:
            while finished < self.workers:
                item = _get(self.q_out, self.stop)
                if item is None:
                    if self.stop.is_set():
                        break
                    finished += 1
                    continue
                pending[item[0].index] = item
                while nxt in pending:
                    self.write(*pending.pop(nxt), n_tiles)
                    nxt = next(expected, None)
        except BaseException:
            self.stop.set()
            raise
        finally:
            if self.errors:
                self.stop.set()
            for th in threads:
                th.join()
        if self.errors:
            with _disk_full(lambda: f"writing to {self.plan.out_dir}"):
                raise self.errors[0]

    def _end_segmenting(self) -> None:
        _put(self.q_out, None, self.stop)

    def _end_reading(self) -> None:
        for _ in range(self.workers):
            _put(self.q_in, None, self.stop)


# -- stage 6: finalise ------------------------------------------------------------------------------
def _provenance(plan: _Plan) -> dict:
    """What produced the outputs: nucfast version, the model and the sha256 of its weights file."""
    seg = plan.seg
    model = getattr(seg, "model", None) or getattr(getattr(seg, "_obj", None), "model", None)
    path = getattr(model, "path", None)
    return {
        "nucfast_version": __version__,
        "model": seg.name,
        "model_state": plan.config["model"],
        "weights": str(path) if path is not None else None,
        "weights_sha256": getattr(model, "sha256", None),
        "backend": seg.backend,
        "reader": plan.reader.backend,
        **plan.embedders.config(),
    }


def _metadata(plan: _Plan) -> dict:
    """The metadata carried by the table, the AnnData and the manifest."""
    return {
        "slide": str(plan.path.resolve()),
        "slide_fingerprint": plan.config["fingerprint"],
        "level0_shape": list(plan.reader.shape),
        "mpp": plan.mpp0,
        "working_mpp": plan.working_mpp,
        "scale": plan.grid.scale,
        "coordinates": "level-0 pixels, x = column, y = row; pixel (r, c) covers [c, c+1) x [r, r+1)",
        "units": {n: u for n, _, u, _ in _NUCLEUS_COLUMNS if u},
        "labels": "labels.zarr/nuclei: pixel value = id (working resolution, see label_px)",
        **_provenance(plan),
    }


def _finalise(plan: _Plan, timer: StageTimer, outputs, n_nuclei: int) -> dict:
    """The requested final outputs, each streamed tile by tile from the committed tiles."""
    out_dir, tiles_dir = plan.out_dir, plan.tiles_dir
    paths = {"manifest": plan.manifest, "tiles": tiles_dir, "labels": plan.labels}
    order = sorted(t.index for t in plan.tiles)
    md = _metadata(plan)
    with _disk_full(lambda: f"writing outputs to {out_dir}"):
        if "table" in outputs:
            with timer("table"):
                paths["table"] = _out.write_table(
                    tiles_dir, order, out_dir / "nuclei.parquet", plan.schema, md
                )
        for name in ("geojson", "geojson.gz"):
            if name in outputs:
                with timer("geojson"):
                    paths[name] = _out.write_geojson(
                        tiles_dir, order, out_dir / f"nuclei.{name}", plan.config["fingerprint"]
                    )
        if "zarr" in outputs:
            with timer("zarr_pyramid"):
                _labels.finalise_labels(plan.labels, plan.working_mpp)
        if "h5ad" in outputs:
            with timer("h5ad"):
                emb = plan.embedders
                paths["h5ad"] = _out.write_h5ad(
                    tiles_dir,
                    order,
                    out_dir / "nuclei.h5ad",
                    n_nuclei,
                    md,
                    embedding_dim=emb.dim if emb.nucleus is not None else 0,
                    n_subtypes=emb.subtypes.k if emb.subtypes is not None else 0,
                )
        if plan.embedders.tile is not None:
            with timer("tile_table"):
                paths.update(
                    _out.write_tile_embeddings(
                        tiles_dir,
                        plan.tiles,
                        out_dir,
                        scale=plan.grid.scale,
                        mpp0=plan.mpp0,
                        model=plan.embedders.tile.name,
                        metadata=md,
                        h5ad="h5ad" in outputs,
                    )
                )
        if "overlay" in outputs:
            with timer("overlay"):
                paths["overlay"] = _out.write_overlay(
                    plan.reader, tiles_dir, order, out_dir / "overlay.png", thumb=plan.overlay_thumb
                )
                counts = {i: _count_rows(tiles_dir, [i]) for i in order}
                regions = _out.overlay_regions(plan.tiles, counts, plan.grid.scale, plan.reader.shape)
                paths["overlay_regions"] = _out.write_overlay_regions(
                    plan.reader, tiles_dir, order, out_dir / "overlay", regions
                )
    return paths


def _write_manifest(plan: _Plan, result: SlideResult, duplicates: int) -> None:
    """``manifest.json``: the run configuration (compared on resume), the tiles, and what this run
    produced: provenance, counts, outputs (path, bytes) and timings."""
    files = {}
    for k, v in result.paths.items():
        for p in v if isinstance(v, list) else [v]:
            p = Path(p)
            size = (
                sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
            )
            files[str(p.relative_to(plan.out_dir))] = {"output": k, "bytes": size}
    doc = {
        "config": plan.config,
        "tiles": [t.index for t in plan.tiles],
        "provenance": _provenance(plan),
        "counts": {
            "nuclei": result.n_nuclei,
            "tiles": result.tiles_total,
            "tiles_computed": result.tiles_computed,
            "tiles_resumed": result.tiles_skipped,
            "cut_nuclei": result.cut_nuclei,
            "duplicates_dropped": duplicates,
            "megapixels": result.megapixels,
        },
        "outputs": files,
        "timing_s": result.timing,
    }
    with _disk_full(lambda: f"writing {plan.manifest}"):
        _atomic_write_bytes(plan.manifest, json.dumps(doc, indent=1).encode())


def segment_slide(
    path,
    out_dir=None,
    *,
    model="usenet",
    backend: str = "auto",
    tile: int = 1024,
    halo: int | None = None,
    mpp: float | None = None,
    resume: bool = True,
    workers: int = 1,
    queue_size: int = 2,
    reader_backend: str = "auto",
    outputs=_DEFAULT_OUTPUTS,
    progress=None,
    tissue: bool = True,
    segmenter_kwargs: dict | None = None,
    embed=False,
    subtypes=None,
    tile_embed=False,
) -> SlideResult:
    """Segment every nucleus of a whole-slide image.

    Stages (each timed in ``SlideResult.timing``): plan (``open``, ``tissue``, ``fit``), read (``decode``),
    segment (``segment`` and the segmenter's own ``segment.*`` sub-stages), ``measure``, ``write``, finalise
    (``table``, ``geojson``, ``zarr_pyramid``, ``overlay``).

    Parameters
    ----------
    path : str or Path
        Slide file.
    out_dir : str or Path, optional
        Output directory (created). Default: ``<slide stem>.nucfast`` next to the current directory.
    model : str or segmenter
        ``"usenet"`` (the shipped USE-Net), ``"attention"``, a ``.safetensors`` weights file, ``"baseline"``
        (no-learning haematoxylin + attention post-processing), or an object following the protocol of
        :mod:`nucfast.slide.segmenters`.
    backend : {"auto", "cpu", "cuda", "torch", "onnxruntime", "tensorrt"}
        Where and with what the network runs (see :class:`nucfast.slide.segmenters.ModelSegmenter`):
        ``"auto"`` = TensorRT engine / torch on CUDA when a GPU is present, onnxruntime on the CPU. The
        engine actually used is recorded in the result. The baseline segmenter runs on the CPU.
    tile : int
        Tile core size in working pixels.
    halo : int, optional
        Context each side; default ``segmenter.halo``.
    mpp : float, optional
        Level-0 microns per pixel, overriding the file's metadata (required when the file has none).
    resume : bool
        Continue a previous run in ``out_dir`` (skip its committed tiles). ``False`` starts afresh.
    workers : int
        Segmentation threads; each runs the network with ``torch.get_num_threads() // workers`` intra-op
        threads (torch and onnxruntime) during the call, so the workers do not oversubscribe the cores.
    queue_size : int
        Capacity of each inter-stage queue (bounds memory: about ``(2 queue_size + workers)`` tiles).
    reader_backend : {"auto", "cucim", "openslide", "tifffile"}
    outputs : iterable of str
        Final outputs to write among ``table``, ``geojson``, ``zarr``, ``overlay``. The zarr level 0 is
        always written during the run (it is part of what a tile commit means); ``zarr`` adds the pyramid.
    progress : callable, optional
        ``progress(done, total, n_nuclei, megapixels)`` after each committed tile.
    tissue : bool
        Process only tiles over detected tissue (default); ``False`` processes the whole grid.
    segmenter_kwargs : dict, optional
        Passed to the segmenter factory when ``model`` is a name.
    embed : bool or str
        Add a Nuc2Vec embedding to every nucleus (``True`` = the shipped ``"nuc2vec"``, or a
        nucleus-embedding model name / file), computed on the tile in the same pass (stage ``embed``):
        column ``nuc2vec`` of the table, ``obsm["X_nuc2vec"]`` of ``nuclei.h5ad``
        (:mod:`nucfast.slide._embedding`).
    subtypes : str or Path, optional
        A reference written by ``nucfast subtypes fit`` (needs ``embed``): every nucleus gets the majority
        subtype of its nearest reference vectors: column ``subtype``, the GeoJSON ``classification``
        (coloured as in the subtype galleries) and a categorical ``obs["subtype"]``.
    tile_embed : bool or str
        One PathologyGAN encoder latent per tissue tile (``True`` = ``"pathgan_encoder"``; stage
        ``tile_embed``): ``tiles.parquet`` and ``tiles.h5ad`` (``obsm["X_pathgan"]``).

    Returns
    -------
    SlideResult

    Raises
    ------
    MissingMPPError
        The file has no MPP and ``mpp`` was not given.
    SlideReadError, FileNotFoundError
        The slide cannot be read (message names the file and the region).
    DiskFullError
        The output device is full (committed tiles are kept; rerun to resume).
    ValueError
        ``out_dir`` holds a run with a different configuration and ``resume=True``.
    """
    if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
        with _worker_threads(workers):
            return _segment_slide(**locals())
    return _segment_slide(**locals())  # the argument checks there raise the error


@contextmanager
def _worker_threads(workers: int):
    """Intra-op threads per worker (torch, and onnxruntime sessions created meanwhile, which default to
    torch's count): ``torch.get_num_threads() // workers``, at least 1, so ``workers`` segmentation
    threads do not oversubscribe the cores; restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(max(1, n // workers))
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _segment_slide(
    path,
    out_dir=None,
    *,
    model="usenet",
    backend: str = "auto",
    tile: int = 1024,
    halo: int | None = None,
    mpp: float | None = None,
    resume: bool = True,
    workers: int = 1,
    queue_size: int = 2,
    reader_backend: str = "auto",
    outputs=_DEFAULT_OUTPUTS,
    progress=None,
    tissue: bool = True,
    segmenter_kwargs: dict | None = None,
    embed=False,
    subtypes=None,
    tile_embed=False,
) -> SlideResult:
    import torch

    t_start = time.perf_counter()
    timer = StageTimer("open", "tissue", "fit", "decode", "segment", "measure", "write")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("backend='cuda' requested but no CUDA device is available")
    if int(tile) < 16:
        raise ValueError(f"tile must be >= 16 pixels, got {tile}")
    if int(workers) < 1 or int(queue_size) < 1:
        raise ValueError("workers and queue_size must be >= 1")
    bad = set(outputs) - set(OUTPUTS)
    if bad:
        raise ValueError(f"unknown outputs {sorted(bad)}; valid: {', '.join(OUTPUTS)}")
    path = Path(path)
    seg = get_segmenter(model, backend=backend, **(segmenter_kwargs or {}))
    on_gpu = any(k in seg.backend for k in ("cuda", "tensorrt"))
    embedders = Embedders.resolve(embed, subtypes, tile_embed, device="cuda" if on_gpu else None)
    halo = int(seg.halo if halo is None else halo)
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    out_dir = Path(out_dir) if out_dir is not None else Path.cwd() / (path.stem + ".nucfast")

    with timer("open"):
        reader = open_slide(path, mpp=mpp, backend=reader_backend)
    rundir = None
    try:
        rundir = RunDir(out_dir).open()  # owned and locked for the whole run
        kw = dict(tile=int(tile), halo=halo, tissue=tissue, workers=int(workers), queue_size=int(queue_size))
        kw.update(embedders=embedders, overlay="overlay" in outputs)
        plan = _plan(path, out_dir, reader, seg, timer, **kw)
        zarr0, done = _open_run_dir(plan, rundir, resume, int(tile))
        todo = [t for t in plan.tiles if t.index not in done]
        committed = sum(done.values())
        run = _Run(
            plan,
            timer,
            zarr0,
            workers=int(workers),
            queue_size=int(queue_size),
            progress=progress,
            next_id=committed + 1,  # committed tiles are a prefix of the tile order: ids 1..committed
        )
        run.done = len(plan.tiles) - len(todo)
        run.nuclei = sum(done.values())
        run(todo, len(plan.tiles))
        timing = timer.seconds
        timing.update({f"segment.{k}": float(v) for k, v in seg.timing.items()})
        paths = _finalise(plan, timer, outputs, run.nuclei)
        timing["wall"] = time.perf_counter() - t_start
        result = SlideResult(
            slide=path,
            out_dir=out_dir,
            paths=paths,
            n_nuclei=run.nuclei,
            tiles_total=len(plan.tiles),
            tiles_computed=run.computed,
            tiles_skipped=len(plan.tiles) - len(todo),
            cut_nuclei=run.cut,
            timing=timing,
            megapixels=run.megapixels,
            backend=seg.backend,
            reader=reader.backend,
            model=seg.name,
            mpp=plan.mpp0,
            working_mpp=plan.working_mpp,
            scale=plan.grid.scale,
            model_state=plan.config["model"],
            duplicates=run.labels.duplicates,
        )
        _write_manifest(plan, result, run.labels.duplicates)
        return result
    finally:
        if rundir is not None:
            rundir.close()
        reader.close()


def _count_rows(tiles_dir: Path, indices) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(tiles_dir / f"{i:06d}.parquet").metadata.num_rows for i in indices)


def _tiles_on_damaged_chunks(plan: _Plan, zarr0, done: dict) -> set[int]:
    """Committed tiles that painted into a label chunk that is missing under a committed nucleus or no
    longer decodes (:func:`nucfast.slide._rundir.damaged_label_chunks`; damaged chunk files are deleted)."""
    if not done:
        return set()
    store = getattr(zarr0, "store", None)
    root = getattr(store, "root", None)
    if root is None:  # not a local store: only the lost-pixel check applies
        return set()
    boxes = nucleus_boxes(plan.tiles_dir, done, plan.grid.scale)
    array_dir = Path(root) / zarr0.path
    chunks = damaged_label_chunks(zarr0, array_dir, [b for bs in boxes.values() for b in bs])
    if not chunks:
        return set()
    ch, cw = zarr0.chunks
    by_index = {t.index: t for t in plan.tiles}
    out = set()
    for i in done:  # a tile paints inside its core + halo
        t, h = by_index[i], plan.halo
        rows = range(max(t.row - h, 0) // ch, (t.row + t.height + h - 1) // ch + 1)
        cols = range(max(t.col - h, 0) // cw, (t.col + t.width + h - 1) // cw + 1)
        if any((r, c) in chunks for r in rows for c in cols):
            out.add(i)
    return out


#: Every chunk a tile paints is written, zero or not, so that a resume can tell a deleted chunk from one
#: that never held a nucleus (:func:`nucfast.slide._rundir.damaged_label_chunks`).
_LABEL_CONFIG = {"write_empty_chunks": True}


def _open_label_array(zpath: Path, shape, chunk: int):
    try:
        return _labels.open_label_array(zpath, shape, chunk).with_config(_LABEL_CONFIG)
    except ValueError as e:  # a shape/dtype mismatch, or zarr's JSON decoder on damaged metadata
        what = str(e) if str(zpath) in str(e) else f"{zpath}: damaged label image ({type(e).__name__}: {e})"
        raise RunDirError(f"{what}; pass resume=False (CLI: --no-resume) to start this run afresh") from e
    except Exception as e:  # zarr raises its own types for damaged metadata
        raise RunDirError(
            f"{zpath}: damaged label image ({type(e).__name__}: {e}); pass resume=False "
            "(CLI: --no-resume) to start this run afresh"
        ) from e
