"""Synthetic H&E whole-slide images with known nuclei.

A :class:`SyntheticSlide` is a pure function of ``(seed, row, col)``: any region renders to the same pixels
and the same instance labels whatever the region's origin or size, so slides of any size are written tile
by tile (never held in memory) and the ground truth of any region can be re-rendered for accuracy checks.

Model (optical density, Beer-Lambert): ``RGB = 255 exp(-(c_H h + c_E e + c_bg))`` with the Ruifrok-Johnston
haematoxylin/eosin vectors.

- Tissue: a low-frequency value-noise field; where it is below a threshold the slide is glass
  (near-white, faint noise), with a soft edge.
- Stroma: eosin concentration with multi-octave value-noise texture, faint haematoxylin.
- Nuclei: ellipses (semi-axes 2.5-5.5 um, aspect 0.55-1, any orientation), dark haematoxylin with
  chromatin texture, a darker rim; some spawn a touching neighbour. Nuclei are generated per 128-px block
  from a generator seeded by ``(seed, block_row, block_col)``; overlaps are painted in increasing id
  (later wins), the instance-label image is exactly what is painted.
- Per-pixel noise from an integer hash of the global pixel position.

``write_synthetic_slide`` writes an Aperio-style tiled pyramidal TIFF (JPEG or deflate, ``MPP`` in the
ImageDescription) plus the ground truth: the level-0 label image as ``.npy`` (uint32, written through a
memory map) and the nucleus list as ``.npz``.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SyntheticSlide", "write_synthetic_slide"]

# Ruifrok & Johnston H&E(DAB) optical-density vectors (rows, normalised), as in skimage.color.
_H = np.array([0.65, 0.70, 0.29])
_E = np.array([0.07, 0.99, 0.11])
_H = _H / np.linalg.norm(_H)
_E = _E / np.linalg.norm(_E)

_BLOCK = 128  # nucleus-generation block (level-0 pixels)
_MAX_PER_BLOCK = 32


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64, copy=True)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def _hash01(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) float32 from integer coordinates (broadcasting)."""
    with np.errstate(over="ignore"):
        k = (
            np.asarray(i, np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            + np.asarray(j, np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
            + np.uint64(seed & 0xFFFFFFFFFFFF) * np.uint64(0x165667B19E3779F9)
        )
    return (_mix64(k) >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)


def _value_noise(r0: int, c0: int, h: int, w: int, cell: float, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1) at global pixel positions, lattice spacing ``cell`` pixels."""
    rows = (r0 + np.arange(h)) / cell
    cols = (c0 + np.arange(w)) / cell
    gi = np.floor(rows).astype(np.int64)
    gj = np.floor(cols).astype(np.int64)
    fy = (rows - gi).astype(np.float32)
    fx = (cols - gj).astype(np.float32)
    fy = fy * fy * (3 - 2 * fy)
    fx = fx * fx * (3 - 2 * fx)
    ui = np.arange(gi.min(), gi.max() + 2)
    uj = np.arange(gj.min(), gj.max() + 2)
    lat = _hash01(ui[:, None], uj[None, :], seed)
    iy = gi - ui[0]
    ix = gj - uj[0]
    top = lat[iy][:, ix] * (1 - fx) + lat[iy][:, ix + 1] * fx
    bot = lat[iy + 1][:, ix] * (1 - fx) + lat[iy + 1][:, ix + 1] * fx
    return top * (1 - fy)[:, None] + bot * fy[:, None]


@dataclass(frozen=True)
class SyntheticSlide:
    """A deterministic synthetic H&E slide of ``shape = (height, width)`` level-0 pixels.

    Parameters
    ----------
    shape : (int, int)
    mpp : float
        Microns per pixel (nucleus sizes are physical, so they scale with it).
    seed : int
    density : float
        Mean nuclei per 10,000 um^2 of tissue (default 45).
    tissue_fraction : float
        Approximate fraction of the slide covered by tissue (default 0.6).
    """

    shape: tuple[int, int]
    mpp: float = 0.25
    seed: int = 0
    density: float = 45.0
    tissue_fraction: float = 0.6

    def __post_init__(self):
        h, w = self.shape
        if h <= 0 or w <= 0:
            raise ValueError(f"shape must be positive, got {self.shape}")
        if not self.mpp > 0:
            raise ValueError(f"mpp must be positive, got {self.mpp}")

    # -- fields ------------------------------------------------------------------------------
    @property
    def _tissue_cell(self) -> float:
        return 400.0 / self.mpp  # ~400 um islands

    def tissue_field(self, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        """Tissue indicator in [0, 1] (0 = glass) at global positions; soft edge ~10 um."""
        n = 0.65 * _value_noise(r0, c0, h, w, self._tissue_cell, self.seed * 7 + 1) + 0.35 * _value_noise(
            r0, c0, h, w, self._tissue_cell / 3, self.seed * 7 + 2
        )
        thr = 1.0 - self.tissue_fraction
        thr = 0.5 + (thr - 0.5) * 0.5  # the noise sum concentrates around 0.5
        edge = 0.02
        return np.clip((n - thr) / edge + 0.5, 0.0, 1.0)

    # -- nuclei ------------------------------------------------------------------------------
    def _max_radius_px(self) -> float:
        return 5.5 / self.mpp

    def block_nuclei(self, br: int, bc: int) -> np.ndarray:
        """Nuclei generated by block (br, bc): structured array (id, row, col, a, b, theta, dark, tex)."""
        dt = [
            ("id", np.int64),
            ("row", np.float64),
            ("col", np.float64),
            ("a", np.float64),
            ("b", np.float64),
            ("theta", np.float64),
            ("dark", np.float64),
            ("tex", np.int64),
        ]
        H, W = self.shape
        nbr, nbc = -(-H // _BLOCK), -(-W // _BLOCK)
        if not (0 <= br < nbr and 0 <= bc < nbc):
            return np.zeros(0, dt)
        rng = np.random.default_rng([self.seed, 0x5EED, br, bc])
        area_um2 = (_BLOCK * self.mpp) ** 2
        lam = self.density * area_um2 / 1e4
        n = min(int(rng.poisson(lam)), _MAX_PER_BLOCK // 2)
        out = []
        for _ in range(n):
            r = br * _BLOCK + rng.uniform(0, _BLOCK)
            c = bc * _BLOCK + rng.uniform(0, _BLOCK)
            a = rng.uniform(2.5, 5.5) / self.mpp
            b = a * rng.uniform(0.55, 1.0)
            th = rng.uniform(0, np.pi)
            dark = rng.uniform(0.75, 1.15)
            tex = int(rng.integers(0, 2**31))
            touch = rng.uniform() < 0.2
            cand = [(r, c, a, b, th, dark, tex)]
            if touch:  # a touching neighbour along a random direction
                a2 = rng.uniform(2.5, 5.0) / self.mpp
                b2 = a2 * rng.uniform(0.6, 1.0)
                phi = rng.uniform(0, 2 * np.pi)
                d = 0.92 * (b + b2)
                cand.append(
                    (
                        r + d * np.sin(phi),
                        c + d * np.cos(phi),
                        a2,
                        b2,
                        phi,
                        rng.uniform(0.75, 1.15),
                        int(rng.integers(0, 2**31)),
                    )
                )
            for nr, nc, na, nb, nth, ndark, ntex in cand:
                if not (0 <= nr < H and 0 <= nc < W):
                    continue
                if float(self.tissue_field(int(nr), int(nc), 1, 1)[0, 0]) < 0.999:
                    continue
                # reject heavy overlap with this block's earlier nuclei (touching is allowed)
                ok = True
                for o in out:
                    dist = np.hypot(o[1] - nr, o[2] - nc)
                    if dist < 0.85 * (min(o[3], o[4]) + min(na, nb)):
                        ok = False
                        break
                if ok:
                    out.append((0, nr, nc, na, nb, nth, ndark, ntex))
        arr = np.array(out, dtype=dt)
        base = (br * nbc + bc) * _MAX_PER_BLOCK
        arr["id"] = base + 1 + np.arange(len(arr))
        return arr

    def nuclei_in(self, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        """All nuclei that may paint pixels of the region (sorted by id)."""
        m = int(np.ceil(self._max_radius_px())) + 1
        br0, br1 = (r0 - m) // _BLOCK, (r0 + h + m) // _BLOCK
        bc0, bc1 = (c0 - m) // _BLOCK, (c0 + w + m) // _BLOCK
        parts = [_cached_block(self, i, j) for i in range(br0, br1 + 1) for j in range(bc0, bc1 + 1)]
        arr = np.concatenate(parts) if parts else self.block_nuclei(-1, -1)
        return np.sort(arr, order="id")

    def nuclei(self) -> np.ndarray:
        """Every nucleus of the slide (structured array, see :meth:`block_nuclei`)."""
        return self.nuclei_in(0, 0, *self.shape)

    # -- rendering ---------------------------------------------------------------------------
    def render(self, r0: int, c0: int, h: int, w: int, *, labels: bool = True):
        """Render a region: ``(rgb uint8 (h, w, 3), labels uint32 (h, w) or None)``.

        Pixels outside the slide are glass-white and label 0.
        """
        H, W = self.shape
        tissue = self.tissue_field(r0, c0, h, w)
        tex1 = _value_noise(r0, c0, h, w, 24.0 / (self.mpp / 0.25), self.seed * 7 + 3)
        tex2 = _value_noise(r0, c0, h, w, 6.0 / (self.mpp / 0.25), self.seed * 7 + 4)
        fib = _value_noise(r0, c0, h, w * 1, 60.0 / (self.mpp / 0.25), self.seed * 7 + 5)
        cE = tissue * (0.26 + 0.30 * tex1 + 0.12 * tex2 + 0.2 * np.clip((fib - 0.45) / 0.2, 0, 1))
        cH = tissue * (0.04 + 0.05 * tex2)
        lab = np.zeros((h, w), np.uint32)
        nuc = self.nuclei_in(r0, c0, h, w)
        rows = np.arange(h)
        cols = np.arange(w)
        for n in nuc:
            a, b = n["a"], n["b"]
            ext = a + 1
            i0, i1 = max(int(np.floor(n["row"] - ext)) - r0, 0), min(int(np.ceil(n["row"] + ext)) - r0 + 1, h)
            j0, j1 = max(int(np.floor(n["col"] - ext)) - c0, 0), min(int(np.ceil(n["col"] + ext)) - c0 + 1, w)
            if i0 >= i1 or j0 >= j1:
                continue
            y = (rows[i0:i1] + r0)[:, None] - n["row"]
            x = (cols[j0:j1] + c0)[None, :] - n["col"]
            ct, st = np.cos(n["theta"]), np.sin(n["theta"])
            u = (x * ct + y * st) / a
            v = (-x * st + y * ct) / b
            rr = u * u + v * v
            inside = rr <= 1.0
            if not inside.any():
                continue
            lab[i0:i1, j0:j1][inside] = n["id"]
            chrom = _hash01(rows[i0:i1, None] + r0, cols[None, j0:j1] + c0, int(n["tex"]))
            rim = np.clip((rr - 0.6) / 0.4, 0, 1)
            val = n["dark"] * (0.85 + 0.25 * chrom + 0.25 * rim)
            sub_h = cH[i0:i1, j0:j1]
            sub_e = cE[i0:i1, j0:j1]
            sub_h[inside] = val[inside]
            sub_e[inside] = 0.12 + 0.05 * chrom[inside]
        if r0 < 0 or c0 < 0 or r0 + h > H or c0 + w > W:
            outside = np.ones((h, w), bool)
            outside[max(-r0, 0) : max(min(H - r0, h), 0), max(-c0, 0) : max(min(W - c0, w), 0)] = False
            cH[outside] = 0
            cE[outside] = 0
            lab[outside] = 0
        pix = _hash01(rows[:, None] + r0, cols[None, :] + c0, self.seed * 7 + 6) - 0.5
        od = cH[..., None] * _H + cE[..., None] * _E + (0.035 + 0.03 * pix)[..., None]
        rgb = np.clip(np.rint(250.0 * np.exp(-od)), 0, 255).astype(np.uint8)
        return rgb, (lab if labels else None)


@functools.lru_cache(maxsize=4096)
def _cached_block(slide: SyntheticSlide, br: int, bc: int) -> np.ndarray:
    return slide.block_nuclei(br, bc)


def _area_down(a: np.ndarray, k: int) -> np.ndarray:
    h, w = a.shape[:2]
    ph, pw = -(-h // k) * k, -(-w // k) * k
    if (ph, pw) != (h, w):
        a = np.pad(a, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    return a.reshape(ph // k, k, pw // k, k, -1).mean(axis=(1, 3))


def write_synthetic_slide(
    path,
    shape=(2048, 2048),
    *,
    mpp: float = 0.25,
    seed: int = 0,
    tile: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
    ground_truth: bool = True,
    density: float = 45.0,
    tissue_fraction: float = 0.6,
    period: int | None = None,
) -> dict:
    """Write a synthetic slide as an Aperio-style tiled pyramidal TIFF, tile row by tile row.

    Parameters
    ----------
    path : str or Path
        Output ``.tif``/``.svs``. Ground truth goes next to it: ``<stem>_labels.npy`` (uint32 level-0
        instance labels, memory-mapped while written) and ``<stem>_nuclei.npz``.
    shape : (height, width)
    mpp, seed, density, tissue_fraction : see :class:`SyntheticSlide`.
    tile : int
        TIFF tile size (multiple of 16).
    compression : {"jpeg", "deflate", "none"}
    ground_truth : bool
        Write the label image and nucleus list.
    period : int, optional
        Benchmarks of huge slides: repeat one rendered ``period`` x ``period`` patch (a multiple of
        ``tile``) instead of rendering every pixel, so a 40k x 40k slide is written in about a minute.
        Nuclei are cut at the period seams; no ground truth is written (``ground_truth`` must be False).

    Returns
    -------
    dict
        ``path``, ``labels`` (path or None), ``nuclei`` (path or None), ``shape``, ``mpp``, ``levels``
        (list of (height, width)), ``slide`` (the SyntheticSlide).
    """
    import tifffile

    if tile % 16:
        raise ValueError(f"tile must be a multiple of 16, got {tile}")
    if period is not None:
        if period <= 0 or period % tile:
            raise ValueError(f"period must be a positive multiple of tile ({tile}), got {period}")
        if ground_truth:
            raise ValueError("period=... writes no ground truth: pass ground_truth=False")
    comp = {"jpeg": "jpeg", "deflate": "zlib", "zlib": "zlib", "none": None}
    if compression not in comp:
        raise ValueError(f"compression must be one of jpeg, deflate, none; got {compression!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    syn = SyntheticSlide(
        tuple(int(v) for v in shape), mpp=mpp, seed=seed, density=density, tissue_fraction=tissue_fraction
    )
    H, W = syn.shape
    # pyramid: factors of 4 while the level is at least 256 px
    factors = []
    f = 4
    while max(H, W) // f >= 256 and f <= tile:
        factors.append(f)
        f *= 4
    lab_path = path.with_name(path.stem + "_labels.npy") if ground_truth else None
    nuc_path = path.with_name(path.stem + "_nuclei.npz") if ground_truth else None
    labels_mm = (
        np.lib.format.open_memmap(lab_path, mode="w+", dtype=np.uint32, shape=(H, W))
        if ground_truth
        else None
    )
    tmpdir = tempfile.mkdtemp(prefix="nucfast_syn_", dir=path.parent)
    lvl_mm = [
        np.lib.format.open_memmap(
            os.path.join(tmpdir, f"l{k}.npy"), mode="w+", dtype=np.uint8, shape=(-(-H // k), -(-W // k), 3)
        )
        for k in factors
    ]
    # metadata=None: no second ImageDescription (tifffile's JSON), which libtiff reports as unsorted tags
    kw = dict(
        dtype=np.uint8, tile=(tile, tile), compression=comp[compression], photometric="rgb", metadata=None
    )
    if compression == "jpeg":
        kw["compressionargs"] = {"level": quality}
        kw["subsampling"] = (1, 1)

    patch = syn.render(0, 0, period, period, labels=False)[0] if period else None

    def level0_tiles():
        for r in range(0, H, tile):
            if patch is not None:
                wpad = -(-W // tile) * tile
                rows = patch[r % period : r % period + tile]
                strip, lab = np.tile(rows, (1, -(-wpad // period), 1))[:, :wpad].copy(), None
            else:
                strip, lab = syn.render(r, 0, tile, -(-W // tile) * tile, labels=ground_truth)
            if ground_truth:
                labels_mm[r : min(r + tile, H)] = lab[: min(tile, H - r), :W]
            valid = strip[: min(tile, H - r), :W]
            for mm, k in zip(lvl_mm, factors, strict=True):
                d = _area_down(valid.astype(np.float32), k)
                mm[r // k : r // k + d.shape[0]] = np.clip(np.rint(d), 0, 255).astype(np.uint8)
            strip[min(tile, H - r) :, :] = 255
            strip[:, W:] = 255
            for c in range(0, W, tile):
                yield np.ascontiguousarray(strip[:, c : c + tile])

    def mm_tiles(a):
        h, w = a.shape[:2]
        for r in range(0, h, tile):
            for c in range(0, w, tile):
                t = np.full((tile, tile, 3), 255, np.uint8)
                s = a[r : r + tile, c : c + tile]
                t[: s.shape[0], : s.shape[1]] = s
                yield t

    desc = (
        f"Aperio Image Library vNUCFAST-synthetic\r\n{W}x{H} ({tile}x{tile}) "
        f"{'JPEG' if compression == 'jpeg' else compression}/RGB Q={quality}|AppMag = {round(10 / mpp)}"
        f"|MPP = {mpp:.4f}|Seed = {seed}"
    )
    try:
        with tifffile.TiffWriter(path, bigtiff=True) as tw:
            tw.write(level0_tiles(), shape=(H, W, 3), description=desc, **kw)
            for mm in lvl_mm:
                mm.flush()
                tw.write(mm_tiles(mm), shape=mm.shape, subfiletype=1, description="", **kw)
        if ground_truth:
            labels_mm.flush()
            nuc = syn.nuclei()
            present = np.zeros(len(nuc), bool)
            for r in range(0, H, 1024):  # bounded memory: strip by strip
                present |= np.isin(nuc["id"], np.unique(labels_mm[r : r + 1024]))
            np.savez(nuc_path, nuclei=nuc[present], shape=np.array([H, W]), mpp=np.array(mpp))
    finally:
        labels_mm = None
        lvl_mm.clear()
        for fn in os.listdir(tmpdir):
            os.remove(os.path.join(tmpdir, fn))
        os.rmdir(tmpdir)
    return {
        "path": path,
        "labels": lab_path,
        "nuclei": nuc_path,
        "shape": (H, W),
        "mpp": mpp,
        "levels": [(H, W)] + [(-(-H // k), -(-W // k)) for k in factors],
        "slide": syn,
    }
