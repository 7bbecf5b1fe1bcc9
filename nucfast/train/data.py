"""MoNuSeg-layout data: loading, image-level split, USE-Net targets, augmented crop sampling."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from ..datasets import list_names, read_labels, read_rgb, split_names
from ..stain import hed_to_rgb, rgb_to_hed

__all__ = [
    "load_dataset",
    "list_names",
    "split_names",
    "shape_marker_target",
    "marker_radius",
    "CropSampler",
    "Sample",
    "DEFAULT_TARGET",
    "read_rgb",
    "read_labels",
]

DEFAULT_TARGET = "TCGA-B0-5711-01Z-00-DX1"


def marker_radius(area: int) -> int:
    """USE-Net erosion radius by nucleus area: <=70 -> 0, <=120 -> 1, <=500 -> 4, >500 -> 6."""
    if area <= 70:
        return 0
    if area <= 120:
        return 1
    if area <= 500:
        return 4
    return 6


def _disk(r: int) -> np.ndarray:
    from skimage.morphology import disk

    return disk(r).astype(bool)


def shape_marker_target(labels: np.ndarray) -> np.ndarray:
    """Union over nuclei of each nucleus eroded by a disk whose radius depends on its area (REFERENCE.md 2).

    Each nucleus is eroded on its own (neighbours do not count as foreground; border value 0).
    """
    lab = np.ascontiguousarray(labels)
    out = np.zeros(lab.shape, bool)
    areas = np.bincount(lab.ravel())
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        r = marker_radius(int(areas[i]))
        m = lab[sl] == i
        if r == 0:
            out[sl] |= m
            continue
        er = ndi.binary_erosion(np.pad(m, 1), structure=_disk(r), border_value=0)[1:-1, 1:-1]
        out[sl] |= er
    return out


@dataclass
class Sample:
    name: str
    rgb: np.ndarray  # (H, W, 3) uint8, already stain-normalised
    labels: np.ndarray  # (H, W) int32


def load_dataset(data_dir, names: list[str], *, normalizer=None) -> list[Sample]:
    d = Path(data_dir)
    out = []
    for n in names:
        rgb = read_rgb(d / f"{n}.png")
        lab = read_labels(d / f"{n}_inst.tif")
        if rgb.shape[:2] != lab.shape:
            raise ValueError(f"{n}: image {rgb.shape[:2]} and labels {lab.shape} differ in size")
        if normalizer is not None:
            rgb = normalizer.transform(rgb)
        out.append(Sample(n, rgb, lab))
    return out


class CropSampler:
    """Random augmented crops for USE-Net: rotation (k*90 + U(-max_rot, max_rot) degrees), flips, random
    placement anywhere in the image (translation), reflection padding at the borders; colour jitter in HED
    space plus brightness/contrast. Targets are resampled bilinearly and thresholded at 0.5.

    All randomness comes from the numpy Generator ``rng`` (its state is checkpointed).
    """

    def __init__(
        self,
        samples: list[Sample],
        *,
        crop: int,
        max_rot: float = 25.0,
        hed_sigma: float = 0.05,
        hed_bias: float = 0.02,
        brightness: float = 0.1,
        contrast: float = 0.1,
    ):
        if not samples:
            raise ValueError("samples is empty")
        self.crop = int(crop)
        self.max_rot = max_rot
        self.hed_sigma, self.hed_bias = hed_sigma, hed_bias
        self.brightness, self.contrast = brightness, contrast
        self.stacks = []
        for s in samples:
            img = torch.from_numpy(s.rgb).permute(2, 0, 1).float() / 255.0
            mask = torch.from_numpy(s.labels > 0).float()[None]
            marker = torch.from_numpy(shape_marker_target(s.labels)).float()[None]
            self.stacks.append(torch.cat([img, mask, marker], 0)[None])  # (1, 5, H, W)

    def _grid(self, rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
        c = self.crop
        ang = math.radians(90.0 * rng.integers(4) + rng.uniform(-self.max_rot, self.max_rot))
        flip = -1.0 if rng.random() < 0.5 else 1.0
        cy, cx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
        ys, xs = torch.meshgrid(
            torch.arange(c, dtype=torch.float64) - (c - 1) / 2,
            torch.arange(c, dtype=torch.float64) - (c - 1) / 2,
            indexing="ij",
        )
        xs = xs * flip
        ca, sa = math.cos(ang), math.sin(ang)
        xi = ca * xs - sa * ys + cx
        yi = sa * xs + ca * ys + cy
        # pixel -> normalised coordinates (align_corners=False)
        gx = (2 * xi + 1) / w - 1
        gy = (2 * yi + 1) / h - 1
        return torch.stack([gx, gy], -1).float()[None]

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return images (B, 3, crop, crop) in [0, 1] and targets (B, 2, crop, crop) in {0, 1}."""

        xs, ys = [], []
        for _ in range(batch):
            st = self.stacks[rng.integers(len(self.stacks))]
            grid = self._grid(rng, st.shape[-2], st.shape[-1])
            out = F.grid_sample(st, grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
            img, tgt = out[:3], (out[3:] >= 0.5).float()
            hed = rgb_to_hed(img.double(), clip=False)
            a = torch.from_numpy(1 + self.hed_sigma * rng.standard_normal(3))[:, None, None]
            b = torch.from_numpy(self.hed_bias * rng.uniform(-1, 1, 3))[:, None, None]
            img = hed_to_rgb(hed * a + b).float()
            br = float(rng.uniform(-self.brightness, self.brightness))
            ct = float(1 + rng.uniform(-self.contrast, self.contrast))
            img = ((img - img.mean()) * ct + img.mean() + br).clamp(0, 1)
            xs.append(img)
            ys.append(tgt)
        return torch.stack(xs), torch.stack(ys)
