"""The process table's rows from what a backend read, without I/O: the CPU percent of each
process since the table's previous sample (else its average since it started), keyed by
``(pid, create time)`` so a reused PID never inherits its predecessor's CPU time.

CPU time is counted in clock ticks (10 ms on Linux), so a window of a few milliseconds
says nothing: one tick in 5 ms reads as 200 %. A window shorter than
``CPU_WINDOW_MIN_S`` keeps the previous sample as the baseline and the row keeps the
percent it had; no percent exceeds 100 × the CPU count."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NamedTuple

from resguard._probes.procfs import CPU_WINDOW_MIN_S
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


Previous = dict[tuple[int, float], tuple[float, float, float, bool]]
"""``(pid, create time) -> (CPU seconds, the table's clock, the percent, whether that
percent is the lifetime average)`` at the baseline: the last sample at least
``CPU_WINDOW_MIN_S`` before (or the first)."""


def _cpu_count() -> int:
    return os.cpu_count() or 1


def _percent(
    fact: RowFacts, before: tuple[float, float, float, bool] | None, now_s: float
) -> float:
    """The CPU percent since *before* (``None``: the lifetime average)."""
    if before is not None and now_s > before[1] and fact.cpu_s >= before[0]:
        return 100.0 * (fact.cpu_s - before[0]) / (now_s - before[1])
    if fact.age_s is not None and fact.age_s > 0:
        return 100.0 * fact.cpu_s / fact.age_s
    return 0.0


def rows_from(
    facts: Iterable[RowFacts], previous: Previous, now_s: float, cpus: int | None = None
) -> tuple[list[ProcessInfo], Previous]:
    """The rows of *facts* at the table's clock reading *now_s*, and what the next call
    takes as *previous*. A process seen in *previous* at least ``CPU_WINDOW_MIN_S`` ago
    gets its CPU percent over the time since then, and that sample becomes the baseline;
    seen more recently, it keeps the baseline and its percent; a new one (or one whose
    clock or CPU time went back) gets its lifetime average, and its row says so
    (``cpu_since_start``: the per-process rules and culprits do not judge that figure).
    Percents are capped at 100 × *cpus* (``None``: this machine's CPU count).
    """
    most = 100.0 * (cpus if cpus is not None else _cpu_count())
    rows: list[ProcessInfo] = []
    current: Previous = {}
    for fact in facts:
        key = (fact.pid, fact.create_time_s)
        before = previous.get(key)
        went_back = before is not None and (now_s < before[1] or fact.cpu_s < before[0])
        if before is not None and not went_back and now_s - before[1] < CPU_WINDOW_MIN_S:
            cpu, since_start = before[2], before[3]  # too short a window: keep the baseline
            current[key] = before
        else:
            since_start = before is None or went_back
            cpu = min(max(_percent(fact, None if since_start else before, now_s), 0.0), most)
            current[key] = (fact.cpu_s, now_s, cpu, since_start)
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
                cpu_percent=cpu,
                num_threads=fact.num_threads,
                create_time=fact.create_time_s,
                cpu_since_start=since_start,
            )
        )
    return rows, current
