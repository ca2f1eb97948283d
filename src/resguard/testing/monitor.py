"""A Monitor whose snapshot the test sets: :class:`StaticMonitor`."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import attrs

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.clock import Clock, ManualClock
from resguard.monitor import Monitor, State
from resguard.rules import Policy
from resguard.snapshot import Snapshot
from resguard.testing.snapshots import WALL_OFFSET_S, make_snapshot
from resguard.units import shown

__all__ = ["StaticMonitor"]


class _SetSampler:
    """Hands out the snapshot the test set, stamped with the clock's time now."""

    def __init__(self, snapshot: Snapshot, clock: Clock) -> None:
        self.snapshot = snapshot
        self._clock = clock

    def sample(self, **_: Any) -> Snapshot:
        now_s = float(self._clock())
        return attrs.evolve(self.snapshot, monotonic=now_s, taken_at=WALL_OFFSET_S + now_s)


class StaticMonitor(Monitor):
    """A :class:`~resguard.Monitor` whose snapshot the test sets, judged by the real policy.

    Nothing is sampled and nothing runs in the background (``start()``, ``stop()`` and
    ``async with`` do nothing): the published state changes when the test calls
    :meth:`set`, or when the clock reaches the next step of *script*. Its verdicts are
    real: *policy* (default :func:`resguard.presets.service`) evaluates the snapshot, so
    a :class:`~resguard.Guard`, the ASGI middleware or the Prometheus collector on top of
    it behave as they would under that pressure, without root and without real memory
    pressure::

        import pytest
        from resguard import Guard, ResourceExhausted
        from resguard.testing import StaticMonitor

        monitor = StaticMonitor(memory_percent=40)
        guard = Guard(memory="90%", monitor=monitor)
        assert guard.would_admit()          # admitted at 40 %
        monitor.set(memory_percent=97)
        assert not guard.would_admit()      # refused at 97 %
        with pytest.raises(ResourceExhausted):
            with guard:                     # what the endpoint does
                ...

    Arguments:
        snapshot: the first snapshot (default ``make_snapshot()``: 40 % of 16 GiB); or
            give :func:`~resguard.testing.make_snapshot`'s keywords instead
            (``memory_percent=97``).
        script: ``[(seconds, snapshot), ...]``: from *seconds* after construction (by
            *clock*) on, the state is judged from that snapshot; a
            :class:`~resguard.testing.ManualClock` advanced by the test steps through it.
        clock: monotonic seconds (default a fresh :class:`~resguard.testing.ManualClock`,
            so the state never grows stale unless the test moves a clock it passed in).
        live: while True (default), reading ``state`` after the clock moved judges the
            snapshot again at the new time, as a running monitor would (sustained rules
            fire, the state stays fresh); ``False`` keeps the state until :meth:`set` or a
            script step, so it grows *stale* as the clock moves.

    Other keywords (``policy=``, ``stale_after=``, ``interval=``...) are the Monitor's.
    """

    def __init__(
        self,
        snapshot: Snapshot | None = None,
        *,
        script: Sequence[tuple[float, Snapshot]] = (),
        policy: Policy | None = None,
        clock: Clock | None = None,
        live: bool = True,
        stale_after: float | str | None = None,
        interval: float | str = "50ms",
        **fields: Any,
    ) -> None:
        if not isinstance(live, bool):
            raise InvalidType(f"live={shown(live)} is not a bool; expected True or False")
        clock = ManualClock() if clock is None else clock
        steps = _script(script)
        first = _snapshot(snapshot, fields)
        if steps and steps[0][0] <= 0:
            first = steps[0][1]
        self._set_sampler = _SetSampler(first, clock)
        self._live = live
        self._publish_lock = threading.Lock()
        self._published_at = float("-inf")
        super().__init__(
            interval,
            policy,
            sampler=self._set_sampler,  # type: ignore[arg-type]  # a Sampler's sample()
            reclaim=False,
            psi_trigger=False,
            stale_after=stale_after,
            clock=clock,
        )
        self._started_s = float(self.clock())
        self._script = [(self._started_s + at_s, step) for at_s, step in steps]
        self._next_step = 1 if steps and steps[0][0] <= 0 else 0

    @property  # the Monitor's attribute, read through the script
    def state(self) -> State:
        """The published state, brought up to the clock (script steps, live re-judging)."""
        if self._publish_lock.acquire(blocking=False):  # re-entered from sample_now: as is
            try:
                self._catch_up()
            finally:
                self._publish_lock.release()
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        self._state = state
        self._published_at = state.snapshot.monotonic

    def _catch_up(self) -> None:
        if not hasattr(self, "_script"):
            return  # still in Monitor.__init__
        now_s = float(self.clock())
        stepped = False
        while self._next_step < len(self._script) and self._script[self._next_step][0] <= now_s:
            self._set_sampler.snapshot = self._script[self._next_step][1]
            self._next_step += 1
            stepped = True
        if stepped or (self._live and now_s > self._published_at):
            self.sample_now()

    def set(self, snapshot: Snapshot | None = None, **fields: Any) -> State:
        """Judge *snapshot* (or ``make_snapshot(**fields)``) now, publish it and return
        the new state; subscribers hear a level change as from a real monitor."""
        self._set_sampler.snapshot = _snapshot(snapshot, fields)
        with self._publish_lock:
            return self.sample_now()

    def start(self) -> StaticMonitor:
        """Nothing to start: the test sets the state."""
        return self

    def stop(self) -> None:
        """Nothing to stop."""

    async def __aenter__(self) -> StaticMonitor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return None


def _snapshot(snapshot: object, fields: dict[str, Any]) -> Snapshot:
    if snapshot is not None and fields:
        raise InvalidValue(
            f"snapshot= and {', '.join(sorted(fields))}= both given; pass a snapshot, "
            "or make_snapshot()'s keywords"
        )
    if snapshot is None:
        return make_snapshot(**fields)
    if not isinstance(snapshot, Snapshot):
        raise InvalidType(
            f"snapshot={shown(snapshot)} is not a resguard.Snapshot; expected e.g. "
            "resguard.testing.make_snapshot(memory_percent=97)"
        )
    return snapshot


def _script(script: object) -> list[tuple[float, Snapshot]]:
    expected = "expected [(seconds, snapshot), ...] in time order"
    if isinstance(script, (str, bytes)) or not isinstance(script, Sequence):
        raise InvalidType(f"script={shown(script)} is not a list of steps; {expected}")
    steps: list[tuple[float, Snapshot]] = []
    for step in script:
        if not (isinstance(step, tuple) and len(step) == 2):
            raise InvalidType(f"{shown(step)} in script is not a (seconds, snapshot) pair")
        at_s, snapshot = step
        if isinstance(at_s, bool) or not isinstance(at_s, (int, float)) or not at_s >= 0:
            raise InvalidValue(f"{shown(at_s)} in script is not a number of seconds >= 0")
        if steps and at_s < steps[-1][0]:
            raise InvalidValue(f"script steps are not in time order at {shown(at_s)}; {expected}")
        steps.append((float(at_s), _snapshot(snapshot, {})))
    return steps
