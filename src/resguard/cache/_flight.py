"""Single-flight: one computation per key at a time, the others waiting for its outcome.

:class:`SingleFlight` is the table of computations in flight for one cache, sharing the
cache's lock (a miss and joining the computation happen under one lock, so a value stored
meanwhile is never computed twice). Who waits for which computation is one module-global
wait-for graph across every memoized function: a wait that would close a cycle (recursion
with the same key, A waiting on B waiting on A) is refused and the caller computes instead.
The decisions (:func:`role_on_miss`, :func:`may_wait`, :func:`outcome`) are pure functions;
threads and tasks wait through the one :class:`~resguard._modules.waiter.Waiter`.
"""

from __future__ import annotations

import enum
import threading
from builtins import isinstance, len  # noqa: UP029 (see _core)
from collections.abc import Hashable
from typing import Any, Final

from resguard._modules.waiter import Waiter
from resguard.cache._core import MISSING

__all__ = [
    "LEADER_CHECK_S",
    "Call",
    "Outcome",
    "Role",
    "SingleFlight",
    "may_wait",
    "outcome",
    "role_on_miss",
]

LEADER_CHECK_S: Final = 1.0
"""How often a caller waiting for another thread's computation checks that it is alive."""


class Role(enum.Enum):
    """What a memoized call does about its key."""

    HIT = "hit"  # the value is cached: return it
    ALONE = "alone"  # compute and store it, merging with nobody
    LEAD = "lead"  # compute it for everyone who waits
    WAIT = "wait"  # wait for the computation in flight


class Outcome(enum.Enum):
    """What a finished wait means for the caller that waited."""

    VALUE = "value"  # the leader's value: return it
    ERROR = "error"  # the leader's exception: raise it
    RETRY = "retry"  # the leader stopped without either (cancelled, died): look again


def role_on_miss(merging: bool, live_call: bool) -> Role:
    """A miss's role: alone when not merging, else wait for a live computation or lead one."""
    if not merging:
        return Role.ALONE
    return Role.WAIT if live_call else Role.LEAD


def may_wait(waiter_is_task: bool, leader_is_task: bool, same_thread: bool) -> bool:
    """Whether a caller can wait for a computation without stalling it: a thread waits for
    threads; a task waits only for tasks of its own event loop (the leader's thread runs it)."""
    if waiter_is_task:
        return leader_is_task and same_thread
    return not leader_is_task


def outcome(done: bool, error: BaseException | None) -> Outcome:
    """The outcome of a finished computation (``done``: it has a value)."""
    if done:
        return Outcome.VALUE
    return Outcome.ERROR if error is not None else Outcome.RETRY


class Call:
    """One in-flight computation of a key: its owner, and how waiters learn the outcome.

    ``finished`` is set (under the cache lock) when the computation is over, with ``done``
    and ``value`` on success or ``error`` on failure; neither means "try again".
    """

    __slots__ = ("done", "error", "finished", "leader", "owner", "thread", "value", "waiters")

    def __init__(self, owner: Hashable) -> None:
        self.owner = owner
        self.thread = threading.get_ident()
        # the leading thread, watched by waiters; None for a task (its loop's thread waits)
        self.leader = None if isinstance(owner, tuple) else threading.current_thread()
        self.waiters: list[Waiter] = []
        self.value: Any = None
        self.error: Exception | None = None
        self.done = False
        self.finished = False

    @property
    def by_task(self) -> bool:
        """Whether a task leads it (a task's token is a tuple, a thread's an int)."""
        return isinstance(self.owner, tuple)

    def leader_alive(self) -> bool:
        """False when the leading thread ended without finishing (it cannot answer)."""
        return self.leader is None or self.leader.is_alive()


class SingleFlight:
    """The computations in flight of one cache, keyed like it, under the cache's lock."""

    __slots__ = ("_lock", "_table")

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self._table: dict[Any, Call] = {}

    def __len__(self) -> int:
        """How many computations are in flight (or were left behind, see :meth:`finish`)."""
        return len(self._table)

    def join_locked(self, key: Any, token: Hashable, merging: bool) -> tuple[Role, Call | None]:
        """Under the lock, after a miss: lead a new computation, wait for the live one, or
        (not merging) go alone. A call left behind (its key could not be removed, or its
        leader thread died without an answer) is replaced by a new one."""
        call = self._table.get(key) if merging else None
        live = call is not None and not call.finished and call.leader_alive()
        role = role_on_miss(merging, live)
        if role is Role.LEAD:
            call = self._table[key] = Call(token)
        return role, call

    def finish(self, key: Any, call: Call | None, value: Any, error: BaseException | None) -> None:
        """Mark *call* over (with *value*, else *error*, else for a retry) and wake its waiters.

        Never raises for a key that cannot be compared: the finished call is then left in
        the table, where the next miss of that key replaces it.
        """
        if call is None:
            return
        with self._lock:
            if value is not MISSING:
                call.value = value
                call.done = True
            elif isinstance(error, Exception):
                call.error = error
            call.finished = True
            if key is not MISSING:
                try:
                    if self._table.get(key) is call:
                        del self._table[key]
                except Exception:
                    pass
            waiters, call.waiters = call.waiters, []
        for waiter in waiters:
            waiter.wake()

    # ------------------------------------------------------------------ waiting

    def enter(self, call: Call, token: Hashable, waiter: Waiter) -> bool:
        """Start waiting for *call*; False (nothing recorded) when that would deadlock."""
        if not _start_waiting(token, call):
            return False
        with self._lock:
            if not call.finished:
                call.waiters.append(waiter)
        return True

    def leave(self, call: Call, token: Hashable, waiter: Waiter) -> None:
        """Stop waiting (done, cancelled or interrupted)."""
        _stop_waiting(token)
        with self._lock:
            if waiter in call.waiters:
                call.waiters.remove(waiter)

    def pending(self, call: Call) -> bool:
        """Whether *call* is still to be waited for; a leader thread found dead without an
        answer finishes it for a retry."""
        if call.finished:
            return False
        if not call.leader_alive():
            self.finish(MISSING, call, MISSING, None)
            return False
        return True

    def wait_thread(self, call: Call, token: Hashable) -> bool:
        """Block this thread until *call* is over; False (not waited) when it would deadlock."""
        waiter = Waiter()
        if not self.enter(call, token, waiter):
            return False
        try:
            while self.pending(call):
                waiter.wait_thread(LEADER_CHECK_S)
        finally:
            self.leave(call, token, waiter)
        return True

    async def wait_task(self, call: Call, token: Hashable) -> bool:
        """:meth:`wait_thread` for a task; cancelling it leaves the computation alone."""
        import anyio

        waiter = Waiter()
        if not self.enter(call, token, waiter):
            return False
        try:
            while True:
                event = waiter.arm()  # before the look, so that a wake-up after it is kept
                if not self.pending(call):
                    break
                with anyio.move_on_after(LEADER_CHECK_S):
                    await event.wait()
        finally:
            self.leave(call, token, waiter)
        return True


# Who waits for which computation, across every memoized function: a waiter whose wait would
# close a cycle (recursion with the same key, A waits on B which waits on A) computes instead.
_waits_lock = threading.Lock()
_waiting: dict[Hashable, Call] = {}


def _start_waiting(token: Hashable, call: Call) -> bool:
    """Record that *token* waits for *call*; False (not recorded) if that would deadlock."""
    with _waits_lock:
        owner = call.owner
        for _ in range(10_000):
            if owner == token:
                return False
            blocker = _waiting.get(owner)
            if blocker is None:
                break
            owner = blocker.owner
        else:
            return False
        _waiting[token] = call
        return True


def _stop_waiting(token: Hashable) -> None:
    with _waits_lock:
        _waiting.pop(token, None)
