"""End-to-end whole-slide throughput (MP/s by stage) and peak memory vs slide size.

pytest-benchmark (one round each, the slide engine is minutes-scale work):

    PYTHONPATH=. OMP_NUM_THREADS=2 python -m pytest benchmarks/bench_slide.py --benchmark-only -s

Every case records ``extra_info``: megapixels of tissue tiles, MP/s end to end and per stage (decode,
segment = infer + postprocess, measure, write), threads. ``baseline-reference`` is the no-learning
baseline with the scipy/scikit-image post-processing (the oracle); ``baseline-nucfast`` is the same with
the nucfast kernels (identical nuclei); ``usenet-reference`` / ``usenet-nucfast``: the same pair for the
default model (USE-Net lite on onnxruntime). ``NUCFAST_BENCH_SLIDE=20000`` sets the slide side (default
2048); ``-k usenet`` selects the model runs.

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
    ap.add_argument("--rss", type=int, nargs="+", required=True, help="slide sizes (pixels per side)")
    ap.add_argument("--model", default="light", help="light (default, a cheap stand-in) or a model name")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
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
