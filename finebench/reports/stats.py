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


RESAMPLES = 2000  # bootstrap resamples of the test images: the smallest two-sided p is 1/2001 = 0.0005


class ImageBootstrap:
    """Resamples of one test set's images, drawn class by class with replacement (the split is stratified, so each
    class keeps its number of test images), seeded from the test set's identity: every method evaluated on these
    images is resampled on the same draws, so a difference between two methods is resampled on the same images
    (a paired bootstrap)."""

    def __init__(self, target: np.ndarray, seed: int, resamples: int = RESAMPLES) -> None:
        rng = np.random.default_rng(seed)
        self.n = len(target)
        self.classes = [np.flatnonzero(target == c) for c in np.unique(target)]
        self.weights = [rng.multinomial(len(idx), np.full(len(idx), 1 / len(idx)), size=resamples)
                        for idx in self.classes]  # fmt: skip

    def statistic(self, hits: np.ndarray, per_class: bool) -> np.ndarray:
        """The accuracy (%) of each resample from per-image hits (0/1, in the test set's order): overall, or the
        mean over classes of each class's accuracy (`per_class`)."""
        counts = [w @ hits[idx].astype(float) for w, idx in zip(self.weights, self.classes, strict=True)]
        if per_class:
            return 100.0 * np.mean([c / len(idx) for c, idx in zip(counts, self.classes, strict=True)], axis=0)
        return 100.0 * np.sum(counts, axis=0) / self.n

    def observed(self, hits: np.ndarray, per_class: bool) -> float:
        if per_class:
            return 100.0 * float(np.mean([hits[idx].mean() for idx in self.classes]))
        return 100.0 * float(hits.mean())


def image_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    lo, hi = np.percentile(replicates, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_p(replicates: np.ndarray, observed: float) -> float:
    """Two-sided p of a paired bootstrap difference: the share of replicates, centred on the observed difference,
    at least as far from it as the observed difference is from 0 (with the usual +1 on both sides)."""
    extreme = np.abs(replicates - observed) >= abs(observed) - 1e-12
    return float((1 + extreme.sum()) / (1 + len(replicates)))
