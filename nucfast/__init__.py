"""nucfast: find every cell nucleus in an H&E whole-slide image, fast.

Public API map (implementation modules start with ``_``):

- ``build_info()``: how the native extension was built (CUDA kernels, archs, versions).
- Kernels (CPU + CUDA, numpy or torch in, same kind out; names and semantics of scipy/scikit-image):
  ``percentile_sigmoid`` / ``PercentileSigmoid`` (fused compressed sigmoid, batch percentile threshold),
  ``distance_transform_edt``, ``gaussian_filter``, ``binary_erosion``, ``binary_dilation``,
  ``binary_opening``, ``binary_closing``, ``binary_open_close``, ``disk``, ``peak_local_max``, ``label``,
  ``watershed``, ``remove_small_objects``, ``remove_small_holes``, ``region_stats``.
- ``nucfast.postprocess``: ``attention_instances``, ``usenet_instances`` (+ scipy/skimage references).
- ``embed_nuclei`` (one Nuc2Vec vector per nucleus of an image or tile),
  ``sample_tiles`` (PathologyGAN tiles), ``embed_tiles`` (tile latents), ``tile_features``,
  ``frechet_distance``.
- ``segment_image`` (one RGB image), ``load_model``, ``evaluate`` (AJI/AJI+/PQ/Dice over a folder),
  ``segment_slide`` / ``segment_slides`` (whole slides, Dask cohorts).
- ``nucfast.models``, ``nucfast.stain``, ``nucfast.metrics``, ``nucfast.train``, ``nucfast.engines``,
  ``nucfast.slide``, ``nucfast.synthetic``; the ``nucfast`` command line (``nucfast.cli``).
"""

__version__ = "0.1.0"  # before the imports: nucfast.slide records it in its outputs

from . import metrics, stain  # noqa: E402
from ._backend import build_info
from ._edt import distance_transform_edt
from ._embed import embed_nuclei
from ._evaluate import evaluate
from ._filters import gaussian_filter
from ._label import label, remove_small_holes, remove_small_objects
from ._measure import region_stats
from ._morphology import (
    binary_closing,
    binary_dilation,
    binary_erosion,
    binary_open_close,
    binary_opening,
    disk,
)
from ._peaks import peak_local_max
from ._percentile_sigmoid import PercentileSigmoid, percentile_sigmoid
from ._segment import load_model, segment_image
from ._tiles import embed_tiles, frechet_distance, sample_tiles, tile_features
from ._watershed import watershed
from .slide import segment_slide
from .slide.distributed import segment_slides

__all__ = [
    "PercentileSigmoid",
    "binary_closing",
    "binary_dilation",
    "binary_erosion",
    "binary_open_close",
    "binary_opening",
    "build_info",
    "disk",
    "distance_transform_edt",
    "embed_nuclei",
    "embed_tiles",
    "frechet_distance",
    "evaluate",
    "gaussian_filter",
    "label",
    "load_model",
    "metrics",
    "peak_local_max",
    "percentile_sigmoid",
    "region_stats",
    "remove_small_holes",
    "remove_small_objects",
    "sample_tiles",
    "segment_image",
    "segment_slide",
    "segment_slides",
    "stain",
    "tile_features",
    "watershed",
]
