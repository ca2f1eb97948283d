"""CPU percentages from two readings of CPU time counters, without sleeping.

:class:`CpuCounters` is a small state machine with no I/O: the sampler hands it the
counters it read (the kernel's clock ticks, or psutil's seconds) and the time it read
them at, and it answers the share of CPU since the previous reading. Counters that go
back (a restarted container, a wrapped counter) start a new baseline instead of a
negative share. A window shorter than :data:`~resguard._probes.procfs.CPU_WINDOW_MIN_S`
(two samples a few milliseconds apart, counted in 10 ms ticks) keeps the previous baseline
and answers the previous share; a process's share never exceeds 100 × the CPU count.
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
        self._host: tuple[float, float] = (0, 0)  # (busy, total) ticks of all CPUs
        self._host_percent: float | None = None
        self._process: tuple[float, float] | None = None  # (ticks, monotonic seconds)
        self._process_percent: float | None = None

    def reset(self) -> None:
        """Forget the baselines (after a fork): the next host reading reports the
        average since boot, the next process reading sets a baseline."""
        self._host = (0, 0)
        self._process = None

    @property
    def has_process_baseline(self) -> bool:
        """Whether a process reading was taken since the last :meth:`reset`."""
        return self._process is not None

    def host_percent(self, ticks: tuple[float, float]) -> float | None:
        """The host's busy share (0–100) between the previous *ticks* ``(busy, total)``
        and these; the last share when no tick passed in between."""
        busy, total = ticks
        previous_busy, previous_total = self._host
        window_ticks = CPU_WINDOW_MIN_S * self._ticks_per_s * self._cpu_count
        if previous_total and previous_busy <= busy and 0 <= total - previous_total < window_ticks:
            return self._host_percent  # too short a window to measure: keep the baseline
        if total > previous_total and busy >= previous_busy:
            share = 100.0 * (busy - previous_busy) / (total - previous_total)
            self._host_percent = min(max(share, 0.0), 100.0)
            self._host = ticks
        elif total < previous_total or busy < previous_busy:
            self._host = ticks  # counters went back: a new baseline
        return self._host_percent

    def process_percent(
        self, ticks: float, now_s: float, baseline: tuple[float, float] | None = None
    ) -> float | None:
        """This process's CPU percent (100 = one core) between the previous reading and
        *ticks* at monotonic *now_s*. Without a previous reading, *baseline* ``(ticks,
        seconds)`` stands in (e.g. zero ticks at the process's start); without either this
        reading becomes the baseline and the answer is ``None``."""
        previous = self._process if self._process is not None else baseline
        if previous is None:
            self._process = (ticks, now_s)  # a baseline for the next one
            return None
        elapsed = now_s - previous[1]
        if self._process is not None and ticks >= previous[0] and 0 <= elapsed < CPU_WINDOW_MIN_S:
            return self._process_percent  # too short a window to measure: keep the baseline
        if elapsed > 0 and ticks >= previous[0]:
            share = 100.0 * (ticks - previous[0]) / self._ticks_per_s / elapsed
            if not math.isfinite(share):  # counters of garbage: not a share of anything
                return self._process_percent
            self._process_percent = min(max(share, 0.0), 100.0 * self._cpu_count)
            self._process = (ticks, now_s)
        elif ticks < previous[0]:
            self._process = (ticks, now_s)
        return self._process_percent
