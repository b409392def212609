"""ResNet image encoders: the SF per-modality stem (CASIA-SURF baseline, BASELINES.md "SF")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from mmanet.models.backbones import (
    LoadSummary,
    SqueezeExcitation,
    load_torchvision_resnet,
    make_layer,
    resnet_stem,
    resnet_widths,
)
from mmanet.models.encoders.base import Encoder, FeatureInfo, register_encoder


@register_encoder("sf_resnet")
class SFResNetEncoder(Encoder):
    """One modality's SF branch: ResNet-18 stem (conv k×k /2, BN, ReLU, max-pool /2), layer1, layer2,
    squeeze-and-excitation (Zhang et al., CASIA-SURF, CVPR 2019; He et al. 2016; Hu et al. 2018).

    Levels: ``layer1`` ``(width, /4)`` and the SE-weighted ``layer2`` ``(2·width, /8)`` — at 112×112
    input a ``(128, 14, 14)`` map at width 64. When ``out_channels`` differs from ``2·width`` a 1×1
    conv + BN projects the last level (``None`` keeps ``2·width``). ``width=64`` is ResNet-18;
    tests use tiny widths. BatchNorm: the network runs this encoder on the rows where its modality
    is present only (training), so absent rows never move the batch statistics.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        out_channels: int | None = None,
        width: int = 64,
        stem_kernel: int = 7,
        reduction: int = 16,
        blocks: int = 2,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"the sf_resnet encoder needs (C, H, W) images, got per-sample shape {tuple(input_shape)}")
        w1, w2, _, _ = resnet_widths(width)
        self.stem = resnet_stem(int(input_shape[0]), width, stem_kernel)
        self.layer1 = make_layer(w1, w1, blocks, stride=1)
        self.layer2 = make_layer(w1, w2, blocks, stride=2)
        self.se = SqueezeExcitation(w2, reduction)
        out = out_channels or w2
        self.project = (
            nn.Sequential(nn.Conv2d(w2, out, 1, bias=False), nn.BatchNorm2d(out)) if out != w2 else nn.Identity()
        )
        self.feature_info = [FeatureInfo(w1, 4), FeatureInfo(out, 8)]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        c1 = self.layer1(self.stem(x))
        return [c1, self.project(self.se(self.layer2(c1)))]

    def load_torchvision(self, state_dict: Mapping[str, Tensor]) -> LoadSummary:
        """Load a torchvision ResNet's stem, layer1 and layer2 (conv1 adapted to the input channels)."""
        modules = {"stem": self.stem, "layer1": self.layer1, "layer2": self.layer2}
        return load_torchvision_resnet(state_dict, modules, strict=True)


@register_encoder("resnet")
class ResNetEncoder(Encoder):
    """A ResNet-18/34 image encoder with the four stage outputs as its pyramid (He et al. 2016).

    Levels ``layer1 (w, /4)``, ``layer2 (2w, /8)``, ``layer3 (4w, /16)``, ``layer4 (8w, /32)`` for the
    RGB-D segmentation network (ESANet's encoders: one per modality; ``depth: 18 | 34``). With
    ``out_channels`` other than ``8·width`` a 1×1 conv + BN projects the last level.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        out_channels: int | None = None,
        width: int = 64,
        depth: int = 18,
        stem_kernel: int = 7,
    ) -> None:
        super().__init__()
        from mmanet.models.backbones import RESNET_LAYERS

        if len(input_shape) != 3:
            raise ValueError(f"the resnet encoder needs (C, H, W) images, got per-sample shape {tuple(input_shape)}")
        if depth not in RESNET_LAYERS:
            raise ValueError(f"resnet depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
        widths = resnet_widths(width)
        blocks = RESNET_LAYERS[depth]
        self.stem = resnet_stem(int(input_shape[0]), width, stem_kernel)
        layers, in_ch = [], width
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            layers.append(make_layer(in_ch, w, n, stride=1 if i == 0 else 2))
            in_ch = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        out = out_channels or widths[3]
        self.project = (
            nn.Sequential(nn.Conv2d(widths[3], out, 1, bias=False), nn.BatchNorm2d(out))
            if out != widths[3]
            else nn.Identity()
        )
        self.feature_info = [FeatureInfo(widths[0], 4), FeatureInfo(widths[1], 8), FeatureInfo(widths[2], 16)]
        self.feature_info.append(FeatureInfo(out, 32))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [c1, c2, c3, self.project(self.layer4(c3))]

    def load_torchvision(self, state_dict: Mapping[str, Tensor]) -> LoadSummary:
        modules = {"stem": self.stem, "layer1": self.layer1, "layer2": self.layer2, "layer3": self.layer3}
        modules["layer4"] = self.layer4
        return load_torchvision_resnet(state_dict, modules, strict=True)
