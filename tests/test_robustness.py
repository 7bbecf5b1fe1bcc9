"""Issue 15: no silent wrong results, no lost data. One test per finding, then the damaged-input suites.

The suites use tests/robustness_cases.py; CI runs a representative subset, ``NUCFAST_ROBUSTNESS=full``
every case (scripts/robustness_report.py prints the counts of the full run).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA
from robustness_cases import evaluate_rundir, evaluate_slide, read_everything, rundir_damages, slide_damages

import nucfast
from nucfast import cli, gaussian_filter, region_stats, remove_small_objects, segment_image
from nucfast.slide import RunDirBusy, RunDirError, SlideReadError, open_slide, segment_slide
from nucfast.slide import engine as slide_engine
from nucfast.slide._labels import read_label_array
from nucfast.slide._rundir import RunDir
from nucfast.slide.reader import BACKENDS
from nucfast.synthetic import SyntheticSlide, write_synthetic_slide

FULL = os.environ.get("NUCFAST_ROBUSTNESS") == "full"
CMU = DATA / "slides" / "CMU-1-Small-Region.svs"
needs_cmu = pytest.mark.skipif(not CMU.exists(), reason="shared slide data absent")
BASE = dict(model="baseline", tile=256, outputs=("table", "zarr"), reader_backend="tifffile")


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory):
    d = tmp_path_factory.mktemp("rob")
    return write_synthetic_slide(
        d / "s.tif", (512, 512), seed=3, compression="deflate", tile=128, ground_truth=False,
        tissue_fraction=0.9,
    )["path"]


@pytest.fixture(scope="module")
def reference_run(small_slide, tmp_path_factory):
    return segment_slide(small_slide, tmp_path_factory.mktemp("ref") / "out", **BASE)


def _span(data: bytes, start: int, n: int, random: bool) -> bytes:
    b = bytearray(data)
    noise = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()
    b[start : start + n] = noise if random else bytes(n)
    return bytes(b)


# -- 1. corrupt tiles, truncated directories ---------------------------------------------------------------
@needs_cmu
@pytest.mark.parametrize("random", [False, True], ids=["zeroed", "randomised"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_jpeg_tiles_are_refused_by_every_reader(tmp_path, backend, random):
    import tifffile

    data = CMU.read_bytes()
    with tifffile.TiffFile(CMU) as tf:
        offs = tf.pages[0].dataoffsets
    p = tmp_path / "bad.svs"
    p.write_bytes(_span(data, int(offs[len(offs) // 2]) + 1000, 200_000, random))  # starts inside a tile
    with pytest.raises(SlideReadError, match=r"bad.svs: failed to read region .*corrupt tile"):
        with open_slide(p, backend=backend) as s:
            s.read_region(0, (0, 0), s.shape)


@needs_cmu
def test_single_bit_flip_in_jpeg_entropy_data_is_refused(tmp_path):
    import tifffile

    with tifffile.TiffFile(CMU) as tf:
        off, cnt = int(tf.pages[0].dataoffsets[60]), int(tf.pages[0].databytecounts[60])
    b = bytearray(CMU.read_bytes())
    b[off + cnt // 2] ^= 0x10  # cuCIM decodes this tile to wrong pixels without an error
    p = tmp_path / "flip.svs"
    p.write_bytes(bytes(b))
    with open_slide(p, backend="cucim") as s:
        s.read_region(0, (0, 0), (240, 240))  # another tile: fine
        with pytest.raises(SlideReadError, match=r"tile 60 .*Corrupt JPEG data"):
            s.read_region(0, (1440, 0), (240, 240))


@needs_cmu
@pytest.mark.parametrize("frac", [0.67, 0.9])
def test_truncated_directory_chain_is_refused_at_open(tmp_path, frac):
    data = CMU.read_bytes()
    p = tmp_path / "trunc.svs"
    p.write_bytes(data[: int(len(data) * frac)])  # level 0 intact, later directories past the end
    with pytest.raises(SlideReadError, match=r"trunc.svs: truncated or corrupt file: directory \d starts at"):
        open_slide(p)


@needs_cmu
def test_real_slides_verify_without_false_alarms():
    for path in sorted((DATA / "slides").glob("*.svs")):
        with open_slide(path) as s:
            assert s.verified
            s.thumbnail(512)  # reads (and verifies) every tile of a level
            for name in s.associated_images:
                s.associated_image(name)


def test_blank_tiles_are_not_false_alarms(tmp_path):
    import tifffile

    img = np.full((512, 512, 3), 255, np.uint8)  # glass
    img[:256, :256] = 0  # and black
    p = tmp_path / "blank.tif"
    tifffile.imwrite(p, img, tile=(128, 128), photometric="rgb", compression="jpeg")
    for b in BACKENDS:
        with open_slide(p, backend=b) as s:
            np.testing.assert_allclose(s.read_region(0, (0, 0), (512, 512)), img, atol=2)


# -- 2, 3. an output directory nucfast owns, marked and locked ---------------------------------------------
def test_fresh_run_never_deletes_files_it_did_not_write(small_slide, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("nuclei.parquet", "overlay.png", "notes.txt"):
        (out / name).write_text("the user's own file")
    with pytest.raises(RunDirError, match=r"mine is not empty and is not a nucfast run directory"):
        segment_slide(small_slide, out, resume=False, **BASE)
    assert all((out / n).read_text() == "the user's own file" for n in ("nuclei.parquet", "overlay.png"))
    res = segment_slide(small_slide, tmp_path / "run", **BASE)  # a marked run: --no-resume cleans only ours
    (tmp_path / "run" / "tiles" / "keep.csv").write_text("x")
    with pytest.raises(RunDirError, match=r"refusing to clean .*tiles/keep.csv"):
        segment_slide(small_slide, tmp_path / "run", resume=False, **BASE)
    assert (tmp_path / "run" / "tiles" / "keep.csv").exists() and res.paths["table"].exists()


def test_concurrent_run_into_one_directory_is_refused(small_slide, reference_run):
    out = reference_run.out_dir
    with RunDir(out).open():  # another run holds the directory
        busy = rf"another nucfast run \(pid {os.getpid()}\) is writing to {out}"
        with pytest.raises(RunDirBusy, match=busy):
            segment_slide(small_slide, out, **BASE)
    assert segment_slide(small_slide, out, **BASE).tiles_computed == 0  # the lock dies with its holder


def test_output_path_that_is_a_file(small_slide, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        segment_slide(small_slide, f, **BASE)
    assert f.read_text() == "x"


# -- 4. a resume that checks what it trusts ----------------------------------------------------------------
def _copy(reference_run, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(reference_run.out_dir, out)
    return out


def test_deleted_label_chunk_is_repainted(small_slide, reference_run, tmp_path):
    out = _copy(reference_run, tmp_path)
    chunks = sorted(q for q in (out / "labels.zarr" / "nuclei" / "0" / "c").rglob("*") if q.is_file())
    chunks[1].unlink()
    res = segment_slide(small_slide, out, **BASE)
    assert res.tiles_computed > 0 and res.table.equals(reference_run.table)
    a = read_label_array(out / "labels.zarr")[:]
    np.testing.assert_array_equal(a, read_label_array(reference_run.paths["labels"])[:])


@pytest.mark.parametrize(
    "doc, why",
    [
        (b"\x00garbage", "JSONDecodeError|UnicodeDecodeError"),
        (b"[1]", "a JSON list"),
        (b'{"config": 3}', "'config'"),
    ],
)
def test_damaged_manifest_is_refused(small_slide, reference_run, tmp_path, doc, why):
    out = _copy(reference_run, tmp_path)
    (out / "manifest.json").write_bytes(doc)
    with pytest.raises(RunDirError, match=rf"manifest.json: damaged run manifest \(.*({why}).*--no-resume"):
        segment_slide(small_slide, out, **BASE)


def test_truncated_tile_table_is_recomputed(small_slide, reference_run, tmp_path):
    out = _copy(reference_run, tmp_path)
    t = sorted((out / "tiles").glob("*.parquet"))[0]
    t.write_bytes(t.read_bytes()[:100])
    res = segment_slide(small_slide, out, **BASE)
    assert res.tiles_computed >= 1 and res.table.equals(reference_run.table)  # (+ later tiles: running ids)


# -- 5. segment_image guesses nothing ----------------------------------------------------------------------
def test_segment_image_refuses_what_it_would_guess():
    rgb, _ = SyntheticSlide((64, 64), seed=2, tissue_fraction=1.0).render(0, 0, 64, 64)
    chw = torch.from_numpy(rgb).permute(2, 0, 1).float()
    with pytest.raises(ValueError, match=r"float rgb must be in \[0, 1\], got values in .*divide by 255"):
        segment_image(chw)  # 0-255 floats were clamped to white: 0 nuclei, no error
    with pytest.raises(ValueError, match=r"must be \(3, H, W\).*channels last"):
        segment_image(rgb.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="ambiguous"):
        segment_image(np.zeros((3, 40, 3), np.float32))
    with pytest.raises(ValueError, match="empty 0x0 image"):
        segment_image(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(TypeError, match="got dtype int16"):
        segment_image(rgb.astype(np.int16))
    assert segment_image(rgb[:1, :1].copy()).shape == (1, 1)  # (NaN error before)
    for model, bad in (("usenet", 257), ("attention", 193)):  # (ran 65,000 windows before)
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match=r"tile must be at least \d+ px \(overlap"):
            segment_image(np.zeros((400, 400, 3), np.uint8), model=model, tile=bad)
        assert time.perf_counter() - t0 < 30


# -- 6. no silently lost gradients ------------------------------------------------------------------------
def test_ops_without_gradient_refuse_tensors_that_require_grad():
    x = torch.rand(16, 16, dtype=torch.float64, requires_grad=True)
    lab = torch.zeros(16, 16, dtype=torch.int32)
    lab[2:6, 2:6] = 1
    for f in (
        lambda: gaussian_filter(x, 1.0),
        lambda: region_stats(lab, x),
        lambda: nucfast.peak_local_max(x, min_distance=2),
        lambda: nucfast.watershed(x, lab),
    ):
        with pytest.raises(RuntimeError, match=r"requires grad, but this nucfast op has no gradient"):
            f()
    with torch.no_grad():
        assert gaussian_filter(x, 1.0).grad_fn is None
    y = nucfast.percentile_sigmoid(x[None])[0]  # differentiable: still allowed
    y.sum().backward()
    assert x.grad is not None


def test_negative_stride_on_a_size_one_axis():
    x = np.arange(5.0).reshape(1, 5)[::-1]  # stride -40 on the size-1 axis (yet flagged C-contiguous)
    assert x.strides[0] < 0
    np.testing.assert_array_equal(gaussian_filter(x, 1.0), gaussian_filter(x.copy(), 1.0))


# -- 7. bounded work --------------------------------------------------------------------------------------
def test_remove_small_objects_with_huge_label_values_is_cheap():
    lab = np.zeros((4, 4), np.int64)
    lab[0, 0] = 2**31 + 1
    lab[1:3, 1:3] = 5
    lab[3, 3] = 2**40
    t0 = time.perf_counter()
    out = remove_small_objects(lab, max_size=1)  # asked for 17 GB before
    assert time.perf_counter() - t0 < 5
    expected = np.zeros_like(lab)
    expected[1:3, 1:3] = 5
    np.testing.assert_array_equal(out, expected)
    u = remove_small_objects(lab.clip(0, 2**32 - 1).astype(np.uint32), max_size=1)
    np.testing.assert_array_equal(u, expected.astype(np.uint32))


@pytest.mark.parametrize(
    "mpp, match", [(1000.0, "mpp=1000 microns per pixel is implausible"), (1e-6, "implausible"),
                   (5.0, "20x coarser than the model's 0.25 um/px")],  # fmt: skip
)
def test_implausible_resolutions_are_refused_before_any_work(small_slide, tmp_path, mpp, match):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match):  # 10^8 tiles or 44 GiB before
        segment_slide(small_slide, tmp_path / "o", mpp=mpp, **BASE)
    assert time.perf_counter() - t0 < 30


def test_tile_count_and_memory_bounds(small_slide, tmp_path, monkeypatch):
    monkeypatch.setattr(slide_engine, "MAX_TILES", 3)
    with pytest.raises(ValueError, match=r"tile=256 cuts the 512x512 working grid into 4 tiles"):
        segment_slide(small_slide, tmp_path / "o", **BASE)
    monkeypatch.setattr(slide_engine, "MAX_TILES", 10**6)
    monkeypatch.setattr(slide_engine, "BYTES_PER_TILE_PIXEL", 10**9)
    with pytest.raises(ValueError, match=r"tiles in flight, ~.* GiB, more than this machine's"):
        segment_slide(small_slide, tmp_path / "o", **BASE)


def test_weights_that_do_not_fit_their_metadata_fail_before_allocating(tmp_path):
    from safetensors.torch import load_file, save_file

    from nucfast.models import WEIGHTS_DIR
    from nucfast.models._weights import read_metadata

    src = WEIGHTS_DIR / "usenet_lite.safetensors"
    meta = read_metadata(src)
    meta["config"]["widths"] = [1536] * 4  # ~150M parameters: 600 MB and 10 s before the shape error
    p = tmp_path / "wide.safetensors"
    save_file(load_file(src), p, metadata={"nucfast": json.dumps(meta)})
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"wide.safetensors: the weights do not fit .* of other shapes"):
        nucfast.models.load(p)
    assert time.perf_counter() - t0 < 5


# -- 8. the CLI: one line, exit 1 --------------------------------------------------------------------------
def _cli_error(capsys, argv) -> str:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    err = [ln for ln in err if not ln.startswith((" ", "dlopen", "/"))]  # cuCIM's own loader chatter
    assert len(err) == 1 and err[0].startswith("nucfast: error: "), err
    return err[0]


def test_cli_expected_errors_are_one_line(small_slide, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    s = str(small_slide)
    assert "is not a directory" in _cli_error(capsys, ["segment", s, "-o", str(f), "-q"])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    o = ["-o", str(tmp_path / "o"), "-q"]
    assert "cannot read weights file" in _cli_error(capsys, ["segment", s, *o, "--model", str(bad)])
    if not torch.cuda.is_available():
        assert "no CUDA device" in _cli_error(capsys, ["segment", s, *o, "--backend", "cuda"])
    assert "Dask scheduler" in _cli_error(capsys, ["segment", s, *o, "--scheduler", "nonsense://x"])
    assert "implausible" in _cli_error(capsys, ["segment", s, *o, "--mpp", "1000"])


def test_cli_corrupt_slide_with_tifffile_reader_is_one_line(small_slide, tmp_path):
    import subprocess
    import sys

    import tifffile

    with tifffile.TiffFile(small_slide) as tf:
        off, cnt = int(tf.pages[0].dataoffsets[5]), int(tf.pages[0].databytecounts[5])
    p = tmp_path / "c.tif"
    p.write_bytes(_span(small_slide.read_bytes(), off, cnt, False))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1")
    o = str(tmp_path / "o")
    cmd = [sys.executable, "-m", "nucfast", "segment", str(p), "-o", o, "--reader", "tifffile"]
    cmd += ["--model", "baseline"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1
    # (zarr's asyncio tasks printed "Task was destroyed but it is pending!" at exit before)
    assert "Task was destroyed" not in r.stderr and "exception was never retrieved" not in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("nucfast: error: ")
    assert "c.tif: failed to read" in r.stderr


# -- the suites -------------------------------------------------------------------------------------------
def _slide_sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    out = [write_synthetic_slide(d / "jpeg.tif", (512, 512), seed=1, compression="jpeg", tile=128,
                                 ground_truth=False)["path"]]  # fmt: skip
    if CMU.exists():
        out.append(CMU)
    if FULL:
        out += sorted((DATA / "slides").glob("TCGA*.svs"))
        kw = dict(seed=1, compression="deflate", tile=128, ground_truth=False)
        out.append(write_synthetic_slide(d / "deflate.tif", (512, 512), **kw)["path"])
    return out


def test_every_reader_refuses_every_damaged_slide(tmp_path_factory):
    sources = _slide_sources(tmp_path_factory)
    d = tmp_path_factory.mktemp("damaged")
    bad = []
    for src in sources:
        refs = {b: read_everything(src, b) for b in BACKENDS}
        for name, data in slide_damages(src, quick=not FULL):
            p = d / f"{src.stem}-{name}{src.suffix}"
            p.write_bytes(data)
            for b, ref in refs.items():
                outcome, detail = evaluate_slide(p, b, ref)
                if outcome not in ("clear", "identical"):
                    bad.append((p.name, b, outcome, detail))
    assert not bad, bad


CI_RUNDIR_CASES = {
    "manifest_not_object",
    "manifest_truncated",
    "tile_table_random",
    "tile_tables_swapped",
    "label_chunk_random",
    "labels_deleted",
    "label_metadata_garbage",
    "foreign_file_in_labels_fresh_run",
    "unmarked_foreign_directory",
}


@pytest.mark.parametrize(
    "name, damage, options",
    [c for c in rundir_damages() if FULL or c[0] in CI_RUNDIR_CASES],
    ids=[c[0] for c in rundir_damages() if FULL or c[0] in CI_RUNDIR_CASES],
)
def test_every_damaged_run_directory_is_refused_or_repaired(
    small_slide, reference_run, tmp_path, name, damage, options
):
    out = tmp_path / "out"
    shutil.copytree(reference_run.out_dir, out)

    def run(slide, o, resume):
        return segment_slide(slide, o, resume=resume, **BASE)

    outcome, detail = evaluate_rundir(run, small_slide, out, damage, options, reference_run)
    assert outcome in ("clear", "repaired"), (outcome, detail)
