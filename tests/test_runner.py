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


def test_shared_optimizer_continues_across_stages():
    import torch

    from finebench.backbones import create_backbone
    from finebench.backbones.stages import stage_map
    from finebench.benchmark.runner import StepLoop, build_method
    from finebench.methods import Context
    from finebench.methods.cost import BudgetMeter

    s = spec(methods="cut-full", optimizer="adam")
    model = create_backbone("test_resnet", 4, "random").model
    ctx = Context(s, 4, stage_map(model), BudgetMeter(2, 8), torch.device("cpu"))
    loop = StepLoop(build_method(s), model, ctx, total_steps=4)
    head, body = frozenset(ctx.stages.head), frozenset(ctx.stages.last(1))
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    loop.begin_stage(Stage("a", 1, head, fresh_optimizer=False))
    loop.begin_epoch()
    loop.step(x, y)
    first = loop.optimizer
    fc_state = dict(first.state[model.fc.weight])
    loop.begin_stage(Stage("b", 1, body, fresh_optimizer=False))
    loop.step(x, y)
    assert loop.optimizer is first and len(first.param_groups) == 2  # body added, head state kept
    assert torch.equal(first.state[model.fc.weight]["exp_avg"], fc_state["exp_avg"])  # frozen head: untouched
    loop.begin_stage(Stage("c", 1, head, fresh_optimizer=True))
    assert loop.optimizer is not first


def test_balanced_sampler_makes_classes_equally_likely():
    import numpy as np
    import torch

    from finebench.benchmark.data import Batches

    labels = np.array([0] * 90 + [1] * 10)
    images = np.zeros((100, 3, 1, 1), dtype=np.uint8)
    b = Batches(images, labels, np.arange(100), 50, (0,) * 3, (1,) * 3, torch.device("cpu"), seed=0, balanced=True)
    seen = torch.cat([y for ep in range(20) for _, y in (b.set_epoch(ep) or b)])
    assert len(seen) == 2000 and 0.45 < (seen == 1).float().mean() < 0.55


def test_random_resized_crops_run_on_the_cached_tensors_and_replay_per_epoch():
    import numpy as np
    import torch

    from finebench.benchmark.data import Batches, crop_boxes, resized_crops

    size = 16
    half = np.zeros((1, size, size, 3), dtype=np.uint8)
    half[:, :, size // 2 :] = 255  # left half black, right half white
    x = torch.from_numpy(half).permute(0, 3, 1, 2).float()
    right = resized_crops(x, torch.tensor([[size / 2, 0.0, float(size), float(size)]]))
    assert right.shape == x.shape and right[..., 2:].min() > 254  # the right half, stretched to the full size
    boxes = crop_boxes(1000, size, torch.Generator().manual_seed(0))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= size + 1e-4).all()
    share = w * h / size**2
    assert share.min() > 0.3 and share.max() <= 1.0 + 1e-6 and 0.5 < share.mean() < 0.8

    images = np.random.default_rng(0).integers(0, 255, (8, 3, size, size), dtype=np.uint8)
    labels = np.arange(8) % 2
    b = Batches(images, labels, np.arange(8), 4, (0.5,) * 3, (0.5,) * 3, torch.device("cpu"), True, True, 3, crop=True)
    first = [x for x, _ in b]
    again = [x for x, _ in b]
    b.set_epoch(1)
    other = [x for x, _ in b]
    assert first[0].shape == (4, 3, size, size)
    assert all(torch.equal(a, c) for a, c in zip(first, again, strict=True))  # replayable
    assert not torch.equal(first[0], other[0])  # each epoch its own crops


def test_per_image_test_results_are_recorded_and_agree_with_the_metrics(tmp_path):
    import numpy as np

    from finebench.results.predictions import decode

    r = run(spec(), tmp_path)
    data = decode(r.best["test_predictions"])
    assert len(data["pred"]) == r.dataset["sizes"]["test"] == r.best["test"]["n"]
    hits = data["pred"] == data["target"]
    assert 100 * hits.mean() == pytest.approx(r.best["test"]["top1"])
    assert 100 * data["top3"].mean() == pytest.approx(r.best["test"]["top3"])
    per_class = [hits[data["target"] == c].mean() for c in np.unique(data["target"])]
    assert 100 * np.mean(per_class) == pytest.approx(r.best["test"]["mean_class"])
    assert "pred" not in r.best["test"]  # kept compactly, once


def test_split_seed_can_follow_each_runs_seed_and_a_teacher_follows_its_student(tmp_path):
    from finebench.benchmark.spec import SpecError
    from finebench.reports.frame import budget_key

    a = run(spec(split_seed="seed"), tmp_path)
    b = run(spec(split_seed="seed", seeds=[1]), tmp_path)
    shared = run(spec(seeds=[1]), tmp_path)  # the default: one split (seed 0) for every seed
    assert (a.dataset["split_seed"], b.dataset["split_seed"], shared.dataset["split_seed"]) == (0, 1, 0)
    assert (
        a.dataset["split_hash"] != b.dataset["split_hash"] and shared.dataset["split_hash"] == a.dataset["split_hash"]
    )
    assert budget_key(a.spec) == budget_key(b.spec)  # one table, whose seeds resample the split
    kd = run(spec(methods="kd", seeds=[1], split_seed="seed", method_config={"kd": {"teacher": "test_resnet"}}),
             tmp_path)  # fmt: skip
    from finebench.results.store import ResultStore

    teacher = ResultStore(tmp_path).get(kd.sources["teacher"])
    assert (
        teacher.spec["seed"] == 0
        and teacher.dataset["split_hash"] == kd.dataset["split_hash"] == b.dataset["split_hash"]
    )  # the teacher (seed 0) never saw the student's test images
    with pytest.raises(SpecError, match="split_seed: expected an integer or 'seed'"):
        spec(split_seed="sed")
