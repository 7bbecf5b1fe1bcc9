"""ONNX export of the tile models (PathologyGAN encoder and generator), next to :func:`export_onnx` of the
segmentation networks: the same opset, the legacy TorchScript exporter, a dynamic batch axis.

- encoder: ``image`` float32 (N, 3, S, S) in [0, 1] -> ``latent`` float32 (N, d). The window side S is fixed
  (the encoder ends in a dense layer); :func:`nucfast.embed_tiles` cuts tiles into such windows.
- generator: ``w`` float32 (N, w_dim) -> ``image`` float32 (N, 3, S, S) in [0, 1]; the per-pixel noise is
  drawn inside the graph (RandomNormalLike), so two runs of one w differ only in the noise, as in torch.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..models import Model, load
from ..models.pathgan import PathGANEncoder, PathGANGenerator, without_spectral_norm
from ._onnx import DEFAULT_OPSET

__all__ = ["export_tile_onnx"]


class _Synthesis(nn.Module):
    def __init__(self, net: PathGANGenerator):
        super().__init__()
        self.net = net

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.net.synthesis(w)


def export_tile_onnx(model, path=None, *, opset: int = DEFAULT_OPSET) -> bytes:
    """Export a PathologyGAN encoder or generator (a module, a model name such as ``"pathgan_encoder"`` /
    ``"pathgan"``, a weights file or a :class:`nucfast.models.Model`) to ONNX; returns the bytes and writes
    them atomically to ``path`` when given."""
    if isinstance(model, Model):
        net = model.net
    else:
        net = model if isinstance(model, nn.Module) else load(model).net
    if not isinstance(net, PathGANEncoder | PathGANGenerator):
        what = type(net).__name__
        raise ValueError(f"export_tile_onnx exports PathologyGAN encoders / generators, got {what}")
    net = without_spectral_norm(net).cpu().float()  # W / sigma as plain weights: no vdot in the graph
    if isinstance(net, PathGANEncoder):
        wrapper, x, names = net, torch.rand(2, 3, net.size, net.size), (["image"], ["latent"])
    else:
        wrapper, x, names = _Synthesis(net).eval(), torch.randn(2, net.w_dim), (["w"], ["image"])
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's legacy-path warnings
        torch.onnx.export(
            wrapper,
            (x,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=names[0],
            output_names=names[1],
            dynamic_axes={names[0][0]: {0: "batch"}, names[1][0]: {0: "batch"}},
            do_constant_folding=True,
        )
    data = buf.getvalue()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return data
