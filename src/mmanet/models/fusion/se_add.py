"""ESANet's fusion, mask-aware: ``fused = Σ_k m_k · SE_k(x_k)`` (docs/baselines.md "ESANet", ESANet-MD)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmanet.models.backbones import SqueezeExcitation
from mmanet.models.fusion.base import Fusion, FusionOutput, register_fusion, zero_missing


@register_fusion("se_add")
class SEAddFusion(Fusion):
    """Per modality a squeeze-and-excitation re-weighting (1×1 convs, r = 16), then the sum over the
    PRESENT modalities: ``(B, M, C, *S) -> (B, C, *S)`` (Seichter et al., ESANet, ICRA 2021).

    ESANet adds the re-weighted depth map to the RGB map after every encoder stage; with the
    presence mask this is ESANet-MD's ``Σ_i m_i SE_i(x_i)``. Missing modalities are selected away
    after the SE (``torch.where``, so their content cannot leak); every SE still runs (DDP).
    """

    def __init__(
        self, num_modalities: int, channels: int, num_classes: int, spatial: bool = False, reduction: int = 16
    ):
        super().__init__(num_modalities, channels, num_classes, spatial)
        self.se = nn.ModuleList(SqueezeExcitation(channels, reduction) for _ in range(num_modalities))
        self.out_channels = channels

    def forward(self, features: Tensor, mask: Tensor) -> FusionOutput:
        safe = zero_missing(features, mask)
        weighted = torch.stack([se(safe[:, k]) for k, se in enumerate(self.se)], dim=1)
        return FusionOutput(zero_missing(weighted, mask).sum(dim=1))
