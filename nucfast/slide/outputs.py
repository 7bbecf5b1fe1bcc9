"""Final outputs of a slide run, each streamed tile by tile from the committed per-tile tables.

All coordinates are level-0 pixels of the slide in the continuous convention of QuPath, shapely and GIS
tools (pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)`` in ``(x, y)``), or microns (``* mpp``). One id per
nucleus links every output: the table's ``id``, the GeoJSON's ``properties.nucfast_id``, the value of the
nucleus's pixels in ``labels.zarr`` and the AnnData ``obs`` index (``str(id)``).

- ``nuclei.parquet``: GeoParquet 1.1 (``geometry``: WKB (Multi)Polygon along the pixel edges, so its area
  is the pixel count exactly; ``crs`` null = pixel space), columns of :data:`nucfast.slide._nuclei.COLUMNS`,
  file metadata ``geo`` and ``nucfast`` (slide, fingerprint, mpp, units of every column, nucfast version,
  model and weights sha256).
- ``nuclei.geojson`` / ``nuclei.geojson.gz``: a QuPath FeatureCollection of detections (``id`` = uuid5 of
  the slide fingerprint and the nucleus id, unique across slides; ``measurements`` named as QuPath does,
  in µm; ``classification`` = the nucleus subtype when the table has one, else ``Nucleus``).
- ``nuclei.h5ad``: AnnData (``obs`` = the table without geometry, index ``str(id)``; ``obsm["spatial"]`` =
  centroid (x, y) in µm; ``uns["nucfast"]`` = the metadata; ``uns["spatialdata_attrs"]`` links ``obs``
  to the ``nuclei`` label image by ``instance_id``), written with h5py in the AnnData on-disk format
  (streamed, bounded memory), read back by ``anndata.read_h5ad`` in the tests.
- ``overlay.png``: the slide thumbnail with contours; ``overlay/region_<row>_<col>.png``: full-resolution
  level-0 crops with contours, around the densest tiles (the thumbnail cannot show a nucleus).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import uuid
from pathlib import Path

import numpy as np

from ._embedding import subtype_class, tile_latent
from ._nuclei import COLUMNS

__all__ = [
    "slide_fingerprint",
    "write_table",
    "write_geojson",
    "write_h5ad",
    "write_overlay",
    "write_overlay_regions",
    "write_tile_embeddings",
    "MEASUREMENTS",
    "geo_metadata",
]

#: GeoJSON ``measurements`` (QuPath names) <- table column
MEASUREMENTS = {
    "Nucleus: Area µm^2": "area_um2",
    "Nucleus: Perimeter µm": "perimeter_um",
    "Nucleus: Eccentricity": "eccentricity",
    "Nucleus: Solidity": "solidity",
    "Nucleus: Hematoxylin OD mean": "hematoxylin_mean",
    "Nucleus: Eosin OD mean": "eosin_mean",
    "Detection probability": "score",
    "Centroid X µm": "centroid_col_um",
    "Centroid Y µm": "centroid_row_um",
}
UNITS = {name: unit for name, _, unit, _ in COLUMNS}


def slide_fingerprint(path, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of the slide's size and its first and last ``chunk`` bytes: cheap on a multi-GB file,
    different for different scans (headers, descriptions and tile data differ), stable across runs."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            h.update(f.read(chunk))
    return h.hexdigest()


def _tile_file(tiles_dir: Path, i: int) -> Path:
    return tiles_dir / f"{i:06d}.parquet"


def _replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def geo_metadata(bbox) -> dict:
    """GeoParquet 1.1 ``geo`` metadata for the ``geometry`` column in pixel coordinates (crs null)."""
    return {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Polygon", "MultiPolygon"],
                "crs": None,  # null = undefined: level-0 pixel coordinates, not a geographic CRS
                "orientation": "counterclockwise",
                "bbox": [float(b) for b in bbox],
            }
        },
    }


def write_table(tiles_dir: Path, order, path: Path, schema, metadata: dict) -> Path:
    """GeoParquet: the per-tile tables concatenated (one tile in memory at a time), with ``geo`` and
    ``nucfast`` metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bbox = [np.inf, np.inf, -np.inf, -np.inf]
    for i in order:  # the bbox of all geometries, from the table's bbox columns (cheap pass)
        t = pq.read_table(
            _tile_file(tiles_dir, i), columns=["bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"]
        )
        if t.num_rows:
            bbox[0] = min(bbox[0], pa.compute.min(t["bbox_col0"]).as_py())
            bbox[1] = min(bbox[1], pa.compute.min(t["bbox_row0"]).as_py())
            bbox[2] = max(bbox[2], pa.compute.max(t["bbox_col1"]).as_py())
            bbox[3] = max(bbox[3], pa.compute.max(t["bbox_row1"]).as_py())
    if not np.isfinite(bbox[0]):
        bbox = [0, 0, 0, 0]
    md = {b"geo": json.dumps(geo_metadata(bbox)).encode(), b"nucfast": json.dumps(metadata).encode()}
    schema = schema.with_metadata(md)
    tmp = path.with_name(path.name + ".tmp")
    with pq.ParquetWriter(tmp, schema, compression="zstd") as w:
        for i in order:
            t = pq.read_table(_tile_file(tiles_dir, i), columns=schema.names)
            if t.num_rows:
                w.write_table(t.cast(schema))
    _replace(tmp, path)
    return path


_TRAILING_ZERO = re.compile(r"\.0(?=[,\]])")
_NUCLEUS_CLASS = {"name": "Nucleus", "color": [32, 32, 200]}


def write_geojson(tiles_dir: Path, order, path: Path, fingerprint: str) -> Path:
    """QuPath GeoJSON FeatureCollection of detections, streamed tile by tile (``.gz`` name: gzipped)."""
    import pyarrow.parquet as pq
    import shapely

    ns = uuid.UUID(fingerprint[:32])
    cols = ["id", "tile", "geometry", *MEASUREMENTS.values()]
    tmp = path.with_name(path.name + ".tmp")
    raw = open(tmp, "wb")
    f = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) if path.suffix == ".gz" else raw
    out = io.TextIOWrapper(f, encoding="utf-8", newline="\n")
    try:
        out.write('{"type":"FeatureCollection","features":[\n')
        first = True
        for i in order:
            pf = pq.ParquetFile(_tile_file(tiles_dir, i))
            names = pf.schema_arrow.names
            t = pf.read(columns=cols + (["subtype"] if "subtype" in names else []))
            if not t.num_rows:
                continue
            g = shapely.from_wkb(t.column("geometry").to_numpy(zero_copy_only=False))
            # 1/1000 px is plenty (vertices are >= 1 working px apart, so rounding keeps the topology)
            geoms = shapely.to_geojson(shapely.transform(g, lambda c: np.round(c, 3)))
            ids = t.column("id").to_pylist()
            meas = {name: t.column(c).to_numpy() for name, c in MEASUREMENTS.items()}
            sub = t.column("subtype").to_pylist() if "subtype" in names else None
            classes = {k: subtype_class(k) for k in set(sub)} if sub is not None else None
            tile = int(t.column("tile")[0].as_py())
            for k, nid in enumerate(ids):
                m = {name: (float(v[k]) if np.isfinite(v[k]) else None) for name, v in meas.items()}
                cls = _NUCLEUS_CLASS if sub is None else classes[sub[k]]
                props = {
                    "objectType": "detection",
                    "classification": cls,
                    "nucfast_id": nid,
                    "tile": tile,
                    "measurements": m,
                }
                feat = (
                    f'{{"type":"Feature","id":"{uuid.uuid5(ns, str(nid))}",'
                    f'"geometry":{_TRAILING_ZERO.sub("", geoms[k])},'
                    f'"properties":{json.dumps(props, separators=(",", ":"), ensure_ascii=False)}}}'
                )
                out.write(feat if first else ",\n" + feat)
                first = False
        out.write("\n]}\n")
        out.flush()
    finally:
        out.close()  # closes the gzip stream and the file
    _replace(tmp, path)
    return path


# -- AnnData (h5ad) through h5py, in the anndata on-disk format ------------------------------------
def _h5_attrs(obj, encoding: str, version: str, **extra) -> None:
    obj.attrs["encoding-type"] = encoding
    obj.attrs["encoding-version"] = version
    import h5py

    for k, v in extra.items():
        if isinstance(v, np.ndarray) and v.dtype == object:  # string arrays, as anndata writes them
            obj.attrs.create(k, v, shape=v.shape, dtype=h5py.string_dtype())
        else:
            obj.attrs[k] = v


def _h5_json_dict(group, d: dict) -> None:
    """A nested dict of str / numbers / lists as anndata ``dict`` / ``string`` / ``numeric-scalar`` /
    ``array`` elements."""
    import h5py

    _h5_attrs(group, "dict", "0.1.0")
    for k, v in d.items():
        if isinstance(v, dict):
            _h5_json_dict(group.create_group(k), v)
        elif v is None:
            continue
        elif isinstance(v, str):
            ds = group.create_dataset(k, data=v, dtype=h5py.string_dtype())
            _h5_attrs(ds, "string", "0.2.0")
        elif isinstance(v, bool | int | float | np.number):
            ds = group.create_dataset(k, data=v)
            _h5_attrs(ds, "numeric-scalar", "0.2.0")
        else:
            a = np.asarray(v)
            if a.dtype.kind in "USO":
                ds = group.create_dataset(k, data=a.astype(object), dtype=h5py.string_dtype())
                _h5_attrs(ds, "string-array", "0.2.0")
            else:
                ds = group.create_dataset(k, data=a)
                _h5_attrs(ds, "array", "0.2.0")


def _h5_categorical(group, name: str, codes, categories) -> None:
    import h5py

    g = group.create_group(name)
    _h5_attrs(g, "categorical", "0.2.0", ordered=False)
    _h5_attrs(g.create_dataset("codes", data=codes), "array", "0.2.0")
    cats = g.create_dataset("categories", data=np.array(categories, object), dtype=h5py.string_dtype())
    _h5_attrs(cats, "string-array", "0.2.0")


def write_h5ad(tiles_dir: Path, order, path: Path, n: int, metadata: dict, *, embedding_dim: int = 0,
               n_subtypes: int = 0) -> Path:  # fmt: skip
    """``nuclei.h5ad`` (see the module docstring), columns appended tile by tile; with ``embedding_dim``
    the tile tables' ``nuc2vec`` column goes to ``obsm["X_nuc2vec"]``, with ``n_subtypes`` their
    ``subtype`` column to a categorical ``obs["subtype"]`` (categories ``"Subtype 0"``, ...)."""
    import h5py
    import pyarrow.parquet as pq

    names = [c for c, *_ in COLUMNS] + ["nuc2vec"] * bool(embedding_dim) + ["subtype"] * bool(n_subtypes)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        _h5_attrs(f, "anndata", "0.1.0")
        obs = f.create_group("obs")
        cols = [c for c, *_ in COLUMNS if c != "id"] + ["instance_id"]
        _h5_attrs(
            obs,
            "dataframe",
            "0.2.0",
            _index="_index",
            **{"column-order": np.array(cols + ["region"] + (["subtype"] if n_subtypes else []), object)},
        )
        sdt = h5py.string_dtype()
        index = obs.create_dataset("_index", shape=(n,), dtype=sdt)
        _h5_attrs(index, "string-array", "0.2.0")
        dsets = {}
        for c, typ, *_ in COLUMNS:
            if c == "id":
                continue
            dsets[c] = obs.create_dataset(c, shape=(n,), dtype=np.dtype(typ))
            _h5_attrs(dsets[c], "array", "0.2.0")
        dsets["instance_id"] = obs.create_dataset("instance_id", shape=(n,), dtype=np.int64)
        _h5_attrs(dsets["instance_id"], "array", "0.2.0")
        # categorical with one category: the label image's name
        _h5_categorical(obs, "region", np.zeros(n, np.int8), ["nuclei"])
        if n_subtypes:
            cats = [f"Subtype {k}" for k in range(n_subtypes)]
            _h5_categorical(obs, "subtype", np.zeros(n, np.int16), cats)
            sub_codes = obs["subtype"]["codes"]
        obsm = f.create_group("obsm")
        _h5_attrs(obsm, "dict", "0.1.0")
        spatial = obsm.create_dataset("spatial", shape=(n, 2), dtype=np.float64)
        _h5_attrs(spatial, "array", "0.2.0")
        if embedding_dim:
            emb = obsm.create_dataset("X_nuc2vec", shape=(n, embedding_dim), dtype=np.float32,
                                      chunks=(min(max(n, 1), 4096), embedding_dim))  # fmt: skip
            _h5_attrs(emb, "array", "0.2.0")
        k = 0
        for i in order:
            t = pq.read_table(_tile_file(tiles_dir, i), columns=names)
            m = t.num_rows
            if not m:
                continue
            ids = t.column("id").to_numpy()
            index[k : k + m] = ids.astype(str).astype(object)
            for c in dsets:
                dsets[c][k : k + m] = ids if c == "instance_id" else t.column(c).to_numpy()
            spatial[k : k + m, 0] = t.column("centroid_col_um").to_numpy()
            spatial[k : k + m, 1] = t.column("centroid_row_um").to_numpy()
            if embedding_dim:
                emb[k : k + m] = t.column("nuc2vec").combine_chunks().flatten().to_numpy().reshape(m, -1)
            if n_subtypes:
                sub_codes[k : k + m] = t.column("subtype").to_numpy()
            k += m
        if k != n:
            raise RuntimeError(f"{path}: expected {n} nuclei in the tile tables, found {k}")
        var = f.create_group("var")
        _h5_attrs(var, "dataframe", "0.2.0", _index="_index", **{"column-order": np.array([], object)})
        vi = var.create_dataset("_index", shape=(0,), dtype=sdt)
        _h5_attrs(vi, "string-array", "0.2.0")
        for g in ("obsp", "varm", "varp", "layers"):
            _h5_attrs(f.create_group(g), "dict", "0.1.0")
        uns = f.create_group("uns")
        _h5_json_dict(
            uns,
            {
                "nucfast": {"json": json.dumps(metadata)},
                "spatialdata_attrs": {
                    "region": "nuclei",
                    "region_key": "region",
                    "instance_key": "instance_id",
                },
            },
        )
    _replace(tmp, path)
    return path


def write_anndata(path: Path, index, obs: dict, obsm: dict, metadata: dict) -> Path:
    """A small AnnData ``.h5ad`` held in memory: ``obs`` columns (numpy arrays), ``obsm`` arrays, no ``X``
    and no ``var``; ``uns["nucfast"]["json"]`` = the metadata."""
    import h5py

    tmp = path.with_name(path.name + ".tmp")
    sdt = h5py.string_dtype()
    with h5py.File(tmp, "w") as f:
        _h5_attrs(f, "anndata", "0.1.0")
        g = f.create_group("obs")
        _h5_attrs(g, "dataframe", "0.2.0", _index="_index", **{"column-order": np.array(list(obs), object)})
        ds = g.create_dataset("_index", data=np.array(list(index), object), dtype=sdt)
        _h5_attrs(ds, "string-array", "0.2.0")
        for k, v in obs.items():
            _h5_attrs(g.create_dataset(k, data=np.asarray(v)), "array", "0.2.0")
        g = f.create_group("obsm")
        _h5_attrs(g, "dict", "0.1.0")
        for k, v in obsm.items():
            _h5_attrs(g.create_dataset(k, data=np.asarray(v)), "array", "0.2.0")
        var = f.create_group("var")
        _h5_attrs(var, "dataframe", "0.2.0", _index="_index", **{"column-order": np.array([], object)})
        _h5_attrs(var.create_dataset("_index", shape=(0,), dtype=sdt), "string-array", "0.2.0")
        for k in ("obsp", "varm", "varp", "layers"):
            _h5_attrs(f.create_group(k), "dict", "0.1.0")
        _h5_json_dict(f.create_group("uns"), {"nucfast": {"json": json.dumps(metadata)}})
    _replace(tmp, path)
    return path


# -- pictures --------------------------------------------------------------------------------------
def _encode_png(img_bgr: np.ndarray, path: Path) -> Path:
    import cv2

    ok, buf = cv2.imencode(".png", img_bgr)
    if not ok:
        raise OSError(f"cannot encode PNG {path}")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(buf.tobytes())
    _replace(tmp, path)
    return path


def _draw(img: np.ndarray, geoms, ds: float, ox: float, oy: float, color, thickness: int) -> None:
    """Draw the exterior and interior rings of ``geoms`` (level-0 px) on ``img`` at 1/``ds`` scale, with
    ``(ox, oy)`` the level-0 position of the image's top-left corner (sub-pixel: 4 fractional bits)."""
    import cv2
    import shapely

    rings = shapely.get_rings(shapely.get_parts(geoms))
    if not len(rings):
        return
    coords, idx = shapely.get_coordinates(rings, return_index=True)
    # pixel-edge coordinates -> the centres of the boundary pixels of the image (-0.5)
    pts = np.round(((coords - (ox, oy)) / ds - 0.5) * 16).astype(np.int32)
    splits = np.flatnonzero(np.diff(idx)) + 1
    cv2.polylines(
        img, [p.reshape(-1, 1, 2) for p in np.split(pts, splits)], True, color, thickness, cv2.LINE_8, 4
    )


#: Longest side of ``overlay.png``.
OVERLAY_SIZE = 2048


def write_overlay(
    reader, tiles_dir: Path, order, path: Path, max_size: int = OVERLAY_SIZE, *, thumb=None
) -> Path:
    """Thumbnail PNG with the nucleus contours (green), drawn tile by tile. ``thumb``: the reader's
    ``thumbnail(max_size)`` when already read."""
    import pyarrow.parquet as pq
    import shapely

    thumb, ds = thumb if thumb is not None else reader.thumbnail(max_size)
    img = np.ascontiguousarray(thumb[..., ::-1])  # BGR for OpenCV
    for i in order:
        wkb = pq.read_table(_tile_file(tiles_dir, i), columns=["geometry"]).column("geometry")
        if len(wkb):
            _draw(img, shapely.from_wkb(wkb.to_numpy(zero_copy_only=False)), ds, 0, 0, (0, 200, 0), 1)
    return _encode_png(img, path)


def overlay_regions(tiles, counts: dict, scale: float, level0_shape, *, n: int = 4, size: int = 1024):
    """Up to ``n`` level-0 regions ``(row, col, h, w)`` of ``size`` px centred on the tiles with the most
    nuclei, no two from overlapping places (deterministic: ties by tile index)."""
    H0, W0 = level0_shape
    chosen: list = []
    for t in sorted(tiles, key=lambda t: (-counts.get(t.index, 0), t.index)):
        if len(chosen) == n or counts.get(t.index, 0) == 0:
            break
        cr, cc = (t.row + t.height / 2) * scale, (t.col + t.width / 2) * scale
        h, w = min(size, H0), min(size, W0)
        r0 = int(min(max(cr - h / 2, 0), H0 - h))
        c0 = int(min(max(cc - w / 2, 0), W0 - w))
        if all(abs(r0 - r) >= h or abs(c0 - c) >= w for r, c, *_ in chosen):
            chosen.append((r0, c0, h, w))
    return chosen


def write_overlay_regions(reader, tiles_dir: Path, order, out_dir: Path, regions) -> list:
    """``region_<row>_<col>.png`` at level-0 resolution with every nucleus contour (green, 1 px) for each
    region ``(row, col, h, w)``; only the tiles whose nuclei can fall in a region are read."""
    import pyarrow.parquet as pq
    import shapely

    out_dir.mkdir(exist_ok=True)
    for old in out_dir.glob("region_*.png"):
        old.unlink()
    imgs = [np.ascontiguousarray(reader.read_region(0, (r, c), (h, w))[..., ::-1]) for r, c, h, w in regions]
    for i in order:
        t = pq.read_table(
            _tile_file(tiles_dir, i), columns=["geometry", "bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"]
        )
        if not t.num_rows:
            continue
        b = [t.column(c).to_numpy() for c in ("bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1")]
        geoms = None
        for img, (r, c, h, w) in zip(imgs, regions, strict=True):
            hit = (b[2] > r) & (b[0] < r + h) & (b[3] > c) & (b[1] < c + w)
            if hit.any():
                if geoms is None:
                    geoms = shapely.from_wkb(t.column("geometry").to_numpy(zero_copy_only=False))
                _draw(img, geoms[hit], 1.0, c, r, (0, 255, 0), 1)
    return [
        _encode_png(img, out_dir / f"region_{r}_{c}.png")
        for img, (r, c, _, _) in zip(imgs, regions, strict=True)
    ]


def write_tile_embeddings(
    tiles_dir: Path,
    tiles,
    out_dir: Path,
    *,
    scale: float,
    mpp0: float,
    model: str,
    metadata: dict,
    h5ad: bool,
) -> dict:
    """``tiles.parquet`` (one row per tissue tile: index, level-0 box, centre in um, nucleus count, latent)
    and ``tiles.h5ad`` (AnnData: ``obs`` = those columns, ``obsm["X_pathgan"]``, ``obsm["spatial"]``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ("tile", "row0", "col0", "row1", "col1", "centre_row_um", "centre_col_um", "n_nuclei")
    rows = {k: [] for k in names}
    lat = []
    for t in sorted(tiles, key=lambda t: t.index):
        pf = pq.ParquetFile(tiles_dir / f"{t.index:06d}.parquet")
        v = tile_latent(pf.schema_arrow.metadata)
        if v is None:
            raise RuntimeError(f"tile table {t.index:06d}.parquet has no tile latent (run with tile_embed)")
        r0, c0 = t.row * scale, t.col * scale
        r1, c1 = (t.row + t.height) * scale, (t.col + t.width) * scale
        vals = (t.index, r0, c0, r1, c1, (r0 + r1) / 2 * mpp0, (c0 + c1) / 2 * mpp0, pf.metadata.num_rows)
        for k, x in zip(names, vals, strict=True):
            rows[k].append(x)
        lat.append(v)
    d = lat[0].shape[0] if lat else 0
    X = np.stack(lat).astype(np.float32) if lat else np.zeros((0, d), np.float32)
    types = {"tile": np.int32, "n_nuclei": np.int64}
    cols = {k: np.asarray(v, types.get(k, np.float64)) for k, v in rows.items()}
    for k in ("row0", "col0", "row1", "col1"):
        cols[k] = np.round(cols[k]).astype(np.int64)
    md = {
        **metadata,
        "tile_model": model,
        "latent_dim": d,
        "coordinates": "row0/col0/row1/col1: level-0 pixels of the tile core (exclusive end)",
    }
    arrays = [pa.array(v) for v in cols.values()]
    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), d))
    table = pa.Table.from_arrays(arrays, names=[*cols, "pathgan"]).replace_schema_metadata(
        {b"nucfast": json.dumps(md).encode()}
    )
    paths = {}
    p = out_dir / "tiles.parquet"
    tmp = p.with_name(p.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    _replace(tmp, p)
    paths["tile_table"] = p
    if h5ad:
        spatial = np.stack([cols["centre_col_um"], cols["centre_row_um"]], 1)
        paths["tile_h5ad"] = write_anndata(
            out_dir / "tiles.h5ad",
            [str(i) for i in cols["tile"]],
            cols,
            {"X_pathgan": X, "spatial": spatial},
            md,
        )
    return paths
