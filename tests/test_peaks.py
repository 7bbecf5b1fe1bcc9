"""nucfast.peak_local_max vs skimage.feature.peak_local_max (0.26): same coordinates, same order."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from conftest import DEVICES, load_monuseg_labels, monuseg_names, real_or_synthetic_masks, synthetic_labels
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.feature import peak_local_max as sk_plm
from skimage.morphology import disk

import nucfast
from nucfast._peaks import peak_local_max as _plm

PATHS = ("cpu", "emulated")


def check(img, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = sk_plm(img, **kw)
        got = _plm(img, _emulated=path == "emulated", **kw)
        mask = _plm(img, output="mask", _emulated=path == "emulated", **kw)
    assert got.dtype == np.int64 and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    ref_mask = np.zeros(img.shape, bool)
    ref_mask[tuple(ref.T)] = True
    np.testing.assert_array_equal(mask, ref_mask)
    return ref


def pipeline_distance(b):
    return ndi.gaussian_filter(ndi.distance_transform_edt(b), sigma=1)


@pytest.mark.parametrize("path", PATHS)
def test_pipeline_step3_real(path):
    """REFERENCE section 1 step 3: peak_local_max(d, footprint=disk(7), labels=b) on float64 d."""
    for _, b in real_or_synthetic_masks(2):
        d = pipeline_distance(b)
        ref = check(d, path, footprint=disk(7), labels=b)
        assert len(ref) > 50
        markers, _ = nucfast.label(_plm(d, footprint=disk(7), labels=b, output="mask"))
        ref_mask = np.zeros(b.shape, bool)
        ref_mask[tuple(ref.T)] = True
        np.testing.assert_array_equal(markers, ndi.label(ref_mask)[0])


@pytest.mark.parametrize("path", PATHS)
def test_instance_labels_and_noisy(path):
    names = monuseg_names(1)
    lab = load_monuseg_labels(names[0]) if names else synthetic_labels(0)
    lab = lab[:400, :500]
    d = pipeline_distance(lab > 0)
    check(d, path, footprint=disk(7), labels=lab)
    check(d, path, footprint=disk(3), labels=lab, min_distance=4)
    rng = np.random.default_rng(0)
    noisy = d + rng.normal(0, 0.05, d.shape)
    check(noisy, path, min_distance=3)
    check(noisy, path, labels=lab, num_peaks=40)
    check(noisy.astype(np.float32), path, threshold_rel=0.3, footprint=disk(2))


KWARGS = [
    {},
    {"min_distance": 2},
    {"min_distance": 3, "p_norm": 2},
    {"min_distance": 3, "p_norm": 1},
    {"footprint": disk(2)},
    {"footprint": disk(2), "labels": "lab"},
    {"labels": "lab"},
    {"labels": "bool", "footprint": disk(3)},
    {"exclude_border": False},
    {"exclude_border": (0, 2), "min_distance": 3},
    {"threshold_rel": 0.5},
    {"threshold_abs": 1},
    {"threshold_abs": 0.5, "threshold_rel": 0.2},
    {"num_peaks": 3},
    {"labels": "lab", "num_peaks": 3, "min_distance": 2},
    {"labels": "lab", "num_peaks_per_label": 1},
    {"footprint": np.ones((1, 1))},
    {"footprint": np.array([[1, 0, 0], [0, 0, 1]]), "exclude_border": 0},  # no centre, asymmetric
    {"footprint": np.ones((2, 4)), "labels": "lab"},  # even sizes: centre at size // 2
    {"min_distance": 0},
    {"labels": "lab", "min_distance": 2, "exclude_border": 1},
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", (np.float64, np.float32, np.uint8, np.int64))
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (9, 13), (40, 33)])
def test_random_matrix(path, dtype, shape):
    rng = np.random.default_rng(abs(hash((shape, np.dtype(dtype).name))) % 2**32)
    if dtype == np.float64:
        img = ndi.gaussian_filter(rng.random(shape), 1)
    else:
        img = (rng.random(shape) * 4).astype(dtype)  # many ties and plateaus
    lab = ndi.label(rng.random(shape) < 0.6)[0]
    for kw in KWARGS:
        kw = dict(kw)
        if kw.get("labels") == "lab":
            kw["labels"] = lab
        elif kw.get("labels") == "bool":
            kw["labels"] = lab > 0
        check(img, path, **kw)


@pytest.mark.parametrize("path", PATHS)
def test_plateaus_trivial_and_isolated(path):
    img = np.zeros((30, 30))
    img[5:10, 5:10] = 1
    lab = np.zeros((30, 30), np.int32)
    lab[4:12, 4:12] = 1
    lab[20, 20] = 2  # single pixel label: isolated-pixel rule
    lab[15:18, 3:9] = 3  # flat label: trivial, no isolated pixel
    lab[25, 2:6] = 4  # a line: every pixel survives... no: opening removes the line entirely
    lab[0:3, 20:23] = 5  # touches the border band
    lab[26:28, 25] = 7  # gap in label values
    check(img, path, labels=lab)
    check(img, path)
    check(img, path, labels=lab, footprint=disk(7))
    check(np.zeros((8, 8)), path)  # trivial image: no peaks
    check(np.zeros((8, 8)), path, labels=lab[:8, :8] * 0 + 1)
    check(img, path, labels=lab.astype(np.uint16) * 1000)  # large label values


_FOOTPRINTS = (None, disk(1), disk(2), disk(3), np.ones((3, 3)), np.ones((1, 3)), np.ones((2, 4)),
               np.array([[0, 1, 0], [0, 0, 0], [1, 0, 1]]), np.ones((1, 1)))


@settings(max_examples=200, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    kind=st.sampled_from(["smooth", "levels", "uint8", "int16"]),
    labels=st.sampled_from([None, "bool", "uint8", "int32", "int64"]),
    fp=st.integers(0, len(_FOOTPRINTS) - 1),
    min_distance=st.integers(1, 3),
    border=st.sampled_from([True, False, 0, 2, (0, 3)]),
    rel=st.sampled_from([None, 0.3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_hypothesis_exact(shape, kind, labels, fp, min_distance, border, rel, seed):
    """Random images with plateaus and ties, every native label dtype (the CPU kernel reads bool / uint8 /
    int32 / int64 labels as they are) and small footprints (the 3x3 pre-test with missing neighbours)."""
    rng = np.random.default_rng(seed)
    if kind == "smooth":
        img = ndi.gaussian_filter(rng.random(shape), 1)
    elif kind == "levels":
        img = np.round(ndi.gaussian_filter(rng.random(shape), 1) * 8) / 8
    elif kind == "uint8":
        img = (rng.random(shape) * 3).astype(np.uint8)
    else:
        img = (rng.random(shape) * 5 - 2).astype(np.int16)
    kw = {"min_distance": min_distance, "exclude_border": border, "threshold_rel": rel,
          "footprint": _FOOTPRINTS[fp]}
    if labels is not None:
        lab = ndi.label(rng.random(shape) < 0.7)[0]
        kw["labels"] = lab > 0 if labels == "bool" else lab.astype(labels)
    for path in PATHS:
        check(img, path, **kw)


def test_reference_border_remark():
    """exclude_border=True uses min_distance (default 1), not the footprint radius."""
    img = np.zeros((40, 40))
    img[2, 20] = 5.0  # 2 px from the border, inside disk(7)'s radius
    img[20, 20] = 3.0
    ref = sk_plm(img, footprint=disk(7))
    assert [2, 20] in ref.tolist()
    np.testing.assert_array_equal(nucfast.peak_local_max(img, footprint=disk(7)), ref)
    lab = (img > 0).astype(np.int32)
    lab[1:4, 19:22] = 1
    np.testing.assert_array_equal(
        nucfast.peak_local_max(img, footprint=disk(7), labels=lab), sk_plm(img, footprint=disk(7), labels=lab)
    )


@pytest.mark.parametrize("device", DEVICES)
def test_torch_in_torch_out(device):
    b = real_or_synthetic_masks(1)[0][1][:300, :300]
    d = pipeline_distance(b)
    ref = sk_plm(d, footprint=disk(7), labels=b)
    got = nucfast.peak_local_max(
        torch.from_numpy(d).to(device), footprint=disk(7), labels=torch.from_numpy(b).to(device)
    )
    assert isinstance(got, torch.Tensor) and got.device.type == device
    np.testing.assert_array_equal(got.cpu().numpy(), ref)
    got_nc = nucfast.peak_local_max(np.asfortranarray(d), footprint=disk(7), labels=np.asfortranarray(b))
    np.testing.assert_array_equal(got_nc, ref)


def test_errors():
    img = np.random.default_rng(0).random((10, 10))
    with pytest.raises(ValueError, match="image must have 2 dimensions"):
        nucfast.peak_local_max(img[None])
    with pytest.raises(TypeError, match="image has dtype bool"):
        nucfast.peak_local_max(img > 0.5)
    bad = img.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="image contains NaN"):
        nucfast.peak_local_max(bad)
    with pytest.raises(ValueError, match="image must not be empty"):
        nucfast.peak_local_max(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="labels has shape"):
        nucfast.peak_local_max(img, labels=np.ones((5, 5), np.int32))
    with pytest.raises(TypeError, match="labels has dtype float64"):
        nucfast.peak_local_max(img, labels=img)
    with pytest.raises(ValueError, match="footprint must have at least one nonzero"):
        nucfast.peak_local_max(img, footprint=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="footprint must be 2-D"):
        nucfast.peak_local_max(img, footprint=np.ones(3))
    with pytest.raises(ValueError, match="exclude_border cannot be a negative"):
        nucfast.peak_local_max(img, exclude_border=-1)
    with pytest.raises(ValueError, match="exclude_border should have the same length"):
        nucfast.peak_local_max(img, exclude_border=(1, 2, 3))
    with pytest.raises(TypeError, match="exclude_border must be"):
        nucfast.peak_local_max(img, exclude_border=1.5)
    with pytest.raises(ValueError, match="min_distance must be a non-negative int"):
        nucfast.peak_local_max(img, min_distance=-1)
    with pytest.raises(ValueError, match="output must be"):
        nucfast.peak_local_max(img, output="list")
    with pytest.raises(ValueError, match="threshold_abs below the image dtype"):
        nucfast.peak_local_max(img, labels=np.ones((10, 10), np.int32), threshold_abs=-np.inf)
    with pytest.raises(ValueError, match="num_peaks must be"):
        nucfast.peak_local_max(img, num_peaks=-1)
    with pytest.warns(RuntimeWarning, match="min_distance < 1"):
        nucfast.peak_local_max(img, min_distance=0)


@pytest.mark.parametrize("op", ("peak_mask", "peak_mask_emulated"))
def test_opcheck(op):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(20, 24, generator=g, dtype=torch.float64)
    lab = (torch.rand(20, 24, generator=g) < 0.7).long()
    offs = torch.tensor([[0, 0], [0, 1], [1, 0], [-1, 0], [0, -1]], dtype=torch.int64)
    f = getattr(torch.ops.nucfast, op)
    torch.library.opcheck(f, (img, lab, offs, 1, 1, 0.0, True, False, 2))
    torch.library.opcheck(f, (img.float(), None, offs, 0, 2, 0.2, False, False, 1))
    if op == "peak_mask":  # the CPU kernel reads narrow label dtypes as they are
        for lt in (torch.bool, torch.uint8, torch.int32):
            torch.library.opcheck(f, (img, lab.to(lt), offs, 1, 1, 0.0, True, False, 2))
    else:
        with pytest.raises(RuntimeError, match="labels must be int64"):
            f(img, lab.int(), offs, 1, 1, 0.0, True, False, 2)
