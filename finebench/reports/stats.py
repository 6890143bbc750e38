"""The statistics of a comparison across seeds, as plain functions: confidence intervals, paired tests against a
baseline, Holm's correction.

A comparison pairs runs by seed: method m and the baseline trained with the same seed (same split, same batch
order) form one pair. With fewer than two pairs no test is possible and the functions say so (None), rather than
invent a p-value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# The Wilcoxon signed-rank test's smallest two-sided p with n pairs is 2 / 2^n: 0.031 at 6 pairs, which Holm's
# correction over two methods already lifts above 0.05. From 10 pairs (0.002) it can show a difference in a table
# of up to 25 methods; below that the paired t-test is used. The table says which.
MIN_WILCOXON = 10


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval of the mean; None with fewer than two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


@dataclass(frozen=True)
class PairedTest:
    test: str  # "wilcoxon" or "paired-t"
    n: int  # pairs
    mean_difference: float  # method - baseline
    p: float


def paired_test(method: Sequence[float], baseline: Sequence[float]) -> PairedTest | None:
    """Two-sided paired test of method vs baseline values (same seeds, same order): Wilcoxon signed-rank with at
    least MIN_WILCOXON pairs, else the paired t-test. None with fewer than two pairs, or when a t-test would divide
    by a zero variance (the same non-zero difference on every seed). Identical pairs: p = 1."""
    a, b = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"paired test: {len(a)} method values vs {len(b)} baseline values; pair them by seed")
    if len(a) < 2:
        return None
    d = a - b
    if np.allclose(d, 0):
        return PairedTest("wilcoxon" if len(a) >= MIN_WILCOXON else "paired-t", len(a), 0.0, 1.0)
    if len(a) >= MIN_WILCOXON:
        p = stats.wilcoxon(a, b).pvalue
        return PairedTest("wilcoxon", len(a), float(d.mean()), float(p))
    if np.allclose(d, d[0]):  # a constant non-zero difference (accuracies move in steps): no variance, no t-test
        return None
    return PairedTest("paired-t", len(a), float(d.mean()), float(stats.ttest_rel(a, b).pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
