"""ECE and mean confidence per combination: against a dense hand-written ECE and against torchmetrics itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from mmanet.calibration import CombinationCalibration, PixelCalibration


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


def test_pixel_ece_and_confidence_over_the_labelled_pixels_of_the_scored_rows():
    """Segmentation: every labelled pixel of a scored sample is one prediction; void pixels and unscored rows
    do not count. Against torchmetrics on the flattened pixels and the dense formula."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 6, 5, 4, 7, generator=gen) * 3  # 3 combinations, 6 images, 5 classes, 4 × 7 pixels
    target = torch.randint(0, 5, (6, 4, 7), generator=gen)
    target[0, :2] = 255  # void pixels
    target[3] = 255  # an image with no labelled pixel
    logits[0, 1, 2, 1:3] = 60.0  # some pixels of confidence exactly 1 (torchmetrics' extra last bin)
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[1, 4:] = False
    valid[2] = False
    calibration = PixelCalibration(3, ignore_index=255)
    calibration.update(logits[:, :2], valid[:, :2], target[:2])  # two batches
    calibration.update(logits[:, 2:], valid[:, 2:], target[2:])
    got = calibration.compute()
    for c in (0, 1):
        counted = valid[c][:, None, None] & (target != 255)
        probs = logits[c].permute(0, 2, 3, 1)[counted].softmax(-1)  # (labelled pixels, K)
        labels = target[counted]
        assert len(labels) == int(counted.sum()) > 20
        reference = multiclass_calibration_error(probs, labels, num_classes=5, n_bins=15)
        assert got[c]["ece"] == pytest.approx(100 * float(reference), abs=1e-4)
        assert got[c]["confidence"] == pytest.approx(100 * float(probs.max(-1).values.mean()), abs=1e-4)
        if c == 1:  # no confidence of exactly 1 among these: the dense formula's bins are the same
            assert got[c]["ece"] == pytest.approx(100 * dense_ece(probs.numpy(), labels.numpy()), abs=1e-4)
    assert float(probs.max(-1).values.max()) < 1.0
    assert np.isnan(got[2]["ece"]) and np.isnan(got[2]["confidence"])
    calibration.reset()
    assert all(np.isnan(v["ece"]) for v in calibration.compute())


def test_the_segmentation_evaluator_tables_carry_pixel_calibration():
    from mmanet.metrics import PerCombinationEvaluator
    from mmanet.modality import ModalitySpec

    spec = ModalitySpec(("rgb", "depth"))

    class Fixed:  # a network whose batched pass returns fixed logits for every combination
        training = False

        def predict_all(self, inputs, present, masks):
            from types import SimpleNamespace

            logits = torch.zeros(len(masks), 2, 3, 2, 2)
            logits[:, :, 1] = 2.0  # every pixel predicts class 1 with softmax confidence e²/(e² + 2)
            return SimpleNamespace(logits=logits, valid=torch.ones(len(masks), 2, dtype=torch.bool))

    evaluator = PerCombinationEvaluator(spec, 3, task="segmentation", ignore_index=255)
    target = torch.tensor([[[1, 1], [0, 255]], [[1, 2], [255, 255]]])  # 5 labelled pixels, 3 of them class 1
    evaluator.update(Fixed(), {}, torch.ones(2, 2, dtype=torch.bool), target)
    table = evaluator.compute()
    confidence = float(np.exp(2) / (np.exp(2) + 2))
    for _, values in table.rows:
        assert values["confidence"] == pytest.approx(100 * confidence)
        assert values["ece"] == pytest.approx(100 * abs(confidence - 3 / 5))  # one bin: |conf − accuracy|


def test_pixel_calibration_of_the_esanet_network_on_the_rooms_at_batch_two():
    """Wiring with real parts: the ESANet network of the shipped segmentation configs (ResNet encoders,
    BatchNorm, the decoder) on the rooms (void label 255), evaluated two images at a time, against
    torchmetrics on the labelled pixels of each combination's batched logits."""
    from torch.utils.data import DataLoader

    from conftest import tiny_raw
    from mmanet.config import resolve_run_config
    from mmanet.data import collate_samples
    from mmanet.models.factory import build_net
    from mmanet.training.factory import load_bundle, task_info

    rooms = {"num_train": 4, "num_val": 2, "num_test": 6, "height": 32, "width": 32}
    raw = tiny_raw(
        "esanet_md",
        data={"name": "rooms", "options": rooms, "batch_size": 2},
        model={"width": 4, "channels": None, "encoder": {"type": "resnet"}, "head": {"type": "esanet_decoder"},
               "fusion": "se_add", "dropout": 0.0},
    )  # fmt: skip
    config = resolve_run_config(raw)
    bundle = load_bundle(config)
    info = task_info(bundle)
    torch.manual_seed(0)
    net = build_net(config, info).eval()
    loader = DataLoader(bundle.test, batch_size=2, collate_fn=collate_samples)
    evaluator = info.evaluator()
    table = evaluator.evaluate(net, loader)
    masks = torch.stack([c.mask() for c in evaluator.combinations])
    probs: list[list[torch.Tensor]] = [[] for _ in masks]
    labels: list[list[torch.Tensor]] = [[] for _ in masks]
    voids = 0
    with torch.no_grad():
        for inputs, present, target in loader:
            out = net.predict_all(inputs, present, masks)
            labelled = target != 255
            voids += int((~labelled).sum())
            for c in range(len(masks)):
                counted = out.valid[c][:, None, None] & labelled
                probs[c].append(out.logits[c].permute(0, 2, 3, 1)[counted].softmax(-1))
                labels[c].append(target[counted])
    assert voids > 0
    for c, (combo, values) in enumerate(table.rows):
        p, y = torch.cat(probs[c]), torch.cat(labels[c])
        reference = multiclass_calibration_error(p, y, num_classes=info.num_classes, n_bins=15)
        assert values["ece"] == pytest.approx(100 * float(reference), abs=1e-3), combo.name
        assert values["confidence"] == pytest.approx(100 * float(p.max(-1).values.mean()), abs=1e-3), combo.name
        assert values["pixel_acc"] == pytest.approx(100 * float((p.argmax(-1) == y).float().mean()), abs=1e-3)
