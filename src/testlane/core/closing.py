"""One way for testlane's objects to be their own context manager.

``with obj:`` gives ``obj`` and calls ``obj.close()`` when the block ends, whether it raised or
not (an exception propagates). Hand-written because :func:`contextlib.closing` wraps an object
instead of making it one (the ``with`` target would lose its type), and
:class:`contextlib.AbstractContextManager` leaves ``__exit__`` to every class.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """Mixin: ``__enter__`` returns ``self``; ``__exit__`` calls :meth:`close`, which subclasses define.

    A subclass that starts something on entering (a live server, a schema) overrides ``__enter__``
    to start it and return ``self``.
    """

    __slots__ = ()

    def close(self) -> None:
        """Release what the object holds; calling it twice does nothing the second time."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
