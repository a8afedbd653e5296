"""External HTTP mocked with respx, strictly: a request nobody mocked fails, naming its URL.

::

    with HttpMock() as mock:                                   # or the `http_mock` fixture
        route = mock.post("https://api.example.com/v1/chat").respond(200, json={"ok": True})
        call_the_code_under_test()
    assert route.called

:class:`HttpMock` is a ``respx.MockRouter`` (every respx route method works) with three changes:

* a request that no route matches raises :class:`UnmockedRequestError` naming the method, the URL
  and the routes there are, *and* is recorded in :attr:`HttpMock.unmocked` (and passed to
  ``on_unmocked``) — so the ``http_mock`` fixture fails the test even when the code under test
  swallowed the error, and a test that failed because of it (the app answered 500) says so in its report;
* requests to loopback hosts (``127.0.0.1``, ``localhost``, ``::1``) that no route matches go to
  the network: the test can talk to its :class:`~testlane.web.live_server.LiveServer` while the
  app's own outgoing calls are mocked (``pass_loopback=False`` turns that off);
* routes never called are not an error unless ``assert_all_called=True``: assert ``route.called``
  where it matters.

respx patches httpx's transports process-wide, so requests an app makes from a live server's
thread are mocked too.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import httpx
import respx
from respx.models import AllMockedAssertionError, PassThrough

__all__ = ["LOOPBACK_HOSTS", "HttpMock", "UnmockedRequestError"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class UnmockedRequestError(AllMockedAssertionError):
    """An HTTP request matched no route of a strict :class:`HttpMock` (an ``AssertionError``)."""


class HttpMock(respx.MockRouter):
    """A strict respx router (see the module docstring); use it as a context manager."""

    def __init__(
        self,
        *,
        pass_loopback: bool = True,
        assert_all_called: bool = False,
        base_url: str | None = None,
        on_unmocked: Callable[[str], object] | None = None,
    ) -> None:
        super().__init__(assert_all_mocked=True, assert_all_called=assert_all_called, base_url=base_url)
        self.pass_loopback = pass_loopback
        self.unmocked: list[str] = []
        # Called with one line per unmatched request ("unmatched outbound request GET https://… — mock it:
        # http_mock.get(...)"), from whichever thread made it: the fixture puts it in the test's report.
        self.on_unmocked = on_unmocked
        self._loopback_route = respx.Route(host__in=list(LOOPBACK_HOSTS))

    def handler(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handler(request)
        except AllMockedAssertionError:
            raise self._unmatched(request) from None

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().async_handler(request)
        except AllMockedAssertionError:
            raise self._unmatched(request) from None

    def _unmatched(self, request: httpx.Request) -> Exception:
        if self.pass_loopback and request.url.host in LOOPBACK_HOSTS:
            return PassThrough(f"loopback, passed through: {request!r}", request=request, origin=self._loopback_route)
        target = f"{request.method} {request.url}"
        self.unmocked.append(target)
        fix = f"http_mock.{request.method.lower()}({str(request.url.copy_with(query=None))!r}).respond(200, json=...)"
        if self.on_unmocked is not None:
            self.on_unmocked(f"unmatched outbound request {target} — mock it: {fix}")
        routes = [f"\n    {route.pattern}" for route in self.routes]
        listing = "".join(routes) if routes else " none"
        return UnmockedRequestError(f"HTTP request not mocked: {target}\n  routes:{listing}\n  mock it: {fix}")

    def describe_unmocked(self) -> str:
        """One line per unmocked request, for a failure message."""
        return "\n".join(f"  {target}" for target in self.unmocked)

    def __enter__(self) -> HttpMock:
        super().__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        super().__exit__(exc_type, exc, tb)
