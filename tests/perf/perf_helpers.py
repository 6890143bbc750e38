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
