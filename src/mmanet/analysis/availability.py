"""Expected metric under independent modality availability (issue 23).

Modality ``m`` arrives with probability ``p_m`` ∈ (0, 1], independently of the others. A sample whose
modalities all fail is not served (no model can answer it), so the combination ``c`` arrives with

    P(c | at least one modality) = Π_{m ∈ c} p_m · Π_{m ∉ c} (1 − p_m) / (1 − Π_m (1 − p_m)),

and a model's expected metric is ``Σ_c P(c | ≥ 1) · metric(c)`` over the non-empty combinations. A
combination with P(c) = 0 (it lacks a modality that is always there) does not enter the sum, so a
table needs only the combinations of positive probability. ``metric(c)`` is the per-combination
table's value: the test split's genuinely missing data counts in it as it is (a sample lacking a
modality of ``c`` is scored on what it has).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from mmanet.errors import MMANetError
from mmanet.modality import ModalitySpec, all_combinations

__all__ = [
    "AvailabilityError",
    "check_tables_cover",
    "combination_probabilities",
    "expected_value",
    "needed_combinations",
    "parse_availability",
    "sweep",
    "validate_availability",
]

#: the grid of a sweep: availability from 1 down to 0.5
SWEEP_LEVELS = tuple(np.round(np.linspace(1.0, 0.5, 11), 3).tolist())


class AvailabilityError(MMANetError):
    """An availability that cannot be used: outside (0, 1], an unknown or repeated modality, a missing combination."""


def parse_availability(text: str) -> dict[str, float]:
    """``"rgb=0.9,depth=0.7"`` → ``{"rgb": 0.9, "depth": 0.7}`` (the modalities are checked by
    :func:`validate_availability` against a dataset)."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise AvailabilityError(f"--availability entry {part!r} is not modality=probability, e.g. rgb=0.9")
        try:
            prob = float(value)
        except ValueError:
            raise AvailabilityError(f"--availability {name}={value.strip()!r}: not a number") from None
        if name in out:
            raise AvailabilityError(f"--availability names {name!r} twice")
        out[name] = prob
    if not out:
        raise AvailabilityError("--availability is empty; give modality=probability pairs, e.g. rgb=0.9,depth=0.7")
    return out


def validate_availability(availability: Mapping[str, float], spec: ModalitySpec) -> dict[str, float]:
    """Every modality of ``spec`` with its probability in (0, 1]; a modality not named is always there (1).

    Unknown names and values outside (0, 1] (or not finite) are an :class:`AvailabilityError`."""
    unknown = [m for m in availability if m not in spec.names]
    if unknown:
        raise AvailabilityError(
            f"availability names {unknown[0]!r}, which is not a modality of this data; modalities: {list(spec.names)}"
        )
    for name, p in availability.items():
        if not isinstance(p, int | float) or isinstance(p, bool) or not math.isfinite(p) or not 0 < p <= 1:
            raise AvailabilityError(
                f"availability of {name!r} is {p!r}; it must be a probability in (0, 1] (a modality that never "
                "arrives has no model to evaluate: train without it)"
            )
    return {m: float(availability.get(m, 1.0)) for m in spec.names}


def combination_probabilities(availability: Mapping[str, float], spec: ModalitySpec) -> dict[str, float]:
    """P(c | at least one modality) of every non-empty combination (by name), summing to 1."""
    p = validate_availability(availability, spec)
    none = math.prod(1.0 - p[m] for m in spec.names)
    probs: dict[str, float] = {}
    for combo in all_combinations(spec):
        joint = math.prod(p[m] if combo.contains(m) else 1.0 - p[m] for m in spec.names)
        probs[combo.name] = joint / (1.0 - none)
    return probs


def needed_combinations(availability: Mapping[str, float], spec: ModalitySpec) -> list[str]:
    """The combinations of positive probability (those a table must have)."""
    return [name for name, prob in combination_probabilities(availability, spec).items() if prob > 0]


def expected_value(
    values: Mapping[str, float], availability: Mapping[str, float], spec: ModalitySpec, what: str = "the table"
) -> float:
    """``Σ_c P(c | ≥ 1) · values[c]``; a combination of positive probability missing from ``values`` is an error."""
    probs = combination_probabilities(availability, spec)
    missing = [c for c, prob in probs.items() if prob > 0 and c not in values]
    if missing:
        raise AvailabilityError(
            f"{what} has no row for {missing[0]!r}"
            + (f" (and {len(missing) - 1} more combinations)" if len(missing) > 1 else "")
            + ", which this availability gives a positive probability; evaluate every combination (customized "
            "models: customized.combinations: all), or set the modalities it lacks to availability 1"
        )
    return float(sum(prob * values[c] for c, prob in probs.items() if prob > 0))


def check_tables_cover(
    tables: Mapping[str, Iterable[str]], availability: Mapping[str, float], spec: ModalitySpec
) -> None:
    """Every table (label → its combination names) has every combination the availability needs; checked
    before anything is computed."""
    for label, names in tables.items():
        expected_value(dict.fromkeys(names, 0.0), availability, spec, what=f"the table of {label!r}")


def sweep(
    values: Mapping[str, float], spec: ModalitySpec, levels: Sequence[float] = SWEEP_LEVELS
) -> dict[str, list[float]]:
    """The expected value as availability drops: ``"all"`` — every modality at each level together — and, per
    modality, that modality alone at each level (the others always there)."""
    curves = {"all": [expected_value(values, dict.fromkeys(spec.names, q), spec) for q in levels]}
    for m in spec.names:
        curves[m] = [expected_value(values, {m: q}, spec) for q in levels]
    return curves
