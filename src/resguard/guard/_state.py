"""What a guard keeps and knows: its counts and queue, the numbers it reads (the Monitor's
state, or a snapshot cached for *max_age*), what is unknown, and its counters.

``_open`` builds on it with the state a guard admits on at once, ``_queue`` with the full
admission and the waiting, :class:`~resguard.guard.Guard` with the context managers.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections import deque

import attrs

from resguard._errors import ResourceExhausted
from resguard._modules import forks
from resguard._modules.log import RefusalLog, emit, get_logger
from resguard._modules.render import ValueMixin
from resguard._modules.tally import Tally
from resguard._modules.waiter import Waiter
from resguard.guard import _core
from resguard.guard._args import Settings, check_reserve
from resguard.guard._core import Counts, HoldMeter, View, WarnOnce
from resguard.guard._self import limits_generation
from resguard.guard._settings import GuardSettings
from resguard.snapshot import Sampler, Snapshot, default_sampler

__all__ = ["GuardState", "GuardStats"]

_logger = get_logger("resguard")


@attrs.frozen
class GuardStats(ValueMixin):
    """Counters of one guard: admitted and refused calls (by reason), what is in flight.

    ``queued_wait_counts`` counts the admissions that queued first by how long they
    waited, one per bucket of :data:`~resguard.guard.WAIT_BUCKETS_S` and a last one above
    it (not cumulative), ``queued_wait_s`` the sum of those waits; an admission that did
    not queue waited 0 s and is in neither (``admitted`` minus their sum)."""

    name: str
    admitted: int
    refused: int
    refused_by_reason: dict[str, int]
    in_flight: int
    reserved_bytes: int
    waiting: int
    queued_wait_counts: tuple[int, ...] = ()
    queued_wait_s: float = attrs.field(default=0.0, metadata={"unit": "seconds"})


class Waiting(Waiter):
    """A caller in the guard's FIFO queue, with the bytes it wants to reserve and since
    when (the guard's clock) it waits."""

    __slots__ = ("reserve", "since_s")

    def __init__(self, reserve: int, since_s: float = 0.0) -> None:
        super().__init__()
        self.reserve = reserve
        self.since_s = since_s


class GuardState(GuardSettings):
    """The counts and the readings of a :class:`~resguard.guard.Guard` (a base of it)."""

    __slots__ = ()

    def __init__(self, given: Settings) -> None:
        super().__init__(given)
        self._in_flight = self._reserved = self._admitted = 0
        # Blocks admitted without the lock (see LOCK_FREE): one token each, appended on
        # the way in and popped on the way out, so in flight = _in_flight + len(_tokens)
        self._tokens: list[None] = []
        self._free_admitted = Tally()  # blocks admitted without the lock
        self._queue: deque[Waiting] = deque()
        self._refused: dict[str, int] = {}
        self._refusals = RefusalLog(self.name, clock=self._clock)  # summaries, not a line each
        self._wait_counts = [0] * (len(_core.WAIT_BUCKETS_S) + 1)  # queued admissions' waits
        self._wait_sum_s = 0.0
        self._hold_ema_s = 0.0
        self._learned: dict[str, int] = {}
        self._sampler: Sampler = default_sampler()
        self._cached: Snapshot | None = None
        self._cached_at = -math.inf
        self._cached_generation = limits_generation.value
        self._refreshing = False
        self._warned = WarnOnce()
        self._budget_bytes = -1  # below any reservation while the state says refuse
        self._fresh_until_s = -math.inf  # the hot path's state is trusted until then
        self._forked = False  # in a forked child: admissions of before the fork may leave
        forks.register(self)
        self._watch(self._monitor)

    def _after_fork_in_child(self) -> None:
        # Only the forking thread lives on: the others' admissions and places in the queue
        # will never be given back, and a lock one of them held will never be released.
        self._lock = threading.Lock()
        self._queue = deque()
        self._in_flight = self._reserved = 0
        self._tokens = []
        self._holds = HoldMeter()
        self._refreshing = False
        self._budget_state = self._open_state = None
        self._forked = True

    def _current(self) -> View:
        monitor = self._monitor
        if monitor is not None:
            state = monitor.state
            stale, reason = _core.state_unknown(monitor, state, self._clock())
            unknown = _core.verdict_unknown(reason)
            if not stale:
                return View(state.snapshot, state.verdict.level, unknown)
            # The monitor stopped publishing: its verdict is unknown, but the numbers need
            # not be: sample them here (cached for max_age) rather than trust old ones.
            return self._own_view(monitor.sampler, unknown)
        return self._own_view(None, None)

    def _own_view(self, sampler: Sampler | None, verdict_unknown: str | None) -> View:
        now_s = self._clock()
        cached = self._cached
        if (
            cached is None
            or now_s - self._cached_at > self.max_age_s
            or self._cached_generation != limits_generation.value
        ):
            try:
                cached = self._refresh(now_s, sampler or self._sampler)
            except Exception as error:  # sensing must never fail the caller
                failed = f"sampling failed: {type(error).__name__}: {error}"
                return View(cached, None, verdict_unknown, failed)
        return View(cached, None, verdict_unknown)

    def _refresh(self, now_s: float, sampler: Sampler) -> Snapshot:
        with self._lock:  # one caller refreshes; the others keep the previous snapshot
            if self._refreshing and self._cached is not None:
                return self._cached
            self._refreshing = True
        try:
            generation = limits_generation.value
            snap = sampler.sample(children=False)
            self._cached, self._cached_at = snap, now_s
            self._cached_generation = generation
            return snap
        finally:
            self._refreshing = False

    def _counts(self) -> Counts:
        return Counts(self._in_flight + len(self._tokens), self._reserved, self._hold_ema_s)

    def unknown_reason(self, *, verdict: bool = True) -> str | None:
        """Why the guard cannot fully judge now (the Monitor's verdict is stale or has
        unknowns, a number it needs is unknown, with the fault that left it so), or
        ``None`` when everything it needs is known. ``verdict=False`` leaves the verdict
        out: only the numbers (what readiness asks without a fresh Monitor state)."""
        view = self._current()
        if not verdict:
            view = view.numbers_only()
        with self._lock:
            parts = _core.unknown_parts(view, self._limits, self._reserved, self.reserve_bytes)
        return "; ".join(parts.values()) if parts else None

    def would_admit(self, reserve: int | None = None) -> bool:
        """Whether a call reserving *reserve* bytes would be admitted at once now (nobody
        queued, room enough); a hint, since another caller may take the room first."""
        reserve = self.reserve_bytes if reserve is None else check_reserve(reserve)
        if self._queue:
            return False
        view = self._current()
        with self._lock:
            refusal, _ = _core.judge(view, self._limits, self._counts(), reserve)
        return refusal is None

    def headroom_bytes(self) -> int:
        """Memory a new reservation could take now: the guard's headroom minus what is
        already reserved in flight (no I/O with a Monitor).

        When a number it needs is unknown, *on_unknown* decides: ``"refuse"`` gives 0 (no
        room may be promised), ``"admit"`` leaves that bound out (with no bound known at
        all, a very large number: nothing known limits it).
        """
        view = self._current()
        room: int | None = None
        with self._lock:
            unknown = _core.unknown_parts(view, self._limits, self._reserved, 1)
            if view.snap is not None and view.sample_failed is None:
                room, _ = _core.room(view.snap, self._limits, self._reserved, need_available=True)
        if unknown and self.on_unknown == "refuse":
            return 0
        return _core.NO_LIMIT_BYTES if room is None else room

    def _warn_unknown(self, parts: dict[str, str]) -> None:
        """Log what is unknown once: again only for something newly unknown, or after a
        quiet minute (lock held)."""
        if not parts or not self._warned.due(parts, self._clock()):
            return
        text = "; ".join(parts.values())
        doing = "admits although" if self.on_unknown == "admit" else "refuses while"
        emit(
            _logger, logging.WARNING, "%s %s %s (on_unknown=%r; logged once)",
            self.name, doing, text, self.on_unknown,
        )  # fmt: skip

    def _count_refusal(self, error: ResourceExhausted) -> ResourceExhausted:
        with self._lock:
            self._refused[error.reason] = self._refused.get(error.reason, 0) + 1
        self._refusals.note(error.reason)  # outside the lock: it may write a line
        return error

    def _count_wait(self, waited_s: float) -> None:
        """Count one queued admission that waited *waited_s* (lock held); a wait equal to
        a bound is in that bound's bucket, as Prometheus's ``le`` counts."""
        waited_s = max(waited_s, 0.0)
        self._wait_counts[bisect.bisect_left(_core.WAIT_BUCKETS_S, waited_s)] += 1
        self._wait_sum_s += waited_s

    def breach(self) -> ResourceExhausted | None:
        """Why running work should stop now (the process passed the ``rss`` limit or the
        verdict reached the guard's level), or ``None``. Unknown numbers and a stale state
        never stop running work (``on_unknown`` is about admission only)."""
        refusal = _core.breach(self._current(), self._limits, self._counts())
        return None if refusal is None else refusal.error(self.name)

    def check(self) -> None:
        """Cooperative check for long sync work: raise ResourceExhausted on a breach."""
        breach = self.breach()
        if breach is not None:
            raise self._count_refusal(breach)

    def learned_reserve_bytes(self, key: str | None = None) -> int:
        """The reservation learned for *key* (a guarded function's name) with ``"auto"``."""
        return self._learned.get(key or "", 0)

    def _learn(self, key: str, growth: int) -> None:
        with self._lock:
            previous = self._learned.get(key, 0)
            # remember peaks, forget slowly: a call that once needed 1 GiB may need it again
            self._learned[key] = max(growth, int(previous * 0.95))

    def _rss_now(self) -> int | None:
        try:
            return self._sampler.sample(children=False).process.rss
        except Exception as error:  # learning must never break the call it measures
            emit(
                _logger, logging.DEBUG, "%s could not measure RSS for reserve='auto': %s",
                self.name, error,
            )  # fmt: skip
            return None

    def stats(self) -> GuardStats:
        """Counters for metrics and dashboards (``refused_by_reason`` has the reasons that
        occurred; all possible ones are :data:`REFUSAL_REASONS`)."""
        with self._lock:
            return GuardStats(
                self.name,
                self._admitted + self._free_admitted.get(),
                sum(self._refused.values()),
                dict(self._refused),
                self._in_flight + len(self._tokens),
                self._reserved,
                len(self._queue),
                tuple(self._wait_counts),
                self._wait_sum_s,
            )
