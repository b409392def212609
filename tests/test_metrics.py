"""The per-combination evaluator (docs/design.md §5); the metrics themselves: tests/test_reducers.py."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score
from torch.utils.data import DataLoader

from mmanet.data.base import ArrayMultimodalDataset
from mmanet.metrics import CombinationConfusion, PerCombinationEvaluator
from mmanet.modality import ModalitySpec, all_combinations
from mmanet.models import build_network
from mmanet.models.network import MultimodalNet

SPEC = ModalitySpec(("a", "b", "c"))
SHAPES = {"a": (6,), "b": (5,), "c": (4,)}
K = 4

# ----------------------------------------------------------------------------- PerCombinationEvaluator


def make_net(seed: int = 0):
    torch.manual_seed(seed)
    net = build_network(SPEC, SHAPES, K, channels=8, head_hidden=16, dropout=0.3)
    return net.eval()


def make_batches(present_rows=None, n_batches: int = 3, batch: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for i in range(n_batches):
        inputs = {m: torch.randn(batch, *s, generator=g) for m, s in SHAPES.items()}
        present = torch.ones(batch, len(SPEC), dtype=torch.bool) if present_rows is None else present_rows[i]
        target = torch.randint(0, K, (batch,), generator=g)
        batches.append((inputs, present, target))
    return batches


class CountingNet:
    """Wraps a net and counts encode / fuse_predict / forward calls."""

    def __init__(self, net):
        self.net = net
        self.calls = {"encode": 0, "fuse_predict": 0, "forward": 0}

    def encode(self, inputs, present=None):
        self.calls["encode"] += 1
        return self.net.encode(inputs, present)

    def fuse_predict(self, features, mask):
        self.calls["fuse_predict"] += 1
        return self.net.fuse_predict(features, mask)

    predict_combinations = MultimodalNet.predict_combinations
    predict_all = MultimodalNet.predict_all

    def __call__(self, *args):
        self.calls["forward"] += 1
        return self.net(*args)


def alone(net, batches, combo):
    """The error rate of one combination, evaluated by a plain forward with mask = combo ∧ present."""
    wrong = total = skipped = 0
    with torch.no_grad():
        for inputs, present, target in batches:
            mask = present & combo.mask()
            keep = mask.any(1)
            skipped += int((~keep).sum())
            if not keep.any():
                continue
            logits = net({k: v[keep] for k, v in inputs.items()}, mask[keep])
            wrong += int((logits.argmax(1) != target[keep]).sum())
            total += int(keep.sum())
    return (100 * wrong / total if total else math.nan), skipped


def test_one_row_per_combination_and_average_is_the_mean():
    net = make_net()
    evaluator = PerCombinationEvaluator(SPEC, K)
    for batch in make_batches():
        evaluator.update(net, *batch)
    table = evaluator.compute()
    assert [c.name for c, _ in table.rows] == [c.name for c in all_combinations(SPEC)]
    assert table.metric == "error"
    values = [v["error"] for _, v in table.rows]
    assert table.average()["error"] == pytest.approx(sum(values) / len(values))
    assert len(set(values)) > 1  # combinations really differ
    assert table.records()[-1][len(SPEC)] == "Average"


def test_encode_runs_once_per_batch():
    net = CountingNet(make_net())
    evaluator = PerCombinationEvaluator(SPEC, K)
    batches = make_batches(n_batches=4)
    for batch in batches:
        evaluator.update(net, *batch)
    assert net.calls["encode"] == len(batches)
    assert net.calls["fuse_predict"] == len(batches)  # all 7 combinations in ONE batched call
    assert net.calls["forward"] == 0


def test_each_combination_equals_evaluating_it_alone_with_missing_data():
    # genuinely missing modalities in the data: some samples lack a, some b+c, ...
    g = torch.Generator().manual_seed(5)
    rows = []
    for _ in range(3):
        codes = torch.randint(1, 8, (10,), generator=g)
        rows.append(((codes[:, None] >> torch.arange(3)) & 1).bool())
    rows[2][:] = torch.tensor([True, False, False])  # batch where only `a` exists: combos without a skip it all
    batches = make_batches(present_rows=rows)
    net = make_net()
    evaluator = PerCombinationEvaluator(SPEC, K)
    for batch in batches:
        evaluator.update(net, *batch)
    table = evaluator.compute()
    for k, combo in enumerate(evaluator.combinations):
        expected, skipped = alone(net, batches, combo)
        assert evaluator.skipped[k] == skipped, combo.name
        assert table.value(combo) == pytest.approx(expected), combo.name
    # spot-check one skipped count by hand: the single combination `b` skips every sample lacking b
    k_b = [c.name for c in evaluator.combinations].index("b")
    assert evaluator.skipped[k_b] == sum(int((~r[:, 1]).sum()) for r in rows)
    assert evaluator.skipped[k_b] >= 10
    # each row says how many samples it scored; the full combination is also scored on the complete samples
    for k, combo in enumerate(evaluator.combinations):
        assert table.samples[combo.name] == 30 - evaluator.skipped[k], combo.name
    complete_rows = [(b[0], b[1], b[2]) for b in batches]
    complete_only = [
        ({m: v[p.all(1)] for m, v in x.items()}, p[p.all(1)], y[p.all(1)]) for x, p, y in complete_rows
    ]
    expected_complete, _ = alone(net, [b for b in complete_only if b[2].numel()], SPEC.full)
    assert table.complete_samples == sum(int(p.all(1).sum()) for _, p, _ in complete_rows) > 0
    assert table.complete_samples < table.samples[SPEC.full.name]
    assert table.complete_full["error"] == pytest.approx(expected_complete)
    evaluator.reset()
    assert evaluator.skipped == [0] * 7


def test_evaluate_over_a_loader_restores_train_mode_and_matches_update():
    batches = make_batches(n_batches=2, batch=8)
    inputs = {m: torch.cat([b[0][m] for b in batches]) for m in SHAPES}
    present = torch.cat([b[1] for b in batches])
    present[::3, 0] = False
    target = torch.cat([b[2] for b in batches])
    dataset = ArrayMultimodalDataset(SPEC, inputs, target, present=present)
    loader = DataLoader(dataset, batch_size=5)
    net = make_net()
    net.train()  # dropout 0.3: evaluate must switch to eval for deterministic results
    evaluator = PerCombinationEvaluator(SPEC, K)
    first = evaluator.evaluate(net, loader)
    assert net.training
    second = evaluator.evaluate(net, loader)  # evaluate resets the state between runs
    assert [v for _, v in first.rows] == [v for _, v in second.rows]
    net.eval()
    for combo in evaluator.combinations:
        expected, _ = alone(net, [(dataset.arrays, dataset.present, dataset.targets)], combo)
        assert first.value(combo) == pytest.approx(expected)


def test_subset_of_combinations_and_acer_rows():
    net = make_net()
    combos = [SPEC.combination("c"), SPEC.combination("a+b")]
    evaluator = PerCombinationEvaluator(SPEC, K, combinations=combos, bona_fide_class=1)
    for batch in make_batches():
        evaluator.update(net, *batch)
    table = evaluator.compute()
    assert [c.name for c, _ in table.rows] == ["c", "a+b"]
    assert table.metric == "acer"
    assert set(table.rows[0][1]) == {"apcer", "bpcer", "acer", "ece", "confidence"}
    with pytest.raises(ValueError, match="no combination"):
        PerCombinationEvaluator(SPEC, K, combinations=[])


class SegmentationStub:
    """encode: per-modality label maps one-hot as features; predict: logits = sum of present maps."""

    def encode(self, inputs, present=None):
        return [torch.stack([inputs[m] for m in SPEC.names], dim=1)]  # (B, M, K, H, W)

    def fuse_predict(self, features, mask):
        logits = (features[0] * mask[:, :, None, None, None]).sum(1)
        return SimpleNamespace(logits=logits)

    predict_combinations = MultimodalNet.predict_combinations
    predict_all = MultimodalNet.predict_all


def test_segmentation_task_uses_miou_per_combination():
    g = torch.Generator().manual_seed(7)
    target = torch.randint(0, K, (4, 5, 5), generator=g)
    target[:, 0] = 255
    # modality a predicts the target exactly, b and c predict noise
    inputs = {
        "a": torch.nn.functional.one_hot(target.clamp(max=K - 1), K).permute(0, 3, 1, 2).float() * 3,
        "b": torch.randn(4, K, 5, 5, generator=g),
        "c": torch.randn(4, K, 5, 5, generator=g),
    }
    present = torch.ones(4, 3, dtype=torch.bool)
    evaluator = PerCombinationEvaluator(SPEC, K, task="segmentation", ignore_index=255)
    evaluator.update(SegmentationStub(), inputs, present, target)
    table = evaluator.compute()
    assert table.metric == "miou"
    assert table.value("a") == pytest.approx(100.0)
    valid = target != 255
    for combo in evaluator.combinations:
        logits = SegmentationStub().fuse_predict(SegmentationStub().encode(inputs), combo.mask().expand(4, 3)).logits
        pred = logits.argmax(1)
        expected = 100 * jaccard_score(target[valid].numpy(), pred[valid].numpy(), average="macro")
        assert table.value(combo) == pytest.approx(expected, rel=1e-5), combo.name
    assert table.value("b") < 60
    assert np.isfinite([v["miou"] for _, v in table.rows]).all()


# ------------------------------------------------------------------- the confusion state: mutants `make mutate` found
# The confusion state of the evaluator, for the mutants `make mutate` found alive (docs/testing.md): integer
# counts that DDP sums (two processes simulated through torchmetrics' own ``sync``), and its input checks.
# The metrics from it are pinned in tests/test_reducers.py.


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
