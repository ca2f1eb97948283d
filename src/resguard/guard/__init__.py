"""Guards: admit, queue or refuse work by memory, RSS, verdict level and concurrency.

A :class:`Guard` decides on the hot path without I/O: it reads the Monitor's latest state
(one attribute read) or, without a Monitor, a cached snapshot refreshed at most every
*max_age*. Callers may declare what they will need (a *reservation*); admission checks
``headroom − reserved_in_flight ≥ reserve`` so that many requests arriving together do not
all see the same free memory and all get in. Refusal raises
:class:`~resguard.ResourceExhausted` with a reason (one of :data:`REFUSAL_REASONS`), the
numbers and ``retry_after``.

What the guard cannot know it does not guess: a number the snapshot left ``None`` (a
damaged ``/proc`` file), a Monitor state older than the monitor's ``stale_after`` (its
thread died, the machine stalled) or a verdict with unknowns is *unknown*, and
``on_unknown`` decides: ``"admit"`` (the default; a warning is logged once) checks only
what is still known, ``"refuse"`` refuses with reason ``"unknown"``.
"""

from __future__ import annotations

import functools
import inspect
import math
import resource
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import attrs

from resguard._errors import (
    InvalidState,
    InvalidType,
    InvalidValue,
    ResguardError,
    ResourceExhausted,
)
from resguard._modules import forks
from resguard._modules.clock import Clock, monotonic
from resguard._modules.clockcheck import checked_clock
from resguard._modules.log import get_logger
from resguard._modules.render import ValueMixin
from resguard._modules.waiter import Waiter
from resguard.rules import Level
from resguard.snapshot import Sampler, Snapshot, default_sampler, invalidate_limits
from resguard.units import (
    format_bytes,
    is_percent,
    parse_bytes,
    parse_duration,
    parse_percent,
    shown,
)

if TYPE_CHECKING:
    from resguard.monitor import Monitor, State

__all__ = ["REFUSAL_REASONS", "Admission", "Guard", "GuardStats", "limit_self"]

_logger = get_logger("resguard")

_F = TypeVar("_F", bound=Callable[..., Any])
Reserve = int | float | str | None
OnBreach = Literal["cancel"] | None
OnUnknown = Literal["admit", "refuse"]

#: Every value :attr:`ResourceExhausted.reason <resguard.ResourceExhausted>` takes when a
#: guard refuses, each a label value of ``resguard_guard_refused_total``:
#:
#: * ``"memory"``: the machine's (or cgroup's) headroom, or the guard's ``memory`` share,
#:   is too small for the reservation;
#: * ``"reservation"``: as ``"memory"``, but only because of what calls in flight reserved;
#: * ``"rss"``: this process's RSS (plus reservations) would pass the guard's ``rss``, or
#:   passed it while the work ran (``on_breach``, :meth:`Guard.check`);
#: * ``"level"``: the Monitor's verdict is at or above the guard's ``level``;
#: * ``"concurrency"``: ``max_concurrent`` calls are in flight;
#: * ``"queued"``: others are queued first and this call may not wait (no overtaking);
#: * ``"timeout"``: the call queued for its whole ``wait`` without getting in (the cause it
#:   waited on is in ``numbers["cause"]``);
#: * ``"unknown"``: a number the guard needs is unknown or the Monitor's state is stale,
#:   and ``on_unknown="refuse"``.
REFUSAL_REASONS: tuple[str, ...] = (
    "memory",
    "reservation",
    "rss",
    "level",
    "concurrency",
    "queued",
    "timeout",
    "unknown",
)

_POLL_S = 0.01
_HEAD_POLL_S = 0.005
# a non-head waiter is woken by the one before it; this only bounds a wake-up lost to a bug
_SAFETY_POLL_S = 1.0
_WARN_EVERY_S = 60.0
_NO_LIMIT_BYTES = 2**63 - 1
# below this (plus what the process already uses) a self-limit leaves nothing to run on
_SELF_LIMIT_MARGIN_BYTES = 32 * 2**20
# bumped by limit_self: every guard's cached snapshot (limits included) is out of date
_limits_generation = 0


@attrs.frozen
class GuardStats(ValueMixin):
    """Counters of one guard: admitted and refused calls (by reason), what is in flight."""

    name: str
    admitted: int
    refused: int
    refused_by_reason: dict[str, int]
    in_flight: int
    reserved_bytes: int
    waiting: int


def _named(what: str, parse: Callable[[Any], Any], value: Any) -> Any:
    """``parse(value)``, with the argument's name put in front of any error's message."""
    try:
        return parse(value)
    except ResguardError as error:
        error.args = (f"{what}={shown(value)}: {error}",)
        raise


def _check_duration(value: object, what: str) -> float:
    seconds: float = _named(what, parse_duration, value)
    if not math.isfinite(seconds):
        raise InvalidValue(f"{what}={shown(value)} must be a finite duration, e.g. '2s'")
    return seconds


def _check_reserve(value: object, what: str = "reserve") -> int:
    """A reservation in bytes (``None`` and ``"auto"`` are handled by the caller)."""
    return int(_named(what, parse_bytes, value))


class _Limit:
    """A size given either in bytes or as a percent of the effective memory limit."""

    __slots__ = ("bytes", "fraction", "text")

    def __init__(self, value: object, what: str) -> None:
        self.text = value
        if is_percent(value):
            percent: float = _named(what, parse_percent, value)
            if not percent > 0:
                raise InvalidValue(
                    f"{what}={shown(value)} must be above 0% (it would refuse "
                    f"everything); expected e.g. '90%'"
                )
            self.fraction: float | None = percent / 100
            self.bytes = 0
        else:
            self.fraction = None
            self.bytes = int(_named(what, parse_bytes, value))
            if self.bytes <= 0:
                raise InvalidValue(
                    f"{what}={shown(value)} must be above zero; expected e.g. '20GiB' or '90%'"
                )

    def resolve(self, limit_bytes: int | None) -> int | None:
        """The limit in bytes; ``None`` when it is a percent of an unknown limit."""
        if self.fraction is None:
            return self.bytes
        return None if limit_bytes is None else int(self.fraction * limit_bytes)


class _Waiter(Waiter):
    """A caller in the guard's FIFO queue, with the bytes it wants to reserve."""

    __slots__ = ("reserve",)

    def __init__(self, reserve: int) -> None:
        super().__init__()
        self.reserve = reserve


class _View:
    """What a guard knows at one moment: the snapshot (``None`` if none could be taken),
    the verdict level (``None`` without a fresh Monitor state), why the verdict cannot be
    trusted (a stale state, verdict unknowns) and why no current numbers could be taken."""

    __slots__ = ("level", "sample_failed", "snap", "verdict_unknown")

    def __init__(
        self,
        snap: Snapshot | None,
        level: Level | None,
        verdict_unknown: str | None = None,
        sample_failed: str | None = None,
    ) -> None:
        self.snap = snap
        self.level = level
        self.verdict_unknown = verdict_unknown
        self.sample_failed = (
            sample_failed if snap is not None else (sample_failed or "no snapshot yet")
        )


def _state_unknown(monitor: Any, state: State, now_s: float) -> tuple[bool, str | None]:
    """Whether *state* is stale at *now_s* by *monitor*'s ``stale_after``, and why it
    cannot be trusted (stale, no sample yet, verdict unknowns), or ``None``."""
    if state.sequence == 0:
        return True, "no sample yet"
    stale_after_s = getattr(monitor, "stale_after_s", None)
    if stale_after_s is None:
        stale_after_s = max(1.0, 5 * float(getattr(monitor, "relaxed_interval_s", 0.2)))
    age_s = now_s - state.snapshot.monotonic
    if age_s > stale_after_s:
        return True, f"stale: last sample {age_s:.1f} s ago"
    unknown = getattr(state.verdict, "unknown", ())
    if unknown:
        return False, "unknown: " + "; ".join(unknown)
    return False, None


class Guard:
    """Admit, queue or refuse work under memory and CPU pressure.

    Arguments:
        memory: the most memory the machine (or cgroup) may use when admitting, as bytes
            (``"20GiB"``) or a percent of the effective limit (``"90%"``, above 0).
        rss: the most resident memory this process may have (bytes or percent of limit);
            also the hard limit for in-flight enforcement (``on_breach``, :meth:`check`).
        level: refuse while the Monitor's verdict is at or above this level (default
            ``Level.CRITICAL``; needs a Monitor).
        max_concurrent: at most this many blocks at once.
        reserve: the default reservation per call (bytes, ``"512MiB"``, or ``"auto"`` to
            learn it per guarded function from the observed growth of RSS).
        wait: how long a caller may queue (FIFO) before being refused (default: no wait).
        monitor: the Monitor whose state to read; without one, a snapshot is cached for
            *max_age* (default ``"50ms"``).
        retry_after: seconds (or a duration, ``"2s"``) to suggest when refusing for memory,
            level or unknown numbers (default 1).
        on_breach: ``"cancel"`` cancels an ``async with`` block whose process passes *rss*
            or whose verdict reaches *level* while it runs (it then raises
            ResourceExhausted); the block's own exceptions come out unchanged.
        on_unknown: what to do when a number the guard needs is unknown (``None`` in the
            snapshot) or the Monitor's state is stale or has unknowns: ``"admit"`` (default)
            checks only what is still known and logs a warning once; ``"refuse"`` refuses
            with reason ``"unknown"`` and says what is unknown.
        name: the guard's name in messages and metrics.
        clock: the monotonic clock the Monitor state's age is measured with (default the
            monitor's own clock, else :func:`time.monotonic`; inject one in tests).
    """

    def __init__(
        self,
        memory: int | float | str | None = None,
        rss: int | float | str | None = None,
        level: Level | None = Level.CRITICAL,
        max_concurrent: int | None = None,
        reserve: Reserve = None,
        wait: float | str | None = None,
        *,
        monitor: Monitor | None = None,
        max_age: float | str = "50ms",
        retry_after: float | str = 1.0,
        on_breach: OnBreach = None,
        on_unknown: OnUnknown = "admit",
        name: str = "guard",
        clock: Clock | None = None,
    ) -> None:
        # everything is checked before anything is kept: a bad argument leaves no guard
        memory_limit = _Limit(memory, "memory") if memory is not None else None
        rss_limit = _Limit(rss, "rss") if rss is not None else None
        if level is not None and not isinstance(level, Level):
            raise InvalidType(
                f"level={shown(level)} is not a resguard.Level; expected e.g. "
                f"Level.CRITICAL or None"
            )
        if max_concurrent is not None:
            if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
                raise InvalidType(
                    f"max_concurrent={shown(max_concurrent)} is not a whole number; "
                    f"expected a number >= 1 or None"
                )
            if max_concurrent < 1:
                raise InvalidValue(
                    f"max_concurrent={shown(max_concurrent)} must be >= 1 (or None for no limit)"
                )
        auto = isinstance(reserve, str) and reserve == "auto"
        reserve_bytes = 0 if reserve is None or auto else _check_reserve(reserve)
        wait_s = _check_duration(wait, "wait") if wait is not None else 0.0
        max_age_s = _check_duration(max_age, "max_age")
        retry_after_s = _check_duration(retry_after, "retry_after")
        _check_on_breach(on_breach)
        if not isinstance(on_unknown, str) or on_unknown not in ("admit", "refuse"):
            raise InvalidValue(f"on_unknown={shown(on_unknown)}; expected 'admit' or 'refuse'")
        if not isinstance(name, str):
            raise InvalidType(f"name={shown(name)} is not a string; expected e.g. 'api'")
        if not name:
            raise InvalidValue("name='' is empty; expected e.g. 'api'")
        if monitor is not None:
            from resguard.monitor import Monitor

            if not isinstance(monitor, Monitor):
                raise InvalidType(
                    f"monitor={shown(monitor)} is not a resguard.Monitor; "
                    f"expected a Monitor or None"
                )
        if clock is not None:
            clock = checked_clock(clock)
        if clock is None:
            clock = getattr(monitor, "clock", None) if monitor is not None else None
            clock = clock if callable(clock) else monotonic
        self._memory = memory_limit
        self._rss = rss_limit
        self.level = level
        self.max_concurrent = max_concurrent
        self._auto = auto
        self.reserve_bytes = reserve_bytes
        self.wait_s = wait_s
        self.max_age_s = max_age_s
        self.on_breach = on_breach
        self.on_unknown: OnUnknown = on_unknown
        self.retry_after_s = retry_after_s
        self.name = name
        self.monitor = monitor
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._reserved = 0
        self._queue: deque[_Waiter] = deque()
        self._admitted = 0
        self._refused: dict[str, int] = {}
        self._hold_ema_s = 0.0
        self._learned: dict[str, int] = {}
        self._sampler: Sampler = default_sampler()
        self._cached: Snapshot | None = None
        self._cached_at = -math.inf
        self._cached_generation = _limits_generation
        self._refreshing = False
        self._warned: dict[str, float] = {}
        # what the latest monitor state allows before reservations, computed once per state
        self._budget_state: object = None
        self._budget_bytes = -1  # below any reservation while the state says refuse
        self._fresh_until_s = -math.inf  # the hot path's state is trusted until then
        self._slots = max_concurrent if max_concurrent is not None else 1 << 62
        self._forked = False  # in a forked child: admissions of before the fork may leave
        forks.register(self)

    def _after_fork_in_child(self) -> None:
        # Only the forking thread lives on: the others' admissions and places in the queue
        # will never be given back, and a lock one of them held will never be released.
        self._lock = threading.Lock()
        self._queue = deque()
        self._in_flight = self._reserved = 0
        self._refreshing = False
        self._budget_state = None
        self._forked = True

    # -- reading the state ----------------------------------------------------------------

    def _current(self) -> _View:
        monitor = self.monitor
        if monitor is not None:
            state = monitor.state
            stale, reason = _state_unknown(monitor, state, self._clock())
            unknown = _verdict_unknown(reason)
            if not stale:
                return _View(state.snapshot, state.verdict.level, unknown)
            # The monitor stopped publishing: its verdict is unknown, but the numbers need
            # not be: sample them here (cached for max_age) rather than trust old ones.
            sampler = getattr(monitor, "sampler", None)
            return self._own_view(sampler if isinstance(sampler, Sampler) else None, unknown)
        return self._own_view(None, None)

    def _own_view(self, sampler: Sampler | None, verdict_unknown: str | None) -> _View:
        now = time.monotonic()
        cached = self._cached
        if (
            cached is None
            or now - self._cached_at > self.max_age_s
            or self._cached_generation != _limits_generation
        ):
            try:
                cached = self._refresh(now, sampler or self._sampler)
            except Exception as error:  # sensing must never fail the caller
                return _View(
                    cached,
                    None,
                    verdict_unknown,
                    f"sampling failed: {type(error).__name__}: {error}",
                )
        return _View(cached, None, verdict_unknown)

    def _refresh(self, now: float, sampler: Sampler) -> Snapshot:
        with self._lock:  # one caller refreshes; the others keep the previous snapshot
            if self._refreshing and self._cached is not None:
                return self._cached
            self._refreshing = True
        try:
            generation = _limits_generation
            snap = sampler.sample(children=False)
            self._cached, self._cached_at = snap, now
            self._cached_generation = generation
            return snap
        finally:
            self._refreshing = False

    @property
    def auto_reserve(self) -> bool:
        """Whether reservations are learned per guarded function (``reserve="auto"``)."""
        return self._auto

    def unknown_reason(self) -> str | None:
        """Why the guard cannot fully judge now (the Monitor's verdict is stale or has
        unknowns, a number it needs is unknown, with the fault that left it so), or
        ``None`` when everything it needs is known."""
        view = self._current()
        with self._lock:
            return self._unknowns(view, self.reserve_bytes)

    def _numbers_unknown(self) -> str | None:
        """As :meth:`unknown_reason`, leaving the verdict out (for readiness)."""
        view = self._current()
        view.verdict_unknown = None
        with self._lock:
            return self._unknowns(view, self.reserve_bytes)

    def would_admit(self, reserve: int | None = None) -> bool:
        """Whether a call reserving *reserve* bytes would be admitted at once now (nobody
        queued, room enough); a hint, since another caller may take the room first."""
        reserve = self.reserve_bytes if reserve is None else _check_reserve(reserve)
        if self._queue:
            return False
        view = self._current()
        with self._lock:
            return self._refusal(view, reserve, warn=False) is None

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
            unknown = self._unknowns(view, 1)
            if view.snap is not None and view.sample_failed is None:
                room, _ = self._room(view.snap, need_available=True)
        if unknown is not None and self.on_unknown == "refuse":
            return 0
        return _NO_LIMIT_BYTES if room is None else room

    def _room(self, snap: Snapshot, *, need_available: bool) -> tuple[int | None, list[str]]:
        """The smallest known headroom (``None``: nothing known bounds it) and the numbers
        that bound it but are unknown (lock held)."""
        memory = snap.memory
        reserved = self._reserved
        rooms: list[int] = []
        unknown: list[str] = []
        if need_available:
            if memory.available is None:
                unknown.append("memory.available")
            else:
                rooms.append(memory.available - reserved)
        if self._memory is not None:
            share = self._memory.resolve(memory.limit)
            if share is None:
                unknown.append("memory.limit")
            elif memory.used is None:
                unknown.append("memory.used")
            else:
                rooms.append(share - memory.used - reserved)
        if self._rss is not None:
            rss_limit = self._rss.resolve(memory.limit)
            if rss_limit is None:
                unknown.append("memory.limit")
            elif snap.process.rss is None:
                unknown.append("process.rss")
            else:
                rooms.append(rss_limit - snap.process.rss - reserved)
        return (min(rooms) if rooms else None), unknown

    def _unknowns(self, view: _View, reserve: int) -> str | None:
        """What the guard needs for a call reserving *reserve* but does not know, and why,
        or None (lock held)."""
        found = self._unknown_parts(view, reserve)
        return "; ".join(found.values()) if found else None

    def _unknown_parts(self, view: _View, reserve: int) -> dict[str, str]:
        """As :meth:`_unknowns`: each unknown thing (a key) with its explanation."""
        parts: dict[str, str] = {}
        if view.verdict_unknown is not None and self.level is not None:
            # keyed by kind ("stale", "unknown"), not by the age that changes every call
            kind = view.verdict_unknown.partition("(")[2].partition(":")[0]
            parts[f"verdict {kind}"] = view.verdict_unknown
        needs_numbers = (
            self._memory is not None or self._rss is not None or reserve > 0 or self._reserved > 0
        )
        if view.sample_failed is not None or view.snap is None:
            if needs_numbers:
                parts["sample"] = f"the numbers are unknown ({view.sample_failed})"
        else:
            snap = view.snap
            _, missing = self._room(snap, need_available=reserve > 0 or self._reserved > 0)
            for path in missing:
                fault = snap.fault_for(path)
                parts[path] = f"{path} is unknown" + (f" ({fault})" if fault else "")
        return parts

    def _warn_unknown(self, view: _View, reserve: int) -> None:
        """Log what is unknown once: again only for something newly unknown, or after a
        quiet minute (lock held)."""
        parts = self._unknown_parts(view, reserve)
        now = time.monotonic()
        fresh = [key for key in parts if now - self._warned.get(key, -math.inf) >= _WARN_EVERY_S]
        for key in parts:
            self._warned[key] = now
        if not fresh:
            return
        text = "; ".join(parts.values())
        if self.on_unknown == "admit":
            _logger.warning(
                "%s admits although %s (on_unknown='admit'; logged once)", self.name, text
            )
        else:
            _logger.warning(
                "%s refuses while %s (on_unknown='refuse'; logged once)", self.name, text
            )

    def _refusal(self, view: _View, reserve: int, *, warn: bool = True) -> ResourceExhausted | None:
        """Why a call reserving *reserve* bytes may not start now, or None (lock held)."""
        snap, level = view.snap, view.level
        if self.level is not None and level is not None and level >= self.level:
            return self._refuse(
                "level", f"the verdict is {level.name}", reserve, snap, self.retry_after_s
            )
        unknown = self._unknowns(view, reserve)
        if unknown is not None:
            if warn:
                self._warn_unknown(view, reserve)
            if self.on_unknown == "refuse":
                return self._refuse("unknown", unknown, reserve, snap, self.retry_after_s)
        if self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
            return self._refuse(
                "concurrency",
                f"{self._in_flight} of {self.max_concurrent} calls in flight",
                reserve,
                snap,
                max(self._hold_ema_s, 0.01),
            )
        if snap is None or view.sample_failed is not None:
            return None  # nothing current to check against, and on_unknown says admit
        memory = snap.memory
        rss = snap.process.rss
        if self._rss is not None:
            rss_limit = self._rss.resolve(memory.limit)
            if (
                rss_limit is not None
                and rss is not None
                and rss + self._reserved + reserve > rss_limit
            ):
                return self._refuse(
                    "rss",
                    f"process RSS {format_bytes(rss)} + reserved "
                    f"{format_bytes(self._reserved + reserve)} exceeds {format_bytes(rss_limit)}",
                    reserve,
                    snap,
                    self.retry_after_s,
                )
        room, _ = self._room(snap, need_available=reserve > 0 or self._reserved > 0)
        share = self._memory.resolve(memory.limit) if self._memory is not None else None
        over_share = share is not None and memory.used is not None and memory.used > share
        if (room is not None and room < reserve) or over_share:
            # "reservation" when the call would fit but for what others reserved
            fits_alone = room is not None and room + self._reserved >= reserve
            reason = "reservation" if fits_alone and not over_share else "memory"
            return self._refuse(
                reason,
                f"{format_bytes(max(room or 0, 0))} of headroom for "
                f"{format_bytes(reserve)} ({_bytes_or_unknown(memory.used)} used of "
                f"{_bytes_or_unknown(memory.limit)}, {format_bytes(self._reserved)} reserved)",
                reserve,
                snap,
                self.retry_after_s,
            )
        return None

    def _refuse(
        self, reason: str, detail: str, reserve: int, snap: Snapshot | None, retry_after_s: float
    ) -> ResourceExhausted:
        memory = snap.memory if snap is not None else None
        return ResourceExhausted(
            f"{self.name} refused: {detail}",
            reason=reason,
            retry_after=retry_after_s,
            numbers={
                "used_bytes": memory.used if memory else None,
                "limit_bytes": memory.limit if memory else None,
                "available_bytes": memory.available if memory else None,
                "rss_bytes": snap.process.rss if snap is not None else None,
                "reserved_bytes": self._reserved,
                "reserve_bytes": reserve,
                "in_flight": self._in_flight,
            },
        )

    # -- admission ------------------------------------------------------------------------

    def _try_acquire(self, reserve: int, queued: _Waiter | None) -> ResourceExhausted | None:
        view = self._current()
        with self._lock:
            if self._queue and self._queue[0] is not queued:
                return self._refuse(
                    "queued", "others are waiting first", reserve, view.snap, self.retry_after_s
                )
            refusal = self._refusal(view, reserve)
            if refusal is None:
                if queued is not None:
                    self._queue.popleft()
                self._in_flight += 1
                self._reserved += reserve
                self._admitted += 1
                if self._queue:
                    self._queue[0].wake()  # the next in line may fit too
            return refusal

    def _count_refusal(self, error: ResourceExhausted) -> ResourceExhausted:
        with self._lock:
            self._refused[error.reason] = self._refused.get(error.reason, 0) + 1
        return error

    def acquire(self, reserve: int | None = None, wait_s: float | None = None) -> int:
        """Admit one call (blocking up to *wait_s* in FIFO order); returns the reservation
        to pass to :meth:`release`. Prefer ``with guard:`` or :meth:`admit`."""
        reserve, wait_s = self._check_call(reserve, wait_s)
        waiter, deadline, wait_s = self._first_try(reserve, wait_s)
        if waiter is None:
            return reserve
        try:
            while (remaining := self._try_again(waiter, deadline, wait_s)) is not None:
                waiter.wait_thread(min(remaining, self._poll_s()))
            return reserve
        except BaseException:
            self._leave_queue(waiter)
            raise

    async def acquire_async(self, reserve: int | None = None, wait_s: float | None = None) -> int:
        """:meth:`acquire` for anyio tasks (asyncio or trio); waiting never blocks the loop."""
        import anyio

        reserve, wait_s = self._check_call(reserve, wait_s)
        waiter, deadline, wait_s = self._first_try(reserve, wait_s)
        if waiter is None:
            return reserve
        try:
            while True:
                event = waiter.arm()
                remaining = self._try_again(waiter, deadline, wait_s)
                if remaining is None:
                    return reserve
                if waiter.woken:
                    continue
                # The head of the queue polls (memory may free up at any time); the others
                # sleep until the one before them wakes them, from whichever thread.
                head = bool(self._queue) and self._queue[0] is waiter
                with anyio.move_on_after(min(remaining, _HEAD_POLL_S if head else _SAFETY_POLL_S)):
                    await event.wait()
        except BaseException:
            self._leave_queue(waiter)
            raise

    def _check_call(self, reserve: int | None, wait_s: float | None) -> tuple[int, float]:
        reserve = self.reserve_bytes if reserve is None else _check_reserve(reserve)
        wait_s = self.wait_s if wait_s is None else _check_duration(wait_s, "wait_s")
        return reserve, wait_s

    def _first_try(self, reserve: int, wait_s: float) -> tuple[_Waiter | None, float, float]:
        """Admit at once, raise when the caller may not wait, or queue the caller: returns
        (its place in the queue or None when admitted, the deadline, the wait)."""
        refusal = self._try_acquire(reserve, None)
        if refusal is None:
            return None, 0.0, wait_s
        if wait_s <= 0:
            raise self._count_refusal(refusal)
        waiter = _Waiter(reserve)
        with self._lock:
            self._queue.append(waiter)
        return waiter, time.monotonic() + wait_s, wait_s

    def _try_again(self, waiter: _Waiter, deadline: float, wait_s: float) -> float | None:
        """Admit a queued caller (None), or say how long it may still wait; raises at the
        deadline."""
        refusal = self._try_acquire(waiter.reserve, waiter)
        if refusal is None:
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._count_refusal(self._timed_out(refusal, wait_s))
        return remaining

    def _timed_out(self, refusal: ResourceExhausted, wait_s: float) -> ResourceExhausted:
        error = ResourceExhausted(
            f"{refusal} (after waiting {wait_s:g}s)",
            reason="timeout",
            retry_after=refusal.retry_after,
            numbers=refusal.numbers,
        )
        error.numbers["waited_s"] = wait_s
        error.numbers["cause"] = refusal.reason
        return error

    def _leave_queue(self, waiter: _Waiter) -> None:
        with self._lock:
            try:
                self._queue.remove(waiter)
            except ValueError:
                return
            if self._queue:
                self._queue[0].wake()

    def _poll_s(self) -> float:
        monitor = self.monitor
        return min(monitor.interval_s, 0.05) if monitor is not None else _POLL_S

    def release(self, reserve: int, held_s: float | None = None) -> None:
        """Give back one admission and its reservation."""
        if type(reserve) is not int:  # the hot path: one cheap check, no parsing
            raise InvalidType(
                f"reserve={shown(reserve)} is not a whole number of bytes; expected "
                f"what acquire() returned"
            )
        if held_s is not None and not (type(held_s) is float and 0.0 <= held_s < math.inf):
            _check_held(held_s)  # one NaN would make every later retry_after NaN
        with self._lock:
            if self._in_flight <= 0 or not 0 <= reserve <= self._reserved:
                if self._forked:  # an admission from before the fork leaving the child
                    self._in_flight = max(self._in_flight - 1, 0)
                    self._reserved = max(self._reserved - reserve, 0)
                    return
                raise InvalidState(
                    f"{self.name}: release(reserve={shown(reserve)}) without a matching acquire() "
                    f"({self._in_flight} in flight, {self._reserved} bytes reserved)"
                )
            self._in_flight -= 1
            self._reserved -= reserve
            if held_s is not None:
                self._hold_ema_s += 0.1 * (held_s - self._hold_ema_s)
            if self._queue:
                self._queue[0].wake()

    # -- context managers and decorators --------------------------------------------------

    def _update_budget(self, monitor: Monitor, state: State, now_s: float) -> None:
        _, reason = _state_unknown(monitor, state, now_s)
        snap = state.snapshot
        view = _View(snap, state.verdict.level, _verdict_unknown(reason))
        with self._lock:
            reserved = self._reserved
            in_flight = self._in_flight
            self._reserved = self._in_flight = 0
            try:
                refusal = self._refusal(view, 0, warn=False)
                room, _ = self._room(snap, need_available=True)
                unknown = self._unknowns(view, max(self.reserve_bytes, 1))
            finally:
                self._reserved, self._in_flight = reserved, in_flight
            if unknown is not None and self.on_unknown == "refuse":
                self._budget_bytes = -1  # the slow path refuses, saying what is unknown
            elif refusal is not None and refusal.reason != "concurrency":
                self._budget_bytes = -1
            else:  # what is known bounds the hot path; an unknown bound is left out
                self._budget_bytes = _NO_LIMIT_BYTES if room is None else room
                if unknown is not None:
                    self._warn_unknown(view, max(self.reserve_bytes, 1))
            stale_after_s = getattr(monitor, "stale_after_s", None)
            if stale_after_s is None:
                stale_after_s = max(1.0, 5 * monitor.relaxed_interval_s)
            self._fresh_until_s = state.snapshot.monotonic + stale_after_s
            self._budget_state = state

    def _admit_at_once(self) -> bool:
        """The hot path of ``with guard:`` and ``async with guard:``: admit with one read of
        the monitor's state and one lock, no I/O; False when the full path must decide."""
        monitor = self.monitor
        if monitor is None or self._auto:
            return False
        state = monitor.state
        now_s = self._clock()
        if state is not self._budget_state:
            self._update_budget(monitor, state, now_s)
        reserve = self.reserve_bytes
        with self._lock:
            if (
                self._in_flight < self._slots
                and now_s <= self._fresh_until_s
                and self._budget_bytes - self._reserved >= reserve
                and not self._queue
            ):
                self._in_flight += 1
                self._reserved += reserve
                self._admitted += 1
                return True
        return False

    def __enter__(self) -> Guard:
        if not self._admit_at_once():
            self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        reserve = self.reserve_bytes
        with self._lock:  # release() without its parsing: this reservation is the guard's own
            if self._in_flight > 0 and self._reserved >= reserve:
                self._in_flight -= 1
                self._reserved -= reserve
                if self._queue:
                    self._queue[0].wake()
                return
        self.release(reserve)  # a block left without entering it, or one from before a fork

    async def __aenter__(self) -> Guard:
        if not self._admit_at_once():
            await self.acquire_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def admit(
        self,
        reserve: Reserve = None,
        wait: float | str | None = None,
        on_breach: OnBreach = None,
        *,
        key: str | None = None,
    ) -> Admission:
        """A context manager (``with`` or ``async with``) for one call with its own
        reservation and wait, e.g. ``guard.admit(reserve="1GiB", wait="5s")``."""
        _check_on_breach(on_breach)
        return Admission(self, reserve, wait, on_breach or self.on_breach, key)

    @overload
    def __call__(self, fn: _F) -> _F: ...
    @overload
    def __call__(
        self, fn: None = None, *, reserve: Reserve = None, wait: float | str | None = None
    ) -> Callable[[_F], _F]: ...

    def __call__(
        self, fn: _F | None = None, *, reserve: Reserve = None, wait: float | str | None = None
    ) -> _F | Callable[[_F], _F]:
        """Guard a sync or async function: ``@guard`` or ``@guard(reserve="1GiB")``."""
        # checked now, at decoration, not at the first call
        if reserve is not None and reserve != "auto":
            _check_reserve(reserve)
        if wait is not None:
            _check_duration(wait, "wait")
        if fn is None:
            return lambda f: self._wrap(f, reserve, wait)
        return self._wrap(fn, reserve, wait)

    def _wrap(self, fn: _F, reserve: Reserve, wait: float | str | None) -> _F:
        if not callable(fn):
            raise InvalidType(f"{shown(fn)} is not a function to guard")
        key = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_guarded(*args: Any, **kwargs: Any) -> Any:
                async with self.admit(reserve, wait, key=key):
                    return await fn(*args, **kwargs)

            return async_guarded  # type: ignore[return-value]

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with self.admit(reserve, wait, key=key):
                return fn(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    # -- in-flight ------------------------------------------------------------------------

    def breach(self) -> ResourceExhausted | None:
        """Why running work should stop now (the process passed the ``rss`` limit or the
        verdict reached the guard's level), or ``None``. Unknown numbers and a stale state
        never stop running work (``on_unknown`` is about admission only)."""
        view = self._current()
        snap, level = view.snap, view.level
        if self._rss is not None and snap is not None and view.sample_failed is None:
            limit = self._rss.resolve(snap.memory.limit)
            rss = snap.process.rss
            if limit is not None and rss is not None and rss > limit:
                return self._refuse(
                    "rss",
                    f"process RSS {format_bytes(rss)} passed {format_bytes(limit)}",
                    0,
                    snap,
                    self.retry_after_s,
                )
        if self.level is not None and level is not None and level >= self.level:
            return self._refuse(
                "level", f"the verdict is {level.name}", 0, snap, self.retry_after_s
            )
        return None

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
            _logger.debug("%s could not measure RSS for reserve='auto': %s", self.name, error)
            return None

    def stats(self) -> GuardStats:
        """Counters for metrics and dashboards (``refused_by_reason`` has the reasons that
        occurred; all possible ones are :data:`REFUSAL_REASONS`)."""
        with self._lock:
            return GuardStats(
                self.name,
                self._admitted,
                sum(self._refused.values()),
                dict(self._refused),
                self._in_flight,
                self._reserved,
                len(self._queue),
            )


def _check_held(held_s: object) -> None:
    """*held_s* for :meth:`Guard.release`: seconds the call held its admission."""
    if isinstance(held_s, bool) or not isinstance(held_s, (int, float)):
        raise InvalidType(
            f"held_s={shown(held_s)} is not a number of seconds; expected e.g. 0.25 or None"
        )
    try:
        ok = 0 <= float(held_s) < math.inf
    except OverflowError:  # 10**400
        ok = False
    if not ok:
        raise InvalidValue(
            f"held_s={shown(held_s)} is not a finite number of seconds >= 0; "
            "expected e.g. 0.25 or None"
        )


def _verdict_unknown(reason: str | None) -> str | None:
    return None if reason is None else f"the monitor's verdict is unknown ({reason})"


def _bytes_or_unknown(value: int | None) -> str:
    return "unknown" if value is None else format_bytes(value)


def _check_on_breach(on_breach: object) -> None:
    if on_breach is not None and (not isinstance(on_breach, str) or on_breach != "cancel"):
        raise InvalidValue(f"on_breach={shown(on_breach)}; expected None or 'cancel'")


class Admission:
    """One admission through a guard (from :meth:`Guard.admit`); ``with`` or ``async with``.

    It may be entered once at a time; its reservation is released on every way out of the
    block (a return, an exception, a cancellation, a breach).
    """

    __slots__ = (
        "_auto",
        "_entered",
        "_guard",
        "_key",
        "_on_breach",
        "_reserve",
        "_rss_before",
        "_started",
        "_task_group",
        "_wait_s",
        "breached",
        "reserved",
    )

    def __init__(
        self,
        guard: Guard,
        reserve: Reserve,
        wait: float | str | None,
        on_breach: OnBreach,
        key: str | None,
    ) -> None:
        if not isinstance(guard, Guard):
            raise InvalidType(f"guard={shown(guard)} is not a resguard.Guard")
        if key is not None and not isinstance(key, str):
            raise InvalidType(f"key={shown(key)} is not a string")
        _check_on_breach(on_breach)
        auto = (isinstance(reserve, str) and reserve == "auto") or (reserve is None and guard._auto)
        self._key = key or ""
        if auto:
            reserve_bytes = guard.learned_reserve_bytes(self._key)
        elif reserve is None:
            reserve_bytes = guard.reserve_bytes
        else:
            reserve_bytes = _check_reserve(reserve)
        self._wait_s = _check_duration(wait, "wait") if wait is not None else None
        self._guard = guard
        self._auto = auto
        self._reserve = reserve_bytes
        self._on_breach = on_breach
        self._started = 0.0
        self._rss_before: int | None = None
        self._task_group: Any = None
        self._entered = False
        self.reserved = 0
        self.breached: ResourceExhausted | None = None

    @property
    def reserve_bytes(self) -> int:
        """The reservation this admission asks for (learned, given or the guard's)."""
        return self._reserve

    def _claim(self) -> None:
        if self._entered:
            raise InvalidState(
                "this admission is already entered; call guard.admit() again for another block"
            )
        self._entered = True
        self.breached = None

    def _begin(self) -> None:
        self._started = time.monotonic()
        if self._auto:
            self._rss_before = self._guard._rss_now()

    def _end(self) -> None:
        guard = self._guard
        try:
            if self._auto and self._rss_before is not None:
                rss_after = guard._rss_now()
                if rss_after is not None:
                    guard._learn(self._key, max(rss_after - self._rss_before, 0))
        finally:
            self._entered = False
            guard.release(self.reserved, time.monotonic() - self._started)

    def __enter__(self) -> Admission:
        self._claim()
        try:
            self.reserved = self._guard.acquire(self._reserve, self._wait_s)
        except BaseException:
            self._entered = False
            raise
        self._begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end()

    async def __aenter__(self) -> Admission:
        self._claim()
        try:
            self.reserved = await self._guard.acquire_async(self._reserve, self._wait_s)
        except BaseException:
            self._entered = False
            raise
        self._begin()
        if self._on_breach == "cancel":
            import anyio

            try:
                self._task_group = anyio.create_task_group()
                await self._task_group.__aenter__()
                self._task_group.start_soon(self._watch)
            except BaseException:
                self._task_group = None
                self._end()
                raise
        return self

    async def _watch(self) -> None:
        import anyio

        guard = self._guard
        while True:
            try:
                breach = guard.breach()
            except Exception as error:  # a failing sample must not fail the block
                _logger.debug("%s could not check for a breach: %s", guard.name, error)
                breach = None
            if breach is not None:
                self.breached = breach
                self._task_group.cancel_scope.cancel()
                return
            await anyio.sleep(guard._poll_s())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        group, self._task_group = self._task_group, None
        swallowed = False
        try:
            if group is not None:
                import anyio

                group.cancel_scope.cancel()
                if exc is None or isinstance(exc, anyio.get_cancelled_exc_class()):
                    # a cancellation is the group's own (a breach) or comes from outside:
                    # the group's scope decides which, and swallows only its own
                    swallowed = bool(await group.__aexit__(exc_type, exc, tb))
                else:
                    # the block raised: stop the watch without handing it the error, which
                    # would come out wrapped in an ExceptionGroup instead of as it was
                    await group.__aexit__(None, None, None)
        finally:
            self._end()
        # a breach replaces only the cancellation it caused (or a block that ended anyway);
        # the block's own exceptions and a cancellation from outside come out unchanged
        if self.breached is not None and (exc is None or swallowed):
            raise self._guard._count_refusal(self.breached)
        return None


def _process_usage_bytes(kind: str) -> int | None:
    """What the process already uses of the rlimit *kind* (VmData or VmSize), if known."""
    field = "VmData:" if kind == "data" else "VmSize:"
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def limit_self(memory: int | str, *, kind: Literal["as", "data"] = "data") -> int:
    """Set this process's soft RLIMIT_DATA (or RLIMIT_AS) so that a runaway allocation
    raises MemoryError instead of getting the process OOM-killed; returns the bytes set.

    ``"80%"`` means 80 % of the effective memory limit as it is without this process's own
    limit of that *kind*, so calling it again sets the same limit instead of 80 % of the
    last one. RLIMIT_DATA counts heap and
    anonymous mappings, which is what a runaway Python allocation grows; RLIMIT_AS also
    counts reserved address space (thread stacks, mapped files) and is stricter.

    The limit must leave room to run: it is refused below what the process already uses of
    it (``VmData``, or ``VmSize`` for ``"as"``) plus 32 MiB, since the process would fail at
    its next allocation. It takes effect at once for every Sampler in the process (their
    cached limits are dropped) and every Guard's cached snapshot, so the next admission
    already sees it; a Monitor's state shows it from its next sample. Every argument is
    checked before the limit is set: a refused call changes nothing.
    """
    if not isinstance(kind, str) or kind not in ("as", "data"):
        raise InvalidValue(f"kind={shown(kind)}; expected 'as' or 'data'")
    if memory is None:
        raise InvalidType("memory=None is not a size; expected e.g. '2GiB' or '80%'")
    wanted = _Limit(memory, "memory")
    limit: int | None
    if wanted.fraction is None:
        limit = wanted.bytes
    else:
        own = "RLIMIT_AS" if kind == "as" else "RLIMIT_DATA"
        limit = wanted.resolve(default_sampler()._limit_without_rlimit(own))
        if limit is None:
            raise InvalidState(
                f"memory={shown(memory)} is a percent of the effective memory "
                f"limit, which is unknown now; give a size, e.g. '2GiB'"
            )
    used = _process_usage_bytes(kind)
    floor = (used if used is not None else 0) + _SELF_LIMIT_MARGIN_BYTES
    if limit < floor:
        counted = "VmData" if kind == "data" else "VmSize"
        uses = (
            f"already uses {format_bytes(used)} of it ({counted})"
            if used is not None
            else "needs some to run"
        )
        raise InvalidValue(
            f"memory={shown(memory)} is {format_bytes(limit)}, too small to run on: this process "
            f"{uses}; expected at least {format_bytes(floor)}"
        )
    which = resource.RLIMIT_AS if kind == "as" else resource.RLIMIT_DATA
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY and limit > hard:
        raise InvalidValue(
            f"memory={shown(memory)} is above the hard limit of {format_bytes(hard)}"
        )
    resource.setrlimit(which, (limit, hard))
    global _limits_generation
    _limits_generation += 1
    invalidate_limits()
    return limit
