"""The ``nucfast`` command line: segment, demo, train, evaluate, sample-tiles, build-engine, export-onnx,
subtypes.

Each subcommand's parser sets ``func=<callable(args) -> int>`` as its default.
``register_subcommand(fn)`` adds further subcommands at runtime (``fn(subparsers)``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import __version__, models
from ._segment import calibration_feeds
from ._subtypes_cli import add_subtypes_subparser
from ._tiles import write_interpolation_strip, write_sample_grid
from .engines import BackendUnavailableError, add_engine_subparsers
from .engines._quantize import quantize_int8
from .models._int8 import graph_info, int8_path
from .slide import MissingMPPError, segment_slide
from .slide._labels import read_label_array
from .slide.accuracy import aji, detection_scores
from .slide.engine import _DEFAULT_OUTPUTS, BACKENDS, OUTPUTS
from .synthetic import write_synthetic_slide

__all__ = ["main", "build_parser", "register_subcommand", "SUBCOMMAND_REGISTRARS", "CLIError"]

SUBCOMMAND_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = []


class CLIError(Exception):
    """A command-line problem the user can fix (printed as one ``nucfast: error: ...`` line)."""


#: What a user can cause and fix: printed as one ``nucfast: error: ...`` line with exit code 1. Anything
#: else is a bug and keeps its traceback. OSError covers unreadable slides (SlideReadError), missing files,
#: full disks (DiskFullError), unusable output directories (RunDirError, RunDirBusy) and permissions.
EXPECTED_ERRORS = (OSError, ValueError, MissingMPPError, BackendUnavailableError, CLIError)


def _register_train_evaluate(sub) -> None:
    """``nucfast train {usenet,attention} ...`` and ``nucfast evaluate ...`` from ``nucfast.train``."""
    try:
        from .train import add_evaluate_subparser, add_train_subparsers  # optional: a partial install
    except ImportError:
        return
    t = sub.add_parser("train", help="train a model (see nucfast train -h)")
    try:
        add_train_subparsers(t.add_subparsers(dest="model", metavar="MODEL", required=True))
    except ImportError as e:  # a partial install: say so instead of breaking the other commands
        t.set_defaults(func=lambda a, e=e: print(f"nucfast train unavailable: {e}", file=sys.stderr) or 1)
    try:
        add_evaluate_subparser(sub)
    except ImportError:
        pass


def register_subcommand(registrar: Callable[[argparse._SubParsersAction], None]):
    """Add a subcommand registrar (``registrar(subparsers)``); usable as a decorator."""
    SUBCOMMAND_REGISTRARS.append(registrar)
    return registrar


class _Progress:
    """Progress line: tiles done, nuclei, MP/s (tqdm when installed and the stream is a terminal)."""

    def __init__(self, name: str, quiet: bool = False):
        self.name, self.quiet = name, quiet
        self.t0 = time.perf_counter()
        self.bar = None
        self._last = 0.0

    def __call__(self, done, total, nuclei, mp):
        if self.quiet:
            return
        rate = mp / max(time.perf_counter() - self.t0, 1e-9)
        if self.bar is None:
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=total,
                    desc=self.name,
                    unit="tile",
                    file=sys.stderr,
                    initial=0,
                    disable=not sys.stderr.isatty(),
                )
            except ImportError:
                self.bar = False
        if self.bar:
            self.bar.n = done
            self.bar.set_postfix_str(f"{nuclei} nuclei, {rate:.2f} MP/s")
            self.bar.refresh()
        now = time.perf_counter()
        if (not self.bar or self.bar.disable) and (now - self._last > 1.0 or done == total):
            self._last = now
            print(
                f"{self.name}: {done}/{total} tiles, {nuclei} nuclei, {rate:.2f} MP/s",
                file=sys.stderr,
                flush=True,
            )

    def close(self):
        if self.bar:
            self.bar.close()


# stages whose rate (MP/s) means something
_PER_TILE = ("decode", "segment", "measure", "embed", "tile_embed", "write")


def _stage_rates(res) -> str:
    """Every stage in ``res.timing`` (but ``wall``), in the order it ran: MP/s for the per-tile stages and
    the segmenter's sub-stages (``segment.*``), seconds for the rest."""
    mp = res.megapixels
    parts = []
    for k, v in res.timing.items():
        if k == "wall":
            continue
        if (k in _PER_TILE or k.startswith("segment.")) and v > 0 and mp > 0:
            parts.append(f"{k} {mp / v:.2f} MP/s ({v:.1f} s)")
        else:
            parts.append(f"{k} {v:.2f} s")
    return ", ".join(parts)


def _summary(res) -> str:
    return (
        f"{res.slide.name}: {res.n_nuclei} nuclei, {res.tiles_total} tiles ({res.tiles_skipped} resumed), "
        f"{res.megapixels:.1f} MP of tissue tiles in {res.timing['wall']:.1f} s = {res.mp_per_s:.2f} MP/s "
        "end to end "
        f"[model {res.model}, backend {res.backend}, reader {res.reader}, {res.working_mpp:.3f} um/px]\n"
        f"  per stage: {_stage_rates(res)}\n"
        f"  cut nuclei {res.cut_nuclei}, duplicates dropped {res.duplicates}\n  outputs: {res.out_dir}"
    )


def _parse_outputs(text: str) -> tuple:
    outputs = tuple(o.strip() for o in text.split(",") if o.strip())
    bad = [o for o in outputs if o not in OUTPUTS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown output(s) {', '.join(bad)}; valid: {', '.join(OUTPUTS)}")
    return outputs


def _segment_kwargs(args) -> dict:
    outputs = args.outputs
    return dict(
        model=args.model,
        backend=args.backend,
        tile=args.tile,
        halo=args.halo,
        mpp=args.mpp,
        resume=not args.no_resume,
        workers=args.workers,
        reader_backend=args.reader,
        outputs=outputs,
        tissue=not args.no_tissue,
        embed=args.embed or bool(args.subtypes),
        subtypes=args.subtypes,
        tile_embed=args.tile_embed,
    )


def _cmd_segment(args) -> int:
    kw = _segment_kwargs(args)
    out = Path(args.output)
    slides = [Path(s) for s in args.slides]
    outs = [out] if len(slides) == 1 and not args.subdirs else [out / s.stem for s in slides]
    if args.scheduler:
        try:
            from distributed import Client

            from .slide.distributed import segment_slides  # optional heavy dependency (dask.distributed)
        except ImportError as e:
            raise CLIError(f"--scheduler needs dask.distributed (nucfast[distributed]): {e}") from e
        try:
            client = Client(args.scheduler, timeout="20s")
        except (OSError, ValueError, TypeError) as e:  # TimeoutError is an OSError; bad addresses ValueError
            raise CLIError(f"cannot reach the Dask scheduler at {args.scheduler!r}: {e}") from e
        with client:
            results = segment_slides(slides, outs, client=client, **kw)
        for r in results:
            print(_summary(r))
        return 0
    for s, o in zip(slides, outs, strict=True):
        prog = _Progress(s.name, quiet=args.quiet)
        try:
            res = segment_slide(s, o, progress=prog, **kw)
        finally:
            prog.close()
        print(_summary(res))
    return 0


def _cmd_demo(args) -> int:
    import numpy as np

    out = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="nucfast_demo_"))
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    info = write_synthetic_slide(
        out / "synthetic_slide.tif", (args.size, args.size), seed=args.seed, mpp=0.25
    )
    n_true = len(np.load(info["nuclei"])["nuclei"])
    print(
        f"synthetic H&E slide: {info['path']} ({args.size}x{args.size} px at 0.25 um/px, "
        f"{n_true} known nuclei, "
        f"written in {time.perf_counter() - t:.1f} s)"
    )
    prog = _Progress("demo", quiet=args.quiet)
    try:
        res = segment_slide(
            info["path"],
            out / "results",
            model=args.model,
            backend=args.backend,
            tile=args.tile,
            workers=args.workers,
            progress=prog,
            resume=False,
        )
    finally:
        prog.close()
    print(_summary(res))
    # accuracy against the known nuclei (a central crop of at most 4096^2 keeps it quick on big demos)
    gt = np.load(info["labels"], mmap_mode="r")
    pred = read_label_array(res.paths["labels"])
    H, W = gt.shape
    c = min(4096, H, W)
    r0, c0 = (H - c) // 2, (W - c) // 2
    g, p = np.asarray(gt[r0 : r0 + c, c0 : c0 + c]), np.asarray(pred[r0 : r0 + c, c0 : c0 + c])
    det = detection_scores(g, p)
    crop = f" (central {c}x{c} crop)" if c < max(H, W) else ""
    print(
        f"accuracy vs known nuclei{crop}: "
        f"nuclei found {res.n_nuclei} / true {n_true}; detection (IoU>0.5) precision {det['precision']:.3f} "
        f"recall {det['recall']:.3f} F1 {det['f1']:.3f}; AJI {aji(g, p):.3f}"
    )
    for k, v in res.paths.items():
        print(f"  {k}: {v}")
    return 0


def _cmd_sample_tiles(args) -> int:
    g = write_sample_grid(args.grid, args.n, seed=args.seed, cols=args.cols, zoom=args.zoom, model=args.model)
    print(f"sample grid: {g} ({args.n} tiles, model {args.model}, seed {args.seed})")
    if args.strip:
        s = write_interpolation_strip(
            args.strip, args.steps, pairs=args.pairs, seed=args.seed, mapping=not args.no_mapping,
            zoom=args.zoom, model=args.model,
        )  # fmt: skip
        how = "in w (mapping network bypassed)" if args.no_mapping else "in z (through the mapping network)"
        print(f"interpolation strip: {s} ({args.pairs} paths x {args.steps} steps, linear {how})")
    return 0


def _add_sample_tiles_parser(sub) -> None:
    p = sub.add_parser(
        "sample-tiles",
        help="write a PNG grid of generated tissue tiles (PathologyGAN) and a latent interpolation strip",
    )
    p.add_argument("grid", metavar="GRID.png", help="output PNG of the sample grid")
    p.add_argument("--strip", default=None, metavar="STRIP.png", help="also write an interpolation strip")
    p.add_argument(
        "--model",
        default="pathgan",
        help=f"tile generator: {', '.join(models.names('tile-generator'))} or a .safetensors file",
    )
    p.add_argument("-n", type=int, default=64, help="tiles in the grid (default 64)")
    p.add_argument("--cols", type=int, default=8, help="grid columns (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zoom", type=int, default=2, help="nearest-neighbour magnification (default 2)")
    p.add_argument("--steps", type=int, default=8, help="tiles per interpolation path (default 8)")
    p.add_argument("--pairs", type=int, default=4, help="interpolation paths (rows, default 4)")
    p.add_argument("--no-mapping", action="store_true", help="interpolate in w instead of z")
    p.set_defaults(func=_cmd_sample_tiles)


def _add_segment_options(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    p.add_argument(
        "--model",
        default="usenet",
        help=f"segmentation model: {', '.join(models.names('segmentation'))} or a .safetensors file "
        "(default usenet, the shipped USE-Net)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="where and with what the network runs (default auto: onnxruntime on a CPU)",
    )
    p.add_argument("--tile", type=int, default=1024, help="tile core size in working pixels (default 1024)")
    p.add_argument("--workers", type=int, default=1, help="segmentation threads (default 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    if demo:
        return
    p.add_argument("--halo", type=int, default=None, help="context pixels each side (default: the model's)")
    p.add_argument(
        "--mpp", type=float, default=None, help="microns per pixel, overriding the file's metadata"
    )
    p.add_argument("--no-resume", action="store_true", help="start afresh instead of resuming a run in OUT")
    p.add_argument("--reader", default="auto", choices=("auto", "cucim", "openslide", "tifffile"))
    p.add_argument(
        "--outputs",
        type=_parse_outputs,
        default=_DEFAULT_OUTPUTS,
        help=f"comma list among {', '.join(OUTPUTS)} (default: {','.join(_DEFAULT_OUTPUTS)}; geojson.gz "
        "writes nuclei.geojson.gz instead, which QuPath reads as well)",
    )
    p.add_argument("--no-tissue", action="store_true", help="process the whole slide, not only tissue")
    p.add_argument(
        "--embed",
        action="store_true",
        help="add a Nuc2Vec embedding per nucleus (table column nuc2vec, obsm['X_nuc2vec'] in nuclei.h5ad)",
    )
    p.add_argument(
        "--subtypes",
        default=None,
        metavar="REF",
        help="assign nucleus subtypes from a reference of `nucfast subtypes fit` (implies --embed): table "
        "column subtype, GeoJSON classification",
    )
    p.add_argument(
        "--tile-embed",
        action="store_true",
        help="one PathologyGAN encoder latent per tissue tile (tiles.parquet, tiles.h5ad)",
    )


def _cmd_quantize(args) -> int:
    """``nucfast quantize``: the int8 QDQ graph of a segmentation network beside its weights."""
    m = models.load(args.model)
    out = Path(args.output) if args.output else int8_path(m)
    if out is None:
        raise CLIError(f"model {args.model!r} has no weights file: give --output")
    feeds, what = calibration_feeds(m, args.data, images=args.images, crops=args.crops)
    data = quantize_int8(m, feeds, out, calibration=what)
    print(json.dumps({"path": str(out), "bytes": len(data), **graph_info(data)}, indent=1))
    return 0


def _add_quantize_parser(sub) -> None:
    q = sub.add_parser(
        "quantize", help="int8 QDQ graph of a segmentation network for onnxruntime (NUCFAST_CPU_PRECISION)"
    )
    q.add_argument("--model", default="usenet", help="segmentation model or weights file (default usenet)")
    q.add_argument("--data", required=True, help="calibration images (NAME.png + NAME_inst.tif)")
    q.add_argument("--images", type=int, default=24, help="training images to calibrate on (default 24)")
    q.add_argument("--crops", type=int, default=2, help="256-px crops per image (default 2)")
    q.add_argument("--output", "-o", default=None, help="default: <weights stem>.int8.onnx by the weights")
    q.set_defaults(func=_cmd_quantize)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nucfast", description="Fast nucleus segmentation of H&E whole-slide images."
    )
    parser.add_argument("--version", action="version", version=f"nucfast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "segment", help="segment whole-slide images", description="Segment every nucleus of each SLIDE."
    )
    p.add_argument("slides", nargs="+", metavar="SLIDE")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output directory (one subdirectory per slide when several are given)",
    )
    p.add_argument("--subdirs", action="store_true", help="use OUT/<slide stem> even for a single slide")
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="Dask distributed scheduler address: one task per slide on the cluster",
    )
    _add_segment_options(p)
    p.set_defaults(func=_cmd_segment)
    d = sub.add_parser(
        "demo", help="segment a synthetic slide with known nuclei and report accuracy and speed"
    )
    d.add_argument(
        "-o", "--output", default=None, help="output directory (default: a new temporary directory)"
    )
    d.add_argument("--size", type=int, default=2048, help="slide side in pixels (default 2048)")
    d.add_argument("--seed", type=int, default=0)
    _add_segment_options(d, demo=True)
    d.set_defaults(func=_cmd_demo)
    _register_train_evaluate(sub)
    _add_sample_tiles_parser(sub)
    add_engine_subparsers(sub)
    _add_quantize_parser(sub)
    add_subtypes_subparser(sub)
    for reg in SUBCOMMAND_REGISTRARS:
        reg(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``nucfast`` command (and ``python -m nucfast``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EXPECTED_ERRORS as e:
        print(f"nucfast: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "nucfast: interrupted (finished tiles are kept; rerun the same command to resume)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
