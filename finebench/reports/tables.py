"""Comparison tables from run records alone: one row per method, one table per (dataset, backbone, budget).

Statistics live in plain functions (`summarize`) so that richer ones (confidence intervals, paired tests) plug in
as new columns; renderers only format what `summarize` computed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finebench.benchmark.spec import identity_train
from finebench.reports.stats import (
    RESAMPLES,
    ImageBootstrap,
    bootstrap_p,
    holm,
    image_interval,
    paired_test,
    t_interval,
)
from finebench.results import predictions
from finebench.results.record import RunRecord


def budget_key(spec: dict) -> str:
    """Runs are comparable only under the same training config (epochs, resolution, optimiser, split...)."""
    return hashlib.sha256(json.dumps(identity_train(spec["train"]), sort_keys=True).encode()).hexdigest()[:8]


def arithmetic(train: dict) -> str:
    """How a run's arithmetic ran, for the caption: fp32 unless mixed precision, plus memory format, compilation and
    the cuDNN mode when they are not the defaults (records written before these settings existed used fp32 NCHW)."""
    parts = [{"bf16": "bf16 autocast", "fp16": "fp16 autocast + grad scaler"}.get(train.get("amp", "off"), "fp32")]
    if train.get("channels_last"):
        parts.append("channels_last")
    if train.get("compile"):
        parts.append("torch.compile")
    if train.get("cudnn", "benchmark") != "benchmark":
        parts.append(f"cuDNN {train['cudnn']}")
    return ", ".join(parts)


def method_label(method: str, config: dict) -> str:
    """The method's name, plus the settings that differ from its defaults (so variants get their own rows)."""
    from finebench.methods import METHODS

    defaults: dict = {}
    if method in METHODS:
        defaults = dataclasses.asdict(METHODS.get(method).Config())

    def norm(v):  # records hold JSON lists where a config holds tuples
        return list(v) if isinstance(v, tuple) else v

    changed = {k: v for k, v in sorted(config.items()) if norm(defaults.get(k, object())) != norm(v)}
    return method + (" (" + ", ".join(f"{k}={v}" for k, v in changed.items()) + ")" if changed else "")


def seconds_to_target(r: RunRecord, target: float) -> float:
    """Seconds (own, plus charged phases, which precede training) until val top-1 first reaches `target`; NaN if it
    never does."""
    charged = r.cost.get("charged_seconds", 0.0)
    for e in r.epochs:
        if "val" in e and e["val"]["top1"] >= target:
            return e["elapsed"] + charged
    return math.nan


def train_flops(cost: dict) -> float:
    """Measured training FLOPs; records written before they were measured hold the 3 x forward estimate; NaN when a
    record has neither."""
    value = cost.get("train_flops", cost.get("train_flops_estimate"))
    return math.nan if value is None else float(value)


def run_row(r: RunRecord, target: float | None = None) -> dict:
    train, cfg = r.spec["train"], r.spec.get("method_config", {})
    own = r.cost["total_seconds"]
    charged = r.cost.get("charged_seconds", 0.0)
    charges = r.cost.get("charges", {}).values()
    return {
        "dataset": r.spec["dataset"],
        "backbone": r.spec["backbone"],
        "budget": budget_key(r.spec),
        "epochs": train["epochs"],
        "resolution": train["resolution"],
        "arithmetic": arithmetic(train),
        "method": method_label(r.spec["method"], r.spec.get("method_config", {})),
        "method_name": r.spec["method"],
        "seed": r.spec["seed"],
        "commit": (r.env.get("commit") or "unknown")[:10],
        "test_top1": r.best["test"]["top1"],
        "test_top3": r.best["test"]["top3"],
        "test_mean_class": r.best["test"].get("mean_class", math.nan),
        "val_top1": r.best["val"]["top1"],
        "last_test_top1": r.last["test"]["top1"],
        "best_epoch": r.best["epoch"],
        # charged phases (a teacher's or source model's training, a calibration pass) precede training: they
        # count towards the time to best and the total; `own_seconds` is the method's own training and evaluation
        "seconds_to_best": r.best["seconds_to_best"] + charged,
        "own_seconds": own,
        "total_seconds": own + charged,
        # everything it took to produce the model, charged phases included
        "samples_total": r.cost.get("samples", 0) + sum(c.get("samples", 0) for c in charges),
        # training FLOPs as measured (older records: the 3 x forward estimate they were written with)
        "flops_total": train_flops(r.cost) + sum(c.get("flops", 0.0) for c in charges),
        **({"seconds_to_target": seconds_to_target(r, target)} if target is not None else {}),
        "trainable": r.params["trainable"],
        "total": r.params["total"],
        "capped": bool(r.cost.get("capped")),
        "split_hash": r.dataset["split_hash"],
        "trained": bool(r.epochs),  # False: the method trains no model of its own (an analysis of a source model)
        # what a student's own baseline must share with it: cut-full with the same frozen stages and BatchNorm
        "setting": (int(cfg.get("freeze_stages", 0)), bool(cfg.get("freeze_bn", False))),
        "teacher_run": r.sources.get("teacher"),
        "teacher_val": math.nan,  # filled in by runs_frame when the teacher's record is in the store
        "note": r.extras.get("variant"),  # a method's word on this configuration (e.g. the paper's ablation)
        "images": predictions.decode(r.best.get("test_predictions")),  # per-image test results (newer records)
    }


TEACHER = "teacher"  # method_name of the rows that show a distillation method's teacher


def runs_frame(records: Iterable[RunRecord], target: float | None = None) -> pd.DataFrame:
    """One row per finished run; a teacher used by a run also appears in that run's table (once per teacher run),
    labelled `teacher: <method> (<backbone>)`, so a student, its distilled variants and their teacher sit together."""
    records = [r for r in records if r.status == "ok"]
    by_id = {r.run_id: r for r in records}
    rows, teachers = [], set()
    for r in records:
        row = run_row(r, target)
        rows.append(row)
        teacher = by_id.get(r.sources.get("teacher", ""))
        if teacher is not None:
            row["teacher_val"] = teacher.best["val"]["top1"]
        if teacher is None or (row["dataset"], row["backbone"], row["budget"], teacher.run_id) in teachers:
            continue
        teachers.add((row["dataset"], row["backbone"], row["budget"], teacher.run_id))
        t = run_row(teacher, target)
        weights = teacher.spec["train"].get("weights", "default")
        differs = weights != r.spec["train"].get("weights", "default")  # the student's weights are the default
        label = f"teacher: {t['method']} ({t['backbone']}" + (f", weights={weights})" if differs else ")")
        group = {k: row[k] for k in ("dataset", "backbone", "budget")}
        rows.append(t | group | {"method": label, "method_name": TEACHER, "teacher_val": math.nan})
    frame = pd.DataFrame(rows)
    frame.attrs["target"] = target
    return frame


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
    from finebench.methods import METHODS

    names = METHODS.names()
    return names.index(name) if name in names else len(names) + (name == TEACHER)


BASELINE = "cut-full"  # what every method is tested against, when the table has it
ALPHA = 0.05


def significance(runs: pd.DataFrame, summary: pd.DataFrame, baseline: str, metric: str = "test_top1") -> None:
    """Per (dataset, backbone, budget): each method against `baseline` on `metric`, paired by seed (and split),
    Holm-corrected over the table's methods. Adds columns test, pairs, delta, p, p_holm (None where no test is
    possible). Rows of methods that train no model of their own (semantic pruning's row is its source model) are
    not tested and stay out of the Holm family."""
    for col in ("test", "pairs", "delta", "p", "p_holm"):
        summary[col] = None
    for _, group in summary.groupby(["dataset", "backbone", "budget"], sort=False):
        key = group.iloc[0][["dataset", "backbone", "budget"]]
        in_table = runs[(runs["dataset"] == key["dataset"]) & (runs["backbone"] == key["backbone"])
                        & (runs["budget"] == key["budget"])]  # fmt: skip
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


def weak_teachers(summary: pd.DataFrame, baseline: str) -> None:
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
        base = own if not own.empty else table[table["method"] == baseline]
        if base.empty:
            continue
        val = float(base.iloc[0]["val_top1_mean"])
        if row["teacher_val"] < val:
            summary.at[idx, "weak_teacher"] = (float(row["teacher_val"]), val, base.iloc[0]["method"])


WEAK = "†"


def row_label(row: pd.Series) -> str:
    """The row's name, with its method's note (e.g. the paper's ablation) and † for a weaker teacher."""
    label = row["method"] + (f" [{row['note']}]" if isinstance(row.get("note"), str) else "")
    return label + (f" {WEAK}" if row.get("weak_teacher") is not None else "")


def footnotes(group: pd.DataFrame) -> list[str]:
    weak = [(row["method"], row["weak_teacher"]) for _, row in group.iterrows() if row.get("weak_teacher")]
    return [
        f"{WEAK} {name}: its teacher is weaker on val than the student's own baseline ({t:.1f} vs {b:.1f} % val "
        f"top-1 of {base}): the row measures distillation from a worse model"
        for name, (t, b, base) in weak
    ]


# --metric -> (which per-image hits, averaged per class first?)
IMAGE_HITS = {"top1": ("top1", False), "top3": ("top3", False), "mean_class": ("top1", True)}


def image_statistics(runs: pd.DataFrame, summary: pd.DataFrame, baseline: str, metric: str = "top1") -> None:
    """Intervals and tests that include test-set sampling, from the per-image test results of each run: per row,
    a 95 % stratified-bootstrap interval over test images of the mean over seeds (`ci_images`); per trained row,
    the paired bootstrap over the same test images of its difference to `baseline` (mean over the seeds both have
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
        base = next((i for i, r in group.iterrows() if r["method"] == baseline and i in per_row), None)
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
    for m in ("trainable", "total", "epochs", "resolution", "arithmetic"):
        out[m] = g[m].first()
    out["capped"] = g["capped"].sum()
    out["trained"] = g["trained"].any()
    for m in ("method_name", "setting"):
        out[m] = g[m].first()
    out["teacher_val"] = g["teacher_val"].mean()
    out["note"] = g["note"].agg(lambda v: next((x for x in v if isinstance(x, str)), None))
    out["seeds"] = g["seed"].apply(lambda s: ",".join(str(v) for v in sorted(s)))
    out["commits"] = g["commit"].apply(lambda s: ",".join(sorted(set(s))))
    dup = g["seed"].apply(lambda s: s.duplicated().any())
    if dup.any():
        key = list(dup[dup].index)[0]
        raise ValueError(f"the same seed appears twice for {key}: two records of one spec (hand-merged stores?)")
    out["ci"] = g[key].apply(lambda v: t_interval(v.tolist()))
    out = out.reset_index()
    weak_teachers(out, baseline)
    significance(runs, out, baseline, key)
    image_statistics(runs, out, baseline, metric)
    out["baseline"] = baseline
    out.attrs["target"] = runs.attrs.get("target")
    out.attrs["metric"] = metric
    contenders = out[~out["method"].str.startswith(f"{TEACHER}:") & out["trained"]]
    best = contenders.groupby(["dataset", "backbone", "budget"])[f"{key}_mean"].transform("max")
    out["best"] = False
    out.loc[contenders.index, "best"] = contenders[f"{key}_mean"] >= best - 1e-9
    return out


@dataclass(frozen=True)
class Column:
    header: str
    tex_header: str
    metric: str
    kind: str  # "pct" (mean ± std, 1 decimal), "num" (mean ± std, 1 decimal), "sec", "params", "n"


COLUMNS = (
    Column("n", "$n$", "n", "n"),
    Column("test top-1 (%)", r"test top-1 (\%)", "test_top1", "pct"),
    Column("95 % CI (seeds)", r"95\,\% CI (seeds)", "test_top1", "ci"),
    Column("Δ vs baseline (seeds)", r"$\Delta$ vs baseline (seeds)", "test_top1", "sig"),
    Column("95 % CI (test images)", r"95\,\% CI (test images)", "test_top1", "ci_images"),
    Column("Δ vs baseline (test images)", r"$\Delta$ vs baseline (test images)", "test_top1", "sig_images"),
    Column("test top-3 (%)", r"test top-3 (\%)", "test_top3", "pct"),
    Column("val top-1 (%)", r"val top-1 (\%)", "val_top1", "pct"),
    Column("last-epoch test top-1 (%)", r"last-epoch test top-1 (\%)", "last_test_top1", "pct"),
    Column("epochs to best", "epochs to best", "best_epoch", "num"),
    Column("time to best (s)", "time to best (s)", "seconds_to_best", "sec"),
    Column("own time (s)", "own time (s)", "own_seconds", "sec"),
    Column("time incl. teacher/source (s)", "time incl. teacher/source (s)", "total_seconds", "sec"),
    Column("samples incl. charged", "samples incl.\\ charged", "samples_total", "count"),
    Column("train FLOPs incl. charged", "train FLOPs incl.\\ charged", "flops_total", "flops"),
    Column("trainable / total params", "trainable / total params", "trainable", "params"),
)


def columns(summary: pd.DataFrame) -> tuple[Column, ...]:
    """The table's columns: COLUMNS with the chosen metric first (its interval and test beside it), plus time to
    the target val accuracy when the report was asked for one."""
    cols = COLUMNS
    key, label = PRIMARY[summary.attrs.get("metric", "top1")]
    if key != "test_top1":
        primary = Column(f"{label} (%)", tex_escape(label) + r" (\%)", key, "pct")
        rest = [c for c in COLUMNS[6:] if c.metric != key]
        tests = [dataclasses.replace(c, metric=key) for c in COLUMNS[2:6]]
        cols = (COLUMNS[0], primary, *tests, COLUMNS[1], *rest)
    target = summary.attrs.get("target")
    if target is None:
        return cols
    extra = Column(f"time to {target:g} % val (s)", f"time to {target:g}\\,\\% val (s)", "seconds_to_target", "target")
    at = [c.metric for c in cols].index("seconds_to_best") + 1
    return cols[:at] + (extra,) + cols[at:]


def is_primary(summary: pd.DataFrame, col: Column) -> bool:
    """The column that is bolded: the chosen metric's mean ± std."""
    return col.kind == "pct" and col.metric == PRIMARY[summary.attrs.get("metric", "top1")][0]


def human_count(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suffix}"
    return f"{int(n)}"


def human_flops(n: float) -> str:
    """FLOPs with an SI prefix and three significant digits (1.23 PFLOP, 456 GFLOP): never `0.000`."""
    if not n == n:  # NaN
        return "—"
    for div, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g} {prefix}FLOP"
    return f"{n:.3g} FLOP"


def significance_cell(row: pd.Series) -> str:
    if row["method"] == row["baseline"]:
        return "baseline"
    if not row.get("trained", True):
        return "not tested (no model of its own)"
    if row["method"].startswith(f"{TEACHER}:") or row["pairs"] is None:
        return "—"
    if row["p_holm"] is None:
        why = f"n={int(row['pairs'])}" if row["pairs"] < 2 else "the same difference on every seed"
        return f"no test ({why})"
    return delta_text(row["delta"], row["p_holm"])


def delta_text(delta: float, p_holm: float) -> str:
    mark = "" if p_holm < ALPHA else " n.s."
    p = "p<0.001" if p_holm < 0.001 else f"p={p_holm:.3f}"
    return f"{delta:+.1f} ({p}){mark}"


def image_significance_cell(row: pd.Series) -> str:
    if row["method"] == row["baseline"]:
        return "baseline"
    if not row.get("trained", True):
        return "not tested (no model of its own)"
    if row.get("images_p_holm") is None:
        return "—"
    return delta_text(row["images_delta"], row["images_p_holm"])


def cell(row: pd.Series, col: Column, pm: str) -> str:
    if col.kind == "n":
        return str(int(row["n"]))
    if col.kind == "ci":
        ci = row["ci"]
        return "—" if ci is None else f"[{ci[0]:.1f}, {ci[1]:.1f}]"
    if col.kind == "sig":
        return significance_cell(row)
    if col.kind == "ci_images":
        ci = row.get("ci_images")
        return "—" if ci is None else f"[{ci[0]:.1f}, {ci[1]:.1f}]"
    if col.kind == "sig_images":
        return image_significance_cell(row)
    if col.kind == "params":
        return f"{human_count(row['trainable'])} / {human_count(row['total'])}"
    if col.kind == "count":  # identical across seeds by construction (the budget): the mean alone
        return human_count(row[f"{col.metric}_mean"])
    if col.kind == "target":
        reached, n = int(row["reached"]), int(row["n"])
        if reached == 0:
            return "not reached"
        mean, std = row["seconds_to_target_mean"], row["seconds_to_target_std"]
        text = f"{mean:.1f}" + ("" if math.isnan(std) else f" {pm} {std:.1f}")
        return text + ("" if reached == n else f" ({reached}/{n} seeds)")
    if col.kind == "flops":
        return human_flops(row[f"{col.metric}_mean"])
    mean, std = row[f"{col.metric}_mean"], row[f"{col.metric}_std"]
    digits = 1
    text = f"{mean:.{digits}f}"
    if not (isinstance(std, float) and math.isnan(std)):
        text += f" {pm} {std:.{digits}f}"
    return text


def caption(group: pd.DataFrame, metric: str = "top1") -> str:
    first = group.iloc[0]
    label = PRIMARY[metric][1]
    seeds = sorted({s for v in group["seeds"] for s in v.split(",")}, key=int)
    capped = int(group["capped"].sum())
    text = (
        f"{first['dataset']} · {first['backbone']} · {int(first['epochs'])} epochs at {int(first['resolution'])} px "
        f"(budget {first['budget']}) · {first['arithmetic']} · seeds {','.join(seeds)} · mean ± std over seeds, "
        "test at the best-val epoch · "
        "time to best and time incl. teacher/source include charged phases (a teacher's or source model's training, "
        "calibration); own time excludes them"
    )
    if capped:
        text += f" · {capped} run(s) stopped by the time budget"
    commits = sorted({c for v in group["commits"] for c in v.split(",")})
    if len(commits) > 1:
        text += f" · WARNING: runs from different code commits ({', '.join(commits)})"
    tests = sorted({t for t in group["test"] if t})
    if (group["method"] == first["baseline"]).any():
        text += (
            f" · Δ vs {first['baseline']}: mean paired difference of {label} over common seeds, "
            + (f"{' / '.join(tests)} test, Holm-corrected over this table's methods, n.s.: p ≥ {ALPHA}"
               if tests else "no test possible with fewer than 2 seeds")
        )  # fmt: skip
    if group["ci_images"].notna().any():
        text += (
            " · 95 % CI (seeds): t-interval of the mean over seeds (seed variance only; every seed may share one test"
            " set); 95 % CI (test images): stratified bootstrap over the test images of the mean over seeds "
            f"({RESAMPLES} resamples), which adds the test set's sampling error; Δ (test images): paired bootstrap "
            "over the same test images against the baseline, on the seeds both have on the same split, "
            "Holm-corrected over this table's methods"
        )
    return text + f" · bold (best): {label}"


def tex_escape(text: str) -> str:
    table = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
             "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip
    return "".join(table.get(ch, ch) for ch in text)


def tex_text(text: str) -> str:
    """Escaped, with the non-ASCII symbols the tables use in math mode (pdfLaTeX's utf8 lacks them in text)."""
    table = {"±": r"$\pm$", "Δ": r"$\Delta$", "≥": r"$\geq$", "<": "$<$", ">": "$>$", "†": r"\dag{}"}
    return "".join(table.get(ch, ch) for ch in tex_escape(text))


def groups(summary: pd.DataFrame):
    for _, group in summary.groupby(["dataset", "backbone", "budget"], sort=False):
        yield group


def markdown(summary: pd.DataFrame) -> str:
    parts = []
    for group in groups(summary):
        lines = [f"### {caption(group, summary.attrs.get('metric', 'top1'))}", ""]
        cols = columns(summary)
        lines.append("| method | " + " | ".join(c.header for c in cols) + " |")
        lines.append("|---|" + "|".join("---:" for _ in cols) + "|")
        for _, row in group.iterrows():
            cells = [cell(row, c, "±") for c in cols]
            cells = [f"**{t}**" if row["best"] and is_primary(summary, c) else t
                     for t, c in zip(cells, cols, strict=True)]  # fmt: skip
            lines.append(f"| {row_label(row)} | " + " | ".join(cells) + " |")
        notes = footnotes(group)
        parts.append("\n".join(lines + ([""] + notes if notes else [])))
    return "\n\n".join(parts) + "\n"


def latex(summary: pd.DataFrame) -> str:
    parts = []
    for group in groups(summary):
        cols = columns(summary)
        spec = "l" + "r" * len(cols)
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            r"\caption{" + tex_text(caption(group, summary.attrs.get("metric", "top1"))) + "}",
            r"\resizebox{\linewidth}{!}{%",
            r"\begin{tabular}{" + spec + "}",
            r"\toprule",
            "method & " + " & ".join(c.tex_header for c in cols) + r" \\",
            r"\midrule",
        ]
        for _, row in group.iterrows():
            cells = [tex_text(cell(row, c, "±")) for c in cols]
            cells = [r"\textbf{" + t + "}" if row["best"] and is_primary(summary, c) else t
                     for t, c in zip(cells, cols, strict=True)]  # fmt: skip
            lines.append(tex_text(row_label(row)) + " & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}}"]
        lines += [r"\par\smallskip{\footnotesize " + tex_text(note) + "}" for note in footnotes(group)]
        lines += [r"\end{table}"]
        parts.append("\n".join(lines))
    preamble = "% generated by `bench report`; needs \\usepackage{booktabs,graphicx}\n"
    return preamble + "\n\n".join(parts) + "\n"


def csv_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as flat columns (the interval as two numbers), for spreadsheets and plotting scripts."""
    key = PRIMARY[summary.attrs.get("metric", "top1")][0]
    flat = summary.drop(columns=["ci", "ci_images"]).copy()
    for col, name in (("ci", "ci"), ("ci_images", "ci_images")):
        flat[f"{key}_{name}_low"] = [None if ci is None else ci[0] for ci in summary[col]]
        flat[f"{key}_{name}_high"] = [None if ci is None else ci[1] for ci in summary[col]]
    return flat
