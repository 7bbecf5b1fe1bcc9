"""End-to-end whole-slide throughput (MP/s by stage) and peak memory vs slide size.

pytest-benchmark (one round each, the slide engine is minutes-scale work):

    PYTHONPATH=. OMP_NUM_THREADS=2 python -m pytest benchmarks/bench_slide.py --benchmark-only -s

Every case records ``extra_info``: megapixels of tissue tiles, MP/s end to end and per stage (decode,
segment = infer + postprocess, measure, write), threads. ``baseline-reference`` is the no-learning
baseline with the scipy/scikit-image post-processing (the oracle); ``baseline-nucfast`` is the same with
the nucfast kernels (identical nuclei); ``usenet-reference`` / ``usenet-nucfast``: the same pair for the
default model (USE-Net lite on onnxruntime). ``NUCFAST_BENCH_SLIDE=20000`` sets the slide side (default
2048); ``-k usenet`` selects the model runs.

The issue-9 case, a 3000 x 4000 mosaic of 12 MoNuSeg training images (1000 x 1000 crops) written as a
tiled JPEG TIFF with 4x / 16x levels at 0.25 um/px, default model, one worker: per-stage MP/s, the
network's share of the stage time and end-to-end MP/s, cold (the first slide of a process: imports, model
load, first-call set-up included) and warm (later slides of the same process: what a cohort run sees).
Cold runs are each a fresh process; ``--old-tree`` runs another checkout's nucfast (e.g. main before a
change) in the same way, interleaved with this one, and the table gives the ratio; each figure is the
minimum over ``--runs`` (the machine is shared):

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_slide.py --mosaic --runs 3 --old-tree ../main
    PYTHONPATH=. OMP_NUM_THREADS=1 python -m pytest benchmarks/bench_slide.py -k mosaic --benchmark-only -s

Peak RSS vs slide size (each size in a fresh subprocess; periodic synthetic slides; by default a light
plug-in segmenter so the engine's own memory is what is measured, ``--model usenet`` for the default model):

    PYTHONPATH=. python benchmarks/bench_slide.py --rss 10000 40000
    PYTHONPATH=. python benchmarks/bench_slide.py --rss 10000 --model usenet
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from nucfast.slide import BaselineSegmenter, TileSegmentation, segment_slide
from nucfast.synthetic import write_synthetic_slide

SIZE = int(os.environ.get("NUCFAST_BENCH_SLIDE", "2048"))


def _record(benchmark, res):
    mp = res.megapixels
    info = {"megapixels": round(mp, 2), "mp_per_s_end_to_end": round(res.mp_per_s, 3), "nuclei": res.n_nuclei}
    for k in ("decode", "segment", "segment.normalize", "segment.infer", "segment.postprocess", "measure",
              "write"):  # fmt: skip
        if res.timing.get(k):
            info[f"mp_per_s.{k}"] = round(mp / res.timing[k], 3)
    for k in ("tissue", "fit", "table", "geojson", "zarr_pyramid", "overlay", "wall"):  # seconds
        if k in res.timing:
            info[f"seconds.{k}"] = round(res.timing[k], 1)
    info["threads"] = os.environ.get("OMP_NUM_THREADS", "default")
    benchmark.extra_info.update(info)
    print(json.dumps(info))


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_slide")
    period = 2048 if SIZE > 8192 else None  # big slides repeat one rendered patch (written in minutes)
    return write_synthetic_slide(
        d / "bench.tif", (SIZE, SIZE), seed=3, tissue_fraction=0.8, ground_truth=False, period=period
    )


@pytest.mark.benchmark(group="slide-end-to-end")
@pytest.mark.parametrize("postprocess", ["reference", "nucfast"])
def test_baseline(benchmark, slide, tmp_path, postprocess):
    def run():
        return segment_slide(
            slide["path"],
            tmp_path / postprocess,
            model=BaselineSegmenter(postprocess=postprocess),
            resume=False,
            tile=1024,
        )

    res = benchmark.pedantic(run, rounds=1, iterations=1)
    _record(benchmark, res)


@pytest.mark.benchmark(group="slide-end-to-end")
@pytest.mark.parametrize("postprocess", ["reference", "nucfast"])
def test_usenet(benchmark, slide, tmp_path, postprocess):
    """The default model (shipped USE-Net lite, onnxruntime on the CPU) with its post-processing by the
    nucfast kernels or by scipy/scikit-image."""
    from nucfast.slide import ModelSegmenter

    def run():
        return segment_slide(
            slide["path"],
            tmp_path / postprocess,
            model=ModelSegmenter("usenet", postprocess=postprocess),
            resume=False,
            tile=1024,
        )

    res = benchmark.pedantic(run, rounds=1, iterations=1)
    _record(benchmark, res)


# -- the issue-9 mosaic -------------------------------------------------------------------------------
DATA = Path(os.environ.get("NUCFAST_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
#: Stages with their own timer (``segment`` is the sum of the ``segment.*`` ones), in pipeline order.
STAGES = ("open", "tissue", "fit", "decode", "segment.normalize", "segment.infer", "segment.postprocess",
          "measure", "write", "table", "geojson", "zarr_pyramid", "h5ad", "overlay")  # fmt: skip
NETWORK = "segment.infer"


def write_mosaic(path: Path) -> Path:
    """The 3000 x 4000 mosaic of the first 12 MoNuSeg training images (sorted names, 1000 x 1000 crops, 3
    rows of 4), tiled (256) JPEG TIFF, levels 1, 4x, 16x, ``MPP = 0.25`` in an Aperio description."""
    import tifffile

    from nucfast.datasets import read_rgb

    names = sorted((DATA / "monuseg_train").glob("*.png"))[:12]
    if len(names) < 12:
        raise FileNotFoundError(f"{DATA / 'monuseg_train'}: 12 MoNuSeg images needed, found {len(names)}")
    ims = [read_rgb(n)[:1000, :1000] for n in names]
    rgb = np.concatenate([np.concatenate(ims[i * 4 : (i + 1) * 4], axis=1) for i in range(3)], axis=0)
    with tifffile.TiffWriter(path) as tw:
        kw = dict(tile=(256, 256), photometric="rgb", metadata=None, compression="jpeg")
        tw.write(rgb, description="Aperio |MPP = 0.25", **kw)
        for f in (4, 16):
            tw.write(np.ascontiguousarray(rgb[::f, ::f]), **kw)
    return path


def _mosaic_runs(slide: Path, workdir: Path, n: int) -> list[dict]:
    """``n`` runs of the default model on ``slide`` in this process: stage seconds, MP, nuclei."""
    out = []
    for i in range(n):
        res = segment_slide(slide, workdir / f"run{i}", resume=False, workers=1)
        out.append({"timing": dict(res.timing), "mp": res.megapixels, "nuclei": res.n_nuclei})
    return out


def _stage_table(run: dict) -> dict:
    """MP/s per stage, the network's share of the stage time and end-to-end MP/s of one run."""
    t, mp = run["timing"], run["mp"]
    total = sum(t.get(k, 0.0) for k in STAGES)
    return {
        "mp_per_s": {k: (mp / t[k] if t.get(k) else float("inf")) for k in STAGES},
        "seconds": {k: t.get(k, 0.0) for k in (*STAGES, "wall")},
        "network_share": t.get(NETWORK, 0.0) / total if total else 0.0,
        "end_to_end": mp / t["wall"],
    }


def _min_runs(runs: list[dict]) -> dict:
    """Per stage (and wall) the minimum over runs of one kind (a shared machine only adds time)."""
    timing = {k: min(r["timing"].get(k, 0.0) for r in runs) for k in (*STAGES, "wall")}
    return {"timing": timing, "mp": runs[0]["mp"], "nuclei": runs[0]["nuclei"]}


@pytest.mark.benchmark(group="slide-mosaic")
def test_mosaic_usenet(benchmark, tmp_path):
    """The issue-9 mosaic, default model, one worker: the first run of this process (cold unless other
    benchmarks ran before it) and a second one (warm), with per-stage MP/s and the network's share."""
    if not (DATA / "monuseg_train").is_dir():
        pytest.skip("shared MoNuSeg data absent")
    slide = write_mosaic(tmp_path / "mosaic12.tif")
    runs = benchmark.pedantic(lambda: _mosaic_runs(slide, tmp_path, 2), rounds=1, iterations=1)
    for kind, run in zip(("cold", "warm"), runs, strict=True):
        tab = _stage_table(run)
        info = {f"{kind}.mp_per_s.{k}": round(v, 2) for k, v in tab["mp_per_s"].items()}
        info[f"{kind}.network_share"] = round(tab["network_share"], 3)
        info[f"{kind}.mp_per_s_end_to_end"] = round(tab["end_to_end"], 3)
        benchmark.extra_info.update(info)
        print(json.dumps(info))


def _mosaic_child(workdir: str, n: int) -> None:
    print("MOSAIC " + json.dumps(_mosaic_runs(Path(workdir) / "mosaic12.tif", Path(workdir), n)))


def _mosaic_main(runs: int, warm: int, old_tree: str | None) -> dict:
    trees = {"new": str(Path(__file__).resolve().parents[1])}
    if old_tree:
        trees["old"] = str(Path(old_tree).resolve())
    got: dict = {k: {"cold": [], "warm": []} for k in trees}
    with tempfile.TemporaryDirectory(prefix="nucfast_mosaic_") as d:
        write_mosaic(Path(d) / "mosaic12.tif")
        for _ in range(runs):
            for name, tree in trees.items():  # interleaved: the load of the moment hits both
                env = {**os.environ, "PYTHONPATH": tree}
                cmd = [sys.executable, __file__, "--mosaic-child", d, "--warm", str(warm)]
                p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                res = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("MOSAIC "))[7:])
                got[name]["cold"].append(res[0])
                got[name]["warm"].extend(res[1:])
    tables = {n: {k: _stage_table(_min_runs(v)) for k, v in g.items() if v} for n, g in got.items()}
    kinds = [k for k in ("cold", "warm") if k in tables["new"]]
    cols = [(n, k) for k in kinds for n in trees]
    print("| stage | " + " | ".join(f"{n} {k} s (MP/s)" for n, k in cols) + (
        " | " + " | ".join(f"old/new {k}" for k in kinds) if old_tree else "") + " |")  # fmt: skip
    print("|---" * (1 + len(cols) + (len(kinds) if old_tree else 0)) + "|")
    for st in (*STAGES, "wall"):
        cells = []
        for n, k in cols:
            sec = tables[n][k]["seconds"][st]
            cells.append(f"{sec:.2f} ({tables[n][k]['mp_per_s'][st]:.0f})" if st != "wall" else f"{sec:.2f}")
        if old_tree:
            for k in kinds:
                new, old = tables["new"][k]["seconds"][st], tables["old"][k]["seconds"][st]
                cells.append(f"{old / new:.1f}x" if new > 0 else "-")
        print(f"| {st} | " + " | ".join(cells) + " |")
    for label, key, fmt in (("network share", "network_share", "{:.0%}"), ("end to end MP/s", "end_to_end",
                                                                           "{:.2f}")):  # fmt: skip
        print(f"| {label} | " + " | ".join(fmt.format(tables[n][k][key]) for n, k in cols) + " |")
    mp = got["new"]["cold"][0]["mp"]
    print(
        f"{mp:.1f} MP of tiles, {got['new']['cold'][0]['nuclei']} nuclei; min of {runs} cold and "
        f"{runs * warm} warm runs per tree; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')}"
    )
    return tables


class LightSegmenter:
    """Haematoxylin threshold + connected components: a cheap stand-in for memory measurements."""

    name = "light"
    mpp = 0.25
    halo = 32

    def __call__(self, rgb):
        from scipy import ndimage as ndi

        dark = rgb.astype(np.int16).sum(axis=2) < 400
        lab, n = ndi.label(dark)
        big = np.bincount(lab.ravel(), minlength=n + 1) >= 40  # drop noise specks
        big[0] = False
        keep = np.cumsum(big) * big
        return TileSegmentation(keep[lab].astype(np.int32), None)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, size: int, workdir: str, model: str) -> None:
    slide = Path(workdir) / "rss.tif"
    t = time.perf_counter()
    if mode == "write":
        write_synthetic_slide(
            slide, (size, size), seed=1, ground_truth=False, period=2048, tissue_fraction=0.9
        )
        print(json.dumps({"size": size, "write_slide_s": round(time.perf_counter() - t, 1)}))
    elif mode == "import":
        print(json.dumps({"import_only_peak_rss_mb": round(_peak_rss_mb(), 1)}))
    else:
        rss_trace = []

        def progress(done, total, nuclei, mp):  # current RSS after each committed tile
            with open("/proc/self/statm") as f:
                rss_trace.append(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20)

        seg = LightSegmenter() if model == "light" else model
        out = Path(workdir) / "out"
        res = segment_slide(slide, out, model=seg, tile=1024, resume=False, progress=progress)
        q = [rss_trace[min(len(rss_trace) - 1, int(f * len(rss_trace)))] for f in (0.1, 0.5, 1.0)]
        print(json.dumps({"rss_mb_after_10_50_100pct_tiles": [round(v) for v in q]}))
        print(json.dumps({"size": size, "model": model, "peak_rss_mb": round(_peak_rss_mb(), 1),
                          "nuclei": res.n_nuclei, "tiles": res.tiles_total,
                          "megapixels": round(res.megapixels, 1),
                          "segment_wall_s": round(res.timing["wall"], 1)}))  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rss", type=int, nargs="+", help="slide sizes (pixels per side)")
    ap.add_argument("--mosaic", action="store_true", help="the issue-9 mosaic: stages cold / warm")
    ap.add_argument("--runs", type=int, default=3, help="--mosaic: processes per tree (min taken)")
    ap.add_argument("--warm", type=int, default=2, help="--mosaic: warm runs after the cold one")
    ap.add_argument("--old-tree", default=None, help="--mosaic: another checkout to compare against")
    ap.add_argument("--json", default=None, help="--mosaic: write the tables here")
    ap.add_argument("--mosaic-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default="light", help="light (default, a cheap stand-in) or a model name")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.mosaic_child:
        _mosaic_child(a.mosaic_child, 1 + a.warm)
        return
    if a.mosaic:
        tables = _mosaic_main(a.runs, a.warm, a.old_tree)
        if a.json:
            Path(a.json).write_text(json.dumps(tables, indent=1))
        return
    if not a.rss:
        ap.error("give --rss SIZES or --mosaic")
    if a.child:
        _child(a.child, a.rss[0], a.workdir, a.model)
        return
    run = [sys.executable, __file__, "--child"]
    subprocess.run([*run, "import", "--rss", "0", "--workdir", "."], check=True)
    for size in a.rss:
        with tempfile.TemporaryDirectory(prefix="nucfast_rss_") as d:
            for mode in ("write", "segment"):
                args = [mode, "--rss", str(size), "--workdir", d, "--model", a.model]
                subprocess.run([*run, *args], check=True)


if __name__ == "__main__":
    main()
