"""ONNX export of the nucfast networks, and its validation against torch with onnxruntime.

Exporter and opset: the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) at opset 17.
The torch.export-based exporter needs ``onnxscript`` (not a dependency here) and the TorchScript one traces
these plain CNNs exactly, including the decoder's "resize to the skip's size" (traced as Shape -> Slice ->
Resize with ``align_corners``), so height and width stay symbolic. Opset 17 is the newest opset that every
consumer we target parses fully and has been stable in for years: onnxruntime (>= 1.14), TensorRT (>= 8.6)
and TensorRT-RTX; nothing in these networks needs a newer operator (Conv, BatchNorm folded into Conv,
Relu, MaxPool, GlobalAveragePool/ReduceMean, Gemm/MatMul, Sigmoid, Mul, Add, Concat, Resize, Cast).

The exported graph takes ``image`` float32 (N, 3, H, W) in [0, 1] with N, H and W dynamic, and returns
``probabilities`` float32 (N, C, H, W) (the network's logits through its output activation: independent
sigmoids for USE-Net) or, with ``output="logits"``, the raw logits. ``precision="fp16"`` exports the network
in float16 with float32 inputs/outputs (Casts at both ends): what a strongly typed TensorRT(-RTX) build needs
to run in half precision.

Nucleus-embedding networks (Nuc2Vec) export with ``image`` (N, 3, w, w) in [0, 1] at their fixed window
``w`` (N dynamic) and output ``embedding`` float32 (N, d), unit L2 norm (``output`` is ignored for them).
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from .. import models
from ..models.attention import IMAGENET_MEAN, IMAGENET_STD, AttentionNet
from ..models.nuc2vec import Nuc2Vec

__all__ = [
    "DEFAULT_OPSET",
    "MODELS",
    "SE_GATES_NAME",
    "InferenceWrapper",
    "cached_onnx",
    "export_onnx",
    "load_model",
    "onnx_sha256",
]

DEFAULT_OPSET = 17
INPUT_NAME = "image"
#: Optional second input of USE-Net graphs (``export_onnx(..., se_gates=True)``): frozen squeeze-excitation
#: gates (n_se_gates,), fitted per image or slide on a tissue sample, so one graph / engine serves every
#: slide and the output does not depend on the tile (nucfast.models.USENet.fit_se_gates).
SE_GATES_NAME = "se_gates"
OUTPUTS = ("probabilities", "logits")
EMBEDDING_OUTPUT = "embedding"


def _untrained(name: str) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        return models.load(name, pretrained=False).net.eval()

    return make


#: Untrained network factories by model name (:func:`nucfast.models.names`); ``load_model`` gives the
#: shipped weights where a name has them. Deprecated: use ``nucfast.models.load(name, pretrained=False)``.
MODELS: dict[str, Callable[[], nn.Module]] = {
    n: _untrained(n) for n in models.names() if models.kinds()[models.spec(n).kind].build is not None
}


def load_model(model: str | os.PathLike) -> nn.Module:
    """A network in eval mode (a private copy) from a model name (:func:`nucfast.models.names`: the
    shipped weights where the name has them, else an untrained network) or a weights file
    (``.safetensors``, read without unpickling)."""
    m = models.load(model)
    if m.net is None:
        raise ValueError(f"model {m.name!r} has no network to export")
    return (copy.deepcopy(m.net) if m.path is not None else m.net).eval()


_ONNX_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[bool, bytes]] = weakref.WeakKeyDictionary()
_ONNX_LOCK = threading.Lock()


def cached_onnx(net: nn.Module, *, se_gates: bool = False) -> bytes:
    """:func:`export_onnx` of ``net`` (defaults, ``se_gates`` as given), exported once per network object:
    a loaded model is shared, so every segmenter of the same weights reuses one export."""
    with _ONNX_LOCK:
        per = _ONNX_CACHE.setdefault(net, {})
        if se_gates not in per:
            per[se_gates] = export_onnx(net, se_gates=se_gates)
        return per[se_gates]


class _AttentionLogits(nn.Module):
    """Attention network F as a logits model for export: ImageNet normalisation inside the graph, then
    ``r (a - running_tau)`` so that the output sigmoid gives the paper's A with the trained running tau
    (inference never uses a batch percentile: REFERENCE.md section 1). A network that never trained has
    running_tau = 0 (exported as is, so random-init exports work)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.net.logits((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
        head = self.net.head
        return head.r * (a - head.running_tau.to(a.dtype))


def _logits_module(model: nn.Module) -> nn.Module:
    return _AttentionLogits(model) if isinstance(model, AttentionNet) else model


class InferenceWrapper(nn.Module):
    """What every backend runs: float32 image in [0, 1] -> float32 probabilities (or logits).

    ``half=True`` runs the wrapped network in float16 between a cast of the input and a cast of the output.
    USE-Net: ``model`` returns logits, the output is their sigmoid (mask, marker). Attention network F: the
    output is A = sigmoid(r (a - running_tau)) of the ImageNet-normalised input (``logits``: r (a - tau)).
    """

    def __init__(self, model: nn.Module, *, output: str = "probabilities", half: bool = False):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.model = _logits_module(model)
        self.output = output
        self.half = half

    def forward(self, image: torch.Tensor, se_gates: torch.Tensor | None = None) -> torch.Tensor:
        x = image.half() if self.half else image
        y = self.model(x) if se_gates is None else self.model(x, se_gates)
        if self.output == "probabilities" and not isinstance(self.model, Nuc2Vec):
            y = torch.sigmoid(y)
        return y.float()


def _check_sample_shape(sample_shape: Sequence[int]) -> tuple[int, int, int, int]:
    shp = tuple(int(s) for s in sample_shape)
    if len(shp) != 4 or shp[1] != 3 or min(shp) < 1:
        raise ValueError(f"sample_shape must be (N, 3, H, W) with positive sizes, got {tuple(sample_shape)}")
    return shp  # type: ignore[return-value]


def export_onnx(
    model: nn.Module | str | os.PathLike,
    path: str | os.PathLike | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    precision: str = "fp32",
    output: str = "probabilities",
    sample_shape: Sequence[int] = (1, 3, 64, 64),
    se_gates: bool = False,
) -> bytes:
    """Export a network to ONNX with dynamic batch, height and width.

    Parameters
    ----------
    model : nn.Module or str or path
        The network (returning logits), a model name (:func:`nucfast.models.names`) or a weights file.
    path : path, optional
        Where to write the ``.onnx`` file (atomically); the bytes are returned in any case.
    opset : int
        ONNX opset (default 17, see the module docstring for why).
    precision : {"fp32", "fp16"}
        ``"fp16"``: the network computes in float16; inputs and outputs stay float32.
    output : {"probabilities", "logits"}
        Whether the graph ends with the network's sigmoid.
    sample_shape : (N, 3, H, W)
        Shape of the tracing input (any valid size: the axes are dynamic).
    se_gates : bool
        USE-Net only: a second input ``se_gates`` float32 (n_se_gates,) with frozen squeeze-excitation gates
        (:data:`SE_GATES_NAME`); the slide engine and ``segment_image`` feed the gates fitted on a tissue
        sample, so tiles of any size give the same probabilities.

    Returns
    -------
    bytes
        The serialized ONNX model (input ``image`` [+ ``se_gates``], output ``probabilities`` or ``logits``).
    """
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32' or 'fp16' for ONNX export, got {precision!r}")
    if not isinstance(opset, int) or not 11 <= opset <= 20:
        raise ValueError(f"opset must be an int in [11, 20] (align_corners Resize needs >= 11), "
                         f"got {opset!r}")
    net = model if isinstance(model, nn.Module) else load_model(model)
    embedding = isinstance(net, Nuc2Vec)
    if embedding:  # a fixed window; only the batch is dynamic
        sample_shape = (int(sample_shape[0]), 3, net.window, net.window)
    shp = _check_sample_shape(sample_shape)
    net = copy.deepcopy(net).eval().cpu()
    net = net.half() if precision == "fp16" else net.float()
    wrapper = InferenceWrapper(net, output=output, half=precision == "fp16").eval()
    x = torch.rand(shp, generator=torch.Generator().manual_seed(0))
    args: tuple = (x,)
    names = [INPUT_NAME]
    if se_gates:
        n = getattr(net, "n_se_gates", 0)
        if not n:
            raise ValueError("se_gates=True needs a network with squeeze-excitation gates (USE-Net)")
        args, names = (x, torch.full((n,), 0.5)), [INPUT_NAME, SE_GATES_NAME]
    buf = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    out_axes = axes
    if embedding:
        output, axes, out_axes = EMBEDDING_OUTPUT, {0: "batch"}, {0: "batch"}
    with warnings.catch_warnings():
        # the TorchScript exporter warns that it is the legacy path, and about shape ops becoming constants
        # (it traces them as Shape ops; the dynamic-size tests prove the graph is not shape-specialised)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=names,
            output_names=[output],
            dynamic_axes={INPUT_NAME: axes, output: out_axes},
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


def onnx_sha256(onnx: bytes | str | os.PathLike) -> str:
    """sha256 hex digest of an ONNX model's bytes (the engine cache's model key)."""
    data = onnx if isinstance(onnx, bytes | bytearray) else Path(onnx).read_bytes()
    return hashlib.sha256(data).hexdigest()
