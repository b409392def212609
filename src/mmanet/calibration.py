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

A segmentation model gets the same two columns over its **labelled pixels** (the void label excluded):
each pixel is one prediction, its confidence the largest softmax probability at that pixel, correct when
its argmax is the pixel's label (:class:`PixelCalibration`). The bins are torchmetrics' (``(b/15,
(b+1)/15]``, a confidence of exactly 1 in a bin of its own), but streamed as per-bin sums: torchmetrics
keeps every confidence until ``compute``, which for NYUv2's test split (654 images of 640 × 480) would be
about 200 M values per combination.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassCalibrationError

__all__ = ["CALIBRATION_METRICS", "ECE_BINS", "CombinationCalibration", "PixelCalibration"]

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


class _BinSums(Metric):
    """Per combination and confidence bin: predictions, summed confidence, summed correctness (DDP: summed)."""

    full_state_update = False
    count: Tensor
    confidence: Tensor
    correct: Tensor

    def __init__(self, num_combinations: int) -> None:
        super().__init__()
        shape = (num_combinations, ECE_BINS + 1)  # the last bin holds the confidences of exactly 1
        for name in ("count", "confidence", "correct"):
            self.add_state(name, default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, index: Tensor, confidence: Tensor, correct: Tensor) -> None:
        """``index``: each prediction's flat (combination, bin) index; the three 1-D and of one length."""
        n = self.count.numel()
        self.count += torch.bincount(index, minlength=n).reshape(self.count.shape).double()
        self.confidence += torch.bincount(index, weights=confidence.double(), minlength=n).reshape(self.count.shape)
        self.correct += torch.bincount(index, weights=correct.double(), minlength=n).reshape(self.count.shape)

    def compute(self) -> Tensor:
        return self.count


class PixelCalibration(nn.Module):
    """ECE and mean confidence of every combination over the labelled pixels of segmentation logits
    ``(n_c, B, K, H, W)`` (module docstring), with the interface of :class:`CombinationCalibration`."""

    def __init__(self, num_combinations: int, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.sums = _BinSums(num_combinations)
        self.boundaries: Tensor
        self.register_buffer("boundaries", torch.linspace(0, 1, ECE_BINS + 1), persistent=False)

    def reset(self) -> None:
        self.sums.reset()

    def update(self, logits: Tensor, valid: Tensor, target: Tensor) -> None:
        """``logits (n_c, B, K, …)``, ``valid (n_c, B)`` (the combination scores the sample), ``target (B, …)``."""
        top, predicted = logits.float().softmax(dim=2).max(dim=2)  # (n_c, B, …)
        target = target.long()
        counted = valid.reshape(valid.shape + (1,) * (top.dim() - 2)).expand_as(top)
        if self.ignore_index is not None:
            counted = counted & (target != self.ignore_index).unsqueeze(0)
        bins = torch.bucketize(top, self.boundaries, right=True) - 1  # (b/15, (b+1)/15] → b; 1.0 → 15
        combo = torch.arange(top.shape[0], device=top.device).reshape((-1,) + (1,) * (top.dim() - 1))
        index = combo * (ECE_BINS + 1) + bins
        self.sums.update(index[counted], top[counted], (predicted == target.unsqueeze(0))[counted])

    def compute(self) -> list[dict[str, float]]:
        """Per combination ``{"ece": …, "confidence": …}`` in percent (NaN for a combination that scored nothing)."""
        with self.sums.sync_context():
            count, confidence, correct = self.sums.count.sum(1), self.sums.confidence, self.sums.correct
            gap = (confidence - correct).abs().sum(1)  # Σ_b |B_b| · |conf(B_b) − acc(B_b)|
            totals = confidence.sum(1)
        out = []
        for c in range(count.shape[0]):
            n = float(count[c])
            scored = n > 0
            out.append(
                {
                    "ece": 100.0 * float(gap[c]) / n if scored else math.nan,
                    "confidence": 100.0 * float(totals[c]) / n if scored else math.nan,
                }
            )
        return out
