"""The method registry's facts for reports (see `finebench.reports.catalogue`), handed over by the CLI so that
reports never import methods."""

from __future__ import annotations

import dataclasses
from typing import Any

from finebench.methods.base import OptimOptions
from finebench.methods.filter_attention import parse_schedule
from finebench.methods.registry import METHODS


class MethodCatalogue:
    def order(self) -> list[str]:
        return METHODS.names()

    def defaults(self, method: str) -> dict[str, Any] | None:
        if method not in METHODS:
            return None
        return dataclasses.asdict(METHODS.get(method).Config()) | dataclasses.asdict(OptimOptions())

    def legacy(self, method: str, config: dict[str, Any]) -> dict[str, Any]:
        return METHODS.get(method).legacy(config) if method in METHODS else config

    def note(self, method: str, config: dict[str, Any]) -> str | None:
        return METHODS.get(method).note(self.legacy(method, config)) if method in METHODS else None

    def bn_statistics(self, method: str, config: dict[str, Any]) -> str | None:
        return METHODS.get(method).bn_statistics(self.legacy(method, config)) if method in METHODS else None

    def schedule(self, text: str, epochs: int) -> str:
        return parse_schedule(text, epochs)
