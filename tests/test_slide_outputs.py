"""The slide outputs, read by the ecosystem's own readers: ome-zarr-models / ome-zarr-py (labels.zarr),
geopandas (GeoParquet), anndata (h5ad), shapely (every GeoJSON polygon); one id links them all."""

from __future__ import annotations

import gzip
import json
import uuid

import numpy as np
import pytest
import shapely
import zarr

from nucfast.slide import segment_slide
from nucfast.slide._labels import read_label_array
from nucfast.synthetic import write_synthetic_slide

KW = dict(tile=256, model="baseline")


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    return [
        write_synthetic_slide(d / f"s{seed}.tif", (640, 640), seed=seed, tile=128, tissue_fraction=0.9)
        for seed in (3, 4)
    ]


@pytest.fixture(scope="module")
def run(slides, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "a"
    outputs = ("table", "geojson", "geojson.gz", "zarr", "h5ad", "overlay")
    return segment_slide(slides[0]["path"], out, outputs=outputs, workers=2, **KW)


def test_labels_zarr_is_ome_ngff_05(run):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Labels, Reader
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v05.image_label import ImageLabel
    from ome_zarr_models.v05.labels import Labels as LabelsModel

    root = zarr.open_group(str(run.paths["labels"]), mode="r")
    assert isinstance(open_ome_zarr(root), LabelsModel)
    img = open_ome_zarr(root["nuclei"])
    assert isinstance(img, ImageLabel)
    ms = img.attributes.ome.multiscales[0]
    assert [a.unit for a in ms.axes] == ["micrometer", "micrometer"]
    assert ms.datasets[0].coordinateTransformations[0].scale == [0.25, 0.25]
    assert ms.datasets[1].coordinateTransformations[0].scale == [0.5, 0.5]
    a0 = root["nuclei"]["0"]
    assert a0.dtype == np.uint32 and a0.metadata.dimension_names == ("y", "x")
    # ome-zarr-py's reader finds the label image (what napari-ome-zarr opens as a labels layer)
    nodes = list(Reader(parse_url(str(run.paths["labels"])))())
    specs = {type(s) for n in nodes for s in n.specs}
    assert Labels in specs and Label in specs
    label_node = next(n for n in nodes if any(isinstance(s, Label) for s in n.specs))
    np.testing.assert_array_equal(np.asarray(label_node.data[0]), a0[:])


def test_labels_metadata_is_what_ome_zarr_py_writes(run, tmp_path):
    """finalise_labels writes the NGFF attributes itself (no ome_zarr import on the run's path): they are
    exactly those of ome-zarr-py's writer given the same datasets, group by group."""
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import add_metadata, write_label_metadata, write_multiscales_metadata

    ours = zarr.open_group(str(run.paths["labels"]), mode="r")
    ref = zarr.open_group(str(tmp_path / "ref.zarr"), mode="w", zarr_format=3)
    g = ref.create_group("nuclei")
    fmt = FormatV05()
    datasets = ours["nuclei"].attrs["ome"]["multiscales"][0]["datasets"]
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in ("y", "x")]
    write_multiscales_metadata(g, datasets, fmt=fmt, axes=axes, name="nuclei")
    add_metadata(ref, {"version": fmt.version}, fmt=fmt)
    write_label_metadata(ref, "nuclei", fmt=fmt)
    ref = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")
    assert ours.attrs.asdict() == ref.attrs.asdict()
    assert ours["nuclei"].attrs.asdict() == ref["nuclei"].attrs.asdict()
    assert len(datasets) == len(list(ours["nuclei"].array_keys()))


def test_one_id_links_table_geojson_labels_anndata(run):
    import anndata
    import geopandas

    gdf = geopandas.read_parquet(run.paths["table"])
    n = len(gdf)
    assert n == run.n_nuclei > 50
    ids = gdf["id"].to_numpy()
    assert (ids == np.arange(1, n + 1)).all()  # running ids in tile order
    # label image: the same ids, with label_px pixels each
    lab = read_label_array(run.paths["labels"])[:]
    u, c = np.unique(lab[lab > 0], return_counts=True)
    np.testing.assert_array_equal(u, ids)
    np.testing.assert_array_equal(c, gdf["label_px"].to_numpy())
    # polygons: valid, area == pixel count, centroid == table centroid
    assert gdf.geometry.is_valid.all()
    np.testing.assert_allclose(gdf.geometry.area, gdf["area_px"])
    np.testing.assert_allclose(gdf.geometry.centroid.x, gdf["centroid_col"], atol=1e-9)
    # GeoParquet metadata
    import pyarrow.parquet as pq

    md = pq.read_schema(run.paths["table"]).metadata
    geo, meta = json.loads(md[b"geo"]), json.loads(md[b"nucfast"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert geo["columns"]["geometry"]["crs"] is None and gdf.crs is None
    assert meta["mpp"] == 0.25 and meta["units"]["area_um2"] == "um^2" and meta["nucfast_version"]
    assert meta["slide_fingerprint"] and "weights_sha256" in meta
    # GeoJSON (plain and gzipped: identical content)
    gj = json.loads(run.paths["geojson"].read_text())
    assert json.loads(gzip.decompress(run.paths["geojson.gz"].read_bytes())) == gj
    feats = gj["features"]
    assert [f["properties"]["nucfast_id"] for f in feats] == ids.tolist()
    geoms = [shapely.geometry.shape(f["geometry"]) for f in feats]
    assert all(g.is_valid for g in geoms)
    np.testing.assert_allclose([g.area for g in geoms], gdf["area_px"])
    ns = uuid.UUID(meta["slide_fingerprint"][:32])
    assert [f["id"] for f in feats] == [str(uuid.uuid5(ns, str(i))) for i in ids]
    m = feats[0]["properties"]["measurements"]
    assert m["Nucleus: Area µm^2"] == pytest.approx(gdf["area_um2"].iloc[0])
    assert feats[0]["properties"]["classification"]["name"] == "Nucleus"
    # AnnData
    ad = anndata.read_h5ad(run.paths["h5ad"])
    assert ad.n_obs == n and list(ad.obs_names) == [str(i) for i in ids]
    np.testing.assert_allclose(ad.obsm["spatial"][:, 0], gdf["centroid_col_um"])
    np.testing.assert_allclose(ad.obsm["spatial"][:, 1], gdf["centroid_row_um"])
    np.testing.assert_array_equal(ad.obs["instance_id"].to_numpy(), ids)
    np.testing.assert_allclose(ad.obs["area_um2"].to_numpy(), gdf["area_um2"])
    assert ad.uns["spatialdata_attrs"]["instance_key"] == "instance_id"
    assert json.loads(ad.uns["nucfast"]["json"])["slide_fingerprint"] == meta["slide_fingerprint"]


def test_feature_ids_differ_between_slides_and_runs_are_deterministic(slides, run, tmp_path):
    other = segment_slide(slides[1]["path"], tmp_path / "b", outputs=("geojson",), **KW)
    a = {f["id"] for f in json.loads(run.paths["geojson"].read_text())["features"]}
    b = {f["id"] for f in json.loads(other.paths["geojson"].read_text())["features"]}
    assert len(a) == run.n_nuclei and not a & b
    # one worker or two: the same ids (tiles are committed in index order)
    one = segment_slide(slides[0]["path"], tmp_path / "c", outputs=("table",), workers=1, **KW)
    assert one.table.drop_columns([]).equals(run.table)
    np.testing.assert_array_equal(
        read_label_array(one.paths["labels"])[:], read_label_array(run.paths["labels"])[:]
    )


def test_manifest_and_overlays(run):
    import cv2

    man = json.loads(run.paths["manifest"].read_text())
    assert man["provenance"]["nucfast_version"] and man["provenance"]["model"] == "baseline"
    assert man["counts"]["nuclei"] == run.n_nuclei and man["counts"]["tiles"] == run.tiles_total
    assert {"nuclei.parquet", "nuclei.geojson", "nuclei.h5ad", "labels.zarr"} <= set(man["outputs"])
    assert all(v["bytes"] > 0 for v in man["outputs"].values())
    assert man["timing_s"]["wall"] > 0 and "measure" in man["timing_s"]
    regions = run.paths["overlay_regions"]
    assert regions and all(p.exists() for p in regions)
    img = cv2.imread(str(regions[0]))
    assert img.shape[:2] == (640, 640)  # full resolution (the whole slide here: smaller than 1024)
    green = (img[..., 1] == 255) & (img[..., 0] == 0) & (img[..., 2] == 0)
    assert green.sum() > 20 * run.n_nuclei  # every nucleus outlined


def test_old_run_directory_refused(slides, run, tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    man = json.loads(run.paths["manifest"].read_text())
    man["config"]["format"] = 1
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="another nucfast version.*run format 1.*resume=False"):
        segment_slide(slides[0]["path"], out, **KW)
    assert segment_slide(slides[0]["path"], out, resume=False, outputs=("table",), **KW).n_nuclei > 0


def _commit_reference(region, local, n, first):
    """The overlap rule of nucfast.slide._labels as first written: boolean gathers of the free pixels."""
    region = region.copy()
    region[region >= first] = 0
    mine = local > 0
    free = mine & (region == 0)
    own_px = np.bincount(local[mine], minlength=n + 1)[1:]
    free_px = np.bincount(local[free], minlength=n + 1)[1:]
    keep = 2 * free_px > own_px
    gid = np.zeros(n + 1, np.uint32)
    gid[1:][keep] = np.arange(first, first + int(keep.sum()), dtype=np.uint32)
    paint = free & keep[np.maximum(local, 1) - 1]
    region[paint] = gid[local[paint]]
    return region, gid[1:][keep].astype(np.int64), free_px[keep], keep


@pytest.mark.parametrize("seed", range(4))
def test_label_commit_equals_the_overlap_rule(tmp_path, seed):
    """LabelWriter.commit paints, keeps and counts as the reference rule on overlapping random nuclei:
    partly covered ones keep their free pixels, mostly covered ones are dropped, ids left by an
    interrupted attempt (>= the next id) are cleared first."""
    from nucfast.slide._labels import LabelWriter, open_label_array

    rng = np.random.default_rng(seed)
    arr = open_label_array(tmp_path / "l.zarr", (300, 280), 256)
    prev = np.zeros((300, 280), np.uint32)
    for r in range(0, 300, 7):  # earlier commits: ids 1..40, and 41..44 of an interrupted attempt
        c = int(rng.integers(0, 270))
        prev[r : r + 6, c : c + 9] = rng.integers(1, 45)
    arr[:] = prev
    w = LabelWriter(arr, next_id=41)
    n = 60
    local = np.zeros((150, 170), np.uint32)
    for i in range(1, n + 1):
        r, c = rng.integers(0, 140), rng.integers(0, 160)
        local[r : r + int(rng.integers(3, 12)), c : c + int(rng.integers(3, 12))] = i
    region, ids, label_px, keep = _commit_reference(prev[40:190, 30:200], local, n, 41)
    got_ids, got_px, got_keep = w.commit((40, 30, local), n)
    np.testing.assert_array_equal(arr[40:190, 30:200], region)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_px, label_px)
    np.testing.assert_array_equal(got_keep, keep)
    assert 0 < keep.sum() < n and w.duplicates == n - keep.sum() and w.next_id == 41 + keep.sum()
