"""Tissue tiles and PathologyGAN: generated tiles (:func:`sample_tiles`), tile latents (:func:`embed_tiles`),
latent interpolations, hand-crafted colour/texture tile features and the Fréchet distance.

The networks are the model layer's (``nucfast.models.load("pathgan")`` / ``"pathgan_encoder"``,
:mod:`nucfast.models.pathgan`); this module is the user-facing entry point above it, like ``segment_image``.

Resampling (:func:`embed_tiles`): a tile at ``mpp`` um/px is resized to the encoder's um/px (area
averaging to shrink, bilinear to enlarge; ``torch.nn.functional.interpolate``); a resized tile of exactly
the encoder's side S is one window; a larger one is covered by the fewest S x S windows on an even grid
(overlapping where S does not divide the side), and its latent is the mean of the windows' latents over
the windows that are at least 70 % tissue (all windows if none is); a smaller one is reflect-padded to S,
centred. So a 1024-px slide tile at 0.25 um/px becomes 512 px at 0.5 um/px, 10 x 10 windows of 56 px, one
vector.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import models
from .stain import rgb_to_hed

__all__ = [
    "sample_tiles",
    "embed_tiles",
    "interpolate_latents",
    "tile_features",
    "TILE_FEATURE_NAMES",
    "frechet_distance",
    "write_sample_grid",
    "write_interpolation_strip",
    "tissue_fraction",
    "MIN_TISSUE",
]

#: A tile counts as tissue when at least this fraction of its pixels is not glass (the paper's rule).
MIN_TISSUE = 0.7


def tissue_fraction(tiles: np.ndarray) -> np.ndarray:
    """Fraction of non-glass pixels (:func:`nucfast.models.tissue_pixels`) of each tile (n, h, w, 3)."""
    return models.tissue_pixels(np.asarray(tiles)).reshape(len(tiles), -1).mean(1)


def _load(model, task: str) -> models.Model:
    m = models.load(model)
    if m.task != task:
        raise ValueError(f"model {m.name!r} is a {m.task} model, expected a {task} model")
    return m


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


@torch.no_grad()
def _generate(net, ws: torch.Tensor, gen: torch.Generator, batch: int) -> np.ndarray:
    out = []
    for i in range(0, len(ws), batch):
        w = ws[i : i + batch]
        noise = [torch.randn(s, generator=gen) for s in net.noise_shapes(len(w))]
        out.append(_to_uint8(net.synthesis(w, noise=noise).float()))
    return np.concatenate(out) if out else np.zeros((0, net.size, net.size, 3), np.uint8)


@torch.no_grad()
def sample_tiles(n: int, *, seed: int = 0, model="pathgan", batch: int = 64) -> tuple[np.ndarray, float]:
    """Generated H&E tiles.

    Parameters
    ----------
    n : int
        Number of tiles.
    seed : int
        Seeds z and the generator's noise: the same seed gives the same tiles.
    model : str, Path or Model
        A ``tile-generator`` model (default ``"pathgan"``, the shipped CPU-sized PathologyGAN).
    batch : int
        Tiles per forward pass.

    Returns
    -------
    tiles : (n, S, S, 3) uint8
    mpp : float
        Their microns per pixel.

    Examples
    --------
    >>> tiles, mpp = sample_tiles(4, seed=1)  # doctest: +SKIP
    >>> tiles.shape, mpp  # doctest: +SKIP
    ((4, 56, 56, 3), 0.5)
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    m = _load(model, "tile-generator")
    net = m.net
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(int(n), net.z_dim, generator=gen)
    dev = m.device
    ws = net.mapping(z.to(dev)).cpu() if n else torch.zeros(0, net.w_dim)
    return _generate(net, ws, gen, batch), m.mpp


@torch.no_grad()
def interpolate_latents(
    steps: int, *, seed: int = 0, pairs: int = 1, mapping: bool = True, model="pathgan"
) -> np.ndarray:
    """Tiles along straight lines between pairs of random latents: (pairs, steps, S, S, 3) uint8.

    ``mapping=True`` interpolates linearly in z and maps every point (the paper's latent space);
    ``mapping=False`` interpolates linearly in w between the two mapped end points (the mapping network
    bypassed along the path). The per-pixel noise is fixed along each path."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    net = _load(model, "tile-generator").net
    gen = torch.Generator().manual_seed(int(seed))
    z0, z1 = torch.randn(pairs, net.z_dim, generator=gen), torch.randn(pairs, net.z_dim, generator=gen)
    t = torch.linspace(0, 1, steps)[None, :, None]
    if mapping:
        ws = net.mapping(((1 - t) * z0[:, None] + t * z1[:, None]).reshape(-1, net.z_dim))
    else:
        w0, w1 = net.mapping(z0), net.mapping(z1)
        ws = ((1 - t) * w0[:, None] + t * w1[:, None]).reshape(-1, net.w_dim)
    out = []
    for p in range(pairs):
        noise = [torch.randn((1,) + s[1:], generator=gen).expand(s) for s in net.noise_shapes(steps)]
        out.append(_to_uint8(net.synthesis(ws[p * steps : (p + 1) * steps], noise=noise)))
    return np.stack(out)


def _as_tile_list(tiles, name: str = "tiles") -> list[np.ndarray]:
    if isinstance(tiles, torch.Tensor):
        tiles = tiles.detach().cpu().numpy()
    if isinstance(tiles, np.ndarray):
        if tiles.ndim == 3:
            raise ValueError(
                f"{name} must be (n, h, w, 3) or a list of (h, w, 3); got one image {tiles.shape}"
            )
        if tiles.ndim != 4 or tiles.shape[-1] != 3:
            raise ValueError(f"{name} must have shape (n, h, w, 3), got {tiles.shape}")
        tiles = list(tiles)
    out = []
    for i, t in enumerate(tiles):
        t = np.asarray(t)
        if t.ndim != 3 or t.shape[-1] != 3 or t.dtype != np.uint8:
            raise ValueError(f"{name}[{i}] must be a uint8 (h, w, 3) RGB array, got {t.dtype} {t.shape}")
        if min(t.shape[:2]) < 1:
            raise ValueError(f"{name}[{i}] is empty: {t.shape}")
        out.append(t)
    return out


def _resample(t: np.ndarray, scale: float) -> torch.Tensor:
    """(h, w, 3) uint8 -> (3, h', w') float in [0, 1] at ``scale`` x the size: area averaging to shrink (an
    exact box mean for integer factors), bilinear to enlarge."""
    x = torch.from_numpy(np.ascontiguousarray(t)).permute(2, 0, 1).float()[None] / 255.0
    if abs(scale - 1.0) > 1e-6:
        h, w = (max(1, round(s * scale)) for s in t.shape[:2])
        if scale < 1:
            x = F.interpolate(x, size=(h, w), mode="area")
        else:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x[0].clamp(0, 1)


def _starts(n: int, s: int) -> list[int]:
    k = max(1, math.ceil(n / s))
    return [round(i * (n - s) / (k - 1)) for i in range(k)] if k > 1 else [0]


def _windows(x: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, h, w) -> windows (k, 3, s, s) covering it and their tissue fractions (k,)."""
    _, h, w = x.shape
    ph, pw = max(0, s - h), max(0, s - w)
    if ph or pw:  # smaller than a window: reflect-pad (repeatedly, for very small tiles), centred
        while ph or pw:
            a, b = min(ph, x.shape[1] - 1), min(pw, x.shape[2] - 1)
            if a == 0 and b == 0:  # a 1-px side cannot be reflected: replicate
                x = F.pad(x[None], (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")[0]
                break
            x = F.pad(x[None], (b // 2, b - b // 2, a // 2, a - a // 2), mode="reflect")[0]
            ph, pw = max(0, s - x.shape[1]), max(0, s - x.shape[2])
        h, w = x.shape[1:]
    wins = torch.stack([x[:, r : r + s, c : c + s] for r in _starts(h, s) for c in _starts(w, s)])
    glass = (wins * 255).amin(1) >= 220  # models.tissue_pixels, on floats
    return wins, 1.0 - glass.flatten(1).float().mean(1)


@torch.no_grad()
def embed_tiles(tiles, *, mpp: float, model="pathgan_encoder", batch: int = 256) -> np.ndarray:
    """PathologyGAN encoder latents (w) of real tissue tiles.

    Parameters
    ----------
    tiles : (n, h, w, 3) uint8 array / tensor, or a list of (h_i, w_i, 3) uint8 arrays
        RGB tiles of any size.
    mpp : float
        Their microns per pixel (all tiles alike); they are resampled to the encoder's (0.5 for the shipped
        one). Tiles larger than the encoder's window are covered by windows whose latents are averaged
        (over the windows with >= 70 % tissue, else all); smaller ones are reflect-padded (module docstring).
    model : str, Path or Model
        A ``tile-embedding`` model (default ``"pathgan_encoder"``).
    batch : int
        Windows per forward pass.

    Returns
    -------
    (n, d) float32
        d = the latent width (200).

    Examples
    --------
    >>> z = embed_tiles(rgb_tiles, mpp=0.25)  # doctest: +SKIP
    """
    if not (isinstance(mpp, int | float) and mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"mpp must be a positive number of microns per pixel, got {mpp!r}")
    items = _as_tile_list(tiles)
    m = _load(model, "tile-embedding")
    net, s, scale = m.net, m.net.size, float(mpp) / m.mpp
    wins, owner, weight = [], [], []
    for i, t in enumerate(items):
        w, tf = _windows(_resample(t, scale), s)
        keep = tf >= MIN_TISSUE
        wins.append(w)
        owner.append(torch.full((len(w),), i))
        weight.append(keep.float() if keep.any() else torch.ones(len(w)))
    if not items:
        return np.zeros((0, net.w_dim), np.float32)
    allw, own, wt = torch.cat(wins), torch.cat(owner), torch.cat(weight)
    lat = torch.cat([net(allw[k : k + batch].to(m.device)).float().cpu() for k in range(0, len(allw), batch)])
    tot = torch.zeros(len(items), lat.shape[1]).index_add_(0, own, lat * wt[:, None])
    den = torch.zeros(len(items)).index_add_(0, own, wt)
    return (tot / den[:, None]).numpy().astype(np.float32)


TILE_FEATURE_NAMES = (
    [f"{c}_mean" for c in "rgb"] + [f"{c}_std" for c in "rgb"]
    + ["h_od_mean", "e_od_mean", "h_od_std", "e_od_std", "grad_1px", "grad_2px"]
    + [f"grey_hist_{k}" for k in range(8)]
)  # fmt: skip


@torch.no_grad()
def tile_features(tiles) -> np.ndarray:
    """Hand-crafted colour/texture features of tiles (n, h, w, 3) uint8 -> (n, 20) float32
    (:data:`TILE_FEATURE_NAMES`): RGB mean/std, haematoxylin/eosin optical density mean/std
    (:func:`nucfast.stain.rgb_to_hed`), mean gradient magnitude at 1 and 2 px, 8-bin grey histogram."""
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(tiles))).permute(0, 3, 1, 2).float() / 255.0
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"tiles must have shape (n, h, w, 3), got {tuple(np.asarray(tiles).shape)}")
    hed = rgb_to_hed(x.double()).float()
    g = x.mean(1)
    feats = [x.mean((2, 3)), x.std((2, 3)), hed[:, :2].mean((2, 3)), hed[:, :2].std((2, 3))]
    for d in (1, 2):
        gy, gx = g[:, d:, :-d] - g[:, :-d, :-d], g[:, :-d, d:] - g[:, :-d, :-d]
        feats.append(torch.sqrt(gy**2 + gx**2).mean((1, 2))[:, None])
    idx = (g * 8).long().clamp(0, 7).flatten(1)
    feats.append(F.one_hot(idx, 8).float().mean(1))
    return torch.cat(feats, 1).numpy().astype(np.float32)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (n, d) and (m, d):
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)`` (float64, symmetric eigen-solves)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (n >= 2, d) feature sets of one width, got {a.shape} and {b.shape}")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    ev, vec = np.linalg.eigh(sa)
    ha = (vec * np.sqrt(np.clip(ev, 0, None))) @ vec.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(ha @ sb @ ha), 0, None)).sum()
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * cross)


def _grid(tiles: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
    n, h, w, _ = tiles.shape
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = t
    return out


def _write_png(path, img: np.ndarray, zoom: int) -> Path:
    from PIL import Image  # optional dependency (the slide extra), not needed to import nucfast

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if zoom > 1:
        img = img.repeat(zoom, 0).repeat(zoom, 1)
    Image.fromarray(img).save(path)
    return path


def write_sample_grid(
    path, n: int = 64, *, seed: int = 0, cols: int = 8, zoom: int = 2, model="pathgan"
) -> Path:
    """A PNG grid of ``n`` generated tiles (nearest-neighbour ``zoom``)."""
    tiles, _ = sample_tiles(n, seed=seed, model=model)
    return _write_png(path, _grid(tiles, cols), zoom)


def write_interpolation_strip(
    path, steps: int = 8, *, pairs: int = 4, seed: int = 0, mapping: bool = True, zoom: int = 2,
    model="pathgan",
) -> Path:  # fmt: skip
    """A PNG of ``pairs`` rows, each ``steps`` tiles along a linear latent path
    (:func:`interpolate_latents`)."""
    strips = interpolate_latents(steps, seed=seed, pairs=pairs, mapping=mapping, model=model)
    return _write_png(path, _grid(strips.reshape((-1,) + strips.shape[2:]), steps), zoom)
