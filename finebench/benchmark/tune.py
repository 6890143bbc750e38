"""`bench tune`: each method's hyperparameters searched on val only, with the same number of trials per method.

One Optuna study per (study name, dataset, backbone, method) in one storage (SQLite in the results folder by
default, or any database URL Optuna accepts), so that several `bench tune` processes, `--devices` workers or
cluster jobs share it. A trial is one run of the suite's budget at the tuning seed with the sampled values; it never
builds a test loader (the runner's trial mode), reports its val curve after every epoch to the pruner, and leaves
its cost (seconds, samples, training FLOPs) in the trial. `bench run --tuned STUDY` then trains the final seeds at
each method's best trial's values; their records carry the study, the values and the tuning's cost and trials.

Claiming a trial (counting the study's trials, asking Optuna for the next) happens under a file lock in the
results folder, and a running trial holds a lock of its own: a trial whose lock is free while the storage says
RUNNING belonged to a process that died (kill -9, a preempted job); the next claimer marks it failed
(`interrupted`, not counted) and enqueues its values again, and the retry resumes from that trial's last epoch
checkpoint. Finished trials are never run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import math
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from finebench.benchmark.checkpoint import discard
from finebench.benchmark.progress import Reporter, fmt_seconds
from finebench.benchmark.spec import RunSpec, SpecError, SuiteSpec
from finebench.benchmark.tune_space import (  # noqa: F401 - the spaces' API, used by tune's callers too
    TRAIN_KEYS,
    apply,
    check_space,
    distributions,
    fixed_values,
    replaced,
    resolve_spaces,
    split_space_overrides,
    target,
)
from finebench.core.labels import identity_train
from finebench.core.space import Space
from finebench.methods import METHODS
from finebench.results.lock import RunLock

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
PRUNER_WARMUP = 2  # the median pruner looks from the 2nd epoch on: one epoch says little under a fresh schedule
PRUNER_STARTUP = 2  # ... and only once 2 trials of the method have finished
ATTR = "finebench"  # the study's user attribute holding what it tunes, to refuse a mismatched reuse
TARGET = "finebench_trials"  # ... and the number of trials asked of every method so far


@dataclass(frozen=True)
class TuneOptions:
    study: str = "tune"
    trials: int = 10  # per method, counted: finished, pruned or failed (a killed trial is retried, not counted)
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0  # the seed of every trial (and of the sampler)
    storage: str | None = None  # None: sqlite:///<results>/tuning.db
    spaces: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # "*" or method -> key -> space text

    def check(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.study):
            raise SpecError(f"--study {self.study!r}: use letters, digits, '.', '_' and '-' (it names files)")
        if self.trials < 1:
            raise SpecError(f"--trials: must be >= 1, got {self.trials}")
        if self.sampler not in SAMPLERS:
            raise SpecError(f"--sampler {self.sampler!r}: expected one of {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise SpecError(f"--pruner {self.pruner!r}: expected one of {', '.join(PRUNERS)}")
        if self.seed < 0:
            raise SpecError(f"--seed: must be >= 0, got {self.seed}")


def storage_url(out: Path, storage: str | None) -> str:
    return storage or f"sqlite:///{(Path(out) / 'tuning.db').resolve()}"


def shown_url(url: str) -> str:
    """The storage URL without a password, for records and messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(url: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}  # writers wait, not fail
    if url.startswith("sqlite") and url.removeprefix("sqlite:").strip("/") in ("", ":memory:"):
        raise SpecError(f"--storage {url}: an in-memory database keeps nothing and shares nothing; give a file, "
                        "e.g. sqlite:///results/tuning.db, or a database server's URL")  # fmt: skip
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SpecError(f"--storage {url}: cannot create its folder {folder} ({e.strerror or e})") from e
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as e:  # noqa: BLE001 - a URL the user gave: say which and why
        raise SpecError(f"--storage {shown_url(url)}: cannot open it as an Optuna storage ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]})") from e  # fmt: skip


# ---------------------------------------------------------------------------------------------------------- studies


@dataclass
class Plan:
    """One method's study on one dataset and backbone."""

    name: str  # the Optuna study name
    base: RunSpec  # the suite's run at the tuning seed, before any sampled value
    space: dict[str, Space]
    attrs: dict[str, Any]  # what the study tunes (stored in it; a reuse must match)


def study_name(study: str, run: RunSpec) -> str:
    return f"{study}:{run.dataset}:{run.backbone}:{run.method}"


def plans(suite: SuiteSpec, opts: TuneOptions) -> list[Plan]:
    """A Plan per (dataset, backbone, method) of the suite; every space checked."""
    from finebench.benchmark.suite import expand

    runs = expand(dataclasses.replace(suite, seeds=(opts.seed,)))
    out = []
    for run in runs:
        cls = METHODS.get(run.method)
        if not cls.trains:
            raise SpecError(f"{run.method} trains nothing itself (it analyses another run's model): it has nothing to "
                            "tune; tune the method whose model it takes and leave it out of --methods")  # fmt: skip
        space = resolve_spaces(run.method, run.method_config, opts.spaces)
        if not distributions(space):
            raise SpecError(f"{run.method}: its search space is empty (every dimension fixed or dropped); give one "
                            "with space.KEY=…")  # fmt: skip
        check_space(run, space)
        if opts.sampler == "grid":
            ranged = [k for k, s in space.items() if s.kind != "choice"]
            if ranged:
                raise SpecError(f"--sampler grid: space.{run.method}.{ranged[0]}={space[ranged[0]].text()} is a range; "
                                "a grid needs lists of values, e.g. space.lr=1e-3,1e-2,1e-1")  # fmt: skip
            points = math.prod(len(s.choices) for s in space.values())
            if opts.trials > points:
                raise SpecError(f"--trials {opts.trials} with --sampler grid: {run.method}'s grid has {points} "
                                "point(s); give at most that many trials (each point once)")  # fmt: skip
        attrs = {
            "method": run.method, "dataset": run.dataset, "backbone": run.backbone, "seed": opts.seed,
            "train": identity_train(run.to_dict()["train"]), "method_config": dict(run.method_config),
            "space": {k: s.text() for k, s in space.items()}, "sampler": opts.sampler, "pruner": opts.pruner,
            "metric": run.train.select_metric,
        }  # fmt: skip
        out.append(Plan(study_name(opts.study, run), run, space, attrs))
    return out


def open_study(storage, plan: Plan, trials: int):
    """The plan's study, created with its attributes; an existing one must tune the same thing. `trials` raises the
    study's target (what `bench run --tuned` requires of every method)."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=plan.name, direction="maximize", load_if_exists=True)
    if trials > study.user_attrs.get(TARGET, 0):
        study.set_user_attr(TARGET, trials)
    stored = study.user_attrs.get(ATTR)
    if stored is None:
        study.set_user_attr(ATTR, plan.attrs)
        defaults = default_values(plan)
        if defaults:  # trial 0 is the method at its defaults, so the chosen values are never worse on val than them
            study.enqueue_trial(defaults, user_attrs={"defaults": True})
        return study
    for key, value in plan.attrs.items():
        if _norm(stored.get(key)) != _norm(value):
            raise SpecError(f"study {plan.name!r} already exists with a different {key} ({_short(stored.get(key))}, "
                            f"now {_short(value)}); use another --study name, or the settings it was made "
                            "with")  # fmt: skip
    return study


def default_values(plan: Plan) -> dict[str, Any]:
    """The run's own values of the searched keys (the suite's lr, the method's lambda...), those inside their
    dimension's range or list."""
    out = {}
    for key, s in plan.space.items():
        if s.fixed:
            continue
        kind, name = target(plan.base.method, key, plan.base.method_config)
        value = getattr(plan.base.train, name) if kind == "train" else plan.base.method_config.get(name)
        if s.kind == "choice":
            if value in s.choices:
                out[key] = value
        elif isinstance(value, int | float) and not isinstance(value, bool) and s.low <= value <= s.high:
            out[key] = int(value) if s.kind == "int" else float(value)
    return out


def _norm(v: Any) -> Any:
    import json

    return json.loads(json.dumps(v, sort_keys=True, default=str))


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) < 120 else text[:117] + "..."


def counted(trials: list) -> list:
    """The trials that count towards --trials: finished, pruned, failed or running; not a killed one (its values were
    queued again: a later trial names it in `retry_of`) and not a queued one until it runs."""
    from optuna.trial import TrialState

    retried = {t.user_attrs.get("retry_of") for t in trials}
    return [t for t in trials if t.state != TrialState.WAITING and t.number not in retried]


def interrupted(trials: list) -> set[int]:
    return {t.user_attrs["retry_of"] for t in trials if t.user_attrs.get("retry_of") is not None}


def make_sampler(kind: str, seed: int, trials: int):
    """A sampler seeded per claim (`seed`: the study's seed and the number of trials so far), so that trials claimed
    by different processes draw different values and a study is reproducible whichever process claims which."""
    import optuna

    if kind in ("grid", "random"):  # a grid's points come enqueued (`grid_point`): the sampler draws nothing
        return optuna.samplers.RandomSampler(seed=seed)
    startup = min(10, max(2, trials // 2))  # random draws before TPE models the others (Optuna's default: 10)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def grid_point(trials: list, space: Mapping[str, Space], seed: int) -> dict[str, Any] | None:
    """The next grid point no trial has taken (in an order shuffled once by the study's seed), or None."""
    import itertools
    import random

    keys = [k for k, s in space.items() if not s.fixed]
    points = list(itertools.product(*(space[k].choices for k in keys)))
    random.Random(seed).shuffle(points)
    taken = {tuple(repr(t.params.get(k)) for k in keys) for t in trials}
    for point in points:
        if tuple(repr(v) for v in point) not in taken:
            return dict(zip(keys, point, strict=True))
    return None


def make_pruner(kind: str):
    import optuna

    if kind == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP, n_warmup_steps=PRUNER_WARMUP)


@contextlib.contextmanager
def held(path: Path):
    """A short critical section between processes: a blocking `flock` on `path`, so waiters queue in the kernel and
    take their turn as soon as it is free (the file stays; a dead holder's lock is dropped with its process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Claims:
    """The file locks that keep processes sharing a study from claiming one trial twice or counting past --trials."""

    def __init__(self, out: Path, name: str) -> None:
        key = hashlib.sha256(name.encode()).hexdigest()[:16]
        self.root, self.key = Path(out) / "tuning", key

    def claim_lock(self):
        return held(self.root / "locks" / f"claim-{self.key}.lock")

    def trial_lock(self, number: int) -> RunLock:
        return RunLock(self.root, f"trial-{self.key}-{number}")


def recover(study, claims: Claims, reporter: Reporter) -> None:
    """RUNNING trials whose process died: marked failed (`interrupted`, not counted) and their values enqueued
    again, so the next claim retries them (from the trial's last checkpoint). Call under the claim lock."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        lock = claims.trial_lock(t.number)
        if not lock.acquire():
            continue  # its process is alive
        try:
            study.tell(t.number, state=TrialState.FAIL)  # first: a crash in between leaves no duplicate retry
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            reporter.print(f"  trial {t.number} of {study.study_name} was interrupted (its process is gone): its "
                           "values are queued again and resume from its last epoch")  # fmt: skip
        finally:
            lock.release()


def claim(study, plan: Plan, opts: TuneOptions, claims: Claims, reporter: Reporter):
    """(the next trial, its lock) or None when the method has its --trials."""
    from optuna.trial import TrialState

    with claims.claim_lock():
        recover(study, claims, reporter)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and len(counted(trials)) >= opts.trials:
            return None
        if opts.sampler == "grid" and not waiting:
            point = grid_point(trials, plan.space, opts.seed)
            if point is None:
                return None
            study.enqueue_trial(point)
        study.sampler = make_sampler(opts.sampler, opts.seed * 100_003 + len(trials), opts.trials)
        study.pruner = make_pruner(opts.pruner)
        trial = study.ask(distributions(plan.space))
        lock = claims.trial_lock(trial.number)
        lock.acquire()  # a new number: free; held while the trial runs, dropped by the kernel if this process dies
    return trial, lock


class TrialHooks:
    """What the runner tells a trial after each epoch (its val curve) and asks it (stop: pruned?)."""

    def __init__(self, trial, metric: str, prune: bool) -> None:
        self.trial, self.metric, self.prune = trial, metric, prune

    def restored(self, history: list[dict[str, Any]]) -> None:
        for entry in history:
            self.trial.report(float(entry["val"][self.metric]), entry["epoch"])

    def epoch_end(self, entry: dict[str, Any]) -> bool:
        self.trial.report(float(entry["val"][self.metric]), entry["epoch"])
        return self.prune and self.trial.should_prune()


def run_trial(study, trial, plan: Plan, out: Path, data_root: str | None, dev: torch.device, reporter: Reporter,
              opts: TuneOptions) -> str:  # fmt: skip
    """Train one trial (val only) and tell the study its outcome; returns its state's name."""
    from optuna.trial import TrialState

    from finebench.benchmark.runner import Diverged, Run

    values = {**fixed_values(plan.space), **trial.params}
    # the trial's own identity (its checkpoints; a retry continues the killed trial's), and the suite's values it
    # replaced (its teacher trains under those)
    number = trial.user_attrs.get("retry_of", trial.number)
    spec = dataclasses.replace(apply(plan.base, values), tuned={"study": plan.name, "trials": number, "values": values}
                               | replaced(plan.base, values))  # fmt: skip
    work = Path(out) / "tuning" / "work"
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    reporter.print(f"{plan.name} trial {trial.number}: {shown}")
    hooks = TrialHooks(trial, spec.train.select_metric, opts.pruner != "none")
    run = Run(spec, data_root, work, dev, reporter, trial=hooks, store_dir=out)
    trial.set_user_attr("run_id", spec.run_id)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("values", {k: _json(v) for k, v in values.items()})
    t0 = time.perf_counter()

    def ended(state, key: str, why: str, line: str) -> str:  # stopped by an error: its cost so far is counted
        trial.set_user_attr(key, why)
        trial.set_user_attr("cost", run.trial_cost())
        study.tell(trial, state=state)
        discard(work, spec.run_id)
        reporter.print(line)
        return state.name.lower()

    try:
        result = run.execute()
    except Diverged as e:  # a value that blows training up: stopped early, like a pruned trial
        elapsed = fmt_seconds(time.perf_counter() - t0)
        return ended(TrialState.PRUNED, "stopped", f"diverged at epoch {e.epoch}",
                     f"  diverged at epoch {e.epoch} ({elapsed})")  # fmt: skip
    except Exception as e:  # noqa: BLE001 - a failed trial is recorded and counted (it cost budget); go on
        text = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        return ended(TrialState.FAIL, "error", text, f"  FAILED: {type(e).__name__}: {e}")
    metric = spec.train.select_metric
    best = result["best"]
    value = float(best.get("val_finalized", best["val"])[metric])
    trial.set_user_attr("cost", result["cost"])
    trial.set_user_attr("curve", [float(e["val"][metric]) for e in result["history"]])
    trial.set_user_attr("best_epoch", best["epoch"])
    trial.set_user_attr("best_val", value)
    if result["sources"]:
        trial.set_user_attr("sources", result["sources"])
    if result["pruned"]:
        trial.set_user_attr("stopped", f"pruned after epoch {len(result['history'])}")
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, value)
    discard(work, spec.run_id)
    state = "pruned" if result["pruned"] else f"val {metric} {value:.2f}"
    reporter.print(f"  {state} ({fmt_seconds(time.perf_counter() - t0)})")
    return "pruned" if result["pruned"] else "complete"


def _json(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@dataclass
class TuneResult:
    ran: dict[str, int] = field(default_factory=dict)  # study -> trials this process ran
    states: dict[str, dict[str, int]] = field(default_factory=dict)  # study -> state -> count (all processes)


def tune_suite(suite: SuiteSpec, opts: TuneOptions, out: Path, data_root: str | None, device: Any = "auto",
               reporter: Reporter | None = None, quiet_preflight: bool = False) -> TuneResult:  # fmt: skip
    """Run trials until every method's study has its --trials (shared with any other process on the same storage)."""
    from finebench.benchmark.suite import pick_device, preflight, source_runs

    reporter = reporter or Reporter()
    opts.check()
    dev = device if isinstance(device, torch.device) else pick_device(device)
    todo, studies, url = open_studies(suite, opts, out)
    bases = [p.base for p in todo]
    preflight(bases + [r for _, r in source_runs(bases)], data_root, dev, None if quiet_preflight else reporter)
    ensure_sources(bases, out, data_root, dev, reporter)
    reporter.print(f"tuning {len(todo)} method(s), {opts.trials} trial(s) each, on val; study storage "
                   f"{shown_url(url)}")  # fmt: skip
    result = TuneResult()
    for plan, study in studies:
        claims = Claims(out, plan.name)
        ran = 0
        while (claimed := claim(study, plan, opts, claims, reporter)) is not None:
            trial, lock = claimed
            try:
                run_trial(study, trial, plan, out, data_root, dev, reporter, opts)
            finally:
                lock.release()  # on Ctrl-C the trial stays RUNNING: the next claimer retries it
            ran += 1
        result.ran[plan.name] = ran
    for plan, study in studies:  # as they stand now (another process may still run a trial)
        result.states[plan.name] = state_counts(study)
    return result


def open_studies(suite: SuiteSpec, opts: TuneOptions, out: Path) -> tuple[list[Plan], list, str]:
    """Every plan (spaces checked), its study opened or created (a reuse checked), and the storage URL: all that can
    be refused, before any trial or job starts."""
    from finebench.benchmark.suite import check_writable

    todo = plans(suite, opts)
    check_writable(out)
    url = storage_url(out, opts.storage)
    # processes starting together would race to create the storage's tables and the studies: one at a time
    with held(Path(out) / "tuning" / "locks" / "storage.lock"):
        storage = open_storage(url)
        studies = [(plan, open_study(storage, plan, opts.trials)) for plan in todo]
    return todo, studies, url


def ensure_sources(runs: list[RunSpec], out: Path, data_root: str | None, dev: torch.device, reporter: Reporter):
    """Teacher / source runs the methods take are ordinary runs of the suite (recorded with their test result, as
    `bench run` records them), trained before any trial so that no trial builds a test loader."""
    from finebench.benchmark.suite import run_one, source_runs

    for role, spec in source_runs(runs):
        outcome = run_one(spec, out, data_root, dev, reporter, fail_fast=True, tag=f"{role} for the trials: ")
        if outcome.status not in ("done", "skipped"):
            raise SpecError(f"{role} run {spec.run_id} ({spec.label}) is {outcome.status}; the trials need it")


def state_counts(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    trials = study.get_trials(deepcopy=False)
    killed = interrupted(trials)
    for t in trials:
        name = "interrupted" if t.number in killed else t.state.name.lower()
        counts[name] = counts.get(name, 0) + 1
    return counts
