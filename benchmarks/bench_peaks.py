"""peak_local_max vs skimage.feature.peak_local_max, the pipeline's call (REFERENCE section 1 step 3):
peak_local_max(gaussian(edt(b), 1), footprint=disk(7), labels=b), on a real 1000x1000 MoNuSeg mask and a
4096x4096 tile of it; nucfast at 1 and 2 threads (coordinates, and the peak-mask output). The ratio that
counts is skimage / nucfast-1t (one thread each side, OMP_NUM_THREADS=1).
  OMP_NUM_THREADS=1 PYTHONPATH=. python -m pytest benchmarks/bench_peaks.py --benchmark-only \
      --benchmark-group-by=group --benchmark-columns=min,median,rounds
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import real_or_synthetic_masks  # noqa: E402
from skimage.feature import peak_local_max  # noqa: E402
from skimage.morphology import disk  # noqa: E402

import nucfast  # noqa: E402

_CACHE: dict = {}


def inputs():
    if not _CACHE:
        m = real_or_synthetic_masks(1)[0][1]
        reps = -(-4096 // m.shape[0])
        for name, b in (("real1000", m), ("tile4096", np.tile(m, (reps, reps))[:4096, :4096])):
            b = np.ascontiguousarray(b)
            _CACHE[name] = (ndi.gaussian_filter(ndi.distance_transform_edt(b), 1), b)
    return _CACHE


@pytest.mark.parametrize("impl", ("skimage", "nucfast-1t", "nucfast-2t", "nucfast-mask-2t"))
@pytest.mark.parametrize("case", ("real1000", "tile4096"))
def test_peak_local_max_pipeline(benchmark, case, impl):
    d, b = inputs()[case]
    benchmark.group = f"peak_local_max disk(7) labels=b {case}"
    if impl == "skimage":
        benchmark.pedantic(peak_local_max, (d,), {"footprint": disk(7), "labels": b}, rounds=3, iterations=1)
        return
    torch.set_num_threads(2 if impl.endswith("2t") else 1)
    out = "mask" if "mask" in impl else "coordinates"
    benchmark(nucfast.peak_local_max, d, footprint=disk(7), labels=b, output=out)


@pytest.mark.parametrize("impl", ("skimage", "nucfast-1t", "nucfast-2t"))
def test_peak_local_max_no_labels(benchmark, impl):
    d, _ = inputs()["real1000"]
    benchmark.group = "peak_local_max min_distance=3 real1000"
    if impl == "skimage":
        benchmark(peak_local_max, d, min_distance=3)
    else:
        torch.set_num_threads(2 if impl.endswith("2t") else 1)
        benchmark(nucfast.peak_local_max, d, min_distance=3)
