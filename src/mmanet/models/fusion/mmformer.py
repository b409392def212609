"""mmFormer fusion: intra-modal + mask-aware inter-modal transformers (docs/baselines.md, mmFormer)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.models.fusion.base import (
    Fusion,
    FusionOutput,
    TaskLoss,
    grouped_uniform_,
    per_modality_task_loss,
    register_fusion,
    to_tokens,
    zero_missing,
)


def _sinusoid(n: int, dim: int, device: torch.device) -> Tensor:
    """1-D sine/cosine encoding of positions ``0..n-1``: ``(n, dim)``."""
    half = max((dim + 1) // 2, 1)
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / half)
    angle = torch.arange(n, device=device, dtype=torch.float32)[:, None] * freq[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)[:, :dim]


def sinusoidal_positions(spatial: tuple[int, ...], dim: int, device: torch.device) -> Tensor:
    """Fixed positional encoding ``(P, dim)`` for a feature map of shape ``spatial``.

    2-D maps: half the channels encode the row, half the column; other ranks encode the
    flattened position. Vectors (``spatial == ()``, one token) get zeros.
    """
    p = math.prod(spatial)
    if not spatial:
        return torch.zeros(1, dim, device=device)
    if len(spatial) == 2:
        h, w = spatial
        dy = dim // 2
        ey = _sinusoid(h, dy, device)[:, None, :].expand(h, w, dy)
        ex = _sinusoid(w, dim - dy, device)[None, :, :].expand(h, w, dim - dy)
        return torch.cat([ey, ex], dim=-1).reshape(p, dim)
    return _sinusoid(p, dim, device)


class PreNormBlock(nn.Module):
    """Pre-norm transformer layer: ``x + MHA(LN x)``, then ``x + MLP(LN x)``; optional key mask.

    ``key_mask: (B, N)`` bool, True = the token takes part as a key/value. Every row must
    have at least one True (an all-masked softmax row is NaN).
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"token dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


def _default_heads(dim: int) -> int:
    return next(h for h in (4, 2, 1) if dim % h == 0)


@register_fusion("mmformer")
class MMFormerFusion(Fusion):
    """Per-modality tokens → intra-modal transformer → masked inter-modal transformer → ``C`` channels.

    Paper (Zhang et al., "mmFormer: multimodal medical transformer for incomplete multimodal
    learning of brain tumour segmentation", MICCAI 2022): hybrid per-modality encoders (CNN +
    intra-modal transformer), an inter-modal transformer over all modalities' tokens, a
    convolutional decoder, and auxiliary shared-weight decoders per modality. Kept: 1×1
    projection to D tokens with positional information, one pre-norm intra-modal layer per
    modality, one inter-modal layer. Changed: missing modalities are masked out as keys (not
    zero-filled tokens) and their query outputs zeroed; (B, M, N, D) → (B, N, M·D) is a real
    permute; positions are a learned per-modality embedding + fixed 2-D sinusoidal encoding
    (any H, W); D = C, MLP 2·D, no dropout; no deep supervision, the per-modality head is a
    linear classifier on the encoder features.
    """

    def __init__(
        self,
        num_modalities: int,
        channels: int,
        num_classes: int,
        spatial: bool = False,
        dim: int | None = None,
        heads: int | None = None,
        mlp_ratio: int = 2,
    ) -> None:
        super().__init__(num_modalities, channels, num_classes, spatial)
        m, c = num_modalities, channels
        d = dim or c
        heads = heads or _default_heads(d)
        self.dim = d
        self.proj_w = nn.Parameter(torch.empty(m, c, d))
        self.proj_b = nn.Parameter(torch.empty(m, d))
        grouped_uniform_(self.proj_w, self.proj_b, c)
        self.modality_embed = nn.Parameter(torch.randn(m, d) * 0.02)
        self.intra = nn.ModuleList(PreNormBlock(d, heads, mlp_ratio * d) for _ in range(m))
        self.inter = PreNormBlock(d, heads, mlp_ratio * d)
        self.out = nn.Linear(m * d, c)
        self.sep_head = nn.Linear(c, num_classes)
        self.out_channels = c

    def forward(self, features: Tensor, mask: Tensor) -> FusionOutput:
        """The fused tokens; a training forward keeps the masked per-modality tokens and the mask (``mmformer_sep``)."""
        spatial = tuple(features.shape[3:])
        y = to_tokens(zero_missing(features, mask))  # (B, M, P, C)
        b, m, p, _ = y.shape
        t = torch.einsum("bmpc,mcd->bmpd", y, self.proj_w) + self.proj_b[:, None, :]
        pos = sinusoidal_positions(spatial, self.dim, y.device).to(t.dtype)
        t = t + self.modality_embed[None, :, None, :] + pos[None, None]
        # Every modality's intra layer runs on every row (stays in the graph for DDP).
        t = torch.stack([layer(t[:, i]) for i, layer in enumerate(self.intra)], dim=1)
        key_mask = mask[:, :, None].expand(b, m, p).reshape(b, m * p)
        u = self.inter(t.reshape(b, m * p, self.dim), key_mask).reshape(b, m, p, self.dim)
        u = zero_missing(u, mask)
        u = u.permute(0, 2, 1, 3).reshape(b, p, m * self.dim)  # (B, N, M·D): concat modalities per position
        fused = self.out(u).transpose(1, 2).reshape(b, self.channels, *spatial)
        return FusionOutput(fused, {"mask": mask, "tokens": y} if self.keeps_aux() else {})

    def auxiliary_losses(self, out: FusionOutput, target: Tensor, loss_fn: TaskLoss) -> dict[str, Tensor]:
        """``mmformer_sep``: shared head on each present modality's (pre-transformer) features."""
        if not out.aux:
            return {}
        mask, tokens = out.aux["mask"], out.aux["tokens"]
        return {"mmformer_sep": per_modality_task_loss(self.sep_head, tokens, mask, out.spatial, target, loss_fn)}
