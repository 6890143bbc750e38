"""Expand a SuiteSpec into RunSpecs, check every name before any training, run what is not yet recorded."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from finebench.backbones import backbone_info, create_backbone, data_config, default_resolution
from finebench.benchmark.checkpoint import discard, recorded
from finebench.benchmark.env import git_commit
from finebench.benchmark.progress import Reporter, fmt_seconds
from finebench.benchmark.spec import RunSpec, SpecError, SuiteSpec, build_config
from finebench.datasets import build_dataset, check_name
from finebench.datasets.cache import cached_images, check_room
from finebench.methods import METHODS
from finebench.methods.base import OPTIM_DEFAULTS, OptimOptions
from finebench.results.lock import RunLock
from finebench.results.queue import note_queued
from finebench.results.store import ResultStore


def resolve_methods(names: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for name in names:
        for n in METHODS.names() if name == "all" else [name]:
            METHODS.entry(n)  # raises with the known names
            if n not in out:
                out.append(n)
    return out


def unselected_configs(suite: SuiteSpec) -> list[str]:
    """Methods that `method_config` configures but the suite does not select: one spec file serves any subset of
    its methods. A name that is no registered method is an error, with the closest name."""
    methods = resolve_methods(suite.methods)
    for name in suite.method_config:
        if name not in METHODS:
            raise SpecError(f"method_config: {METHODS.unknown_message(name)}")
        method_config(name, suite.method_config)  # its keys and types are checked all the same
    return [name for name in suite.method_config if name not in methods]


def method_config(name: str, overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A method's resolved config: its own keys, then the learning-rate options every method takes (OptimOptions)."""
    cls = METHODS.get(name)
    given = dict(overrides.get(name, {}))
    where = f"method_config.{name}"
    common = {k: given.pop(k) for k in OPTIM_DEFAULTS if k in given}
    try:
        cfg = build_config(cls.Config, given, where)
    except SpecError as e:
        if "unknown key" in str(e):  # name the options every method takes among the valid keys
            raise SpecError(f"{e}; and for every method: {', '.join(OPTIM_DEFAULTS)}") from e
        raise
    options = build_config(OptimOptions, common, where)
    if not cls.trains and options != OptimOptions():
        raise SpecError(f"{where}: {name} trains nothing itself, so head_lr_scale and layer_decay do not apply to it; "
                        "set them on the method whose model it takes")  # fmt: skip
    if not (math.isfinite(options.head_lr_scale) and options.head_lr_scale > 0):
        raise SpecError(f"{where}.head_lr_scale: must be a positive number (10: ten times the learning rate on the "
                        f"new classifier), got {options.head_lr_scale}")  # fmt: skip
    if not 0 < options.layer_decay <= 1:
        raise SpecError(f"{where}.layer_decay: must be in (0, 1] (1: off; 0.75: each layer down trains at 0.75 x "
                        f"the next one's rate), got {options.layer_decay}")  # fmt: skip
    return dataclasses.asdict(cfg) | dataclasses.asdict(options)


def expand(suite: SuiteSpec) -> list[RunSpec]:
    """Every (seed, dataset, backbone, method) run, seed-major so that whole comparisons finish early; with
    `suite.tuned`, each at its method's values chosen by that `bench tune` study."""
    if suite.tuned is not None:
        from finebench.benchmark.tune_choice import tuned_suite_runs

        return tuned_suite_runs(dataclasses.replace(suite, tuned=None), *suite.tuned)
    methods = resolve_methods(suite.methods)
    unselected_configs(suite)  # a name that is no method is an error
    for name in suite.datasets:
        check_name(name)
    for name in suite.backbones:
        backbone_info(name)
    configs = {m: method_config(m, suite.method_config) for m in methods}
    runs = []
    for seed in suite.seeds:
        for dataset in suite.datasets:
            for backbone in suite.backbones:
                train = suite.train
                if train.resolution is None:
                    train = dataclasses.replace(train, resolution=default_resolution(backbone))
                runs += [RunSpec(m, configs[m], dataset, backbone, seed, train) for m in methods]
    return runs


@dataclass
class SuiteResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # recorded under <out>/failed/, tried again by a later run
    elsewhere: list[str] = field(default_factory=list)  # running in another process on the same results folder
    sources: list[str] = field(default_factory=list)  # teacher / source runs trained on the way (recorded too)
    submitted: list[str] = field(default_factory=list)  # handed to a cluster scheduler, not waited for


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise SpecError(f"device {name!r}: {e}; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device {name!r}: CUDA is not available on this machine; use --device cpu")
    return device


def preflight(
    runs: list[RunSpec], data_root: str | None, device: torch.device, reporter: Reporter | None = None
) -> dict[str, Any]:
    """Fail before any training: every dataset present and its images readable (the image caches are built here),
    every backbone built with its weights and run once at its resolution, every method's structure-dependent
    setting and every teacher / source run it asks for checked. Returns the datasets by name."""
    from finebench.benchmark.runner import build_method, source_spec

    datasets = {name: build_dataset(name, data_root) for name in dict.fromkeys(r.dataset for r in runs)}
    classes = {name: data.info.num_classes for name, data in datasets.items()}
    for r in runs:  # an image cache that cannot fit is refused with its size
        interpolation = data_config(backbone_info(r.backbone).arch)["interp"]
        check_room(datasets[r.dataset], r.train.resolution, r.train.resize, interpolation)
    for r in runs:  # unreadable images are named now, not after hours of other runs
        interpolation = data_config(backbone_info(r.backbone).arch)["interp"]
        progress = reporter.counter(f"caching {r.dataset} at {r.train.resolution} px") if reporter else None
        cached_images(datasets[r.dataset], r.train.resolution, r.train.resize, interpolation, progress=progress,
                      skip_bad=r.train.skip_bad_images)  # fmt: skip
    models: dict[tuple[str, int], torch.nn.Module] = {}

    def structure_for(dataset: str):
        def structure(backbone: str) -> torch.nn.Module:
            key = (backbone, classes[dataset])
            if key not in models:
                models[key] = create_backbone(backbone, classes[dataset], "random").model.eval()
            return models[key]

        return structure

    needed = []
    for r in runs:
        method = build_method(r)
        method.preflight(r, structure_for(r.dataset))  # structure-dependent settings (stage counts, a branch...)
        needed.append((r.dataset, r.backbone, r.train.weights, r.train.resolution))
        extra = method.extra_backbones(r)  # a teacher, say: checked now, not after hours of training
        needed += [(r.dataset, b, w, r.train.resolution) for b, w in extra]
        for source in method.sources(r):
            s = source_spec(r, source)
            needed.append((s.dataset, s.backbone, s.train.weights, s.train.resolution))
    for dataset, backbone, weights, res in dict.fromkeys(needed):
        model = create_backbone(backbone, classes[dataset], weights).model.to(device).eval()
        try:
            with torch.no_grad():
                model(torch.zeros(2, 3, res, res, device=device))
        except RuntimeError as e:
            if "memory" in str(e).lower():
                raise SpecError(f"backbone {backbone!r} at resolution {res} px runs out of memory here ({e}); use a "
                                "lower --resolution or a smaller model") from e  # fmt: skip
            raise SpecError(f"backbone {backbone!r} cannot run at resolution {res} px ({e}); use a larger one") from e
    return datasets


def source_runs(runs: list[RunSpec]) -> list[tuple[str, RunSpec]]:
    """(role, run) of every teacher / source run the suite's runs ask for that is not one of them, in order."""
    from finebench.benchmark.runner import build_method, source_spec

    own = {r.run_id for r in runs}
    out: dict[str, tuple[str, RunSpec]] = {}
    todo = list(runs)
    while todo:
        r = todo.pop(0)
        for source in build_method(r).sources(r):
            s = source_spec(r, source)
            if s.run_id not in own and s.run_id not in out:
                out[s.run_id] = (source.role, s)
                todo.append(s)  # a source's own sources
    return list(out.values())


def measured_speed(backbone: str, classes: int, train: Any, device: torch.device) -> tuple[float, float]:
    """Seconds per image of a full training step (forward, loss, backward, SGD update) and of an evaluation forward
    pass, timed here on `device` with random weights (two timed steps after a warm-up)."""
    model = create_backbone(backbone, classes, "random").model.to(device)
    bs = max(2, min(train.batch_size, 16))
    x = torch.randn(bs, 3, train.resolution, train.resolution, device=device)
    y = torch.zeros(bs, dtype=torch.long, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def timed(fn, n=2):
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / (n * bs)

    model.train()
    t_train = timed(step)
    model.eval()
    with torch.no_grad():
        t_eval = timed(lambda: model(x))
    return t_train, t_eval


def dry_run(suite: SuiteSpec, out: Path, data_root: str | None, device: str, reporter: Reporter, emit=print) -> None:
    """What `bench run` would do, without training or writing records: the resolved settings, each run (done, todo or
    damaged) and the teacher / source runs they add; then every check a run makes before training (names, data and
    images, weights, resolution, each method's settings, teachers and sources), which raises as a run would; then a
    time estimate from this device's measured speed. Lines go to `emit` as they are known."""
    from finebench.datasets.split import cap_per_class, make_split

    dev = pick_device(device)
    runs = expand(suite)
    store = ResultStore(out)
    train = runs[0].train if runs else suite.train
    if runs and runs[0].tuned:  # the suite's settings; each method's tuned values are on its line below
        train = dataclasses.replace(train, **runs[0].tuned.get("base", {}))
    emit("resolved settings: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(train).items()))
    for name in dict.fromkeys(r.method for r in runs):
        cfg = next(r.method_config for r in runs if r.method == name)
        emit(f"  {name}: " + (", ".join(f"{k}={v}" for k, v in cfg.items()) or "(no settings)"))

    def state(run_id: str) -> str:
        if store.damaged(run_id) is not None:
            return "damaged"  # `bench run` moves the file aside and trains the run again
        return "done" if store.has(run_id) else "todo"

    listed = [(r, "", state(r.run_id)) for r in runs]
    sources = [(s, f"{role}: ", state(s.run_id)) for role, s in source_runs(runs)]
    emit("runs:")
    for r, role, st in listed:
        emit(f"{r.run_id}  {st:<7}  {role}{r.label}")
    if sources:
        emit("teacher / source runs they use (trained once when not recorded, charged to each run that uses them):")
        for r, role, st in sources:
            emit(f"{r.run_id}  {st:<7}  {role}{r.label}")
    datasets = preflight([r for r, _, _ in listed + sources], data_root, dev, reporter)
    emit("checks: passed (data and images, backbones and weights at their resolution, every method's settings)")
    warn_precision([r for r, _, _ in listed + sources], dev, emit)
    speeds: dict[tuple, tuple[float, float]] = {}
    sizes: dict[tuple, tuple[int, int, int]] = {}

    def estimate(r: RunSpec) -> float:
        data = datasets[r.dataset]
        key = (r.backbone, r.train.resolution, r.train.batch_size)
        if key not in speeds:
            speeds[key] = measured_speed(r.backbone, data.info.num_classes, r.train, dev)
        split_seed = r.seed if r.train.split_seed == "seed" else r.train.split_seed
        skey = (r.dataset, tuple(r.train.split), split_seed, r.train.train_per_class)
        if skey not in sizes:
            split = make_split(data, r.train.split, split_seed, None)
            sizes[skey] = (len(cap_per_class(split.train, data.labels, r.train.train_per_class)), len(split.val),
                           len(split.test))  # fmt: skip
        n_train, n_val, n_test = sizes[skey]
        t_train, t_eval = speeds[key]
        if not METHODS.get(r.method).trains:
            return (n_val + n_test) * t_eval
        return r.train.epochs * (n_train * t_train + n_val * t_eval) + 2 * n_test * t_eval

    total = sum(estimate(r) for r, _, st in listed + sources if st != "done")
    speed = ", ".join(f"{b} at {res} px: {1 / t:.1f} img/s" for (b, res, _), (t, _) in speeds.items())
    todo = sum(st != "done" for _, _, st in listed + sources)
    emit(f"estimate: ~{fmt_seconds(total)} on {dev} for the {todo} run(s) not recorded (training and evaluation at "
         f"the training speed measured here: {speed or 'nothing to run'}; every method priced as a full "
         "fine-tuning step, so head-only cuts take less; analyses after training, such as semantic pruning's, print "
         "their own estimate when they start)")  # fmt: skip


def check_writable(out: Path) -> None:
    """The results folder must take files before hours of training go into it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test."):
            pass
    except OSError as e:
        raise SpecError(
            f"results folder {out} cannot be written ({e.strerror or e}); choose another with --out or make it writable"
        ) from e


def run_suite(
    suite: SuiteSpec,
    out: Path,
    data_root: str | None,
    device: str = "auto",
    reporter: Reporter | None = None,
    fail_fast: bool = False,
    devices: list[torch.device] | None = None,
) -> SuiteResult:
    """Run the suite's unrecorded runs one after another on `device`, or with `devices`, in parallel: one worker
    process per listed device, each taking the next run (see `parallel.py`). Either way into one store."""
    reporter = reporter or Reporter()
    dev = pick_device("cpu" if devices else device)  # with --devices the workers hold the GPUs, not this process
    where = f"devices {', '.join(map(str, devices))}" if devices else f"device {dev}"
    # the precision warning for the devices runs train on: this one, or the CPU workers of --devices (a GPU worker's
    # device is not touched from here, before the workers start)
    warn_on = [d for d in devices if d.type == "cpu"] if devices else [dev]
    todo, result = plan(suite, out, data_root, dev, reporter, where, warn_on)
    note_queued(out, todo, f"bench run ({where})")
    if devices:
        from finebench.benchmark.parallel import run_parallel

        outcomes = run_parallel(todo, devices, out, data_root, reporter, fail_fast)
    else:
        outcomes = (run_one(spec, out, data_root, dev, reporter, fail_fast, f"[{i}/{len(todo)}] ")
                    for i, spec in enumerate(todo, 1))  # fmt: skip
    return collect(outcomes, todo, result)


def plan(
    suite: SuiteSpec,
    out: Path,
    data_root: str | None,
    dev: torch.device,
    reporter: Reporter,
    where: str,
    warn_on: list[torch.device] | None = None,
) -> tuple[list[RunSpec], SuiteResult]:
    """Everything checked before any training (names, data, weights, resolution, the results folder); returns the
    runs not yet recorded and a SuiteResult listing the recorded ones as skipped."""
    git_commit()  # pin the commit of the code this process runs, before the checkout can change under it
    runs = expand(suite)
    check_writable(out)
    preflight(runs, data_root, dev, reporter)
    store = ResultStore(out)
    set_aside_damaged(store, runs, reporter)
    result = SuiteResult()
    todo = [r for r in runs if not store.has(r.run_id)]
    result.skipped = [r.run_id for r in runs if store.has(r.run_id)]
    for run_id in result.skipped:  # a kill between writing a record and removing its checkpoints left them
        discard(out, run_id)
    reporter.print(f"suite: {len(runs)} runs ({len(result.skipped)} already recorded in {store.runs}), {where}")
    for d in warn_on if warn_on is not None else [dev]:
        warn_precision(runs, d, reporter.print)
    return todo, result


def set_aside_damaged(store: ResultStore, runs: list[RunSpec], reporter: Reporter) -> None:
    """A record file that cannot be read is moved to <out>/damaged/ (kept) and its run trains again."""
    for r in runs:
        if moved := store.set_aside_if_damaged(r.run_id):
            why, dest = moved
            reporter.print(f"damaged record {store.path(r.run_id)} ({why}): moved to {dest}; {r.label} trains again")


def warn_precision(runs: list[RunSpec], dev: torch.device, emit) -> None:
    """A warning, before training, for each mixed-precision setting this device has no native support for."""
    from finebench.benchmark.precision import precision_warning

    for amp in dict.fromkeys(r.train.amp for r in runs):
        text = precision_warning(amp, dev)
        if text:
            emit(f"warning: {text}")


def collect(outcomes: Iterable[Outcome], todo: list[RunSpec], result: SuiteResult) -> SuiteResult:
    """File each run's outcome in `result`; teacher / source runs trained on the way are listed apart."""
    todo_ids = {r.run_id for r in todo} | set(result.skipped)
    for outcome in outcomes:
        getattr(result, outcome.status).append(outcome.run_id)
        known = {*result.sources, *result.done, *todo_ids}
        result.sources += [rid for rid in outcome.sources if rid not in known]
    return result


@dataclass
class Outcome:
    run_id: str
    status: str  # done | skipped | failed | elsewhere (the SuiteResult list it goes to)
    sources: list[str] = field(default_factory=list)  # run ids of teacher / source runs it used


def run_one(
    spec: RunSpec, out: Path, data_root: str | None, dev: torch.device, reporter: Reporter, fail_fast: bool,
    tag: str = "",
) -> Outcome:  # fmt: skip
    """One run under its lock: skipped when recorded or running elsewhere; recorded, or its failure accounted."""
    from finebench.benchmark.runner import Run

    store = ResultStore(out)
    lock = RunLock(out, spec.run_id)
    if not lock.acquire():
        reporter.print(f"{tag}{spec.label}  (run {spec.run_id}): running in another process, skipped")
        return Outcome(spec.run_id, "elsewhere")
    try:
        if store.has(spec.run_id):  # recorded meanwhile: as a teacher or source model, or by another process
            reporter.print(f"{tag}{spec.label}  (run {spec.run_id}): recorded meanwhile")
            return Outcome(spec.run_id, "skipped")
        reporter.print(f"{tag}{spec.label}  (run {spec.run_id})")
        t0 = time.perf_counter()
        try:
            record = Run(spec, data_root, out, dev, reporter).execute()
        except Exception as e:  # noqa: BLE001 - one run's failure must not cost the others
            if fail_fast:
                raise
            info = failure_info(spec, e, time.perf_counter() - t0)
            path = store.record_failure(spec.run_id, info)
            reporter.print(f"  FAILED ({info['status']}): {info['message']}{info.get('hint', '')} -> {path}")
            return Outcome(spec.run_id, "failed")
        path = store.append(record)
        recorded(store, spec.run_id)
        best = record.best
        reporter.print(
            f"  best epoch {best['epoch']}: val top1 {best['val']['top1']:.1f}, test top1 "
            f"{best['test']['top1']:.1f} top3 {best['test']['top3']:.1f}  "
            f"({fmt_seconds(time.perf_counter() - t0)}) -> {path}"
        )
        return Outcome(spec.run_id, "done", list(record.sources.values()))
    finally:
        lock.release()


def failure_info(spec: RunSpec, error: Exception, seconds: float) -> dict[str, Any]:
    """What a failed run's account holds: status (diverged, out-of-memory, error), message, traceback, spec."""
    from finebench.benchmark.runner import Diverged

    text = str(error)
    info: dict[str, Any] = {
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "status": "error",
        "message": f"{type(error).__name__}: {text}".splitlines()[0][:500],
        "traceback": traceback.format_exc(),
        "seconds": seconds,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if isinstance(error, Diverged):
        info.update(status="diverged", epoch=error.epoch, losses=error.losses, last_good=error.last_good)
    elif isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text:
        info.update(
            status="out-of-memory",
            hint=f" (hint: a smaller --batch-size than {spec.train.batch_size}, or a lower --resolution)",
        )
    return info
