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
class GRUEncoder(nn.Module):
    """Sequence modality ``(B, T, F)`` (+ optional lengths) → ``(B, C)``.

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
        self.out_channels = out_channels

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        valid = valid_steps(x, lengths)
        x = torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
        forward_states, _ = self.forward_gru(x)  # state t depends on steps <= t only
        backward_states, _ = self.backward_gru(reverse_valid(x, valid))  # valid steps stay in front
        pooled = torch.cat([masked_mean(forward_states, valid), masked_mean(backward_states, valid)], dim=1)
        return self.proj(pooled)


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
class TemporalConvEncoder(nn.Module):
    """Sequence modality ``(B, T, F)`` (+ optional lengths) → ``(B, C)`` with a temporal convolution network.

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
        self.out_channels = out_channels

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        valid = valid_steps(x, lengths)
        keep = valid.unsqueeze(-1)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        h = self.input(torch.where(keep, x, zero))
        for block in self.blocks:
            h = torch.where(keep, h, zero)  # the convolution must only see valid steps (and zeros)
            h = h + block(h)
        return self.proj(masked_mean(h, valid))


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
