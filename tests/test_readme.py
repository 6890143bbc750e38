"""Every `bench` command in the README runs as written: the offline quickstart end to end, the real-data commands as
a dry run (when Flowers-17 is here), and every other command through the parser and the spec checks. Each README
block that holds a `bench` command carries a `<!-- readme-test: run|dry-run|parse -->` marker; a command outside
such a block fails this test."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SHARED = Path(os.environ.get("FINEBENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def blocks() -> list[tuple[str | None, list[list[str]]]]:
    """(marker, commands) for each fenced block of the README that holds `bench` commands."""
    text = README.read_text()
    out = []
    for m in re.finditer(r"(?:<!-- readme-test: (\w[\w-]*) -->\n)?```[a-z]*\n(.*?)```", text, re.S):
        commands = [shlex.split(line, comments=True) for line in m.group(2).splitlines()]
        commands = [c for c in commands if c and c[0] == "bench"]
        if commands:
            out.append((m.group(1), commands))
    return out


def bench(args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "finebench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env})  # fmt: skip


def test_every_bench_command_of_the_readme_is_in_a_tested_block():
    found = blocks()
    assert {m for m, _ in found} == {"run", "dry-run", "parse"}, found
    assert all(m is not None for m, _ in found), [c for m, c in found if m is None]


def test_the_offline_quickstart_runs_as_written(tmp_path):
    (run,) = [c for m, c in blocks() if m == "run"]
    for args in run:
        p = bench(args[1:], tmp_path)
        assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-2000:])
    assert (tmp_path / "reports" / "results.md").exists()
    again = bench(next(a for a in run if a[1] == "run")[1:], tmp_path)
    assert again.returncode == 0 and "done: 0 run(s) recorded" in again.stdout


@pytest.mark.skipif(not (SHARED / "flowers17" / "jpg").is_dir(), reason=f"Flowers-17 is not under {SHARED}")
def test_the_real_data_quickstart_checks_out_as_a_dry_run(tmp_path):
    (dry,) = [c for m, c in blocks() if m == "dry-run"]
    for args in dry:
        if args[1] == "run" and "--dry-run" not in args:
            args = [*args, "--dry-run"]
        if args[1] == "report":
            continue  # nothing recorded by a dry run; the offline block runs `bench report`
        p = bench(args[1:], tmp_path, FINEBENCH_DATA=str(SHARED))
        assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-2000:])
        if args[1] == "run":
            assert "checks: passed" in p.stdout and "estimate: ~" in p.stdout


def test_the_other_commands_parse_and_their_specs_resolve():
    from finebench.benchmark.spec import build_suite, parse_overrides
    from finebench.benchmark.suite import expand
    from finebench.benchmark.tune import TuneOptions, plans, split_space_overrides
    from finebench.cli import RUN_FLAGS, parser

    for _, commands in blocks():
        for args in commands:
            ns, extra = parser().parse_known_args(args[1:])
            assert not [e for e in extra if "=" not in e], args
            extra = [*getattr(ns, "overrides", []), *[e for e in extra if "=" in e]]  # as cli.main gathers them
            flags = {key: getattr(ns, f, None) for f, key in RUN_FLAGS.items()}
            flags = {k: v for k, v in flags.items() if v is not None}
            if ns.command == "run":
                expand(build_suite(*([{"preset": ns.preset}] if ns.preset else []), flags, parse_overrides(extra)))
            if ns.command == "tune":  # every method's space resolves and its ends make valid runs
                overrides, spaces = split_space_overrides(parse_overrides(extra))
                opts = TuneOptions(ns.study, ns.trials, ns.sampler, ns.pruner, ns.seed, ns.storage, spaces)
                opts.check()
                assert plans(build_suite(flags, overrides), opts), args
