"""MAR against hand-computed values, for the mutants `make mutate` found alive (docs/testing.md).

Each test pins a case the other MAR tests left open: one labelled pixel, logits at another
resolution than the labels (bilinear resize), the classification path ignoring targets, a
candidate with a single sample, the ε of the KL, the empty weak set, the saved weak-set state, the
void label the miner hands to the mining pass.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmanet.losses import mar
from mmanet.methods import mar as mar_state
from mmanet.methods.mar import MiningCallback
from mmanet.modality import ModalitySpec


def _softmax(row: list[float]) -> list[float]:
    z = sum(math.exp(v) for v in row)
    return [math.exp(v) / z for v in row]


def _upsample_2_to_4(a: float, b: float) -> list[float]:
    """Bilinear ×2 of [a, b] with align_corners=False, by hand: source x = (i + ½)/2 − ½, clamped."""
    return [a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b]


# logits of 2 classes on a 1×2 map; the labels are 1×4: the logits are resized to 4 pixels
LOW_RES = torch.tensor([[[[1.0, -2.0]], [[0.0, 3.0]]]])  # (1, K=2, 1, 2)


def _resized_pixel_probs() -> list[list[float]]:
    c0 = _upsample_2_to_4(1.0, -2.0)
    c1 = _upsample_2_to_4(0.0, 3.0)
    return [_softmax([c0[i], c1[i]]) for i in range(4)]


def test_mar_loss_one_labelled_pixel_is_its_own_mean():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    targets = torch.tensor([[[1, 255]]])  # one labelled pixel, class 1
    expected = -math.log(_softmax([2.0, 0.0])[1])  # CE of that pixel, divided by 1 (B = 1)
    got = mar.mar_loss(logits, targets, torch.tensor([True]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_mar_loss_module_passes_its_ignore_index():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])
    targets = torch.tensor([[[1, 7]]])  # 7 is void for this module
    expected = -math.log(_softmax([2.0, 0.0])[1])
    loss = mar.MARLoss(ignore_index=7)(logits, targets, torch.tensor([True]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_classification_distribution_ignores_targets():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = torch.tensor([255, 0])  # targets only select pixels of segmentation maps
    expected = torch.tensor([(0.5 + 0.75) / 2, (0.5 + 0.25) / 2])
    torch.testing.assert_close(mar.prediction_distribution(logits, targets), expected)


def test_segmentation_distribution_without_targets_counts_pixels_not_classes():
    logits = torch.zeros(1, 2, 1, 3)  # K = 2 classes, 3 pixels
    logits[0, 0, 0, 0] = 50.0  # pixel 0 certain of class 0, the two others uniform
    expected = torch.tensor([(1.0 + 0.5 + 0.5) / 3, (0.0 + 0.5 + 0.5) / 3])
    torch.testing.assert_close(mar.prediction_distribution(logits), expected)


def test_segmentation_distribution_resizes_logits_bilinearly_to_the_labels():
    targets = torch.tensor([[[0, 1, 255, 0]]])  # pixel 2 void
    probs = _resized_pixel_probs()
    labelled = [probs[i] for i in (0, 1, 3)]
    expected = torch.tensor([sum(p[k] for p in labelled) / 3 for k in range(2)])
    torch.testing.assert_close(mar.prediction_distribution(LOW_RES, targets), expected)


def test_segmentation_distribution_honours_its_ignore_index():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0, 0, 1] = 50.0
    targets = torch.tensor([[[7, 1]]])  # 7 void: only pixel 1, certain of class 0
    torch.testing.assert_close(mar.prediction_distribution(logits, targets, ignore_index=7), torch.tensor([1.0, 0.0]))


def test_probability_sums_resize_logits_bilinearly_to_the_labels():
    logits = LOW_RES.expand(2, 1, 2, 1, 2)  # two candidates, one sample
    valid = torch.tensor([[True], [False]])
    targets = torch.tensor([[[0, 1, 255, 0]]])
    sums, counts = mar.probability_sums(logits, valid, targets)
    probs = _resized_pixel_probs()
    expected = [sum(probs[i][k] for i in (0, 1, 3)) for k in range(2)]
    torch.testing.assert_close(sums, torch.tensor([expected, [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(counts, torch.tensor([3.0, 0.0], dtype=torch.float64))


def test_probability_sums_of_maps_without_targets_count_every_pixel():
    logits = torch.zeros(1, 2, 2, 1, 3)  # one candidate, two samples, K = 2, 3 pixels
    logits[0, 0, 0, 0, 0] = 50.0  # sample 0, pixel 0: certain of class 0
    logits[0, 1, 1, 0, 2] = 50.0  # sample 1 (not valid): ignored
    sums, counts = mar.probability_sums(logits, torch.tensor([[True, False]]))
    torch.testing.assert_close(sums, torch.tensor([[2.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(counts, torch.tensor([3.0], dtype=torch.float64))


def test_probability_sums_reject_validity_of_another_shape():
    with pytest.raises(ValueError, match="matching validity"):
        mar.probability_sums(torch.zeros(2, 3, 4), torch.ones(2, 5, dtype=torch.bool))


def test_a_candidate_with_one_sample_has_a_distribution():
    sums = torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    counts = torch.tensor([1.0, 1.0], dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert mar.candidate_discrepancies(sums, counts, eps=0.0).item() == pytest.approx(expected, rel=1e-9)


def test_candidate_discrepancies_use_their_eps():
    sums = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    counts = torch.ones(2, dtype=torch.float64)
    eps = 0.5
    expected = 1.0 * math.log((1.0 + eps) / (0.0 + eps))  # the zero term q_full = 0 adds nothing
    assert mar.candidate_discrepancies(sums, counts, eps=eps).item() == pytest.approx(expected, rel=1e-9)
    assert mar.kl_discrepancy(sums[0], sums[1], eps=eps).item() == pytest.approx(expected, rel=1e-9)


def test_empty_weak_set_marks_no_row():
    keep = torch.ones(5, 3, dtype=torch.bool)
    mask = mar.combination_membership(keep, [])
    assert mask.dtype == torch.bool
    assert mask.tolist() == [False] * 5


SPEC = ModalitySpec(("rgb", "depth", "ir"))


def test_fixed_weak_set_state_names_its_modalities_and_combinations():
    weak = mar_state.FixedWeakSet.single_modality(SPEC)
    assert weak.state_dict() == {"modalities": ["rgb", "depth", "ir"], "weak_set": ["rgb", "depth", "ir"]}
    reordered = mar_state.FixedWeakSet.single_modality(ModalitySpec(("depth", "rgb", "ir")))
    with pytest.raises(ValueError, match="modalities"):
        reordered.load_state_dict(weak.state_dict())


def test_fixed_weak_set_state_without_modalities_loads():
    weak = mar_state.FixedWeakSet([SPEC.full])
    weak.load_state_dict({"weak_set": ["depth+ir", "rgb"]})
    assert [c.name for c in weak.weak_set] == ["rgb", "depth+ir"]


class _FixedCandidateMaps(nn.Module):
    """``predict_all``: the given per-candidate logit maps ``(n_c, B, K, H, W)``, every row valid."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.unused = nn.Parameter(torch.zeros(()))

    def predict_all(self, inputs, present, combinations):
        return SimpleNamespace(logits=self.logits, valid=torch.ones(self.logits.shape[:2], dtype=torch.bool))


def test_mining_callback_uses_the_void_label_of_the_miner():
    spec = ModalitySpec(("rgb", "depth"))
    miner = mar_state.WeakCombinationMiner(spec, ignore_index=7)
    assert [c.name for c in miner.candidates] == ["rgb+depth", "depth", "rgb"]
    logits = torch.zeros(3, 1, 2, 1, 2)  # (candidates, B = 1, K = 2, a 1×2 map)
    logits[1, 0, 0, 0, 1] = 50.0  # 'depth' is certain of class 0 on pixel 1 only, which is void
    logits[2, 0, 0, 0, 0] = 50.0  # 'rgb' is certain of class 0 on pixel 0
    batch = ({}, torch.ones(1, 2, dtype=torch.bool), torch.tensor([[[1, 7]]]))
    module = SimpleNamespace(log=lambda *args, **kwargs: None)
    callback = MiningCallback(miner, _FixedCandidateMaps(logits), lambda: [batch], warmup_epochs=1)
    callback.on_train_epoch_end(SimpleNamespace(current_epoch=0), module)
    # pixel 0 alone: q_full = (½, ½), q_depth = (½, ½), q_rgb = softmax(50, 0)
    eps, q_rgb = 1e-8, _softmax([50.0, 0.0])
    d_rgb = sum(0.5 * math.log((0.5 + eps) / (q + eps)) for q in q_rgb)
    assert miner.memory_bank[0] == pytest.approx({"depth": 0.0, "rgb": d_rgb}, rel=1e-6, abs=1e-9)
