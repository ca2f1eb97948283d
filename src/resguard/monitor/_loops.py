"""The Monitor's two loops, as threads and as anyio tasks: only the waiting differs.

What each step does and how long to wait comes from the monitor's :class:`Steps` (decided
in ``_decide``); a thread waits in ``poll`` on a
pipe and the PSI trigger (fast; where there is no ``poll``, on the stop flag) or on a
:class:`~resguard._modules.waiter.Waiter` (slow), a task sleeps (fast) or waits on the
same waiter with a deadline (slow).
"""

from __future__ import annotations

import functools
import os
import select
import sys
import threading
from collections.abc import Callable

import attrs

from resguard._modules.log import get_logger
from resguard._modules.waiter import Waiter
from resguard._probes.psi import open_trigger
from resguard.monitor._decide import SlowWork
from resguard.snapshot import Snapshot

__all__ = [
    "Run",
    "Steps",
    "fast_task",
    "fast_thread",
    "open_psi_trigger",
    "slow_task",
    "slow_thread",
]


def _has_poll() -> bool:
    """Whether ``select.poll`` exists here (not on Windows); looked up at each use."""
    return getattr(select, "poll", None) is not None


@attrs.frozen
class Steps:
    """The monitor's side of the loops: one fast tick (returns how long to wait), the slow
    work due now, doing it, how long the slow loop may wait, and a PSI wake-up seen."""

    tick: Callable[[], float]
    slow_due: Callable[[], SlowWork]
    slow_work: Callable[[SlowWork], None]
    slow_wait_s: Callable[[], float]
    triggered: Callable[[], None]


class Run:
    """One :meth:`Monitor.start`: its stop flag, the pipe that wakes the fast loop, the
    waiter of the slow loop and the PSI trigger; closed exactly once, by
    :meth:`Monitor.stop` or by the fast loop when it ends after stop() stopped waiting."""

    __slots__ = (
        "_closed",
        "_lock",
        "first_slow",
        "slow_waiter",
        "stop",
        "trigger_fd",
        "wake_read",
        "wake_write",
    )

    def __init__(self, trigger_fd: int | None, slow_waiter: Waiter) -> None:
        self.stop = threading.Event()
        self.first_slow = threading.Event()  # the slow loop's first sample is done
        self.slow_waiter = slow_waiter
        if _has_poll():
            self.wake_read, self.wake_write = os.pipe()
            os.set_blocking(self.wake_write, False)
        else:  # the fast loop waits on the stop flag instead (see fast_thread)
            self.wake_read = self.wake_write = -1
        self.trigger_fd = trigger_fd
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
        with self._lock:
            if not self._closed and self.wake_write >= 0:
                try:
                    os.write(self.wake_write, b"x")
                except OSError:  # full: the loop has a wake-up waiting already
                    pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._close_fds()

    def abandon(self) -> None:
        """In a forked child: close this process's copies, whatever the lock says."""
        self._closed = True
        self.stop.set()
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self.wake_read, self.wake_write, self.trigger_fd):
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


_said_unavailable = False  # "not available on this platform" is logged once per process


def _unavailable(why: str) -> None:
    """Say once per process that PSI wake-ups cannot work here (the loop keeps its interval)."""
    global _said_unavailable
    if not _said_unavailable:
        _said_unavailable = True
        get_logger("resguard.monitor").info(
            "PSI triggers are not available on this platform (%s); the monitor samples at "
            "its interval",
            why,
        )


def open_psi_trigger(snapshot: Snapshot) -> int | None:
    """A PSI trigger on the memory pressure file *snapshot* read (``None``: none here).

    Where the platform has no PSI (not Linux) or no ``select.poll`` to wait on a trigger,
    that is said once and the fast loop waits its plain interval."""
    if not sys.platform.startswith("linux"):
        _unavailable(f"no pressure stall information on {sys.platform}")
        return None
    if not _has_poll():
        _unavailable("this Python has no select.poll")
        return None
    source = snapshot.pressure.source
    if source is None:
        return None
    if source == "system":
        path = "/proc/pressure/memory"
    elif os.path.isabs(source):
        path = os.path.join(source, "memory.pressure")
    else:
        return None  # a pressure source that is not a PSI file (no trigger to arm)
    return open_trigger(path)


def fast_thread(steps: Steps, run: Run) -> None:
    try:
        if run.wake_read < 0 or not _has_poll():
            _wait_on_stop(steps, run)  # no poll (Windows): the stop flag is the only wake-up
            return
        poller = select.poll()
        poller.register(run.wake_read, select.POLLIN)
        if run.trigger_fd is not None:
            poller.register(run.trigger_fd, select.POLLPRI)
        while not run.stop.is_set():
            wait_s = steps.tick()
            if run.stop.is_set():
                return
            events = poller.poll(wait_s * 1000)
            if any(fd == run.trigger_fd for fd, _ in events):
                steps.triggered()
    finally:
        if run.stop.is_set():
            run.close()


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


async def fast_task(steps: Steps) -> None:
    import anyio

    while True:
        await anyio.sleep(steps.tick())


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
