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

import pandas as pd

from finebench.results.record import RunRecord


def budget_key(spec: dict) -> str:
    """Runs are comparable only under the same training config (epochs, resolution, optimiser, split...)."""
    return hashlib.sha256(json.dumps(spec["train"], sort_keys=True).encode()).hexdigest()[:8]


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


def run_row(r: RunRecord) -> dict:
    train = r.spec["train"]
    own = r.cost["total_seconds"]
    charged = r.cost.get("charged_seconds", 0.0)
    return {
        "dataset": r.spec["dataset"],
        "backbone": r.spec["backbone"],
        "budget": budget_key(r.spec),
        "epochs": train["epochs"],
        "resolution": train["resolution"],
        "method": method_label(r.spec["method"], r.spec.get("method_config", {})),
        "method_name": r.spec["method"],
        "seed": r.spec["seed"],
        "commit": (r.env.get("commit") or "unknown")[:10],
        "test_top1": r.best["test"]["top1"],
        "test_top3": r.best["test"]["top3"],
        "val_top1": r.best["val"]["top1"],
        "last_test_top1": r.last["test"]["top1"],
        "best_epoch": r.best["epoch"],
        # charged phases (a teacher's or source model's training, a calibration pass) precede training: they
        # count towards the time to best and the total; `own_seconds` is the method's own training and evaluation
        "seconds_to_best": r.best["seconds_to_best"] + charged,
        "own_seconds": own,
        "total_seconds": own + charged,
        "trainable": r.params["trainable"],
        "total": r.params["total"],
        "capped": bool(r.cost.get("capped")),
        "split_hash": r.dataset["split_hash"],
    }


TEACHER = "teacher"  # method_name of the rows that show a distillation method's teacher


def runs_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per finished run; a teacher used by a run also appears in that run's table (once per teacher run),
    labelled `teacher: <method> (<backbone>)`, so a student, its distilled variants and their teacher sit together."""
    records = [r for r in records if r.status == "ok"]
    by_id = {r.run_id: r for r in records}
    rows, teachers = [], set()
    for r in records:
        row = run_row(r)
        rows.append(row)
        teacher = by_id.get(r.sources.get("teacher", ""))
        if teacher is None or (row["dataset"], row["backbone"], row["budget"], teacher.run_id) in teachers:
            continue
        teachers.add((row["dataset"], row["backbone"], row["budget"], teacher.run_id))
        t = run_row(teacher)
        weights = teacher.spec["train"].get("weights", "default")
        differs = weights != r.spec["train"].get("weights", "default")  # the student's weights are the default
        label = f"teacher: {t['method']} ({t['backbone']}" + (f", weights={weights})" if differs else ")")
        group = {k: row[k] for k in ("dataset", "backbone", "budget")}
        rows.append(t | group | {"method": label, "method_name": TEACHER})
    return pd.DataFrame(rows)


METRICS = (
    "test_top1",
    "test_top3",
    "val_top1",
    "last_test_top1",
    "best_epoch",
    "seconds_to_best",
    "own_seconds",
    "total_seconds",
)


def method_rank(name: str) -> int:
    """Registry order (the order `bench list methods` shows); unregistered names after, teachers last."""
    from finebench.methods import METHODS

    names = METHODS.names()
    return names.index(name) if name in names else len(names) + (name == TEACHER)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for one seed) and n per (dataset, backbone, budget, method)."""
    keys = ["dataset", "backbone", "budget", "method"]
    runs = runs.assign(_order=runs["method_name"].map(method_rank))
    runs = runs.sort_values(["_order", "method", "seed"], kind="stable")
    g = runs.groupby(keys, sort=False)
    out = g.size().rename("n").to_frame()
    for m in METRICS:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1)
    for m in ("trainable", "total", "epochs", "resolution"):
        out[m] = g[m].first()
    out["capped"] = g["capped"].sum()
    out["seeds"] = g["seed"].apply(lambda s: ",".join(str(v) for v in sorted(s)))
    out["commits"] = g["commit"].apply(lambda s: ",".join(sorted(set(s))))
    dup = g["seed"].apply(lambda s: s.duplicated().any())
    if dup.any():
        key = list(dup[dup].index)[0]
        raise ValueError(f"the same seed appears twice for {key}: two records of one spec (hand-merged stores?)")
    return out.reset_index()


@dataclass(frozen=True)
class Column:
    header: str
    tex_header: str
    metric: str
    kind: str  # "pct" (mean ± std, 1 decimal), "num" (mean ± std, 1 decimal), "sec", "params", "n"


COLUMNS = (
    Column("n", "$n$", "n", "n"),
    Column("test top-1 (%)", r"test top-1 (\%)", "test_top1", "pct"),
    Column("test top-3 (%)", r"test top-3 (\%)", "test_top3", "pct"),
    Column("val top-1 (%)", r"val top-1 (\%)", "val_top1", "pct"),
    Column("last-epoch test top-1 (%)", r"last-epoch test top-1 (\%)", "last_test_top1", "pct"),
    Column("epochs to best", "epochs to best", "best_epoch", "num"),
    Column("time to best (s)", "time to best (s)", "seconds_to_best", "sec"),
    Column("own time (s)", "own time (s)", "own_seconds", "sec"),
    Column("time incl. teacher/source (s)", "time incl. teacher/source (s)", "total_seconds", "sec"),
    Column("trainable / total params", "trainable / total params", "trainable", "params"),
)


def human_count(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suffix}"
    return f"{int(n)}"


def cell(row: pd.Series, col: Column, pm: str) -> str:
    if col.kind == "n":
        return str(int(row["n"]))
    if col.kind == "params":
        return f"{human_count(row['trainable'])} / {human_count(row['total'])}"
    mean, std = row[f"{col.metric}_mean"], row[f"{col.metric}_std"]
    digits = 1
    text = f"{mean:.{digits}f}"
    if not (isinstance(std, float) and math.isnan(std)):
        text += f" {pm} {std:.{digits}f}"
    return text


def caption(group: pd.DataFrame) -> str:
    first = group.iloc[0]
    seeds = sorted({s for v in group["seeds"] for s in v.split(",")}, key=int)
    capped = int(group["capped"].sum())
    text = (
        f"{first['dataset']} · {first['backbone']} · {int(first['epochs'])} epochs at {int(first['resolution'])} px "
        f"(budget {first['budget']}) · seeds {','.join(seeds)} · mean ± std over seeds, test at the best-val epoch · "
        "time to best and time incl. teacher/source include charged phases (a teacher's or source model's training, "
        "calibration); own time excludes them"
    )
    if capped:
        text += f" · {capped} run(s) stopped by the time budget"
    commits = sorted({c for v in group["commits"] for c in v.split(",")})
    if len(commits) > 1:
        text += f" · WARNING: runs from different code commits ({', '.join(commits)})"
    return text


def tex_escape(text: str) -> str:
    table = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
             "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip
    return "".join(table.get(ch, ch) for ch in text)


def groups(summary: pd.DataFrame):
    for _, group in summary.groupby(["dataset", "backbone", "budget"], sort=False):
        yield group


def markdown(summary: pd.DataFrame) -> str:
    parts = []
    for group in groups(summary):
        lines = [f"### {caption(group)}", ""]
        lines.append("| method | " + " | ".join(c.header for c in COLUMNS) + " |")
        lines.append("|---|" + "|".join("---:" for _ in COLUMNS) + "|")
        for _, row in group.iterrows():
            lines.append(f"| {row['method']} | " + " | ".join(cell(row, c, "±") for c in COLUMNS) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def latex(summary: pd.DataFrame) -> str:
    parts = []
    for group in groups(summary):
        spec = "l" + "r" * len(COLUMNS)
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            r"\caption{" + tex_escape(caption(group)).replace("±", r"$\pm$") + "}",
            r"\resizebox{\linewidth}{!}{%",
            r"\begin{tabular}{" + spec + "}",
            r"\toprule",
            "method & " + " & ".join(c.tex_header for c in COLUMNS) + r" \\",
            r"\midrule",
        ]
        for _, row in group.iterrows():
            cells = [tex_escape(cell(row, c, "PLUSMINUS")).replace("PLUSMINUS", r"$\pm$") for c in COLUMNS]
            lines.append(tex_escape(row["method"]) + " & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
        parts.append("\n".join(lines))
    preamble = "% generated by `bench report`; needs \\usepackage{booktabs,graphicx}\n"
    return preamble + "\n\n".join(parts) + "\n"
