"""Nuc2Vec trainer smoke test (seconds): views, loss, MoCo queue, checkpoint/resume, shipped file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_tiny_dataset
from safetensors.torch import load_file

from nucfast import models
from nucfast.train.nuc2vec import (
    MoCo,
    Nuc2VecConfig,
    NucleusSet,
    align_uniform_loss,
    augment_views,
    color_jitter,
    train_nuc2vec,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), size=96, n=14, count=3)


def _cfg(data_dir, out, **kw):
    base = dict(
        data=str(data_dir),
        out=str(out),
        steps=4,
        batch=8,
        queue=16,
        n_val=1,
        val_every=2,
        ckpt_every=1,
        log_every=1,
        threads=1,
        norm_target="img0",
        max_val_nuclei=12,
    )
    base.update(kw)
    return Nuc2VecConfig(**base)


def test_train_resume_is_identical_and_ships(data_dir, tmp_path):
    a = train_nuc2vec(_cfg(data_dir, tmp_path / "a"))
    assert a["step"] == 4 and len(a["history"]) == 2 and 0.0 <= a["best_top1"] <= 1.0
    b1 = train_nuc2vec(_cfg(data_dir, tmp_path / "b"), stop_at_step=2)
    assert b1["step"] == 2
    assert train_nuc2vec(_cfg(data_dir, tmp_path / "b"))["step"] == 4
    ta, tb = (
        load_file(str(tmp_path / "a" / "last.safetensors")),
        load_file(str(tmp_path / "b" / "last.safetensors")),
    )
    assert ta.keys() == tb.keys() and "model.queue" in ta and any(k.startswith("optim.") for k in ta)
    for k in ta:
        if k != "rng.torch":
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=0, msg=k)
    log = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resume" and r["step"] == 2 for r in log)
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    # the best query encoder loads through the model layer as a nucleus-embedding model
    m = models.load(tmp_path / "a" / "best.safetensors")
    assert m.task == "nucleus-embedding" and m.meta["selection"] == "val-retrieval-top1"
    with pytest.raises(ValueError, match="resume: --batch"):
        train_nuc2vec(_cfg(data_dir, tmp_path / "a", batch=4, steps=5))


def test_views_background_replacement_keeps_the_box(data_dir):
    ns = NucleusSet.from_dir(data_dir, ["img0", "img1"])
    idx = torch.arange(5)
    x, box = ns.patches(idx)
    assert x.shape == (5, 3, 64, 64) and box.shape == (5, 1, 64, 64)
    assert ((box == 0) | (box == 1)).all() and (box.sum((1, 2, 3)) > 0).all()
    # the box mask is the nucleus' bounding box placed around the centroid
    b, c = ns.box[0], torch.round(ns.centroid[0]).long() - 32
    r = box[0, 0].nonzero()
    assert r[:, 0].min() == max(b[0] - c[0], 0) and r[:, 1].max() == min(b[3] - c[1], 64) - 1
    rng = np.random.default_rng(0)
    q, k = ns.views(rng, 6)
    assert q.shape == k.shape == (6, 3, 64, 64) and 0 <= float(q.min()) and float(q.max()) <= 1


def test_augment_identity_parameters_and_geometry():
    x = torch.rand(3, 3, 64, 64)
    one = np.ones(3)
    torch.testing.assert_close(color_jitter(x, one, one, one, 0 * one), x, atol=1e-5, rtol=0)
    m = torch.zeros(3, 1, 64, 64)
    m[:, :, 28:36, 20:44] = 1  # a centred bar: flips/rotations keep it centred, the crop only enlarges it
    _, mm = augment_views(x, np.random.default_rng(1), extra=m)
    assert (mm[:, 0, 32, 32] > 0.5).all() and (mm[:, 0, 0, 0] < 0.5).all()


def test_loss_terms_and_queue():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    loss, parts = align_uniform_loss(q, q, torch.zeros(0, 16))
    assert parts["align"] == 0.0
    d2 = torch.pdist(q).pow(2)
    assert abs(parts["unif"] - float(torch.log(torch.exp(-3 * d2).mean()))) < 1e-5
    tiny = {"widths": [8, 8, 8, 8], "stem_width": 8, "hidden": 8, "dim": 16}
    moco = MoCo(models.build_network("nuc2vec", tiny), queue=10, momentum=0.9)
    assert moco.negatives().shape[0] == 0
    moco.enqueue(q)
    moco.enqueue(q[:4])
    assert moco.negatives().shape == (10, 16) and int(moco.ptr) == 2
    torch.testing.assert_close(moco.queue[:2], q[2:4])


def test_extra_data_adds_training_nuclei(data_dir, tmp_path):
    """--extra-data: every image of another folder (e.g. scripts/slide_nuclei.py's slide tiles) joins the
    training nuclei; a folder without images is an error."""
    (tmp_path / "extra").mkdir()
    extra = write_tiny_dataset(tmp_path / "extra", size=96, n=10, count=2)
    log = tmp_path / "o" / "log.jsonl"
    train_nuc2vec(_cfg(data_dir, tmp_path / "o", steps=1, extra_data=str(extra)))
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    names = next(r for r in recs if r.get("event") == "start")["config"]["train_names"]
    n = next(r for r in recs if r.get("event") == "data")["train_nuclei"]
    more = NucleusSet.from_dir(extra, ["img0", "img1"])
    assert len(more) > 0 and n == len(NucleusSet.from_dir(data_dir, names)) + len(more)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no NAME.png"):
        train_nuc2vec(_cfg(data_dir, tmp_path / "o2", steps=1, extra_data=str(empty)))
