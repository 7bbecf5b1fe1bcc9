"""Fast post-processing pipelines vs their scipy/scikit-image references (REFERENCE.md 1 and 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_monuseg_labels, monuseg_names, synthetic_labels
from scipy import ndimage as ndi

from nucfast.postprocess import attention_instances, cross_dilate_labels, usenet_instances
from nucfast.postprocess.reference import (
    attention_instances_reference,
    cross_dilate_labels_reference,
    usenet_instances_reference,
)


def _label_maps(limit=4):
    names = monuseg_names(limit)
    if names:
        return [(n, load_monuseg_labels(n).astype(np.int32)) for n in names]
    return [(f"synthetic{s}", synthetic_labels(s)) for s in range(limit)]


LABEL_MAPS = _label_maps()


def _noisy(mask: np.ndarray, seed: int, flip: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return mask ^ (rng.random(mask.shape) < flip)


@pytest.mark.parametrize("name,lab", LABEL_MAPS, ids=[n for n, _ in LABEL_MAPS])
@pytest.mark.parametrize("noise", [0.0, 0.03])
def test_attention_instances_equal_reference(name, lab, noise):
    b = lab > 0
    if noise:
        b = _noisy(b, 1)
    got = attention_instances(b)
    want = attention_instances_reference(b)
    assert got.dtype == np.int32 and got.shape == b.shape
    np.testing.assert_array_equal(got, want)


def test_attention_instances_torch_and_uint8_inputs():
    b = synthetic_labels(3, shape=(211, 173)) > 0
    want = attention_instances_reference(b)
    got_t = attention_instances(torch.from_numpy(b))
    assert isinstance(got_t, torch.Tensor)
    np.testing.assert_array_equal(got_t.numpy(), want)
    np.testing.assert_array_equal(attention_instances(b.astype(np.uint8) * 255), want)
    np.testing.assert_array_equal(attention_instances(np.asfortranarray(b)), want)


def test_attention_instances_empty_image():
    out = attention_instances(np.zeros((0, 7), bool))
    assert out.shape == (0, 7) and out.dtype == np.int32


@pytest.mark.parametrize("shape", [(1, 1), (5, 40), (64, 64)])
def test_attention_instances_degenerate(shape):
    for b in (np.zeros(shape, bool), np.ones(shape, bool)):
        np.testing.assert_array_equal(attention_instances(b), attention_instances_reference(b))


def _usenet_probs(lab: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Plausible network outputs from a label map: blurred mask and eroded-core markers, plus noise."""
    rng = np.random.default_rng(seed)
    fg = (lab > 0).astype(np.float64)
    core = np.zeros(lab.shape, bool)
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is not None:
            core[sl] |= ndi.binary_erosion(lab[sl] == i, iterations=2)
    p_mask = np.clip(ndi.gaussian_filter(fg, 1.5) + rng.normal(0, 0.08, lab.shape), 0, 1)
    noise = rng.normal(0, 0.08, lab.shape)
    p_marker = np.clip(ndi.gaussian_filter(core.astype(np.float64), 1.0) + noise, 0, 1)
    return p_mask.astype(np.float32), p_marker.astype(np.float32)


@pytest.mark.parametrize("name,lab", LABEL_MAPS, ids=[n for n, _ in LABEL_MAPS])
@pytest.mark.parametrize("method,thresholds", [("ridges", (0.1, 0.1)), ("watershed", (0.3, 0.5))])
def test_usenet_instances_equal_reference(name, lab, method, thresholds):
    pm, pk = _usenet_probs(lab, 7)
    kw = dict(mask_threshold=thresholds[0], marker_threshold=thresholds[1], method=method)
    got = usenet_instances(pm, pk, **kw)
    want = usenet_instances_reference(pm, pk, **kw)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    if method == "watershed":  # every foreground pixel of the cleaned mask is labelled, seeded or not
        assert got.max() > 0 and set(np.unique(got)) == set(range(got.max() + 1))


def test_usenet_instances_without_markers_and_float64():
    lab = synthetic_labels(5, shape=(150, 190))
    pm, _ = _usenet_probs(lab, 2)
    pk = np.zeros_like(pm)
    np.testing.assert_array_equal(usenet_instances(pm, pk), usenet_instances_reference(pm, pk))
    pm64, pk64 = (x.astype(np.float64) for x in _usenet_probs(lab, 3))
    got = usenet_instances(torch.from_numpy(pm64), torch.from_numpy(pk64))
    np.testing.assert_array_equal(got.numpy(), usenet_instances_reference(pm64, pk64))


def test_cross_dilate_labels_matches_loop():
    rng = np.random.default_rng(0)
    lab, _ = ndi.label(rng.random((60, 70)) < 0.2, structure=np.ones((3, 3)))
    lab = lab.astype(np.int32)
    got = cross_dilate_labels(torch.from_numpy(lab)).numpy()
    np.testing.assert_array_equal(got, cross_dilate_labels_reference(lab))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="binary_mask"):
        attention_instances(np.zeros((3, 4, 5), bool))
    with pytest.raises(TypeError, match="binary_mask"):
        attention_instances(np.zeros((3, 4), np.float32))
    pm = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="same shape"):
        usenet_instances(pm, np.zeros((8, 9), np.float32))
    with pytest.raises(ValueError, match="method"):
        usenet_instances(pm, pm, method="skiz")
    bad = pm.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="p_marker"):
        usenet_instances(pm, bad)
    with pytest.raises(TypeError, match="p_mask"):
        usenet_instances(pm.astype(bool), pm)
