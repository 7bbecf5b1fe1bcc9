"""MoNuSeg-layout image folders (``NAME.png`` + ``NAME_inst.tif``): listing, reading, image-level split.

Shared by evaluation (:func:`nucfast.evaluate`) and training (:mod:`nucfast.train`); below both layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["list_names", "read_rgb", "read_labels", "split_names"]


def list_names(data_dir) -> list[str]:
    """Sorted image names ``NAME`` for which both ``NAME.png`` and ``NAME_inst.tif`` exist."""
    d = Path(data_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"data_dir {d} is not a directory")
    names = sorted(
        p.name[: -len("_inst.tif")] for p in d.glob("*_inst.tif") if (d / (p.name[:-9] + ".png")).exists()
    )
    if not names:
        raise FileNotFoundError(f"no NAME.png + NAME_inst.tif pairs in {d}")
    return names


def read_rgb(path) -> np.ndarray:
    from PIL import Image  # optional dependency (the slide extra), not needed to import nucfast

    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def read_labels(path) -> np.ndarray:
    import tifffile  # optional dependency (the slide extra)

    return np.ascontiguousarray(tifffile.imread(str(path))).astype(np.int32)


def split_names(
    names: list[str], *, n_val: int, seed: int, keep_in_train: tuple[str, ...] = ()
) -> tuple[list, list]:
    """Image-level split: a seeded permutation of the sorted names; the first ``n_val`` (not in
    ``keep_in_train``) are validation. Returns (train, val), each sorted."""
    names = sorted(names)
    if not 0 <= n_val < len(names):
        raise ValueError(f"n_val must be in [0, {len(names)}), got {n_val}")
    perm = np.random.default_rng(seed).permutation(len(names))
    cand = [names[i] for i in perm if names[i] not in keep_in_train]
    val = sorted(cand[:n_val])
    train = sorted(n for n in names if n not in val)
    return train, val
