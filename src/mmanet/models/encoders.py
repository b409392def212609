"""Per-modality encoders (DESIGN §2): each maps one modality's input to ``(B, C)`` or ``(B, C, H, W)``.

Every encoder is independent of the present mask: a dropped modality is still encoded
(so every parameter is used each step) and removed later by the fusion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mmanet.registry import Registry

ENCODERS: Registry[type[nn.Module]] = Registry("encoder")
register_encoder = ENCODERS.register


@register_encoder("mlp")
class MLPEncoder(nn.Module):
    """Vector modality ``(B, F)`` → ``(B, C)``: Linear → LayerNorm → GELU → Dropout → Linear.

    LayerNorm (per sample) rather than BatchNorm, so batch statistics never mix samples
    whose modalities were dropped differently (BASELINES.md, pitfalls).
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
        self.out_channels = out_channels

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.net(x)


@register_encoder("cnn")
class SmallCNNEncoder(nn.Module):
    """Image modality ``(B, C_in, H, W)`` → ``(B, C)`` (pooled) or a feature map.

    Three 3×3 conv blocks (GroupNorm, GELU), the last two with stride 2.
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
        self.out_channels = out_channels

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        y = self.features(x)
        if self.pool:
            y = y.mean(dim=(2, 3))
        return self.dropout(y)


@register_encoder("gru")
class GRUEncoder(nn.Module):
    """Sequence modality ``(B, T, F)`` (+ optional lengths) → ``(B, C)``.

    A bidirectional GRU; the output is the masked mean of its states over the valid steps,
    so padding beyond a sample's length never changes its feature.
    """

    def __init__(self, input_shape: Sequence[int], out_channels: int, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"the gru encoder needs (T, F) inputs, got per-sample shape {tuple(input_shape)}")
        self.gru = nn.GRU(int(input_shape[1]), hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, out_channels))
        self.out_channels = out_channels

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        states, _ = self.gru(x)
        steps = torch.arange(x.shape[1], device=x.device)
        if lengths is None:
            valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        else:
            valid = steps[None, :] < lengths.clamp(min=1)[:, None]
        weights = valid.to(states.dtype).unsqueeze(-1)
        pooled = (states * weights).sum(1) / weights.sum(1)
        return self.proj(pooled)


def default_encoder_for(input_shape: Sequence[int]) -> str:
    """Encoder chosen from the per-sample shape: (F,) → mlp, (T, F) → gru, (C, H, W) → cnn."""
    rank = len(input_shape)
    if rank == 1:
        return "mlp"
    if rank == 2:
        return "gru"
    if rank == 3:
        return "cnn"
    raise ValueError(
        f"no default encoder for per-sample shape {tuple(input_shape)}; expected (F,), (T, F) or (C, H, W)"
    )


def build_encoder(name: str, input_shape: Sequence[int], out_channels: int, **options) -> nn.Module:
    return ENCODERS.get(name)(input_shape, out_channels, **options)
