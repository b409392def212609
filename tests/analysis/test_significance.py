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


def test_benjamini_hochberg_by_hand():
    from mmanet.analysis.significance import adjusted_p_values

    # sorted p: .01 .02 .03 .04 (m = 4): p·m/rank = .04 .04 .04 .04; NaN stays out of the count
    got = adjusted_p_values([0.03, float("nan"), 0.01, 0.04, 0.02])
    assert math.isnan(got[1])
    assert [got[i] for i in (0, 2, 3, 4)] == pytest.approx([0.04, 0.04, 0.04, 0.04])
    assert adjusted_p_values([0.001, 0.5]) == pytest.approx([0.002, 0.5])
