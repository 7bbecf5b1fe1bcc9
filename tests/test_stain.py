"""nucfast.stain: colour-space conversions against scikit-image, normaliser properties, HED jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import MONUSEG
from skimage import color

from nucfast import stain


def _rgb(name: str, size: int = 256) -> np.ndarray:
    p = MONUSEG / f"{name}.png"
    if p.exists():
        from PIL import Image

        return np.ascontiguousarray(np.asarray(Image.open(p).convert("RGB"))[:size, :size])
    # synthetic H&E-like image: two stains mixed with smooth random concentrations
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    c = np.stack([rng.gamma(2.0, 0.4, (size, size)), rng.gamma(2.0, 0.2, (size, size))], -1)
    m = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
    return (255 * np.exp(-c @ m)).clip(0, 255).astype(np.uint8)


TARGET = "TCGA-B0-5711-01Z-00-DX1"
SOURCE = "TCGA-18-5592-01Z-00-DX1"


@pytest.fixture(scope="module")
def target():
    return _rgb(TARGET)


@pytest.fixture(scope="module")
def source():
    return _rgb(SOURCE)


def _chw(a):
    return torch.from_numpy(a).permute(2, 0, 1).double() / 255


def test_lab_matches_skimage(source):
    lab = stain.rgb_to_lab(_chw(source)).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(lab, color.rgb2lab(source), atol=1e-8)
    back = stain.lab_to_rgb(torch.from_numpy(color.rgb2lab(source)).permute(2, 0, 1))
    np.testing.assert_allclose(back.permute(1, 2, 0).numpy(), color.lab2rgb(color.rgb2lab(source)), atol=1e-8)


def test_lab_of_pixels_u8_is_rgb_to_lab_exactly(source, target):
    """The table path of the slide-level Reinhard statistics gives the float64 LAB of rgb_to_lab bit for
    bit (so the fitted statistics, and every output after them, are unchanged), on a real image, on all
    256^3 / 64 colours of a grid and on selected pixels (the tissue pixels of fit_context)."""
    grid = np.stack(np.meshgrid(*[np.arange(0, 256, 4, dtype=np.uint8)] * 3, indexing="ij"), -1)
    for img in (source, target, grid.reshape(512, 512, 3)):
        ref = stain.rgb_to_lab(_chw(img)).reshape(3, -1)
        assert torch.equal(stain.lab_of_pixels_u8(img.reshape(-1, 3)), ref)
        sel = img.min(axis=-1) < 220
        assert torch.equal(stain.lab_of_pixels_u8(img[sel]), ref[:, torch.from_numpy(sel.ravel())])
    with pytest.raises(TypeError, match="uint8"):
        stain.lab_of_pixels_u8(source.reshape(-1, 3).astype(np.float32))


def test_hed_matches_skimage_and_roundtrips(source):
    x = _chw(source)
    np.testing.assert_allclose(
        stain.rgb_to_hed(x).permute(1, 2, 0).numpy(), color.rgb2hed(source), atol=1e-10
    )
    np.testing.assert_allclose(
        stain.hed_to_rgb(stain.rgb_to_hed(x, clip=False)), x.clamp_min(1e-6), atol=1e-10
    )


def test_reinhard_properties(source, target):
    n = stain.ReinhardNormalizer().fit(target)
    # the target maps to itself (up to uint8 rounding)
    assert np.abs(n.transform(target).astype(int) - target).max() <= 1
    # the output has the target's LAB statistics (approximately: clipping to the RGB gamut and uint8
    # rounding shift the means; on the real MoNuSeg pair channel a moves by ~1.1)
    out = n.transform(source)
    lab = color.rgb2lab(out).reshape(-1, 3)
    np.testing.assert_allclose(lab.mean(0), n.target_mean.numpy(), atol=2.0)
    np.testing.assert_allclose(lab.std(0, ddof=1), n.target_std.numpy(), rtol=0.1)
    # kinds: uint8 numpy in -> uint8 numpy out; float tensor (batched) in -> float tensor out
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == source.shape
    xb = torch.stack([_chw(source).float(), _chw(target).float()])
    ob = n.transform(xb)
    assert ob.dtype == torch.float32 and ob.shape == xb.shape
    # per-image statistics in a batch: item 0 equals the unbatched result
    np.testing.assert_allclose(ob[0].double().numpy(), n.transform(_chw(source)).numpy(), atol=1e-5)
    # float32 arithmetic (the slide engine's) with frozen source statistics stays within 1e-5 of float64
    n.fit_source(source)
    x = _chw(source).float()
    f64, f32 = n.transform(x), n.transform(x, dtype=torch.float32)
    assert f32.dtype == torch.float32 and float((f64 - f32).abs().max()) < 1e-5


def _fast(cls):
    # fewer NMF pixels keep the tests quick; the algorithm is the same
    return (lambda: cls(nmf_pixels=3000)) if cls is stain.VahadaneNormalizer else cls


@pytest.mark.parametrize("cls", [stain.ReinhardNormalizer, stain.MacenkoNormalizer, stain.VahadaneNormalizer])
def test_fit_source_makes_tiles_consistent(cls, source, target):
    n = _fast(cls)().fit(target).fit_source(source)
    whole = n.transform(_chw(source))
    tile = n.transform(_chw(source)[:, 64:192, 32:160].contiguous())
    np.testing.assert_allclose(tile.numpy(), whole[:, 64:192, 32:160].numpy(), atol=1e-9)


@pytest.mark.parametrize("cls", [stain.MacenkoNormalizer, stain.VahadaneNormalizer])
def test_stain_matrix_normalisers(cls, source, target):
    cls = _fast(cls)
    n = cls().fit(target)
    m = n.target_matrix
    assert m.shape == (2, 3) and (m >= 0).all()
    np.testing.assert_allclose(m.norm(dim=1).numpy(), 1.0, atol=1e-9)
    assert m[0, 0] >= m[1, 0]  # haematoxylin first
    # deterministic
    n2 = cls().fit(target)
    assert torch.equal(n2.target_matrix, m) and torch.equal(n2.target_max, n.target_max)
    # target -> nearly itself
    err = np.abs(n.transform(target).astype(float) - target).mean()
    assert err < 6.0, err
    # re-stain the target with other stain vectors and amounts: normalising undoes it
    x = _chw(target)
    od = stain.rgb_to_od(x).reshape(3, -1).T
    c = n._concentrations(od, m)
    m_s = m + torch.tensor([[0.05, -0.10, 0.10], [0.15, -0.05, 0.10]], dtype=m.dtype)
    m_s = m_s / m_s.norm(dim=1, keepdim=True)
    src = stain.od_to_rgb((c * torch.tensor([1.3, 0.7], dtype=c.dtype)) @ m_s).T.reshape(x.shape)
    src8 = (src * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(src8.astype(float) - target).mean() > 8
    back = n.transform(src8).astype(float)
    ref = n.transform(target).astype(float)
    # (the re-stained image is > 8 grey levels away; normalising brings it to within ~3 on real tissue)
    assert np.abs(back - ref).mean() < 3.5, np.abs(back - ref).mean()


def test_sparse_nmf_recovers_synthetic_stains():
    rng = np.random.default_rng(0)
    m = torch.tensor([[0.60, 0.75, 0.28], [0.10, 0.95, 0.30]], dtype=torch.float64)
    m = m / m.norm(dim=1, keepdim=True)
    c = torch.from_numpy(rng.gamma(1.0, 0.5, (5000, 2)) * (rng.random((5000, 2)) < 0.7))
    od = c @ m
    # the L1 penalty is what selects the tightest cone (the pure-stain vectors) among the exact factorisations
    est = stain.sparse_nmf(od, lam=0.02)
    assert torch.allclose(est, m, atol=0.01), est


def test_hed_jitter(source):
    x = _chw(source)
    np.testing.assert_allclose(stain.hed_jitter(x, sigma=0.0).numpy(), x.clamp_min(1e-6).numpy(), atol=1e-10)
    a = stain.hed_jitter(x, sigma=0.05, generator=torch.Generator().manual_seed(1))
    b = stain.hed_jitter(x, sigma=0.05, generator=torch.Generator().manual_seed(1))
    c = stain.hed_jitter(x, sigma=0.05, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    u = stain.hed_jitter(source, sigma=0.05)
    assert u.dtype == np.uint8 and u.shape == source.shape


def test_errors(target):
    with pytest.raises(RuntimeError, match="before fit"):
        stain.ReinhardNormalizer().transform(target)
    with pytest.raises(RuntimeError, match="before fit"):
        stain.MacenkoNormalizer().transform(target)
    with pytest.raises(ValueError, match=r"image: a uint8 image must have shape \(H, W, 3\)"):
        stain.ReinhardNormalizer().fit(target).transform(target[..., :2])
    with pytest.raises(TypeError, match="target must be uint8"):
        stain.ReinhardNormalizer().fit(target.astype(np.int32))
    with pytest.raises(ValueError, match="image contains NaN"):
        stain.hed_jitter(torch.full((3, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="too few stained pixels"):
        stain.VahadaneNormalizer().fit(np.full((32, 32, 3), 255, np.uint8))
    with pytest.raises(ValueError, match="sigma and bias"):
        stain.hed_jitter(target, sigma=-1.0)
    with pytest.raises(TypeError, match="image must be a numpy array or a torch tensor"):
        stain.hed_jitter([[1, 2, 3]])


@pytest.mark.parametrize("stats", ["fitted", "extreme"])
def test_fused_reinhard_u8_equals_the_float64_reference(source, target, stats):
    """nucfast::reinhard_u8 (one pass, uint8 -> float32 CHW) equals transform() in float64 to < 1e-4, on a
    real image and on every byte value of each channel, including strong scalings that clip."""
    norm = stain.ReinhardNormalizer().fit(target).fit_source(source)
    if stats == "extreme":
        norm.source_std = norm.source_std * torch.tensor([0.3, 2.5, 0.2], dtype=torch.float64)
        norm.source_mean = norm.source_mean + torch.tensor([-20.0, 15.0, -30.0], dtype=torch.float64)
    v = np.arange(256, dtype=np.uint8)
    rng = np.random.default_rng(0)
    sweep = np.stack([v, rng.permutation(v), rng.permutation(v)], -1).reshape(16, 16, 3)
    for img in (source, sweep, rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)):
        ref = norm.transform(_chw(img)).numpy()
        out = norm.transform_u8(img)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, *img.shape[:2])
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)  # float32 arithmetic: 0.03 of a grey level
    if stats == "extreme":
        assert (ref == 0).any() or (ref == 1).any()  # the clipping branch is exercised
    # RGBA and torch in -> a tensor out; opcheck of the registered op
    rgba = np.concatenate([source, np.full(source.shape[:2] + (1,), 255, np.uint8)], -1)
    t = norm.transform_u8(torch.from_numpy(rgba))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), norm.transform_u8(source))
    small = torch.from_numpy(source[:8, :8].copy())
    torch.library.opcheck(torch.ops.nucfast.reinhard_u8, (small, norm._params))


def test_fused_reinhard_u8_errors(source, target):
    norm = stain.ReinhardNormalizer().fit(target)
    with pytest.raises(RuntimeError, match="fit_source"):
        norm.transform_u8(source)
    norm.fit_source(source)
    with pytest.raises(TypeError, match="rgb has dtype float32"):
        norm.transform_u8(source.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) or \(H, W, 4\)"):
        norm.transform_u8(source[..., :2])
    with pytest.raises(ValueError, match="3 dimensions"):
        norm.transform_u8(source[..., 0])
