"""Subtypes: k chosen by stability, kNN majority assignment, reference files, the CLI and its pictures;
hand-crafted features against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import synthetic_labels

pytest.importorskip("sklearn")

from nucfast.cli import main  # noqa: E402
from nucfast.features import FEATURE_NAMES, handcrafted_features  # noqa: E402
from nucfast.subtypes import assign_subtypes, fit_subtypes, load_reference  # noqa: E402


def _blobs(k=5, n=60, d=16, seed=0):
    """k well-separated clusters on the unit sphere (fixed centres; ``seed`` draws the noise)."""
    centres = np.random.default_rng(99).normal(size=(k, d))
    centres = torch.nn.functional.normalize(torch.from_numpy(centres), dim=1).numpy()
    x = np.repeat(centres, n, 0) + 0.05 * np.random.default_rng(seed).normal(size=(k * n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(k), n)


def test_stability_finds_the_true_k_and_assignment_recovers_it(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    x, truth = _blobs()
    ref = fit_subtypes(x, ks=range(3, 9), seeds=4)
    assert ref.k == 5 and ref.meta["stability_ari"]["5"] > 0.99
    ref.save(tmp_path / "ref.safetensors")
    back = load_reference(tmp_path / "ref.safetensors")
    assert back.k == 5 and back.meta["k"] == 5
    np.testing.assert_array_equal(back.labels, ref.labels)
    new, new_truth = _blobs(seed=1)  # the same centres, new noise
    got = assign_subtypes(back, new, k_nn=7)
    assert adjusted_rand_score(new_truth, got) > 0.99
    assert adjusted_rand_score(truth, assign_subtypes(back, x)) > 0.99


def test_subtype_errors(tmp_path):
    x, _ = _blobs()
    ref = fit_subtypes(x, k=3, seeds=1)
    with pytest.raises(ValueError, match="dimensions"):
        assign_subtypes(ref, x[:, :8])
    with pytest.raises(ValueError, match="NaN"):
        assign_subtypes(ref, np.full((2, 16), np.nan, np.float32))
    with pytest.raises(ValueError, match="k must be in"):
        fit_subtypes(x[:3], k=5)
    with pytest.raises(ValueError, match="k_nn"):
        assign_subtypes(ref, x, k_nn=0)
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(ValueError, match="cannot read subtype reference"):
        load_reference(tmp_path / "bad.safetensors")


def test_cli_fit_assign_and_pictures(tmp_path, capsys):
    from conftest import write_tiny_dataset

    (tmp_path / "d").mkdir()
    data = write_tiny_dataset(tmp_path / "d", size=96, n=14, count=2)
    ref, out, g = tmp_path / "ref.safetensors", tmp_path / "a.csv", tmp_path / "g"
    assert (
        main(
            [
                "subtypes",
                "fit",
                "--data",
                str(data),
                "--model",
                "nuc2vec_lite",
                "-o",
                str(ref),
                "--k",
                "3",
                "--gallery",
                str(g),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in g.iterdir()) == [
        "subtype_00.png",
        "subtype_01.png",
        "subtype_02.png",
        "umap.png",
    ]
    np.save(tmp_path / "e.npy", np.asarray(load_reference(ref).embeddings))
    assert (
        main(
            [
                "subtypes",
                "assign",
                "--embeddings",
                str(tmp_path / "e.npy"),
                "--reference",
                str(ref),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    rows = out.read_text().splitlines()
    assert rows[0] == "image,label,subtype" and len(rows) > 10
    capsys.readouterr()
    assert main(["subtypes", "assign", "--reference", str(ref), "-o", str(out)]) == 1
    assert "exactly one of --data DIR and --embeddings FILE" in capsys.readouterr().err


def test_handcrafted_features_match_skimage():
    from skimage.measure import regionprops

    lab = synthetic_labels(0, shape=(120, 100), n=25)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, lab.shape + (3,), dtype=np.uint8)
    ids, x, names = handcrafted_features(rgb, lab)
    assert names == FEATURE_NAMES and x.shape == (len(ids), 15)
    props = regionprops(lab)
    np.testing.assert_array_equal(ids, [p.label for p in props])
    for p, row in zip(props, x, strict=True):
        assert (
            row[0] == p.area
            and row[3] == pytest.approx(p.eccentricity)
            and row[4] == pytest.approx(p.solidity)
        )
        m = lab == p.label
        np.testing.assert_allclose(row[5:8], rgb[m].mean(0))
        np.testing.assert_allclose(row[10:13], rgb[m].std(0))
    with pytest.raises(ValueError, match="labels has shape"):
        handcrafted_features(rgb, lab[:-1])


def test_leiden_by_stability_recovers_the_clusters(tmp_path):
    """Leiden (scanpy, igraph) on the cosine kNN graph, resolution chosen by stability across subsamples."""
    from sklearn.metrics import adjusted_rand_score

    from nucfast.subtypes import fit_leiden

    x, truth = _blobs()
    ref = fit_leiden(x, resolutions=(0.1, 0.3, 1.0), seeds=3)
    assert ref.meta["method"] == "leiden" and set(ref.meta["stability_ari"]) == {"0.1", "0.3", "1.0"}
    assert ref.k == 5, ref.meta
    assert adjusted_rand_score(truth, ref.labels) > 0.99
    ref.save(tmp_path / "ref.safetensors")
    new, new_truth = _blobs(seed=1)
    got = assign_subtypes(load_reference(tmp_path / "ref.safetensors"), new, k_nn=7)
    assert adjusted_rand_score(new_truth, got) > 0.99
    np.testing.assert_allclose(np.linalg.norm(ref.centroids, axis=1), 1, atol=1e-5)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "cli.safetensors"
    assert main(["subtypes", "fit", "--embeddings", str(tmp_path / "x.npy"), "--method", "leiden",
                 "--resolution", "0.3", "-o", str(out)]) == 0  # fmt: skip
    assert load_reference(out).meta["method"] == "leiden" and load_reference(out).k == 5
