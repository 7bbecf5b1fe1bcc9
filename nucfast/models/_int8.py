"""The int8 graph of a segmentation network, as the model layer uses it (``NUCFAST_CPU_PRECISION``,
:func:`nucfast.models.cpu_precision`): where it lives, its provenance check and a runner for
``Kind.predict``. Made by ``nucfast quantize`` (:mod:`nucfast.engines._quantize`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["INT8_SUFFIX", "Int8Net", "graph_info", "int8_path", "load_int8"]

INT8_SUFFIX = ".int8.onnx"
META_KEY = "nucfast"


def int8_path(model) -> Path | None:
    """Where the int8 graph of a loaded model lives: beside its weights file (None for untrained models)."""
    p = getattr(model, "path", None)
    return None if p is None else Path(p).with_name(Path(p).stem + INT8_SUFFIX)


def graph_info(data: bytes) -> dict:
    """The ``nucfast`` metadata of an int8 graph (weights sha256, calibration, what is quantised)."""
    import onnx

    g = onnx.load_from_string(data)
    for p in g.metadata_props:
        if p.key == META_KEY:
            return json.loads(p.value)
    return {}


def load_int8(model) -> bytes:
    """The int8 graph of ``model`` (bytes), checked to be made from the same weights."""
    p = int8_path(model)
    hint = f"make one with `nucfast quantize --model {model.name} --data DIR`"
    if p is None or not p.is_file():
        raise FileNotFoundError(
            f"NUCFAST_CPU_PRECISION=int8: model {model.name!r} has no int8 graph ({p}); {hint}"
        )
    data = p.read_bytes()
    try:
        info = graph_info(data)
    except Exception as e:  # onnx raises DecodeError and others for damaged files
        raise ValueError(f"{p}: not a readable ONNX graph ({type(e).__name__}: {e}); {hint}") from e
    if info.get("weights_sha256") != model.sha256:
        raise ValueError(
            f"{p} was quantised from other weights (sha256 {info.get('weights_sha256')}, model "
            f"{model.name!r} has {model.sha256}); {hint}"
        )
    return data


class Int8Net(nn.Module):
    """The int8 graph as a drop-in for the network in ``Kind.predict``: ``(x (N, 3, H, W), se_gates)`` ->
    float32 logits, run by onnxruntime on the CPU (intra-op threads = torch's at creation)."""

    def __init__(self, data: bytes):
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, x: torch.Tensor, se_gates: torch.Tensor | None = None) -> torch.Tensor:
        feeds = {self.names[0]: x.detach().float().contiguous().cpu().numpy()}
        if se_gates is not None:
            feeds[self.names[1]] = se_gates.detach().float().cpu().numpy()
        (y,) = self.session.run(None, feeds)
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
