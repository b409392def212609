"""ResNet building blocks (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

Plain ``torch.nn`` pieces, written so that the module names — and therefore the
``state_dict`` keys — coincide with torchvision's ResNet-18/34 (:class:`BasicBlock`) and
ResNet-50 (:class:`Bottleneck`): ``conv1``, ``bn1``, ``layer1.0.conv1.weight``,
``layer2.0.downsample.1.running_mean``, ``layer3.5.bn3.running_var``, ... torchvision itself is
not a dependency: :mod:`.torchvision_weights` maps such a ``state_dict`` into the modules built here.

Also the squeeze-and-excitation gate of Hu et al., "Squeeze-and-Excitation Networks",
CVPR 2018, used by the SF baseline (after each modality's layer2) and by ESANet's fusion.

Everything here is deterministic under ``torch.use_deterministic_algorithms(True)`` on CUDA
(global pooling is a ``mean``, not ``AdaptiveAvgPool2d``, whose CUDA backward is flagged
non-deterministic).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "RESNET_LAYERS",
    "BasicBlock",
    "Bottleneck",
    "RESNET_BLOCKS",
    "SqueezeExcitation",
    "init_resnet_weights",
    "make_layer",
    "resnet_layers",
    "resnet_stem",
    "resnet_widths",
]

#: Blocks per stage (He et al. 2016, Table 1); the block type of each depth is :data:`RESNET_BLOCKS`.
RESNET_LAYERS: dict[int, tuple[int, int, int, int]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def resnet_widths(width: int = 64, expansion: int = 1) -> tuple[int, int, int, int]:
    """Output channels of layer1..layer4: ``expansion · width · (1, 2, 4, 8)``.

    ``expansion`` is the block's (:attr:`BasicBlock.expansion` = 1: 64 → torchvision's
    64/128/256/512 for ResNet-18/34; :attr:`Bottleneck.expansion` = 4: 256/512/1024/2048 for
    ResNet-50).
    """
    base = expansion * width
    return (base, 2 * base, 4 * base, 8 * base)


def init_resnet_weights(module: nn.Module, zero_init_residual: bool = False) -> None:
    """He (Kaiming) normal init, fan-out, for every conv; BatchNorm γ = 1, β = 0.

    With ``zero_init_residual`` the last BN of each residual branch (``bn2`` of a :class:`BasicBlock`,
    ``bn3`` of a :class:`Bottleneck`) starts at γ = 0, so every residual block is the identity
    at initialisation (Goyal et al. 2017).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
            elif isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)


class BasicBlock(nn.Module):
    """The two-3×3-conv residual block of ResNet-18/34 (He et al. 2016, Fig. 2).

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; ``conv1`` carries the stride. The
    shortcut is the identity, or ``downsample = Sequential(1×1 conv (stride), BN)`` ("option B")
    when the stride or channel count changes. Module names match torchvision's, so its keys
    (``conv1.weight``, ``bn2.running_var``, ``downsample.0.weight`` ...) load directly.
    """

    #: output channels / channels of the 3×3 convs (1: ``out_ch`` throughout)
    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        self.in_channels = in_ch
        self.out_channels = out_ch
        self.stride = stride
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """The 1×1–3×3–1×1 residual block of ResNet-50/101/152 (He et al. 2016, Fig. 5), torchvision's "v1.5".

    ``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))`` with
    ``planes = out_ch // 4``: ``conv1`` 1×1 ``in_ch → planes``, ``conv2`` 3×3 ``planes → planes``
    carrying the stride (v1.5; the original paper strides the first 1×1), ``conv3`` 1×1
    ``planes → out_ch = 4·planes``. The shortcut is the identity, or ``downsample =
    Sequential(1×1 conv (stride), BN)`` when the stride or channel count changes (in ResNet-50
    also block 0 of layer1: 64 → 256 channels at stride 1). Same signature as
    :class:`BasicBlock` (``out_ch`` is the block's OUTPUT width), same init; module names match
    torchvision's, so ``conv3.weight``, ``bn3.running_var``, ``downsample.0.weight`` ... load
    directly.
    """

    expansion = 4

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        if out_ch % self.expansion or out_ch < self.expansion:
            raise ValueError(f"a bottleneck's out_ch must be a positive multiple of {self.expansion}, got {out_ch}")
        planes = out_ch // self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        self.in_channels = in_ch
        self.planes = planes
        self.out_channels = out_ch
        self.stride = stride
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


#: The residual block of each depth in :data:`RESNET_LAYERS`.
RESNET_BLOCKS: dict[int, type[BasicBlock] | type[Bottleneck]] = {18: BasicBlock, 34: BasicBlock, 50: Bottleneck}


class _Stem(nn.Module):
    def __init__(self, in_channels: int, width: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size, stride=2, padding=kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.in_channels = in_channels
        self.out_channels = width
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_pre_pool(self, x: Tensor) -> Tensor:
        """``relu(bn1(conv1(x)))`` at 1/2 resolution — ESANet fuses here, before the max-pool."""
        return self.relu(self.bn1(self.conv1(x)))


def resnet_stem(in_channels: int = 3, width: int = 64, kernel_size: int = 7) -> nn.Module:
    """ResNet stem (He et al. 2016): ``conv1`` (k×k, stride 2, pad k//2, no bias) → ``bn1`` → ``relu`` → ``maxpool``.

    ``maxpool`` is 3×3 stride 2 pad 1, so the output is at 1/4 resolution with ``width`` channels
    (``ceil(ceil(H/2)/2)``). ``kernel_size=7`` is torchvision's stem (loadable from its weights);
    ``kernel_size=3`` gives a lighter stem for small inputs (its ``conv1`` cannot take pretrained
    7×7 weights). The module also has ``forward_pre_pool(x)`` for the 1/2-resolution features.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    return _Stem(in_channels, width, kernel_size)


def make_layer(
    in_ch: int,
    out_ch: int,
    blocks: int,
    stride: int = 1,
    *,
    block: type[BasicBlock] | type[Bottleneck] = BasicBlock,
) -> nn.Sequential:
    """One ResNet stage: ``blocks`` residual blocks, the first with ``stride`` (and the downsample).

    Indexed ``0..blocks-1`` like torchvision's ``layerN``; ``out_ch`` is the stage's output width
    and ``block`` :class:`BasicBlock` (default) or :class:`Bottleneck` (whose 3×3 convs then have
    ``out_ch // 4`` channels). ResNet-18 uses ``RESNET_LAYERS[18] = (2, 2, 2, 2)``, ResNet-34
    ``(3, 4, 6, 3)``, ResNet-50 ``(3, 4, 6, 3)`` bottlenecks, widths :func:`resnet_widths`,
    stride 1 for layer1 and 2 for layer2..4 (see :func:`resnet_layers`).
    """
    if blocks < 1:
        raise ValueError(f"a layer needs at least one block, got {blocks}")
    return nn.Sequential(block(in_ch, out_ch, stride), *(block(out_ch, out_ch, 1) for _ in range(blocks - 1)))


def resnet_layers(depth: int, width: int = 64) -> list[nn.Sequential]:
    """layer1..layer4 of a ResNet of ``depth`` (a key of :data:`RESNET_LAYERS`) after a ``width``-channel stem.

    Strides 1, 2, 2, 2 (so 1/4 … 1/32 of the input after :func:`resnet_stem`); output channels
    ``resnet_widths(width, block.expansion)``. At ``width=64`` the keys and shapes are those of
    torchvision's ``resnet{depth}().layerN``.
    """
    if depth not in RESNET_LAYERS:
        raise ValueError(f"resnet depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
    block = RESNET_BLOCKS[depth]
    layers, in_ch = [], width
    for i, (n, out_ch) in enumerate(zip(RESNET_LAYERS[depth], resnet_widths(width, block.expansion), strict=True)):
        layers.append(make_layer(in_ch, out_ch, n, stride=1 if i == 0 else 2, block=block))
        in_ch = out_ch
    return layers


class SqueezeExcitation(nn.Module):
    """Channel gate of Hu et al. (SE-Net, CVPR 2018): ``x · σ(fc2(ReLU(fc1(GAP x))))``.

    ``fc1``/``fc2`` are 1×1 convolutions with bias (C → max(1, C // reduction) → C), as ESANet
    uses them. Works for any ``(B, C, *S)`` input — maps ``(B, C, H, W)`` or vectors ``(B, C)``
    (where the "pooling" is the identity). The pooling is a ``mean`` (deterministic on CUDA).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.channels = channels
        self.hidden = hidden

    def gate(self, x: Tensor) -> Tensor:
        """The excitation weights σ(...) ∈ (0, 1), shaped ``(B, C, 1, ..., 1)`` to broadcast against ``x``."""
        b, c = x.shape[:2]
        squeezed = x.reshape(b, c, -1).mean(dim=-1)[:, :, None, None]
        weights = torch.sigmoid(self.fc2(self.relu(self.fc1(squeezed))))
        return weights.reshape((b, c) + (1,) * (x.dim() - 2))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)
