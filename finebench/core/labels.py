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
    """'method | dataset | backbone | seed N' of a run spec (or a recorded one, as a dict)."""
    return f"{spec.get('method')} | {spec.get('dataset')} | {spec.get('backbone')} | seed {spec.get('seed')}"


def identity_train(train: Mapping[str, Any]) -> dict[str, Any]:
    """A (recorded) train config without the later fields that hold their default: what identifies a budget, the
    same for a record written before those fields existed and one written after."""
    return {k: v for k, v in train.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
