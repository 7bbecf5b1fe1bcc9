"""Stain normalisation and stain augmentation for H&E images, in torch (CPU or GPU).

Normalisers are fitted once and then applied per tile with the fitted statistics, so all tiles of a slide
are normalised identically:

- :class:`ReinhardNormalizer`: match per-channel mean/std in CIE-LAB (Reinhard et al. 2001, in LAB as the
  attention paper). ``fit(target)`` stores the target statistics; ``fit_source(thumbnail)`` optionally
  freezes the source statistics (slide-level); otherwise each image uses its own statistics.
- :class:`MacenkoNormalizer`: stain vectors from the extreme angles of the optical-density plane spanned by
  the two main eigenvectors (Macenko et al. 2009); concentrations by least squares, scaled by the ratio of
  99th percentiles, recombined with the target's stain matrix.
- :class:`VahadaneNormalizer` (SPCN, Vahadane et al. 2016): stain matrix by sparse non-negative matrix
  factorisation of the optical density (2 stains, L1 weight ``lam`` on the concentrations, unit-norm stain
  vectors), source concentrations by non-negative sparse coding with the source matrix, scaled by the ratio
  of 99th percentiles, recombined with the target's stain matrix (USE-Net's normalisation).
- HED jitter (:func:`hed_jitter`): multiply each haematoxylin/eosin/DAB concentration by N(1, sigma).

Images are RGB, either uint8 (H, W, 3) numpy/torch (values 0..255) or float tensors (..., 3, H, W) in [0, 1].
The output has the kind, layout and dtype family of the input.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._reinhard import reinhard_params, reinhard_u8

__all__ = [
    "rgb_to_lab",
    "lab_of_pixels_u8",
    "lab_to_rgb",
    "ReinhardNormalizer",
    "hed_jitter",
    "rgb_to_hed",
    "hed_to_rgb",
    "RGB_FROM_HED",
    "MacenkoNormalizer",
    "VahadaneNormalizer",
    "rgb_to_od",
    "od_to_rgb",
    "sparse_nmf",
]

# --- image kinds ---


def _to_float_chw(img, name: str = "image"):
    """Return (float tensor (..., 3, H, W) in [0, 1], back-converter)."""
    is_np = isinstance(img, np.ndarray)
    if not (is_np or isinstance(img, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(img).__name__}")
    if is_np and not (img.flags.writeable and img.flags.c_contiguous):
        img = np.array(img, order="C")
    t = torch.from_numpy(img) if is_np else img
    if t.dtype == torch.uint8:
        if t.ndim != 3 or t.shape[-1] != 3:
            raise ValueError(f"{name}: a uint8 image must have shape (H, W, 3), got {tuple(t.shape)}")
        x = t.permute(2, 0, 1).to(torch.float32) / 255.0

        def back(y):
            out = (y.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous()
            return out.numpy() if is_np else out

        return x, back
    if t.is_floating_point():
        if t.ndim < 3 or t.shape[-3] != 3:
            raise ValueError(f"{name}: a float image must have shape (..., 3, H, W), got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        dt = t.dtype
        x = t.to(torch.float32) if dt in (torch.float16, torch.bfloat16) else t

        def back(y):
            y = y.to(dt)
            return y.numpy() if is_np else y

        return x, back
    raise TypeError(f"{name} must be uint8 (H, W, 3) or floating (..., 3, H, W), got dtype {t.dtype}")


# --- colour spaces ---

_XYZ_FROM_RGB = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
_RGB_FROM_XYZ = torch.linalg.inv(_XYZ_FROM_RGB)
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)


def _mix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 matrix over the channel axis (-3) of x."""
    return torch.einsum("ij,...jhw->...ihw", m.to(x.dtype).to(x.device), x)


def _srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    return torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape (..., 3, H, W) -> CIE-LAB (D65, 2 degree), as ``skimage.color.rgb2lab``."""
    return _linear_to_lab(_srgb_to_linear(rgb))


_LINEAR_U8 = None


def lab_of_pixels_u8(pixels: np.ndarray) -> torch.Tensor:
    """CIE-LAB (3, N) float64 of uint8 RGB pixels (N, 3): the very values of :func:`rgb_to_lab` on
    ``pixels / 255`` in float64 (tests/test_stain.py), with the sRGB curve read from a table of the 256
    byte values computed by the same expression (no power per pixel: ~2x faster)."""
    global _LINEAR_U8
    if _LINEAR_U8 is None:
        _LINEAR_U8 = _srgb_to_linear(torch.arange(256, dtype=torch.float64) / 255.0)
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] < 3:
        raise TypeError(f"pixels must be uint8 (N, 3), got {pixels.dtype} {pixels.shape}")
    px = torch.from_numpy(np.ascontiguousarray(pixels[:, :3]))
    return _linear_to_lab(_LINEAR_U8[px.long()].T.reshape(3, -1, 1)).reshape(3, -1)


def _linear_to_lab(lin: torch.Tensor) -> torch.Tensor:
    xyz = _mix(_XYZ_FROM_RGB, lin) / _WHITE_D65.to(lin.dtype).to(lin.device)[:, None, None]
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE-LAB -> sRGB in [0, 1] (clipped), as ``skimage.color.lab2rgb``."""
    L, a, b = lab.unbind(-3)
    fy = (L + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = (fy - b / 200.0).clamp_min(0)
    f = torch.stack([fx, fy, fz], dim=-3)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / 7.787)
    xyz = xyz * _WHITE_D65.to(lab.dtype).to(lab.device)[:, None, None]
    lin = _mix(_RGB_FROM_XYZ, xyz).clamp_min(0)
    rgb = torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return rgb.clamp(0, 1)


# --- Reinhard ---


def _lab_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lab = rgb_to_lab(x.to(torch.float64)).reshape(*x.shape[:-3], 3, -1)
    return lab.mean(-1), lab.std(-1).clamp_min(1e-6)


class ReinhardNormalizer:
    """Reinhard colour transfer in LAB: ``(lab - mu_src) / sd_src * sd_tgt + mu_tgt``.

    Examples
    --------
    >>> norm = ReinhardNormalizer().fit(target_rgb)          # doctest: +SKIP
    >>> out = norm.transform(tile_rgb)                       # per-image source statistics
    >>> norm.fit_source(slide_thumbnail)                     # or freeze slide-level source statistics
    """

    def __init__(self):
        self.target_mean: torch.Tensor | None = None
        self.target_std: torch.Tensor | None = None
        self.source_mean: torch.Tensor | None = None
        self.source_std: torch.Tensor | None = None

    def fit(self, target) -> ReinhardNormalizer:
        x, _ = _to_float_chw(target, "target")
        if x.ndim != 3:
            raise ValueError("target must be a single image")
        self.target_mean, self.target_std = _lab_stats(x)
        return self

    def fit_source(self, source) -> ReinhardNormalizer:
        """Freeze the source statistics (e.g. from a slide thumbnail) so every tile is mapped identically."""
        x, _ = _to_float_chw(source, "source")
        if x.ndim != 3:
            raise ValueError("source must be a single image")
        self.source_mean, self.source_std = _lab_stats(x)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> ReinhardNormalizer:
        for k in ("target_mean", "target_std", "source_mean", "source_std"):
            setattr(self, k, sd.get(k))
        return self

    def transform(self, image, *, dtype: torch.dtype = torch.float64):
        """Normalise ``image`` (uint8 (H, W, 3) or float (..., 3, H, W)); returns the same kind.

        ``dtype``: precision of the colour-space arithmetic (float32 is ~4x faster; the slide engine uses it;
        it differs from float64 by < 1e-5 on [0, 1] values, tested)."""
        if self.target_mean is None:
            raise RuntimeError("ReinhardNormalizer.transform called before fit(target)")
        x, back = _to_float_chw(image, "image")
        lab = rgb_to_lab(x.to(dtype))
        if self.source_mean is not None:
            mu, sd = self.source_mean.to(lab.device, dtype), self.source_std.to(lab.device, dtype)
        else:
            flat = lab.reshape(*lab.shape[:-3], 3, -1)
            mu, sd = flat.mean(-1), flat.std(-1).clamp_min(1e-6)
        tm, ts = self.target_mean.to(lab.device, dtype), self.target_std.to(lab.device, dtype)
        out = (lab - mu[..., None, None]) / sd[..., None, None] * ts[:, None, None] + tm[:, None, None]
        return back(lab_to_rgb(out).to(x.dtype))

    def transform_u8(self, rgb):
        """:meth:`transform` of a uint8 RGB image (H, W, 3|4), numpy or a tensor on any device, with the
        frozen source statistics (:meth:`fit_source`), as one fused pass (``nucfast::reinhard_u8``, CPU and
        CUDA):
        float32 (3, H, W) in [0, 1], the kind of the input. Equal to ``transform(rgb / 255)`` in float64 to
        < 1e-4, 0.03 of a grey level (tested); 67 MP/s on one CPU thread, 7-21x the float32 torch path
        (benchmarks/bench_stain.py, 2026-12-02)."""
        if self.target_mean is None or self.source_mean is None:
            raise RuntimeError("ReinhardNormalizer.transform_u8 needs fit(target) and fit_source(...) first")
        dev = rgb.device if isinstance(rgb, torch.Tensor) else "cpu"
        key = (str(dev), tuple(self.source_mean.tolist()), tuple(self.source_std.tolist()))
        if getattr(self, "_params_key", None) != key:
            scale = self.target_std / self.source_std
            shift = self.target_mean - self.source_mean * scale
            self._params = reinhard_params(_XYZ_FROM_RGB, _RGB_FROM_XYZ, _WHITE_D65, scale, shift, dev)
            self._params_key = key
        return reinhard_u8(rgb, self._params)


# --- HED ---

# scikit-image's rgb_from_hed (Ruifrok & Johnston), rows = stain OD vectors (H, E, DAB)
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
_HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
_LOG_ADJUST = float(np.log(1e-6))


def rgb_to_hed(rgb: torch.Tensor, *, clip: bool = True) -> torch.Tensor:
    """RGB in [0, 1] (..., 3, H, W) -> H, E, DAB concentrations, as ``skimage.color.rgb2hed``.

    ``clip=False`` keeps negative concentrations so that :func:`hed_to_rgb` inverts it exactly.
    """
    od = torch.log(rgb.clamp_min(1e-6)) / _LOG_ADJUST
    hed = _mix(_HED_FROM_RGB.T, od)
    return hed.clamp_min(0) if clip else hed


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hed`, as ``skimage.color.hed2rgb`` (clipped to [0, 1])."""
    log_rgb = -_mix(RGB_FROM_HED.T, hed * -_LOG_ADJUST)
    return torch.exp(log_rgb).clamp(0, 1)


def hed_jitter(image, *, sigma: float = 0.03, bias: float = 0.0, generator: torch.Generator | None = None):
    """HED colour augmentation: each of H, E, DAB multiplied by N(1, sigma) (+ U(-bias, bias)), per image.

    Parameters
    ----------
    image : float tensor (..., 3, H, W) in [0, 1] or uint8 (H, W, 3)
    sigma : std of the multiplicative factors (0.03 in the attention paper)
    bias : half-width of an additive uniform shift of the concentrations (0 = none)
    generator : torch.Generator for reproducibility
    """
    if sigma < 0 or bias < 0:
        raise ValueError("sigma and bias must be >= 0")
    x, back = _to_float_chw(image, "image")
    hed = rgb_to_hed(x, clip=False)
    shape = (*x.shape[:-3], 3, 1, 1)
    alpha = 1.0 + sigma * torch.randn(shape, generator=generator, dtype=x.dtype).to(x.device)
    beta = bias * (2 * torch.rand(shape, generator=generator, dtype=x.dtype) - 1).to(x.device)
    return back(hed_to_rgb(hed * alpha + beta).to(x.dtype))


# --- optical density, stain-matrix normalisers ---

_OD_EPS = 1.0 / 255.0


def rgb_to_od(rgb: torch.Tensor) -> torch.Tensor:
    """Optical density ``-log(max(I, 1/255))`` of RGB in [0, 1] (..., 3, H, W)."""
    return -torch.log(rgb.clamp_min(_OD_EPS))


def od_to_rgb(od: torch.Tensor) -> torch.Tensor:
    return torch.exp(-od).clamp(0, 1)


def _percentile(x: torch.Tensor, q: float, dim: int = -1) -> torch.Tensor:
    """Percentile (linear interpolation, numpy's default) along ``dim``; no size limit (unlike quantile)."""
    n = x.shape[dim]
    if n == 0:
        raise ValueError("no pixels to compute a percentile from")
    xs = x.sort(dim=dim).values
    pos = (n - 1) * q / 100.0
    lo, hi = int(math.floor(pos)), int(math.ceil(pos))
    a, b = xs.select(dim, lo), xs.select(dim, hi)
    return a + (b - a) * (pos - lo)


def _tissue_od(x: torch.Tensor, beta: float, max_pixels: int, seed: int) -> torch.Tensor:
    """(P, 3) float64 optical densities of pixels whose OD is >= beta in every channel (tissue, not glass),
    deterministically subsampled to at most ``max_pixels``."""
    if x.ndim != 3:
        raise ValueError(f"expected a single image (3, H, W), got shape {tuple(x.shape)}")
    od = rgb_to_od(x.to(torch.float64)).reshape(3, -1).T
    od = od[(od >= beta).all(1)]
    if od.shape[0] < 10:
        raise ValueError(f"image has too few stained pixels ({od.shape[0]}) to estimate stain vectors")
    if od.shape[0] > max_pixels:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(od.shape[0], generator=g)[:max_pixels].to(od.device)
        od = od[idx]
    return od


def _order_he(m: torch.Tensor) -> torch.Tensor:
    """Rows = stain vectors; haematoxylin (larger red-channel OD) first."""
    return m if m[0, 0] >= m[1, 0] else m.flip(0)


def _nn_lasso2(od: torch.Tensor, m: torch.Tensor, lam: float) -> torch.Tensor:
    """Exact argmin_{C >= 0} 0.5 ||od - C m||^2 + lam ||C||_1 for two stains (m: (2, 3)), per pixel.

    The KKT solution is one of: both active (unconstrained solve of G c = b - lam), only stain 0, only
    stain 1, or zero; the feasible candidate of least objective is taken.
    """
    g = m @ m.T
    b = od @ m.T - lam  # (P, 2)
    det = g[0, 0] * g[1, 1] - g[0, 1] * g[1, 0]
    both = (
        torch.stack([g[1, 1] * b[:, 0] - g[0, 1] * b[:, 1], g[0, 0] * b[:, 1] - g[1, 0] * b[:, 0]], 1) / det
    )
    c0 = torch.stack([(b[:, 0] / g[0, 0]).clamp_min(0), torch.zeros_like(b[:, 0])], 1)
    c1 = torch.stack([torch.zeros_like(b[:, 1]), (b[:, 1] / g[1, 1]).clamp_min(0)], 1)

    def obj(c):  # objective up to the constant 0.5 ||od||^2
        return 0.5 * ((c @ g) * c).sum(1) - (c * b).sum(1)

    cands = torch.stack([both, c0, c1])  # (3, P, 2)
    f = torch.stack([obj(both), obj(c0), obj(c1)])
    f[0] = torch.where((both >= 0).all(1), f[0], torch.full_like(f[0], float("inf")))
    best = f.argmin(0)
    return cands.gather(0, best[None, :, None].expand(1, -1, 2))[0]


def _nn_lasso(od: torch.Tensor, m: torch.Tensor, lam: float, iters: int = 50, c0=None) -> torch.Tensor:
    """argmin_{C >= 0} 0.5 ||od - C m||^2 + lam ||C||_1, rows independent (projected ISTA, FISTA momentum).

    od (P, 3), m (2, 3) -> C (P, 2).
    """
    g = m @ m.T  # (2, 2)
    step = 1.0 / float(torch.linalg.eigvalsh(g).max().clamp_min(1e-12))
    b = od @ m.T  # (P, 2)
    c = torch.linalg.lstsq(m.T, od.T).solution.T.clamp_min(0) if c0 is None else c0
    y, t = c, 1.0
    for _ in range(iters):
        c_new = (y - step * (y @ g - b + lam)).clamp_min(0)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = c_new + ((t - 1) / t_new) * (c_new - c)
        c, t = c_new, t_new
    return c


def sparse_nmf(
    od: torch.Tensor,
    *,
    k: int = 2,
    lam: float = 0.02,
    iters: int = 200,
    inner: int = 30,
    tol: float = 1e-5,
    init=None,
) -> torch.Tensor:
    """Sparse NMF ``od (P, 3) ~= C (P, k) @ M (k, 3)``, ``C, M >= 0``, unit-norm rows of M, L1 ``lam`` on C.

    Alternates non-negative sparse coding of C (:func:`_nn_lasso`, warm-started) and the least-squares M given
    C, projected to M >= 0 and row-normalised, until M moves less than ``tol``; deterministic (starts from
    ``init`` or the Ruifrok H&E vectors).
    Returns M (k, 3) with haematoxylin first when k == 2.
    """
    if k != 2 and init is None:
        raise ValueError("init is required when k != 2")
    m = (init if init is not None else RGB_FROM_HED[:2]).to(od.dtype).to(od.device).clone()
    m = m / m.norm(dim=1, keepdim=True)
    c = None
    for _ in range(iters):
        c = _nn_lasso2(od, m, lam) if k == 2 else _nn_lasso(od, m, lam, iters=inner, c0=c)
        cc = c.T @ c + 1e-9 * torch.eye(c.shape[1], dtype=c.dtype, device=c.device)
        m_new = torch.linalg.solve(cc, c.T @ od).clamp_min(0)  # least squares in M given C, projected
        m_new = m_new / m_new.norm(dim=1, keepdim=True).clamp_min(1e-12)
        done = (m_new - m).abs().max() < tol
        m = m_new
        if done:
            break
    return _order_he(m) if k == 2 else m


class _StainMatrixNormalizer:
    """Shared fit/transform of stain-matrix normalisers (subclasses define ``_stain_matrix`` and
    ``_concentrations``)."""

    def __init__(
        self, *, beta: float = 0.15, max_pixels: int = 200_000, seed: int = 0, percentile: float = 99.0
    ):
        self.beta, self.max_pixels, self.seed, self.percentile = beta, max_pixels, seed, percentile
        self.target_matrix: torch.Tensor | None = None
        self.target_max: torch.Tensor | None = None
        self.source_matrix: torch.Tensor | None = None
        self.source_max: torch.Tensor | None = None

    def _fit_stats(self, image, name):
        x, _ = _to_float_chw(image, name)
        od = _tissue_od(x, self.beta, self.max_pixels, self.seed)
        m = self._stain_matrix(od)
        c = self._concentrations(od, m)
        return m, _percentile(c.T, self.percentile)

    def fit(self, target):
        """Estimate the target's stain matrix (2, 3) and 99th-percentile concentrations."""
        self.target_matrix, self.target_max = self._fit_stats(target, "target")
        return self

    def fit_source(self, source):
        """Freeze the source stain matrix and concentration scale (e.g. from a slide thumbnail)."""
        self.source_matrix, self.source_max = self._fit_stats(source, "source")
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}

    def load_state_dict(self, sd):
        for k in ("target_matrix", "target_max", "source_matrix", "source_max"):
            setattr(self, k, sd.get(k))
        return self

    def transform(self, image):
        """Normalise ``image`` (uint8 (H, W, 3) or float (3, H, W)); returns the same kind."""
        if self.target_matrix is None:
            raise RuntimeError(f"{type(self).__name__}.transform called before fit(target)")
        x, back = _to_float_chw(image, "image")
        if x.ndim != 3:
            raise ValueError(f"image must be a single image (3, H, W), got shape {tuple(x.shape)}")
        if self.source_matrix is not None:
            m, mx = self.source_matrix, self.source_max
        else:
            m, mx = self._fit_stats(x, "image")
        dev = x.device
        m, mx = m.to(dev), mx.to(dev)
        od = rgb_to_od(x.to(torch.float64)).reshape(3, -1).T
        c = self._concentrations(od, m)
        c = c * (self.target_max.to(dev) / mx.clamp_min(1e-6))
        out = od_to_rgb(c @ self.target_matrix.to(dev)).T.reshape(x.shape)
        return back(out.to(x.dtype))


class MacenkoNormalizer(_StainMatrixNormalizer):
    """Macenko et al. (2009) stain normalisation (``alpha`` = angle percentile, default 1)."""

    def __init__(self, *, alpha: float = 1.0, **kw):
        super().__init__(**kw)
        self.alpha = alpha

    def _stain_matrix(self, od):
        cov = torch.cov(od.T)
        _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
        e = vecs[:, 1:3].flip(1)  # two largest, (3, 2)
        e = e * torch.where(e.sum(0) < 0, -1.0, 1.0).to(e.dtype)  # orient into positive OD
        proj = od @ e
        phi = torch.atan2(proj[:, 1], proj[:, 0])
        lo, hi = _percentile(phi, self.alpha), _percentile(phi, 100 - self.alpha)
        v1 = e @ torch.stack([torch.cos(lo), torch.sin(lo)])
        v2 = e @ torch.stack([torch.cos(hi), torch.sin(hi)])
        m = torch.stack([v1, v2]).clamp_min(0)
        m = m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return _order_he(m)

    def _concentrations(self, od, m):
        return torch.linalg.lstsq(m.T, od.T).solution.T


class VahadaneNormalizer(_StainMatrixNormalizer):
    """SPCN / Vahadane et al. (2016): sparse NMF stain separation (2 stains, ``lam`` = 0.02)."""

    def __init__(self, *, lam: float = 0.02, nmf_iters: int = 300, nmf_pixels: int = 10_000, **kw):
        super().__init__(**kw)
        self.lam, self.nmf_iters, self.nmf_pixels = lam, nmf_iters, nmf_pixels

    def _stain_matrix(self, od):
        n = self.nmf_pixels  # the stain matrix needs far fewer pixels than the concentrations
        if od.shape[0] > n:
            od = od[:: (od.shape[0] + n - 1) // n]
        return sparse_nmf(od, k=2, lam=self.lam, iters=self.nmf_iters)

    def _concentrations(self, od, m):
        return _nn_lasso2(od, m, self.lam)
