"""int8 CPU inference (issue 9): static QDQ quantisation with onnxruntime, calibrated on tissue tiles.

``quantize_int8(model, data_dir)`` exports the network's logits graph (USE-Net: with the frozen
squeeze-excitation gates as an input), calibrates activation ranges (min/max) on stain-normalised tissue
crops of the training images (never the validation images named in the weights' metadata), each with the
gates fitted on its own image as the slide engine does, and quantises every op onnxruntime can (weights
int8 per channel, activations uint8) in QDQ form: quantising only the convolutions left so many
float <-> int8 transitions that it ran 1.07x fp32; everything gives 1.38x (one 1024² tile, one thread).
The output head (the convolution that writes the graph's output) stays float32: quantised logits would put
the 0.5 probability thresholds on a coarse grid of the logit range. The graph carries the sha256 of the
weights it was made from; :func:`load_int8` refuses a graph of other weights.

The shipped graph (``nucfast/weights/<weights stem>.int8.onnx``) is made by
``nucfast quantize --model usenet --data ../shared/data/monuseg_train``; it runs on the CPU with
``NUCFAST_CPU_PRECISION=int8`` and by default on CPUs without AMX (:func:`nucfast.models.cpu_precision`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._onnx import export_onnx

__all__ = ["INT8_SUFFIX", "Int8Net", "int8_path", "load_int8", "quantize_int8"]

INT8_SUFFIX = ".int8.onnx"
_META_KEY = "nucfast"


def int8_path(model) -> Path | None:
    """Where the int8 graph of a loaded model lives: beside its weights file (None for untrained models)."""
    p = getattr(model, "path", None)
    return None if p is None else Path(p).with_name(Path(p).stem + INT8_SUFFIX)


def calibration_feeds(model, data_dir, *, images: int = 24, crops: int = 2, size: int = 256, seed: int = 0):
    """Network inputs for calibration: ``crops`` random ``size``-px crops (on the 32-px grid) of each of the
    first ``images`` training images of ``data_dir`` (MoNuSeg layout), Reinhard-normalised with the
    image's own tissue statistics, with the SE gates fitted on the same sample."""
    from .._segment import _tissue_sample
    from ..datasets import list_names, read_rgb

    val = set(model.meta.get("val_names", []))
    names = [n for n in list_names(Path(data_dir)) if n not in val][:images]
    if not names:
        raise ValueError(f"no training images (NAME.png + NAME_inst.tif, not validation) in {data_dir}")
    rng = np.random.default_rng(seed)
    feeds = []
    for n in names:
        rgb = np.array(read_rgb(Path(data_dir) / f"{n}.png")[..., :3])  # a writable copy
        ctx = model.fit_context(_tissue_sample(rgb, model.mpp))
        x = ctx.normalize_u8(torch.from_numpy(rgb)).numpy()
        H, W = x.shape[1:]
        for _ in range(crops):
            r = int(rng.integers(0, max(H - size, 0) + 1)) // 32 * 32
            c = int(rng.integers(0, max(W - size, 0) + 1)) // 32 * 32
            f = {"image": np.ascontiguousarray(x[None, :, r : r + size, c : c + size])}
            f.update({k: v.numpy().astype(np.float32) for k, v in ctx.inputs.items()})
            feeds.append(f)
    return feeds, names


def quantize_int8(model, data_dir, path=None, *, images: int = 24, crops: int = 2, size: int = 256,
                  ops=None) -> bytes:  # fmt: skip
    """The int8 QDQ graph of a segmentation model (module docstring); written to ``path`` when given."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if model.task != "segmentation" or model.net is None or model.sha256 is None:
        raise ValueError(f"model {model.name!r}: only trained segmentation networks are quantised")
    se = getattr(model.net, "n_se_gates", 0) > 0
    feeds, names = calibration_feeds(model, data_dir, images=images, crops=crops, size=size)

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory(prefix="nucfast_int8_") as d:
        fp32, pre, out = Path(d) / "fp32.onnx", Path(d) / "pre.onnx", Path(d) / "int8.onnx"
        export_onnx(model.net, fp32, output="logits", se_gates=se)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
        g = onnx.load(str(pre))
        head = _head_convs(g)
        quantize_static(
            str(pre),
            str(out),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=list(ops) if ops else None,
            nodes_to_exclude=head,
        )
        q = onnx.load(str(out))
    info = {
        "weights_sha256": model.sha256,
        "model": model.name,
        "output": "logits",
        "calibration": f"min/max over {len(feeds)} {size}-px stain-normalised crops of {len(names)} training "
        f"images of {Path(data_dir).name} (validation images excluded), SE gates fitted per image",
        "quantized": "every op onnxruntime quantises (weights int8 per channel, activations uint8, QDQ); "
        "the output head stays float32",
    }
    entry = q.metadata_props.add()
    entry.key, entry.value = _META_KEY, json.dumps(info)
    data = q.SerializeToString()
    if path is not None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return data


def _head_convs(g) -> list[str]:
    """Names of the Conv nodes that write the graph's outputs (through Cast / Identity only)."""
    producer = {o: n for n in g.graph.node for o in n.output}
    heads = []
    for out in g.graph.output:
        n = producer.get(out.name)
        while n is not None and n.op_type in ("Cast", "Identity"):
            n = producer.get(n.input[0])
        if n is not None and n.op_type == "Conv":
            heads.append(n.name)
    if not heads:
        raise ValueError("cannot find the output convolution of the graph (it stays float32)")
    return heads


def graph_info(data: bytes) -> dict:
    import onnx

    g = onnx.load_from_string(data)
    for p in g.metadata_props:
        if p.key == _META_KEY:
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
        raise ValueError(f"{p} was quantised from other weights (sha256 {info.get('weights_sha256')}, "
                         f"model {model.name!r} has {model.sha256}); {hint}")  # fmt: skip
    return data


class Int8Net(nn.Module):
    """The int8 graph as a drop-in for the network in ``Kind.predict``: ``(x (N, 3, H, W), se_gates)`` ->
    float32 logits, run by onnxruntime on the CPU (one intra-op thread per torch thread)."""

    def __init__(self, data: bytes, *, threads: int | None = None):
        super().__init__()
        from ._backends import OnnxRuntimeBackend

        self.backend = OnnxRuntimeBackend(data, intra_op_threads=threads)

    def forward(self, x: torch.Tensor, se_gates: torch.Tensor | None = None) -> torch.Tensor:
        inputs = {} if se_gates is None else {self.backend.extra_inputs[0]: se_gates}
        return self.backend.run(x.float().contiguous(), **inputs)


def int8_backend(model, *, threads: int | None = None):
    """A :class:`nucfast.engines.Backend` (probabilities out, like the others) on the int8 graph."""
    from ._backends import OnnxRuntimeBackend

    class _Int8Backend(OnnxRuntimeBackend):
        name = "onnxruntime-cpu-int8"

        def run(self, batch, **inputs):
            return torch.sigmoid(super().run(batch, **inputs))

    return _Int8Backend(load_int8(model), intra_op_threads=threads)
