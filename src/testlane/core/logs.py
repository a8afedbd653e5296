"""testlane's own log: the ``testlane`` logger, on stderr, at the configured level."""

from __future__ import annotations

import logging

__all__ = ["setup_logging"]


def setup_logging(level: str) -> None:
    """Show testlane's log on stderr at ``level`` (``debug`` explains every decision it makes)."""
    numeric = getattr(logging, level.upper(), None)
    if not isinstance(numeric, int):
        numeric = logging.WARNING
    logger = logging.getLogger("testlane")
    logger.setLevel(numeric)
    if not any(getattr(h, "_testlane", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("testlane: %(levelname)s: %(message)s"))
        handler._testlane = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
