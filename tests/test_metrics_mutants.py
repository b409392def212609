"""The confusion state of the evaluator, for the mutants `make mutate` found alive (docs/testing.md): integer
counts that DDP sums (two processes simulated through torchmetrics' own ``sync``), and its input checks.
The metrics from it are pinned in tests/test_reducers.py."""

from __future__ import annotations

import pytest
import torch

from mmanet.metrics import CombinationConfusion


def _synced_as_two_processes(metric) -> None:
    """torchmetrics' DDP reduction, with a second process that saw the same batches."""
    metric.sync(dist_sync_fn=lambda tensor, group=None: [tensor, tensor.clone()], distributed_available=lambda: True)


def _confusion_update(metric: CombinationConfusion) -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]], [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])  # (2, B=2, K=3)
    metric.update(logits, torch.tensor([[True, True], [True, False]]), torch.tensor([0, 2]))


def test_combination_confusion_counts_are_integers_summed_across_processes():
    metric = CombinationConfusion(2, 3)
    _confusion_update(metric)
    expected = torch.zeros(2, 3, 3, dtype=torch.long)
    expected[0, 0, 0] = expected[0, 2, 1] = expected[1, 0, 2] = 1  # (combination, true, predicted)
    assert torch.equal(metric.compute(), expected)
    assert metric.confusion.dtype == torch.long  # float32 counts stop being exact past 2**24 pixels
    assert metric.skipped.dtype == torch.long and metric.skipped.tolist() == [0, 1]
    _synced_as_two_processes(metric)
    assert torch.equal(metric.confusion, 2 * expected)
    assert metric.skipped.tolist() == [0, 2]


def test_combination_confusion_rejects_mismatched_shapes():
    metric = CombinationConfusion(2, 3)
    with pytest.raises(ValueError, match="do not match"):
        metric.update(torch.zeros(2, 4, 3), torch.ones(2, 5, dtype=torch.bool), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="do not match"):
        metric.update(torch.zeros(3, 4, 3), torch.ones(3, 4, dtype=torch.bool), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("label", [3, -1])
def test_combination_confusion_rejects_targets_outside_the_classes(label):
    # unchecked, class 3 of combination 0 would be counted as class 0 of combination 1
    metric = CombinationConfusion(2, 3)
    with pytest.raises(ValueError, match="outside"):
        metric.update(torch.zeros(2, 2, 3), torch.ones(2, 2, dtype=torch.bool), torch.tensor([0, label]))
