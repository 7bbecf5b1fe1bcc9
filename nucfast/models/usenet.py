"""USE-Net (Rahmon, Toubal & Palaniappan, AIPR 2021): SE-ResNet encoder + U-Net decoder, two sigmoid heads.

Two configurations of one design:

``usenet_se_resnet50()``
    The paper's network exactly as described in REFERENCE.md section 2: SE-ResNet-50 encoder (torchvision
    ``ResNet(Bottleneck, [3, 4, 6, 3])`` with a squeeze-excitation layer in each bottleneck after ``bn3``,
    before the residual add, reduction 16, bias-free linears), stages stem 64 (/2), layer1 256 (/4),
    layer2 512 (/8), layer3 1024 (/16), layer4 2048 (/32); decoder of bilinear x2 upsampling
    (``align_corners=True``) + skip concatenation + double conv 2048+1024->256, 256+512->128, 128+256->64,
    64+64->32, a last x2 upsample -> double conv 32->16 -> conv3x3 16->2. 35.0 M parameters, 10.6 GMAC
    per 256x256 forward.

``usenet_lite()``
    The same topology (stem /2, max-pool, four SE-residual stages /4 .. /32, the same five decoder steps,
    the same two heads) with an SE-ResNet-18-style encoder (basic blocks, ``[2, 2, 2, 2]``) at half width
    (stem 32, stages 32/64/128/256) and a decoder of 128/64/32/16/8 channels: 3.6 M parameters (10x fewer)
    and 1.4 GMAC per 256x256 forward (7.6x less). The two high-resolution decoder steps are narrowed most
    (16 and 8 channels at /2 and /1): at 32/16 they were half of all compute, and a measured training step
    (batch 4, 256x256, one thread) fell from 1.43 to 0.86 CPU-seconds.
    Why: training runs on one shared CPU core for a few hours; the full network would manage only a few
    hundred steps in that budget, while the paper itself reports that a ResNet-18 encoder loses only ~0.05
    AJI on MoNuSeg (0.60 vs 0.6587). Halving the width costs capacity we could not train at this budget
    anyway, and keeps the shipped weights at ~7 MB (float16). MoNuSeg nuclei are 10-40 px across at 40x, so
    the /32 bottleneck still has a receptive field far larger than a nucleus and its neighbourhood.

Input: float RGB in [0, 1], shape (N, 3, H, W), no mean/std normalisation (as the paper). H and W need not be
multiples of 32: the decoder resizes to each skip's size. Output: logits (N, 2, H, W); channel 0 = nucleus
mask, channel 1 = shape marker; apply ``torch.sigmoid`` independently to each channel.
Random initialisation only (Kaiming for convolutions); nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..postprocess import usenet_instances
from ._registry import Kind, register_kind
from ._sliding import sliding_window

__all__ = [
    "USENet",
    "SEResNetEncoder",
    "usenet_se_resnet50",
    "usenet_lite",
    "build_usenet",
    "predict_usenet",
    "USENET_CONFIGS",
]


class BatchPooledGates:
    """Pass as ``gate`` to compute each squeeze-excitation gate from the mean over the whole batch (all
    images' pixels together) instead of per image; the gates used are appended to :attr:`gates` in order."""

    def __init__(self):
        self.gates: list[torch.Tensor] = []


class SqueezeExcitation(nn.Module):
    """avgpool -> Linear(C, C/r, no bias) -> ReLU -> Linear(C/r, C, no bias) -> sigmoid -> scale.

    ``gate`` (optional): the sigmoid output to use instead of the one from this input's average, (C,) or
    (N, C) (frozen slide-level statistics); or a :class:`BatchPooledGates` (pool over the batch).
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channels = channels
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def excite(self, s: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(s), inplace=True)))

    def forward(self, x: torch.Tensor, gate=None) -> torch.Tensor:
        if gate is None:
            gate = self.excite(x.mean(dim=(2, 3)))
        elif isinstance(gate, BatchPooledGates):
            pool, gate = gate, self.excite(x.mean(dim=(0, 2, 3)))
            pool.gates.append(gate)
        return x * gate[..., None, None]


def _se(block: nn.Module, x: torch.Tensor, gate) -> torch.Tensor:
    return block.se(x, gate) if isinstance(block.se, SqueezeExcitation) else block.se(x)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class SEBottleneck(nn.Module):
    """torchvision Bottleneck (stride on the 3x3 conv, "ResNet v1.5") with SE after bn3."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, reduction: int = 16):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.se = SqueezeExcitation(cout, reduction) if reduction > 0 else nn.Identity()
        self.downsample = _downsample(cin, cout, stride)

    def forward(self, x: torch.Tensor, gate=None) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = _se(self, self.bn3(self.conv3(out)), gate)
        return F.relu(out + idt, inplace=True)


class SEBasicBlock(nn.Module):
    """torchvision BasicBlock with SE after bn2, before the residual add."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, reduction: int = 16):
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.se = SqueezeExcitation(width, reduction) if reduction > 0 else nn.Identity()
        self.downsample = _downsample(cin, width, stride)

    def forward(self, x: torch.Tensor, gate=None) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = _se(self, self.bn2(self.conv2(out)), gate)
        return F.relu(out + idt, inplace=True)


_BLOCKS = {"bottleneck": SEBottleneck, "basic": SEBasicBlock}


class SEResNetEncoder(nn.Module):
    """SE-ResNet trunk returning five feature maps: stem /2, layer1 /4, layer2 /8, layer3 /16, layer4 /32.

    ``reduction=0`` gives the plain torchvision ResNet trunk (no squeeze-excitation).
    """

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        reduction: int = 16,
    ):
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got {block!r}")
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError("layers and widths must have 4 entries (layer1..layer4)")
        blk = _BLOCKS[block]
        self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = stem_width
        stages = []
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(blk(cin, w, stride=(2 if (i > 0 and j == 0) else 1), reduction=reduction))
                cin = w * blk.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.channels = (stem_width,) + tuple(w * blk.expansion for w in widths)
        #: channels of each squeeze-excitation gate, in forward order (empty without SE)
        self.se_channels = tuple(
            b.se.channels for st in stages for b in st if isinstance(b.se, SqueezeExcitation)
        )

    def forward(self, x: torch.Tensor, gates=None) -> list[torch.Tensor]:
        """``gates``: None (per-image SE), a list of per-block gates (:attr:`se_channels`) or a
        :class:`BatchPooledGates`."""
        k = 0

        def stage(layer, y):
            nonlocal k
            for b in layer:
                g = gates
                if isinstance(gates, list | tuple) and isinstance(b.se, SqueezeExcitation):
                    g, k = gates[k], k + 1
                y = b(y, g)
            return y

        s0 = F.relu(self.bn1(self.conv1(x)), inplace=True)
        s1 = stage(self.layer1, self.maxpool(s0))
        s2 = stage(self.layer2, s1)
        s3 = stage(self.layer3, s2)
        s4 = stage(self.layer4, s3)
        return [s0, s1, s2, s3, s4]


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


def _up(x: torch.Tensor, size, align_corners: bool = True) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


class USENet(nn.Module):
    """SE-ResNet encoder + U-Net decoder with two independent sigmoid heads (returns logits).

    Parameters
    ----------
    block, layers, widths, stem_width, reduction
        Encoder configuration (see :class:`SEResNetEncoder`).
    decoder : 5 ints
        Output channels of the four skip steps and of the final full-resolution double conv.
    align_corners : bool
        The decoder's bilinear x2 upsampling: ``True`` is the paper's (corners aligned: the sampling grid
        then depends on the input size, so a window's output depends on the window); ``False`` (pixel
        centres, an exact x2) makes the network translation-equivariant for shifts by multiples of 32, so
        tiles agree with the whole image away from their borders. The shipped weights use ``False``
        (chosen after training: validation AJI 0.5689 vs 0.5665 with ``True``, MODEL_CARD.md).
    """

    def __init__(
        self,
        *,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        reduction: int = 16,
        decoder: Sequence[int] = (256, 128, 64, 32, 16),
        align_corners: bool = True,
    ):
        super().__init__()
        if len(decoder) != 5:
            raise ValueError("decoder must have 5 channel counts")
        self.align_corners = bool(align_corners)
        self.config = dict(
            block=block,
            layers=list(layers),
            widths=list(widths),
            stem_width=stem_width,
            reduction=reduction,
            decoder=list(decoder),
            align_corners=self.align_corners,
        )
        self.encoder = SEResNetEncoder(block, layers, widths, stem_width, reduction)
        c0, c1, c2, c3, c4 = self.encoder.channels
        d1, d2, d3, d4, d5 = decoder
        self.dec4 = DoubleConv(c4 + c3, d1)
        self.dec3 = DoubleConv(d1 + c2, d2)
        self.dec2 = DoubleConv(d2 + c1, d3)
        self.dec1 = DoubleConv(d3 + c0, d4)
        self.dec0 = DoubleConv(d4, d5)
        self.head = nn.Conv2d(d5, 2, 3, padding=1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # heads: small weights, bias at the prior of ~10% foreground, so the first steps are not spent
        # undoing huge initial logits
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.constant_(self.head.bias, -2.0)
        # zero-init the last BN of each residual branch (Goyal et al.): each block starts as identity,
        # which helps training from scratch
        for m in self.encoder.modules():
            if isinstance(m, SEBottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, SEBasicBlock):
                nn.init.zeros_(m.bn2.weight)

    @property
    def n_se_gates(self) -> int:
        """Length of the flat ``se_gates`` vector (sum of the SE blocks' channels)."""
        return sum(self.encoder.se_channels)

    @torch.no_grad()
    def fit_se_gates(self, x: torch.Tensor) -> torch.Tensor:
        """Slide-level squeeze-excitation gates: every gate computed from the average over all pixels of
        the batch ``x`` (N, 3, h, w) (a fixed tissue sample) instead of per image. Returns the flat
        float32 vector (:attr:`n_se_gates`) to pass as ``forward(x, se_gates=...)``."""
        pool = BatchPooledGates()
        self.encoder(x, pool)
        if not pool.gates:
            return torch.zeros(0)
        return torch.cat([g.reshape(-1) for g in pool.gates]).float()

    def forward(self, x: torch.Tensor, se_gates: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, 2, H, W). ``se_gates``: optional frozen squeeze-excitation gates, flat (n_se_gates,)
        or (N, n_se_gates) (:meth:`fit_se_gates`): the network is then local (a plain CNN), so its output
        no longer depends on the window it runs on. Without them, each image's own averages (the paper)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must have shape (N, 3, H, W), got {tuple(x.shape)}")
        gates = None
        if se_gates is not None:
            if se_gates.shape[-1] != self.n_se_gates:
                raise ValueError(f"se_gates must have {self.n_se_gates} values, got {tuple(se_gates.shape)}")
            gates = list(torch.split(se_gates.to(x.dtype), list(self.encoder.se_channels), dim=-1))
        s0, s1, s2, s3, s4 = self.encoder(x, gates)
        ac = self.align_corners
        y = self.dec4(torch.cat([_up(s4, s3.shape[-2:], ac), s3], 1))
        y = self.dec3(torch.cat([_up(y, s2.shape[-2:], ac), s2], 1))
        y = self.dec2(torch.cat([_up(y, s1.shape[-2:], ac), s1], 1))
        y = self.dec1(torch.cat([_up(y, s0.shape[-2:], ac), s0], 1))
        y = self.dec0(_up(y, x.shape[-2:], ac))
        return self.head(y)


USENET_CONFIGS: dict[str, dict] = {
    "se_resnet50": dict(
        block="bottleneck",
        layers=(3, 4, 6, 3),
        widths=(64, 128, 256, 512),
        stem_width=64,
        decoder=(256, 128, 64, 32, 16),
    ),
    "lite": dict(
        block="basic",
        layers=(2, 2, 2, 2),
        widths=(32, 64, 128, 256),
        stem_width=32,
        decoder=(128, 64, 32, 16, 8),
    ),
}


def build_usenet(arch: str = "lite", **overrides) -> USENet:
    """Build a USE-Net by configuration name (``"se_resnet50"`` or ``"lite"``), with optional overrides."""
    if arch not in USENET_CONFIGS:
        raise ValueError(f"arch must be one of {sorted(USENET_CONFIGS)}, got {arch!r}")
    cfg = dict(USENET_CONFIGS[arch])
    cfg.update(overrides)
    return USENet(**cfg)


def usenet_se_resnet50() -> USENet:
    """The paper's USE-Net (SE-ResNet-50 encoder), randomly initialised."""
    return build_usenet("se_resnet50")


def usenet_lite() -> USENet:
    """Half-width SE-ResNet-18-style USE-Net for CPU training/inference, randomly initialised."""
    return build_usenet("lite")


def _build_from_config(config: dict) -> USENet:
    """The network of a weights file's ``config`` (constructor arguments) or of ``{"arch": name, ...}``."""
    return build_usenet(**config) if "arch" in config else USENet(**config)


@torch.no_grad()
def predict_usenet(
    net: USENet,
    x01: torch.Tensor,
    tile: int = 1024,
    *,
    overlap: int = 128,
    se_gates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sigmoid probabilities (2, H, W) (mask, marker) of one image (3, H, W) in [0, 1].

    Windows are reflect-padded to a multiple of 32 (the encoder's stride); images larger than ``tile`` run
    in windows overlapping by ``overlap`` (:func:`nucfast.models.sliding_window`). ``se_gates``: frozen
    squeeze-excitation gates (:meth:`USENet.fit_se_gates`), so the result does not depend on the windows.
    """
    net.eval()
    g = None if se_gates is None else se_gates.to(x01.device)

    def f(z):  # channels_last: 1.4x (fp32) to 2x (bf16) faster convolutions on the CPU
        return torch.sigmoid(net(z.contiguous(memory_format=torch.channels_last), g).float())

    return sliding_window(f, x01, tile=tile, overlap=overlap, multiple=32)


def _postprocess(probs, meta: dict):
    """The method and thresholds selected with the checkpoint (metadata ``postprocess``); the paper's ridges
    at 0.1 / 0.1 when absent."""
    return usenet_instances(probs[0], probs[1], **(meta.get("postprocess") or {}))


register_kind(
    Kind(
        "usenet",
        task="segmentation",
        build=_build_from_config,
        mpp=0.25,
        # context for tiles to equal the whole image: with frozen SE gates and centre-aligned upsampling the
        # network is local, and its output 128 px inside a window differs from the whole image's by < 1e-3
        # on average (docs/SLIDE.md); > the largest nucleus plus the post-processing's reach (64)
        halo=128,
        stride=32,  # five 2x poolings: outputs shift with the input only by multiples of 32 px
        # measured on the 6 validation images (nucfast evaluate): AJI 0.5689 fp32, 0.5684 bf16 autocast
        cpu_bf16=True,
        predict=predict_usenet,
        postprocess=_postprocess,
        fit=lambda net, batch: {"se_gates": net.fit_se_gates(batch)},
    )
)
