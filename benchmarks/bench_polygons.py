"""Nucleus polygons and the per-tile measurement on a real 1000x1000 MoNuSeg label map + RGB image.

- ``polygons``: nucfast's pixel-edge tracer (all nuclei of the tile at once, valid shapely polygons whose
  area is the pixel count) vs the path it replaced: one ``cv2.findContours`` per nucleus on its crop
  (contours through pixel centres, 6 % of them invalid on a real slide) plus ``cv2.arcLength`` and
  ``cv2.convexHull``.
- ``measure``: the slide engine's whole measurement stage (``nucfast.slide._nuclei.measure_tile``: owner
  selection, stain means, moments, polygons, convex hulls) on the same tile, reported as MP/s of tile.
  PYTHONPATH=. OMP_NUM_THREADS=1 python -m pytest benchmarks/bench_polygons.py --benchmark-only
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_measure import inputs as _measure_inputs  # noqa: E402

from nucfast.slide._nuclei import measure_tile  # noqa: E402
from nucfast.slide._polygons import label_polygons  # noqa: E402
from nucfast.slide.segmenters import TileSegmentation  # noqa: E402
from nucfast.slide.tissue import Tile  # noqa: E402


def inputs():
    """The real 1000² MoNuSeg tile (labels, rgb) of bench_measure.py (synthetic when the data is absent)."""
    return _measure_inputs()["real1000"]


def _cv2_contours(lab: np.ndarray, ids) -> list:
    import cv2
    from scipy import ndimage as ndi

    out = []
    for k, sl in zip(ids, ndi.find_objects(lab), strict=False):
        if sl is None:
            continue
        m = lab[sl] == k
        cnts, _ = cv2.findContours(np.pad(m, 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        c = max(cnts, key=cv2.contourArea)
        out.append((c, cv2.arcLength(c, True), cv2.convexHull(c)))
    return out


@pytest.mark.parametrize("impl", ("cv2-per-nucleus", "nucfast"))
def test_polygons(benchmark, impl):
    torch.set_num_threads(1)
    lab, _ = inputs()
    ids = np.unique(lab[lab > 0])
    benchmark.group = f"nucleus polygons, 1000x1000 MoNuSeg tile, {len(ids)} nuclei"
    if impl == "nucfast":
        polys = benchmark(label_polygons, lab, ids)
        assert len(polys) == len(ids)
    else:
        benchmark(_cv2_contours, lab, ids)
    benchmark.extra_info["MP/s"] = lab.size / 1e6 / benchmark.stats.stats.min


def test_measure_tile(benchmark):
    torch.set_num_threads(1)
    lab, rgb = inputs()
    seg = TileSegmentation(lab, None, None)
    h, w = lab.shape
    benchmark.group = "measure stage (owned nuclei of one tile), 1000x1000 MoNuSeg tile"
    nuc = benchmark(measure_tile, Tile(0, 0, 0, h, w), (0, 0), rgb, seg, (h, w), 1.0, 0.25, 0.25)
    assert len(nuc) > 100
    benchmark.extra_info["MP/s"] = lab.size / 1e6 / benchmark.stats.stats.min
