"""Exact Shapley values of the modalities (issue 23).

The game: the modalities are the players and a coalition ``S`` is worth ``v(S)``, the model's metric on
combination ``S`` (its per-combination table); ``v(∅)`` is the metric with no modality at all — the
training majority class (:mod:`mmanet.analysis.baseline`). Modality ``m``'s Shapley value is

    φ_m = Σ_{S ⊆ M∖{m}} |S|! (M − |S| − 1)! / M! · (v(S ∪ {m}) − v(S)),

and the values add up to ``v(M) − v(∅)`` (efficiency). For an error metric a negative φ_m is the error
modality m removes. The sum runs over all ``2^M`` coalitions, which the table must hold; it is computed
exactly up to :data:`MAX_EXACT` modalities (beyond, a table of every combination is itself out of reach:
2^9 − 1 = 511 evaluations per sample, and the values are not estimated by sampling here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mmanet.errors import MMANetError
from mmanet.modality import ModalitySpec, all_combinations

__all__ = ["MAX_EXACT", "ShapleyError", "shapley_values"]

MAX_EXACT = 8


class ShapleyError(MMANetError):
    """Shapley values that cannot be computed exactly (too many modalities, a combination missing)."""


def shapley_values(values: Mapping[str, float], empty: float, spec: ModalitySpec) -> dict[str, float]:
    """φ_m of every modality from ``values`` (combination name → metric) and ``empty`` = v(∅)."""
    n = len(spec)
    if n > MAX_EXACT:
        raise ShapleyError(
            f"exact Shapley values need every one of the 2^{n} − 1 = {2**n - 1} combinations; they are computed "
            f"for at most {MAX_EXACT} modalities"
        )
    missing = [c.name for c in all_combinations(spec) if c.name not in values]
    if missing:
        raise ShapleyError(f"Shapley values need every combination; the table lacks {missing[0]!r}")

    def worth(members: frozenset[str]) -> float:
        if not members:
            return empty
        return values[spec.combination(sorted(members, key=spec.index)).name]

    phi = dict.fromkeys(spec.names, 0.0)
    for combo in [None, *all_combinations(spec)]:
        coalition = frozenset() if combo is None else frozenset(combo.members)
        if len(coalition) == n:
            continue  # no modality left to add
        weight = math.factorial(len(coalition)) * math.factorial(n - len(coalition) - 1) / math.factorial(n)
        for m in spec.names:
            if m not in coalition:
                phi[m] += weight * (worth(coalition | {m}) - worth(coalition))
    return phi
