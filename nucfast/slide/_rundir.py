"""A slide run's output directory: owned by nucfast (marked), locked while a run writes, cleaned of nucfast's
own files only, and checked before a resume trusts what it holds.

- **Ownership.** A run directory holds the marker file ``.nucfast-run``. A new or empty directory is
  marked on first use; an unmarked directory that already holds files is refused (:class:`RunDirError`
  listing what it holds) unless it is a run written before markers existed (a valid ``manifest.json``
  and nothing but nucfast's own entries), which is adopted.
- **Exclusive lock.** ``fcntl.flock`` on ``.nucfast-lock`` for the whole run: a second run into the same
  directory is refused at once (:class:`RunDirBusy`, naming the holder's pid) instead of racing on the
  same temporary files. The lock dies with its process (kill -9 included), so a killed run never blocks
  its resume.
- **Cleanup** (fresh or ``resume=False`` runs): deletes only what nucfast writes (:data:`OWNED`, tile
  tables named ``NNNNNN.parquet``, zarr metadata and chunk keys inside ``labels.zarr``); a foreign file
  inside ``tiles/`` or ``labels.zarr/`` makes it refuse, naming the file, before anything is deleted.
  Foreign files next to nucfast's at the top level are left alone.
- **Resume checks.** :func:`read_manifest` (JSON object with a ``config`` object and a ``tiles`` list
  of ints, else refused), :func:`committed_prefix` (each committed tile table must read back completely
  with the expected columns, its tile's nuclei and the running ids; ids are assigned in tile order, so
  from the first damaged or missing table on every tile is deleted and recomputed: repair),
  :func:`lost_label_tiles` (committed nuclei whose pixels are gone from the label image) and
  :func:`damaged_label_chunks` (label chunks a committed nucleus needs that are missing, or that no longer
  decode): from the first such tile on, tiles are recomputed and repainted.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from .. import __version__

log = logging.getLogger(__name__)

__all__ = [
    "RunDir",
    "RunDirError",
    "RunDirBusy",
    "read_manifest",
    "committed_prefix",
    "lost_label_tiles",
    "damaged_label_chunks",
    "nucleus_boxes",
    "MARKER",
    "OWNED",
]

MARKER = ".nucfast-run"
LOCK = ".nucfast-lock"
#: Top-level entries nucfast writes in a run directory (final outputs, their temporary names, state).
OWNED = (
    MARKER,
    LOCK,
    "manifest.json",
    "manifest.json.tmp",
    "tiles",
    "labels.zarr",
    "nuclei.parquet",
    "nuclei.parquet.tmp",
    "nuclei.geojson",
    "nuclei.geojson.tmp",
    "overlay.png",
    "overlay.png.tmp",
    "nuclei.geojson.gz",
    "nuclei.geojson.gz.tmp",
    "nuclei.h5ad",
    "nuclei.h5ad.tmp",
    "overlay",
)
_TILE_FILE = re.compile(r"^\d{6}\.parquet(\.tmp)?$")
_OVERLAY_FILE = re.compile(r"^region_\d+_\d+\.png(\.tmp)?$")
# zarr v2/v3 metadata and chunk keys ("c/0/1", "0.1", "0/1") of the label group and its arrays
_ZARR_ENTRY = re.compile(
    r"^(nuclei/)?((zarr\.json|\.zgroup|\.zattrs|\.zarray|\.zmetadata)"
    r"|[0-9]+/(zarr\.json|\.zarray|\.zattrs)"
    r"|[0-9]+/(c/)?[0-9]+([./][0-9]+)*)$"
)


class RunDirError(OSError):
    """The output directory cannot be used for a run (not a directory, foreign files, damaged state)."""


class RunDirBusy(RunDirError):
    """Another process holds the run directory's lock."""


def _listing(names, limit: int = 6) -> str:
    names = sorted(names)
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _foreign_in(d: Path, ok) -> list[str]:
    """Files under ``d`` whose path relative to ``d`` does not match ``ok`` (nucfast's own names)."""
    bad = []
    for root, dirs, files in os.walk(d):
        rel_root = os.path.relpath(root, d)
        for f in files:
            rel = f if rel_root == "." else f"{rel_root}/{f}".replace(os.sep, "/")
            if not ok(rel):
                bad.append(rel)
        for x in list(dirs):
            full = os.path.join(root, x)
            if os.path.islink(full):
                bad.append(os.path.relpath(full, d))
                dirs.remove(x)
    return bad


def _zarr_ok(rel: str) -> bool:
    return bool(_ZARR_ENTRY.match(rel))


def _tile_ok(rel: str) -> bool:
    return bool(_TILE_FILE.match(rel))


def _overlay_ok(rel: str) -> bool:
    return bool(_OVERLAY_FILE.match(rel))


class RunDir:
    """The output directory of one slide run: ``with RunDir(out).open() as rd: ...``.

    ``open()`` creates the directory if needed, checks ownership and takes the exclusive lock (held until
    :meth:`close`); :meth:`clean` removes nucfast's files for a fresh start.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._fd: int | None = None

    # -- ownership and lock ----------------------------------------------------------------------
    def open(self) -> RunDir:
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunDirError(f"output path {p} exists and is not a directory; choose a directory")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # a parent is a file
            raise RunDirError(f"cannot create output directory {p}: a parent is not a directory") from None
        self._check_owner()
        self._lock()
        try:
            if not (p / MARKER).exists():
                self._write_marker()
        except BaseException:
            self.close()
            raise
        return self

    def _check_owner(self) -> None:
        p = self.path
        if (p / MARKER).exists():
            return
        entries = {e.name for e in os.scandir(p)}
        if not entries:
            return
        foreign = entries - set(OWNED)
        manifest_ok = False
        if "manifest.json" in entries:
            try:
                read_manifest(p / "manifest.json")
                manifest_ok = True
            except RunDirError:
                pass
        if foreign or not manifest_ok:
            raise RunDirError(
                f"output directory {p} is not empty and is not a nucfast run directory (no {MARKER} marker; "
                f"it holds {_listing(entries)}): nucfast only writes into, and cleans, directories it "
                "created; choose a new or empty directory"
            )
        log.info("adopting %s: a nucfast run directory written before ownership markers", p)

    def _write_marker(self) -> None:

        doc = {"nucfast": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid()}
        _atomic_write(self.path / MARKER, json.dumps(doc).encode())

    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder else ""
                raise RunDirBusy(
                    f"another nucfast run{who} is writing to {self.path}; wait for it to finish or choose "
                    "another output directory"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def close(self) -> None:
        """Release the lock (the lock file stays; it is nucfast's)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self):
        return self if self._fd is not None else self.open()

    def __exit__(self, *exc):
        self.close()

    # -- cleanup ---------------------------------------------------------------------------------
    def clean(self) -> None:
        """Delete nucfast's state and outputs (fresh start). Checks every file first: a foreign file inside
        ``tiles/`` or ``labels.zarr/`` refuses the cleanup before anything is deleted."""
        p = self.path
        problems = []
        dirs = ("tiles", "labels.zarr", "overlay")
        for name, ok in (("tiles", _tile_ok), ("labels.zarr", _zarr_ok), ("overlay", _overlay_ok)):
            d = p / name
            if d.is_symlink() or (d.exists() and not d.is_dir()):
                problems.append(name)
            elif d.is_dir():
                problems += [f"{name}/{f}" for f in _foreign_in(d, ok)]
        for name in OWNED:
            q = p / name
            if name not in (*dirs, MARKER, LOCK) and (q.is_dir() and not q.is_symlink()):
                problems.append(name + "/")
        if problems:
            raise RunDirError(
                f"{p}: refusing to clean the run directory: it holds files nucfast did not write "
                f"({_listing(problems)}); move them away or choose another output directory"
            )
        for name in dirs:
            if (p / name).is_dir():
                shutil.rmtree(p / name)
        for name in OWNED:
            if name not in (*dirs, MARKER, LOCK):
                (p / name).unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# -- resume checks -------------------------------------------------------------------------------------
def read_manifest(path: Path) -> dict:
    """The run manifest: a JSON object with a ``config`` object and a ``tiles`` list of ints.

    Raises RunDirError naming the file and what is wrong, with the way out (start afresh)."""
    path = Path(path)
    fresh = "pass resume=False (CLI: --no-resume) to start this run afresh"
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunDirError(f"{path}: damaged run manifest ({type(e).__name__}: {e}); {fresh}") from None
    if not isinstance(doc, dict):
        what = type(doc).__name__
        raise RunDirError(f"{path}: damaged run manifest (a JSON {what}, not an object); {fresh}")
    cfg, tiles = doc.get("config"), doc.get("tiles")
    if not isinstance(cfg, dict):
        raise RunDirError(f"{path}: damaged run manifest ('config' is missing or not an object); {fresh}")
    if not isinstance(tiles, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tiles):
        raise RunDirError(f"{path}: damaged run manifest ('tiles' is missing or not a list of ints); {fresh}")
    return doc


def committed_prefix(
    tiles_dir: Path, indices, schema, *, metadata_key: bytes | None = None
) -> dict[int, int]:
    """The committed tiles a resume can keep: ``{tile index: rows}`` for the longest prefix of ``indices``
    (the tile order) whose tables read back completely with ``schema``'s columns, hold only their tile's
    nuclei, carry ``metadata_key`` in their parquet metadata when one is given (the tile latent) and the
    running ids ``1, 2, ...`` without a gap (ids are assigned in tile order, so a tile
    after a missing or damaged one cannot keep its ids).

    A damaged table (truncated, unreadable, wrong columns or ids) and every table after the prefix are
    deleted (they are nucfast's own files) so that those tiles are recomputed."""
    import pyarrow.parquet as pq

    tiles_dir = Path(tiles_dir)
    out: dict[int, int] = {}
    next_id = 1
    broken = False
    for i in indices:
        f = tiles_dir / f"{int(i):06d}.parquet"
        if broken or not f.exists():
            broken = True
            if f.exists():
                log.warning("%s: committed after an uncommitted tile: the tile is recomputed", f)
                f.unlink()
            continue
        try:
            t = pq.read_table(f)
            if metadata_key is not None and metadata_key not in (t.schema.metadata or {}):
                raise ValueError(f"no {metadata_key.decode()} metadata")
            names = set(t.schema.names)
            missing = [n for n in schema.names if n not in names]
            if missing:
                raise ValueError(f"missing columns {missing}")
            t = t.select(schema.names).cast(schema)
            ids = t.column("id").to_numpy()
            tl = t.column("tile").to_numpy()
            if len(ids) and (tl != i).any():
                raise ValueError("nuclei of another tile")
            if not (ids == np.arange(next_id, next_id + len(ids))).all():
                raise ValueError(f"ids are not the running ids {next_id}..{next_id + len(ids) - 1}")
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...; all mean "recompute it"
            log.warning("%s: damaged tile table (%s: %s): the tile is recomputed", f, type(e).__name__, e)
            f.unlink(missing_ok=True)
            broken = True
            continue
        out[int(i)] = t.num_rows
        next_id += t.num_rows
    return out


def lost_label_tiles(labels, tiles_dir: Path, committed, scale: float) -> set[int]:
    """Committed tiles some of whose nuclei have no pixels left in the label image (e.g. a deleted chunk).

    ``labels`` is the working-resolution label array (zarr or numpy: ``labels.get_coordinate_selection``
    or fancy indexing); each nucleus is looked up at the first vertex of its polygon, the top-left corner
    of one of its own pixels (the tracer starts each ring at its top row's leftmost edge). A pixel holding
    another nucleus's id is an overlap (the nucleus committed first keeps it), not a loss; a background
    pixel is. Raises RunDirError when the label image itself cannot be decoded."""
    import pyarrow.parquet as pq
    import shapely

    lost: set[int] = set()
    H, W = labels.shape
    for i in sorted(committed):
        t = pq.read_table(Path(tiles_dir) / f"{i:06d}.parquet", columns=["id", "geometry"])
        if t.num_rows == 0:
            continue
        geoms = shapely.from_wkb(t.column("geometry").to_numpy(zero_copy_only=False))
        first = shapely.get_point(shapely.get_exterior_ring(shapely.get_geometry(geoms, 0)), 0)
        xs, ys = shapely.get_x(first), shapely.get_y(first)
        ok = np.isfinite(xs) & np.isfinite(ys)
        rows = np.clip(np.floor(np.nan_to_num(ys) / scale + 1e-6).astype(np.int64), 0, H - 1)
        cols = np.clip(np.floor(np.nan_to_num(xs) / scale + 1e-6).astype(np.int64), 0, W - 1)
        try:
            if hasattr(labels, "get_coordinate_selection"):
                got = np.asarray(labels.get_coordinate_selection((rows, cols)))
            else:
                got = np.asarray(labels[rows, cols])
        except Exception as e:
            raise RunDirError(
                f"the label image cannot be read where tile {i}'s nuclei are ({type(e).__name__}: {e}); "
                "pass resume=False (CLI: --no-resume) to start this run afresh"
            ) from e
        if (ok & (got.astype(np.int64) == 0)).any():
            lost.add(i)
    return lost


def damaged_label_chunks(labels, array_dir: Path, boxes) -> set[tuple[int, int]]:
    """Chunks of the working-resolution label array that must be repainted: those overlapping one of
    ``boxes`` (``(r0, c0, r1, c1)`` working-pixel boxes inside committed nuclei) whose file is missing,
    and those whose file no longer decodes (deleted here: the file is nucfast's, its labels are repainted).

    Relies on the engine writing every chunk it paints, zero or not (``write_empty_chunks``), so a missing
    chunk under a committed nucleus means lost labels. ``labels`` is a zarr array stored under
    ``array_dir`` (local file store, zarr v3 chunk keys)."""
    ch, cw = labels.chunks
    H, W = labels.shape
    enc = labels.metadata.chunk_key_encoding
    array_dir = Path(array_dir)
    bad: set[tuple[int, int]] = set()
    needed: set[tuple[int, int]] = set()
    for r0, c0, r1, c1 in boxes:
        r0, c0 = max(int(r0), 0), max(int(c0), 0)
        r1, c1 = min(int(r1), H), min(int(c1), W)
        if r1 <= r0 or c1 <= c0:
            continue
        for i in range(r0 // ch, (r1 - 1) // ch + 1):
            for j in range(c0 // cw, (c1 - 1) // cw + 1):
                needed.add((i, j))
    for i in range(-(-H // ch)):
        for j in range(-(-W // cw)):
            f = array_dir / enc.encode_chunk_key((i, j))
            if not f.exists():
                if (i, j) in needed:
                    bad.add((i, j))
                continue
            try:
                labels[i * ch : (i + 1) * ch, j * cw : (j + 1) * cw]
            except Exception as e:  # the codec's error (zstd, blosc, ...): the chunk is damaged
                why = f"{type(e).__name__}: {e}"
                log.warning("%s: damaged label chunk (%s): deleted, its tiles are repainted", f, why)
                f.unlink()
                bad.add((i, j))
    return bad


def nucleus_boxes(tiles_dir: Path, committed, scale: float) -> dict[int, list[tuple[int, int, int, int]]]:
    """Per committed tile, its nuclei's bounding boxes in working pixels, shrunk to whole pixels surely
    inside each box (table bboxes are level-0 pixels: working bbox x ``scale``)."""
    import pyarrow.parquet as pq

    out = {}
    cols = ["bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"]
    for i in committed:
        t = pq.read_table(Path(tiles_dir) / f"{i:06d}.parquet", columns=cols)
        b = np.stack([t.column(c).to_numpy() for c in cols], axis=1).astype(np.float64) / scale
        b[:, :2] = np.ceil(b[:, :2] - 1e-6)
        b[:, 2:] = np.floor(b[:, 2:] + 1e-6)
        out[i] = [tuple(int(v) for v in row) for row in b]
    return out
