"""What a report knows of methods beyond the records, supplied by its caller so that `reports` imports nothing but
records: the registry's order, each method's defaults (a row is labelled by the settings that differ from them),
the values that reproduce a record written before a setting existed, a method's word on a configuration (the
paper's ablation, say) and a filter-attention schedule resolved to its budget. The CLI installs the method
registry's (`finebench.methods.catalogue`); without one, rows are labelled from the records alone."""

from __future__ import annotations

import warnings
from typing import Any


class Catalogue:
    """Knows nothing: rows keep the recorded settings and the order in which methods appear (with a warning)."""

    warned = False

    def order(self) -> list[str]:
        return []

    def defaults(self, method: str) -> dict[str, Any] | None:
        if not self.warned:
            self.warned = True
            warnings.warn(
                "finebench reports have no method catalogue: rows are labelled with every recorded setting and "
                "older records are not read as their runs did; install one first, as `bench report` does: "
                "finebench.reports.catalogue.use(finebench.methods.catalogue.MethodCatalogue())",
                stacklevel=3,
            )
        return None

    def legacy(self, method: str, config: dict[str, Any]) -> dict[str, Any]:
        return config

    def note(self, method: str, config: dict[str, Any]) -> str | None:
        return None

    def bn_statistics(self, method: str, config: dict[str, Any]) -> str | None:
        return None

    def schedule(self, text: str, epochs: int) -> str:
        return text


_current: Any = Catalogue()


def use(catalogue: Any) -> None:
    """Install the catalogue reports consult (an object with the methods of `Catalogue`)."""
    global _current
    _current = catalogue


def current() -> Any:
    return _current
