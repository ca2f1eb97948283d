"""The supervisor's journal: one line per event on stderr (``resguard run: ...``) and, with
``--journal PATH``, the same event as a JSON line appended to PATH.

A JSON line holds ``time`` (ISO 8601, UTC), ``epoch`` (seconds), ``event`` and the event's
fields: ``budget`` (``kind`` cgroup-v1, cgroup-v2, rlimit-as or none, ``limit_bytes``,
``parent``, ``why``, and ``cgroup`` the run's own cgroup); ``start`` (``run``, ``pid``,
``argv``); ``signal`` (``signal``, ``pid``, ``forwarded``: false when the terminal already
delivered it to the child, ``action``); ``exit`` (``run``, ``pid``, ``status`` exited,
killed, oom-killed or not-started (its exec failed: nothing ran), ``code`` as a shell
shows it, ``signal``, ``oom_kills``, ``run_s``, ``restart`` true or false, ``delay_s``,
``reason``); ``end`` (``code``, ``runs``, ``oom_kills``: null when a run's could not be
counted, as under RLIMIT_AS, ``cgroup_left`` when the cgroup could not be removed). As
the guardian's journal, a file that cannot be written never stops the supervisor: one
warning on stderr, then silence until it can be written again; with stderr closed
(``2>&-``) the file alone gets the events.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TextIO

from resguard._modules.jsonl import JsonlAppender, stamped
from resguard._modules.render import printable

__all__ = ["RunJournal"]


class RunJournal:
    """Writes each event to *err* as one line (``None``: stderr is closed, the file alone
    gets them) and, when *path* is given, as JSON to it."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        err: TextIO | None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = None if path is None else os.path.expanduser(os.fspath(path))
        self._err = err
        self._wall_clock = wall_clock
        self._file = (
            None
            if self.path is None
            else JsonlAppender(self.path, on_fail=self._failed, on_recover=self._recovered)
        )
        self.lines: list[dict[str, Any]] = []

    def write(self, event: str, text: str, **fields: Any) -> dict[str, Any]:
        """Journal *event* (its words *text* for stderr, its *fields* for the JSON line)."""
        line: dict[str, Any] = {**stamped(self._wall_clock()), "event": event, **fields}
        self.lines.append(line)
        self._say(f"resguard run: {printable(text)}")
        if self._file is not None:
            self._file.append(line)
        return line

    def _say(self, text: str) -> None:
        if self._err is None:
            return
        try:
            self._err.write(text + "\n")
            self._err.flush()
        except (OSError, ValueError):
            pass  # a closed stderr is no reason to stop supervising

    def _failed(self, path: str, error: BaseException) -> None:
        self._say(
            f"resguard run: the journal {path} cannot be written ({error}); "
            "events go to stderr only until it can"
        )

    def _recovered(self, path: str) -> None:
        self._say(f"resguard run: the journal {path} can be written again")
