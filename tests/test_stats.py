"""Comparison statistics against values computed directly (by hand or with scipy)."""

import math

import numpy as np
import pytest
from scipy import stats

from finebench.reports.stats import holm, paired_test, t_interval


def test_t_interval_by_hand():
    lo, hi = t_interval([80.0, 82.0, 84.0])
    half = 4.302652729911275 * 2.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (lo, hi) == pytest.approx((82.0 - half, 82.0 + half))
    assert t_interval([80.0]) is None


def test_paired_t_for_few_pairs_matches_scipy():
    a, b = [81.0, 83.5, 80.2], [80.0, 82.0, 80.5]
    result = paired_test(a, b)
    assert result.test == "paired-t" and result.n == 3
    assert result.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert result.mean_difference == pytest.approx(np.mean(np.subtract(a, b)))
    assert paired_test([1.0], [2.0]) is None  # one seed: no test possible
    assert paired_test([1.0, 2.0], [1.0, 2.0]).p == 1.0
    with pytest.raises(ValueError, match="pair them by seed"):
        paired_test([1.0, 2.0], [1.0])


def test_wilcoxon_from_ten_pairs_matches_scipy():
    rng = np.random.default_rng(0)
    b = rng.normal(80, 1, 10)
    a = b + rng.normal(0.8, 0.5, 10)
    result = paired_test(a, b)
    assert result.test == "wilcoxon" and result.p == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert paired_test(a[:9], b[:9]).test == "paired-t"
    assert paired_test([81.0, 83.0], [80.0, 82.0]) is None  # the same +1 on both seeds: no variance, no test


def test_holm_by_hand():
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04); back in input order
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1, monotone
    assert holm([0.03, 0.001, 0.2, 0.01]) == pytest.approx([0.06, 0.004, 0.2, 0.03])
