"""Slide readers: real Aperio slides (JPEG, JPEG 2000), pyramidal TIFFs written here, broken files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import DATA

from nucfast.slide import MissingMPPError, SlideReadError, open_slide
from nucfast.slide.reader import BACKENDS

SLIDES = DATA / "slides"
needs_slides = pytest.mark.skipif(not SLIDES.is_dir(), reason="shared slide data absent")
CMU = SLIDES / "CMU-1-Small-Region.svs"
TCGA = SLIDES / "TCGA-CR-7395-01A-01-TS1.svs"


def _info():
    return json.loads((SLIDES / "slides_info.json").read_text())


def _write_pyramid(path, img, *, description="", resolution=None, compression="zlib", tile=128):
    """Aperio-style pyramid: level 0 + a x2 level as a second tiled page (lossless)."""
    lv1 = img[::2, ::2].copy()
    with tifffile.TiffWriter(path, bigtiff=False) as w:
        kw = dict(tile=(tile, tile), compression=compression, photometric="rgb")
        extra = {"resolution": resolution[0], "resolutionunit": resolution[1]} if resolution else {}
        w.write(img, description=description, **kw, **extra)
        w.write(lv1, subfiletype=1, description="", **kw)
    return lv1


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    p = tmp_path_factory.mktemp("pyr") / "pyr.tif"
    lv1 = _write_pyramid(
        p, img, description="Aperio Image Library vTEST\r\n420x300 (128x128)|AppMag = 40|MPP = 0.2520"
    )
    return p, img, lv1


@needs_slides
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_jpeg_slide_levels_mpp_associated(backend):
    info = _info()["CMU-1-Small-Region.svs"]
    with open_slide(CMU, backend=backend) as s:
        assert s.backend == backend
        assert s.shape == (info["levels"][0]["height"], info["levels"][0]["width"])
        assert s.mpp == pytest.approx(info["mpp"])
        assert "MPP" in s.mpp_source or "metadata" in s.mpp_source
        expected = {n.lower(): tuple(shape) for n, shape in info["associated_images"]}
        if backend != "tifffile":  # tifffile: Aperio label/macro pages detected by description
            assert set(s.associated_images) == set(expected)
        for name in s.associated_images:
            assert s.associated_image(name).shape == expected[name]
        with pytest.raises(KeyError, match="no associated image"):
            s.associated_image("overview")


@needs_slides
@pytest.mark.parametrize("path", [CMU, TCGA], ids=["jpeg", "jpeg2000"])
def test_real_slides_backends_agree(path):
    regions = [((1000, 900), (128, 200)), ((2900, 2100), (100, 160))]  # the 2nd crosses the CMU border
    ref = None
    for b in BACKENDS:
        with open_slide(path, backend=b) as s:
            got = [s.read_region(0, loc, size) for loc, size in regions]
            for g, (_, size) in zip(got, regions, strict=True):
                assert g.shape == (*size, 3) and g.dtype == np.uint8 and g.flags.c_contiguous
            if ref is None:
                ref = got
            else:
                for a, b_ in zip(ref, got, strict=True):
                    np.testing.assert_array_equal(a, b_)
    with open_slide(CMU) as s:  # outside the image: white
        out = s.read_region(0, (s.shape[0] - 10, s.shape[1] - 10), (40, 40))
        assert (out[20:, :] == 255).all() and (out[:, 20:] == 255).all()


@needs_slides
def test_jpeg2000_slide_without_mpp():
    with open_slide(TCGA) as s:
        assert s.mpp is None and s.level_count == 2
        assert s.levels[1].downsample == pytest.approx(2.0, abs=0.01)
        with pytest.raises(MissingMPPError, match="no physical pixel size.*mpp="):
            s.require_mpp()
        assert s.read_region(1, (500, 500), (64, 64)).shape == (64, 64, 3)
        thumb, ds = s.thumbnail(512)
        assert max(thumb.shape[:2]) <= 512 and ds >= s.shape[1] / 512 - 1e-6
    with open_slide(TCGA, mpp=0.5) as s:
        assert s.mpp == 0.5 and s.mpp_source == "override" and s.require_mpp() == 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_written_pyramid_exact(pyramid, backend):
    p, img, lv1 = pyramid
    with open_slide(p, backend=backend) as s:
        assert s.shape == img.shape[:2]
        assert s.mpp == pytest.approx(0.252) and s.mpp_source == "aperio ImageDescription MPP"
        assert [lv.shape for lv in s.levels] == [img.shape[:2], lv1.shape[:2]]
        assert s.levels[1].downsample == pytest.approx(2.0, rel=0.01)
        np.testing.assert_array_equal(s.read_region(0, (0, 0), img.shape[:2]), img)
        np.testing.assert_array_equal(s.read_region(0, (37, 101), (90, 200)), img[37:127, 101:301])
        np.testing.assert_array_equal(s.read_region(1, (0, 0), lv1.shape[:2]), lv1)
        edge = s.read_region(0, (-5, 410), (20, 20))  # partly outside: white
        assert (edge[:5] == 255).all() and (edge[:, 10:] == 255).all()
        np.testing.assert_array_equal(edge[5:, :10], img[:15, 410:420])
        t = s.read_region_tensor(0, (10, 20), (30, 40))
        assert isinstance(t, torch.Tensor) and t.dtype == torch.uint8
        np.testing.assert_array_equal(t.numpy(), img[10:40, 20:60])
        thumb, ds = s.thumbnail(100)
        assert max(thumb.shape[:2]) <= 100
        assert abs(int(thumb.astype(float).mean()) - int(img.mean())) <= 2


def test_mpp_from_tiff_resolution_and_missing(tmp_path):
    img = np.full((64, 64, 3), 200, np.uint8)
    p = tmp_path / "res.tif"
    _write_pyramid(p, img, resolution=((40000, 40000), "CENTIMETER"), tile=32)  # 4e4 px/cm = 0.25 um
    with open_slide(p) as s:
        assert s.mpp == pytest.approx(0.25) and s.mpp_source == "TIFF XResolution"
    q = tmp_path / "nores.tif"
    _write_pyramid(q, img, tile=32)
    with open_slide(q) as s:
        assert s.mpp is None
        with pytest.raises(MissingMPPError, match="nores.tif"):
            s.require_mpp()


def test_truncated_and_corrupt_files(tmp_path, pyramid):
    p, img, _ = pyramid
    data = p.read_bytes()
    for frac in (0.5, 0.95):
        t = tmp_path / f"trunc{frac}.tif"
        t.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(SlideReadError, match=f"trunc{frac}.tif.*(truncated|corrupt|TIFF)"):
            open_slide(t)
    head = tmp_path / "head.tif"
    head.write_bytes(data[:6])
    with pytest.raises(SlideReadError, match="head.tif"):
        open_slide(head)
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"this is not a slide" * 10)
    with pytest.raises(SlideReadError, match="junk.svs.*unsupported or corrupt"):
        open_slide(junk)
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    with pytest.raises(SlideReadError, match="empty.svs: empty file"):
        open_slide(empty)
    with pytest.raises(FileNotFoundError, match="nowhere.svs"):
        open_slide(tmp_path / "nowhere.svs")
    with pytest.raises(SlideReadError, match="is a directory"):
        open_slide(tmp_path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_tile_data_raises_on_read(tmp_path, pyramid, backend):
    p, _, _ = pyramid
    with tifffile.TiffFile(p) as tf:
        off, cnt = tf.pages[0].dataoffsets[1], tf.pages[0].databytecounts[1]
    b = bytearray(p.read_bytes())
    b[off : off + cnt] = np.random.default_rng(0).integers(0, 256, cnt, dtype=np.uint8).tobytes()
    c = tmp_path / "corrupt.tif"
    c.write_bytes(bytes(b))
    with open_slide(c, backend=backend) as s:
        np.testing.assert_array_equal(
            s.read_region(0, (0, 0), (128, 128)), pyramid[1][:128, :128]
        )  # tile 0 ok
        with pytest.raises(
            SlideReadError, match=r"corrupt.tif: failed to read region level=0 \(row=0, col=0\)"
        ):
            s.read_region(0, (0, 0), (128, 256))


def test_user_errors(pyramid, tmp_path):
    p, _, _ = pyramid
    with pytest.raises(ValueError, match="backend must be"):
        open_slide(p, backend="pillow")
    with pytest.raises(ValueError, match="mpp must be a positive"):
        open_slide(p, mpp=-1)
    with pytest.raises(ValueError, match="mpp must be a positive"):
        open_slide(p, mpp=float("nan"))
    with open_slide(p) as s:
        with pytest.raises(ValueError, match="level must be in"):
            s.read_region(5, (0, 0), (4, 4))
        with pytest.raises(ValueError, match="size must be non-negative"):
            s.read_region(0, (0, 0), (-1, 4))
        assert s.read_region(0, (0, 0), (0, 4)).shape == (0, 4, 3)
    q = tmp_path / "copy.tif"
    shutil.copy(p, q)
    s = open_slide(q, mpp=0.3)
    assert s.mpp == 0.3 and s.mpp_source == "override"
    s.close()
    s.close()  # idempotent


CUCIM_SCRIPT = """
import torch  # preloads libcufile, which makes cuCIM start cuFile
from nucfast.slide import open_slide
from nucfast.synthetic import write_synthetic_slide
info = write_synthetic_slide("s.tif", (256, 256), seed=1, ground_truth=False)
with open_slide(info["path"], backend="cucim") as r:
    r.read_region(0, (0, 0), (16, 16))
print("done")
"""


def test_cucim_quiet_and_no_cufile_log_in_cwd(tmp_path):
    pytest.importorskip("cucim")
    env = {k: v for k, v in os.environ.items() if k != "CUFILE_LOGFILE_PATH"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    p = subprocess.run(
        [sys.executable, "-c", CUCIM_SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout == "done\n"  # no cuFile start-up lines on stdout
    assert "cuFile" not in p.stderr
    assert not (tmp_path / "cufile.log").exists()


def _float_block_mean(level: np.ndarray, k: int) -> np.ndarray:
    """The thumbnail rule as first written: float32 copy, edge padding, mean of k x k blocks, rint."""
    h, w = level.shape[:2]
    th, tw = -(-h // k), -(-w // k)
    x = np.pad(level.astype(np.float32), ((0, th * k - h), (0, tw * k - w), (0, 0)), mode="edge")
    return np.clip(np.rint(x.reshape(th, k, tw, k, 3).mean(axis=(1, 3))), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 16, 17])
def test_block_mean_equals_the_float_mean(k):
    """The integer block means of the thumbnails equal the float32 means rounded half to even, for every
    factor (exact sums; ties such as a mean of x.5 round to even in both), on odd shapes (edge padding)."""
    from nucfast.slide.reader import _block_mean_u8

    rng = np.random.default_rng(k)
    img = rng.integers(0, 256, (67, 91, 3), dtype=np.uint8)
    img[:8] = rng.integers(100, 102, (8, 91, 3), dtype=np.uint8)  # many exact .5 means
    np.testing.assert_array_equal(_block_mean_u8(img, k), _float_block_mean(img, k))


@pytest.mark.parametrize("backend", BACKENDS)
def test_thumbnails_read_once_equal_each_thumbnail(pyramid, backend):
    p, img, lv1 = pyramid
    with open_slide(p, backend=backend) as s:
        sizes = [100, 256, 420, 64]
        many = s.thumbnails(sizes)
        for size, (thumb, ds) in zip(sizes, many, strict=True):
            one, ds1 = s.thumbnail(size)
            np.testing.assert_array_equal(thumb, one)
            assert ds == ds1 and max(thumb.shape[:2]) <= size
        np.testing.assert_array_equal(many[2][0], img)  # 420: level 0 itself
        np.testing.assert_array_equal(s.thumbnail(200)[0], _float_block_mean(lv1, 2))  # level 1, k = 2


def test_cucim_reader_on_a_cpu_does_not_import_cupy(pyramid):
    """Without a CUDA device the cuCIM reader leaves CuPy unimported (half a second), reads the same
    pixels, and CuPy can still be imported afterwards."""
    p, img, _ = pyramid
    code = (
        "import sys, numpy as np, torch; from nucfast.slide import open_slide; "
        f"s = open_slide({str(p)!r}, backend='cucim'); a = s.read_region(0, (0, 0), (300, 420)); "
        "print('cupy' in sys.modules, a.sum()); import cupy; print('cupy' in sys.modules)"
    )
    if torch.cuda.is_available():
        pytest.skip("with a CUDA device cuCIM is imported with CuPy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", str(int(img.astype(np.int64).sum())), "True"], out
