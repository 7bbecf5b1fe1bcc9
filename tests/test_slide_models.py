"""The slide engine with the trained networks (ModelSegmenter): shipped USE-Net on a real MoNuSeg image
written as a slide; tiled vs whole-image inference; backends; errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from conftest import MONUSEG, monuseg_names

from nucfast import segment_image
from nucfast._segment import _tissue_sample, load_model, postprocess_probs, predict
from nucfast.metrics import aji
from nucfast.postprocess import usenet_instances
from nucfast.slide import segment_slide
from nucfast.slide._labels import read_label_array
from nucfast.slide.accuracy import detection_scores
from nucfast.slide.segmenters import ModelSegmenter, get_segmenter
from nucfast.slide.tissue import image_tissue_sample

NAME = "TCGA-21-5786-01Z-00-DX1"  # a validation image of the shipped weights
pytestmark = pytest.mark.skipif(NAME not in monuseg_names(), reason="MoNuSeg data not available")


@pytest.fixture(scope="module")
def image():
    from nucfast.train.data import read_labels, read_rgb

    return read_rgb(MONUSEG / f"{NAME}.png"), read_labels(MONUSEG / f"{NAME}_inst.tif")


@pytest.fixture(scope="module")
def slide(image, tmp_path_factory):
    p = tmp_path_factory.mktemp("mslide") / "monuseg.tif"
    desc = "Aperio Image Library |MPP = 0.25"
    tifffile.imwrite(p, image[0], tile=(256, 256), photometric="rgb", description=desc, metadata=None)
    return p


def _labels(res):
    return np.asarray(read_label_array(res.paths["labels"])[:]).astype(np.int64)


def _whole(state, rgb):
    """Whole-image inference: segment_image fits the same statistics on the same tissue sample."""
    assert {k: v for k, v in state.items() if k in ("source_mean", "source_std", "se_gates")} == {
        k: v for k, v in load_model("usenet").fit_context(_tissue_sample(rgb, 0.25)).state().items()
    }
    return segment_image(rgb).astype(np.int64)


def test_default_model_tiled_vs_whole(slide, image, tmp_path):
    rgb, gt = image
    a = segment_slide(slide, tmp_path / "a", tile=256, tissue=False, outputs=("table",))
    cpu_engine = "torch-cpu-bf16" if load_model("usenet").bf16 else "onnxruntime-cpu"  # models.cpu_bf16
    assert a.model == "usenet" and a.backend == cpu_engine and a.cut_nuclei == 0
    assert a.model_state["postprocess"] == load_model("usenet").meta["postprocess"]
    tiled = _labels(a)
    whole = _whole(a.model_state, rgb)
    # frozen SE gates + windows on the stride grid: the network is local (tests/test_tiling_invariance.py)
    det = detection_scores(whole, tiled, iou_threshold=0.9)
    assert det["f1"] > 0.98 and det["mean_iou"] > 0.98
    assert abs(aji(gt, tiled) - aji(gt, whole)) < 0.03
    assert aji(gt, tiled) > 0.4  # the shipped model beats the no-learning baseline's ~0.39 here too
    # the slide-level statistics do not depend on the tiling; the same tiling is deterministic
    b = segment_slide(slide, tmp_path / "b", tile=384, workers=2, tissue=False, outputs=("table",))
    assert b.model_state == a.model_state
    c = segment_slide(slide, tmp_path / "c", tile=256, workers=2, tissue=False, outputs=("table",))
    np.testing.assert_array_equal(_labels(c), tiled)
    assert a.table.num_rows == a.n_nuclei and np.all(a.table.column("score").to_numpy() > 0.2)


def test_torch_backend_matches_onnxruntime(slide, tmp_path):
    t = segment_slide(slide, tmp_path / "t", tile=512, backend="torch", tissue=False, outputs=())
    o = segment_slide(slide, tmp_path / "o", tile=512, backend="onnxruntime", tissue=False, outputs=())
    assert t.backend == "torch-cpu" and o.backend == "onnxruntime-cpu"
    assert detection_scores(_labels(t), _labels(o))["f1"] > 0.98


def test_segment_image_uses_the_selected_postprocessing(image):
    rgb = image[0][:400, :500]
    m = load_model("usenet")
    pp = m.meta["postprocess"]
    assert pp["method"] in ("ridges", "watershed")
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
    ctx = m.fit_context(_tissue_sample(rgb, 0.25))
    assert ctx.inputs["se_gates"].shape == (m.net.n_se_gates,)
    u8 = torch.from_numpy(rgb)  # uint8 input: segment_image normalises with the fused op
    probs = predict(m, ctx.normalize_u8(u8), context=ctx).float().numpy()
    want = usenet_instances(probs[0], probs[1], **pp)
    np.testing.assert_allclose(ctx.normalize_u8(torch.from_numpy(rgb)), ctx.normalize(x), atol=1e-4)
    np.testing.assert_array_equal(postprocess_probs(m, probs), want)
    np.testing.assert_array_equal(segment_image(rgb), want)


def test_model_segmenter_errors(image):
    seg = get_segmenter("usenet", backend="cpu")
    assert isinstance(seg, ModelSegmenter) and seg.halo >= 44
    with pytest.raises(RuntimeError, match="fit"):
        seg(image[0][:64, :64])
    with pytest.raises(ValueError, match="tissue sample is empty"):
        seg.fit([np.full((64, 64, 3), 255, np.uint8)])
    seg.fit([image[0][:256, :256]])
    with pytest.raises(ValueError, match="uint8"):
        seg(image[0][:64, :64].astype(np.float32))
    with pytest.raises(ValueError, match="backend"):
        ModelSegmenter("usenet", backend="tpu")
    with pytest.raises(FileNotFoundError, match="no such weights"):
        get_segmenter("missing.safetensors")


def test_reference_postprocessing_gives_identical_nuclei(slide, tmp_path):
    kw = dict(tile=512, tissue=False, outputs=())
    fast = segment_slide(slide, tmp_path / "f", model=ModelSegmenter("usenet"), **kw)
    ref = segment_slide(slide, tmp_path / "r", model=ModelSegmenter("usenet", postprocess="reference"), **kw)
    np.testing.assert_array_equal(_labels(fast), _labels(ref))
    with pytest.raises(ValueError, match="postprocess"):
        ModelSegmenter("usenet", postprocess="skimage")


def test_attention_model_tiled_vs_whole(slide, image, tmp_path):
    """The attention network is local (no global pooling, the trained running tau), so with its halo the
    tiled foreground equals the whole-image foreground exactly; nuclei differ only where one clump's
    watershed depends on context beyond the halo (measured: 8 of 582 on this image)."""
    rgb, gt = image
    a = segment_slide(slide, tmp_path / "a", model="attention", tile=256, tissue=False, outputs=())
    assert a.model == "attention" and a.model_state["halo"] == 160
    tiled = _labels(a)
    seg = ModelSegmenter("attention")  # the same engine on the whole image, fitted on the run's sample
    seg.fit(image_tissue_sample(rgb, mpp=0.25, tissue=False))
    assert seg.state()["source_mean"] == a.model_state["source_mean"]
    whole = seg(rgb).labels.astype(np.int64)
    np.testing.assert_array_equal(tiled > 0, whole > 0)
    assert detection_scores(whole, tiled)["f1"] > 0.97
    assert aji(gt, tiled) > 0.2


def test_device_resident_path_equals_the_host_pipeline(slide, tmp_path):
    """The tensor path (post-processing on the probabilities' device, only labels + scores back) gives the
    host pipeline's nuclei and scores exactly, here with CPU tensors (the CUDA path has never run)."""
    kw = dict(tile=512, tissue=False, outputs=("table",))
    dev = segment_slide(slide, tmp_path / "d", model=ModelSegmenter("usenet"), **kw)
    host = segment_slide(slide, tmp_path / "h", model=ModelSegmenter("usenet", device_resident=False), **kw)
    np.testing.assert_array_equal(_labels(dev), _labels(host))
    a, b = dev.table, host.table
    assert a.num_rows == b.num_rows > 100
    np.testing.assert_array_equal(a.column("score").to_numpy(), b.column("score").to_numpy())
