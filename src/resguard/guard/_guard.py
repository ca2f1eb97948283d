"""The Guard: admission and the waiting, on the state and readings of ``_state``.

What to do with a call is decided by the pure functions of ``_core``; this module takes the
lock, applies the decision and waits through the one
:class:`~resguard._modules.waiter.Waiter` for threads and tasks alike.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from resguard._errors import InvalidState, InvalidType, ResourceExhausted
from resguard._modules.clock import Clock
from resguard.guard import _admission, _core
from resguard.guard._args import (
    OnBreach,
    OnUnknown,
    Reserve,
    check_duration,
    check_held,
    check_on_breach,
    check_reserve,
    settings,
)
from resguard.guard._state import GuardState, Waiting
from resguard.rules import Level
from resguard.units import shown

if TYPE_CHECKING:
    from resguard.guard._admission import Admission
    from resguard.monitor import Monitor

__all__ = ["Guard"]

_F = TypeVar("_F", bound=Callable[..., Any])

_HEAD_POLL_S = 0.005
# a non-head waiter is woken by the one before it; this only bounds a wake-up lost to a bug
_SAFETY_POLL_S = 1.0
_HOLD_WEIGHT = 0.1  # of the newest hold time in the average


class Guard(GuardState):
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
        on_breach: ``"cancel"`` cancels an ``async with guard.admit():`` block or a
            decorated async function whose process passes *rss* or whose verdict reaches
            *level* while it runs (it then raises ResourceExhausted); the block's own
            exceptions come out unchanged. A bare ``async with guard:`` is not watched (it
            keeps no per-block state, for speed).
        on_unknown: what to do when a number the guard needs is unknown (``None`` in the
            snapshot) or the Monitor's state is stale or has unknowns: ``"admit"`` (default)
            checks only what is still known and logs a warning once; ``"refuse"`` refuses
            with reason ``"unknown"`` and says what is unknown.
        name: the guard's name in messages and metrics.
        clock: the monotonic clock every time of the guard is read from: the Monitor
            state's age, waits' deadlines, the cached snapshot's age, hold times (default
            the monitor's own clock, else :func:`time.monotonic`; inject one in tests).
    """

    __slots__ = ()

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
        given = settings(
            memory, rss, level, max_concurrent, reserve, wait, monitor=monitor,
            max_age=max_age, retry_after=retry_after, on_breach=on_breach,
            on_unknown=on_unknown, name=name, clock=clock,
        )  # fmt: skip
        super().__init__(given)

    # -- admission ------------------------------------------------------------------------

    def _decide(
        self, reserve: int, queued: Waiting | None, wait_s: float, deadline_s: float
    ) -> _core.Decision:
        """Decide on one call and apply it: an admitted call is counted in (and leaves the
        queue); the next in line is woken, as it may fit too."""
        view = self._current()
        with self._lock:
            decision = _core.decide(
                view, self._limits, self._counts(), reserve,
                ahead=bool(self._queue) and self._queue[0] is not queued,
                queued=queued is not None, wait_s=wait_s, deadline_s=deadline_s,
                now_s=self._clock(),
            )  # fmt: skip
            self._warn_unknown(decision.unknown)
            if decision.action == "admit":
                if queued is not None:
                    self._queue.popleft()
                self._in_flight += 1
                self._reserved += reserve
                self._admitted += 1
                if self._free:
                    self._set_open()  # the queue moved, or reservations grew
                if self._queue:
                    self._queue[0].wake()
            elif decision.action == "refuse":
                assert decision.refusal is not None
                reason = decision.refusal.reason
                self._refused[reason] = self._refused.get(reason, 0) + 1
        return decision

    def acquire(self, reserve: int | None = None, wait_s: float | None = None) -> int:
        """Admit one call (blocking up to *wait_s* in FIFO order); returns the reservation
        to pass to :meth:`release`. Prefer ``with guard:`` or :meth:`admit`."""
        if reserve is None and wait_s is None and self._admit_at_once(False):
            return self._reserve_bytes
        waiter, reserve, deadline_s, wait_s = self._first_try(reserve, wait_s)
        if waiter is None:
            return reserve
        try:
            while (remaining := self._try_again(waiter, deadline_s, wait_s)) is not None:
                waiter.wait_thread(min(remaining, self._poll_s()))
        except BaseException:
            self._leave_queue(waiter)
            raise
        return waiter.reserve

    async def acquire_async(self, reserve: int | None = None, wait_s: float | None = None) -> int:
        """:meth:`acquire` for anyio tasks (asyncio or trio); waiting never blocks the loop."""
        import anyio

        waiter, reserve, deadline_s, wait_s = self._first_try(reserve, wait_s)
        if waiter is None:
            return reserve
        try:
            while True:
                event = waiter.arm()
                remaining = self._try_again(waiter, deadline_s, wait_s)
                if remaining is None:
                    return waiter.reserve
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

    def _first_try(
        self, reserve: int | None, wait_s: float | None
    ) -> tuple[Waiting | None, int, float, float]:
        """Admit at once, raise when the caller may not wait, or queue the caller: returns
        (its place in the queue or None when admitted, the reservation, the deadline, the
        wait)."""
        reserve = self.reserve_bytes if reserve is None else check_reserve(reserve)
        wait_s = self.wait_s if wait_s is None else check_duration(wait_s, "wait_s")
        decision = self._decide(reserve, None, wait_s, math.inf)
        if decision.action == "admit":
            return None, reserve, 0.0, wait_s
        assert decision.refusal is not None
        if decision.action == "refuse":
            raise self._error(decision.refusal)
        waiter = Waiting(reserve)
        with self._lock:
            self._queue.append(waiter)
            self._open_state = None  # the lock-free path must not overtake it
        return waiter, reserve, self._clock() + wait_s, wait_s

    def _try_again(self, waiter: Waiting, deadline_s: float, wait_s: float) -> float | None:
        """Admit a queued caller (None), or say how long it may still wait; raises at the
        deadline."""
        decision = self._decide(waiter.reserve, waiter, wait_s, deadline_s)
        if decision.action == "admit":
            return None
        assert decision.refusal is not None
        if decision.action == "refuse":
            raise self._error(decision.refusal)
        return deadline_s - self._clock()

    def _error(self, refusal: _core.Refusal) -> ResourceExhausted:
        """The error a refused caller gets (counted when it was decided)."""
        return refusal.error(self.name)

    def _leave_queue(self, waiter: Waiting) -> None:
        with self._lock:
            try:
                self._queue.remove(waiter)
            except ValueError:
                return
            if self._free:
                self._set_open()
            if self._queue:
                self._queue[0].wake()

    def release(self, reserve: int, held_s: float | None = None) -> None:
        """Give back one admission and its reservation (*held_s*: how long the call held
        it, which the ``retry_after`` of a concurrency refusal is the average of)."""
        if type(reserve) is not int:  # the hot path: one cheap check, no parsing
            raise InvalidType(
                f"reserve={shown(reserve)} is not a whole number of bytes; expected "
                f"what acquire() returned"
            )
        if held_s is not None and not (type(held_s) is float and 0.0 <= held_s < math.inf):
            check_held(held_s)  # one NaN would make every later retry_after NaN
        with self._lock:
            if self._give_back(reserve, held_s):
                return
            if self._forked:  # an admission from before the fork leaving the child
                self._in_flight = max(self._in_flight - 1, 0)
                self._reserved = max(self._reserved - reserve, 0)
                return
            raise InvalidState(
                f"{self.name}: release(reserve={shown(reserve)}) without a matching acquire() "
                f"({self._in_flight} in flight, {self._reserved} bytes reserved)"
            )

    def _give_back(self, reserve: int, held_s: float | None) -> bool:
        """The one way an admission leaves (lock held): False, changing nothing, when there
        is no such admission in flight."""
        if not 0 <= reserve <= self._reserved:
            return False
        if self._in_flight > 0:
            self._in_flight -= 1
        elif not self._tokens:
            return False
        else:  # admitted without the lock before the guard's settings changed
            self._tokens.pop()
        self._reserved -= reserve
        if held_s is not None:
            self._hold_ema_s += _HOLD_WEIGHT * (held_s - self._hold_ema_s)
        if self._queue:
            self._queue[0].wake()
        if reserve and self._free:
            self._set_open()  # room again for blocks reserving none
        return True

    # -- context managers and decorators --------------------------------------------------

    def _admit_at_once(self, enter: bool) -> bool:
        """Admit with one read of the monitor's state and no I/O, when its budget (worked
        out once per state) allows; False when the full path must decide (no monitor, a
        stale state, a refusing one, someone queued). For a block entered (*enter*):
        without the lock where nothing is counted but the call itself (:attr:`lock_free`),
        else in one critical section that also starts its hold time; for :meth:`acquire`
        always with the lock, as :meth:`release` checks what it gives back."""
        monitor = self._monitor
        if monitor is None or self._auto:
            return False
        state = monitor.state
        now_s = self._clock()
        if state is not self._budget_state:
            self._update_budget(monitor, state, now_s)
        if enter and self._free:
            return self._admit_free(state, now_s)
        reserve = self._reserve_bytes
        lock = self._lock
        lock.acquire()  # not `with`: two calls cost less than the context manager
        try:
            if (
                (not self._timed or self._in_flight + len(self._tokens) < self._slots)
                and now_s <= self._fresh_until_s
                and self._budget_bytes - self._reserved >= reserve
                and not self._queue
            ):
                self._in_flight += 1
                self._reserved += reserve
                self._admitted += 1
                if enter and self._timed:
                    self._holds.enter(now_s)
                return True
        finally:
            lock.release()
        return False

    def __enter__(self) -> Guard:
        # Lock-free (no reservation, no concurrency limit, the GIL): the published state
        # is the one found to admit (its budget, what admit() calls reserved, nobody
        # queued) and it is still fresh (on the real clock, the expiry thread withdraws
        # it once stale). Each read is atomic; a caller queued just after the check is
        # overtaken by a block that takes nothing it waits for (no bytes, no slot).
        if (
            self._free
            and self._monitor.state is self._open_state  # type: ignore[union-attr]
            and (self._expiring or self._clock() <= self._fresh_until_s)
        ):
            self._tokens.append(None)  # atomic under the GIL, as is next()
            next(self._free_admitted.count)
            return self
        if self._admit_at_once(True):
            return self
        self.acquire(self._reserve_bytes)
        if self._timed:
            self._timing()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._free:
            try:
                self._tokens.pop()  # atomic under the GIL
                return
            except IndexError:
                pass  # admitted with the lock (before the settings changed), or never
        reserve = self._reserve_bytes  # the guard's own: nothing to parse
        lock = self._lock
        lock.acquire()
        try:
            # the hold time feeds the concurrency retry_after: kept only with max_concurrent
            held_s = self._holds.leave(self._clock()) if self._timed else None
            if self._in_flight > 0 and self._reserved >= reserve:
                # _give_back(reserve, held_s) written out: the guard benchmark wants this
                # way out free of calls
                self._in_flight -= 1
                self._reserved -= reserve
                if held_s is not None:
                    self._hold_ema_s += _HOLD_WEIGHT * (held_s - self._hold_ema_s)
                if self._queue:
                    self._queue[0].wake()
                return
            if self._give_back(reserve, held_s):  # one admitted without the lock
                return
        finally:
            lock.release()
        self.release(reserve)  # a block left without entering it, or one from before a fork

    async def __aenter__(self) -> Guard:
        if (  # the lock-free admission of __enter__, written out: no call to pay for
            self._free
            and self._monitor.state is self._open_state  # type: ignore[union-attr]
            and (self._expiring or self._clock() <= self._fresh_until_s)
        ):
            self._tokens.append(None)
            next(self._free_admitted.count)
            return self
        if self._admit_at_once(True):
            return self
        await self.acquire_async(self._reserve_bytes)
        if self._timed:
            self._timing()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._free:
            try:
                self._tokens.pop()
                return
            except IndexError:
                pass
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
        check_on_breach(on_breach)
        return _admission.Admission(self, reserve, wait, on_breach or self.on_breach, key)

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
            check_reserve(reserve)
        if wait is not None:
            check_duration(wait, "wait")
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
