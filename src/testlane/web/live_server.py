"""A live server: any ASGI app served by uvicorn on a free port, in a background thread.

::

    with LiveServer(app) as server:          # started: port 0, ready when uvicorn says so
        httpx.get(f"{server.url}/health")
        WsClient.connect(f"{server.ws_url}/chat-ws")
    # stopped: listener closed, every open connection aborted, lifespan shutdown run, thread joined

The app runs in this process (so fixtures, spies, respx mocks and frozen time reach it) but on its
own event loop in its own thread, so a test may block on a WebSocket or HTTP call without starving
the server. Readiness is uvicorn's own ``Server.started`` (set after the app's lifespan startup and
the bind), awaited with :func:`~testlane.core.waiting.wait_until`; the port is read from the bound
socket. A start that fails — a lifespan that raises, a port in use — raises
:class:`~testlane.core.errors.ServiceStartError` carrying the lines uvicorn logged from this server's
thread, and leaves no thread or socket behind.

**Stopping force-closes.** uvicorn's own graceful shutdown waits for clients to close their
connections, which a test's half-read WebSocket never does. :meth:`LiveServer.stop` first closes the
listener and aborts every open connection (clients see the connection drop at once), then lets
uvicorn shut down: request handlers get their disconnect, those still running after ``grace``
seconds are cancelled, and the app's lifespan shutdown runs (so engines and pools are disposed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from testlane.core.closing import Closing
from testlane.core.errors import ServiceError, ServiceStartError
from testlane.core.waiting import WaitTimeout, wait_until

if TYPE_CHECKING:
    import uvicorn

__all__ = ["LiveServer"]

# An ASGI application (what FastAPI, Starlette and Django's ASGI handler are): the ASGI spec's callable, with
# its messages as mappings (uvicorn checks their contents; a type cannot).
ASGIMessage = MutableMapping[str, object]
ASGIApp = Callable[
    [ASGIMessage, Callable[[], Awaitable[ASGIMessage]], Callable[[ASGIMessage], Awaitable[None]]], Awaitable[None]
]

_names = itertools.count(1)
UVICORN_LOGGER = "uvicorn.error"  # uvicorn's startup, lifespan and shutdown messages


class _ThreadLog(logging.Handler):
    """The records uvicorn logs from one server's thread (several servers may run at once)."""

    def __init__(self, thread_name: str, keep: int = 40) -> None:
        super().__init__(logging.DEBUG)
        self.thread_name = thread_name
        self.lines: deque[str] = deque(maxlen=keep)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName == self.thread_name:
            self.lines.append(self.format(record))


def _describe(app: Any) -> str:
    if isinstance(app, str):  # an import string, "package.module:app"
        return app
    name = getattr(app, "__qualname__", None) or type(app).__qualname__
    module = getattr(app, "__module__", None) or type(app).__module__
    return f"{module}.{name}"


class LiveServer(Closing):
    """An ASGI app served by uvicorn on ``host``/``port`` (0: a free one) in a background thread.

    ``url`` and ``ws_url`` are the bases (``http://127.0.0.1:PORT``, ``ws://...``) once started.
    ``grace`` is how long stopping waits for request handlers that outlive their (aborted)
    connection before cancelling them. Other keyword arguments go to ``uvicorn.Config``
    (``ws="wsproto"``, ``root_path=...``); logging is left to the test run (``log_config=None``).
    Serve a fresh app object per server: two servers running one app object share its state.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        grace: int = 1,
        **uvicorn_options: object,
    ) -> None:
        self.app = app
        self.host = host
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.name = f"live-server-{next(_names)}"
        self._requested_port = port
        self._options: dict[str, Any] = {"lifespan": "auto", "access_log": False, "log_config": None, **uvicorn_options}
        self._options["timeout_graceful_shutdown"] = grace
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._log = _ThreadLog(self.name)
        self._exit: BaseException | None = None
        self._port: int | None = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port the server is bound to (raises ``RuntimeError`` before it is started)."""
        if self._port is None:
            raise RuntimeError(f"{self!r} is not running: call start() or use it as a context manager")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, no trailing slash."""
        return f"http://{self._netloc()}"

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT``, no trailing slash: append the endpoint's path."""
        return f"ws://{self._netloc()}"

    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def running(self) -> bool:
        """True between a successful start and stop."""
        return self._port is not None and self._thread is not None and self._thread.is_alive()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port is not None else "not running"
        return f"<LiveServer {self.name} {_describe(self.app)} {where}>"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LiveServer:
        """Start serving; return when the app's lifespan startup has run and the port is bound."""
        __tracebackhide__ = True
        import uvicorn

        if self._thread is not None:
            raise RuntimeError(f"{self!r} was already started")
        config = uvicorn.Config(self.app, host=self.host, port=self._requested_port, **self._options)
        server = self._server = uvicorn.Server(config)
        self._loop, self._exit = None, None
        logging.getLogger(UVICORN_LOGGER).addHandler(self._log)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        try:
            wait_until(
                lambda: server.started,
                timeout=self.start_timeout,
                what=f"{_describe(self.app)} to start serving on {self.host}",
                abort=self._exited,
            )
        except WaitTimeout as exc:
            self.stop()
            why = f"uvicorn exited during startup ({self._exit!r})" if self._exit is not None else str(exc)
            raise ServiceStartError(
                f"live server for {_describe(self.app)} did not start: {why}",
                hint="the lines above are what uvicorn logged for this server: an exception in the app's "
                "lifespan startup, or a port already in use, shows there.",
                log_tail="\n".join(self._log.lines),
            ) from None
        self._port = int(server.servers[0].sockets[0].getsockname()[1])
        return self

    def _exited(self) -> str | None:
        if self._thread is not None and not self._thread.is_alive():
            return f"the server thread exited ({self._exit!r})"
        return None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # uvicorn ends a failed startup with SystemExit; keep it for the message
            self._exit = exc

    async def _serve(self) -> None:
        assert self._server is not None
        self._loop = asyncio.get_running_loop()
        await self._server.serve()

    def _force_close(self) -> None:
        """On the server's loop: stop accepting, abort every connection, ask uvicorn to shut down."""
        server = self._server
        assert server is not None
        for listener in getattr(server, "servers", ()):
            listener.close()
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        server.should_exit = True

    def stop(self) -> None:
        """Stop serving, force-closing open connections; idempotent. Raises if the thread will not end."""
        thread, server, loop = self._thread, self._server, self._loop
        if thread is None or server is None:
            return
        try:
            if loop is not None and thread.is_alive():
                with contextlib.suppress(RuntimeError):  # the loop has just closed: the thread is ending anyway
                    loop.call_soon_threadsafe(self._force_close)
            else:
                server.should_exit = True  # the loop is not up yet: uvicorn checks this after startup
            thread.join(self.stop_timeout)
        finally:
            logging.getLogger(UVICORN_LOGGER).removeHandler(self._log)
        port, self._port = self._port, None
        if thread.is_alive():
            raise ServiceError(
                f"live server {self.name} ({_describe(self.app)}, port {port}) did not stop within "
                f"{self.stop_timeout:g}s.",
                hint="a request handler or the app's lifespan shutdown does not end when cancelled; "
                "recent log:\n" + "\n".join(self._log.lines),
            )
        self._thread = None

    def close(self) -> None:
        """The same as :meth:`stop`: ``with LiveServer(app) as live:`` starts it, then stops it."""
        self.stop()

    def __enter__(self) -> LiveServer:
        return self.start()
