"""One row per finished run, from the records alone: what a comparison table needs of each run (its budget,
label, metrics, costs and per-image test results), and teachers joined to their students' tables."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable

import pandas as pd

from finebench.core.labels import identity_train, tuned_identity, untuned_train
from finebench.reports import catalogue
from finebench.results import predictions
from finebench.results.record import RunRecord


def budget_key(spec: dict) -> str:
    """Runs are comparable only under the same training config (epochs, resolution, optimiser, split...); a run at
    tuned values is compared under the suite's config its tuning started from."""
    train = identity_train(untuned_train(spec))
    return hashlib.sha256(json.dumps(train, sort_keys=True).encode()).hexdigest()[:8]


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
    cat = catalogue.current()
    config = cat.legacy(method, config)  # a record that predates a config field reads as what its run did
    defaults = cat.defaults(method) or {}

    def norm(v):  # records hold JSON lists where a config holds tuples
        return list(v) if isinstance(v, tuple) else v

    changed = {k: v for k, v in sorted(config.items()) if norm(defaults.get(k, object())) != norm(v)}
    return method + (" (" + ", ".join(f"{k}={v}" for k, v in changed.items()) + ")" if changed else "")


def run_label(spec: dict) -> str:
    """A recorded run's row label: `method_label`, and for a run at tuned values its study, with the tuned settings
    left out of the label (the tuning table lists the values): rows never pool tuned and untuned runs."""
    tuned = spec.get("tuned")
    if not tuned:
        return method_label(spec["method"], dict(spec.get("method_config", {})))
    # a method setting the tuning chose is shown in the tuning table, not the label
    return f"{untuned_label(spec)} (tuned: {tuned['study']}, {tuned['trials']} trials)"


def untuned_label(spec: dict) -> str:
    """The row label of the same run at the suite's settings (a tuned run's default row): the settings the tuning
    chose back at the suite's values (records without them: at the method's defaults)."""
    tuned = spec.get("tuned") or {}
    config = dict(spec.get("method_config", {}))
    base = tuned.get("base_config")
    defaults = catalogue.current().defaults(spec["method"]) or {}
    for key in tuned.get("values", {}):
        if key in config:
            config[key] = base[key] if base is not None and key in base else defaults.get(key, config[key])
    return method_label(spec["method"], config)


def tuned_id(spec: dict) -> str | None:
    """A short hash of which tuning chose a run's values (None: not tuned)."""
    if not spec.get("tuned"):
        return None
    text = json.dumps(tuned_identity(spec["tuned"]), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def method_note(method: str, config: dict) -> str | None:
    """The method's word on a (recorded) configuration for its row, e.g. that it is the paper's ablation."""
    return catalogue.current().note(method, config)


def charged_before_training(cost: dict) -> float:
    """Seconds of the charged phases that precede training (a teacher's training, a calibration pass), not those
    after it (WiSE-FT's search on val, listed in `charged_after_training`)."""
    charges = cost.get("charges", {})
    after = sum(charges.get(k, {}).get("seconds", 0.0) for k in cost.get("charged_after_training", ()))
    return cost.get("charged_seconds", 0.0) - after


def seconds_to_target(r: RunRecord, target: float) -> float:
    """Seconds (own, plus the charged phases that precede training) until val top-1 first reaches `target`; NaN
    if it never does."""
    charged = charged_before_training(r.cost)
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
        "method": run_label(r.spec),
        "method_name": r.spec["method"],
        "seed": r.spec["seed"],
        "run_id": r.run_id,
        "tuned": (r.spec.get("tuned") or {}).get("study"),  # the bench tune study whose values the run used
        "tuned_id": tuned_id(r.spec),
        "commit": (r.env.get("commit") or "unknown")[:10],
        # a CPU run's thread count: CPU results are bit-identical only at one count (reductions split differently)
        "cpu_threads": r.env.get("threads") if r.env.get("device") == "cpu" else None,
        "test_top1": r.best["test"]["top1"],
        "test_top3": r.best["test"]["top3"],
        "test_mean_class": r.best["test"].get("mean_class", math.nan),
        "val_top1": r.best["val"]["top1"],
        "last_test_top1": r.last["test"]["top1"],
        "best_epoch": r.best["epoch"],
        # charged phases (a teacher's or source model's training, a calibration pass) precede training: they
        # count towards the time to best and the total; `own_seconds` is the method's own training and evaluation
        "seconds_to_best": r.best["seconds_to_best"] + charged_before_training(r.cost),
        "own_seconds": own,
        "total_seconds": own + charged,
        # everything it took to produce the model, charged phases included
        "samples_total": r.cost.get("samples", 0) + sum(c.get("samples", 0) for c in charges),
        # training FLOPs as measured (older records: the 3 x forward estimate they were written with)
        "flops_total": train_flops(r.cost) + sum(c.get("flops", 0.0) for c in charges),
        **({"seconds_to_target": seconds_to_target(r, target)} if target is not None else {}),
        "trainable": r.params["trainable"],
        "total": r.params["total"],
        # the deployed network's parameters (after finalize: merged, folded, pruned) and the plain network's (the
        # backbone with the new classifier; NaN in records written before it was recorded)
        "deployed": r.params.get("deployed", math.nan),
        "plain": r.params.get("plain", math.nan),
        "capped": bool(r.cost.get("capped")),
        "split_hash": r.dataset["split_hash"],
        "trained": bool(r.epochs),  # False: the method trains no model of its own (an analysis of a source model)
        # what a student's own baseline must share with it: cut-full with the same frozen stages and BatchNorm
        "setting": (int(cfg.get("freeze_stages", 0)), bool(cfg.get("freeze_bn", False))),
        "teacher_run": r.sources.get("teacher"),
        "teacher_val": math.nan,  # filled in by runs_frame when the teacher's record is in the store
        "teacher_label": None,  # the label of that teacher's row (runs_frame)
        "note": method_note(r.spec["method"], cfg),  # a method's word on this configuration (the paper's ablation)
        # what BatchNorm normalised with while training (the method's word on its config), for the near-twins table
        "bn_statistics": catalogue.current().bn_statistics(r.spec["method"], cfg),
        "images": predictions.decode(r.best.get("test_predictions")),  # per-image test results (newer records)
    }


TEACHER = "teacher"  # method_name of the rows that show a distillation method's teacher


def runs_frame(records: Iterable[RunRecord], target: float | None = None) -> pd.DataFrame:
    """One row per finished run; a teacher used by a run also appears in that run's table (once per teacher run),
    labelled `teacher: <method> (<backbone>)`, so a student, its distilled variants and their teacher sit together.
    When every seed has its own split, each seed has its own teacher, whose row goes under that seed."""
    records = [r for r in records if r.status == "ok"]
    by_id = {r.run_id: r for r in records}
    rows, teachers = [], set()
    for r in records:
        row = run_row(r, target)
        rows.append(row)
        teacher = by_id.get(r.sources.get("teacher", ""))
        if teacher is None:
            continue
        t = run_row(teacher, target)
        weights = teacher.spec["train"].get("weights", "default")
        differs = weights != r.spec["train"].get("weights", "default")  # the student's weights are the default
        label = f"teacher: {t['method']} ({t['backbone']}" + (f", weights={weights})" if differs else ")")
        row["teacher_val"] = teacher.best["val"]["top1"]
        row["teacher_label"] = label  # which teacher row this student's distillation is from
        if (row["dataset"], row["backbone"], row["budget"], teacher.run_id) in teachers:
            continue
        teachers.add((row["dataset"], row["backbone"], row["budget"], teacher.run_id))
        group = {k: row[k] for k in ("dataset", "backbone", "budget")}
        if r.spec["train"].get("split_seed") == "seed":  # one teacher per split: each row is its split's, by seed
            group["seed"] = teacher.dataset.get("split_seed", r.spec["seed"])
        rows.append(t | group | {"method": label, "method_name": TEACHER, "teacher_val": math.nan})
    frame = pd.DataFrame(rows)
    separate_tunings(frame)
    frame.attrs["target"] = target
    return frame


def separate_tunings(frame: pd.DataFrame) -> None:
    """Runs tuned by different tunings that share a label (one study name, one trial count, two storages) get the
    tuning's hash in their label: a row never pools two choices of values."""
    if frame.empty or "tuned_id" not in frame or frame["tuned_id"].isna().all():
        return
    tuned = frame[frame["tuned_id"].notna()]
    clashes = tuned.groupby(["dataset", "backbone", "budget", "method"])["tuned_id"].nunique()
    for (dataset, backbone, budget, method), n in clashes.items():
        if n < 2:
            continue
        rows = (frame["dataset"] == dataset) & (frame["backbone"] == backbone) & (frame["budget"] == budget) & (
            frame["method"] == method)  # fmt: skip
        frame.loc[rows, "method"] = frame.loc[rows, "method"] + " #" + frame.loc[rows, "tuned_id"]
