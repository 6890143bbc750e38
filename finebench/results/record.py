"""RunRecord: everything a report needs about one finished run, as plain JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA = 1


class NewerRecord(ValueError):
    """A whole record written by a newer finebench: kept as it is (never moved aside as damaged)."""


@dataclass
class RunRecord:
    run_id: str
    spec: dict[str, Any]  # the resolved RunSpec
    dataset: dict[str, Any]  # name, classes, manifest hash, split hash and file, split sizes
    backbone: dict[str, Any]  # timm architecture, where the weights came from, normalisation
    env: dict[str, Any]  # git commit, versions, device
    epochs: list[dict[str, Any]]  # per epoch: losses, val metrics, lr, seconds, samples
    best: dict[str, Any]  # best-val epoch: epoch, val, test, seconds_to_best
    last: dict[str, Any]  # last epoch: epoch, val, test
    cost: dict[str, Any]  # budget meter summary
    params: dict[str, int]  # trainable / total
    extras: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # files beside the record, relative to the store root
    sources: dict[str, str] = field(default_factory=dict)  # role (teacher, source) -> run id of a model it used
    status: str = "ok"
    started: str = ""
    finished: str = ""
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        names = {f.name for f in fields(cls)}
        required = {"run_id", "spec", "dataset", "backbone", "env", "epochs", "best", "last", "cost", "params"}
        if data.get("schema", SCHEMA) > SCHEMA:
            raise NewerRecord(f"record schema {data['schema']} is newer than this finebench understands ({SCHEMA}); "
                              "upgrade finebench to read it")  # fmt: skip
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"record lacks keys {missing}")
        return cls(**{k: v for k, v in data.items() if k in names})
