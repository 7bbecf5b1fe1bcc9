"""Self-supervised attention segmentation (Sahasrabudhe et al., MICCAI 2020), REFERENCE.md section 1.

- :class:`AttentionNet` (F): conv3x3(3->w, no bias)+BN+ReLU, six residual blocks w->w with dilations
  1, 2, 3, 5, 10, 20 (conv3x3 dilated, no bias -> BN -> ReLU -> conv3x3 -> BN, + identity, -> ReLU),
  conv1x1(w->1) with bias -> logits ``a``; then the fused compressed sigmoid with the batch percentile
  threshold (:class:`nucfast.PercentileSigmoid`: p = 0.07, r = 20, running tau for inference). No
  downsampling, output = input size, receptive field 167 px. ``width=64`` is the paper; a CPU variant
  may use a smaller width.
- :class:`ScaleClassifier` (G): ResNet-34 trunk (torchvision layout, random init) -> global average pool ->
  Linear(512, 3) on ``J = A * I``; labels 0 = 10x, 1 = 20x, 2 = 40x.
- Losses (:func:`attention_losses`), all weights 1: cross-entropy on scale; smoothness (mean absolute vertical
  + horizontal differences of A); flip/rotation equivariance MSE(A, t^-1(F(t(I)))) with t drawn per batch from
  {flip x, flip y, transpose, rot90, rot180, rot270} and the target computed without gradient with the running
  tau; optional scale equivariance MSE(down2(A), A(down2(I))) on the 40x and 20x samples.

Inputs of F and G are ImageNet mean/std normalised RGB (:func:`imagenet_normalize`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._percentile_sigmoid import PercentileSigmoid, percentile_sigmoid
from ..postprocess import attention_instances
from ._registry import Kind, register_kind
from ._sliding import sliding_window
from .usenet import SEResNetEncoder

__all__ = [
    "AttentionNet",
    "ScaleClassifier",
    "attention_losses",
    "imagenet_normalize",
    "predict_attention",
    "TRANSFORMS",
    "apply_transform",
    "invert_transform",
    "DILATIONS",
]

DILATIONS = (1, 2, 3, 5, 10, 20)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x01: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) RGB in [0, 1] -> ImageNet mean/std normalised."""
    m = torch.tensor(IMAGENET_MEAN, dtype=x01.dtype, device=x01.device)[:, None, None]
    s = torch.tensor(IMAGENET_STD, dtype=x01.dtype, device=x01.device)[:, None, None]
    return (x01 - m) / s


class DilatedBlock(nn.Module):
    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(y)) + x, inplace=True)


class AttentionNet(nn.Module):
    """Attention network F with its percentile-sigmoid head. ``forward`` returns the attention map A
    (B, 1, H, W); :meth:`logits` the pre-sigmoid map."""

    def __init__(self, width: int = 64, p: float = 0.07, r: float = 20.0, momentum: float = 0.1):
        super().__init__()
        self.config = dict(width=width, p=p, r=r, momentum=momentum)
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[DilatedBlock(width, d) for d in DILATIONS])
        self.out = nn.Conv2d(width, 1, 1, bias=True)
        self.head = PercentileSigmoid(p=p, r=r, momentum=momentum)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.out:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def receptive_field() -> int:
        return 1 + 2 * (1 + 2 * sum(DILATIONS))  # stem 3x3 + two dilated 3x3 per block

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must have shape (N, 3, H, W), got {tuple(x.shape)}")
        return self.out(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.logits(x))


class ScaleClassifier(nn.Module):
    """G: ResNet-34 trunk (conv1..layer4, no SE) -> global average pool -> Linear(C, 3)."""

    def __init__(self, widths=(64, 128, 256, 512), stem_width: int = 64, n_classes: int = 3):
        super().__init__()
        self.config = dict(widths=list(widths), stem_width=stem_width, n_classes=n_classes)
        self.trunk = SEResNetEncoder("basic", (3, 4, 6, 3), widths, stem_width, reduction=0)
        self.fc = nn.Linear(self.trunk.channels[-1], n_classes)

    def forward(self, j: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(j)[-1].mean(dim=(2, 3)))


# the six equivariance transforms of the paper (on the last two axes) and their inverses
TRANSFORMS = ("flip_x", "flip_y", "transpose", "rot90", "rot180", "rot270")


def apply_transform(x: torch.Tensor, t: str) -> torch.Tensor:
    if t == "flip_x":
        return x.flip(-1)
    if t == "flip_y":
        return x.flip(-2)
    if t == "transpose":
        return x.transpose(-1, -2)
    if t in ("rot90", "rot180", "rot270"):
        return torch.rot90(x, {"rot90": 1, "rot180": 2, "rot270": 3}[t], (-2, -1))
    raise ValueError(f"unknown transform {t!r}; expected one of {TRANSFORMS}")


def invert_transform(x: torch.Tensor, t: str) -> torch.Tensor:
    if t in ("rot90", "rot270"):
        return apply_transform(x, "rot270" if t == "rot90" else "rot90")
    return apply_transform(x, t)  # flips, transpose and rot180 are involutions


def _sigmoid_with_tau(net: AttentionNet, logits: torch.Tensor, tau) -> torch.Tensor:
    return percentile_sigmoid(logits, p=net.head.p, r=net.head.r, tau=tau)[0]


def attention_losses(
    net: AttentionNet,
    clf: ScaleClassifier,
    x: torch.Tensor,
    scale_labels: torch.Tensor,
    *,
    transform: str,
    scale_equivariance: bool = False,
    pseudo: torch.Tensor | None = None,
    pseudo_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """All training losses for one batch (``x`` ImageNet-normalised, (B, 3, H, W)); weights 1.

    The main pass runs the :class:`~nucfast.PercentileSigmoid` head (batch tau, running tau updated once).
    The equivariance target ``t^-1(F(t(x)))`` is computed without gradient with the running tau. The
    optional scale equivariance uses the current batch's tau for the half-resolution pass. ``pseudo`` (B, 1,
    H, W) in {0, 1} adds ``pseudo_weight`` x BCE(A, pseudo) (annotation-free pseudo-labels).
    """
    a = net.logits(x)
    A = net.head(a)
    tau = net.head.running_tau.detach()  # includes this batch's update; used for the auxiliary passes
    g_logits = clf(A * x)
    ce = F.cross_entropy(g_logits, scale_labels)
    smooth = (A[..., 1:, :] - A[..., :-1, :]).abs().mean() + (A[..., :, 1:] - A[..., :, :-1]).abs().mean()
    with torch.no_grad():
        target = invert_transform(
            _sigmoid_with_tau(net, net.logits(apply_transform(x, transform)), tau), transform
        )
    equi = F.mse_loss(A, target)
    loss = ce + smooth + equi
    parts = {"ce": float(ce.detach()), "smooth": float(smooth.detach()), "equi": float(equi.detach())}
    if scale_equivariance:
        sel = scale_labels >= 1  # 20x and 40x samples
        if sel.any():
            xs = x[sel]
            a_half = _sigmoid_with_tau(net, net.logits(F.avg_pool2d(xs, 2)), tau)
            se = F.mse_loss(F.avg_pool2d(A[sel], 2), a_half)
            loss = loss + se
            parts["scale_equi"] = float(se.detach())
    if pseudo is not None and pseudo_weight > 0:
        pl = F.binary_cross_entropy(A.clamp(1e-6, 1 - 1e-6), pseudo)
        loss = loss + pseudo_weight * pl
        parts["pseudo"] = float(pl.detach())
    parts["acc"] = float((g_logits.detach().argmax(1) == scale_labels).float().mean())
    return loss, parts


@torch.no_grad()
def predict_attention(
    net: AttentionNet, x01: torch.Tensor, *, tile: int = 1024, overlap: int = 96
) -> torch.Tensor:
    """Attention map (1, H, W) of one image (3, H, W) in [0, 1] (stain-normalised) with the running tau.

    Images larger than ``tile`` run in tiles overlapping by ``overlap`` px whose centres are kept; the
    threshold is the trained running tau, so it does not depend on the tiling (no seams from tau). Tile
    borders closer than half the receptive field (83 px) to a cut see less context (zero padding).
    """
    net.eval()
    return sliding_window(net, imagenet_normalize(x01), tile=tile, overlap=overlap)


def _postprocess(probs, meta: dict):
    """The attention model's post-processing (REFERENCE.md 1 steps 1-4) on A > 0.5."""
    return attention_instances(probs[0] > 0.5)


register_kind(
    Kind(
        "attention",
        task="segmentation",
        build=lambda config: AttentionNet(**config),
        mpp=0.25,
        # largest nucleus (44) + the network's receptive-field radius (83) + the post-processing's reach
        # (~20), rounded up: the network is local, so tiled nuclei equal whole-image ones
        halo=160,
        predict=lambda net, x01, tile, **_: predict_attention(net, x01, tile=tile),
        postprocess=_postprocess,
    )
)
