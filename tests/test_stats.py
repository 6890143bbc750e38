"""Comparison statistics against values computed directly (by hand or with scipy)."""

import math

import numpy as np
import pytest
from scipy import stats

from finebench.reports.stats import ImageBootstrap, bootstrap_p, holm, image_interval, paired_test, t_interval


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


def test_image_bootstrap_resamples_within_each_class_and_pairs_methods_on_the_same_draws():
    target = np.array([0] * 10 + [1] * 30)
    boot = ImageBootstrap(target, seed=0, resamples=500)
    # within each class: every resample draws as many images as the class has
    assert [w.sum(1).tolist() for w in boot.weights] == [[10] * 500, [30] * 500]
    hits = np.r_[np.ones(10), np.zeros(30)]  # right on class 0 only: overall 25 %, per-class mean 50 %
    assert boot.observed(hits, per_class=False) == 25.0 and boot.observed(hits, per_class=True) == 50.0
    # stratified: class shares never move, so a classifier right on exactly one class has no spread at all
    assert np.all(boot.statistic(hits, per_class=False) == 25.0)
    rng = np.random.default_rng(1)
    a = (rng.random(40) < 0.8).astype(float)
    reps = boot.statistic(a, per_class=False)
    lo, hi = image_interval(reps)
    assert lo < 100 * a.mean() < hi and 10 < hi - lo < 40  # about +-2 x sqrt(p(1-p)/n) = +-12.6 points at n=40
    # the same draws for every method: a copy differs by exactly 0 on every resample, p = 1
    assert bootstrap_p(reps - boot.statistic(a.copy(), per_class=False), 0.0) == 1.0
    # a method right on 8 more images out of 40 (+20 points): the paired bootstrap calls it clearly
    b = a.copy()
    b[np.flatnonzero(a == 0)[:8]] = 1
    diff = boot.statistic(b, per_class=False) - reps
    assert bootstrap_p(diff, 100 * (b.mean() - a.mean())) < 0.01
    # ... and a one-image difference is not
    c = a.copy()
    c[np.flatnonzero(a == 0)[0]] = 1
    assert bootstrap_p(boot.statistic(c, per_class=False) - reps, 2.5) > 0.2


def test_bootstrap_p_by_hand():
    # replicates centred on the observed 2.0: |r - 2| >= 2 for -1 (3) and 4 (2) and 5 (3): 3 of 5, (1 + 3) / 6
    assert bootstrap_p(np.array([-1.0, 1.0, 2.0, 4.0, 5.0]), 2.0) == pytest.approx(4 / 6)
