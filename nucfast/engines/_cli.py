"""Command line: ``python -m nucfast.engines {build,export}`` and the ``nucfast build-engine`` subcommand.

The integrator wires :func:`add_engine_subparsers` into ``nucfast``'s parser (it adds ``build-engine`` and
``export-onnx``, each with ``func`` set); :func:`main` is the standalone entry point.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .. import models
from ..models.pathgan import PathGANEncoder, PathGANGenerator
from ._backends import validate_onnx
from ._onnx import DEFAULT_OPSET, export_onnx, load_model
from ._tensorrt import (
    APIS,
    PRECISIONS,
    Profile,
    TensorRTNotAvailableError,
    build_engine,
    default_cache_dir,
    default_profiles,
)
from ._tile_onnx import export_tile_onnx

__all__ = ["add_engine_subparsers", "build_engine_main", "main", "parse_profile", "run_build", "run_export"]


def parse_profile(text: str) -> Profile:
    """``"1x3x64x64:4x3x1152x1152:4x3x1152x1152"`` (min:opt:max) -> Profile."""
    try:
        parts = [tuple(int(v) for v in s.lower().split("x")) for s in text.split(":")]
        return Profile(*parts)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"--profile must be MIN:OPT:MAX, each NxCxHxW, got {text!r} ({e})"
                                         ) from e


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="usenet",
                   help=f"model name ({', '.join(models.names())}; untrained where it has no shipped "
                        "weights) or a weights file (.safetensors); default usenet")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--per-window-se", action="store_true",
                   help="USE-Net: squeeze-excitation over each input window (the paper's graph) instead of "
                        "the slide engine's graph with a second input se_gates (frozen slide-level gates)")
    p.add_argument("--no-validate", action="store_true",
                   help="skip the onnxruntime-vs-torch check of the export")


def _add_build_args(p: argparse.ArgumentParser) -> None:
    _add_model_args(p)
    p.add_argument("--onnx", type=Path, default=None, help="build from this ONNX file instead of --model")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16")
    p.add_argument("--api", choices=APIS, default="auto",
                   help="tensorrt (needs a GPU), tensorrt_rtx (builds without one), auto (default)")
    p.add_argument("--tile", type=int, default=1024, help="slide engine tile core (default 1024)")
    p.add_argument("--halo", type=int, default=None,
                   help="slide engine halo each side (default: the model's, USE-Net 128)")
    p.add_argument("--max-batch", type=int, default=4, help="largest batch of the default profile")
    p.add_argument("--min-size", type=int, default=64, help="smallest tile side of the default profile")
    p.add_argument("--profile", type=parse_profile, action="append", default=None, metavar="MIN:OPT:MAX",
                   help="explicit profile(s) NxCxHxW:NxCxHxW:NxCxHxW (repeatable; replaces the default)")
    p.add_argument("--calibration", default=None,
                   help="INT8: directory of tissue images, an image, or a slide (calibration tiles)")
    p.add_argument("--compute-capability", action="append", default=None, metavar="SM",
                   help="TensorRT-RTX: build ahead of time for this GPU arch, e.g. sm86 (repeatable)")
    p.add_argument("--workspace-mb", type=int, default=None)
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"engine cache (default {default_cache_dir()})")
    p.add_argument("--output", "-o", type=Path, default=None, help="also copy the engine here")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--verbose", action="store_true", help="TensorRT builder log at verbose level")


def _export_checked(args) -> bytes:
    import torch

    model = load_model(args.model)
    if isinstance(model, PathGANEncoder | PathGANGenerator):  # tile models: their own graph (no H/W axes)
        return export_tile_onnx(model, opset=args.opset)
    # USE-Net: the graph the slide engine runs (frozen slide-level SE gates as a second input), unless asked
    # for the paper's per-window squeeze-excitation
    se = getattr(model, "n_se_gates", 0) > 0 and not args.per_window_se
    onnx = export_onnx(model, opset=args.opset, se_gates=se)
    if not args.no_validate:
        g = torch.Generator().manual_seed(0)
        extra = {"se_gates": torch.rand(model.n_se_gates, generator=g)} if se else None
        w = getattr(model, "window", None)  # nucleus-embedding networks take their fixed window only
        shapes = [(1, 3, w, w), (5, 3, w, w)] if w else [(1, 3, 128, 128), (2, 3, 96, 160)]
        chk = validate_onnx(model, onnx, [torch.rand(s, generator=g) for s in shapes], extra_inputs=extra)
        print(f"export check: {chk}", file=sys.stderr)
        if chk.worst > 1e-3:
            raise SystemExit(f"error: ONNX export differs from torch by {chk.worst:.3g} (> 1e-3)")
    return onnx


def run_build(args: argparse.Namespace) -> int:
    """Handler of ``build`` / ``build-engine``: export (unless --onnx), build or fetch, print JSON info."""
    if args.onnx is not None:
        if not args.onnx.is_file():
            raise SystemExit(f"error: --onnx: no such file {args.onnx}")
        onnx: bytes = args.onnx.read_bytes()
    else:
        onnx = _export_checked(args)
    halo = args.halo if args.halo is not None else models.load(args.model).halo
    profiles = args.profile or default_profiles(args.tile, halo, max_batch=args.max_batch,
                                                min_size=args.min_size)
    t = time.perf_counter()
    info = build_engine(onnx, precision=args.precision, profiles=profiles, calibration_tiles=args.calibration,
                        cache_dir=args.cache_dir, api=args.api, compute_capabilities=args.compute_capability,
                        workspace_mb=args.workspace_mb, force=args.force,
                        log_level="verbose" if args.verbose else "warning")
    out = info.as_dict()
    out["wall_seconds"] = time.perf_counter() - t
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(info.path, args.output)
        shutil.copyfile(info.path.with_suffix(".json"), args.output.with_suffix(".json"))
        out["output"] = str(args.output)
    print(json.dumps(out, indent=1))
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``export`` / ``export-onnx``: write the validated ONNX model."""
    onnx = _export_checked(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_bytes(onnx)
    os.replace(tmp, args.output)
    print(json.dumps({"output": str(args.output), "bytes": len(onnx), "opset": args.opset}))
    return 0


def _add_export_args(p: argparse.ArgumentParser) -> None:
    _add_model_args(p)
    p.add_argument("--output", "-o", type=Path, required=True, help="where to write the .onnx file")


def add_engine_subparsers(subparsers) -> None:
    """Add ``build-engine`` and ``export-onnx`` to a parent parser's subparsers (``func`` set on each)."""
    b = subparsers.add_parser("build-engine", help="build (or fetch from the cache) a TensorRT(-RTX) engine",
                              description=build_engine.__doc__.splitlines()[0])
    _add_build_args(b)
    b.set_defaults(func=run_build)
    e = subparsers.add_parser("export-onnx", help="export a network to ONNX (dynamic batch/height/width)")
    _add_export_args(e)
    e.set_defaults(func=run_export)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nucfast.engines {build,export} ...``"""
    parser = argparse.ArgumentParser(prog="python -m nucfast.engines", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or fetch from the cache) a TensorRT(-RTX) engine")
    _add_build_args(b)
    b.set_defaults(func=run_build)
    e = sub.add_parser("export", help="export a network to ONNX")
    _add_export_args(e)
    e.set_defaults(func=run_export)
    args = parser.parse_args(argv)
    return _run(args, parser)


def _run(args, parser) -> int:
    try:
        return args.func(args)
    except (TensorRTNotAvailableError, ValueError, FileNotFoundError, RuntimeError) as e:
        parser.exit(2, f"error: {e}\n")
    return 2  # pragma: no cover


def build_engine_main(argv: Sequence[str] | None = None) -> int:
    """``scripts/build_engine.py`` / ``nucfast build-engine`` as a function of argv (build options only)."""
    parser = argparse.ArgumentParser(prog="build_engine", description=build_engine.__doc__.splitlines()[0])
    _add_build_args(parser)
    args = parser.parse_args(argv)
    args.func = run_build
    return _run(args, parser)
