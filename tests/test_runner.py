import pytest

from finebench.benchmark.progress import Reporter
from finebench.benchmark.runner import Run, check_schedule, stage_of_epoch
from finebench.benchmark.spec import build_suite
from finebench.benchmark.suite import expand, pick_device
from finebench.methods import Stage


def spec(**over):
    layer = {"methods": "cut-full", "datasets": "synthetic:4x12", "backbones": "test_efficientnet",
             "weights": "random", "epochs": 2, "resolution": 40, "batch_size": 8, **over}  # fmt: skip
    return expand(build_suite(layer))[0]


def run(s, tmp_path):
    return Run(s, None, tmp_path, pick_device("cpu"), Reporter(quiet=True)).execute()


def test_same_spec_same_numbers(tmp_path):
    a, b = run(spec(), tmp_path), run(spec(), tmp_path)
    assert a.run_id == b.run_id
    assert [e["losses"] for e in a.epochs] == [e["losses"] for e in b.epochs]
    assert [e["val"] for e in a.epochs] == [e["val"] for e in b.epochs]
    assert a.best["test"] == b.best["test"]
    c = run(spec(seeds=[1]), tmp_path)
    assert [e["losses"] for e in c.epochs] != [e["losses"] for e in a.epochs]


def test_time_budget_stops_cleanly_and_is_recorded(tmp_path):
    rec = run(spec(epochs=5, time_budget=1e-6), tmp_path)
    assert rec.cost["capped"] and len(rec.epochs) == 1 and rec.epochs[0]["partial"]
    assert rec.cost["steps"] == 1 and rec.best["test"]["n"] > 0


def test_schedule_must_spend_exactly_the_budget():
    s = spec(epochs=3)
    check_schedule([Stage("a", 1, None), Stage("b", 2, None)], s)
    with pytest.raises(ValueError, match="spans 2 epochs .* budget is 3"):
        check_schedule([Stage("a", 2, None)], s)
    stages = [Stage("a", 1, None), Stage("b", 2, None)]
    assert [stage_of_epoch(stages, e).name for e in range(3)] == ["a", "b", "b"]


def test_test_is_at_the_restored_best_state_and_hidden_from_the_method(tmp_path):
    from finebench.benchmark.train import evaluate

    # a large learning rate makes later epochs worse than an early one, so best != last
    r = Run(spec(epochs=4, lr=0.8, optimizer="sgd", scheduler="constant"), None, tmp_path, pick_device("cpu"),
            Reporter(quiet=True))  # fmt: skip
    rec = r.execute()
    assert "test" not in r.ctx.loaders
    assert rec.best["val"] == rec.epochs[rec.best["epoch"] - 1]["val"]
    again = evaluate(r.method, r.model, r.loaders["val"], r.ctx.num_classes)
    assert again == rec.best["val"]  # the model that was tested is the best-val state, restored
    assert rec.cost["charges"]["prepare"]["seconds"] >= 0


def test_a_lone_last_sample_does_not_crash_batchnorm(tmp_path):
    # 4 classes x 12 images -> 32 train images (8 per class); batch 31 leaves one sample over
    rec = run(spec(batch_size=31), tmp_path)
    assert rec.cost["samples"] == 2 * rec.dataset["sizes"]["train"] and rec.cost["steps"] == 2
