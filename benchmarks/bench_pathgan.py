"""PathologyGAN tile embedding on one CPU thread, side by side with reference points on the same pixels.

Groups (each case the same input):
- ``tiles56``: 64 real tissue tiles of 56 x 56 px at 0.5 um/px (the encoder's window) cut from a MoNuSeg
  image: ``embed_tiles`` (torch eager), the same encoder through onnxruntime (``export_tile_onnx``, one
  thread) on the same windows, and the hand-crafted colour/texture features (``tile_features``).
- ``slide_tile``: one 1000 x 1000 MoNuSeg image at 0.25 um/px taken as a slide tile: ``embed_tiles``
  (area-resampled to 500 x 500 at 0.5 um/px, 9 x 9 windows, one vector) next to ``segment_image`` with the
  shipped USE-Net on the same tile (what the slide engine already does per tile), so the cost of adding
  ``tile_embed`` to the engine reads as a fraction of the segmentation.
Random tiles stand in when ../shared/data is absent. The encoder is the shipped one when its weights exist,
else the untrained CPU-sized one (the speed does not depend on the weights).

    cd <worktree> && OMP_NUM_THREADS=1 PYTHONPATH=$PWD python -m pytest benchmarks/bench_pathgan.py \
        --benchmark-only --benchmark-group-by=group --benchmark-columns=min,median,mean,rounds

BENCHMARKS: see nucfast/weights/PATHGAN_CARD.md ("Speed").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import MONUSEG, monuseg_names  # noqa: E402

import nucfast  # noqa: E402
from nucfast import models  # noqa: E402
from nucfast.engines import OnnxRuntimeBackend, export_tile_onnx  # noqa: E402


def _image() -> np.ndarray:
    names = monuseg_names(1)
    if names:
        from nucfast.datasets import read_rgb

        return read_rgb(MONUSEG / f"{names[0]}.png")
    return np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)


def _encoder() -> models.Model:
    try:
        return models.load("pathgan_encoder")
    except FileNotFoundError:
        return models.load("pathgan_encoder_cpu")


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    img = _image()
    half = torch.nn.functional.interpolate(
        torch.from_numpy(img.copy()).permute(2, 0, 1).float()[None], size=(500, 500), mode="area"
    )[0].permute(1, 2, 0).round().to(torch.uint8).numpy()
    tiles = np.stack([half[r : r + 56, c : c + 56] for r in range(0, 448, 56) for c in range(0, 448, 56)])
    enc = _encoder()
    ort = OnnxRuntimeBackend(export_tile_onnx(enc), intra_op_threads=1)
    return img, tiles, enc, ort


def test_tiles56_embed_tiles(benchmark, setup):
    benchmark.group = "tiles56 x64"
    _, tiles, enc, _ = setup
    z = benchmark(nucfast.embed_tiles, tiles, mpp=0.5, model=enc)
    assert z.shape == (64, 200)


def test_tiles56_encoder_onnxruntime(benchmark, setup):
    benchmark.group = "tiles56 x64"
    _, tiles, enc, ort = setup
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    y = benchmark(ort.run, x)
    np.testing.assert_allclose(y.numpy(), nucfast.embed_tiles(tiles, mpp=0.5, model=enc), atol=1e-3)


def test_tiles56_colour_texture_features(benchmark, setup):
    benchmark.group = "tiles56 x64"
    _, tiles, _, _ = setup
    assert benchmark(nucfast.tile_features, tiles).shape == (64, 20)


def test_slide_tile_embed_tiles(benchmark, setup):
    benchmark.group = "slide tile 1000px at 0.25 um/px"
    img, _, enc, _ = setup
    z = benchmark(nucfast.embed_tiles, img[None], mpp=0.25, model=enc)
    assert z.shape == (1, 200)


def test_slide_tile_segment_image_usenet(benchmark, setup):
    benchmark.group = "slide tile 1000px at 0.25 um/px"
    img, _, _, _ = setup
    labels = benchmark.pedantic(nucfast.segment_image, (img, "usenet"), rounds=3, iterations=1)
    assert labels.max() > 0 or not monuseg_names(1)
