"""Tables and figures written from the results store alone."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from finebench.reports.figures import attention_figure
from finebench.reports.tables import (
    BASELINE,
    TEACHER,
    budget_key,
    csv_frame,
    latex,
    markdown,
    method_label,
    runs_frame,
    summarize,
)
from finebench.results.record import RunRecord
from finebench.results.store import ResultStore


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    markdown: str = ""
    errors: list[str] = field(default_factory=list)
    runs: int = 0


FORMATS = ("md", "tex", "csv", "both", "all")  # both: md + tex; all: md + tex + csv


def write_report(
    results: Path,
    out: Path,
    fmt: str = "all",
    methods: list[str] | None = None,
    datasets: list[str] | None = None,
    backbones: list[str] | None = None,
    baseline: str = BASELINE,
) -> Report:
    """Tables (Markdown, LaTeX, CSV) and figures from the records in `results`; optional filters keep only the
    named methods (by name or by row label), datasets and backbones."""
    if fmt not in FORMATS:
        raise ValueError(f"report format {fmt!r} is not one of {', '.join(FORMATS)}")
    report = Report()
    records = list(ResultStore(results).records(report.errors))
    runs = runs_frame(records)
    if runs.empty:
        raise ValueError(f"no finished runs in {Path(results) / 'runs'}; run `bench run` first (or pass --results DIR)")
    for column, wanted in (("dataset", datasets), ("backbone", backbones)):
        if wanted:
            unknown = sorted(set(wanted) - set(runs[column]))
            if unknown:
                raise ValueError(f"--{column}s {unknown}: not in the records; they hold {sorted(set(runs[column]))}")
            runs = runs[runs[column].isin(wanted)]
    if methods:
        keep = runs["method_name"].isin(methods) | runs["method"].isin(methods) | (runs["method_name"] == TEACHER)
        if not keep.any():
            raise ValueError(f"--methods {methods}: no such runs; the records hold {sorted(set(runs['method']))}")
        runs = runs[keep]
    report.runs = len(runs)
    summary = summarize(runs, baseline)
    out.mkdir(parents=True, exist_ok=True)
    report.markdown = markdown(summary)
    shown = {(r.spec["dataset"], r.spec["backbone"]) for r in records}
    kept = [r for r in records if (r.spec["dataset"], r.spec["backbone"]) in shown
            and (not methods or r.spec["method"] in methods)]  # fmt: skip
    figures = attention_figures(kept, results, out, report)
    if fmt in ("md", "both", "all"):
        (out / "results.md").write_text("# finebench results\n\n" + report.markdown + figures)
        report.written.append(out / "results.md")
    if fmt in ("tex", "both", "all"):
        (out / "results.tex").write_text(latex(summary))
        report.written.append(out / "results.tex")
    if fmt in ("csv", "all"):
        csv_frame(summary).to_csv(out / "results.csv", index=False)
        runs.to_csv(out / "runs.csv", index=False)
        report.written += [out / "results.csv", out / "runs.csv"]
    return report


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def attention_figures(records: list[RunRecord], results: Path, out: Path, report: Report) -> str:
    """A figure of the saved attention maps for each (dataset, backbone, budget, method), from its lowest seed;
    returns the Markdown section that shows them."""
    chosen: dict[tuple, RunRecord] = {}
    for r in sorted((r for r in records if "attention_maps" in r.artifacts), key=lambda r: r.spec["seed"]):
        label = method_label(r.spec["method"], r.spec.get("method_config", {}))
        chosen.setdefault((r.spec["dataset"], r.spec["backbone"], budget_key(r.spec), label), r)
    lines = []
    for (dataset, backbone, budget, label), r in chosen.items():
        src = Path(results) / r.artifacts["attention_maps"]
        if not src.exists():
            report.errors.append(f"{src}: attention maps of run {r.run_id} are missing")
            continue
        name = f"figures/attention-{slug(label)}-{slug(dataset)}-{slug(backbone)}-{budget}.png"
        title = f"{label} · {dataset} · {backbone} · seed {r.spec['seed']} · test images"
        report.written.append(attention_figure(src, out / name, title))
        lines.append(f"### {title}\n\n![attention maps of {label}]({name})\n")
    return "\n## Attention maps\n\n" + "\n".join(lines) if lines else ""
