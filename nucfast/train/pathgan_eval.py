"""PathologyGAN evaluation on the held-out tissue (``python -m nucfast.train pathgan-eval``).

(a) Tissue-characteristics Fréchet distance (the paper's "cancer tissue characteristics" FID, with nucfast's
    own nuclei instead of CRImage's cell classifier): per tile, nucleus density (per 1000 um^2), nuclear
    area fraction, nucleus area mean / std (um^2), mean eccentricity and mean haematoxylin OD of nuclear
    pixels, from the shipped USE-Net (``nucfast.segment_image``) run on mosaics of tiles enlarged to its
    0.25 um/px and separated by glass. Features are standardised with the first real set's mean / std, then
    the Fréchet distance (:func:`nucfast.frechet_distance`) of: generated vs held-out real; two disjoint
    held-out real sets (the floor); training tiles vs held-out tiles (other images); nucfast's synthetic
    slide generator (``nucfast.synthetic.SyntheticSlide``) vs held-out real.
    Inception-feature FID is NOT reported: the Inception weights cannot be downloaded here.
(b) Nucleus density along linear latent paths: in z through the mapping network, and in w (the mapping
    bypassed along the path; the paper compares against a separately trained model without a mapping
    network, which is not trained here), with the per-pixel noise fixed along each path.
(c) Reconstruction: held-out real tile -> E -> G: pixel error and tissue-characteristics error, next to a
    random generated tile and a random other real tile as references.
(d) Organ of origin (MoNuSeg images, 7 organs) by logistic regression on encoder latents vs a randomly
    initialised encoder vs the hand-crafted colour/texture features (:func:`nucfast.tile_features`): train
    on the training images' tiles, test on the held-out images' tiles (one image per organ), and 5-fold
    cross-validation grouped by image over all 30 images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .._segment import segment_image
from .._tiles import embed_tiles, frechet_distance, interpolate_latents, sample_tiles, tile_features
from ..models import load
from ..models._registry import Model
from ..models.pathgan import build_pathgan
from ..stain import rgb_to_hed
from ..synthetic import SyntheticSlide
from .pathgan import TileBank, build_tile_bank

__all__ = ["TC_FEATURES", "tissue_characteristics", "evaluate_pathgan", "add_eval_arguments", "run_eval_cli"]

TC_FEATURES = (
    "density_per_1000um2",
    "area_fraction",
    "area_mean_um2",
    "area_std_um2",
    "eccentricity",
    "h_od",
)
SEG_MPP = 0.25


def tissue_characteristics(
    tiles: np.ndarray, mpp: float, *, model="usenet", per_mosaic: int = 64
) -> np.ndarray:
    """(n, 6) per-tile nucleus statistics (:data:`TC_FEATURES`) of tiles (n, S, S, 3) at ``mpp``."""
    from skimage.measure import regionprops  # optional heavy dependency (training/evaluation only)

    n, s = len(tiles), tiles.shape[1]
    k = max(1, round(mpp / SEG_MPP))
    S, gap = s * k, 8
    x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float()
    big = torch.nn.functional.interpolate(x, scale_factor=k, mode="bilinear", align_corners=False)
    big = big.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    px_um2 = SEG_MPP**2
    out = np.zeros((n, len(TC_FEATURES)), np.float64)
    cols = int(np.ceil(np.sqrt(per_mosaic)))
    for m0 in range(0, n, per_mosaic):
        chunk = big[m0 : m0 + per_mosaic]
        rows = int(np.ceil(len(chunk) / cols))
        mos = np.full((rows * (S + gap) + gap, cols * (S + gap) + gap, 3), 255, np.uint8)
        pos = []
        for i, t in enumerate(chunk):
            r, c = divmod(i, cols)
            y, xx = gap + r * (S + gap), gap + c * (S + gap)
            mos[y : y + S, xx : xx + S] = t
            pos.append((y, xx))
        try:
            labels = np.asarray(segment_image(mos, model))
        except ValueError as e:  # a mosaic without tissue: no stain statistics, and no nuclei
            if "tissue sample is empty" not in str(e):
                raise
            labels = np.zeros(mos.shape[:2], np.int32)
        for i, (y, xx) in enumerate(pos):
            lab, rgb = labels[y : y + S, xx : xx + S], chunk[i]
            props = [p for p in regionprops(lab) if p.area >= 10]
            area_um2 = (S * S) * px_um2
            if not props:
                continue
            areas = np.array([p.area for p in props]) * px_um2
            h = rgb_to_hed(torch.from_numpy(rgb).permute(2, 0, 1).double() / 255)[0].numpy()
            nuc = lab > 0
            out[m0 + i] = (
                len(props) / area_um2 * 1000, nuc.mean(), areas.mean(), areas.std(),
                np.mean([p.eccentricity for p in props]), h[nuc].mean(),
            )  # fmt: skip
    return out


def _fd_std(a, b, ref):
    mu, sd = ref.mean(0), ref.std(0) + 1e-9
    return frechet_distance((a - mu) / sd, (b - mu) / sd)


def _synthetic_tiles(n: int, size: int, mpp: float, seed: int = 0) -> np.ndarray:
    """Tissue tiles of nucfast's synthetic slide generator at 0.25 um/px, area-averaged to ``mpp``."""
    k = max(1, round(mpp / SEG_MPP))
    side = size * k
    slide = SyntheticSlide((side * 40, side * 40), seed=seed, tissue_fraction=1.0)
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        r, c = rng.integers(0, side * 39, size=2)
        rgb, _ = slide.render(int(r), int(c), side, side)
        t = rgb.reshape(size, k, size, k, 3).mean((1, 3)).round().astype(np.uint8)
        if (t.min(-1) < 220).mean() >= 0.7:
            out.append(t)
    return np.stack(out)


def _logreg_scores(Xtr, ytr, Xte, yte) -> dict:
    from sklearn.linear_model import LogisticRegression  # optional heavy dependency (evaluation only)
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0))
    clf.fit(Xtr, ytr)
    p = clf.predict_proba(Xte)
    pred = clf.classes_[p.argmax(1)]
    res = {
        "accuracy": float((pred == yte).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(yte, pred)),
    }
    if len(set(yte)) == len(clf.classes_):
        res["auc_ovr_macro"] = float(roc_auc_score(yte, p, multi_class="ovr", labels=clf.classes_))
    return res


def _organ_task(bank: TileBank, feats: dict[str, np.ndarray]) -> dict:
    from sklearn.model_selection import GroupKFold  # optional heavy dependency (evaluation only)

    mon = bank.organ != "unknown"
    y, groups, held = bank.organ[mon], bank.source[mon], bank.heldout[mon]
    out = {"n_tiles": int(mon.sum()), "n_images": len(set(groups)), "classes": sorted(set(y))}
    for name, X in feats.items():
        X = X[mon]
        r = {"heldout_images": _logreg_scores(X[~held], y[~held], X[held], y[held])}
        folds = []
        for tr, te in GroupKFold(n_splits=5).split(X, y, groups):
            folds.append(_logreg_scores(X[tr], y[tr], X[te], y[te]))
        r["grouped_5fold"] = {
            k: float(np.mean([f[k] for f in folds if k in f])) for k in ("accuracy", "balanced_accuracy")
        }
        out[name] = r
    return out


def evaluate_pathgan(
    generator="pathgan", encoder="pathgan_encoder", *, bank: TileBank, n: int = 1024, seed: int = 0,
    pairs: int = 24, steps: int = 9, log=print,
) -> dict:  # fmt: skip
    """All four evaluations (module docstring) on ``bank`` (:func:`nucfast.train.pathgan.build_tile_bank`)."""
    t0 = time.time()
    gm, em = load(generator), load(encoder)
    G, mpp = gm.net, gm.mpp
    rng = np.random.default_rng(seed)
    train, held = bank.part(False), bank.part(True)
    perm = rng.permutation(len(held.tiles))
    n = min(n, len(perm) // 2)
    r1, r2 = held.tiles[perm[:n]], held.tiles[perm[n : 2 * n]]
    tr = train.tiles[rng.permutation(len(train.tiles))[:n]]
    gen, _ = sample_tiles(n, seed=seed + 1, model=gm)
    syn = _synthetic_tiles(n, G.size, mpp, seed=seed)
    res: dict = {
        "n_per_set": n,
        "mpp": mpp,
        "tile_px": G.size,
        "generator": str(gm.path),
        "encoder": str(em.path),
    }

    sets = {"real_heldout_1": r1, "real_heldout_2": r2, "real_train": tr, "generated": gen, "synthetic": syn}
    tc = {k: tissue_characteristics(v, mpp) for k, v in sets.items()}
    log({"event": "eval", "stage": "tissue characteristics", "seconds": round(time.time() - t0, 1)})
    ref = tc["real_heldout_1"]
    res["a_tissue_characteristics_fd"] = {
        "features": list(TC_FEATURES),
        "standardised_by": "real_heldout_1 mean/std",
        "generated_vs_heldout": _fd_std(tc["generated"], ref, ref),
        "floor_heldout_vs_heldout": _fd_std(tc["real_heldout_2"], ref, ref),
        "train_images_vs_heldout": _fd_std(tc["real_train"], ref, ref),
        "synthetic_generator_vs_heldout": _fd_std(tc["synthetic"], ref, ref),
        "means": {
            k: dict(zip(TC_FEATURES, np.round(v.mean(0), 4).tolist(), strict=True)) for k, v in tc.items()
        },
        "colour_texture_fd": {
            "generated_vs_heldout": frechet_distance(tile_features(gen), tile_features(r1)),
            "floor_heldout_vs_heldout": frechet_distance(tile_features(r2), tile_features(r1)),
            "synthetic_generator_vs_heldout": frechet_distance(tile_features(syn), tile_features(r1)),
        },
        "inception_fid": "not computed: the Inception weights cannot be downloaded here",
    }

    interp = {}
    for mapping in (True, False):
        strips = interpolate_latents(steps, seed=seed + 2, pairs=pairs, mapping=mapping, model=gm)
        d = tissue_characteristics(strips.reshape((-1,) + strips.shape[2:]), mpp)[:, 0].reshape(pairs, steps)
        diff = np.abs(np.diff(d, axis=1))
        line = d[:, :1] + (d[:, -1:] - d[:, :1]) * np.linspace(0, 1, steps)[None]
        span = np.abs(d[:, -1] - d[:, 0])
        interp["z_with_mapping" if mapping else "w_linear_mapping_bypassed"] = {
            "mean_abs_step_change": float(diff.mean()),
            "path_length_over_endpoint_change": float(np.median(diff.sum(1) / np.maximum(span, 1e-6))),
            "mean_abs_deviation_from_line": float(np.abs(d - line).mean()),
            "mean_density": float(d.mean()),
            "example_path": np.round(d[0], 3).tolist(),
        }  # fmt: skip
    res["b_interpolation_nucleus_density"] = {"pairs": pairs, "steps": steps, **interp}
    log({"event": "eval", "stage": "interpolation", "seconds": round(time.time() - t0, 1)})

    w = torch.from_numpy(embed_tiles(r1, mpp=mpp, model=em))
    gen_t = torch.Generator().manual_seed(seed + 3)
    rec = []
    with torch.no_grad():
        for i in range(0, len(w), 128):
            wi = w[i : i + 128]
            x = G.synthesis(wi, noise=[torch.randn(s, generator=gen_t) for s in G.noise_shapes(len(wi))])
            rec.append((x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    rec = np.concatenate(rec)
    tc_rec = tissue_characteristics(rec, mpp)
    sd = ref.std(0) + 1e-9

    def tc_err(a):
        return float(np.linalg.norm((a - ref) / sd, axis=1).mean())

    def px(a):
        d = a.astype(np.float64) - r1.astype(np.float64)
        return {"mae_0_255": float(np.abs(d).mean()), "rmse_0_255": float(np.sqrt((d**2).mean()))}

    f_real = tile_features(r1)

    def ref_err(a, tc_a):
        ct = float(np.linalg.norm(tile_features(a) - f_real, axis=1).mean())
        return {**px(a), "tc_error_std_units": tc_err(tc_a), "colour_texture_error": ct}

    res["c_reconstruction"] = {
        "reconstruction": ref_err(rec, tc_rec),
        "random_generated_tile": ref_err(gen, tc["generated"]),
        "random_other_real_tile": ref_err(r2, tc["real_heldout_2"]),
        "fd_reconstructions_vs_heldout": _fd_std(tc_rec, ref, ref),
    }
    log({"event": "eval", "stage": "reconstruction", "seconds": round(time.time() - t0, 1)})

    torch.manual_seed(seed)
    e_rand = build_pathgan("cpu", "encoder", **{k: v for k, v in em.net.config.items()})
    rand_model = Model(e_rand, {"mpp": em.mpp}, "pathgan-encoder")
    feats = {
        "encoder": embed_tiles(bank.tiles, mpp=mpp, model=em),
        "random_encoder": embed_tiles(bank.tiles, mpp=mpp, model=rand_model),
        "colour_texture": tile_features(bank.tiles),
    }
    res["d_organ_of_origin"] = _organ_task(bank, feats)
    log({"event": "eval", "stage": "organ", "seconds": round(time.time() - t0, 1)})
    res["seconds"] = round(time.time() - t0, 1)
    return res, {"generated": gen, "reconstructions": rec, "real": r1}


def add_eval_arguments(p) -> None:
    p.add_argument("--data", default="", help="MoNuSeg-layout directory")
    p.add_argument("--slides", default="", help="folder of .svs slides")
    p.add_argument(
        "--bank", default="", help="a tiles_<S>px.npz from a pathgan run (instead of --data/--slides)"
    )
    p.add_argument("--generator", default="pathgan")
    p.add_argument("--encoder", default="pathgan_encoder")
    p.add_argument("-n", type=int, default=1024, help="tiles per set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", required=True, help="output JSON (+ a PNG of real / reconstructed / generated tiles)"
    )


def run_eval_cli(args) -> int:
    if args.bank:
        z = np.load(args.bank)
        bank = TileBank(z["tiles"], z["source"], z["organ"], z["heldout"], float(z["mpp"]))
    else:
        g = load(args.generator)
        bank = build_tile_bank(
            args.data or None, args.slides or None, size=g.net.size, mpp=g.mpp, seed=args.seed
        )
    res, imgs = evaluate_pathgan(args.generator, args.encoder, bank=bank, n=args.n, seed=args.seed,
                                 log=lambda r: print(json.dumps(r), flush=True))  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    from PIL import Image  # optional dependency (the slide extra)

    rows = [np.concatenate(list(imgs[k][:12]), axis=1) for k in ("real", "reconstructions", "generated")]
    Image.fromarray(np.concatenate(rows, axis=0).repeat(2, 0).repeat(2, 1)).save(out.with_suffix(".png"))
    print(json.dumps(res, indent=1))
    return 0
