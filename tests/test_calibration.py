"""ECE and mean confidence per combination: against a dense hand-written ECE and against torchmetrics itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from mmanet.calibration import CombinationCalibration


def dense_ece(probs: np.ndarray, target: np.ndarray, bins: int = 15) -> float:
    """Σ_b |B_b|/N · |acc(B_b) − conf(B_b)| over equal-width bins (0, 1/15], (1/15, 2/15], …."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == target
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        chosen = which == b
        if chosen.any():
            total += chosen.mean() * abs(correct[chosen].mean() - confidence[chosen].mean())
    return float(total)


def test_per_combination_ece_and_confidence_over_the_valid_rows():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, 4, generator=gen) * 2  # 3 combinations, 40 samples, 4 classes
    target = torch.randint(0, 4, (40,), generator=gen)
    valid = torch.ones(3, 40, dtype=torch.bool)
    valid[1, :15] = False  # combination 1 does not score the first 15 samples
    valid[2] = False  # combination 2 scores none
    calibration = CombinationCalibration(3, 4)
    calibration.update(logits[:, :25], valid[:, :25], target[:25])  # two batches
    calibration.update(logits[:, 25:], valid[:, 25:], target[25:])
    got = calibration.compute()
    for c in (0, 1):
        rows = valid[c]
        probs = logits[c][rows].softmax(-1)
        assert got[c]["ece"] == pytest.approx(100 * dense_ece(probs.numpy(), target[rows].numpy()), abs=1e-4)
        reference = multiclass_calibration_error(probs, target[rows], num_classes=4, n_bins=15)
        assert got[c]["ece"] == pytest.approx(100 * float(reference), abs=1e-4)
        assert got[c]["confidence"] == pytest.approx(100 * float(probs.max(-1).values.mean()), abs=1e-4)
    assert np.isnan(got[2]["ece"]) and np.isnan(got[2]["confidence"])
    calibration.reset()
    assert all(np.isnan(v["confidence"]) for v in calibration.compute())


def test_a_perfectly_calibrated_certain_model_has_zero_ece():
    target = torch.tensor([0, 1, 2, 1])
    logits = torch.nn.functional.one_hot(target, 3).float()[None] * 50
    calibration = CombinationCalibration(1, 3)
    calibration.update(logits, torch.ones(1, 4, dtype=torch.bool), target)
    (only,) = calibration.compute()
    assert only["ece"] == pytest.approx(0.0, abs=1e-3) and only["confidence"] == pytest.approx(100.0, abs=1e-3)
