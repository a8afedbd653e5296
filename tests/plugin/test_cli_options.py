"""The global options (--config, --set, -v, -q) before or after a command's name, and ``--set`` reaching the
settings of the pytest that ``testlane run`` starts (issue 14, seen 6: docs/backends.md shows
``testlane run --set ...``). Runs the real CLI in a project with no services, so nothing is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import clean_env, inner_pyproject, run_cli

pytestmark = pytest.mark.timeout(120)

PYPROJECT = inner_pyproject(services="[]", testlane="stop_grace = 15")

PROBE = """
import json, os

def test_settings(testlane_settings):
    seen = {
        "stop_grace": testlane_settings.stop_grace,
        "leaks": testlane_settings.discipline.leaks,
        "config": str(testlane_settings.config_file),
    }
    with open(os.environ["PROBE_OUT"], "w") as fh:
        json.dump(seen, fh)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "test_probe.py").write_text(PROBE)
    return root


def probe(project: Path, tmp_path: Path, args: list[str]) -> dict[str, object]:
    import json

    out = tmp_path / "seen.json"
    out.unlink(missing_ok=True)
    env = clean_env({"TESTLANE_DATA_DIR": str(tmp_path / "data"), "PROBE_OUT": str(out)})
    result = run_cli(args, cwd=project, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    seen: dict[str, object] = json.loads(out.read_text())
    return seen


PYTEST = ["--", "-q", "-p", "no:cacheprovider"]


@pytest.mark.parametrize("where", ["after", "before"])
def test_set_reaches_the_settings_of_the_pytest_that_run_starts(project: Path, tmp_path: Path, where: str) -> None:
    options = ["--set", "stop_grace=7", "--set", "discipline.leaks=off"]
    args = ["run", *options, *PYTEST] if where == "after" else [*options, "run", *PYTEST]
    seen = probe(project, tmp_path, args)
    assert seen["stop_grace"] == 7.0 and seen["leaks"] == "off"


def test_options_before_and_after_add_up_and_config_reaches_pytest(project: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text(PYPROJECT.replace("stop_grace = 15", "stop_grace = 3"))
    seen = probe(project, tmp_path, ["--set", "discipline.leaks=off", "run", "-q", "--config", str(other), *PYTEST])
    assert seen == {"stop_grace": 3.0, "leaks": "off", "config": str(other)}
    # A later --set for the same key wins, wherever it is.
    seen = probe(project, tmp_path, ["--set", "stop_grace=1", "run", "--set", "stop_grace=2", *PYTEST])
    assert seen["stop_grace"] == 2.0


def test_set_after_any_command_is_read_and_checked(project: Path, tmp_path: Path) -> None:
    result = run_cli(["doctor", "--set", "postgres.backend=docker"], cwd=project, env=clean_env())
    assert result.returncode == 4, result.stdout + result.stderr
    assert "postgres.backend = 'docker' is not one of" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli(["services", "status", "--set", "no_such_key=1"], cwd=project, env=clean_env())
    assert result.returncode == 4 and "unknown setting 'no_such_key'" in result.stderr
    help_text = run_cli(["run", "--help"], cwd=project, env=clean_env()).stdout
    assert "--set KEY=VALUE" in help_text and "--config" in help_text and "--verbose" in help_text


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_empty_config_is_refused_not_a_quiet_fall_back(project: Path, where: str) -> None:
    """Found by a fresh user: ``testlane --config "" run`` read the nearest pyproject.toml without a word."""
    args = ["--config", "", "doctor"] if where == "before" else ["doctor", "--config", ""]
    result = run_cli(args, cwd=project, env=clean_env())
    assert result.returncode == 4, result.stdout + result.stderr
    assert "'--config': is empty: name a pyproject.toml" in result.stderr
    assert "Traceback" not in result.stderr
