"""The full admission of a guard: decide under the lock with ``_core``'s pure functions,
queue in FIFO order and wait through the one :class:`~resguard._modules.waiter.Waiter` for
threads and tasks alike, and give an admission back.
"""

from __future__ import annotations

import math

from resguard._errors import InvalidState, InvalidType, ResourceExhausted
from resguard.guard import _core
from resguard.guard._args import check_duration, check_held, check_reserve
from resguard.guard._open import OpenState
from resguard.guard._state import Waiting
from resguard.units import shown

__all__ = ["GuardQueue"]

_POLL_S = 0.01  # a waiter's poll without a monitor
_HEAD_POLL_S = 0.005
# a non-head waiter is woken by the one before it; this only bounds a wake-up lost to a bug
_SAFETY_POLL_S = 1.0
_HOLD_WEIGHT = 0.1  # of the newest hold time in the average


class GuardQueue(OpenState):
    """The locked admission, the queue and the way out of a :class:`~resguard.guard.Guard`
    (a base of it)."""

    __slots__ = ()

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
                    self._count_wait(self._clock() - queued.since_s)
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
        if decision.action == "refuse":
            assert decision.refusal is not None
            self._refusals.note(decision.refusal.reason)  # outside the lock: may log a line
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
        waiter = Waiting(reserve, self._clock())
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

    def _poll_s(self) -> float:
        monitor = self._monitor
        return min(monitor.interval_s, 0.05) if monitor is not None else _POLL_S
