"""End to end through the `bench` CLI on the generated dataset with a tiny model."""

import json
import subprocess
import sys

RUN = ["run", "--methods", "all", "--dataset", "synthetic:4x12", "--backbone", "test_resnet", "--weights", "random",
       "--epochs", "2", "--resolution", "48", "--seeds", "0,1", "batch_size=8",
       "method_config.semantic-pruning.sweep=0.5", "method_config.filter-attention.prune_ratios=0.5",
       *(f"method_config.{m}.teacher=test_efficientnet" for m in ("kd", "attention-transfer", "at+kd"))]  # fmt: skip


def bench(*args, cwd):
    return subprocess.run([sys.executable, "-m", "finebench.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_run_records_skip_and_report(tmp_path):
    from finebench.methods import METHODS

    methods = METHODS.names()
    first = bench(*RUN, "--out", "res", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # the distillation methods' teacher (cut-full on test_efficientnet, seed 0) is trained once, on the way
    assert f"done: {2 * len(methods)} run(s) recorded (+ 1 teacher/source run(s) they used), 0 skipped" in first.stdout
    assert "epoch   2/2" in first.stdout  # plain per-epoch lines when not on a terminal
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "res" / "runs").glob("*.json"))]
    teachers = [r for r in records if r["spec"]["backbone"] == "test_efficientnet"]
    assert len(teachers) == 1 and teachers[0]["spec"]["method"] == "cut-full"
    records = [r for r in records if r["spec"]["backbone"] == "test_resnet"]
    assert len(records) == 2 * len(methods)
    assert sorted(r["spec"]["method"] for r in records) == sorted(methods * 2)
    assert {r["spec"]["seed"] for r in records} == {0, 1}
    assert len({r["dataset"]["split_hash"] for r in records}) == 1  # one split for every method and seed
    for r in records:
        n_train = r["dataset"]["sizes"]["train"]
        assert r["cost"]["samples_budget"] == 2 * n_train
        if METHODS.get(r["spec"]["method"]).trains:
            assert r["cost"]["samples"] == 2 * n_train  # identical budget
            assert len(r["epochs"]) == 2 and 1 <= r["best"]["epoch"] <= 2 and r["last"]["epoch"] == 2
            assert r["best"]["val"]["top1"] == max(e["val"]["top1"] for e in r["epochs"])
        else:  # trains nothing itself: the model it uses is charged in full
            assert any(k.startswith("source:") for k in r["cost"]["charges"]) and r["best"]["epoch"] == 0
        assert set(r["best"]["test"]) >= {"top1", "top3", "mean_class"}
        assert r["env"]["versions"]["torch"] and r["dataset"]["manifest_hash"]
        assert len(r["dataset"]["class_names"]) == r["dataset"]["num_classes"]  # figures name the classes
        assert (tmp_path / "res" / r["dataset"]["split_file"]).exists()
        assert r["cost"]["flops_per_image"] > 0 and r["params"]["total"] >= r["params"]["trainable"] >= 0

    again = bench(*RUN, "--out", "res", cwd=tmp_path)
    assert again.returncode == 0 and f"done: 0 run(s) recorded, {2 * len(methods)} skipped" in again.stdout
    assert len(list((tmp_path / "res" / "runs").glob("*.json"))) == 2 * len(methods) + 1

    rep = bench("report", "--results", "res", "--out", "rep", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    md = (tmp_path / "rep" / "results.md").read_text()
    table = next(t for t in md.split("### ") if t.startswith("synthetic:4x12 · test_resnet"))
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    names = [r.split("|")[1].strip().split(" (")[0] for r in rows]
    assert names == [*methods, "teacher: cut-full"]  # registry order, then the teacher the students used
    assert "| filter-attention (prune_ratios=[0.5]) |" in md  # a non-default setting is named in its row
    assert all(r.split("|")[2].strip() == "2" for r in rows[:-1]) and rows[-1].split("|")[2].strip() == "1"
    tex = (tmp_path / "rep" / "results.tex").read_text()
    assert r"\label{tab:finebench-synthetic-4x12-test-resnet-" in tex and tex.count(r" \\") >= len(methods) + 2


def test_bad_input_is_a_clear_error_before_any_work(tmp_path):
    bad = bench("run", "--methods", "cut-fc,nope", "--dataset", "synthetic", "--out", "res", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown method 'nope'" in bad.stderr and "cut-full" in bad.stderr
    assert not (tmp_path / "res").exists()
    missing = bench("run", "--dataset", "flowers17", "--data-root", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 2
    assert "dataset 'flowers17' not found" in missing.stderr and "bench fetch flowers17" in missing.stderr
    assert str(tmp_path / "nowhere") in missing.stderr
    unknown = bench("run", "--bogus", "epochs=2", cwd=tmp_path)
    assert unknown.returncode == 2 and "unrecognized arguments: --bogus" in unknown.stderr
    override = bench("run", "epochs=-1", cwd=tmp_path)
    assert override.returncode == 2 and "epochs: must be >= 1" in override.stderr


def test_list_shows_descriptions(tmp_path):
    out = bench("list", "methods", cwd=tmp_path).stdout
    assert "cut-full" in out and "Fine-tune the whole network" in out
    assert "efficientnet_lite0" in bench("list", "backbones", cwd=tmp_path).stdout


def test_separate_processes_give_identical_numbers(tmp_path):
    args = ["run", "--methods", "cut-last", "--dataset", "synthetic:4x12", "--backbone", "test_efficientnet",
            "--weights", "random", "--epochs", "2", "--resolution", "40", "batch_size=8", "--quiet"]  # fmt: skip
    for out in ("a", "b"):
        assert bench(*args, "--out", out, cwd=tmp_path).returncode == 0
    a, b = ([json.loads(p.read_text()) for p in (tmp_path / out / "runs").glob("*.json")] for out in ("a", "b"))
    assert len(a) == len(b) == 1 and a[0]["run_id"] == b[0]["run_id"]
    for key in ("best", "last"):
        for part in ("epoch", "val", "test"):
            assert a[0][key][part] == b[0][key][part]
    assert [e["losses"] for e in a[0]["epochs"]] == [e["losses"] for e in b[0]["epochs"]]


def test_backbone_that_cannot_run_at_the_resolution_fails_before_training(tmp_path):
    bad = bench("run", "--methods", "cut-fc", "--dataset", "synthetic", "--backbone", "inception_v3", "--weights",
                "random", "--resolution", "40", "--out", "res", cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and "backbone 'inception_v3' cannot run at resolution 40 px" in bad.stderr
    assert not (tmp_path / "res" / "runs").exists()
