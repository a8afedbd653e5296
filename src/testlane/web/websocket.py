"""A WebSocket client for tests: every wait has a deadline, and a failed wait says what it saw.

::

    client = WsClient.connect(f"{server.ws_url}/chat-ws")            # open, or WsConnectError/WsTimeout
    client.wait_for_message({"type": "system"})                      # a dict is matched as a subset
    reply = client.command("send_message", {"content": "hi"})        # {"id": <generated>, ...} → its answer
    chunks = client.collect(3, {"type": "ai_response_chunk"})        # WsTimeout: "received 1 of 3 ..."

Messages are decoded as JSON when they parse (other text stays ``str``, binary stays ``bytes``).
Waiting is *selective*: a wait takes the first messages that match and leaves the others in
:attr:`WsClient.pending`, where the next wait looks first — so a broadcast that overtakes a
command's answer is not lost, and the order in which a server interleaves events cannot make a
test flaky. :attr:`WsClient.received` keeps everything that arrived, in order.

The client is synchronous, over ``websockets.sync`` (a thread reads the socket). It is the same
in a plain or an ``async def`` test: the server under test runs on its own loop (see
:mod:`testlane.web.live_server`), so blocking here starves nothing. One implementation, no
sync/async twins.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from testlane.core.closing import Closing
from testlane.core.waiting import Deadline, WaitTimeout

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

__all__ = ["DEFAULT_TIMEOUT", "Match", "WsClient", "WsClosed", "WsConnectError", "WsTimeout", "matches"]

DEFAULT_TIMEOUT = 5.0
SHOWN = 10  # messages listed in an error, at most
WIDTH = 200  # characters per message listed

Match = Callable[[Any], bool] | Mapping[str, Any] | None
"""``None`` (any message), a predicate (one that raises ``KeyError``, ``IndexError``, ``TypeError`` or
``AttributeError`` on a message of another shape does not match it), or a dict every key of which the
message must have with an equal value (nested dicts are matched the same way)."""


class WsTimeout(WaitTimeout):
    """A WebSocket wait passed its deadline.

    ``matched`` holds the messages that did match (``collect`` got that many of ``expected``);
    the message lists them and the messages still pending.
    """

    def __init__(self, message: str, *, matched: Sequence[object] = (), expected: int = 1) -> None:
        super().__init__(message)
        self.matched = list(matched)
        self.expected = expected


class WsClosed(ConnectionError):
    """The connection was closed while a wait was still short of what it expected, or before a send."""

    def __init__(self, message: str, *, code: int | None, reason: str, matched: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.matched = list(matched)


class WsConnectError(ConnectionError):
    """The connection could not be opened: refused, or the handshake was rejected (``status`` set)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def matches(message: Any, pattern: Match) -> bool:
    """True when ``message`` satisfies ``pattern`` (see :data:`Match`)."""
    if pattern is None:
        return True
    if isinstance(pattern, Mapping):
        return isinstance(message, Mapping) and all(
            key in message and (matches(message[key], value) if isinstance(value, Mapping) else message[key] == value)
            for key, value in pattern.items()
        )
    try:
        return bool(pattern(message))
    except (KeyError, IndexError, TypeError, AttributeError):  # `m["type"]` on a message of another shape
        return False


def describe(pattern: Match) -> str:
    """How an error names what a wait was looking for: ``""``, ``matching {...}``, ``accepted by f``."""
    if pattern is None:
        return ""
    if isinstance(pattern, Mapping):
        return f"matching {_short(pattern)}"
    name = getattr(pattern, "__qualname__", repr(pattern))
    if getattr(pattern, "__name__", None) == "<lambda>":
        name = _lambda_source(pattern) or name
    return f"accepted by {name}"


def _lambda_source(function: Any) -> str | None:
    """``lambda m: m["id"] == 3`` cut out of the line that defines it (None when unknown)."""
    try:
        line = inspect.getsource(function)
    except (OSError, TypeError):
        return None
    start = line.find("lambda")
    if start < 0:
        return None
    depth = 0
    for end in range(start, len(line)):
        char = line[end]
        if char in "([{":
            depth += 1
        elif char in ")]}" or (char == "," and depth == 0):
            if depth == 0:
                return line[start:end].strip()
            depth -= 1
    return line[start:].strip()


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= WIDTH else text[: WIDTH - 3] + "..."


def _listing(title: str, messages: Sequence[Any]) -> str:
    if not messages:
        return f"\n  {title}: none"
    lines = [f"\n  {title} ({len(messages)}):"]
    lines += [f"\n    {_short(m)}" for m in messages[:SHOWN]]
    if len(messages) > SHOWN:
        lines.append(f"\n    ... and {len(messages) - SHOWN} more")
    return "".join(lines)


def _decode(raw: str | bytes) -> Any:
    if isinstance(raw, bytes):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class WsClient(Closing):
    """One WebSocket connection with deadline-bound, selective waits (see the module docstring).

    Open it with :meth:`connect` (or the ``ws_client`` fixture), which builds it around the websockets
    connection; ``timeout`` is the default of every wait. Usable as a context manager; :meth:`close` is
    idempotent.
    """

    def __init__(
        self,
        opener: AbstractContextManager[ClientConnection],
        connection: ClientConnection,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.received: list[Any] = []
        self.pending: list[Any] = []
        self._opener: AbstractContextManager[ClientConnection] | None = opener
        self._conn = connection

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] | None = None,
        **options: object,
    ) -> WsClient:
        """Open a connection to ``url`` and wait (at most ``timeout`` s) until it is open.

        ``options`` go to ``websockets.sync.client.connect``. Proxies from the environment are not
        used and no keepalive pings are sent unless ``options`` say otherwise.
        """
        __tracebackhide__ = True
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect
        from websockets.typing import Subprotocol

        settings: dict[str, Any] = {"proxy": None, "ping_interval": None, "close_timeout": 2.0, **options}
        try:
            # `with connect(...)` is the one form every websockets version agrees on; entered by hand.
            opener = connect(
                url,
                open_timeout=timeout,
                additional_headers=dict(headers) if headers else None,
                subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
                **settings,
            )
            connection = opener.__enter__()
        except TimeoutError:
            raise WsTimeout(f"timed out after {timeout:g}s opening a WebSocket to {url}") from None
        except InvalidStatus as exc:
            response = exc.response
            body = bytes(response.body or b"").decode("utf-8", "replace").strip()
            raise WsConnectError(
                f"the server refused the WebSocket handshake to {url}: HTTP {response.status_code}"
                + (f" {_short(body)}" if body else "")
                + " (is the path right, and does the endpoint accept WebSockets?)",
                status=response.status_code,
            ) from None
        except InvalidHandshake as exc:  # not a WebSocket server there, or a broken upgrade answer
            raise WsConnectError(f"the WebSocket handshake with {url} failed: {exc}") from None
        except OSError as exc:
            raise WsConnectError(f"could not connect to {url}: {exc}") from None
        return cls(opener, connection, url, timeout=timeout)

    # -- sending -----------------------------------------------------------------------------
    def send(self, message: object) -> None:
        """Send ``message``: ``str`` and ``bytes`` as they are, anything else as JSON text."""
        from websockets.exceptions import ConnectionClosed

        if not isinstance(message, str | bytes):
            message = json.dumps(message)
        try:
            self._conn.send(message)
        except ConnectionClosed:
            code, reason = self._conn.close_code, self._conn.close_reason or ""
            raise WsClosed(
                f"cannot send to {self.url}: it was closed (code {code}{', ' + repr(reason) if reason else ''})",
                code=code,
                reason=reason,
            ) from None

    def command(
        self,
        name: str,
        payload: object = None,
        *,
        timeout: float | None = None,
        id: str | None = None,
    ) -> Any:
        """Send ``{"id", "command": name, "payload"}`` with a generated id; return the answer with that id."""
        __tracebackhide__ = True
        command_id = id or uuid.uuid4().hex
        self.send({"id": command_id, "command": name, "payload": payload if payload is not None else {}})
        return self.wait_for_message({"id": command_id}, timeout=timeout)

    # -- receiving ---------------------------------------------------------------------------
    def recv(self, *, timeout: float | None = None) -> Any:
        """The next message (pending ones first)."""
        __tracebackhide__ = True
        return self._take(1, None, timeout)[0]

    def wait_for_message(self, match: Match = None, *, timeout: float | None = None) -> Any:
        """The first message that matches; the others stay pending for later waits."""
        __tracebackhide__ = True
        return self._take(1, match, timeout)[0]

    def collect(self, n: int, match: Match = None, *, timeout: float | None = None) -> list[Any]:
        """``n`` messages that match, in arrival order; a timeout says "received k of n" and lists them."""
        __tracebackhide__ = True
        return self._take(n, match, timeout)

    def _take(self, n: int, match: Match, timeout: float | None) -> list[Any]:
        __tracebackhide__ = True
        seconds = self.timeout if timeout is None else timeout
        deadline = Deadline.after(seconds)
        chosen = [i for i, message in enumerate(self.pending) if matches(message, match)][:n]
        while len(chosen) < n:
            message = self._receive(deadline, n, match, chosen, seconds)
            self.pending.append(message)
            if matches(message, match):
                chosen.append(len(self.pending) - 1)
        taken = [self.pending[i] for i in chosen]
        for i in reversed(chosen):
            del self.pending[i]
        return taken

    def _receive(self, deadline: Deadline, n: int, match: Match, chosen: list[int], seconds: float) -> Any:
        __tracebackhide__ = True
        from websockets.exceptions import ConnectionClosed

        try:
            raw = self._conn.recv(timeout=deadline.remaining)
        except TimeoutError:
            raise self._timeout(n, match, chosen, seconds) from None
        except ConnectionClosed as exc:
            raise self._closed(exc, n, match, chosen) from None
        message = _decode(raw)
        self.received.append(message)
        return message

    def _progress(self, n: int, match: Match, chosen: list[int]) -> tuple[str, list[Any], list[Any]]:
        taken = set(chosen)
        matched = [self.pending[i] for i in chosen]
        others = [m for i, m in enumerate(self.pending) if i not in taken]
        what = describe(match)
        if n == 1:
            return " ".join(filter(None, ["no message", what, "arrived"])), matched, others
        return " ".join(filter(None, [f"received {len(matched)} of {n} messages", what])), matched, others

    def _timeout(self, n: int, match: Match, chosen: list[int], seconds: float) -> WsTimeout:
        head, matched, others = self._progress(n, match, chosen)
        text = f"{head} within {seconds:g}s on {self.url}"
        if n > 1:
            text += _listing("received", matched)
        text += _listing("other messages received and still pending", others)
        return WsTimeout(text, matched=matched, expected=n)

    def _closed(self, exc: Any, n: int, match: Match, chosen: list[int]) -> WsClosed:
        head, matched, others = self._progress(n, match, chosen)
        code = self._conn.close_code
        reason = self._conn.close_reason or ""
        text = (
            f"{self.url} was closed (code {code}{', ' + repr(reason) if reason else ''}) before the wait was over: "
            f"{head}"
        )
        if n > 1:
            text += _listing("received", matched)
        text += _listing("other messages received and still pending", others)
        return WsClosed(text, code=code, reason=reason, matched=matched)

    # -- closing -----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once the connection is closed, by either side."""
        from websockets.protocol import State

        return bool(self._conn.protocol.state is State.CLOSED)

    def close(self) -> None:
        """Close the connection (a close handshake of at most ``close_timeout``, 2 s by default)."""
        opener, self._opener = self._opener, None
        if opener is not None:
            opener.__exit__(None, None, None)

    def __repr__(self) -> str:
        return f"<WsClient {self.url} received={len(self.received)} pending={len(self.pending)}>"
