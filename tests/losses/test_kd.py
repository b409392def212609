"""Logit distillation (KD): hand-computed values, a scipy reference, segmentation rows, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from mmanet.losses import KDLoss, kd_loss


def test_hand_computed_two_classes():
    # T = 1: teacher q = (1/2, 1/2), student p = (3/4, 1/4): KL(q‖p) = ½·log(½/¾) + ½·log(½/¼) = ½·log(4/3)
    student = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    assert kd_loss(student, teacher, temperature=1.0).item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_matches_scipy_with_the_t_squared_factor(temperature):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(16, 5, generator=g) * 3, torch.randn(16, 5, generator=g) * 3
    q = softmax(teacher.numpy().astype(np.float64) / temperature, axis=1)
    p = softmax(student.numpy().astype(np.float64) / temperature, axis=1)
    want = rel_entr(q, p).sum(axis=1).mean() * temperature**2
    assert kd_loss(student, teacher, temperature=temperature).item() == pytest.approx(want, rel=1e-5)


def test_zero_when_the_student_matches_and_no_teacher_gradient():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, generator=g)
    assert kd_loss(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(4, 3, generator=g, requires_grad=True)
    teacher = torch.randn(4, 3, generator=g, requires_grad=True)
    kd_loss(student, teacher).backward()
    assert teacher.grad is None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_segmentation_is_the_mean_over_pixels_and_resizes_the_teacher():
    g = torch.Generator().manual_seed(2)
    student = torch.randn(2, 4, 3, 5, generator=g)
    teacher = torch.randn(2, 4, 3, 5, generator=g)
    rows = kd_loss(student.permute(0, 2, 3, 1).reshape(-1, 4), teacher.permute(0, 2, 3, 1).reshape(-1, 4))
    assert kd_loss(student, teacher).item() == pytest.approx(rows.item(), rel=1e-6)
    big = torch.randn(2, 4, 6, 10, generator=g)
    resized = torch.nn.functional.interpolate(big, size=(3, 5), mode="bilinear", align_corners=False)
    assert kd_loss(student, big).item() == pytest.approx(kd_loss(student, resized).item(), rel=1e-6)


def test_inference_mode_teacher_and_module_wrapper():
    student = torch.randn(3, 2, requires_grad=True)
    with torch.inference_mode():
        teacher = torch.randn(3, 2)
    loss = KDLoss(temperature=2.0)(student, teacher)
    loss.backward()
    assert loss.item() == pytest.approx(kd_loss(student, teacher, temperature=2.0).item())
    assert student.grad is not None


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(temperature=-1.0)
    with pytest.raises(ValueError, match="batch size or number of classes"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        kd_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
