"""Modalities and dropout: the cases `make mutate` found unpinned (docs/testing.md).

Names and flags given as lists are normalised to tuples (the types are hashable values), every
non-identifier name is rejected, the order is strict, and the fallback of modality dropout draws
its modality per row.
"""

from __future__ import annotations

import pytest
import torch

from mmanet.modality import Combination, ModalityDropout, ModalityError, ModalitySpec, all_combinations

SPEC = ModalitySpec(("rgb", "depth", "ir"))


def test_spec_from_a_list_is_a_hashable_tuple_iterated_in_declared_order():
    spec = ModalitySpec(["rgb", "ir"])
    assert spec.names == ("rgb", "ir")
    assert hash(spec) == hash(ModalitySpec(("rgb", "ir")))
    assert list(spec) == ["rgb", "ir"]


@pytest.mark.parametrize("name", ["rgb-d", "2d", "a b", "ir."])
def test_spec_rejects_names_that_are_not_identifiers(name):
    with pytest.raises(ModalityError, match="identifier"):
        ModalitySpec(("rgb", name))


def test_combination_flags_are_normalised_to_a_tuple_of_bools():
    combo = Combination(SPEC, [1, 0, 1])
    assert combo.present == (True, False, True)
    assert all(type(flag) is bool for flag in combo.present)
    assert hash(combo) == hash(SPEC.combination("rgb+ir"))


def test_order_is_strict():
    combos = all_combinations(SPEC)
    for combo in combos:
        assert not combo < combo
    assert [a < b for a, b in zip(combos, combos[1:], strict=False)] == [True] * (len(combos) - 1)


def test_subset_of_another_dataset_is_an_error():
    with pytest.raises(ValueError):
        SPEC.full.issubset(ModalitySpec(("a", "b")).full)


def test_keep_probability_one_is_allowed_and_keeps_everything():
    dropout = ModalityDropout(SPEC, mode="bernoulli", p=1.0)
    present = torch.tensor([[True, True, True], [False, True, True]])
    assert torch.equal(dropout(present, generator=torch.Generator().manual_seed(0)), present)


def test_fallback_modality_is_drawn_per_row():
    # never_drop=rgb while rgb is missing: the draw 'rgb' alone leaves nothing, the fallback picks
    # depth or ir; each such row must draw its own choice (one draw shared by the batch is not uniform)
    dropout = ModalityDropout(SPEC, never_drop=["rgb"])
    n = 4000
    present = torch.tensor([[False, True, True]] * n)
    keep = dropout(present, generator=torch.Generator().manual_seed(5))
    drawn = dropout.sample(n, generator=torch.Generator().manual_seed(5))  # the same first draws
    fallback = ~(drawn & present).any(dim=1)
    assert 800 < int(fallback.sum()) < 1200  # 'rgb' alone is 1 of the 4 allowed draws
    assert (keep[fallback].sum(dim=1) == 1).all()
    depth_share = keep[fallback][:, 1].double().mean().item()
    assert abs(depth_share - 0.5) < 0.06  # sampling std ≈ 0.016
