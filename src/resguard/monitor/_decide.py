"""The Monitor's decisions, as plain functions and state machines of (state, now).

No I/O, no locks, no waiting and no clock reads here: the thread runner and the task
runner (``_loops``) ask these what to do and how long to wait, and only wait.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Sequence

import attrs

from resguard.monitor._options import Options
from resguard.monitor._pace import paced_interval_s
from resguard.monitor._state import State
from resguard.rules import Level
from resguard.snapshot import MemoryInfo, Snapshot

__all__ = [
    "RELOG_AFTER_S",
    "FailureMemo",
    "History",
    "SlowSchedule",
    "SlowWork",
    "fastest_fill_bytes_per_s",
    "next_interval_s",
    "reclaim_needed_bytes",
    "remember",
    "unknown_reason",
]

RELOG_AFTER_S = 60.0
"""A failure that comes back after its source worked again is logged again only after this
long (per kind of error): an intermittent fault is one warning, not one per tick."""

History = deque[tuple[float, int]]
"""The latest (monotonic time, bytes used) samples, for the fill rate."""


def remember(history: History, snapshot: Snapshot) -> None:
    """Add *snapshot*'s memory use to *history* (cleared by an unknown one: the fill rate
    needs consecutive known samples)."""
    used = snapshot.memory.used
    if used is None:
        history.clear()
    else:
        history.append((snapshot.monotonic, used))


def fastest_fill_bytes_per_s(history: History) -> float | None:
    """The fastest growth of memory use between two consecutive samples of *history*
    (bytes per second), ``None`` while it never grew (or the clock never moved)."""
    fastest: float | None = None
    previous: tuple[float, int] | None = None
    for sample in history:
        if previous is not None and sample[0] > previous[0] and sample[1] > previous[1]:
            rate = (sample[1] - previous[1]) / (sample[0] - previous[0])
            fastest = rate if fastest is None else max(fastest, rate)
        previous = sample
    return fastest


def next_interval_s(
    options: Options,
    state: State,
    history: History,
    edges_bytes: Sequence[int] = (),
    *,
    burst: bool = False,
    covered: Collection[int] = (),
) -> float:
    """How long the fast loop waits after publishing *state*.

    Paced (``_pace.paced_interval_s``) by the distance from memory use to the nearest
    edge, *edges_bytes* (the policy's and the watched guards', ascending: bisected, so a
    million of them cost a tick no more than a few), the limit itself and
    *relax_below* of the limit when one was given (one more edge, kept for compatibility:
    no longer a level below which all is calm, since a fixed share of the limit is no
    edge of anyone's), at the fastest fill rate seen in *history* (never below the pace's
    default), between *min_interval* and *relaxed_interval*; at most *interval* while
    the verdict is not OK. *min_interval* during a *burst* (after a kernel event);
    *interval* while memory or part of the verdict is unknown: blind is not calm, nor a
    reason to spin. *interval* always when not *adaptive*. The edges in *covered* have
    kernel thresholds armed ahead of use (cgroup v1: the kernel wakes the loop before use
    rises through them): their distance no longer shortens the wait, nor the limit's
    while any is covered (the OOM eventfd watches it); the others still pace it.
    """
    if not options.adaptive:
        return options.interval_s
    if burst:
        return options.min_interval_s
    memory = state.snapshot.memory
    if memory.used is None or not state.verdict.known:
        return options.interval_s
    skip = covered if isinstance(covered, (set, frozenset)) else frozenset(covered)
    extra: list[int] = []
    if memory.limit is not None:
        if not skip:
            extra.append(memory.limit)
        if options.relax_below_percent is not None:  # never armed: always paced by
            extra.append(int(memory.limit * options.relax_below_percent / 100))
    interval = paced_interval_s(
        memory.used,
        extra,
        fastest_fill_bytes_per_s(history),
        min_interval_s=options.min_interval_s,
        relaxed_interval_s=options.relaxed_interval_s,
        sorted_edges_bytes=edges_bytes,
        skip_bytes=skip,
    )
    if state.verdict.level != Level.OK:
        interval = min(interval, options.interval_s)
    return interval


def unknown_reason(state: State, now_s: float, stale_after_s: float) -> str | None:
    """Why *state* cannot be trusted at *now_s*: stale, or unknowns in its verdict."""
    age_s = state.age_s(now_s)
    if age_s > stale_after_s:
        return f"stale: last sample {age_s:.1f} s ago"
    if state.verdict.unknown:
        return "unknown: " + "; ".join(state.verdict.unknown)
    return None


def reclaim_needed_bytes(memory: MemoryInfo, reclaim_to_percent: float) -> int:
    """How far memory use is above *reclaim_to_percent* of the limit (0 while unknown)."""
    if memory.limit is None or memory.used is None:
        return 0
    return int(memory.used - memory.limit * reclaim_to_percent / 100)


@attrs.frozen
class SlowWork:
    """What the slow loop does now: climb the ladder, sample the sources, or both."""

    climb: bool
    sample: bool

    def __bool__(self) -> bool:
        return self.climb or self.sample


@attrs.define
class SlowSchedule:
    """When the slow loop samples and climbs the ladder.

    Every fast tick at WARNING or worse wants a climb; a climb starts at once when wanted,
    then at most once per *slow_interval_s* while the warning lasts (without this pace the
    ladder, a process scan and a garbage collection, would run at the fast loop's rate).
    The sources are sampled every *slow_interval_s*.
    """

    slow_interval_s: float
    next_sample_s: float = -math.inf
    next_climb_s: float = -math.inf
    wanted: bool = False

    def restart(self) -> None:
        """The loops start (again): the sources are sampled first."""
        self.next_sample_s = -math.inf

    def want_climb(self) -> bool:
        """A fast tick saw WARNING or worse; whether that is news (wake the slow loop)."""
        news = not self.wanted
        self.wanted = True
        return news

    def due(self, now_s: float, level: Level) -> SlowWork:
        """What is due at *now_s*, the published level being *level*."""
        climb = False
        if self.wanted and now_s >= self.next_climb_s:
            self.wanted = False
            if level >= Level.WARNING:  # still: the level may have dropped meanwhile
                self.next_climb_s = now_s + self.slow_interval_s
                climb = True
        return SlowWork(climb=climb, sample=now_s >= self.next_sample_s)

    def sampled(self, now_s: float) -> None:
        """The sources were sampled, finishing at *now_s*."""
        self.next_sample_s = now_s + self.slow_interval_s

    def wait_s(self, now_s: float) -> float:
        """How long the slow loop may sleep at *now_s* (a new want wakes it sooner)."""
        until = self.next_sample_s
        if self.wanted:
            until = min(until, self.next_climb_s)
        return max(until - now_s, 0.0)


class FailureMemo:
    """Which sources are failing, and whether a failure is news worth a log line.

    A source's failure is logged the first time and when its kind of error changes; a
    flapping source (failing, working, failing...) at most once per :data:`RELOG_AFTER_S`
    for each kind.
    """

    __slots__ = ("errors", "failing", "logged_at")

    def __init__(self) -> None:
        self.failing: dict[str, str] = {}  # source -> kind of error logged for it
        self.errors: dict[str, str] = {}  # source -> its latest error
        self.logged_at: dict[tuple[str, str], float] = {}  # (source, kind) -> last logged

    def failed(self, source: str, error: BaseException, now_s: float) -> bool:
        """Record that *source* failed at *now_s*; whether to log it."""
        kind = type(error).__name__
        self.errors[source] = f"{kind}: {error}"
        if self.failing.get(source) == kind:
            return False
        self.failing[source] = kind
        if now_s - self.logged_at.get((source, kind), -math.inf) < RELOG_AFTER_S:
            return False
        self.logged_at[(source, kind)] = now_s
        return True

    def worked(self, source: str) -> bool:
        """Record that *source* worked; whether that ends a failure (log the recovery)."""
        if self.failing.pop(source, None) is None:
            return False
        self.errors.pop(source, None)
        return True
