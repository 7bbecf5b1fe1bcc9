"""Nuc2Vec embedding speed on one CPU thread, side by side with the hand-crafted feature extractor
(``nucfast.features.handcrafted_features``: scikit-image regionprops + colour statistics) on the same
real 1000x1000 MoNuSeg image and its annotated nuclei; and the network alone on a batch of 512 patches
(torch fp32, torch bf16 autocast + channels_last, onnxruntime fp32).
  PYTHONPATH=. python -m pytest benchmarks/bench_nuc2vec.py
nuclei/s = nuclei in the image / median seconds (printed in extra_info).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import MONUSEG, load_monuseg_labels, monuseg_names, synthetic_labels  # noqa: E402

import nucfast  # noqa: E402
from nucfast import models  # noqa: E402
from nucfast.features import handcrafted_features  # noqa: E402

_CACHE: dict = {}


def _image():
    if not _CACHE:
        names = monuseg_names()
        if names:
            from nucfast.datasets import read_rgb

            name = names[0]
            rgb, lab = read_rgb(MONUSEG / f"{name}.png").copy(), load_monuseg_labels(name).astype(np.int32)
        else:
            lab = synthetic_labels(0, shape=(1000, 1000), n=600)
            rgb = (np.random.default_rng(0).random(lab.shape + (3,)) * 255).astype(np.uint8)
        _CACHE["img"] = (rgb, lab, len(np.unique(lab)) - 1)
    return _CACHE["img"]


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("impl", ("handcrafted", "nuc2vec_fp32", "nuc2vec_bf16"))
def test_nuclei_per_second_1thread(benchmark, one_thread, monkeypatch, impl):
    rgb, lab, n = _image()
    benchmark.group = f"per-nucleus features, 1000x1000 image ({n} nuclei), 1 thread"
    if impl == "handcrafted":
        run = lambda: handcrafted_features(rgb, lab)  # noqa: E731
    else:
        monkeypatch.setenv("NUCFAST_CPU_PRECISION", impl.split("_")[1])
        m = models.load("nuc2vec")
        run = lambda: nucfast.embed_nuclei(rgb, lab, model=m)  # noqa: E731
    run()
    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(out[0]) == n
    benchmark.extra_info["nuclei_per_s"] = n / benchmark.stats.stats.median


@pytest.mark.parametrize("side", ("torch_fp32", "torch_bf16_cl", "onnxruntime_fp32"))
def test_network_512_patches_1thread(benchmark, one_thread, side):
    net = models.load("nuc2vec").net
    x = torch.rand(512, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    benchmark.group = "nuc2vec network, 512 patches, 1 thread"
    if side == "onnxruntime_fp32":
        ort = pytest.importorskip("onnxruntime")
        from nucfast.engines import export_onnx

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(export_onnx(net), opts, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        run = lambda: sess.run(None, {"image": xn})[0]  # noqa: E731
    else:
        bf16 = side == "torch_bf16_cl"
        xc = x.contiguous(memory_format=torch.channels_last) if bf16 else x

        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return net(xc)

    run()
    y = benchmark.pedantic(run, rounds=3, iterations=1)
    assert tuple(y.shape) == (512, 128)
    benchmark.extra_info["nuclei_per_s"] = 512 / benchmark.stats.stats.median
