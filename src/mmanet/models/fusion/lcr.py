"""LCR fusion: latent correlation representation + attention fusion (docs/baselines.md, LCR)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.models.fusion.base import Fusion, FusionOutput, TaskLoss, grouped_uniform_, register_fusion, zero_missing


@register_fusion("lcr")
class LCRFusion(Fusion):
    """Latent correlation representation fused with channel + spatial attention → ``C`` channels.

    Paper (Zhou et al., "Latent correlation representation learning for brain tumour
    segmentation with missing MRI modalities", TIP 2021; no official code): a per-modality
    parameter estimator gives coefficients that express each modality as a linear
    combination of the others, the correlated representations are concatenated and fused
    by channel and spatial attention. Kept: estimator GAP → FC → LeakyReLU → FC per modality
    and per sample; x̃_i built from the OTHER present modalities; attention fusion; an L1
    reconstruction loss. Changed: the estimator also outputs a self-weight α_ii so that
    x̃_i = α_ii x_i + r_i with r_i = Σ_{j≠i, present} α_ij x_j + δ_i (a lone modality keeps
    its content; α_ii is initialised to 1, the other coefficients near 0); the loss
    reconstructs x_i from r_i (self term excluded); x̃_i of a missing modality is zero.
    """

    def __init__(
        self,
        num_modalities: int,
        channels: int,
        num_classes: int,
        spatial: bool = False,
        hidden: int | None = None,
        reduction: int = 8,
    ) -> None:
        super().__init__(num_modalities, channels, num_classes, spatial)
        m, c = num_modalities, channels
        hidden = hidden or max(c // 2, 4)
        # Per-modality estimators as stacked weights: every modality's estimator runs on
        # every row, so it stays in the graph even when the modality is missing batch-wide.
        self.est_w1 = nn.Parameter(torch.empty(m, c, hidden))
        self.est_b1 = nn.Parameter(torch.empty(m, hidden))
        self.est_w2 = nn.Parameter(torch.empty(m, hidden, m + 1))  # α_i1..α_iM (α_ii = self), δ_i
        self.est_b2 = nn.Parameter(torch.empty(m, m + 1))
        grouped_uniform_(self.est_w1, self.est_b1, c)
        grouped_uniform_(self.est_w2, self.est_b2, hidden)
        with torch.no_grad():
            self.est_w2.mul_(0.1)
            self.est_b2.zero_()
            self.est_b2[:, :m].copy_(torch.eye(m))  # start at x̃_i ≈ x_i
        z = m * c
        ca_hidden = max(z // reduction, 4)
        self.channel_attention = nn.Sequential(
            nn.Linear(z, ca_hidden), nn.LeakyReLU(0.2), nn.Linear(ca_hidden, z), nn.Sigmoid()
        )
        self.spatial_attention = nn.Sequential(nn.Linear(z, 1), nn.Sigmoid())
        self.out = nn.Linear(z, c)
        self.out_channels = c

    def coefficients(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample ``alpha: (B, M, M)`` (row i: coefficients of modality i) and ``delta: (B, M)``."""
        x = zero_missing(features, mask)
        pooled = x.flatten(3).mean(dim=3) if x.dim() > 3 else x  # (B, M, C)
        h = F.leaky_relu(torch.einsum("bmc,mch->bmh", pooled, self.est_w1) + self.est_b1, 0.2)
        params = torch.einsum("bmh,mho->bmo", h, self.est_w2) + self.est_b2  # (B, M, M+1)
        return params[..., :-1], params[..., -1]

    def _representations(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x̃``, the cross-modal part ``r`` (both ``(B, M, C, *S)``, zero for missing i) and masked ``x``."""
        x = zero_missing(features, mask)
        alpha, delta = self.coefficients(features, mask)
        m = mask.to(x.dtype)
        eye = torch.eye(self.num_modalities, dtype=x.dtype, device=x.device)
        cross = alpha * (1 - eye) * m.unsqueeze(1)  # α_ij for j ≠ i, j present
        self_w = torch.diagonal(alpha, dim1=1, dim2=2)  # α_ii
        x_flat = x.flatten(2)  # (B, M, C·P)
        r = torch.einsum("bij,bjf->bif", cross, x_flat) + delta.unsqueeze(-1)
        tilde = self_w.unsqueeze(-1) * x_flat + r
        tilde = zero_missing(tilde, mask).reshape(x.shape)
        r = zero_missing(r, mask).reshape(x.shape)
        return tilde, r, x

    def forward(self, features: Tensor, mask: Tensor) -> FusionOutput:
        """The attention-fused ``x̃``; a training forward keeps ``r``, the masked ``x`` and the mask (``lcr_recon``)."""
        tilde, r, x = self._representations(features, mask)
        b, spatial = tilde.shape[0], tilde.shape[3:]
        z = tilde.flatten(1, 2).reshape(b, self.num_modalities * self.channels, -1).transpose(1, 2)
        ca = self.channel_attention(z.mean(dim=1, keepdim=True))  # z: (B, P, M·C), ca: (B, 1, M·C)
        sa = self.spatial_attention(z)  # (B, P, 1)
        out = self.out(z * ca + z * sa)  # (B, P, C)
        fused = out.transpose(1, 2).reshape(b, self.channels, *spatial)
        return FusionOutput(fused, {"mask": mask, "r": r, "x": x} if self.keeps_aux() else {})

    def auxiliary_losses(self, out: FusionOutput, target: Tensor, loss_fn: TaskLoss) -> dict[str, Tensor]:
        """``lcr_recon``: mean L1 between x_i and r_i over present i with another present modality.

        Rows where i is the only present modality are excluded (r_i = δ_i would only learn
        the feature mean); if no pair qualifies, the loss is an exact 0 still in the graph.
        """
        if not out.aux:
            return {}
        mask, r, x = out.aux["mask"], out.aux["r"], out.aux["x"]
        others = mask.sum(dim=1, keepdim=True) - mask.long()  # present modalities other than i
        eligible = mask & (others > 0)  # (B, M)
        err = (r - x).abs().flatten(2).mean(dim=2)  # (B, M)
        loss = zero_missing(err, eligible).sum()
        return {"lcr_recon": loss / eligible.sum().clamp_min(1).to(err.dtype)}
