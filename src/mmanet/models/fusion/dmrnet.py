"""DMRNet fusion: each combination's fused representation is a Gaussian; hard combinations get extra weight.

Wei et al., "Robust Multimodal Learning via Representation Decoupling", ECCV 2024
(arXiv 2407.04458; official code github.com/shicaiwei123/ECCV2024-DMRNet).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmanet.models.fusion.base import (
    Fusion,
    FusionOutput,
    TaskLoss,
    register_fusion,
    task_logits,
    to_tokens,
    zero_missing,
)

#: log-variance is clamped to this range (a numerical guard; the official code has none)
LOGVAR_RANGE = (-10.0, 10.0)
#: 2^M statistics are kept, one per combination
MAX_MODALITIES = 16


def reparameterise(mu: Tensor, logvar: Tensor) -> Tensor:
    """``mu + ε · exp(logvar / 2)`` with ``ε ~ N(0, I)`` drawn from torch's global RNG."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, exp(logvar)) ‖ N(0, I))`` summed over channels, averaged over every other axis.

    ``mu, logvar: (..., D)``. Per position ``0.5 Σ_d (σ² + μ² − log σ² − 1)``; the official code
    sums over all feature dimensions (channels × positions for maps) and averages over the
    batch, which for vectors is the same.
    """
    return 0.5 * (logvar.exp() + mu.pow(2) - logvar - 1.0).sum(dim=-1).mean()


def combination_index(mask: Tensor) -> Tensor:
    """Integer code ``Σ_k m_k 2^k`` of each row's combination: ``(B, M) bool -> (B,) long``."""
    powers = 2 ** torch.arange(mask.shape[1], device=mask.device)
    return (mask.long() * powers).sum(dim=1)


def default_num_hard(num_modalities: int) -> int:
    """``ceil((2^M − 1) / 3)`` hard combinations: 1 of 3 for M = 2, 3 of 7 for M = 3 (the official settings)."""
    return math.ceil((2**num_modalities - 1) / 3)


def hard_combination_loss(
    logits: Tensor, spatial: tuple[int, ...], target: Tensor, hard: Tensor, loss_fn: TaskLoss
) -> Tensor:
    """``(1/B) Σ_{i hard} ℓ(logits_i, y_i)``: the task loss over the hard rows only, scaled by their share.

    ``logits: (B, P, K)``; ``hard: (B,)`` bool. For a mean-reduced ``loss_fn`` this is the
    official ``sum(CE_i · h_i) / B``. Exactly 0 (still in the graph) when no row is hard.
    """
    if not bool(hard.any()):
        return logits.sum() * 0.0
    share = hard.sum().to(logits.dtype) / hard.shape[0]
    return share * loss_fn(task_logits(logits[hard], spatial, target[hard]), target[hard])


@register_fusion("dmrnet")
class DMRNetFusion(Fusion):
    """Probabilistic fused embedding: ``(B, M, C, *S) -> (B, D, *S)``, ``D = M·C`` by default.

    Paper (Wei et al., ECCV 2024, "Robust Multimodal Learning via Representation Decoupling"):
    the input of each modality combination is modelled as a Gaussian N(μ, σ²) in the latent
    space instead of a point; training feeds the predictor a sample drawn with the
    reparameterisation trick, inference uses the mean μ; a distributional regulariser keeps the
    Gaussians close to N(0, I); a hard combination regulariser (HCR) pays more attention to
    the hard combinations, those with the largest variance (the top-V).

    Confirmed from the official code (face-antispoofing ``SURF_Baseline_ConvDUL_Auxi_Share`` +
    ``train_base_multi_auxi_dul``, audio-visual ``ConcatFusion`` + ``main.py``): μ and log σ²
    are two heads (linear/1×1 conv + BatchNorm) on the fused, zero-filled concatenation;
    ``z = μ + ε σ`` in training, ``z = μ`` in eval; KL = mean over the batch of
    ``Σ 0.5 (σ² + μ² − log σ² − 1)``, weight 1e-3; the HCR is an extra cross-entropy on the
    samples whose combination is hard, ``Σ_i h_i CE_i / B``, weight β (0.2 on CREMA-D,
    0.3/0.7 on CASIA-SURF), switched on after a warm-up of 5 epochs; the audio-visual code
    mines the hard combination as the one with the largest mean σ² accumulated over the
    warm-up epochs (the CASIA-SURF code hard-codes three combinations).

    Kept here: ``μ = Linear(concat_k m_k x_k)``, ``log σ² = Linear(concat_k m_k x_k)`` per
    position (clamped to ``LOGVAR_RANGE``); sampling only in training mode, from torch's
    global RNG; eval is deterministic. Auxiliary losses (already weighted; the trainer's
    ``aux_weight`` scales them again): ``dmrnet_kl`` = 1e-3 × KL (summed over channels,
    averaged over positions and rows); ``dmrnet_hard`` = 0.3 × ``hard_combination_loss`` of a
    linear classifier on the forward's sample ``z``. Mining: during the first ``hard_warmup``
    training calls of :meth:`auxiliary_losses` the mean σ² of every combination is
    accumulated (buffers, saved in checkpoints); then the ``num_hard`` combinations with the
    largest mean σ² among those seen are fixed as hard, and the HCR is active from then on.

    Chosen (could not be confirmed or could not be kept; docs/implementation-notes.md): no
    BatchNorm in the heads (rows must stay independent); the HCR uses the fusion's own linear
    classifier on the sample the network predicts from, because the fusion cannot reach the
    network's predictor (the official code applies the main classifier to that sample, which makes
    the HCR a re-weighting of the hard samples' task loss); warm-up in training steps (default 100), not epochs; V =
    ``ceil((2^M − 1)/3)`` by default, which gives the official V for M = 2 and M = 3; all
    combinations are candidates (the paper's top-V; the audio-visual code compares the two
    single-modality ones). With DDP the statistics are updated per rank outside ``forward``
    and DDP's buffer broadcast makes rank 0's statistics the ones that count.
    """

    # the buffers registered in __init__ (typed here: torch.nn.Module's attribute lookup is untyped)
    variance_sum: Tensor
    variance_count: Tensor
    mining_steps: Tensor
    hard: Tensor

    def __init__(
        self,
        num_modalities: int,
        channels: int,
        num_classes: int,
        spatial: bool = False,
        embed_dim: int | None = None,
        kl_weight: float = 1e-3,
        hard_weight: float = 0.3,
        num_hard: int | None = None,
        hard_warmup: int = 100,
    ) -> None:
        super().__init__(num_modalities, channels, num_classes, spatial)
        if num_modalities > MAX_MODALITIES:
            raise ValueError(f"dmrnet keeps 2^M statistics; at most {MAX_MODALITIES} modalities, got {num_modalities}")
        if hard_warmup < 1:
            raise ValueError(f"hard_warmup must be >= 1 training step, got {hard_warmup}")
        width = num_modalities * channels
        dim = embed_dim or width
        self.kl_weight = kl_weight
        self.hard_weight = hard_weight
        self.num_hard = default_num_hard(num_modalities) if num_hard is None else num_hard
        self.hard_warmup = hard_warmup
        self.mu_head = nn.Linear(width, dim)
        self.logvar_head = nn.Linear(width, dim)
        self.hard_head = nn.Linear(dim, num_classes)
        combos = 2**num_modalities
        self.register_buffer("variance_sum", torch.zeros(combos, dtype=torch.float64))
        self.register_buffer("variance_count", torch.zeros(combos, dtype=torch.float64))
        self.register_buffer("mining_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("hard", torch.zeros(combos, dtype=torch.bool))
        self.out_channels = dim

    def gaussian(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and clamped log-variance tokens ``(B, P, D)`` of the masked concatenation."""
        y = to_tokens(zero_missing(features, mask))  # (B, M, P, C)
        b, m, p, c = y.shape
        cat = y.permute(0, 2, 1, 3).reshape(b, p, m * c)
        return self.mu_head(cat), self.logvar_head(cat).clamp(*LOGVAR_RANGE)

    def embedding(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """A reparameterised sample in training mode, the mean in eval mode."""
        return reparameterise(mu, logvar) if self.training else mu

    def forward(self, features: Tensor, mask: Tensor) -> FusionOutput:
        """The embedding ``z``; a training forward keeps ``μ``, ``log σ²``, the sample ``z`` and the mask."""
        spatial = tuple(features.shape[3:])
        mu, logvar = self.gaussian(features, mask)
        z = self.embedding(mu, logvar)
        b, p, d = z.shape
        aux = {"mask": mask, "mu": mu, "logvar": logvar, "z": z} if self.keeps_aux() else {}
        return FusionOutput(z.transpose(1, 2).reshape(b, d, *spatial), aux)

    @torch.no_grad()
    def record_variance(self, logvar: Tensor, mask: Tensor) -> None:
        """One mining step: accumulate each row's mean σ² under its combination; fix the hard set at the end."""
        if int(self.mining_steps) >= self.hard_warmup:
            return
        per_row = logvar.exp().mean(dim=(1, 2)).to(self.variance_sum.dtype)
        index = combination_index(mask)
        self.variance_sum.index_add_(0, index, per_row)
        self.variance_count.index_add_(0, index, torch.ones_like(per_row))
        self.mining_steps += 1
        if int(self.mining_steps) == self.hard_warmup:
            self.hard.copy_(self._top_combinations())

    def _top_combinations(self) -> Tensor:
        """Boolean ``(2^M,)``: the ``num_hard`` combinations with the largest mean σ² among those seen."""
        seen = self.variance_count > 0
        mean = self.variance_sum / self.variance_count.clamp_min(1)
        mean = torch.where(seen, mean, torch.full_like(mean, -1.0))
        k = min(self.num_hard, int(seen.sum()))
        hard = torch.zeros_like(self.hard)
        if k > 0:
            hard[mean.topk(k).indices] = True
        return hard

    def mined_variances(self) -> Tensor:
        """Mean σ² per combination code recorded so far (NaN where a combination was never seen)."""
        return self.variance_sum / self.variance_count.where(self.variance_count > 0, torch.nan)

    def hard_combinations(self) -> list[tuple[bool, ...]]:
        """The hard combinations as per-modality presence tuples (empty before the warm-up ends)."""
        m = self.num_modalities
        return [tuple(bool(code >> k & 1) for k in range(m)) for code in torch.nonzero(self.hard).flatten().tolist()]

    def auxiliary_losses(self, out: FusionOutput, target: Tensor, loss_fn: TaskLoss) -> dict[str, Tensor]:
        """``dmrnet_kl`` (distributional regulariser) and ``dmrnet_hard`` (hard combination regulariser), weighted.

        This is also the mining step (see the class docstring). The hard-combination term uses the
        forward's own sample ``z`` (no second draw).
        """
        if not out.aux:
            return {}
        mask, mu, logvar, z = out.aux["mask"], out.aux["mu"], out.aux["logvar"], out.aux["z"]
        spatial = out.spatial
        self.record_variance(logvar, mask)
        hard_rows = self.hard[combination_index(mask)]
        hard_loss = hard_combination_loss(self.hard_head(z), spatial, target, hard_rows, loss_fn)
        return {
            "dmrnet_kl": self.kl_weight * kl_to_standard_normal(mu, logvar),
            "dmrnet_hard": self.hard_weight * hard_loss,
        }
