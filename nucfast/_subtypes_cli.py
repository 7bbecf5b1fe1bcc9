"""``nucfast subtypes fit`` / ``nucfast subtypes assign``, and the pictures people look at (a gallery PNG per
subtype, a 2-D UMAP of the embeddings coloured by subtype).

Inputs: ``--data DIR`` (images ``NAME.png`` with instance labels ``NAME_inst.tif``: every nucleus is embedded
with :func:`nucfast.embed_nuclei`) or ``--embeddings FILE`` (``.npy`` (n, d), ``.npz`` with ``embeddings``
[, ``image``, ``label``], or an AnnData ``.h5ad`` with ``obsm["X_nuc2vec"]``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from ._embed import embed_nuclei
from .datasets import list_names, read_labels, read_rgb
from .models.nuc2vec import IMAGENET_MEAN, extract_patches, nucleus_centroids
from .subtypes import PALETTE, assign_subtypes, fit_leiden, fit_subtypes, load_reference

__all__ = ["add_subtypes_subparser", "write_gallery", "write_map"]



def _from_data(data: Path, model: str, max_images: int | None):
    names = list_names(data)[:max_images]
    emb, image, label = [], [], []
    for n in names:
        ids, e = embed_nuclei(read_rgb(data / f"{n}.png"), read_labels(data / f"{n}_inst.tif"), model=model)
        emb.append(e)
        image += [n] * len(ids)
        label.append(ids)
    return np.concatenate(emb), np.array(image), np.concatenate(label)


def _from_file(path: Path):
    if path.suffix == ".npy":
        e = np.load(path, allow_pickle=False)
        return e, np.array([""] * len(e)), np.arange(1, len(e) + 1)
    if path.suffix == ".npz":
        z = np.load(path, allow_pickle=False)
        e = z["embeddings"]
        img = z["image"] if "image" in z else np.array([""] * len(e))
        return e, img, (z["label"] if "label" in z else np.arange(1, len(e) + 1))
    if path.suffix == ".h5ad":
        import anndata  # optional heavy dependency (the AnnData output)

        a = anndata.read_h5ad(path)
        if "X_nuc2vec" not in a.obsm:
            raise ValueError(f"{path} has no obsm['X_nuc2vec'] (nucleus embeddings)")
        lab = a.obs["label"].to_numpy() if "label" in a.obs else np.arange(1, a.n_obs + 1)
        return np.asarray(a.obsm["X_nuc2vec"]), np.array([path.stem] * a.n_obs), lab
    raise ValueError(f"--embeddings must be a .npy, .npz or .h5ad file, got {path.name}")


def _inputs(args):
    if (args.data is None) == (args.embeddings is None):
        raise ValueError("give exactly one of --data DIR and --embeddings FILE")
    if args.data is not None:
        return _from_data(Path(args.data), args.model, args.max_images)
    p = Path(args.embeddings)
    if not p.is_file():
        raise FileNotFoundError(f"--embeddings: no such file {p}")
    return _from_file(p)


def write_gallery(
    data: Path,
    image: np.ndarray,
    label: np.ndarray,
    subtype: np.ndarray,
    out: Path,
    *,
    per_type: int = 32,
    seed: int = 0,
) -> list[Path]:
    """One PNG per subtype: a grid of up to ``per_type`` example nuclei (64 px windows, a random sample)."""
    from PIL import Image  # optional dependency (the slide extra)

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cache: dict[str, tuple] = {}
    paths = []
    for t in np.unique(subtype):
        sel = rng.permutation(np.flatnonzero(subtype == t))[:per_type]
        tiles = []
        for i in sel:
            n = str(image[i])
            if n not in cache:
                rgb, lab = read_rgb(data / f"{n}.png"), read_labels(data / f"{n}_inst.tif")
                ids, cen, _ = nucleus_centroids(torch.from_numpy(lab))
                cache[n] = (torch.from_numpy(np.array(rgb)).permute(2, 0, 1), ids.numpy(), cen)
            x, ids, cen = cache[n]
            j = int(np.searchsorted(ids, label[i]))
            p = extract_patches(x, cen[j : j + 1], 64, fill=[round(m * 255) for m in IMAGENET_MEAN])[0]
            tiles.append(p.permute(1, 2, 0).numpy())
        cols = 8
        rows = (len(tiles) + cols - 1) // cols
        grid = np.full((rows * 66, cols * 66, 3), 255, np.uint8)
        for k, tile in enumerate(tiles):
            r, c = divmod(k, cols)
            grid[r * 66 + 1 : r * 66 + 65, c * 66 + 1 : c * 66 + 65] = tile
        bar = np.zeros((8, grid.shape[1], 3), np.uint8)
        bar[:] = PALETTE[int(t) % len(PALETTE)]
        path = out / f"subtype_{int(t):02d}.png"
        Image.fromarray(np.concatenate([bar, grid])).save(path)
        paths.append(path)
    return paths


def write_map(emb: np.ndarray, subtype: np.ndarray, path: Path, *, max_points: int = 5000, seed: int = 0):
    """A 2-D UMAP (cosine metric, 15 neighbours) of (a sample of) the embeddings, one colour per subtype
    (PNG, 800 x 800)."""
    from PIL import Image, ImageDraw  # optional dependency (the slide extra)
    from umap import UMAP  # optional heavy dependency (umap-learn, with scanpy in the subtypes extra)

    sel = np.random.default_rng(seed).permutation(len(emb))[:max_points]
    nn = max(2, min(15, len(sel) - 1))
    xy = UMAP(n_neighbors=nn, metric="cosine", random_state=seed, n_jobs=1).fit_transform(emb[sel])
    xy = (xy - xy.min(0)) / (np.ptp(xy, 0) + 1e-9) * 760 + 20
    im = Image.new("RGB", (800, 800), (255, 255, 255))
    d = ImageDraw.Draw(im)
    for (x, y), t in zip(xy, subtype[sel], strict=True):
        d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=PALETTE[int(t) % len(PALETTE)])
    for t in np.unique(subtype):
        d.rectangle([10, 10 + 14 * int(t), 20, 20 + 14 * int(t)], fill=PALETTE[int(t) % len(PALETTE)])
        d.text((24, 8 + 14 * int(t)), f"subtype {int(t)}", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def _write_assignments(path: Path, image, label, subtype) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "subtype"])
        for row in zip(image, label, subtype, strict=True):
            w.writerow([row[0], int(row[1]), int(row[2])])


def _cmd_fit(args) -> int:
    emb, image, label = _inputs(args)
    meta = {"model": args.model, "source": str(args.data or args.embeddings)}
    if args.method == "leiden":
        ref = fit_leiden(emb, resolution=args.resolution, seeds=args.seeds, seed=args.seed, meta=meta)
    else:
        ks = range(args.k_min, args.k_max + 1)
        ref = fit_subtypes(emb, k=args.k, ks=ks, seeds=args.seeds, seed=args.seed, meta=meta)
    out = Path(args.output)
    ref.save(out)
    # the k-means labels where the reference kept every nucleus, else the kNN vote
    subtype = ref.labels if len(ref.labels) == len(emb) else assign_subtypes(ref, emb, k_nn=args.k_nn)
    summary = {
        "reference": str(out),
        "k": ref.k,
        "n": int(len(emb)),
        "method": ref.meta.get("method", "kmeans"),
        "stability_ari": ref.meta["stability_ari"],
        "counts": np.bincount(subtype, minlength=ref.k).tolist(),
    }
    if args.gallery:
        g = Path(args.gallery)
        if args.data is not None:
            write_gallery(Path(args.data), image, label, subtype, g)
        write_map(emb, subtype, g / "umap.png")
    print(json.dumps(summary))
    return 0


def _cmd_assign(args) -> int:
    ref = load_reference(args.reference)
    emb, image, label = _inputs(args)
    subtype = assign_subtypes(ref, emb, k_nn=args.k_nn)
    _write_assignments(Path(args.output), image, label, subtype)
    print(
        json.dumps(
            {
                "n": int(len(emb)),
                "k": ref.k,
                "counts": np.bincount(subtype, minlength=ref.k).tolist(),
                "output": str(args.output),
            }
        )
    )
    return 0


def _add_inputs(p) -> None:
    p.add_argument(
        "--data", default=None, help="folder of NAME.png + NAME_inst.tif (every nucleus is embedded)"
    )
    p.add_argument("--embeddings", default=None, help=".npy / .npz / .h5ad (obsm['X_nuc2vec']) of embeddings")
    p.add_argument("--model", default="nuc2vec", help="nucleus-embedding model for --data (default nuc2vec)")
    p.add_argument("--max-images", type=int, default=None, help="only the first N images of --data")
    p.add_argument("--k-nn", type=int, default=15, help="neighbours in the majority vote (default 15)")


def add_subtypes_subparser(sub) -> None:
    """``nucfast subtypes fit`` and ``nucfast subtypes assign``."""
    s = sub.add_parser("subtypes", help="nucleus subtypes from Nuc2Vec embeddings (fit a reference, assign)")
    ss = s.add_subparsers(dest="subtypes_command", metavar="ACTION", required=True)
    f = ss.add_parser("fit", help="cluster a cohort's embeddings (k-means or Leiden, chosen by stability)")
    _add_inputs(f)
    f.add_argument("-o", "--output", required=True, help="reference file (.safetensors)")
    f.add_argument("--k", type=int, default=None, help="number of subtypes (default: chosen by stability)")
    f.add_argument("--k-min", type=int, default=4)
    f.add_argument("--k-max", type=int, default=12)
    f.add_argument("--seeds", type=int, default=5, help="k-means fits per k for the stability (default 5)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--method", choices=("kmeans", "leiden"), default="kmeans",
                   help="k-means (k by stability) or Leiden on the cosine kNN graph (scanpy; resolution by "
                   "stability)")  # fmt: skip
    f.add_argument("--resolution", type=float, default=None, help="Leiden resolution (default: by stability)")
    f.add_argument("--gallery", default=None, help="folder for subtype_XX.png galleries and umap.png")
    f.set_defaults(func=_cmd_fit)
    a = ss.add_parser("assign", help="label nuclei by k-nearest-neighbour majority vote in a reference")
    _add_inputs(a)
    a.add_argument("--reference", required=True, help="file written by nucfast subtypes fit")
    a.add_argument("-o", "--output", required=True, help="CSV of image, label, subtype")
    a.set_defaults(func=_cmd_assign)
