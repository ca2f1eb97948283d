"""The Guard: its arguments, ``with guard:`` and ``async with guard:`` (the hot path, written
out), :meth:`~Guard.admit` and the decorators.

It builds on its bases, one job each: ``_settings`` (what it allows), ``_state`` (its counts
and readings), ``_open`` (the state it admits on at once, lock-free where it may) and
``_queue`` (the full admission that decides, queues and gives back).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from resguard._errors import InvalidType
from resguard._modules.clock import Clock
from resguard.guard import _admission
from resguard.guard._args import (
    OnBreach,
    OnUnknown,
    Reserve,
    check_duration,
    check_on_breach,
    check_reserve,
    settings,
)
from resguard.guard._queue import _HOLD_WEIGHT, GuardQueue
from resguard.rules import Level
from resguard.units import shown

if TYPE_CHECKING:
    from resguard.guard._admission import Admission
    from resguard.monitor import Monitor

__all__ = ["Guard"]

_F = TypeVar("_F", bound=Callable[..., Any])


class Guard(GuardQueue):
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
        vram: the most GPU memory the fullest NVIDIA GPU may use when admitting (a size,
            ``"20GiB"``, whole bytes as an int, or a share of the GPU's memory, ``"90%"``;
            a number without a unit, ``"90"`` or ``1.5``, is refused), refused with reason
            ``"vram"``; judged on ``snapshot().gpu.memory`` (NVML, the ``gpu`` extra).
            Reservations are RAM and are not counted against it. Unknown GPU memory (no
            NVML, no driver, no device) is an unknown number: *on_unknown* decides. See
            :doc:`gpu`.
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
        vram: int | float | str | None = None,
    ) -> None:
        # everything is checked before anything is kept: a bad argument leaves no guard
        given = settings(
            memory, rss, level, max_concurrent, reserve, wait, monitor=monitor,
            max_age=max_age, retry_after=retry_after, on_breach=on_breach,
            on_unknown=on_unknown, name=name, clock=clock, vram=vram,
        )  # fmt: skip
        super().__init__(given)

    # -- context managers and decorators --------------------------------------------------

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
