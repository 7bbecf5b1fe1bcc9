"""Shared fixtures: where the real data lives, and device parametrisation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(os.environ.get("NUCFAST_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
MONUSEG = DATA / "monuseg_train"

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ("cpu", pytest.param("cuda", marks=needs_cuda))


def monuseg_names(limit: int | None = None) -> list[str]:
    """Names of the MoNuSeg images present (sorted); empty when ../shared/data is absent."""
    if not MONUSEG.is_dir():
        return []
    names = sorted(p.name[: -len("_inst.tif")] for p in MONUSEG.glob("*_inst.tif"))
    return names[:limit] if limit else names


def load_monuseg_labels(name: str) -> np.ndarray:
    import tifffile

    return np.ascontiguousarray(tifffile.imread(MONUSEG / f"{name}_inst.tif"))


def synthetic_labels(seed: int, shape=(400, 400), n=120) -> np.ndarray:
    """Touching, overlapping ellipse-ish nuclei as an instance label map (stand-in when data is absent)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    for i in range(1, n + 1):
        r0, c0 = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        a, b = rng.uniform(3, 12), rng.uniform(3, 12)
        th = rng.uniform(0, np.pi)
        y, x = rr - r0, cc - c0
        u = (x * np.cos(th) + y * np.sin(th)) / a
        v = (-x * np.sin(th) + y * np.cos(th)) / b
        lab[(u * u + v * v) <= 1] = i
    return lab


def real_or_synthetic_masks(limit: int = 4) -> list[tuple[str, np.ndarray]]:
    """Foreground masks from MoNuSeg label maps, or synthetic ones when the data is absent."""
    names = monuseg_names(limit)
    if names:
        return [(n, load_monuseg_labels(n) > 0) for n in names]
    return [(f"synthetic{s}", synthetic_labels(s) > 0) for s in range(limit)]


def write_tiny_dataset(d: Path, *, size: int, n: int, count: int = 3) -> Path:
    """A MoNuSeg-layout directory (``imgK.png`` + ``imgK_inst.tif``) of ``count`` small synthetic H&E-like
    images with ``n`` nuclei each, for training smoke tests."""
    import tifffile
    from PIL import Image

    for i in range(count):
        lab = synthetic_labels(i, shape=(size, size), n=n).astype(np.uint16)
        rgb = np.empty((size, size, 3), np.uint8)
        rgb[...] = (235, 195, 225)
        rgb[lab > 0] = (90, 60, 150)
        rgb = np.clip(rgb + np.random.default_rng(i).normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(d / f"img{i}.png")
        tifffile.imwrite(d / f"img{i}_inst.tif", lab)
    return d
