"""`bench tune` and `bench run --tuned`: search spaces, val-only trials, equal trial counts, shared studies, resume
after kill -9, the final runs' records and the report's default-vs-tuned table."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import optuna
import pytest
import torch

from finebench import cli
from finebench.benchmark import runner
from finebench.benchmark.progress import Reporter
from finebench.benchmark.spec import SpecError, build_suite
from finebench.benchmark.suite import expand
from finebench.benchmark.tune import (
    TuneOptions,
    check_space,
    counted,
    open_storage,
    plans,
    resolve_spaces,
    split_space_overrides,
    target,
)
from finebench.benchmark.tune_choice import summary
from finebench.core.space import Space, SpaceError, choice, log, parse_space
from finebench.methods import METHODS
from finebench.results.store import ResultStore

SUITE = ["--dataset", "synthetic:4x16", "--backbone", "test_resnet", "--weights", "random", "--epochs", "3",
         "--resolution", "32", "--batch-size", "8"]  # fmt: skip


def small_run(method):
    suite = build_suite({"methods": [method], "datasets": ["synthetic:4x16"], "backbones": ["test_resnet"],
                         "weights": "random", "epochs": 3, "resolution": 32, "batch_size": 8})  # fmt: skip
    return expand(suite)[0]


# ------------------------------------------------------------------------------------------------ spaces (by hand)


def test_space_syntax():
    assert parse_space("log:1e-4:1e-1") == Space("log", 1e-4, 0.1)
    assert parse_space("uniform:0:1") == Space("uniform", 0.0, 1.0)
    assert parse_space("int:1:32") == Space("int", 1.0, 32.0)
    assert parse_space("2,4,8") == choice(2, 4, 8) and parse_space("2,4,8").choices == (2, 4, 8)  # ints stay ints
    assert parse_space("0.01").fixed and parse_space(0.01).choices == (0.01,)
    assert parse_space("1e-3,1e-2").choices == (0.001, 0.01)
    assert log(1e-4, 1e-1).text() == "log:0.0001:0.1" and parse_space(log(1e-4, 1e-1).text()) == log(1e-4, 1e-1)
    cases = [("log:0:1", "LOW > 0"), ("log:1:0.1", "below HIGH"), ("cubic:1:2", "expected log:LOW"),
             ("int:1.5:3", "integers"), ("", "empty"), ("2,2", "twice"), ("log:1e-3", "log:LOW:HIGH")]  # fmt: skip
    for bad, words in cases:
        with pytest.raises(SpaceError, match=words):
            parse_space(bad, "space.lr")


def test_every_method_that_trains_declares_a_valid_default_space():
    for entry in METHODS:
        cls = entry.factory
        run = small_run(entry.name)
        space = resolve_spaces(entry.name, run.method_config, {})
        if not cls.trains:
            assert space == {}
            continue
        assert "lr" in space or "train.lr" in space, entry.name  # the learning rate, for every method
        if cls.tune_key:
            assert cls.tune_key in space and target(entry.name, cls.tune_key) == ("method", cls.tune_key)
        check_space(run, space)  # both ends of every range make a valid run of the method


def test_space_keys_resolve_to_the_method_or_the_suite_and_overrides_apply():
    assert target("cut-full", "lr") == ("train", "lr")
    assert target("filter-attention", "lr") == ("method", "lr")  # its own Adam's rate, not the suite's
    assert target("filter-attention", "train.lr") == ("train", "lr")
    assert target("lora", "rank") == ("method", "rank")
    assert target("cut-full", "head_lr_scale") == ("method", "head_lr_scale")
    with pytest.raises(SpecError, match="budget is the same"):
        target("cut-full", "epochs")
    with pytest.raises(SpecError, match="valid: .*rank"):
        target("lora", "rnak")
    cfg = small_run("cut-full").method_config
    space = resolve_spaces("cut-full", cfg, {"*": {"lr": "1e-3,1e-2"}, "cut-full": {"weight_decay": "default"}})
    assert space == {"lr": choice(0.001, 0.01)}  # weight decay dropped: it keeps the suite's value
    fa = resolve_spaces("filter-attention", small_run("filter-attention").method_config, {"filter-attention": {
        "lam": "0.1,1"}})  # fmt: skip
    assert fa["lam"] == choice(0.1, 1) and fa["lr"] == log(1e-5, 1e-2)
    # the suite's lr by name, on the CLI: space.train.lr (every method) and space.METHOD.train.lr
    _, given = split_space_overrides({"space": {"train": {"lr": "1e-3,1e-2"}, "filter-attention": {"train": {
        "lr": "0.1"}, "lam": "1"}}})  # fmt: skip
    assert given == {"*": {"train.lr": "1e-3,1e-2"}, "filter-attention": {"train.lr": "0.1", "lam": "1"}}
    # filter attention on the suite's optimiser: its own lr is unused, so `lr` means the suite's (no dead dimension)
    suite_fa = {**small_run("filter-attention").method_config, "optimizer": "suite"}
    space = resolve_spaces("filter-attention", suite_fa, {"*": {"lr": "1e-3,1e-2"}})
    assert set(space) == {"train.lr", "lam"} and space["train.lr"] == choice(0.001, 0.01)
    assert target("filter-attention", "lr", suite_fa) == ("train", "lr")
    with pytest.raises(SpecError, match="rank.*0"):
        check_space(small_run("lora"), {"rank": choice(0, 4)})  # a value the method refuses, named before training
    with pytest.raises(SpecError, match="alpha"):
        check_space(small_run("l2-sp"), {"alpha": choice(-1.0, 0.1)})


def test_a_method_that_trains_nothing_or_a_bad_grid_is_refused_before_any_trial():
    suite = build_suite({"methods": ["semantic-pruning"], "datasets": ["synthetic:4x16"], "backbones": ["test_resnet"]})
    with pytest.raises(SpecError, match="nothing to tune"):
        plans(suite, TuneOptions())
    suite = build_suite({"methods": ["cut-fc"], "datasets": ["synthetic:4x16"], "backbones": ["test_resnet"]})
    with pytest.raises(SpecError, match="grid needs lists"):
        plans(suite, TuneOptions(sampler="grid"))
    with pytest.raises(SpecError, match="grid has 2 point"):
        plans(suite, TuneOptions(sampler="grid", trials=3, spaces={"*": {"lr": "1e-3,1e-2", "weight_decay": "0"}}))


# ------------------------------------------------------------------------------------------------ the cost of trials


def test_tuning_cost_counts_pruned_and_failed_trials_and_a_teacher_once(tmp_path):
    """summary(): the chosen trial is the best finished one; every counted trial's cost is summed (pruned and
    failed included), a killed trial (retried) is not counted, and a teacher's recorded cost is counted once."""
    storage = open_storage(f"sqlite:///{tmp_path / 't.db'}")
    study = optuna.create_study(storage=storage, study_name="s:x:y:kd", direction="maximize")
    study.set_user_attr("finebench", {"space": {"lr": "log:0.0001:0.1"}, "sampler": "tpe", "pruner": "median",
                                      "seed": 0, "method": "kd"})  # fmt: skip
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    teacher = {"teacher:cut-full": {"seconds": 100.0, "samples": 1000, "flops": 5e12}}

    def trial(lr, state, value=None, seconds=10.0, attrs=None):
        t = study.ask(dist)
        charges = teacher | {"prepare": {"seconds": 1.0}}
        t.set_user_attr("values", {"lr": lr})
        t.set_user_attr("cost", {"seconds": seconds, "samples": 50, "flops": 1e9, "charges": charges})
        for k, v in (attrs or {}).items():
            t.set_user_attr(k, v)
        if state == "complete":
            study.tell(t, value)
        elif state == "running":
            return t
        else:
            study.tell(t, state=getattr(optuna.trial.TrialState, state.upper()))
        return t

    trial(0.01, "complete", 80.0)
    trial(0.05, "complete", 85.0)
    trial(0.09, "pruned", seconds=4.0)
    trial(0.001, "fail", seconds=2.0)
    killed = trial(0.02, "fail", seconds=3.0)
    study.enqueue_trial({"lr": 0.02}, user_attrs={"retry_of": killed.number})
    trials = study.get_trials()
    assert [t.number for t in counted(trials)] == [0, 1, 2, 3]  # the killed one out, the queued retry not yet in
    with pytest.raises(SpecError, match="interrupted"):  # its retry has not run: no choice from it yet
        summary(study, "top1")
    trial(0.02, "complete", 70.0, seconds=6.0)  # the retry (takes the queued values)
    s = summary(study, "top1")
    assert s["values"] == {"lr": 0.05} and s["best_trial"] == 1 and s["best_val"] == 85.0
    assert s["trials"] == 5 and s["states"] == {"complete": 3, "pruned": 1, "fail": 1, "interrupted": 1}
    # own: 10 + 10 + 4 + 2 + 6 s, the prepare charge 1 s each, the teacher's 100 s once
    assert s["cost"]["seconds"] == pytest.approx(32 + 5 + 100)
    assert s["cost"]["samples"] == 5 * 50 + 1000 and s["cost"]["flops"] == pytest.approx(5e9 + 5e12)
    assert s["cost"]["shared"] == ["teacher:cut-full"]


def test_a_pruned_trial_stops_training_and_keeps_its_cost(tmp_path):
    """The runner's trial mode: no test loader, the val curve reported after every epoch, training stops when the
    trial says so, and the cost is that of the epochs it trained."""
    spec = small_run("cut-full")

    class Hooks:
        seen = []

        def restored(self, history):
            pass

        def epoch_end(self, entry):
            self.seen.append(entry["epoch"])
            return entry["epoch"] == 2  # pruned after epoch 2 of 3

    run = runner.Run(spec, None, tmp_path, torch.device("cpu"), Reporter(quiet=True), trial=Hooks())
    result = run.execute()
    assert run.test_loader is None
    assert Hooks.seen == [1, 2] and result["pruned"] and len(result["history"]) == 2
    per_epoch = run.loaders["train"].num_samples
    assert result["cost"]["samples"] == 2 * per_epoch and result["cost"]["flops"] > 0
    assert "test" not in result["best"] and "val_finalized" not in result["best"]  # no finalize for a pruned trial


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """`bench tune` (2 methods, 3 trials) then `bench run --tuned` (2 seeds) and the default runs, in-process,
    with every loader the runs build recorded (dataset indices) and every split they make."""
    out = tmp_path_factory.mktemp("tuned") / "results"
    built, splits, phase = [], [], {"now": "tune"}
    real_batches, real_split = runner.Batches, runner.make_split

    def batches(images, labels, idx, *a, **k):
        built.append((phase["now"], set(np.asarray(idx).tolist())))
        return real_batches(images, labels, idx, *a, **k)

    def make_split(*a, **k):
        split = real_split(*a, **k)
        splits.append(split)
        return split

    runner.Batches, runner.make_split = batches, make_split
    try:
        common = SUITE + ["--out", str(out), "--quiet"]
        # the suite's lr (0.01) outside the range: the chosen values differ from the defaults
        tune = ["tune", "--methods", "cut-fc,l2-sp", "--trials", "3", "--study", "s1", *common, "space.lr=log:0.02:0.1"]
        assert cli.main(tune) == 0
        phase["now"] = "final"
        assert cli.main(["run", "--tuned", "s1", "--methods", "cut-fc,l2-sp", "--seeds", "0,1", *common]) == 0
        assert cli.main(["run", "--methods", "cut-fc,l2-sp", "--seeds", "0,1", *common]) == 0
    finally:
        runner.Batches, runner.make_split = real_batches, real_split
    return out, built, splits


def test_no_trial_builds_a_test_loader(tuned):
    out, built, splits = tuned
    test = set(splits[0].test.tolist())
    assert all(set(s.test.tolist()) == test for s in splits)  # one split for every run (split_seed 0)
    in_tune = [idx for when, idx in built if when == "tune"]
    assert len(in_tune) >= 6 * 3  # train, calibration and val of 6 trials
    assert all(not (idx & test) for idx in in_tune)  # no trial loader holds a test image
    assert any(idx == test for when, idx in built if when == "final")  # the detector sees a test loader when built


def test_every_method_gets_the_same_trials_and_the_final_runs_name_their_tuning(tuned):
    out, _, _ = tuned
    storage = open_storage(f"sqlite:///{out / 'tuning.db'}")
    records = {r.run_id: r for r in ResultStore(out).records()}
    for method in ("cut-fc", "l2-sp"):
        study = optuna.load_study(study_name=f"s1:synthetic:4x16:test_resnet:{method}", storage=storage)
        trials = study.get_trials()
        assert len(counted(trials)) == 3 and len(trials) == 3
        assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3  # three value sets, none run twice
        first = trials[0]  # the method at its defaults, never pruned (the pruner spares the first two)
        defaults = {"cut-fc": {"weight_decay": 1e-4}, "l2-sp": {"alpha": 0.1}}[method]  # lr: out of its range
        assert first.user_attrs["defaults"] and first.params | defaults == first.params and first.params["lr"] >= 0.02
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = max(done, key=lambda t: (t.value, -t.number))
        assert first.state == optuna.trial.TrialState.COMPLETE and best.value >= first.value
        finals = [r for r in records.values() if r.spec["method"] == method and r.spec.get("tuned")]
        defaults = [r for r in records.values() if r.spec["method"] == method and not r.spec.get("tuned")]
        assert sorted(r.spec["seed"] for r in finals) == [0, 1] and len(defaults) == 2
        for r in finals:
            t = r.spec["tuned"]
            assert t["study"] == "s1" and t["trials"] == 3 and t["values"] == best.user_attrs["values"]
            assert r.spec["train"]["lr"] == pytest.approx(best.params["lr"]) and best.params["lr"] >= 0.02  # applied
            if method == "l2-sp":
                assert r.spec["method_config"]["alpha"] == pytest.approx(best.params["alpha"])
            assert t["base"]["lr"] == 0.01  # the suite's value it replaced
            costs = [tr.user_attrs["cost"] for tr in trials]
            # own seconds plus charged phases (l2-sp's prepare)
            own = sum(c["seconds"] + sum(ch["seconds"] for ch in c["charges"].values()) for c in costs)
            assert t["cost"]["seconds"] == pytest.approx(own)
            assert t["cost"]["samples"] == sum(c["samples"] for c in costs) > 0
            assert len(t["trial_list"]) == 3
        assert not {r.run_id for r in finals} & {r.run_id for r in defaults}


def test_the_report_puts_default_and_tuned_side_by_side_never_in_one_row(tuned, tmp_path):
    out, _, _ = tuned
    assert cli.main(["report", "--results", str(out), "--out", str(tmp_path), "--no-pdf"]) == 0
    text = (tmp_path / "results.md").read_text()
    assert "### Default vs tuned" in text
    row = next(
        line for line in text.splitlines() if line.startswith("| l2-sp (tuned: s1, 3 trials) |") and "alpha=" in line
    )
    cells = [c.strip() for c in row.split("|")]
    assert re.fullmatch(r"\d+\.\d ± \d+\.\d", cells[2])  # its default row found (l2-sp at alpha 0.1), beside it
    done, pruned, failed = (int(n) for n in re.search(r"\| (\d+) / (\d+) / (\d+) \|", row).groups())
    assert done + pruned + failed == 3 and done >= 2  # the pruner spares the first two
    main_rows = [line for line in text.splitlines() if line.startswith("| cut-fc")]
    assert any(line.startswith("| cut-fc | 2 |") for line in main_rows)  # the default row: its 2 seeds only
    assert any(
        line.startswith("| cut-fc (tuned: s1, 3 trials) | 2 |") for line in main_rows
    )  # the tuned row: its own 2
    figures = list((tmp_path / "figures").glob("sensitivity-*.png"))
    assert len(figures) == 1
    runs = __import__("pandas").read_csv(tmp_path / "runs.csv")
    assert set(runs["budget"]) == {runs["budget"].iloc[0]}  # tuned and default runs are one comparison


def test_tuned_runs_must_match_the_tuning_budget_and_study(tuned, capsys):
    out, _, _ = tuned
    common = SUITE + ["--out", str(out), "--quiet"]
    assert cli.main(["run", "--tuned", "s1", "--methods", "cut-fc", "--seeds", "0", *common, "epochs=2"]) == 2
    assert "epochs: tuned with 3, now 2" in capsys.readouterr().err
    assert cli.main(["run", "--tuned", "nope", "--methods", "cut-fc", "--seeds", "0", *common]) == 2
    assert "was not tuned in it" in capsys.readouterr().err
    assert cli.main(["run", "--tuned", "s1", "--methods", "cut-full", "--seeds", "0", *common]) == 2
    assert "bench tune --study s1 --methods cut-full" in capsys.readouterr().err
    # the same study name with another space is refused rather than mixed
    assert (
        cli.main(["tune", "--methods", "cut-fc", "--trials", "3", "--study", "s1", *common, "space.lr=0.02,0.05"]) == 2
    )
    assert "already exists with a different space" in capsys.readouterr().err


def test_grid_sampling_takes_every_point_once(tmp_path):
    common = SUITE + ["--out", str(tmp_path), "--quiet"]
    args = ["tune", "--methods", "cut-fc", "--trials", "3", "--study", "g", "--sampler", "grid", *common,
            "space.lr=1e-3,1e-2,1e-1", "space.weight_decay=1e-4"]  # fmt: skip
    assert cli.main(args) == 0
    trials = trials_of(tmp_path, "g")
    assert sorted(t.params["lr"] for t in trials) == [0.001, 0.01, 0.1]  # each grid point once
    assert trials[0].params["lr"] == 0.01 and trials[0].user_attrs["defaults"]  # the suite's lr first
    assert cli.main(args) == 0 and len(trials_of(tmp_path, "g")) == 3  # again: nothing left to do


def test_a_distillation_trial_uses_the_suites_teacher_and_builds_no_test_loader(tmp_path, monkeypatch):
    """The teacher is an ordinary recorded run at the suite's settings, trained once before the trials (its own
    test result is its record's); every trial, whatever learning rate it draws, loads that one teacher."""
    from finebench.benchmark import tune

    seen, splits, phase = [], [], {"now": "sources"}
    real_batches, real_ensure, real_split = runner.Batches, tune.ensure_sources, runner.make_split

    def make_split(*a, **k):
        splits.append(real_split(*a, **k))
        return splits[-1]

    def batches(images, labels, idx, *a, **k):
        seen.append((phase["now"], set(np.asarray(idx).tolist())))
        return real_batches(images, labels, idx, *a, **k)

    def ensure(*a, **k):
        real_ensure(*a, **k)
        phase["now"] = "trials"

    monkeypatch.setattr(runner, "Batches", batches)
    monkeypatch.setattr(runner, "make_split", make_split)
    monkeypatch.setattr(tune, "ensure_sources", ensure)
    out = tmp_path / "r"
    args = ["tune", "--methods", "kd", "--trials", "2", "--study", "d", *SUITE, "--out", str(out), "--quiet"]
    assert cli.main([*args, "epochs=2"]) == 0
    teachers = [r for r in ResultStore(out).records() if r.spec["method"] == "cut-full"]
    assert len(teachers) == 1 and teachers[0].spec["train"]["lr"] == 0.01  # one teacher, at the suite's lr
    trials = optuna.load_study(study_name="d:synthetic:4x16:test_resnet:kd",
                               storage=open_storage(f"sqlite:///{out / 'tuning.db'}")).get_trials()  # fmt: skip
    assert len(trials) == 2 and {t.params["lr"] for t in trials} != {0.01}
    for t in trials:
        assert t.user_attrs["sources"] == {"teacher": teachers[0].run_id}
        assert "teacher:cut-full" in t.user_attrs["cost"]["charges"]
    test = set(splits[0].test.tolist())
    assert all(set(sp.test.tolist()) == test for sp in splits)
    assert any(idx == test for when, idx in seen if when == "sources")  # the teacher's own record tests
    in_trials = [idx for when, idx in seen if when == "trials"]
    assert len(in_trials) >= 2 * 3 and all(not (idx & test) for idx in in_trials)  # no trial loader holds test


# ------------------------------------------------------------------------------------------------ processes


def bench_tune(out, study, trials, crash=None, methods="cut-fc"):
    env = dict(os.environ, FINEBENCH_CRASH_AT=crash or "", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "finebench.cli", "tune", "--methods", methods, "--trials",
                             str(trials), "--study", study, *SUITE, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def trials_of(out, name):
    storage = open_storage(f"sqlite:///{out / 'tuning.db'}")
    return optuna.load_study(study_name=f"{name}:synthetic:4x16:test_resnet:cut-fc", storage=storage).get_trials()


def test_two_processes_share_one_study_without_running_a_trial_twice(tmp_path):
    a, b = bench_tune(tmp_path, "shared", 8), bench_tune(tmp_path, "shared", 8)  # started together
    outs = [p.communicate(timeout=900) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    trials = trials_of(tmp_path, "shared")
    assert len(trials) == 8 and all(t.state.is_finished() for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 8  # eight different value sets
    started = [line for out, _ in outs for line in out.splitlines() if " trial " in line and ": lr=" in line]
    numbers = [int(line.split(" trial ")[1].split(":")[0]) for line in started]
    assert sorted(numbers) == list(range(8))  # each trial started once, in one of the two processes
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, workers  # both processes ran trials of the one study


@pytest.mark.parametrize("workers", [["--devices", "cpu,cpu"], ["--launcher", "local", "--workers", "2",
                                                                    "--array-parallelism", "2"]])  # fmt: skip
def test_tuning_workers_on_devices_or_as_jobs_share_the_study(tmp_path, workers):
    out = tmp_path / "r"
    args = ["tune", "--methods", "cut-fc", "--trials", "6", "--study", "w", *SUITE, "--out", str(out), *workers]
    assert cli.main(args) == 0
    trials = trials_of(out, "w")
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers (processes other than this one) ran
    assert f":{os.getpid()}" not in " ".join(t.user_attrs["worker"] for t in trials)


def test_a_tune_killed_mid_trial_resumes_and_keeps_its_finished_trials(tmp_path):
    probe = runner.Run(small_run("cut-fc"), None, tmp_path / "probe", torch.device("cpu"), Reporter(quiet=True))
    probe.setup()
    per = len(probe.loaders["train"])  # steps an epoch; a trial has 3 epochs
    # trials 0 and 1 finish (the pruner spares the first two); the kill comes mid-epoch 2 of trial 2
    killed = bench_tune(tmp_path, "k", 4, crash=f"step:{2 * 3 * per + per + per // 2 + 1}")
    _, err = killed.communicate(timeout=600)
    assert killed.returncode == -9, err
    before = {t.number: t for t in trials_of(tmp_path, "k")}
    assert [before[n].state.name for n in (0, 1)] == ["COMPLETE", "COMPLETE"] and before[2].state.name == "RUNNING"
    again = bench_tune(tmp_path, "k", 4)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    after = {t.number: t for t in trials_of(tmp_path, "k")}
    for n in (0, 1):  # kept as they were: not run again
        assert after[n].value == before[n].value and after[n].datetime_complete == before[n].datetime_complete
        assert f" trial {n}:" not in out
    assert after[2].state.name == "FAIL"  # the killed one: not counted, its values retried
    retry = next(t for t in after.values() if t.user_attrs.get("retry_of") == 2)
    assert retry.params == before[2].params and retry.state.name == "COMPLETE"
    assert "resuming after epoch 1" in out  # from the killed trial's checkpoint
    assert len(counted(list(after.values()))) == 4 and len(after) == 5


def test_bad_tuning_input_is_refused_by_name_before_any_trial(tmp_path, capsys):
    common = SUITE + ["--out", str(tmp_path / "r"), "--quiet"]
    cases = [
        (["--methods", "cut-fc", "space.lr=log:0:1"], "space.lr: log:0:1"),
        (["--methods", "cut-fc", "space.cut-fc.epochs=2,3"], "budget is the same"),
        (["--methods", "cut-fc", "space.cut-fcc.lr=1e-3"], "cut-fcc"),
        (["--methods", "cut-fc", "--trials", "0"], "--trials: must be >= 1"),
        (["--methods", "cut-fc", "--study", "a/b"], "--study 'a/b'"),
        (["--methods", "cut-fc", "--storage", "nosuchdb://x"], "--storage nosuchdb://x"),
        (["--methods", "cut-fc", "--storage", "sqlite://"], "in-memory database keeps nothing"),
        (["--methods", "cut-fc", "seeds=0,1"], "--seed N"),
        (["--methods", "cut-fc", "--workers", "2"], "--workers applies to --launcher"),
    ]
    for args, words in cases:
        assert cli.main(["tune", *args, *common]) == 2, args
        assert words in capsys.readouterr().err, args
    assert not (tmp_path / "r" / "runs").exists()  # nothing trained, nothing recorded


def test_the_study_attributes_hold_what_a_reuse_must_match(tuned):
    out, _, _ = tuned
    storage = open_storage(f"sqlite:///{out / 'tuning.db'}")
    attrs = optuna.load_study(study_name="s1:synthetic:4x16:test_resnet:l2-sp", storage=storage).user_attrs
    info = attrs["finebench"]
    assert info["space"] == {"lr": "log:0.02:0.1", "alpha": "log:0.001:1"} and info["seed"] == 0
    assert info["train"]["epochs"] == 3 and json.loads(json.dumps(info)) == info  # plain JSON
