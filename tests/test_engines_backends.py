"""Inference backends (torch, onnxruntime, TensorRT) behind one interface, and backend selection."""

from __future__ import annotations

import pytest
import torch
from conftest import needs_cuda
from engines_util import perturbed, real_or_synthetic_crop, tiny_usenet

from nucfast.engines import (
    CPU_PREFERENCE,
    OnnxRuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    export_onnx,
    select_backend,
)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")


@pytest.fixture(scope="module")
def net():
    return perturbed(tiny_usenet())


@pytest.fixture(scope="module")
def onnx_bytes(net):
    return export_onnx(net)


def test_torch_and_onnxruntime_agree_on_real_tiles(net, onnx_bytes):
    x = real_or_synthetic_crop(96, n=2)
    a = TorchBackend(net, "cpu").run(x)
    b = OnnxRuntimeBackend(onnx_bytes, intra_op_threads=1).run(x)
    assert a.shape == b.shape == (2, 2, 96, 96)
    assert a.dtype == b.dtype == torch.float32
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0 and float(a.std()) > 0.01
    assert float((a - b).abs().max()) < 1e-4
    # expected values: the network's sigmoid
    with torch.inference_mode():
        torch.testing.assert_close(a, torch.sigmoid(net(x)))


def test_non_contiguous_and_other_float_inputs(net, onnx_bytes):
    x = real_or_synthetic_crop(64, n=2)
    nc = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # same values, non-contiguous
    assert not nc.is_contiguous()
    ort = OnnxRuntimeBackend(onnx_bytes, intra_op_threads=1)
    torch.testing.assert_close(ort.run(nc), ort.run(x))
    torch.testing.assert_close(ort.run(x.double()), ort.run(x))
    torch.testing.assert_close(TorchBackend(net).run(nc), TorchBackend(net).run(x))


@pytest.mark.parametrize("threads", [1, 2])
def test_onnxruntime_threads(onnx_bytes, threads):
    be = OnnxRuntimeBackend(onnx_bytes, intra_op_threads=threads)
    assert be.intra_op_threads == threads
    assert be.session.get_session_options().intra_op_num_threads == threads
    assert be.name == "onnxruntime-cpu" and be.device == torch.device("cpu")


def test_onnxruntime_from_file(onnx_bytes, tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(onnx_bytes)
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(OnnxRuntimeBackend(p).run(x), OnnxRuntimeBackend(onnx_bytes).run(x))


@pytest.mark.parametrize("make", ["torch", "onnxruntime"])
def test_batch_errors(net, onnx_bytes, make):
    be = TorchBackend(net) if make == "torch" else OnnxRuntimeBackend(onnx_bytes)
    with pytest.raises(ValueError, match=r"batch must have shape \(N, 3, H, W\)"):
        be.run(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match=r"batch must have shape \(N, 3, H, W\)"):
        be.run(torch.rand(1, 4, 64, 64))
    with pytest.raises(TypeError, match="batch must be a floating-point"):
        be.run(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError, match="batch must be a torch.Tensor"):
        be.run(torch.rand(1, 3, 64, 64).numpy())
    with pytest.raises(ValueError, match="batch must not be empty"):
        be.run(torch.rand(0, 3, 64, 64))


def test_constructor_errors(net, onnx_bytes):
    with pytest.raises(ValueError, match="intra_op_threads must be a positive int"):
        OnnxRuntimeBackend(onnx_bytes, intra_op_threads=0)
    with pytest.raises(ValueError, match="device must be a CPU or CUDA device"):
        TorchBackend(net, "meta")
    with pytest.raises(ValueError, match="output must be one of"):
        TorchBackend(net, output="mask")


@no_cuda
def test_gpu_backends_raise_clearly_without_gpu(net, tmp_path):
    with pytest.raises(RuntimeError, match="TensorRTBackend needs a CUDA GPU"):
        TensorRTBackend(tmp_path / "any.engine")
    with pytest.raises(RuntimeError, match="device: CUDA requested but no CUDA device"):
        TorchBackend(net, "cuda")


@no_cuda
def test_select_backend_cpu(net, onnx_bytes, tmp_path):
    auto = select_backend("auto", net, onnx=onnx_bytes)
    # follows the measured CPU preference (benchmarks/bench_backends.py)
    assert auto.name == {"onnxruntime": "onnxruntime-cpu", "torch": "torch-cpu"}[CPU_PREFERENCE]
    assert select_backend("torch", net).name == "torch-cpu"
    assert select_backend("onnxruntime", net, onnx=onnx_bytes, intra_op_threads=1).name == "onnxruntime-cpu"
    tuned = select_backend("auto", net, onnx=onnx_bytes, autotune=True, sample_shape=(1, 3, 64, 64))
    assert tuned.name in ("onnxruntime-cpu", "torch-cpu")
    with pytest.raises(FileNotFoundError, match="no engine given and none cached"):
        select_backend("tensorrt", net, onnx=onnx_bytes, cache_dir=tmp_path)


def test_select_backend_errors(net):
    with pytest.raises(ValueError, match="backend must be one of"):
        select_backend("openvino", net)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        select_backend("auto", "usenet_lite")


@needs_cuda
def test_tensorrt_backend_on_gpu_matches_torch(net, onnx_bytes, tmp_path):
    from nucfast.engines import Profile, build_engine

    prof = Profile((1, 3, 32, 32), (2, 3, 64, 64), (2, 3, 128, 128))
    info = build_engine(onnx_bytes, precision="fp32", profiles=[prof], cache_dir=tmp_path)
    be = TensorRTBackend(info.path)
    x = real_or_synthetic_crop(64, n=2).cuda()
    y = be.run(x)
    torch.cuda.current_stream().synchronize()
    ref = TorchBackend(net, "cuda", half=False).run(x)
    assert float((y - ref).abs().max()) < 1e-3
    auto = select_backend("auto", net, onnx=onnx_bytes, cache_dir=tmp_path, precision="fp32")
    assert auto.name == "tensorrt"


def test_cpu_bf16_backend_and_policy(monkeypatch):
    """bf16 on the CPU: torch autocast + channels_last, close to fp32; chosen by select_backend only when
    asked (Model.bf16); NUCFAST_CPU_PRECISION overrides the hardware rule."""
    from nucfast import models

    m = models.load("usenet")
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    g = torch.full((m.net.n_se_gates,), 0.5)
    be = select_backend("auto", m.net, device="cpu", cpu_bf16=True)
    assert be.name == "torch-cpu-bf16"
    diff = (be.run(x, se_gates=g) - TorchBackend(m.net, "cpu").run(x, se_gates=g)).abs()
    assert 0 < diff.max() < 0.2 and diff.mean() < 0.01
    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "fp32")
    assert not models.cpu_bf16() and not m.bf16
    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "bf16")
    assert models.cpu_bf16() and m.bf16 and not models.load("attention").bf16  # attention: not measured
    p16 = m.predict(x[0])
    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "fp32")
    p32 = m.predict(x[0])
    assert p16.dtype == p32.dtype == torch.float32 and 0 < (p16 - p32).abs().max() < 0.2
    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "fast")
    with pytest.raises(ValueError, match="NUCFAST_CPU_PRECISION must be"):
        models.cpu_bf16()
