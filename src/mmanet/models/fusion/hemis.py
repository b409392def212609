"""HeMIS fusion: first and second moments over the PRESENT modalities (docs/baselines.md, HeMIS)."""

from __future__ import annotations

import torch
from torch import Tensor

from mmanet.models.fusion.base import Fusion, FusionOutput, register_fusion, zero_missing


def present_moments(features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and biased variance over the present modalities, in float32: ``(B, C, *S)`` each.

    ``mean = Σ_k m_k x_k / n``, ``var = Σ_k m_k (x_k − mean)² / n`` with ``n = Σ_k m_k ≥ 1``.
    Missing modalities are selected away with ``torch.where`` before any arithmetic, so
    their content (even inf/NaN) reaches neither the values nor the gradients; ``var`` is
    exactly 0 when one modality is present (no ``torch.var``/``std`` on one element).
    """
    x = zero_missing(features.float(), mask)
    n = mask.float().sum(dim=1).reshape((-1,) + (1,) * (x.dim() - 2)).clamp_min(1.0)
    mean = x.sum(dim=1) / n
    var = zero_missing(x - mean.unsqueeze(1), mask).pow(2).sum(dim=1) / n
    return mean, var


@register_fusion("hemis")
class HeMISFusion(Fusion):
    """``concat(mean, var)`` over the present modalities: ``(B, M, C, *S) -> (B, 2C, *S)``.

    Paper (Havaei et al., MICCAI 2016): per-modality CNN back-ends, the "abstraction layer"
    takes the mean and variance across the available modalities' feature maps, and a
    shared front-end predicts from them. Kept exactly: the moments over present modalities
    only (biased variance, 0 for one modality), no learnable parameters, no 1×1 projection
    (``out_channels = 2C``; the head adapts). Computed in float32, returned in the input dtype.
    """

    def __init__(self, num_modalities: int, channels: int, num_classes: int, spatial: bool = False) -> None:
        super().__init__(num_modalities, channels, num_classes, spatial)
        self.out_channels = 2 * channels

    def forward(self, features: Tensor, mask: Tensor) -> FusionOutput:
        mean, var = present_moments(features, mask)
        return FusionOutput(torch.cat([mean, var], dim=1).to(features.dtype))
