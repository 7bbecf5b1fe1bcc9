"""PathologyGAN training (REFERENCE.md section 7): the GAN (``train pathgan``) and its encoder trained on
generated images (``train pathgan-encoder``); resumable, logged like the other trainers.

Data (:func:`build_tile_bank`): tissue tiles of ``size`` px at ``mpp`` um/px with 50 % overlap and >= 70 %
tissue (:data:`nucfast._tiles.MIN_TISSUE`) from the MoNuSeg images (0.25 um/px, resampled) and the whole
slides in ``--slides`` read through :func:`nucfast.slide.open_slide` (files without an MPP take the value in
:data:`SLIDE_MPP_FALLBACK`). Held out, never trained on: one MoNuSeg image per organ (:func:`heldout_names`)
and the bottom quarter of each slide (tiles crossing the boundary are dropped). Augmentation: the paper's
90/180/270 degree rotations and flips, drawn per tile from the run's numpy Generator.

GAN step (relativistic average GAN + gradient penalty): the discriminator every step, the generator every
``g_every``-th (5), Adam lr 1e-4, beta1 0.5 for both; style mixing with p = 0.5. Model selection: every
``val_every`` steps the Fréchet distance of hand-crafted colour/texture features
(:func:`nucfast.tile_features`) between ``n_eval`` generated tiles (fixed seed) and the held-out real tiles;
the generator with the lowest is ``best.safetensors``. (Inception features are not available here: the
weights cannot be downloaded.)

Run:  python -m nucfast.train pathgan --data ../shared/data/monuseg_train --slides ../shared/data/slides \\
          --out /work/runs/pathgan
      python -m nucfast.train pathgan-encoder --generator /work/runs/pathgan/best.safetensors \\
          --out /work/runs/pathgan_encoder
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._tiles import MIN_TISSUE, frechet_distance, sample_tiles, tile_features, tissue_fraction
from ..datasets import list_names, read_rgb
from ..models import Model, load, save_weights
from ..models.pathgan import build_pathgan
from ..slide import open_slide
from ._loop import Run, RunConfig

__all__ = [
    "ORGANS",
    "SLIDE_MPP_FALLBACK",
    "organ_of",
    "heldout_names",
    "TileBank",
    "build_tile_bank",
    "augment",
    "PathganConfig",
    "EncoderConfig",
    "ragan_losses",
    "gradient_penalty",
    "train_pathgan",
    "train_pathgan_encoder",
    "add_pathgan_arguments",
    "run_pathgan_cli",
    "add_encoder_arguments",
    "run_encoder_cli",
]

#: Organ of a MoNuSeg 2018 training image by its TCGA tissue-source-site code (MoNuSeg's own organ table;
#: the six "liver" images of MoNuSeg come from TCGA lung sites 18, 21, 38, 49, 50 and are labelled as
#: MoNuSeg labels them).
ORGANS = {
    "A7": "breast", "AR": "breast", "E2": "breast",
    "B0": "kidney", "HE": "kidney",
    "18": "liver", "21": "liver", "38": "liver", "49": "liver", "50": "liver",
    "G9": "prostate", "CH": "prostate",
    "DK": "bladder", "G2": "bladder",
    "AY": "colon", "NH": "colon",
    "KB": "stomach", "RD": "stomach",
}  # fmt: skip

#: um/px of slides whose files carry none. TCGA-CR-7395-01A-01-TS1 (a frozen section, no MPP in the file):
#: estimated from its nuclei, which measure about half the diameter in pixels of the CMU-1 slide's
#: (0.499 um/px) at equal magnification of view: ~1.0 um/px (a 10x scan).
SLIDE_MPP_FALLBACK = {"TCGA-CR-7395-01A-01-TS1.svs": 1.0}
MONUSEG_MPP = 0.25


def organ_of(name: str) -> str:
    """Organ of a MoNuSeg image name ``TCGA-XX-...`` (``"unknown"`` for other names)."""
    parts = name.split("-")
    return ORGANS.get(parts[1], "unknown") if len(parts) > 1 and parts[0] == "TCGA" else "unknown"


def heldout_names(names: list[str], seed: int = 0) -> list[str]:
    """One image per organ (seeded choice), sorted: the held-out MoNuSeg images."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[str]] = {}
    for n in sorted(names):
        by.setdefault(organ_of(n), []).append(n)
    return sorted(v[int(rng.integers(len(v)))] for k, v in sorted(by.items()) if len(v) > 1 or k != "unknown")


@dataclass
class TileBank:
    """Tiles (n, S, S, 3) uint8 at ``mpp`` and, per tile, its source, organ and whether it is held out."""

    tiles: np.ndarray
    source: np.ndarray  # str
    organ: np.ndarray  # str
    heldout: np.ndarray  # bool
    mpp: float

    def part(self, heldout: bool) -> TileBank:
        k = self.heldout == heldout
        return TileBank(self.tiles[k], self.source[k], self.organ[k], self.heldout[k], self.mpp)

    def summary(self) -> dict:
        out: dict = {"mpp": self.mpp, "size": int(self.tiles.shape[1]) if len(self.tiles) else 0}
        for h, key in ((False, "train"), (True, "heldout")):
            k = self.heldout == h
            srcs, counts = np.unique(self.source[k], return_counts=True)
            per = {str(s): int(c) for s, c in zip(srcs, counts, strict=True)}
            out[key] = {"tiles": int(k.sum()), "sources": len(srcs), "per_source": per}
        return out


def _resize(t: np.ndarray, size: int) -> np.ndarray:
    if t.shape[0] == size and t.shape[1] == size:
        return t
    x = torch.from_numpy(np.ascontiguousarray(t)).permute(2, 0, 1).float()[None]
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=t.shape[0] > size)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _cut(img: np.ndarray, src_mpp: float, size: int, mpp: float, heldout_from_row: int | None):
    """Tiles of ``size`` px at ``mpp`` from ``img`` (at ``src_mpp``), 50 % overlap, >= 70 % tissue.
    Returns (tiles, heldout flags); tiles crossing ``heldout_from_row`` are dropped."""
    s = max(2, round(size * mpp / src_mpp))  # side in source pixels
    step = max(1, s // 2)
    H, W = img.shape[:2]
    out, flags = [], []
    for r in range(0, H - s + 1, step):
        if heldout_from_row is not None and r < heldout_from_row < r + s:
            continue
        for c in range(0, W - s + 1, step):
            t = img[r : r + s, c : c + s]
            if tissue_fraction(t[None])[0] < MIN_TISSUE:
                continue
            out.append(_resize(t, size))
            flags.append(heldout_from_row is not None and r >= heldout_from_row)
    return out, flags


def build_tile_bank(
    data: str | None, slides: str | None = None, *, size: int = 56, mpp: float = 0.5,
    max_per_slide: int = 3000, seed: int = 0, heldout: list[str] | None = None,
) -> TileBank:  # fmt: skip
    """The training/held-out tiles (module docstring). ``heldout``: MoNuSeg names to hold out (default
    :func:`heldout_names`); ``max_per_slide``: a seeded subsample of each slide's tiles (the slides would
    otherwise outnumber the 30 MoNuSeg images many times)."""
    rng = np.random.default_rng(seed)
    tiles, source, organ, held = [], [], [], []
    if data:
        names = list_names(data)
        hold = set(heldout_names(names, seed) if heldout is None else heldout)
        for n in names:
            t, _ = _cut(read_rgb(Path(data) / f"{n}.png"), MONUSEG_MPP, size, mpp, None)
            tiles += t
            source += [n] * len(t)
            organ += [organ_of(n)] * len(t)
            held += [n in hold] * len(t)
    for p in sorted(Path(slides).glob("*.svs")) if slides else []:
        with open_slide(p, mpp=SLIDE_MPP_FALLBACK.get(p.name)) as sl:
            H, W = sl.shape
            img = sl.read_region(0, (0, 0), (H, W))
            t, f = _cut(img, sl.require_mpp(), size, mpp, int(0.75 * H))
        idx = np.arange(len(t))
        tr, ho = idx[~np.asarray(f, bool)], idx[np.asarray(f, bool)]
        k_ho = max(1, round(max_per_slide * 0.25))
        keep = np.concatenate([
            np.sort(rng.permutation(tr)[: max_per_slide - k_ho]), np.sort(rng.permutation(ho)[:k_ho])
        ]).astype(int)  # fmt: skip
        tiles += [t[i] for i in keep]
        source += [p.name] * len(keep)
        organ += ["unknown"] * len(keep)
        held += [bool(f[i]) for i in keep]
    if not tiles:
        raise ValueError(f"no tissue tiles found in data={data!r} slides={slides!r}")
    return TileBank(np.stack(tiles), np.array(source), np.array(organ), np.array(held, bool), float(mpp))


def augment(tiles: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """uint8 (n, S, S, 3) -> float (n, 3, S, S) in [0, 1], each tile rotated by k x 90 degrees and flipped
    with probability 0.5 (the paper's augmentations)."""
    x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float() / 255.0
    ks, fl = rng.integers(4, size=len(x)), rng.random(len(x)) < 0.5
    out = [torch.rot90(xi.flip(-1) if f else xi, int(k), (1, 2)) for xi, k, f in zip(x, ks, fl, strict=True)]
    return torch.stack(out) if out else x


def ragan_losses(c_real: torch.Tensor, c_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Relativistic average GAN: ``D_r = C(x_r) - mean C(x_f)``, ``D_f = C(x_f) - mean C(x_r)``;
    ``L_D = BCE(D_r, 1) + BCE(D_f, 0)``, ``L_G = BCE(D_f, 1) + BCE(D_r, 0)``. Returns (L_D, L_G)."""
    d_r, d_f = c_real - c_fake.mean(), c_fake - c_real.mean()
    one, zero = torch.ones_like(d_r), torch.zeros_like(d_r)
    bce = F.binary_cross_entropy_with_logits
    return bce(d_r, one) + bce(d_f, zero), bce(d_f, one) + bce(d_r, zero)


def gradient_penalty(
    D: nn.Module, x_real: torch.Tensor, x_fake: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """Per-sample ``(||grad_x C(x_hat)||_2 - 1)^2`` on ``x_hat = eps x_r + (1 - eps) x_f``, mean over the
    batch."""
    x_hat = (eps * x_real + (1 - eps) * x_fake).requires_grad_(True)
    (g,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()


@dataclass
class PathganConfig(RunConfig):
    slides: str = ""
    arch: str = "cpu"
    steps: int = 20000  # discriminator steps
    batch: int = 32
    lr: float = 1e-4
    beta1: float = 0.5
    gp: float = 0.65
    g_every: int = 5
    mix_prob: float = 0.5
    max_per_slide: int = 3000
    n_eval: int = 512
    val_every: int = 500
    # start from trained weights instead of scratch: "shipped" (pathgan + pathgan_discriminator) or a run
    # directory (its best.safetensors + best_discriminator.safetensors); fresh optimiser state
    init: str = ""


def _split(cfg):
    def split(names):
        hold = heldout_names(names, cfg.seed) if cfg.data else []
        return sorted(n for n in names if n not in hold), hold

    return split


def _bank_for(cfg, size: int, mpp: float) -> TileBank:
    """The tile bank, cached in the run directory (rebuilt when the file is missing)."""
    path = Path(cfg.out) / f"tiles_{size}px.npz"
    if path.exists():
        z = np.load(path)
        return TileBank(z["tiles"], z["source"], z["organ"], z["heldout"], float(z["mpp"]))
    bank = build_tile_bank(cfg.data or None, cfg.slides or None, size=size, mpp=mpp,
                           max_per_slide=cfg.max_per_slide, seed=cfg.seed, heldout=cfg.val_names)  # fmt: skip
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, tiles=bank.tiles, source=bank.source, organ=bank.organ, heldout=bank.heldout, mpp=bank.mpp)
    os.replace(tmp, path)
    return bank


def _eval_fd(G: nn.Module, real_feats: np.ndarray, n: int, mpp: float) -> float:
    G.eval()
    fake, _ = sample_tiles(n, seed=12345, model=Model(G, {"mpp": mpp}, "pathgan-generator"))
    G.train()
    return frechet_distance(tile_features(fake), real_feats)


def _init_weights(init: str, G: nn.Module, D: nn.Module) -> dict:
    if init == "shipped":
        gsrc, dsrc = load("pathgan"), load("pathgan_discriminator")
    else:
        run = Path(init)
        gsrc, dsrc = load(run / "best.safetensors"), load(run / "best_discriminator.safetensors")
    G.load_state_dict(gsrc.net.state_dict())
    D.load_state_dict(dsrc.net.state_dict())
    return {"generator": str(gsrc.path), "discriminator": str(dsrc.path)}


def train_pathgan(
    cfg: PathganConfig, *, max_seconds: float | None = None, stop_at_step: int | None = None
) -> dict:
    """Train (or resume) the GAN. Writes ``out/last.safetensors`` (G + D + Adam, resumable),
    ``out/best.safetensors`` (generator, lowest colour/texture FD), ``out/best_discriminator.safetensors``,
    ``out/log.jsonl``; returns a summary. ``max_seconds`` / ``stop_at_step`` end this call early."""
    run = Run(cfg, max_seconds=max_seconds, stop_at_step=stop_at_step, split=_split(cfg))
    torch.manual_seed(cfg.seed)
    G, D = build_pathgan(cfg.arch, "generator"), build_pathgan(cfg.arch, "discriminator")
    both = nn.ModuleDict({"G": G, "D": D})
    # one Adam, two parameter groups: parameters without a gradient are skipped, so this is two optimisers
    opt = torch.optim.Adam([{"params": G.parameters()}, {"params": D.parameters()}], lr=cfg.lr,
                           betas=(cfg.beta1, 0.999))  # fmt: skip
    rng = np.random.default_rng(cfg.seed)
    step, old = run.resume(
        both, opt, rng, must_match=("arch", "seed", "data", "slides", "batch", "max_per_slide")
    )
    best_fd, history, wall = (
        old.get("best_fd", float("inf")),
        old.get("history", []),
        old.get("wall_seconds", 0.0),
    )
    mpp = float(G.config["mpp"])
    bank = _bank_for(cfg, G.size, mpp)
    train, held = bank.part(False), bank.part(True)
    real_feats = tile_features(held.tiles)
    init = old.get("init", {})
    if step:
        run.log({"event": "resume", "step": step, "best_fd": best_fd})
    else:
        if cfg.init:
            init = _init_weights(cfg.init, G, D)
        run.log({"event": "start", "config": asdict(cfg), "init": init, "tiles": bank.summary(),
                 "params": {"G": sum(p.numel() for p in G.parameters()),
                            "D": sum(p.numel() for p in D.parameters())}})  # fmt: skip

    def extra():
        return {"config": asdict(cfg), "best_fd": best_fd, "history": history, "wall_seconds": wall,
                "init": init, "tiles": bank.summary()}  # fmt: skip

    def ship_meta(kind, net, metrics):
        return {"kind": kind, "config": net.config, "mpp": mpp, "step": step, "g_steps": step // cfg.g_every,
                "metrics": metrics, "train": asdict(cfg), "tiles": bank.summary(), "wall_seconds": wall,
                "selection": "min colour/texture FD vs held-out tiles (tile_features)"}  # fmt: skip

    G.train(), D.train()
    t_last = time.time()
    acc = {"loss_d": 0.0, "loss_g": 0.0, "gp": 0.0, "c_real": 0.0, "c_fake": 0.0, "n": 0, "ng": 0}
    B = cfg.batch
    while step < cfg.steps:
        x_r = augment(train.tiles[rng.integers(len(train.tiles), size=B)], rng)
        with torch.no_grad():
            ws, _ = G.styles(torch.randn(B, G.z_dim), mix_prob=cfg.mix_prob)
            x_f = G.synthesis(ws)
        c_r, c_f = D(x_r), D(x_f)
        l_d, _ = ragan_losses(c_r, c_f)
        gp = gradient_penalty(D, x_r, x_f, torch.rand(B, 1, 1, 1))
        loss_d = l_d + cfg.gp * gp
        if not torch.isfinite(loss_d):
            raise FloatingPointError(f"non-finite discriminator loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss_d.backward()
        opt.step()
        acc["loss_d"] += float(loss_d.detach())
        acc["gp"] += float(gp.detach())
        acc["c_real"] += float(c_r.detach().mean())
        acc["c_fake"] += float(c_f.detach().mean())
        acc["n"] += 1
        step += 1
        if step % cfg.g_every == 0:
            ws, _ = G.styles(torch.randn(B, G.z_dim), mix_prob=cfg.mix_prob)
            c_f = D(G.synthesis(ws))
            with torch.no_grad():
                c_r = D(x_r)
            _, loss_g = ragan_losses(c_r, c_f)
            opt.zero_grad(set_to_none=True)
            loss_g.backward()
            for p in D.parameters():
                p.grad = None
            opt.step()
            acc["loss_g"] += float(loss_g.detach())
            acc["ng"] += 1
        now = time.time()
        wall += now - t_last
        t_last = now
        if step % cfg.log_every == 0:
            n, ng = acc.pop("n"), acc.pop("ng")
            rec = {k: round(v / max(n if k != "loss_g" else ng, 1), 5) for k, v in acc.items()}
            run.log({"step": step, **rec, "wall": round(wall, 1)})
            acc = {k: 0.0 for k in acc} | {"n": 0, "ng": 0}
        if cfg.val_every > 0 and (step % cfg.val_every == 0 or step == cfg.steps):
            t0 = time.time()
            fd = _eval_fd(G, real_feats, cfg.n_eval, mpp)
            history.append({"step": step, "fd_colour_texture": fd, "wall": round(wall, 1)})
            improved = fd < best_fd
            if improved:
                best_fd = fd
                m = {"fd_colour_texture_vs_heldout": fd, "n_eval": cfg.n_eval, "n_heldout": len(held.tiles)}
                save_weights(run.best, G, metadata=ship_meta("pathgan-generator", G, m), half=False)
                save_weights(run.out / "best_discriminator.safetensors", D,
                             metadata=ship_meta("pathgan-discriminator", D, m), half=False)  # fmt: skip
            run.log({"event": "val", "step": step, "fd_colour_texture": round(fd, 5),
                     "best_fd": round(best_fd, 5), "improved": improved,
                     "val_seconds": round(time.time() - t0, 1)})  # fmt: skip
            t_last = time.time()
        if run.checkpoint_or_stop(step, both, opt, rng, extra()):
            break
    return {"step": step, "best_fd": best_fd, "history": history, "out": str(run.out), "wall_seconds": wall}


@dataclass
class EncoderConfig(RunConfig):
    generator: str = "pathgan"
    arch: str = "cpu"
    steps: int = 10000
    batch: int = 32
    lr: float = 1e-4
    beta1: float = 0.5
    n_eval: int = 512
    val_every: int = 500


def train_pathgan_encoder(
    cfg: EncoderConfig, *, max_seconds: float | None = None, stop_at_step: int | None = None
) -> dict:
    """Train (or resume) the encoder on generated images only: ``MSE(E(G(w)), w)`` with w = mapping(z) and
    no style mixing (every slot the same w). Validation: the same MSE on ``n_eval`` fixed held-out latents;
    the lowest is ``best.safetensors``."""
    run = Run(cfg, max_seconds=max_seconds, stop_at_step=stop_at_step, split=lambda names: (names, []))
    gm = load(cfg.generator)
    if gm.task != "tile-generator":
        raise ValueError(f"--generator {cfg.generator!r} is a {gm.task} model, expected a tile-generator")
    G = gm.net.eval()
    for p in G.parameters():
        p.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    E = build_pathgan(cfg.arch, "encoder", size=G.size, w_dim=G.w_dim, mpp=gm.mpp)
    opt = torch.optim.Adam(E.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    rng = np.random.default_rng(cfg.seed)
    step, old = run.resume(E, opt, rng, must_match=("arch", "seed", "generator", "batch"))
    best, history, wall = (
        old.get("best_mse", float("inf")),
        old.get("history", []),
        old.get("wall_seconds", 0.0),
    )
    gen = torch.Generator().manual_seed(999)
    with torch.no_grad():
        w_val = G.mapping(torch.randn(cfg.n_eval, G.z_dim, generator=gen))
        chunks = [w_val[i : i + 64] for i in range(0, cfg.n_eval, 64)]
        noises = [[torch.randn(s, generator=gen) for s in G.noise_shapes(len(w))] for w in chunks]
        x_val = torch.cat([G.synthesis(w, noise=nz) for w, nz in zip(chunks, noises, strict=True)])
    if step:
        run.log({"event": "resume", "step": step, "best_mse": best})
    else:
        run.log({"event": "start", "config": asdict(cfg), "generator": str(gm.path),
                 "params": sum(p.numel() for p in E.parameters())})  # fmt: skip

    @torch.no_grad()
    def val_mse():
        E.eval()
        out = torch.cat([E(x_val[i : i + 128]) for i in range(0, len(x_val), 128)])
        E.train()
        return float(F.mse_loss(out, w_val)), float(((out - w_val) ** 2).mean() / w_val.var(0).mean())

    def extra():
        return {"config": asdict(cfg), "best_mse": best, "history": history, "wall_seconds": wall}

    E.train()
    t_last, acc, n = time.time(), 0.0, 0
    while step < cfg.steps:
        with torch.no_grad():
            w = G.mapping(torch.randn(cfg.batch, G.z_dim))
            x = G.synthesis(w)
        loss = F.mse_loss(E(x), w)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite encoder loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        acc, n = acc + float(loss.detach()), n + 1
        now = time.time()
        wall += now - t_last
        t_last = now
        if step % cfg.log_every == 0:
            run.log({"step": step, "mse": round(acc / n, 6), "wall": round(wall, 1)})
            acc, n = 0.0, 0
        if cfg.val_every > 0 and (step % cfg.val_every == 0 or step == cfg.steps):
            mse, rel = val_mse()
            history.append({"step": step, "val_mse": mse, "val_rel_mse": rel})
            improved = mse < best
            if improved:
                best = mse
                meta = {"kind": "pathgan-encoder", "config": E.config, "mpp": gm.mpp, "step": step,
                        "generator": str(gm.path), "generator_sha256": gm.sha256, "wall_seconds": wall,
                        "metrics": {"val_mse": mse, "val_rel_mse": rel, "n_eval": cfg.n_eval},
                        "train": asdict(cfg)}  # fmt: skip
                save_weights(run.best, E, metadata=meta, half=False)
            run.log({"event": "val", "step": step, "val_mse": round(mse, 6), "val_rel_mse": round(rel, 5),
                     "improved": improved})  # fmt: skip
            t_last = time.time()
        if run.checkpoint_or_stop(step, E, opt, rng, extra()):
            break
    return {"step": step, "best_mse": best, "history": history, "out": str(run.out), "wall_seconds": wall}


def _add(p, cls, skip):
    d = cls(data="", out="")
    for f in cls.__dataclass_fields__.values():
        if f.name in skip:
            continue
        v = getattr(d, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            p.add_argument(flag, action="store_true", help=f"default {v}")
        else:
            p.add_argument(flag, type=type(v), default=v, help=f"default {v}")
    p.add_argument("--out", required=True, help="run directory (log, checkpoints); resumes when it has one")
    p.add_argument("--max-seconds", type=float, default=None, help="stop (with a checkpoint) after this long")


_SKIP = ("out", "val_names", "train_names", "n_val", "norm_target")


def add_pathgan_arguments(p) -> None:
    p.add_argument("--data", default="", help="MoNuSeg-layout directory of NAME.png (+ NAME_inst.tif)")
    _add(p, PathganConfig, _SKIP + ("data",))


def run_pathgan_cli(args) -> int:
    cfg = PathganConfig(
        **{k: getattr(args, k) for k in PathganConfig.__dataclass_fields__ if hasattr(args, k)}
    )
    if not cfg.data and not cfg.slides:
        raise ValueError("give --data (MoNuSeg-layout images) and/or --slides (a folder of .svs slides)")
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.threads))
    res = train_pathgan(cfg, max_seconds=args.max_seconds)
    print(json.dumps({k: v for k, v in res.items() if k != "history"}))
    return 0


def add_encoder_arguments(p) -> None:
    _add(p, EncoderConfig, _SKIP + ("data",))


def run_encoder_cli(args) -> int:
    kw = {k: getattr(args, k) for k in EncoderConfig.__dataclass_fields__ if hasattr(args, k)}
    cfg = EncoderConfig(**{"data": "", **kw})
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.threads))
    res = train_pathgan_encoder(cfg, max_seconds=args.max_seconds)
    print(json.dumps({k: v for k, v in res.items() if k != "history"}))
    return 0
