"""Damaged inputs for the robustness suite (tests/test_robustness.py, scripts/robustness_report.py).

- :func:`slide_damages`: damaged copies of a TIFF slide's bytes: truncated at several points, zeroed and
  randomised spans (200 KB, one tile, a tile's head or tail), and bad directory entries (sizes, tile
  geometry, tile offsets and byte counts, compression, next-directory pointers).
- :func:`evaluate_slide`: what one reader makes of a file, against what it reads from the intact original:
  ``clear`` (SlideReadError naming the file), ``identical`` (everything read equals the original's:
  the damage touched nothing a reader uses), ``silent_wrong`` (no error, different pixels) or ``crash``
  (any other exception).
- :func:`rundir_damages` / :func:`evaluate_rundir`: damaged run directories (manifest, tile tables, label
  zarr, ownership marker, foreign files) and what a resume (or a fresh run) makes of them: ``clear``
  (an error naming the directory, foreign files untouched), ``repaired`` (the run completes with outputs
  identical to an undamaged run), ``silent_wrong`` or ``crash``.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np

SPAN = 200_000

# TIFF tags
IMAGE_WIDTH, IMAGE_LENGTH, COMPRESSION, SAMPLES = 256, 257, 259, 277
TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS, TILE_COUNTS = 322, 323, 324, 325


def _entries(data: bytes):
    """IFD0 of a classic or Big TIFF: ({tag: (entry position, type, count, value field position)}, byte
    order, IFD0 position, position of IFD0's next pointer, offset format ("I" or "Q"))."""
    bo = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(bo + "H", data[2:4])[0] == 43
    ofmt, cfmt, esize = ("Q", "Q", 20) if big else ("I", "H", 12)
    off = struct.unpack(bo + ofmt, data[8:16] if big else data[4:8])[0]
    csize, osize = struct.calcsize(cfmt), struct.calcsize(ofmt)
    n = struct.unpack(bo + cfmt, data[off : off + csize])[0]
    ent = {}
    for k in range(n):
        p = off + csize + esize * k
        tag, typ = struct.unpack(bo + "HH", data[p : p + 4])
        count = struct.unpack(bo + ofmt, data[p + 4 : p + 4 + osize])[0]
        ent[tag] = (p, typ, count, p + 4 + osize)
    return ent, bo, off, off + csize + esize * n, ofmt


def _set_value(b: bytearray, ent, bo, tag, value) -> bool:
    if tag not in ent:
        return False
    p, typ, count, vpos = ent[tag]
    if typ == 3:
        struct.pack_into(bo + "H", b, vpos, min(int(value), 0xFFFF))
    elif typ == 16:
        struct.pack_into(bo + "Q", b, vpos, int(value))
    else:
        struct.pack_into(bo + "I", b, vpos, int(value) & 0xFFFFFFFF)
    return True


def _array(data: bytes, ent, bo, tag, ofmt):
    p, typ, count, vpos = ent[tag]
    fmt = {3: "H", 4: "I", 16: "Q"}[typ]
    size = struct.calcsize(fmt)
    inline = struct.calcsize(ofmt)
    base = vpos if count * size <= inline else struct.unpack(bo + ofmt, data[vpos : vpos + inline])[0]
    return base, fmt, size, count


def slide_damages(src: Path, *, seed: int = 0, quick: bool = False) -> list[tuple[str, bytes]]:
    """Damaged copies of the slide ``src`` as ``(name, bytes)``; ``quick``: a representative subset."""
    import tifffile

    data = Path(src).read_bytes()
    rng = np.random.default_rng(seed)
    n = len(data)
    with tifffile.TiffFile(src) as tf:
        p0 = tf.pages[0]
        offs = np.asarray(p0.dataoffsets, np.int64)
        cnts = np.asarray(p0.databytecounts, np.int64)
    mid = len(offs) // 2
    span = min(SPAN, n // 10)
    out: list[tuple[str, bytes]] = []

    fracs = (0.25, 0.67, 0.99) if quick else (0.02, 0.25, 0.5, 0.67, 0.9, 0.99)
    for f in fracs:
        out.append((f"truncate_{int(f * 100)}pct", data[: int(n * f)]))
    if not quick:
        out.append(("truncate_last_byte", data[:-1]))
        out.append(("truncate_mid_tile", data[: int(offs[mid] + cnts[mid] // 2)]))

    def span_case(name, start, length, random):
        b = bytearray(data)
        length = min(length, n - start)
        noise = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        b[start : start + length] = noise if random else bytes(length)
        out.append((name, bytes(b)))

    starts = {"tile_start": int(offs[mid]), "tile_middle": int(offs[mid] + cnts[mid] // 2)}
    if not quick:
        starts["data_start"] = int(offs.min())
    for where, s in starts.items():
        for random in (False, True):
            span_case(f"{'random' if random else 'zero'}_200KB_at_{where}", s, span, random)
    o, c = int(offs[mid]), int(cnts[mid])
    span_case("zero_one_tile", o, c, False)
    span_case("random_tile_tail", o + c // 2, c - c // 2, True)
    if not quick:
        span_case("random_one_tile", o, c, True)
        span_case("zero_tile_tail", o + c // 2, c - c // 2, False)
        span_case("random_tile_head", o, min(64, c), True)

    ent, bo, ifd0, next_ptr, ofmt = _entries(data)

    def tag_case(name, tag, value):
        b = bytearray(data)
        if _set_value(b, ent, bo, tag, value):
            out.append((name, bytes(b)))

    tag_case("width_doubled", IMAGE_WIDTH, p0.imagewidth * 2)
    tag_case("tile_width_16", TILE_WIDTH, 16)
    tag_case("compression_unknown", COMPRESSION, 12345)
    if not quick:
        tag_case("length_huge", IMAGE_LENGTH, 0xFFFFFFFF)
        tag_case("tile_width_0", TILE_WIDTH, 0)
        tag_case("samples_per_pixel_1", SAMPLES, 1)
        tag_case("compression_none", COMPRESSION, 1)
    if TILE_OFFSETS in ent and TILE_COUNTS in ent:
        base, fmt, size, count = _array(data, ent, bo, TILE_OFFSETS, ofmt)
        cbase, cfmt, csize, _ = _array(data, ent, bo, TILE_COUNTS, ofmt)
        if ent[TILE_OFFSETS][2] * size > struct.calcsize(ofmt):  # offsets stored out of line
            b = bytearray(data)
            struct.pack_into(bo + ofmt, b, ent[TILE_OFFSETS][3], n + 100)
            out.append(("tile_offsets_past_eof", bytes(b)))
        b = bytearray(data)
        v = struct.unpack_from(bo + fmt, b, base + mid * size)[0]
        struct.pack_into(bo + fmt, b, base + mid * size, v + 100)
        out.append(("tile_offset_shifted", bytes(b)))
        b = bytearray(data)
        v = struct.unpack_from(bo + cfmt, b, cbase + mid * csize)[0]
        struct.pack_into(bo + cfmt, b, cbase + mid * csize, v // 2)
        out.append(("tile_bytecount_halved", bytes(b)))
        if not quick:
            b = bytearray(data)
            a = struct.unpack_from(bo + fmt, b, base + mid * size)[0]
            z = struct.unpack_from(bo + fmt, b, base + (mid + 1) * size)[0]
            struct.pack_into(bo + fmt, b, base + mid * size, z)
            struct.pack_into(bo + fmt, b, base + (mid + 1) * size, a)
            out.append(("tile_offsets_swapped", bytes(b)))
            b = bytearray(data)
            struct.pack_into(bo + cfmt, b, cbase + mid * csize, 0)
            out.append(("tile_bytecount_zero", bytes(b)))
    b = bytearray(data)
    struct.pack_into(bo + ofmt, b, next_ptr, n + 1000)
    out.append(("next_directory_past_eof", bytes(b)))
    if not quick:
        b = bytearray(data)
        struct.pack_into(bo + ofmt, b, next_ptr, ifd0)
        out.append(("next_directory_loop", bytes(b)))
        b = bytearray(data)
        struct.pack_into(bo + ("Q" if ofmt == "Q" else "H"), b, ifd0, 0xFFFF)
        out.append(("directory_entry_count_huge", bytes(b)))
    return out


def read_everything(path: Path, backend: str) -> dict:
    """Every level in full and every associated image, with one reader."""
    from nucfast.slide import open_slide

    with open_slide(path, backend=backend) as s:
        return {
            "levels": [lv.shape for lv in s.levels],
            "pixels": [s.read_region(i, (0, 0), lv.shape) for i, lv in enumerate(s.levels)],
            "associated": {n: s.associated_image(n) for n in s.associated_images},
        }


def _same(a: dict, b: dict) -> bool:
    if a["levels"] != b["levels"] or set(a["associated"]) != set(b["associated"]):
        return False
    if not all(np.array_equal(x, y) for x, y in zip(a["pixels"], b["pixels"], strict=True)):
        return False
    return all(np.array_equal(a["associated"][k], b["associated"][k]) for k in a["associated"])


def evaluate_slide(path: Path, backend: str, reference: dict) -> tuple[str, str]:
    """(outcome, detail) of one reader on one damaged file; see the module docstring."""
    from nucfast.slide import SlideReadError

    try:
        got = read_everything(path, backend)
    except SlideReadError as e:
        msg = str(e)
        return ("clear" if Path(path).name in msg and "\n" not in msg else "unclear"), msg[:300]
    except Exception as e:  # noqa: BLE001 - what we count
        return "crash", f"{type(e).__name__}: {e}"[:300]
    if _same(got, reference):
        return "identical", ""
    return "silent_wrong", "read without error, pixels differ"


# -- run directories -----------------------------------------------------------------------------------
def _write(p: Path, data: bytes) -> None:
    p.write_bytes(data)


LEVEL0 = ("labels.zarr", "nuclei", "0")  # the label image's level 0 (nucfast.slide._labels)


def _first_chunk(out: Path) -> Path:
    root = out.joinpath(*LEVEL0)
    chunks = sorted(q for q in root.rglob("*") if q.is_file() and q.name != "zarr.json")
    return chunks[len(chunks) // 2]


def _tile(out: Path, k: int = 0) -> Path:
    return sorted((out / "tiles").glob("*.parquet"))[k]


def rundir_damages() -> list[tuple[str, object, dict]]:
    """``(name, damage(out_dir), options)``: ``options`` may set ``resume`` (default True) and
    ``foreign`` (a path relative to out_dir that must survive: a file nucfast did not write)."""
    rng = np.random.default_rng(0)

    def trunc(p: Path, frac=0.5):
        d = p.read_bytes()
        _write(p, d[: int(len(d) * frac)])

    def randomise(p: Path):
        _write(p, rng.integers(0, 256, max(p.stat().st_size, 16), dtype=np.uint8).tobytes())

    def swap_tiles(out: Path):
        a, b = _tile(out, 0), _tile(out, 1)
        da, db = a.read_bytes(), b.read_bytes()
        _write(a, db)
        _write(b, da)

    def foreign(rel: str):
        def f(out: Path):
            q = out / rel
            q.parent.mkdir(parents=True, exist_ok=True)
            q.write_text("a file nucfast did not write\n")

        return f

    def drop_chunks(out: Path):
        for q in out.joinpath(*LEVEL0).rglob("*"):
            if q.is_file() and q.name != "zarr.json":
                q.unlink()

    return [
        ("manifest_garbage", lambda o: _write(o / "manifest.json", b"\x00garbage{"), {}),
        ("manifest_not_object", lambda o: _write(o / "manifest.json", b"[1, 2, 3]"), {}),
        ("manifest_config_not_object", lambda o: _write(o / "manifest.json", b'{"config": 1}'), {}),
        ("manifest_tiles_not_ints", lambda o: _write(
            o / "manifest.json",
            json.dumps({**json.loads((o / "manifest.json").read_text()), "tiles": ["x"]}).encode()), {}),
        ("manifest_truncated", lambda o: trunc(o / "manifest.json"), {}),
        ("manifest_empty", lambda o: _write(o / "manifest.json", b""), {}),
        ("manifest_deleted", lambda o: (o / "manifest.json").unlink(), {}),
        ("tile_table_truncated", lambda o: trunc(_tile(o)), {}),
        ("tile_table_random", lambda o: randomise(_tile(o)), {}),
        ("tile_table_empty_file", lambda o: _write(_tile(o), b""), {}),
        ("tile_table_deleted", lambda o: _tile(o).unlink(), {}),
        ("tile_tables_swapped", swap_tiles, {}),
        ("label_chunk_deleted", lambda o: _first_chunk(o).unlink(), {}),
        ("label_chunks_all_deleted", drop_chunks, {}),
        ("label_chunk_truncated", lambda o: trunc(_first_chunk(o)), {}),
        ("label_chunk_random", lambda o: randomise(_first_chunk(o)), {}),
        ("label_metadata_garbage", lambda o: _write(o.joinpath(*LEVEL0, "zarr.json"), b"{nope"), {}),
        ("labels_deleted", lambda o: shutil.rmtree(o / "labels.zarr"), {}),
        ("marker_deleted", lambda o: (o / ".nucfast-run").unlink(), {}),
        ("stale_lock_file", lambda o: _write(o / ".nucfast-lock", b"99999999"), {}),
        ("final_table_deleted", lambda o: (o / "nuclei.parquet").unlink(), {}),
        ("foreign_top_level_file_fresh_run", foreign("notes.txt"), {"resume": False, "foreign": "notes.txt"}),
        ("foreign_file_in_tiles_fresh_run", foreign("tiles/mine.csv"),
         {"resume": False, "foreign": "tiles/mine.csv"}),
        ("foreign_file_in_labels_fresh_run", foreign("labels.zarr/README"),
         {"resume": False, "foreign": "labels.zarr/README"}),
        ("unmarked_foreign_directory", lambda o: (shutil.rmtree(o), foreign("data/keep.txt")(o)),
         {"foreign": "data/keep.txt"}),
    ]  # fmt: skip


def evaluate_rundir(run, slide: Path, out: Path, damage, options: dict, reference) -> tuple[str, str]:
    """(outcome, detail): ``run(slide, out, resume)`` on ``out`` after ``damage(out)``, against the
    reference result (``reference.table`` and its label image)."""
    from nucfast.slide import RunDirError
    from nucfast.slide._labels import read_label_array

    damage(out)
    foreign = options.get("foreign")
    try:
        res = run(slide, out, options.get("resume", True))
    except (RunDirError, ValueError) as e:
        msg = str(e)
        if foreign and not (out / foreign).exists():
            return "data_lost", f"{foreign} deleted; {msg[:200]}"
        return ("clear" if str(out) in msg and "\n" not in msg else "unclear"), msg[:300]
    except Exception as e:  # noqa: BLE001 - what we count
        return "crash", f"{type(e).__name__}: {e}"[:300]
    if foreign and not (out / foreign).exists():
        return "data_lost", f"{foreign} deleted"
    same = res.table.equals(reference.table)
    a = np.asarray(read_label_array(res.paths["labels"])[:])
    b = np.asarray(read_label_array(reference.paths["labels"])[:])
    if same and np.array_equal(a, b):
        return "repaired", f"{res.tiles_computed} tiles recomputed"
    return "silent_wrong", "run completed with different nuclei"
