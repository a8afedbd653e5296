"""`testlane --help` names the services from the kind registry (it said "Postgres, Valkey and MariaDB")."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from testlane.cli.main import cli
from testlane.services import kinds


def test_help_lists_every_registered_service() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for kind in kinds.registered():
        assert kind.display.split(" (")[0] in text, (kind.name, text)
    assert "Postgres, Valkey and MariaDB" not in text


def test_one_liners_do_not_list_only_three_services() -> None:
    repo = Path(__file__).resolve().parents[2]
    description = re.search(r'^description = "(.*)"$', (repo / "pyproject.toml").read_text(), re.M)
    assert description is not None
    for kind in kinds.registered():
        assert kind.display.split(" (")[0] in description.group(1), kind.name
