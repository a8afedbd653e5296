"""`testlane run` starts pytest beside the services (cli/pytest_child.py): pytest imports itself and its plugins
while the servers start and the template is built, and waits for the services' variables before any conftest or
plugin hook can read them. A start that fails or is interrupted ends that pytest without a word from it."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import psutil
import pytest

from tests.helpers import clean_env, leftovers, run_cli, server_processes, wait_gone

pytestmark = pytest.mark.timeout(240)

# The template's set-up command: waits for pytest to have imported its plugins (the marker a `-p` plugin writes
# when imported), then builds nothing. Before pytest started beside the build, the marker never came.
SETUP = """
import os, pathlib, sys
from testlane.core.waiting import wait_until
marker = pathlib.Path(os.environ["PLUGIN_IMPORTED"])
if os.environ.get("FAIL_SETUP"):
    sys.exit("the set-up failed on purpose")
wait_until(marker.exists, timeout=60, what="pytest importing its plugins while the template is built")
"""

# Imported by pytest (`-p early_probe`) before its conftests; records what its first hook and the conftest see.
PLUGIN = """
import json, os, pathlib
import pytest

pathlib.Path(os.environ["PLUGIN_IMPORTED"]).write_text(str(os.getpid()))
SEEN = {"import": os.environ.get("DATABASE_URL")}

@pytest.hookimpl(tryfirst=True)  # as pytest-django's, which reads the application's settings here
def pytest_load_initial_conftests(early_config, parser, args):
    SEEN["first_hook"] = os.environ.get("DATABASE_URL")
    SEEN["services_file"] = os.environ.get("TESTLANE_SERVICES_FILE")

def pytest_sessionfinish(session):
    pathlib.Path(os.environ["SEEN"]).write_text(json.dumps(SEEN))
"""

CONFTEST = """
import os
import early_probe
early_probe.SEEN["conftest"] = os.environ.get("DATABASE_URL")
"""

TEST = """
import os
import early_probe

def test_url(pg_conn):
    early_probe.SEEN["test"] = os.environ["DATABASE_URL"]
    assert pg_conn.execute("SELECT 1").fetchone() == (1,)
"""


@pytest.fixture
def start_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[tool.testlane]\nservices = ["postgres"]\nsetup = ["python setup_db.py"]\n\n'
        '[tool.testlane.env]\nDATABASE_URL = "{postgres.url}"\n\n'
        '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'
    )
    # A name of its own in the file: a new template (a build) in every test, not last run's snapshot.
    (project / "setup_db.py").write_text(f"# {uuid.uuid4().hex}\n{SETUP}")
    (project / "early_probe.py").write_text(PLUGIN)
    (project / "tests" / "conftest.py").write_text(CONFTEST)
    (project / "tests" / "test_url_it.py").write_text(TEST)
    return project


def environment(data_dir: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        {
            "TESTLANE_DATA_DIR": str(data_dir),
            "TESTLANE_REPORTS_FORMAT": "terminal",
            "PLUGIN_IMPORTED": str(tmp_path / "plugin-imported"),
            "SEEN": str(tmp_path / "seen.json"),
            **extra,
        }
    )


def ours(tmp_path: Path) -> list[psutil.Process]:
    """Processes still running in this test's directories (pytest, servers, the set-up command)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            where = " ".join(proc.info.get("cmdline") or []) + " " + (proc.info.get("cwd") or "")
        except psutil.Error:
            continue
        if str(tmp_path) in where and proc.pid != os.getpid():
            found.append(proc)
    return found


def test_pytest_imports_its_plugins_while_the_template_is_built(
    start_project: Path, data_dir: Path, tmp_path: Path
) -> None:
    # The set-up command waits for the marker pytest's `-p` plugin writes when imported: a pytest started only
    # once the services were up would never write it, and the set-up would fail after 60 s.
    env = environment(data_dir, tmp_path)
    result = run_cli(["run", "--", "-q", "-p", "no:cacheprovider", "-p", "early_probe"], cwd=start_project, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    # And yet the variables the services give were there before pytest's first hook and the conftest ran.
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["import"] is None  # imported while the services started: nothing to point at yet
    assert seen["first_hook"] == seen["conftest"] == seen["test"]
    assert seen["test"].startswith("postgresql://")
    assert seen["services_file"] and Path(seen["services_file"]).name == "services.json"
    assert wait_gone(ours(tmp_path)) == []
    assert server_processes(data_dir) == [] and leftovers(data_dir) == []


@pytest.mark.parametrize("failure", ["setup", "plugin"])
def test_a_start_that_fails_ends_the_waiting_pytest_without_a_word_from_it(
    start_project: Path, data_dir: Path, tmp_path: Path, failure: str
) -> None:
    if failure == "setup":  # the services fail: testlane says why; the pytest waiting for them says nothing
        env = environment(data_dir, tmp_path, FAIL_SETUP="1")
        args = ["run", "--", "-q", "-p", "no:cacheprovider"]
    else:  # pytest fails before it waits (an unknown plugin): its own error, and the services are stopped
        env = environment(data_dir, tmp_path)
        args = ["run", "--", "-q", "-p", "no:cacheprovider", "-p", "early_probe", "-p", "no_such_plugin_here"]
    result = run_cli(args, cwd=start_project, env=env)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    if failure == "setup":
        assert result.returncode not in (0, 5), output
        assert "the set-up failed on purpose" in output
        said = [line for line in output.splitlines() if line and not line.startswith(" ")]
        assert all(line.startswith("testlane:") for line in said), output  # not a word from pytest
    else:
        assert result.returncode == 4, output  # pytest's usage error, as without testlane
        assert "no_such_plugin_here" in output
    assert wait_gone(ours(tmp_path)) == []
    assert server_processes(data_dir) == [] and leftovers(data_dir) == []


def test_testlane_run_from_a_parent_directory_stops_when_pytest_would_read_another_projects_settings(
    tmp_path: Path, data_dir: Path
) -> None:
    # Before: the services of the outer directory's settings (no mapping) started, pytest's plugin read sub/'s, and
    # the test ran without APP_PG_PORT: a project's mapping silently not applied (its code fell back to defaults).
    outer = tmp_path / "outer"
    (outer / "sub" / "tests").mkdir(parents=True)
    (outer / "pyproject.toml").write_text('[project]\nname = "outer"\nversion = "0"\n')
    (outer / "sub" / "pyproject.toml").write_text(
        '[tool.testlane]\nservices = ["postgres"]\n\n[tool.testlane.env]\nAPP_PG_PORT = "{postgres.port}"\n\n'
        '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'
    )
    (outer / "sub" / "tests" / "test_mapped.py").write_text(
        'import os\n\ndef test_mapped():\n    assert os.environ["APP_PG_PORT"].isdigit()\n'
    )
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_REPORTS_FORMAT": "terminal"})
    result = run_cli(["run", "--", "-q", "-p", "no:cacheprovider", "sub/tests"], cwd=outer, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    sub = (outer / "sub").resolve()
    assert f"whose {sub / 'pyproject.toml'} has its own [tool.testlane]" in output, output
    assert f"run `testlane run` from {sub}, or name the file: `testlane run --config {sub / 'pyproject.toml'}" in output
    assert "Traceback" not in output
    # The fix it names works, and from the project's own directory too.
    named = ["run", "--config", "sub/pyproject.toml", "--", "-q", "-p", "no:cacheprovider", "sub/tests"]
    for args, cwd in ((named, outer), (["run", "--", "-q", "-p", "no:cacheprovider", "tests"], outer / "sub")):
        result = run_cli(args, cwd=cwd, env=env)
        assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr
    assert server_processes(data_dir) == [] and leftovers(data_dir) == []
