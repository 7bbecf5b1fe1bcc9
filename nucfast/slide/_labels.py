"""``labels.zarr``: the nucleus label image as OME-NGFF 0.5 (Zarr v3), and how tiles are committed to it.

Layout (an NGFF "labels" group holding one label image)::

    labels.zarr/                 zarr.json: {"ome": {"version": "0.5", "labels": ["nuclei"]}}
    labels.zarr/nuclei/          multiscales (axes y, x in micrometer; scale = working mpp x 2^level)
                                 + image-label
    labels.zarr/nuclei/0, 1, ... uint32 arrays, dimension_names ["y", "x"]; level 0 at the working
                                 resolution, each next level keeps every 2nd pixel (nearest)

Why 0.5 on Zarr v3: zarr 3 is the pinned zarr library and v3 its native format; 0.5 is the current NGFF
version, the one ome-zarr-py writes by default and the one napari (napari-ome-zarr) and ome-zarr-models
read; 0.4 would require Zarr v2. Readers that only know 0.4 / Zarr v2 (older Bio-Formats) cannot open it;
QuPath users take the GeoJSON instead. No sharding, so any Zarr v3 reader can read the chunks.

Ids: uint32, assigned 1, 2, 3, ... in tile order when each tile is committed (the writer commits tiles in
index order whatever order the workers finish them in, so ids do not depend on the number of workers, and
a resumed run continues where the committed tiles end). 2^32 - 1 ids are enough for any slide (about
10^7 nuclei on a large one).

Overlap rule: two kept nuclei of neighbouring tiles can overlap by a few pixels where the segmenter sees
them slightly differently from the two tiles. The nucleus committed first (the lower id) keeps the shared
pixels in the label image; the later one's table row counts only the pixels it got (``label_px``), while
its area, polygon and measurements describe its own mask. A nucleus of which half or more of the pixels
are already taken is a duplicate of one seen from the neighbouring tile and is dropped (counted as
``duplicates``). So every id of the table is in the label image and every label-image id is in the table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["NAME", "open_label_array", "read_label_array", "LabelWriter", "finalise_labels"]

NAME = "nuclei"
LABEL_CHUNK = 512  # largest chunk side of the label arrays
MAX_ID = 2**32 - 1


def open_label_array(zpath: Path, shape, chunk: int):
    """The level-0 label array of ``zpath`` (created, uint32, fill 0, when absent)."""
    import zarr

    # 512: a tile's nuclei reach a few pixels past its core into the neighbouring chunks, each of which a
    # commit decodes, paints and re-encodes whole; 512^2 chunks halve that traffic against 1024^2 ones
    # (256^2: more per-chunk overhead than it saves)
    ch = int(min(max(256, chunk), LABEL_CHUNK))
    root = zarr.open_group(str(zpath), mode="a", zarr_format=3)
    g = root.require_group(NAME)
    if "0" in g:
        a = g["0"]
        if tuple(a.shape) != tuple(shape) or a.dtype != np.uint32:
            raise ValueError(
                f"{zpath}: existing label array has shape {a.shape} and dtype {a.dtype}, "
                f"expected {shape} uint32"
            )
        return a
    return g.create_array(
        "0", shape=tuple(shape), chunks=(ch, ch), dtype="uint32", fill_value=0, dimension_names=("y", "x")
    )


def read_label_array(zpath, level: int = 0):
    """A level of the label image of a run's ``labels.zarr`` (a zarr array)."""
    import zarr

    return zarr.open_group(str(zpath), mode="r")[NAME][str(level)]


class LabelWriter:
    """Commits tiles' nuclei to the label array, in tile order, assigning the running ids."""

    def __init__(self, array, next_id: int = 1):
        self.array = array
        self.next_id = int(next_id)
        self.duplicates = 0

    def commit(self, patch, n: int):
        """Paint the ``n`` local nuclei of ``patch = (row, col, local)``; return ``(ids, label_px, keep)``:
        the ids of the kept nuclei, their pixel counts in the label image, and which local nuclei were
        kept (the others are duplicates, see the module docstring)."""
        if patch is None or n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(n, bool)
        pr, pc, local = patch
        hh, ww = local.shape
        region = self.array[pr : pr + hh, pc : pc + ww]
        first = self.next_id
        stale = region >= first  # left by an interrupted earlier attempt at this very tile
        if stale.any():
            region[stale] = 0
        # the pixels already taken are few (where neighbouring tiles' nuclei overlap this tile's): count
        # what each nucleus loses there instead of gathering its free pixels
        own_px = np.bincount(local.ravel(), minlength=n + 1)[1:]
        taken = region != 0
        lost = np.flatnonzero(taken & (local > 0))
        free_px = own_px - np.bincount(local.ravel()[lost], minlength=n + 1)[1:] if len(lost) else own_px
        keep = 2 * free_px > own_px
        n_keep = int(keep.sum())
        if first + n_keep - 1 > MAX_ID:
            raise OverflowError(f"more than {MAX_ID} nuclei: uint32 label ids exhausted")
        gid = np.zeros(n + 1, np.uint32)  # 0 for the background and the dropped duplicates
        gid[1:][keep] = np.arange(first, first + n_keep, dtype=np.uint32)
        region = np.where(taken, region, gid[local])  # kept nuclei painted on the free pixels
        self.array[pr : pr + hh, pc : pc + ww] = region
        self.next_id += n_keep
        self.duplicates += n - n_keep
        return gid[1:][keep].astype(np.int64), free_px[keep].astype(np.int64), keep


NGFF_VERSION = "0.5"
_AXES = [
    {"name": "y", "type": "space", "unit": "micrometer"},
    {"name": "x", "type": "space", "unit": "micrometer"},
]


def ngff_label_image_attrs(datasets: list) -> dict:
    """The ``ome`` attributes of the label image group: its multiscales (``datasets``: path and scale of
    each level) and image-label."""
    return {
        "version": NGFF_VERSION,
        "multiscales": [{"datasets": datasets, "name": NAME, "axes": _AXES}],
        "image-label": {"version": NGFF_VERSION},
    }


def finalise_labels(
    zpath: Path, working_mpp: float, *, factor: int = 2, min_size: int = 256, block: int = 2048
):
    """Build the pyramid levels (every ``factor``-th pixel, block by block) and write the NGFF metadata
    (as ome-zarr-py writes it). Returns the level shapes."""
    import zarr

    root = zarr.open_group(str(zpath), mode="a", zarr_format=3)
    g = root[NAME]
    for k in [k for k in g.array_keys() if k != "0"]:
        del g[k]
    shapes = [tuple(g["0"].shape)]
    lvl = 0
    while max(shapes[-1]) > min_size:
        prev = g[str(lvl)]
        ph, pw = prev.shape
        hh, ww = -(-ph // factor), -(-pw // factor)
        ch = min(prev.chunks[0], max(hh, ww))
        cur = g.create_array(
            str(lvl + 1),
            shape=(hh, ww),
            chunks=(ch, ch),
            dtype="uint32",
            fill_value=0,
            dimension_names=("y", "x"),
        )
        step = max(block // factor, 1)
        for r in range(0, hh, step):
            for c in range(0, ww, step):
                src = prev[
                    r * factor : (r + step) * factor : factor, c * factor : (c + step) * factor : factor
                ]
                cur[r : r + src.shape[0], c : c + src.shape[1]] = src
        lvl += 1
        shapes.append((hh, ww))
    # the NGFF 0.5 metadata exactly as ome-zarr-py's writer puts it (write_multiscales_metadata,
    # add_metadata, write_label_metadata; tests/test_slide_outputs.py compares the two), written whole
    # (a resumed run must not list the label twice) without importing ome_zarr (0.5-0.7 s)
    datasets = [
        {
            "path": str(i),
            "coordinateTransformations": [
                {"type": "scale", "scale": [working_mpp * factor**i, working_mpp * factor**i]}
            ],
        }
        for i in range(len(shapes))
    ]
    g.attrs["ome"] = ngff_label_image_attrs(datasets)
    root.attrs["ome"] = {"version": NGFF_VERSION, "labels": [NAME]}
    return shapes
