"""CMAD's loss terms (Zhuang et al., ICCV 2025; written from the authors' released code, YetZzzzzz/CMAD,
``Student_Model/loss.py`` and ``train_student_model_mosei.py`` — docs/implementation-notes.md).

**Correlation-aware feature distillation (CAFD).** For the student's and the (frozen) teacher's
per-sample representations ``s_i, t_i`` of one batch (B ≥ 2):

* ``mse_i = (1/D) ‖s_i − t_i‖²`` (feature matching);
* ``S^st_ij = cos(s_i, t_j)``, ``S^tt_ij = cos(t_i, t_j)`` (student–teacher and teacher–teacher
  correlations across samples);
* ``bkl_i = ½ [KL(σ(S^tt_i/τ) ‖ σ(S^st_i/τ)) + KL(σ(S^st_i/τ) ‖ σ(S^tt_i/τ))]`` with σ the softmax over
  the row ``j`` (the bidirectional KL of the two correlation distributions of sample i);
* ``L_CAFD = (1/B) Σ_i bkl_i · mse_i + Σ_i |S^tt_ii − S^st_ii| / Σ_ij |S^tt_ij − S^st_ij|``.

**Per-sample logit distillation** ``kd_i = T² · KL(σ(p^t_i/T) ‖ σ(p^d_i/T))`` (a segmentation sample: the
mean over its pixels), and the **combination weights** of CMAD's modality-aware regularization:
``w_c = scale · (d̄_c / max_c' d̄_c')²`` with ``d̄_c`` the mean over the samples trained under combination
``c`` of ``max(0, L^d_i − L^t_i)`` — how much worse than the teacher the student is there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmanet.losses.kd import per_sample_kd

__all__ = ["cafd_loss", "combination_weights", "per_sample_kd"]


def _similarity(x: Tensor, y: Tensor) -> Tensor:
    """``(B, B)`` cosine similarities of the rows of ``x`` and ``y``."""
    return F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()


def _bidirectional_kl(a: Tensor, b: Tensor) -> Tensor:
    """``½ [KL(σ(b) ‖ σ(a)) + KL(σ(a) ‖ σ(b))]`` per row (σ: softmax over the row)."""
    log_a, log_b = F.log_softmax(a, dim=1), F.log_softmax(b, dim=1)
    kl_ba = (log_b.exp() * (log_b - log_a)).sum(dim=1)
    kl_ab = (log_a.exp() * (log_a - log_b)).sum(dim=1)
    return (kl_ba + kl_ab) / 2


def cafd_loss(student: Tensor, teacher: Tensor, *, tau: float = 0.2) -> Tensor:
    """``L_CAFD`` (module docstring) of ``(B, D)`` representations; the teacher's carry no gradient."""
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(
            f"CAFD needs student and teacher representations of one shape (B, D), got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}"
        )
    if not tau > 0:
        raise ValueError(f"the CAFD temperature must be positive, got {tau}")
    teacher = teacher.detach()
    teacher = teacher.clone() if teacher.is_inference() else teacher
    student, teacher = student.float(), teacher.float()
    mse = ((student - teacher) ** 2).mean(dim=1)
    s_st, s_tt = _similarity(student, teacher), _similarity(teacher, teacher)
    bkl = _bidirectional_kl(s_st / tau, s_tt / tau)
    gap = (s_tt - s_st).abs()
    total = gap.sum()
    ratio = gap.diagonal().sum() / total if bool(total > 0) else total * 0.0
    return (bkl * mse).mean() + ratio


def combination_weights(gap_sums: Tensor, counts: Tensor, *, scale: float) -> Tensor:
    """``w_c = scale · (d̄_c / max d̄)²`` from per-combination sums of ``max(0, L^d_i − L^t_i)`` and sample
    counts. A combination without samples gets d̄ = 0 (weight 0). When every d̄ is 0 the student is nowhere
    worse than the teacher: every weight stays 1 (the authors' code divides by the maximum, 0, and gets NaN)."""
    mean = torch.where(counts > 0, gap_sums / counts.clamp(min=1), torch.zeros_like(gap_sums))
    top = mean.max()
    if not bool(top > 0):
        return torch.ones_like(mean)
    return scale * (mean / top) ** 2
