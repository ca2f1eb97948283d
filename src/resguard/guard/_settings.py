"""A guard's settings: what it allows (its limits, reservation, monitor), each readable and
assignable, where its admission changes (its memory edges), and whether ``with guard:``
admits without the lock.

:class:`~resguard.guard._state.GuardState` builds on it with the counts and readings.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from resguard._errors import InvalidState, InvalidType
from resguard._modules.clock import Clock, monotonic

# LOCK_FREE: whether a guard may admit ``with guard:`` without its lock, read when it is
# made or its settings change (the lock-free path relies on the GIL making list.append,
# list.pop and a Tally's tick atomic)
from resguard._modules.gil import LOCK_FREE
from resguard.guard import _core
from resguard.guard._args import OnUnknown, Settings, check_monitor, check_reserve, clock_of
from resguard.guard._core import HoldMeter
from resguard.rules import Level
from resguard.snapshot import MemoryInfo
from resguard.units import Amount, shown

if TYPE_CHECKING:
    from resguard.monitor import Monitor

__all__ = ["GuardSettings"]


class GuardSettings:
    """The settings of a :class:`~resguard.guard.Guard` (the base of its state)."""

    # slots: the lock-free path is a handful of attribute reads, each cheaper from a slot
    __slots__ = (
        "__weakref__",
        "_admitted",
        "_auto",
        "_budget_bytes",
        "_budget_state",
        "_cached",
        "_cached_at",
        "_cached_generation",
        "_clock",
        "_clock_given",
        "_expiring",
        "_forked",
        "_free",
        "_free_admitted",
        "_fresh_until_s",
        "_hold_ema_s",
        "_holds",
        "_in_flight",
        "_learned",
        "_limits",
        "_lock",
        "_monitor",
        "_open_state",
        "_queue",
        "_refreshing",
        "_refusals",
        "_refused",
        "_reserve_bytes",
        "_reserved",
        "_sampler",
        "_slots",
        "_timed",
        "_tokens",
        "_unwatch",
        "_wait_counts",
        "_wait_sum_s",
        "_warned",
        "max_age_s",
        "name",
        "on_breach",
        "wait_s",
    )
    _in_flight: int  # the admissions in flight, counted by GuardState
    _tokens: list[None]

    def __init__(self, given: Settings) -> None:
        self._limits = given.limits
        self._auto = given.auto
        self._reserve_bytes = given.reserve_bytes
        self.wait_s = given.wait_s
        self.max_age_s = given.max_age_s
        self.on_breach = given.on_breach
        self.name = given.name
        self._monitor = given.monitor
        self._clock = given.clock
        self._clock_given = given.clock_given
        self._lock = threading.Lock()
        self._holds = HoldMeter()  # for `with guard:`, whose blocks do not time themselves
        # the hold time feeds only the concurrency retry_after: not measured without a limit
        self._timed = given.limits.max_concurrent is not None
        self._slots = given.limits.max_concurrent or 1 << 62
        # what the latest monitor state allows before reservations, computed once per state
        self._budget_state: object = None
        self._open_state: object = None  # the state that admits `with guard:` lock-free
        self._unwatch: Callable[[], None] | None = None
        self._free = False  # whether `with guard:` admits without the lock now
        self._expiring = False  # whether the expiry thread closes its stale states
        self._set_mode()

    @property
    def level(self) -> Level | None:
        """The verdict level at and above which the guard refuses (``None``: never)."""
        return self._limits.level

    @level.setter
    def level(self, level: Level | None) -> None:
        self._change(level=level)

    @property
    def vram(self) -> Amount | None:
        """The most GPU memory the fullest GPU may use when admitting (``None``: not
        judged), as given (``vram=``)."""
        return self._limits.vram

    @property
    def max_concurrent(self) -> int | None:
        """The most calls in flight at once (``None``: no limit)."""
        return self._limits.max_concurrent

    @max_concurrent.setter
    def max_concurrent(self, max_concurrent: int | None) -> None:
        self._change(max_concurrent=max_concurrent)

    @property
    def on_unknown(self) -> OnUnknown:
        """``"admit"`` or ``"refuse"`` when a number the guard needs is unknown."""
        return self._limits.on_unknown

    @on_unknown.setter
    def on_unknown(self, on_unknown: OnUnknown) -> None:
        self._change(on_unknown=on_unknown)

    @property
    def retry_after_s(self) -> float:
        """The ``retry_after`` suggested when refusing for memory, level or unknowns."""
        return self._limits.retry_after_s

    @retry_after_s.setter
    def retry_after_s(self, retry_after_s: float) -> None:
        self._change(retry_after_s=retry_after_s)

    def _change(self, **changes: Any) -> None:
        """Set limits as assigning the attributes did (unchecked); the hot path's budget is
        worked out again at the next admission."""
        with self._lock:
            self._limits = limits = attrs.evolve(self._limits, **changes)
            self._slots = limits.max_concurrent or 1 << 62
            if self._timed and limits.max_concurrent is None:
                self._holds = HoldMeter()  # blocks in flight leave untimed
            self._timed = limits.max_concurrent is not None
            self._budget_state = self._open_state = None
            self._set_mode()

    def _set_mode(self) -> None:
        """Whether ``with guard:`` may admit without the lock: with a Monitor (one read of
        its state), no reservation to count and no concurrency limit, under the GIL."""
        self._free = (
            LOCK_FREE
            and self._monitor is not None
            and not self._auto
            and self._reserve_bytes == 0
            and self._limits.max_concurrent is None
        )
        # on the real clock, the expiry thread withdraws a stale open state: the lock-free
        # path then reads no clock (an injected clock is read on every admission)
        self._expiring = self._free and self._clock is monotonic

    @property
    def lock_free(self) -> bool:
        """Whether ``with guard:`` admits without taking the guard's lock now: with a
        Monitor, no reservation, no ``max_concurrent``, and the GIL (what the lock-free
        path relies on is in the API reference, under Guards)."""
        return self._free

    @property
    def reserve_bytes(self) -> int:
        """The reservation of each ``with guard:`` block and the default of
        :meth:`admit` (0 with ``reserve="auto"``, which learns one per function). A new
        value is refused (:class:`~resguard.InvalidState`) while any admission is in
        flight: a block gives back the guard's reservation as it is when the block leaves,
        so a change under it would miscount what is reserved."""
        return self._reserve_bytes

    @reserve_bytes.setter
    def reserve_bytes(self, reserve_bytes: int) -> None:
        checked = check_reserve(reserve_bytes, "reserve_bytes")
        with self._lock:
            in_flight = self._in_flight + len(self._tokens)
            if in_flight and checked != self._reserve_bytes:
                raise InvalidState(
                    f"{self.name}: reserve_bytes={shown(reserve_bytes)} assigned while "
                    f"{in_flight} admission(s) are in flight; expected it assigned while none "
                    f"is (a block gives back the reservation the guard has when it leaves)"
                )
            self._reserve_bytes = checked
            self._budget_state = self._open_state = None
            self._set_mode()
        self._watch(self._monitor)  # the edges moved with the reservation

    @property
    def monitor(self) -> Monitor | None:
        """The Monitor whose state the guard reads (``None``: a snapshot of its own,
        cached for *max_age*). Assigning another moves the guard's edges to it
        (:meth:`memory_edges_bytes`) and, unless a ``clock`` was given, its clock to the
        new monitor's; set it while no caller is queued."""
        return self._monitor

    @monitor.setter
    def monitor(self, monitor: Monitor | None) -> None:
        checked = check_monitor(monitor)
        with self._lock:
            self._monitor = checked
            if not self._clock_given:
                self._clock = clock_of(None, checked)
                self._cached_at = -math.inf
            self._budget_state = self._open_state = None
            self._set_mode()
        self._watch(checked)

    def _watch(self, monitor: Monitor | None) -> None:
        """Tell *monitor* where this guard's admission changes (it holds the guard weakly
        and works the edges out again when the set of guards changes)."""
        unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
        if monitor is not None:
            self._unwatch = monitor.watch_edges(self)

    def memory_edges_bytes(self, memory: MemoryInfo) -> tuple[int, ...]:
        """The ``memory.used`` values (bytes, sorted) at which this guard's admission
        changes, for the Monitor to wake or sample faster at.

        That is the ``memory`` budget resolved against ``memory.limit`` (a call is refused
        once ``used`` is above it) and, with a reservation per block, the budget minus that
        reservation and the limit minus it (where one such call stops fitting when nothing
        else is reserved). What calls in flight reserve is left out: it changes with every
        call. A percent budget with the limit unknown has no edge; a budget in bytes keeps
        its edge; edges above a known limit are left out, as ``used`` cannot reach them.
        The ``rss`` limit is about this process's RSS, not ``memory.used``: no edge.
        """
        if type(memory) is not MemoryInfo and not isinstance(memory, MemoryInfo):
            raise InvalidType(
                f"memory={shown(memory)} is not a resguard.snapshot.MemoryInfo; expected a "
                f"snapshot's memory, e.g. guard.memory_edges_bytes(monitor.state.snapshot.memory)"
            )
        return _core.memory_edges_bytes(self._limits, self._reserve_bytes, memory)

    @property
    def clock(self) -> Clock:
        """The monotonic clock the guard reads every time from."""
        return self._clock

    @property
    def auto_reserve(self) -> bool:
        """Whether reservations are learned per guarded function (``reserve="auto"``)."""
        return self._auto
