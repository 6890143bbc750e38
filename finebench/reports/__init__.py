"""Tables (and later plots) written from the results store alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from finebench.reports.tables import latex, markdown, runs_frame, summarize
from finebench.results.store import ResultStore


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    markdown: str = ""
    errors: list[str] = field(default_factory=list)
    runs: int = 0


def write_report(results: Path, out: Path, fmt: str = "both") -> Report:
    if fmt not in ("md", "tex", "both"):
        raise ValueError(f"report format {fmt!r} is not one of md, tex, both")
    report = Report()
    records = list(ResultStore(results).records(report.errors))
    runs = runs_frame(records)
    report.runs = len(runs)
    if runs.empty:
        raise ValueError(f"no finished runs in {Path(results) / 'runs'}; run `bench run` first (or pass --results DIR)")
    summary = summarize(runs)
    out.mkdir(parents=True, exist_ok=True)
    report.markdown = markdown(summary)
    if fmt in ("md", "both"):
        (out / "results.md").write_text("# finebench results\n\n" + report.markdown)
        report.written.append(out / "results.md")
    if fmt in ("tex", "both"):
        (out / "results.tex").write_text(latex(summary))
        report.written.append(out / "results.tex")
    return report
