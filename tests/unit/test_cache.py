"""Sealing a cache entry: every file and directory, never what a symbolic link points to."""

from __future__ import annotations

import os
import stat
from pathlib import Path

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
