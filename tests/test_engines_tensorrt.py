"""TensorRT(-RTX) engine builder: real engines built here with TensorRT-RTX (no GPU needed), engine cache,
calibration tiles, CLI. Running an engine needs a GPU (tests/test_engines_backends.py, needs_cuda)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import MONUSEG, monuseg_names
from engines_util import perturbed, real_or_synthetic_crop, tiny_usenet

from nucfast.engines import (
    OnnxRuntimeBackend,
    Profile,
    TensorRTNotAvailableError,
    add_engine_subparsers,
    build_engine,
    default_profiles,
    engine_key,
    export_onnx,
    find_cached_engine,
    import_tensorrt,
    load_calibration_tiles,
    main,
    read_engine_metadata,
    validate_onnx,
)
from nucfast.engines._tensorrt import TileBatcher, quantize_qdq, to_fp16_onnx

PROFILE = Profile((1, 3, 32, 32), (2, 3, 64, 64), (2, 3, 128, 128))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def net():
    return perturbed(tiny_usenet())


@pytest.fixture(scope="module")
def onnx_bytes(net):
    return export_onnx(net)


@pytest.fixture(scope="module")
def tiles():
    return load_calibration_tiles(_calibration_dir_or_array(), tile=64, max_tiles=8)


def _calibration_dir_or_array(size: int = 64):
    return MONUSEG if monuseg_names(1) else (real_or_synthetic_crop(size, n=8).numpy())


def test_tensorrt_rtx_is_installed():
    trt, name = import_tensorrt("tensorrt_rtx")
    assert name == "tensorrt_rtx" and trt.__version__.startswith("1.")
    assert import_tensorrt("auto")[1] == ("tensorrt" if torch.cuda.is_available() and
                                          importlib.util.find_spec("tensorrt") else "tensorrt_rtx")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="classic TensorRT is installed")
def test_missing_tensorrt_error():
    with pytest.raises(TensorRTNotAvailableError, match="pip install tensorrt"):
        import_tensorrt("tensorrt")
    with pytest.raises(TensorRTNotAvailableError):
        build_engine(b"not used", api="tensorrt", precision="fp32", profiles=[PROFILE])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_rtx_build_and_cache(onnx_bytes, tmp_path, precision):
    info = build_engine(onnx_bytes, precision=precision, profiles=[PROFILE], cache_dir=tmp_path,
                        api="tensorrt_rtx")
    print(f"RTX {precision}: {info.size_bytes / 1e6:.2f} MB in {info.build_seconds:.1f} s")
    assert not info.cached and info.path.is_file() and info.size_bytes == info.path.stat().st_size > 10_000
    assert (info.api, info.arch, info.precision) == ("tensorrt_rtx", "rtx-jit", precision)
    assert info.key.startswith(info.onnx_sha256[:16]) and f"-{precision}-" in info.key
    assert info.path.name == f"{info.key}.engine"
    meta = read_engine_metadata(info.path)
    assert meta["profiles"] == [PROFILE.as_dict()] and meta["strongly_typed"] is True
    mtime = info.path.stat().st_mtime_ns
    again = build_engine(onnx_bytes, precision=precision, profiles=[PROFILE], cache_dir=tmp_path,
                         api="tensorrt_rtx")
    assert again.cached and again.path == info.path and info.path.stat().st_mtime_ns == mtime
    found = find_cached_engine(onnx_bytes, precision=precision, cache_dir=tmp_path, api="tensorrt_rtx")
    assert found == info.path
    assert find_cached_engine(onnx_bytes, precision=precision, cache_dir=tmp_path) == info.path  # api auto
    assert find_cached_engine(onnx_bytes, precision=precision, cache_dir=tmp_path, api="tensorrt_rtx",
                              shape=(4, 3, 64, 64)) is None  # batch beyond the profile
    other = "fp16" if precision == "fp32" else "fp32"
    assert find_cached_engine(onnx_bytes, precision=other, cache_dir=tmp_path, api="tensorrt_rtx") is None


def test_rtx_int8_from_tissue_tiles(onnx_bytes, tiles, tmp_path):
    info = build_engine(onnx_bytes, precision="int8", profiles=[PROFILE], calibration_tiles=tiles,
                        cache_dir=tmp_path, api="tensorrt_rtx")
    print(f"RTX int8 (Q/DQ): {info.size_bytes / 1e6:.2f} MB in {info.build_seconds:.1f} s")
    assert info.precision == "int8" and info.path.is_file()
    assert read_engine_metadata(info.path)["int8_mode"] == "qdq"


def test_rtx_aot_compute_capability(onnx_bytes, tmp_path):
    info = build_engine(onnx_bytes, precision="fp16", profiles=[PROFILE], cache_dir=tmp_path,
                        api="tensorrt_rtx", compute_capabilities=["sm86", "8.9"])
    assert info.arch == "sm86+sm89" and "-sm86+sm89-" in info.key and info.path.is_file()
    with pytest.raises(ValueError, match="is not supported by TensorRT-RTX"):
        build_engine(onnx_bytes, precision="fp16", profiles=[PROFILE], cache_dir=tmp_path,
                     api="tensorrt_rtx", compute_capabilities=["sm70"])
    with pytest.raises(ValueError, match="compute_capabilities: expected"):
        build_engine(onnx_bytes, precision="fp16", profiles=[PROFILE], cache_dir=tmp_path,
                     api="tensorrt_rtx", compute_capabilities=["ampere"])


def test_fp16_and_qdq_graphs_are_numerically_close(net, onnx_bytes, tiles):
    # what the strongly typed builds receive, checked with onnxruntime against torch
    x = [real_or_synthetic_crop(64, n=2)]
    f16 = to_fp16_onnx(onnx_bytes)
    assert validate_onnx(net, f16, x).worst < 2e-2
    q = quantize_qdq(onnx_bytes, tiles)
    ops = {n.op_type for n in onnx.load_from_string(q).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the input's activation scale comes from the tissue tiles (symmetric int8: |x| <= 127 * scale)
    g = onnx.load_from_string(q).graph
    (qin,) = [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == "image"]
    scale = float(onnx.numpy_helper.to_array(next(i for i in g.initializer if i.name == qin.input[1])))
    assert 0.5 * tiles.max() / 127 < scale <= 1.01 * tiles.max() / 127
    # an 8-bit network stays close on average (this random-weight network has untrained, heavy-tailed
    # activations: the per-pixel max error is large, ~0.7; measure real accuracy on trained weights)
    ref = OnnxRuntimeBackend(onnx_bytes).run(x[0])
    got = OnnxRuntimeBackend(q).run(x[0])
    err = (got - ref).abs()
    print(f"int8 Q/DQ graph vs fp32: mean |diff| {float(err.mean()):.3g}, max {float(err.max()):.3g}, "
          f"mask flips {float(((got > 0.5) != (ref > 0.5)).float().mean()):.3g}")
    assert float(err.mean()) < 0.1


def test_build_errors(onnx_bytes, tiles, tmp_path):
    kw = dict(profiles=[PROFILE], cache_dir=tmp_path, api="tensorrt_rtx")
    with pytest.raises(ValueError, match="precision must be one of"):
        build_engine(onnx_bytes, precision="fp8", **kw)
    with pytest.raises(ValueError, match="needs calibration_tiles"):
        build_engine(onnx_bytes, precision="int8", **kw)
    with pytest.raises(ValueError, match="only used with precision='int8'"):
        build_engine(onnx_bytes, precision="fp16", calibration_tiles=tiles, **kw)
    with pytest.raises(ValueError, match="api must be one of"):
        build_engine(onnx_bytes, precision="fp16", profiles=[PROFILE], api="onnx")
    with pytest.raises(FileNotFoundError, match="onnx: no such file"):
        build_engine(tmp_path / "missing.onnx", **kw)
    with pytest.raises(RuntimeError, match="could not parse the ONNX model"):
        build_engine(b"garbage", precision="fp32", **kw)
    with pytest.raises(ValueError, match="need min <= opt <= max"):
        Profile((1, 3, 64, 64), (1, 3, 32, 32), (1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"must be \(N, 3, H, W\)"):
        Profile((1, 1, 64, 64), (1, 1, 64, 64), (1, 1, 64, 64))
    if importlib.util.find_spec("tensorrt") is None:
        return
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="classic TensorRT builder needs a CUDA GPU"):
            build_engine(onnx_bytes, precision="fp16", profiles=[PROFILE], cache_dir=tmp_path, api="tensorrt")


def test_default_profiles_cover_slide_tiles():
    (p,) = default_profiles(1024, 64, max_batch=4)
    assert p.max == (4, 3, 1152, 1152) and p.opt == p.max and p.min == (1, 3, 64, 64)
    assert p.covers((1, 3, 700, 1152)) and not p.covers((1, 3, 1153, 64)) and not p.covers((5, 3, 64, 64))
    with pytest.raises(ValueError, match="tile, max_batch, min_size must be"):
        default_profiles(0)


def test_engine_key_components():
    k = engine_key("ab" * 32, "tensorrt", "10.3.0", "sm86", "fp16", [PROFILE])
    assert k.startswith("abababababababab-tensorrt10.3.0-sm86-fp16-")
    assert k != engine_key("ab" * 32, "tensorrt", "10.3.0", "sm89", "fp16", [PROFILE])
    assert k != engine_key("ab" * 32, "tensorrt", "10.3.0", "sm86", "fp16", default_profiles())


def test_calibration_tiles_from_images_and_arrays(tmp_path):
    src = _calibration_dir_or_array(128)
    t = load_calibration_tiles(src, tile=128, max_tiles=5)
    assert t.shape == (5, 3, 128, 128) and t.dtype == np.float32
    assert 0.0 <= t.min() and t.max() <= 1.0 and t.std() > 0.02
    u8 = (real_or_synthetic_crop(64, n=3).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    assert load_calibration_tiles(u8, max_tiles=2).shape == (2, 3, 64, 64)
    # a directory of images: white background tiles are rejected, tissue tiles kept; 16-bit labels skipped
    import cv2
    import tifffile

    img = np.full((128, 256, 3), 255, np.uint8)
    img[:, 128:] = np.resize(u8[0], (128, 128, 3))
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    tifffile.imwrite(tmp_path / "a_inst.tif", np.ones((128, 128), np.uint16))
    got = load_calibration_tiles(tmp_path, tile=128, max_tiles=10)
    assert got.shape == (1, 3, 128, 128)
    np.testing.assert_allclose(got[0], img[:, 128:].transpose(2, 0, 1) / 255.0, atol=1e-6)
    blank = tmp_path / "blank"
    blank.mkdir()
    cv2.imwrite(str(blank / "w.png"), np.full((128, 128, 3), 250, np.uint8))
    with pytest.raises(ValueError, match="no 128x128 tile with >= 50% tissue"):
        load_calibration_tiles(blank, tile=128)
    with pytest.raises(FileNotFoundError, match="calibration_tiles: no such file"):
        load_calibration_tiles(tmp_path / "nope")
    with pytest.raises(ValueError, match="calibration_tiles: an array must be"):
        load_calibration_tiles(np.zeros((2, 64, 64), np.float32))


def test_tile_batcher_contract():
    b = TileBatcher(np.zeros((5, 3, 8, 8), np.float32), 2)
    assert len(b) == 2
    shapes = []
    while (x := b.next()) is not None:
        shapes.append(tuple(x.shape))
    assert shapes == [(2, 3, 8, 8), (2, 3, 8, 8)]  # the partial last batch is dropped
    with pytest.raises(ValueError, match="batch_size must be in"):
        TileBatcher(np.zeros((1, 3, 8, 8), np.float32), 2)


def test_cli_build_export_and_script(onnx_bytes, tmp_path, capsys):
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(onnx_bytes)
    prof = "1x3x32x32:2x3x64x64:2x3x128x128"
    args = ["--onnx", str(onnx_path), "--precision", "fp16", "--api", "tensorrt_rtx", "--profile", prof,
            "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "out" / "m.engine")]
    assert main(["build", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cached"] is False and Path(out["output"]).is_file()
    assert (tmp_path / "out" / "m.json").is_file()
    # the thin script: same options, cached now
    old = sys.argv
    sys.argv = ["build_engine.py", *args]
    try:
        with pytest.raises(SystemExit) as e:
            runpy.run_path(str(REPO / "scripts" / "build_engine.py"), run_name="__main__")
    finally:
        sys.argv = old
    assert e.value.code == 0 and json.loads(capsys.readouterr().out)["cached"] is True
    # the subcommands the integrator wires into `nucfast`
    parser = argparse.ArgumentParser()
    add_engine_subparsers(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["build-engine", *args])
    assert ns.func(ns) == 0 and json.loads(capsys.readouterr().out)["cached"] is True
    ns = parser.parse_args(["export-onnx", "--model", "usenet_lite", "--no-validate", "-o",
                            str(tmp_path / "e.onnx")])
    assert ns.func(ns) == 0 and (tmp_path / "e.onnx").stat().st_size > 1_000_000
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["build", "--onnx", str(onnx_path), "--profile", "1x3x64"])
    with pytest.raises(SystemExit) as e:
        main(["build", "--onnx", str(onnx_path), "--precision", "int8", "--api", "tensorrt_rtx"])
    assert e.value.code == 2 and "needs calibration_tiles" in capsys.readouterr().err


def test_rtx_builds_attention_network(tmp_path):
    from nucfast.models.attention import AttentionNet

    torch.manual_seed(0)
    data = export_onnx(AttentionNet(width=8).eval(), sample_shape=(1, 3, 32, 32))
    info = build_engine(data, precision="fp16", profiles=[PROFILE], cache_dir=tmp_path, api="tensorrt_rtx")
    assert info.path.is_file() and info.size_bytes > 10_000


@pytest.mark.parametrize("which", ["nuc2vec", "pathgan_encoder"])
def test_engines_of_the_embedding_models(which, tmp_path):
    """TensorRT-RTX engines of the shipped Nuc2Vec (64-px windows, batches up to 1024) and PathologyGAN
    encoder (56-px tiles) build here as the segmentation networks' do (running them needs a GPU)."""
    from nucfast.engines import export_tile_onnx
    from nucfast.models import load

    m = load(which)
    if which == "nuc2vec":
        data, s = export_onnx(m.net), m.net.window
    else:
        data, s = export_tile_onnx(m), m.net.size
    prof = Profile((1, 3, s, s), (256, 3, s, s), (1024, 3, s, s))
    info = build_engine(data, precision="fp16", profiles=[prof], cache_dir=tmp_path)
    assert info.path.is_file() and info.path.stat().st_size > 100_000
    meta = read_engine_metadata(info.path)
    assert meta["profiles"][0]["max"] == [1024, 3, s, s]
