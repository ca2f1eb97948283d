"""Snapshot values built by hand, for testing code that reads snapshots.

They are the real frozen attrs types (no mocks), filled with plausible numbers, so a rule,
a guard or a user's own endpoint can be tested at any memory pressure without creating it::

    from resguard.testing import make_snapshot

    tight = make_snapshot(memory_percent=95, psi_some=20.0)
    assert tight.memory.percent == 95.0

Every figure not given is fixed: 16 GiB limit on a 32 GiB host, 8 CPUs at 5 %, a quiet
CPU and I/O pressure, this "process" (pid 4242) at 30 MB RSS, no faults. Use
:func:`attrs.evolve` for anything else (``attrs.evolve(snap, faults=(...))``).
"""

from __future__ import annotations

import attrs

from resguard._errors import InvalidValue
from resguard.snapshot import (
    ContainersInfo,
    ContainerStats,
    CpuInfo,
    Fault,
    MemoryInfo,
    PressureInfo,
    PressureLine,
    ProcessInfo,
    ProcessSelf,
    ResourcePressure,
    Snapshot,
    SwapInfo,
)
from resguard.units import named, parse_bytes, parse_percent, shown

__all__ = [
    "MEMINFO_EMPTY",
    "WALL_OFFSET_S",
    "make_container",
    "make_process",
    "make_snapshot",
    "unknown_memory",
]

GiB = 2**30
MB = 10**6
WALL_OFFSET_S = 1_700_000_000.0
"""Wall-clock time minus monotonic time in the snapshots made here."""


def make_process(
    pid: int,
    name: str = "proc",
    *,
    cpu_percent: float = 0.0,
    rss: int | str = 10 * MB,
    create_time: float | None = None,
) -> ProcessInfo:
    """One process-table row (a :class:`~resguard.snapshot.ProcessInfo`) of user 1000;
    identity ``(pid, create_time)`` (default create time: the pid, so rows made with
    different pids are different processes and the same pid is the same process). *rss*
    is read as typed (``"410MiB"``), like :func:`make_snapshot`'s sizes."""
    rss = _bytes("rss", rss)
    return ProcessInfo(
        pid=pid,
        name=name,
        cmdline=(name,),
        username="user",
        uid=1000,
        ppid=1,
        rss=rss,
        uss=None,
        cpu_percent=cpu_percent,
        num_threads=1,
        create_time=float(pid) if create_time is None else create_time,
    )


def make_snapshot(
    *,
    at: float = 1000.0,
    memory_percent: float | str | None = None,
    used: int | str | None = None,
    limit: int | str = 16 * GiB,
    rss: int | str = 30 * MB,
    psi_some: float | None = 0.0,
    psi_full: float | None = 0.0,
    processes: tuple[ProcessInfo, ...] | None = None,
    containers: tuple[ContainerStats, ...] | None = None,
    cpu_percent: float = 5.0,
    memory_level: int | None = None,
) -> Snapshot:
    """A :class:`~resguard.Snapshot` at monotonic time *at* (``taken_at`` is
    :data:`WALL_OFFSET_S` later, as wall-clock seconds).

    Memory is given as ``memory_percent`` of *limit* or as ``used`` bytes (default 40 %;
    not both); sizes are bytes or text such as ``"16GiB"``, a percent 0–100 or ``"97%"``;
    ``available`` is the rest of the limit. *rss* is this process's RSS. *psi_some* and
    *psi_full* are the memory PSI averages (percent); ``psi_some=None`` means a kernel
    without PSI, ``psi_full=None`` a PSI file without a ``full`` line. *processes* fills
    ``snapshot.processes`` (see :func:`make_process`), *containers* ``snapshot.containers``
    (see :func:`make_container`); ``None`` leaves them unsampled. *cpu_percent* is the
    host's CPU use. *memory_level* is macOS's memory-pressure level (1 normal, 2 warning,
    4 critical; ``None``: not a Mac).
    """
    if memory_level not in (None, 1, 2, 4) or isinstance(memory_level, bool):
        raise InvalidValue(
            f"memory_level={shown(memory_level)} is not a macOS pressure level; expected "
            "1 (normal), 2 (warning), 4 (critical) or None"
        )
    rss = _bytes("rss", rss)
    memory = _memory(limit, used, memory_percent)
    return Snapshot(
        memory=memory,
        swap=SwapInfo(total=0, used=0, free=0, percent=0.0),
        cpu=CpuInfo(
            percent=cpu_percent,
            count=8,
            effective=8.0,
            effective_source="host",
            load_1m=0.5,
            load_5m=0.5,
            load_15m=0.5,
        ),
        pressure=_pressure(psi_some, psi_full, memory_level),
        process=ProcessSelf(
            pid=4242, rss=rss, vms=4 * rss, uss=None, cpu_percent=1.0, num_threads=4, children_rss=0
        ),
        taken_at=WALL_OFFSET_S + at,
        monotonic=at,
        processes=processes,
        containers=None if containers is None else ContainersInfo.from_items(containers),
    )


def _memory(limit: object, used: object, memory_percent: object) -> MemoryInfo:
    """A cgroup-bound memory reading: *used* bytes or *memory_percent* of *limit*."""
    limit_bytes = _bytes("limit", limit, positive=True)
    if used is None:
        percent = 40.0
        if memory_percent is not None:
            percent = named("memory_percent", parse_percent, memory_percent)
        used_bytes = round(limit_bytes * percent / 100)
    else:
        if memory_percent is not None:
            raise InvalidValue("give memory_percent= or used=, not both")
        used_bytes = _bytes("used", used)
        percent = 100.0 * used_bytes / limit_bytes
    return MemoryInfo(
        total=32 * GiB,
        limit=limit_bytes,
        used=used_bytes,
        available=max(limit_bytes - used_bytes, 0),
        percent=percent,
        source="cgroup",
        source_detail="memory.max",
        cgroup="/test",
    )


def _pressure(
    psi_some: float | None, psi_full: float | None, memory_level: int | None
) -> PressureInfo:
    """Memory PSI at *psi_some*/*psi_full* (every average alike), CPU and I/O quiet."""
    if psi_some is None:
        return PressureInfo(memory=None, cpu=None, io=None, source=None, memory_level=memory_level)
    full = None if psi_full is None else PressureLine(psi_full, psi_full, psi_full, 0)
    memory = ResourcePressure(PressureLine(psi_some, psi_some, psi_some, 0), full)
    quiet = ResourcePressure(PressureLine(0.0, 0.0, 0.0, 0), PressureLine(0.0, 0.0, 0.0, 0))
    return PressureInfo(
        memory=memory, cpu=quiet, io=quiet, source="system", memory_level=memory_level
    )


def make_container(
    name: str, *, memory_used: int | str, memory_limit: int | str | None = None
) -> ContainerStats:
    """One running container (a :class:`~resguard.snapshot.ContainerStats`) with the
    working set *memory_used* bytes and *memory_limit* (``None``: no limit, then no
    percent either)."""
    memory_used = _bytes("memory_used", memory_used)
    if memory_limit is not None:
        memory_limit = _bytes("memory_limit", memory_limit, positive=True)
    percent = None if memory_limit is None else 100.0 * memory_used / memory_limit
    return ContainerStats(
        id=name * 3,
        name=name,
        image="busybox",
        status="running",
        memory_usage=memory_used,
        memory_used=memory_used,
        memory_limit=memory_limit,
        memory_percent=percent,
        cpu_percent=1.0,
        pids=1,
    )


def _bytes(what: str, value: object, *, positive: bool = False) -> int:
    """*value* (bytes or a size such as ``"16GiB"``) as bytes, else an error naming *what*."""
    size = named(what, parse_bytes, value)
    if positive and size <= 0:
        raise InvalidValue(f"{what}={shown(value)} must be above zero; expected e.g. '16GiB'")
    return size


MEMINFO_EMPTY = Fault("memory", "/proc/meminfo", "empty", "no data")
"""The fault :func:`unknown_memory` explains its snapshot with unless given others."""


def unknown_memory(snapshot: Snapshot, *faults: Fault, swap: bool = False) -> Snapshot:
    """*snapshot* as resguard sees it when the memory numbers cannot be read: every
    ``memory`` figure ``None``, ``source="unknown"``, explained by *faults* (default: an
    empty ``/proc/meminfo``); with *swap* the swap figures are unknown too. For testing
    what your code does when resguard cannot measure (unknown, never zero)::

        blind = unknown_memory(make_snapshot())
        assert blind.memory.percent is None and blind.faults
    """
    memory = attrs.evolve(
        snapshot.memory,
        total=None,
        limit=None,
        used=None,
        available=None,
        percent=None,
        source="unknown",
    )
    swap_info = snapshot.swap
    if swap:
        swap_info = attrs.evolve(swap_info, total=None, used=None, free=None, percent=None)
    return attrs.evolve(snapshot, memory=memory, swap=swap_info, faults=faults or (MEMINFO_EMPTY,))
