"""Self-supervised attention training (scale classification, M-WSI setting) on MoNuSeg-layout data.

Without whole slides, the three magnifications are sampled from the 40x images by area downscaling (the
paper's "M-WSI" variant): a 40x sample is a ``crop`` x ``crop`` region, 20x a ``2 crop`` region halved, 10x
a ``4 crop`` region quartered; every batch holds ``per_mag`` samples of each. Tissue filter (HSV saturation),
Reinhard to the target, HED jitter N(1, 0.03), random 90-degree rotations and flips, ImageNet normalisation.
No labels are used for training: the instance maps serve only the validation AJI (model selection), and the
optional pseudo-labels come from the no-learning haematoxylin baseline.

Run:  python -m nucfast.train attention --data ../shared/data/monuseg_train --out /work/runs/attention
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..baseline import haematoxylin_baseline
from ..metrics import all_metrics
from ..models import save_weights
from ..models.attention import (
    TRANSFORMS,
    AttentionNet,
    ScaleClassifier,
    attention_losses,
    imagenet_normalize,
    predict_attention,
)
from ..postprocess.reference import attention_instances_reference
from ..stain import ReinhardNormalizer, hed_to_rgb, rgb_to_hed
from ._loop import Run, RunConfig, add_config_arguments, config_from_args
from .data import load_dataset, read_rgb

__all__ = ["AttentionConfig", "MWSISampler", "train_attention", "validate_attention", "tissue_fraction"]


@dataclass
class AttentionConfig(RunConfig):
    width: int = 32
    g_width: int = 32
    steps: int = 4000
    per_mag: int = 4
    crop: int = 128
    lr: float = 2e-4
    weight_decay: float = 1e-4
    val_every: int = 250
    ckpt_every: int = 50
    scale_equivariance: bool = False
    pseudo_weight: float = 0.0
    hed_sigma: float = 0.03


def tissue_fraction(x01: torch.Tensor, sat_threshold: float = 0.07) -> float:
    """Fraction of pixels whose HSV saturation exceeds ``sat_threshold`` (glass is unsaturated)."""
    mx, mn = x01.max(0).values, x01.min(0).values
    sat = torch.where(mx > 0, (mx - mn) / mx.clamp_min(1e-6), torch.zeros_like(mx))
    return float((sat > sat_threshold).float().mean())


class MWSISampler:
    """Batches with equal numbers of 10x / 20x / 40x samples drawn from 40x images (labels 0, 1, 2)."""

    FACTORS = (4, 2, 1)  # 10x, 20x, 40x

    def __init__(self, images: list[np.ndarray], *, crop: int, hed_sigma: float = 0.03, pseudo=None):
        if not images:
            raise ValueError("images is empty")
        self.crop, self.hed_sigma = int(crop), hed_sigma
        for im in images:
            if min(im.shape[:2]) < 4 * self.crop:
                raise ValueError(f"images must be at least 4 x crop = {4 * self.crop} px on each side")
        self.images = [torch.from_numpy(im).permute(2, 0, 1).float() / 255.0 for im in images]
        self.pseudo = (
            None if pseudo is None else [torch.from_numpy(p.astype(np.float32))[None] for p in pseudo]
        )

    def sample(self, rng: np.random.Generator, per_mag: int):
        xs, ys, ps = [], [], []
        for label, f in enumerate(self.FACTORS):
            for _ in range(per_mag):
                for _attempt in range(10):
                    i = int(rng.integers(len(self.images)))
                    im = self.images[i]
                    s = self.crop * f
                    r0 = int(rng.integers(im.shape[1] - s + 1))
                    c0 = int(rng.integers(im.shape[2] - s + 1))
                    x = im[:, r0 : r0 + s, c0 : c0 + s]
                    if tissue_fraction(x) > 0.9:
                        break
                p = None if self.pseudo is None else self.pseudo[i][:, r0 : r0 + s, c0 : c0 + s]
                if f > 1:
                    x = F.avg_pool2d(x[None], f)[0]
                    p = None if p is None else (F.avg_pool2d(p[None], f)[0] >= 0.5).float()
                k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
                x = torch.rot90(x.flip(-1) if flip else x, k, (-2, -1))
                p = None if p is None else torch.rot90(p.flip(-1) if flip else p, k, (-2, -1))
                hed = rgb_to_hed(x.double(), clip=False)
                a = torch.from_numpy(1 + self.hed_sigma * rng.standard_normal(3))[:, None, None]
                x = hed_to_rgb(hed * a).float()
                xs.append(x)
                ys.append(label)
                if p is not None:
                    ps.append(p)
        x = imagenet_normalize(torch.stack(xs))
        return x, torch.tensor(ys), (torch.stack(ps) if ps else None)


@torch.no_grad()
def validate_attention(net: AttentionNet, samples) -> dict:
    per = {}
    for s in samples:
        x = torch.from_numpy(s.rgb).permute(2, 0, 1).float() / 255.0
        a = predict_attention(net, x)[0].numpy()
        per[s.name] = all_metrics(s.labels, attention_instances_reference(a > 0.5))
    keys = ["aji", "aji_plus", "pq", "dq", "sq", "dice"]
    return {"mean": {k: float(np.mean([m[k] for m in per.values()])) for k in keys}, "per_image": per}


class _Both(torch.nn.Module):
    def __init__(self, f, g):
        super().__init__()
        self.f, self.g = f, g


def train_attention(
    cfg: AttentionConfig, *, max_seconds: float | None = None, stop_at_step: int | None = None
):
    """Train (or resume) F and G. Writes ``last.safetensors``, ``best.safetensors`` (F only, best val AJI),
    ``log.jsonl`` under ``cfg.out``."""
    run = Run(cfg, max_seconds=max_seconds, stop_at_step=stop_at_step)
    torch.manual_seed(cfg.seed)
    net = AttentionNet(width=cfg.width)
    g = cfg.g_width
    clf = ScaleClassifier(widths=(g, 2 * g, 4 * g, 8 * g), stem_width=g)
    both = _Both(net, clf)
    opt = torch.optim.Adam(both.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    step, old = run.resume(both, opt, rng, must_match=("width", "g_width", "seed", "n_val"))
    history, best_aji = old.get("history", []), old.get("best_aji", -1.0)
    wall = old.get("wall_seconds", 0.0)
    if step:
        run.log({"event": "resume", "step": step, "best_aji": best_aji})
    else:
        run.log({"event": "start", "config": asdict(cfg)})
    normalizer = ReinhardNormalizer().fit(read_rgb(Path(cfg.data) / f"{cfg.norm_target}.png"))
    raw = load_dataset(cfg.data, cfg.train_names)
    pseudo = None
    if cfg.pseudo_weight > 0:
        pseudo = [haematoxylin_baseline(s.rgb) > 0 for s in raw]
    sampler = MWSISampler(
        [normalizer.transform(s.rgb) for s in raw], crop=cfg.crop, hed_sigma=cfg.hed_sigma, pseudo=pseudo
    )
    val_set = load_dataset(cfg.data, cfg.val_names, normalizer=normalizer)
    norm_state = {k: v.tolist() for k, v in normalizer.state_dict().items()}

    def extra():
        return {"config": asdict(cfg), "best_aji": best_aji, "history": history, "wall_seconds": wall}

    t_last = time.time()
    acc: dict[str, float] = {}
    n_acc = 0
    while step < cfg.steps:
        both.train()
        x, y, p = sampler.sample(rng, cfg.per_mag)
        t = TRANSFORMS[int(rng.integers(len(TRANSFORMS)))]
        loss, parts = attention_losses(
            net,
            clf,
            x,
            y,
            transform=t,
            scale_equivariance=cfg.scale_equivariance,
            pseudo=p,
            pseudo_weight=cfg.pseudo_weight,
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        parts["loss"] = float(loss.detach())
        for k, v in parts.items():
            acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        now = time.time()
        wall += now - t_last
        t_last = now
        if step % cfg.log_every == 0:
            run.log(
                {
                    "step": step,
                    **{k: v / n_acc for k, v in acc.items()},
                    "tau": float(net.head.running_tau),
                    "wall": round(wall, 1),
                },
            )
            acc, n_acc = {}, 0
        if cfg.val_every > 0 and (step % cfg.val_every == 0 or step == cfg.steps) and val_set:
            res = validate_attention(net, val_set)
            history.append({"step": step, **res["mean"]})
            improved = res["mean"]["aji"] > best_aji
            if improved:
                best_aji = res["mean"]["aji"]
                meta = {
                    "kind": "attention",
                    "arch": f"attention_w{cfg.width}",
                    "config": net.config,
                    "step": step,
                    "val": res,
                    "norm": "reinhard",
                    "norm_target": cfg.norm_target,
                    "normalizer": norm_state,
                    "train_names": cfg.train_names,
                    "val_names": cfg.val_names,
                    "wall_seconds": wall,
                    "pseudo_weight": cfg.pseudo_weight,
                }
                save_weights(run.best, net, metadata=meta, half=False)
            run.log({"event": "val", "step": step, **res["mean"], "best_aji": best_aji, "improved": improved})
            t_last = time.time()
        if run.checkpoint_or_stop(step, both, opt, rng, extra()):
            break
    return {"step": step, "best_aji": best_aji, "history": history, "out": str(run.out)}


def add_attention_arguments(p) -> None:
    add_config_arguments(p, AttentionConfig)


def run_attention_cli(args) -> int:
    res = train_attention(config_from_args(AttentionConfig, args), max_seconds=args.max_seconds)
    print(json.dumps({k: v for k, v in res.items() if k != "history"}))
    return 0
