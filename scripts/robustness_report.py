"""Robustness report (issue 15): counts of inputs tried, clear errors, crashes and silent wrong results.

    python scripts/robustness_report.py [--long] [--json OUT.json]

Three parts, all from the suite in tests/ (tests/robustness_cases.py, tests/test_robustness_kernels.py):

1. kernels: hypothesis properties of the public kernels against scipy / scikit-image (15 examples each,
   500 with ``--long``) and invalid inputs that must raise a clear error;
2. slides: every damaged copy (tests/robustness_cases.slide_damages) of each source slide (the real slides
   of ../shared/data/slides when present, a synthetic JPEG and a synthetic deflate slide) read in full by
   every reader (cuCIM, OpenSlide, tifffile); each source runs in its own process, so a reader that
   crashes the interpreter is counted as a crash, not a lost report;
3. run directories: every damaged run directory (tests/robustness_cases.rundir_damages) resumed (or run
   afresh) by ``segment_slide``.

Outcomes: ``clear`` (an error naming the file/directory), ``identical`` / ``repaired`` / ``equal`` (the
right result), ``crash`` (any other exception, or the process died) and ``silent_wrong`` (a result that
differs from the reference without an error) -- the last two must be 0 (exit code 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
DATA = Path(os.environ.get("NUCFAST_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(TESTS))

GOOD = ("identical", "repaired", "equal")


def kernels(long: bool) -> Counter:
    if long:
        os.environ["NUCFAST_HYPOTHESIS"] = "long"
    import test_robustness_kernels as k

    out = Counter()
    for name in dir(k):
        f = getattr(k, name)
        if name.startswith("test_") and name != "test_invalid_inputs_raise_clear_errors" and callable(f):
            before = k.COUNTS["tried"]
            try:
                f()
                out["equal"] += k.COUNTS["tried"] - before
            except AssertionError as e:
                out["silent_wrong"] += 1
                print(f"  kernels {name}: DIFFERS from the oracle: {str(e)[:300]}")
            except Exception as e:  # noqa: BLE001
                out["crash"] += 1
                print(f"  kernels {name}: CRASH {type(e).__name__}: {e}")
            out["tried"] += k.COUNTS["tried"] - before
    for op, call, word in k._BAD:
        out["tried"] += 1
        try:
            call()
            out["silent_wrong"] += 1
            print(f"  kernels {op}: invalid input accepted")
        except (TypeError, ValueError, RuntimeError) as e:
            msg = str(e)
            ok = "\n" not in msg and (word is None or word in msg)
            out["clear" if ok else "unclear"] += 1
        except Exception as e:  # noqa: BLE001
            out["crash"] += 1
            print(f"  kernels {op}: CRASH {type(e).__name__}: {e}")
    return out


def slide_batch(src: str, workdir: str) -> None:
    """Child process: evaluate every damage of one source with every reader; JSON lines on stdout."""
    from robustness_cases import evaluate_slide, read_everything, slide_damages

    from nucfast.slide.reader import BACKENDS

    src_p, d = Path(src), Path(workdir)
    refs = {}
    for b in BACKENDS:
        try:
            refs[b] = read_everything(src_p, b)
        except Exception as e:  # noqa: BLE001 - a reader that cannot read the intact source is skipped
            print(json.dumps({"skip": b, "why": str(e)[:200]}), flush=True)
    for name, data in slide_damages(src_p):
        p = d / f"{src_p.stem}-{name}{src_p.suffix}"
        p.write_bytes(data)
        for b, ref in refs.items():
            print(json.dumps({"case": name, "reader": b, "start": True}), flush=True)
            outcome, detail = evaluate_slide(p, b, ref)
            print(json.dumps({"case": name, "reader": b, "outcome": outcome, "detail": detail}), flush=True)
        p.unlink()


def slides(tmp: Path) -> Counter:
    from nucfast.synthetic import write_synthetic_slide

    sources = sorted((DATA / "slides").glob("*.svs")) if (DATA / "slides").is_dir() else []
    for comp in ("jpeg", "deflate"):
        kw = dict(seed=1, compression=comp, tile=128, ground_truth=False)
        sources.append(write_synthetic_slide(tmp / f"synthetic-{comp}.tif", (1024, 1024), **kw)["path"])
    out = Counter()
    for src in sources:
        work = tmp / f"dmg-{src.stem}"
        work.mkdir()
        p = subprocess.run(
            [sys.executable, __file__, "--slide-batch", str(src), str(work)],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        pending = None
        n = Counter()
        for line in p.stdout.splitlines():
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if "skip" in r:
                print(f"  {src.name}: reader {r['skip']} cannot read the intact file: {r['why'][:80]}")
            elif r.get("start"):
                pending = r
            else:
                pending = None
                n[r["outcome"]] += 1
                if r["outcome"] not in ("clear",) + GOOD:
                    print(f"  {src.name} {r['case']} [{r['reader']}]: {r['outcome'].upper()} {r['detail']}")
        if p.returncode != 0:
            n["crash"] += 1
            what = f"{pending['case']} [{pending['reader']}]" if pending else "?"
            print(f"  {src.name}: the reader process died (rc {p.returncode}) on {what}: {p.stderr[-300:]}")
        print(f"  {src.name}: {sum(n.values())} reads of damaged copies: {dict(n)}")
        out += n
        shutil.rmtree(work, ignore_errors=True)
    out["tried"] = sum(v for k, v in out.items() if k != "tried")
    return out


def rundirs(tmp: Path) -> Counter:
    from robustness_cases import evaluate_rundir, rundir_damages

    from nucfast.slide import segment_slide
    from nucfast.synthetic import write_synthetic_slide

    kw = dict(seed=3, compression="deflate", tile=128, ground_truth=False, tissue_fraction=0.9)
    slide = write_synthetic_slide(tmp / "run-slide.tif", (512, 512), **kw)["path"]
    base = dict(model="baseline", tile=256, outputs=("table", "zarr"), reader_backend="tifffile")

    def run(s, o, resume):
        return segment_slide(s, o, resume=resume, **base)

    ref = run(slide, tmp / "ref", False)
    out = Counter()
    for name, damage, options in rundir_damages():
        d = tmp / f"run-{name}"
        shutil.copytree(ref.out_dir, d)
        outcome, detail = evaluate_rundir(run, slide, d, damage, options, ref)
        out[outcome] += 1
        out["tried"] += 1
        flag = "" if outcome in ("clear",) + GOOD else "  <-- "
        print(f"  {name:36s} {outcome:9s} {detail[:90]}{flag}")
        shutil.rmtree(d, ignore_errors=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="500 hypothesis examples per kernel property")
    ap.add_argument("--json", default=None, help="also write the counts as JSON")
    ap.add_argument("--slide-batch", nargs=2, metavar=("SRC", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.slide_batch:
        slide_batch(*args.slide_batch)
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import logging

    logging.basicConfig(level=logging.ERROR)  # the repairs' warnings: counted below instead
    rows = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nucfast_robustness_") as tmp:
        tmp = Path(tmp)
        for part, f in (("kernels", lambda: kernels(args.long)), ("slides", lambda: slides(tmp)),
                        ("run directories", lambda: rundirs(tmp))):  # fmt: skip
            t = time.perf_counter()
            print(f"{part}:")
            rows[part] = f()
            rows[part]["seconds"] = round(time.perf_counter() - t, 1)
    print()
    print(f"{'part':16s} {'inputs':>7s} {'clear errors':>12s} {'right results':>13s} {'crashes':>7s} "
          f"{'silent wrong':>12s} {'unclear':>7s} {'data lost':>9s} {'s':>6s}")  # fmt: skip
    total = Counter()
    for part, c in rows.items():
        right = sum(c[k] for k in GOOD)
        print(f"{part:16s} {c['tried']:7d} {c['clear']:12d} {right:13d} {c['crash']:7d} "
              f"{c['silent_wrong']:12d} {c['unclear']:7d} {c['data_lost']:9d} "
              f"{c['seconds']:6.1f}")  # fmt: skip
        total += c
    right = sum(total[k] for k in GOOD)
    print(f"{'total':16s} {total['tried']:7d} {total['clear']:12d} {right:13d} {total['crash']:7d} "
          f"{total['silent_wrong']:12d} {total['unclear']:7d} {total['data_lost']:9d} "
          f"{time.perf_counter() - t0:6.1f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({k: dict(v) for k, v in rows.items()}, indent=1))
    bad = total["crash"] + total["silent_wrong"] + total["unclear"] + total["data_lost"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
