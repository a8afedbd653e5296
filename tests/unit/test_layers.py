"""The layers stay visible: no module imports from a layer above its own (docs/architecture.md)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from testlane.core.runenv import RUN_VARIABLES as _RUN_VARIABLES

RUN_VARIABLES = frozenset(_RUN_VARIABLES)
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


# -- the run environment ------------------------------------------------------------------------------
# testlane's run variables (TESTLANE_*, and pytest-xdist's PYTEST_XDIST_*) are read and written through
# testlane.core.runenv.RunEnv; lower layers get the values as arguments. The modules that may touch them
# directly, and why:
RUN_VARIABLE_READERS = {
    "core/runenv.py": "RunEnv itself: the one reader and writer",
    "core/environment.py": "declares the variables; parses TESTLANE_IT from the mapping it is given",
    "core/config.py": "the settings variables (TESTLANE_<SETTING>, TESTLANE_CONFIG), read with the settings",
    "services/egress.py": "the set-up commands' child guard bootstrap: imports nothing from testlane",
}
# Entry points may take the run environment and the settings from the process (RunEnv.current(),
# load_settings()); the services and databases layers are handed them (db.py is the public entry point).
LOWER_LAYERS = ("services", "databases")
ENTRY_ONLY_CALLS = ("current", "from_environ", "load_settings")


@functools.cache
def _trees() -> dict[Path, ast.Module]:
    return {path.relative_to(SRC): ast.parse(path.read_text(), filename=str(path)) for path in SRC.rglob("*.py")}


def variable_constants(trees: dict[Path, ast.Module], variables: frozenset[str] = RUN_VARIABLES) -> set[str]:
    """Names bound anywhere to a run variable's name: ``IT = "TESTLANE_IT"``, ``IT_ENV = environment.IT``."""
    assignments = [
        (node.targets[0].id, node.value)
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
    ]
    names: set[str] = set()
    while True:  # until no new alias of an alias turns up
        found = {name for name, value in assignments if _names_variable(value, names, variables)}
        if found <= names:
            return names
        names |= found


def _names_variable(node: ast.expr, constants: set[str], variables: frozenset[str] = RUN_VARIABLES) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in variables
    if isinstance(node, ast.Name):
        return node.id in constants
    if isinstance(node, ast.Attribute):
        return node.attr in constants
    return False


def variable_accesses(tree: ast.Module, constants: set[str]) -> list[int]:
    """Lines reading or writing a run variable in a mapping: ``environ.get(K)``, ``environ[K]``, ``K in
    environ``, ``os.getenv(K)``, ``.pop``/``.setdefault``, with ``K`` a variable's name or a constant
    holding one."""
    lines = []
    for node in ast.walk(tree):
        keys: list[ast.expr] = []
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("get", "pop", "setdefault", "getenv", "putenv", "unsetenv"):
                keys.append(node.args[0])
        elif isinstance(node, ast.Subscript):
            keys.append(node.slice)
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            keys.append(node.left)
        if any(_names_variable(key, constants) for key in keys):
            lines.append(node.lineno)
    return lines


@pytest.mark.timeout(30)  # parses every module in src: ~1 s, several on a loaded machine
def test_run_variables_are_touched_only_through_runenv() -> None:
    trees = _trees()
    constants = variable_constants(trees)
    violations = [
        f"{rel}:{line}"
        for rel, tree in trees.items()
        if str(rel) not in RUN_VARIABLE_READERS
        for line in variable_accesses(tree, constants)
    ]
    assert violations == [], "read or write these through testlane.core.runenv.RunEnv"


@pytest.mark.timeout(30)  # parses every module in src: ~1 s, several on a loaded machine
def test_lower_layers_are_handed_the_run_environment_and_the_settings() -> None:
    violations = []
    for rel, tree in _trees().items():
        if rel.parts[0] not in LOWER_LAYERS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                if name in ENTRY_ONLY_CALLS:
                    violations.append(f"{rel}:{node.lineno} calls {name}()")
    assert violations == [], "take the RunEnv / Settings as an argument from the entry point"


DECLARED = 'RUN_ID = "TESTLANE_RUN_ID"\nSERVICES_FILE = "TESTLANE_SERVICES_FILE"\n'


def test_the_checks_see_todays_spellings() -> None:
    """The access check itself: each spelling the code base uses is caught."""
    code = """
import os
from testlane.core import environment
RUN_ID_ENV = environment.RUN_ID
a = os.environ.get("PYTEST_XDIST_WORKER", "main")
b = os.environ[RUN_ID_ENV]
os.environ[environment.SERVICES_FILE] = "x"
c = "TESTLANE_IT" in os.environ
d = os.getenv("TESTLANE_OWNER_PID")
e = os.environ.get("HOME")
"""
    tree = ast.parse(code)
    constants = variable_constants({Path("x.py"): tree, Path("core/environment.py"): ast.parse(DECLARED)})
    assert sorted(variable_accesses(tree, constants)) == [5, 6, 7, 8, 9]
