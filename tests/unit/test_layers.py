"""The layers stay visible: no module imports from a layer above its own (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "testlane"

LAYERS = {
    "core": 1,
    "services": 2,
    "databases": 3,
    "db": 3,
    "pytest_plugin": 4,
    "web": 4,
    "seams": 4,
    "cli": 5,
    "reports": 5,
}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "testlane" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def test_every_module_belongs_to_a_layer() -> None:
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts == ("__init__.py",) or rel.parts == ("__main__.py",):
            continue
        top = rel.parts[0].removesuffix(".py")
        assert top in LAYERS, f"{rel} is not in any layer; add it to docs/architecture.md and LAYERS"


def test_no_import_goes_up_a_layer() -> None:
    violations = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts in (("__init__.py",), ("__main__.py",)):
            continue  # the public API re-exports every layer
        own = LAYERS[rel.parts[0].removesuffix(".py")]
        for module in imports_of(path):
            target = layer_of(module)
            if target is not None and target > own:
                violations.append(f"{rel} imports {module}")
    assert violations == []
