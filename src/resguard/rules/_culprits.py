"""Culprits: the processes to blame for a machine-wide metric, as a breach names them.

A breach of ``memory.percent`` says how full memory is; the person reading it wants to
know *who* holds it. :func:`culprits` answers that from the snapshot's own process table,
with no I/O: the largest processes by RSS for a memory metric, the busiest by CPU for a
CPU metric, scoped to the members of the cgroup when the limit judged is a cgroup's.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Final, Literal

from resguard._errors import InvalidType, InvalidValue
from resguard.rules._verdict import Offender
from resguard.snapshot import ProcessInfo, Snapshot
from resguard.units import shown

__all__ = ["CULPRITS_SHOWN", "Resource", "culprit_resource", "culprits", "judged_rows"]

CULPRITS_SHOWN: Final = 3
"""How many culprits a breach names by default (the field notes' ``ps ... | head``)."""

Resource = Literal["memory", "cpu"]

_MEMORY_PREFIXES: Final = ("memory.", "swap.", "pressure.memory.")
_CPU_PREFIXES: Final = ("pressure.cpu.", "cpu.load_")
# the process rules' metrics too: a live view sorts its table by the resource in breach
_MEMORY_METRICS: Final = frozenset({"pressure.memory_level", "processes.rss", "processes.uss"})
_CPU_METRICS: Final = frozenset({"cpu.percent", "processes.cpu_percent"})


def culprit_resource(metric: str) -> Resource | None:
    """Which resource the processes are blamed for when *metric* is in breach:
    ``"memory"`` for ``memory.*``, ``swap.*``, ``pressure.memory.*`` and macOS's
    ``pressure.memory_level``; ``"cpu"`` for ``cpu.percent``, ``pressure.cpu.*`` and
    ``cpu.load_*``; the process rules' ``processes.rss``, ``processes.uss`` and
    ``processes.cpu_percent`` likewise (a live view sorts its table by the resource in
    breach); ``None`` for the rest (this process's own figures, containers, heat: those
    name their own rows or nobody)."""
    if metric.startswith(_MEMORY_PREFIXES) or metric in _MEMORY_METRICS:
        return "memory"
    if metric.startswith(_CPU_PREFIXES) or metric in _CPU_METRICS:
        return "cpu"
    return None


def _kernel_thread_test() -> Callable[[ProcessInfo], bool]:
    """:func:`resguard.processes.is_kernel_thread`, imported at the first culprit: judging
    a snapshot needs no process table code until a breach names someone."""
    from resguard.processes import is_kernel_thread

    return is_kernel_thread


def judged_rows(snapshot: Snapshot, rows: Sequence[ProcessInfo], *, cpu: bool) -> list[ProcessInfo]:
    """The rows of *snapshot*'s process table a rule may name: never a kernel thread (it
    holds no memory and cannot be signalled), never the process that took the snapshot
    (``snapshot.process.pid``: resguard itself, judged by the ``process.*`` metrics), and
    for a CPU figure (*cpu*) never a row whose ``cpu_percent`` is its average since it
    started (``cpu_since_start``: the table had no earlier sample of it, so the figure
    says nothing of what it does now; it is judged from the next scan on)."""
    kernel_thread = _kernel_thread_test()
    me = snapshot.process.pid
    return [
        row
        for row in rows
        if row.pid != me and not (cpu and row.cpu_since_start) and not kernel_thread(row)
    ]


def _members(snapshot: Snapshot, resource: Resource) -> Sequence[ProcessInfo] | None:
    """The rows that can be blamed (:func:`judged_rows`): the cgroup's members when the
    snapshot names them; ``None`` when the process table was not sampled."""
    rows: Sequence[ProcessInfo] | None = snapshot.processes
    if rows is None:
        return None
    pids = snapshot.cgroup_pids
    if pids is not None:
        scope = frozenset(pids)
        rows = [row for row in rows if row.pid in scope]
    return judged_rows(snapshot, rows, cpu=resource == "cpu")


def _memory_limit(snapshot: Snapshot) -> float | None:
    limit = snapshot.memory.limit
    if limit is None:
        limit = snapshot.memory.total
    return float(limit) if limit else None


def culprits(
    snapshot: Snapshot,
    metric: str,
    n: int = CULPRITS_SHOWN,
    *,
    since: float | None = None,
) -> tuple[Offender, ...]:
    """The *n* processes of *snapshot* to blame for *metric*, the worst first.

    For a memory metric (see :func:`culprit_resource`) the largest by RSS, each valued as
    a percent of ``memory.limit`` (of ``memory.total`` when there is no limit; in bytes
    when neither is known): unit ``"memory_percent"``. For a CPU metric the busiest by
    ``cpu_percent``, a share of one core as ``top`` counts it: unit ``"core_percent"``.
    Only processes using some of the resource are named. When ``snapshot.cgroup_pids`` is
    not ``None`` (the memory limit is a cgroup's) only its members are candidates; kernel
    threads, the process that took the snapshot (resguard) and, for CPU, rows whose figure
    is a lifetime average (``cpu_since_start``) never are (:func:`judged_rows`). Nothing
    (``()``) when the process table was not sampled or *metric* blames no process. *since*
    (default ``snapshot.monotonic``) is the culprits' ``since``: a breach passes when it
    began. Pure: no I/O, no state.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidType(f"n={shown(n)} is not a count; expected an int of at least 0")
    if n < 0:
        raise InvalidValue(f"n={shown(n)} is not a count; expected an int of at least 0")
    resource = culprit_resource(metric) if isinstance(metric, str) else None
    if resource is None or n == 0:
        return ()
    rows = _members(snapshot, resource)
    if not rows:
        return ()
    when = snapshot.monotonic if since is None else since
    if resource == "cpu":
        return _top(rows, n, lambda row: row.cpu_percent, 1.0, "core_percent", when)
    limit = _memory_limit(snapshot)
    if limit is None:
        return _top(rows, n, lambda row: row.rss, 1.0, "bytes", when)
    return _top(rows, n, lambda row: row.rss, 100.0 / limit, "memory_percent", when)


def _top(
    rows: Sequence[ProcessInfo],
    n: int,
    key: Callable[[ProcessInfo], float | None],
    scale: float,
    unit: str,
    since: float,
) -> tuple[Offender, ...]:
    """The *n* rows with the largest positive ``key``, as offenders valued ``key * scale``."""
    using = [(float(value), row) for row in rows if (value := key(row)) is not None and value > 0]
    # ties broken by pid so the same table always names the same culprits
    top = heapq.nsmallest(n, using, key=lambda item: (-item[0], item[1].pid))
    return tuple(Offender(row.pid, row.name, value * scale, since, unit=unit) for value, row in top)
