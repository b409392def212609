"""PASSION's loss terms (mmanet.losses.passion) against the formulas written out one number at a time, and the
β update against a transcription of the authors' train.py lines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmanet.losses.passion import authors_kl, preference, prototype_terms, updated_betas


def prototypes_by_loops(s: np.ndarray, f: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    def cos(x, y):
        return float(x @ y / (max(np.linalg.norm(x), 1e-5) * max(np.linalg.norm(y), 1e-5)))

    classes = sorted(c for c in set(labels.tolist()) if c >= 0)
    protos_s = {c: s[labels == c].mean(axis=0) for c in classes}
    protos_f = {c: f[labels == c].mean(axis=0) for c in classes}
    proto, dist = [], []
    for i in range(len(s)):
        gaps = [cos(s[i], protos_s[c]) - cos(f[i], protos_f[c]) for c in classes]
        proto.append(np.mean(np.square(gaps)))
        dist.append(np.mean(np.abs(gaps)))
    return np.array(proto), np.array(dist)


def test_prototype_terms_match_the_formula_and_skip_unlabelled_rows():
    g = torch.Generator().manual_seed(0)
    s, f = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(8, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, -1, 2, 2])
    proto, dist = prototype_terms(s, f, labels)
    ref_proto, ref_dist = prototypes_by_loops(s.numpy(), f.numpy(), labels.numpy())
    np.testing.assert_allclose(proto.numpy(), ref_proto, rtol=1e-5)
    np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=1e-5)
    same, none = prototype_terms(f, f, labels)
    assert float(same.abs().max()) == 0.0 and float(none.abs().max()) == 0.0


def test_segmentation_prototypes_are_over_pixels_and_averaged_per_sample():
    g = torch.Generator().manual_seed(1)
    s, f = (
        torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64),
        torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64),
    )
    maps = torch.tensor([[[0, 1], [1, 255]], [[0, 0], [1, 1]]])
    proto, dist = prototype_terms(s, f, maps, ignore=255)
    rows = lambda x: x.permute(0, 2, 3, 1).reshape(-1, 3).numpy()  # noqa: E731
    ref_proto, ref_dist = prototypes_by_loops(rows(s), rows(f), np.where(maps.reshape(-1) == 255, -1, maps.reshape(-1)))
    np.testing.assert_allclose(proto.numpy(), ref_proto.reshape(2, 4).mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(dist.numpy(), ref_dist.reshape(2, 4).mean(axis=1), rtol=1e-5)


def test_the_fused_side_sends_no_gradient():
    s = torch.randn(4, 3, requires_grad=True)
    f = torch.randn(4, 3, requires_grad=True)
    proto, _ = prototype_terms(s, f, torch.tensor([0, 1, 0, 1]))
    proto.sum().backward()
    assert s.grad is not None and f.grad is None


def test_preference_by_hand():
    dist = torch.tensor([[0.2, 0.4, 0.0], [0.3, 0.3, 0.6]])
    available = torch.tensor([[True, True, False], [True, True, True]])
    # sample 0: mean 0.3 → 0.2/0.3−1, 0.4/0.3−1 ; sample 1: mean 0.4 → −0.25, −0.25, +0.5
    expected = [0.2 / 0.3 - 1 - 0.25, 0.4 / 0.3 - 1 - 0.25, 0.5]
    assert preference(dist, available).tolist() == pytest.approx(expected)


def test_beta_update_matches_the_authors_lines():
    def authors(imb_beta, epoch_dist_m, eta):  # train.py, after an epoch ≥ region_fusion_start_epoch
        epoch_dist_avg = sum(epoch_dist_m) / 4.0
        rp_epoch = (epoch_dist_avg - epoch_dist_m) / epoch_dist_avg
        imb_beta = imb_beta - eta * rp_epoch
        imb_beta = torch.clamp(imb_beta, min=0.1, max=4.0)
        return 2 * imb_beta / (sum(imb_beta**2) ** 0.5)

    beta = torch.tensor([1.0, 1.2, 0.5, 2.0], dtype=torch.float64)
    dist = torch.tensor([0.1, 0.3, 0.05, 0.2], dtype=torch.float64)
    torch.testing.assert_close(updated_betas(beta, dist, 0.3), authors(beta, dist, 0.3))
    ones = updated_betas(torch.ones(6, dtype=torch.float64), torch.full((6,), 0.2, dtype=torch.float64), 0.01)
    torch.testing.assert_close(ones, torch.ones(6, dtype=torch.float64))  # no lag: unchanged, ‖β‖ = √M
    assert float(updated_betas(beta, dist, 0.3).norm()) == pytest.approx(math.sqrt(4))


def test_the_authors_kl_is_their_temp_kl_loss_and_a_kth_of_the_clamped_kl():
    def temp_kl_loss_bs(logit_s, logit_t, temp):  # their criterions.py, for (B, K, …) maps
        pred_s = torch.clamp(torch.softmax(logit_s / temp, dim=1), min=0.005, max=1)
        pred_t = torch.clamp(torch.softmax(logit_t / temp, dim=1), min=0.005, max=1)
        kl = temp * temp * torch.mul(pred_t, torch.log(pred_t) - torch.log(pred_s))
        return torch.mean(kl, dim=tuple(range(1, kl.dim())))

    g = torch.Generator().manual_seed(3)
    for shape in ((5, 4), (2, 4, 3, 3)):
        s, t = torch.randn(*shape, generator=g) * 3, torch.randn(*shape, generator=g) * 3
        torch.testing.assert_close(authors_kl(s, t, temperature=4.0), temp_kl_loss_bs(s, t, 4.0))
    s, t = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)  # mild logits: no clamp reached
    from mmanet.losses.kd import per_sample_kd

    torch.testing.assert_close(authors_kl(s, t, temperature=4.0) * 10, per_sample_kd(s, t, temperature=4.0))
