"""The process table: top-N by CPU or memory without sleeping between two samples.

Like ``top``, a :class:`ProcessTable` keeps each process's previous CPU time, so the CPU
percent of the next sample covers the time in between (the first sample reports each
process's average since it started). A process is identified by ``(pid, create time)``,
so a reused pid is never mistaken for its predecessor. Processes that vanish or cannot be
read while the table is built are skipped silently; a ``stat`` file that is there but
damaged (garbage, cut short, empty) skips its row and logs one warning per kind of damage,
and a damaged ``/proc/uptime`` or boot time falls back to ``CLOCK_BOOTTIME``. Nothing the
table reads makes it raise.
"""

from __future__ import annotations

import os
import pwd
import threading
import time
from collections.abc import Callable
from typing import Literal

from resguard._errors import InvalidType, InvalidValue
from resguard._modules import forks
from resguard._modules.clockcheck import checked_clock
from resguard._modules.render import records_table
from resguard._probes import procfs as _procfs
from resguard._probes.files import READ_CAP_BYTES, damage_of
from resguard._probes.paths import DEFAULT_ROOTS, Roots
from resguard._probes.reporting import SENSING_FAULTS, report_failure, report_recovery
from resguard.snapshot import Fault, ProcessInfo
from resguard.units import shown

__all__ = ["ProcessTable", "describe", "top_processes"]

SortKey = Literal["cpu", "memory"]
_SORT_KEYS: dict[str, Callable[[ProcessInfo], float]] = {
    "cpu": lambda info: info.cpu_percent,
    "memory": lambda info: info.rss,
}
_STAT_READ_BYTES = 1 << 20  # btime follows the per-interrupt counts: far down on big machines
TOP_COLUMNS = ("pid", "name", "count", "cpu_percent", "rss", "num_threads", "username")


def _read(path: str, size: int = READ_CAP_BYTES) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)


def _boot_clock_s() -> float | None:
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return None


class ProcessTable:
    """Samples every process's CPU time and memory; thread-safe.

    *clock* is the monotonic clock used to turn CPU-time deltas into percentages.
    """

    def __init__(
        self, roots: Roots = DEFAULT_ROOTS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not isinstance(roots, Roots):
            raise InvalidType(
                f"roots={shown(roots)} is not a Roots; expected "
                "resguard.snapshot.Roots(proc=..., cgroup=...)"
            )
        clock = checked_clock(clock)
        self._proc = roots.proc
        self._clock = clock
        self._lock = threading.Lock()
        forks.register(self)
        self._previous: dict[tuple[int, int], tuple[int, float]] = {}
        self._failing: set[str] = set()
        self.faults: tuple[Fault, ...] = ()
        """The damaged files the last :meth:`sample` met (rows skipped, fallbacks used)."""
        self._boot_fault: Fault | None = None
        self._boot_time_s = self._read_boot_time()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it at the fork

    def _read_boot_time(self) -> float:
        path = os.path.join(self._proc, "stat")
        raw = _read(path, _STAT_READ_BYTES)
        text = raw.decode("ascii", "replace") if raw is not None else None
        btime = _procfs.parse_btime(text) if text is not None else None
        if btime is not None:
            return btime
        kind, detail = damage_of(text) if text is not None else ("unreadable", "cannot read")
        if text is None and not os.path.exists(path):
            kind, detail = "missing", "no such file"
        uptime_s = _boot_clock_s()
        self._boot_fault = Fault(
            "processes.create_time", path, kind, detail, fallback="the clock minus CLOCK_BOOTTIME"
        )
        SENSING_FAULTS.failed(
            path, f"{kind}: {detail}; boot time from the clock instead", kind=kind
        )
        return time.time() - uptime_s if uptime_s is not None else 0.0

    def _uptime_s(self, faults: list[Fault]) -> float | None:
        path = os.path.join(self._proc, "uptime")
        raw = _read(path)
        text = raw.decode("ascii", "replace") if raw is not None else None
        uptime_s = _procfs.parse_uptime(text) if text is not None else None
        if uptime_s is not None:
            return uptime_s
        kind, detail = (
            damage_of(text)
            if text is not None
            else (
                ("missing", "no such file")
                if not os.path.exists(path)
                else ("unreadable", "cannot read")
            )
        )
        fallback = _boot_clock_s()
        faults.append(
            Fault(
                "processes.cpu_percent",
                path,
                kind,
                detail,
                fallback="CLOCK_BOOTTIME" if fallback is not None else None,
            )
        )
        return fallback

    def sample(self) -> list[ProcessInfo]:
        """Every readable process, with CPU percent since this table's previous sample.

        ``cmdline``, ``username`` and ``uss`` are left empty here (they cost a read each);
        :meth:`top` fills them in for the rows it returns. Never raises because of what it
        reads; :attr:`faults` lists the damaged files of this sample.
        """
        with self._lock:
            now = self._clock()
            faults: list[Fault] = []
            uptime_s = self._uptime_s(faults)
            previous, current = self._previous, {}
            rows: list[ProcessInfo] = []
            damaged: dict[str, Fault] = {}
            for entry in self._entries(faults):
                if not entry.name.isdigit():
                    continue
                raw = _read(entry.path + "/stat")
                if raw is None:
                    continue  # vanished or not ours to read
                text = raw.decode("utf-8", "replace")
                stat = _procfs.parse_pid_stat(text)
                if stat is None:
                    kind, detail = damage_of(text)
                    damaged.setdefault(kind, Fault("processes", entry.path + "/stat", kind, detail))
                    continue
                try:
                    uid = entry.stat(follow_symlinks=False).st_uid
                except OSError:
                    continue  # vanished
                name, _, ppid, ticks, threads, start_ticks, rss, _ = stat
                key = (int(entry.name), start_ticks)
                before = previous.get(key)
                if before is not None and now > before[1] and ticks >= before[0]:
                    cpu = 100.0 * (ticks - before[0]) / _procfs.TICKS_PER_S / (now - before[1])
                else:
                    cpu = _lifetime_percent(ticks, start_ticks, uptime_s)
                current[key] = (ticks, now)
                rows.append(
                    ProcessInfo(
                        pid=key[0],
                        name=name,
                        cmdline=(),
                        username=None,
                        uid=uid,
                        ppid=ppid,
                        rss=rss,
                        uss=None,
                        cpu_percent=max(cpu, 0.0),
                        num_threads=threads,
                        create_time=self._boot_time_s + start_ticks / _procfs.TICKS_PER_S,
                    )
                )
            self._previous = current
            self._finish(faults, damaged, now)
            return rows

    def _entries(self, faults: list[Fault]) -> list[os.DirEntry[str]]:
        try:
            return list(os.scandir(self._proc))
        except OSError as error:
            faults.append(
                Fault("processes", self._proc, "unreadable", error.strerror or str(error))
            )
            return []

    def _finish(self, faults: list[Fault], damaged: dict[str, Fault], now_s: float) -> None:
        """Record the faults of a sample and log what changed."""
        faults.extend(damaged.values())
        if self._boot_fault is not None:
            faults.append(self._boot_fault)
        self.faults = tuple(faults)
        if faults or self._failing:
            self._log(faults, now_s)

    def _log(self, faults: list[Fault], now_s: float) -> None:
        """One warning per damaged file (``<pid>`` for any process) and kind of damage."""
        sources: dict[str, Fault] = {}
        for fault in faults:
            source = fault.source
            if fault.field == "processes" and source.endswith("/stat"):
                source = os.path.join(self._proc, "<pid>", "stat")
            sources.setdefault(source, fault)
        for source, fault in sources.items():
            outcome = (
                f"{fault.field} from {fault.fallback}"
                if fault.fallback
                else f"rows skipped (e.g. {fault.source})"
            )
            # a damaged row that comes and goes (process churn) is not one record per flap
            report_failure(source, f"{fault.kind}: {fault.detail}; {outcome}", fault.kind, now_s)
        now_failing = set(sources)
        for source in self._failing - now_failing:
            report_recovery(source)
        self._failing = now_failing

    def top(self, n: int = 10, *, by: SortKey = "cpu", group: bool = False) -> list[ProcessInfo]:
        """The *n* processes using the most CPU (``by="cpu"``) or memory (``by="memory"``).

        ``group=True`` merges processes with the same name into one row (``count`` > 1),
        e.g. all renderer processes of one browser.
        """
        key = _check_top(n, by, group)
        rows = self.sample()
        if group:
            rows = _group_by_name(rows)
        rows.sort(key=key, reverse=True)
        return [self._complete(row) for row in rows[:n]]

    def _complete(self, row: ProcessInfo) -> ProcessInfo:
        return describe(row, self._proc)


def _lifetime_percent(ticks: int, start_ticks: int, uptime_s: float | None) -> float:
    """A process's CPU percent averaged over its life (the first time the table sees it)."""
    lifetime_s = uptime_s - start_ticks / _procfs.TICKS_PER_S if uptime_s is not None else 0.0
    return 100.0 * ticks / _procfs.TICKS_PER_S / lifetime_s if lifetime_s > 0 else 0.0


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


def describe(row: ProcessInfo, proc: str = "/proc") -> ProcessInfo:
    """*row* with its command line and user name filled in (one read and one lookup);
    the table leaves them empty because most rows are never shown."""
    import attrs

    if not isinstance(row, ProcessInfo):
        raise InvalidType(
            f"row={shown(row)} is not a ProcessInfo; expected a row of the process table"
        )
    if not isinstance(proc, str):
        raise InvalidType(f"proc={shown(proc)} is not a path; expected a string such as '/proc'")

    raw = _read(f"{proc}/{row.pid}/cmdline") or b""
    cmdline = tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)
    username: str | None
    try:
        username = pwd.getpwuid(row.uid).pw_name if row.uid is not None else None
    except KeyError:
        username = str(row.uid)
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
            )
        )
    return merged


def processes_html(rows: list[ProcessInfo], title: str = "top processes") -> str:
    """An HTML table of process rows for notebooks."""
    rows = list(rows)
    if not all(isinstance(row, ProcessInfo) for row in rows):
        raise InvalidType(
            f"rows={shown(rows)} are not ProcessInfo rows; expected the result of top_processes()"
        )
    return records_table(rows, TOP_COLUMNS, title)


_default_table: ProcessTable | None = None


def top_processes(n: int = 10, *, by: SortKey = "cpu", group: bool = False) -> list[ProcessInfo]:
    """The top *n* processes by CPU or memory; CPU is measured since the previous call.

    :class:`~resguard.InvalidType` / :class:`~resguard.InvalidValue` for a bad *n*, *by*
    or *group*, before anything is read.
    """
    global _default_table
    _check_top(n, by, group)
    if _default_table is None:
        _default_table = ProcessTable()
    return _default_table.top(n, by=by, group=group)
