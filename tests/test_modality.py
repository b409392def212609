"""Modalities, combinations and modality dropout (docs/design.md §1, §3)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmanet.modality import (
    MISSING_MARK,
    PRESENT_MARK,
    Combination,
    ModalityDropout,
    ModalityError,
    ModalitySpec,
    all_combinations,
    check_present,
    combinations_to_mask,
    leave_one_out_combinations,
)

SPEC = ModalitySpec(("rgb", "depth", "ir"))

# identifiers without '+' (keywords are fine: they are identifiers too)
NAME = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)


@st.composite
def specs(draw, min_size: int = 1, max_size: int = 6) -> ModalitySpec:
    names = draw(st.lists(NAME, min_size=min_size, max_size=max_size, unique=True))
    return ModalitySpec(tuple(names))


# ----------------------------------------------------------------------------- ModalitySpec


def test_spec_rejects_bad_names():
    with pytest.raises(ModalityError, match="at least one"):
        ModalitySpec(())
    with pytest.raises(ModalityError, match="duplicate"):
        ModalitySpec(("rgb", "rgb"))
    with pytest.raises(ModalityError, match="'rgb\\+ir'"):
        ModalitySpec(("rgb+ir",))
    with pytest.raises(ModalityError):
        ModalitySpec(("",))


def test_spec_index_and_unknown_modality_message():
    assert [SPEC.index(n) for n in ("rgb", "depth", "ir")] == [0, 1, 2]
    with pytest.raises(ModalityError) as err:
        SPEC.index("thermal")
    message = str(err.value)
    assert "'thermal'" in message
    for name in SPEC.names:
        assert name in message


# ----------------------------------------------------------------------------- Combination


def test_canonical_name_follows_declared_order():
    combo = SPEC.combination(["ir", "rgb"])
    assert combo.name == "rgb+ir"
    assert combo.members == ("rgb", "ir")
    assert str(combo) == "rgb+ir"
    assert repr(combo) == "Combination('rgb+ir')"
    assert combo.size == 2
    assert not combo.is_full
    assert SPEC.full.is_full and SPEC.full.name == "rgb+depth+ir"


def test_render_marks_present_and_missing():
    assert SPEC.combination("rgb+ir").render() == PRESENT_MARK + MISSING_MARK + PRESENT_MARK
    assert SPEC.combination("depth").render() == "○●○"
    assert SPEC.full.render() == "●●●"


def test_from_names_canonical_string_and_mask_agree():
    a = SPEC.combination("ir+rgb")
    b = SPEC.combination(["rgb", "ir"])
    c = Combination.from_mask(SPEC, torch.tensor([True, False, True]))
    d = Combination.from_mask(SPEC, [1, 0, 1])
    assert a == b == c == d
    assert len({a, b, c, d}) == 1  # hashable value type
    assert a.present == (True, False, True)
    assert torch.equal(a.mask(), torch.tensor([True, False, True]))
    assert a.bits() == 0b101
    assert a.contains("ir") and not a.contains("depth")
    assert SPEC.combination("rgb").issubset(a) and not a.issubset(SPEC.combination("rgb"))


def test_unknown_modality_in_combination_names_it_and_lists_valid():
    with pytest.raises(ModalityError) as err:
        SPEC.combination("rgb+thermal")
    assert "'thermal'" in str(err.value)
    assert "['rgb', 'depth', 'ir']" in str(err.value)


@pytest.mark.parametrize("members", ["", [], "+"])
def test_empty_combination_is_an_error(members):
    with pytest.raises(ModalityError, match="at least one modality"):
        SPEC.combination(members)


def test_empty_or_wrong_length_flags_are_errors():
    with pytest.raises(ModalityError, match="at least one modality"):
        Combination(SPEC, (False, False, False))
    with pytest.raises(ModalityError, match="2 flags"):
        Combination(SPEC, (True, False))
    with pytest.raises(ModalityError, match="at least one modality"):
        Combination.from_mask(SPEC, torch.zeros(3, dtype=torch.bool))


def test_ordering_size_first_then_declared_order():
    names = [c.name for c in all_combinations(SPEC)]
    assert names == ["rgb", "depth", "ir", "rgb+depth", "rgb+ir", "depth+ir", "rgb+depth+ir"]
    shuffled = [SPEC.combination(n) for n in ["depth+ir", "ir", "rgb+depth+ir", "rgb", "rgb+ir", "depth", "rgb+depth"]]
    assert [c.name for c in sorted(shuffled)] == names
    assert SPEC.combination("ir") < SPEC.combination("rgb+depth")


def test_combinations_to_mask_stacks_rows():
    combos = [SPEC.combination("rgb"), SPEC.combination("depth+ir")]
    mask = combinations_to_mask(combos)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[True, False, False], [False, True, True]]


@settings(max_examples=40, deadline=None)
@given(spec=specs())
def test_all_combinations_count_unique_canonical_and_ordered(spec):
    m = len(spec)
    combos = all_combinations(spec)
    assert len(combos) == 2**m - 1
    assert len({c.name for c in combos}) == len(combos)
    assert len({c.bits() for c in combos}) == len(combos)
    assert all(spec.combination(c.name) == c for c in combos)  # canonical names round-trip
    # size first, then declared order: exactly the itertools.combinations enumeration
    expected = [
        tuple(spec.names[i] for i in idx) for k in range(1, m + 1) for idx in itertools.combinations(range(m), k)
    ]
    assert [c.members for c in combos] == expected
    assert combos[-1].is_full


@settings(max_examples=30, deadline=None)
@given(spec=specs(min_size=2))
def test_leave_one_out(spec):
    combos = leave_one_out_combinations(spec)
    assert len(combos) == len(spec)
    for i, combo in enumerate(combos):
        assert combo.size == len(spec) - 1
        assert not combo.present[i]
        assert combo.members == tuple(n for j, n in enumerate(spec.names) if j != i)


def test_leave_one_out_needs_two_modalities():
    with pytest.raises(ModalityError, match="at least two"):
        leave_one_out_combinations(ModalitySpec(("a",)))


def test_check_present():
    check_present(torch.tensor([[True, False], [False, True]]))
    with pytest.raises(ModalityError, match="batch index 1"):
        check_present(torch.tensor([[True, False], [False, False]]))
    with pytest.raises(ModalityError, match="BoolTensor"):
        check_present(torch.ones(2, 2))
    with pytest.raises(ModalityError, match="BoolTensor"):
        check_present(torch.ones(2, dtype=torch.bool))


# ----------------------------------------------------------------------------- ModalityDropout


@st.composite
def dropout_cases(draw):
    m = draw(st.integers(1, 5))
    spec = ModalitySpec(tuple(f"m{i}" for i in range(m)))
    batch = draw(st.integers(1, 24))
    codes = draw(st.lists(st.integers(1, 2**m - 1), min_size=batch, max_size=batch))
    present = torch.tensor([[bool(c >> i & 1) for i in range(m)] for c in codes], dtype=torch.bool)
    mode = draw(st.sampled_from(["uniform", "bernoulli"]))
    p = draw(st.lists(st.floats(0.01, 1.0), min_size=m, max_size=m)) if mode == "bernoulli" else None
    never = draw(st.lists(st.sampled_from(spec.names), unique=True, max_size=m))
    seed = draw(st.integers(0, 2**31 - 1))
    return spec, present, mode, p, never, seed


@settings(max_examples=80, deadline=None)
@given(case=dropout_cases())
def test_dropout_properties(case):
    spec, present, mode, p, never, seed = case
    dropout = ModalityDropout(spec, mode=mode, p=p, never_drop=never)
    keep = dropout(present, generator=torch.Generator().manual_seed(seed))
    assert keep.shape == present.shape
    assert keep.dtype == torch.bool
    assert not (keep & ~present).any()  # output ⊆ present
    assert keep.any(dim=1).all()  # never all-missing
    never_mask = torch.tensor([n in never for n in spec.names])
    assert ((present & never_mask) <= keep).all()  # a present never_drop modality is always kept
    single = present.sum(dim=1) == 1
    assert torch.equal(keep[single], present[single])  # a lone present modality is kept
    again = dropout(present, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(keep, again)  # reproducible from the generator


def _frequencies(keep: torch.Tensor) -> torch.Tensor:
    m = keep.shape[1]
    codes = (keep.long() << torch.arange(m)).sum(dim=1)
    return torch.bincount(codes, minlength=2**m).double() / keep.shape[0]


def test_uniform_mode_is_uniform_over_nonempty_combinations():
    n = 70_000
    dropout = ModalityDropout(SPEC)
    keep = dropout(torch.ones(n, 3, dtype=torch.bool), generator=torch.Generator().manual_seed(0))
    freq = _frequencies(keep)
    assert freq[0] == 0  # the empty combination is never drawn
    expected = 1 / 7
    assert torch.all((freq[1:] - expected).abs() < 0.03 * expected), freq
    chi2 = float((n * (freq[1:] - expected) ** 2 / expected).sum())
    assert chi2 < 22.46  # 99.9 % quantile of chi-square with 6 degrees of freedom


def test_uniform_mode_with_never_drop_is_uniform_over_allowed_combinations():
    n = 40_000
    dropout = ModalityDropout(SPEC, never_drop=["depth"])
    keep = dropout(torch.ones(n, 3, dtype=torch.bool), generator=torch.Generator().manual_seed(1))
    assert keep[:, 1].all()
    freq = _frequencies(keep)
    allowed = [code for code in range(1, 8) if code & 0b010]
    assert set(torch.nonzero(freq).flatten().tolist()) == set(allowed)
    assert torch.all((freq[allowed] - 0.25).abs() < 0.03 * 0.25), freq


def test_bernoulli_marginals_are_conditioned_on_nonempty():
    n = 70_000
    p = [0.2, 0.3, 0.5]
    p_empty = math.prod(1 - v for v in p)  # 0.28
    expected = torch.tensor([v / (1 - p_empty) for v in p], dtype=torch.float64)  # P(keep_m | not all dropped)
    dropout = ModalityDropout(SPEC, mode="bernoulli", p=p)
    keep = dropout(torch.ones(n, 3, dtype=torch.bool), generator=torch.Generator().manual_seed(0))
    marginals = keep.double().mean(dim=0)
    # sampling std ≈ 0.0018; the naive "force one modality on" rule would give [0.29, 0.39, 0.59]
    torch.testing.assert_close(marginals, expected, atol=0.008, rtol=0)
    # the joint distribution is the product distribution restricted to non-empty draws
    freq = _frequencies(keep)
    for code in range(1, 8):
        prob = math.prod(p[i] if code >> i & 1 else 1 - p[i] for i in range(3)) / (1 - p_empty)
        assert abs(float(freq[code]) - prob) < 0.008, (code, float(freq[code]), prob)


def test_bernoulli_never_drop_always_kept():
    dropout = ModalityDropout(SPEC, mode="bernoulli", p=0.1, never_drop=["ir"])
    keep = dropout(torch.ones(5000, 3, dtype=torch.bool), generator=torch.Generator().manual_seed(2))
    assert keep[:, 2].all()
    assert keep[:, :2].any()  # the others are still dropped/kept at random
    assert not keep[:, :2].all()


def test_sample_with_one_present_modality_keeps_exactly_it():
    present = torch.tensor([[False, True, False]] * 500 + [[True, True, False]] * 500)
    for mode in ("uniform", "bernoulli"):
        keep = ModalityDropout(SPEC, mode=mode)(present, generator=torch.Generator().manual_seed(3))
        assert torch.equal(keep[:500], present[:500])
        # two present modalities: both singles and the pair all occur, never ir
        seen = {tuple(row) for row in keep[500:].tolist()}
        assert seen == {(True, False, False), (False, True, False), (True, True, False)}


def test_fallback_keeps_a_uniformly_chosen_present_modality():
    # never_drop=rgb while rgb is genuinely missing: δ ∧ present is often empty → fallback branch
    dropout = ModalityDropout(SPEC, never_drop=["rgb"])
    present = torch.tensor([[False, True, True]] * 20_000)
    keep = dropout(present, generator=torch.Generator().manual_seed(4))
    assert keep.any(dim=1).all() and not keep[:, 0].any()
    assert keep[:, 1:].any()


def test_all_missing_present_row_is_an_error():
    present = torch.tensor([[True, False, False], [False, False, False]])
    with pytest.raises(ModalityError, match="every modality missing"):
        ModalityDropout(SPEC)(present)


def test_present_mask_with_wrong_width_is_an_error():
    with pytest.raises(ModalityError, match="2 modalities"):
        ModalityDropout(SPEC)(torch.ones(4, 2, dtype=torch.bool))


def test_bad_mode_and_probabilities():
    with pytest.raises(ValueError, match="'dirichlet'"):
        ModalityDropout(SPEC, mode="dirichlet")
    with pytest.raises(ValueError, match="3 keep probabilities, got 2"):
        ModalityDropout(SPEC, mode="bernoulli", p=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        ModalityDropout(SPEC, mode="bernoulli", p=[0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        ModalityDropout(SPEC, mode="bernoulli", p=1.5)
    with pytest.raises(ValueError, match="only apply to mode='bernoulli'"):
        ModalityDropout(SPEC, mode="uniform", p=0.5)
    with pytest.raises(ModalityError, match="'thermal'"):
        ModalityDropout(SPEC, never_drop=["thermal"])


# ----------------------------------------------------------------------------- cases `make mutate` found unpinned
# Modalities and dropout: the cases `make mutate` found unpinned (docs/testing.md).
#
# Names and flags given as lists are normalised to tuples (the types are hashable values), every
# non-identifier name is rejected, the order is strict, and the fallback of modality dropout draws
# its modality per row.


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
