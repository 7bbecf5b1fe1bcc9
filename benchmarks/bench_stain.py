"""Reinhard normalisation of one 1024² uint8 tile, one thread: the fused op (``transform_u8``,
``nucfast::reinhard_u8``) vs the float32 torch path the slide engine used before (``uint8 -> float / 255 ->
transform(dtype=float32)``), same statistics, same tile (a real MoNuSeg image tiled to 1024²).

    OMP_NUM_THREADS=1 PYTHONPATH=. python -m pytest benchmarks/bench_stain.py --benchmark-only \
        --benchmark-group-by=group --benchmark-columns=min,median
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import MONUSEG, monuseg_names  # noqa: E402

from nucfast import stain  # noqa: E402
from nucfast.datasets import read_rgb  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    names = monuseg_names(2)
    if len(names) == 2:
        src, tgt = read_rgb(MONUSEG / f"{names[0]}.png"), read_rgb(MONUSEG / f"{names[1]}.png")
    else:
        rng = np.random.default_rng(0)
        src, tgt = (rng.integers(0, 256, (1000, 1000, 3), dtype=np.uint8) for _ in range(2))
    norm = stain.ReinhardNormalizer().fit(tgt).fit_source(src)
    tile = np.ascontiguousarray(np.tile(src, (2, 2, 1))[:1024, :1024])
    return norm, tile


@pytest.mark.parametrize("side", ["fused_u8", "torch_float32"])
def test_reinhard_1024(benchmark, setup, side):
    norm, tile = setup
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if side == "fused_u8":
            def run():
                return norm.transform_u8(tile)
        else:
            def run():
                x = torch.from_numpy(tile).permute(2, 0, 1) / 255.0
                return norm.transform(x, dtype=torch.float32)
        run()
        benchmark.group = "reinhard 1024² 1thr"
        benchmark.extra_info["megapixels"] = tile.shape[0] * tile.shape[1] / 1e6
        out = benchmark.pedantic(run, rounds=5, iterations=1)
        assert out.shape == (3, 1024, 1024)
    finally:
        torch.set_num_threads(old)
