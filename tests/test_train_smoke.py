"""Training smoke test: a few USE-Net steps on tiny synthetic images, checkpoint/resume round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_tiny_dataset
from safetensors.torch import load_file

from nucfast.train.checkpoint import load_weights
from nucfast.train.usenet import UsenetConfig, train_usenet


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), size=72, n=12)


def _cfg(data_dir, out, **kw):
    base = dict(
        data=str(data_dir),
        out=str(out),
        arch="lite",
        steps=4,
        batch=2,
        crop=48,
        lr=1e-3,
        warmup=1,
        n_val=1,
        val_every=2,
        ckpt_every=1,
        log_every=1,
        threads=1,
        norm="reinhard",
        norm_target="img0",
    )
    base.update(kw)
    return UsenetConfig(**base)


def test_train_resume_is_identical(data_dir, tmp_path):
    a = train_usenet(_cfg(data_dir, tmp_path / "a"))
    assert a["step"] == 4 and len(a["history"]) == 2 and 0.0 <= a["best_aji"] <= 1.0
    # interrupted after 2 steps, then resumed: the same weights, optimiser state and RNG stream
    b1 = train_usenet(_cfg(data_dir, tmp_path / "b"), stop_at_step=2)
    assert b1["step"] == 2
    b2 = train_usenet(_cfg(data_dir, tmp_path / "b"))
    assert b2["step"] == 4
    ta, tb = (
        load_file(str(tmp_path / "a" / "last.safetensors")),
        load_file(str(tmp_path / "b" / "last.safetensors")),
    )
    assert ta.keys() == tb.keys() and any(k.startswith("optim.") for k in ta)
    for k in ta:
        if k != "rng.torch":
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=0, msg=k)
    log = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log if "event" in r][:2] == ["start", "val"]
    assert any(r.get("event") == "resume" and r["step"] == 2 for r in log)
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    # best weights load without pickle and carry their metadata
    sd, meta = load_weights(tmp_path / "a" / "best.safetensors")
    assert meta["arch"] == "lite" and len(meta["val_names"]) == 1 and meta["val_names"][0] in ("img1", "img2")
    assert "img0" in meta["train_names"]  # the normalisation target stays in training
    assert "encoder.conv1.weight" in sd


def test_resume_rejects_other_architecture(data_dir, tmp_path):
    train_usenet(_cfg(data_dir, tmp_path / "c", steps=1, val_every=0))
    with pytest.raises(ValueError, match="resume: --arch"):
        train_usenet(_cfg(data_dir, tmp_path / "c", steps=2, arch="se_resnet50"))


def test_loss_decreases_on_a_fixed_batch():
    from nucfast.models.usenet import build_usenet
    from nucfast.train.usenet import usenet_loss

    torch.manual_seed(0)
    m = build_usenet("lite")
    x = torch.rand(2, 3, 64, 64)
    y = (torch.rand(2, 2, 64, 64) > 0.7).float()
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    losses = []
    for _ in range(8):
        loss, _ = usenet_loss(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
