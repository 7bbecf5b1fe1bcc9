"""CUDA kernel benchmarks for scripts/gpu_check.sh: each nucfast op on a CUDA tensor against the CPU result
(must agree) and, where CuPy has the op, against cupyx.scipy.ndimage on the same device; median of 10 runs
after a warm-up, timed with CUDA events. Writes JSON and prints one line per op.
``python scripts/gpu_bench.py OUT.json --rehearse`` runs the same script on the CPU at 512² (the device
side is the CPU), to check the script itself on a machine without a GPU."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

import nucfast
from nucfast import stain


def _time(f, n=10) -> float:
    f()
    if not torch.cuda.is_available():  # rehearsal on the CPU
        import time

        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return float(np.median(ts))


def main(out: str, rehearse: bool = False) -> None:
    rng = np.random.default_rng(0)
    size = 512 if rehearse else 4096
    dev = "cpu" if rehearse else "cuda"
    mask = np.zeros((size, size), bool)
    yy, xx = np.ogrid[:size, :size]
    for _ in range(3000 * size * size // 4096**2):  # discs like nuclei
        r, c, rad = rng.integers(0, size), rng.integers(0, size), rng.integers(4, 12)
        mask[max(r - rad, 0) : r + rad, max(c - rad, 0) : c + rad] |= (
            yy[max(r - rad, 0) : r + rad] - r
        ) ** 2 + (xx[:, max(c - rad, 0) : c + rad] - c) ** 2 <= rad**2
    img = rng.random((size, size)).astype(np.float32)
    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    m_cuda, i_cuda, rgb_cuda = (torch.from_numpy(a).to(dev) for a in (mask, img, rgb))
    try:
        import cupy as cp
        from cupyx.scipy import ndimage as cnd
    except ImportError:
        cp = cnd = None
    if rehearse:  # CuPy needs a GPU
        cp = cnd = None
    h = size // 2
    norm = stain.ReinhardNormalizer().fit(rgb[:h, :h]).fit_source(rgb[h:, h:])
    cases = {
        "distance_transform_edt": (
            lambda: nucfast.distance_transform_edt(m_cuda),
            lambda: nucfast.distance_transform_edt(mask),
            (lambda: cnd.distance_transform_edt(cp.asarray(mask))) if cnd else None,
        ),
        "gaussian_filter": (
            lambda: nucfast.gaussian_filter(i_cuda, 2.0),
            lambda: nucfast.gaussian_filter(img, 2.0),
            (lambda: cnd.gaussian_filter(cp.asarray(img), 2.0)) if cnd else None,
        ),
        "label": (
            lambda: nucfast.label(m_cuda),
            lambda: nucfast.label(mask),
            (lambda: cnd.label(cp.asarray(mask))) if cnd else None,
        ),
        "reinhard_u8": (lambda: norm.transform_u8(rgb_cuda), lambda: norm.transform_u8(rgb), None),
    }
    res = {}
    for name, (gpu, cpu, ref) in cases.items():
        row: dict = {"megapixels": size * size / 1e6}
        try:
            got = gpu()
            got = got[0] if isinstance(got, tuple) else got
            want = cpu()
            want = want[0] if isinstance(want, tuple) else want
            row["max_abs_diff_vs_cpu"] = float(
                np.max(np.abs(got.cpu().numpy().astype(np.float64) - np.asarray(want, np.float64)))
            )
            row["nucfast_s"] = _time(gpu)
            if ref is not None:
                row["cupy_s"] = _time(ref)
                row["speedup_vs_cupy"] = row["cupy_s"] / row["nucfast_s"]
            row["mp_per_s"] = row["megapixels"] / row["nucfast_s"]
        except Exception as e:  # noqa: BLE001 - report every op, whatever fails
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        res[name] = row
        print(name, json.dumps(row))
    res["tile_pipeline"] = _tile_pipeline(dev, 512 if rehearse else 1024)
    print("tile_pipeline", json.dumps(res["tile_pipeline"]))
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


def _tile_pipeline(dev: str, side: int) -> dict:
    """The slide engine's tile path (ModelSegmenter, USE-Net) on ``dev``: device-resident (post-processing
    by the CUDA kernels, only labels + scores back) vs the host pipeline (probabilities copied to the
    CPU and post-processed there), on a real MoNuSeg image when ../shared/data is there."""
    from pathlib import Path

    from nucfast.slide.segmenters import ModelSegmenter

    row: dict = {"side": side}
    try:
        p = sorted((Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg_train").glob("*.png"))
        if p:
            from nucfast.datasets import read_rgb

            rgb = np.ascontiguousarray(np.tile(read_rgb(p[0])[..., :3], (2, 2, 1))[:side, :side])
        else:
            rgb = np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8)
        sample = [rgb[r : r + 256, c : c + 256] for r in (0, side // 2) for c in (0, side // 2)]
        labels = {}
        for name, resident in (("device_resident", True), ("host", False)):
            seg = ModelSegmenter("usenet", backend=dev, device_resident=resident)
            seg.fit(sample)
            labels[name] = seg(rgb).labels
            row[f"{name}_s"] = _time(lambda seg=seg: seg(rgb), n=5)
            row["backend"] = seg.backend
        row["speedup_device_vs_host"] = row["host_s"] / row["device_resident_s"]
        row["mp_per_s_device"] = side * side / 1e6 / row["device_resident_s"]
        row["pixels_differing"] = float(np.mean(labels["device_resident"] != labels["host"]))
    except Exception as e:  # noqa: BLE001 - report whatever fails
        row["error"] = f"{type(e).__name__}: {e}"[:300]
    return row


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gpu_bench.json", rehearse="--rehearse" in sys.argv)
