"""The authors' MAR term (``mar.variant: official``, docs/design.md §4.2) against hand-computed values and a
transcription of their broadcasting code, next to the paper's formula on the same inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmanet.losses import mar_loss, mar_loss_official

LN3 = math.log(3.0)
# three samples, two classes, every target 0: softmax p0 = 1/2, 3/4, 1/4 → CE = ln 2, ln(4/3), ln 4
LOGITS = torch.tensor([[0.0, 0.0], [LN3, 0.0], [0.0, LN3]], dtype=torch.float64)
TARGETS = torch.tensor([0, 0, 0])
WEAK = torch.tensor([True, False, True])


def test_paper_and_official_classification_golden_values():
    # paper: (1/B) Σ_i m_i CE_i = (ln 2 + ln 4) / 3 = ln 8 / 3 = ln 2
    torch.testing.assert_close(mar_loss(LOGITS, TARGETS, WEAK), torch.tensor(math.log(2.0), dtype=torch.float64))
    # official: (n_weak / B) · Σ_j CE_j = (2/3) · (ln 2 + ln 4/3 + ln 4) = (2/3) · ln(32/3)
    expected = 2.0 / 3.0 * math.log(32.0 / 3.0)
    torch.testing.assert_close(mar_loss_official(LOGITS, TARGETS, WEAK), torch.tensor(expected, dtype=torch.float64))


def _authors_broadcast(ce: np.ndarray, weak_masks: list[np.ndarray]) -> float:
    """Their classification code, transcribed: per weak combination a ``[B]`` CE times a ``[B, 1, 1, 1]``
    mask (numpy broadcasts the product to ``[B, 1, 1, B]``), summed and divided by B; the terms summed."""
    b = ce.shape[0]
    total = 0.0
    for mask in weak_masks:
        index = mask.astype(np.float64).reshape(b, 1, 1, 1)
        product = ce * index
        assert product.shape == (b, 1, 1, b)  # the broadcast the issue describes
        total += float(product.sum()) / b
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_official_equals_the_authors_broadcast_over_their_three_weak_combinations(seed):
    g = torch.Generator().manual_seed(seed)
    b, k = 16, 2
    logits = torch.randn(b, k, generator=g, dtype=torch.float64)
    targets = torch.randint(0, k, (b,), generator=g)
    combo = torch.randint(0, 7, (b,), generator=g)  # each sample's dropout combination, 3 of 7 are weak
    weak_codes = (1, 2, 3)
    masks = [(combo == c).numpy() for c in weak_codes]  # their weak_index, one per weak combination
    weak = torch.zeros(b, dtype=torch.bool)
    for c in weak_codes:
        weak |= combo == c
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none").numpy()
    torch.testing.assert_close(
        mar_loss_official(logits, targets, weak), torch.tensor(_authors_broadcast(ce, masks), dtype=torch.float64)
    )
    # every sample receives gradient, the weak ones and the others alike (the point of the option)
    leaf = logits.clone().requires_grad_(True)
    mar_loss_official(leaf, targets, weak).backward()
    assert bool((leaf.grad.abs().sum(dim=1) > 0).all())


def test_official_is_zero_without_a_weak_sample_and_keeps_the_graph():
    logits = LOGITS.clone().requires_grad_(True)
    value = mar_loss_official(logits, TARGETS, torch.zeros(3, dtype=torch.bool))
    assert float(value.detach()) == 0.0
    value.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_official_segmentation_is_the_weighted_pixel_ce_of_the_weak_samples():
    g = torch.Generator().manual_seed(3)
    b, k, h, w = 3, 4, 2, 3
    logits = torch.randn(b, k, h, w, generator=g, dtype=torch.float64)
    targets = torch.randint(0, k, (b, h, w), generator=g)
    targets[0, 0, 0] = 255  # void
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    weak = torch.tensor([True, False, True])
    # by hand: Σ over the weak samples' labelled pixels of w_y · CE / Σ of w_y
    log_p = torch.log_softmax(logits, dim=1).numpy()
    num = den = 0.0
    for i in (0, 2):
        for y in range(h):
            for x in range(w):
                t = int(targets[i, y, x])
                if t == 255:
                    continue
                num += float(weight[t]) * -log_p[i, t, y, x]
                den += float(weight[t])
    got = mar_loss_official(logits, targets, weak, weight=weight)
    torch.testing.assert_close(got, torch.tensor(num / den, dtype=torch.float64))
    # the paper's form is a different number on the same inputs: per-sample means, scaled by 1/B
    assert abs(float(mar_loss(logits, targets, weak)) - num / den) > 1e-3


def test_official_segmentation_without_a_labelled_weak_pixel_is_zero():
    logits = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    targets = torch.full((2, 2, 2), 255)
    targets[1] = 0
    value = mar_loss_official(logits, targets, torch.tensor([True, False]))
    assert float(value) == 0.0 and torch.isfinite(value)
