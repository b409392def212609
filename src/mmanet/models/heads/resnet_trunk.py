"""The SF network's shared trunk as a head: ResNet layer3 + layer4 on the fused map → pool → classifier."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from mmanet.models.backbones import LoadSummary, load_torchvision_resnet, make_layer, resnet_widths
from mmanet.models.encoders.base import FeatureInfo
from mmanet.models.heads.base import Head, HeadOutput, as_feature_info, register_head


@register_head("resnet_trunk")
class ResNetTrunkHead(Head):
    """Fused map ``(B, C_f, H, W)`` → layer3 (→ 4·width, /2) → layer4 (→ 8·width, /2) → GAP → logits.

    The SF network of CASIA-SURF (BASELINES.md): the per-modality SE features are fused (concat:
    ``C_f = M·2·width``), then ResNet-18's layer3 and layer4 are shared. Named features: ``"trunk"``
    — layer4's final feature map, what MAD distils for face anti-spoofing (the teacher's and the
    deployment network's trunks have the same shape) — and ``"embedding"``, its pooled vector.
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
        trunk = self.layer4(self.layer3(fused[-1]))
        embedding = trunk.mean(dim=(2, 3))
        return HeadOutput(self.classifier(self.dropout(embedding)), {"trunk": trunk, "embedding": embedding})

    def load_torchvision(self, state_dict: Mapping[str, Tensor]) -> LoadSummary:
        """Load torchvision's layer4 and every layer3 tensor whose shape fits (its first block takes
        ``C_f`` fused channels instead of 128, so that block's first conv and downsample keep their init)."""
        return load_torchvision_resnet(state_dict, {"layer3": self.layer3, "layer4": self.layer4}, strict=False)
