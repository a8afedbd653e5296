"""testlane's own log: the ``testlane`` logger, on stderr, at the configured level.

Every record of the ``testlane`` logger goes through :class:`~testlane.core.redact.RedactingFilter`
(installed when the package is imported), so no log line shows a password, wherever it ends up:
testlane's stderr handler, pytest's captured log, or the digest that quotes it.
"""

from __future__ import annotations

import logging

__all__ = ["install_redaction", "setup_logging"]


def install_redaction() -> None:
    """Mask credentials in every record of the ``testlane`` logger (idempotent)."""
    from testlane.core.redact import RedactingFilter

    logger = logging.getLogger("testlane")
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())


def setup_logging(level: str) -> None:
    """Show testlane's log on stderr at ``level`` (``debug`` explains every decision it makes)."""
    install_redaction()
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
