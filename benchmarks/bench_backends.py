"""Inference backends on the same tiles: torch eager vs onnxruntime (CPU), USE-Net lite (random init).

Tiles: a batch of 4 crops of 256x256 from a real MoNuSeg image (synthetic noise when the data is absent),
float32 in [0, 1]; the same batch for both sides; same thread count on both sides (torch.set_num_threads
and onnxruntime intra_op_num_threads), 1 and 2 threads.

    cd <worktree> && PYTHONPATH=$PWD python -m pytest benchmarks/bench_backends.py --benchmark-only \
        --benchmark-group-by=group --benchmark-columns=min,median,mean,rounds

BENCHMARKS (2-core shared machine under load ~10, torch 2.14.1, onnxruntime 1.31.1, USE-Net lite after the
narrower-decoder change, median of 5 batches of 4 x 256 x 256 real MoNuSeg crops):
  1 thread : onnxruntime 0.70 s, torch eager 1.15 s  -> onnxruntime 1.65x faster
  2 threads: onnxruntime 1.28 s, torch eager 4.40 s  -> onnxruntime 3.4x faster (both slowed by other users)
CPU_PREFERENCE in nucfast/engines/_backends.py follows these numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import MONUSEG, monuseg_names  # noqa: E402

from nucfast.engines import OnnxRuntimeBackend, TorchBackend, export_onnx  # noqa: E402
from nucfast.models import build_usenet  # noqa: E402


def _tiles(n=4, size=256) -> torch.Tensor:
    names = monuseg_names(1)
    if names:
        import cv2

        img = cv2.cvtColor(cv2.imread(str(MONUSEG / f"{names[0]}.png")), cv2.COLOR_BGR2RGB)
        crops = [img[r : r + size, c : c + size] for r, c in [(0, 0), (0, 500), (500, 0), (500, 500)]][:n]
        arr = np.stack(crops).astype(np.float32) / 255.0
    else:
        arr = np.random.default_rng(0).random((n, size, size, 3), dtype=np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_usenet("lite").eval()
    return model, export_onnx(model), _tiles()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("side", ["torch_eager", "onnxruntime"])
def test_usenet_lite_b4_256(benchmark, setup, side, threads):
    model, onnx, x = setup
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        be = TorchBackend(model, "cpu") if side == "torch_eager" else OnnxRuntimeBackend(
            onnx, intra_op_threads=threads)
        be.run(x)  # warm-up
        benchmark.group = f"usenet_lite b4x256 {threads}thr"
        benchmark.extra_info.update(torch=torch.__version__, threads=threads)
        y = benchmark.pedantic(be.run, args=(x,), rounds=5, iterations=1)
        assert y.shape == (4, 2, 256, 256)
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def shipped():
    from nucfast.models import load

    m = load("usenet")
    x = torch.nn.functional.interpolate(_tiles(1), size=(1024, 1024), mode="bilinear")
    gates = torch.full((m.net.n_se_gates,), 0.5)  # the graph's se_gates input is 1-D
    return m.net, export_onnx(m.net, se_gates=True), x, gates


@pytest.mark.parametrize("side", ["torch_fp32", "torch_fp32_channels_last", "torch_bf16_channels_last",
                                  "onnxruntime_fp32", "onnxruntime_int8"])
def test_shipped_usenet_1024_1thread(benchmark, shipped, side):
    """The CPU engine and precision choice (nucfast.models.cpu_precision): one 1024² tile, one thread.
    Measured 2026-12-02 (load ~0.5): median ms per tile torch bf16 autocast + channels_last 217 (4.8 MP/s),
    onnxruntime int8 (the shipped QDQ graph) 292 (1.34x slower), onnxruntime fp32 403 (1.86x), torch fp32
    channels_last 462 (2.1x), torch fp32 724 (3.3x); ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` (no AMX):
    torch bf16 625, AVX2: 4,790. Validation AJI (nucfast evaluate --subset val, NUCFAST_CPU_PRECISION=
    fp32/bf16/int8): 0.5689 / 0.5684 / 0.5692."""
    net, onnx, x, gates = shipped
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if side.startswith("onnxruntime"):
            if side == "onnxruntime_int8":  # the shipped QDQ graph (logits; + sigmoid as the engine does)
                from nucfast.engines._quantize import int8_backend
                from nucfast.models import load

                be = int8_backend(load("usenet"), threads=1)
            else:
                be = OnnxRuntimeBackend(onnx, intra_op_threads=1)
            run = lambda: be.run(x, se_gates=gates)  # noqa: E731
        elif side == "torch_fp32":
            def run():
                with torch.inference_mode():
                    return net(x, gates)
        else:
            be = TorchBackend(net, "cpu", half=side.startswith("torch_bf16"))
            run = lambda: be.run(x, se_gates=gates)  # noqa: E731
        run()
        benchmark.group = "shipped usenet 1x1024² 1thr"
        y = benchmark.pedantic(run, rounds=3, iterations=1)
        assert y.shape[-2:] == (1024, 1024)
    finally:
        torch.set_num_threads(old)
