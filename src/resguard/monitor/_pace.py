"""Polling paced by the distance to the nearest memory edge: a fast loop without events
waits no longer than memory needs, at a plausible fill rate, to reach a threshold.

The rule, after earlyoom's ``sleep_time_ms`` (rfjakob/earlyoom, ``main.c``: it sleeps for
the headroom above its kill level divided by a fixed "maximum expected" fill rate, clamped
to 100-1000 ms)::

    interval = distance to the nearest edge / fill rate / SAFETY_FACTOR,
               clamped to [min_interval, relaxed_interval]

*Edges* are ``memory.used`` values where a rule or a guard changes its mind
(:func:`resguard.rules.memory_edges_bytes`, a guard's budget edge). The nearest one
counts **in either direction**: use falling through a clear level ends a firing rule
(and lets a guard admit again) as surely as rising use starts one, and memory is freed as
suddenly as it is taken (a process exits), so both sides are paced at the same rate.

Pure: no clock, no I/O; the monitor's ``_decide.next_interval_s`` calls it on each tick.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Iterable, Sequence
from typing import Final

__all__ = ["DEFAULT_FILL_BYTES_PER_S", "SAFETY_FACTOR", "paced_interval_s"]

DEFAULT_FILL_BYTES_PER_S: Final = 6000 * 2**20
"""The plausible fill rate, 6000 MiB/s: earlyoom's "maximum expected memory fill rate"
(its ``mem_fill_rate`` of 6000 KiB per millisecond, which its source says was seen with
``stress -m 4 --vm-bytes 4G``). It is also the *floor* of the rate used: a slow fill
measured between two samples says how fast memory grew, not how fast it can (a calm
process allocates 60 % of its limit at once), so a measured rate only ever raises it.
At this rate a 256 MiB cgroup fills in 43 ms: inside a small cgroup every edge is near,
and the loop polls at or close to *min_interval*; on a 16 GiB host an edge 10 GiB away
gives the relaxed interval."""

SAFETY_FACTOR: Final = 2.0
"""Each wait covers at most half the way to the edge at the fill rate, so a fill at that
rate is sampled at least twice before it reaches the edge (the distance at least halves
from one sample to the next, down to *min_interval*), and a fill up to twice as fast is
still seen no later than the first sample after its crossing."""


def paced_interval_s(
    used_bytes: int | None,
    edges_bytes: Iterable[int],
    fill_bytes_per_s: float | None,
    *,
    min_interval_s: float,
    relaxed_interval_s: float,
    sorted_edges_bytes: Sequence[int] = (),
    skip_bytes: Collection[int] = (),
) -> float:
    """How long the fast loop may wait with memory at *used_bytes* and the edges at
    *edges_bytes* (``memory.used`` values, in any order: a few, each one read) and
    *sorted_edges_bytes* (ascending ints, as :func:`resguard.rules.memory_edges_bytes`
    gives them: bisected, so a tick reads O(log n) of them, less those in *skip_bytes*),
    memory filling at most at *fill_bytes_per_s* (the fastest fill seen; ``None``, 0 or
    less: none measured).

    The wait is the distance to the nearest edge, above or below, divided by the fill
    rate (the faster of *fill_bytes_per_s* and :data:`DEFAULT_FILL_BYTES_PER_S`) and by
    :data:`SAFETY_FACTOR`, clamped to [*min_interval_s*, *relaxed_interval_s*] (the
    minimum wins should they cross). No edge: *relaxed_interval_s*, nothing to approach;
    an edge too far for a float (``10**400``) or not a number (NaN) is no nearer than
    none, so the wait is finite whatever the edges. Unknown use (``None``):
    *min_interval_s*, since blind is not calm. Pure.
    """
    if used_bytes is None:
        return min_interval_s
    nearest: float = math.inf
    for edge in edges_bytes:
        distance = edge - used_bytes if edge >= used_bytes else used_bytes - edge
        if distance < nearest:  # NaN compares false: no edge
            nearest = distance
    above = bisect.bisect_left(sorted_edges_bytes, used_bytes)
    for index in range(above, len(sorted_edges_bytes)):  # past the skipped ones, each way
        if (edge := sorted_edges_bytes[index]) not in skip_bytes:
            nearest = min(nearest, edge - used_bytes)
            break
    for index in range(above - 1, -1, -1):
        if (edge := sorted_edges_bytes[index]) not in skip_bytes:
            nearest = min(nearest, used_bytes - edge)
            break
    if nearest == math.inf:
        return max(min_interval_s, relaxed_interval_s)
    rate = float(DEFAULT_FILL_BYTES_PER_S)
    if fill_bytes_per_s is not None and fill_bytes_per_s > rate:  # NaN compares false
        rate = fill_bytes_per_s
    try:
        wait_s = nearest / rate / SAFETY_FACTOR
    except OverflowError:  # an int distance too big for a float: as far as can be
        wait_s = math.inf
    return max(min_interval_s, min(relaxed_interval_s, wait_s))
