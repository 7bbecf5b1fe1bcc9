"""watershed: nucfast (CPU, exact; 1 and 2 threads) vs skimage.segmentation.watershed (1 thread).

Inputs:
  - real1000 / synth4096 (-EDT energy, the attention pipeline's, REFERENCE.md section 1): image =
    -gaussian_filter(edt(mask), 1) (float64), markers = label(peak_local_max(..., footprint=disk(7),
    labels=mask)), on the first MoNuSeg 1000x1000 training mask (synthetic when the data is absent) and on
    a 4096x4096 tile of 40,000 random ellipses (touching and overlapping nuclei);
  - cont1000 (continuous energy, USE-Net's watershed method): -(p_mask + p_marker) of smoothed noisy
    probabilities made from the same real mask (clipped to [0, 1]: flat regions), its marker blobs as
    markers and its cleaned mask (tests/test_watershed.py: usenet_energy_inputs).
Run: PYTHONPATH=. python -m pytest benchmarks/bench_watershed.py --benchmark-only --benchmark-group-by=group
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import disk
from skimage.segmentation import watershed as sk_watershed

from nucfast import watershed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import real_or_synthetic_masks  # noqa: E402
from test_watershed import usenet_energy_inputs  # noqa: E402


def _ellipses(shape, n, seed):
    rng = np.random.default_rng(seed)
    m = np.zeros(shape, bool)
    for _ in range(n):
        r0, c0 = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        a, b, th = rng.uniform(3, 12), rng.uniform(3, 12), rng.uniform(0, np.pi)
        R = int(max(a, b)) + 1
        r1, r2 = int(max(r0 - R, 0)), int(min(r0 + R + 1, shape[0]))
        c1, c2 = int(max(c0 - R, 0)), int(min(c0 + R + 1, shape[1]))
        y, x = np.mgrid[r1:r2, c1:c2]
        y, x = y - r0, x - c0
        u = (x * np.cos(th) + y * np.sin(th)) / a
        v = (-x * np.sin(th) + y * np.cos(th)) / b
        m[r1:r2, c1:c2] |= u * u + v * v <= 1
    return m


@cache
def inputs(case: str):
    if case == "cont1000":
        return usenet_energy_inputs(real_or_synthetic_masks(1)[0][1])
    mask = real_or_synthetic_masks(1)[0][1] if case == "real1000" else _ellipses((4096, 4096), 40000, 0)
    mask = np.ascontiguousarray(mask, dtype=bool)
    d = ndi.gaussian_filter(ndi.distance_transform_edt(mask), 1)
    peaks = peak_local_max(d, footprint=disk(7), labels=mask)
    pm = np.zeros(mask.shape, bool)
    pm[tuple(peaks.T)] = True
    return -d, ndi.label(pm)[0].astype(np.int32), mask


@contextmanager
def threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


CASES = ("real1000", "cont1000", "synth4096")


def _rounds(case):
    return 2 if case == "synth4096" else 5


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_nucfast(benchmark, case, nthreads):
    benchmark.group = f"watershed-{case}"
    image, markers, mask = inputs(case)
    timg, tmk, tmask = torch.from_numpy(image), torch.from_numpy(markers), torch.from_numpy(mask)
    with threads(nthreads):
        out = benchmark.pedantic(
            watershed, (timg, tmk), {"mask": tmask}, rounds=_rounds(case) * 2, warmup_rounds=1
        )
    if case != "synth4096":
        np.testing.assert_array_equal(out.numpy(), sk_watershed(image, markers, mask=mask))


@pytest.mark.parametrize("case", CASES)
def test_skimage(benchmark, case):
    benchmark.group = f"watershed-{case}"
    image, markers, mask = inputs(case)
    with threads(1):
        benchmark.pedantic(
            sk_watershed, (image, markers), {"mask": mask}, rounds=_rounds(case), warmup_rounds=0
        )
