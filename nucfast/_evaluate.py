"""``evaluate(model, data_dir)``: per-image and mean AJI / AJI+ / PQ / DQ / SQ / Dice on a MoNuSeg-layout
directory (``NAME.png`` + ``NAME_inst.tif``), printed as a table and optionally written as CSV / JSON."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import models
from ._segment import segment_image
from .baseline import haematoxylin_baseline
from .datasets import list_names, read_labels, read_rgb
from .metrics import all_metrics

__all__ = ["evaluate", "add_evaluate_arguments", "run_evaluate_cli", "METRIC_KEYS"]

METRIC_KEYS = ("aji", "aji_plus", "pq", "dq", "sq", "dice")


def evaluate(
    model="usenet",
    data_dir=None,
    *,
    names=None,
    subset: str = "all",
    tta: bool = False,
    csv_path=None,
    json_path=None,
    postprocess=None,
    predictor=None,
    file=sys.stdout,
) -> dict:
    """Evaluate a model on every image of ``data_dir`` (or ``names``).

    Parameters
    ----------
    model : built-in name, ``.safetensors`` path or loaded model (see :func:`nucfast.segment_image`), or
        ``"baseline"`` (the no-learning baseline, with the shipped USE-Net's validation split)
    data_dir : directory of ``NAME.png`` + ``NAME_inst.tif``
    names : restrict to these image names
    subset : ``"all"``, ``"val"`` or ``"train"``: the split stored with the weights (``val_names``)
    tta, postprocess : passed to :func:`nucfast.segment_image`
    predictor : callable ``rgb -> labels`` used instead of ``model`` (e.g. a no-learning baseline)
    csv_path, json_path : write the per-image rows (CSV) / rows + means (JSON)

    Returns
    -------
    dict with ``rows`` (one dict per image: name, split, metrics, counts, seconds) and ``mean`` (per split
    and overall).
    """
    if data_dir is None:
        raise ValueError("data_dir is required")
    if subset not in ("all", "val", "train"):
        raise ValueError(f"subset must be 'all', 'val' or 'train', got {subset!r}")
    val_names: set[str] = set()
    m = None
    if predictor is None and model == "baseline":  # no weights: the split of the shipped USE-Net
        predictor = haematoxylin_baseline
        val_names = set(models.load("usenet").meta.get("val_names", []))
    if predictor is None:
        m = models.load(model)
        val_names = set(m.meta.get("val_names", []))
    all_names = list_names(data_dir)
    if names is not None:
        missing = sorted(set(names) - set(all_names))
        if missing:
            raise ValueError(f"names not found in {data_dir}: {missing}")
        all_names = sorted(names)
    if subset != "all":
        if not val_names:
            raise ValueError("subset='val'/'train' needs weights that record their validation split")
        all_names = [n for n in all_names if (n in val_names) == (subset == "val")]
    rows = []
    for n in all_names:
        rgb = read_rgb(Path(data_dir) / f"{n}.png")
        gt = read_labels(Path(data_dir) / f"{n}_inst.tif")
        t0 = time.perf_counter()
        if predictor is not None:
            lab = predictor(rgb)
        else:
            lab = segment_image(rgb, m, tta=tta, postprocess=postprocess)
        dt = time.perf_counter() - t0
        split = "val" if n in val_names else ("train" if val_names else "-")
        r = {"name": n, "split": split, **all_metrics(gt, lab), "seconds": dt}
        rows.append(r)
        print(
            f"{n:28s} {split:5s} " + " ".join(f"{k}={r[k]:.4f}" for k in METRIC_KEYS) + f"  ({dt:.1f} s)",
            file=file,
            flush=True,
        )
    means = {}
    splits = sorted({r["split"] for r in rows})
    for sp in (splits + ["all"]) if len(splits) > 1 else ["all"]:
        sel = [r for r in rows if sp == "all" or r["split"] == sp]
        if sel:
            means[sp] = {k: float(np.mean([r[k] for r in sel])) for k in METRIC_KEYS} | {"n_images": len(sel)}
            print(
                f"{'MEAN ' + sp:28s} {'':5s} "
                + " ".join(f"{k}={means[sp][k]:.4f}" for k in METRIC_KEYS)
                + f"  (n={len(sel)})",
                file=file,
            )
    res = {"rows": rows, "mean": means}
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
    if json_path:
        meta = (
            {} if m is None else {"model": str(model), "arch": m.meta.get("arch"), "step": m.meta.get("step")}
        )
        Path(json_path).write_text(json.dumps({**res, **meta, "tta": tta}, indent=1))
    return res


def add_evaluate_arguments(p) -> None:
    p.add_argument(
        "--model", default="usenet",
        help=f"segmentation model: {' | '.join(models.names('segmentation'))} or path/to/weights.safetensors"
    )
    p.add_argument("--data", required=True, help="directory of NAME.png + NAME_inst.tif")
    p.add_argument("--subset", default="all", choices=("all", "val", "train"))
    p.add_argument("--tta", action="store_true", help="8-fold flip/rotation test-time augmentation")
    p.add_argument("--csv", default=None, help="write per-image rows as CSV")
    p.add_argument("--json", default=None, help="write rows and means as JSON")
    p.add_argument("--threads", type=int, default=None, help="torch threads")


def run_evaluate_cli(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    evaluate(args.model, args.data, subset=args.subset, tta=args.tta, csv_path=args.csv, json_path=args.json)
    return 0
