"""Nucleus embeddings of one image or tile: ``embed_nuclei(rgb, labels)`` -> ``(ids, embeddings)``."""

from __future__ import annotations

import numpy as np
import torch

from . import models
from ._backend import as_tensor, same_device
from .models.nuc2vec import embed_labels

__all__ = ["embed_nuclei"]

_LABEL_DTYPES = (torch.uint8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32)


def _as_rgb(rgb) -> tuple[torch.Tensor, bool]:
    """(3, H, W) uint8 or float32 tensor on rgb's device, and whether rgb was numpy."""
    t, _ = as_tensor(rgb, "rgb", ndim=3)
    is_np = isinstance(rgb, np.ndarray)
    if t.shape[-1] in (3, 4) and t.dtype == torch.uint8:
        return t[..., :3].permute(2, 0, 1), is_np
    if t.shape[0] == 3 and t.is_floating_point():
        if not torch.isfinite(t).all():
            raise ValueError("rgb contains NaN or infinite values")
        return t.float().clamp(0, 1), is_np
    raise ValueError(
        f"rgb must be uint8 (H, W, 3) or float (3, H, W) in [0, 1], got {tuple(t.shape)} {t.dtype}"
    )


@torch.no_grad()
def embed_nuclei(rgb, labels, *, model="nuc2vec", mpp: float = 0.25, batch: int = 512, device=None, ids=None):
    """One L2-normalised vector per nucleus (Nuc2Vec, :mod:`nucfast.models.nuc2vec`).

    Parameters
    ----------
    rgb : uint8 array/tensor (H, W, 3) (RGBA: alpha ignored) or float tensor (3, H, W) in [0, 1]
        The image or tile, any size. Nuclei near its border see the ImageNet mean colour outside it: give
        tiles a halo of at least ``Model.halo`` px (8 um at 0.25 um/px) so their windows are complete.
    labels : integer array/tensor (H, W)
        Instance labels (0 = background), e.g. from :func:`nucfast.segment_image`; same kind as ``rgb``.
    model : a nucleus-embedding model name (``"nuc2vec"``, :func:`nucfast.models.names`), a
        ``.safetensors`` file or a :class:`nucfast.models.Model`.
    mpp : float
        The image's resolution in um/px; the 16 um window is resampled to the network's 0.25 um/px.
    batch : int
        Nuclei per network call (memory: ~50 kB per nucleus at the default network).
    device : where the network runs (default: the tensors' device, CPU for numpy).
    ids : optional integer array/tensor of label values to embed (e.g. the nuclei a slide tile owns, not
        those of its halo); each must be present in ``labels``. Default: every label present.

    Returns
    -------
    ids : (n,) int64, the label values present in ``labels`` (ascending, 0 excluded), or the unique
        values of the ``ids`` argument (ascending)
    embeddings : (n, d) float32, unit L2 norm, row i belongs to ``ids[i]``

    numpy for numpy input, tensors on the input's device for tensor input.

    Examples
    --------
    >>> labels = nucfast.segment_image(rgb)                          # doctest: +SKIP
    >>> ids, emb = nucfast.embed_nuclei(rgb, labels)                 # doctest: +SKIP
    """
    x, is_np = _as_rgb(rgb)
    lab, _ = as_tensor(labels, "labels", ndim=2, dtypes=_LABEL_DTYPES)
    if isinstance(labels, np.ndarray) != is_np:
        raise TypeError("rgb and labels must both be numpy arrays or both torch tensors")
    if tuple(lab.shape) != tuple(x.shape[1:]):
        raise ValueError(f"labels has shape {tuple(lab.shape)} but rgb is {tuple(x.shape[1:])} (H, W)")
    same_device(rgb=x, labels=lab)
    if not (isinstance(mpp, int | float) and np.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number (um/px), got {mpp!r}")
    if not (isinstance(batch, int) and batch >= 1):
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    only = None
    if ids is not None:
        only = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids)
        if only.is_floating_point() or only.dtype == torch.bool or only.ndim != 1:
            raise ValueError(
                f"ids must be a 1-d integer array of label values, got {tuple(only.shape)} {only.dtype}"
            )
    m = models.load(model)
    if m.task != "nucleus-embedding":
        raise ValueError(f"model {m.name!r} is a {m.task} model, not a nucleus-embedding model")
    in_dev = x.device
    dev = torch.device(device) if device is not None else in_dev
    m.to(dev)
    out_ids, emb = embed_labels(
        m.net, x.to(dev), lab.to(dev), mpp=float(mpp), batch=batch, bf16=m.bf16, only=only
    )
    if is_np:
        return out_ids.cpu().numpy(), emb.cpu().numpy()
    return out_ids.to(in_dev), emb.to(in_dev)
