"""The process table's linux reader: ``/proc/<pid>/stat`` and the owner of
``/proc/<pid>``, parsed by resguard itself (faster than psutil, and it reads a re-rooted
``/proc`` such as :class:`resguard.testing.KernelTree`'s).

A ``stat`` file that is there but damaged (garbage, cut short, empty) skips its row and
logs one warning per kind of damage; a damaged ``/proc/uptime`` or boot time falls back
to ``CLOCK_BOOTTIME``. Processes that vanish or cannot be read, and zombies, are skipped
silently. A name the kernel cut to 15 characters is completed from ``argv[0]`` as psutil
does, so both backends name (and group) a process alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from resguard._probes import procfs as _procfs
from resguard._probes.files import damage_of
from resguard._probes.files import read_bytes as _read
from resguard._probes.identity import (
    STAT_READ_BYTES,
    boot_clock_s,
    clock_boot_time_s,
    read_cmdline,
)
from resguard._probes.names import COMM_CHARS, full_name
from resguard._probes.reporting import SENSING_FAULTS, FaultLike, log_faults
from resguard.processes._rows import Previous, RowFacts, rows_from
from resguard.snapshot import Fault, ProcessInfo

__all__ = ["LinuxProcesses"]

_EXITED = frozenset("ZXx")  # zombie, dead: exited, waiting for the parent to reap it


class LinuxProcesses:
    """Reads every process under *proc*; the table holds the lock around it."""

    def __init__(self, proc: str) -> None:
        self.proc = proc
        self._previous: Previous = {}
        self._failing: frozenset[str] = frozenset()
        self.faults: tuple[Fault, ...] = ()
        self._boot_fault: Fault | None = None
        self._boot_time_s = self._read_boot_time()

    def _read_boot_time(self) -> float:
        path = os.path.join(self.proc, "stat")
        raw = _read(path, STAT_READ_BYTES)
        text = raw.decode("ascii", "replace") if raw is not None else None
        btime = _procfs.parse_btime(text) if text is not None else None
        if btime is not None:
            return btime
        kind, detail = damage_of(text) if text is not None else ("unreadable", "cannot read")
        if text is None and not os.path.exists(path):
            kind, detail = "missing", "no such file"
        self._boot_fault = Fault(
            "processes.create_time", path, kind, detail, fallback="the clock minus CLOCK_BOOTTIME"
        )
        SENSING_FAULTS.failed(
            path, f"{kind}: {detail}; boot time from the clock instead", kind=kind
        )
        return clock_boot_time_s()

    def _uptime_s(self, faults: list[Fault]) -> float | None:
        path = os.path.join(self.proc, "uptime")
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
        fallback = boot_clock_s()
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

    @property
    def boot_time_s(self) -> float:
        """The boot time this reader dates processes by (epoch seconds)."""
        return self._boot_time_s

    def sample(self, now: float) -> list[ProcessInfo]:
        """Every readable process at the table's clock reading *now*."""
        faults: list[Fault] = []
        uptime_s = self._uptime_s(faults)
        damaged: dict[str, Fault] = {}
        facts = [self._facts(entry, uptime_s, damaged) for entry in self._entries(faults)]
        rows, self._previous = rows_from(
            (fact for fact in facts if fact is not None), self._previous, now
        )
        self._finish(faults, damaged, now)
        return rows

    def _facts(
        self, entry: os.DirEntry[str], uptime_s: float | None, damaged: dict[str, Fault]
    ) -> RowFacts | None:
        """One process's facts, or ``None`` to skip it (gone, not a process, damaged)."""
        if not entry.name.isdigit():
            return None
        raw = _read(entry.path + "/stat")
        if raw is None:
            return None  # vanished or not ours to read
        text = raw.decode("utf-8", "replace")
        stat = _procfs.parse_pid_stat(text)
        if stat is None:
            kind, detail = damage_of(text)
            damaged.setdefault(kind, Fault("processes", entry.path + "/stat", kind, detail))
            return None
        comm, state, ppid, ticks, threads, start_ticks, rss, _ = stat
        if state in _EXITED:
            return None  # a zombie: no memory, no CPU, nothing to show
        try:
            uid = entry.stat(follow_symlinks=False).st_uid
        except OSError:
            return None  # vanished
        name = comm
        if len(comm) >= COMM_CHARS:  # cut by the kernel: the full name, as psutil gives it
            name = full_name(comm, read_cmdline(self.proc, int(entry.name)))
        started_s = start_ticks / _procfs.TICKS_PER_S
        return RowFacts(
            pid=int(entry.name),
            name=name,
            ppid=ppid,
            create_time_s=self._boot_time_s + started_s,
            rss_bytes=rss,
            cpu_s=ticks / _procfs.TICKS_PER_S,
            num_threads=threads,
            uid=uid,
            age_s=uptime_s - started_s if uptime_s is not None else None,
        )

    def _entries(self, faults: list[Fault]) -> list[os.DirEntry[str]]:
        try:
            return list(os.scandir(self.proc))
        except OSError as error:
            faults.append(Fault("processes", self.proc, "unreadable", error.strerror or str(error)))
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
        # a damaged row that comes and goes (process churn) is not one record per flap
        self._failing = log_faults(
            faults, self._failing, now_s, source_of=self._source_of, outcome=_outcome
        )

    def _source_of(self, fault: FaultLike) -> str:
        if fault.field == "processes" and fault.source.endswith("/stat"):
            return os.path.join(self.proc, "<pid>", "stat")
        return fault.source


def _outcome(source: str, faults: Sequence[FaultLike]) -> str:
    first = faults[0]
    if first.fallback:
        return f"{first.field} from {first.fallback}"
    return f"rows skipped (e.g. {first.source})"
