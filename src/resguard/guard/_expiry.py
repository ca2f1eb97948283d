"""The expiry of lock-free guards' states: one daemon thread withdraws a guard's open state
once it grows stale, so that ``with guard:`` on the real clock reads no clock at all.

A guard on :func:`time.monotonic` hands each state it opens to :data:`EXPIRY` with the
time it grows stale; the thread sleeps until the earliest such time, then asks each guard
to close a state past it (under the guard's lock). It starts with the first state handed
to it and ends when no guard has an open state left; a forked child starts its own. It
never holds its own lock while it takes a guard's, so a guard may call it with its lock
held.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from typing import Protocol

from resguard._modules import forks
from resguard._modules.log import emit, get_logger

__all__ = ["EXPIRY", "Expiring", "Expiry"]

_logger = get_logger("resguard")

_MAX_SLEEP_S = 60.0  # a bound on a sleep, in case a deadline was missed by a bug


class Expiring(Protocol):
    """A guard whose open state may grow stale."""

    def _expire(self, now_s: float) -> float | None:
        """Close an open state stale at *now_s*; the time the open one grows stale, or
        ``None`` when none is open."""


class Expiry:
    """The thread that closes stale open states (see the module)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._guards: weakref.WeakSet[Expiring] = weakref.WeakSet()
        self._wake_s = math.inf
        self._thread: threading.Thread | None = None
        forks.register(self)  # a forked child starts afresh (see _after_fork_in_child)

    def watch(self, guard: Expiring, stale_at_s: float) -> None:
        """Close *guard*'s open state once :func:`time.monotonic` passes *stale_at_s*
        (it takes no guard's lock: callable with one held)."""
        with self._cond:
            self._guards.add(guard)
            if stale_at_s < self._wake_s:
                self._wake_s = stale_at_s
                self._cond.notify()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="resguard-guard-expiry", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                now_s = time.monotonic()
                if now_s < self._wake_s:
                    self._cond.wait(min(self._wake_s - now_s, _MAX_SLEEP_S))
                    continue
                guards = list(self._guards)
                self._wake_s = math.inf
            next_s = math.inf
            for guard in guards:
                try:
                    stale_at_s = guard._expire(now_s)
                except Exception as error:  # one guard's fault must not stop the others'
                    emit(_logger, logging.ERROR, "the expiry of %r failed: %s", guard, error)
                    continue
                if stale_at_s is not None:
                    next_s = min(next_s, stale_at_s)
            with self._cond:
                self._wake_s = min(self._wake_s, next_s)
                if self._wake_s == math.inf:  # nothing open, nothing handed over since
                    self._guards = weakref.WeakSet()
                    self._thread = None  # a later watch() starts a new one
                    return

    def _after_fork_in_child(self) -> None:
        # the parent's thread is not in the child (and its lock may have been held)
        self._cond = threading.Condition(threading.Lock())
        self._guards = weakref.WeakSet()
        self._wake_s = math.inf
        self._thread = None


EXPIRY = Expiry()
