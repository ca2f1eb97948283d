"""Log a failing probe once, not on every tick, and log again when it recovers."""

from __future__ import annotations

import logging
import threading

from resguard._modules import forks

__all__ = ["FaultLog"]


class FaultLog:
    """Remembers which sources are failing so each fault is logged once.

    ``failed(source, error)`` logs a warning the first time *source* fails (or when the
    message changes); with ``kind=`` (the kind of damage, e.g. ``"garbage"``) it logs again
    only when the kind changes, so a message carrying changing numbers is not logged per
    tick. ``recovered(source)`` logs once when it works again. Thread-safe. Its lines never
    raise: a logging handler whose ``emit()`` raises (Python's logging lets that through) is
    said once on standard error, and the fault is still recorded.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._failing: dict[str, str] = {}
        self._kinds: dict[str, str] = {}
        forks.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it at the fork

    def failed(self, source: str, error: BaseException | str, *, kind: str | None = None) -> bool:
        """Record a failure; return True when it was logged (new or changed fault)."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        key = message if kind is None else kind
        with self._lock:
            if source in self._failing and self._kinds.get(source) == key:
                self._failing[source] = message
                return False
            self._failing[source] = message
            self._kinds[source] = key
        self._say("%s is failing: %s (logged once until it recovers)", source, message)
        return True

    def recovered(self, source: str) -> bool:
        """Record a success; return True when it ended a logged fault."""
        with self._lock:
            if self._failing.pop(source, None) is None:
                return False
            self._kinds.pop(source, None)
        self._say("%s works again", source)
        return True

    def _say(self, message: str, *args: object) -> None:
        try:
            self._logger.warning(message, *args, stacklevel=2)
        except Exception as broken:  # a user's handler: its bug must not fail the probe
            from resguard._modules.log import handler_failed  # log builds on this module

            handler_failed(broken)

    def failing(self) -> dict[str, str]:
        """The sources failing now, with their last message."""
        with self._lock:
            return dict(self._failing)
