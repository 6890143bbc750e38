"""What a new user meets first: the README's commands, damaged records, input checks (issue 15's findings)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUN = ["run", "--methods", "cut-fc", "--dataset", "synthetic:4x12", "--backbone", "test_resnet", "--weights", "random",
       "--epochs", "1", "--resolution", "32", "--seeds", "0,1", "batch_size=8", "--out", "res"]  # fmt: skip


def bench(*args, cwd):
    return subprocess.run([sys.executable, "-m", "finebench.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_a_damaged_record_is_named_everywhere_set_aside_and_trained_again(tmp_path):
    first = bench(*RUN, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    runs = sorted((tmp_path / "res" / "runs").glob("*.json"))
    assert len(runs) == 2
    truncated, garbage = runs
    names = {p: f"res/runs/{p.name}" for p in runs}  # as the user named the folder
    text = truncated.read_text()
    truncated.write_text(text[: len(text) // 2])
    garbage.write_bytes(b"\x00\xffnot json")

    status = bench("status", "--results", "res", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    for path in (truncated, garbage):
        line = next(x for x in status.stdout.splitlines() if x.startswith(path.stem))
        assert "damaged" in line and names[path] in line and "stopped" not in line
    assert "2 damaged" in status.stdout

    report = bench("report", "--results", "res", "--out", "rep", cwd=tmp_path)
    assert report.returncode == 2 and "no finished runs" in report.stderr and "2 damaged" in report.stderr
    assert names[truncated] in report.stderr and names[garbage] in report.stderr

    dry = bench(*RUN, "--dry-run", cwd=tmp_path)
    assert dry.stdout.count("damaged") == 2 and not (tmp_path / "res" / "damaged").exists()  # a dry run moves nothing

    again = bench(*RUN, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "done: 2 run(s) recorded, 0 skipped" in again.stdout
    assert again.stdout.count("damaged record") == 2 and names[truncated] in again.stdout
    kept = sorted((tmp_path / "res" / "damaged").glob("*.json"))
    assert len(kept) == 2 and {p.name.split(".")[0] for p in kept} == {truncated.stem, garbage.stem}
    assert sorted(p.read_bytes() for p in kept) == sorted([text[: len(text) // 2].encode(), b"\x00\xffnot json"])
    status = bench("status", "--results", "res", cwd=tmp_path)
    assert status.stdout.count(" done ") == 2 and "damaged" not in status.stdout


def test_dry_run_checks_what_a_run_checks_and_lists_the_teachers_it_adds(tmp_path):
    base = ["run", "--dataset", "synthetic:4x12", "--backbone", "test_resnet", "--epochs", "1", "--resolution", "32"]
    dry = bench(*base, "--methods", "cut-full,kd,semantic-pruning", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("resolved settings: weights=default, epochs=1")
    assert any(x.startswith("  kd: teacher=auto") for x in lines)
    runs = [x for x in lines if "  todo  " in x]
    assert len(runs) == 4  # three runs, and the teacher the kd run adds (semantic pruning's source is cut-full)
    assert "teacher: cut-full | synthetic:4x12 | test_efficientnet | seed 0" in runs[-1]
    assert lines[-2].startswith("checks: passed")
    assert lines[-1].startswith("estimate: ~") and "for the 4 run(s) not recorded" in lines[-1]
    assert not (tmp_path / "results").exists()  # nothing written

    bad = bench(*base, "--methods", "kd", "method_config.kd.teacher=no_such_net", "--dry-run", cwd=tmp_path)
    assert bad.returncode == 2 and "no_such_net" in bad.stderr and "Traceback" not in bad.stderr
    assert "checks: passed" not in bad.stdout
    backbones = bench("list", "backbones", cwd=tmp_path)
    assert "test_resnet" in backbones.stdout and "test_efficientnet" in backbones.stdout


def test_version_and_methods_with_citations_and_settings(tmp_path):
    from finebench.methods import METHODS
    from finebench.methods.base import config_keys

    version = bench("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("finebench ")
    out = bench("list", "methods", "-v", cwd=tmp_path).stdout
    for name in METHODS.names():
        block = out.split(f"\n{name}: ", 1)[-1] if not out.startswith(f"{name}: ") else out[len(name) + 2 :]
        block = block.split("\n\n")[0]
        paper = block.split("    paper: ", 1)[-1].split("\n")[0]
        # a locator: an arXiv or OpenReview id, or the venue and year of a paper that has neither
        assert "    paper: " in block, name
        assert re.search(r"arXiv:|OpenReview|(NeurIPS|ICML|ICLR|CVPR|ECCV) \d{4}", paper), name
        for key, default, meaning in config_keys(METHODS.get(name).Config):
            assert f"{key}={default}" in block and meaning, (name, key)  # every key has its one-line meaning


def test_piping_into_head_is_quiet(tmp_path):
    for args in (["list", "methods", "-v"], ["list", "presets"]):
        p = subprocess.run(f"{sys.executable} -m finebench.cli {' '.join(args)} | head -1", shell=True, cwd=tmp_path,
                           capture_output=True, text=True)  # fmt: skip
        assert p.returncode == 0 and p.stderr == "" and len(p.stdout.splitlines()) == 1, p.stderr


SMALL = ["run", "--methods", "cut-fc", "--dataset", "synthetic:3x8", "--backbone", "test_resnet", "--epochs", "1",
         "--resolution", "32"]  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lr", "nan"], "lr: must be a finite number"),
        (["--lr", "inf"], "lr: must be a finite number"),
        (["--seeds=-1"], "seeds: must be integers >= 0"),
        (["--seeds", "0,0"], "seeds: 0 given twice"),
        (["--wait"], "--wait applies to --launcher"),
        (["--partition", "gpu"], "--partition applies to --launcher"),
        (["--devices", ""], "--devices is empty"),
        (["--weights", "randon"], "did you mean 'random'"),
        (["--resolution", "100000"], "GiB of memory as an image cache"),
        (["--data-root", "afile"], "--data-root afile is a file, not a folder"),
        (["--spec", "dup.yaml"], "spec file dup.yaml: key 'epochs' appears twice (lines 1 and 2)"),
        (["method_config.cut-ful.freeze_bn=true"], "unknown method 'cut-ful'; did you mean 'cut-full'?"),
    ],
)
def test_bad_input_is_refused_before_training_naming_it(extra, message, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "dup.yaml").write_text("epochs: 1\nepochs: 2\n")
    p = bench(*SMALL, *extra, cwd=tmp_path)
    assert p.returncode == 2 and message in p.stderr, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "results" / "runs").exists()


def test_one_spec_file_serves_a_subset_of_its_methods(tmp_path):
    (tmp_path / "suite.yaml").write_text("method_config:\n  cut-full: {freeze_bn: true}\n  kd: {alpha: 0.5}\n")
    p = bench(*SMALL, "--spec", "suite.yaml", "--dry-run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "note: method_config.cut-full is for cut-full, which this run does not select" in p.stderr
    bad = bench(*SMALL, "--spec", "suite.yaml", "method_config.kd.alfa=1", "--dry-run", cwd=tmp_path)
    assert bad.returncode == 2 and "alfa" in bad.stderr  # an unselected method's keys are still checked


def test_report_refuses_an_unknown_method_and_a_file_as_its_folder(tmp_path):
    assert bench(*SMALL, "--quiet", cwd=tmp_path).returncode == 0
    p = bench("report", "--methods", "cut-fcc", cwd=tmp_path)
    assert p.returncode == 2 and "did you mean 'cut-fc'?" in p.stderr
    (tmp_path / "out.txt").write_text("x")
    p = bench("report", "--out", "out.txt", cwd=tmp_path)
    assert p.returncode == 2 and "--out out.txt is a file" in p.stderr and "Traceback" not in p.stderr


def test_distillation_table_keeps_one_line_per_teacher(tmp_path):
    p = bench("run", "--methods", "cut-full,kd,attention-transfer", "--dataset", "synthetic:3x8", "--backbone",
              "test_resnet", "--epochs", "1", "--resolution", "32", "--quiet", "method_config.kd.teacher=test_resnet",
              cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert bench("report", "--no-pdf", cwd=tmp_path).returncode == 0
    md = (tmp_path / "reports" / "results.md").read_text()
    table = md.split("### Distillation")[1].split("\n\n")[1].splitlines()[2:]
    by_teacher = {line.rsplit("(", 2)[-1].strip(" |)"): line.split("|")[2:6] for line in table}
    assert set(by_teacher) == {"test_resnet", "test_efficientnet"}
    assert by_teacher["test_resnet"][1].strip() != "—" and by_teacher["test_resnet"][2].strip() == "—"  # KD only
    assert by_teacher["test_efficientnet"][1].strip() == "—" and by_teacher["test_efficientnet"][2].strip() != "—"
    kd = bench("report", "--no-pdf", "--baseline", "kd", "--out", "r2", cwd=tmp_path)
    assert kd.returncode == 0 and "Δ vs kd (teacher=test_resnet)" in (tmp_path / "r2" / "results.md").read_text()


SHARED = Path(os.environ.get("FINEBENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


@pytest.mark.skipif(not (SHARED / "flowers17" / "jpg").is_dir(), reason=f"Flowers-17 is not under {SHARED}")
def test_verify_lists_every_damaged_image_and_exits_1(tmp_path):
    shutil.copytree(SHARED / "flowers17", tmp_path / "root" / "flowers17")
    jpg = tmp_path / "root" / "flowers17" / "jpg"
    (jpg / "image_0005.jpg").write_bytes(b"garbage")
    (jpg / "image_0100.jpg").write_bytes((SHARED / "flowers17" / "jpg" / "image_0100.jpg").read_bytes()[:1000])
    p = bench("verify", "flowers17", "--data-root", str(tmp_path / "root"), cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert "image_0005.jpg" in p.stdout and "image_0100.jpg" in p.stdout and "2 of 1360 images" in p.stdout


def test_a_record_from_a_newer_finebench_is_not_damaged_and_yaml_merge_keys_load(tmp_path):
    import json

    from finebench.benchmark.spec import load_yaml
    from finebench.results.store import ResultStore

    store = ResultStore(tmp_path)
    store.runs.mkdir(parents=True)
    (store.runs / "abc.json").write_text(json.dumps({"schema": 99, "run_id": "abc"}))
    assert store.damaged("abc") is None  # whole, only newer: kept where it is
    (store.runs / "bad.json").write_text("{")
    assert store.damaged("bad") is not None
    from finebench.results.status import run_states

    states = {r["run_id"]: r for r in run_states(tmp_path)}
    assert states["abc"]["state"] == "done" and "newer finebench" in states["abc"]["detail"]  # bench run keeps it
    assert states["bad"]["state"] == "damaged"
    yaml_text = "base: &b {epochs: 1}\nmethod_config:\n  cut-full:\n    <<: *b\n    freeze_bn: true\n"
    (tmp_path / "s.yaml").write_text(yaml_text)
    assert load_yaml(tmp_path / "s.yaml")["method_config"]["cut-full"] == {"epochs": 1, "freeze_bn": True}


def test_dry_run_refuses_the_flag_conflicts_a_run_refuses(tmp_path):
    p = bench(*SMALL, "--devices", "cpu,cpu", "--device", "cpu", "--dry-run", cwd=tmp_path)
    assert p.returncode == 2 and "--device and --devices" in p.stderr
