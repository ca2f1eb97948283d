"""Snapshot values built by hand, for testing code that reads snapshots.

They are the real frozen attrs types (no mocks), filled with plausible numbers, so a rule,
a guard or a user's own endpoint can be tested at any memory pressure without creating it.
"""

from __future__ import annotations

from resguard.snapshot import (
    ContainersInfo,
    ContainerStats,
    CpuInfo,
    MemoryInfo,
    PressureInfo,
    PressureLine,
    ProcessInfo,
    ProcessSelf,
    ResourcePressure,
    Snapshot,
    SwapInfo,
)

__all__ = ["WALL_OFFSET_S", "make_container", "make_process", "make_snapshot"]

GiB = 2**30
MB = 10**6
WALL_OFFSET_S = 1_700_000_000.0
"""Wall-clock time minus monotonic time in the snapshots made here."""


def make_process(
    pid: int,
    name: str = "proc",
    *,
    cpu_percent: float = 0.0,
    rss: int = 10 * MB,
    create_time: float | None = None,
) -> ProcessInfo:
    """One process-table row; identity ``(pid, create_time)`` (default create time: pid)."""
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
    memory_percent: float | None = None,
    used: int | None = None,
    limit: int = 16 * GiB,
    rss: int = 30 * MB,
    psi_some: float | None = 0.0,
    psi_full: float | None = 0.0,
    processes: tuple[ProcessInfo, ...] | None = None,
    containers: tuple[ContainerStats, ...] | None = None,
    cpu_percent: float = 5.0,
) -> Snapshot:
    """A snapshot at monotonic time *at*.

    Memory is given as ``memory_percent`` of *limit* or as ``used`` bytes (default 40 %).
    ``psi_some=None`` means a kernel without PSI; ``psi_full=None`` a PSI file without a
    ``full`` line. ``containers`` fills ``snapshot.containers``.
    """
    if used is None:
        percent = 40.0 if memory_percent is None else float(memory_percent)
        used = round(limit * percent / 100)
    else:
        percent = 100.0 * used / limit
    memory = MemoryInfo(
        total=32 * GiB,
        limit=limit,
        used=used,
        available=max(limit - used, 0),
        percent=percent,
        source="cgroup",
        source_detail="memory.max",
        cgroup="/test",
    )
    if psi_some is None:
        pressure = PressureInfo(memory=None, cpu=None, io=None, source=None)
    else:
        full = None if psi_full is None else PressureLine(psi_full, psi_full, psi_full, 0)
        memory_pressure = ResourcePressure(PressureLine(psi_some, psi_some, psi_some, 0), full)
        quiet = ResourcePressure(PressureLine(0.0, 0.0, 0.0, 0), PressureLine(0.0, 0.0, 0.0, 0))
        pressure = PressureInfo(memory=memory_pressure, cpu=quiet, io=quiet, source="system")
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
        pressure=pressure,
        process=ProcessSelf(
            pid=4242, rss=rss, vms=4 * rss, uss=None, cpu_percent=1.0, num_threads=4, children_rss=0
        ),
        taken_at=WALL_OFFSET_S + at,
        monotonic=at,
        processes=processes,
        containers=None if containers is None else ContainersInfo.from_items(containers),
    )


def make_container(
    name: str, *, memory_used: int, memory_limit: int | None = None
) -> ContainerStats:
    """One running container with the given working set and limit."""
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
