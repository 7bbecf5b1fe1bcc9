"""remove_small_objects / remove_small_holes vs scikit-image 0.26 (bool masks and label images)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import DEVICES, load_monuseg_labels, monuseg_names, real_or_synthetic_masks, synthetic_labels
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.morphology import remove_small_holes as sk_holes
from skimage.morphology import remove_small_objects as sk_objects

import nucfast
from nucfast._label import remove_small_holes, remove_small_objects

PATHS = ("cpu", "emulated")
THRESHOLDS = [{}, {"max_size": 0}, {"max_size": 1}, {"max_size": 50}, {"max_size": 10**9}, {"min_size": 50}]


def inputs():
    rng = np.random.default_rng(0)
    names = monuseg_names(1)
    lab = (load_monuseg_labels(names[0]) if names else synthetic_labels(0).astype(np.uint16))[:500, :600]
    out = []
    for _, m in real_or_synthetic_masks(1):
        m = m[200:700, 100:700]
        out.append(m)
        out.append(m ^ (rng.random(m.shape) < 0.03))
    out += [lab, lab.astype(np.int32), lab.astype(np.int64)[::2, 1::2]]
    out += [rng.random((37, 53)) < 0.5, np.zeros((5, 6), bool), np.ones((5, 6), bool), np.zeros((1, 1), bool)]
    return out


def quiet(f, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f(*a, **kw)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("conn", (1, 2))
def test_objects_vs_skimage(path, conn):
    for x in inputs():
        for kw in THRESHOLDS:
            ref = quiet(sk_objects, x, connectivity=conn, **kw)
            got = quiet(remove_small_objects, x, connectivity=conn, _emulated=path == "emulated", **kw)
            assert got.dtype == ref.dtype
            np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("conn", (1, 2))
def test_holes_vs_skimage(path, conn):
    for x in inputs():
        for kw in THRESHOLDS:
            kw = {("area_threshold" if k == "min_size" else k): v for k, v in kw.items()}
            ref = quiet(sk_holes, x, connectivity=conn, **kw)
            got = quiet(remove_small_holes, x, connectivity=conn, _emulated=path == "emulated", **kw)
            assert got.dtype == ref.dtype == np.bool_
            np.testing.assert_array_equal(got, ref)


@settings(max_examples=200, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    density=st.floats(0.05, 0.95),
    blur=st.booleans(),
    conn=st.sampled_from([1, 2]),
    max_size=st.one_of(st.integers(-2, 60), st.floats(-1.5, 60.5)),
    seed=st.integers(0, 2**32 - 1),
)
def test_hypothesis_native_pass(shape, density, blur, conn, max_size, seed):
    # The CPU op (runs + union-find) on random masks of any width (the byte scans go 8 at a time).
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    f = rng.random(shape)
    m = (ndi.gaussian_filter(f, 1.0) if blur else f) < (np.quantile(f, density) if blur else density)
    for fn, sk in ((remove_small_objects, sk_objects), (remove_small_holes, sk_holes)):
        ref = sk(m, max_size=max_size, connectivity=conn)
        np.testing.assert_array_equal(fn(m, max_size=max_size, connectivity=conn), ref)
        got = fn(torch.from_numpy(m), max_size=max_size, connectivity=conn)
        np.testing.assert_array_equal(got.numpy(), ref)


def test_size_semantics():
    """max_size is inclusive; the deprecated min_size / area_threshold are forwarded to it (skimage 0.26)."""
    a = np.zeros((7, 7), bool)
    a[1, 1:4] = True  # 3 pixels
    a[5, 1:3] = True  # 2 pixels
    assert remove_small_objects(a, max_size=2).sum() == 3
    assert remove_small_objects(a, max_size=3).sum() == 0
    with pytest.warns(FutureWarning, match="min_size"):
        assert remove_small_objects(a, min_size=3).sum() == 0  # inclusive, as skimage 0.26 does
    assert quiet(sk_objects, a, min_size=3).sum() == 0
    h = np.ones((5, 5), bool)
    h[2, 2] = False
    with pytest.warns(FutureWarning, match="area_threshold"):
        assert remove_small_holes(h, area_threshold=1).all()
    with pytest.warns(UserWarning, match="returned as a boolean array"):
        remove_small_holes(h.astype(np.uint8), max_size=1)
    lab = np.zeros((6, 6), np.int32)
    lab[0, 0] = lab[5, 5] = 7  # one label in two pieces: its size is the total
    assert remove_small_objects(lab, max_size=1)[0, 0] == 7


@pytest.mark.parametrize("device", DEVICES)
def test_torch_in_torch_out(device):
    m = torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) < 0.4
    got = nucfast.remove_small_objects(m.to(device), max_size=3, connectivity=2)
    assert isinstance(got, torch.Tensor) and got.device.type == device and got.dtype == torch.bool
    np.testing.assert_array_equal(got.cpu().numpy(), sk_objects(m.numpy(), max_size=3, connectivity=2))
    got = nucfast.remove_small_holes(m.to(device), max_size=3)
    np.testing.assert_array_equal(got.cpu().numpy(), sk_holes(m.numpy(), max_size=3))


def test_errors():
    with pytest.raises(TypeError, match="ar has dtype float64"):
        nucfast.remove_small_objects(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="negative labels"):
        nucfast.remove_small_objects(-np.ones((3, 3), np.int32))
    with pytest.raises(ValueError, match="both min_size"):
        quiet(nucfast.remove_small_objects, np.zeros((3, 3), bool), min_size=3, max_size=4)
    with pytest.raises(ValueError, match="both area_threshold"):
        quiet(nucfast.remove_small_holes, np.zeros((3, 3), bool), area_threshold=3, max_size=4)
    with pytest.raises(ValueError, match="connectivity"):
        nucfast.remove_small_objects(np.zeros((3, 3), bool), connectivity=0)
    with pytest.raises(ValueError, match="ar must have 2 dimensions"):
        nucfast.remove_small_holes(np.zeros((3,), bool))
    with pytest.raises(TypeError, match="max_size must be a number"):
        nucfast.remove_small_objects(np.zeros((3, 3), bool), max_size="5")
