"""Bad input from the command line: a clear error before any training, naming the thing and what would be valid;
nothing written, nothing lost."""

import json

import pytest
import torch

from finebench.cli import main
from finebench.results.store import ResultStore

from records import make_record

TINY = ["--dataset", "synthetic:4x12", "--backbone", "test_resnet", "--weights", "random", "--epochs", "2",
        "--resolution", "32", "--quiet"]  # fmt: skip


def bench_run(capsys, *args):
    rc = main(["run", *TINY, *args])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "cut-fc,fiter-attention"], "unknown method 'fiter-attention'; did you mean 'filter-attention'?"),
        (["--methods", "cut-fc", "--backbone", "test_resnt"],
         "unknown backbone 'test_resnt'; did you mean 'test_resnet'?"),
        (["--methods", "cut-fc", "--dataset", "flower17"], "unknown dataset 'flower17'; did you mean 'flowers17'?"),
        (["--methods", "cut-fc", "method_config.cut-fc.freez=true"],
         "method_config.cut-fc: unknown key 'freez'; valid keys: freeze_bn"),
        (["--methods", "cut-fc", "epochs=-1"], "epochs: must be >= 1"),
        (["--methods", "cut-fc", "lr=fast"], "lr: expected a number"),
        (["--methods", "filter-attention", "method_config.filter-attention.lam=-0.5"], "lam must be >= 0"),
        (["--methods", "filter-attention", "method_config.filter-attention.schedule=FX"],
         "schedule 'FX': unknown letter(s) ['X']; valid: F (head), A (attention)"),
        (["--methods", "filter-attention", "method_config.filter-attention.penalty=l3"],
         "penalty 'l3' is not one of none, l1, l1sum, l2, diverge, bimodal"),
        (["--methods", "cut-fc", "--dataset", "flowers17", "--data-root", "/nonexistent/data"],
         "dataset 'flowers17' not found"),
    ],
)  # fmt: skip
def test_bad_input_names_the_thing_and_the_valid_choices(tmp_path, capsys, args, message):
    rc, err = bench_run(capsys, *args, "--out", str(tmp_path / "res"))
    assert rc == 2 and message in err, err
    assert not (tmp_path / "res" / "runs").exists()  # nothing trained, nothing recorded


def test_malformed_yaml_names_the_file_and_line(tmp_path, capsys):
    spec = tmp_path / "suite.yaml"
    spec.write_text("methods: [cut-fc]\nepochs: 2\nlr: [0.1\n")
    rc, err = bench_run(capsys, "--spec", str(spec), "--out", str(tmp_path / "res"))
    assert rc == 2 and f"{spec}: malformed YAML at line" in err


def test_a_weights_file_of_another_architecture_is_named(tmp_path, capsys):
    wrong = tmp_path / "wrong.pt"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, wrong)
    rc, err = bench_run(capsys, "--methods", "cut-fc", "--weights", str(wrong), "--out", str(tmp_path / "res"))
    assert rc == 2 and str(wrong) in err and "does not match the architecture" in err


def test_a_results_folder_that_cannot_be_written_is_named_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the results folder should go")
    out = blocker / "res"
    rc, err = bench_run(capsys, "--methods", "cut-fc", "--out", str(out))
    assert rc == 2 and f"results folder {out} cannot be written" in err and "--out" in err
    assert blocker.read_text().startswith("a file")  # untouched


def test_a_damaged_record_is_reported_and_skipped_by_report(tmp_path, capsys):
    store = ResultStore(tmp_path / "res")
    for seed in (0, 1):
        store.append(make_record("cut-full", seed, 80.0 + seed))
    damaged = store.runs / "broken.json"
    damaged.write_text('{"run_id": "broken", "spec": {')  # a record cut short
    rc = main(["report", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "rep"), "--format", "md"])
    err = capsys.readouterr().err
    assert rc == 0 and f"skipped damaged record {damaged}" in err
    table = (tmp_path / "rep" / "results.md").read_text()
    assert "cut-full" in table and "| 2 |" in table  # both good records in the table
    assert json.loads((store.runs / "cut-full-0-5-synthetic.json").read_text())["run_id"]  # nothing rewritten
