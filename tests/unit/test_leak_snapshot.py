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


def test_a_socket_in_the_place_of_a_pipe_is_seen() -> None:
    first = os.pipe()
    try:
        before = Descriptors.take()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            os.dup2(sock.fileno(), first[1])  # same count; a pipe cannot be seeked, so what tells is asked of a pipe
        after = Descriptors.take(before)
        assert after is not before
        assert os.fstat(first[1]).st_ino in after.sockets - before.sockets
    finally:
        for fd in first:
            os.close(fd)


def test_another_pipe_in_the_place_of_a_pipe_is_no_socket() -> None:
    first = os.pipe()
    second = os.pipe()
    try:
        before = Descriptors.take()
        os.dup2(second[0], first[1])  # same count, another pipe: no socket opened
        assert Descriptors.take(before).sockets == before.sockets
    finally:
        for fd in (*first, *second):
            os.close(fd)


def test_a_listening_socket_in_the_place_of_a_file_is_seen(tmp_path: Path) -> None:
    """Files are checked all at once (one ``poll``: a file is always ready to read and write, a listening socket
    never ready to write)."""
    numbers = [os.open(tmp_path / f"file{i}", os.O_RDWR | os.O_CREAT) for i in range(3)]
    try:
        before = Descriptors.take()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            os.dup2(sock.fileno(), numbers[1])
        after = Descriptors.take(before)
        assert after is not before
        assert os.fstat(numbers[1]).st_ino in after.sockets - before.sockets
    finally:
        for fd in numbers:
            os.close(fd)


def test_a_socket_in_the_place_of_the_directory_it_counts_with_is_seen() -> None:
    """The number of descriptors is read from /proc/self/fd held open: a test that closes it (and a socket that
    takes its number) neither defeats the count nor hides the socket."""
    before = Descriptors.take()
    own = f"/proc/{os.getpid()}/fd"
    directory = next(int(n) for n in os.listdir(own) if os.path.realpath(f"{own}/{n}") == own)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        os.dup2(sock.fileno(), directory)  # the held directory closed, a listening socket in its place
        try:
            after = Descriptors.take(before)
            assert after is not before
            assert os.fstat(directory).st_ino in after.sockets - before.sockets
        finally:
            os.close(directory)
    again = Descriptors.take()  # the directory opened again, and the snapshot's fast path back
    assert Descriptors.take(again) is again


def test_the_standard_streams_swapped_by_capture_do_not_defeat_the_fast_path(tmp_path: Path) -> None:
    """pytest's capture puts a file on descriptors 1 and 2 while a test runs: a snapshot on the other side of that
    (a class-scoped fixture set up inside a test, as pytest-django's) listed every descriptor after every test."""
    saved = os.dup(1)
    terminal = os.pipe()  # what descriptor 1 is outside capture: a pipe (or a terminal), never seekable
    captured = os.open(tmp_path / "captured", os.O_RDWR | os.O_CREAT)
    try:
        os.dup2(terminal[1], 1)
        before = Descriptors.take()
        os.dup2(captured, 1)
        assert Descriptors.take(before) is before
    finally:
        os.dup2(saved, 1)
        for fd in (saved, captured, *terminal):
            os.close(fd)
