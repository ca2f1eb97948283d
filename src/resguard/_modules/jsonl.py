"""A JSON-lines file that is appended to and never stops its writer: a line that cannot be
written is dropped with one call of *on_fail* (then silence), and the first line written
again calls *on_recover* (the guardian's and the supervisor's journals)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

__all__ = ["JsonlAppender", "stamped"]


def stamped(epoch: float) -> dict[str, Any]:
    """A journal line's ``time`` (ISO 8601, UTC, milliseconds) and ``epoch`` (seconds)."""
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    return {
        "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "epoch": round(epoch, 3),
    }


class JsonlAppender:
    """Appends one JSON object a line to *path*; *on_fail* is called with the path and the
    error when a line cannot be written after one could (or at the first), *on_recover*
    with the path when a line is written after a failure."""

    def __init__(
        self,
        path: str,
        *,
        on_fail: Callable[[str, BaseException], object],
        on_recover: Callable[[str], object],
    ) -> None:
        self.path = path
        self._on_fail = on_fail
        self._on_recover = on_recover
        self.failing = False

    def append(self, line: dict[str, Any]) -> bool:
        """Write *line*; ``True`` when it was written. Never raises for the file."""
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
        except (OSError, ValueError) as error:
            if not self.failing:
                self.failing = True
                self._on_fail(self.path, error)
            return False
        if self.failing:
            self.failing = False
            self._on_recover(self.path)
        return True
