"""Fake streams: async generators that stand in for streamed responses (AI tokens, SSE, chunked bodies).

::

    provider.stream_reply = lambda *_: fake_stream(["Hel", "lo", "!"], delay=0.01)
    broken = fake_stream(["partial"], error_after=1)          # raises FakeStreamError after one chunk

A :class:`FakeStream` is a real ``AsyncGenerator`` (``async for``, ``anext``, ``aclose``,
``athrow``), so the code under test cannot tell it from the real thing, and it records what
happened: :attr:`~FakeStream.yielded` (chunks handed out) and :attr:`~FakeStream.closed` (finished,
failed or closed by the consumer — a consumer that abandons a stream without closing it shows as
not closed). Bytes chunks work as an ``httpx.Response(content=...)`` body for a respx route.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable
from types import TracebackType
from typing import TypeVar

__all__ = ["FakeStream", "FakeStreamError", "fake_stream"]

T = TypeVar("T")


class FakeStreamError(RuntimeError):
    """The default error a :class:`FakeStream` raises after ``error_after`` chunks."""


class FakeStream(AsyncGenerator[T, None]):
    """Yields ``chunks`` (after ``delay`` seconds each); with ``error_after=k``, raises after k chunks.

    ``error`` is the exception raised then (an instance or a class; default :class:`FakeStreamError`).
    """

    def __init__(
        self,
        chunks: Iterable[T],
        *,
        delay: float = 0.0,
        error_after: int | None = None,
        error: BaseException | type[BaseException] | None = None,
    ) -> None:
        self.chunks = list(chunks)
        self.delay = delay
        self.error_after = error_after
        self.error = error
        self.yielded: list[T] = []
        self.closed = False

    async def asend(self, value: None) -> T:
        """The next chunk (``async for`` and ``anext`` call this)."""
        if self.closed:
            raise StopAsyncIteration
        count = len(self.yielded)
        if self.error_after is not None and count >= self.error_after:
            self.closed = True
            raise self._error(count)
        if count >= len(self.chunks):
            self.closed = True
            raise StopAsyncIteration
        if self.delay:
            await asyncio.sleep(self.delay)
        chunk = self.chunks[count]
        self.yielded.append(chunk)
        return chunk

    async def athrow(
        self,
        typ: type[BaseException] | BaseException,
        val: object = None,
        tb: TracebackType | None = None,
    ) -> T:
        """Raise ``typ`` at the stream's position: it is closed (``aclose`` throws ``GeneratorExit``)."""
        self.closed = True
        if isinstance(typ, BaseException):
            raise typ
        if isinstance(val, BaseException):
            raise val
        raise typ() if val is None else typ(val)

    def _error(self, count: int) -> BaseException:
        if self.error is None:
            return FakeStreamError(f"fake stream failed after {count} chunk{'s' if count != 1 else ''}")
        return self.error() if isinstance(self.error, type) else self.error

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<FakeStream {len(self.yielded)}/{len(self.chunks)} chunks yielded, {state}>"


def fake_stream(
    chunks: Iterable[T],
    *,
    delay: float = 0.0,
    error_after: int | None = None,
    error: BaseException | type[BaseException] | None = None,
) -> FakeStream[T]:
    """A :class:`FakeStream` of ``chunks``: ``delay`` before each, an error after ``error_after`` of them."""
    return FakeStream(chunks, delay=delay, error_after=error_after, error=error)
