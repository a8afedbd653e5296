"""What a configured server binary says about itself: a version token, or one clear error naming the key.

The binaries here are small scripts (real processes) that print what a server's ``--version`` prints,
or what ``/usr/bin/true --version`` prints.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testlane.core.config import load_settings
from testlane.core.errors import BinaryNotFoundError
from testlane.services.backends import choose_backend
from testlane.services.binaries import PostgresBinaries, ValkeyBinary, reported_version
from testlane.services.mariadb import MariaDbBinaries

COREUTILS = (
    "true (GNU coreutils) 9.4\n"
    "Copyright (C) 2023 Free Software Foundation, Inc.\n"
    "License GPLv3+: GNU GPL version 3 or later <https://gnu.org/licenses/gpl.html>.\n"
)


def fake_binary(path: Path, says: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{says}EOF\n")
    path.chmod(0o755)
    return path


def test_a_mariadb_version_is_the_token_after_ver(tmp_path: Path) -> None:
    exe = fake_binary(tmp_path / "mariadbd", "mariadbd  Ver 10.11.6-MariaDB-0+deb12u1 for debian-linux-gnu\n")
    assert MariaDbBinaries(exe, exe, "mariadb.binary").version == "10.11.6"
    mysql = fake_binary(tmp_path / "mysqld", "/usr/sbin/mysqld  Ver 8.0.36 for Linux on x86_64 (MySQL)\n")
    assert MariaDbBinaries(mysql, mysql).version == "8.0.36"


@pytest.mark.parametrize("kind", ["mariadb", "postgres", "valkey"])
def test_a_binary_that_is_not_the_server_names_the_key_and_its_first_line(tmp_path: Path, kind: str) -> None:
    exe = fake_binary(
        tmp_path / kind / "bin" / {"mariadb": "mariadbd", "postgres": "postgres"}.get(kind, "x"), COREUTILS
    )
    with pytest.raises(BinaryNotFoundError) as caught:
        if kind == "mariadb":
            _ = MariaDbBinaries(exe, exe, "mariadb.binary").version
        elif kind == "postgres":
            _ = PostgresBinaries(exe.parent, "local", "postgres.bin_dir").version
        else:
            _ = ValkeyBinary(exe, "local", "valkey.binary").version
    text = str(caught.value)
    key = {"mariadb": "mariadb.binary", "postgres": "postgres.bin_dir", "valkey": "valkey.binary"}[kind]
    assert key in text, text
    assert "true (GNU coreutils) 9.4" in text, text
    assert "Copyright" not in text and "gnu.org" not in text, text


@pytest.mark.parametrize(
    "says",
    ["mariadbd  Ver 10.11.6/../../x for linux\n", "mariadbd  Ver \n", "", "Ver 10.11\nabc\n"],
)
def test_a_version_is_a_token_without_slashes_or_newlines(tmp_path: Path, says: str) -> None:
    exe = fake_binary(tmp_path / "mariadbd", says)
    try:
        version = reported_version(
            exe, r"\bVer\s+(\S+)", what="MariaDB/MySQL server", origin="mariadb.binary", setting="mariadb.binary"
        )
    except BinaryNotFoundError as exc:
        assert "mariadb.binary" in str(exc)
        return
    assert "/" not in version and "\n" not in version and version, version


def test_auto_does_not_skip_a_configured_binary_that_does_not_exist(tmp_path: Path) -> None:
    missing = str(tmp_path / "nonexistent" / "mariadbd")
    settings = load_settings(environ={"TESTLANE_MARIADB_BINARY": missing, "TESTLANE_BACKEND": "auto"}, start=tmp_path)
    with pytest.raises(BinaryNotFoundError) as caught:
        choose_backend("mariadb", settings)
    assert "mariadb.binary" in str(caught.value) and missing in str(caught.value)
    settings = load_settings(environ={"TESTLANE_VALKEY_BINARY": missing, "TESTLANE_BACKEND": "auto"}, start=tmp_path)
    with pytest.raises(BinaryNotFoundError) as caught:
        choose_backend("valkey", settings)
    assert "valkey.binary" in str(caught.value)
    settings = load_settings(environ={"TESTLANE_POSTGRES_BIN_DIR": missing, "TESTLANE_BACKEND": "auto"}, start=tmp_path)
    with pytest.raises(BinaryNotFoundError) as caught:
        choose_backend("postgres", settings)
    assert "postgres.bin_dir" in str(caught.value)


def test_auto_does_not_take_a_configured_binary_that_is_not_the_server(tmp_path: Path) -> None:
    exe = fake_binary(tmp_path / "bin" / "mariadbd", COREUTILS)
    fake_binary(tmp_path / "bin" / "mariadb-install-db", "")
    settings = load_settings(environ={"TESTLANE_MARIADB_BINARY": str(exe)}, start=tmp_path)
    with pytest.raises(BinaryNotFoundError) as caught:
        choose_backend("mariadb", settings)
    assert "mariadb.binary" in str(caught.value) and "true (GNU coreutils) 9.4" in str(caught.value)
