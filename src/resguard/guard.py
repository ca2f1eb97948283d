"""Guards: admit, queue or refuse work by memory, RSS, verdict level and concurrency.

A :class:`Guard` decides on the hot path without I/O: it reads the Monitor's latest state
(one attribute read) or, without a Monitor, a cached snapshot refreshed at most every
*max_age*. Callers may declare what they will need (a *reservation*); admission checks
``headroom − reserved_in_flight ≥ reserve`` so that many requests arriving together do not
all see the same free memory and all get in. Refusal raises
:class:`~resguard.ResourceExhausted` with a reason, the numbers and ``retry_after``.
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

from resguard._errors import InvalidType, InvalidValue, ResourceExhausted
from resguard._modules.render import ValueMixin
from resguard.rules import Level
from resguard.snapshot import Sampler, Snapshot, default_sampler
from resguard.units import format_bytes, is_percent, parse_bytes, parse_duration, parse_percent

if TYPE_CHECKING:
    from resguard.monitor import Monitor

__all__ = ["Admission", "Guard", "GuardStats", "limit_self"]

_F = TypeVar("_F", bound=Callable[..., Any])
Reserve = int | float | str | None
OnBreach = Literal["cancel"] | None
_POLL_S = 0.01
_HEAD_POLL_S = 0.005


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


class _Limit:
    """A size given either in bytes or as a percent of the effective memory limit."""

    __slots__ = ("bytes", "fraction", "text")

    def __init__(self, value: int | float | str, what: str) -> None:
        self.text = value
        if is_percent(value):
            self.fraction: float | None = parse_percent(value) / 100
            self.bytes = 0
        else:
            self.fraction = None
            self.bytes = parse_bytes(value)
        if self.fraction is None and self.bytes <= 0:
            raise InvalidValue(f"{what}={value!r} must be above zero")

    def resolve(self, limit_bytes: int) -> int:
        return self.bytes if self.fraction is None else int(self.fraction * limit_bytes)


class _Waiter:
    """A caller in the FIFO queue. Thread waiters block on ``event``; an async waiter
    sleeps on ``async_event``, which only its own event loop's thread may set."""

    __slots__ = ("async_event", "event", "reserve", "thread_id")

    def __init__(self, reserve: int) -> None:
        self.reserve = reserve
        self.event = threading.Event()
        self.async_event: Any = None
        self.thread_id = threading.get_ident()

    def wake(self) -> None:
        self.event.set()
        if self.async_event is not None and threading.get_ident() == self.thread_id:
            self.async_event.set()


class Guard:
    """Admit, queue or refuse work under memory and CPU pressure.

    Arguments:
        memory: the most memory the machine (or cgroup) may use when admitting, as bytes
            (``"20GiB"``) or a percent of the effective limit (``"90%"``).
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
        retry_after: seconds to suggest when refusing for memory or level (default 1).
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
        retry_after: float = 1.0,
        on_breach: OnBreach = None,
        name: str = "guard",
    ) -> None:
        self._memory = _Limit(memory, "memory") if memory is not None else None
        self._rss = _Limit(rss, "rss") if rss is not None else None
        if level is not None and not isinstance(level, Level):
            raise InvalidType(f"level={level!r} is not a resguard.Level")
        self.level = level
        if max_concurrent is not None and (isinstance(max_concurrent, bool) or
                                           not isinstance(max_concurrent, int) or
                                           max_concurrent < 1):
            raise InvalidValue(f"max_concurrent={max_concurrent!r} must be a whole number >= 1")
        self.max_concurrent = max_concurrent
        self._auto = reserve == "auto"
        self.reserve_bytes = 0 if reserve is None or self._auto else parse_bytes(reserve)
        self.wait_s = parse_duration(wait) if wait is not None else 0.0
        self.max_age_s = parse_duration(max_age)
        if on_breach not in (None, "cancel"):
            raise InvalidValue(f"on_breach={on_breach!r}; expected None or 'cancel'")
        self.on_breach = on_breach
        self.retry_after_s = float(retry_after)
        self.name = name
        self.monitor = monitor
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
        self._refreshing = False
        # what the latest monitor state allows before reservations, computed once per state
        self._budget_state: object = None
        self._budget_bytes = -1  # below any reservation while the state says refuse
        self._slots = max_concurrent if max_concurrent is not None else 1 << 62

    # -- reading the state ----------------------------------------------------------------

    def _current(self) -> tuple[Snapshot, Level | None]:
        monitor = self.monitor
        if monitor is not None:
            state = monitor.state
            return state.snapshot, state.verdict.level
        now = time.monotonic()
        cached = self._cached
        if cached is None or now - self._cached_at > self.max_age_s:
            cached = self._refresh(now)
        return cached, None

    def _refresh(self, now: float) -> Snapshot:
        with self._lock:  # one caller refreshes; the others keep the previous snapshot
            if self._refreshing and self._cached is not None:
                return self._cached
            self._refreshing = True
        try:
            snap = self._sampler.sample(children=False)
            self._cached, self._cached_at = snap, now
            return snap
        finally:
            self._refreshing = False

    @property
    def auto_reserve(self) -> bool:
        """Whether reservations are learned per guarded function (``reserve="auto"``)."""
        return self._auto

    def would_admit(self, reserve: int | None = None) -> bool:
        """Whether a call reserving *reserve* bytes would be admitted at once now (nobody
        queued, room enough); a hint, since another caller may take the room first."""
        reserve = self.reserve_bytes if reserve is None else reserve
        if self._queue:
            return False
        snap, level = self._current()
        with self._lock:
            return self._refusal(snap, level, reserve) is None

    def headroom_bytes(self) -> int:
        """Memory a new reservation could take now: the guard's headroom minus what is
        already reserved in flight (no I/O with a Monitor)."""
        snap, _ = self._current()
        return self._headroom(snap)

    def _headroom(self, snap: Snapshot) -> int:
        memory = snap.memory
        headroom = memory.available - self._reserved
        if self._memory is not None:
            headroom = min(headroom, self._memory.resolve(memory.limit) - memory.used -
                           self._reserved)
        if self._rss is not None:
            headroom = min(headroom, self._rss.resolve(memory.limit) - snap.process.rss -
                           self._reserved)
        return headroom

    def _refusal(self, snap: Snapshot, level: Level | None,
                 reserve: int) -> ResourceExhausted | None:
        """Why a call reserving *reserve* bytes may not start now, or None (lock held)."""
        if self.level is not None and level is not None and level >= self.level:
            return self._refuse("level", f"the verdict is {level.name}", reserve, snap,
                                self.retry_after_s)
        if self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
            return self._refuse("concurrency",
                                f"{self._in_flight} of {self.max_concurrent} calls in flight",
                                reserve, snap, max(self._hold_ema_s, 0.01))
        memory = snap.memory
        if self._rss is not None:
            rss_limit = self._rss.resolve(memory.limit)
            if snap.process.rss + self._reserved + reserve > rss_limit:
                return self._refuse(
                    "rss", f"process RSS {format_bytes(snap.process.rss)} + reserved "
                    f"{format_bytes(self._reserved + reserve)} exceeds {format_bytes(rss_limit)}",
                    reserve, snap, self.retry_after_s)
        over_share = (self._memory is not None
                      and memory.used > self._memory.resolve(memory.limit))
        if self._headroom(snap) < reserve or over_share:
            reason = "reservation" if self._reserved else "memory"
            return self._refuse(
                reason, f"{format_bytes(max(self._headroom(snap), 0))} of headroom for "
                f"{format_bytes(reserve)} ({format_bytes(memory.used)} used of "
                f"{format_bytes(memory.limit)}, {format_bytes(self._reserved)} reserved)",
                reserve, snap, self.retry_after_s)
        return None

    def _refuse(self, reason: str, detail: str, reserve: int, snap: Snapshot,
                retry_after_s: float) -> ResourceExhausted:
        return ResourceExhausted(
            f"{self.name} refused: {detail}", reason=reason, retry_after=retry_after_s,
            numbers={"used_bytes": snap.memory.used, "limit_bytes": snap.memory.limit,
                     "available_bytes": snap.memory.available, "rss_bytes": snap.process.rss,
                     "reserved_bytes": self._reserved, "reserve_bytes": reserve,
                     "in_flight": self._in_flight})

    # -- admission ------------------------------------------------------------------------

    def _try_acquire(self, reserve: int, queued: _Waiter | None) -> ResourceExhausted | None:
        snap, level = self._current()
        with self._lock:
            if self._queue and self._queue[0] is not queued:
                return self._refuse("queued", "others are waiting first", reserve, snap,
                                    self.retry_after_s)
            refusal = self._refusal(snap, level, reserve)
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
        reserve = self.reserve_bytes if reserve is None else reserve
        waiter, deadline, wait_s = self._first_try(reserve, wait_s)
        if waiter is None:
            return reserve
        try:
            while (remaining := self._try_again(waiter, deadline, wait_s)) is not None:
                waiter.event.wait(min(remaining, self._poll_s()))
                waiter.event.clear()
            return reserve
        except BaseException:
            self._leave_queue(waiter)
            raise

    async def acquire_async(self, reserve: int | None = None, wait_s: float | None = None) -> int:
        """:meth:`acquire` for anyio tasks (asyncio or trio); waiting never blocks the loop."""
        import anyio

        reserve = self.reserve_bytes if reserve is None else reserve
        waiter, deadline, wait_s = self._first_try(reserve, wait_s)
        if waiter is None:
            return reserve
        try:
            while (remaining := self._try_again(waiter, deadline, wait_s)) is not None:
                if waiter.event.is_set():  # woken from another thread
                    waiter.event.clear()
                    continue
                # The head of the queue polls (memory may free up at any time); the others
                # sleep until the one before them leaves, with a slow safety net for
                # wake-ups that come from other threads.
                head = bool(self._queue) and self._queue[0] is waiter
                waiter.async_event = anyio.Event()
                with anyio.move_on_after(min(remaining, _HEAD_POLL_S if head else 1.0)):
                    await waiter.async_event.wait()
            return reserve
        except BaseException:
            self._leave_queue(waiter)
            raise

    def _first_try(self, reserve: int,
                   wait_s: float | None) -> tuple[_Waiter | None, float, float]:
        """Admit at once, raise when the caller may not wait, or queue the caller: returns
        (its place in the queue or None when admitted, the deadline, the wait)."""
        wait_s = self.wait_s if wait_s is None else wait_s
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
        error = ResourceExhausted(f"{refusal} (after waiting {wait_s:g}s)", reason=refusal.reason,
                                  retry_after=refusal.retry_after, numbers=refusal.numbers)
        error.numbers["waited_s"] = wait_s
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
        with self._lock:
            self._in_flight -= 1
            self._reserved -= reserve
            if held_s is not None:
                self._hold_ema_s += 0.1 * (held_s - self._hold_ema_s)
            if self._queue:
                self._queue[0].wake()

    # -- context managers and decorators --------------------------------------------------

    def _update_budget(self, state: Any) -> None:
        snap, level = state.snapshot, state.verdict.level
        with self._lock:
            reserved = self._reserved
            in_flight = self._in_flight
            self._reserved = self._in_flight = 0
            try:
                refusal = self._refusal(snap, level, 0)
                self._budget_bytes = self._headroom(snap)
            finally:
                self._reserved, self._in_flight = reserved, in_flight
            if refusal is not None and refusal.reason != "concurrency":
                self._budget_bytes = -1
            self._budget_state = state

    def __enter__(self) -> Guard:
        monitor = self.monitor
        if monitor is not None and not self._auto:  # the hot path: no I/O, one lock
            state = monitor.state
            if state is not self._budget_state:
                self._update_budget(state)
            reserve = self.reserve_bytes
            with self._lock:
                if (self._in_flight < self._slots
                        and self._budget_bytes - self._reserved >= reserve
                        and not self._queue):
                    self._in_flight += 1
                    self._reserved += reserve
                    self._admitted += 1
                    return self
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self._in_flight -= 1
            self._reserved -= self.reserve_bytes
            if self._queue:
                self._queue[0].wake()

    async def __aenter__(self) -> Guard:
        await self.acquire_async()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release(self.reserve_bytes)

    def admit(self, reserve: Reserve = None, wait: float | str | None = None,
              on_breach: OnBreach = None, *, key: str | None = None) -> Admission:
        """A context manager (``with`` or ``async with``) for one call with its own
        reservation and wait, e.g. ``guard.admit(reserve="1GiB", wait="5s")``."""
        return Admission(self, reserve, wait, on_breach or self.on_breach, key)

    @overload
    def __call__(self, fn: _F) -> _F: ...
    @overload
    def __call__(self, fn: None = None, *, reserve: Reserve = None,
                 wait: float | str | None = None) -> Callable[[_F], _F]: ...

    def __call__(self, fn: _F | None = None, *, reserve: Reserve = None,
                 wait: float | str | None = None) -> _F | Callable[[_F], _F]:
        """Guard a sync or async function: ``@guard`` or ``@guard(reserve="1GiB")``."""
        if fn is None:
            return lambda f: self._wrap(f, reserve, wait)
        return self._wrap(fn, reserve, wait)

    def _wrap(self, fn: _F, reserve: Reserve, wait: float | str | None) -> _F:
        key = f"{fn.__module__}.{fn.__qualname__}"
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
        verdict reached the guard's level), or ``None``."""
        snap, level = self._current()
        if self._rss is not None:
            limit = self._rss.resolve(snap.memory.limit)
            if snap.process.rss > limit:
                return self._refuse("rss", f"process RSS {format_bytes(snap.process.rss)} "
                                    f"passed {format_bytes(limit)}", 0, snap, self.retry_after_s)
        if self.level is not None and level is not None and level >= self.level:
            return self._refuse("level", f"the verdict is {level.name}", 0, snap,
                                self.retry_after_s)
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

    def stats(self) -> GuardStats:
        """Counters for metrics and dashboards."""
        with self._lock:
            return GuardStats(self.name, self._admitted, sum(self._refused.values()),
                              dict(self._refused), self._in_flight, self._reserved,
                              len(self._queue))


class Admission:
    """One admission through a guard (from :meth:`Guard.admit`); ``with`` or ``async with``."""

    __slots__ = ("_auto", "_guard", "_key", "_on_breach", "_reserve", "_rss_before",
                 "_started", "_task_group", "_wait_s", "breached", "reserved")

    def __init__(self, guard: Guard, reserve: Reserve, wait: float | str | None,
                 on_breach: OnBreach, key: str | None) -> None:
        self._guard = guard
        self._auto = reserve == "auto" or (reserve is None and guard._auto)
        self._key = key or ""
        if self._auto:
            self._reserve = guard.learned_reserve_bytes(self._key)
        elif reserve is None:
            self._reserve = guard.reserve_bytes
        else:
            self._reserve = parse_bytes(reserve)
        self._wait_s = parse_duration(wait) if wait is not None else None
        if on_breach not in (None, "cancel"):
            raise InvalidValue(f"on_breach={on_breach!r}; expected None or 'cancel'")
        self._on_breach = on_breach
        self._started = 0.0
        self._rss_before = 0
        self._task_group: Any = None
        self.reserved = 0
        self.breached: ResourceExhausted | None = None

    @property
    def reserve_bytes(self) -> int:
        """The reservation this admission asks for (learned, given or the guard's)."""
        return self._reserve

    def _begin(self) -> None:
        self._started = time.monotonic()
        if self._auto:
            self._rss_before = self._guard._sampler.sample(children=False).process.rss

    def _end(self) -> None:
        guard = self._guard
        if self._auto:
            rss_after = guard._sampler.sample(children=False).process.rss
            guard._learn(self._key, max(rss_after - self._rss_before, 0))
        guard.release(self.reserved, time.monotonic() - self._started)

    def __enter__(self) -> Admission:
        self.reserved = self._guard.acquire(self._reserve, self._wait_s)
        self._begin()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._end()

    async def __aenter__(self) -> Admission:
        self.reserved = await self._guard.acquire_async(self._reserve, self._wait_s)
        self._begin()
        if self._on_breach == "cancel":
            import anyio

            try:
                self._task_group = anyio.create_task_group()
                await self._task_group.__aenter__()
                self._task_group.start_soon(self._watch)
            except BaseException:
                self._end()
                raise
        return self

    async def _watch(self) -> None:
        import anyio

        guard = self._guard
        while True:
            breach = guard.breach()
            if breach is not None:
                self.breached = breach
                self._task_group.cancel_scope.cancel()
                return
            await anyio.sleep(guard._poll_s())

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        try:
            if self._task_group is not None:
                self._task_group.cancel_scope.cancel()
                await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            self._end()
        if self.breached is not None:
            raise self._guard._count_refusal(self.breached)
        return None


def limit_self(memory: int | str, *, kind: Literal["as", "data"] = "data") -> int:
    """Set this process's soft RLIMIT_DATA (or RLIMIT_AS) so that a runaway allocation
    raises MemoryError instead of getting the process OOM-killed; returns the bytes set.

    ``"80%"`` means 80 % of the effective memory limit. RLIMIT_DATA counts heap and
    anonymous mappings, which is what a runaway Python allocation grows; RLIMIT_AS also
    counts reserved address space (thread stacks, mapped files) and is stricter.
    """
    if kind not in ("as", "data"):
        raise InvalidValue(f"kind={kind!r}; expected 'as' or 'data'")
    from resguard.snapshot import snapshot

    limit = _Limit(memory, "memory").resolve(snapshot(children=False).memory.limit)
    which = resource.RLIMIT_AS if kind == "as" else resource.RLIMIT_DATA
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY and limit > hard:
        raise InvalidValue(f"memory={memory!r} is above the hard limit of {format_bytes(hard)}")
    resource.setrlimit(which, (limit, hard))
    return limit

