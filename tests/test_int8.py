"""int8 CPU inference (issue 9): the shipped QDQ graph of USE-Net, its precision rule, and its checks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import MONUSEG, monuseg_names

from nucfast import models, segment_image
from nucfast._segment import calibration_feeds
from nucfast.datasets import read_rgb
from nucfast.engines._quantize import quantize_int8
from nucfast.models._int8 import graph_info, int8_path, load_int8
from nucfast.slide.accuracy import detection_scores
from nucfast.slide.segmenters import ModelSegmenter

VAL = sorted(models.load("usenet").meta.get("val_names", []))


def test_shipped_graph_is_of_the_shipped_weights():
    import onnx

    m = models.load("usenet")
    data = load_int8(m)
    info = graph_info(data)
    assert info["weights_sha256"] == m.sha256 and info["output"] == "logits"
    g = onnx.load_from_string(data)
    ops = [n.op_type for n in g.graph.node]
    assert ops.count("QuantizeLinear") > 30 and ops.count("DequantizeLinear") > 30
    producer = {o: n for n in g.graph.node for o in n.output}
    n = producer[g.graph.output[0].name]
    while n.op_type == "Cast":
        n = producer[n.input[0]]
    assert n.op_type == "Conv"  # the head writes float32 logits: its weights and output are not quantised
    init = {t.name: t for t in g.graph.initializer}
    assert n.input[1] not in producer and init[n.input[1]].data_type == onnx.TensorProto.FLOAT


@pytest.mark.skipif(not set(VAL[:1]) <= set(monuseg_names()), reason="MoNuSeg data not available")
def test_int8_nuclei_match_fp32(monkeypatch):
    """Same nuclei as float32 on a validation image (the AJI over all six: 0.5689 both, README)."""
    rgb = read_rgb(MONUSEG / f"{VAL[0]}.png")
    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "fp32")
    m = models.load("usenet")
    assert not m.int8
    ref, p_ref = segment_image(rgb, return_probs=True)
    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "int8")
    assert m.int8 and not m.bf16
    got, p = segment_image(rgb, return_probs=True)
    d = np.abs(p - p_ref)
    assert 0 < d.mean() < 0.01, d.mean()  # it did run the int8 graph, and close to fp32
    s = detection_scores(ref, got, iou_threshold=0.5)
    assert s["f1"] > 0.97, s
    seg = ModelSegmenter("usenet")
    assert seg.backend == "onnxruntime-cpu-int8"


def test_auto_rule(monkeypatch):
    from nucfast.models import _registry

    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "auto")
    m = models.load("usenet")
    monkeypatch.setattr(_registry, "has_amx", lambda: False)
    assert m.int8 and not m.bf16  # no AMX: the int8 graph
    assert not models.load("nuc2vec").int8  # no int8 graph for the other networks
    monkeypatch.setattr(_registry, "has_amx", lambda: True)
    assert not m.int8 and m.bf16  # AMX: torch bf16 (faster here)
    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "int4")
    with pytest.raises(ValueError, match="auto, bf16, fp32 or int8"):
        _ = m.int8


@pytest.mark.skipif(len(monuseg_names()) < 8, reason="MoNuSeg data not available")
def test_quantize_and_refuse_graphs_of_other_weights(tmp_path, monkeypatch):
    from nucfast.models._weights import load_weights, save_weights

    src = models.load("usenet")
    sd, meta = load_weights(src.path)
    w = tmp_path / "mine.safetensors"
    save_weights(w, sd, metadata={**meta, "note": "a copy"})  # same network, other file: other sha256
    mine = models.load(w)
    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "int8")
    with pytest.raises(FileNotFoundError, match="no int8 graph.*nucfast quantize"):
        mine.int8_net()
    shutil.copyfile(int8_path(src), int8_path(mine))
    with pytest.raises(ValueError, match="quantised from other weights"):
        load_int8(mine)
    feeds, what = calibration_feeds(mine, MONUSEG, images=2, crops=1)
    data = quantize_int8(mine, feeds, int8_path(mine), calibration=what)
    assert "2 training images" in graph_info(data)["calibration"]
    assert graph_info(data)["weights_sha256"] == mine.sha256
    x = torch.rand(3, 256, 256)
    gates = {"se_gates": torch.full((mine.net.n_se_gates,), 0.5)}
    ctx = models.Context(inputs=gates)
    p8 = mine.predict(x, context=ctx)
    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "fp32")
    p32 = mine.predict(x, context=ctx)
    assert 0 < (p8 - p32).abs().mean() < 0.02
