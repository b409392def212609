"""Expected metric under independent modality availability: hand-computed probabilities and the input checks."""

from __future__ import annotations

import itertools
import math

import pytest

from mmanet.analysis.availability import (
    AvailabilityError,
    check_tables_cover,
    combination_probabilities,
    expected_value,
    parse_availability,
    sweep,
    validate_availability,
)
from mmanet.modality import ModalitySpec, all_combinations

SPEC = ModalitySpec(("rgb", "depth", "ir"))


def test_two_modalities_by_hand():
    spec = ModalitySpec(("rgb", "depth"))
    # P(both) = .9·.5 = .45, P(rgb only) = .9·.5 = .45, P(depth only) = .1·.5 = .05, P(none) = .05
    probs = combination_probabilities({"rgb": 0.9, "depth": 0.5}, spec)
    assert probs == pytest.approx({"rgb+depth": 0.45 / 0.95, "rgb": 0.45 / 0.95, "depth": 0.05 / 0.95})
    values = {"rgb": 10.0, "depth": 40.0, "rgb+depth": 4.0}
    assert expected_value(values, {"rgb": 0.9, "depth": 0.5}, spec) == pytest.approx(
        (0.45 * 4 + 0.45 * 10 + 0.05 * 40) / 0.95
    )


def test_probabilities_match_an_enumeration_of_every_outcome():
    availability = {"rgb": 0.95, "depth": 0.7, "ir": 0.55}
    outcomes: dict[str, float] = {}
    for bits in itertools.product([True, False], repeat=3):  # every outcome of the three independent sensors
        weight = math.prod(availability[m] if b else 1 - availability[m] for m, b in zip(SPEC.names, bits, strict=True))
        members = [m for m, b in zip(SPEC.names, bits, strict=True) if b]
        if members:
            outcomes[SPEC.combination(members).name] = weight
    total = sum(outcomes.values())
    expected = {name: w / total for name, w in outcomes.items()}
    assert combination_probabilities(availability, SPEC) == pytest.approx(expected)
    assert sum(combination_probabilities(availability, SPEC).values()) == pytest.approx(1.0)


def test_a_modality_always_there_needs_only_the_combinations_with_it():
    values = {"rgb+depth+ir": 1.0, "rgb+depth": 2.0, "rgb+ir": 3.0, "rgb": 4.0}  # no row without rgb
    got = expected_value(values, {"depth": 0.5, "ir": 0.5}, SPEC)  # rgb unnamed: availability 1
    assert got == pytest.approx(0.25 * (1 + 2 + 3 + 4))
    with pytest.raises(AvailabilityError, match=r"no row for 'depth\+ir'"):
        expected_value(values, {"rgb": 0.9}, SPEC)
    with pytest.raises(AvailabilityError, match="table of 'SF'"):
        check_tables_cover({"SF": list(values)}, {"rgb": 0.9}, SPEC)
    check_tables_cover({"SF": list(values)}, {"ir": 0.3}, SPEC)


def test_full_availability_is_the_full_combination():
    values = {c.name: float(i) for i, c in enumerate(all_combinations(SPEC))}
    assert expected_value(values, {}, SPEC) == values["rgb+depth+ir"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rgb=0.9,rgb=0.8", "names 'rgb' twice"),
        ("rgb", "not modality=probability"),
        ("rgb=high", "not a number"),
        ("", "is empty"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(AvailabilityError, match=message):
        parse_availability(text)


@pytest.mark.parametrize(
    ("availability", "message"),
    [
        ({"rgb": 0.0}, r"in \(0, 1\]"),
        ({"rgb": 1.2}, r"in \(0, 1\]"),
        ({"rgb": -0.1}, r"in \(0, 1\]"),
        ({"rgb": float("nan")}, r"in \(0, 1\]"),
        ({"thermal": 0.5}, "not a modality of this data"),
    ],
)
def test_validation_errors(availability, message):
    with pytest.raises(AvailabilityError, match=message):
        validate_availability(availability, SPEC)


def test_parse_then_validate():
    assert validate_availability(parse_availability(" rgb=0.9 , ir=0.5"), SPEC) == {"rgb": 0.9, "depth": 1.0, "ir": 0.5}


def test_sweep_starts_at_the_full_combination_and_follows_single_modality_formula():
    values = {c.name: 10.0 * c.size + (3.0 if c.contains("ir") else 0.0) for c in all_combinations(SPEC)}
    curves = sweep(values, SPEC, levels=(1.0, 0.5))
    assert set(curves) == {"all", "rgb", "depth", "ir"}
    for curve in curves.values():
        assert curve[0] == pytest.approx(values["rgb+depth+ir"])
    # only ir at 0.5: half full, half without ir
    assert curves["ir"][1] == pytest.approx(0.5 * values["rgb+depth+ir"] + 0.5 * values["rgb+depth"])


def test_every_modality_at_one_half_is_the_plain_average():
    """P(c | ≥ 1) = 0.5^M / (1 − 0.5^M) for every c: the expected value is the table's uniform Average."""
    values = {c.name: float(3 * i % 7) for i, c in enumerate(all_combinations(SPEC))}
    got = expected_value(values, dict.fromkeys(SPEC.names, 0.5), SPEC)
    assert got == pytest.approx(sum(values.values()) / len(values))
