"""Fused Reinhard normalisation of uint8 RGB (``nucfast::reinhard_u8``, CPU + CUDA, one pass).

The op computes exactly what :meth:`nucfast.stain.ReinhardNormalizer.transform` computes with frozen
source statistics (sRGB -> CIE-LAB -> ``(lab - mu_src) / sd_src * sd_tgt + mu_tgt`` -> sRGB, clipped),
straight from the uint8 pixels to a float32 (3, H, W) image, with no intermediate images. Constants (the
sRGB table of the 256 byte values, the XYZ matrices with the D65 white folded in) come from
:mod:`nucfast.stain`, so there is one definition of the colour space.
"""

from __future__ import annotations

import torch

from ._backend import as_tensor, ops

__all__ = ["reinhard_u8", "reinhard_params"]

_N_PARAMS = 280  # csrc/kernels/reinhard.h kParams


def reinhard_params(xyz_from_rgb, rgb_from_xyz, white, scale, shift, device) -> torch.Tensor:
    """The op's float32 parameter vector: sRGB->linear table (256), RGB->XYZ / white (9), XYZ * white ->
    RGB (9), LAB scale (3) and shift (3)."""
    v = torch.arange(256, dtype=torch.float64) / 255.0
    lut = torch.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)
    fwd = (xyz_from_rgb / white[:, None]).reshape(-1)
    inv = (rgb_from_xyz * white[None, :]).reshape(-1)
    p = torch.cat([lut, fwd, inv, torch.as_tensor(scale, dtype=torch.float64).reshape(3),
                   torch.as_tensor(shift, dtype=torch.float64).reshape(3)])  # fmt: skip
    assert p.numel() == _N_PARAMS
    return p.to(device=device, dtype=torch.float32)


def reinhard_u8(rgb, params: torch.Tensor):
    """Normalise a uint8 RGB(A) image (H, W, 3|4) to float32 (3, H, W) in [0, 1] with ``params``
    (:func:`reinhard_params`; on the image's device). numpy in -> numpy out, a tensor -> a tensor on its
    device."""
    t, back = as_tensor(rgb, "rgb", ndim=3, dtypes=(torch.uint8,))
    if t.shape[2] not in (3, 4):
        raise ValueError(f"rgb must be (H, W, 3) or (H, W, 4), got shape {tuple(t.shape)}")
    if t.requires_grad:
        raise ValueError("rgb: uint8 images carry no gradient")
    return back(ops.reinhard_u8(t, params.to(t.device)))


@torch.library.register_fake("nucfast::reinhard_u8")
def _reinhard_u8_fake(rgb, params):
    return rgb.new_empty((3, rgb.shape[0], rgb.shape[1]), dtype=torch.float32)
