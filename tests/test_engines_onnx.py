"""ONNX export of the nucfast networks, validated against torch with onnxruntime."""

from __future__ import annotations

import onnx
import pytest
import torch
from engines_util import perturbed, real_or_synthetic_crop, tiny_usenet

from nucfast.engines import DEFAULT_OPSET, export_onnx, load_model, onnx_sha256, validate_onnx
from nucfast.models import build_usenet


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return perturbed(build_usenet("lite"))


@pytest.fixture(scope="module")
def lite_onnx(lite):
    return export_onnx(lite)


def _rand(*shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_graph_has_dynamic_axes_and_opset(lite_onnx):
    m = onnx.load_from_string(lite_onnx)
    onnx.checker.check_model(m)
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    (inp,), (out,) = m.graph.input, m.graph.output
    assert (inp.name, out.name) == ("image", "probabilities")
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert dims == ["batch", 2, "height", "width"]


def test_lite_random_and_real_inputs_match_torch(lite, lite_onnx):
    # shapes other than the tracing one, including sides that are not multiples of 32, and real tiles
    shapes = [(1, 3, 64, 64), (2, 3, 96, 160), (3, 3, 100, 75)]
    real = real_or_synthetic_crop(128, n=2)
    chk = validate_onnx(lite, lite_onnx, [_rand(*s, seed=i) for i, s in enumerate(shapes)] + [real])
    print(f"lite, random + real: {chk}")
    assert chk.shapes == shapes + [tuple(real.shape)]
    assert chk.worst < 1e-4, str(chk)
    # the comparison is not vacuous: outputs vary across pixels and images
    with torch.inference_mode():
        p = torch.sigmoid(lite(real))
    assert float(p.std()) > 0.01


def test_logits_output():
    net = perturbed(tiny_usenet())
    data = export_onnx(net, output="logits")
    assert onnx.load_from_string(data).graph.output[0].name == "logits"
    chk = validate_onnx(net, data, [_rand(1, 3, 64, 96)], output="logits")
    assert chk.worst < 1e-3, str(chk)


def test_se_resnet50_matches_torch():
    # the paper's network: 50 layers of float32 rounding with non-trivial BN scales, hence the looser bound
    torch.manual_seed(0)
    net = perturbed(build_usenet("se_resnet50"))
    data = export_onnx(net, sample_shape=(1, 3, 32, 32))
    chk = validate_onnx(net, data, [real_or_synthetic_crop(64)], intra_op_threads=2)
    print(f"se_resnet50: {chk}")
    assert chk.worst < 1e-3, str(chk)


def test_fp16_export_close_to_fp32_torch():
    lite = perturbed(tiny_usenet())
    data = export_onnx(lite, precision="fp16")
    m = onnx.load_from_string(data)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O kept
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    chk = validate_onnx(lite, data, [real_or_synthetic_crop(64)])
    print(f"lite fp16 export: {chk}")
    assert 0 < chk.worst < 2e-2, str(chk)


def test_export_is_deterministic_and_writes_file(lite, lite_onnx, tmp_path):
    # the engine cache is keyed by the ONNX bytes: the same weights must give the same bytes
    again = export_onnx(lite, tmp_path / "sub" / "m.onnx")
    assert again == lite_onnx and (tmp_path / "sub" / "m.onnx").read_bytes() == lite_onnx
    assert onnx_sha256(lite_onnx) == onnx_sha256(tmp_path / "sub" / "m.onnx")


def test_load_model_from_weights_file(tmp_path):
    from nucfast.train.checkpoint import save_weights

    net = perturbed(build_usenet("lite"))
    path = tmp_path / "w.safetensors"
    save_weights(path, net, metadata={"arch": "lite"}, half=False)
    loaded = load_model(path)
    x = _rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(x), net(x))
    assert load_model("usenet_lite").training is False


def test_errors(tmp_path):
    net = tiny_usenet()
    with pytest.raises(ValueError, match="precision must be"):
        export_onnx(net, precision="int8")
    with pytest.raises(ValueError, match="opset must be"):
        export_onnx(net, opset=9)
    with pytest.raises(ValueError, match="sample_shape must be"):
        export_onnx(net, sample_shape=(1, 1, 64, 64))
    with pytest.raises(ValueError, match="output must be"):
        export_onnx(net, output="masks")
    with pytest.raises(ValueError, match="unknown model .no_such_net.: expected one of"):
        load_model("no_such_net")
    from nucfast.train.checkpoint import save_weights

    save_weights(tmp_path / "noarch.safetensors", net, metadata={})
    with pytest.raises(ValueError, match="no usable 'kind'/'config'/'arch' metadata"):
        load_model(tmp_path / "noarch.safetensors")


def _trained_like_attention(width: int = 16):
    from nucfast.models.attention import AttentionNet

    torch.manual_seed(0)
    net = AttentionNet(width=width)
    net.train()
    with torch.no_grad():
        net(real_or_synthetic_crop(64, n=2))  # one training batch sets the running tau (as training does)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return net.eval()


def test_attention_export_matches_paper_inference(tmp_path):
    # exported graph = ImageNet normalisation + F + compressed sigmoid with the trained running tau, i.e.
    # exactly nucfast.models.attention.predict_attention (the reference inference) on [0, 1] input
    from nucfast.models.attention import predict_attention

    net = _trained_like_attention()
    assert int(net.head.num_batches_tracked) == 1 and float(net.head.running_tau) != 0.0
    data = export_onnx(net)
    x = real_or_synthetic_crop(96, n=2)
    from nucfast.engines import OnnxRuntimeBackend

    got = OnnxRuntimeBackend(data, intra_op_threads=2).run(x)
    want = torch.stack([predict_attention(net, xi) for xi in x])
    assert got.shape == want.shape == (2, 1, 96, 96)
    diff = float((got - want).abs().max())
    print(f"attention F (width 16): max |onnxruntime - predict_attention| = {diff:.3g}")
    assert diff < 5e-4 and float(want.std()) > 0.01  # r = 20 scales logit rounding
    chk = validate_onnx(net, data, [_rand(1, 3, 80, 72)])
    assert chk.worst < 5e-4, str(chk)
    # weights files written by the trainer (kind + config metadata) load back to the same network
    from nucfast.train.checkpoint import save_weights

    save_weights(tmp_path / "att.safetensors", net, metadata={"kind": "attention", "config": net.config},
                 half=False)
    with torch.inference_mode():
        torch.testing.assert_close(load_model(tmp_path / "att.safetensors")(x), net(x))


def test_attention_random_init_exports():
    data = export_onnx("attention_lite", sample_shape=(1, 3, 32, 32))
    m = onnx.load_from_string(data)
    dims = [d.dim_param or d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "height", "width"]
