"""int8 CPU inference (issue 9): static QDQ quantisation with onnxruntime, calibrated on tissue tiles.

``quantize_int8(model, feeds)`` exports the network's logits graph (USE-Net: with the frozen
squeeze-excitation gates as an input), calibrates activation ranges (min/max) on stain-normalised tissue
crops of the training images (never the validation images named in the weights' metadata), each with the
gates fitted on its own image as the slide engine does, and quantises every op onnxruntime can (weights
int8 per channel, activations uint8) in QDQ form: quantising only the convolutions left so many
float <-> int8 transitions that it ran 1.07x fp32; everything gives 1.38x (one 1024² tile, one thread).
The output head (the convolution that writes the graph's output) stays float32: quantised logits would put
the 0.5 probability thresholds on a coarse grid of the logit range. The graph carries the sha256 of the
weights it was made from; :func:`nucfast.models._int8.load_int8` refuses a graph of other weights.

The shipped graph (``nucfast/weights/<weights stem>.int8.onnx``) is made by
``nucfast quantize --model usenet --data ../shared/data/monuseg_train``; it runs on the CPU with
``NUCFAST_CPU_PRECISION=int8`` and by default on CPUs without AMX (:func:`nucfast.models.cpu_precision`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from ..models._int8 import META_KEY, load_int8
from ._backends import OnnxRuntimeBackend
from ._onnx import export_onnx

__all__ = ["int8_backend", "quantize_int8"]


def quantize_int8(model, feeds: list[dict], path=None, *, calibration: str = "", ops=None) -> bytes:
    """The int8 QDQ graph of a segmentation model (module docstring), calibrated on ``feeds`` (network
    inputs: ``image`` (1, 3, h, w) float32 and the model's extra inputs, e.g. ``se_gates``;
    :func:`nucfast._segment.calibration_feeds`); written to ``path`` when given."""
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
    if not feeds:
        raise ValueError("quantize_int8: no calibration inputs")
    se = getattr(model.net, "n_se_gates", 0) > 0

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
        "calibration": f"min/max over {len(feeds)} inputs: {calibration}",
        "quantized": "every op onnxruntime quantises (weights int8 per channel, activations uint8, QDQ); "
        "the output head stays float32",
    }
    entry = q.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(info)
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


def int8_backend(model, *, threads: int | None = None):
    """A :class:`nucfast.engines.Backend` (probabilities out, like the others) on the int8 graph."""
    class _Int8Backend(OnnxRuntimeBackend):
        name = "onnxruntime-cpu-int8"

        def run(self, batch, **inputs):
            return torch.sigmoid(super().run(batch, **inputs))

    return _Int8Backend(load_int8(model), intra_op_threads=threads)
