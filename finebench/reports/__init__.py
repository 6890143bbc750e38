"""Tables and figures written from the results store alone."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from finebench.reports.compare import BASELINE, PRIMARY, summarize
from finebench.reports.figures import (
    attention_figure,
    attention_histograms,
    cost_figure,
    curves_figure,
    filter_ranking,
    method_styles,
    params_figure,
    pruning_curves,
    ranking_pruning_curves,
)
from finebench.reports.frame import TEACHER, budget_key, run_label, runs_frame
from finebench.reports.method_tables import (
    attention_pruning_table,
    distillation_table,
    filter_attention_table,
    near_twins_table,
    pruning_table,
    theta_table,
)
from finebench.reports.tables import csv_frame, latex, markdown
from finebench.reports.tuning import sensitivity_figures, tuning_table
from finebench.results.record import RunRecord
from finebench.results.store import ResultStore


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    markdown: str = ""
    errors: list[str] = field(default_factory=list)
    runs: int = 0
    pdf: bool = True  # figures as PDF too, beside the PNG


FORMATS = ("md", "tex", "csv", "both", "all")  # both: md + tex; all: md + tex + csv


def write_report(
    results: Path,
    out: Path,
    fmt: str = "all",
    methods: list[str] | None = None,
    datasets: list[str] | None = None,
    backbones: list[str] | None = None,
    baseline: str = BASELINE,
    target: float | None = None,
    metric: str = "top1",
    pdf: bool = True,
    wide: bool = False,
) -> Report:
    """Tables (Markdown, LaTeX, CSV) and figures from the records in `results`; optional filters keep only the
    named methods (by name or by row label), datasets and backbones; `target` adds the time to that val top-1 (%);
    `metric` (top1, top3, mean_class) is the test metric the tables lead with, test on and bold; `pdf=False`
    keeps the figures as PNG only; `wide` writes every column in the main tables (the CSV always has them)."""
    if fmt not in FORMATS:
        raise ValueError(f"report format {fmt!r} is not one of {', '.join(FORMATS)}")
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the report (it is created when missing)")
    report = Report(pdf=pdf)
    records = list(ResultStore(results).records(report.errors))
    runs = runs_frame(records, target)
    if runs.empty:
        damaged = f" ({len(report.errors)} damaged: {'; '.join(report.errors)})" if report.errors else ""
        raise ValueError(
            f"no finished runs in {Path(results) / 'runs'}{damaged}; run `bench run` first (or pass --results DIR)"
        )
    for column, wanted in (("dataset", datasets), ("backbone", backbones)):
        if wanted:
            unknown = sorted(set(wanted) - set(runs[column]))
            if unknown:
                raise ValueError(f"--{column}s {unknown}: not in the records; they hold {sorted(set(runs[column]))}")
            runs = runs[runs[column].isin(wanted)]
    if methods:
        names = set(runs["method_name"]) | set(runs["method"])
        missing = [m for m in methods if m not in names]
        if missing:
            import difflib

            close = difflib.get_close_matches(missing[0], sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"--methods {missing[0]!r}: no such runs in the records{hint} They hold: "
                             f"{', '.join(sorted(set(runs['method_name'])))}")  # fmt: skip
        keep = runs["method_name"].isin(methods) | runs["method"].isin(methods) | (runs["method_name"] == TEACHER)
        runs = runs[keep]
    report.runs = len(runs)
    known = set(runs["method"]) | set(runs["method_name"])  # a row label, or a method with one row per table
    if baseline not in known and baseline != BASELINE:
        raise ValueError(f"--baseline {baseline!r} is not a row of these runs; rows: {sorted(set(runs['method']))}")
    summary = summarize(runs, baseline, metric)
    out.mkdir(parents=True, exist_ok=True)
    report.markdown = markdown(summary, wide)
    shown = set(zip(runs["dataset"], runs["backbone"], strict=True))
    labels = set(runs["method"])
    ids = set(runs["run_id"])  # a row's runs, also where the frame relabelled them (two tunings of one name)
    kept = [r for r in records if (r.spec["dataset"], r.spec["backbone"]) in shown
            and (run_label(r.spec) in labels or r.run_id in ids)]  # fmt: skip
    figures = attention_figures(kept, results, out, report) + extras_figures(kept, out, report)
    figures = comparison_figures(runs, summary, kept, out, report) + figures
    specific = [distillation_table(summary), filter_attention_table(summary, kept), near_twins_table(summary),
                pruning_table(kept), theta_table(kept), attention_pruning_table(kept)]  # fmt: skip
    specific.append(tuning_table(runs, kept, metric))
    report.markdown += "".join("\n" + t for t in specific if t)
    paths, tuning = sensitivity_figures(kept, out, pdf, dict(zip(runs["run_id"], runs["method"], strict=True)))
    report.written += paths
    figures += tuning
    failed = failed_section(ResultStore(results).failures())
    report.markdown += failed
    if fmt in ("md", "both", "all"):
        (out / "results.md").write_text("# finebench results\n\n" + report.markdown + figures)
        report.written.append(out / "results.md")
    if fmt in ("tex", "both", "all"):
        (out / "results.tex").write_text(latex(summary, wide))
        report.written.append(out / "results.tex")
    if fmt in ("csv", "all"):
        csv_frame(summary).to_csv(out / "results.csv", index=False)
        runs.drop(columns=["images"]).to_csv(out / "runs.csv", index=False)
        report.written += [out / "results.csv", out / "runs.csv"]
    (out / "index.md").write_text(index(report.written, out))
    report.written.append(out / "index.md")
    return report


EXPLAIN = {
    "results.md": "the comparison tables (Markdown), with every figure below them",
    "results.tex": "the same tables in LaTeX (booktabs; `\\usepackage{booktabs,graphicx}`)",
    "results.csv": "the tables' numbers as flat columns (one row per method and table)",
    "runs.csv": "one row per run (seed) behind the tables",
    "curves": "val top-1 against epoch (mean over seeds, band: std) and against wall-clock seconds (one line per seed)",
    "cost": "test top-1 against seconds including charged phases; the Pareto front circled",
    "params": "test top-1 against trained parameters (log scale), 95 % intervals over seeds",
    "attention": "attention maps over the same 8 test images (student and teacher for AT; M for ABN)",
    "fa": "filter-attention weights per layer group (1 = unchanged; the paper's Figure 2)",
    "farank": "the highest- and lowest-ranked filters network-wide, and the amplified share per layer group",
    "pruning": "semantic pruning vs random and weight-magnitude choices: single-class accuracy and share removed "
    "against theta",
    "sensitivity": "val accuracy of every bench tune trial against its learning rate and its key hyperparameter",
    "faprune": "filter attention's ranking vs random and weight-magnitude choices: test top-1 against filters removed",
}


def index(written: list[Path], out: Path) -> str:
    """reports/index.md: every table and figure with one line of explanation."""
    lines = ["# finebench report", "", "Generated by `bench report` from the run records.", ""]
    for path in sorted({p for p in written if p.suffix != ".pdf"}):
        rel = path.relative_to(out)
        kind = path.name if path.name in EXPLAIN else path.name.split("-", 1)[0]
        twin = path.with_name(path.name.removesuffix(".png") + ".pdf")
        pdf = f" ([PDF]({twin.relative_to(out)}))" if path.suffix == ".png" and twin in written else ""
        lines.append(f"- [{rel}]({rel}){pdf}: {EXPLAIN.get(kind, '')}")
    return "\n".join(lines) + "\n"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def attention_figures(records: list[RunRecord], results: Path, out: Path, report: Report) -> str:
    """A figure of the saved attention maps for each (dataset, backbone, budget, method), from its lowest seed;
    returns the Markdown section that shows them."""
    chosen: dict[tuple, RunRecord] = {}
    for r in sorted((r for r in records if "attention_maps" in r.artifacts), key=lambda r: r.spec["seed"]):
        label = run_label(r.spec)
        chosen.setdefault((r.spec["dataset"], r.spec["backbone"], budget_key(r.spec), label), r)
    lines = []
    for (dataset, backbone, budget, label), r in chosen.items():
        src = Path(results) / r.artifacts["attention_maps"]
        if not src.exists():
            report.errors.append(f"{src}: attention maps of run {r.run_id} are missing")
            continue
        name = f"figures/attention-{slug(label)}-{slug(dataset)}-{slug(backbone)}-{budget}.png"
        title = f"{label} · {dataset} · {backbone} · seed {r.spec['seed']} · test images"
        names = r.dataset.get("class_names")  # recorded since the class names were; older records: indices
        report.written.append(attention_figure(src, out / name, title, names))
        lines.append(f"### {title}\n\n![attention maps of {label}]({name})\n")
    return "\n## Attention maps\n\n" + "\n".join(lines) if lines else ""


def comparison_figures(runs, summary, records: list[RunRecord], out: Path, report: Report) -> str:
    """Per table: val accuracy over epochs and wall-clock, and accuracy against cost; the Markdown that shows them."""
    import pandas as pd

    lines = []
    by_id = {r.run_id: r for r in records}
    for (dataset, backbone, budget), group in summary.groupby(["dataset", "backbone", "budget"], sort=False):
        title = f"{dataset} · {backbone} · budget {budget}"
        base = f"figures/{{}}-{slug(dataset)}-{slug(backbone)}-{budget}"
        rows = []
        styles = method_styles(group["method"].tolist())  # one colour and marker per row of the table, everywhere
        for r in by_id.values():
            if (r.spec["dataset"], r.spec["backbone"], budget_key(r.spec)) != (dataset, backbone, budget):
                continue
            label = run_label(r.spec)
            rows += [{"method": label, "seed": r.spec["seed"], "epoch": e["epoch"], "elapsed": e["elapsed"],
                      "val_top1": e["val"]["top1"]} for e in r.epochs if "elapsed" in e and "val" in e]  # fmt: skip
        if rows:
            order = [m for m in group["method"] if any(row["method"] == m for row in rows)]
            paths = curves_figure(pd.DataFrame(rows), out / base.format("curves"), title, order, pdf=report.pdf,
                                  styles=styles)  # fmt: skip
            report.written += paths
            lines.append(f"### Val top-1 over training: {title}\n\n![curves]({base.format('curves')}.png)\n\n"
                         "One line per method: val top-1 after each epoch, mean over seeds; band: ± one standard "
                         "deviation over seeds. Right: the same against the run's own training seconds.\n")  # fmt: skip
        contenders = group[~group["method"].str.startswith(f"{TEACHER}:")].reset_index(drop=True)
        if len(contenders) > 1:
            metric = summary.attrs.get("metric", "top1")
            paths = cost_figure(contenders, out / base.format("cost"), title, pdf=report.pdf, metric=metric,
                                styles=styles)  # fmt: skip
            report.written += paths
            label = PRIMARY[metric][1]
            lines.append(f"### Accuracy against cost: {title}\n\n![cost]({base.format('cost')}.png)\n\n"
                         f"{label[0].upper()}{label[1:]} (mean over seeds; error bars: ± one standard deviation over "
                         "seeds) against the seconds each method took, its charged phases (a teacher's or source "
                         "model's training) included; dashed: the Pareto front.\n")  # fmt: skip
            paths = params_figure(contenders, out / base.format("params"), title, pdf=report.pdf, metric=metric,
                                  styles=styles)  # fmt: skip
            report.written += paths
            lines.append(
                f"### Accuracy against trained parameters: {title}\n\n![params]({base.format('params')}.png)"
                f"\n\n{label[0].upper()}{label[1:]} (mean over seeds; error bars: 95 % t-interval over seeds) "
                "against the parameters each method trains (log scale), the new classifier included.\n"
            )
    return "\n## Figures\n\n" + "\n".join(lines) if lines else ""


def extras_figures(records: list[RunRecord], out: Path, report: Report) -> str:
    """Filter-attention histograms and semantic-pruning curves, one per (dataset, backbone, budget, method row),
    from the lowest seed."""
    chosen: dict[tuple, RunRecord] = {}
    for r in sorted(records, key=lambda r: r.spec["seed"]):
        if r.spec["method"] in ("filter-attention", "semantic-pruning"):
            label = run_label(r.spec)
            chosen.setdefault((r.spec["dataset"], r.spec["backbone"], budget_key(r.spec), label), r)
    lines = []
    for (dataset, backbone, budget, label), r in chosen.items():
        title = f"{label} · {dataset} · {backbone} · seed {r.spec['seed']}"
        stem = f"{slug(label)}-{slug(dataset)}-{slug(backbone)}-{budget}"
        attention = r.extras.get("attention", {})
        trained = attention.get("unchanged", 0.0) < 1.0  # all weights still 1: nothing to draw
        if attention.get("layers") and trained:
            name = f"figures/fa-{stem}"
            report.written += attention_histograms(attention, out / name, title, pdf=report.pdf)
            lines.append(f"### {title}: attention weights\n\n![attention weights]({name}.png)\n")
        if attention.get("global_highest") and trained:
            name = f"figures/farank-{stem}"
            report.written += filter_ranking(attention, out / name, title, pdf=report.pdf)
            lines.append(f"### {title}: top- and bottom-ranked filters\n\n![filter ranking]({name}.png)\n")
        if r.extras.get("attention_pruning"):
            name = f"figures/faprune-{stem}"
            paths = ranking_pruning_curves(r.extras["attention_pruning"], r.best["test"]["top1"], out / name, title,
                                           pdf=report.pdf)  # fmt: skip
            if paths:
                report.written += paths
                lines.append(f"### {title}: pruning by attention rank vs controls\n\n![ranking pruning]({name}.png)\n")
        if r.extras.get("pruning"):
            name = f"figures/pruning-{stem}"
            paths = pruning_curves(r.extras["pruning"], out / name, title, pdf=report.pdf)
            if paths:
                report.written += paths
                lines.append(f"### {title}: pruning\n\n![pruning]({name}.png)\n")
    return "\n## Method figures\n\n" + "\n".join(lines) if lines else ""


def failed_section(failures: list[dict]) -> str:
    """Failed runs, apart from the tables (never in a mean)."""
    if not failures:
        return ""
    lines = ["", "## Failed runs (not in any table)", "", "| method | dataset | backbone | seed | status | message |",
             "|---|---|---|---:|---|---|"]  # fmt: skip
    for f in failures:
        s = f.get("spec", {})
        message = (f.get("message", "") + f.get("hint", "")).replace("|", "/")
        epoch = f" at epoch {f['epoch']}" if f.get("epoch") else ""
        lines.append(f"| {s.get('method')} | {s.get('dataset')} | {s.get('backbone')} | {s.get('seed')} | "
                     f"{f.get('status')}{epoch} | {message} |")  # fmt: skip
    return "\n".join(lines) + "\n"
