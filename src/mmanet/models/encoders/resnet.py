"""ResNet image encoders: the SF per-modality stem (CASIA-SURF baseline, docs/baselines.md "SF") and the
four-level ResNet-18/34/50 pyramid of the RGB-D segmentation network (ESANet)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from mmanet.models.backbones import (
    RESNET_BLOCKS,
    RESNET_LAYERS,
    LoadSummary,
    SqueezeExcitation,
    StateDictMismatchError,
    load_torchvision_resnet,
    make_layer,
    resnet_layers,
    resnet_stem,
    resnet_widths,
    torchvision_resnet_depth,
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
    """A ResNet-18/34/50 image encoder with the four stage outputs as its pyramid (He et al. 2016).

    Levels ``layer1 (e·w, /4)``, ``layer2 (2e·w, /8)``, ``layer3 (4e·w, /16)``, ``layer4 (8e·w, /32)``
    for the RGB-D segmentation network (ESANet's encoders: one per modality), where ``w`` is
    ``width`` and ``e`` the block's expansion: ``depth: 18 | 34`` are :class:`BasicBlock` ResNets
    (``e = 1``: 64/128/256/512 channels at width 64), ``depth: 50`` the :class:`Bottleneck`
    ResNet-50 (``e = 4``: 256/512/1024/2048). With ``out_channels`` other than ``8e·width`` a
    1×1 conv + BN projects the last level.

    ``depth: 50`` is the ESANet R50 encoder (Seichter et al., ICRA 2021, ``--encoder resnet50``:
    torchvision's v1.5 bottleneck ResNet-50 with its ImageNet weights, a depth encoder's ``conv1``
    summed over RGB), the largest encoder of the ESANet code base the MMANet authors built on for
    NYUv2 and Cityscapes. (Their released training scripts run ESANet's default ResNet-34 with
    NonBottleneck-1D blocks, which the shipped configs approximate with ``depth: 34``.)

    Cost per encoder at width 64 (stem + layer1..4, no fc; conv multiply-accumulates):

    ====== ============ =============== ===============
    depth  parameters   GMAC 224×224    GMAC 480×640
    ====== ============ =============== ===============
    18     11,176,512   1.8             11.1
    34     21,284,672   3.7             22.4
    50     23,508,032   4.1             25.0
    ====== ============ =============== ===============

    The depth-50 skip maps are 4× wider (256 … 2048 channels) and the ``esanet_decoder`` head's
    decoder widths follow them: the RGB-D network (two encoders, ``se_add``, decoder ``blocks: 3``,
    40 classes) has 136.8 M parameters, 88.4 M in the head, against 48.2 M / 5.6 M at depth 34
    (ESANet's decoder keeps 512/256/128 channels whatever the encoder, adapting the skips with
    1×1 convs). Weights: :meth:`load_torchvision`
    takes torchvision's ``resnet50`` ``state_dict`` (``model.pretrained``).
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
        if len(input_shape) != 3:
            raise ValueError(f"the resnet encoder needs (C, H, W) images, got per-sample shape {tuple(input_shape)}")
        if depth not in RESNET_LAYERS:
            raise ValueError(f"resnet depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
        self.depth = depth
        widths = resnet_widths(width, RESNET_BLOCKS[depth].expansion)
        self.stem = resnet_stem(int(input_shape[0]), width, stem_kernel)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet_layers(depth, width)
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
        """Load torchvision's ``resnet{depth}`` stem and layer1..4 (strict; ``fc`` ignored; ``conv1``
        adapted to the input channels). A file of another depth raises a
        :class:`~mmanet.models.backbones.StateDictMismatchError` that says which depth it holds."""
        modules = {"stem": self.stem, "layer1": self.layer1, "layer2": self.layer2, "layer3": self.layer3}
        modules["layer4"] = self.layer4
        try:
            return load_torchvision_resnet(state_dict, modules, strict=True)
        except StateDictMismatchError as err:
            found = torchvision_resnet_depth(state_dict)
            if found is None or found == self.depth:
                raise
            hint = (
                f"the state_dict is a torchvision ResNet-{found} but this encoder is a ResNet-{self.depth} "
                f"(model.encoder.depth: {self.depth}); give a resnet{self.depth} file or set the depth to match"
            )
            raise StateDictMismatchError(err.missing, err.unexpected, err.mismatched, hint=hint) from None
