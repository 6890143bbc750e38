"""The method registry; `@register_method` on a Method subclass is all a new method needs."""

from __future__ import annotations

import inspect

from finebench.core.registry import Registry

METHODS = Registry("method")


def register_method(cls: type) -> type:
    if not getattr(cls, "name", ""):
        raise ValueError(f"method class {cls.__name__} needs a non-empty `name`")
    METHODS.register(cls.name, cls, inspect.getdoc(cls) or "")
    return cls
