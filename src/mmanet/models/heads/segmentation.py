"""A light segmentation decoder over the fused pyramid (a place for dense heads, docs/design.md §2).

Top-down (FPN-style, Lin et al. 2017): every fused map level gets a 1×1 lateral projection
to ``channels``; from the coarsest level down, the running map is upsampled ×2-ish
(bilinear, to the next level's size) and added to the next lateral; a 3×3 conv with
GroupNorm and GELU refines it; a 1×1 classifier gives class logits at the finest level's
resolution, upsampled by that level's stride to the input resolution. GroupNorm keeps rows
independent. The refined finest map is exposed as ``"decoder"`` (per-pixel MAD).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.models.encoders.base import FeatureInfo
from mmanet.models.heads.base import Head, HeadOutput, register_head


@register_head("segmentation")
class SegmentationHead(Head):
    levels = "all"
    feature_names = ("decoder",)
    task = "segmentation"

    def __init__(self, fused_info: list[FeatureInfo], num_classes: int, channels: int = 64) -> None:
        super().__init__()
        maps = [info for info in fused_info if not info.is_global]
        if not maps or len(maps) != len(fused_info):
            raise ValueError(
                f"the segmentation head needs feature-map levels only, got {fused_info}; "
                "use image encoders without pooling (e.g. cnn with pool: false)"
            )
        self.laterals = nn.ModuleList(nn.Conv2d(info.channels, channels, 1) for info in maps)
        self.refine = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(min(8, channels), channels), nn.GELU()
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.finest_stride = int(maps[0].stride or 1)  # map levels (checked above) have a stride
        self.num_classes = num_classes

    def forward(self, fused: list[Tensor]) -> HeadOutput:
        x = self.laterals[-1](fused[-1])
        for lateral, level in zip(reversed(self.laterals[:-1]), reversed(fused[:-1]), strict=True):
            x = F.interpolate(x, size=level.shape[-2:], mode="bilinear", align_corners=False) + lateral(level)
        decoder = self.refine(x)
        logits = self.classifier(decoder)
        if self.finest_stride > 1:
            logits = F.interpolate(logits, scale_factor=self.finest_stride, mode="bilinear", align_corners=False)
        return HeadOutput(logits, {"decoder": decoder})
