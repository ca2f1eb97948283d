"""The Monitor's side of its loops, bound to one run: a fast tick, the slow work.

Each step never raises: a failure is logged once per kind through the monitor's failure
log and the loop goes on (the loops themselves are in ``_loops``, the decisions in
``_decide``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from resguard._modules.log import flush_due_refusals, handler_failed
from resguard.monitor import _decide, _loops
from resguard.monitor._events import sampler_root
from resguard.monitor._loops import Steps

if TYPE_CHECKING:
    from resguard.monitor._events import Wakeups
    from resguard.monitor._monitor import Monitor

__all__ = ["SILENT_HOLD_S", "open_wakeups", "steps_for"]

SILENT_HOLD_S = 0.01
"""How long descriptors that woke the loop without saying anything stay out of its poll:
long enough that one stuck ready is no busy loop, short enough that the kernel side's
next re-arm notice (on the same descriptor) is not missed for long."""


def steps_for(monitor: Monitor, wakeups: Wakeups) -> Steps:
    """The steps of one start of *monitor*'s loops, with that run's kernel events."""
    with monitor._schedule_lock:  # a fresh start samples the sources first
        monitor._schedule.restart()
    burst_s = _burst_s()  # once per run: a run's decisions read no module global
    never_work = _decide.SlowWork(climb=False, sample=False)
    return Steps(
        _contained(monitor, partial(_tick, monitor, wakeups, burst_s), _base_interval_s),
        _contained(monitor, partial(_slow_due, monitor), lambda _: never_work),
        _contained(monitor, partial(_slow_work, monitor), lambda _: None),
        _contained(monitor, partial(_slow_wait_s, monitor), _slow_interval_s),
        _contained(monitor, partial(_woken, monitor, wakeups, burst_s), lambda _: 0.0),
        wakeups,
    )


_T = TypeVar("_T")


def _contained(
    monitor: Monitor, step: Callable[..., _T], fallback: Callable[[Monitor], _T]
) -> Callable[..., _T]:
    """*step* as the loops call it: whatever it raises (a bug in the monitor's own
    bookkeeping, a failure log whose handler raised) is logged once per kind and the loop
    goes on with *fallback*'s answer; a loop thread never dies of it."""

    def contained(*args: object) -> _T:
        try:
            return step(*args)
        except Exception as error:
            try:
                monitor._failed("the monitor's loop", error)
            except Exception as broken:
                handler_failed(broken)
            return fallback(monitor)

    return contained


def _base_interval_s(monitor: Monitor) -> float:
    return monitor.interval_s


def _slow_interval_s(monitor: Monitor) -> float:
    return monitor.slow_interval_s


def open_wakeups(monitor: Monitor) -> Wakeups:
    """The kernel memory events for one start of *monitor*'s loops (none with
    ``events=False``), on the files its sampler reads."""
    root, snapshot = sampler_root(monitor.sampler), monitor.state.snapshot
    return _loops.open_wakeups(
        monitor._events, snapshot, events=monitor.events, psi=monitor.psi_trigger, root=root
    )


def _burst_s() -> float:
    """:data:`resguard.monitor.BURST_S`, read as a run starts (a changed value holds from
    the next start on)."""
    from resguard import monitor as package

    return float(package.BURST_S)


def _tick(monitor: Monitor, wakeups: Wakeups, burst_s: float) -> float:
    """One fast-loop step: sample, arm the events, tell the tail of a refusal burst that
    ended (:func:`flush_due_refusals`), then how long to wait."""
    try:
        snapshot = monitor.sample_now().snapshot
        wakeups.after_tick(monitor.policy, snapshot, monitor.clock(), burst_s)
        wait_s = monitor.next_interval_s()
    except Exception as error:  # a bug; the loop goes on at its base pace
        monitor._failed("the monitor's interval", error)
        wait_s = monitor.interval_s
    flush_due_refusals()
    return wait_s


def _woken(monitor: Monitor, wakeups: Wakeups, burst_s: float, ready: tuple[int, ...]) -> float:
    """The descriptors *ready* woke the fast loop: drain and deliver their events; how
    long to leave them out of the poll (0: not at all): *min_interval* after a wake-up by
    pressure alone, :data:`SILENT_HOLD_S` (at most) after one that said nothing, so that
    neither a storm nor a descriptor stuck ready is a busy loop."""
    try:
        mute = wakeups.woken(ready, monitor.clock(), burst_s)
    except Exception as error:  # the kernel side never raises; the last net
        monitor._failed("the kernel memory events", error)
        mute = "silent"
    if mute == "pressure":
        return monitor.min_interval_s
    return min(monitor.min_interval_s, SILENT_HOLD_S) if mute == "silent" else 0.0


def _slow_due(monitor: Monitor) -> _decide.SlowWork:
    with monitor._schedule_lock:
        return monitor._schedule.due(monitor.clock(), monitor.state.level)


def _slow_work(monitor: Monitor, work: _decide.SlowWork) -> None:
    """Climb the ladder and sample the sources, as *work* says."""
    if work.climb:
        try:
            monitor.reclaim_now()
            if monitor._failures.memo.failing:
                monitor._worked("reclaiming")
        except Exception as error:  # steps are guarded; this is the last net
            monitor._failed("reclaiming", error)
    if work.sample:
        try:
            monitor.sample_slow()
        except Exception as error:  # sources are guarded one by one; the last net
            monitor._failed("the monitor's slow sample", error)
        with monitor._schedule_lock:
            monitor._schedule.sampled(monitor.clock())


def _slow_wait_s(monitor: Monitor) -> float:
    with monitor._schedule_lock:
        return monitor._schedule.wait_s(monitor.clock())
