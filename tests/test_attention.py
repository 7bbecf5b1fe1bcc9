"""Attention model (F, G, losses), M-WSI sampler and a training smoke test with exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_tiny_dataset
from PIL import Image
from safetensors.torch import load_file

from nucfast.models.attention import (
    TRANSFORMS,
    AttentionNet,
    ScaleClassifier,
    apply_transform,
    attention_losses,
    invert_transform,
)
from nucfast.train.attention import AttentionConfig, MWSISampler, tissue_fraction, train_attention

TV_RESNET34_TRUNK = 21_797_672 - (512 * 1000 + 1000)


def test_attention_net_shape_and_receptive_field():
    torch.manual_seed(0)
    net = AttentionNet(width=8).eval()
    assert AttentionNet.receptive_field() == 167
    x = torch.rand(1, 3, 201, 201, requires_grad=True)
    net.logits(x)[0, 0, 100, 100].backward()
    nz = (x.grad[0].abs().sum(0) > 0).nonzero()
    assert (nz.min(0).values.tolist(), nz.max(0).values.tolist()) == ([17, 17], [183, 183])  # 167 px
    net.train()
    a = net(torch.rand(2, 3, 40, 30))
    assert a.shape == (2, 1, 40, 30) and ((a >= 0) & (a <= 1)).all()
    assert int(net.head.num_batches_tracked) == 1


def test_paper_layer_shapes():
    net = AttentionNet()  # width 64
    assert net.stem[0].bias is None and net.out.bias is not None and net.out.kernel_size == (1, 1)
    assert [b.conv1.dilation[0] for b in net.blocks] == [1, 2, 3, 5, 10, 20]
    assert [b.conv1.padding[0] for b in net.blocks] == [1, 2, 3, 5, 10, 20]
    g = ScaleClassifier()
    n = sum(p.numel() for p in g.trunk.parameters())
    assert n == TV_RESNET34_TRUNK and g.fc.in_features == 512 and g.fc.out_features == 3


@pytest.mark.parametrize("t", TRANSFORMS)
def test_transforms_invert(t):
    x = torch.rand(2, 1, 6, 6)
    torch.testing.assert_close(invert_transform(apply_transform(x, t), t), x)
    assert not torch.equal(apply_transform(x, t), x)


def test_losses_and_gradients():
    torch.manual_seed(0)
    net, clf = AttentionNet(width=8), ScaleClassifier(widths=(8, 16, 32, 64), stem_width=8)
    x = torch.randn(6, 3, 32, 32)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    pseudo = (torch.rand(6, 1, 32, 32) > 0.8).float()
    loss, parts = attention_losses(
        net, clf, x, y, transform="rot90", scale_equivariance=True, pseudo=pseudo, pseudo_weight=1.0
    )
    assert set(parts) == {"ce", "smooth", "equi", "scale_equi", "pseudo", "acc"}
    expected = parts["ce"] + parts["smooth"] + parts["equi"] + parts["scale_equi"] + parts["pseudo"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert net.stem[0].weight.grad.abs().sum() > 0 and clf.fc.weight.grad.abs().sum() > 0
    assert int(net.head.num_batches_tracked) == 1  # auxiliary passes do not touch the running tau


def test_mwsi_sampler_and_tissue_filter():
    rng = np.random.default_rng(0)
    ims = [np.full((64, 64, 3), (200, 100, 180), np.uint8) for _ in range(2)]
    s = MWSISampler(ims, crop=16, hed_sigma=0.0)
    x, y, p = s.sample(rng, 3)
    assert x.shape == (9, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and p is None
    assert tissue_fraction(torch.ones(3, 8, 8)) == 0.0
    assert tissue_fraction(torch.tensor([0.8, 0.4, 0.7])[:, None, None].expand(3, 8, 8)) == 1.0
    with pytest.raises(ValueError, match="at least 4 x crop"):
        MWSISampler(ims, crop=32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("adata"), size=64, n=10)


def _cfg(d, out, **kw):
    base = dict(
        data=str(d),
        out=str(out),
        width=8,
        g_width=8,
        steps=3,
        per_mag=2,
        crop=16,
        n_val=1,
        val_every=3,
        ckpt_every=1,
        log_every=1,
        norm_target="img0",
        pseudo_weight=1.0,
        scale_equivariance=True,
    )
    base.update(kw)
    return AttentionConfig(**base)


def test_train_attention_resume_and_segment(data_dir, tmp_path):
    a = train_attention(_cfg(data_dir, tmp_path / "a"))
    train_attention(_cfg(data_dir, tmp_path / "b"), stop_at_step=1)
    b = train_attention(_cfg(data_dir, tmp_path / "b"))
    assert a["step"] == b["step"] == 3 and len(a["history"]) == 1
    ta, tb = (
        load_file(str(tmp_path / "a" / "last.safetensors")),
        load_file(str(tmp_path / "b" / "last.safetensors")),
    )
    for k in ta:
        if k != "rng.torch":
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=0, msg=k)
    from nucfast._segment import load_model, segment_image

    m = load_model(tmp_path / "a" / "best.safetensors")
    assert m.kind == "attention" and int(m.net.head.num_batches_tracked) == 3
    rgb = np.asarray(Image.open(data_dir / "img1.png"))
    lab = segment_image(rgb, m, tta=True)
    assert lab.shape == (64, 64) and lab.dtype == np.int32
