"""Which monitor state a guard admits on at once: the budget worked out once per state, the
state ``with guard:`` may admit on without the lock (and its expiry), and the admission with
one read of that state and no I/O. The full path that decides and queues is ``_queue``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resguard.guard import _core
from resguard.guard._core import View
from resguard.guard._expiry import EXPIRY
from resguard.guard._state import GuardState

if TYPE_CHECKING:
    from resguard.monitor import Monitor, State

__all__ = ["OpenState"]


class OpenState(GuardState):
    """The fast admission of a :class:`~resguard.guard.Guard` (a base of it)."""

    __slots__ = ()

    def _set_open(self) -> None:
        """Which state ``with guard:`` may admit on without the lock (lock held): the state
        the budget was worked out for while the guard is lock-free, nobody is queued (no
        overtaking) and what :meth:`admit` calls reserved leaves room (past it the full path
        refuses even a call reserving nothing: reason ``"reservation"``); else none."""
        admits = (
            self._free
            and not self._queue
            and self._reserved <= self._budget_bytes
            and self._clock() <= self._fresh_until_s  # never a stale state again
        )
        self._open_state = self._budget_state if admits else None
        if admits and self._expiring:
            EXPIRY.watch(self, self._fresh_until_s)

    def _expire(self, now_s: float) -> float | None:
        """Close the open state if it is stale at *now_s* (the expiry thread calls this):
        when it grows stale if still open, else ``None``."""
        with self._lock:
            if self._open_state is not None and now_s > self._fresh_until_s:
                self._open_state = None
            return None if self._open_state is None else self._fresh_until_s

    def _update_budget(self, monitor: Monitor, state: State, now_s: float) -> None:
        _, reason = _core.state_unknown(monitor, state, now_s)
        view = View(state.snapshot, state.verdict.level, _core.verdict_unknown(reason))
        budget_bytes, unknown = _core.budget(view, self._limits, self._reserve_bytes)
        with self._lock:
            # The open state last: a lock-free reader that finds it finds its deadline too
            self._open_state = None
            self._budget_bytes = budget_bytes
            self._warn_unknown(unknown)
            self._fresh_until_s = state.snapshot.monotonic + _core.stale_after_s(monitor)
            self._budget_state = state
            self._set_open()

    def _admit_free(self, state: State, now_s: float) -> bool:
        """The lock-free admission of ``__enter__``, after the budget was worked out."""
        if state is self._open_state and now_s <= self._fresh_until_s:
            self._tokens.append(None)
            next(self._free_admitted.count)
            return True
        return False

    def _timing(self) -> None:
        """Count a ``with guard:`` block in for its hold time (see :class:`HoldMeter`)."""
        now_s = self._clock()
        with self._lock:
            self._holds.enter(now_s)

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
