"""Encoders of image modalities ``(B, C_in, H, W)``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mmanet.models.encoders.base import Encoder, FeatureInfo, register_encoder


@register_encoder("cnn")
class SmallCNNEncoder(Encoder):
    """Image modality ``(B, C_in, H, W)`` → a pyramid of three maps (+ a pooled global level).

    Three 3×3 conv blocks (GroupNorm, GELU — per-sample normalisation, rows stay independent),
    the last two with stride 2: levels ``(hidden, /1)``, ``(2·hidden, /2)``, ``(C, /4)``. With
    ``pool=True`` (default) a fourth, global level ``(B, C)`` is the mean of the last map —
    what a classification head needs. Dropout applies to the last level.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        out_channels: int,
        hidden: int = 32,
        dropout: float = 0.1,
        pool: bool = True,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"the cnn encoder needs (C, H, W) inputs, got per-sample shape {tuple(input_shape)}")
        c_in = int(input_shape[0])

        def block(ci: int, co: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(ci, co, 3, stride=stride, padding=1), nn.GroupNorm(min(8, co), co), nn.GELU()
            )

        self.features = nn.Sequential(
            block(c_in, hidden, 1), block(hidden, hidden * 2, 2), block(hidden * 2, out_channels, 2)
        )
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.feature_info = [FeatureInfo(hidden, 1), FeatureInfo(hidden * 2, 2), FeatureInfo(out_channels, 4)]
        if pool:
            self.feature_info.append(FeatureInfo(out_channels, None))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        levels = []
        for block in self.features:
            x = block(x)
            levels.append(x)
        if self.pool:
            levels.append(x.mean(dim=(2, 3)))
        levels[-1] = self.dropout(levels[-1])
        return levels
