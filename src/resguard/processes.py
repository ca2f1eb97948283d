"""The process table: top-N by CPU or memory without sleeping between two samples.

Like ``top``, a :class:`ProcessTable` keeps each process's previous CPU time, so the CPU
percent of the next sample covers the time in between (the first sample reports each
process's average since it started). A process is identified by ``(pid, create time)``,
so a reused pid is never mistaken for its predecessor. Processes that vanish or cannot be
read while the table is built are skipped silently.
"""

from __future__ import annotations

import os
import pwd
import threading
import time
from collections.abc import Callable
from typing import Literal

from resguard._modules.render import records_table
from resguard._probes import procfs as _procfs
from resguard._probes.paths import DEFAULT_ROOTS, Roots
from resguard.snapshot import ProcessInfo

__all__ = ["ProcessTable", "describe", "top_processes"]

SortKey = Literal["cpu", "memory"]
_SORT_KEYS: dict[str, Callable[[ProcessInfo], float]] = {
    "cpu": lambda info: info.cpu_percent,
    "memory": lambda info: info.rss,
}
TOP_COLUMNS = ("pid", "name", "count", "cpu_percent", "rss", "num_threads", "username")


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


class ProcessTable:
    """Samples every process's CPU time and memory; thread-safe.

    *clock* is the monotonic clock used to turn CPU-time deltas into percentages.
    """

    def __init__(self, roots: Roots = DEFAULT_ROOTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._proc = roots.proc
        self._clock = clock
        self._lock = threading.Lock()
        self._previous: dict[tuple[int, int], tuple[int, float]] = {}
        self._boot_time_s = self._read_boot_time()

    def _read_boot_time(self) -> float:
        text = _read(os.path.join(self._proc, "stat")) or b""
        for line in text.split(b"\n"):
            if line.startswith(b"btime "):
                return float(line.split()[1])
        return 0.0

    def _uptime_s(self) -> float:
        text = _read(os.path.join(self._proc, "uptime"))
        return float(text.split()[0]) if text else 0.0

    def sample(self) -> list[ProcessInfo]:
        """Every readable process, with CPU percent since this table's previous sample.

        ``cmdline``, ``username`` and ``uss`` are left empty here (they cost a read each);
        :meth:`top` fills them in for the rows it returns.
        """
        with self._lock:
            now = self._clock()
            uptime_s = self._uptime_s()
            previous, current = self._previous, {}
            rows: list[ProcessInfo] = []
            for entry in os.scandir(self._proc):
                if not entry.name.isdigit():
                    continue
                stat = _read(entry.path + "/stat")
                if stat is None:
                    continue  # vanished or not ours to read
                try:
                    name, _, ppid, ticks, threads, start_ticks, rss, _ = _procfs.parse_pid_stat(
                        stat.decode("utf-8", "replace"))
                    uid = entry.stat(follow_symlinks=False).st_uid
                except (ValueError, IndexError, OSError):
                    continue
                key = (int(entry.name), start_ticks)
                before = previous.get(key)
                if before is not None and now > before[1]:
                    cpu = 100.0 * (ticks - before[0]) / _procfs.TICKS_PER_S / (now - before[1])
                else:
                    lifetime_s = uptime_s - start_ticks / _procfs.TICKS_PER_S
                    cpu = (100.0 * ticks / _procfs.TICKS_PER_S / lifetime_s
                           if lifetime_s > 0 else 0.0)
                current[key] = (ticks, now)
                rows.append(ProcessInfo(
                    pid=key[0], name=name, cmdline=(), username=None, uid=uid, ppid=ppid,
                    rss=rss, uss=None, cpu_percent=max(cpu, 0.0), num_threads=threads,
                    create_time=self._boot_time_s + start_ticks / _procfs.TICKS_PER_S))
            self._previous = current
            return rows

    def top(self, n: int = 10, *, by: SortKey = "cpu", group: bool = False) -> list[ProcessInfo]:
        """The *n* processes using the most CPU (``by="cpu"``) or memory (``by="memory"``).

        ``group=True`` merges processes with the same name into one row (``count`` > 1),
        e.g. all renderer processes of one browser.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{n!r} is not a number of rows; expected an integer >= 0")
        key = _SORT_KEYS.get(by)
        if key is None:
            raise ValueError(f"{by!r} is not a sort order; expected 'cpu' or 'memory'")
        rows = self.sample()
        if group:
            rows = _group_by_name(rows)
        rows.sort(key=key, reverse=True)
        return [self._complete(row) for row in rows[:n]]

    def _complete(self, row: ProcessInfo) -> ProcessInfo:
        return describe(row, self._proc)


def describe(row: ProcessInfo, proc: str = "/proc") -> ProcessInfo:
    """*row* with its command line and user name filled in (one read and one lookup);
    the table leaves them empty because most rows are never shown."""
    import attrs

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
        merged.append(attrs.evolve(
            leader,
            rss=sum(member.rss for member in members),
            cpu_percent=sum(member.cpu_percent for member in members),
            num_threads=sum(member.num_threads for member in members),
            count=len(members)))
    return merged


def processes_html(rows: list[ProcessInfo], title: str = "top processes") -> str:
    """An HTML table of process rows for notebooks."""
    return records_table(rows, TOP_COLUMNS, title)


_default_table: ProcessTable | None = None


def top_processes(n: int = 10, *, by: SortKey = "cpu", group: bool = False) -> list[ProcessInfo]:
    """The top *n* processes by CPU or memory; CPU is measured since the previous call."""
    global _default_table
    if _default_table is None:
        _default_table = ProcessTable()
    return _default_table.top(n, by=by, group=group)
