"""Encoders of vector modalities ``(B, F)``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from mmanet.models.encoders.base import Encoder, FeatureInfo, register_encoder


@register_encoder("mlp")
class MLPEncoder(Encoder):
    """Vector modality ``(B, F)`` → one global level ``(B, C)``: Linear → LayerNorm → GELU → Dropout → Linear.

    LayerNorm (per sample) rather than BatchNorm, so batch statistics never mix samples
    whose modalities were dropped differently (docs/baselines.md, pitfalls).
    """

    def __init__(self, input_shape: Sequence[int], out_channels: int, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        in_features = int(math.prod(input_shape))
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_channels),
        )
        self.feature_info = [FeatureInfo(out_channels, None)]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        return [self.net(x)]
