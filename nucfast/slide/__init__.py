"""Whole-slide engine: readers, tissue detection, tiling, seam-free stitching, outputs."""

from ._rundir import RunDirBusy, RunDirError
from .engine import DiskFullError, SlideResult, segment_slide
from .reader import Level, MissingMPPError, SlideReader, SlideReadError, open_slide
from .segmenters import BaselineSegmenter, ModelSegmenter, TileSegmentation
from .tissue import Tile, tile_grid, tissue_mask

__all__ = [
    "BaselineSegmenter",
    "DiskFullError",
    "RunDirBusy",
    "RunDirError",
    "Level",
    "MissingMPPError",
    "ModelSegmenter",
    "SlideReadError",
    "SlideReader",
    "SlideResult",
    "Tile",
    "TileSegmentation",
    "open_slide",
    "segment_slide",
    "tile_grid",
    "tissue_mask",
]
