"""The Monitor's two loops, as threads and as anyio tasks: only the waiting differs.

What each step does and how long to wait comes from the monitor's :class:`Steps` (decided
in ``_decide``). The fast thread waits in one ``poll`` on its stop pipe and every
descriptor of the run's kernel memory events (``_events.Wakeups``), the paced interval
being the timeout (where there is no ``poll``, on the stop flag). The fast task waits on a
:class:`~resguard._modules.waiter.Waiter` with the same deadline, woken by the
``_events.Forwarder`` thread that polls the descriptors for it. The slow thread and task
wait on a waiter too.
"""

from __future__ import annotations

import functools
import logging
import select
import sys
import threading
from collections.abc import Callable
from typing import Any

import attrs

from resguard._modules.log import emit, get_logger
from resguard._modules.waiter import Waiter, WakePipe
from resguard.monitor._decide import SlowWork
from resguard.monitor._events import (
    EventHub,
    Forwarder,
    Mute,
    Wakeups,
    binding_of,
    open_events,
)
from resguard.snapshot import Snapshot

__all__ = [
    "Run",
    "Steps",
    "TaskRun",
    "fast_task",
    "fast_thread",
    "open_wakeups",
    "slow_task",
    "slow_thread",
]


def _has_poll() -> bool:
    """Whether ``select.poll`` exists here (not on Windows); looked up at each use."""
    return getattr(select, "poll", None) is not None


@attrs.frozen
class Steps:
    """The monitor's side of the loops: one fast tick (returns how long to wait), the slow
    work due now, doing it, how long the slow loop may wait, and the run's kernel events
    (armed by the tick; ``woken(fds)`` drains the ready ones and says how long to hold
    before the next tick)."""

    tick: Callable[[], float]
    slow_due: Callable[[], SlowWork]
    slow_work: Callable[[SlowWork], None]
    slow_wait_s: Callable[[], float]
    woken: Callable[[tuple[int, ...]], float]
    wakeups: Wakeups


class Run:
    """One :meth:`Monitor.start`: its stop flag, the pipe that wakes the fast loop, the
    waiter of the slow loop and the kernel events; closed exactly once, by
    :meth:`Monitor.stop` or by the fast loop when it ends after stop() stopped waiting."""

    __slots__ = (
        "_closed",
        "_lock",
        "first_slow",
        "pipe",
        "slow_waiter",
        "stop",
        "wakeups",
    )

    def __init__(self, wakeups: Wakeups, slow_waiter: Waiter) -> None:
        self.stop = threading.Event()
        self.first_slow = threading.Event()  # the slow loop's first sample is done
        self.slow_waiter = slow_waiter
        # without poll the fast loop waits on the stop flag instead (see fast_thread)
        self.pipe = WakePipe() if _has_poll() else None
        self.wakeups = wakeups
        self._lock = threading.Lock()
        self._closed = False

    def start_threads(self, steps: Steps, first_slow_wait_s: float) -> list[threading.Thread]:
        """Start the fast and the slow thread and wait up to *first_slow_wait_s* for the
        first slow sample; closes this run if a thread cannot start."""
        threads = [
            threading.Thread(target=loop, args=(steps, self), name=name, daemon=True)
            for loop, name in (
                (fast_thread, "resguard-monitor"),
                (slow_thread, "resguard-monitor-slow"),
            )
        ]
        try:
            for thread in threads:
                thread.start()
            self.first_slow.wait(first_slow_wait_s)
        except BaseException:
            self.stop.set()
            self.close()
            raise
        return threads

    def request_stop(self) -> None:
        self.stop.set()
        self.slow_waiter.wake()
        if self.pipe is not None:
            self.pipe.poke()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._close_fds()

    def abandon(self) -> None:
        """In a forked child: close this process's copies, whatever the locks say."""
        self._closed = True
        self.stop.set()
        self.wakeups.close()
        if self.pipe is not None:
            self.pipe.abandon()

    def _close_fds(self) -> None:
        self.wakeups.close()
        if self.pipe is not None:
            self.pipe.close()


_said_unavailable = False  # "not available on this platform" is logged once per process


def _unavailable(why: str) -> None:
    """Say once per process that kernel memory events cannot work here (the loop polls)."""
    global _said_unavailable
    if not _said_unavailable:
        _said_unavailable = True
        emit(
            get_logger("resguard.monitor"),
            logging.INFO,
            "kernel memory events (PSI triggers, cgroup notifications) are not available on "
            "this platform (%s); the monitor polls at its paced interval",
            why,
        )


def _no_poll_here() -> bool:
    """Whether nothing can be waited on here (not Linux, or no ``select.poll``): said once."""
    if not sys.platform.startswith("linux"):
        _unavailable(f"no pressure stall information on {sys.platform}")
        return True
    if not _has_poll():
        _unavailable("this Python has no select.poll")
        return True
    return False


def open_wakeups(
    hub: EventHub, snapshot: Snapshot, *, events: bool, psi: bool, root: str | None
) -> Wakeups:
    """A run's kernel memory events for *snapshot*'s memory: none with ``events=False``,
    where nothing can be waited on, or where nothing can be armed (each said once)."""
    if not events or _no_poll_here():
        return Wakeups(hub, None)
    opener = functools.partial(open_events, psi=psi, root=root)
    return Wakeups(hub, opener(snapshot), opener=opener, binding=binding_of(snapshot.memory))


def fast_thread(steps: Steps, run: Run) -> None:
    try:
        pipe = run.pipe
        if pipe is None or not _has_poll():
            _wait_on_stop(steps, run)  # no poll (Windows): the stop flag is the only wake-up
            return
        poller = select.poll()
        poller.register(pipe.read_fd, select.POLLIN)
        registered: tuple[tuple[int, int], ...] = ()
        mute = Mute()
        while not run.stop.is_set():
            wait_s = steps.tick()
            if run.stop.is_set():
                return
            active, muted_s = mute.active(steps.wakeups.descriptors)
            registered = _register(poller, registered, active)
            timeout_s = wait_s if muted_s is None else min(wait_s, muted_s)
            ready = tuple(fd for fd, _ in poller.poll(timeout_s * 1000) if fd != pipe.read_fd)
            if ready and not run.stop.is_set() and (hold_s := steps.woken(ready)) > 0:
                mute.hold(ready, hold_s)
    finally:
        if run.stop.is_set():
            run.close()


def _register(
    poller: select.poll,
    registered: tuple[tuple[int, int], ...],
    descriptors: tuple[tuple[int, int], ...],
) -> tuple[tuple[int, int], ...]:
    """Poll *descriptors* from now on instead of *registered* (a re-arm changes them)."""
    if descriptors == registered:
        return registered
    for fd, _ in registered:
        try:
            poller.unregister(fd)
        except (KeyError, ValueError):  # closed meanwhile
            pass
    for fd, mask in descriptors:
        poller.register(fd, mask)
    return descriptors


def _wait_on_stop(steps: Steps, run: Run) -> None:
    while not run.stop.is_set():
        wait_s = steps.tick()
        if run.stop.is_set():
            return
        run.stop.wait(wait_s)


def slow_thread(steps: Steps, run: Run) -> None:
    while not run.stop.is_set():
        work = steps.slow_due()
        if work:
            steps.slow_work(work)
        run.first_slow.set()
        if run.stop.is_set():
            return
        run.slow_waiter.wait_thread(steps.slow_wait_s())


async def fast_task(steps: Steps, forwarder: Forwarder | None) -> None:
    """The fast loop as a task: tick, then wait until the deadline or until *forwarder*
    (a thread polling the kernel events' descriptors) hands it ready ones."""
    import anyio

    if forwarder is None:  # no kernel events: a plain sleep
        while True:
            await anyio.sleep(steps.tick())
    while True:
        wait_s = steps.tick()
        forwarder.published()
        event = forwarder.waiter.arm()  # before looking: a hand-over after it is not lost
        if not forwarder.ready:
            with anyio.move_on_after(wait_s):
                await event.wait()
        ready = forwarder.take()
        if ready:
            try:
                if (hold_s := steps.woken(ready)) > 0:
                    forwarder.mute.hold(ready, hold_s)
            finally:
                forwarder.done()


async def slow_task(steps: Steps, waiter: Waiter) -> None:
    import anyio

    # a source or a reclaim step that hangs must not hang leaving ``async with``: the
    # worker thread is abandoned at cancellation and finishes on its own
    while True:
        work = steps.slow_due()
        if work:
            slow_work = functools.partial(steps.slow_work, work)
            await anyio.to_thread.run_sync(slow_work, abandon_on_cancel=True)
        event = waiter.arm()  # before the wait is computed: a want after it is not lost
        with anyio.move_on_after(steps.slow_wait_s()):
            await event.wait()


class TaskRun:
    """One ``async with monitor:``: its task group, the run's kernel events and the
    thread that forwards them to the fast task (none without events)."""

    __slots__ = ("forwarder", "group", "slow_waiter", "wakeups")

    def __init__(self, wakeups: Wakeups, slow_waiter: Waiter) -> None:
        import anyio

        self.group = anyio.create_task_group()
        self.wakeups, self.slow_waiter = wakeups, slow_waiter
        has_events = wakeups.events is not None and _has_poll()
        self.forwarder = Forwarder(wakeups, Waiter()) if has_events else None

    async def enter(self, steps: Steps) -> None:
        """Start the tasks (and the forwarder); on failure nothing stays open."""
        try:
            await self.group.__aenter__()
            if self.forwarder is not None:
                self.forwarder.start()
        except BaseException:
            self._close(0.0)
            raise
        self.group.start_soon(fast_task, steps, self.forwarder)
        self.group.start_soon(slow_task, steps, self.slow_waiter)

    async def exit(self, exc_type: Any, exc: Any, tb: Any, join_timeout_s: float) -> bool | None:
        """Cancel the tasks and wait for them, then stop the forwarder and close the events."""
        self.group.cancel_scope.cancel()
        try:
            return bool(await self.group.__aexit__(exc_type, exc, tb))
        finally:  # the tasks are done: no one touches the events any more
            self._close(join_timeout_s)

    def _close(self, join_timeout_s: float) -> None:
        if self.forwarder is not None:
            self.forwarder.close(join_timeout_s)
        self.wakeups.close()

    def abandon(self) -> None:
        """In a forked child: close this process's copies (the parent's threads are gone)."""
        if self.forwarder is not None:
            self.forwarder.abandon()
        self.wakeups.close()
