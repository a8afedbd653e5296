"""Issue 14, seen 6: a declared extension that the chosen binaries lack is a problem `testlane doctor`
names (not `ok`), and a run on such binaries stops with one message before it announces (or starts)
building the migrated template. The extension is one no PostgreSQL ships, so the test holds on any
machine; the system PostgreSQL is only read (pg_available_extensions)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    SYSTEM_PG15_BIN,
    clean_env,
    leftovers,
    needs_system_pg15_contrib,
    run_cli,
    server_processes,
    system_pg15_version,
)

pytestmark = pytest.mark.timeout(300)

ABSENT = "testlane_absent_ext"
SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

PYPROJECT = """
[project]
name = "shop"
version = "0"

[tool.testlane]
services = ["postgres"]

[tool.testlane.db]
migrations = "migrations"
extensions = [{extensions}]
"""


def make_project(root: Path, extensions: str) -> Path:
    root.mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT.format(extensions=extensions))
    (root / "migrations").mkdir()
    (root / "migrations" / "001_items.sql").write_text("CREATE TABLE items (id int PRIMARY KEY);\n")
    (root / "test_items.py").write_text("def test_items(pg_conn):\n    pg_conn.execute('SELECT 1 FROM items')\n")
    return root


@pytest.fixture
def fresh_cache(data_dir: Path) -> Iterator[Path]:
    cache = data_dir.parent / f"{data_dir.name}-cache"
    cache.mkdir(mode=0o755)
    yield cache
    shutil.rmtree(cache, ignore_errors=True)


def doctor_lines(project: Path, *options: str) -> tuple[int, list[str]]:
    result = run_cli([*options, "doctor"], cwd=project, env=clean_env())  # before: as main accepted it
    assert "Traceback" not in result.stderr
    return result.returncode, result.stderr.splitlines()


def test_doctor_fails_a_declared_extension_the_chosen_binaries_lack(tmp_path: Path) -> None:
    project = make_project(tmp_path / "shop", f'"pg_trgm", "{ABSENT}"')
    code, lines = doctor_lines(project, "--set", "postgres.backend=embedded")
    assert code == 1
    [embedded] = [line for line in lines if "extensions (embedded)" in line]
    assert embedded.startswith("FAIL")
    assert f"which lack the declared {ABSENT} (`db.extensions`)" in embedded
    assert "pg_trgm (`db.extensions`)" not in embedded  # shipped: not named as lacking
    fix = lines[lines.index(embedded) + 1]
    assert "fix:" in fix and 'postgres.backend = "local"' in fix
    # Binaries that ship every declared extension: ok.
    code, lines = doctor_lines(make_project(tmp_path / "ok", '"pg_trgm"'), "--set", "postgres.backend=embedded")
    [embedded] = [line for line in lines if "extensions (embedded)" in line]
    assert embedded.startswith("ok")


def test_doctor_checks_an_existing_servers_available_extensions(tmp_path: Path) -> None:
    project = make_project(tmp_path / "shop", f'"plpgsql", "{ABSENT}"')
    code, lines = doctor_lines(project, "--set", "postgres.backend=url", "--set", f"postgres.url={SYSTEM_PG}")
    assert code == 1
    [url] = [line for line in lines if "extensions (url)" in line]
    assert url.startswith("FAIL") and f"lacks the declared {ABSENT} (`db.extensions`)" in url


def test_a_forced_embedded_run_refuses_before_announcing_the_template_build(
    tmp_path: Path, data_dir: Path, fresh_cache: Path
) -> None:
    project = make_project(tmp_path / "shop", f'"{ABSENT}"')
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(fresh_cache)})
    result = run_cli(["run", "--postgres-backend", "embedded", "--", "-q"], cwd=project, env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"does not have the extension(s) {ABSENT} declared in db.extensions" in result.stderr
    assert "building the migrated template" not in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # pytest never started
    assert not (fresh_cache / "snapshots").exists() or not any((fresh_cache / "snapshots").iterdir())
    assert leftovers(data_dir) == []
    assert server_processes(data_dir) == []


# Issue 15, seen 7: `db.extensions` steers `auto` as `extensions` does (one list: declared_extensions),
# and the refusal's hint never recommends what is already set (`auto` had already looked everywhere).
LOCAL_ONLY = "uuid-ossp"  # the embedded wheel lacks it; this machine's PostgreSQL 15 (contrib) has it


@needs_system_pg15_contrib
@pytest.mark.parametrize("key", ["extensions", "db.extensions"])
def test_either_key_steers_auto_to_binaries_that_ship_the_extension(key: str) -> None:
    from testlane.core.config import load_settings
    from testlane.services.backends import choose_backend

    choice = choose_backend("postgres", load_settings(environ={}, overrides={key: LOCAL_ONLY}))
    assert (choice.backend, choice.bin_dir) == ("local", str(SYSTEM_PG15_BIN)), choice.reason
    assert f"lack {LOCAL_ONLY}, declared in `{key}`" in choice.reason


def test_an_auto_run_that_finds_no_binaries_with_it_does_not_recommend_auto(
    tmp_path: Path, data_dir: Path, fresh_cache: Path
) -> None:
    project = make_project(tmp_path / "shop", f'"{ABSENT}"')  # backend is `auto` (the default)
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(fresh_cache)})
    result = run_cli(["run", "--", "-q"], cwd=project, env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"does not have the extension(s) {ABSENT} declared in db.extensions" in result.stderr
    hint = " ".join(result.stderr.split())  # the hint may be wrapped
    assert 'backend = "auto"' not in hint and 'backend "auto" found no binaries on this machine' in hint
    assert "install a PostgreSQL that ships them" in hint and "postgres.bin_dir" in hint
    assert leftovers(data_dir) == []
    # doctor says the same.
    code, lines = doctor_lines(project)
    [embedded] = [line for line in lines if "extensions (embedded)" in line]
    assert code == 1 and embedded.startswith("FAIL")
    fix = " ".join(lines[lines.index(embedded) + 1 :])
    assert 'backend = "auto"' not in fix and 'backend "auto" found no binaries' in fix


def test_the_hint_never_recommends_the_configured_backend() -> None:
    from testlane.services.backends import missing_extensions_hint

    for configured in ("auto", "embedded", "local", "container", "url", None):
        for backend in ("embedded", "local", "container", "url"):
            hint = missing_extensions_hint(backend, configured)
            if configured is not None:
                assert f'backend = "{configured}"' not in hint and f'"{configured}" (' not in hint, (backend, hint)
            assert "testlane doctor" in hint
    assert 'postgres.backend = "auto"' in missing_extensions_hint("embedded", "embedded")
    assert 'backend "auto" found no binaries' in missing_extensions_hint("embedded", "auto", [ABSENT], declared=True)


@needs_system_pg15_contrib
def test_under_auto_the_hint_names_the_installation_that_ships_them() -> None:
    from testlane.services.backends import missing_extensions_hint

    # Under `auto`, extensions it never weighed (a template given in code) and an installation that has them:
    # declare them. Declared, the same installation was ruled out by postgres.version.
    local = f"PostgreSQL {system_pg15_version()} in {SYSTEM_PG15_BIN} ships them"
    undeclared = missing_extensions_hint("embedded", "auto", [LOCAL_ONLY])
    assert f'{local}: declare them in [tool.testlane] (extensions = ["{LOCAL_ONLY}"]' in undeclared
    assert f"{local}, but postgres.version asks for another major version" in missing_extensions_hint(
        "embedded", "auto", [LOCAL_ONLY], declared=True
    )


# A fresh user's mix: one extension a local installation ships, one that nothing here ships. The hint singles
# out the absent one (no "install postgresql-contrib": contrib is installed) and names the installation that
# has the other; under `pytest --it` the refusal is one message, not a chained "During handling of ..." pair.
@needs_system_pg15_contrib
def test_a_mix_singles_out_the_extension_no_installation_ships() -> None:
    from testlane.services.backends import missing_extensions_hint

    hint = missing_extensions_hint("embedded", "auto", [LOCAL_ONLY, ABSENT], declared=True)
    assert f"no PostgreSQL on this machine ships {ABSENT} (" in hint, hint
    assert f"PostgreSQL {system_pg15_version()} in {SYSTEM_PG15_BIN} ships {LOCAL_ONLY})" in hint, hint
    assert "found no binaries" not in hint and "postgresql-contrib" not in hint, hint


def test_a_missing_extension_under_pytest_is_one_message(tmp_path: Path, data_dir: Path, fresh_cache: Path) -> None:
    import subprocess
    import sys

    project = make_project(tmp_path / "shop", f'"{LOCAL_ONLY}", "{ABSENT}"')
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(fresh_cache)})
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--it", "-q", "-p", "no:cacheprovider", "test_items.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "During handling of the above exception" not in out, out
    assert out.count("does not have the extension(s)") == 1, out
    assert f"no PostgreSQL on this machine ships {ABSENT}" in " ".join(out.split()), out
    assert leftovers(data_dir) == []
