"""The wire format: what is a command, and what the client is told when a frame is not one."""

from __future__ import annotations

import pytest
from chat.protocol import Command, InvalidMessage, parse_command


def test_a_command_is_parsed() -> None:
    raw = '{"id": "c1", "command": "send_message", "payload": {"content": "hi"}}'
    assert parse_command(raw) == Command("c1", "send_message", {"content": "hi"})


def test_the_payload_may_be_left_out() -> None:
    assert parse_command('{"id": 7, "command": "list_conversations"}') == Command(7, "list_conversations", {})


def test_a_frame_that_is_not_json_is_invalid_json() -> None:
    with pytest.raises(InvalidMessage, match=r"^Invalid JSON: Expecting value"):
        parse_command("not json")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("[1, 2]", "expected an object"),
        ('{"command": "x"}', "'id' must be"),
        ('{"id": "", "command": "x"}', "'id' must be"),
        ('{"id": true, "command": "x"}', "'id' must be"),
        ('{"id": "c1"}', "'command' must be"),
        ('{"id": "c1", "command": "x", "payload": [1]}', "'payload' must be an object"),
    ],
)
def test_json_that_is_not_a_command_says_what_is_wrong(raw: str, problem: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_command(raw)
    assert str(caught.value).startswith("Invalid command: ")
    assert problem in str(caught.value)
