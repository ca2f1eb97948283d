"""One waiter primitive for threads and tasks alike, and the pipe that wakes a ``poll()``.

A release in a thread wakes a waiting task at once, and a release in a task wakes a waiting
thread: the guard's queue, lazy models and memoized calls wait through it instead of
keeping a thread twin and a task twin of the same wait. A thread that sleeps in
``poll()`` on descriptors (the monitor's loops) is woken through a :class:`WakePipe`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Waiter", "WakePipe", "loop_caller"]


def loop_caller() -> tuple[Callable[[Callable[[], object]], object], int]:
    """How to run a callback in the current event loop from any thread, and its thread
    (asyncio's ``call_soon_threadsafe``, else trio's token; no sniffio needed)."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: anyio's other backend is trio
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon, threading.get_ident()
    return loop.call_soon_threadsafe, threading.get_ident()


class Waiter:
    """One waiting thread or task, woken at once by :meth:`wake` from any thread or task.

    A thread waiter blocks on a :class:`threading.Event`. A task waiter sleeps on an anyio
    Event that only its own event loop may set, so a wake-up from another thread is handed
    to that loop (``call_soon_threadsafe`` on asyncio, the trio token's ``run_sync_soon``).
    """

    __slots__ = ("_async_event", "_call_soon", "_event", "_loop_thread", "woken")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._async_event: Any = None
        self._call_soon: Callable[[Callable[[], object]], object] | None = None
        self._loop_thread = 0
        self.woken = False

    def wait_thread(self, timeout_s: float) -> None:
        """Block this thread until :meth:`wake` or *timeout_s* seconds."""
        self._event.wait(timeout_s)
        self._event.clear()

    def arm(self) -> Any:
        """A fresh event for a task to wait on; call before looking at the shared state again, so
        a wake-up that comes after the look is never lost."""
        import anyio

        if self._call_soon is None:
            self._call_soon, self._loop_thread = loop_caller()
        self.woken = False
        event = anyio.Event()
        self._async_event = event
        return event

    def wake(self) -> None:
        """Wake the waiter, whichever thread or event loop it waits in (idempotent)."""
        self.woken = True
        self._event.set()
        event = self._async_event
        if event is None:
            return
        if threading.get_ident() == self._loop_thread:
            event.set()
            return
        try:
            self._call_soon(event.set)  # type: ignore[misc]
        except Exception:  # the loop has finished: nobody is left to wake
            pass


class WakePipe:
    """A pipe whose :attr:`read_fd` a thread polls, woken by :meth:`poke` from any thread.

    Both ends are non-blocking: a poke into a full pipe is dropped (a wake-up is waiting
    already) and :meth:`drain` empties it without blocking. :meth:`close` closes both
    ends once; a poke or drain racing it touches nothing, never a closed (or reused)
    descriptor. :meth:`abandon` does the same in a forked child, whatever the lock says.
    """

    __slots__ = ("_closed", "_lock", "read_fd", "write_fd")

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self._lock = threading.Lock()
        self._closed = False

    def poke(self) -> None:
        """Wake the poll (idempotent until drained; nothing once closed)."""
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self.write_fd, b"x")
            except OSError:  # full: a wake-up is waiting already
                pass

    def drain(self) -> None:
        """Read what the pokes wrote, so that the next poll waits again (nothing once
        closed: the descriptor may be another file's by then)."""
        with self._lock:
            if self._closed:
                return
            try:
                while os.read(self.read_fd, 64):
                    pass
            except OSError:  # empty (EAGAIN)
                pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def abandon(self) -> None:
        """In a forked child: close this process's copies (a parent's thread may have
        held the lock when the process forked)."""
        self._lock = threading.Lock()
        self.close()
