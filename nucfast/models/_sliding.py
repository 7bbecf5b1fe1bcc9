"""The one sliding-window helper: a dense network over an image of any size, in overlapping tiles.

Used by single-image inference (``Model.predict`` -> ``segment_image``, ``evaluate``), training validation
(``nucfast.train``) and the slide engine's segmenters, so that every entry point tiles the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["sliding_window", "pad_to_multiple", "dihedral_average"]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (..., C, H, W) at the bottom/right to a multiple of ``multiple``: reflect where the pad is smaller
    than the side (reflect's requirement), replicate otherwise."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    squeeze = x.ndim == 3
    y = F.pad(x[None] if squeeze else x, (0, pw, 0, ph), mode=mode)
    return y[0] if squeeze else y


def sliding_window(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    tile: int = 1024,
    overlap: int = 64,
    multiple: int = 1,
) -> torch.Tensor:
    """``f`` over one image ``x`` (C, H, W) -> (K, H, W).

    ``f`` maps a batch (1, C, h, w) to (1, K, h, w). Each window is padded to a multiple of ``multiple``
    (:func:`pad_to_multiple`; the network's total stride) and cropped back. An image up to ``tile`` on both
    sides runs whole; a larger one runs in windows of up to ``tile`` px with at least ``overlap`` px of
    context each side of the part kept (none beyond the image border). Every window starts at a multiple
    of ``multiple``: a strided network is translation-equivariant only by multiples of its stride, so this
    is what makes the result equal the slide engine's, whose tiles start there too (the last window is
    shorter rather than shifted inwards off the grid). ``tile`` must leave each window at least a third
    of its side to keep, which bounds the work to 9x that of non-overlapping windows.
    """
    if x.ndim != 3:
        raise ValueError(f"x must be (C, H, W), got shape {tuple(x.shape)}")
    tile, overlap, multiple = int(tile), int(overlap), int(multiple)
    if overlap < 0 or multiple < 1:
        raise ValueError(f"overlap must be >= 0 and multiple >= 1, got {overlap}, {multiple}")
    # kept rows [r0, r0 + step) of the window [r0 - overlap floored to the grid, + tile)
    def kept(t: int) -> int:
        return (t - 2 * overlap - (multiple - 1)) // multiple * multiple

    step = kept(tile)
    if step <= 0 or 3 * step < tile:
        least = next(t for t in range(1, 8 * (overlap + multiple) + 2) if kept(t) > 0 and 3 * kept(t) >= t)
        raise ValueError(
            f"tile must be at least {least} px (overlap {overlap} px each side, stride {multiple}: each "
            f"window keeps at least a third of its side), got tile={tile}"
        )
    _, h, w = x.shape

    def run(z: torch.Tensor) -> torch.Tensor:
        zh, zw = z.shape[-2:]
        return f(pad_to_multiple(z, multiple)[None])[0, :, :zh, :zw]

    if h <= tile and w <= tile:
        return run(x)
    out = None
    for r0 in range(0, h, step):
        for c0 in range(0, w, step):
            rs, cs = (max(v - overlap, 0) // multiple * multiple for v in (r0, c0))
            p = run(x[:, rs : rs + tile, cs : cs + tile])
            if out is None:
                out = torch.zeros((p.shape[0], h, w), dtype=p.dtype, device=p.device)
            re, ce = min(r0 + step, h), min(c0 + step, w)
            out[:, r0:re, c0:ce] = p[:, r0 - rs : re - rs, c0 - cs : ce - cs]
    return out


_DIHEDRAL = [(k, f) for f in (False, True) for k in range(4)]


def _tf(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, k, (-2, -1))


def _tf_inv(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, -k, (-2, -1))
    return x.flip(-1) if flip else x


def dihedral_average(f, x: torch.Tensor) -> torch.Tensor:
    """Mean of ``f`` over the 8 flips/rotations of ``x`` (..., H, W), each output mapped back."""
    acc = None
    for k, fl in _DIHEDRAL:
        p = _tf_inv(f(_tf(x, k, fl).contiguous()), k, fl)
        acc = p if acc is None else acc + p
    return acc / len(_DIHEDRAL)
