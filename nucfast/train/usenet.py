"""Supervised USE-Net training on MoNuSeg-layout data (resumable, seeded, validation AJI model selection).

Run:  python -m nucfast.train usenet --data ../shared/data/monuseg_train --out /work/runs/usenet_lite
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import aji, all_metrics
from ..models import save_weights
from ..models.usenet import build_usenet, predict_usenet
from ..postprocess import usenet_instances
from ..stain import ReinhardNormalizer
from ._loop import Run, RunConfig, add_config_arguments, config_from_args
from .data import CropSampler, load_dataset, read_rgb

__all__ = ["UsenetConfig", "train_usenet", "usenet_loss", "predict_probs", "validate"]


@dataclass
class UsenetConfig(RunConfig):
    arch: str = "lite"
    steps: int = 20000
    batch: int = 4
    crop: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 300
    norm: str = "reinhard"
    max_rot: float = 25.0


def usenet_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """0.5 * BCE-with-logits + 0.5 * soft Dice loss (Dice per sample and channel, then averaged)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum((2, 3))
    den = p.sum((2, 3)) + target.sum((2, 3))
    dice = 1 - (2 * inter + 1.0) / (den + 1.0)
    loss = 0.5 * bce + 0.5 * dice.mean()
    return loss, {
        "bce": float(bce.detach()),
        "dice_mask": float(dice[:, 0].detach().mean()),
        "dice_marker": float(dice[:, 1].detach().mean()),
    }


def _lr_at(step: int, cfg: UsenetConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min((step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1), 1.0)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module, rgb01: torch.Tensor, *, tile: int = 1024, overlap: int = 64
) -> torch.Tensor:
    """Sigmoid probabilities (2, H, W) of a USE-Net for one image (3, H, W) in [0, 1]: the model layer's
    :func:`nucfast.models.usenet.predict_usenet` (one sliding window for every entry point)."""
    return predict_usenet(model, rgb01, tile=tile, overlap=overlap)


# Post-processings tried at every validation; the checkpoint and its post-processing are selected together
# by mean validation AJI and the winner is stored in the shipped weights' metadata ("postprocess").
PP_GRID = tuple(
    {"method": "ridges", "mask_threshold": m, "marker_threshold": k}
    for m in (0.1, 0.3, 0.5, 0.7)
    for k in (0.1, 0.5)
) + tuple(
    {"method": "watershed", "mask_threshold": m, "marker_threshold": k}
    for m in (0.2, 0.3, 0.4, 0.5)
    for k in (0.3, 0.5, 0.7)
)
PAPER_PP = PP_GRID[0]  # REFERENCE.md 2: ridges, thresholds 0.1 / 0.1
SELECTION = "val-aji-over-pp-grid-v1"


def validate(model, samples, *, grid=PP_GRID) -> dict:
    """Validation metrics on whole images: AJI of every post-processing in ``grid`` (the fast nucfast
    pipelines), then all metrics of the best one (``best_pp``) and of the paper's (``paper``)."""

    probs = []
    for s in samples:
        x = torch.from_numpy(s.rgb).permute(2, 0, 1).float() / 255.0
        probs.append(predict_probs(model, x))
    pairs = list(zip(samples, probs, strict=True))
    ajis = [
        float(np.mean([aji(s.labels, usenet_instances(p[0], p[1], **pp)) for s, p in pairs])) for pp in grid
    ]
    best_pp = grid[int(np.argmax(ajis))]
    keys = ["aji", "aji_plus", "pq", "dq", "sq", "dice"]

    def metrics(pp):
        per = {s.name: all_metrics(s.labels, usenet_instances(p[0], p[1], **pp)) for s, p in pairs}
        return {"mean": {k: float(np.mean([m[k] for m in per.values()])) for k in keys}, "per_image": per}

    res = metrics(best_pp)
    return {
        **res,
        "best_pp": best_pp,
        "paper": metrics(PAPER_PP)["mean"],
        "grid": [{**pp, "aji": a} for pp, a in zip(grid, ajis, strict=True)],
    }


def train_usenet(
    cfg: UsenetConfig, *, max_seconds: float | None = None, stop_at_step: int | None = None
) -> dict:
    """Train (or resume) USE-Net. Writes ``out/last.safetensors`` (resumable), ``out/best.safetensors``
    (best validation AJI), ``out/log.jsonl``; returns a summary dict.

    ``max_seconds`` / ``stop_at_step`` end this call early (with a checkpoint) without changing the
    schedule, which depends on ``cfg.steps`` only, so a resumed run is identical to an uninterrupted one.
    """
    run = Run(cfg, max_seconds=max_seconds, stop_at_step=stop_at_step)
    train_names, val_names = cfg.train_names, cfg.val_names

    torch.manual_seed(cfg.seed)
    model = build_usenet(cfg.arch).to(memory_format=torch.channels_last)  # ~10% faster convs on CPU
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    step, old = run.resume(model, opt, rng, must_match=("arch", "seed", "n_val", "norm", "norm_target"))
    # a checkpoint selected under another criterion restarts the selection
    best_aji = old.get("best_aji", -1.0) if old.get("selection") == SELECTION else -1.0
    history, wall = old.get("history", []), old.get("wall_seconds", 0.0)
    if step:
        run.log({"event": "resume", "step": step, "best_aji": best_aji})
    else:
        n_params = sum(p.numel() for p in model.parameters())
        run.log({"event": "start", "config": asdict(cfg), "params": n_params})

    normalizer = None
    if cfg.norm == "reinhard":
        normalizer = ReinhardNormalizer().fit(read_rgb(Path(cfg.data) / f"{cfg.norm_target}.png"))
    elif cfg.norm != "none":
        raise ValueError(f"norm must be 'reinhard' or 'none', got {cfg.norm!r}")
    train_set = load_dataset(cfg.data, train_names, normalizer=normalizer)
    val_set = load_dataset(cfg.data, val_names, normalizer=normalizer)
    sampler = CropSampler(train_set, crop=cfg.crop, max_rot=cfg.max_rot)

    def extra():
        return {
            "config": asdict(cfg),
            "best_aji": best_aji,
            "selection": SELECTION,
            "history": history,
            "wall_seconds": wall,
            "normalizer": {k: v.tolist() for k, v in (normalizer.state_dict() if normalizer else {}).items()},
        }

    def ship_meta(metrics):
        return {
            "arch": cfg.arch,
            "config": model.config,
            "step": step,
            "val": metrics,
            "postprocess": metrics["best_pp"],
            "selection": SELECTION,
            "input": "rgb01",
            "norm": cfg.norm,
            "norm_target": cfg.norm_target,
            "wall_seconds": wall,
            "normalizer": extra()["normalizer"],
            "train_names": train_names,
            "val_names": val_names,
        }

    t_last = time.time()
    acc = {"loss": 0.0, "bce": 0.0, "dice_mask": 0.0, "dice_marker": 0.0, "n": 0}
    while step < cfg.steps:
        model.train()
        lr = _lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = sampler.sample(rng, cfg.batch)
        logits = model(x.contiguous(memory_format=torch.channels_last))
        loss, parts = usenet_loss(logits, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        acc["loss"] += float(loss.detach())
        for k, v in parts.items():
            acc[k] += v
        acc["n"] += 1
        now = time.time()
        wall += now - t_last
        t_last = now
        if step % cfg.log_every == 0:
            n = acc.pop("n")
            run.log({"step": step, "lr": lr, **{k: v / n for k, v in acc.items()}, "wall": round(wall, 1)})
            acc = {k: 0.0 for k in acc} | {"n": 0}
        do_val = cfg.val_every > 0 and (step % cfg.val_every == 0 or step == cfg.steps)
        if do_val and val_set:
            t0 = time.time()
            res = validate(model, val_set)
            paper_aji = res["paper"]["aji"]
            history.append({"step": step, **res["mean"], "pp": res["best_pp"], "paper_aji": paper_aji})
            improved = res["mean"]["aji"] > best_aji
            if improved:
                best_aji = res["mean"]["aji"]
                save_weights(run.best, model, metadata=ship_meta(res), half=False)
            run.log(
                {
                    "event": "val",
                    "step": step,
                    **res["mean"],
                    "pp": res["best_pp"],
                    "paper_pp": res["paper"],
                    "best_aji": best_aji,
                    "improved": improved,
                    "val_seconds": round(time.time() - t0, 1),
                },
            )
            t_last = time.time()
        if run.checkpoint_or_stop(step, model, opt, rng, extra()):
            break
    return {"step": step, "best_aji": best_aji, "history": history, "out": str(run.out)}


def add_usenet_arguments(p) -> None:
    add_config_arguments(p, UsenetConfig)


def run_usenet_cli(args) -> int:
    cfg = config_from_args(UsenetConfig, args)
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.threads))
    res = train_usenet(cfg, max_seconds=args.max_seconds)
    print(json.dumps({k: v for k, v in res.items() if k != "history"}))
    return 0
