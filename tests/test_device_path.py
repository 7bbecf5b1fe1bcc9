"""The slide engine's device-resident tile path (issue 9), proven as far as a machine without a GPU allows:

- the device post-processing (``usenet_watershed_device``) gives ``usenet_instances``' labels exactly, on
  CPU tensors (real USE-Net probabilities and random ones);
- the whole chain, uint8 tile -> fused Reinhard -> USE-Net -> post-processing -> labels and per-label
  score sums, runs on **fake CUDA tensors** (``FakeTensorMode`` with the nucfast ops' fake registrations):
  no op in the Python code reads a value back to the host (that would raise DataDependentOutputException);
- every op of the chain has a CUDA kernel in the build (when the build has CUDA).

Not proven here: that the CUDA kernels run correctly (no GPU has run them), and the ops' internal
reads (the CUDA ``label`` returns its component count as a host scalar).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import MONUSEG, monuseg_names

import nucfast
from nucfast import models
from nucfast.postprocess import usenet_instances
from nucfast.postprocess._pipelines import usenet_watershed_device

NAME = "TCGA-21-5786-01Z-00-DX1"
DEVICE_OPS = ("reinhard_u8", "label", "watershed")


def test_device_postprocessing_equals_usenet_instances_real():
    if NAME not in monuseg_names():
        pytest.skip("MoNuSeg data not available")
    from nucfast.datasets import read_rgb

    cfg = models.load("usenet").meta["postprocess"]
    _, p = nucfast.segment_image(read_rgb(MONUSEG / f"{NAME}.png"), return_probs=True)
    pm, pk = torch.from_numpy(p[0]), torch.from_numpy(p[1])
    want = usenet_instances(pm, pk, **cfg)
    got = usenet_watershed_device(pm, pk, cfg["mask_threshold"], cfg["marker_threshold"])
    assert int(want.max()) > 200
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(6))
def test_device_postprocessing_equals_usenet_instances_random(seed):
    g = torch.Generator().manual_seed(seed)
    pm = nucfast.gaussian_filter(torch.rand(96, 128, generator=g, dtype=torch.float64), 2.5)
    pk = nucfast.gaussian_filter(torch.rand(96, 128, generator=g, dtype=torch.float64), 1.5)
    pm, pk = (pm - pm.min()) / (pm.max() - pm.min()), (pk - pk.min()) / (pk.max() - pk.min())
    pm, pk = pm.float(), pk.float()
    for tm, tk in ((0.4, 0.7), (0.5, 0.5), (0.3, 0.8)):
        want = usenet_instances(pm, pk, method="watershed", mask_threshold=tm, marker_threshold=tk)
        got = usenet_watershed_device(pm, pk, tm, tk)
        assert int(want.max()) >= 2
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_tile_chain_stays_on_fake_cuda():
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    m = models.load("usenet")
    rng = np.random.default_rng(0)
    sample = [rng.integers(60, 200, (128, 128, 3), dtype=np.uint8) for _ in range(4)]
    ctx = m.fit_context(sample)
    cfg = m.meta["postprocess"]
    net = copy.deepcopy(m.net).eval()
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        tile = torch.empty(256, 320, 3, dtype=torch.uint8, device="cuda")
        x = ctx.normalize_u8(tile)
        probs = torch.sigmoid(net.to("cuda")(x[None], ctx.inputs["se_gates"].to("cuda")))[0]
        labels = usenet_watershed_device(probs[0], probs[1], cfg["mask_threshold"], cfg["marker_threshold"])
        flat = labels.reshape(-1).long()
        sums = torch.zeros(flat.numel() + 1, dtype=torch.float64, device="cuda")
        sums.scatter_add_(0, flat, probs[0].reshape(-1).double())
        for t in (x, probs, labels, sums):
            assert isinstance(t, FakeTensor) and t.device.type == "cuda"
        assert labels.shape == (256, 320) and labels.dtype == torch.int32


def test_every_device_op_has_a_cuda_kernel():
    info = nucfast.build_info()
    if not info["cuda_compiled"]:
        pytest.skip("CPU-only build (NUCFAST_CUDA=0)")
    for op in DEVICE_OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"nucfast::{op}", "CUDA"), op


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_device_postprocessing_matches_cpu():
    """First-run check for the GPU check kit (scripts/gpu_check.sh): the device post-processing on CUDA
    tensors vs the CPU (the parallel watershed may differ where equal values compete: bounded, not 0)."""
    if NAME not in monuseg_names():
        pytest.skip("MoNuSeg data not available")
    from nucfast.datasets import read_rgb

    cfg = models.load("usenet").meta["postprocess"]
    _, p = nucfast.segment_image(read_rgb(MONUSEG / f"{NAME}.png"), return_probs=True)
    pm, pk = torch.from_numpy(p[0]), torch.from_numpy(p[1])
    want = usenet_instances(pm, pk, **cfg)
    got = usenet_watershed_device(pm.cuda(), pk.cuda(), cfg["mask_threshold"], cfg["marker_threshold"])
    assert got.device.type == "cuda"
    fg = want > 0
    assert torch.equal(fg, got.cpu() > 0)
    assert (got.cpu()[fg] != want[fg]).float().mean() < 1e-3


@needs_cuda
def test_cuda_tile_path_matches_cpu(monkeypatch):
    """ModelSegmenter on CUDA (device-resident) vs on the CPU in float32: the same nuclei (F1 at IoU 0.5)."""
    if NAME not in monuseg_names():
        pytest.skip("MoNuSeg data not available")
    from nucfast.datasets import read_rgb
    from nucfast.slide.accuracy import detection_scores
    from nucfast.slide.segmenters import ModelSegmenter

    rgb = read_rgb(MONUSEG / f"{NAME}.png")
    sample = [rgb[r : r + 256, c : c + 256] for r in (0, 512) for c in (0, 512)]
    monkeypatch.setenv("NUCFAST_CPU_PRECISION", "fp32")
    out = []
    for backend in ("cuda", "cpu"):
        seg = ModelSegmenter("usenet", backend=backend)
        seg.fit(sample)
        out.append(seg(rgb).labels)
    s = detection_scores(out[1], out[0], iou_threshold=0.5)
    assert s["f1"] > 0.95, s
