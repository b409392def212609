"""The data contract (docs/design.md §6): splits, subsets, standardisation, the array dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmanet.data.base import (
    ArrayMultimodalDataset,
    DataBundle,
    DataError,
    Standardizer,
    per_class_subset,
    stratified_split,
)
from mmanet.modality import ModalitySpec

SPEC = ModalitySpec(("a", "b"))

# ----------------------------------------------------------------------------- stratified_split

FRACTIONS = st.sampled_from([(0.6, 0.2, 0.2), (0.5, 0.5), (0.7, 0.1, 0.2), (0.25, 0.25, 0.25, 0.25), (1.0,)])


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 60), min_size=1, max_size=6),
    fractions=FRACTIONS,
    seed=st.integers(0, 2**32 - 1),
)
def test_stratified_split_disjoint_covering_and_proportional(counts, fractions, seed):
    labels = np.repeat(np.arange(len(counts)) * 3 + 1, counts)  # non-contiguous class ids
    np.random.default_rng(seed).shuffle(labels)
    parts = stratified_split(labels, fractions, seed)
    assert len(parts) == len(fractions)
    joined = np.concatenate(parts)
    assert len(joined) == len(labels)  # disjoint ...
    assert set(joined.tolist()) == set(range(len(labels)))  # ... and covering
    for part, fraction in zip(parts, fractions, strict=True):
        assert np.all(np.diff(part) > 0)  # sorted, unique
        for cls, count in zip(np.arange(len(counts)) * 3 + 1, counts, strict=True):
            assert abs(int((labels[part] == cls).sum()) - fraction * count) <= 1


def test_stratified_split_exact_sizes_and_seeds():
    labels = np.repeat(np.arange(10), 200)
    parts = stratified_split(labels, (0.6, 0.2, 0.2), seed=0)
    assert [len(p) for p in parts] == [1200, 400, 400]
    for part, per_class in zip(parts, (120, 40, 40), strict=True):
        assert np.bincount(labels[part]).tolist() == [per_class] * 10
    same = stratified_split(labels, (0.6, 0.2, 0.2), seed=0)
    assert all(np.array_equal(p, q) for p, q in zip(parts, same, strict=True))
    other = stratified_split(labels, (0.6, 0.2, 0.2), seed=1)
    assert not np.array_equal(parts[1], other[1])


def test_stratified_split_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(np.zeros(10, dtype=int), (0.6, 0.3), seed=0)


# ----------------------------------------------------------------------------- per_class_subset


def test_per_class_subset():
    labels = np.repeat(np.arange(4), [30, 25, 40, 20])
    rng = np.random.default_rng(0)
    rng.shuffle(labels)
    idx = per_class_subset(labels, 20, seed=3)
    assert len(idx) == 80 and len(np.unique(idx)) == 80
    assert np.bincount(labels[idx]).tolist() == [20, 20, 20, 20]
    assert np.array_equal(idx, per_class_subset(labels, 20, seed=3))
    assert not np.array_equal(idx, per_class_subset(labels, 20, seed=4))
    with pytest.raises(DataError, match="class 3 has only 20"):
        per_class_subset(labels, 21, seed=0)


# ----------------------------------------------------------------------------- Standardizer


def test_standardizer_uses_training_statistics_only():
    g = torch.Generator().manual_seed(0)
    train = {"a": torch.randn(50, 3, generator=g) * 4 + 2, "b": torch.randn(50, 2, generator=g) - 7}
    val = {"a": torch.randn(20, 3, generator=g) * 9 - 5, "b": torch.randn(20, 2, generator=g) * 0.1}
    scaler = Standardizer().fit(train, torch.ones(50, 2, dtype=torch.bool), SPEC)
    out_train, out_val = scaler.transform(train), scaler.transform(val)
    for m in SPEC.names:
        x = train[m].double().numpy()
        mean, std = x.mean(0), x.std(0)  # population std
        np.testing.assert_allclose(out_train[m].numpy(), (x - mean) / std, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out_val[m].numpy(), (val[m].double().numpy() - mean) / std, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out_train[m].mean(0).numpy(), 0, atol=1e-5)
        np.testing.assert_allclose(out_train[m].std(0, unbiased=False).numpy(), 1, atol=1e-5)
        assert out_val[m].mean(0).abs().max() > 0.5  # val is not re-centred on itself


def test_standardizer_ignores_missing_rows_when_fitting():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(40, 3, generator=g)
    present = torch.ones(40, 2, dtype=torch.bool)
    present[:10, 0] = False
    a[:10] = 1e6  # junk where `a` is genuinely missing
    b = torch.randn(40, 2, generator=g)
    scaler = Standardizer().fit({"a": a, "b": b}, present, SPEC)
    torch.testing.assert_close(scaler.mean["a"], a[10:].mean(0))
    torch.testing.assert_close(scaler.std["a"], a[10:].std(0, unbiased=False))
    torch.testing.assert_close(scaler.mean["b"], b.mean(0))


def test_standardizer_constant_feature_and_all_missing():
    x = torch.tensor([[1.0, 2.0], [1.0, 4.0]])
    scaler = Standardizer().fit({"a": x, "b": x}, torch.ones(2, 2, dtype=torch.bool), SPEC)
    out = scaler.transform({"a": x})
    assert torch.isfinite(out["a"]).all() and torch.equal(out["a"][:, 0], torch.zeros(2))
    present = torch.tensor([[True, False], [True, False]])
    with pytest.raises(DataError, match="'b' is missing in every training sample"):
        Standardizer().fit({"a": x, "b": x}, present, SPEC)


# ----------------------------------------------------------------------------- ArrayMultimodalDataset


def make_dataset(present=None, lengths=None):
    arrays = {"a": torch.arange(12.0).reshape(4, 3) + 1, "b": torch.ones(4, 2, 2)}
    return ArrayMultimodalDataset(SPEC, arrays, torch.tensor([0, 1, 2, 1]), present=present, lengths=lengths)


def test_dataset_items_and_zero_filled_missing_entries():
    present = torch.tensor([[True, True], [False, True], [True, False], [True, True]])
    ds = make_dataset(present, lengths={"b": torch.tensor([2, 1, 2, 0])})
    assert len(ds) == 4
    assert ds.input_shapes() == {"a": (3,), "b": (2, 2)}
    inputs, mask, target = ds[1]
    assert torch.equal(inputs["a"], torch.zeros(3))  # missing → zeros
    assert torch.equal(inputs["b"], torch.ones(2, 2))
    assert mask.tolist() == [False, True] and mask.dtype == torch.bool
    assert target.item() == 1 and target.dtype == torch.long
    assert inputs["lengths_b"].item() == 1
    assert torch.equal(ds[2][0]["b"], torch.zeros(2, 2))
    assert torch.equal(ds[0][0]["a"], torch.tensor([1.0, 2.0, 3.0]))  # present data untouched
    assert make_dataset().present.all()  # default: everything present


def test_dataset_errors_name_the_problem():
    targets = torch.zeros(4, dtype=torch.long)
    with pytest.raises(DataError, match="modality 'b' has 3 samples but there are 4 labels"):
        ArrayMultimodalDataset(SPEC, {"a": torch.zeros(4, 1), "b": torch.zeros(3, 1)}, targets)
    with pytest.raises(DataError, match="no array for modality 'b'"):
        ArrayMultimodalDataset(SPEC, {"a": torch.zeros(4, 1)}, targets)
    with pytest.raises(DataError, match=r"present mask has shape \(4, 3\), expected \(4, 2\)"):
        make_dataset(torch.ones(4, 3, dtype=torch.bool))
    present = torch.tensor([[True, True], [True, False], [False, False], [False, False]])
    with pytest.raises(DataError, match=r"2 sample\(s\) have no present modality \(first: index 2\)"):
        make_dataset(present)


def test_bundle_split_lookup():
    ds = make_dataset()
    bundle = DataBundle("x", SPEC, "classification", 3, ds, ds, ds)
    assert bundle.split("val") is ds
    assert bundle.input_shapes == {"a": (3,), "b": (2, 2)}
    with pytest.raises(DataError, match="'dev'"):
        bundle.split("dev")


def test_integer_present_masks_are_treated_as_booleans():
    x = torch.tensor([[0.0], [10.0], [20.0], [30.0]])
    present = torch.tensor([[1], [1], [0], [1]], dtype=torch.long)
    scaler = Standardizer().fit({"a": x}, present, ModalitySpec(("a",)))
    assert float(scaler.mean["a"]) == pytest.approx(40 / 3)  # rows 0, 1, 3 (not rows number 1, 1, 0, 1)
    mask = torch.cat([present, torch.ones_like(present)], dim=1).to(torch.uint8)
    ds = ArrayMultimodalDataset(SPEC, {"a": x, "b": x}, torch.zeros(4), present=mask)
    assert ds.present.dtype == torch.bool
    assert ds.arrays["a"].flatten().tolist() == [0.0, 10.0, 0.0, 30.0]
