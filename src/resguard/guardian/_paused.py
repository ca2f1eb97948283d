"""The guardian's record of the processes it holds paused, so that a guardian that did not
get to resume them (SIGKILLed, OOM-killed, a power cut of its session) resumes them when it
starts again.

Each guardian keeps its record in a small JSON file of its own,
``$XDG_STATE_HOME/resguard/paused/guardian-<pid>.json`` (``~/.local/state/...`` when
``XDG_STATE_HOME`` is unset or not an absolute path), rewritten (atomically) whenever the
set of paused processes changes and removed when it is empty. Each entry names one process
by its exact identity (pid and start time, as the stopper reads it), with the action's
``match`` patterns. At start a guardian reads the records of guardians that are gone (the
record's owner pid is not running, or is another process now, by its start time) and
resumes an entry only when that very process (the same pid and start time, still matching
one of the patterns, not protected) is still there; anything else is dropped unsignalled.
A guardian that is still running keeps its record: two guardians never resume each other's;
a running guardian reads the records again every 10 s, so that what a guardian beside it
left paused when it died is resumed without waiting for a restart.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from resguard._modules.log import get_logger

__all__ = ["PausedFile", "default_paused_path"]

_logger = get_logger("resguard.guardian")
_MAX_BYTES = 1 << 20
_FIELDS = ("pid", "start_ticks", "create_time", "ppid", "name", "cmdline", "uid", "match")


def default_paused_path() -> Path | None:
    """Where the guardian records what it paused (see the module's docstring); ``None``
    where no home directory is known."""
    state = os.environ.get("XDG_STATE_HOME", "")
    if os.path.isabs(state):
        return Path(state) / "resguard" / "paused"
    home = os.environ.get("HOME", "")
    if not os.path.isabs(home):
        return None
    return Path(home) / ".local" / "state" / "resguard" / "paused"


def _start_of(pid: int) -> float | None:
    """*pid*'s start (clock ticks since boot on Linux, psutil's create time elsewhere),
    ``None`` when it is not running."""
    from resguard._probes.identity import read_portable, read_stat

    if os.path.exists("/proc/self/stat"):
        stat = read_stat(pid)
        return None if stat is None or stat.exited else float(stat.start_ticks)
    found = read_portable(pid)
    return None if found is None or found[1].exited else found[1].create_time


class PausedFile:
    """This guardian's record in the directory *directory* (``None``: none kept)."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = None if directory is None else Path(directory)
        pid = os.getpid()
        self.path = None if self.directory is None else self.directory / f"guardian-{pid}.json"
        self._owner = {"pid": pid, "start": _start_of(pid)}
        self._failing = False

    def leftovers(self) -> list[dict[str, Any]]:
        """The entries (well-formed ones only) of the records of guardians that are gone;
        those records are removed (their processes are this guardian's to resume now)."""
        if self.directory is None:
            return []
        try:
            names = sorted(self.directory.glob("guardian-*.json"))
        except OSError:
            return []
        found: list[dict[str, Any]] = []
        for path in names:
            if path == self.path:
                continue
            data = _read(path)
            owner = data.get("owner") if isinstance(data, dict) else None
            if isinstance(owner, dict) and _running(owner):
                continue  # another guardian, still running: its pauses are its own
            entries = data.get("paused") if isinstance(data, dict) else None
            if isinstance(entries, list):
                found.extend(entry for entry in entries if _well_formed(entry))
            try:
                path.unlink()
            except OSError:
                pass
        return found

    def save(self, entries: list[dict[str, Any]]) -> bool:
        """Record *entries* (remove the record when there are none); never raises. Whether
        the record now says what *entries* say (``True`` where no record is kept)."""
        if self.path is None:
            return True
        try:
            if not entries:
                self.path.unlink(missing_ok=True)
                return True
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".paused-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"owner": self._owner, "paused": entries}, handle)
            os.replace(temporary, self.path)
        except OSError as error:
            if not self._failing:
                _logger.warning(
                    "the paused-process record %s cannot be written (%s)", self.path, error
                )
            self._failing = True
            return False
        self._failing = False
        return True


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


def _read(path: Path) -> object:
    """A record's parsed JSON, ``None`` (with a warning) for one that cannot be read: opened
    without blocking and read only when it is a regular file (a FIFO planted there cannot
    hang the guardian), at most 1 MiB, and any JSON it cannot parse (nested too deeply for
    the parser, say) is that one record skipped, never the others."""
    why: object
    try:
        fd = os.open(path, _OPEN_FLAGS)
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            raw = os.read(fd, _MAX_BYTES + 1) if regular else b""
        finally:
            os.close(fd)
        if not regular:
            why = "not a regular file"
        elif len(raw) > _MAX_BYTES:
            why = "larger than 1 MiB"
        else:
            return json.loads(raw)
    except RecursionError:
        why = "nested too deeply"
    except (OSError, ValueError, MemoryError) as error:
        why = error
    _logger.warning("the paused-process record %s cannot be read (%s)", path, why)
    return None


def _running(owner: dict[str, Any]) -> bool:
    """Whether the guardian *owner* names (pid and start) is still running."""
    pid, start = owner.get("pid"), owner.get("start")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if pid == os.getpid():
        return False  # a record of an earlier guardian that had this pid
    now = _start_of(pid)
    return now is not None and (start is None or now == start)


def _well_formed(entry: object) -> bool:
    if not isinstance(entry, dict) or set(entry) != set(_FIELDS):
        return False
    pid, ticks, created = entry["pid"], entry["start_ticks"], entry["create_time"]
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    if ticks is None and not isinstance(created, float):
        return False
    if ticks is not None and (not isinstance(ticks, int) or isinstance(ticks, bool)):
        return False
    match = entry["match"]
    return isinstance(match, list) and bool(match) and all(isinstance(p, str) for p in match)
