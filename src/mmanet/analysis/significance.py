"""The paired comparison of two methods over seeds (issue 23): a two-sided paired t-test.

Seed k trains every method of a benchmark with the same training seed and data split, so the per-seed
differences ``d_k = a_k − b_k`` are paired; ``t = mean(d) / (sd(d) / √n)`` with the sample standard
deviation (ddof = 1) on n − 1 degrees of freedom. With fewer than 2 seeds there is no test (p = NaN);
when every difference is the same, p is 0 if that difference is not 0, else 1. Many tests read together
are adjusted for the false discovery rate (:func:`adjusted_p_values`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats

__all__ = ["ALPHA", "adjusted_p_values", "paired_p_value", "significant"]

#: the level below which a paired difference is called significant (marked in the heatmap)
ALPHA = 0.05


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test of ``a`` against ``b`` (equal lengths, NaN pairs dropped)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    n = len(diffs)
    if n < 2:
        return math.nan
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    if sd == 0 or sd < 1e-12 * max(1.0, abs(mean)):
        return 0.0 if mean != 0 else 1.0
    t = mean / (sd / math.sqrt(n))
    return float(2 * stats.t.sf(abs(t), df=n - 1))


def significant(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> bool:
    p = paired_p_value(a, b)
    return not math.isnan(p) and p < alpha


def adjusted_p_values(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (scipy's ``false_discovery_control``) of the finite entries; NaN stays.

    Used where many paired tests are read at once (a heatmap of methods × combinations): at p < 0.05 unadjusted,
    one cell in twenty would be marked by chance alone."""
    finite = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    out = [math.nan] * len(p_values)
    if finite:
        adjusted = stats.false_discovery_control([p_values[i] for i in finite], method="bh")
        for i, q in zip(finite, adjusted, strict=True):
            out[i] = float(q)
    return out
