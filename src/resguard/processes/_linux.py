"""The process table's linux reader: ``/proc/<pid>/stat`` and the owner of
``/proc/<pid>``, parsed by resguard itself (faster than psutil, and it reads a re-rooted
``/proc`` such as :class:`resguard.testing.KernelTree`'s).

A ``stat`` file that is there but damaged (garbage, cut short, empty) skips its row and
logs one warning per kind of damage; a damaged ``/proc/uptime`` or boot time falls back
to ``CLOCK_BOOTTIME``. Processes that vanish or cannot be read are skipped silently.
"""

from __future__ import annotations

import os
import time

from resguard._probes import procfs as _procfs
from resguard._probes.files import READ_CAP_BYTES, damage_of
from resguard._probes.reporting import SENSING_FAULTS, report_failure, report_recovery
from resguard.snapshot import Fault, ProcessInfo

__all__ = ["LinuxProcesses", "read_cmdline"]

_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)  # no O_CLOEXEC on Windows
_STAT_READ_BYTES = 1 << 20  # btime follows the per-interrupt counts: far down on big machines


def _read(path: str, size: int = READ_CAP_BYTES) -> bytes | None:
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None
    try:
        return os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)


def _boot_clock_s() -> float | None:
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return None
    try:
        return time.clock_gettime(boottime)
    except OSError:
        return None


def read_cmdline(proc: str, pid: int) -> tuple[str, ...]:
    """``/proc/<pid>/cmdline`` as its arguments; ``()`` when it cannot be read."""
    raw = _read(f"{proc}/{pid}/cmdline") or b""
    return tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)


def _lifetime_percent(ticks: int, start_ticks: int, uptime_s: float | None) -> float:
    """A process's CPU percent averaged over its life (the first time the table sees it)."""
    lifetime_s = uptime_s - start_ticks / _procfs.TICKS_PER_S if uptime_s is not None else 0.0
    return 100.0 * ticks / _procfs.TICKS_PER_S / lifetime_s if lifetime_s > 0 else 0.0


class LinuxProcesses:
    """Reads every process under *proc*; the table holds the lock around it."""

    def __init__(self, proc: str) -> None:
        self.proc = proc
        self._previous: dict[tuple[int, int], tuple[int, float]] = {}
        self._failing: set[str] = set()
        self.faults: tuple[Fault, ...] = ()
        self._boot_fault: Fault | None = None
        self._boot_time_s = self._read_boot_time()

    def _read_boot_time(self) -> float:
        path = os.path.join(self.proc, "stat")
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

    def sample(self, now: float) -> list[ProcessInfo]:
        """Every readable process at the table's clock reading *now*."""
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
        sources: dict[str, Fault] = {}
        for fault in faults:
            source = fault.source
            if fault.field == "processes" and source.endswith("/stat"):
                source = os.path.join(self.proc, "<pid>", "stat")
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
