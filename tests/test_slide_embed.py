"""Embeddings in the slide pass (issues 12 and 13): ``segment_slide(embed=True, subtypes=REF,
tile_embed=True)`` on a real two-image MoNuSeg mosaic, opened with anndata, scanpy, geopandas and a
GeoJSON parser as users do, and checked against the single-image APIs (embed_nuclei, assign_subtypes,
embed_tiles) on the same pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from conftest import MONUSEG, monuseg_names

from nucfast import embed_nuclei, embed_tiles
from nucfast.datasets import read_labels, read_rgb
from nucfast.slide import segment_slide
from nucfast.slide._labels import read_label_array
from nucfast.subtypes import assign_subtypes, fit_subtypes, load_reference

NAMES = monuseg_names()[:2]
pytestmark = pytest.mark.skipif(len(NAMES) < 2, reason="MoNuSeg data not available")


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    rgb = np.concatenate([read_rgb(MONUSEG / f"{n}.png") for n in NAMES], axis=1)  # 1000 x 2000
    p = tmp_path_factory.mktemp("embed") / "mosaic.tif"
    tifffile.imwrite(
        p, rgb, tile=(256, 256), photometric="rgb", description="Aperio |MPP = 0.25", metadata=None
    )
    return rgb, p


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    n = NAMES[0]
    _, emb = embed_nuclei(read_rgb(MONUSEG / f"{n}.png"), read_labels(MONUSEG / f"{n}_inst.tif"))
    p = tmp_path_factory.mktemp("ref") / "ref.safetensors"
    fit_subtypes(emb, k=4).save(p)
    return p


@pytest.fixture(scope="module")
def run(slide, reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "o"
    return segment_slide(slide[1], out, tile=512, embed=True, subtypes=reference, tile_embed=True)


def test_nucleus_embeddings_match_embed_nuclei_on_the_image(slide, run):
    """The table's vectors are embed_nuclei's on the whole image with the slide's own label image
    (the tile holds every pixel of a nucleus's 16 um window: the halo is 128 px)."""
    import anndata

    a = anndata.read_h5ad(run.paths["h5ad"])
    X = np.asarray(a.obsm["X_nuc2vec"])
    assert X.shape == (run.n_nuclei, 128) and run.n_nuclei > 500
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    ids = a.obs["instance_id"].to_numpy()
    assert list(a.obs_names) == [str(i) for i in ids]
    labels = np.asarray(read_label_array(run.paths["labels"])[:]).astype(np.int64)
    ref_ids, ref = embed_nuclei(slide[0], labels, ids=ids)
    np.testing.assert_array_equal(ref_ids, np.sort(ids))
    ref = ref[np.searchsorted(ref_ids, ids)]
    cos = (X * ref).sum(1)
    # a few nuclei lost overlap pixels to a neighbour tile's nucleus in the label image (first committed
    # keeps them), which moves their centroid and window; the rest are the same computation
    assert np.median(cos) > 0.999 and (cos > 0.99).mean() > 0.97, np.quantile(cos, [0, 0.01, 0.5])
    table = run.table
    np.testing.assert_array_equal(table.column("id").to_numpy(), ids)
    np.testing.assert_allclose(np.stack(table.column("nuc2vec").to_numpy(zero_copy_only=False)), X)


def test_subtypes_in_table_anndata_and_geojson(run, reference):
    import anndata

    a = anndata.read_h5ad(run.paths["h5ad"])
    ref = load_reference(reference)
    want = assign_subtypes(ref, np.asarray(a.obsm["X_nuc2vec"]))
    assert a.obs["subtype"].dtype == "category"
    assert list(a.obs["subtype"].cat.categories) == [f"Subtype {k}" for k in range(ref.k)]
    np.testing.assert_array_equal(a.obs["subtype"].cat.codes.to_numpy(), want)
    np.testing.assert_array_equal(run.table.column("subtype").to_numpy(), want)
    assert len(np.unique(want)) >= 2
    doc = json.loads(run.paths["geojson"].read_text())
    by_id = {f["properties"]["nucfast_id"]: f["properties"]["classification"] for f in doc["features"]}
    ids = a.obs["instance_id"].to_numpy()
    for i in np.random.default_rng(0).choice(len(ids), 50, replace=False):
        cls = by_id[int(ids[i])]
        assert cls["name"] == f"Subtype {want[i]}" and len(cls["color"]) == 3


def test_scanpy_opens_the_anndata(run):
    """What scanpy users do first: neighbours on the embedding, Leiden, a spatial scatter's coordinates."""
    import anndata
    import scanpy as sc

    a = anndata.read_h5ad(run.paths["h5ad"])
    sc.pp.neighbors(a, use_rep="X_nuc2vec", n_neighbors=10, random_state=0)
    sc.tl.leiden(a, flavor="igraph", n_iterations=2, random_state=0)
    assert a.obs["leiden"].nunique() >= 2
    xy = np.asarray(a.obsm["spatial"])
    np.testing.assert_allclose(xy[:, 0], a.obs["centroid_col_um"].to_numpy())
    assert xy[:, 1].max() <= 1000 * 0.25 and xy[:, 0].max() <= 2000 * 0.25


def test_tile_latents_match_embed_tiles(slide, run):
    import anndata
    import geopandas  # noqa: F401  (the nucleus table stays a GeoParquet with the embedding columns)
    import pyarrow.parquet as pq

    t = anndata.read_h5ad(run.paths["tile_h5ad"])
    assert t.n_obs == run.tiles_total and t.obsm["X_pathgan"].shape == (run.tiles_total, 200)
    tab = pq.read_table(run.paths["tile_table"])
    assert tab.column("n_nuclei").to_numpy().sum() == run.n_nuclei
    k = 1
    r0, c0, r1, c1 = (int(tab.column(c)[k].as_py()) for c in ("row0", "col0", "row1", "col1"))
    want = embed_tiles([np.ascontiguousarray(slide[0][r0:r1, c0:c1])], mpp=0.25)[0]
    np.testing.assert_allclose(t.obsm["X_pathgan"][k], want, rtol=1e-5, atol=1e-5)
    g = geopandas.read_parquet(run.paths["table"])
    assert {"nuc2vec", "subtype"} <= set(g.columns) and len(g) == run.n_nuclei
    assert run.timing["embed"] > 0 and run.timing["tile_embed"] > 0


def test_resume_keeps_embeddings_and_refuses_another_configuration(slide, reference, run):
    again = segment_slide(slide[1], run.out_dir, tile=512, embed=True, subtypes=reference, tile_embed=True)
    assert again.tiles_skipped == again.tiles_total and again.n_nuclei == run.n_nuclei
    with pytest.raises(ValueError, match="different configuration.*embed"):
        segment_slide(slide[1], run.out_dir, tile=512)


def test_bad_embedding_arguments(slide, reference, tmp_path):
    with pytest.raises(ValueError, match="needs embed=True"):
        segment_slide(slide[1], tmp_path / "a", subtypes=reference)
    with pytest.raises(ValueError, match="not a nucleus-embedding model"):
        segment_slide(slide[1], tmp_path / "b", embed="usenet")
    with pytest.raises(FileNotFoundError, match="no such reference"):
        segment_slide(slide[1], tmp_path / "c", embed=True, subtypes=tmp_path / "missing.safetensors")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_segment_embed_subtypes(slide, reference, tmp_path, capsys):
    from nucfast import cli

    out = tmp_path / "cli"
    argv = ["segment", str(slide[1]), "-o", str(out), "--tile", "1024", "-q", "--subtypes", str(reference),
            "--outputs", "table"]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "embed " in printed and "MP/s" in printed
    import pyarrow.parquet as pq

    t = pq.read_table(out / "nuclei.parquet", columns=["nuc2vec", "subtype"])
    assert t.num_rows > 500 and t.column("subtype").to_numpy().max() < 4
