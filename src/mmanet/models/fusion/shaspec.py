"""ShaSpec fusion: shared + specific features, missing shared features filled from the present ones.

Wang et al., "Multi-modal Learning with Missing Modality via Shared-Specific Feature
Modelling", CVPR 2023 (arXiv 2307.14126; official code github.com/billhhh/ShaSpec).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.models.fusion.base import (
    Fusion,
    FusionOutput,
    TaskLoss,
    grouped_uniform_,
    register_fusion,
    to_tokens,
    zero_missing,
)

#: negative slope of the activations of the shared and specific projections
LEAKY_SLOPE = 0.2


def present_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean over the PRESENT modalities of ``tokens: (B, M, P, C)`` -> ``(B, P, C)``.

    Missing modalities are selected away with ``torch.where`` before the sum, so their
    content (even inf/NaN) reaches neither the value nor the gradient; ``n = Σ_k m_k ≥ 1``.
    """
    n = mask.to(tokens.dtype).sum(dim=1).clamp_min(1.0)
    return zero_missing(tokens, mask).sum(dim=1) / n[:, None, None]


def shared_alignment_loss(shared: Tensor, mask: Tensor) -> Tensor:
    """Distribution alignment: mean L1 distance between a sample's shared features of two present modalities.

    ``shared: (B, M, P, C)``. Every unordered pair ``(i, j)``, ``i < j``, of modalities that are
    both present in a sample contributes ``mean_{P, C} |r_i − r_j|``; the loss is the mean over
    those (sample, pair) terms, and exactly 0 (still in the graph) when no sample has two
    present modalities.
    """
    m = shared.shape[1]
    i, j = torch.triu_indices(m, m, offset=1, device=shared.device)
    if i.numel() == 0:
        return shared.sum() * 0.0
    distance = (shared[:, i] - shared[:, j]).abs().mean(dim=(-2, -1))  # (B, pairs)
    both = mask[:, i] & mask[:, j]
    return zero_missing(distance, both).sum() / both.sum().clamp_min(1).to(distance.dtype)


def domain_classification_loss(logits: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy of ``logits: (B, M, M)`` (which modality a specific feature comes from) over present pairs.

    The label of modality ``k``'s specific feature is ``k``; only present ``(sample, modality)``
    pairs are selected, so missing modalities influence neither value nor gradient.
    """
    b, m = mask.shape
    labels = torch.arange(m, device=logits.device).expand(b, m)
    return F.cross_entropy(logits[mask], labels[mask])


@register_fusion("shaspec")
class ShaSpecFusion(Fusion):
    """Shared-specific feature modelling: ``(B, M, C, *S) -> (B, M·C, *S)``.

    Paper (Wang et al., CVPR 2023, "Multi-modal Learning with Missing Modality via
    Shared-Specific Feature Modelling"): every modality goes through its own specific encoder
    (specific feature ``s_k``) and through ONE shared encoder (shared feature ``r_k``); the two
    are fused by residual learning with a projection, ``f_k = r_k + proj([r_k, s_k])`` (the
    official code adds the projection to the shared feature, through one composition layer
    shared by all modalities); a missing modality's shared feature is generated from the
    available ones; the fused features of all modalities are concatenated for the decoder.
    Auxiliary tasks: domain classification of the specific features (which modality is this
    from?) and distribution alignment of the shared features of different modalities.

    Kept here: per modality a specific projection ``s_k = LeakyReLU(W_k x_k + b_k)`` and one shared
    projection ``r_k = LeakyReLU(W x_k + b)``; ``f_k = r_k + Linear([r_k, s_k])`` for present
    modalities; a missing modality's slot is the mean of the present modalities' shared
    features (no composition, as in the official code, which has no specific feature to add);
    output ``concat_k f_k``. Auxiliary losses (already weighted; the trainer's ``aux_weight``
    scales them again): ``shaspec_align`` = 0.1 × mean L1 between the shared features of the
    present modality pairs of each sample, ``shaspec_domain`` = 0.02 × cross-entropy of a
    linear domain classifier on the position-pooled specific features of the present
    modalities (official weights α = 0.1, β = 0.02, official L1 distance).

    Simplified / chosen (see docs/implementation-notes.md): the "encoders" are one-layer
    projections of the project's per-modality encoder features (the official shared encoder
    sees the raw inputs, which needs same-shaped inputs); per-position linear layers instead
    of the official 3×3 convolution; the fill is the MEAN of the present shared features (the
    official code takes the FIRST available modality's, the mean is its commented-out
    alternative, and the paper describes generating it from the available modalities); the
    alignment uses all present pairs, not the official fixed cycle over all modalities
    (which also counts zero-filled missing ones); no weight standardisation, no BatchNorm.
    """

    def __init__(
        self,
        num_modalities: int,
        channels: int,
        num_classes: int,
        spatial: bool = False,
        align_weight: float = 0.1,
        domain_weight: float = 0.02,
    ) -> None:
        super().__init__(num_modalities, channels, num_classes, spatial)
        m, c = num_modalities, channels
        self.align_weight = align_weight
        self.domain_weight = domain_weight
        # Specific projections, one per modality, stacked: (M, C, C) and (M, C).
        self.specific_weight = nn.Parameter(torch.empty(m, c, c))
        self.specific_bias = nn.Parameter(torch.empty(m, c))
        grouped_uniform_(self.specific_weight, self.specific_bias, c)
        self.shared = nn.Linear(c, c)  # ONE projection applied to every modality
        self.compose = nn.Linear(2 * c, c)  # residual composition, shared by all modalities
        self.domain_head = nn.Linear(c, m)
        self.out_channels = m * c

    def features(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Specific ``s`` and shared ``r`` tokens, each ``(B, M, P, C)``, from the masked features.

        Missing modalities are zero-filled first (``torch.where``); their ``s``/``r`` are
        computed (every parameter stays in the graph) but never used.
        """
        x = to_tokens(zero_missing(features, mask))
        specific = torch.einsum("bmpc,mcd->bmpd", x, self.specific_weight) + self.specific_bias[:, None, :]
        return F.leaky_relu(specific, LEAKY_SLOPE), F.leaky_relu(self.shared(x), LEAKY_SLOPE)

    def fused_tokens(self, specific: Tensor, shared: Tensor, mask: Tensor) -> Tensor:
        """Per-modality fused tokens ``(B, M, P, C)``: composed where present, the shared mean where missing."""
        composed = shared + self.compose(torch.cat([shared, specific], dim=-1))
        fill = present_mean(shared, mask).unsqueeze(1).expand_as(composed)
        return torch.where(mask[:, :, None, None], composed, fill)

    def forward(self, features: Tensor, mask: Tensor) -> FusionOutput:
        """``concat_k f_k``; a training forward keeps the specific and shared tokens and the mask."""
        spatial = tuple(features.shape[3:])
        specific, shared = self.features(features, mask)
        tokens = self.fused_tokens(specific, shared, mask)
        b, m, p, c = tokens.shape
        fused = tokens.transpose(2, 3).reshape(b, m * c, *spatial)
        aux = {"mask": mask, "specific": specific, "shared": shared} if self.keeps_aux() else {}
        return FusionOutput(fused, aux)

    def auxiliary_losses(self, out: FusionOutput, target: Tensor, loss_fn: TaskLoss) -> dict[str, Tensor]:
        """Weighted ``shaspec_align`` (shared-feature alignment) and ``shaspec_domain`` (specific-feature domain CE)."""
        if not out.aux:
            return {}
        mask, specific, shared = out.aux["mask"], out.aux["specific"], out.aux["shared"]
        domain_logits = self.domain_head(specific.mean(dim=2))  # (B, M, M), pooled over positions
        return {
            "shaspec_align": self.align_weight * shared_alignment_loss(shared, mask),
            "shaspec_domain": self.domain_weight * domain_classification_loss(domain_logits, mask),
        }
