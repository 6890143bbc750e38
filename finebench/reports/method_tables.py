"""Tables of one method family's own findings, from the records' `extras` (Markdown)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from finebench.results.record import RunRecord


def fmt(values: list[float], digits: int = 1) -> str:
    """mean ± std over seeds (std only with two or more)."""
    if not values:
        return "—"
    text = f"{np.mean(values):.{digits}f}"
    return text + (f" ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else "")


def row_key(r: RunRecord) -> tuple[str, str, str, str]:
    """(dataset, backbone, budget, row label) of a record: method tables never pool configurations or budgets."""
    from finebench.reports.frame import budget_key, run_label

    return (
        r.spec["dataset"],
        r.spec["backbone"],
        budget_key(r.spec),
        run_label(r.spec),
    )


def removed_shares(entry: dict) -> tuple[float, float, float]:
    """(parameters, FLOPs) removed by every pruned filter and the parameters the physically smaller network loses,
    as shares. Records written before the first two were counted held the physical shares under those names."""
    physical = entry.get("physical", {})
    if "params_removed" in physical:
        return entry["params_removed"], entry["flops_removed"], physical["params_removed"]
    return float("nan"), float("nan"), entry["params_removed"]


def _balanced(scores: dict | None) -> float:
    return scores["single_class"]["balanced"] if scores else float("nan")


def pruning_table(records: list[RunRecord]) -> str:
    """Semantic pruning per (dataset, backbone, mode, setting), mean over classes then mean ± std over seeds:
    balanced single-class test accuracy of the network pruned by activation, by weight magnitude and at random
    (mean of the draws), and unpruned; the classes whose balanced accuracy is kept or improved; multi-class
    accuracy; the parameters and FLOPs the pruned filters take out, the parameters the physically smaller network
    really loses, and its latency."""
    runs = [r for r in records if r.spec["method"] == "semantic-pruning" and r.extras.get("pruning")]
    if not runs:
        return ""
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:  # each configuration and budget apart (sums of |R| vs signed ones, say)
        table = row_key(r)
        per_setting: dict[tuple, list[dict]] = defaultdict(list)
        for entry in r.extras["pruning"]:
            per_setting[(entry["mode"], str(entry["setting"]))].append(entry)
        base_latency = r.extras.get("unpruned_cost", {}).get("latency_ms")
        for (mode, setting), entries in per_setting.items():
            c = cells[(*table, mode, setting)]
            pruned = [e["single_class"]["balanced"] for e in entries]
            unpruned = [e["single_class_unpruned"]["balanced"] for e in entries]
            c["pruned"].append(float(np.mean(pruned)))
            c["unpruned"].append(float(np.mean(unpruned)))
            c["kept"].append(100.0 * float(np.mean([p >= u for p, u in zip(pruned, unpruned, strict=True)])))
            controls = [e.get("controls", {}) for e in entries]
            if all(controls):
                c["magnitude"].append(float(np.mean([_balanced(k["magnitude"]) for k in controls])))
                draws = np.array([[_balanced(d) for d in k["random"]] for k in controls])  # classes x draws
                c["random"] += draws.mean(axis=0).tolist()  # each draw's mean over the classes
                if all("params_removed" in k["magnitude"] for k in controls):  # what as many filters remove
                    c["params_magnitude"].append(100.0 * float(np.mean([k["magnitude"]["params_removed"]
                                                                        for k in controls])))  # fmt: skip
                    c["params_random"].append(100.0 * float(np.mean([d["params_removed"] for k in controls
                                                                     for d in k["random"]])))  # fmt: skip
            c["multi"].append(float(np.mean([e["multi_class"] for e in entries])))
            shares = np.array([removed_shares(e) for e in entries], dtype=float)
            for i, name in enumerate(("params", "flops", "physical")):
                if not np.isnan(shares[:, i]).any():
                    c[name].append(100.0 * float(shares[:, i].mean()))
            latency = [e["physical"]["latency_ms"] for e in entries if e.get("physical", {}).get("latency_ms")]
            if latency and base_latency:
                c["latency"].append(100.0 * float(np.mean(latency)) / base_latency)
    lines = [
        "### Semantic pruning: single-class classifiers after pruning (no retraining), against controls",
        "",
        "Balanced test accuracy of the network as a classifier for one class vs the rest (mean over the analysed "
        "classes, then mean ± std over seeds), with the filters chosen by accumulated activation (the method), by "
        "weight magnitude (the lowest L1 norms) and at random (mean ± std over seeds and draws), as many filters "
        "each; kept: "
        "share of classes whose balanced accuracy is not lower than unpruned; parameters and FLOPs removed: by "
        "every pruned filter, whether removed or masked (beside it, what the controls' as many filters remove: on "
        "networks with depthwise convs a channel's filter and its depthwise filter are two filters but one channel); "
        "physically removed: what the really smaller network "
        "loses; latency of that network relative to the unpruned one (first class, batch of 32).",
        "",
        "| dataset · backbone · budget | row | mode | setting | activation bal. acc. (%) | weight magnitude (%) |"
        " random (%) | unpruned (%) | kept (%) | multi-class top-1 (%) | params removed (%) |"
        " params removed by magnitude / random (%) | FLOPs removed (%) | physically removed params (%) |"
        " latency (% of unpruned) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (dataset, backbone, budget, label, mode, setting), c in cells.items():
        lines.append(
            f"| {dataset} · {backbone} · {budget} | {label} | {mode} | {setting} | {fmt(c['pruned'])} | "
            f"{fmt(c['magnitude'])} | "
            f"{fmt(c['random'])} | {fmt(c['unpruned'])} | {fmt(c['kept'])} | {fmt(c['multi'])} | "
            f"{fmt(c['params'])} | {fmt(c['params_magnitude'])} / {fmt(c['params_random'])} | {fmt(c['flops'])} | "
            f"{fmt(c['physical'])} | {fmt(c['latency'])} |"
        )
    return "\n".join(lines) + "\n"


def theta_table(records: list[RunRecord]) -> str:
    """Semantic pruning's per-class theta, chosen on val (the largest of the sweep that keeps the val single-class
    balanced accuracy) and reported on test, against the controls at the same theta."""
    runs = [r for r in records if r.spec["method"] == "semantic-pruning" and r.extras.get("selected")]
    if not runs:
        return ""
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        for mode in sorted({s["mode"] for s in r.extras["selected"]}, reverse=True):
            chosen = [s for s in r.extras["selected"] if s["mode"] == mode and s.get("theta") is not None]
            if not chosen:  # no class had val images to choose on
                continue
            c = cells[(*row_key(r), mode)]
            c["theta"].append(float(np.mean([s["theta"] for s in chosen])))
            c["test"].append(float(np.mean([s["test"] for s in chosen])))
            c["unpruned"].append(float(np.mean([s["test_unpruned"] for s in chosen])))
            pruned = [s for s in chosen if s["theta"] > 0]  # theta = 0 prunes nothing: it keeps by definition
            c["pruned"].append(100.0 * len(pruned) / len(chosen))
            if pruned:
                c["kept"].append(100.0 * float(np.mean([s["test"] >= s["test_unpruned"] for s in pruned])))
            # at theta = 0 nothing is pruned: each control is the unpruned network
            c["magnitude"].append(float(np.mean([s["controls"]["magnitude"] if "controls" in s else s["test"]
                                                 for s in chosen])))  # fmt: skip
            c["random"].append(float(np.mean([np.mean(s["controls"]["random"]) if "controls" in s else s["test"]
                                              for s in chosen])))  # fmt: skip
    lines = [
        "### Semantic pruning: per-class θ chosen on val, reported on test",
        "",
        "θ per class: the largest of the sweep whose val balanced single-class accuracy is not below the unpruned "
        "network's (0: none keeps it, nothing is pruned). Test balanced accuracy at that θ (mean over classes, then "
        "mean ± std over seeds), the unpruned network's and the controls' (mean of the draws) at the same θ; the "
        "share of classes pruned (θ > 0), and of those, the share whose test score is kept.",
        "",
        "| dataset · backbone · budget | row | mode | mean θ | activation bal. acc. (%) | weight magnitude (%) |"
        " random (%) | unpruned (%) | classes pruned (%) | of those, kept on test (%) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (dataset, backbone, budget, label, mode), c in cells.items():
        lines.append(
            f"| {dataset} · {backbone} · {budget} | {label} | {mode} | {fmt(c['theta'], 2)} | {fmt(c['test'])} | "
            f"{fmt(c['magnitude'])} | {fmt(c['random'])} | {fmt(c['unpruned'])} | {fmt(c['pruned'])} | "
            f"{fmt(c['kept'])} |"
        )
    return "\n".join(lines) + "\n"


def attention_pruning_table(records: list[RunRecord]) -> str:
    """Filter attention: test top-1 after removing the lowest-ranked filters (network-wise and per layer), against
    as many filters removed by weight magnitude and at random."""
    runs = [r for r in records if r.spec["method"] == "filter-attention" and r.extras.get("attention_pruning")]
    if not runs:
        return ""
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:  # each variant (and budget) apart: their attention, so their rankings, differ
        prunable = r.extras.get("prunable_filters")
        for entry in r.extras["attention_pruning"]:
            c = cells[(*row_key(r), entry["mode"], entry["ratio"])]
            c["attention"].append(entry["test"]["top1"])
            if prunable and "filters" in entry:  # the share really removed: rounding per layer can take fewer
                c["share"].append(100.0 * entry["filters"] / prunable)
            controls = entry.get("controls")
            if controls:
                c["magnitude"].append(controls["magnitude"]["test"]["top1"])
                c["random"] += [d["test"]["top1"] for d in controls["random"]]
    lines = [
        "### Filter attention: accuracy after removing the lowest-attention filters (no retraining), against controls",
        "",
        "Test top-1 (mean ± std over seeds) with the lowest-ranked filters removed, and with as many removed by "
        "weight magnitude (the lowest L1 norms of the deployed filters) and at random (mean ± std over seeds and "
        "draws); removed: the share asked for, and the share of the prunable filters really removed.",
        "",
        "| dataset · backbone · budget | row | mode | removed | attention | weight magnitude | random |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for (dataset, backbone, budget, label, mode, ratio), c in sorted(cells.items(), key=lambda kv: kv[0]):
        share = f" ({fmt(c['share'], 2)} %)" if c["share"] else ""
        lines.append(f"| {dataset} · {backbone} · {budget} | {label} | {mode} | {100 * ratio:g} %{share} | "
                     f"{fmt(c['attention'])} | {fmt(c['magnitude'])} | {fmt(c['random'])} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def distillation_table(summary) -> str:
    """Student / KD / AT / AT+KD / teacher test top-1 error (%) per table that has a teacher row, as the AT paper's
    Table 4 lays it out."""
    order = [("cut-full", "student"), ("kd", "KD"), ("attention-transfer", "AT"), ("at+kd", "AT+KD")]
    lines = []
    for (dataset, backbone, _), group in summary.groupby(["dataset", "backbone", "budget"], sort=False):
        # one line per teacher: rows distilled from different teachers never share a line
        for _, t in group[group["method"].str.startswith("teacher:")].iterrows():
            students = group[(group["teacher_label"] == t["method"]) | (group["method_name"] == "cut-full")]
            cells = []
            for m, _ in order:
                g = pick(students, m)
                weak = g is not None and g.get("weak_teacher") is not None
                cells.append("—" if g is None else err(g) + (" †" if weak else ""))
            lines.append(f"| {dataset} · {backbone} | " + " | ".join(cells) + f" | {err(t)} ({t['method'][9:]}) |")
    if not lines:
        return ""
    head = [
        "### Distillation: test top-1 error (%) of student, KD, AT, AT+KD and teacher",
        "",
        "| dataset · student | " + " | ".join(name for _, name in order) + " | teacher |",
        "|---|" + "---:|" * (len(order) + 1),
    ]
    note = "† the teacher is weaker on val than the student's own baseline: distillation from a worse model"
    return "\n".join(head + lines + (["", note] if "†" in "".join(lines) else [])) + "\n"


def pick(group, method: str):
    """The table's row of `method`: its default-labelled row, else its one row under the distillation rows'
    freezing (the paper's CUB setting labels every row `... (freeze_bn=True, freeze_stages=2)`), else None."""
    rows = group[(group["method_name"] == method) & ~group["method"].str.startswith("teacher:")]
    plain = rows[rows["method"] == method]
    if not plain.empty:
        return plain.iloc[0]
    distilled = group[group["teacher_val"].notna()]
    if not distilled.empty:
        rows = rows[rows["setting"] == distilled.iloc[0]["setting"]]
    return rows.iloc[0] if len(rows) == 1 else None


def err(row) -> str:
    std = row["test_top1_std"]
    text = f"{100 - row['test_top1_mean']:.1f}"
    return text if std != std else f"{text} ± {std:.1f}"  # NaN std: one seed


def filter_attention_table(summary, records: list[RunRecord]) -> str:
    """Filter-attention variants side by side, as the paper's Tables 1-4 compare schedules, attention shapes and
    penalties: per row the letter schedule it trained (`paper` resolved to the budget), shape, penalty and λ,
    optimiser, then accuracy, best epoch and the test against the baseline; cut-fc (the paper's F-only baseline)
    and cut-full as reference rows. One table per (dataset, backbone, budget) that has a filter-attention row."""
    from finebench.reports import catalogue
    from finebench.reports.frame import run_label
    from finebench.reports.tables import Column, cell, row_label, significance_cell

    def mean_std(row, metric: str) -> str:
        return cell(row, Column(metric, metric, metric, "num"), "±")

    configs: dict[str, dict] = {}
    for r in records:
        if r.spec["method"] == "filter-attention":
            cfg = r.spec.get("method_config", {})
            configs[run_label(r.spec)] = cfg | {"_epochs": r.spec["train"]["epochs"],
                                                                    "_schedule": r.extras.get("schedule")}  # fmt: skip
    out = []
    for (dataset, backbone, budget), group in summary.groupby(["dataset", "backbone", "budget"], sort=False):
        variants = group[group["method"].isin(configs)]
        if variants.empty:
            continue
        lines = [
            f"### Filter-attention variants: {dataset} · {backbone} · budget {budget}",
            "",
            "Schedule letters, one per epoch: F head, A attention, B normalisation affine, E everything but "
            "attention. Mean ± std over seeds; Δ: paired test against the baseline of the main table.",
            "",
            "| row | schedule | shape | penalty (λ) | optimiser | n | test top-1 (%) | test top-3 (%) | val top-1 (%) |"
            " best epoch | Δ vs baseline |",
            "|---|---|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        epochs = int(variants.iloc[0]["epochs"])
        refs = {"cut-fc": ("F" * epochs, "—", "—"), "cut-full": ("all layers", "—", "—")}
        for _, row in group.iterrows():
            if row["method"] in configs:
                cfg = configs[row["method"]]
                recorded = cfg["_schedule"]  # older records: resolved by the method catalogue
                schedule = recorded or catalogue.current().schedule(cfg.get("schedule", "paper"), cfg["_epochs"])
                penalty = cfg.get("penalty", "none")
                penalty += f" ({cfg.get('lam', 0):g})" if penalty != "none" else ""
                opt = f"{cfg.get('optimizer', 'adam')} {cfg.get('lr', 1e-3):g}"
                opt += "" if cfg.get("fresh_optimizer", True) else ", one for all"
                cells = (schedule, cfg.get("shape", "full"), penalty, opt)
            elif row["method"] in refs:
                cells = (*refs[row["method"]], "suite's")
            else:
                continue
            lines.append(
                f"| {row_label(row)} | " + " | ".join(cells) + f" | {row['n']} | {mean_std(row, 'test_top1')} | "
                f"{mean_std(row, 'test_top3')} | {mean_std(row, 'val_top1')} | {mean_std(row, 'best_epoch')} | "
                f"{significance_cell(row)} |"
            )
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


TWINS = ("filter-attention", "bn-only", "bitfit", "ssf", "lora")  # per-channel or low-rank changes of a frozen net
TWIN_REFS = ("cut-fc", "cut-full")  # the two ends: the classifier alone, everything


def near_twins_table(summary) -> str:
    """Filter attention and its parameter-efficient near twins (BN-only, BitFit, SSF, LoRA) side by side, with
    cut-fc and cut-full as the two ends: parameters trained (and their share of the network), the table's test
    metric with its 95 % interval over seeds and the test against the baseline, seconds (charged phases included),
    and what deployment costs beyond the plain network (extra parameters after merging or folding). One table per
    (dataset, backbone, budget) with at least two of the twins."""
    from finebench.reports.compare import PRIMARY
    from finebench.reports.tables import Column, cell, human_count, row_label, significance_cell

    metric = summary.attrs.get("metric", "top1")
    key, label = PRIMARY[metric]
    out = []
    for (dataset, backbone, budget), group in summary.groupby(["dataset", "backbone", "budget"], sort=False):
        twins = group[group["method_name"].isin(TWINS)]
        if twins["method_name"].nunique() < 2:
            continue
        rows = group[group["method_name"].isin(TWINS + TWIN_REFS)]
        lines = [
            f"### Near twins of filter attention: {dataset} · {backbone} · budget {budget}",
            "",
            "Each trains a small set of parameters of the frozen pretrained network (plus the new classifier); "
            "cut-fc and cut-full are the two ends. Share: trained parameters over the plain network's; BatchNorm "
            "statistics: what the layers normalise with while training (a difference between rows that is not the "
            "parameters'; `bn=` changes it and labels the row); extra at "
            f"deployment: parameters the deployed network has beyond the plain one. {label[0].upper()}{label[1:]}: "
            "mean ± std over seeds, 95 % t-interval; Δ: paired test against the baseline of the main table.",
            "",
            f"| row | trained params | share | BatchNorm statistics | {label} (%) | 95 % CI | Δ vs baseline | seconds "
            "| extra at deployment |",
            "|---|---:|---:|---|---:|---:|---|---:|---:|",
        ]
        for _, row in rows.iterrows():
            plain, deployed = row.get("plain"), row.get("deployed")
            share = f"{100 * row['trainable'] / plain:.2f} %" if plain == plain and plain else "—"
            if deployed != deployed or plain != plain:  # records from before these were kept
                extra = "—"
            else:
                extra = human_count(deployed - plain) if deployed > plain else "0"
                extra += " (merged)" if row["method_name"] in ("ssf", "lora") and deployed <= plain else ""
            ci = row["ci"]
            interval = f"[{ci[0]:.1f}, {ci[1]:.1f}]" if isinstance(ci, tuple) else "—"
            lines.append(
                f"| {row_label(row)} | {human_count(row['trainable'])} | {share} | {row.get('bn_statistics') or '—'} | "
                f"{cell(row, Column(key, key, key, 'num'), '±')} | {interval} | {significance_cell(row)} | "
                f"{row['total_seconds_mean']:.0f} | {extra} |"
            )
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)
