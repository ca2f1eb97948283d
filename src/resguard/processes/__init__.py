"""The process table: top-N by CPU or memory without sleeping between two samples.

Like ``top``, a :class:`ProcessTable` keeps each process's previous CPU time, so the CPU
percent of the next sample covers the time in between (the first sample reports each
process's average since it started). A process is identified by ``(pid, create time)``,
so a reused pid is never mistaken for its predecessor. Processes that vanish or cannot be
read while the table is built are skipped silently; damage (a garbled ``stat`` file, a
psutil call that fails oddly) skips its row and logs one warning per kind. Nothing the
table reads makes it raise.

Two backends read the processes (see :mod:`resguard._probes.backend`): ``linux`` parses
``/proc`` itself (fast, and it reads a re-rooted ``/proc``), ``psutil`` works on every
platform psutil supports. :func:`is_kernel_thread` tells the kernel's own threads
(``kworker/…``: no memory, nothing to act on) from programs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal, Protocol

from resguard._errors import InvalidType, InvalidValue
from resguard._modules import forks
from resguard._modules.clockcheck import checked_clock
from resguard._modules.defaults import made_once
from resguard._probes.backend import Backend, backend_for, default_backend
from resguard._probes.identity import boot_time_s, proc_cmdline_of
from resguard._probes.paths import DEFAULT_ROOTS, Roots
from resguard.processes._kernel import is_kernel_thread
from resguard.processes._linux import LinuxProcesses
from resguard.processes._users import user_name
from resguard.snapshot import Fault, ProcessInfo
from resguard.units import shown

__all__ = ["ProcessTable", "describe", "is_kernel_thread", "top_processes"]

SortKey = Literal["cpu", "memory"]
_SORT_KEYS: dict[str, Callable[[ProcessInfo], float]] = {
    "cpu": lambda info: info.cpu_percent,
    "memory": lambda info: info.rss,
}


class _Reader(Protocol):
    faults: tuple[Fault, ...]

    def sample(self, now: float) -> list[ProcessInfo]: ...


class ProcessTable:
    """Samples every process's CPU time and memory; thread-safe.

    A row's ``cpu_percent`` (100 = one full core, as ``top`` counts) covers the time since
    this table's previous scan that saw the process. The table's **first scan** has no
    previous one, so each row's percent is then the process's *average since it started*
    (likewise a process first seen in a later scan): a lifetime figure, not what it does
    now; a process that burnt a core for an hour and sleeps now reads high. Such a row says
    so (``cpu_since_start``), and the per-process rules and culprits leave its CPU figure
    out. For current figures scan twice, a window apart, as ``resguard snapshot`` and
    ``resguard top`` do (``--window``, default 1 s).

    *clock* is the monotonic clock used to turn CPU-time deltas into percentages.
    *backend* is ``"linux"`` or ``"psutil"``; ``None`` picks the linux readers for
    non-default *roots* and the process's default backend otherwise.
    """

    def __init__(
        self,
        roots: Roots = DEFAULT_ROOTS,
        clock: Callable[[], float] = time.monotonic,
        *,
        backend: Backend | None = None,
    ) -> None:
        if not isinstance(roots, Roots):
            raise InvalidType(
                f"roots={shown(roots)} is not a Roots; expected "
                "resguard.snapshot.Roots(proc=..., cgroup=...)"
            )
        clock = checked_clock(clock)
        self._backend: Backend = backend_for(
            backend, {"roots": roots if roots != DEFAULT_ROOTS else None}
        )
        self._proc = roots.proc
        self._clock = clock
        self._lock = threading.Lock()
        forks.register(self)
        self._reader: _Reader
        self._boot_time_s: float | None = None  # the linux reader's, to check describe's rows
        if self._backend == "linux":
            linux = LinuxProcesses(roots.proc)
            self._reader, self._boot_time_s = linux, linux.boot_time_s
        else:
            from resguard.processes._portable import PsutilProcesses

            self._reader = PsutilProcesses()
        self.faults: tuple[Fault, ...] = ()
        """What the last :meth:`sample` could not read (rows skipped, fallbacks used)."""

    @property
    def backend(self) -> Backend:
        """The backend that reads the processes: ``"linux"`` or ``"psutil"``."""
        return self._backend

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it at the fork

    def sample(self) -> list[ProcessInfo]:
        """Every readable process, with CPU percent since this table's previous sample.

        ``cmdline``, ``username`` and ``uss`` are left empty here (they cost a read each);
        :meth:`top` fills them in for the rows it returns. Never raises because of what it
        reads; :attr:`faults` lists what this sample could not read.
        """
        with self._lock:
            rows = self._reader.sample(self._clock())
            self.faults = self._reader.faults
            return rows

    def top(
        self,
        n: int = 10,
        *,
        by: SortKey = "cpu",
        group: bool = False,
        rows: list[ProcessInfo] | None = None,
    ) -> list[ProcessInfo]:
        """The *n* processes using the most CPU (``by="cpu"``) or memory (``by="memory"``).

        ``group=True`` merges processes with the same name into one row (``count`` > 1),
        e.g. all renderer processes of one browser. *rows* ranks a scan this table already
        made (:meth:`sample`'s answer) instead of scanning again.
        """
        key = _check_top(n, by, group)
        if rows is None:
            rows = self.sample()
        elif not isinstance(rows, list) or not all(isinstance(row, ProcessInfo) for row in rows):
            raise InvalidType(
                f"rows={shown(rows)} are not ProcessInfo rows; expected a list from sample()"
            )
        else:
            rows = list(rows)
        if group:
            rows = _group_by_name(rows)
        rows.sort(key=key, reverse=True)
        return [self._complete(row) for row in rows[:n]]

    def _complete(self, row: ProcessInfo) -> ProcessInfo:
        return _describe(row, self._backend, self._proc, self._boot_time_s)


def _check_top(n: object, by: object, group: object) -> Callable[[ProcessInfo], float]:
    """The sort key for *by*, after checking the arguments of :meth:`ProcessTable.top`."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidType(f"n={shown(n)} is not a number of rows; expected an integer >= 0")
    if n < 0:
        raise InvalidValue(f"n={shown(n)} is not a number of rows; expected an integer >= 0")
    if not isinstance(by, str):
        raise InvalidType(f"by={shown(by)} is not a sort order; expected 'cpu' or 'memory'")
    key = _SORT_KEYS.get(by)
    if key is None:
        raise InvalidValue(f"by={shown(by)} is not a sort order; expected 'cpu' or 'memory'")
    if not isinstance(group, bool):
        raise InvalidType(f"group={shown(group)} is not a bool; expected True or False")
    return key


def describe(
    row: ProcessInfo, proc: str = "/proc", *, backend: Backend | None = None
) -> ProcessInfo:
    """*row* with its command line and user name filled in (one read and one lookup);
    the table leaves them empty because most rows are never shown.

    *backend* reads them as :class:`ProcessTable` does (``None``: the linux readers for a
    *proc* other than ``"/proc"``, else the default backend). The command line is read
    only while the row's PID still belongs to the row's process (the same start time:
    ``/proc/<pid>/stat``'s start ticks on linux, psutil's create time on psutil).
    """
    if not isinstance(row, ProcessInfo):
        raise InvalidType(
            f"row={shown(row)} is not a ProcessInfo; expected a row of the process table"
        )
    if not isinstance(proc, str):
        raise InvalidType(f"proc={shown(proc)} is not a path; expected a string such as '/proc'")
    chosen = backend_for(backend, {"proc": proc if proc != "/proc" else None})
    return _describe(row, chosen, proc, None)


def _describe(row: ProcessInfo, backend: Backend, proc: str, booted_s: float | None) -> ProcessInfo:
    """*row* completed; *booted_s* is the boot time its linux reader dated it by (``None``:
    read it again)."""
    import attrs

    if backend == "linux":
        booted_s = boot_time_s(proc) if booted_s is None else booted_s
        cmdline = proc_cmdline_of(proc, row.pid, row.create_time, booted_s)
        username = user_name(row.uid)
    else:
        from resguard.processes._portable import describe_psutil

        cmdline, username = describe_psutil(row)
    return attrs.evolve(row, cmdline=cmdline, username=username)


def _group_by_name(rows: list[ProcessInfo]) -> list[ProcessInfo]:
    import attrs

    groups: dict[str, list[ProcessInfo]] = {}
    for row in rows:
        groups.setdefault(row.name, []).append(row)
    merged = []
    for members in groups.values():
        leader = max(members, key=lambda member: member.rss)
        merged.append(
            attrs.evolve(
                leader,
                rss=sum(member.rss for member in members),
                cpu_percent=sum(member.cpu_percent for member in members),
                num_threads=sum(member.num_threads for member in members),
                count=len(members),
                cpu_since_start=any(member.cpu_since_start for member in members),
            )
        )
    return merged


_default_tables: dict[str, ProcessTable] = {}  # one per backend: the default may change


def top_processes(n: int = 10, *, by: SortKey = "cpu", group: bool = False) -> list[ProcessInfo]:
    """The top *n* processes by CPU or memory; CPU is measured since the previous call
    (on the default backend: one table per backend), and the first call's is each
    process's average since it started (see :class:`ProcessTable`).

    :class:`~resguard.InvalidType` / :class:`~resguard.InvalidValue` for a bad *n*, *by*
    or *group*, before anything is read.
    """
    _check_top(n, by, group)
    backend = default_backend()
    table = made_once(_default_tables, backend, lambda: ProcessTable(backend=backend))
    return table.top(n, by=by, group=group)
