"""Per-run credentials: URLs that carry them, messages that hide them, files only their owner reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from testlane.core.redact import redact_url
from testlane.services.credentials import new_password, write_private
from testlane.services.instance import Instance
from testlane.services.mariadb import init_sql


def test_a_valkey_url_carries_a_password_without_a_user_name() -> None:
    inst = Instance(run_id="r", name="valkey", engine="valkey", backend="embedded", port=6390, password="p/w d")
    assert inst.url_for("3") == "redis://:p%2Fw%20d@127.0.0.1:6390/3"
    assert redact_url(inst.url) == "redis://:***@127.0.0.1:6390"
    assert Instance(run_id="r", name="valkey", engine="valkey", backend="url", port=1).url == "redis://127.0.0.1:1"


def test_redacted_urls_hide_only_the_password() -> None:
    inst = Instance(
        run_id="r", name="mariadb", engine="mariadb", backend="local", port=3310, user="root", password="s3cret"
    )
    assert inst.url == "mysql://root:s3cret@127.0.0.1:3310"
    assert redact_url(inst.url) == "mysql://root:***@127.0.0.1:3310"
    assert "s3cret" not in repr(redact_url(inst.url))


def test_passwords_are_random_and_need_no_quoting() -> None:
    first, second = new_password(), new_password()
    assert first != second and len(first) == 32
    assert set(first) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_private_files_are_0600_and_never_written_through_a_planted_link(tmp_path: Path) -> None:
    path = write_private(tmp_path / "secret.conf", "requirepass x\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "requirepass x\n"
    write_private(path, "again")  # replaced atomically, still 0600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "again"
    target = tmp_path / "elsewhere"
    target.write_text("")
    planted = tmp_path / "planted"
    planted.symlink_to(target)
    write_private(planted, "secret")  # the link is replaced, never written through
    assert target.read_text() == ""
    assert not planted.is_symlink() and stat.S_IMODE(planted.stat().st_mode) == 0o600
    assert os.getuid() == path.stat().st_uid


def test_mariadb_init_file_sets_every_root_account_and_drops_the_others() -> None:
    sql = init_sql("pw-1")
    for host in ("localhost", "127.0.0.1", "::1"):
        assert f"'root'@'{host}' IDENTIFIED BY 'pw-1'" in sql
    assert "DELETE FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN" in sql
    assert sql.index("FLUSH PRIVILEGES") < sql.index("ALTER USER")
