"""Which processes, containers and models a budget's selector matches, and the command
lines that process budgets match against (read once per process: from ``/proc`` on the
linux backend, through psutil on the psutil backend)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence

import attrs

from resguard._probes.backend import Backend, backend_for
from resguard._probes.identity import boot_time_s, cmdline_of, proc_cmdline_of
from resguard._probes.names import short_name
from resguard.budget._values import Budget
from resguard.snapshot import ContainerStats, OllamaModelInfo, ProcessInfo

__all__ = ["CmdlineCache", "container_matches", "model_matches", "process_matches"]


def _fullmatch(pattern: re.Pattern[str], *candidates: str) -> bool:
    return any(pattern.fullmatch(candidate) for candidate in candidates if candidate)


def process_matches(budget: Budget, pattern: re.Pattern[str], row: ProcessInfo) -> bool:
    """Whether *row* is one of *budget*'s: a ``process`` budget's pattern matches the
    whole name, its kernel form (15 characters, as Linux's ``comm`` keeps it) or the
    program's basename; a ``cmdline`` budget's is searched in the command line."""
    if budget.kind == "process":
        program = os.path.basename(row.cmdline[0]) if row.cmdline else ""
        return _fullmatch(pattern, row.name, short_name(row.name), program)
    return bool(pattern.search(" ".join(row.cmdline)))


def container_matches(budget: Budget, pattern: re.Pattern[str], item: ContainerStats) -> bool:
    if budget.kind == "container":
        return _fullmatch(pattern, item.name)
    return _fullmatch(pattern, item.image, item.image.rsplit(":", 1)[0])


def model_matches(pattern: re.Pattern[str], item: OllamaModelInfo) -> bool:
    name = item.name
    return _fullmatch(pattern, name, name.removesuffix(":latest"))


class CmdlineCache:
    """Command lines by process identity (they rarely change): one read per process.

    *backend* as the process table's (``None``: linux for a *proc* other than ``/proc``,
    else the default backend)."""

    def __init__(self, proc: str = "/proc", *, backend: Backend | None = None) -> None:
        self._proc = proc
        self._backend = backend_for(backend, {"proc": proc if proc != "/proc" else None})
        self._known: dict[tuple[int, float], tuple[str, ...]] = {}
        self._booted_s: float | None = None  # read at the first linux fill
        self._lock = threading.Lock()

    def fill(self, rows: Sequence[ProcessInfo]) -> list[ProcessInfo]:
        result, current = [], {}
        with self._lock:
            for row in rows:
                key = (row.pid, row.create_time)
                cmdline = row.cmdline or self._known.get(key)
                if cmdline is None:
                    cmdline = self._read(row)
                current[key] = cmdline
                result.append(row if row.cmdline else attrs.evolve(row, cmdline=cmdline))
            self._known = current
        return result

    def _read(self, row: ProcessInfo) -> tuple[str, ...]:
        """*row*'s command line while its PID still belongs to its process, else ``()``."""
        if self._backend != "linux":
            return cmdline_of(row.pid, row.create_time)
        if self._booted_s is None:
            self._booted_s = boot_time_s(self._proc)
        return proc_cmdline_of(self._proc, row.pid, row.create_time, self._booted_s)
