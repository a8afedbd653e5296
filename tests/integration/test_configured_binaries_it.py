"""A configured server binary that is not one (``mariadb.binary = "/usr/bin/true"``) or is not there: one
clear error naming the key, whatever ``auto`` could fall back to, and nothing created in the cache."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import clean_env, run_cli

COREUTILS = (
    "true (GNU coreutils) 9.4\n"
    "Copyright (C) 2023 Free Software Foundation, Inc.\n"
    "License GPLv3+: GNU GPL version 3 or later <https://gnu.org/licenses/gpl.html>.\n"
)


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}")
    path.chmod(0o755)
    return path


def _mariadb_project(project: Path, binary: str) -> None:
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0"\n\n'
        f'[tool.testlane]\nservices = ["mariadb"]\n\n[tool.testlane.mariadb]\nbinary = "{binary}"\n'
    )
    (project / "test_x.py").write_text("def test_x(mariadb):\n    assert mariadb\n")


def _entries(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if "mariadb" in p.parts[len(cache.parts) :])


def _fake_installer(bin_dir: Path) -> None:
    """A ``mariadb-install-db`` that fills the data directory, as the real one does."""
    _script(
        bin_dir / "mariadb-install-db", 'for a; do case "$a" in --datadir=*) mkdir -p "${a#*=}/mysql";; esac; done\n'
    )


def test_a_configured_binary_that_is_not_mariadb_is_refused_before_the_cache(
    project: Path, data_dir: Path, cache_dir: Path, bin_dir: Path
) -> None:
    fake = _script(bin_dir / "mariadbd", f"cat <<'EOF'\n{COREUTILS}EOF\n")
    _fake_installer(bin_dir)
    _mariadb_project(project, str(fake))
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(cache_dir)})
    result = run_cli(["run", "--", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "mariadb.binary" in result.stderr, out
    assert "true (GNU coreutils) 9.4" in result.stderr, out
    assert "Copyright" not in out and "gnu.org" not in out, out
    assert "Traceback" not in out, out
    assert _entries(cache_dir) == [], _entries(cache_dir)


def test_a_configured_binary_that_does_not_exist_is_an_error_under_auto(
    project: Path, data_dir: Path, cache_dir: Path
) -> None:
    _mariadb_project(project, "/nonexistent/mariadbd")
    env = clean_env(
        {"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(cache_dir), "TESTLANE_BACKEND": "auto"}
    )
    result = run_cli(["run", "--", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "mariadb.binary" in result.stderr and "/nonexistent/mariadbd" in result.stderr, out
    assert "short-name" not in out and "podman" not in out and "container" not in result.stderr.split("hint:")[0], out
    assert "Traceback" not in out, out


def test_a_server_that_exits_at_start_is_reported_without_naming_a_deleted_log(
    project: Path, data_dir: Path, cache_dir: Path, bin_dir: Path
) -> None:
    says = "mariadbd  Ver 10.11.6-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64"
    fake = _script(
        bin_dir / "mariadbd",
        f'case "$1" in --version) echo "{says}"; exit 0;; esac\necho "[ERROR] this server gives up"\nexit 1\n',
    )
    _fake_installer(bin_dir)
    _mariadb_project(project, str(fake))
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(cache_dir)})
    result = run_cli(["run", "--", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 3, out
    assert "[ERROR] this server gives up" in result.stderr, out
    named = [word.strip(";,.") for word in result.stderr.split() if word.startswith("/") and ".log" in word]
    assert [path for path in named if not Path(path).exists()] == [], out
    entries = [p.name for p in (cache_dir / "mariadb").iterdir() if p.is_dir()]
    assert entries and all(name.startswith("10.11.6-") for name in entries), entries  # the version token only


def test_rabbitmq_binary_that_is_not_rabbitmq_server_is_one_error_naming_the_key(
    project: Path, data_dir: Path, cache_dir: Path
) -> None:
    # `rabbitmq.binary = "/usr/bin/true"` used to start "a node" that exited 0 without a log; doctor said ok
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0"\n\n'
        '[tool.testlane]\nservices = ["rabbitmq"]\n\n[tool.testlane.rabbitmq]\nbinary = "/usr/bin/true"\n'
    )
    (project / "test_x.py").write_text("def test_x(rabbitmq):\n    assert rabbitmq\n")
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(cache_dir)})
    result = run_cli(["run", "--", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert out.count("/usr/bin/true (rabbitmq.binary) is not a RabbitMQ server") == 1, out
    assert "did not start" not in out and "exited with code" not in out and "Traceback" not in out, out
    doctor = run_cli(["doctor"], cwd=project, env=env)
    lines = [line for line in (doctor.stdout + doctor.stderr).splitlines() if "rabbitmq (local)" in line]
    assert doctor.returncode != 0 and lines and lines[0].startswith("FAIL"), doctor.stderr
    assert "rabbitmq.binary" in lines[0] and "RabbitMQ 3." not in lines[0], doctor.stderr
