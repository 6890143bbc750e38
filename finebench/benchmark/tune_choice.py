"""`bench run --tuned STUDY`: each method's chosen values and the tuning's account (trials, cost) from a finished
study, refusing studies that are unfinished, tuned under another budget or gave the methods unequal trials."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from finebench.benchmark.spec import RunSpec, SpecError, SuiteSpec
from finebench.benchmark.tune import (
    ATTR,
    TARGET,
    Claims,
    _norm,
    counted,
    interrupted,
    open_storage,
    shown_url,
    study_name,
)
from finebench.benchmark.tune_space import apply, replaced
from finebench.core.labels import identity_train
from finebench.methods import METHODS


def unfinished(study, claims: Claims | None) -> str | None:
    """Why a study is not finished (trials running, interrupted or queued), or None."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    alive = []
    for n in running:
        lock = claims.trial_lock(n) if claims else None
        if lock is None or not lock.acquire():
            alive.append(n)
        else:
            lock.release()
    if alive:
        return f"trial(s) {alive} still running in another process; wait for them"
    if running or any(t.state == TrialState.WAITING for t in trials):
        return "it was interrupted (trials not finished); `bench tune` with the same flags finishes it"
    target_ = study.user_attrs.get(TARGET)
    if target_ is not None and len(counted(trials)) < target_:
        return f"{len(counted(trials))} of its {target_} trials are done; `bench tune` with the same flags finishes it"
    return None


def summary(study, metric: str, claims: Claims | None = None) -> dict[str, Any]:
    """The tuning as a final record carries it: the best trial's values, every counted trial (values, state, val
    curve, best val) and the cost of all of them (pruned and failed included)."""
    from optuna.trial import TrialState

    attrs = study.user_attrs[ATTR]
    why = unfinished(study, claims)
    if why:
        raise SpecError(f"study {study.study_name!r}: {why}")
    every = study.get_trials(deepcopy=False)
    trials = counted(every)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        raise SpecError(f"study {study.study_name!r} has no finished trial ({len(trials)} pruned or failed); tune "
                        "with more trials or a narrower space")  # fmt: skip
    best = max(done, key=lambda t: (t.value, -t.number))
    cost = {"seconds": 0.0, "samples": 0, "flops": 0.0}

    def add(part: dict[str, Any]) -> None:
        for key in cost:
            cost[key] += part.get(key, 0)

    shared: dict[str, dict[str, float]] = {}  # teacher / source runs: trained once, charged to each trial
    rows = []
    for t in trials:
        c = t.user_attrs.get("cost") or {}
        add(c)
        for name, charge in (c.get("charges") or {}).items():
            if ":" in name:  # role:method, a recorded run's cost: counted once for the whole tuning
                shared[name] = charge
            else:
                add(charge)
        rows.append({"number": t.number, "state": t.state.name.lower(), "values": t.user_attrs.get("values", t.params),
                     "defaults": bool(t.user_attrs.get("defaults")),
                     "value": t.value, "curve": t.user_attrs.get("curve", []), "stopped": t.user_attrs.get("stopped"),
                     "error": t.user_attrs.get("error")})  # fmt: skip
    for charge in shared.values():
        add(charge)
    states = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail")}
    states["interrupted"] = len(interrupted(every))  # retried: not counted, not charged
    return {
        "trials": len(trials),
        "values": best.user_attrs.get("values", best.params),
        "best_trial": best.number,
        "best_is_defaults": bool(best.user_attrs.get("defaults")),
        "best_val": best.value,
        "metric": metric,
        "space": attrs["space"],
        "sampler": attrs["sampler"],
        "pruner": attrs["pruner"],
        "seed": attrs["seed"],
        "states": states,
        "cost": cost | {"shared": sorted(shared)},
        "trial_list": rows,
        "key": METHODS.get(attrs["method"]).tune_key,
    }


def tuned_suite_runs(suite: SuiteSpec, study: str, url: str, out: str) -> list[RunSpec]:
    """The suite's runs at each method's chosen values from `study` (`bench run --tuned STUDY`): every method's
    study must exist, be finished, have tuned the suite's budget, and have as many trials as the others."""
    import optuna

    from finebench.benchmark.suite import expand

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise SpecError(f"--tuned {study}: no study storage at {url.removeprefix('sqlite:///')}; run `bench tune "
                        f"--study {study} ...` first (or give --storage)")  # fmt: skip
    storage_obj = open_storage(url)
    known = {s.study_name for s in optuna.get_all_study_summaries(storage_obj, include_best_trial=False)}
    runs, chosen = [], {}
    for run in expand(suite):
        name = study_name(study, run)
        if name not in known:
            names = sorted({n.split(":")[0] for n in known})
            raise SpecError(f"--tuned {study}: {run.method} on {run.dataset} / {run.backbone} was not tuned in it "
                            f"(studies in {shown_url(url)}: {', '.join(names) or 'none'}); `bench tune --study {study} "
                            f"--methods {run.method} ...` tunes it")  # fmt: skip
        if name not in chosen:
            s = optuna.load_study(study_name=name, storage=storage_obj)
            attrs = s.user_attrs.get(ATTR, {})
            diff = first_difference(attrs, run)
            if diff:
                raise SpecError(f"--tuned {study}: {run.method} was tuned under another setting ({diff}); the final "
                                "runs must use the budget and settings the trials had")  # fmt: skip
            info = summary(s, run.train.select_metric, Claims(Path(out), name))
            chosen[name] = info | {"study": study, "storage": shown_url(url)}
        info = chosen[name]
        # the suite's values the chosen ones replace: the table compares the run under them, its teacher trains so
        runs.append(dataclasses.replace(apply(run, info["values"]), tuned=info | replaced(run, info["values"])))
    counts = {name.rsplit(":", 1)[-1]: info["trials"] for name, info in chosen.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{m}: {n}" for m, n in counts.items())
        raise SpecError(f"--tuned {study}: the methods had different numbers of trials ({listed}); `bench tune "
                        f"--study {study} --trials {max(counts.values())} ...` evens them out")  # fmt: skip
    return runs


def first_difference(attrs: Mapping[str, Any], run: RunSpec) -> str | None:
    """The first setting in which `run` differs from what a study tuned under (its budget and method config); None
    when they agree."""
    train = identity_train(run.to_dict()["train"])
    stored = attrs.get("train", {})
    for k in sorted(set(train) | set(stored)):
        if _norm(train.get(k)) != _norm(stored.get(k)):
            return f"{k}: tuned with {stored.get(k)!r}, now {train.get(k)!r}"
    mc = attrs.get("method_config", {})
    for k in sorted(set(mc) | set(run.method_config)):
        if _norm(mc.get(k)) != _norm(run.method_config.get(k)):
            return f"method_config.{run.method}.{k}: tuned with {mc.get(k)!r}, now {run.method_config.get(k)!r}"
    return None
