"""The package layers import one way (see docs/usage.md#layout): a new method, dataset or report touches its own
layer only. Parsed from the source, so a stray import fails here before it tangles the layers."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "finebench"
ALLOWED = {
    "core": set(),
    "datasets": {"core"},
    "backbones": {"core"},
    "methods": {"core", "backbones"},
    "results": {"core"},
    "reports": {"core", "results"},
    "benchmark": {"core", "datasets", "backbones", "methods", "results"},
    "cli": {"core", "datasets", "backbones", "methods", "results", "reports", "benchmark"},
}


def arrows() -> dict[str, dict[str, set[str]]]:
    out: dict[str, dict[str, set[str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        layer = parts[0] if len(parts) > 1 else parts[0].replace("__init__", "")
        if not layer:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                bits = name.split(".")
                if bits[0] == "finebench" and len(bits) > 1 and bits[1] != layer:
                    out.setdefault(layer, {}).setdefault(bits[1], set()).add(str(path.relative_to(PACKAGE)))
    return out


def test_layers_import_one_way():
    found = arrows()
    assert set(found) <= set(ALLOWED), set(found) - set(ALLOWED)
    wrong = {f"{a} -> {b}": sorted(files) for a, to in found.items() for b, files in to.items() if b not in ALLOWED[a]}
    assert not wrong, wrong
    assert "methods" in found["benchmark"] and "benchmark" not in found.get("methods", {})  # the direction that matters
