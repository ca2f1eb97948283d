"""The pipe that wakes the monitor's polls (the fast thread's and the events forwarder's)."""

from __future__ import annotations

import os
import select
import threading

import pytest

from resguard._modules.waiter import WakePipe

pytestmark = pytest.mark.skipif(not hasattr(select, "poll"), reason="select.poll is POSIX's")


def _ready(pipe: WakePipe, timeout_ms: float = 0) -> bool:
    poller = select.poll()
    poller.register(pipe.read_fd, select.POLLIN)
    return bool(poller.poll(timeout_ms))


def test_a_poke_wakes_the_poll_and_a_drain_lets_it_wait_again() -> None:
    pipe = WakePipe()
    try:
        assert not _ready(pipe)
        pipe.poke()
        pipe.poke()
        assert _ready(pipe)
        pipe.drain()
        assert not _ready(pipe)
        pipe.drain()  # empty: returns at once, never blocks
    finally:
        pipe.close()


def test_a_poke_from_another_thread_ends_a_poll_without_timeout() -> None:
    pipe = WakePipe()
    try:
        poker = threading.Timer(0.05, pipe.poke)
        poker.start()
        assert _ready(pipe, timeout_ms=10_000)
        poker.join()
    finally:
        pipe.close()


def test_pokes_into_a_full_pipe_never_block() -> None:
    pipe = WakePipe()
    try:
        for _ in range(200_000):  # far past a pipe's 64 KiB
            pipe.poke()
        assert _ready(pipe)
        pipe.drain()
        assert not _ready(pipe)
    finally:
        pipe.close()


def test_after_close_a_poke_writes_nothing_not_even_into_a_reused_descriptor() -> None:
    pipe = WakePipe()
    pipe.close()
    pipe.close()  # idempotent
    read_fd, write_fd = os.pipe()  # most likely the numbers just freed
    try:
        os.set_blocking(read_fd, False)
        pipe.poke()
        pipe.drain()
        with pytest.raises(BlockingIOError):
            os.read(read_fd, 1)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_abandon_closes_even_while_the_lock_is_held() -> None:
    pipe = WakePipe()
    fds = (pipe.read_fd, pipe.write_fd)
    pipe._lock.acquire()  # as a parent's thread may hold it when the process forks
    pipe.abandon()
    for fd in fds:
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
    pipe.poke()  # closed: nothing, no error
