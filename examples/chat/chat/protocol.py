"""The wire format of ``/chat-ws``: JSON text frames.

Client → server, a command::

    {"id": "c1", "command": "send_message", "payload": {"conversationId": "...", "content": "Hi"}}

Server → client:

* the answer to a command, with its id: ``{"id", "success": true, "data"}`` or ``{"id", "success": false, "error"}``;
* ``{"type": "system", "message": "Connected"}`` once, on connecting;
* ``{"type": "error", "message": "Invalid ..."}`` for a frame that is not JSON or not a command;
* events: ``message`` (to every client), ``ai_response_chunk`` / ``ai_response_done`` /
  ``ai_response_error`` (to the client that sent the message), ``conversation_titled`` and
  ``conversation_deleted`` (to every client).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Event = dict[str, Any]


class InvalidMessage(ValueError):
    """A frame that is not a command; ``str()`` is what the client is told."""


@dataclass(frozen=True)
class Command:
    """A parsed command."""

    id: str | int
    name: str
    payload: dict[str, Any]


def parse_command(raw: str) -> Command:
    """The command in ``raw``, or :class:`InvalidMessage` saying what is wrong with it."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidMessage(f"Invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMessage("Invalid command: expected an object {id, command, payload}")
    command_id, name, payload = data.get("id"), data.get("command"), data.get("payload", {})
    if not isinstance(command_id, str | int) or isinstance(command_id, bool) or command_id == "":
        raise InvalidMessage("Invalid command: 'id' must be a non-empty string or an integer")
    if not isinstance(name, str) or not name:
        raise InvalidMessage("Invalid command: 'command' must be a non-empty string")
    if not isinstance(payload, dict):
        raise InvalidMessage("Invalid command: 'payload' must be an object")
    return Command(command_id, name, payload)


def welcome() -> Event:
    return {"type": "system", "message": "Connected"}


def error_event(message: str) -> Event:
    return {"type": "error", "message": message}


def success(command_id: str | int, data: Any) -> Event:
    return {"id": command_id, "success": True, "data": data}


def failure(command_id: str | int, error: str) -> Event:
    return {"id": command_id, "success": False, "error": error}
