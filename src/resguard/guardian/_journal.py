"""The guardian's journal: one JSON line per action, real or dry-run, appended to a file
(``--journal PATH``) and logged on the ``resguard.guardian`` logger.

A line holds ``time`` (ISO 8601, UTC), ``epoch`` (seconds), ``rule``, ``action``,
``target`` (``{"pid", "name", "start_time"}`` for a process, ``{"model"}`` for a model,
``null`` for a notification), ``dry_run``, ``result`` (``done``, ``would``,
``skipped: ...``, ``refused: ...``, ``failed: ...``) and ``freed_bytes`` (measured after
the action, or ``null``). The log line of an action is this module's alone (the effects
log none of their own), with the names it quotes escaped (a process name holding a newline
or an ESC cannot forge a line or drive the terminal). A journal that cannot be written
never stops the guardian: one warning, then silence until it can be written again (which
is logged too).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from resguard._modules.jsonl import JsonlAppender, stamped
from resguard._modules.log import get_logger
from resguard._modules.render import printable
from resguard.guardian._actions import Outcome, Target
from resguard.units import format_bytes

__all__ = ["Journal", "describe", "record"]

_logger = get_logger("resguard.guardian")


def _target(target: Target | None) -> dict[str, Any] | None:
    if target is None:
        return None
    if target.model is not None:
        return {"model": target.model}
    return {"pid": target.pid, "name": target.name, "start_time": target.start_time}


def record(rule: str | None, outcome: Outcome, epoch: float) -> dict[str, Any]:
    """The journal line of *outcome* for *rule* at wall time *epoch*, as a dict."""
    return {
        **stamped(epoch),
        "rule": rule,
        "action": outcome.action,
        "target": _target(outcome.target),
        "dry_run": outcome.dry_run,
        "result": outcome.result,
        "freed_bytes": outcome.freed_bytes,
    }


def describe(rule: str | None, outcome: Outcome) -> str:
    """One log line: ``dry-run: would pause 4242 python3 (rule runaway)``."""
    target = outcome.target
    if target is None:
        what = ""
    elif target.model is not None:
        what = f" model {target.model}"
    else:
        what = f" {target.pid} {target.name or '?'}"
    freed = f", freed {format_bytes(outcome.freed_bytes)}" if outcome.freed_bytes else ""
    because = f" (rule {rule})" if rule else ""
    prefix = "dry-run: " if outcome.dry_run else ""
    return printable(f"{prefix}{outcome.action}{what}: {outcome.result}{freed}{because}")


class Journal:
    """Appends journal lines to *path* (``~`` expanded; ``None``: log only); *wall_clock*
    gives the time."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        logger: logging.Logger = _logger,
    ) -> None:
        self.path = None if path is None else os.path.expanduser(os.fspath(path))
        self._wall_clock = wall_clock
        self._logger = logger
        self._file = (
            None
            if self.path is None
            else JsonlAppender(self.path, on_fail=self._failed, on_recover=self._recovered)
        )
        self.lines_written = 0
        self.listeners: list[Callable[[dict[str, Any]], object]] = []
        """Called with each line as it is written (``--once --json`` collects them)."""

    def write(self, rule: str | None, outcome: Outcome) -> dict[str, Any]:
        """Journal and log *outcome*; returns the line. Never raises for the file."""
        line = record(rule, outcome, self._wall_clock())
        level = logging.INFO if outcome.status in ("done", "would", "skipped") else logging.WARNING
        self._logger.log(level, "%s", describe(rule, outcome))
        if self._file is not None and self._file.append(line):
            self.lines_written += 1
        for listener in self.listeners:
            listener(line)
        return line

    def _failed(self, path: str, error: BaseException) -> None:
        self._logger.warning(
            "the journal %s cannot be written (%s); the guardian goes on, its "
            "actions only logged until it can",
            path,
            error,
        )

    def _recovered(self, path: str) -> None:
        self._logger.warning("the journal %s can be written again", path)
