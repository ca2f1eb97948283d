"""CPU percentages from two readings of CPU time counters, without sleeping.

:class:`CpuCounters` is a small state machine with no I/O: the sampler hands it the
counters it read (the kernel's clock ticks, or psutil's seconds) and the time it read
them at, and it answers the share of CPU since the previous reading of the same sampler.
The first reading (and the first after a fork, or after counters went back: a restarted
container, a wrapped counter) only sets the baseline and answers ``None``: one reading
says nothing about now, and an average since boot or since the process started is not a
current figure. A window shorter than :data:`~resguard._probes.procfs.CPU_WINDOW_MIN_S`
(two samples a few milliseconds apart, counted in 10 ms ticks) keeps the previous
baseline and answers the previous share; a process's share never exceeds 100 × the CPU
count.
"""

from __future__ import annotations

import math
import os

from resguard._probes.procfs import CPU_WINDOW_MIN_S, TICKS_PER_S

__all__ = ["CpuCounters"]


class CpuCounters:
    """The previous readings of the host's and this process's CPU time, counted in
    *ticks_per_s* units a second (the kernel's clock ticks; 1.0 for psutil's seconds), on
    a machine of *cpu_count* CPUs (default :func:`os.cpu_count`)."""

    __slots__ = (
        "_cpu_count",
        "_host",
        "_host_percent",
        "_process",
        "_process_percent",
        "_ticks_per_s",
    )

    def __init__(self, ticks_per_s: float = TICKS_PER_S, cpu_count: int | None = None) -> None:
        self._ticks_per_s = ticks_per_s
        self._cpu_count = max(cpu_count or os.cpu_count() or 1, 1)
        self._host: tuple[float, float] | None = None  # (busy, total) ticks of all CPUs
        self._host_percent: float | None = None
        self._process: tuple[float, float] | None = None  # (ticks, monotonic seconds)
        self._process_percent: float | None = None

    def reset(self) -> None:
        """Forget the baselines and the shares (after a fork): the next readings set new
        baselines and answer ``None``."""
        self._host = self._process = None
        self._host_percent = self._process_percent = None

    def host_percent(self, ticks: tuple[float, float]) -> float | None:
        """The host's busy share (0–100) between the previous *ticks* ``(busy, total)``
        and these; ``None`` for the first reading; the last share when the window is too
        short to measure."""
        busy, total = ticks
        previous = self._host
        if previous is None or busy < previous[0] or total < previous[1]:
            self._host, self._host_percent = ticks, None  # a (new) baseline: unknown yet
            return None
        window_ticks = CPU_WINDOW_MIN_S * self._ticks_per_s * self._cpu_count
        if total - previous[1] < window_ticks:
            return self._host_percent  # too short a window to measure: keep the baseline
        share = 100.0 * (busy - previous[0]) / (total - previous[1])
        if not math.isfinite(share):  # counters of garbage: not a share of anything
            return self._host_percent
        self._host_percent = min(max(share, 0.0), 100.0)
        self._host = ticks
        return self._host_percent

    def process_percent(self, ticks: float, now_s: float) -> float | None:
        """This process's CPU percent (100 = one core) between the previous reading and
        *ticks* at monotonic *now_s*; ``None`` for the first reading (it becomes the
        baseline); the last share when the window is too short to measure."""
        previous = self._process
        if previous is None or ticks < previous[0] or now_s < previous[1]:
            self._process, self._process_percent = (ticks, now_s), None
            return None
        elapsed_s = now_s - previous[1]
        if elapsed_s < CPU_WINDOW_MIN_S:
            return self._process_percent  # too short a window to measure: keep the baseline
        share = 100.0 * (ticks - previous[0]) / self._ticks_per_s / elapsed_s
        if not math.isfinite(share):  # counters of garbage: not a share of anything
            return self._process_percent
        self._process_percent = min(max(share, 0.0), 100.0 * self._cpu_count)
        self._process = (ticks, now_s)
        return self._process_percent
