"""What identifies and names a run spec, readable from a record alone (reports and status use these)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Fields added after the first release: left out of the run id while they hold their default, so that the ids of
# runs recorded before they existed stay valid.
LATER_FIELDS: dict[str, Any] = {
    "skip_bad_images": False,
    "amp": "off",
    "channels_last": False,
    "compile": False,
    "cudnn": "benchmark",
}


def spec_label(spec: Mapping[str, Any]) -> str:
    """'method | dataset | backbone | seed N' of a run spec (or a recorded one, as a dict); a run at tuned values
    reads 'method (tuned: study) | ...'."""
    method = spec.get("method")
    if spec.get("tuned"):
        method = f"{method} (tuned: {spec['tuned']['study']})"
    return f"{method} | {spec.get('dataset')} | {spec.get('backbone')} | seed {spec.get('seed')}"


def tuned_identity(tuned: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies a tuned run's tuning: the study, how many trials it had when the values were chosen, and the
    values (not where the study is stored, nor its cost: the same choice moved elsewhere is the same run)."""
    return {"study": tuned["study"], "trials": tuned["trials"], "values": dict(tuned["values"])}


def untuned_train(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded run's train config as the suite gave it: a tuned run's train keys back at the suite's values, so
    that tuned and default runs of one budget share a table."""
    train = dict(spec["train"])
    if spec.get("tuned"):
        train.update(spec["tuned"].get("base", {}))
    return train


def identity_train(train: Mapping[str, Any]) -> dict[str, Any]:
    """A (recorded) train config without the later fields that hold their default: what identifies a budget, the
    same for a record written before those fields existed and one written after."""
    return {k: v for k, v in train.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
