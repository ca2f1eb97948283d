"""Run a check in a forked child, the way a pre-fork server or multiprocessing does, with a
deadline: a child that hangs is killed and reported, never waited for."""

from __future__ import annotations

import os
import select
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

HUNG = -1


def in_child(check: Callable[[], object], timeout_s: float = 10.0) -> int:
    """Fork, run *check* in the child and return its exit status: 0 when it returned,
    1 when it raised (the traceback is printed), :data:`HUNG` when it did not end within
    *timeout_s* (the child is killed)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 0
        try:
            check()
        except BaseException:
            traceback.print_exc()
            status = 1
        os._exit(status)
    pidfd = os.pidfd_open(pid)  # readable once the child has exited: a wait with a deadline
    try:
        waiting = select.poll()  # not select(): descriptors above 1023 are common in a test run
        waiting.register(pidfd, select.POLLIN)
        ended = waiting.poll(timeout_s * 1000)
    finally:
        os.close(pidfd)
    if not ended:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return HUNG if not ended else os.waitstatus_to_exitcode(status)


@contextmanager
def held_by_another_thread(lock: threading.Lock | threading.RLock) -> Iterator[None]:
    """Hold *lock* in a second thread for the duration, as a busy thread would be at the
    moment some other thread forks."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            release.wait(30)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join(10)
