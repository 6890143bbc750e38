"""A tiny name -> factory registry shared by methods, datasets and backbones."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    description: str


class Registry:
    """Maps names to factories; duplicate names and unknown lookups are errors that list the known names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, factory: Callable[..., Any], description: str = "") -> Callable[..., Any]:
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            previous = self._entries[name].factory
            raise ValueError(f"duplicate {self.kind} name {name!r}: already registered by {previous!r}")
        self._entries[name] = Entry(name, factory, description.strip().splitlines()[0] if description else "")
        return factory

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise ValueError(self.unknown_message(name))
        return self._entries[name]

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).factory

    def unknown_message(self, name: str, also: list[str] | None = None) -> str:
        """Names the unknown `name`, the closest known one (among the registered names and `also`), and the list."""
        known = ", ".join(self.names()) or "(none)"
        close = difflib.get_close_matches(str(name), self.names() + (also or []), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ";"
        return f"unknown {self.kind} {name!r}{hint} known: {known}"

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())
