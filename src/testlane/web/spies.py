"""Spies and stubs on attributes, all restored together (the ``spy`` fixture restores after each test).

::

    spies = Spies()
    add = spies(store, "add_message")                 # calls through; records calls and return values
    spies.stub(provider, "title", return_value="Hi")  # replaces; async functions get an AsyncMock
    ...
    add.assert_awaited_once()
    spies.restore()

Built on ``unittest.mock.patch.object`` with autospec, so a spy on a method receives ``self`` and
checks the signature, and a spy on an ``async def`` is awaitable (``assert_awaited_*`` work). A spy
also records what the real function returned (``.returned``) or raised (``.raised``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any
from unittest import mock

__all__ = ["Spies"]


def _autospec(target: object, name: str, current: object) -> bool:
    if isinstance(getattr(current, "mock", current), mock.NonCallableMock):
        return False  # already spied or stubbed: a mock cannot be the spec of another
    if isinstance(inspect.getattr_static(target, name), classmethod | staticmethod):
        return False  # an autospec'd descriptor loses its binding; a plain mock in its place calls through fine
    return inspect.ismethod(current) or inspect.isfunction(current)


class Spies:
    """A set of patched attributes; :meth:`restore` puts every original back, newest first."""

    def __init__(self) -> None:
        self._patches: list[Any] = []

    def __call__(self, target: object, name: str) -> mock.MagicMock:
        """Spy on ``target.name``: the real function still runs; the returned mock records the calls."""
        original = getattr(target, name)
        returned: list[Any] = []
        raised: list[BaseException] = []
        wrapper: Any
        if inspect.iscoroutinefunction(original):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    result = await original(*args, **kwargs)
                except BaseException as exc:
                    raised.append(exc)
                    raise
                returned.append(result)
                return result

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    result = original(*args, **kwargs)
                except BaseException as exc:
                    raised.append(exc)
                    raise
                returned.append(result)
                return result

        functools.update_wrapper(wrapper, original)
        autospec = _autospec(target, name, original)
        spy = self._start(mock.patch.object(target, name, side_effect=wrapper, autospec=autospec))
        spy.returned = returned
        spy.raised = raised
        return spy

    def stub(
        self, target: object, name: str, *, return_value: object = mock.DEFAULT, side_effect: object = None
    ) -> mock.MagicMock:
        """Replace ``target.name`` by a mock returning ``return_value`` (or running ``side_effect``)."""
        current = getattr(target, name)
        patcher = mock.patch.object(
            target, name, autospec=_autospec(target, name, current), return_value=return_value, side_effect=side_effect
        )
        return self._start(patcher)

    def _start(self, patcher: Any) -> mock.MagicMock:
        started: mock.MagicMock = patcher.start()  # a MagicMock, or an autospec'd function with its API
        self._patches.append(patcher)
        return started

    def restore(self) -> None:
        """Put every original back (newest first); idempotent."""
        while self._patches:
            self._patches.pop().stop()

    def __len__(self) -> int:
        return len(self._patches)
