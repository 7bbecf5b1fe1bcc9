"""Nuc2Vec: the model kind, patch extraction vs plain slicing, embed_nuclei's contract and invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DEVICES, MONUSEG, load_monuseg_labels, monuseg_names, synthetic_labels

import nucfast
from nucfast import models
from nucfast.models.nuc2vec import IMAGENET_MEAN, extract_patches, nucleus_centroids


@pytest.fixture(autouse=True)
def _fp32(monkeypatch):
    """Exact comparisons need one precision: CPU bf16 (chosen on AMX machines) is tested on its own."""
    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "fp32")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return models.load("nuc2vec_lite")  # one untrained network shared by the comparisons


def _image(seed=0, shape=(300, 260), n=60):
    """A real MoNuSeg crop with its labels, or a synthetic H&E-like image when the data is absent."""
    names = monuseg_names()
    if names:
        from nucfast.datasets import read_rgb

        name = names[seed % len(names)]
        rgb = read_rgb(MONUSEG / f"{name}.png")[: shape[0], : shape[1]].copy()
        lab = load_monuseg_labels(name)[: shape[0], : shape[1]].astype(np.int32)
        return rgb, lab
    lab = synthetic_labels(seed, shape=shape, n=n)
    rng = np.random.default_rng(seed)
    rgb = np.full(shape + (3,), (235, 195, 225), np.uint8)
    rgb[lab > 0] = (90, 60, 150)
    return np.clip(rgb + rng.normal(0, 10, rgb.shape), 0, 255).astype(np.uint8), lab


def test_kind_and_names():
    assert {"nuc2vec", "nuc2vec_lite", "nuc2vec_paper"} <= set(models.names("nucleus-embedding"))
    assert "nuc2vec" not in models.names("segmentation")
    k = models.kinds()["nuc2vec"]
    assert k.task == "nucleus-embedding" and k.mpp == 0.25 and k.halo == 32
    m = models.load("nuc2vec_lite")
    assert m.task == "nucleus-embedding" and m.net.window == 64 and m.net.dim == 128
    paper = models.load("nuc2vec_paper").net
    assert paper.window == 64 and paper.size == 128
    # torchvision ResNet-34 (21.28 M without its fc) + the 512-512-128 head
    assert sum(p.numel() for p in paper.parameters()) == 21_284_672 + 512 * 512 + 512 + 512 * 128 + 128


def test_shipped_weights_load():
    m = models.load("nuc2vec")
    assert m.path is not None and m.meta["kind"] == "nuc2vec" and m.meta["step"] > 0
    assert models.load("nuc2vec") is m


@pytest.mark.parametrize("window", [64, 33])
def test_extract_patches_equals_slicing(window):
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 255, (3, 50, 70), dtype=np.uint8))
    centres = torch.tensor([[0.0, 0.0], [25.4, 34.6], [49.0, 69.0], [10.5, 60.49], [-3.0, 80.0]])
    got = extract_patches(img, centres, window, fill=[1, 2, 3])
    pad = np.stack([np.pad(img[c].numpy(), window, constant_values=c + 1) for c in range(3)])
    for i, (r, c) in enumerate(torch.round(centres.double()).long().tolist()):
        r0, c0 = r - window // 2 + window, c - window // 2 + window
        np.testing.assert_array_equal(got[i].numpy(), pad[:, r0 : r0 + window, c0 : c0 + window])


def test_centroids_follow_region_stats():
    lab = synthetic_labels(3, shape=(120, 90), n=30)
    ids, cen, box = nucleus_centroids(torch.from_numpy(lab))
    from skimage.measure import regionprops_table

    ref = regionprops_table(lab, properties=("label", "centroid", "bbox"))
    np.testing.assert_array_equal(ids.numpy(), ref["label"])
    np.testing.assert_allclose(cen.numpy(), np.stack([ref["centroid-0"], ref["centroid-1"]], 1))
    np.testing.assert_array_equal(box.numpy(), np.stack([ref[f"bbox-{i}"] for i in range(4)], 1))


@pytest.mark.parametrize("device", DEVICES)
def test_ids_shape_norm_and_kinds(net, device):
    rgb, lab = _image()
    lab = np.where(lab > 0, lab * 7 + 3, 0).astype(np.int32)  # sparse, non-consecutive label values
    ids, emb = nucfast.embed_nuclei(rgb, lab, model=net)
    np.testing.assert_array_equal(ids, np.unique(lab)[1:])
    assert ids.dtype == np.int64 and emb.dtype == np.float32 and emb.shape == (ids.size, 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    t_ids, t_emb = nucfast.embed_nuclei(
        torch.from_numpy(rgb).to(device), torch.from_numpy(lab).to(device), model=net
    )
    assert isinstance(t_emb, torch.Tensor) and t_emb.device.type == device and t_ids.device.type == device
    np.testing.assert_array_equal(t_ids.cpu().numpy(), ids)
    np.testing.assert_allclose(t_emb.cpu().numpy(), emb, atol=1e-4 if device == "cuda" else 1e-6)
    net.to("cpu")


def test_float_chw_input_equals_uint8(net):
    rgb, lab = _image(1)
    _, a = nucfast.embed_nuclei(rgb, lab, model=net)
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    _, b = nucfast.embed_nuclei(x, torch.from_numpy(lab), model=net)
    np.testing.assert_allclose(b.numpy(), a, atol=1e-6)


def test_batch_size_does_not_change_results(net):
    rgb, lab = _image(2)
    _, a = nucfast.embed_nuclei(rgb, lab, model=net, batch=512)
    _, b = nucfast.embed_nuclei(rgb, lab, model=net, batch=7)
    np.testing.assert_allclose(b, a, atol=1e-5)


def test_tile_invariance_and_translation(net):
    """A nucleus' vector depends only on its 16 um window: a tile with a 32 px halo around it (what the
    slide engine cuts) gives the same vector as the whole image; so does the image shifted."""
    rgb, lab = _image(3, shape=(300, 300))
    ids, emb = nucfast.embed_nuclei(rgb, lab, model=net)
    r0, c0, r1, c1 = 70, 90, 230, 250
    tile_ids, tile_emb = nucfast.embed_nuclei(rgb[r0:r1, c0:c1], lab[r0:r1, c0:c1], model=net)
    _, cen, _ = nucleus_centroids(torch.from_numpy(lab))
    rc = torch.round(cen).numpy()
    inner = ids[(rc[:, 0] >= r0 + 32) & (rc[:, 0] < r1 - 32) & (rc[:, 1] >= c0 + 32) & (rc[:, 1] < c1 - 32)]
    # a nucleus cut by the tile border has another centroid in the tile: only whole inner nuclei compare
    whole = [i for i in inner if (lab[r0:r1, c0:c1] == i).sum() == (lab == i).sum()]
    assert len(whole) >= 3
    pos_full = np.searchsorted(ids, whole)
    pos_tile = np.searchsorted(tile_ids, whole)
    np.testing.assert_allclose(tile_emb[pos_tile], emb[pos_full], atol=1e-5)
    shifted = np.roll(rgb, (5, -3), (0, 1)), np.roll(lab, (5, -3), (0, 1))
    s_ids, s_emb = nucfast.embed_nuclei(*shifted, model=net)
    keep = [i for i in whole if i in s_ids]
    np.testing.assert_allclose(
        s_emb[np.searchsorted(s_ids, keep)], emb[np.searchsorted(ids, keep)], atol=1e-5
    )


def test_relabelling_permutes_rows(net):
    rgb, lab = _image(4)
    ids, emb = nucfast.embed_nuclei(rgb, lab, model=net)
    perm = np.random.default_rng(0).permutation(ids.size) + 1
    lut = np.zeros(lab.max() + 1, np.int32)
    lut[ids] = perm
    ids2, emb2 = nucfast.embed_nuclei(rgb, lut[lab], model=net)
    np.testing.assert_allclose(emb2[perm - 1], emb, atol=1e-6)


def test_border_nuclei_see_the_mean_colour(net):
    """Outside the image is the ImageNet mean (0 after normalisation), never a mirror of the tissue."""
    rgb, lab = _image(5)
    _, cen, _ = nucleus_centroids(torch.from_numpy(lab))
    x = torch.from_numpy(rgb).permute(2, 0, 1)
    p = extract_patches(x, cen, 64, fill=[round(m * 255) for m in IMAGENET_MEAN])
    corner = int(np.argmin(cen[:, 0].numpy() + cen[:, 1].numpy()))
    if cen[corner, 0] < 32:
        assert (p[corner, :, 0, :].T == torch.tensor([124, 116, 104], dtype=torch.uint8)).all()


def test_mpp_resamples_the_window(net):
    rgb, lab = _image(6, shape=(256, 256))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    half = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)
    half = half[0].round().to(torch.uint8)
    lab2 = lab[::2, ::2]
    ids, emb = nucfast.embed_nuclei(half.permute(1, 2, 0).numpy(), lab2, model=net, mpp=0.5)
    np.testing.assert_array_equal(ids, np.unique(lab2)[1:])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="too coarse"):
        nucfast.embed_nuclei(rgb, lab, model=net, mpp=8.0)


def test_empty_labels(net):
    rgb, _ = _image()
    ids, emb = nucfast.embed_nuclei(rgb, np.zeros(rgb.shape[:2], np.int32), model=net)
    assert ids.shape == (0,) and emb.shape == (0, 128) and emb.dtype == np.float32


def test_cpu_bf16_close_to_fp32(monkeypatch):
    m = models.load("nuc2vec")
    rgb, lab = _image(7)
    _, a = nucfast.embed_nuclei(rgb, lab, model=m)
    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "bf16")
    _, b = nucfast.embed_nuclei(rgb, lab, model=m)
    cos = (a * b).sum(1)
    assert cos.min() > 0.999 and np.median(cos) > 0.9999, (cos.min(), np.median(cos))


def test_bad_input_errors(net):
    rgb, lab = _image()
    with pytest.raises(ValueError, match="labels has shape"):
        nucfast.embed_nuclei(rgb, lab[:-1], model=net)
    with pytest.raises(TypeError, match="labels has dtype"):
        nucfast.embed_nuclei(rgb, lab.astype(np.float32), model=net)
    with pytest.raises(ValueError, match="rgb must be uint8"):
        nucfast.embed_nuclei(rgb.astype(np.float32), lab, model=net)
    with pytest.raises(ValueError, match="rgb must have 3 dimensions"):
        nucfast.embed_nuclei(rgb[..., 0], lab, model=net)
    with pytest.raises(TypeError, match="must both be numpy arrays or both torch tensors"):
        nucfast.embed_nuclei(rgb, torch.from_numpy(lab), model=net)
    with pytest.raises(ValueError, match="NaN"):
        nucfast.embed_nuclei(
            torch.full((3, 8, 8), float("nan")), torch.zeros(8, 8, dtype=torch.int32), model=net
        )
    with pytest.raises(ValueError, match="mpp must be a positive"):
        nucfast.embed_nuclei(rgb, lab, model=net, mpp=0)
    with pytest.raises(ValueError, match="batch must be a positive"):
        nucfast.embed_nuclei(rgb, lab, model=net, batch=0)
    with pytest.raises(ValueError, match="not a nucleus-embedding model"):
        nucfast.embed_nuclei(rgb, lab, model="usenet_lite")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        nucfast.embed_nuclei(rgb, lab, model="nope")
    with pytest.raises(TypeError, match="rgb must be a numpy array or a torch tensor"):
        nucfast.embed_nuclei(rgb.tolist(), lab, model=net)
    with pytest.raises(ValueError, match="labels must be non-negative"):
        nucfast.embed_nuclei(rgb, -lab, model=net)


def test_onnx_export_matches_torch():
    ort = pytest.importorskip("onnxruntime")
    from nucfast.engines import export_onnx

    m = models.load("nuc2vec")
    sess = ort.InferenceSession(export_onnx("nuc2vec"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["embedding"]
    x = torch.rand(7, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    got = sess.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        ref = m.net(x).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_ids_subset(net):
    rgb, lab = _image(8)
    ids, emb = nucfast.embed_nuclei(rgb, lab, model=net)
    want = ids[::3][::-1].copy()
    got_ids, got = nucfast.embed_nuclei(rgb, lab, model=net, ids=want)
    np.testing.assert_array_equal(got_ids, ids[::3])
    np.testing.assert_allclose(got, emb[::3], atol=1e-6)
    with pytest.raises(ValueError, match="ids not present in labels"):
        nucfast.embed_nuclei(rgb, lab, model=net, ids=[ids.max() + 5])
    with pytest.raises(ValueError, match="ids must be a 1-d integer"):
        nucfast.embed_nuclei(rgb, lab, model=net, ids=[1.5])


def test_export_onnx_cli(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from nucfast.cli import main

    assert main(["export-onnx", "--model", "nuc2vec", "-o", str(tmp_path / "n.onnx")]) == 0
    assert "export check" in capsys.readouterr().err and (tmp_path / "n.onnx").stat().st_size > 1e6
