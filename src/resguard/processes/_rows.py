"""The process table's rows from what a backend read, without I/O: the CPU percent of each
process since the table's previous sample (else its average since it started), keyed by
``(pid, create time)`` so a reused PID never inherits its predecessor's CPU time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from resguard.snapshot import ProcessInfo

__all__ = ["Previous", "RowFacts", "rows_from"]


class RowFacts(NamedTuple):
    """One process as a backend read it, in seconds and bytes."""

    pid: int
    name: str
    ppid: int
    create_time_s: float
    rss_bytes: int
    cpu_s: float
    """User + system CPU time since it started."""
    num_threads: int
    uid: int | None
    age_s: float | None
    """How long it has run (``None`` when the backend cannot tell)."""


Previous = dict[tuple[int, float], tuple[float, float]]
"""``(pid, create time) -> (CPU seconds, the table's clock)`` at the previous sample."""


def rows_from(
    facts: Iterable[RowFacts], previous: Previous, now_s: float
) -> tuple[list[ProcessInfo], Previous]:
    """The rows of *facts* at the table's clock reading *now_s*, and what the next call
    takes as *previous*. A process seen in *previous* gets its CPU percent over the time
    since then; a new one (or one whose clock or CPU time went back) its lifetime average.
    """
    rows: list[ProcessInfo] = []
    current: Previous = {}
    for fact in facts:
        key = (fact.pid, fact.create_time_s)
        before = previous.get(key)
        if before is not None and now_s > before[1] and fact.cpu_s >= before[0]:
            cpu = 100.0 * (fact.cpu_s - before[0]) / (now_s - before[1])
        elif fact.age_s is not None and fact.age_s > 0:
            cpu = 100.0 * fact.cpu_s / fact.age_s
        else:
            cpu = 0.0
        current[key] = (fact.cpu_s, now_s)
        rows.append(
            ProcessInfo(
                pid=fact.pid,
                name=fact.name,
                cmdline=(),
                username=None,
                uid=fact.uid,
                ppid=fact.ppid,
                rss=fact.rss_bytes,
                uss=None,
                cpu_percent=max(cpu, 0.0),
                num_threads=fact.num_threads,
                create_time=fact.create_time_s,
            )
        )
    return rows, current
