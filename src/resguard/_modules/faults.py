"""Log a failing probe once, not on every tick, and log again when it recovers."""

from __future__ import annotations

import logging
import threading

__all__ = ["FaultLog"]


class FaultLog:
    """Remembers which sources are failing so each fault is logged once.

    ``failed(source, error)`` logs a warning the first time *source* fails (or when the
    message changes); ``recovered(source)`` logs once when it works again. Thread-safe.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._failing: dict[str, str] = {}

    def failed(self, source: str, error: BaseException | str) -> bool:
        """Record a failure; return True when it was logged (new or changed fault)."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with self._lock:
            if self._failing.get(source) == message:
                return False
            self._failing[source] = message
        self._logger.warning("%s is failing: %s (logged once until it recovers)", source, message)
        return True

    def recovered(self, source: str) -> bool:
        """Record a success; return True when it ended a logged fault."""
        with self._lock:
            if self._failing.pop(source, None) is None:
                return False
        self._logger.warning("%s works again", source)
        return True

    def failing(self) -> dict[str, str]:
        """The sources failing now, with their last message."""
        with self._lock:
            return dict(self._failing)
