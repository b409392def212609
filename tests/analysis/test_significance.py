"""The paired t-test against scipy's ttest_rel, and its edge cases."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from mmanet.analysis.significance import paired_p_value, significant


@pytest.mark.parametrize(
    ("a", "b"),
    [([4.1, 4.3, 3.9], [4.4, 4.6, 4.5]), ([1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 1.9, 3.7, 4.2, 5.1]), ([7, 9], [6, 10])],
)
def test_matches_scipy(a, b):
    assert paired_p_value(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_edge_cases():
    assert math.isnan(paired_p_value([1.0], [2.0]))  # one seed: no test
    assert paired_p_value([1.1, 2.1, 3.1], [1.0, 2.0, 3.0]) == 0.0  # the same non-zero difference every seed
    assert paired_p_value([1.0, 2.0], [1.0, 2.0]) == 1.0
    assert significant([4.1, 4.3, 3.9, 4.0], [5.1, 5.4, 5.0, 5.05]) and not significant([1.0], [9.0])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_p_value([1.0], [1.0, 2.0])
