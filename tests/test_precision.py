"""How the arithmetic runs (mixed precision, channels_last, torch.compile, cuDNN mode): recorded in the spec and the
record, applied to the model and the batches, kept across a resume; and the data path's stall accounting."""

import hashlib
import json

import numpy as np
import pytest
import torch
from test_resume import numbers

from finebench.benchmark.checkpoint import Checkpoints
from finebench.benchmark.data import Batches
from finebench.benchmark.precision import make_precision, set_cudnn
from finebench.benchmark.progress import Reporter
from finebench.benchmark.runner import Run
from finebench.benchmark.spec import LATER_FIELDS, SPEC_VERSION, SpecError, build_suite
from finebench.benchmark.suite import expand, pick_device
from finebench.reports.frame import runs_frame


def spec(**over):
    layer = {"methods": "cut-full", "datasets": "synthetic:4x12", "backbones": "test_efficientnet",
             "weights": "random", "epochs": 2, "resolution": 40, "batch_size": 8, **over}  # fmt: skip
    return expand(build_suite(layer))[0]


def make_run(s, tmp_path):
    return Run(s, None, tmp_path, pick_device("cpu"), Reporter(quiet=True))


@pytest.fixture(autouse=True)
def _restore_cudnn():
    yield
    set_cudnn("benchmark")  # process-wide switches: leave them as the other tests expect


def test_settings_are_part_of_the_spec_and_run_id_but_old_ids_stay_valid():
    base = spec()
    # a run id computed the way it was before these settings existed: the train config without them
    old = base.to_dict()
    for key in LATER_FIELDS:
        del old["train"][key]
    added = ("freeze_stages", "head_lr_scale", "layer_decay")  # method config keys added since
    old["method_config"] = {k: v for k, v in old["method_config"].items() if k not in added}
    old_id = hashlib.sha256(json.dumps({"v": SPEC_VERSION, **old}, sort_keys=True, separators=(",", ":")).encode())
    assert base.run_id == old_id.hexdigest()[:16]
    ids = {spec(**{k: v}).run_id for k, v in [("amp", "bf16"), ("amp", "fp16"), ("channels_last", True),
                                                ("compile", True), ("cudnn", "deterministic")]}  # fmt: skip
    assert len(ids) == 5 and base.run_id not in ids
    with pytest.raises(SpecError, match="amp: 'fp8' is not one of off, bf16, fp16"):
        spec(amp="fp8")
    with pytest.raises(SpecError, match="cudnn: 'fast' is not one of benchmark, deterministic"):
        spec(cudnn="fast")


def test_bf16_autocast_runs_on_cpu_and_is_recorded(tmp_path):
    run = make_run(spec(amp="bf16"), tmp_path)
    run.setup()
    dtypes = []
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    x, y = next(iter(run.loaders["train"]))
    from finebench.benchmark.train import train_step

    opt = torch.optim.SGD(run.model.parameters(), lr=0.01)
    terms = train_step(run.method, run.model, (x, y), opt, run.ctx, run.precision)
    assert dtypes == [torch.bfloat16]  # the forward ran in bf16...
    assert conv.weight.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32  # ...the weights are fp32
    assert terms["ce"].dtype == torch.float32 and torch.isfinite(terms["ce"])

    bf16 = make_run(spec(amp="bf16"), tmp_path / "a").execute()
    fp32 = make_run(spec(), tmp_path / "b").execute()
    assert bf16.spec["train"]["amp"] == "bf16" and fp32.spec["train"]["amp"] == "off"
    assert all(np.isfinite(e["losses"]["ce"]) for e in bf16.epochs)
    assert [e["losses"] for e in bf16.epochs] != [e["losses"] for e in fp32.epochs]  # it changed the arithmetic
    # a table never pools them: different budget keys, and the caption says which arithmetic
    frame = runs_frame([bf16, fp32])
    assert frame["budget"].nunique() == 2
    assert set(frame["arithmetic"]) == {"bf16 autocast", "fp32"}


def test_channels_last_applies_to_the_model_and_every_batch(tmp_path):
    run = make_run(spec(channels_last=True, augment="rrc"), tmp_path)
    run.setup()
    convs = [m.weight for m in run.model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    for name in ("train", "val"):
        x, _ = next(iter(run.loaders[name]))
        assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    plain = make_run(spec(augment="rrc"), tmp_path / "plain")
    plain.setup()
    x_plain, y_plain = next(iter(plain.loaders["train"]))
    x, y = next(iter(run.loaders["train"]))
    assert torch.equal(x, x_plain) and torch.equal(y, y_plain)  # same pixels, another memory layout
    record = run.execute()
    assert record.spec["train"]["channels_last"] is True


def test_cudnn_mode_is_set_per_run_and_recorded(tmp_path):
    rec = make_run(spec(cudnn="deterministic"), tmp_path / "d").execute()
    assert rec.env["deterministic_algorithms"] is True and rec.env["cudnn_deterministic"] is True
    assert rec.env["cudnn_benchmark"] is False
    rec = make_run(spec(), tmp_path / "b").execute()  # the next run sets its own mode, not the previous run's
    assert rec.env["deterministic_algorithms"] is False and rec.env["cudnn_benchmark"] is True


def test_fp16_grad_scaler_state_is_checkpointed_and_restored(tmp_path):
    run = make_run(spec(amp="fp16", epochs=1), tmp_path)
    record = run.execute()
    assert run.precision.scaler is not None and all(np.isfinite(e["losses"]["ce"]) for e in record.epochs)
    fresh = make_precision("fp16", torch.device("cpu"))
    state = dict(run.precision.state(), scale=1024.0, _growth_tracker=7)
    fresh.load_state(state)
    assert fresh.scaler.get_scale() == 1024.0 and fresh.scaler.state_dict()["_growth_tracker"] == 7
    assert make_precision("off", torch.device("cpu")).state() is None


def interrupted_fp16_run(tmp_path, monkeypatch):
    """A 2-epoch fp16 run that dies in epoch 2 (after epoch 1's checkpoint); returns its spec and store."""
    import finebench.benchmark.runner as runner

    calls = []

    def die_in_epoch_2(point):
        calls.append(point)
        if len(calls) == 6:  # 4 steps per epoch
            raise RuntimeError("power cut")

    s = spec(amp="fp16", epochs=2)
    monkeypatch.setattr(runner, "crash_point", die_in_epoch_2)
    with pytest.raises(RuntimeError, match="power cut"):
        make_run(s, tmp_path).execute()
    monkeypatch.undo()
    return s


def test_fp16_run_resumes_with_its_grad_scaler_state(tmp_path, monkeypatch):
    whole = make_run(spec(amp="fp16", epochs=2), tmp_path / "whole").execute()
    s = interrupted_fp16_run(tmp_path / "a", monkeypatch)
    last = Checkpoints(tmp_path / "a", s.run_id).last
    assert torch.load(last, weights_only=True)["scaler"]["scale"] > 0  # the scaler's state is in the checkpoint
    resumed = make_run(s, tmp_path / "a").execute()
    assert resumed.cost["resumes"][0]["after_epoch"] == 1
    assert numbers(resumed.to_dict()) == numbers(whole.to_dict())

    # the resumed run continues with the checkpoint's scale, not a fresh scaler's (65536)
    interrupted_fp16_run(tmp_path / "b", monkeypatch)
    last = Checkpoints(tmp_path / "b", s.run_id).last
    state = torch.load(last, weights_only=True)
    state["scaler"]["scale"] = 256.0
    state["scaler"]["_growth_tracker"] = state["scaler"]["growth_interval"] - 1  # grows at the next clean step
    torch.save(state, last)
    run = make_run(s, tmp_path / "b")
    run.execute()
    # restored before the first step: that step doubled it (restored after the steps it would be 256, not restored
    # 65536)
    assert run.precision.scaler.get_scale() == 512.0


def test_unquoted_off_in_yaml_means_off(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("amp: off\nchannels_last: true\n")
    from finebench.benchmark.spec import load_yaml

    train = build_suite(load_yaml(path)).train
    assert train.amp == "off" and train.channels_last is True


@pytest.mark.parametrize("setting", ["amp=fp16", "compile=true"])
def test_gradient_attention_transfer_refuses_fp16_and_compile(tmp_path, capsys, setting):
    from finebench.cli import main

    args = ["run", "--methods", "attention-transfer", "--dataset", "synthetic:4x12", "--backbone", "test_efficientnet",
            "--weights", "random", "--epochs", "1", "--resolution", "40", "--out", str(tmp_path),
            "method_config.attention-transfer.kind=gradient", setting]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "method_config.attention-transfer.kind=gradient cannot run with" in err and setting.split("=")[0] in err
    assert not (tmp_path / "runs").exists()


def test_compile_is_applied_and_recorded(tmp_path):
    run = make_run(spec(compile=True, epochs=1, amp="bf16", channels_last=True), tmp_path)
    record = run.execute()
    assert run.model._compiled_call_impl is not None  # nn.Module.compile: the forward goes through torch.compile
    assert record.spec["train"]["compile"] is True and all(np.isfinite(e["losses"]["ce"]) for e in record.epochs)
    assert set(record.best["test"]) >= {"top1", "top3"}


def test_prefetching_data_path_gives_the_same_batches_and_counts_its_time(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 3, 16, 16), dtype=np.uint8)
    labels = np.arange(40) % 4

    def batches(prefetch):
        return Batches(images, labels, np.arange(40), 8, (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), shuffle=True,
                       flip=True, crop=True, seed=3, prefetch=prefetch)  # fmt: skip

    ahead, inline = batches(3), batches(0)
    for epoch in (0, 1):
        ahead.set_epoch(epoch)
        inline.set_epoch(epoch)
        pairs = list(zip(ahead, inline, strict=True))
        assert len(pairs) == 5
        for (xa, ya), (xb, yb) in pairs:
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert ahead._worker is not None and inline._worker is None  # one persistent worker thread, reused
    assert ahead.data_seconds > 0
    # an epoch left early (a time budget) leaves nothing behind that disturbs the next one
    ahead.set_epoch(0)
    next(iter(ahead))
    first = [x for x, _ in ahead]
    inline.set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(first, (x for x, _ in inline), strict=True))


def test_record_carries_end_to_end_speed_and_data_stall(tmp_path):
    record = make_run(spec(), tmp_path).execute()
    cost = record.cost
    assert 0 < cost["data_stall_fraction"] < 1 and 0 < cost["data_seconds"] < cost["train_seconds"]
    assert cost["images_per_second"] == pytest.approx(cost["samples"] / cost["train_seconds"])
    assert all(0 < e["data_stall"] < 1 for e in record.epochs)


def test_mixed_precision_without_native_support_is_warned_about_before_training():
    from finebench.benchmark.precision import precision_warning

    cpu = torch.device("cpu")
    avx2_only = {"avx2", "fma", "sse4_2"}
    text = precision_warning("bf16", cpu, avx2_only)
    assert text and "avx512_bf16 / amx_bf16" in text and "amp=off" in text
    assert precision_warning("fp16", cpu, avx2_only) and "avx512_fp16" in precision_warning("fp16", cpu, avx2_only)
    assert precision_warning("bf16", cpu, avx2_only | {"avx512_bf16"}) is None
    assert precision_warning("bf16", cpu, {"fp", "asimd", "bf16"}) is None  # an ARM CPU with bf16
    assert precision_warning("off", cpu, avx2_only) is None
    assert precision_warning("bf16", cpu, set()) is None  # flags unknown: no claim


def test_the_suite_prints_the_warning_before_any_run(tmp_path):
    import subprocess
    import sys

    from finebench.benchmark.precision import cpu_flags, precision_warning

    args = ["run", "--methods", "cut-fc", "--dataset", "synthetic:3x8", "--backbone", "test_resnet", "--epochs", "1",
            "--resolution", "32", "--amp", "bf16", "--dry-run"]  # fmt: skip
    p = subprocess.run([sys.executable, "-m", "finebench.cli", *args], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    expected = precision_warning("bf16", torch.device("cpu"), cpu_flags())
    assert (f"warning: {expected}" in p.stdout) if expected else ("warning: amp" not in p.stdout)
