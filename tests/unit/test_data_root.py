"""Choosing the data directory by the room it has (issue 14): tmpfs first, enough free space, a warning
with the fix when the only choice is slow or small. Fake candidates through the seam of choose_data_base."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testlane.core.runtime import MIN_FREE_BYTES, choose_data_base

MB = 1024 * 1024


def _fake(tmp_path: Path, spec: dict[str, tuple[str, int]]):  # type: ignore[no-untyped-def]
    """Real directories (writable, world-traversable) with a fake filesystem type and free space each."""
    paths = []
    for name in spec:
        path = tmp_path / name
        path.mkdir(mode=0o777)
        path.chmod(0o1777)
        paths.append(path)

    def statvfs(p: str) -> os.statvfs_result:
        free = spec[Path(p).name][1]
        return os.statvfs_result((4096, 4096, 0, 0, free // 4096, 0, 0, 0, 0, 255))

    def fstype(p: Path) -> str:
        return spec[p.name][0]

    return paths, statvfs, fstype


def test_the_first_tmpfs_with_room_wins(tmp_path: Path) -> None:
    paths, statvfs, fstype = _fake(
        tmp_path, {"shm": ("tmpfs", 64 * MB), "runtime": ("tmpfs", 2048 * MB), "tmp": ("ext4", 90000 * MB)}
    )
    choice = choose_data_base(paths, statvfs=statvfs, fstype=fstype)
    assert choice.base == paths[1] and choice.warning == ""
    assert "tmpfs with 2048 MB free" in choice.reason and "shm tmpfs 64 MB free" in choice.reason


def test_a_dockers_64_mb_shm_sends_data_to_disk_with_one_line_naming_the_fix(tmp_path: Path) -> None:
    paths, statvfs, fstype = _fake(tmp_path, {"shm": ("tmpfs", 64 * MB), "tmp": ("overlay", 90000 * MB)})
    choice = choose_data_base(paths, statvfs=statvfs, fstype=fstype)
    assert choice.base == paths[1]
    assert "\n" not in choice.warning
    assert "not tmpfs" in choice.warning and f"{paths[0]} has less than 256 MB free" in choice.warning
    assert "--shm-size" in choice.warning and "data_dir" in choice.warning


def test_no_tmpfs_at_all_is_slow_and_says_so(tmp_path: Path) -> None:
    paths, statvfs, fstype = _fake(tmp_path, {"tmp": ("ext4", 90000 * MB)})
    choice = choose_data_base(paths, statvfs=statvfs, fstype=fstype)
    assert choice.base == paths[0] and "no tmpfs is available" in choice.warning


def test_when_nothing_has_room_the_roomiest_is_used_with_a_warning(tmp_path: Path) -> None:
    paths, statvfs, fstype = _fake(tmp_path, {"shm": ("tmpfs", 64 * MB), "tmp": ("ext4", 100 * MB)})
    choice = choose_data_base(paths, statvfs=statvfs, fstype=fstype)
    assert choice.base == paths[1]
    assert "only 100 MB free" in choice.warning and "--shm-size" in choice.warning


def test_the_threshold_and_unusable_candidates(tmp_path: Path) -> None:
    paths, statvfs, fstype = _fake(tmp_path, {"shm": ("tmpfs", MIN_FREE_BYTES), "tmp": ("ext4", 90000 * MB)})
    missing = tmp_path / "missing"
    choice = choose_data_base([missing, *paths], statvfs=statvfs, fstype=fstype)
    assert choice.base == paths[0] and choice.warning == "", "exactly the minimum is enough"
    assert str(missing) not in choice.reason
    small = choose_data_base(paths, statvfs=statvfs, fstype=fstype, need=MIN_FREE_BYTES + 1)
    assert small.base == paths[1] and small.warning


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, the service user must traverse the place")
def test_as_root_a_place_the_service_user_cannot_traverse_is_skipped(tmp_path: Path) -> None:
    paths, statvfs, fstype = _fake(tmp_path, {"run-user-0": ("tmpfs", 2048 * MB), "shm": ("tmpfs", 2048 * MB)})
    paths[0].chmod(0o700)
    choice = choose_data_base(paths, statvfs=statvfs, fstype=fstype)
    assert choice.base == paths[1]
