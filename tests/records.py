"""Hand-made run records for store and report tests."""

import dataclasses

from finebench.methods import METHODS
from finebench.results.record import RunRecord


def make_record(method: str, seed: int, top1: float, top3: float = 90.0, *, epochs: int = 5, best_epoch: int = 3,
                seconds: float = 10.0, dataset: str = "synthetic", run_id: str | None = None) -> RunRecord:  # fmt: skip
    train = {"epochs": epochs, "resolution": 64, "lr": 0.01}
    config = dataclasses.asdict(METHODS.get(method).Config()) if method in METHODS else {}  # resolved, as a run's
    return RunRecord(
        run_id=run_id or f"{method}-{seed}-{epochs}-{dataset}".replace(":", "_"),
        spec={
            "method": method,
            "method_config": config,
            "dataset": dataset,
            "backbone": "test_resnet",
            "seed": seed,
            "train": train,
        },  # fmt: skip
        dataset={"name": dataset, "split_hash": "abc"},
        backbone={"arch": "test_resnet", "weights": "random"},
        env={"commit": None},
        epochs=[{"epoch": e + 1} for e in range(epochs)],
        best={
            "epoch": best_epoch,
            "val": {"top1": top1 + 1},
            "test": {"top1": top1, "top3": top3},
            "seconds_to_best": seconds / 2,
        },  # fmt: skip
        last={"epoch": epochs, "val": {"top1": top1}, "test": {"top1": top1 - 1, "top3": top3}},
        cost={"total_seconds": seconds, "charged_seconds": 0.0, "capped": False},
        params={"trainable": 1500, "total": 2_500_000},
    )


def with_predictions(record: RunRecord, hits: list[bool], target: list[int]) -> RunRecord:
    """The record with per-image test results: right where `hits` is true (predicting the label), else wrong."""
    from finebench.results.predictions import encode

    num = max(target) + 1
    pred = [t if h else (t + 1) % num for h, t in zip(hits, target, strict=True)]
    record.best["test_predictions"] = encode(pred, target, hits)
    record.best["test"]["top1"] = 100.0 * sum(hits) / len(hits)
    return record
