"""Whole-slide engine: seam-free stitching, outputs, resume after a kill, disk full, read errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage as ndi

from nucfast.slide import (
    BaselineSegmenter,
    DiskFullError,
    MissingMPPError,
    SlideReadError,
    TileSegmentation,
    open_slide,
    segment_slide,
)
from nucfast.slide._labels import read_label_array
from nucfast.slide.accuracy import aji, detection_scores, overlap_counts
from nucfast.slide.engine import WorkingGrid
from nucfast.synthetic import SyntheticSlide, write_synthetic_slide

ROOT = Path(__file__).resolve().parents[1]
KW = dict(tile=256, workers=1, model="baseline")  # exact seam tests: the pixel-local baseline


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine")
    return write_synthetic_slide(
        d / "syn.tif", (768, 768), seed=7, compression="deflate", tile=128, tissue_fraction=0.8
    )


@pytest.fixture(scope="module")
def run(slide, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    return segment_slide(slide["path"], out, **KW)


def _labels(res):
    return np.asarray(read_label_array(res.paths["labels"])[:])


def _instance_mismatches(a: np.ndarray, b: np.ndarray) -> int:
    """Nuclei of ``a`` that are not exactly (same pixel set) one nucleus of ``b``, plus the converse."""
    gu, pu, g, p, inter, ga, pa = overlap_counts(a, b)
    exact = int(((inter == ga[g]) & (inter == pa[p])).sum())
    return int((gu != 0).sum()) - exact + int((pu != 0).sum()) - exact


def _drop_border_nuclei(lab: np.ndarray, width: int = 16) -> np.ndarray:
    band = np.ones(lab.shape, bool)
    band[width:-width, width:-width] = False
    out = lab.copy()
    out[np.isin(lab, np.unique(lab[band]))] = 0
    return out


def test_seam_free_whole_equals_tiled(slide, run, tmp_path):
    assert run.tiles_total > 4 and run.cut_nuclei == 0 and run.tiles_skipped == 0
    with open_slide(slide["path"]) as r:
        rgb = r.read_region(0, (0, 0), r.shape)
    seg = BaselineSegmenter(threshold=run.model_state["threshold"])
    whole = seg(rgb).labels
    tiled = _labels(run)
    assert whole.max() > 100
    # Documented exception (engine docstring): nuclei within ~2x7 px of the slide border, where
    # peak_local_max's foreground bounding box (a global property) decides its border handling.
    whole_i, tiled_i = (
        _drop_border_nuclei(whole.astype(np.int64)),
        _drop_border_nuclei(tiled.astype(np.int64)),
    )
    assert (whole_i > 0).sum() > 0.8 * (whole > 0).sum()
    assert _instance_mismatches(whole_i, tiled_i) == 0
    # another tiling (different tile size, more workers) gives the same nuclei
    other = segment_slide(slide["path"], tmp_path / "o", tile=384, workers=2, model="baseline")
    assert other.model_state == run.model_state  # the slide-level threshold does not depend on tiling
    assert (
        _instance_mismatches(_labels(other).astype(np.int64), tiled.astype(np.int64)) == 0
    )  # incl. the border
    a = run.table.sort_by([("centroid_row", "ascending"), ("centroid_col", "ascending")])
    b = other.table.sort_by([("centroid_row", "ascending"), ("centroid_col", "ascending")])
    for col in (
        "centroid_row",
        "centroid_col",
        "area_px",
        "eccentricity",
        "solidity",
        "hematoxylin_mean",
        "score",
    ):
        np.testing.assert_allclose(a.column(col).to_numpy(), b.column(col).to_numpy(), rtol=1e-6)


def test_outputs(slide, run):
    t = run.table
    n = t.num_rows
    assert n == run.n_nuclei > 100
    ids = t.column("id").to_numpy()
    assert len(np.unique(ids)) == n
    lab = _labels(run)
    assert set(np.unique(lab[lab > 0]).tolist()) == set(ids.tolist())
    # columns and units
    for c in (
        "centroid_row",
        "centroid_col",
        "centroid_row_um",
        "centroid_col_um",
        "bbox_row0",
        "bbox_col1",
        "area_px",
        "area_um2",
        "perimeter_um",
        "eccentricity",
        "solidity",
        "hematoxylin_mean",
        "eosin_mean",
        "score",
        "tile",
    ):
        assert c in t.column_names
    np.testing.assert_allclose(
        t.column("centroid_row_um").to_numpy(), t.column("centroid_row").to_numpy() * 0.25
    )  # continuous level-0 coordinates: pixel (r, c) covers [r, r+1) x [c, c+1)
    np.testing.assert_allclose(t.column("area_um2").to_numpy(), t.column("area_px").to_numpy() * 0.0625)
    ecc, sol, sc = (t.column(c).to_numpy() for c in ("eccentricity", "solidity", "score"))
    assert (
        ((ecc >= 0) & (ecc <= 1)).all() and ((sol > 0.5) & (sol <= 1)).all() and ((sc >= 0) & (sc <= 1)).all()
    )
    assert (t.column("hematoxylin_mean").to_numpy() > run.model_state["threshold"] * 0.8).all()
    # each centroid lies in its tile's core; pixel counts match the label image
    row = t.column("centroid_row").to_numpy()
    area = dict(zip(*np.unique(lab[lab > 0], return_counts=True), strict=True))
    assert all(area[i] == a for i, a in zip(ids.tolist(), t.column("label_px").to_pylist(), strict=True))
    np.testing.assert_array_equal(
        t.column("label_px").to_numpy(), t.column("area_px").to_numpy()
    )  # no overlap
    tile_idx = t.column("tile").to_numpy()
    assert ((row // 256).astype(int) == tile_idx // 3).all()
    # polygons: pixel edges, so area and centroid equal the table's (level-0 px; scale 1 here)
    import geopandas

    gdf = geopandas.read_parquet(run.paths["table"])
    np.testing.assert_allclose(gdf.geometry.area.to_numpy(), t.column("area_px").to_numpy())
    np.testing.assert_allclose(gdf.geometry.centroid.x.to_numpy(), t.column("centroid_col").to_numpy())
    np.testing.assert_allclose(gdf.geometry.centroid.y.to_numpy(), t.column("centroid_row").to_numpy())
    # GeoJSON
    gj = json.loads(Path(run.paths["geojson"]).read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == n
    f0 = gj["features"][0]
    assert f0["properties"]["objectType"] == "detection"
    assert "Nucleus: Area µm^2" in f0["properties"]["measurements"]
    assert f0["properties"]["nucfast_id"] == int(t.column("id")[0].as_py())
    # label pyramid (x2 nearest per level) and overlay
    g = zarr.open_group(str(run.paths["labels"]), mode="r")["nuclei"]
    assert g["1"].shape == (384, 384)
    np.testing.assert_array_equal(g["1"][:], lab[::2, ::2])
    assert len(g.attrs["ome"]["multiscales"][0]["datasets"]) >= 2
    import cv2

    ov = cv2.imread(str(run.paths["overlay"]))
    assert ov is not None and ov.shape[:2] == (768, 768)
    # timing and accuracy against the known nuclei
    for k in ("decode", "segment", "measure", "write", "tissue", "wall"):
        assert run.timing[k] >= 0
    gt = np.load(slide["labels"])
    det = detection_scores(gt, lab)
    assert det["f1"] > 0.75 and aji(gt, lab) > 0.6


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from nucfast.slide import segment_slide
    def cb(done, total, nuclei, mp):
        if done == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    segment_slide(sys.argv[1], sys.argv[2], tile=256, workers=1, progress=cb, model="baseline")
    """
)


def test_resume_after_kill(slide, run, tmp_path):
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(slide["path"]), str(out)],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert p.returncode == -9, p.stderr.decode()[-2000:]
    assert len(list((out / "tiles").glob("*.parquet"))) == 3
    assert not (out / "nuclei.parquet").exists()
    res = segment_slide(slide["path"], out, **KW)
    assert res.tiles_skipped == 3 and res.tiles_computed == res.tiles_total - 3
    assert res.table.equals(run.table)  # nothing lost, nothing duplicated, identical ids
    np.testing.assert_array_equal(_labels(res), _labels(run))
    # a second resume recomputes nothing
    again = segment_slide(slide["path"], out, **KW)
    assert again.tiles_computed == 0 and again.table.equals(run.table)


def test_resume_after_exception_and_config_mismatch(slide, run, tmp_path):
    out = tmp_path / "exc"
    seen = []

    def boom(done, total, nuclei, mp):
        seen.append(done)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_slide(slide["path"], out, progress=boom, **KW)
    assert len(list((out / "tiles").glob("*.parquet"))) == 2
    with pytest.raises(ValueError, match="different configuration.*tile"):
        segment_slide(slide["path"], out, tile=512, model="baseline")
    res = segment_slide(slide["path"], out, **KW)
    assert res.tiles_skipped == 2 and res.table.equals(run.table)
    shutil.rmtree(out / "labels.zarr")  # committed tiles without their labels are void: all recomputed
    res = segment_slide(slide["path"], out, **KW)
    assert res.tiles_skipped == 0 and res.table.equals(run.table)
    np.testing.assert_array_equal(_labels(res), _labels(run))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_stops_with_clear_error(slide, run, tmp_path):
    out = tmp_path / "full"
    (out / "tiles").mkdir(parents=True)
    (out / "manifest.json").write_bytes(Path(run.paths["manifest"]).read_bytes())
    shutil.copytree(run.paths["labels"], out / "labels.zarr")  # a resumable run: manifest + labels
    for i in range(9):  # every tile commit goes to a device with no space left
        os.symlink("/dev/full", out / "tiles" / f"{i:06d}.parquet.tmp")
    with pytest.raises(DiskFullError, match="no space left on device.*tile .*free space and rerun"):
        segment_slide(slide["path"], out, **KW)


def test_read_error_stops(tmp_path):
    info = write_synthetic_slide(
        tmp_path / "c.tif",
        (512, 512),
        seed=1,
        compression="deflate",
        tile=128,
        ground_truth=False,
        tissue_fraction=1.0,
    )
    with tifffile.TiffFile(info["path"]) as tf:
        off, cnt = tf.pages[0].dataoffsets[5], tf.pages[0].databytecounts[5]
    b = bytearray(info["path"].read_bytes())
    b[off : off + cnt] = bytes(cnt)
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(bytes(b))
    with pytest.raises(SlideReadError, match="corrupt.tif: failed to read region"):
        segment_slide(bad, tmp_path / "o", tile=256, tissue=False, model=BaselineSegmenter(threshold=0.05))


def test_missing_mpp_and_override(tmp_path):
    rgb, _ = SyntheticSlide((256, 256), seed=2, tissue_fraction=1.0).render(0, 0, 256, 256)
    p = tmp_path / "nompp.tif"
    tifffile.imwrite(p, rgb, tile=(128, 128), photometric="rgb", compression="zlib")
    with pytest.raises(MissingMPPError, match="nompp.tif.*mpp="):
        segment_slide(p, tmp_path / "o")
    res = segment_slide(
        p, tmp_path / "o", mpp=0.25, tile=128, tissue=False, outputs=("table",), model="baseline"
    )
    assert res.mpp == 0.25 and res.n_nuclei > 5 and "geojson" not in res.paths


class _HalfResSegmenter:
    """A minimal plug-in: works at 0.5 um/px; labels = connected haematoxylin-dark blobs."""

    name = "halfres"
    mpp = 0.5
    halo = 16

    def __call__(self, rgb):
        dark = rgb.astype(int).sum(axis=2) < 420
        lab, n = ndi.label(dark)
        return TileSegmentation(lab.astype(np.int32), np.full(n + 1, 0.5, np.float32))


def test_plugin_segmenter_at_other_resolution(slide, tmp_path):
    res = segment_slide(slide["path"], tmp_path / "h", model=_HalfResSegmenter(), tile=128)
    assert (
        res.scale == pytest.approx(2.0) and res.working_mpp == pytest.approx(0.5) and res.model == "halfres"
    )
    t = res.table
    assert t.num_rows > 50 and t.column("centroid_row").to_numpy().max() > 500  # level-0 coordinates
    # areas in level-0 px (0.25 um/px) and um^2; the label image is at the working resolution (0.5 um/px)
    np.testing.assert_allclose(t.column("area_um2").to_numpy(), t.column("area_px").to_numpy() * 0.0625)
    assert (t.column("label_px").to_numpy() <= t.column("area_px").to_numpy() / 4).all()
    lab = read_label_array(res.paths["labels"])
    assert lab.shape == (384, 384)
    ids, counts = np.unique(lab[:][lab[:] > 0], return_counts=True)
    np.testing.assert_array_equal(ids, np.sort(t.column("id").to_numpy()))
    np.testing.assert_array_equal(counts, t.sort_by("id").column("label_px").to_numpy())
    import geopandas

    gdf = geopandas.read_parquet(res.paths["table"])
    np.testing.assert_allclose(gdf.geometry.area.to_numpy(), t.column("area_px").to_numpy())
    # without a halo, nuclei crossing the tile cores are cut, and counted as such
    cut = segment_slide(
        slide["path"], tmp_path / "h", model=_HalfResSegmenter(), tile=128, halo=0, resume=False
    )
    assert cut.cut_nuclei > 10 * max(res.cut_nuclei, 1)  # (a 16-px halo cuts a few long clumps of blobs)
    assert not (tmp_path / "h" / "nuclei.geojson").exists() or cut.paths.get("geojson")


def test_working_grid_resampling_is_tile_invariant(slide):
    with open_slide(slide["path"]) as r:
        assert WorkingGrid(r, 1.05).scale == 1.0
        g = WorkingGrid(r, 2.0)
        assert g.shape == (384, 384)
        big = g.read(0, 0, 384, 384)
        for rr, cc, h, w in [(100, 37, 64, 80), (0, 0, 33, 17), (320, 340, 64, 44)]:
            np.testing.assert_array_equal(g.read(rr, cc, h, w), big[rr : rr + h, cc : cc + w])
        g3 = WorkingGrid(r, 5.0)  # coarsest level with downsample <= 5, then resampled
        assert g3.level == r.best_level_for_downsample(5.0)
        assert g3.f == pytest.approx(5.0 / r.levels[g3.level].downsample)


def test_user_errors(slide, tmp_path):
    p = slide["path"]
    with pytest.raises(ValueError, match="backend must be"):
        segment_slide(p, tmp_path, backend="tpu")
    with pytest.raises(ValueError, match="tile must be >= 16"):
        segment_slide(p, tmp_path, tile=8)
    with pytest.raises(ValueError, match="unknown model"):
        segment_slide(p, tmp_path, model="nope")
    with pytest.raises(TypeError, match="model must be a name or a segmenter"):
        segment_slide(p, tmp_path, model=42)
    with pytest.raises(ValueError, match="unknown outputs"):
        segment_slide(p, tmp_path, outputs=("pdf",))
    with pytest.raises(ValueError, match="halo must be >= 0"):
        segment_slide(p, tmp_path, halo=-1)
    with pytest.raises(FileNotFoundError, match="missing.svs"):
        segment_slide(tmp_path / "missing.svs", tmp_path)
    with pytest.raises(ValueError, match="threshold must be a positive"):
        BaselineSegmenter(threshold=float("nan"))
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            segment_slide(p, tmp_path, backend="cuda")


def test_measurements_against_regionprops(slide):
    from skimage.measure import regionprops

    from nucfast.slide.engine import _measure_tile
    from nucfast.slide.tissue import Tile

    with open_slide(slide["path"]) as r:
        rgb = r.read_region(0, (0, 0), (384, 384))
    seg = BaselineSegmenter(threshold=0.03)(rgb)
    nuc = _measure_tile(Tile(0, 0, 0, 256, 256), (0, 0), rgb, seg, (768, 768), 1.0, 0.25, 0.25)
    cols, patch = nuc.cols, nuc.patch[2]
    rps = {rp.label: rp for rp in regionprops(seg.labels, intensity_image=seg.hed[..., :2])}
    m = len(nuc)
    assert m > 10 and nuc.n_cut == 0
    for i in range(m):
        # table centroids are continuous coordinates: scikit-image's (pixel-centre) centroid + 0.5
        rc = (cols["centroid_row"][i] - 0.5, cols["centroid_col"][i] - 0.5)
        rp = rps[int(seg.labels[int(round(rc[0])), int(round(rc[1]))])]
        if not np.allclose(rp.centroid, rc):
            rp = next(q for q in rps.values() if np.allclose(q.centroid, rc))
        assert rp.area == cols["area_px"][i]
        assert rp.bbox == (
            cols["bbox_row0"][i],
            cols["bbox_col0"][i],
            cols["bbox_row1"][i],
            cols["bbox_col1"][i],
        )
        assert cols["eccentricity"][i] == pytest.approx(rp.eccentricity, abs=1e-9)
        assert cols["hematoxylin_mean"][i] == pytest.approx(rp.intensity_mean[0], rel=1e-4)
        assert cols["eosin_mean"][i] == pytest.approx(rp.intensity_mean[1], rel=1e-4, abs=1e-6)
        assert cols["perimeter_um"][i] == pytest.approx(rp.perimeter * 0.25, rel=1e-9)  # the same estimator
        # area / convex hull of the pixel-edge polygon vs area / pixels of the convex hull image
        assert cols["solidity"][i] == pytest.approx(rp.solidity, abs=0.08)
        assert cols["score"][i] == pytest.approx(seg.scores[rp.label])
        assert nuc.polygons[i].area == rp.area
        # the local patch holds the owned nuclei as 1..m, in owner order
        assert ((patch == i + 1).sum()) == rp.area
    assert sorted(np.unique(patch[patch > 0]).tolist()) == list(range(1, m + 1))


def test_segmenter_protocol_and_stage_timing(slide, tmp_path):
    """The engine calls the typed Segmenter protocol: shipped segmenters implement it, a duck-typed
    plug-in is completed to it (defaults for fit/state/timing/backend), a non-segmenter is refused; every
    stage appears in the timing."""
    from nucfast.slide.segmenters import Segmenter, as_segmenter

    assert isinstance(BaselineSegmenter(threshold=0.05), Segmenter)
    plug = as_segmenter(_HalfResSegmenter())
    assert isinstance(plug, Segmenter) and plug.backend == "cpu" and plug.state() == {"name": "halfres"}
    plug.fit([])  # no-op for a plug-in without fit
    with pytest.raises(TypeError, match="callable with .mpp and .halo"):
        as_segmenter(object())
    res = segment_slide(slide["path"], tmp_path / "t", model=_HalfResSegmenter(), tile=128)
    stages = {"open", "tissue", "fit", "decode", "segment", "measure", "write", "table", "geojson"}
    assert stages | {"zarr_pyramid", "overlay", "wall"} <= set(res.timing), res.timing
    assert all(res.timing[k] >= 0 for k in stages) and res.timing["segment"] > 0


def test_workers_share_the_cores(slide, tmp_path):
    """workers=2: each worker runs with torch.get_num_threads() // 2 intra-op threads during the call (no
    oversubscription), restored afterwards; the nuclei do not depend on the worker count."""
    import torch

    seen = []

    class Recording(BaselineSegmenter):
        def __call__(self, rgb):
            seen.append(torch.get_num_threads())
            return super().__call__(rgb)

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        kw = dict(tile=512, outputs=())
        two = segment_slide(slide["path"], tmp_path / "w2", model=Recording(), workers=2, **kw)
        assert set(seen) == {1} and torch.get_num_threads() == 2
        one = segment_slide(slide["path"], tmp_path / "w1", model=BaselineSegmenter(), **kw)
    finally:
        torch.set_num_threads(old)
    np.testing.assert_array_equal(_labels(two), _labels(one))
