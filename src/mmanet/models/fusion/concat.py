"""SF / SF-MD fusion: zero the dropped modalities' features and concatenate (docs/baselines.md, SF)."""

from __future__ import annotations

from torch import Tensor

from mmanet.models.fusion.base import Fusion, FusionOutput, register_fusion, zero_missing


@register_fusion("concat")
class ConcatFusion(Fusion):
    """``concat_m (m_m · x_m)`` along channels: ``(B, M, C, *S) -> (B, M·C, *S)``.

    A missing modality's feature is replaced by zeros (``torch.where``, so even inf/NaN content
    cannot reach the output); the encoder still runs, keeping every parameter in the graph.
    Declares ``masked_concat``: a head with a linear prefix may split it per modality.
    """

    masked_concat = True

    def __init__(self, num_modalities: int, channels: int, num_classes: int, spatial: bool = False) -> None:
        super().__init__(num_modalities, channels, num_classes, spatial)
        self.out_channels = num_modalities * channels

    def forward(self, features: Tensor, mask: Tensor) -> FusionOutput:
        return FusionOutput(zero_missing(features, mask).flatten(1, 2))
