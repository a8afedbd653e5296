from __future__ import annotations

import pytest

from testlane.core import waiting
from testlane.core.errors import ServiceStartError, TestlaneError
from testlane.core.waiting import WaitTimeout, wait_until
from testlane.services.instance import Instance


def test_error_renders_message_and_hint() -> None:
    err = TestlaneError("the thing failed", hint="do the other thing")
    assert str(err) == "the thing failed\n  hint: do the other thing"
    assert str(TestlaneError("plain")) == "plain"


def test_start_error_carries_log_tail() -> None:
    err = ServiceStartError("did not start", log_tail="line 1\nFATAL: boom\n")
    assert "FATAL: boom" in str(err)
    assert "last lines of the server log" in str(err)


def test_wait_until_returns_the_first_value_that_is_not_none_or_false() -> None:
    calls = iter([None, False, 0, "done"])
    assert wait_until(lambda: next(calls), timeout=5, what="x", interval=0) == 0
    calls = iter([None, False, "done"])
    assert wait_until(lambda: next(calls), timeout=5, what="x", interval=0) == "done"


def test_wait_until_treats_transient_errors_as_not_yet() -> None:
    attempts = []

    def check() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("refused")
        return "up"

    assert wait_until(check, timeout=5, what="server", interval=0, transient=(ConnectionError,)) == "up"
    assert len(attempts) == 3


def test_wait_until_timeout_names_what_and_last_error() -> None:
    def check() -> None:
        raise ConnectionError("connection refused")

    with pytest.raises(WaitTimeout) as info:
        wait_until(check, timeout=0.05, what="postgres on port 1", interval=0.01, transient=(ConnectionError,))
    message = str(info.value)
    assert "timed out after 0.05s waiting for postgres on port 1" in message
    assert "connection refused" in message


def test_wait_until_propagates_unexpected_errors() -> None:
    def check() -> None:
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        wait_until(check, timeout=1, what="x", transient=(ConnectionError,))


def test_wait_until_abort_stops_early() -> None:
    with pytest.raises(WaitTimeout, match="stopped waiting for server: it exited"):
        wait_until(lambda: None, timeout=60, what="server", abort=lambda: "it exited")


def test_waiting_is_immune_to_mocked_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(time, "monotonic", lambda: 0.0)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    with pytest.raises(WaitTimeout):
        wait_until(lambda: None, timeout=0.02, what="x", interval=0.005)
    assert waiting.monotonic is not time.monotonic


def test_instance_urls() -> None:
    pg = Instance(
        run_id="r",
        name="postgres",
        engine="postgres",
        backend="embedded",
        port=5555,
        user="postgres",
        database="postgres",
    )
    assert pg.url == "postgresql://postgres@127.0.0.1:5555/postgres"
    assert pg.url_for("t_1", scheme="postgresql+asyncpg") == "postgresql+asyncpg://postgres@127.0.0.1:5555/t_1"
    vk = Instance(run_id="r", name="valkey", engine="valkey", backend="embedded", port=6000, database="0")
    assert vk.url == "redis://127.0.0.1:6000/0"
    secret = Instance(
        run_id="r",
        name="m",
        engine="mariadb",
        backend="url",
        port=3306,
        user="root",
        password="p@ss/word",
        database="test",
    )
    assert secret.url == "mysql://root:p%40ss%2Fword@127.0.0.1:3306/test"


def test_instance_json_round_trip() -> None:
    inst = Instance(
        run_id="r",
        name="postgres",
        engine="postgres",
        backend="local",
        port=1,
        pid=42,
        extra={"bin_dir": "/x"},
    )
    assert Instance.from_json(inst.to_json()) == inst
