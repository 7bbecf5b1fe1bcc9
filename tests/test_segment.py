"""segment_image / load_model / evaluate / baseline, with small random-initialised weights saved here."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import tifffile
import torch
from conftest import synthetic_labels
from PIL import Image

from nucfast._evaluate import evaluate
from nucfast._segment import load_model, segment_image
from nucfast.baseline import haematoxylin_baseline
from nucfast.models.usenet import build_usenet
from nucfast.stain import ReinhardNormalizer
from nucfast.train.checkpoint import save_weights


def _rgb_from_labels(lab, seed=0):
    rng = np.random.default_rng(seed)
    rgb = np.empty((*lab.shape, 3), np.uint8)
    rgb[...] = (235, 200, 225)
    rgb[lab > 0] = (90, 60, 150)
    return np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    net = build_usenet("lite")
    lab = synthetic_labels(0, shape=(64, 64), n=8)
    norm = ReinhardNormalizer().fit(_rgb_from_labels(lab))
    p = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    meta = {
        "kind": "usenet",
        "arch": "lite",
        "config": net.config,
        "step": 0,
        "norm": "reinhard",
        "normalizer": {k: v.tolist() for k, v in norm.state_dict().items()},
        "val_names": ["img1"],
    }
    save_weights(p, net, metadata=meta)
    return p, net


def test_segment_image_kinds_and_outputs(weights):
    p, net = weights
    lab = synthetic_labels(1, shape=(70, 90), n=10)
    rgb = _rgb_from_labels(lab)
    out = segment_image(rgb, str(p))
    assert isinstance(out, np.ndarray) and out.dtype == np.int32 and out.shape == (70, 90)
    t = segment_image(torch.from_numpy(rgb), p)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int32
    np.testing.assert_array_equal(t.numpy(), out)
    # float (3, H, W) input gives the same result as the uint8 image it came from
    f = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    np.testing.assert_array_equal(segment_image(f, p), out)
    labels, table, probs = segment_image(rgb, p, return_table=True, return_probs=True, tta=True)
    assert probs.shape == (2, 70, 90) and ((probs >= 0) & (probs <= 1)).all()
    assert len(table["label"]) == len(np.unique(labels[labels > 0]))
    # the weights were stored in float16: the loaded network equals the float16-rounded original
    m = load_model(p)
    w = net.state_dict()["encoder.conv1.weight"].half().float()
    torch.testing.assert_close(m.net.state_dict()["encoder.conv1.weight"], w)


def test_tiny_image(weights):
    lab = segment_image(np.full((10, 12, 3), 200, np.uint8), weights[0], tta=True)
    assert lab.shape == (10, 12)


def test_tta_is_equivariant(weights):
    # with TTA, segmenting a rotated image gives the rotated probabilities (the 8 transforms form a group)
    p, _ = weights
    rgb = _rgb_from_labels(synthetic_labels(2, shape=(64, 64), n=8))
    _, pa = segment_image(rgb, p, tta=True, return_probs=True)
    _, pb = segment_image(np.ascontiguousarray(np.rot90(rgb)), p, tta=True, return_probs=True)
    np.testing.assert_allclose(np.rot90(pa, axes=(1, 2)), pb, atol=2e-5)


def test_tiled_prediction_matches_whole(weights):
    from nucfast.train.usenet import predict_probs

    m = load_model(weights[0])
    x = torch.rand(3, 150, 130)
    whole = predict_probs(m.net, x, tile=1024)
    tiled = predict_probs(m.net, x, tile=96, overlap=16)
    # tiles see less context near their borders; the centres agree closely, everything is finite
    assert torch.isfinite(tiled).all() and (whole - tiled).abs().mean() < 0.05


def test_evaluate_writes_csv_json(weights, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for i in range(2):
        lab = synthetic_labels(i, shape=(64, 64), n=8).astype(np.uint16)
        Image.fromarray(_rgb_from_labels(lab, i)).save(d / f"img{i}.png")
        tifffile.imwrite(d / f"img{i}_inst.tif", lab)
    buf = io.StringIO()
    res = evaluate(weights[0], d, csv_path=tmp_path / "r.csv", json_path=tmp_path / "r.json", file=buf)
    assert [r["name"] for r in res["rows"]] == ["img0", "img1"]
    assert [r["split"] for r in res["rows"]] == ["train", "val"]
    assert set(res["mean"]) == {"train", "val", "all"} and "MEAN val" in buf.getvalue()
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert float(rows[1]["aji"]) == pytest.approx(res["rows"][1]["aji"])
    js = json.loads((tmp_path / "r.json").read_text())
    assert js["mean"]["all"]["aji"] == pytest.approx(res["mean"]["all"]["aji"])
    only_val = evaluate(weights[0], d, subset="val", file=io.StringIO())
    assert [r["name"] for r in only_val["rows"]] == ["img1"]
    # a perfect predictor scores 1
    gts = {f"img{i}": synthetic_labels(i, shape=(64, 64), n=8) for i in range(2)}
    it = iter(gts.values())
    perfect = evaluate(data_dir=d, predictor=lambda rgb: next(it), file=io.StringIO())
    assert perfect["mean"]["all"]["aji"] == 1.0
    # the no-learning baseline by name (CLI: --model baseline); images outside the shipped split are "train"
    base = evaluate("baseline", d, file=io.StringIO())
    assert [r["split"] for r in base["rows"]] == ["train", "train"] and base["mean"]["all"]["aji"] > 0.3


def test_baseline_finds_dark_blobs():
    lab = synthetic_labels(3, shape=(128, 128), n=15)
    out = haematoxylin_baseline(_rgb_from_labels(lab))
    from nucfast.metrics import dice

    assert dice(lab, out) > 0.8


def test_errors(weights, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        segment_image(np.zeros((8, 8, 3), np.uint8), str(tmp_path / "nope.safetensors"))
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match="must be a .safetensors file"):
        load_model(bad)
    with pytest.raises(ValueError, match=r"rgb must be uint8 \(H, W, 3\)"):
        segment_image(np.zeros((8, 8), np.uint8), weights[0])
    with pytest.raises(TypeError, match="rgb must be a numpy array"):
        segment_image([[0]], weights[0])
    with pytest.raises(ValueError, match="subset must be"):
        evaluate(weights[0], tmp_path, subset="test")
