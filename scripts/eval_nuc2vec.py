"""Nuc2Vec embeddings vs a random encoder and hand-crafted features on MoNuSeg (issue 12, item 5).

    python scripts/eval_nuc2vec.py --data ../shared/data/monuseg_train --out /work/runs/nuc2vec_eval

Feature sets, per nucleus of the 30 images (annotated label maps):
- ``nuc2vec``: the shipped (or ``--model``) embeddings; ``random``: the same architecture untrained (seed 0);
- ``handcrafted``: :func:`nucfast.features.handcrafted_features` (area, axes, eccentricity, solidity,
  mean/std of RGB and H/E optical density), standardised;
- ``nuc2vec_trunk`` (extra row, not the embedding): the same trained network's pooled trunk features
  (256-d) before the MLP head, the usual input of linear probes in self-supervised work.
The probes (a), (b), (d) use nuclei of all 30 images; 24 of them trained the encoder (without labels).

Measures (all probes on standardised features, folds split by image):
(a) ridge probes predicting each morphology measure (R^2, 5-fold GroupKFold by image); the hand-crafted set
    contains the targets, so its R^2 is 1 by construction (reported as the ceiling);
(b) organ-of-origin probe: logistic regression, leave-one-image-out (each organ has >= 2 images), nucleus
    accuracy, balanced accuracy and image-level majority vote;
(c) retrieval: every nucleus of the held-out validation images (never trained on) under two independent
    augmentations (the training views: crop, colour jitter, blur, rotation, flips; and "geometric": the
    same without colour jitter); top-1 = the nearest second view is its own (hand-crafted features are
    recomputed on each augmented patch with its warped nucleus mask);
(d) subtype stability: k-means (k = 4..12) on 80 % subsamples with 5 seeds, mean pairwise ARI of the
    labels of all nuclei.
Writes ``out/eval.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

import nucfast
from nucfast import models
from nucfast.datasets import list_names, read_labels, read_rgb
from nucfast.features import FEATURE_NAMES, MORPHOLOGY, handcrafted_features
from nucfast.models.nuc2vec import IMAGENET_MEAN, embed_labels, extract_patches, nucleus_centroids
from nucfast.train.nuc2vec import augment_views

#: MoNuSeg 2018 training images by TCGA tissue source site (the MoNuSeg site calls the lung images "liver";
#: TCGA sites 18/21 are LUSC and 38/49/50 LUAD)
ORGAN_OF_SITE = {
    "A7": "breast",
    "AR": "breast",
    "E2": "breast",
    "B0": "kidney",
    "HE": "kidney",
    "18": "lung",
    "21": "lung",
    "38": "lung",
    "49": "lung",
    "50": "lung",
    "G9": "prostate",
    "CH": "prostate",
    "DK": "bladder",
    "G2": "bladder",
    "AY": "colon",
    "NH": "colon",
    "KB": "stomach",
    "RD": "stomach",
}


class TrunkView(torch.nn.Module):
    """A Nuc2Vec network seen through its pooled trunk features (before the MLP head)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.window, self.dim = net, net.window, net.config["widths"][-1]

    def forward(self, x):
        return torch.nn.functional.normalize(self.net.trunk(x).float(), dim=1)


def organ(name: str) -> str:
    return ORGAN_OF_SITE[name.split("-")[1]]


def _std(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / (x.std(0) + 1e-9)


def collect(data: Path, names, nets: dict, max_per_image: int, seed: int):
    """Per nucleus (subsampled per image): image index, features of every set, morphology targets."""
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in [*nets, "handcrafted", "image"]}
    for i, n in enumerate(names):
        rgb, lab = read_rgb(data / f"{n}.png"), read_labels(data / f"{n}_inst.tif")
        ids_h, xh, _ = handcrafted_features(rgb, lab)
        keep = np.isfinite(xh).all(1)
        sel = np.sort(rng.permutation(np.flatnonzero(keep))[:max_per_image])
        rows["handcrafted"].append(xh[sel])
        rows["image"].append(np.full(sel.size, i))
        for k, m in nets.items():
            if isinstance(m, TrunkView):
                x, lt = torch.from_numpy(np.array(rgb)).permute(2, 0, 1), torch.from_numpy(lab)
                ids, emb = (t.numpy() for t in embed_labels(m, x, lt))
            else:
                ids, emb = nucfast.embed_nuclei(rgb, lab, model=m)
            assert (ids == ids_h).all()
            rows[k].append(emb[sel])
    return {k: np.concatenate(v) for k, v in rows.items()}


def probe_morphology(feats: dict, groups: np.ndarray, targets: np.ndarray) -> dict:
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold, cross_val_predict

    out = {}
    for k, x in feats.items():
        r2 = {}
        for j, name in enumerate(MORPHOLOGY):
            y = targets[:, j]
            pred = cross_val_predict(
                RidgeCV(alphas=np.logspace(-3, 3, 7)), _std(x), y, groups=groups, cv=GroupKFold(5)
            )
            r2[name] = float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())
        r2["mean"] = float(np.mean(list(r2.values())))
        out[k] = r2
    return out


def probe_organ(feats: dict, groups: np.ndarray, organs: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import LeaveOneGroupOut

    out = {}
    for k, x in feats.items():
        xs = _std(x)
        pred = np.empty(len(organs), dtype=object)
        for tr, te in LeaveOneGroupOut().split(xs, organs, groups):
            clf = LogisticRegression(max_iter=1000, C=1.0).fit(xs[tr], organs[tr])
            pred[te] = clf.predict(xs[te])
        img_correct = []
        for g in np.unique(groups):
            v, c = np.unique(pred[groups == g], return_counts=True)
            img_correct.append(v[np.argmax(c)] == organs[groups == g][0])
        out[k] = {
            "accuracy": float((pred == organs).mean()),
            "balanced_accuracy": float(balanced_accuracy_score(organs, pred.astype(str))),
            "image_majority_accuracy": float(np.mean(img_correct)),
        }
    return out


def _patch_features(patches: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """Hand-crafted features of each augmented patch (n, 3, w, w) in [0, 1] with its warped nucleus mask."""
    from scipy import ndimage as ndi

    out = np.zeros((patches.shape[0], len(FEATURE_NAMES)))
    u8 = (patches * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    w = patches.shape[-1]
    for i in range(patches.shape[0]):
        m = masks[i, 0].numpy() > 0.5
        lab, n = ndi.label(m)
        if n > 1:  # the component under the centre (else the largest)
            c = lab[w // 2, w // 2] or (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
            lab = (lab == c).astype(np.int32)
        if lab.max() == 0:
            lab[w // 2, w // 2] = 1
        _, x, _ = handcrafted_features(u8[i], lab.astype(np.int32))
        out[i] = np.nan_to_num(x[0])
    return out


def retrieval(data: Path, names, nets: dict, max_nuclei: int, seed: int) -> dict:
    """Top-1 retrieval of each nucleus' second view among all second views, two augmentation families."""
    patches, masks = [], []
    fill = [round(m * 255) for m in IMAGENET_MEAN]
    for n in names:
        rgb, lab = read_rgb(data / f"{n}.png"), read_labels(data / f"{n}_inst.tif")
        lt = torch.from_numpy(lab)
        ids, cen, _ = nucleus_centroids(lt)
        x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
        patches.append(extract_patches(x, cen, 64, fill=fill))
        lp = extract_patches(lt[None], cen, 64)[:, 0]
        masks.append((lp == ids[:, None, None]).float()[:, None])
    patches, masks = torch.cat(patches), torch.cat(masks)
    rng = np.random.default_rng(seed)
    idx = torch.from_numpy(np.sort(rng.permutation(len(patches))[:max_nuclei]))
    patches, masks = patches[idx].float() / 255.0, masks[idx]
    res = {}
    for family, color in (("training_views", True), ("geometric", False)):
        va, vb = [], []
        r = np.random.default_rng(seed + 1)
        for s in range(0, len(idx), 256):
            p, m = patches[s : s + 256], masks[s : s + 256]
            va.append(augment_views(p, r, extra=m, color=color))
            vb.append(augment_views(p, r, extra=m, color=color))
        a, ma = torch.cat([v[0] for v in va]), torch.cat([v[1] for v in va])
        b, mb = torch.cat([v[0] for v in vb]), torch.cat([v[1] for v in vb])
        row = {}
        for k, m in nets.items():
            net = m if isinstance(m, TrunkView) else models.load(m).net.eval()
            with torch.no_grad():
                ea = torch.cat([net(a[i : i + 512]) for i in range(0, len(a), 512)])
                eb = torch.cat([net(b[i : i + 512]) for i in range(0, len(b), 512)])
            row[k] = _top1(ea.numpy(), eb.numpy())
        ha, hb = _patch_features(a, ma), _patch_features(b, mb)
        mu, sd = np.concatenate([ha, hb]).mean(0), np.concatenate([ha, hb]).std(0) + 1e-9
        row["handcrafted"] = _top1((ha - mu) / sd, (hb - mu) / sd)
        res[family] = row
    res["n"] = int(len(idx))
    return res


def _top1(a: np.ndarray, b: np.ndarray) -> float:
    d = torch.cdist(torch.from_numpy(a).double(), torch.from_numpy(b).double())
    return float((d.argmin(1) == torch.arange(len(a))).double().mean())


def stability(feats: dict, ks=range(4, 13), seeds: int = 5, frac: float = 0.8, seed: int = 0) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    out = {}
    for k_name, x in feats.items():
        xs = _std(x) if k_name == "handcrafted" else x
        per_k = {}
        for k in ks:
            labs = []
            for s in range(seeds):
                rng = np.random.default_rng(seed + s)
                sub = rng.permutation(len(xs))[: int(frac * len(xs))]
                km = KMeans(k, n_init=3, random_state=seed + s).fit(xs[sub])
                labs.append(km.predict(xs))
            per_k[int(k)] = float(np.mean([adjusted_rand_score(a, b) for a, b in combinations(labs, 2)]))
        best = max(per_k, key=per_k.get)
        out[k_name] = {"ari_by_k": per_k, "k8": per_k.get(8), "best_k": best, "best_ari": per_k[best]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/monuseg_train")
    ap.add_argument("--model", default="nuc2vec", help="model name or .safetensors file")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-per-image", type=int, default=250)
    ap.add_argument("--max-retrieval", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=None, help="only the first N images (a quick check)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trained = models.load(args.model)
    torch.manual_seed(0)
    random = models.load("nuc2vec_lite")
    nets = {"nuc2vec": trained, "random": random, "nuc2vec_trunk": TrunkView(trained.net.eval())}
    names = list_names(data)[: args.images]
    val = trained.meta.get("val_names") or []
    feats = collect(data, names, nets, args.max_per_image, args.seed)
    groups = feats.pop("image")
    hc = feats["handcrafted"]
    targets = hc[:, : len(MORPHOLOGY)]
    organs = np.array([organ(names[g]) for g in groups])
    res = {
        "model": str(args.model),
        "step": trained.meta.get("step"),
        "n_nuclei": int(len(groups)),
        "n_images": len(names),
        "val_names": val,
    }
    res["morphology_r2"] = probe_morphology(feats, groups, targets)
    res["organ"] = probe_organ(feats, groups, organs)
    held_out = [n for n in val if n in names] or names[:6]
    res["retrieval"] = retrieval(data, held_out, nets, args.max_retrieval, args.seed)
    res["stability"] = stability(feats)
    res["seconds"] = round(time.time() - t0, 1)
    (out / "eval.json").write_text(json.dumps(res, indent=1))
    print(markdown(res))
    return 0


def markdown(res: dict) -> str:
    sets = ("nuc2vec", "random", "handcrafted", "nuc2vec_trunk")
    lines = ["| measure | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for m in (*MORPHOLOGY, "mean"):
        lines.append(
            f"| (a) R² {m} | " + " | ".join(f"{res['morphology_r2'][s][m]:.3f}" for s in sets) + " |"
        )
    for m in ("accuracy", "balanced_accuracy", "image_majority_accuracy"):
        lines.append(f"| (b) organ {m} | " + " | ".join(f"{res['organ'][s][m]:.3f}" for s in sets) + " |")
    for fam in ("training_views", "geometric"):
        lines.append(
            f"| (c) top-1 {fam} | " + " | ".join(f"{res['retrieval'][fam][s]:.3f}" for s in sets) + " |"
        )
    lines.append("| (d) ARI k=8 | " + " | ".join(f"{res['stability'][s]['k8']:.3f}" for s in sets) + " |")
    lines.append(
        "| (d) best k (ARI) | "
        + " | ".join(f"{res['stability'][s]['best_k']} ({res['stability'][s]['best_ari']:.3f})" for s in sets)
        + " |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
