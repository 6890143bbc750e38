"""What a new user meets first: the README's commands, damaged records, input checks (issue 15's findings)."""

import subprocess
import sys

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
        assert "    paper: " in block and ("arXiv:" in block or "OpenReview" in block), name
        for key, default, meaning in config_keys(METHODS.get(name).Config):
            assert f"{key}={default}" in block and meaning, (name, key)  # every key has its one-line meaning


def test_piping_into_head_is_quiet(tmp_path):
    for args in (["list", "methods", "-v"], ["list", "presets"]):
        p = subprocess.run(f"{sys.executable} -m finebench.cli {' '.join(args)} | head -1", shell=True, cwd=tmp_path,
                           capture_output=True, text=True)  # fmt: skip
        assert p.returncode == 0 and p.stderr == "" and len(p.stdout.splitlines()) == 1, p.stderr
