import json

import pytest

from finebench.results.store import ResultStore

from records import make_record


def test_append_is_atomic_idempotent_and_never_overwrites(tmp_path):
    store = ResultStore(tmp_path)
    rec = make_record("cut-fc", 0, 50.0)
    path = store.append(rec)
    assert store.has(rec.run_id) and json.loads(path.read_text())["run_id"] == rec.run_id
    with pytest.raises(FileExistsError, match="never overwritten"):
        store.append(make_record("cut-fc", 0, 99.0))
    assert [r.best["test"]["top1"] for r in store.records()] == [50.0]
    assert not [p for p in store.runs.iterdir() if p.suffix != ".json"]  # no temp files left behind


def test_damaged_record_is_reported_and_skipped(tmp_path):
    store = ResultStore(tmp_path)
    store.append(make_record("cut-fc", 0, 50.0))
    (store.runs / "broken.json").write_text('{"run_id": "broken", "spec": ')
    (store.runs / "partial.json").write_text('{"run_id": "partial"}')
    errors = []
    assert len(list(store.records(errors))) == 1
    assert len(errors) == 2 and any("broken.json" in e for e in errors) and any("lacks keys" in e for e in errors)


def test_git_commit_is_recorded_only_for_the_package_checkout():
    import subprocess
    from pathlib import Path

    import finebench
    from finebench.benchmark.env import git_commit

    info = git_commit()
    src = Path(finebench.__file__).resolve().parents[1]
    top = subprocess.run(["git", "-C", str(src), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode == 0 and Path(top.stdout.strip()).resolve() == src:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert info["commit"] == head.stdout.strip() and isinstance(info["dirty"], bool)
    else:
        assert info == {"commit": None, "dirty": None}
