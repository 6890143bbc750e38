"""Search spaces for `bench tune`: one dimension per hyperparameter, declared by each method, overridable by the user.

A dimension is written `log:LOW:HIGH` (log-uniform: learning rates, weights of loss terms), `uniform:LOW:HIGH`,
`int:LOW:HIGH` (inclusive), or a comma list of values `2,4,8,16` (a categorical choice, and what a grid sampler
needs). A single value fixes the hyperparameter at it for every trial. Neutral: methods declare their spaces here
and the benchmark reads them, without either importing the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

KINDS = ("log", "uniform", "int", "choice")


class SpaceError(ValueError):
    """A search-space text or value that cannot be used; the message names it and what would be valid."""


@dataclass(frozen=True)
class Space:
    kind: str  # log | uniform | int | choice
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpaceError(f"search space kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.kind == "choice":
            if not self.choices:
                raise SpaceError("a choice needs at least one value")
            return
        if self.low is None or self.high is None or not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise SpaceError(f"{self.kind}: needs finite LOW and HIGH, got {self.low}, {self.high}")
        if self.low >= self.high:
            raise SpaceError(f"{self.kind}:{self.low:g}:{self.high:g}: LOW must be below HIGH")
        if self.kind == "log" and self.low <= 0:
            raise SpaceError(f"log:{self.low:g}:{self.high:g}: a log-uniform range needs LOW > 0 (0 cannot be on a log "
                             "axis; give a list such as 0,1e-4,1e-3 to include it)")  # fmt: skip
        if self.kind == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise SpaceError(f"int:{self.low}:{self.high}: LOW and HIGH must be integers")

    @property
    def fixed(self) -> bool:
        """One value only: the hyperparameter is set, not searched."""
        return self.kind == "choice" and len(self.choices) == 1

    def text(self) -> str:
        """The space in the syntax `parse_space` reads (what studies store and tables show)."""
        if self.kind == "choice":
            return ",".join(str(c) for c in self.choices)
        if self.kind == "int":
            return f"int:{int(self.low)}:{int(self.high)}"
        return f"{self.kind}:{self.low:g}:{self.high:g}"


def log(low: float, high: float) -> Space:
    return Space("log", float(low), float(high))


def uniform(low: float, high: float) -> Space:
    return Space("uniform", float(low), float(high))


def integer(low: int, high: int) -> Space:
    return Space("int", float(low), float(high))


def choice(*values: Any) -> Space:
    return Space("choice", choices=tuple(values))


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SpaceError(f"{where}: {text!r} is not a number") from None


def _value(text: str) -> Any:
    """One listed value as YAML would read it: 8 -> int, 1e-3 -> float, true -> bool, else the string."""
    t = text.strip()
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(t.lower(), t)


def parse_space(text: Any, where: str = "space") -> Space:
    """'log:1e-4:1e-1', 'uniform:0:1', 'int:1:32', '2,4,8' or one value -> Space; errors name `where`."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return choice(text)
    if isinstance(text, list | tuple):
        return choice(*text)
    s = str(text).strip()
    head, _, rest = s.partition(":")
    if rest and head in ("log", "uniform", "int"):
        parts = rest.split(":")
        if len(parts) != 2:
            raise SpaceError(f"{where}: {s!r}: expected {head}:LOW:HIGH, e.g. log:1e-4:1e-1")
        try:
            return Space(head, _number(parts[0], where), _number(parts[1], where))
        except SpaceError as e:
            raise SpaceError(f"{where}: {e}") from None
    if ":" in s:
        raise SpaceError(f"{where}: {s!r}: expected log:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH, a comma list of "
                         "values (2,4,8) or one value")  # fmt: skip
    values = [_value(v) for v in s.split(",") if v.strip()]
    if not values:
        raise SpaceError(f"{where}: empty; give log:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or values such as 2,4,8")
    if len(set(map(repr, values))) != len(values):
        raise SpaceError(f"{where}: {s!r} lists a value twice")
    return choice(*values)
