"""Calibration per modality combination (issue 23): expected calibration error and mean confidence.

For a classification model, each combination ``c`` gets

* ``ece`` — the expected calibration error over 15 equal-width confidence bins (L1, torchmetrics'
  ``MulticlassCalibrationError``): ``Σ_b |B_b| / N · |accuracy(B_b) − confidence(B_b)|``, with the
  confidence of a sample the largest softmax probability;
* ``confidence`` — the mean of that largest probability;

both in percent, over the samples the combination scores (those with at least one of its modalities),
as the error. A deployed model reports them beside each combination's error (the model card), so a
caller can tell how far to trust an answer given which modalities arrived: a combination whose mean
confidence is far above its accuracy (100 − error) is over-confident.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassCalibrationError

__all__ = ["CALIBRATION_METRICS", "ECE_BINS", "CombinationCalibration"]

ECE_BINS = 15
#: the table columns this module adds (percent)
CALIBRATION_METRICS = ("ece", "confidence")


class _ConfidenceSums(Metric):
    """Per combination, the sum of the top softmax probability and the number of samples (DDP: summed)."""

    full_state_update = False
    total: Tensor
    count: Tensor

    def __init__(self, num_combinations: int) -> None:
        super().__init__()
        self.add_state("total", default=torch.zeros(num_combinations, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(num_combinations, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, top: Tensor, valid: Tensor) -> None:  # (n_c, B) each
        self.total += (top.double() * valid).sum(dim=1)
        self.count += valid.sum(dim=1)

    def compute(self) -> Tensor:
        return self.total / self.count.clamp_min(1)


class CombinationCalibration(nn.Module):
    """ECE and mean confidence of every combination from the batched logits ``(n_c, B, K)``."""

    def __init__(self, num_combinations: int, num_classes: int) -> None:
        super().__init__()
        self.ece = nn.ModuleList(
            MulticlassCalibrationError(num_classes=num_classes, n_bins=ECE_BINS, norm="l1")
            for _ in range(num_combinations)
        )
        self.sums = _ConfidenceSums(num_combinations)

    def _per_combination(self) -> list[MulticlassCalibrationError]:
        return [cast(MulticlassCalibrationError, m) for m in self.ece]

    def reset(self) -> None:
        for metric in self._per_combination():
            metric.reset()
        self.sums.reset()

    def update(self, logits: Tensor, valid: Tensor, target: Tensor) -> None:
        """``logits (n_c, B, K)``, ``valid (n_c, B)`` (the combination scores the sample), ``target (B,)``."""
        probs = logits.float().softmax(dim=-1)
        self.sums.update(probs.max(dim=-1).values, valid)
        target = target.long()
        for c, metric in enumerate(self._per_combination()):
            rows = valid[c]
            if bool(rows.any()):
                metric.update(probs[c][rows], target[rows])

    def compute(self) -> list[dict[str, float]]:
        """Per combination ``{"ece": …, "confidence": …}`` in percent (NaN for a combination that scored nothing)."""
        with self.sums.sync_context():  # (DDP: summed; compute() would squeeze one combination to a scalar)
            totals, counts = self.sums.total.tolist(), self.sums.count.tolist()
        out = []
        for c, metric in enumerate(self._per_combination()):
            scored = counts[c] > 0
            ece = 100.0 * float(metric.compute()) if scored else math.nan
            out.append({"ece": ece, "confidence": 100.0 * totals[c] / counts[c] if scored else math.nan})
        return out
