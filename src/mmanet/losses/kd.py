"""Logit distillation, KD (Hinton, Vinyals & Dean 2015), the learning-quality issue's third term.

``L_KD = T² · (1/N) Σ_i KL(softmax(p^t_i / T) ‖ softmax(p^d_i / T))`` over the N rows (samples; for
segmentation every pixel), where ``KL(q ‖ p) = Σ_k q_k (log q_k − log p_k)``. The factor ``T²``
keeps the gradient's scale independent of the temperature (Hinton et al., §2), so a weight γ
means the same for every T. The teacher's logits carry no gradient. The loss needs no labels:
in the mmanet stage it runs on labelled and unlabelled samples alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _class_rows(logits: Tensor) -> Tensor:
    """``(B, K)`` as is; ``(B, K, H, W)`` → ``(B·H·W, K)`` (pixel rows in (b, h, w) order)."""
    if logits.dim() == 2:
        return logits
    if logits.dim() == 4:
        return logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    raise ValueError(f"logits must be (B, K) or (B, K, H, W), got shape {tuple(logits.shape)}")


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 4.0) -> Tensor:
    """``T² · mean_i KL(softmax(p^t_i/T) ‖ softmax(p^d_i/T))``; a scalar.

    Args:
        student_logits: ``p^d``, ``(B, K)`` or ``(B, K, H, W)``.
        teacher_logits: ``p^t``, the same batch and classes; a segmentation map of another size is
            resized (bilinear) to the student's. Detached.
        temperature: ``T > 0``.
    """
    if not temperature > 0:
        raise ValueError(f"the distillation temperature must be positive, got {temperature}")
    if student_logits.shape[:2] != teacher_logits.shape[:2]:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ in batch size or number of classes"
        )
    teacher = teacher_logits.detach()
    teacher = teacher.clone() if teacher.is_inference() else teacher  # a teacher run under inference_mode
    if teacher.dim() == 4 and teacher.shape[2:] != student_logits.shape[2:]:
        teacher = F.interpolate(teacher.float(), size=student_logits.shape[2:], mode="bilinear", align_corners=False)
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_p = F.log_softmax(_class_rows(student_logits).float() / temperature, dim=1)
        log_q = F.log_softmax(_class_rows(teacher).float() / temperature, dim=1)
        kl = (log_q.exp() * (log_q - log_p)).sum(dim=1)
        return kl.mean() * temperature**2


def per_sample_kd(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float) -> Tensor:
    """``(B,)``: ``T² · KL(σ(p^t/T) ‖ σ(p^d/T))`` per sample (segmentation: the mean over its pixels; a
    teacher map of another size is resized, bilinear). The teacher's logits carry no gradient."""
    if not temperature > 0:
        raise ValueError(f"the distillation temperature must be positive, got {temperature}")
    teacher = teacher_logits.detach()
    teacher = teacher.clone() if teacher.is_inference() else teacher
    if teacher.dim() == 4 and teacher.shape[2:] != student_logits.shape[2:]:
        teacher = F.interpolate(teacher.float(), size=student_logits.shape[2:], mode="bilinear", align_corners=False)
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_q = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=1)  # (B,) or (B, H, W)
    return kl.flatten(1).mean(dim=1) * temperature**2 if kl.dim() > 1 else kl * temperature**2


class KDLoss(nn.Module):
    """``nn.Module`` wrapper of :func:`kd_loss`."""

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"the distillation temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return kd_loss(student_logits, teacher_logits, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
