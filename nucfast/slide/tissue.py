"""Tissue detection on a thumbnail and the tile grid over tissue.

``tissue_mask``: HSV saturation (glass is unsaturated, stained tissue is not), Otsu threshold with a floor
so an all-glass thumbnail stays empty, excluding near-white and near-black (pen, dust) pixels, then
closing/opening with discs sized in microns, removal of small specks and filling of small holes.
``tile_grid``: the tiles (cores) of a regular grid whose area, grown by a margin, touches tissue.
``sample_patches``: the fixed tissue sample that slide-level statistics are fitted on (stain, SE gates);
``image_tissue_sample``: the same rule on an image in memory, so ``segment_image`` and ``segment_slide``
fit their statistics on the same patches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Tile", "tissue_mask", "tile_grid", "area_thumbnail", "sample_patches", "image_tissue_sample"]

#: The fixed tissue sample: this many patches of this side (working px).
SAMPLE_PATCHES = 8
SAMPLE_SIZE = 512


def _disk(r: int) -> np.ndarray:
    r = max(int(r), 0)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y <= r * r).astype(np.uint8)


def tissue_mask(
    thumb,
    *,
    downsample: float = 1.0,
    mpp: float | None = None,
    min_saturation: int = 20,
    smooth_um: float = 30.0,
    min_area_um2: float = 20000.0,
) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail.

    Parameters
    ----------
    thumb : (h, w, 3) uint8 array
        RGB thumbnail.
    downsample : float
        Thumbnail pixel size in level-0 pixels (for the micron-sized morphology).
    mpp : float, optional
        Level-0 microns per pixel; without it the morphology assumes 0.5 um/px.
    min_saturation : int
        Floor of the saturation threshold (0-255): the Otsu threshold is clipped to [min_saturation, 50].
    smooth_um : float
        Radius (um) of the closing then opening.
    min_area_um2 : float
        Tissue pieces and holes smaller than this (and than 1% of the thumbnail) are removed / filled.

    Returns
    -------
    (h, w) bool array
    """
    import cv2

    a = np.asarray(thumb)
    if a.ndim != 3 or a.shape[2] < 3 or a.dtype != np.uint8:
        raise ValueError(f"thumb must be a (h, w, 3) uint8 RGB array, got shape {a.shape} dtype {a.dtype}")
    if not downsample > 0:
        raise ValueError(f"downsample must be positive, got {downsample}")
    rgb = np.ascontiguousarray(a[..., :3])
    um_per_px = (mpp if mpp else 0.5) * downsample
    # work at >= 4 um/px: the morphology is about tissue pieces, not cells, and stays cheap
    k = max(1, int(4.0 / um_per_px))
    if k > 1:
        h0, w0 = rgb.shape[:2]
        small = cv2.resize(rgb, (max(1, -(-w0 // k)), max(1, -(-h0 // k))), interpolation=cv2.INTER_AREA)
        m = _tissue_mask(small, um_per_px * (w0 / small.shape[1]), min_saturation, smooth_um, min_area_um2)
        return cv2.resize(m.astype(np.uint8), (w0, h0), interpolation=cv2.INTER_NEAREST).astype(bool)
    return _tissue_mask(rgb, um_per_px, min_saturation, smooth_um, min_area_um2)


def _tissue_mask(rgb, um_per_px, min_saturation, smooth_um, min_area_um2, max_saturation_threshold=50):
    import cv2
    from skimage.filters import threshold_otsu

    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    sat = hsv[..., 1]
    val = hsv[..., 2]
    usable = (val > 30) & (rgb.min(axis=2) < 235)
    thr = min_saturation
    if usable.sum() > 16 and np.ptp(sat[usable]) > 0:
        # Otsu separates glass from tissue; capped so that a slide that is all tissue is not split in two
        thr = int(np.clip(threshold_otsu(sat[usable]), min_saturation, max_saturation_threshold))
    m = (sat > thr) & usable
    r = int(round(smooth_um / um_per_px))
    if r >= 1:
        k = _disk(r)
        m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, k).astype(bool)
        m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, k).astype(bool)
    min_px = min(min_area_um2 / (um_per_px**2), 0.01 * m.size)  # small slides: at most 1% of the image
    if min_px >= 1:
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        keep = np.zeros(n, bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
        m = keep[lab]
        n, lab, stats, _ = cv2.connectedComponentsWithStats((~m).astype(np.uint8), connectivity=4)
        border = np.zeros(n, bool)
        border[np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))] = True
        small_hole = (stats[:, cv2.CC_STAT_AREA] < min_px) & ~border
        small_hole[0] = False  # component 0 of ~m is the tissue itself
        m = m | small_hole[lab]
    return m


@dataclass(frozen=True)
class Tile:
    """A tile core in working-grid pixels: rows ``row:row+height``, cols ``col:col+width``."""

    index: int
    row: int
    col: int
    height: int
    width: int


def tile_grid(
    shape: tuple[int, int],
    tile: int,
    mask: np.ndarray | None = None,
    mask_downsample: float = 1.0,
    *,
    margin: int = 0,
) -> list[Tile]:
    """Regular grid of ``tile`` x ``tile`` cores over ``shape`` (the last row/column may be smaller).

    Tile indices are ``grid_row * n_cols + grid_col`` (stable whatever the mask), and only tiles whose
    area grown by ``margin`` pixels touches ``mask`` (given at ``mask_downsample`` pixels per mask pixel)
    are returned, in raster order.
    """
    H, W = (int(v) for v in shape)
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    nr, nc = -(-H // tile), -(-W // tile)
    out = []
    for i in range(nr):
        for j in range(nc):
            r, c = i * tile, j * tile
            h, w = min(tile, H - r), min(tile, W - c)
            if mask is not None:
                r0 = int(np.floor((r - margin) / mask_downsample))
                r1 = int(np.ceil((r + h + margin) / mask_downsample))
                c0 = int(np.floor((c - margin) / mask_downsample))
                c1 = int(np.ceil((c + w + margin) / mask_downsample))
                if not mask[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)].any():
                    continue
            out.append(Tile(i * nc + j, r, c, h, w))
    return out


def area_thumbnail(rgb: np.ndarray, max_size: int = 1024) -> tuple[np.ndarray, float]:
    """Area-averaged thumbnail of an RGB image, longest side <= ``max_size``, by the integer factor that
    :meth:`nucfast.slide.SlideReader.thumbnail` uses on a level (edge-padded, rounded): ``(thumb, k)``."""
    h, w = rgb.shape[:2]
    k = max(1, int(np.ceil(max(h, w) / max_size)))
    if k == 1:
        return np.ascontiguousarray(rgb[..., :3]), 1.0
    th, tw = -(-h // k), -(-w // k)
    x = np.pad(rgb[..., :3].astype(np.float32), ((0, th * k - h), (0, tw * k - w), (0, 0)), mode="edge")
    blk = x.reshape(th, k, tw, k, 3).mean(axis=(1, 3))
    return np.clip(np.rint(blk), 0, 255).astype(np.uint8), float(k)


def sample_patches(
    read: Callable[[int, int, int, int], np.ndarray],
    shape: tuple[int, int],
    mask: np.ndarray,
    mask_ds: float,
    *,
    n: int = SAMPLE_PATCHES,
    size: int = SAMPLE_SIZE,
) -> list[np.ndarray]:
    """Fixed tissue sample: ``n`` patches of ``size`` (clipped to the image) centred on tissue pixels of
    ``mask`` evenly spaced in raster order; ``read(row, col, h, w)`` reads working pixels, ``mask_ds`` is
    working px per mask px. Every patch has the same shape. Empty when the mask has no tissue."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return []
    idx = np.unique(np.linspace(0, len(ys) - 1, num=min(n, len(ys))).round().astype(int))
    H, W = shape
    ph, pw = min(size, H), min(size, W)
    out = []
    for i in idx:
        cr = int((ys[i] + 0.5) * mask_ds)
        cc = int((xs[i] + 0.5) * mask_ds)
        r = int(np.clip(cr - size // 2, 0, max(H - size, 0)))
        c = int(np.clip(cc - size // 2, 0, max(W - size, 0)))
        out.append(read(r, c, ph, pw))
    return out


def image_tissue_sample(rgb: np.ndarray, *, mpp: float = 0.25, tissue: bool = True) -> list[np.ndarray]:
    """:func:`sample_patches` of an RGB uint8 image (h, w, 3) at working resolution ``mpp``: the tissue
    mask of its :func:`area_thumbnail` (``tissue=False``: every pixel), as ``segment_slide`` does for a
    slide whose level 0 is this image."""
    thumb, ds = area_thumbnail(rgb)
    mask = tissue_mask(thumb, downsample=ds, mpp=mpp) if tissue else np.ones(thumb.shape[:2], bool)
    return sample_patches(lambda r, c, h, w: rgb[r : r + h, c : c + w, :3], rgb.shape[:2], mask, ds)
