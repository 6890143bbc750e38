"""`bench`: run, report, list, fetch, verify. Thin: parse, call, print."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from finebench.benchmark.spec import SpecError, build_suite, load_yaml, parse_duration, parse_overrides

# flag -> suite key; None values (flag not given) do not override the spec file
RUN_FLAGS = {
    "methods": "methods",
    "dataset": "datasets",
    "backbone": "backbones",
    "seeds": "seeds",
    "epochs": "epochs",
    "weights": "weights",
    "batch_size": "batch_size",
    "lr": "lr",
    "resolution": "resolution",
    "time_budget": "time_budget",
    "skip_bad_images": "skip_bad_images",
    "amp": "amp",
    "channels_last": "channels_last",
    "compile": "compile",
    "cudnn": "cudnn",
}


def add_run(sub) -> None:
    p = sub.add_parser("run", help="train and evaluate methods under one budget; one record per run")
    suite_arguments(p, seeds=True)
    p.add_argument(
        "--tuned",
        metavar="STUDY",
        help="each method at the values `bench tune --study STUDY` chose on val "
        "(same dataset, backbone and budget flags as the tuning); rows read 'method (tuned: STUDY)'",
    )
    p.add_argument("--storage", help="with --tuned: the study's storage (default: sqlite in the results folder)")
    many = p.add_argument_group("parallel runs and clusters")
    many.add_argument("--devices", help="runs in parallel, one worker per device: GPU indices 0,1,2,3 (or cuda:N, "
                      "cpu entries for CPU workers)")  # fmt: skip
    cluster_arguments(many)
    p.add_argument("--quiet", action="store_true", help="no per-epoch output")
    p.add_argument("--dry-run", action="store_true", help="check everything a run checks before training, print the "
                   "resolved settings, the runs and the teacher/source runs they add, with a time estimate; train "
                   "nothing")  # fmt: skip
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed run (default: record it, go on)")


def cluster_arguments(many) -> None:
    many.add_argument("--launcher", choices=("local", "slurm"), help="submit each unrecorded run as a job through "
                      "submitit: slurm (a job array) or local (processes here)")  # fmt: skip
    many.add_argument("--partition", help="SLURM partition")
    many.add_argument("--gpus-per-job", type=int, help="GPUs per job (SLURM default 1; local: 1 with a GPU, else 0)")
    many.add_argument("--array-parallelism", type=int, help="jobs running at once (SLURM: no cap; local: 1)")
    many.add_argument("--job-timeout", help="time limit per job, e.g. 4h (default 24h); a job stopped at it is "
                      "requeued and its run resumes")  # fmt: skip
    many.add_argument("--cpus-per-job", type=int, help="CPUs per job (SLURM)")
    many.add_argument("--mem-gb", type=float, help="memory per job in GB (SLURM)")
    many.add_argument("--wait", action="store_true", help="SLURM: wait for the jobs to finish (local always waits)")


def suite_arguments(p, seeds: bool) -> None:
    """The flags that make a suite (shared by `bench run` and `bench tune`)."""
    p.add_argument("overrides", nargs="*", metavar="key=value", help="spec overrides, e.g. epochs=5 lr=0.1")
    p.add_argument("--spec", help="YAML suite spec; flags and key=value override it")
    p.add_argument("--preset", help="a named starting point: quick (the demo budget) or a paper's experiment "
                   "(bench list presets)")  # fmt: skip
    p.add_argument("--methods", help="'all' or a comma list, e.g. cut-fc,cut-full")
    p.add_argument("--dataset", "--datasets", dest="dataset", help="dataset name(s), comma separated")
    p.add_argument("--backbone", "--backbones", dest="backbone", help="backbone name(s), comma separated")
    if seeds:
        p.add_argument("--seeds", help="comma list of seeds, e.g. 0,1,2")
    p.add_argument("--epochs", type=int, help="training epochs for every method (the budget)")
    p.add_argument("--weights", help="default (shipped or hub), random, or a path to a state dict")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--resolution", type=int, help="image size in pixels (default: the backbone's)")
    p.add_argument("--time-budget", help="wall-clock cap per run, e.g. 10m; a capped run stops cleanly")
    p.add_argument(
        "--skip-bad-images",
        action="store_const",
        const=True,
        help="leave unreadable images out (the record counts them) instead of refusing the dataset",
    )
    p.add_argument("--amp", choices=("off", "bf16", "fp16"), help="mixed precision (fp16: with a grad scaler)")
    p.add_argument("--channels-last", action="store_const", const=True, help="NHWC model and batches")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the model's forward")
    p.add_argument("--cudnn", choices=("benchmark", "deterministic"), help="cuDNN autotuning (default) or "
                   "deterministic algorithms")  # fmt: skip
    p.add_argument("--out", default="results", help="results folder (default: results/)")
    p.add_argument("--data-root", help="data root (default: $FINEBENCH_DATA, then the user cache dir)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")


def suite_layers(args, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """preset < spec file < flags < key=value, as `build_suite` merges them."""
    layers: list[dict[str, Any]] = []
    if args.preset:
        layers.append({"preset": args.preset})
    if args.spec:
        layers.append(load_yaml(args.spec))
    flags = {key: getattr(args, flag, None) for flag, key in RUN_FLAGS.items()}
    flags = {k: v for k, v in flags.items() if v is not None}
    if "time_budget" in flags:
        flags["time_budget"] = parse_duration(flags["time_budget"], "--time-budget")
    return layers + [flags, overrides]


def note_unselected(suite, layers) -> None:
    from finebench.benchmark.suite import unselected_configs

    given = {name for layer in layers for name in layer.get("method_config", {}) or {}}  # not a preset's own
    for name in [n for n in unselected_configs(suite) if n in given]:
        print(f"note: method_config.{name} is for {name}, which this run does not select (--methods); left aside",
              file=sys.stderr)  # fmt: skip


def cmd_run(args) -> int:
    from finebench.benchmark.progress import Reporter
    from finebench.benchmark.suite import dry_run, run_suite

    layers = suite_layers(args, parse_overrides(args.overrides))
    suite = build_suite(*layers)
    note_unselected(suite, layers)
    if args.storage and not args.tuned:
        raise SpecError("--storage applies to --tuned STUDY (where the study is) and to `bench tune`")
    if args.tuned:
        import dataclasses

        from finebench.benchmark.tune import storage_url

        suite = dataclasses.replace(suite, tuned=(args.tuned, storage_url(Path(args.out), args.storage), args.out))
    cluster = [f"--{k.replace('_', '-')}" for k in CLUSTER_FLAGS if getattr(args, k) not in (None, False)]
    if cluster and not args.launcher:
        raise SpecError(f"{cluster[0]} applies to --launcher slurm|local only")
    if args.devices is not None and not args.devices.strip():
        raise SpecError("--devices is empty; list devices such as 0,1 or cuda:0,cuda:1 (or leave it out)")
    if args.data_root:
        from finebench.datasets.base import data_root

        data_root(args.data_root)  # a file given as the data root is named now
    # every check of the flags comes before the dry run, so that it refuses what a run would refuse
    opts, devices = None, None
    if args.launcher:
        from finebench.benchmark.launch import LaunchOptions, parse_timeout

        if args.device != "auto":
            raise SpecError("--device applies to runs in this process; a job uses its node's GPU (--gpus-per-job)")
        if args.devices or args.fail_fast:
            raise SpecError(f"--launcher cannot be combined with {'--devices' if args.devices else '--fail-fast'}")
        opts = LaunchOptions(args.launcher, args.partition, args.gpus_per_job, args.array_parallelism,
                             parse_timeout(args.job_timeout), args.cpus_per_job, args.mem_gb, args.wait)  # fmt: skip
    elif args.devices:
        from finebench.benchmark.parallel import parse_devices

        if args.device != "auto":
            raise SpecError("--device and --devices: give one (--devices lists the devices of parallel runs)")
        devices = parse_devices(args.devices)
    if args.dry_run:
        dry_run(suite, Path(args.out), args.data_root, args.device, Reporter(quiet=True),
                lambda line: print(line, flush=True))  # fmt: skip
        return 0
    reporter = Reporter(quiet=args.quiet)
    try:
        if opts is not None:
            from finebench.benchmark.launch import launch_suite

            result = launch_suite(suite, Path(args.out), args.data_root, opts, reporter)
        else:
            result = run_suite(suite, Path(args.out), args.data_root, args.device, reporter, args.fail_fast, devices)
    except KeyboardInterrupt:
        again = " ".join(shlex.quote(a) for a in ["bench", *sys.argv[1:]])
        print(f"\ninterrupted: every finished run is recorded in {args.out}; `{again}` continues with the rest "
              "(the interrupted run goes on from the end of its last finished epoch)", file=sys.stderr)  # fmt: skip
        return 130
    if result.submitted:
        print(f"submitted: {len(result.submitted)} run(s), {len(result.skipped)} already recorded in {args.out}; "
              f"`bench status --results {args.out}` follows them, `bench report` once they are done")  # fmt: skip
        return 0
    extra = f" (+ {len(result.sources)} teacher/source run(s) they used)" if result.sources else ""
    skipped = f"{len(result.skipped)} skipped (already recorded)"
    print(f"done: {len(result.done)} run(s) recorded{extra}, {skipped} in {args.out}")
    if result.elsewhere:
        print(f"{len(result.elsewhere)} run(s) were running in another process; run again later to pick up the rest")
    if result.failed:
        print(f"{len(result.failed)} run(s) FAILED, accounts in {Path(args.out) / 'failed'}/ (`bench run` again "
              "retries them; `bench report` lists them)", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def add_tune(sub) -> None:
    p = sub.add_parser("tune", help="search each method's hyperparameters on val only, the same number of trials "
                       "per method (Optuna); `bench run --tuned STUDY` then trains the final seeds")  # fmt: skip
    suite_arguments(p, seeds=False)
    t = p.add_argument_group("the search")
    t.add_argument("--study", default="tune", help="the study's name (default: tune); runs of `bench run --tuned "
                   "NAME` and rows of the report name it")  # fmt: skip
    t.add_argument("--trials", type=int, default=10, help="trials per method (default 10), pruned and failed ones "
                   "included; more later with a larger number")  # fmt: skip
    t.add_argument(
        "--sampler",
        default="tpe",
        choices=("tpe", "random", "grid"),
        help="tpe (default; random draws "
        "for its first half, at most 10), random, or grid (every space a list: space.lr=1e-3,1e-2)",
    )
    t.add_argument("--pruner", default="median", choices=("median", "none"), help="median (default): stop a trial "
                   "whose val curve is below the median of the finished ones' at the same epoch (from epoch 2, once 2 "
                   "have finished); its cost is counted")  # fmt: skip
    t.add_argument("--seed", type=int, default=0, help="the seed of every trial (and of the sampler); default 0")
    t.add_argument("--storage", help="Optuna storage URL (default: sqlite:///RESULTS/tuning.db); a database URL for "
                   "processes on several machines")  # fmt: skip
    many = p.add_argument_group("several tuning workers on one study")
    many.add_argument("--devices", help="one tuning worker per device: GPU indices 0,1 (or cuda:N, cpu entries)")
    many.add_argument("--workers", type=int, help="with --launcher: how many tuning jobs to submit (default 1)")
    cluster_arguments(many)
    p.add_argument("--quiet", action="store_true", help="no per-epoch output")


def cmd_tune(args) -> int:
    from finebench.benchmark.progress import Reporter
    from finebench.benchmark.tune import TuneOptions, split_space_overrides, tune_suite

    overrides, spaces = split_space_overrides(parse_overrides(args.overrides))
    if "seeds" in overrides or "seed" in overrides:
        raise SpecError("bench tune: every trial uses one seed, --seed N (the final seeds are `bench run --tuned`'s)")
    layers = suite_layers(args, overrides)
    suite = build_suite(*layers)
    note_unselected(suite, layers)
    opts = TuneOptions(args.study, args.trials, args.sampler, args.pruner, args.seed, args.storage, spaces)
    opts.check()
    out = Path(args.out)
    if args.data_root:
        from finebench.datasets.base import data_root

        data_root(args.data_root)
    cluster = [f"--{k.replace('_', '-')}" for k in CLUSTER_FLAGS if getattr(args, k) not in (None, False)]
    if (cluster or args.workers) and not args.launcher:
        raise SpecError(f"{(cluster or ['--workers'])[0]} applies to --launcher slurm|local only")
    reporter = Reporter(quiet=args.quiet)
    try:
        if args.launcher:
            from finebench.benchmark.launch import LaunchOptions, parse_timeout
            from finebench.benchmark.tune import open_studies
            from finebench.benchmark.tune_launch import tune_jobs

            if args.devices or args.device != "auto":
                raise SpecError("--launcher cannot be combined with --devices or --device (a job uses its node's GPU)")
            launch = LaunchOptions(
                args.launcher,
                args.partition,
                args.gpus_per_job,
                args.array_parallelism,
                parse_timeout(args.job_timeout),
                args.cpus_per_job,
                args.mem_gb,
                args.wait,
            )
            launch.check()
            if args.workers is not None and args.workers < 1:
                raise SpecError(f"--workers: must be >= 1, got {args.workers}")
            open_studies(suite, opts, out)  # spaces, storage and a study's reuse checked before anything is submitted
            tune_jobs(suite, opts, out, args.data_root, launch, args.workers or 1, reporter)
            if args.launcher == "slurm" and not args.wait:
                print("submitted; `bench tune` with the same flags (or --wait) shows the studies once the jobs end")
                return 0
        elif args.devices:
            from finebench.benchmark.parallel import parse_devices
            from finebench.benchmark.tune import open_studies
            from finebench.benchmark.tune_launch import tune_parallel

            if args.device != "auto":
                raise SpecError("--device and --devices: give one (--devices lists the tuning workers' devices)")
            devices = parse_devices(args.devices)
            open_studies(suite, opts, out)
            tune_parallel(suite, opts, out, args.data_root, devices, reporter)
        result = tune_suite(suite, opts, out, args.data_root, args.device, reporter)  # all full: prints the counts
    except KeyboardInterrupt:
        again = " ".join(shlex.quote(a) for a in ["bench", *sys.argv[1:]])
        print(f"\ninterrupted: finished trials are kept in the study; `{again}` goes on (the interrupted trial is "
              "retried from its last finished epoch)", file=sys.stderr)  # fmt: skip
        return 130
    for name, states in result.states.items():
        counts = ", ".join(f"{n} {k}" for k, n in sorted(states.items()))
        print(f"{name}: {counts}")
    running = sum(states.get("running", 0) for states in result.states.values())
    if running:
        print(f"every method's {opts.trials} trial(s) are claimed; {running} still running in another process: "
              f"`bench run --tuned {opts.study}` can start once they finish")  # fmt: skip
        return 0
    print(f"done: every method has its {opts.trials} trial(s); `bench run --tuned {opts.study} --seeds 0,1,2 ...` "
          "(with the same dataset, backbone and budget flags) trains the final seeds at the chosen values")  # fmt: skip
    return 0


CLUSTER_FLAGS = ("partition", "gpus_per_job", "array_parallelism", "job_timeout", "cpus_per_job", "mem_gb", "wait")


def add_report(sub) -> None:
    p = sub.add_parser("report", help="tables from the run records")
    p.add_argument("--results", default="results", help="results folder to read (default: results/)")
    p.add_argument("--out", default="reports", help="where to write the tables (default: reports/)")
    p.add_argument(
        "--format",
        default="all",
        choices=("md", "tex", "csv", "both", "all"),
        help="all (default): Markdown, LaTeX and CSV; both: Markdown and LaTeX",
    )
    p.add_argument("--methods", help="only these methods (comma list of names or row labels); teachers stay")
    p.add_argument("--datasets", help="only these datasets (comma list)")
    p.add_argument("--backbones", help="only these backbones (comma list)")
    p.add_argument("--baseline", default="cut-full", help="the row every method is tested against (default cut-full)")
    p.add_argument("--target", type=float, help="add the time to reach this val top-1 (%%), e.g. 85")
    p.add_argument("--no-pdf", action="store_true", help="figures as PNG only (default: PNG and PDF)")
    p.add_argument("--wide", action="store_true", help="every column in the main tables (default: a compact table "
                   "for one column of a paper, the details in a note; the CSV always has every column)")  # fmt: skip
    p.add_argument(
        "--metric",
        default="top1",
        choices=("top1", "top3", "mean_class"),
        help="the test metric (at the best-val epoch) the tables lead with, test against the baseline and bold",
    )


def cmd_report(args) -> int:
    from finebench.methods.catalogue import MethodCatalogue
    from finebench.reports import catalogue, write_report

    catalogue.use(MethodCatalogue())  # what reports know of methods, handed over here

    def split(v):
        return [x.strip() for x in v.split(",") if x.strip()] if v else None

    report = write_report(Path(args.results), Path(args.out), args.format, split(args.methods), split(args.datasets),
                          split(args.backbones), args.baseline, args.target, args.metric, not args.no_pdf,
                          args.wide)  # fmt: skip
    for err in report.errors:
        print(f"warning: skipped damaged record {err} (`bench run` moves it aside and trains that run again)",
              file=sys.stderr)  # fmt: skip
    print(report.markdown)
    print(f"{report.runs} run(s); wrote " + ", ".join(str(p) for p in report.written))
    return 0


def add_status(sub) -> None:
    p = sub.add_parser("status", help="each run of a results folder: done, running, failed, queued or stopped")
    p.add_argument("--results", default="results", help="results folder (default: results/)")


def cmd_status(args) -> int:
    from finebench.results.status import status_text

    print(status_text(Path(args.results)))
    return 0


def add_list(sub) -> None:
    p = sub.add_parser("list", help="what is registered (datasets: and whether each is under the data root)")
    p.add_argument("what", choices=("methods", "datasets", "backbones", "presets"))
    p.add_argument("--data-root", help="data root for `list datasets` (default: $FINEBENCH_DATA, then the cache dir)")
    p.add_argument("--verbose", "-v", action="store_true", help="methods: citation and config keys with defaults and "
                   "meanings; datasets: classes, images, source and license")  # fmt: skip


def cmd_list(args) -> int:
    from finebench.backbones import BACKBONES
    from finebench.datasets import DATASETS, data_root, presence
    from finebench.methods import METHODS

    if args.what == "presets":
        from finebench.benchmark.presets import PRESETS, describe

        for preset in PRESETS.values():
            print("\n".join(describe(preset)))
        return 0
    registry = {"methods": METHODS, "datasets": DATASETS, "backbones": BACKBONES}[args.what]
    width = max(len(e.name) for e in registry)
    if args.what == "datasets":
        print(f"data root: {data_root(args.data_root)}")
    for entry in registry:
        if args.what == "methods" and args.verbose:
            print("\n".join(describe_method(entry.name)) + "\n")
            continue
        if args.what == "datasets":
            print(f"{entry.name:<{width}}  {presence(entry.name, args.data_root):<7}  {entry.description}")
            if args.verbose:
                print(f"{'':<{width}}           {entry.factory().facts}")
        else:
            print(f"{entry.name:<{width}}  {entry.description}")
            if args.what == "backbones" and args.verbose:
                print("\n".join(f"{'':<{width}}  {line}" for line in describe_stages(entry.name)))
    if args.what == "backbones":
        print(f"{'(any timm name)':<{width}}  other timm CNNs, with --weights PATH, hub weights when online, or random")
    return 0


def describe_stages(name: str) -> list[str]:
    """A backbone's stages as `cut-stage`, `freeze_stages` and the cut levels count them (built with random weights)."""
    from finebench.backbones import create_backbone
    from finebench.backbones.stages import stage_map

    model = create_backbone(name, 2, "random").model
    stages = stage_map(model)
    sizes = dict(model.named_parameters())
    lines = []
    for i, (names, module) in enumerate(zip(stages.stages, stages.stage_modules, strict=True)):
        count = sum(sizes[n].numel() for n in names)
        lines.append(f"stage {i} (-{len(stages.stages) - i}): up to {module}, {count:,} parameters")
    return lines


def describe_method(name: str) -> list[str]:
    """A method's `bench list methods -v` entry: description, citation, then each config key with its default."""
    from finebench.methods import METHODS
    from finebench.methods.base import OptimOptions, config_keys

    entry = METHODS.entry(name)
    cls = entry.factory
    lines = [f"{name}: {entry.description}"]
    if cls.citation:
        lines.append(f"    paper: {cls.citation}")
    keys = config_keys(cls.Config)
    if keys:
        lines.append(f"    settings (method_config.{name}.KEY=VALUE):")
        width = max(len(f"{k}={d}") for k, d, _ in keys)
        lines += [f"      {f'{k}={d}':<{width}}  {m}".rstrip() for k, d, m in keys]
    common = config_keys(OptimOptions)
    lines.append("    learning-rate options (every method): " + ", ".join(f"{k}={d}" for k, d, _ in common))
    import dataclasses

    space = cls.search_space(dataclasses.asdict(cls.Config()))
    if space:
        shown = ", ".join(f"{k}={v.text()}" for k, v in space.items())
        lines.append(f"    bench tune's space (space.KEY=...): {shown}")
    return lines


def add_verify(sub) -> None:
    p = sub.add_parser("verify", help="decode every image of a dataset; list the missing, corrupt or unreadable")
    p.add_argument("name")
    p.add_argument("--data-root", help="data root (default: $FINEBENCH_DATA, then the user cache dir)")


def cmd_verify(args) -> int:
    from finebench.datasets import build_dataset
    from finebench.datasets.cache import decode_all

    data = build_dataset(args.name, args.data_root)  # annotations parsed, every listed file present
    where = data.info.root or "(generated)"
    print(f"{args.name}: {len(data)} images, {data.info.num_classes} classes under {where}; decoding every image")
    _, bad = decode_all(data, 32, "squash", "bilinear", every=True)
    for i in sorted(bad):
        print(f"  bad: {data.ids[i]}: {bad[i]}")
    if bad:
        print(f"{args.name}: {len(bad)} of {len(data)} images cannot be read (re-fetch them; unreadable files can "
              "also be left out with --skip-bad-images, files that differ from the official ones cannot)")  # fmt: skip
        return 1
    print(f"{args.name}: all {len(data)} images readable; manifest {data.info.manifest_hash}")
    return 0


def add_fetch(sub) -> None:
    p = sub.add_parser("fetch", help="download a dataset (resumable), check it, extract safely under the data root")
    p.add_argument("name")
    p.add_argument("--data-root", help="data root (default: $FINEBENCH_DATA, then the user cache dir)")
    p.add_argument("--archive", help="use this already-downloaded archive instead of downloading")
    p.add_argument("--annotations", help="iNat: the annotation file (.json or the official .tar.gz) already here")
    p.add_argument("--url", help="download from this URL instead of the official one (a mirror)")
    p.add_argument("--md5", help="iNat images archive: expected MD5 (default: the official one; none: do not check)")


def cmd_fetch(args) -> int:
    from finebench.datasets import check_name, family
    from finebench.datasets.base import DatasetError, data_root
    from finebench.datasets.fetch import FETCHERS

    check_name(args.name)
    if family(args.name) not in FETCHERS:
        raise DatasetError(f"bench fetch: no fetcher for {args.name!r}; fetchable: {', '.join(FETCHERS)}")
    root = data_root(args.data_root)
    root.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"archive": Path(args.archive) if args.archive else None}
    if args.url:
        kwargs["url"] = args.url
    if args.annotations:
        kwargs["annotations"] = Path(args.annotations)
    if args.md5:
        kwargs["md5"] = None if args.md5.lower() == "none" else args.md5.lower()

    def progress(done: int, total: int | None) -> None:
        if total:
            filled = int(30 * min(done, total) / total)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {100 * done / total:3.0f}% "
            print(f"\r  {bar}{done / 2**20:.1f} of {total / 2**20:.1f} MiB", end="", flush=True)
        else:
            print(f"\r  {done / 2**20:.1f} MiB", end="", flush=True)

    target = FETCHERS[family(args.name)](root, args.name, progress=progress, **kwargs)
    print(f"\n{args.name}: verified and ready in {target}")
    return 0


COMMANDS = {"run": cmd_run, "tune": cmd_tune, "status": cmd_status, "report": cmd_report, "list": cmd_list,
            "fetch": cmd_fetch, "verify": cmd_verify}  # fmt: skip


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("finebench")
    except PackageNotFoundError:
        return "(not installed)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="finebench: fine-grained transfer learning, one budget")
    p.add_argument("--version", action="version", version=f"finebench {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (add_run, add_tune, add_status, add_report, add_list, add_fetch, add_verify):
        add(sub)
    return p


def interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (a job scheduler's stop) ends a run as Ctrl-C does: store consistent, locks freed


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, interrupt)
    # cuBLAS's reproducible workspace must be chosen before the process's first GPU matrix product
    # (cudnn=deterministic relies on it; it costs a few MiB of GPU memory)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    p = parser()
    args, extra = p.parse_known_args(argv)
    if args.command in ("run", "tune"):  # key=value overrides may stand anywhere among the flags
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # output still buffered goes now, where a closed pipe is caught, not at interpreter exit
        return code
    except BrokenPipeError:  # `bench status | head`: the reader has gone; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, FileNotFoundError) as e:  # SpecError, DatasetError, WeightsError: messages for the user
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
