"""Both post-processing pipelines next to their scipy/scikit-image references, on the same inputs.

    PYTHONPATH=. OMP_NUM_THREADS=1 python -m pytest benchmarks/bench_postprocess.py --benchmark-only \\
        --benchmark-group-by=group --benchmark-columns=min,median,rounds

Inputs: a real 1000x1000 MoNuSeg foreground mask (synthetic when the data is absent) and a 4096x4096 tile
made of flipped copies of it. The reference is single-threaded; run with OMP_NUM_THREADS=1 for the
same-thread-count ratio (and =2 for nucfast's 2-thread number). Outputs are checked equal before timing.
"""

from __future__ import annotations

import numpy as np
import pytest
from _edtmorph_inputs import SIZES, mask
from scipy import ndimage as ndi

from nucfast.postprocess import attention_instances, usenet_instances
from nucfast.postprocess.reference import attention_instances_reference, usenet_instances_reference


def _usenet_inputs(size: int):
    m = mask(size)
    rng = np.random.default_rng(0)
    core = ndi.binary_erosion(m, iterations=3)
    p_mask = np.clip(ndi.gaussian_filter(m.astype(np.float32), 1.5) + rng.normal(0, 0.05, m.shape), 0, 1)
    p_marker = np.clip(ndi.gaussian_filter(core.astype(np.float32), 1.0) + rng.normal(0, 0.05, m.shape), 0, 1)
    return p_mask.astype(np.float32), p_marker.astype(np.float32)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("impl", ["nucfast", "reference"])
def test_attention_pipeline(benchmark, size, impl):
    benchmark.group = f"attention post-processing {size}x{size}"
    b = mask(size)
    fn = attention_instances if impl == "nucfast" else attention_instances_reference
    out = benchmark.pedantic(fn, args=(b,), rounds=3 if size > 2000 else 7, warmup_rounds=1)
    if impl == "nucfast":
        np.testing.assert_array_equal(out, attention_instances_reference(b))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("impl", ["nucfast", "reference"])
@pytest.mark.parametrize("method", ["ridges", "watershed"])
def test_usenet_pipeline(benchmark, size, impl, method):
    """``ridges``: the paper's thresholds 0.1 / 0.1; ``watershed``: nucfast's method at 0.4 / 0.7."""
    benchmark.group = f"USE-Net post-processing ({method}) {size}x{size}"
    pm, pk = _usenet_inputs(size)
    kw = {"method": method} if method == "ridges" else {"method": method, "mask_threshold": 0.4,
                                                         "marker_threshold": 0.7}  # fmt: skip
    fn = usenet_instances if impl == "nucfast" else usenet_instances_reference
    out = benchmark.pedantic(fn, args=(pm, pk), kwargs=kw, rounds=3 if size > 2000 else 7, warmup_rounds=1)
    if impl == "nucfast":
        np.testing.assert_array_equal(out, usenet_instances_reference(pm, pk, **kw))
