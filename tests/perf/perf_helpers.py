"""Interleaved timing: a machine whose speed drifts (a shared VM) slows both candidates alike."""

import statistics
import time


def interleaved_ratio(benchmark, baseline, candidate, key: str, rounds: int = 40, warmup: int = 5) -> float:
    """Run baseline and candidate alternately (order flipped each round) under pytest-benchmark; store and return
    median(candidate) / median(baseline)."""
    times = {"baseline": [], "candidate": []}
    calls = [0]

    def pair():
        order = (("baseline", baseline), ("candidate", candidate))
        calls[0] += 1
        for name, fn in order if calls[0] % 2 else order[::-1]:
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)

    benchmark.pedantic(pair, rounds=rounds, warmup_rounds=warmup)
    skip = warmup if len(times["baseline"]) > warmup else 0
    ratio = statistics.median(times["candidate"][skip:]) / statistics.median(times["baseline"][skip:])
    benchmark.extra_info[key] = ratio
    return ratio


def method_context(method_name: str, batch: int, res: int, classes: int, **config):
    """(method, model prepared by it, context) of `method_name` on EfficientNet-Lite0 with its shipped ImageNet
    weights, as the runner sets them up (seed 0)."""
    import torch

    from finebench.backbones import create_backbone
    from finebench.backbones.stages import stage_map
    from finebench.benchmark.runner import build_method
    from finebench.benchmark.spec import build_suite
    from finebench.benchmark.suite import expand
    from finebench.methods import Context
    from finebench.methods.cost import BudgetMeter

    torch.manual_seed(0)
    layer = {"methods": method_name, "backbones": "efficientnet_lite0", "datasets": "synthetic", "resolution": res}
    spec = expand(build_suite({**layer, "batch_size": batch, "method_config": {method_name: config}}))[0]
    model = create_backbone("efficientnet_lite0", classes).model
    ctx = Context(spec, classes, stage_map(model), BudgetMeter(1, batch), torch.device("cpu"))
    return build_method(spec), model, ctx


def step_loop(method, model, ctx, stage: int = -1):
    """A StepLoop of `method` on its prepared model, in its stage `stage` (default: the last, the main one)."""
    from finebench.benchmark.runner import StepLoop

    loop = StepLoop(method, model, ctx, total_steps=10_000)
    loop.begin_stage(method.schedule(ctx)[stage])
    loop.begin_epoch()
    return loop


def median_ratio(baseline, candidate, rounds: int = 10, warmup: int = 2) -> float:
    """median(candidate) / median(baseline), the two run alternately (order flipped each round), outside
    pytest-benchmark (a second ratio in one benchmark's test)."""
    times = {"baseline": [], "candidate": []}
    for i in range(rounds + warmup):
        order = (("baseline", baseline), ("candidate", candidate))
        for name, fn in order if i % 2 else order[::-1]:
            t = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return statistics.median(times["candidate"]) / statistics.median(times["baseline"])
