"""Exact Shapley values against the permutation definition, by hand, and the efficiency property."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmanet.analysis.shapley import ShapleyError, shapley_values
from mmanet.modality import ModalitySpec, all_combinations


def by_permutations(values: dict[str, float], empty: float, spec: ModalitySpec) -> dict[str, float]:
    """The definition: the mean over every order of arrival of each modality's marginal contribution."""
    phi = dict.fromkeys(spec.names, 0.0)
    orders = list(itertools.permutations(spec.names))
    for order in orders:
        arrived: list[str] = []
        before = empty
        for m in order:
            arrived.append(m)
            after = values[spec.combination(arrived).name]
            phi[m] += (after - before) / len(orders)
            before = after
    return phi


def test_two_modalities_by_hand():
    spec = ModalitySpec(("rgb", "depth"))
    values = {"rgb": 20.0, "depth": 40.0, "rgb+depth": 10.0}
    # φ_rgb = ½[(20 − 90) + (10 − 40)] = −50; φ_depth = ½[(40 − 90) + (10 − 20)] = −30
    assert shapley_values(values, 90.0, spec) == pytest.approx({"rgb": -50.0, "depth": -30.0})


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), data=st.data())
def test_matches_the_permutation_definition_and_adds_up(n, data):
    spec = ModalitySpec(tuple(f"m{i}" for i in range(n)))
    values = {c.name: data.draw(st.floats(0, 100)) for c in all_combinations(spec)}
    empty = data.draw(st.floats(0, 100))
    phi = shapley_values(values, empty, spec)
    assert phi == pytest.approx(by_permutations(values, empty, spec), abs=1e-9)
    assert math.fsum(phi.values()) == pytest.approx(values[spec.full.name] - empty, abs=1e-9)


def test_a_modality_that_changes_nothing_gets_zero():
    spec = ModalitySpec(("a", "b", "c"))
    values = {c.name: (5.0 if c.contains("a") else 50.0) for c in all_combinations(spec)}
    phi = shapley_values(values, 50.0, spec)
    assert phi["b"] == pytest.approx(0.0) and phi["c"] == pytest.approx(0.0) and phi["a"] == pytest.approx(-45.0)


def test_refusals():
    spec = ModalitySpec(("a", "b"))
    with pytest.raises(ShapleyError, match="lacks 'a\\+b'"):
        shapley_values({"a": 1.0, "b": 2.0}, 0.0, spec)
    big = ModalitySpec(tuple(f"m{i}" for i in range(9)))
    with pytest.raises(ShapleyError, match="at most 8 modalities"):
        shapley_values({}, 0.0, big)
