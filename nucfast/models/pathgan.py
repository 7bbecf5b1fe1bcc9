"""PathologyGAN (Claudio Quiros, Murray-Smith & Yuan, MIDL 2020; MELBA 2021) and its encoder (Quiros et al.
2020, MICCAI 2021): a generative model of H&E tissue tiles and a tile representation in its latent space.

Three networks, three kinds of the one model layer (REFERENCE.md section 7):

``pathgan-generator`` (task ``tile-generator``), :class:`PathGANGenerator`
    z (``z_dim`` = 200, N(0, I)) -> mapping network (4 residual dense blocks + dense, ReLU) -> w; one w per
    style slot (the dense stage plus each up-block: 6 slots in the paper's configuration), style mixing
    with p = 0.5 during training (two w's, a random cut). Dense ``dense`` -> Dense 7x7x``start_channels``,
    each followed by conditional instance norm (CIN; the first over its features, the second per channel
    of the reshaped 7x7 map) and LeakyReLU 0.2; then per up-block: ResBlock
    (conv3x3 -> noise -> CIN -> LReLU, twice, + skip) -> SAGAN attention at ``attention_res`` (gamma init
    0) -> stride-2 fused 3x3 upsampling conv (:class:`FusedUpConv`) -> noise -> CIN -> LReLU; conv3x3 -> 3,
    sigmoid. Spectral norm on every conv / dense, orthogonal init.
    CIN: ``gamma = ReLU(dense(h)), beta = dense(h), h = ReLU(dense(w))`` of width ``(C + w_dim) // 2``.
    Noise: one N(0, 1) value per sample and *pixel*, times a learned per-channel weight (init 0), as in
    the authors' ``noise_input`` and StyleGAN. (A per-sample-and-channel constant, one reading of the
    description, would be removed exactly by the instance norm that follows it.)
``pathgan-discriminator`` (task ``tile-discriminator``), :class:`PathGANDiscriminator`
    The mirror: per block ResBlock (conv3x3 -> LReLU, twice, + skip) -> attention at ``attention_res`` ->
    stride-2 conv -> LReLU; Dense ``dense`` -> LReLU -> Dense 1 (a logit). Spectral norm, no
    normalisation.
``pathgan-encoder`` (task ``tile-embedding``), :class:`PathGANEncoder`
    Image -> w: per block ResBlock with instance norm -> attention at ``attention_res`` -> stride-2 conv ->
    instance norm -> LReLU; after each block a style vector (channel mean and std -> dense -> w_dim);
    Dense ``dense`` -> Dense w_dim, plus the sum of the style vectors. Trained on generated images only
    (``E(G(w)) ~ w``; :mod:`nucfast.train.pathgan`).

Two configurations (:data:`PATHGAN_CONFIGS`):

``paper``
    224 x 224 at 0.5 um/px (20x), five up-blocks 512/256/128/64/32, dense 1024, 7x7x256 start,
    attention at 28x28, encoder convs 64/128/256/512/512: 27.8 M (G) + 28.8 M (D) + 36.7 M (E) parameters
    (``tests/test_pathgan.py`` pins the counts on the meta device).
``cpu``
    What is trained here, on one CPU core shared with other jobs. Scaled: the tile side (224 -> 56 px at
    the same 0.5 um/px, so 28 um instead of 112 um of tissue: a few nuclei and their neighbourhood), hence
    three up-/down-blocks instead of five (7 -> 14 -> 28 -> 56; the 7x7 start and the style mixing stay;
    4 style slots instead of 6); attention at 14x14 instead of 28x28 (the same place relative to the tile,
    1/4 of the side; at 28x28 the attention's softmax and two batched matmuls were two thirds of the
    discriminator's forward time); widths G 64/32/16 (start 7x7x128), D 16/32/64, E 32/64/128, dense 256.
    Kept: z and w 200-d, the mapping network, CIN, noise, spectral norm, orthogonal init, the loss.
    Why, measured on this machine (one thread): a discriminator step (RaGAN + gradient penalty) of the
    paper's networks takes 2.8 s for 2 images (1.4 s per image), the CPU-sized one 0.27 CPU-s for 16
    (0.017 s per image, 80x less), so in an hour the GAN sees ~10^5 images instead of ~2,500.
    Parameters: 3.15 M (G, most in the mapping network and the first dense layers) + 0.85 M (D) + 1.94 M (E).

Pixels are float RGB in [0, 1] (N, 3, H, W), both in and out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from ._registry import Kind, register_kind

__all__ = [
    "PATHGAN_CONFIGS",
    "PathGANGenerator",
    "PathGANDiscriminator",
    "PathGANEncoder",
    "build_pathgan",
    "pathgan_config",
    "without_spectral_norm",
]


_SPECTRAL_NORM = [True]  # False only inside without_spectral_norm's build


def _sn(m: nn.Module, use: bool = True) -> nn.Module:
    """Orthogonal init + spectral norm. On the meta device (parameter counts before allocating) neither: there
    is nothing to initialise, spectral norm adds buffers only, and its 15 initial power iterations through
    meta decompositions took seconds."""
    if m.weight.is_meta:
        return m
    nn.init.orthogonal_(m.weight)
    if m.bias is not None:
        nn.init.zeros_(m.bias)
    return spectral_norm(m) if use and _SPECTRAL_NORM[0] else m


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class CondInstanceNorm(nn.Module):
    """Conditional instance norm: ``IN(x) * ReLU(dense(h)) + dense(h)``, ``h = ReLU(dense(w))``."""

    def __init__(self, channels: int, w_dim: int, sn: bool = True):
        super().__init__()
        hidden = (channels + w_dim) // 2
        self.hidden = _sn(nn.Linear(w_dim, hidden), sn)
        self.gamma = _sn(nn.Linear(hidden, channels), sn)
        self.beta = _sn(nn.Linear(hidden, channels), sn)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.hidden(w))
        g, b = F.relu(self.gamma(h)), self.beta(h)
        if x.ndim == 2:  # dense stage: normalise over the features
            xn = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5)
            return xn * g + b
        # F.instance_norm written out: the same numbers, and it exports to ONNX after a reshape
        mu, var = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * g[..., None, None] + b[..., None, None]


class NoiseInput(nn.Module):
    """``x + weight_c * n``, n ~ N(0, 1) per sample and pixel (shared by the channels); weight init 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.weight[None, :, None, None] * noise


class SelfAttention(nn.Module):
    """SAGAN attention: f, g 1x1 convs to C/8, h to C; ``x + gamma * h softmax(f^T g)``, gamma init 0."""

    def __init__(self, channels: int, sn: bool = True):
        super().__init__()
        c8 = max(channels // 8, 1)
        self.f = _sn(nn.Conv2d(channels, c8, 1), sn)
        self.g = _sn(nn.Conv2d(channels, c8, 1), sn)
        self.h = _sn(nn.Conv2d(channels, channels, 1), sn)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, hh, ww = x.shape
        f = self.f(x).flatten(2)  # (N, C/8, HW)
        g = self.g(x).flatten(2)
        att = torch.softmax(torch.bmm(f.transpose(1, 2), g), dim=-1)  # (N, HW, HW): row i attends over j
        o = torch.bmm(self.h(x).flatten(2), att.transpose(1, 2)).view(n, c, hh, ww)
        return x + self.gamma * o


class FusedUpConv(nn.Module):
    """Stride-2 upsampling by a "fused" 3x3 transposed convolution (StyleGAN's ``upscale2d_conv2d``, used by
    the authors): the 3x3 kernel is padded to 4x4 and summed over its four 1-px shifts, so every output
    pixel gets the same number of taps (nearest x2 upsampling then a 3x3 conv, in one op): no checkerboard,
    which a plain 3x3 stride-2 transposed convolution showed here after a few hundred steps."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _sn(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():  # the same function as ops the exporter knows the shapes of
            up = F.interpolate(x, scale_factor=2, mode="nearest")
            return F.conv2d(up, self.conv.weight.flip(2, 3).transpose(0, 1), self.conv.bias, padding=1)
        w = F.pad(self.conv.weight, (1, 1, 1, 1))
        w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
        return F.conv_transpose2d(x, w, self.conv.bias, stride=2, padding=1)


class GenResBlock(nn.Module):
    def __init__(self, c: int, w_dim: int):
        super().__init__()
        self.conv1, self.conv2 = _sn(nn.Conv2d(c, c, 3, padding=1)), _sn(nn.Conv2d(c, c, 3, padding=1))
        self.noise1, self.noise2 = NoiseInput(c), NoiseInput(c)
        self.cin1, self.cin2 = CondInstanceNorm(c, w_dim), CondInstanceNorm(c, w_dim)

    def forward(self, x, w):
        y = _lrelu(self.cin1(self.noise1(self.conv1(x)), w))
        y = _lrelu(self.cin2(self.noise2(self.conv2(y)), w))
        return x + y


class MappingNetwork(nn.Module):
    """4 residual dense blocks (dense -> ReLU -> dense, + skip, ReLU) + dense: z -> w."""

    def __init__(self, z_dim: int, w_dim: int, blocks: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList([_sn(nn.Linear(z_dim, z_dim)), _sn(nn.Linear(z_dim, z_dim))]) for _ in range(blocks)
        )
        self.out = _sn(nn.Linear(z_dim, w_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for a, b in self.blocks:
            h = F.relu(h + b(F.relu(a(h))))
        return self.out(h)


def _check_layout(size: int, start: int, channels: Sequence[int], attention_res: int) -> None:
    if start * 2 ** len(channels) != size:
        raise ValueError(
            f"size {size} must be start {start} x 2^{len(channels)} (one doubling per entry of channels)"
        )
    res = {start * 2**i for i in range(len(channels))}
    if attention_res and attention_res not in res:
        raise ValueError(f"attention_res {attention_res} must be one of the block resolutions {sorted(res)}")


class PathGANGenerator(nn.Module):
    """z or w -> tile (N, 3, size, size) in [0, 1]. See the module docstring."""

    def __init__(
        self,
        *,
        size: int = 224,
        z_dim: int = 200,
        w_dim: int = 200,
        dense: int = 1024,
        start: int = 7,
        start_channels: int = 256,
        channels: Sequence[int] = (512, 256, 128, 64, 32),
        attention_res: int = 28,
        mapping_blocks: int = 4,
        mpp: float = 0.5,
    ):
        super().__init__()
        _check_layout(size, start, channels, attention_res)
        self.config = dict(
            size=size, z_dim=z_dim, w_dim=w_dim, dense=dense, start=start, start_channels=start_channels,
            channels=list(channels), attention_res=attention_res, mapping_blocks=mapping_blocks, mpp=mpp,
        )  # fmt: skip
        self.size, self.z_dim, self.w_dim, self.start, self.start_channels = (
            size,
            z_dim,
            w_dim,
            start,
            start_channels,
        )
        self.n_styles = 1 + len(channels)
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_blocks)
        self.dense1 = _sn(nn.Linear(w_dim, dense))
        self.cin_d1 = CondInstanceNorm(dense, w_dim)
        self.dense2 = _sn(nn.Linear(dense, start * start * start_channels))
        self.cin_d2 = CondInstanceNorm(start_channels, w_dim)  # on the (C, 7, 7) map, per channel
        self.res = nn.ModuleList()
        self.att = nn.ModuleList()
        self.up = nn.ModuleList()
        self.up_noise = nn.ModuleList()
        self.up_cin = nn.ModuleList()
        c, r = start_channels, start
        for co in channels:
            self.res.append(GenResBlock(c, w_dim))
            self.att.append(SelfAttention(c) if r == attention_res else nn.Identity())
            self.up.append(FusedUpConv(c, co))
            self.up_noise.append(NoiseInput(co))
            self.up_cin.append(CondInstanceNorm(co, w_dim))
            c, r = co, r * 2
        self.to_rgb = _sn(nn.Conv2d(c, 3, 3, padding=1))

    def styles(self, z: torch.Tensor, *, mix_prob: float = 0.0, generator: torch.Generator | None = None):
        """Per-slot styles (N, n_styles, w_dim) from z (N, z_dim); with probability ``mix_prob`` (per batch)
        a second z's w takes the slots from a random cut on (style mixing). Returns ``(ws, mixed)``."""
        w = self.mapping(z)
        ws = w[:, None].expand(-1, self.n_styles, -1)
        mixed = mix_prob > 0 and float(torch.rand((), generator=generator)) < mix_prob
        if mixed:
            w2 = self.mapping(torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype))
            cut = int(torch.randint(1, self.n_styles, (), generator=generator))
            ws = torch.cat([ws[:, :cut], w2[:, None].expand(-1, self.n_styles - cut, -1)], 1)
        return ws, mixed

    def synthesis(self, ws: torch.Tensor, *, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Tiles from styles ``ws``: (N, w_dim) (one w for every slot) or (N, n_styles, w_dim).
        ``noise``: optional per-pixel noise maps in forward order (:meth:`noise_shapes`), else fresh
        N(0, 1)."""
        if ws.ndim == 2:
            ws = ws[:, None].expand(-1, self.n_styles, -1)
        if ws.shape[1:] != (self.n_styles, self.w_dim):
            raise ValueError(f"ws must be (N, {self.n_styles}, {self.w_dim}), got {tuple(ws.shape)}")
        it = iter(noise) if noise is not None else None

        def nz():
            return next(it) if it is not None else None

        h = _lrelu(self.cin_d1(self.dense1(ws[:, 0]), ws[:, 0]))
        x = self.dense2(h).view(-1, self.start_channels, self.start, self.start)
        x = _lrelu(self.cin_d2(x, ws[:, 0]))
        for i in range(len(self.res)):
            w = ws[:, i + 1]
            blk = self.res[i]
            y = _lrelu(blk.cin1(blk.noise1(blk.conv1(x), nz()), w))
            y = _lrelu(blk.cin2(blk.noise2(blk.conv2(y), nz()), w))
            x = self.att[i](x + y)
            x = _lrelu(self.up_cin[i](self.up_noise[i](self.up[i](x), nz()), w))
        return torch.sigmoid(self.to_rgb(x))

    def noise_shapes(self, n: int) -> list[tuple[int, ...]]:
        """Shapes of the noise maps :meth:`synthesis` draws, in order (fixed noise for interpolations)."""
        out, r = [], self.start
        for _ in self.res:
            out += [(n, 1, r, r), (n, 1, r, r), (n, 1, 2 * r, 2 * r)]
            r *= 2
        return out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, z_dim) -> tiles (N, 3, size, size) in [0, 1] (no style mixing: that is a training option)."""
        return self.synthesis(self.mapping(z))


class DiscResBlock(nn.Module):
    def __init__(self, c: int, sn: bool = True, norm: bool = False):
        super().__init__()
        self.conv1 = _sn(nn.Conv2d(c, c, 3, padding=1), sn)
        self.conv2 = _sn(nn.Conv2d(c, c, 3, padding=1), sn)
        self.norm = norm

    def _n(self, x):
        return F.instance_norm(x, eps=1e-5) if self.norm else x

    def forward(self, x):
        y = _lrelu(self._n(self.conv1(x)))
        y = _lrelu(self._n(self.conv2(y)))
        return x + y


class _Trunk(nn.Module):
    """ResBlock -> attention -> stride-2 conv -> (IN) -> LReLU, per entry of ``channels``."""

    def __init__(self, size, channels, attention_res, *, sn: bool, norm: bool):
        super().__init__()
        self.res, self.att, self.down = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c, r = 3, size
        for co in channels:
            self.res.append(DiscResBlock(c, sn, norm))
            self.att.append(SelfAttention(c, sn) if r == attention_res else nn.Identity())
            self.down.append(_sn(nn.Conv2d(c, co, 3, stride=2, padding=1), sn))
            c, r = co, r // 2
        self.norm = norm
        self.out_channels, self.out_res = c, r

    def blocks(self, x):
        for res, att, down in zip(self.res, self.att, self.down, strict=True):
            x = down(att(res(x)))
            x = _lrelu(F.instance_norm(x, eps=1e-5) if self.norm else x)
            yield x


def _check_input(x: torch.Tensor, size: int) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
        raise ValueError(f"x must have shape (N, 3, {size}, {size}), got {tuple(x.shape)}")


class PathGANDiscriminator(nn.Module):
    """Tile (N, 3, size, size) in [0, 1] -> critic logit (N,). See the module docstring."""

    def __init__(
        self,
        *,
        size: int = 224,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        dense: int = 1024,
        attention_res: int = 28,
    ):
        super().__init__()
        if size % 2 ** len(channels):
            raise ValueError(f"size {size} must be divisible by 2^{len(channels)}")
        self.config = dict(size=size, channels=list(channels), dense=dense, attention_res=attention_res)
        self.size = size
        self.trunk = _Trunk(size, channels, attention_res, sn=True, norm=False)
        flat = self.trunk.out_channels * self.trunk.out_res**2
        self.dense1 = _sn(nn.Linear(flat, dense))
        self.dense2 = _sn(nn.Linear(dense, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.size)
        for h in self.trunk.blocks(x):
            x = h
        return self.dense2(_lrelu(self.dense1(x.flatten(1))))[:, 0]


class PathGANEncoder(nn.Module):
    """Tile (N, 3, size, size) in [0, 1] -> w (N, w_dim). See the module docstring."""

    def __init__(
        self,
        *,
        size: int = 224,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        dense: int = 1024,
        w_dim: int = 200,
        attention_res: int = 28,
        mpp: float = 0.5,
    ):
        super().__init__()
        if size % 2 ** len(channels):
            raise ValueError(f"size {size} must be divisible by 2^{len(channels)}")
        self.config = dict(
            size=size, channels=list(channels), dense=dense, w_dim=w_dim, attention_res=attention_res, mpp=mpp
        )
        self.size, self.w_dim = size, w_dim
        self.trunk = _Trunk(size, channels, attention_res, sn=False, norm=True)
        self.style = nn.ModuleList(_sn(nn.Linear(2 * c, w_dim), False) for c in channels)
        flat = self.trunk.out_channels * self.trunk.out_res**2
        self.dense1 = _sn(nn.Linear(flat, dense), False)
        self.dense2 = _sn(nn.Linear(dense, w_dim), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.size)
        styles = 0
        for i, h in enumerate(self.trunk.blocks(x)):
            s = torch.cat([h.mean((2, 3)), h.flatten(2).std(2)], 1)
            styles = styles + self.style[i](s)
            x = h
        return self.dense2(_lrelu(self.dense1(x.flatten(1)))) + styles


#: The paper's networks and the CPU-sized ones trained here (constructor arguments of each network).
PATHGAN_CONFIGS: dict[str, dict[str, dict]] = {
    "paper": {
        "generator": dict(
            size=224,
            dense=1024,
            start=7,
            start_channels=256,
            channels=[512, 256, 128, 64, 32],
            attention_res=28,
            mpp=0.5,
        ),  # fmt: skip
        "discriminator": dict(size=224, channels=[32, 64, 128, 256, 512], dense=1024, attention_res=28),
        "encoder": dict(size=224, channels=[64, 128, 256, 512, 512], dense=1024, attention_res=28, mpp=0.5),
    },
    "cpu": {
        "generator": dict(
            size=56, dense=256, start=7, start_channels=128, channels=[64, 32, 16], attention_res=14, mpp=0.5
        ),  # fmt: skip
        "discriminator": dict(size=56, channels=[16, 32, 64], dense=256, attention_res=14),
        "encoder": dict(size=56, channels=[32, 64, 128], dense=256, attention_res=14, mpp=0.5),
    },
}

_NETS = {"generator": PathGANGenerator, "discriminator": PathGANDiscriminator, "encoder": PathGANEncoder}


def pathgan_config(arch: str, part: str, **overrides) -> dict:
    """Constructor arguments of ``part`` ("generator" | "discriminator" | "encoder") of ``arch``."""
    if arch not in PATHGAN_CONFIGS:
        raise ValueError(f"arch must be one of {sorted(PATHGAN_CONFIGS)}, got {arch!r}")
    if part not in _NETS:
        raise ValueError(f"part must be one of {sorted(_NETS)}, got {part!r}")
    return {**PATHGAN_CONFIGS[arch][part], **overrides}


def build_pathgan(arch: str = "cpu", part: str = "generator", **overrides) -> nn.Module:
    """A randomly initialised PathologyGAN network by configuration name (``"paper"`` or ``"cpu"``)."""
    return _NETS[part](**pathgan_config(arch, part, **overrides))


def _builder(part: str):
    def build(config: dict) -> nn.Module:
        cfg = dict(config)
        arch = cfg.pop("arch", None)
        return build_pathgan(arch, part, **cfg) if arch else _NETS[part](**cfg)

    return build


# mpp of the kinds: the paper's 0.5 um/px (20x); a weights file's metadata "mpp" overrides it
register_kind(Kind("pathgan-generator", task="tile-generator", build=_builder("generator"), mpp=0.5))
register_kind(
    Kind("pathgan-discriminator", task="tile-discriminator", build=_builder("discriminator"), mpp=0.5)
)
register_kind(Kind("pathgan-encoder", task="tile-embedding", build=_builder("encoder"), mpp=0.5))


def n_parameters(net: nn.Module) -> int:
    """Parameters of a network (spectral norm's u/v vectors are buffers, not counted)."""
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def without_spectral_norm(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (eval mode) whose spectral-normalised weights are plain tensors holding their
    current value W / sigma: the same function without the power iteration (ONNX export). A new network is
    built rather than ``remove_parametrizations`` called on a deep copy, because parametrised modules share
    their injected class, so removing from the copy would break the original."""
    was = net.training
    net.eval()
    sd = {k: v for k, v in net.state_dict().items() if ".parametrizations." not in k}
    for name, m in net.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            sd[f"{name}.weight"] = m.weight.detach().clone()
    net.train(was)
    _SPECTRAL_NORM[0] = False
    try:
        out = type(net)(**net.config)
    finally:
        _SPECTRAL_NORM[0] = True
    out.load_state_dict(sd)
    return out.eval()
