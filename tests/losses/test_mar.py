"""MAR (docs/design.md §4.2): the loss, prediction distributions, weak-combination mining and weak sets."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmanet.losses import (
    MARLoss,
    combination_membership,
    kl_discrepancy,
    mar,
    mar_loss,
    prediction_distribution,
    single_modality_weak_set,
)
from mmanet.losses.mar import candidate_discrepancies, probability_sums
from mmanet.methods import mar as mar_state
from mmanet.methods.mar import FixedWeakSet, MiningCallback, WeakCombinationMiner
from mmanet.modality import ModalitySpec, all_combinations

# ----------------------------------------------------------------------------- mar_loss


def test_mar_loss_value_matches_manual():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    targets = torch.tensor([0, 2, 1, 0])
    weak = torch.tensor([True, False, True, True])

    def ce(row, y):
        return -(row[y] - math.log(sum(math.exp(v) for v in row)))

    rows = logits.tolist()
    expected = (ce(rows[0], 0) + ce(rows[2], 1) + ce(rows[3], 0)) / 4  # (1/B) Σ m_i CE_i, B = 4
    assert mar_loss(logits, targets, weak).item() == pytest.approx(expected, rel=1e-6)
    assert MARLoss()(logits, targets, weak).item() == pytest.approx(expected, rel=1e-6)


def test_mar_loss_non_weak_rows_get_exactly_zero_gradient():
    logits = torch.randn(6, 4, requires_grad=True)
    targets = torch.randint(0, 4, (6,))
    weak = torch.tensor([True, False, False, True, False, True])
    mar_loss(logits, targets, weak).backward()
    assert (logits.grad[~weak] == 0).all()
    assert (logits.grad[weak].abs().sum(dim=1) > 0).all()


def test_mar_loss_all_false_is_zero_and_differentiable():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = mar_loss(logits, torch.tensor([0, 1, 2]), torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert (logits.grad == 0).all()


def test_mar_loss_segmentation_is_per_sample_mean_over_labelled_pixels():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 2, 3, requires_grad=True)
    targets = torch.randint(0, 4, (3, 2, 3))
    targets[0, 0, :] = 255  # 3 of 6 pixels void
    targets[2] = 255  # nothing labelled: contributes 0
    weak = torch.tensor([True, True, True])
    logp = logits.log_softmax(dim=1)
    per_sample = []
    for i in range(3):
        pixels = [(h, w) for h in range(2) for w in range(3) if targets[i, h, w] != 255]
        vals = [-logp[i, targets[i, h, w], h, w] for h, w in pixels]
        per_sample.append(sum(vals) / len(vals) if vals else torch.tensor(0.0))
    expected = sum(per_sample) / 3
    got = mar_loss(logits, targets, weak)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    got.backward()
    assert torch.isfinite(logits.grad).all()
    other = targets.clone()
    other[other == 255] = 7
    assert mar_loss(logits, other, weak, ignore_index=7).item() == pytest.approx(got.item(), rel=1e-6)


def test_mar_loss_errors():
    with pytest.raises(ValueError, match="BoolTensor"):
        mar_loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="do not match"):
        mar_loss(torch.randn(2, 3), torch.tensor([0, 1, 2]), torch.tensor([True, False]))


# ----------------------------------------------------------------------------- distributions


def test_prediction_distribution_and_kl():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    q = prediction_distribution(logits)
    torch.testing.assert_close(q, torch.tensor([(0.5 + 0.75) / 2, (0.5 + 0.25) / 2]))
    p = torch.tensor([0.5, 0.5])
    r = torch.tensor([0.9, 0.1])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl_discrepancy(p, r, eps=0.0).item() == pytest.approx(expected, rel=1e-6)
    assert kl_discrepancy(p, p).item() == pytest.approx(0.0, abs=1e-7)
    assert torch.isfinite(kl_discrepancy(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])))


def test_prediction_distribution_segmentation_uses_labelled_pixels():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0, 0, 1] = 50.0  # pixel 1 is certain of class 0; pixel 0 is uniform
    targets = torch.tensor([[[255, 1]]])
    torch.testing.assert_close(prediction_distribution(logits, targets), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(prediction_distribution(logits), torch.tensor([0.75, 0.25]))


# ---------------------------------------- the miner state (mining itself: tests/methods/test_mar.py)


SPEC3 = ModalitySpec(("a", "b", "c"))


def test_miner_candidates():
    miner = WeakCombinationMiner(SPEC3)
    assert [c.name for c in miner.candidates] == ["a+b+c", "b+c", "a+c", "a+b"]
    spec2 = ModalitySpec(("rgb", "depth"))
    assert [c.name for c in WeakCombinationMiner(spec2).candidates] == ["rgb+depth", "depth", "rgb"]


def test_memory_bank_mean_decides_not_the_last_epoch():
    miner = WeakCombinationMiner(SPEC3)
    miner.record(0, {"b+c": 0.9, "a+c": 0.1, "a+b": 0.1})
    miner.record(1, {"b+c": 0.1, "a+c": 0.3, "a+b": 0.1})  # last epoch alone would pick 'b'
    assert miner.mean_discrepancies() == pytest.approx({"b+c": 0.5, "a+c": 0.2, "a+b": 0.1})
    assert {c.name for c in miner.select()} == {"b", "c", "b+c"}
    assert miner.strong_modalities == ["a"]


def test_num_strong_two():
    spec = ModalitySpec(("a", "b", "c", "d"))
    miner = WeakCombinationMiner(spec, num_strong=2)
    miner.record(0, {"b+c+d": 0.1, "a+c+d": 0.5, "a+b+d": 0.05, "a+b+c": 0.4})
    weak = miner.select()
    assert miner.strong_modalities == ["b", "d"]
    assert {c.name for c in weak} == {"a", "c", "a+c"}


def test_select_and_num_strong_errors():
    with pytest.raises(ValueError, match="memory bank is empty"):
        WeakCombinationMiner(SPEC3).select()
    with pytest.raises(ValueError, match="num_strong"):
        WeakCombinationMiner(SPEC3, num_strong=3)
    with pytest.raises(ValueError, match="num_strong"):
        WeakCombinationMiner(SPEC3, num_strong=0)
    with pytest.raises(RuntimeError, match="select"):
        WeakCombinationMiner(SPEC3).weak_mask(torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="missing"):
        WeakCombinationMiner(SPEC3).record(0, {"b+c": 1.0})


def test_weak_mask():
    miner = WeakCombinationMiner(SPEC3)
    miner.record(0, {"b+c": 1.0, "a+c": 0.0, "a+b": 0.0})
    miner.select()
    keep = torch.tensor(
        [
            [True, True, True],  # a+b+c
            [False, True, False],  # b      weak
            [False, False, True],  # c      weak
            [False, True, True],  # b+c    weak
            [True, False, False],  # a
            [True, False, True],  # a+c
        ]
    )
    assert miner.weak_mask(keep).tolist() == [False, True, True, True, False, False]
    # same answer as a plain python membership test for every combination
    weak_names = {c.name for c in miner.weak_set}
    combos = all_combinations(SPEC3)
    table = torch.stack([c.mask() for c in combos])
    assert miner.weak_mask(table).tolist() == [c.name in weak_names for c in combos]


def test_state_dict_round_trip_weights_only(tmp_path):
    miner = WeakCombinationMiner(SPEC3)
    miner.record(0, {"b+c": 0.7, "a+c": 0.2, "a+b": 0.1})
    miner.record(3, {"b+c": 0.5, "a+c": 0.2, "a+b": 0.1})
    miner.select()
    buffer = io.BytesIO()
    torch.save({"miner": miner.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["miner"]
    restored = WeakCombinationMiner(SPEC3)
    restored.load_state_dict(state)
    assert restored.memory_bank == miner.memory_bank
    assert restored.weak_set == miner.weak_set
    assert restored.strong_modalities == ["a"]
    assert restored.num_strong == 1
    keep = torch.stack([c.mask() for c in all_combinations(SPEC3)])
    assert restored.weak_mask(keep).tolist() == miner.weak_mask(keep).tolist()
    # before selection: weak set stays None
    fresh = WeakCombinationMiner(SPEC3)
    fresh.load_state_dict(WeakCombinationMiner(SPEC3).state_dict())
    assert fresh.weak_set is None
    with pytest.raises(ValueError, match="modalities"):
        WeakCombinationMiner(ModalitySpec(("x", "y", "z"))).load_state_dict(state)


def test_single_modality_weak_set_shares_weak_mask_logic():
    spec = ModalitySpec(("a", "b", "c", "d"))
    assert [c.name for c in single_modality_weak_set(spec)] == ["a", "b", "c", "d"]
    sr = FixedWeakSet.single_modality(spec)
    keep = torch.stack([c.mask() for c in all_combinations(spec)])
    assert sr.weak_mask(keep).tolist() == [c.size == 1 for c in all_combinations(spec)]
    assert sr.weak_mask(keep).tolist() == combination_membership(keep, sr.weak_set).tolist()
    restored = FixedWeakSet([spec.full])
    restored.load_state_dict(torch.load(_saved(sr.state_dict()), weights_only=True))
    assert restored.weak_set == sr.weak_set
    with pytest.raises(ValueError, match="at least one"):
        FixedWeakSet([])


def _saved(obj) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer




def test_probability_sums_equal_per_candidate_distributions():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 6, 5, generator=g)
    valid = torch.rand(4, 6, generator=g) > 0.3
    valid[:, 0] = True
    sums, counts = probability_sums(logits, valid)
    for c in range(4):
        expected = prediction_distribution(logits[c][valid[c]].double())
        torch.testing.assert_close(sums[c] / counts[c], expected.double())
    kl = candidate_discrepancies(sums, counts)
    q = sums / counts[:, None]
    torch.testing.assert_close(kl, torch.stack([kl_discrepancy(q[0], q[c]) for c in range(1, 4)]))
    # segmentation: labelled pixels only
    seg = torch.randn(2, 3, 4, 5, 5, generator=g)
    target = torch.randint(0, 4, (3, 5, 5), generator=g)
    target[0, :2] = 255
    s2, c2 = probability_sums(seg, torch.ones(2, 3, dtype=torch.bool), target)
    expected = prediction_distribution(seg[1], target)
    torch.testing.assert_close((s2[1] / c2[1]).to(expected.dtype), expected)
    with pytest.raises(ValueError, match="no sample"):
        candidate_discrepancies(sums, torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64))


# ------------------------------------------------------------ hand-computed cases for the mutants `make mutate` found
# MAR against hand-computed values, for the mutants `make mutate` found alive (docs/testing.md).
#
# Each test pins a case the other MAR tests left open: one labelled pixel, logits at another
# resolution than the labels (bilinear resize), the classification path ignoring targets, a
# candidate with a single sample, the ε of the KL, the empty weak set, the saved weak-set state, the
# void label the miner hands to the mining pass.


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
    logged: dict[str, float] = {}
    hook = MiningCallback(miner, _FixedCandidateMaps(logits), lambda: [batch], warmup_epochs=1)
    hook(0, logged.__setitem__)
    assert set(logged) == {"mar/kl_depth", "mar/kl_rgb"}
    # pixel 0 alone: q_full = (½, ½), q_depth = (½, ½), q_rgb = softmax(50, 0)
    eps, q_rgb = 1e-8, _softmax([50.0, 0.0])
    d_rgb = sum(0.5 * math.log((0.5 + eps) / (q + eps)) for q in q_rgb)
    assert miner.memory_bank[0] == pytest.approx({"depth": 0.0, "rgb": d_rgb}, rel=1e-6, abs=1e-9)
