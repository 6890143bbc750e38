"""The statistics of a comparison table: per (dataset, backbone, budget) and method, mean, spread and intervals
over seeds and over test images, each method's paired tests against the baseline (Holm-corrected), the marks a
reader needs (a teacher weaker than the student's baseline) and the best row. Renderers (`tables.py`) only format
what `summarize` computes."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from finebench.reports.frame import TEACHER
from finebench.reports.stats import ImageBootstrap, bootstrap_p, holm, image_interval, paired_test, t_interval

# --metric: the selection-free test metric a table ranks, tests and bolds by (column, label)
PRIMARY = {
    "top1": ("test_top1", "test top-1"),
    "top3": ("test_top3", "test top-3"),
    "mean_class": ("test_mean_class", "test mean per-class accuracy"),
}

METRICS = (
    "test_top1",
    "test_top3",
    "test_mean_class",
    "val_top1",
    "last_test_top1",
    "best_epoch",
    "seconds_to_best",
    "own_seconds",
    "total_seconds",
    "samples_total",
    "flops_total",
)


def method_rank(name: str) -> int:
    """Registry order (the order `bench list methods` shows); unregistered names after, teachers last."""
    from finebench.reports import catalogue

    names = catalogue.current().order()
    return names.index(name) if name in names else len(names) + (name == TEACHER)


BASELINE = "cut-full"  # what every method is tested against, when the table has it
ALPHA = 0.05


def significance(runs: pd.DataFrame, summary: pd.DataFrame, metric: str = "test_top1") -> None:
    """Per (dataset, backbone, budget): each method against the table's baseline (the `baseline` column, see
    `resolve_baseline`) on `metric`, paired by seed (and split),
    Holm-corrected over the table's methods. Adds columns test, pairs, delta, p, p_holm (None where no test is
    possible). Rows of methods that train no model of their own (semantic pruning's row is its source model) are
    not tested and stay out of the Holm family."""
    for col in ("test", "pairs", "delta", "p", "p_holm"):
        summary[col] = None
    for _, group in summary.groupby(["dataset", "backbone", "budget"], sort=False):
        key = group.iloc[0][["dataset", "backbone", "budget", "baseline"]]
        in_table = runs[(runs["dataset"] == key["dataset"]) & (runs["backbone"] == key["backbone"])
                        & (runs["budget"] == key["budget"])]  # fmt: skip
        baseline = key["baseline"]
        base_runs = in_table[in_table["method"] == baseline].set_index("seed")
        base = base_runs[metric]
        if base.empty:
            continue
        tested = []
        for idx, row in group.iterrows():
            if row["method"] == baseline or row["method"].startswith(f"{TEACHER}:") or not row["trained"]:
                continue
            mine_runs = in_table[in_table["method"] == row["method"]].set_index("seed")
            mine = mine_runs[metric]
            # pairs: the same seed on the same split (runs with different splits are never paired)
            seeds = sorted(s for s in set(mine.index) & set(base.index)
                           if mine_runs.loc[s, "split_hash"] == base_runs.loc[s, "split_hash"])  # fmt: skip
            result = paired_test(mine[seeds].tolist(), base[seeds].tolist())
            summary.loc[idx, "pairs"] = len(seeds)
            if result is not None:
                summary.loc[idx, ["test", "delta", "p"]] = [result.test, result.mean_difference, result.p]
                tested.append(idx)
        if tested:
            adjusted = holm([summary.loc[i, "p"] for i in tested])
            for i, p in zip(tested, adjusted, strict=True):
                summary.loc[i, "p_holm"] = p


def resolve_baseline(summary: pd.DataFrame, baseline: str) -> list[str]:
    """Each row's baseline: the row labelled `baseline` in its table, else the one row of that method under any
    settings (`cut-full (freeze_bn=True, freeze_stages=2)` for cut-full in the attention-transfer paper's preset)."""
    out = []
    for _, row in summary.iterrows():
        table = summary[(summary["dataset"] == row["dataset"]) & (summary["backbone"] == row["backbone"])
                        & (summary["budget"] == row["budget"])]  # fmt: skip
        named = table[(table["method_name"] == baseline) & ~table["method"].str.startswith(f"{TEACHER}:")]
        out.append(named.iloc[0]["method"] if baseline not in set(table["method"]) and len(named) == 1 else baseline)
    return out


def weak_teachers(summary: pd.DataFrame) -> None:
    """Mark distillation rows whose teacher is weaker on val than the student's own baseline: the table's cut-full
    row with the student's frozen stages and BatchNorm setting (else the table's baseline). Such a row measures
    distillation from a worse model. Adds `weak_teacher`: (teacher val top-1, baseline val top-1, baseline row)."""
    summary["weak_teacher"] = None
    for idx, row in summary.iterrows():
        if pd.isna(row["teacher_val"]):
            continue
        table = summary[(summary["dataset"] == row["dataset"]) & (summary["backbone"] == row["backbone"])
                        & (summary["budget"] == row["budget"])]  # fmt: skip
        own = table[(table["method_name"] == "cut-full") & (table["setting"] == row["setting"])]
        base = own if not own.empty else table[table["method"] == row["baseline"]]
        if base.empty:
            continue
        val = float(base.iloc[0]["val_top1_mean"])
        if row["teacher_val"] < val:
            summary.at[idx, "weak_teacher"] = (float(row["teacher_val"]), val, base.iloc[0]["method"])


# --metric -> (which per-image hits, averaged per class first?)
IMAGE_HITS = {"top1": ("top1", False), "top3": ("top3", False), "mean_class": ("top1", True)}


def image_statistics(runs: pd.DataFrame, summary: pd.DataFrame, metric: str = "top1") -> None:
    """Intervals and tests that include test-set sampling, from the per-image test results of each run: per row,
    a 95 % stratified-bootstrap interval over test images of the mean over seeds (`ci_images`); per trained row,
    the paired bootstrap over the same test images of its difference to the baseline (mean over the seeds both have
    on the same split: `images_delta`, `images_p`), Holm-corrected over the table's methods (`images_p_holm`).
    Rows whose records lack per-image results (written before they were kept) get None."""
    kind, per_class = IMAGE_HITS[metric]
    boots: dict[str, ImageBootstrap] = {}
    for col in ("ci_images", "images_delta", "images_p", "images_p_holm"):
        summary[col] = None

    def resampled(split_hash: str, images: dict) -> tuple[np.ndarray, float]:
        if split_hash not in boots:  # one set of draws per test set, shared by every row
            seed = int(hashlib.sha256(split_hash.encode()).hexdigest()[:8], 16)
            boots[split_hash] = ImageBootstrap(images["target"], seed=seed)
        boot = boots[split_hash]
        hits = images["pred"] == images["target"] if kind == "top1" else images["top3"]
        return boot.statistic(hits, per_class), boot.observed(hits, per_class)

    for _, group in summary.groupby(["dataset", "backbone", "budget"], sort=False):
        key = group.iloc[0]
        in_table = runs[(runs["dataset"] == key["dataset"]) & (runs["backbone"] == key["backbone"])
                        & (runs["budget"] == key["budget"])]  # fmt: skip
        per_row: dict = {}
        for idx, row in group.iterrows():
            mine = in_table[in_table["method"] == row["method"]]
            if mine["images"].isna().any():
                continue
            per_row[idx] = {r.seed: (r.split_hash, *resampled(r.split_hash, r.images)) for r in mine.itertuples()}
            summary.at[idx, "ci_images"] = image_interval(np.mean([v[1] for v in per_row[idx].values()], axis=0))
        base = next((i for i, r in group.iterrows() if r["method"] == r["baseline"] and i in per_row), None)
        tested = []
        for idx, row in group.iterrows():
            if idx not in per_row or base is None or idx == base or row["method"].startswith(f"{TEACHER}:"):
                continue
            if not row["trained"]:
                continue
            pairs = [(per_row[idx][s], per_row[base][s]) for s in per_row[idx]
                     if s in per_row[base] and per_row[idx][s][0] == per_row[base][s][0]]  # fmt: skip
            if not pairs:
                continue
            diff = np.mean([m[1] - b[1] for m, b in pairs], axis=0)
            observed = float(np.mean([m[2] - b[2] for m, b in pairs]))
            summary.at[idx, "images_delta"] = observed
            summary.at[idx, "images_p"] = bootstrap_p(diff, observed)
            tested.append(idx)
        for i, p in zip(tested, holm([summary.at[i, "images_p"] for i in tested]), strict=True):
            summary.at[i, "images_p_holm"] = p


def summarize(runs: pd.DataFrame, baseline: str = BASELINE, metric: str = "top1") -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for one seed), n and the 95 % t-interval of the `metric` (top1, top3,
    mean_class: test accuracy at the best-val epoch) per (dataset, backbone, budget, method), each method's paired
    test against `baseline` on it (see `significance`), and the best row by it."""
    if metric not in PRIMARY:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(PRIMARY)}")
    key = PRIMARY[metric][0]
    keys = ["dataset", "backbone", "budget", "method"]
    runs = runs.assign(_order=runs["method_name"].map(method_rank))
    runs = runs.sort_values(["_order", "method", "seed"], kind="stable")
    g = runs.groupby(keys, sort=False)
    out = g.size().rename("n").to_frame()
    for m in METRICS + (("seconds_to_target",) if "seconds_to_target" in runs else ()):
        out[f"{m}_mean"] = g[m].mean()  # NaN (not reached) left out
        out[f"{m}_std"] = g[m].std(ddof=1)
    if "seconds_to_target" in runs:
        out["reached"] = g["seconds_to_target"].count()
    for m in ("trainable", "total", "deployed", "plain", "epochs", "resolution", "arithmetic"):
        out[m] = g[m].first()
    out["capped"] = g["capped"].sum()
    out["trained"] = g["trained"].any()
    for m in ("method_name", "setting"):
        out[m] = g[m].first()
    out["teacher_val"] = g["teacher_val"].mean()
    out["teacher_label"] = g["teacher_label"].agg(lambda v: next((x for x in v if isinstance(x, str)), None))
    out["note"] = g["note"].agg(lambda v: next((x for x in v if isinstance(x, str)), None))
    out["bn_statistics"] = g["bn_statistics"].agg(lambda v: next((x for x in v if isinstance(x, str)), None))
    out["seeds"] = g["seed"].apply(lambda s: ",".join(str(v) for v in sorted(s)))
    out["commits"] = g["commit"].apply(lambda s: ",".join(sorted(set(s))))
    out["cpu_threads"] = g["cpu_threads"].apply(lambda s: ",".join(sorted({str(int(v)) for v in s if v == v and v})))
    dup = g["seed"].apply(lambda s: s.duplicated().any())
    if dup.any():
        key = list(dup[dup].index)[0]
        raise ValueError(f"the same seed appears twice for {key}: two records of one spec (hand-merged stores?)")
    out["ci"] = g[key].apply(lambda v: t_interval(v.tolist()))
    out = out.reset_index()
    out["baseline"] = resolve_baseline(out, baseline)
    weak_teachers(out)
    significance(runs, out, key)
    image_statistics(runs, out, metric)
    out.attrs["target"] = runs.attrs.get("target")
    out.attrs["metric"] = metric
    contenders = out[~out["method"].str.startswith(f"{TEACHER}:") & out["trained"]]
    best = contenders.groupby(["dataset", "backbone", "budget"])[f"{key}_mean"].transform("max")
    out["best"] = False
    out.loc[contenders.index, "best"] = contenders[f"{key}_mean"] >= best - 1e-9
    return out
