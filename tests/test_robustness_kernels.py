"""Hypothesis properties of the public kernels against scipy / scikit-image (the oracles), and of their
input validation (every invalid input is a TypeError / ValueError / RuntimeError naming the argument).

Fast in CI (``NUCFAST_HYPOTHESIS`` unset: 15 examples per property); ``NUCFAST_HYPOTHESIS=long`` runs 500.
``COUNTS`` records what was tried (scripts/robustness_report.py prints it).
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi
from skimage import measure, morphology, segmentation
from skimage.feature import peak_local_max as sk_peak_local_max

import nucfast

LONG = os.environ.get("NUCFAST_HYPOTHESIS") == "long"
PROFILE = settings(
    max_examples=500 if LONG else 15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
COUNTS: Counter = Counter()  # "tried", "equal", "clear_error"

shapes = st.tuples(st.integers(1, 32), st.integers(1, 32))
masks = arrays(np.bool_, shapes)
images = arrays(np.float64, shapes, elements=st.floats(-100, 100, allow_nan=False, width=32))


def _labels_from(mask: np.ndarray, seed: int) -> np.ndarray:
    """A label image with arbitrary (large, sparse, repeated) values from a mask."""
    lab, n = ndi.label(mask)
    values = np.random.default_rng(seed).integers(1, 2**40, n + 1)
    values[0] = 0
    return values[lab]


def _equal(a, b) -> None:
    COUNTS["tried"] += 1
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    COUNTS["equal"] += 1


@PROFILE
@given(images, st.floats(0, 6), st.floats(0.5, 4))
def test_gaussian_filter(x, sigma, truncate):
    got = nucfast.gaussian_filter(x, sigma, truncate=truncate)
    _equal(got, ndi.gaussian_filter(x, sigma, truncate=truncate))


@PROFILE
@given(masks)
def test_distance_transform_edt(m):
    _equal(nucfast.distance_transform_edt(m), ndi.distance_transform_edt(m))


@PROFILE
@given(masks, st.sampled_from([1, 2]))
def test_label(m, conn):
    lab, n = nucfast.label(m, connectivity=conn)
    ref, rn = ndi.label(m, structure=ndi.generate_binary_structure(2, conn))
    _equal(lab, ref)
    assert n == rn


@PROFILE
@given(masks, st.integers(0, 4), st.sampled_from(["erosion", "dilation", "opening", "closing"]))
def test_binary_morphology(m, r, op):
    fp = morphology.disk(r)
    _equal(getattr(nucfast, f"binary_{op}")(m, r), getattr(ndi, f"binary_{op}")(m, structure=fp))


@PROFILE
@given(masks, st.integers(0, 20), st.integers(0, 2**31), st.sampled_from([1, 2]))
def test_remove_small_objects(m, size, seed, conn):
    _equal(nucfast.remove_small_objects(m, max_size=size, connectivity=conn),
           morphology.remove_small_objects(m, max_size=size, connectivity=conn))  # fmt: skip
    lab = _labels_from(m, seed)  # huge label values: compacted, same result as on small ids
    ids, inv = np.unique(lab, return_inverse=True)
    small = inv.reshape(lab.shape) + (ids[0] != 0)  # compacted ids, 0 stays background
    got = nucfast.remove_small_objects(lab, max_size=size)
    _equal(got != 0, morphology.remove_small_objects(small, max_size=size) != 0)


@PROFILE
@given(masks, st.integers(0, 20))
def test_remove_small_holes(m, size):
    _equal(nucfast.remove_small_holes(m, max_size=size), morphology.remove_small_holes(m, max_size=size))


@PROFILE
@given(images, st.integers(1, 4), st.booleans())
def test_peak_local_max(x, d, border):
    _equal(nucfast.peak_local_max(x, min_distance=d, exclude_border=border),
           sk_peak_local_max(x, min_distance=d, exclude_border=border))  # fmt: skip


@PROFILE
@given(images, masks, st.sampled_from([1, 2]))
def test_watershed(x, m, conn):
    if x.shape != m.shape:
        m = np.resize(m, x.shape)
    markers, _ = ndi.label(m & (np.random.default_rng(0).random(m.shape) < 0.2))
    got = nucfast.watershed(x, markers, connectivity=conn)
    _equal(got, segmentation.watershed(x, markers, connectivity=conn))


@PROFILE
@given(masks, st.integers(0, 2**31))
def test_region_stats(m, seed):
    lab = _labels_from(m, seed)  # huge, sparse label values (the oracle gets them compacted)
    inten = np.random.default_rng(seed).random(m.shape)
    got = nucfast.region_stats(lab, inten)
    ids, small = np.unique(lab, return_inverse=True)
    props = ("label", "area", "centroid", "bbox", "perimeter", "intensity_mean")
    ref = measure.regionprops_table(small.reshape(lab.shape) + (ids[0] != 0), inten, properties=props)
    ref["label"] = (ids if ids[0] == 0 else np.concatenate([[0], ids]))[ref["label"]]
    for k in ("label", "area", "bbox-0", "bbox-1", "bbox-2", "bbox-3", "centroid-0", "centroid-1"):
        _equal(got[k], ref[k])
    np.testing.assert_allclose(got["perimeter"], ref["perimeter"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["intensity_mean"], ref["intensity_mean"], rtol=1e-12)


# -- invalid inputs: clear errors, never a crash or a result --------------------------------------------
_BAD = [
    ("gaussian_filter", lambda: nucfast.gaussian_filter(np.full((4, 4), np.nan), 1.0), None),
    ("gaussian_filter", lambda: nucfast.gaussian_filter(np.zeros((2, 3, 4)), 1.0), "image"),
    ("gaussian_filter", lambda: nucfast.gaussian_filter(np.zeros((4, 4), np.int32), 1.0), "image"),
    ("gaussian_filter", lambda: nucfast.gaussian_filter(np.zeros((4, 4)), -1.0), "sigma"),
    ("gaussian_filter", lambda: nucfast.gaussian_filter(torch.zeros(4, 4, requires_grad=True), 1.0), "image"),
    ("label", lambda: nucfast.label(np.zeros(5)), "mask"),
    ("label", lambda: nucfast.label(np.zeros((4, 4)), connectivity=3), "connectivity"),
    ("remove_small_objects", lambda: nucfast.remove_small_objects(-np.ones((3, 3), np.int64)), "negative"),
    ("region_stats", lambda: nucfast.region_stats(np.zeros((3, 3), np.float32)), "labels"),
    ("region_stats", lambda: nucfast.region_stats(np.zeros((3, 3), np.int32), np.zeros((2, 2))), "intensity"),
    ("region_stats", lambda: nucfast.region_stats(np.eye(3, dtype=np.int8), np.full((3, 3), 1e999)), "inten"),
    ("peak_local_max", lambda: nucfast.peak_local_max(np.zeros((3, 3)), exclude_border=-1), "exclude_border"),
    ("watershed", lambda: nucfast.watershed(np.zeros((3, 3)), np.zeros((4, 4), np.int32)), "markers"),
    ("watershed", lambda: nucfast.watershed(np.zeros((3, 3)), -np.ones((3, 3), np.int32)), "markers"),
    ("edt", lambda: nucfast.distance_transform_edt(np.zeros((3, 3)), dtype=np.int8), "dtype"),
    ("binary_erosion", lambda: nucfast.binary_erosion(np.zeros((3, 3), bool), radius=-1), "radius"),
    ("binary_erosion", lambda: nucfast.binary_erosion(np.zeros((3, 3), bool), 1, footprint=np.ones((3, 3))),
     "exactly one"),
    ("percentile_sigmoid", lambda: nucfast.percentile_sigmoid(np.zeros((2, 3), np.int32)), "logits"),
]  # fmt: skip


@pytest.mark.parametrize("op, call, word", _BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(_BAD)])
def test_invalid_inputs_raise_clear_errors(op, call, word):
    COUNTS["tried_invalid"] += 1
    with pytest.raises((TypeError, ValueError, RuntimeError)) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400
    if word is not None:
        assert word in msg, msg
    COUNTS["clear_error"] += 1
