"""RFNet fusion: region-aware, mask-weighted fusion with separate and region-map losses (docs/baselines.md)."""

from __future__ import annotations

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
    task_logits,
    to_tokens,
    zero_missing,
)


@register_fusion("rfnet")
class RFNetFusion(Fusion):
    """Region-aware fusion (one scale) → ``C`` channels: ``C//2`` region-fused + ``C - C//2`` shortcut.

    Paper (Ding et al., "RFNet: region-aware fusion network for incomplete multi-modal brain
    tumour segmentation", ICCV 2021): at each decoder scale a probabilistic region map (PRM)
    splits the volume into tumour regions, per region each modality gets a sigmoid weight
    from its region-pooled feature, the weighted region features are fused, plus a shortcut
    of all features; a shared-weight decoder per modality and the PRMs are supervised too.
    Kept: PRM (R = num_classes regions) from a small per-position net (two 1×1 layers, for
    vectors a tiny classifier on the pooled vector) on the masked concatenation, detached
    before fusion; per-region MLP weights σ(MLP([v, mean prm_r])); f_r = Σ_k m_k w_k y_k prm_r.
    Simplified: one fusion scale, no InstanceNorm in the weight MLP (norm-free), the shared
    "decoder" is a linear classifier per position; the schedule that down-weights the fused
    loss early is left to the training loop.
    """

    def __init__(
        self,
        num_modalities: int,
        channels: int,
        num_classes: int,
        spatial: bool = False,
        hidden: int | None = None,
    ) -> None:
        super().__init__(num_modalities, channels, num_classes, spatial)
        if channels < 2:
            raise ValueError(f"rfnet fusion needs channels >= 2 (it splits them in halves), got {channels}")
        m, c, r = num_modalities, channels, num_classes
        hidden = hidden or c
        self.num_regions = r
        self.prm_net = nn.Sequential(nn.Linear(m * c, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, r))
        # One weight MLP per region, as stacked weights: (M·C + 1) -> hidden -> M.
        self.w1 = nn.Parameter(torch.empty(r, m * c + 1, hidden))
        self.b1 = nn.Parameter(torch.empty(r, hidden))
        self.w2 = nn.Parameter(torch.empty(r, hidden, m))
        self.b2 = nn.Parameter(torch.empty(r, m))
        grouped_uniform_(self.w1, self.b1, m * c + 1)
        grouped_uniform_(self.w2, self.b2, hidden)
        self.region_fuse = nn.Linear(r * c, c // 2)
        self.shortcut = nn.Linear(m * c, c - c // 2)
        self.sep_head = nn.Linear(c, num_classes)
        self.out_channels = c

    @staticmethod
    def _tokens(features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Masked tokens ``y: (B, M, P, C)`` and their per-position concatenation ``(B, P, M·C)``."""
        y = to_tokens(zero_missing(features, mask))
        b, m, p, c = y.shape
        return y, y.permute(0, 2, 1, 3).reshape(b, p, m * c)

    def fuse_parts(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Fused ``(B, C, *S)``, PRM logits ``(B, P, R)``, effective weights ``m_k·w_k: (B, R, M)`` and
        the masked tokens ``(B, M, P, C)`` the PRM net read.

        While the auxiliary losses are kept (:meth:`keeps_aux`), the PRM net and the auxiliary heads read
        their own selection of the masked tokens: the fused path uses the PRM detached only, so the two
        paths then share no node that carries a gradient, and each one's backward is what it is alone (a
        selection, not a second pass: the PRM net runs once).
        """
        spatial = tuple(features.shape[3:])
        y, cat = self._tokens(features, mask)
        b, m, p, c = y.shape
        y_aux, cat_aux = self._tokens(features, mask) if self.keeps_aux() else (y, cat)
        prm_logits = self.prm_net(cat_aux)
        prm = prm_logits.detach().softmax(dim=-1)  # (B, P, R)
        prm_mean = prm.mean(dim=1)  # (B, R)
        v = torch.einsum("bmpc,bpr->brmc", y, prm) / p / (prm_mean + 1e-7)[..., None, None]
        inp = torch.cat([v.reshape(b, self.num_regions, m * c), prm_mean.unsqueeze(-1)], dim=-1)
        h = F.leaky_relu(torch.einsum("bri,rih->brh", inp, self.w1) + self.b1, 0.2)
        w = torch.sigmoid(torch.einsum("brh,rhm->brm", h, self.w2) + self.b2)  # (B, R, M)
        eff = w * mask.to(w.dtype).unsqueeze(1)
        f = torch.einsum("brm,bmpc->bprc", eff, y) * prm.unsqueeze(-1)  # (B, P, R, C)
        out = torch.cat([self.region_fuse(f.reshape(b, p, -1)), self.shortcut(cat)], dim=-1)
        return out.transpose(1, 2).reshape(b, c, *spatial), prm_logits, eff, y_aux

    def forward(self, features: Tensor, mask: Tensor) -> FusionOutput:
        """The fused feature; a training forward keeps the masked tokens, the PRM logits and the mask."""
        fused, prm_logits, _, tokens = self.fuse_parts(features, mask)
        aux = {"mask": mask, "tokens": tokens, "prm_logits": prm_logits} if self.keeps_aux() else {}
        return FusionOutput(fused, aux)

    def auxiliary_losses(self, out: FusionOutput, target: Tensor, loss_fn: TaskLoss) -> dict[str, Tensor]:
        """``rfnet_sep``: shared head on each present modality; ``rfnet_prm``: PRM logits as predictions."""
        if not out.aux:
            return {}
        mask, tokens, prm_logits, spatial = out.aux["mask"], out.aux["tokens"], out.aux["prm_logits"], out.spatial
        return {
            "rfnet_sep": per_modality_task_loss(self.sep_head, tokens, mask, spatial, target, loss_fn),
            "rfnet_prm": loss_fn(task_logits(prm_logits, spatial, target), target),
        }
