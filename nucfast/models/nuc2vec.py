"""Nuc2Vec (Feng, Vanderbilt & Fuchs, MIDL 2021): one L2-normalised vector per nucleus, learnt without labels.

The network maps a patch centred on a nucleus centroid to a 128-d unit vector (REFERENCE.md section 6):
a ResNet trunk, global average pooling, an MLP head ``Linear(c, hidden) - ReLU - Linear(hidden, 128)`` and
L2 normalisation. Two configurations of one design (:func:`build_nuc2vec`):

``nuc2vec`` / ``nuc2vec_lite`` (what ships, trained here)
    Input 64 x 64 px at 0.25 um/px: the paper's 16 um window at its native resolution, without the
    authors' 2x nearest-neighbour upsampling to 128 (it adds no information and costs 4x the compute).
    Stem conv3x3 stride 2 (24 channels, 32 x 32), then four residual stages of one basic block each,
    stride 2, widths 32/64/128/256 (16, 8, 4, 2 px), head 256-256-128: 1.3 M parameters, 17 MMAC per
    nucleus. Why: the issue asks for >= 1,000 nuclei/s on one CPU thread; ResNet-34 on 128 px is
    ~1.2 GMAC per nucleus (70x more) and manages ~30 nuclei/s here. The stride-2 stem still sees every
    0.25 um pixel (the chromatin texture); nuclei are 5-10 um (20-40 px) across, so the 2 px last stage
    has a receptive field of the whole window. It also trains: training runs on a shared CPU core for
    about an hour, where ResNet-34 would see a few hundred batches.
``nuc2vec_paper`` (untrained)
    The authors' network: torchvision ResNet-34 topology (7x7 stride-2 stem + max-pool, basic blocks
    [3, 4, 6, 3], widths 64-512), head 512-512-128, input 128 px (a 64 px window upsampled 2x, nearest).

Input: float RGB in [0, 1], (N, 3, size, size); the ImageNet mean/std normalisation is inside the network
(so exported graphs take [0, 1] like every nucfast model). Output: (N, dim) float, unit L2 norm.

Patches (:func:`extract_patches`) are cut around the centroids of a label image in one vectorised gather;
pixels outside the image take the ImageNet mean colour (0 after normalisation), so a nucleus at the
border sees "nothing" rather than a mirrored neighbour. :func:`embed_labels` is what
``nucfast.embed_nuclei`` and the slide engine call on one image or tile.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._measure import region_stats
from ._registry import Kind, register_kind

__all__ = [
    "Nuc2Vec",
    "build_nuc2vec",
    "NUC2VEC_CONFIGS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WINDOW_UM",
    "extract_patches",
    "nucleus_centroids",
    "embed_labels",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The field of view of every patch: 64 px at 0.25 um/px (the authors' inference window at 40x).
WINDOW_UM = 16.0


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (two 3x3 convs, BN, identity or 1x1-conv shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + idt, inplace=True)


class Nuc2Vec(nn.Module):
    """ResNet trunk + MLP head + L2 normalisation.

    Parameters
    ----------
    size : int
        Input patch side in pixels (the window is :data:`WINDOW_UM` wide; ``size`` px span it).
    upsample : int
        The patch is cut at ``size // upsample`` px per :data:`WINDOW_UM` and enlarged ``upsample`` times
        (nearest) before the network (the authors: 2, 64 -> 128).
    stem_width, stem_kernel, stem_stride, maxpool
        Stem convolution (+ optional 3x3 stride-2 max-pool).
    blocks, widths : 4 ints each
        Basic blocks and channels of the four stages (stage 1 stride ``1`` after a max-pool, else 2).
    hidden, dim : int
        MLP head ``Linear(widths[-1], hidden) - ReLU - Linear(hidden, dim)``.
    """

    def __init__(
        self,
        *,
        size: int = 64,
        upsample: int = 1,
        stem_width: int = 24,
        stem_kernel: int = 3,
        stem_stride: int = 2,
        maxpool: bool = False,
        blocks: Sequence[int] = (1, 1, 1, 1),
        widths: Sequence[int] = (32, 64, 128, 256),
        hidden: int = 256,
        dim: int = 128,
    ):
        super().__init__()
        if len(blocks) != 4 or len(widths) != 4:
            raise ValueError("blocks and widths must have 4 entries (one per stage)")
        if size < 8 or upsample < 1 or size % upsample:
            raise ValueError(
                f"size must be >= 8 and a multiple of upsample, got size={size} upsample={upsample}"
            )
        self.config = dict(
            size=int(size),
            upsample=int(upsample),
            stem_width=int(stem_width),
            stem_kernel=int(stem_kernel),
            stem_stride=int(stem_stride),
            maxpool=bool(maxpool),
            blocks=[int(b) for b in blocks],
            widths=[int(w) for w in widths],
            hidden=int(hidden),
            dim=int(dim),
        )
        self.size, self.upsample, self.dim = int(size), int(upsample), int(dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, stem_width, stem_kernel, stem_stride, stem_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if maxpool else nn.Identity()
        stages, cin = [], stem_width
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            first = 1 if (i == 0 and maxpool) else 2
            stages.append(
                nn.Sequential(
                    *[BasicBlock(cin if j == 0 else w, w, first if j == 0 else 1) for j in range(n)]
                )
            )
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.head = nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def window(self) -> int:
        """Side in px (at 0.25 um/px) of the window cut around each centroid (before ``upsample``)."""
        return self.size // self.upsample

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled trunk features (N, widths[-1]) before the MLP head (for linear probes)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must have shape (N, 3, H, W), got {tuple(x.shape)}")
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Head output before the L2 normalisation, (N, dim)."""
        return self.head(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, dim), unit L2 norm, of patches (N, 3, window, window) in [0, 1]."""
        return F.normalize(self.project(x).float(), dim=1)


NUC2VEC_CONFIGS: dict[str, dict] = {
    "lite": {},
    "paper": dict(
        size=128,
        upsample=2,
        stem_width=64,
        stem_kernel=7,
        stem_stride=2,
        maxpool=True,
        blocks=[3, 4, 6, 3],
        widths=[64, 128, 256, 512],
        hidden=512,
        dim=128,
    ),
}


def build_nuc2vec(config: dict | None = None) -> Nuc2Vec:
    """A network from a stored ``config``: constructor arguments, or ``{"arch": "lite" | "paper"}``."""
    cfg = dict(config or {})
    arch = cfg.pop("arch", "lite")
    if arch not in NUC2VEC_CONFIGS:
        raise ValueError(f"nuc2vec arch must be one of {sorted(NUC2VEC_CONFIGS)}, got {arch!r}")
    return Nuc2Vec(**{**NUC2VEC_CONFIGS[arch], **cfg})


# --------------------------------------------------------------------------------------------- patches
def nucleus_centroids(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids, centroids, bboxes)`` of a label image (H, W): the label values present (ascending, int64),
    their centroids (n, 2) float64 (row, col) and bounding boxes (n, 4) int64 (min_row, min_col, max_row + 1,
    max_col + 1), on ``labels``' device (:func:`nucfast.region_stats`)."""
    st = region_stats(labels)
    ids = st["label"].to(torch.int64)
    cen = torch.stack([st["centroid-0"], st["centroid-1"]], 1).to(torch.float64)
    box = torch.stack([st[f"bbox-{i}"] for i in range(4)], 1).to(torch.int64)
    return ids, cen, box


def extract_patches(image: torch.Tensor, centres: torch.Tensor, window: int, *, fill=None) -> torch.Tensor:
    """Cut ``window`` x ``window`` patches centred on ``centres`` in one gather.

    Parameters
    ----------
    image : (C, H, W) tensor (any dtype)
    centres : (n, 2) tensor, (row, col) in pixels; the patch covers rows
        ``round(r) - window // 2 .. + window`` (so an odd ``window`` is centred on the pixel, an even one
        has the centre pixel at index ``window // 2``).
    window : int
    fill : (C,) values for pixels outside the image (default 0).

    Returns
    -------
    (n, C, window, window) tensor, ``image``'s dtype and device.
    """
    c, h, w = image.shape
    n = centres.shape[0]
    half = window // 2
    top = torch.round(centres.to(torch.float64)).to(torch.int64) - half  # (n, 2)
    off = torch.arange(window, device=image.device)
    rows = top[:, 0, None] + off  # (n, window)
    cols = top[:, 1, None] + off
    pad = window  # every row/col index is within [-window, H + window)
    padded = image.new_zeros((c, h + 2 * pad, w + 2 * pad))
    if fill is not None:
        padded[:] = torch.as_tensor(fill, dtype=image.dtype, device=image.device).view(c, 1, 1)
    padded[:, pad : pad + h, pad : pad + w] = image
    rows = (rows + pad).clamp_(0, h + 2 * pad - 1)
    cols = (cols + pad).clamp_(0, w + 2 * pad - 1)
    flat = padded.reshape(c, -1)
    idx = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).reshape(-1)
    return flat[:, idx].reshape(c, n, window, window).transpose(0, 1)


@torch.no_grad()
def embed_labels(
    net: Nuc2Vec,
    rgb: torch.Tensor,
    labels: torch.Tensor,
    *,
    mpp: float = 0.25,
    batch: int = 512,
    bf16: bool = False,
    only: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of every nucleus of one image or tile (``only``: of these label values).

    ``rgb`` (3, H, W) uint8 or float in [0, 1] and ``labels`` (H, W) on the network's device; ``mpp``: the
    image's resolution (um/px): the window of :data:`WINDOW_UM` is cut at ``mpp`` and resampled to the
    network's 0.25 um/px (bilinear, antialiased when shrinking). Returns ``(ids int64 (n,), embeddings
    float32 (n, dim))``, ids ascending. Runs in batches of ``batch`` nuclei; ``bf16``: CPU autocast.
    ``only`` (int tensor): embed just these labels (a slide tile's own nuclei, not its halo's); each must
    be present in ``labels``."""
    ids, cen, _ = nucleus_centroids(labels)
    if only is not None:
        want = torch.unique(only.to(device=ids.device, dtype=torch.int64))
        pos = torch.searchsorted(ids, want)
        ok = pos < ids.numel()
        ok[ok.clone()] = ids[pos[ok]] == want[ok]
        if not bool(ok.all()):
            raise ValueError(f"ids not present in labels: {want[~ok][:10].tolist()}")
        ids, cen = ids[pos], cen[pos]
    out = torch.empty((ids.numel(), net.dim), dtype=torch.float32, device=rgb.device)
    if ids.numel() == 0:
        return ids, out
    target = net.window
    win = int(round(target * 0.25 / mpp)) if mpp != 0.25 else target
    if win < 4:
        raise ValueError(f"mpp={mpp}: a {WINDOW_UM:g} um window would be {win} px, too coarse to embed")
    is_u8 = rgb.dtype == torch.uint8
    # pixels outside the image take the ImageNet mean colour (0 after the network's normalisation)
    # (rounded to uint8 values, so uint8 and float images of the same pixels agree)
    fill = [round(m * 255) / (1 if is_u8 else 255) for m in IMAGENET_MEAN]
    for s in range(0, ids.numel(), batch):
        p = extract_patches(rgb, cen[s : s + batch], win, fill=fill)
        p = p.float() / 255.0 if is_u8 else p.float()
        if win != target:
            p = F.interpolate(
                p, size=(target, target), mode="bilinear", align_corners=False, antialias=win > target
            )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and p.device.type == "cpu"):
            out[s : s + batch] = net(p.contiguous(memory_format=torch.channels_last)).float()
    return ids, F.normalize(out, dim=1)


register_kind(
    Kind(
        "nuc2vec",
        task="nucleus-embedding",
        build=build_nuc2vec,
        mpp=0.25,
        # a nucleus whose centroid lies in a tile's core needs WINDOW_UM / 2 of context on each side
        halo=32,
        cpu_bf16=True,
    )
)
