"""Comparison tables from run records alone: one row per method, one table per (dataset, backbone, budget), in
Markdown, LaTeX and CSV. They format what `compare.summarize` computed."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pandas as pd

from finebench.reports.compare import ALPHA, PRIMARY
from finebench.reports.frame import TEACHER
from finebench.reports.stats import RESAMPLES

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


def compact_columns(summary: pd.DataFrame, group: pd.DataFrame) -> tuple[Column, ...]:
    """The default table, narrow enough for one column of a two-column paper: n, the chosen metric (mean ± std over
    seeds) with its 95 % interval and its Δ and p against the baseline (over test images where the records hold
    per-image results, else over seeds), epochs to best, time and training FLOPs, both with charged phases."""
    key, label = PRIMARY[summary.attrs.get("metric", "top1")]
    images = group["ci_images"].notna().any()
    target = summary.attrs.get("target")
    extra = (
        ()
        if target is None
        else (Column(f"time to {target:g} % val (s)", f"to {target:g}\\,\\%", "seconds_to_target", "target"),)
    )
    return (
        Column("n", "$n$", "n", "n"),
        Column(f"{label} (%)", tex_escape(label), key, "pct"),
        Column("95 % CI", r"95\,\% CI", key, "ci_images" if images else "ci"),
        Column("Δ (p)", r"$\Delta$ ($p$)", key, "sig_images" if images else "sig"),
        Column("epochs", "ep.", "best_epoch", "num"),
        Column("time (s)", "s", "total_seconds", "sec"),
        *extra,
        Column("train FLOPs", "FLOPs", "flops_total", "flops"),
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


def untested(row: pd.Series) -> str | None:
    """The cell of a row that is not tested against the baseline, and why; None for a row that is."""
    if row["method"] == row["baseline"]:
        return "baseline"
    if not row.get("trained", True):
        return "not tested (no model of its own)"
    return None


def significance_cell(row: pd.Series) -> str:
    if (text := untested(row)) is not None:
        return text
    if row["method"].startswith(f"{TEACHER}:") or row["pairs"] is None:
        return "—"
    if row["p_holm"] is None:
        why = f"n={int(row['pairs'])}" if row["pairs"] < 2 else "the same difference on every seed"
        return f"no test ({why})"
    return delta_text(row["delta"], row["p_holm"])


def image_significance_cell(row: pd.Series) -> str:
    if (text := untested(row)) is not None:
        return text
    return "—" if row.get("images_p_holm") is None else delta_text(row["images_delta"], row["images_p_holm"])


def delta_text(delta: float, p_holm: float) -> str:
    mark = "" if p_holm < ALPHA else " n.s."
    p = "p<0.001" if p_holm < 0.001 else f"p={p_holm:.3f}"
    return f"{delta:+.1f} ({p}){mark}"


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
    threads = sorted({t for v in group.get("cpu_threads", []) for t in str(v).split(",") if t}, key=int)
    if len(threads) > 1:
        text += (f" · note: CPU runs with different thread counts ({', '.join(threads)}): the same spec gives "
                 "slightly different numbers at another count")  # fmt: skip
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
            f"({RESAMPLES} resamples), the test set's sampling error with the trained models held fixed (neither "
            "interval covers both sources); Δ (test images): paired bootstrap over the same test images against "
            "the baseline, on the seeds both have on the same split, Holm-corrected over this table's methods"
        )
    return text + f" · bold (best): {label}"


def short_caption(group: pd.DataFrame, metric: str = "top1") -> str:
    first = group.iloc[0]
    label = PRIMARY[metric][1]
    seeds = sorted({s for v in group["seeds"] for s in v.split(",")}, key=int)
    images = group["ci_images"].notna().any()
    over = "test images" if images else "seeds"
    delta = f"95 % CI over {over} (no baseline row: no Δ)"
    if (group["method"] == first["baseline"]).any():
        delta = f"95 % CI and Δ (Holm-corrected p) vs {first['baseline']} over {over}"
    return (
        f"{first['dataset']} · {first['backbone']} · {int(first['epochs'])} epochs at {int(first['resolution'])} px "
        f"· {first['arithmetic']} · {len(seeds)} seed(s). {label} (%) at the best-val epoch, mean over seeds; "
        f"{delta}; mean epochs to best, time (s) and training FLOPs with charged phases."
    )


UNTESTED_SHORT = "n/a"


def compact_cell(row: pd.Series, col: Column) -> str:
    """A compact table's cell: means (the spread over seeds is in the wide table and the CSV; the interval beside the
    accuracy is the one to read), the interval as low–high, Δ with
    its Holm p (significance: p < 0.05, said in the note), and `n/a` for an untested row."""
    if col.kind in ("num", "sec", "pct"):
        mean = row[f"{col.metric}_mean"]
        return f"{mean:.0f}" if col.kind == "sec" else f"{mean:.1f}"
    if col.kind in ("ci", "ci_images"):
        ci = row["ci"] if col.kind == "ci" else row.get("ci_images")
        return "—" if ci is None else f"{ci[0]:.1f}–{ci[1]:.1f}"
    if col.kind == "flops":
        return human_flops(row[f"{col.metric}_mean"]).replace("FLOP", "").strip()  # the header says FLOPs
    if col.kind in ("sig", "sig_images"):
        text = cell(row, col, "±")
        if text.startswith("not tested"):
            return UNTESTED_SHORT
        delta, p = (row["delta"], row["p_holm"]) if col.kind == "sig" else (row["images_delta"], row["images_p_holm"])
        if text.startswith(("baseline", "—", "no test")) or p is None:
            return text
        return f"{delta:+.1f} ({'<.001' if p < 0.001 else f'{p:.3f}'.lstrip('0')})"
    return cell(row, col, "±")


def compact_note(group: pd.DataFrame, metric: str = "top1") -> str:
    """What the short caption leaves out: the full caption, and each row's note on its configuration."""
    notes = [f"{row['method']}: {row['note']}" for _, row in group.iterrows() if isinstance(row.get("note"), str)]
    notes += [f"{UNTESTED_SHORT}: {row['method']} has no model of its own (it is its source's), so it is not tested"
              for _, row in group.iterrows() if not row.get("trained", True)]  # fmt: skip
    return "Note: " + caption(group, metric) + ("" if not notes else " · " + " · ".join(notes))


def table_label(group: pd.DataFrame) -> str:
    first = group.iloc[0]
    raw = f"finebench-{first['dataset']}-{first['backbone']}-{first['budget']}"
    return "tab:" + "".join(ch if ch.isalnum() or ch in "-" else "-" for ch in raw)


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


@dataclass(frozen=True)
class Table:
    """One table's content, before rendering: columns, title, rows (label, cells, bold flags) and notes."""

    cols: tuple[Column, ...]
    title: str
    rows: list[tuple[str, list[str], list[bool]]]
    notes: list[str]


def table(summary: pd.DataFrame, group: pd.DataFrame, wide: bool) -> Table:
    """Compact (a short caption, the details in a note below) or `wide` (every column, the full caption)."""
    metric = summary.attrs.get("metric", "top1")
    cols = columns(summary) if wide else compact_columns(summary, group)
    rows = []
    for _, row in group.iterrows():
        cells = [cell(row, c, "±") if wide else compact_cell(row, c) for c in cols]
        bold = [bool(row["best"]) and is_primary(summary, c) for c in cols]
        name = row_label(row) if wide else row["method"] + (f" {WEAK}" if row.get("weak_teacher") else "")
        rows.append((name, cells, bold))
    title = caption(group, metric) if wide else short_caption(group, metric)
    return Table(cols, title, rows, footnotes(group) + ([] if wide else [compact_note(group, metric)]))


def markdown(summary: pd.DataFrame, wide: bool = False) -> str:
    """One table per (dataset, backbone, budget), compact by default, every column with `wide`."""
    parts = []
    for group in groups(summary):
        t = table(summary, group, wide)
        lines = [f"### {t.title}", "", "| method | " + " | ".join(c.header for c in t.cols) + " |",
                 "|---|" + "|".join("---:" for _ in t.cols) + "|"]  # fmt: skip
        for name, cells, bold in t.rows:
            cells = [f"**{x}**" if b else x for x, b in zip(cells, bold, strict=True)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines + ([""] + t.notes if t.notes else [])))
    return "\n\n".join(parts) + "\n"


def latex(summary: pd.DataFrame, wide: bool = False) -> str:
    """booktabs tables, each with a \\label. Compact (default): a one-column float in scriptsize with a short
    caption and the details in a note below it; `wide`: every column in a page-wide float."""
    parts = []
    for group in groups(summary):
        t = table(summary, group, wide)
        env = "table*" if wide else "table"
        lines = [rf"\begin{{{env}}}[t]", r"\centering", r"\caption{" + tex_text(t.title) + "}",
                 r"\label{" + table_label(group) + "}"]  # fmt: skip
        lines += [r"\resizebox{\textwidth}{!}{%"] if wide else [r"\scriptsize", r"\setlength{\tabcolsep}{1.2pt}"]
        first = "l" if wide else r">{\raggedright\arraybackslash}p{0.23\columnwidth}"  # long labels wrap
        lines += [
            r"\begin{tabular}{" + first + "r" * len(t.cols) + "}",
            r"\toprule",
            "method & " + " & ".join(c.tex_header for c in t.cols) + r" \\",
            r"\midrule",
        ]
        for name, cells, bold in t.rows:
            cells = [r"\textbf{" + tex_text(x) + "}" if b else tex_text(x) for x, b in zip(cells, bold, strict=True)]
            lines.append(tex_text(name) + " & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}" + ("}" if wide else "")]
        lines += [r"\par\smallskip{\scriptsize " + tex_text(note) + "}" for note in t.notes]
        lines += [rf"\end{{{env}}}"]
        parts.append("\n".join(lines))
    preamble = "% generated by `bench report`; needs \\usepackage{booktabs,graphicx,array}\n"
    return preamble + "\n\n".join(parts) + "\n"


def csv_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as flat columns (the interval as two numbers), for spreadsheets and plotting scripts."""
    key = PRIMARY[summary.attrs.get("metric", "top1")][0]
    flat = summary.drop(columns=["ci", "ci_images"]).copy()
    for col, name in (("ci", "ci"), ("ci_images", "ci_images")):
        flat[f"{key}_{name}_low"] = [None if ci is None else ci[0] for ci in summary[col]]
        flat[f"{key}_{name}_high"] = [None if ci is None else ci[1] for ci in summary[col]]
    return flat
