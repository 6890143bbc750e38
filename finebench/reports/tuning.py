"""Default vs tuned: each method at its defaults and at the values `bench tune` chose on val, the values, what the
tuning cost, and how sensitive val accuracy was to each tuned setting. From the records alone: a run at tuned
values carries its study's choice, cost and trials in `spec.tuned`."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from finebench.reports.compare import method_rank
from finebench.reports.frame import budget_key, run_label, untuned_label
from finebench.reports.method_tables import fmt
from finebench.reports.stats import paired_test, t_interval
from finebench.reports.tables import human_count, human_flops
from finebench.results.record import RunRecord


def tuned_records(records: list[RunRecord], labels: dict[str, str] | None = None) -> dict[tuple, RunRecord]:
    """(dataset, backbone, budget, row label) -> the lowest seed's record of each tuned row, rows in the registry's
    order (as `bench list methods`), then by label; `labels`: run id -> the row label the runs frame gave it (which
    separates tunings that share a study name)."""
    out: dict[tuple, RunRecord] = {}
    for r in sorted(records, key=lambda r: r.spec["seed"]):
        if r.spec.get("tuned"):
            label = (labels or {}).get(r.run_id, run_label(r.spec))
            out.setdefault((r.spec["dataset"], r.spec["backbone"], budget_key(r.spec), label), r)
    return dict(sorted(out.items(), key=lambda kv: (method_rank(kv[1].spec["method"]), kv[0][3])))


def short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def mean_ci(values: list[float]) -> tuple[str, str]:
    """(mean ± sd over seeds, 95 % t-interval) as table cells."""
    ci = t_interval(values) if values else None
    return fmt(values), (f"[{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "—")


def tuning_table(runs: pd.DataFrame, records: list[RunRecord], metric: str = "top1") -> str:
    """Per (dataset, backbone, budget) with tuned rows: each tuned row beside the same method at its defaults:
    test metric (mean ± sd over seeds, 95 % t-interval), the paired difference over seeds, the chosen values, the
    trials and what all of them cost (pruned and failed included), and a final run's seconds."""
    key = f"test_{metric}"
    labels = dict(zip(runs["run_id"], runs["method"], strict=True)) if "run_id" in runs else None
    chosen = tuned_records(records, labels)
    if not chosen:
        return ""
    out = []
    tables: dict[tuple, list[tuple[str, RunRecord]]] = {}
    for (dataset, backbone, budget, label), r in chosen.items():
        tables.setdefault((dataset, backbone, budget), []).append((label, r))
    for (dataset, backbone, budget), rows in tables.items():
        table = runs[(runs["dataset"] == dataset) & (runs["backbone"] == backbone) & (runs["budget"] == budget)]
        lines = [
            f"### Default vs tuned: {dataset} · {backbone} · budget {budget}",
            "",
            f"Test {metric} (%) at each method's defaults and at the values `bench tune` chose on val (mean ± sd over "
            "seeds, 95 % t-interval); Δ: tuned − default, paired by seed (t-test; n.s.: p ≥ 0.05). Tuning cost: every "
            "trial of the method's study, pruned and failed ones included (training and val evaluation, and charged "
            "phases: a teacher's recorded cost once). Final s: one final run's seconds counted the same way (mean "
            "over seeds).",
            "",
            "| method | default | 95 % CI | tuned | 95 % CI | Δ (seeds) | chosen values | trials (done / pruned / "
            "failed) | tuning seconds | tuning samples | tuning FLOPs | final s |",
            "|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|",
        ]
        notes = []
        for label, r in rows:
            tuned = r.spec["tuned"]
            default_label = untuned_label(r.spec)  # the same run at the suite's settings
            mine = table[table["method"] == label].set_index("seed")
            base = table[table["method"] == default_label].set_index("seed")
            t_text, t_ci = mean_ci(mine[key].tolist())
            d_text, d_ci = mean_ci(base[key].tolist())
            seeds = sorted(s for s in set(mine.index) & set(base.index)
                           if mine.loc[s, "split_hash"] == base.loc[s, "split_hash"])  # fmt: skip
            test = paired_test(mine.loc[seeds, key].tolist(), base.loc[seeds, key].tolist()) if seeds else None
            if test is None:
                delta = "—"
            else:
                sig = "" if test.p < 0.05 else " n.s."
                delta = f"{test.mean_difference:+.1f} (p={test.p:.3f}){sig}"
            values = ", ".join(f"{k}={short(v)}" for k, v in tuned["values"].items())
            if tuned.get("best_is_defaults"):
                values += " (the defaults: trial 0)"
            states = tuned.get("states", {})
            counts = f"{states.get('complete', 0)} / {states.get('pruned', 0)} / {states.get('fail', 0)}"
            if states.get("interrupted"):
                counts += f" (+{states['interrupted']} interrupted, retried)"
            cost = tuned.get("cost", {})
            final = mine["total_seconds"].mean() if not mine.empty else math.nan
            lines.append(f"| {label} | {d_text} | {d_ci} | {t_text} | {t_ci} | {delta} | {values} | {counts} | "
                         f"{cost.get('seconds', 0):.0f} | {human_count(cost.get('samples', 0))} | "
                         f"{human_flops(cost.get('flops', 0))} | {final:.0f} |")  # fmt: skip
            space = ", ".join(f"{k} {v}" for k, v in tuned.get("space", {}).items())
            notes.append(f"{label}: {tuned['trials']} trials on val {tuned.get('metric', 'top1')} (seed "
                         f"{tuned.get('seed')}, sampler {tuned.get('sampler')}, pruner {tuned.get('pruner')}); best "
                         f"trial {tuned.get('best_trial')} at val {tuned.get('best_val', math.nan):.1f}; space: "
                         f"{space}")  # fmt: skip
        lines += [""] + [f"- {n}" for n in notes]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def trial_points(tuned: dict) -> pd.DataFrame:
    """One row per trial of a tuned record: its values, state and val result (a pruned trial: its last val)."""
    rows = []
    for t in tuned.get("trial_list", []):
        curve = t.get("curve") or []
        value = t.get("value")
        if value is None:
            value = curve[-1] if curve else math.nan
        rows.append({**{f"v:{k}": v for k, v in (t.get("values") or {}).items()}, "state": t["state"],
                     "val": value, "number": t["number"]})  # fmt: skip
    return pd.DataFrame(rows)


def sensitivity_figures(records: list[RunRecord], out: Path, pdf: bool = True,
                        labels: dict[str, str] | None = None) -> tuple[list[Path], str]:  # fmt: skip
    """Per (dataset, backbone, budget): one row per tuned method, val accuracy of every trial against its learning
    rate and against the method's own key hyperparameter; returns the files and the Markdown that shows them."""
    from finebench.reports import slug
    from finebench.reports.figures import _plt, save

    chosen = tuned_records(records, labels)
    groups: dict[tuple, list[tuple[str, dict]]] = {}
    for (dataset, backbone, budget, label), r in chosen.items():
        groups.setdefault((dataset, backbone, budget), []).append((label, r.spec["tuned"]))
    written, lines = [], []
    for (dataset, backbone, budget), rows in groups.items():
        plt, _ = _plt()
        fig, axes = plt.subplots(len(rows), 2, figsize=(9, 2.6 * len(rows)), squeeze=False)
        for (label, tuned), (ax_lr, ax_key) in zip(rows, axes, strict=True):
            points = trial_points(tuned)
            lr = "lr" if "v:lr" in points else ("train.lr" if "v:train.lr" in points else None)
            # the method's own key hyperparameter; a method without one: the next tuned setting (weight decay)
            other = [k.removeprefix("v:") for k in points.columns if k.startswith("v:") and k != f"v:{lr}"]
            second = tuned.get("key") if f"v:{tuned.get('key')}" in points else (other[0] if other else None)
            for ax, key in ((ax_lr, lr), (ax_key, second)):
                if key is None or f"v:{key}" not in points:
                    ax.text(0.5, 0.5, "nothing else tuned", ha="center", va="center",
                            transform=ax.transAxes, fontsize=8, color="grey")  # fmt: skip
                    ax.set(xticks=[], yticks=[])
                    ax.set_title(f"{label}", fontsize=8)
                    continue
                draw(ax, points, key, tuned)
                ax.set_title(label, fontsize=8)
                ax.set_xlabel(key)
                ax.set_ylabel(f"val {tuned.get('metric', 'top1')} (%)")
        fig.suptitle(f"sensitivity on val: {dataset} · {backbone} · budget {budget}", fontsize=9)
        fig.tight_layout()
        name = f"figures/sensitivity-{slug(dataset)}-{slug(backbone)}-{budget}"
        written += save(fig, out / name, plt, pdf)
        lines.append(f"### Sensitivity on val: {dataset} · {backbone} · budget {budget}\n\n![sensitivity]({name}.png)"
                     "\n\nEvery trial of each tuned method: val accuracy (the tuning objective: best epoch, after the "
                     "method's own choice on val) against its learning rate (left) and its key hyperparameter "
                     "(right; without one, the next tuned setting). Filled: finished trials; hollow: pruned (at their "
                     "last val); star: the chosen "
                     "trial.\n")  # fmt: skip
    return written, ("\n## Tuning\n\n" + "\n".join(lines)) if lines else ""


def draw(ax, points: pd.DataFrame, key: str, tuned: dict) -> None:
    space = str(tuned.get("space", {}).get(key, ""))
    x = points[f"v:{key}"]
    numeric = pd.api.types.is_numeric_dtype(x)
    done = points[points["state"] == "complete"]
    pruned = points[points["state"] == "pruned"]
    ax.scatter(done[f"v:{key}"], done["val"], color="C0", s=22, label="finished")
    ax.scatter(pruned[f"v:{key}"], pruned["val"], facecolors="none", edgecolors="C3", s=22, label="pruned")
    best = points[points["number"] == tuned.get("best_trial")]
    ax.scatter(best[f"v:{key}"], best["val"], marker="*", color="C1", s=120, zorder=3, label="chosen")
    if numeric and space.startswith("log"):
        ax.set_xscale("log")
        low, high = (float(v) for v in space.split(":")[1:3])
        ax.set_xlim(low / 1.3, high * 1.3)  # the whole searched range, so a reader sees where the trials fell
        ax.xaxis.set_minor_formatter(ax.xaxis.get_major_formatter().__class__())
        ax.tick_params(axis="x", which="minor", labelbottom=False)
    ax.legend(fontsize=6, loc="best")
