"""What both trainers share: run directory and split, JSON-lines log, resume with a config check,
checkpoint-or-stop, and argparse options generated from a config dataclass."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ..models import load_checkpoint, read_metadata, save_checkpoint
from .data import DEFAULT_TARGET, list_names, split_names


@dataclass
class RunConfig:
    """Fields every training run has (the trainers' configs extend it)."""

    data: str
    out: str
    seed: int = 0
    n_val: int = 6
    val_every: int = 500
    ckpt_every: int = 100
    log_every: int = 10
    threads: int = 1
    norm_target: str = DEFAULT_TARGET
    val_names: list[str] = field(default_factory=list)  # filled in by the split
    train_names: list[str] = field(default_factory=list)


class Run:
    """One training run in ``cfg.out``: ``log.jsonl``, ``last.safetensors`` (resumable), ``best.safetensors``.

    Creating it sets the thread count, makes the directory and fills ``cfg.train_names`` / ``cfg.val_names``
    with the seeded image-level split (the stain target always stays in training), or with ``split(names)``
    when the trainer passes its own.
    """

    def __init__(self, cfg, *, max_seconds: float | None = None, stop_at_step: int | None = None, split=None):
        torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / "log.jsonl"
        self.last, self.best = self.out / "last.safetensors", self.out / "best.safetensors"
        if split is not None:  # the trainer's own image-level split: names -> (train, val)
            cfg.train_names, cfg.val_names = split(list_names(cfg.data) if cfg.data else [])
        else:
            cfg.train_names, cfg.val_names = split_names(
                list_names(cfg.data), n_val=cfg.n_val, seed=cfg.seed, keep_in_train=(cfg.norm_target,)
            )
        self.max_seconds, self.stop_at_step = max_seconds, stop_at_step
        self.t_start = time.time()

    def log(self, rec: dict) -> None:
        line = json.dumps(rec)
        print(line, flush=True)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def resume(self, module, optimizer, rng: np.random.Generator, *, must_match: tuple[str, ...]) -> tuple:
        """Load ``last.safetensors`` when present (refusing one whose ``must_match`` config keys differ);
        returns ``(step, extra)``: 0 and ``{}`` for a fresh run."""
        if not self.last.exists():
            return 0, {}
        old = read_metadata(self.last)["extra"].get("config", {})
        for k in must_match:
            if k in old and old[k] != getattr(self.cfg, k):
                flag, now = k.replace("_", "-"), getattr(self.cfg, k)
                raise ValueError(f"resume: --{flag}={now!r} but the checkpoint has {old[k]!r}")
        meta = load_checkpoint(self.last, model=module, optimizer=optimizer)
        rng.bit_generator.state = meta["np_rng"]
        return meta["step"], meta["extra"]

    def checkpoint_or_stop(self, step: int, module, optimizer, rng: np.random.Generator, extra: dict) -> bool:
        """Write ``last.safetensors`` every ``ckpt_every`` steps, at the end and when this call must stop
        (``max_seconds`` / ``stop_at_step``); returns whether to stop."""
        stop = (self.max_seconds is not None and time.time() - self.t_start > self.max_seconds) or (
            self.stop_at_step is not None and step >= self.stop_at_step
        )
        if step % self.cfg.ckpt_every == 0 or step == self.cfg.steps or stop:
            save_checkpoint(
                self.last, model=module, optimizer=optimizer, step=step, np_rng_state=rng.bit_generator.state,
                extra=extra,
            )  # fmt: skip
        return stop


def add_config_arguments(p, config_cls, *, skip=("data", "out", "val_names", "train_names")) -> None:
    """``--data``, ``--out``, ``--max-seconds`` and one ``--option`` per plain field of ``config_cls``
    (bools become flags)."""
    d = config_cls(data="", out="")
    p.add_argument("--data", required=True, help="directory of NAME.png (+ NAME_inst.tif)")
    p.add_argument("--out", required=True, help="run directory (log, checkpoints); resumes when it has one")
    for f in fields(config_cls):
        if f.name in skip:
            continue
        v = getattr(d, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            p.add_argument(flag, action="store_true", help=f"default {v}")
        else:
            p.add_argument(flag, type=type(v), default=v, help=f"default {v}")
    p.add_argument("--max-seconds", type=float, default=None, help="stop (with a checkpoint) after this long")


def config_from_args(config_cls, args):
    return config_cls(**{f.name: getattr(args, f.name) for f in fields(config_cls) if hasattr(args, f.name)})
