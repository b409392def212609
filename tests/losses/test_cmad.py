"""CMAD's loss terms (mmanet.losses.cmad) against independent references: the formulas written out in numpy
loops, and a transcription of the authors' ``compute_weighted_mse_loss`` (YetZzzzzz/CMAD,
Student_Model/loss.py: softmax without ``dim`` on a 2-D tensor is over dim 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmanet.losses import kd_loss
from mmanet.losses.cmad import cafd_loss, combination_weights, per_sample_kd


def cafd_by_loops(s: np.ndarray, t: np.ndarray, tau: float) -> float:
    """The module docstring's formula, one number at a time."""
    b = s.shape[0]

    def cos(x, y):
        return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))

    def softmax(v):
        e = np.exp(v - v.max())
        return e / e.sum()

    s_st = np.array([[cos(s[i], t[j]) for j in range(b)] for i in range(b)])
    s_tt = np.array([[cos(t[i], t[j]) for j in range(b)] for i in range(b)])
    total = 0.0
    for i in range(b):
        p, q = softmax(s_st[i] / tau), softmax(s_tt[i] / tau)
        bkl = 0.5 * (sum(q * np.log(q / p)) + sum(p * np.log(p / q)))
        mse = float(((s[i] - t[i]) ** 2).mean())
        total += bkl * mse
    gap = np.abs(s_tt - s_st)
    return total / b + float(np.trace(gap) / gap.sum())


def cafd_authors(stu: torch.Tensor, tea: torch.Tensor, tau: float) -> torch.Tensor:
    """The authors' compute_weighted_mse_loss, transcribed (its first return value)."""
    mse_loss = F.mse_loss(stu, tea, reduction="none").mean(dim=1)
    sim_st = F.normalize(stu, p=2, dim=-1) @ F.normalize(tea, p=2, dim=-1).t()
    sim_tt = F.normalize(tea, p=2, dim=-1) @ F.normalize(tea, p=2, dim=-1).t()
    sim_diff = torch.abs(sim_tt - sim_st)
    loss_total = torch.diagonal(sim_diff).sum() / sim_diff.sum()
    p, q = sim_st / tau, sim_tt / tau
    kl_pq = F.kl_div(F.log_softmax(p, dim=1), F.softmax(q, dim=1), reduction="none").sum(dim=-1)
    kl_qp = F.kl_div(F.log_softmax(q, dim=1), F.softmax(p, dim=1), reduction="none").sum(dim=-1)
    return (((kl_pq + kl_qp) / 2) * mse_loss).mean() + loss_total


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_cafd_matches_the_formula_and_the_authors_code(tau):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    ours = cafd_loss(s, t, tau=tau)
    assert ours.item() == pytest.approx(cafd_by_loops(s.numpy(), t.numpy(), tau), rel=1e-5)
    torch.testing.assert_close(ours.double(), cafd_authors(s, t, tau), rtol=1e-5, atol=1e-7)


def test_cafd_is_zero_when_the_student_is_the_teacher_and_sends_no_gradient_to_it():
    t = torch.randn(4, 3)
    assert cafd_loss(t.clone(), t).item() == 0.0  # identical: no gap, no mse, no KL
    s = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    cafd_loss(s, teacher).backward()
    assert s.grad is not None and teacher.grad is None


def test_cafd_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        cafd_loss(torch.zeros(4, 3), torch.zeros(4, 2))


def test_per_sample_kd_averages_to_kd_loss_and_segmentation_averages_pixels():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    per = per_sample_kd(s, t, temperature=3.0)
    assert per.shape == (5,)
    torch.testing.assert_close(per.mean(), kd_loss(s, t, temperature=3.0))
    # by hand for one sample
    q, p = F.softmax(t[0].double() / 3, dim=0), F.softmax(s[0].double() / 3, dim=0)
    assert per[0].item() == pytest.approx(9 * float((q * (q.log() - p.log())).sum()), rel=1e-4)
    maps_s, maps_t = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    per_map = per_sample_kd(maps_s, maps_t, temperature=2.0)
    assert per_map.shape == (2,)
    torch.testing.assert_close(per_map[1], kd_loss(maps_s[1:], maps_t[1:], temperature=2.0))


def test_combination_weights_by_hand():
    sums = torch.tensor([2.0, 0.0, 3.0, 0.0], dtype=torch.float64)
    counts = torch.tensor([4.0, 5.0, 2.0, 0.0], dtype=torch.float64)
    # means 0.5, 0, 1.5, (no samples) 0 → scale · (mean / 1.5)²
    weights = combination_weights(sums, counts, scale=20.0)
    expected = [20 * (0.5 / 1.5) ** 2, 0.0, 20.0, 0.0]
    assert weights.tolist() == pytest.approx(expected)
    # the student nowhere worse than the teacher: every weight stays 1 (the authors' code would divide by 0)
    assert combination_weights(torch.zeros(3), torch.ones(3), scale=20.0).tolist() == [1.0, 1.0, 1.0]
    assert not any(math.isnan(w) for w in weights.tolist())
