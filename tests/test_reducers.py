"""Metric reducers (mmanet.reducers): each against sklearn on random predictions and against hand-computed
matrices (one sample, none, absent classes), the companions a table shows, and each direction."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, jaccard_score

from mmanet.reducers import METRICS, higher_is_better, metric, metrics_from_confusion, monitor_mode, primary_metric

# rows: true class, columns: predicted. Class 1 is bona fide, classes 0 and 2 are attacks.
CONFUSION = torch.tensor([[5, 2, 1], [1, 6, 3], [0, 4, 4]])


def confusion_of(target: torch.Tensor, preds: torch.Tensor, k: int, void: int | None = None) -> torch.Tensor:
    """The (true, predicted) count matrix, void targets left out (independent of the evaluator's code)."""
    target, preds = target.flatten(), preds.flatten()
    if void is not None:
        keep = target != void
        target, preds = target[keep], preds[keep]
    counts = torch.zeros(k, k, dtype=torch.long)
    for t, p in zip(target.tolist(), preds.tolist(), strict=True):
        counts[t, p] += 1
    return counts


# ----------------------------------------------------------------------------- against sklearn


def test_error_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    target, preds = torch.randint(0, 5, (51,), generator=g), torch.randint(0, 5, (51,), generator=g)
    expected = 100 * (1 - accuracy_score(target, preds))
    assert metric("error").reduce(confusion_of(target, preds, 5), None) == pytest.approx(expected, abs=1e-9)
    assert 0 < expected < 100


@pytest.mark.parametrize("bona", [0, 1])
def test_apcer_bpcer_acer_match_sklearns_confusion_matrix(bona):
    g = torch.Generator().manual_seed(1)
    target, preds = torch.randint(0, 2, (200,), generator=g), torch.randint(0, 2, (200,), generator=g)
    attack = 1 - bona
    matrix = confusion_matrix(target, preds, labels=[attack, bona])  # rows: truth [attack, bona]
    (attack_rejected, attack_accepted), (bona_rejected, bona_accepted) = matrix
    apcer = 100 * attack_accepted / (attack_rejected + attack_accepted)
    bpcer = 100 * bona_rejected / (bona_rejected + bona_accepted)
    out = metrics_from_confusion(confusion_of(target, preds, 2), "acer", bona_fide_class=bona)
    assert out == pytest.approx({"apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2})


def test_miou_matches_sklearn_with_void_and_a_class_that_never_occurs():
    """Macro mIoU over the classes that occur in the target or the predictions (void removed), as
    sklearn's jaccard_score(average='macro') by default; a class absent from both counts for nothing."""
    g = torch.Generator().manual_seed(2)
    k, void = 6, 255  # class 5 never occurs
    target = torch.randint(0, 5, (3, 8, 8), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.2] = void
    preds = torch.randint(0, 5, (3, 8, 8), generator=g)
    keep = target != void
    expected = 100 * jaccard_score(target[keep], preds[keep], average="macro")
    assert metric("miou").reduce(confusion_of(target, preds, k, void), None) == pytest.approx(expected, rel=1e-9)
    all_six = 100 * jaccard_score(target[keep], preds[keep], average="macro", labels=list(range(6)), zero_division=0)
    assert abs(all_six - expected) > 1.0  # counting the absent class as 0 would be another number
    pixel = 100 * accuracy_score(target[keep], preds[keep])
    assert metric("pixel_acc").reduce(confusion_of(target, preds, k, void), None) == pytest.approx(pixel)


# ----------------------------------------------------------------------------- by hand


def test_acer_from_a_confusion_matrix_by_hand():
    # attacks: rows 0 and 2, 16 samples, 2 + 4 decided bona fide; bona fide: row 1, 10 samples, 1 + 3 rejected
    out = metrics_from_confusion(CONFUSION, "acer", bona_fide_class=1)
    assert out == pytest.approx({"apcer": 37.5, "bpcer": 40.0, "acer": 38.75})
    assert list(out) == ["apcer", "bpcer", "acer"]  # the table's column order, headline last


def test_acer_with_one_attack_and_one_bona_fide_sample():
    out = metrics_from_confusion(torch.tensor([[0, 1], [0, 1]]), "acer", bona_fide_class=1)
    assert out == pytest.approx({"apcer": 100.0, "bpcer": 0.0, "acer": 50.0})


def test_acer_without_attacks_or_without_bona_fide_is_nan():
    only_bona = metrics_from_confusion(torch.tensor([[0, 0], [1, 3]]), "acer", bona_fide_class=1)
    assert math.isnan(only_bona["apcer"]) and only_bona["bpcer"] == 25.0 and math.isnan(only_bona["acer"])
    only_attacks = metrics_from_confusion(torch.tensor([[3, 1], [0, 0]]), "acer", bona_fide_class=1)
    assert only_attacks["apcer"] == 25.0 and math.isnan(only_attacks["bpcer"])
    with pytest.raises(ValueError, match="bona fide class"):
        metrics_from_confusion(CONFUSION, "acer")


def test_multiclass_attacks_any_attack_decision_is_a_rejection():
    # bona fide = 1; attack types 0, 2, 3; an attack decided as another attack type is still rejected
    target, preds = torch.tensor([0, 2, 3, 3, 1, 1]), torch.tensor([2, 3, 1, 0, 1, 3])
    out = metrics_from_confusion(confusion_of(target, preds, 4), "acer", bona_fide_class=1)
    assert out == pytest.approx({"apcer": 25.0, "bpcer": 50.0, "acer": 37.5})


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
    # a class predicted but never true counts as IoU 0 (it occurs in the predictions)
    predicted_only = confusion_of(torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([3, 0, 1, 1, 2, 2]), 4)
    assert metric("miou").reduce(predicted_only, None) == pytest.approx(62.5)


# ----------------------------------------------------------------------------- registry and directions


def test_every_metric_states_its_direction_once():
    assert {name: higher_is_better(name) for name in METRICS} == {
        "acer": False, "apcer": False, "bpcer": False, "error": False, "miou": True, "pixel_acc": True,
    }  # fmt: skip
    assert (monitor_mode("miou"), monitor_mode("acer")) == ("max", "min")
    with pytest.raises(KeyError, match="valid"):
        higher_is_better("f1")


def test_primary_metric():
    assert primary_metric("segmentation", None) == "miou"
    assert primary_metric("classification", 1) == "acer"
    assert primary_metric("classification", 0) == "acer"
    assert primary_metric("classification", None) == "error"


def test_the_headline_metric_can_be_chosen_in_the_config(tmp_path):
    from mmanet.config import ConfigError, resolve_run_config
    from mmanet.training.factory import load_bundle, task_info
    from mmanet.training.preflight import preflight
    from mmanet.training.runner import run

    raw = {"method": "sf_md", "data": {"name": "toy", "options": {"num_samples": 60, "num_classes": 2}},
           "model": {"channels": 8}, "train": {"max_epochs": 1, "progress_bar": False},
           "evaluate": {"metric": "acer"}}  # fmt: skip
    with pytest.raises(ConfigError, match="evaluate.metric: 'acer' needs a bona fide class"):
        preflight(resolve_run_config(raw), load_bundle(resolve_run_config(raw)))
    with pytest.raises(ConfigError, match="unknown metric 'f1'"):
        resolve_run_config({**raw, "evaluate": {"metric": "f1"}})
    rooms = {"num_train": 8, "num_val": 4, "num_test": 4, "height": 16, "width": 24, "augment": False}
    seg = resolve_run_config(
        {"method": "esanet_md", "data": {"name": "rooms", "options": rooms, "batch_size": 4},
         "model": {"width": 4}, "train": {"max_epochs": 1, "progress_bar": False}, "evaluate": {"metric": "error"}}
    )  # fmt: skip
    assert task_info(load_bundle(seg)).headline("error") == "error"
    result = run(seg, tmp_path / "seg")
    assert result.table.metric == "error" and "error" in result.table.metric_names  # pixel error, not mIoU
    assert "val/avg_error" in (tmp_path / "seg" / "logs" / "version_0" / "metrics.csv").read_text()
