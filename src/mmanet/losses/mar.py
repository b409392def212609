"""Modality-aware regularization, MAR (docs/design.md §4.2, paper Eqs. 9–16).

Mining (warm-up epochs): for the full combination and every leave-one-out
combination ``c``, the prediction distribution ``q^c = (1/N) Σ_i softmax(p^c_i)`` (class-wise
mean probability) is formed over the mining split, and ``D_c = KL(q^full ‖ q^c)``. A memory
bank keeps ``D_c`` per epoch; ``D̄_c`` is the mean over the recorded epochs. The
leave-one-out candidate(s) with the largest ``D̄_c`` lack the strong modality(ies); the weak
set ``W`` is every non-empty combination without a strong modality.

Regularization: ``m_i = 1`` when sample i's dropout combination is in ``W``;
``L_MAR = (1/B) Σ_i m_i CE(p^r_i, y_i)`` — only weak samples contribute (:func:`mar_loss`, the paper).
:func:`mar_loss_official` is what the authors' released code computes instead (a named option,
``mar.variant: official``, kept to show what their reported numbers were trained with).

SR ablation: ``W`` = every single-modality combination, no mining (:func:`single_modality_weak_set`).
Mined and fixed weak sets share :func:`combination_membership`.

This module holds MAR's pure functions on tensors. The rest of MAR — the weak-set state (the miner's
memory bank and selection, a fixed weak set), the mining data pass, its schedule, the regularization
head and what MAR writes to results — is one module, :mod:`mmanet.methods.mar`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.modality import (
    Combination,
    ModalitySpec,
    all_combinations,
    combinations_to_mask,
)

DEFAULT_IGNORE_INDEX = 255


# --------------------------------------------------------------------------- the loss


def mar_loss(
    reg_logits: Tensor, targets: Tensor, weak_mask: Tensor, *, ignore_index: int = DEFAULT_IGNORE_INDEX
) -> Tensor:
    """``L_MAR = (1/B) Σ_i m_i CE(p^r_i, y_i)`` (docs/design.md §4.2); a scalar.

    Args:
        reg_logits: regularization-head logits ``p^r``: ``(B, K)`` or ``(B, K, H, W)``.
        targets: ``(B,)`` class indices, or ``(B, H, W)`` with ``ignore_index`` for void pixels.
        weak_mask: ``BoolTensor[B]``, ``m_i`` (True where the sample's combination is weak).
        ignore_index: targets to ignore (segmentation void; also honoured for classification).

    Segmentation: the per-sample CE is the mean over that sample's labelled pixels (0 when it
    has none). Non-weak samples contribute exactly zero loss and zero gradient.
    """
    if reg_logits.dim() < 2:
        raise ValueError(f"regularization logits must be (B, K) or (B, K, H, W), got {tuple(reg_logits.shape)}")
    b = reg_logits.shape[0]
    if weak_mask.dtype != torch.bool or weak_mask.shape != (b,):
        raise ValueError(f"weak_mask must be a BoolTensor[{b}], got {weak_mask.dtype} {tuple(weak_mask.shape)}")
    if targets.shape[0] != b or targets.dim() != reg_logits.dim() - 1:
        raise ValueError(f"targets of shape {tuple(targets.shape)} do not match logits {tuple(reg_logits.shape)}")
    weak_mask = weak_mask.to(reg_logits.device)
    if not bool(weak_mask.any()):
        return reg_logits.sum() * 0.0  # keeps the graph (every parameter used, DDP)
    ce = F.cross_entropy(reg_logits, targets.long(), reduction="none", ignore_index=ignore_index)
    if ce.dim() > 1:
        labelled = (targets != ignore_index).flatten(1).sum(dim=1).clamp_min(1)
        ce = ce.flatten(1).sum(dim=1) / labelled.to(ce.dtype)
    ce = torch.where(weak_mask, ce, torch.zeros_like(ce))
    return ce.sum() / b


def mar_loss_official(
    reg_logits: Tensor,
    targets: Tensor,
    weak_mask: Tensor,
    *,
    ignore_index: int = DEFAULT_IGNORE_INDEX,
    weight: Tensor | None = None,
) -> Tensor:
    """The MAR term of the authors' released code (``mar.variant: official``; docs/design.md §4.2) — not the paper's.

    * Classification: ``(n_weak / B) · Σ_j CE(p^r_j, y_j)`` over **every** sample j, with
      ``n_weak = Σ_i m_i``. Their code multiplies a ``[B]`` cross-entropy by a ``[B, 1, 1, 1]`` weak
      mask; the product broadcasts to ``[B, 1, 1, B]``, whose sum is ``Σ_i m_i · Σ_j CE_j``, then
      divides by ``B`` (summed there over the weak combinations, which add up to ``n_weak``). Every
      sample, weak or not, receives the regularization head's cross-entropy, scaled by the weak count:
      about a 27× auxiliary cross-entropy at ``B = 64`` with a third of the samples weak.
    * Segmentation (``(B, K, H, W)`` logits): the (class-``weight`` ed) mean pixel cross-entropy of the
      weak samples only, as ESANet's loss over the weak rows (0 with no weak sample).

    Args as :func:`mar_loss`; ``weight``: per-class weights of the segmentation loss (or None).
    """
    if reg_logits.dim() < 2:
        raise ValueError(f"regularization logits must be (B, K) or (B, K, H, W), got {tuple(reg_logits.shape)}")
    b = reg_logits.shape[0]
    if weak_mask.dtype != torch.bool or weak_mask.shape != (b,):
        raise ValueError(f"weak_mask must be a BoolTensor[{b}], got {weak_mask.dtype} {tuple(weak_mask.shape)}")
    if targets.shape[0] != b or targets.dim() != reg_logits.dim() - 1:
        raise ValueError(f"targets of shape {tuple(targets.shape)} do not match logits {tuple(reg_logits.shape)}")
    weak_mask = weak_mask.to(reg_logits.device)
    n_weak = int(weak_mask.sum())
    if n_weak == 0:
        return reg_logits.sum() * 0.0  # keeps the graph (every parameter used, DDP)
    if reg_logits.dim() > 2:
        weak = weak_mask.nonzero().flatten()
        if not bool((targets[weak] != ignore_index).any()):  # no labelled pixel: a mean over nothing
            return reg_logits.sum() * 0.0
        return F.cross_entropy(reg_logits[weak], targets[weak].long(), weight=weight, ignore_index=ignore_index)
    ce = F.cross_entropy(reg_logits, targets.long(), reduction="none", ignore_index=ignore_index)
    return ce.sum() * (n_weak / b)


class MARLoss(nn.Module):
    """``nn.Module`` wrapper of :func:`mar_loss`."""

    def __init__(self, ignore_index: int = DEFAULT_IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, reg_logits: Tensor, targets: Tensor, weak_mask: Tensor) -> Tensor:
        return mar_loss(reg_logits, targets, weak_mask, ignore_index=self.ignore_index)


# --------------------------------------------------------------------------- distributions


def _softmax_sum_count(
    logits: Tensor, targets: Tensor | None = None, ignore_index: int = DEFAULT_IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """Sum of softmax probabilities over samples (pixels) and their count, in float64.

    Segmentation logits ``(B, K, H, W)`` sum over the labelled pixels of ``targets``
    (``(B, H, W)``; logits are resized bilinearly when their size differs), or all pixels.
    """
    probs = torch.softmax(logits.double(), dim=1)
    if logits.dim() == 2:
        return probs.sum(dim=0), probs.new_tensor(float(probs.shape[0]))
    if targets is None or targets.dim() != logits.dim() - 1:
        rows = probs.movedim(1, -1).reshape(-1, probs.shape[1])
        return rows.sum(dim=0), probs.new_tensor(float(rows.shape[0]))
    if tuple(targets.shape[1:]) != tuple(logits.shape[2:]):
        resized = F.interpolate(logits.double(), size=targets.shape[1:], mode="bilinear", align_corners=False)
        probs = torch.softmax(resized, dim=1)
    rows = probs.movedim(1, -1).reshape(-1, probs.shape[1])
    valid = (targets != ignore_index).reshape(-1).to(rows.device)
    rows = rows[valid]
    return rows.sum(dim=0), probs.new_tensor(float(rows.shape[0]))


def prediction_distribution(
    logits: Tensor, targets: Tensor | None = None, *, ignore_index: int = DEFAULT_IGNORE_INDEX
) -> Tensor:
    """Class-wise mean softmax ``q = (1/N) Σ_i softmax(p_i)`` (§4.2 step 2), shape ``(K,)``.

    ``logits``: ``(N, K)``, or ``(B, K, H, W)`` where the mean runs over the pixels labelled in
    ``targets`` (``(B, H, W)``, void = ``ignore_index``), or over all pixels without targets.
    """
    total, count = _softmax_sum_count(logits, targets, ignore_index)
    if count.item() == 0:
        raise ValueError("no sample (or labelled pixel) to form a prediction distribution from")
    return (total / count).to(logits.dtype)


def probability_sums(
    logits: Tensor, valid: Tensor, targets: Tensor | None = None, *, ignore_index: int = DEFAULT_IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """Per-combination sums of softmax probabilities and their counts, in float64 (§4.2 step 2).

    ``logits``: ``(n_c, B, K)`` or ``(n_c, B, K, H, W)`` (the network's batched pass over
    candidates), ``valid``: ``(n_c, B)`` (rows to count). Segmentation sums over the pixels
    labelled in ``targets`` ``(B, H, W)`` (logits resized bilinearly to them when sizes differ).
    Returns ``sums (n_c, K)`` and ``counts (n_c,)``; ``q^c = sums[c] / counts[c]``.
    """
    if logits.dim() < 3 or logits.shape[:2] != valid.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be (n_c, B, K, …) matching validity {tuple(valid.shape)}")
    n_c, b, k = logits.shape[:3]
    if logits.dim() > 3:
        flat = logits.reshape(n_c * b, *logits.shape[2:]).double()
        if targets is not None and tuple(targets.shape[1:]) != tuple(flat.shape[2:]):
            flat = F.interpolate(flat, size=tuple(targets.shape[1:]), mode="bilinear", align_corners=False)
        probs = torch.softmax(flat, dim=1).reshape(n_c, b, k, -1)  # (n_c, B, K, P)
        weight = valid.to(probs.dtype)[:, :, None].expand(n_c, b, probs.shape[-1])
        if targets is not None:
            weight = weight * (targets != ignore_index).reshape(1, b, -1).to(probs.dtype)
        return torch.einsum("cbkp,cbp->ck", probs, weight), weight.sum(dim=(1, 2))
    probs = torch.softmax(logits.double(), dim=2)
    weight = valid.to(probs.dtype)
    # Σ_b weight[c, b] · probs[c, b, :] as one batched matmul (cheaper than einsum for these small shapes)
    return torch.bmm(weight.unsqueeze(1), probs).squeeze(1), weight.sum(dim=1)


def candidate_discrepancies(sums: Tensor, counts: Tensor, eps: float = 1e-8) -> Tensor:
    """``D_c = KL(q^full ‖ q^c)`` for candidates 1… given the (reduced) sums of candidate 0 = full, 1… (§4.2 step 3)."""
    if bool((counts == 0).any()):
        raise ValueError("a candidate has no sample (or labelled pixel) to form its prediction distribution from")
    q = sums / counts[:, None]
    return kl_discrepancy(q[0].expand_as(q[1:]), q[1:], eps)


def kl_discrepancy(q_full: Tensor, q_c: Tensor, eps: float = 1e-8) -> Tensor:
    """``D_c = Σ_k q^full_k log((q^full_k + ε) / (q^c_k + ε))`` (§4.2 step 3)."""
    if q_full.shape != q_c.shape:
        raise ValueError(f"distributions differ in shape: {tuple(q_full.shape)} vs {tuple(q_c.shape)}")
    return (q_full * torch.log((q_full + eps) / (q_c + eps))).sum(dim=-1)


# --------------------------------------------------------------------------- weak sets


def combination_membership(keep_mask: Tensor, combinations: Sequence[Combination]) -> Tensor:
    """``BoolTensor[B]``: True where row i of ``keep_mask`` (``BoolTensor[B, M]``) is in ``combinations``."""
    if keep_mask.dim() != 2:
        raise ValueError(f"keep mask must be a BoolTensor[B, M], got shape {tuple(keep_mask.shape)}")
    if not combinations:
        return torch.zeros(keep_mask.shape[0], dtype=torch.bool, device=keep_mask.device)
    m = len(combinations[0].spec)
    if keep_mask.shape[1] != m:
        raise ValueError(f"keep mask has {keep_mask.shape[1]} modalities, the weak set is over {m}")
    table = combinations_to_mask(combinations, device=keep_mask.device)  # (W, M)
    return (keep_mask.bool()[:, None, :] == table[None, :, :]).all(dim=2).any(dim=1)


def single_modality_weak_set(spec: ModalitySpec) -> list[Combination]:
    """The SR ablation's weak set: every single-modality combination (no mining)."""
    return [c for c in all_combinations(spec) if c.size == 1]
