"""Encoders of sequence modalities ``(B, T, F)`` with optional per-sample valid ``lengths``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mmanet.models.encoders.base import Encoder, FeatureInfo, register_encoder


def valid_steps(x: Tensor, lengths: Tensor | None) -> Tensor:
    """``(B, T)`` bool mask of the valid time steps of a padded sequence batch ``(B, T, F)``.

    Lengths are clamped to ``1..T`` (a genuinely missing sample's length is irrelevant; it is
    removed by the fusion, but it must not produce an empty mean).
    """
    steps = torch.arange(x.shape[1], device=x.device)
    if lengths is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return steps[None, :] < lengths.to(x.device).clamp(1, x.shape[1])[:, None]


def masked_mean(states: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``states`` ``(B, T, C)`` over the valid steps ``(B, T)`` (padding cannot leak, not even NaN)."""
    kept = torch.where(valid.unsqueeze(-1), states, torch.zeros((), dtype=states.dtype, device=states.device))
    return kept.sum(1) / valid.sum(1, keepdim=True).to(states.dtype)


def reverse_valid(x: Tensor, valid: Tensor) -> Tensor:
    """Reverse each sequence within its valid steps; padding stays in place: ``[a b c _ _] → [c b a _ _]``."""
    lengths = valid.sum(1, keepdim=True)
    steps = torch.arange(x.shape[1], device=x.device)[None, :]
    index = torch.where(valid, lengths - 1 - steps, steps)
    return torch.gather(x, 1, index.unsqueeze(-1).expand_as(x))


@register_encoder("gru")
class GRUEncoder(Encoder):
    """Sequence modality ``(B, T, F)`` (+ optional lengths) → one global level ``(B, C)``.

    A bidirectional GRU written as two unidirectional ones: the backward GRU reads each
    sequence reversed *within its valid length*, so neither direction ever sees padding
    (a plain bidirectional GRU's backward pass starts at step T − 1, in the padding). The
    output is the masked mean of both directions' states over the valid steps: a sample's
    feature depends neither on the padding's content nor on the padded length T.
    """

    def __init__(self, input_shape: Sequence[int], out_channels: int, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"the gru encoder needs (T, F) inputs, got per-sample shape {tuple(input_shape)}")
        features = int(input_shape[1])
        self.forward_gru = nn.GRU(features, hidden, batch_first=True)
        self.backward_gru = nn.GRU(features, hidden, batch_first=True)
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, out_channels))
        self.feature_info = [FeatureInfo(out_channels, None)]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        valid = valid_steps(x, lengths)
        x = torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
        forward_states, _ = self.forward_gru(x)  # state t depends on steps <= t only
        backward_states, _ = self.backward_gru(reverse_valid(x, valid))  # valid steps stay in front
        pooled = torch.cat([masked_mean(forward_states, valid), masked_mean(backward_states, valid)], dim=1)
        return [self.proj(pooled)]


class _TemporalBlock(nn.Module):
    """Dilated 1-D convolution over time → LayerNorm over channels (per step) → GELU → Dropout."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2))
        self.norm = nn.LayerNorm(channels)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:  # (B, T, C)
        y = self.conv(h.transpose(1, 2)).transpose(1, 2)
        return self.dropout(self.act(self.norm(y)))


@register_encoder("tcn")
class TemporalConvEncoder(Encoder):
    """Sequence modality ``(B, T, F)`` (+ lengths) → one global level ``(B, C)``, temporal convolutions.

    A 1×1 input projection, then ``num_layers`` residual blocks of ``kernel_size``-tap
    convolutions with dilations 1, 2, 4 …, and the masked mean over the valid steps.
    Padding steps are zeroed before every convolution and the normalisation is per step
    (LayerNorm over channels, never over time), so a sample's feature is exactly the one of
    its unpadded sequence: it depends neither on the padding's content nor on T.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        out_channels: int,
        hidden: int = 64,
        dropout: float = 0.1,
        kernel_size: int = 3,
        num_layers: int = 3,
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"the tcn encoder needs (T, F) inputs, got per-sample shape {tuple(input_shape)}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"the tcn kernel_size must be odd, got {kernel_size}")
        if num_layers < 1:
            raise ValueError(f"the tcn needs at least one layer, got num_layers={num_layers}")
        self.input = nn.Linear(int(input_shape[1]), hidden)
        self.blocks = nn.ModuleList(_TemporalBlock(hidden, kernel_size, 2**i, dropout) for i in range(num_layers))
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, out_channels))
        self.feature_info = [FeatureInfo(out_channels, None)]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        valid = valid_steps(x, lengths)
        keep = valid.unsqueeze(-1)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        h = self.input(torch.where(keep, x, zero))
        for block in self.blocks:
            h = torch.where(keep, h, zero)  # the convolution must only see valid steps (and zeros)
            h = h + block(h)
        return [self.proj(masked_mean(h, valid))]
