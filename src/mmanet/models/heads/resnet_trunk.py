"""The SF network's shared trunk as a head: ResNet layer3 + layer4 on the fused map → pool → classifier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.models.backbones import BasicBlock, LoadSummary, load_torchvision_resnet, make_layer, resnet_widths
from mmanet.models.encoders.base import FeatureInfo
from mmanet.models.heads.base import Head, HeadOutput, as_feature_info, register_head


@register_head("resnet_trunk")
class ResNetTrunkHead(Head):
    """Fused map ``(B, C_f, H, W)`` → layer3 (→ 4·width, /2) → layer4 (→ 8·width, /2) → GAP → logits.

    The SF network of CASIA-SURF (docs/baselines.md): the per-modality SE features are fused (concat:
    ``C_f = M·2·width``), then ResNet-18's layer3 and layer4 are shared. Named features: ``"trunk"``
    — layer4's final feature map, what MAD distils for face anti-spoofing (the teacher's and the
    deployment network's trunks have the same shape) — and ``"embedding"``, its pooled vector.

    Split prefix (:meth:`Head.split_prefix`): layer3's first block starts with two convolutions
    of the fused map, ``conv1`` (3×3, stride 2) and the downsample's 1×1 (stride 2), both without
    bias and so linear in the concatenation; each is split along its input channels per modality
    (one grouped convolution each). Their BatchNorms (affine in eval mode), the rest of the block,
    the other blocks and layer4 run on the sums.
    """

    levels = "last"
    feature_names = ("trunk", "embedding")
    task = "classification"

    def __init__(
        self,
        fused_info: list[FeatureInfo] | int,
        num_classes: int,
        width: int = 64,
        blocks: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        info = as_feature_info(fused_info)[-1]
        if info.is_global:
            raise ValueError("the resnet_trunk head needs a fused feature MAP; use image encoders such as sf_resnet")
        _, _, w3, w4 = resnet_widths(width)
        self.layer3 = make_layer(info.channels, w3, blocks, stride=2)
        self.layer4 = make_layer(w3, w4, blocks, stride=2)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(w4, num_classes)
        self.num_classes = num_classes

    def forward(self, fused: list[Tensor]) -> HeadOutput:
        return self._output(self.layer3(fused[-1]))

    def split_prefix(self, features: Tensor) -> Tensor | None:
        """``(B, M, C, H, W)`` → ``(B, M, 2·w3, H', W')``: per modality, layer3[0]'s ``conv1`` then its
        downsample conv (stacked along channels) applied to that modality's block of input channels."""
        block = cast(BasicBlock, self.layer3[0])
        if block.downsample is None:  # an identity shortcut is not split (make_layer's stride 2 always adds one)
            return None
        m, x = features.shape[1], features.flatten(1, 2)
        convs = (block.conv1, cast(nn.Conv2d, cast(nn.Sequential, block.downsample)[0]))
        parts = [_split_conv(conv, x, m).unflatten(1, (m, -1)) for conv in convs]
        return torch.cat(parts, dim=2)

    def forward_from_partials(self, summed: Tensor) -> HeadOutput:
        block = cast(BasicBlock, self.layer3[0])
        assert block.downsample is not None  # split_prefix returned partials, so it has one
        conv1, shortcut = summed.chunk(2, dim=1)
        out = block.bn2(block.conv2(block.relu(block.bn1(conv1))))
        x = block.relu(out + cast(nn.Sequential, block.downsample)[1](shortcut))
        return self._output(self.layer3[1:](x))

    def _output(self, layer3: Tensor) -> HeadOutput:
        trunk = self.layer4(layer3)
        embedding = trunk.mean(dim=(2, 3))
        return HeadOutput(self.classifier(self.dropout(embedding)), {"trunk": trunk, "embedding": embedding})

    def load_torchvision(self, state_dict: Mapping[str, Tensor]) -> LoadSummary:
        """Load torchvision's layer4 and every layer3 tensor whose shape fits (its first block takes
        ``C_f`` fused channels instead of 128, so that block's first conv and downsample keep their init)."""
        return load_torchvision_resnet(state_dict, {"layer3": self.layer3, "layer4": self.layer4}, strict=False)


def _split_conv(conv: nn.Conv2d, x: Tensor, groups: int) -> Tensor:
    """``conv`` (no bias, ``groups=1``) applied to each of ``groups`` equal blocks of ``x``'s channels
    on its own: ``(B, G·C, H, W)`` → ``(B, G·O, H', W')`` (one grouped convolution)."""
    o, c = conv.weight.shape[0], conv.weight.shape[1] // groups
    weight = conv.weight.view(o, groups, c, *conv.kernel_size).transpose(0, 1).reshape(groups * o, c, *conv.kernel_size)
    return F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation, groups)
