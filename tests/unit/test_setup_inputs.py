"""What a template built by set-up commands is keyed by (SetupCommands.inputs / fingerprint), no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from testlane.core.config import load_settings
from testlane.databases.setup_commands import SetupCommands


def _commands(root: Path, setup: str) -> SetupCommands:
    (root / "pyproject.toml").write_text(f'[project]\nname = "app"\nversion = "0"\n[tool.testlane]\nsetup = {setup}\n')
    return SetupCommands(load_settings(start=root, environ={}))


@pytest.mark.parametrize("layout", ["app", "src/app"])
def test_a_python_m_command_is_keyed_by_the_package_it_runs(tmp_path: Path, layout: str) -> None:
    """Found on a real project (fastapi full-stack template): `setup = ["python -m app.initial_data"]` whose seed
    lives in app/core/db.py — editing it (or app/initial_data.py) reused the old template."""
    package = tmp_path / layout
    (package / "core").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "initial_data.py").write_text("from app.core.db import init_db\ninit_db()\n")
    (package / "core" / "db.py").write_text("def init_db():\n    print('superuser: admin')\n")
    commands = _commands(tmp_path, '["alembic upgrade head", "python -m app.initial_data"]')
    assert package / "core" / "db.py" in commands.inputs()
    before = commands.fingerprint()
    (package / "core" / "db.py").write_text("def init_db():\n    print('superuser: root')\n")
    assert commands.fingerprint() != before


def test_a_module_outside_the_project_adds_nothing(tmp_path: Path) -> None:
    commands = _commands(tmp_path, '["python -m http.server --help"]')
    assert commands.inputs() == []
