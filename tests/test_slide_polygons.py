"""Pixel-edge polygons of label images: exact pixel sets, areas and centroids, valid without repair."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from conftest import load_monuseg_labels, monuseg_names, synthetic_labels
from scipy import ndimage as ndi

from nucfast.slide import _polygons
from nucfast.slide._polygons import label_polygons, trace_label_rings


def _check(lab: np.ndarray, origin=(0, 0), scale=1.0):
    ids = np.unique(lab[lab > 0])
    polys = label_polygons(lab, ids, origin=origin, scale=scale)
    assert len(polys) == len(ids)
    h, w = lab.shape
    cy = (np.arange(h)[:, None] + 0.5 + origin[0]) * scale + np.zeros((1, w))
    cx = (np.arange(w)[None, :] + 0.5 + origin[1]) * scale + np.zeros((h, 1))
    centres = shapely.points(cx.ravel(), cy.ravel())
    assert shapely.is_valid(polys).all(), [shapely.is_valid_reason(p) for p in polys if not p.is_valid][:3]
    for k, p in zip(ids, polys, strict=True):
        m = lab == k
        assert p.area == pytest.approx(m.sum() * scale**2, abs=1e-9)
        rr, cc = np.nonzero(m)
        assert p.centroid.x == pytest.approx((cc.mean() + 0.5 + origin[1]) * scale, abs=1e-9)
        assert p.centroid.y == pytest.approx((rr.mean() + 0.5 + origin[0]) * scale, abs=1e-9)
        np.testing.assert_array_equal(shapely.contains(p, centres).reshape(h, w), m)
        n4 = ndi.label(m)[1]  # 4-connected components: one polygon each
        assert len(shapely.get_parts(p)) == n4
    return polys


@pytest.mark.parametrize("seed", range(60))
def test_random_label_images_exact_and_valid(seed, monkeypatch):
    def no_repair(g):  # validity must come from the tracing, not from a repair
        raise AssertionError("make_valid called")

    monkeypatch.setattr(_polygons.shapely, "make_valid", no_repair)
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 40, 2))
    if seed % 3 == 0:  # salt and pepper: saddles, pockets, holes, many components per label
        lab = rng.integers(0, int(rng.integers(2, 6)), (h, w))
    elif seed % 3 == 1:
        lab = ndi.label(rng.random((h, w)) > 0.45, structure=np.ones((3, 3)))[0]  # 8-connected labels
    else:
        lab = synthetic_labels(seed, shape=(h + 20, w + 20), n=12)
    origin = (int(rng.integers(0, 100)), int(rng.integers(0, 100)))
    _check(lab, origin=origin, scale=[1.0, 0.5, 2.0][seed % 3])


def test_saddle_cases():
    # two pixels touching at a corner: two parts; a U closed diagonally: a hole touching its shell
    _check(np.array([[1, 0], [0, 1]]))
    u = np.array([[1, 1, 1, 0], [1, 0, 0, 1], [1, 1, 1, 1]])
    (p,) = _check(u)
    assert p.geom_type == "Polygon" and len(p.interiors) == 1
    ring = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]])  # a hole
    (p,) = _check(ring)
    assert len(p.interiors) == 1 and p.area == 8
    island = np.pad(np.pad(np.array([[1]]), 1), 1, constant_values=1)  # a pixel inside a hole, same label
    (p,) = _check(island)
    assert p.geom_type == "MultiPolygon" and p.area == 17


def test_real_masks():
    names = monuseg_names(2)
    labs = [load_monuseg_labels(n) for n in names] or [synthetic_labels(0, shape=(400, 400), n=150)]
    for lab in labs:
        polys = _check(lab[:300, :300].astype(np.int32))
        assert len(polys) > 20


def test_rings_orientation_and_corners():
    lab = np.zeros((5, 6), np.int32)
    lab[1:4, 1:5] = 7
    lab[2, 2] = 0  # a hole
    rl, off, xy, a2 = trace_label_rings(lab)
    assert rl.tolist() == [7, 7] and sorted(a2.tolist()) == [-2, 24]  # shell +12 px, hole -1 px (x2)
    shell = xy[off[0] : off[1]] if a2[0] > 0 else xy[off[1] : off[2]]
    assert sorted(map(tuple, shell.tolist())) == [(1, 1), (1, 4), (5, 1), (5, 4)]  # corners only


def test_errors_and_empty():
    assert len(label_polygons(np.zeros((4, 4), np.int32), [])) == 0
    with pytest.raises(ValueError, match="not present"):
        label_polygons(np.ones((4, 4), np.int32), [1, 2])
    with pytest.raises(ValueError, match="2-D"):
        trace_label_rings(np.zeros((2, 2, 2), np.int32))
    with pytest.raises(TypeError, match="integer"):
        trace_label_rings(np.zeros((2, 2), np.float32))
    rl, off, xy, a2 = trace_label_rings(np.zeros((0, 5), np.int32))
    assert len(rl) == 0 and off.tolist() == [0]


def test_huge_label_values_and_subset():
    lab = synthetic_labels(3, shape=(80, 80), n=20).astype(np.uint64)
    ids = np.unique(lab[lab > 0])
    big = np.where(lab > 0, lab + np.uint64(2**40), 0).astype(np.uint64)
    want = (ids[::2] + 2**40).astype(np.int64)[::-1]  # a subset, in a given order
    polys = label_polygons(big, want)
    for k, p in zip(want, polys, strict=True):
        assert p.area == (big == k).sum()
