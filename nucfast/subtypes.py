"""Nucleus subtypes without labels: cluster a cohort's Nuc2Vec embeddings once (:func:`fit_subtypes`),
then label new nuclei by the majority subtype of their nearest neighbours in that reference
(:func:`assign_subtypes`), as the authors do (REFERENCE.md section 6: k nearest neighbours in a reference).

- **fit**: k-means (scikit-learn, ``n_init`` restarts) for every k of ``ks``, k chosen by stability: for
  ``seeds`` seeds, k-means is fitted on a random ``frac`` subsample and predicts every nucleus; stability =
  mean adjusted Rand index over all pairs of seeds. Merging true clusters is stable too (k below the truth
  often scores ARI ~1), so the k chosen is the *largest* whose stability is within
  :data:`STABILITY_TOLERANCE` (0.02) of the best. The reference keeps up to ``max_reference`` embeddings
  (a seeded subsample) with their k-means labels.
- **assign**: the ``k_nn`` nearest reference vectors by cosine similarity (= Euclidean on unit vectors), in
  chunks (torch matmul + top-k, no index library); ties between subtypes go to the nearer neighbour.
- **files**: a reference is safetensors through the model layer's weights I/O (``embeddings``, ``labels``,
  ``centroids`` + JSON metadata: k, stability table, model, ...); no pickles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from .models import load_weights, save_weights

#: subtype colours (RGB), also the GeoJSON ``classification`` colours
PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (0, 0, 128),
]

#: k is the largest number of subtypes whose stability is within this of the most stable k
STABILITY_TOLERANCE = 0.02

__all__ = [
    "STABILITY_TOLERANCE",
    "SubtypeReference",
    "fit_subtypes",
    "assign_subtypes",
    "load_reference",
    "stability_by_k",
]


@dataclass
class SubtypeReference:
    embeddings: np.ndarray  # (m, d) float32, unit norm
    labels: np.ndarray  # (m,) int64 subtype of each reference vector
    centroids: np.ndarray  # (k, d) float32 k-means centres
    meta: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def save(self, path) -> None:
        t = {
            "embeddings": torch.from_numpy(np.ascontiguousarray(self.embeddings, np.float32)),
            "labels": torch.from_numpy(np.ascontiguousarray(self.labels, np.int64)),
            "centroids": torch.from_numpy(np.ascontiguousarray(self.centroids, np.float32)),
        }
        save_weights(Path(path), t, metadata={"kind": "nuc2vec-subtypes", **self.meta}, half=False)


def load_reference(path) -> SubtypeReference:
    try:
        t, meta = load_weights(Path(path))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ValueError(f"cannot read subtype reference {path}: {e}") from e
    if meta.get("kind") != "nuc2vec-subtypes" or not {"embeddings", "labels", "centroids"} <= set(t):
        raise ValueError(f"{path} is not a subtype reference (nucfast subtypes fit writes one)")
    return SubtypeReference(t["embeddings"].numpy(), t["labels"].numpy(), t["centroids"].numpy(), meta)


def _check_embeddings(x, name="embeddings") -> np.ndarray:
    x = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)
    if x.ndim != 2 or x.shape[0] == 0 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a non-empty float (n, d) array, got {x.shape} {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x.astype(np.float32)


def stability_by_k(x: np.ndarray, ks, *, seeds: int = 5, frac: float = 0.8, seed: int = 0, n_init: int = 3):
    """Mean pairwise ARI across ``seeds`` k-means fits on ``frac`` subsamples, for every k of ``ks``."""
    from sklearn.cluster import KMeans  # optional heavy dependency (scikit-learn)
    from sklearn.metrics import adjusted_rand_score

    out = {}
    for k in ks:
        labs = []
        for s in range(seeds):
            sub = np.random.default_rng(seed + s).permutation(len(x))[: max(int(frac * len(x)), k)]
            labs.append(KMeans(int(k), n_init=n_init, random_state=seed + s).fit(x[sub]).predict(x))
        out[int(k)] = float(np.mean([adjusted_rand_score(a, b) for a, b in combinations(labs, 2)]))
    return out


def fit_subtypes(
    embeddings,
    *,
    k: int | None = None,
    ks=range(4, 13),
    seeds: int = 5,
    frac: float = 0.8,
    max_reference: int = 200_000,
    seed: int = 0,
    meta: dict | None = None,
) -> SubtypeReference:
    """Cluster embeddings (n, d) into subtypes; ``k=None`` chooses k in ``ks`` by stability (module doc)."""
    from sklearn.cluster import KMeans  # optional heavy dependency (scikit-learn)

    x = _check_embeddings(embeddings)
    ks = [int(v) for v in ([k] if k is not None else ks)]
    if min(ks) < 2 or max(ks) > len(x):
        raise ValueError(f"k must be in [2, {len(x)}] (number of nuclei), got {ks}")
    table = stability_by_k(x, ks, seeds=seeds, frac=frac, seed=seed) if (k is None and seeds > 1) else {}
    if k is not None or not table:
        best = k if k is not None else ks[0]
    else:  # the largest k within STABILITY_TOLERANCE of the most stable (merging true clusters is stable too)
        top = max(table.values())
        best = max(v for v, a in table.items() if a >= top - STABILITY_TOLERANCE)
    km = KMeans(best, n_init=10, random_state=seed).fit(x)
    keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:max_reference])
    info = {
        "k": int(best),
        "stability_ari": {str(a): b for a, b in table.items()},
        "n_fit": int(len(x)),
        "selection": f"largest k with mean pairwise ARI >= best - {STABILITY_TOLERANCE}"
        if k is None
        else "given",
    }
    return SubtypeReference(
        x[keep],
        km.labels_[keep].astype(np.int64),
        km.cluster_centers_.astype(np.float32),
        {**info, **(meta or {})},
    )


def _leiden(x: np.ndarray, resolution: float, seed: int, n_neighbors: int) -> np.ndarray:
    import anndata  # optional heavy dependencies (the subtypes extra: scanpy, igraph)
    import scanpy as sc

    a = anndata.AnnData(x)
    sc.pp.neighbors(a, n_neighbors=n_neighbors, use_rep="X", metric="cosine", random_state=seed)
    sc.tl.leiden(a, resolution=resolution, flavor="igraph", n_iterations=2, random_state=seed)
    return a.obs["leiden"].astype(int).to_numpy()


def stability_by_resolution(x: np.ndarray, resolutions, *, seeds: int = 5, frac: float = 0.8, seed: int = 0,
                            n_neighbors: int = 15):  # fmt: skip
    """Mean pairwise ARI (on the nuclei two runs share) of Leiden on the cosine kNN graph of ``seeds``
    ``frac`` subsamples, for every resolution; and the mean number of clusters."""
    from sklearn.metrics import adjusted_rand_score  # optional heavy dependency (scikit-learn)

    m = int(frac * len(x))
    subs = [np.sort(np.random.default_rng(seed + s).permutation(len(x))[:m]) for s in range(seeds)]
    out, sizes = {}, {}
    for r in resolutions:
        labs = [_leiden(x[sub], float(r), seed + i, n_neighbors) for i, sub in enumerate(subs)]
        aris = []
        for (i, a), (j, b) in combinations(enumerate(labs), 2):
            _, ia, ib = np.intersect1d(subs[i], subs[j], return_indices=True)
            aris.append(adjusted_rand_score(a[ia], b[ib]))
        out[float(r)] = float(np.mean(aris))
        sizes[float(r)] = float(np.mean([len(np.unique(v)) for v in labs]))
    return out, sizes


def fit_leiden(
    embeddings,
    *,
    resolution: float | None = None,
    resolutions=(0.1, 0.2, 0.3, 0.5, 0.8, 1.2),
    seeds: int = 5,
    frac: float = 0.8,
    n_neighbors: int = 15,
    max_reference: int = 200_000,
    seed: int = 0,
    meta: dict | None = None,
) -> SubtypeReference:
    """Subtypes by Leiden community detection (scanpy, igraph) on the cosine k-nearest-neighbour graph of
    the embeddings; ``resolution=None`` picks the largest resolution whose stability (mean pairwise ARI
    across subsamples) is within :data:`STABILITY_TOLERANCE` of the most stable, as ``fit_subtypes``
    does for k. The reference is the same kind as k-means': vectors, their subtype and the centroids."""
    x = _check_embeddings(embeddings)
    rs = [float(v) for v in ([resolution] if resolution is not None else resolutions)]
    table, sizes = ({}, {})
    if resolution is None and seeds > 1:
        kw = dict(seeds=seeds, frac=frac, seed=seed, n_neighbors=n_neighbors)
        table, sizes = stability_by_resolution(x, rs, **kw)
    if resolution is not None or not table:
        best = rs[0]
    else:
        top = max(table.values())
        best = max(v for v, a in table.items() if a >= top - STABILITY_TOLERANCE)
    labels = _leiden(x, best, seed, n_neighbors).astype(np.int64)
    k = int(labels.max()) + 1
    cent = np.stack([x[labels == t].mean(0) for t in range(k)])
    cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
    keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:max_reference])
    info = {
        "method": "leiden",
        "k": k,
        "resolution": best,
        "stability_ari": {str(a): b for a, b in table.items()},
        "clusters_by_resolution": {str(a): b for a, b in sizes.items()},
        "n_fit": int(len(x)),
        "selection": f"largest resolution with mean pairwise ARI >= best - {STABILITY_TOLERANCE}"
        if resolution is None
        else "given",
    }
    return SubtypeReference(x[keep], labels[keep], cent.astype(np.float32), {**info, **(meta or {})})


def assign_subtypes(
    reference: SubtypeReference, embeddings, *, k_nn: int = 15, chunk: int = 4096
) -> np.ndarray:
    """Subtype (int64, (n,)) of each embedding: the majority among its ``k_nn`` nearest reference vectors."""
    x = torch.from_numpy(_check_embeddings(embeddings))
    ref = torch.from_numpy(np.ascontiguousarray(reference.embeddings, np.float32))
    if x.shape[1] != ref.shape[1]:
        raise ValueError(f"embeddings have {x.shape[1]} dimensions but the reference {ref.shape[1]}")
    if not (isinstance(k_nn, int) and k_nn >= 1):
        raise ValueError(f"k_nn must be a positive int, got {k_nn!r}")
    kk = min(k_nn, ref.shape[0])
    lab = torch.from_numpy(np.asarray(reference.labels, np.int64))
    out = torch.empty(x.shape[0], dtype=torch.int64)
    n_types = int(lab.max()) + 1
    for s in range(0, x.shape[0], chunk):
        sim, idx = (x[s : s + chunk] @ ref.T).topk(kk, dim=1)
        votes = torch.zeros(idx.shape[0], n_types)
        # each vote weighs 1 plus a tiny rank bonus, so ties go to the subtype of the nearer neighbours
        w = 1.0 + 1e-3 * torch.linspace(1, 0, kk)[None].expand_as(sim)
        votes.scatter_add_(1, lab[idx], w)
        out[s : s + chunk] = votes.argmax(1)
    return out.numpy()
