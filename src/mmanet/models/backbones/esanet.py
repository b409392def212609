"""ESANet-style RGB-D segmentation pieces (Seichter et al., "Efficient RGB-D Semantic Segmentation
for Indoor Scene Analysis", ICRA 2021).

* :class:`NonBottleneck1D` — the factorised residual block of ERFNet (Romera et al., "ERFNet:
  Efficient Residual Factorized ConvNet for Real-Time Semantic Segmentation", T-ITS 2018).
* :class:`PyramidPoolingContext` — ESANet's context module (PSPNet-style pyramid pooling,
  bins (1, 5) in the paper).
* :class:`LearnedUpsample` — ×2 nearest upsampling + a depthwise 3×3 conv initialised to
  bilinear weights (ESANet's "learned upsampling").
* :class:`DecoderModule` — 3×3 conv-BN-ReLU → NonBottleneck-1D blocks → learned ×2 upsample → + skip.
* :class:`SkipAdapter` — the 1×1 conv-BN-ReLU on encoder skips.
* :class:`SqueezeExcitation` (Hu et al., SE-Net) is re-exported from :mod:`.resnet` for the
  SE-add fusion, which the model itself implements (masked: ``Σ_i m_i · SE_i(x_i)``).

All resampling here avoids the ops that raise under ``torch.use_deterministic_algorithms(True)``
on CUDA (``AdaptiveAvgPool2d`` and bilinear ``interpolate`` backward, reflection padding): adaptive
pooling and bilinear resizing are products with small interpolation matrices
(:func:`adaptive_avg_pool2d`, :func:`resize_bilinear`, numerically equal to the torch ops), and
nearest upsampling / replicate padding are index-free tensor reshapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mmanet.models.backbones.resnet import SqueezeExcitation, init_resnet_weights

__all__ = [
    "ConvBNReLU",
    "DecoderModule",
    "LearnedUpsample",
    "NonBottleneck1D",
    "PyramidPoolingContext",
    "SkipAdapter",
    "SqueezeExcitation",
    "adaptive_avg_pool2d",
    "resize_bilinear",
]


# --------------------------------------------------------------------------------------------
# Deterministic resampling helpers
# --------------------------------------------------------------------------------------------


def _pool_matrix(out_size: int, in_size: int, like: Tensor) -> Tensor:
    """``(out, in)`` averaging matrix with AdaptiveAvgPool's bins ``[floor(i·in/out), ceil((i+1)·in/out))``."""
    i = torch.arange(out_size, device=like.device)
    start = (i * in_size) // out_size
    end = ((i + 1) * in_size + out_size - 1) // out_size
    j = torch.arange(in_size, device=like.device)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return (inside.to(torch.float32) / (end - start)[:, None].to(torch.float32)).to(like.dtype)


def _bilinear_matrix(out_size: int, in_size: int, like: Tensor) -> Tensor:
    """``(out, in)`` linear-interpolation matrix, ``align_corners=False`` (as ``F.interpolate`` with ``size=``)."""
    src = (torch.arange(out_size, device=like.device, dtype=torch.float64) + 0.5) * (in_size / out_size) - 0.5
    src = src.clamp(min=0.0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    w1 = src - i0.to(torch.float64)
    w0 = 1.0 - w1
    j = torch.arange(in_size, device=like.device)
    mat = (j[None, :] == i0[:, None]) * w0[:, None] + (j[None, :] == i1[:, None]) * w1[:, None]
    return mat.to(like.dtype)


def adaptive_avg_pool2d(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` for ``(B, C, H, W)``, as two matrix products (deterministic backward)."""
    out_h, out_w = size
    h, w = x.shape[-2:]
    if (out_h, out_w) == (h, w):
        return x
    return _pool_matrix(out_h, h, x) @ x @ _pool_matrix(out_w, w, x).transpose(0, 1)


def resize_bilinear(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` as matrix products (deterministic backward)."""
    out_h, out_w = int(size[0]), int(size[1])
    h, w = x.shape[-2:]
    if (out_h, out_w) == (h, w):
        return x
    return _bilinear_matrix(out_h, h, x) @ x @ _bilinear_matrix(out_w, w, x).transpose(0, 1)


def _upsample_nearest2x(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)


def _replicate_pad1(x: Tensor) -> Tensor:
    x = torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)
    return torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


class ConvBNReLU(nn.Sequential):
    """``conv`` (k×k, "same" padding, no bias) → ``bn`` → ``relu``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        padding = dilation * (kernel_size // 2)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.in_channels = in_ch
        self.out_channels = out_ch
        init_resnet_weights(self)


class SkipAdapter(ConvBNReLU):
    """ESANet's skip connection: 1×1 conv-BN-ReLU from the (fused) encoder map to the decoder width."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(in_ch, out_ch, kernel_size=1)


class NonBottleneck1D(nn.Module):
    """ERFNet's Non-bottleneck-1D residual block (Romera et al. 2018), keeps ``(B, C, H, W)``.

    ``3×1 → ReLU → 1×3 → BN → ReLU → 3×1 (dilated) → ReLU → 1×3 (dilated) → BN → Dropout2d``, plus
    the input, then ReLU. Dilation ``d`` acts along the kernel's long axis (padding ``d``), so every
    size — odd or even — is preserved. The two 3×1 convs carry a bias, the 1×3 convs (each followed
    by BN) do not.
    """

    def __init__(self, channels: int, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        d = dilation
        self.conv3x1_1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1), bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv3x1_2 = nn.Conv2d(channels, channels, (3, 1), padding=(d, 0), dilation=(d, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(channels, channels, (1, 3), padding=(0, d), dilation=(1, d), bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.dropout: nn.Module = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.channels = channels
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.conv3x1_1(x))
        out = self.relu(self.bn1(self.conv1x3_1(out)))
        out = self.relu(self.conv3x1_2(out))
        out = self.dropout(self.bn2(self.conv1x3_2(out)))
        return self.relu(out + x)


class PyramidPoolingContext(nn.Module):
    """ESANet's context module: pyramid pooling (Zhao et al., PSPNet) with ``bins`` (ESANet: (1, 5)).

    For each bin ``b``: adaptive average pooling to ``b×b`` → 1×1 conv-BN-ReLU (``in_ch //
    len(bins)`` channels) → bilinear upsampling back to the input size; the input and all branches
    are concatenated and a 1×1 conv-BN-ReLU maps to ``out_ch``. On maps smaller than a bin (e.g.
    2×2 at 1/32 of a 64×64 image) the bin is clamped per axis to the map size.

    Note: the pooled branches' BatchNorm sees ``B·b²`` values per channel, so the ``b = 1`` branch
    cannot train with batch size 1 (BatchNorm's own error) — the same as ESANet.
    """

    def __init__(self, in_ch: int, out_ch: int, bins: Sequence[int] = (1, 5)) -> None:
        super().__init__()
        if not bins or any(int(b) < 1 for b in bins):
            raise ValueError(f"bins must be positive integers, got {tuple(bins)}")
        self.bins = tuple(int(b) for b in bins)
        branch_ch = max(1, in_ch // len(self.bins))
        self.branches = nn.ModuleList(ConvBNReLU(in_ch, branch_ch, kernel_size=1) for _ in self.bins)
        self.project = ConvBNReLU(in_ch + branch_ch * len(self.bins), out_ch, kernel_size=1)
        self.in_channels = in_ch
        self.out_channels = out_ch

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        features = [x]
        for b, branch in zip(self.bins, self.branches, strict=True):
            pooled = adaptive_avg_pool2d(x, (min(b, h), min(b, w)))
            features.append(resize_bilinear(branch(pooled), (h, w)))
        return self.project(torch.cat(features, dim=1))


class LearnedUpsample(nn.Module):
    """ESANet's learned ×2 upsampling: nearest ×2, replicate-pad 1, depthwise 3×3 conv (with bias).

    The kernel starts as ``[1, 2, 1]ᵀ[1, 2, 1] / 16`` (bias 0): nearest-×2 followed by this kernel
    is *exactly* bilinear ×2 upsampling with ``align_corners=False`` (borders included, thanks to
    the replicate padding), so training starts from bilinear interpolation and may refine it.
    Output: ``(B, C, 2H, 2W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=0, groups=channels, bias=True)
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16.0
        with torch.no_grad():
            self.conv.weight.copy_(kernel.expand(channels, 1, 3, 3))
            if self.conv.bias is not None:
                self.conv.bias.zero_()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(_replicate_pad1(_upsample_nearest2x(x)))


class DecoderModule(nn.Module):
    """One ESANet decoder module: 3×3 conv-BN-ReLU (``in_ch → out_ch``) → ``num_blocks`` ×
    :class:`NonBottleneck1D` → :class:`LearnedUpsample` (×2) → ``+ skip``.

    ``skip`` must have ``out_ch`` channels (pass it through a :class:`SkipAdapter`). When the
    upsampled map and the skip differ in size (odd encoder sizes: ``2·ceil(n/2) = n + 1``), the
    upsampled map is bilinearly resized to the skip's size before the addition; without a skip the
    output is exactly ``2H × 2W``. ESANet uses ``num_blocks=3``.
    """

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self.conv = ConvBNReLU(in_ch, out_ch, kernel_size=3)
        self.blocks = nn.Sequential(*(NonBottleneck1D(out_ch, dropout=dropout) for _ in range(num_blocks)))
        self.upsample = LearnedUpsample(out_ch)
        self.in_channels = in_ch
        self.out_channels = out_ch

    def forward_features(self, x: Tensor, skip: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(output, features)``: ``features`` is the map before upsampling (at ``x``'s resolution),
        where ESANet attaches its side output (deep supervision at 1/32, 1/16, 1/8)."""
        features = self.blocks(self.conv(x))
        out = self.upsample(features)
        if skip is not None:
            if skip.shape[1] != self.out_channels:
                raise ValueError(f"skip has {skip.shape[1]} channels, expected {self.out_channels}")
            if out.shape[-2:] != skip.shape[-2:]:
                out = resize_bilinear(out, skip.shape[-2:])
            out = out + skip
        return out, features

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        return self.forward_features(x, skip)[0]
