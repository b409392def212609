"""Metrics against hand-computed values, for the mutants `make mutate` found alive (docs/testing.md).

The per-combination table's ACER / error / mIoU come from :func:`metrics_from_confusion`; here
each is pinned on small matrices worked out by hand, including the one-sample and empty cases,
and the metric states are checked to be integer counts that DDP sums (two processes simulated
through torchmetrics' own ``sync``).
"""

from __future__ import annotations

import math

import pytest
import torch

from mmanet.metrics import CombinationConfusion, ErrorRate, MeanIoU, PresentationAttackErrors, metrics_from_confusion

# rows: true class, columns: predicted. Class 1 is bona fide, classes 0 and 2 are attacks.
CONFUSION = torch.tensor([[5, 2, 1], [1, 6, 3], [0, 4, 4]])


def test_acer_from_a_confusion_matrix_by_hand():
    # attacks: rows 0 and 2, 16 samples, 2 + 4 decided bona fide; bona fide: row 1, 10 samples, 1 + 3 rejected
    out = metrics_from_confusion(CONFUSION, "acer", bona_fide_class=1)
    assert out == pytest.approx({"apcer": 37.5, "bpcer": 40.0, "acer": 38.75})


def test_acer_with_one_attack_and_one_bona_fide_sample():
    out = metrics_from_confusion(torch.tensor([[0, 1], [0, 1]]), "acer", bona_fide_class=1)
    assert out == pytest.approx({"apcer": 100.0, "bpcer": 0.0, "acer": 50.0})


def test_acer_without_attacks_or_without_bona_fide_is_nan():
    only_bona = metrics_from_confusion(torch.tensor([[0, 0], [1, 3]]), "acer", bona_fide_class=1)
    assert math.isnan(only_bona["apcer"]) and only_bona["bpcer"] == 25.0 and math.isnan(only_bona["acer"])
    only_attacks = metrics_from_confusion(torch.tensor([[3, 1], [0, 0]]), "acer", bona_fide_class=1)
    assert only_attacks["apcer"] == 25.0 and math.isnan(only_attacks["bpcer"])


def test_error_of_one_sample_and_of_none():
    assert metrics_from_confusion(torch.tensor([[0, 1], [0, 0]]), "error") == {"error": 100.0}
    assert math.isnan(metrics_from_confusion(torch.zeros(2, 2, dtype=torch.long), "error")["error"])


def test_miou_and_pixel_accuracy_by_hand():
    confusion = torch.tensor([[3, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    # IoU: class 0 3/4, class 1 1/2, class 2 never occurs (left out), class 3 1/1; pixels 5 of 6 right
    out = metrics_from_confusion(confusion, "miou")
    assert out == pytest.approx({"pixel_acc": 100 * 5 / 6, "miou": 100 * (0.75 + 0.5 + 1.0) / 3})
    assert metrics_from_confusion(torch.tensor([[1, 0], [0, 0]]), "miou") == {"pixel_acc": 100.0, "miou": 100.0}
    empty = metrics_from_confusion(torch.zeros(2, 2, dtype=torch.long), "miou")
    assert math.isnan(empty["pixel_acc"]) and math.isnan(empty["miou"])


@pytest.fixture
def nondeterministic():
    """torch's default mode. A Lightning Trainer(deterministic=True) earlier in the process leaves
    deterministic algorithms on, and then torchmetrics counts with a bincount that silently drops
    labels ≥ num_classes: a missing ignore_index would go unnoticed."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    yield
    torch.use_deterministic_algorithms(before)


def test_mean_iou_ignores_its_void_label(nondeterministic):
    metric = MeanIoU(3, ignore_index=255)
    metric.update(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 255, 1]))
    # class 0: 1/1; class 1: tp 1, one missed → 1/2; class 2: predicted once, never true → 0
    assert float(metric.compute()) == pytest.approx(100 * 1.5 / 3)


def test_error_rate_of_one_sample():
    metric = ErrorRate()
    metric.update(torch.tensor([2]), torch.tensor([2]))
    assert float(metric.compute()) == 0.0


def test_presentation_attack_counts_accumulate_over_updates():
    metric = PresentationAttackErrors(bona_fide_class=1)
    # update 1: attacks 1 of 2 accepted, bona fide 1 of 1 rejected; update 2: 1 of 1 accepted, 1 of 3 rejected
    metric.update(torch.tensor([1, 0, 0]), torch.tensor([0, 0, 1]))
    metric.update(torch.tensor([1, 1, 1, 0]), torch.tensor([0, 1, 1, 1]))
    out = metric.compute()
    assert {k: float(v) for k, v in out.items()} == pytest.approx({"apcer": 200 / 3, "bpcer": 50.0, "acer": 175 / 3})


def test_presentation_attack_errors_of_one_attack_and_one_bona_fide():
    metric = PresentationAttackErrors(bona_fide_class=1)
    metric.update(torch.tensor([1, 1]), torch.tensor([0, 1]))
    out = metric.compute()
    assert (float(out["apcer"]), float(out["bpcer"])) == (100.0, 0.0)


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


def test_error_and_attack_states_are_summed_across_processes():
    error = ErrorRate()
    error.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    _synced_as_two_processes(error)
    assert (int(error.wrong), int(error.total)) == (2, 6)
    attacks = PresentationAttackErrors(bona_fide_class=1)
    attacks.update(torch.tensor([1, 0, 0]), torch.tensor([0, 0, 1]))
    _synced_as_two_processes(attacks)
    names = ("attacks", "attacks_accepted", "bona_fide", "bona_fide_rejected")
    assert [int(getattr(attacks, name)) for name in names] == [4, 2, 2, 2]


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
