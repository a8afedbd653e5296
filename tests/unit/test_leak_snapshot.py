"""The leak check's snapshot of file descriptors (testlane.pytest_plugin.discipline.Descriptors): listed again
whenever a socket may have been opened, also in the place of a descriptor closed meanwhile (same count)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from testlane.pytest_plugin.discipline import Descriptors

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd (Linux)")


def test_a_socket_in_the_place_of_a_closed_file_is_seen(tmp_path: Path) -> None:
    number = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    try:
        before = Descriptors.take()
        with socket.socket() as sock:
            os.dup2(sock.fileno(), number)  # the file at `number` closed, the socket there instead
        inode = os.fstat(number).st_ino
        after = Descriptors.take(before)
        assert after is not before
        assert inode in after.sockets - before.sockets
    finally:
        os.close(number)


def test_another_pipe_in_the_place_of_a_pipe_is_seen() -> None:
    first = os.pipe()
    second = os.pipe()
    try:
        before = Descriptors.take()
        os.dup2(second[0], first[1])  # same count; a pipe cannot be seeked, so its inode is what tells
        assert Descriptors.take(before) is not before
    finally:
        for fd in (*first, *second):
            os.close(fd)
