"""Nuc2Vec training (MoCo + alignment/uniformity, REFERENCE.md section 6) on MoNuSeg-layout nuclei.

Every nucleus of the training images (``NAME_inst.tif``; the labels give only centroids and bounding boxes,
never a class) is a training sample:

- q = the 64 x 64 patch around the centroid; k = the same patch with everything outside the nucleus'
  bounding box replaced by a random 64 x 64 crop of the same image ("background replacement");
- each view then independently (:func:`augment_views`): centred random resized crop (area scale 0.5-1,
  aspect 3/4-4/3), colour jitter (brightness 0.4, contrast 0.5, saturation 0.4, hue 0.5) with p 0.8
  (torchvision's definitions, applied in that fixed order), Gaussian blur sigma U(0.1, 1) (7-tap) with
  p 0.5, a 90 degree rotation with p 0.5, horizontal and vertical flips with p 0.5 each;
- the query encoder embeds q, the momentum key encoder (m 0.999, batch-norm statistics over shuffled
  sub-batches of 32: single-device "shuffle BN") embeds k, and k enters a queue of negatives;
- loss = 3 L_align (mean ||q - k||^2) + 1 L_unif (log mean exp(-3 d^2) over q against the queue and the
  in-batch pairs of q) + 0 InfoNCE (tau 0.07, off by default as in the authors' code);
- SGD lr 0.03 x batch / 128, momentum 0.9, weight decay 1e-4, lr x0.1 at 60 % and 80 % of the steps (the
  authors' 120 and 160 of 200 epochs).

Model selection: retrieval top-1 on the held-out images' nuclei (:func:`retrieval_top1`: each nucleus
under two independent augmentations, the nearest of all second views must be its own), every ``val_every``
steps. All randomness is drawn from the checkpointed numpy Generator, so a resumed run repeats an
uninterrupted one.

Run:  python -m nucfast.train nuc2vec --data ../shared/data/monuseg_train --out /work/runs/nuc2vec
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import save_weights
from ..models.nuc2vec import IMAGENET_MEAN, Nuc2Vec, build_nuc2vec, extract_patches, nucleus_centroids
from ._loop import Run, RunConfig, add_config_arguments, config_from_args
from .data import list_names, read_labels, read_rgb

__all__ = [
    "Nuc2VecConfig",
    "NucleusSet",
    "augment_views",
    "MoCo",
    "align_uniform_loss",
    "retrieval_top1",
    "train_nuc2vec",
]


@dataclass
class Nuc2VecConfig(RunConfig):
    arch: str = "lite"
    steps: int = 6000
    batch: int = 128
    queue: int = 8192
    momentum: float = 0.999
    lr: float = 0.03  # per 128 nuclei
    weight_decay: float = 1e-4
    align_weight: float = 3.0
    unif_weight: float = 1.0
    unif_t: float = 3.0
    nce_weight: float = 0.0
    nce_tau: float = 0.07
    shuffle_bn_group: int = 32
    bf16: bool = False
    val_every: int = 250
    ckpt_every: int = 100
    n_val: int = 6
    max_val_nuclei: int = 2000
    hue: float = 0.5  # colour-jitter hue range (the paper's 0.5; an ablation knob)
    # more training images (NAME.png + NAME_inst.tif, all used for training), e.g. the nuclei nucfast finds
    # on the slides: scripts/slide_nuclei.py
    extra_data: str = ""


# ------------------------------------------------------------------------------------------------- data
class NucleusSet:
    """The nuclei of a list of images: uint8 images (3, H, W), and per nucleus its image, centroid and box."""

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], *, window: int = 64):
        if not images:
            raise ValueError("no images")
        self.window = int(window)
        self.images, img, cen, box = [], [], [], []
        for i, (rgb, lab) in enumerate(zip(images, labels, strict=True)):
            if rgb.shape[:2] != lab.shape:
                raise ValueError(f"image {i}: rgb {rgb.shape[:2]} and labels {lab.shape} differ in size")
            if min(lab.shape) < self.window:
                raise ValueError(f"image {i}: {lab.shape} is smaller than the {self.window} px window")
            self.images.append(torch.from_numpy(np.array(rgb[..., :3])).permute(2, 0, 1).contiguous())
            _, c, b = nucleus_centroids(torch.from_numpy(np.ascontiguousarray(lab)))
            img.append(torch.full((c.shape[0],), i, dtype=torch.int64))
            cen.append(c)
            box.append(b)
        self.image_of = torch.cat(img)
        self.centroid = torch.cat(cen)
        self.box = torch.cat(box)
        if len(self) == 0:
            raise ValueError("the label images contain no nuclei")

    @classmethod
    def from_dir(cls, data_dir, names: list[str], *, more=("", ()), **kw) -> NucleusSet:
        """The images ``names`` of ``data_dir`` (+ ``more`` = (another dir, its names))."""
        pairs = [(Path(data_dir), n) for n in names] + [(Path(more[0]), n) for n in more[1]]
        rgbs = [read_rgb(d / f"{n}.png") for d, n in pairs]
        return cls(rgbs, [read_labels(d / f"{n}_inst.tif") for d, n in pairs], **kw)

    def __len__(self) -> int:
        return int(self.image_of.numel())

    def patches(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float patches (n, 3, w, w) in [0, 1] of nuclei ``idx`` and their box masks (n, 1, w, w)."""
        w = self.window
        out = torch.empty((idx.numel(), 3, w, w))
        mask = torch.zeros((idx.numel(), 1, w, w))
        fill = [round(m * 255) for m in IMAGENET_MEAN]
        for i in torch.unique(self.image_of[idx]).tolist():
            sel = (self.image_of[idx] == i).nonzero().flatten()
            out[sel] = extract_patches(self.images[i], self.centroid[idx[sel]], w, fill=fill).float() / 255.0
        top = torch.round(self.centroid[idx]).to(torch.int64) - w // 2
        r = torch.arange(w)
        b = self.box[idx]
        inside_r = (r[None] >= (b[:, 0:1] - top[:, 0:1])) & (r[None] < (b[:, 2:3] - top[:, 0:1]))
        inside_c = (r[None] >= (b[:, 1:2] - top[:, 1:2])) & (r[None] < (b[:, 3:4] - top[:, 1:2]))
        mask[:, 0] = (inside_r[:, :, None] & inside_c[:, None, :]).float()
        return out, mask

    def random_crops(self, rng: np.random.Generator, image_ids: torch.Tensor) -> torch.Tensor:
        """One random window-sized crop (float [0, 1]) of each image in ``image_ids``."""
        w = self.window
        out = torch.empty((image_ids.numel(), 3, w, w))
        for j, i in enumerate(image_ids.tolist()):
            im = self.images[i]
            r0 = int(rng.integers(im.shape[1] - w + 1))
            c0 = int(rng.integers(im.shape[2] - w + 1))
            out[j] = im[:, r0 : r0 + w, c0 : c0 + w].float() / 255.0
        return out

    def views(
        self, rng: np.random.Generator, batch: int, *, hue: float = 0.5
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch: (q, k) views (B, 3, w, w) of ``batch`` nuclei drawn uniformly."""
        idx = torch.from_numpy(rng.integers(len(self), size=batch))
        x, box = self.patches(idx)
        bg = self.random_crops(rng, self.image_of[idx])
        k = x * box + (1 - box) * bg  # background replacement
        return augment_views(x, rng, hue=hue), augment_views(k, rng, hue=hue)


# ------------------------------------------------------------------------------------------ augmentation
def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    mx, mn = x.max(1).values, x.min(1).values
    d = mx - mn
    s = torch.where(mx > 0, d / mx.clamp_min(1e-12), torch.zeros_like(mx))
    dc = d.clamp_min(1e-12)
    h = torch.where(mx == r, ((g - b) / dc) % 6, torch.where(mx == g, (b - r) / dc + 2, (r - g) / dc + 4))
    h = torch.where(d > 0, h / 6, torch.zeros_like(h))
    return torch.stack([h, s, mx], 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB as f(n) = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6, n = 5, 3, 1."""
    h, s, v = x[:, :1], x[:, 1:2], x[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + 6 * h) % 6
    return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


def color_jitter(x: torch.Tensor, b, c, s, h) -> torch.Tensor:
    """torchvision's brightness, contrast, saturation and hue adjustments with per-sample factors (N,)."""
    v = lambda a: torch.as_tensor(a, dtype=x.dtype).view(-1, 1, 1, 1)  # noqa: E731
    x = (x * v(b)).clamp(0, 1)
    m = _gray(x).mean((2, 3), keepdim=True)
    x = (m + v(c) * (x - m)).clamp(0, 1)
    g = _gray(x)
    x = (g + v(s) * (x - g)).clamp(0, 1)
    hsv = _rgb_to_hsv(x)
    hsv = torch.cat([(hsv[:, :1] + v(h)) % 1.0, hsv[:, 1:]], 1)
    return _hsv_to_rgb(hsv).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma) -> torch.Tensor:
    """Separable 7-tap Gaussian blur with a per-sample sigma (N,), reflect padding."""
    n, c, hh, ww = x.shape
    t = torch.arange(-3, 4, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None] / torch.as_tensor(sigma, dtype=x.dtype)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n c, 7)
    y = F.pad(x.reshape(1, n * c, hh, ww), (3, 3, 3, 3), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, hh, ww)


def augment_views(
    x: torch.Tensor,
    rng: np.random.Generator,
    *,
    extra: torch.Tensor | None = None,
    color: bool = True,
    hue: float = 0.5,
):
    """The per-view augmentations of the module docstring on a batch (N, 3, w, w) in [0, 1], all random
    parameters from ``rng``. ``extra`` (N, C, w, w): channels (a nucleus mask) warped with the same geometry
    (bilinear) and no colour change; then ``(x, extra)`` is returned. ``color=False``: geometry and blur only
    (the colour parameters are still drawn, so the geometry is that of ``color=True``)."""
    n, _, w, _ = x.shape
    scale = rng.uniform(0.5, 1.0, n)
    ratio = np.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3), n))
    sx = np.minimum(np.sqrt(scale * ratio), 1.0)
    sy = np.minimum(np.sqrt(scale / ratio), 1.0)
    rot = rng.random(n) < 0.5
    fh = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    fv = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    theta = np.zeros((n, 2, 3))
    # output (u, v) -> flips -> rotation by 90 degrees -> centred crop of half-sides (sx, sy)
    a = np.stack([np.stack([fh, np.zeros(n)], -1), np.stack([np.zeros(n), fv], -1)], 1)  # (n, 2, 2)
    r90 = np.array([[0.0, -1.0], [1.0, 0.0]])
    a = np.where(rot[:, None, None], r90[None] @ a, a)
    theta[:, :, :2] = np.stack([sx, sy], -1)[:, :, None] * a
    grid = F.affine_grid(torch.from_numpy(theta).to(x.dtype), [n, 1, w, w], align_corners=False)
    stack = x if extra is None else torch.cat([x, extra], 1)
    stack = F.grid_sample(stack, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y, ex = stack[:, :3], stack[:, 3:]
    jit = rng.random(n) < 0.8
    b = np.where(jit, rng.uniform(0.6, 1.4, n), 1.0)
    c = np.where(jit, rng.uniform(0.5, 1.5, n), 1.0)
    s = np.where(jit, rng.uniform(0.6, 1.4, n), 1.0)
    h = np.where(jit, hue * rng.uniform(-1.0, 1.0, n), 0.0)
    if color:
        y = color_jitter(y, b, c, s, h)
    blur = rng.random(n) < 0.5
    sig = rng.uniform(0.1, 1.0, n)
    if blur.any():
        sel = torch.from_numpy(blur.nonzero()[0])
        y[sel] = gaussian_blur(y[sel], sig[blur])
    y = y.clamp(0, 1)
    return y if extra is None else (y, ex)


# ------------------------------------------------------------------------------------------------ model
class MoCo(nn.Module):
    """Query encoder, momentum key encoder and the queue of keys (all in the state dict: exact resume)."""

    def __init__(self, net: Nuc2Vec, *, queue: int, momentum: float, seed: int = 0):
        super().__init__()
        self.q = net
        self.k = copy.deepcopy(net)
        for p in self.k.parameters():
            p.requires_grad_(False)
        self.m = float(momentum)
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("queue", F.normalize(torch.randn(queue, net.dim, generator=g), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.int64))
        self.register_buffer("filled", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def momentum_update(self) -> None:
        for pq, pk in zip(self.q.parameters(), self.k.parameters(), strict=True):
            pk.mul_(self.m).add_(pq.detach(), alpha=1 - self.m)

    @torch.no_grad()
    def keys(self, x: torch.Tensor, rng: np.random.Generator, group: int) -> torch.Tensor:
        """Key embeddings with batch-norm statistics over shuffled sub-batches of ``group``."""
        perm = torch.from_numpy(rng.permutation(x.shape[0]))
        xs = x[perm]
        out = torch.cat([self.k(xs[i : i + group]) for i in range(0, xs.shape[0], group)])
        return out[torch.argsort(perm)]

    @torch.no_grad()
    def enqueue(self, k: torch.Tensor) -> None:
        n, size = k.shape[0], self.queue.shape[0]
        idx = (self.ptr + torch.arange(n)) % size
        self.queue[idx] = k.float()
        self.ptr.copy_((self.ptr + n) % size)
        self.filled.copy_(torch.clamp(self.filled + n, max=size))

    def negatives(self) -> torch.Tensor:
        """The filled part of the queue (the random initial entries are not used as negatives)."""
        f = int(self.filled)
        return self.queue if f >= self.queue.shape[0] else self.queue[:f]


def align_uniform_loss(
    q,
    k,
    negatives,
    *,
    t: float = 3.0,
    align_w: float = 3.0,
    unif_w: float = 1.0,
    nce_w: float = 0.0,
    tau: float = 0.07,
) -> tuple[torch.Tensor, dict]:
    """``align_w`` L_align + ``unif_w`` L_unif (+ ``nce_w`` InfoNCE) of unit vectors q, k (B, d) and the queue
    ``negatives`` (K, d); L_unif = log mean exp(-t d^2) over q vs queue and the in-batch pairs of q."""
    align = (q - k).pow(2).sum(1).mean()
    d2 = [torch.pdist(q).pow(2)]
    if negatives.shape[0]:
        d2.append((2 - 2 * q @ negatives.T).reshape(-1))
    d2 = torch.cat(d2)
    unif = torch.logsumexp(-t * d2, 0) - math.log(d2.numel())
    loss = align_w * align + unif_w * unif
    parts = {"align": float(align.detach()), "unif": float(unif.detach())}
    if nce_w:
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.T], 1) / tau
        nce = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))
        loss = loss + nce_w * nce
        parts["nce"] = float(nce.detach())
    return loss, parts


# ------------------------------------------------------------------------------------------- validation
@torch.no_grad()
def embed_batches(net: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    net.eval()
    return (
        torch.cat([net(x[i : i + batch]) for i in range(0, x.shape[0], batch)]) if len(x) else x.new_zeros(0)
    )


def retrieval_top1(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of rows i of ``a`` whose nearest row of ``b`` (cosine / Euclidean on unit vectors, or
    Euclidean on standardised features) is row i."""
    if a.shape[0] == 0:
        return float("nan")
    d = torch.cdist(a.double(), b.double())
    return float((d.argmin(1) == torch.arange(a.shape[0])).double().mean())


def validation_views(ns: NucleusSet, *, seed: int, max_nuclei: int):
    """Fixed evaluation data: (idx, view A, view B, mask A, mask B) for up to ``max_nuclei`` nuclei."""
    rng = np.random.default_rng(seed)
    n = len(ns)
    idx = torch.from_numpy(np.sort(rng.permutation(n)[: min(n, max_nuclei)]))
    a, b, ma, mb = [], [], [], []
    for s in range(0, idx.numel(), 256):  # chunks: the hue step holds 6 copies of its batch
        x, box = ns.patches(idx[s : s + 256])
        for out, m in ((a, ma), (b, mb)):
            y, mm = augment_views(x, rng, extra=box)
            out.append(y)
            m.append(mm)
    return idx, torch.cat(a), torch.cat(b), torch.cat(ma), torch.cat(mb)


@torch.no_grad()
def validate_nuc2vec(net: nn.Module, views) -> dict:
    _, a, b, _, _ = views
    ea, eb = embed_batches(net, a), embed_batches(net, b)
    align = float((ea - eb).pow(2).sum(1).mean())
    d2 = torch.pdist(ea).pow(2)
    unif = float(torch.logsumexp(-3 * d2, 0) - math.log(max(d2.numel(), 1)))
    return {"top1": retrieval_top1(ea, eb), "align": align, "unif": unif, "n": int(a.shape[0])}


# --------------------------------------------------------------------------------------------- training
def _lr_at(step: int, cfg: Nuc2VecConfig) -> float:
    base = cfg.lr * cfg.batch / 128
    return base * (0.1 if step >= 0.6 * cfg.steps else 1.0) * (0.1 if step >= 0.8 * cfg.steps else 1.0)


def train_nuc2vec(
    cfg: Nuc2VecConfig, *, max_seconds: float | None = None, stop_at_step: int | None = None
) -> dict:
    """Train (or resume) Nuc2Vec. Writes ``last.safetensors`` (resumable: both encoders, queue, optimiser,
    RNG), ``best.safetensors`` (query encoder, best validation retrieval top-1) and ``log.jsonl``."""
    run = Run(cfg, max_seconds=max_seconds, stop_at_step=stop_at_step)
    torch.manual_seed(cfg.seed)
    net = build_nuc2vec({"arch": cfg.arch})
    moco = MoCo(net, queue=cfg.queue, momentum=cfg.momentum, seed=cfg.seed)
    opt = torch.optim.SGD(moco.q.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    step, old = run.resume(moco, opt, rng, must_match=("arch", "seed", "n_val", "batch", "queue"))
    history, best, wall = old.get("history", []), old.get("best_top1", -1.0), old.get("wall_seconds", 0.0)
    if step:
        run.log({"event": "resume", "step": step, "best_top1": best})
    else:
        run.log({"event": "start", "config": asdict(cfg), "params": sum(p.numel() for p in net.parameters())})
    window = net.window
    extra = list_names(cfg.extra_data) if cfg.extra_data else []  # raises for a folder without pairs
    train = NucleusSet.from_dir(cfg.data, cfg.train_names, window=window, more=(cfg.extra_data, extra))
    val = NucleusSet.from_dir(cfg.data, cfg.val_names, window=window) if cfg.val_names else None
    views = validation_views(val, seed=cfg.seed + 1, max_nuclei=cfg.max_val_nuclei) if val else None
    if step == 0:
        run.log({"event": "data", "train_nuclei": len(train), "val_nuclei": len(val) if val else 0})

    def extra():
        return {"config": asdict(cfg), "best_top1": best, "history": history, "wall_seconds": wall}

    def ship_meta(res):
        return {
            "kind": "nuc2vec",
            "arch": cfg.arch,
            "config": net.config,
            "step": step,
            "val": res,
            "selection": "val-retrieval-top1",
            "input": "rgb01",
            "norm": "none",
            "mpp": 0.25,
            "train_names": cfg.train_names,
            "val_names": cfg.val_names,
            "wall_seconds": wall,
            "train_nuclei": len(train),
            "loss": {
                k: getattr(cfg, k)
                for k in (
                    "align_weight",
                    "unif_weight",
                    "unif_t",
                    "nce_weight",
                    "queue",
                    "momentum",
                    "batch",
                    "lr",
                )
            },
        }

    t_last = time.time()
    acc: dict[str, float] = {}
    n_acc = 0
    while step < cfg.steps:
        moco.train()
        lr = _lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        xq, xk = train.views(rng, cfg.batch, hue=cfg.hue)
        cl = torch.channels_last
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            q = moco.q(xq.contiguous(memory_format=cl))
            k = moco.keys(xk.contiguous(memory_format=cl), rng, cfg.shuffle_bn_group)
        loss, parts = align_uniform_loss(
            q.float(),
            k.float(),
            moco.negatives(),
            t=cfg.unif_t,
            align_w=cfg.align_weight,
            unif_w=cfg.unif_weight,
            nce_w=cfg.nce_weight,
            tau=cfg.nce_tau,
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        moco.momentum_update()
        moco.enqueue(k)
        step += 1
        parts["loss"] = float(loss.detach())
        for key, v in parts.items():
            acc[key] = acc.get(key, 0.0) + v
        n_acc += 1
        now = time.time()
        wall += now - t_last
        t_last = now
        if step % cfg.log_every == 0:
            run.log(
                {"step": step, "lr": lr, **{k_: v / n_acc for k_, v in acc.items()}, "wall": round(wall, 1)}
            )
            acc, n_acc = {}, 0
        if views is not None and cfg.val_every > 0 and (step % cfg.val_every == 0 or step == cfg.steps):
            t0 = time.time()
            res = validate_nuc2vec(moco.q, views)
            history.append({"step": step, **res})
            improved = res["top1"] > best
            if improved:
                best = res["top1"]
                save_weights(run.best, moco.q, metadata=ship_meta(res), half=False)
            run.log(
                {
                    "event": "val",
                    "step": step,
                    **res,
                    "best_top1": best,
                    "improved": improved,
                    "val_seconds": round(time.time() - t0, 1),
                }
            )
            t_last = time.time()
        if run.checkpoint_or_stop(step, moco, opt, rng, extra()):
            break
    return {"step": step, "best_top1": best, "history": history, "out": str(run.out)}


def add_nuc2vec_arguments(p) -> None:
    add_config_arguments(p, Nuc2VecConfig)


def run_nuc2vec_cli(args) -> int:
    cfg = config_from_args(Nuc2VecConfig, args)
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.threads))
    res = train_nuc2vec(cfg, max_seconds=args.max_seconds)
    print(json.dumps({k: v for k, v in res.items() if k != "history"}))
    return 0
