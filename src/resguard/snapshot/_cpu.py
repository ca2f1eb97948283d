"""CPU percentages from two readings of CPU time counters, without sleeping.

:class:`CpuCounters` is a small state machine with no I/O: the sampler hands it the
counters it read (the kernel's clock ticks, or psutil's seconds) and the time it read
them at, and it answers the share of CPU since the previous reading. Counters that go
back (a restarted container, a wrapped counter) start a new baseline instead of a
negative share.
"""

from __future__ import annotations

import math

from resguard._probes.procfs import TICKS_PER_S

__all__ = ["CpuCounters"]


class CpuCounters:
    """The previous readings of the host's and this process's CPU time, counted in
    *ticks_per_s* units a second (the kernel's clock ticks; 1.0 for psutil's seconds)."""

    __slots__ = ("_host", "_host_percent", "_process", "_process_percent", "_ticks_per_s")

    def __init__(self, ticks_per_s: float = TICKS_PER_S) -> None:
        self._ticks_per_s = ticks_per_s
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
        if elapsed > 0 and ticks >= previous[0]:
            share = 100.0 * (ticks - previous[0]) / self._ticks_per_s / elapsed
            if not math.isfinite(share):  # counters of garbage: not a share of anything
                return self._process_percent
            self._process_percent = max(share, 0.0)
            self._process = (ticks, now_s)
        elif ticks < previous[0]:
            self._process = (ticks, now_s)
        return self._process_percent
