"""MariaDB's cached data directory is sealed against the service user, as Postgres's is (issue 13, case 1).

* As root the entry is root's, group the service user's, directories 0750 and files 0640: the service
  user (and so anything a server runs, such as ``SELECT ... INTO OUTFILE``) can copy it, not change it.
* An entry the invoking user does not own (as earlier versions left it) is rebuilt, never started from.
* :data:`~testlane.services.cache.LAYOUT` is part of the key; staging directories of dead builds are swept.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from testlane.core.runtime import RunContext, is_root
from testlane.services import mariadb as mariadb_module
from testlane.services.cache import LAYOUT, entry_lock
from testlane.services.mariadb import MariaDbEngine, MariaDbServer
from testlane.services.registry import Registry
from tests.helpers import server_processes
from tests.mariadb_helpers import has_local_mariadb

pytestmark = pytest.mark.skipif(not has_local_mariadb(), reason="no local mariadbd")
needs_root = pytest.mark.skipif(not is_root(), reason="needs root (the service user)")

TAMPERED = "tl_tampered"  # a directory in a data directory is a database to the server


@pytest.fixture
def engine(settings_for: Any, cache_dir: Path, data_dir: Path) -> Iterator[MariaDbEngine]:
    settings = settings_for(cache_dir=str(cache_dir), mariadb__backend="local")
    context = RunContext.from_settings(settings, owner=os.getpid())
    context.ensure_dirs()
    yield MariaDbEngine(settings, context, Registry(context))
    assert server_processes(data_dir) == []


def _tree(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every path below ``root``: (uid, gid, mode, sha256 of a file's contents)."""
    seen: dict[str, tuple[int, int, int, str]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        seen[str(path.relative_to(root))] = (st.st_uid, st.st_gid, st.st_mode & 0o7777, digest)
    return seen


def _databases(server: MariaDbServer) -> list[str]:
    with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES")
        return [row[0] for row in cur.fetchall()]


def _as_service_user(engine: MariaDbEngine, command: str) -> subprocess.CompletedProcess[str]:
    assert engine.user is not None
    return subprocess.run(
        ["runuser", "-u", engine.user.name, "--", "sh", "-c", command],
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
    )


@needs_root
def test_the_service_user_cannot_change_what_a_later_run_starts_from(engine: MariaDbEngine) -> None:
    datadir = engine.base_datadir()
    user = engine.user
    assert user is not None
    before = _tree(datadir)
    assert len(before) > 20 and "mysql" in before and "ibdata1" in before
    for path, (uid, gid, mode, _digest) in before.items():
        assert (uid, gid) == (0, user.gid), path
        assert mode == (0o750 if (datadir / path).is_dir() else 0o640), (path, oct(mode))
    entry = datadir.parent.stat()
    assert (entry.st_uid, entry.st_gid, entry.st_mode & 0o777) == (0, user.gid, 0o750)

    # From the server (it runs as the service user): SELECT ... INTO OUTFILE into the cache.
    with engine.start("tamper") as server:
        assert isinstance(server, MariaDbServer)
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            for target in (datadir / "tampered.txt", datadir / "mysql" / "tampered.txt", datadir.parent / "added"):
                with pytest.raises(pymysql.err.MySQLError) as refused:
                    cur.execute(f"SELECT 'tampered' INTO OUTFILE '{target}'")
                assert "Permission denied" in str(refused.value), refused.value
    # Directly as the service user: no new database, no changed file, no new entry next to it.
    for command in (
        f"mkdir {datadir / TAMPERED}",
        f"echo tampered >> {datadir / 'mysql' / 'db.frm'}",
        f"rm -rf {datadir / 'mysql'}",
        f"mv {datadir} {datadir}.gone",
        f"touch {datadir.parent / 'added'}",
    ):
        outcome = _as_service_user(engine, command)
        assert outcome.returncode != 0 and "Permission denied" in outcome.stderr, (command, outcome)
    assert _tree(datadir) == before
    assert not (datadir.parent / "added").exists()

    with engine.start("later") as later:
        assert isinstance(later, MariaDbServer)
        assert TAMPERED not in _databases(later)
        copy = Path(later.instance.instance_dir or "") / "data"
        assert copy.stat().st_uid == user.uid, "each instance runs on its own copy, the service user's"
        assert not (copy / "tampered.txt").exists()
        # Stored sparse, copied sparse: the 70 MB of zeros in ibdata1 are neither stored nor copied.
        for ibdata in (datadir / "ibdata1", copy / "ibdata1"):
            st = ibdata.stat()
            assert st.st_blocks * 512 < st.st_size / 4, (ibdata, st.st_blocks * 512, st.st_size)


@needs_root
def test_a_cache_entry_the_service_user_owns_is_not_used(engine: MariaDbEngine) -> None:
    datadir = engine.base_datadir()
    user = engine.user
    assert user is not None
    # As an earlier testlane left it (the service user's), with a database a hostile server added.
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(datadir)], check=True)
    made = _as_service_user(engine, f"mkdir {datadir / TAMPERED}")
    assert made.returncode == 0, made.stderr
    with engine.start("after") as server:
        assert isinstance(server, MariaDbServer)
        assert TAMPERED not in _databases(server)
    assert datadir.stat().st_uid == 0, "the untrusted entry was rebuilt, sealed"
    assert not (datadir / TAMPERED).exists()


def test_the_layout_is_part_of_the_key_and_dead_builds_are_swept(
    engine: MariaDbEngine, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bins = engine.binaries()
    key = engine.datadir_key(bins)
    monkeypatch.setattr(mariadb_module, "LAYOUT", LAYOUT + 1)
    assert engine.datadir_key(bins) != key, "entries of another layout are never reused"
    monkeypatch.undo()
    # A build killed during mariadb-install-db, or during the copy into the cache, left its staging directory.
    gone = subprocess.Popen(["true"])
    gone.wait()
    root = cache_dir / "mariadb" / key
    left = [root / f".install.{gone.pid}.tmp", root / f".data.{gone.pid}.tmp"]
    for path in left:
        (path / "mysql").mkdir(parents=True)
    datadir = engine.base_datadir()
    assert datadir == root / "data" and (datadir / "mysql").is_dir()
    assert [p for p in left if p.exists()] == []
    assert sorted(p.name for p in root.iterdir()) == ["data", "meta.json"]
    assert entry_lock(root).exists(), "the lock is next to the entry"
