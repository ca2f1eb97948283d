"""Exact process identity, and signals that can never reach a process that reused a PID.

A process is identified by its PID and its start time in clock ticks since boot
(``/proc/<pid>/stat`` field 22, an integer): a later process with the same PID has a later
start time. :meth:`ProcessHandle.open` verifies the identity and, where the kernel has
pidfds (Linux >= 5.3), opens one *before* re-reading the start time: when the start time
still matches, the pidfd refers to that very process for as long as it is open, so a
signal sent through it cannot reach a newcomer. Without pidfds the start time is re-read
right before every signal (a window of a few microseconds remains; pidfds close it).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from collections.abc import Callable

import attrs

__all__ = [
    "Identity",
    "ProcStat",
    "ProcessHandle",
    "parse_stat",
    "pidfd_supported",
    "read_stat",
]

PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread


@attrs.frozen
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the stopper needs.

    ``state`` is one letter (``"Z"``: exited, waiting for its parent to reap it);
    ``exit_code`` is field 52 in waitpid form where the kernel shows it, else ``None``.
    """

    name: str
    state: str
    ppid: int
    flags: int
    start_ticks: int
    rss_pages: int
    exit_code: int | None = None

    @property
    def exited(self) -> bool:
        """Whether the process has exited (a zombie holds no memory and runs no code)."""
        return self.state in ("Z", "X", "x")

    @property
    def kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/<pid>/stat`` line; raises ``ValueError`` on anything malformed.

    The name (field 2) is cut at the *last* ``)``: a process may call itself ``a) (b``.
    """
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ValueError("no (name) in a stat line")
    if not text[:open_paren].strip().isdigit():
        raise ValueError("no pid before the name")
    fields = text[close_paren + 1 :].split()
    # fields[0] is field 3 of proc(5); start time is field 22, rss field 24, exit_code 52
    if len(fields) < 22 or len(fields[0]) != 1:
        raise ValueError("a truncated stat line")
    numbers = [_integer(fields[index]) for index in (1, 6, 19, 21)]
    exit_code = _integer(fields[49]) if len(fields) >= 50 else None
    if numbers[2] < 0:
        raise ValueError("a negative start time")
    return ProcStat(
        name=text[open_paren + 1 : close_paren],
        state=fields[0],
        ppid=numbers[0],
        flags=numbers[1],
        start_ticks=numbers[2],
        rss_pages=max(numbers[3], 0),
        exit_code=exit_code,
    )


def _integer(text: str) -> int:
    if not text.lstrip("-").isdigit() or not text.isascii():
        raise ValueError(f"{text!r} is not an integer")
    return int(text)


def read_stat(pid: int, proc: str = "/proc") -> ProcStat | None:
    """*pid*'s stat, or ``None`` when it is gone, unreadable or damaged."""
    try:
        fd = os.open(f"{proc}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return parse_stat(raw.decode("utf-8", "replace"))
    except ValueError:
        return None


@attrs.frozen
class Identity:
    """One process: its PID and its exact start time in clock ticks since boot."""

    pid: int
    start_ticks: int

    def matches(self, stat: ProcStat | None) -> bool:
        return stat is not None and stat.start_ticks == self.start_ticks


_pidfd_works: bool | None = None


def pidfd_supported() -> bool:
    """Whether this Python and kernel can signal through pidfds (found out at first use)."""
    if _pidfd_works is not None:
        return _pidfd_works
    return hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for *pid*; ``None`` where pidfds do not work here. Raises
    ``ProcessLookupError`` when no process has that PID, or when it names a thread that
    is not its process's leader (``EINVAL``; ``ENOENT`` on newer kernels): the stopper
    signals processes only."""
    global _pidfd_works
    if not pidfd_supported():
        return None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError as error:
        if error.errno in (errno.EINVAL, errno.ENOENT):
            raise ProcessLookupError(errno.ESRCH, f"{pid} is not a process") from error
        if error.errno in (errno.ENOSYS, errno.EPERM):
            _pidfd_works = False  # an old kernel, or a seccomp filter that forbids it
        return None  # EMFILE and the like: fall back for this one process
    _pidfd_works = True
    return fd


class ProcessHandle:
    """A verified handle on one process: signals reach it, or nothing.

    Obtain one with :meth:`open`; close it (or use ``with``) when done.
    """

    def __init__(self, identity: Identity, pidfd: int | None, proc: str) -> None:
        self.identity = identity
        self.pidfd = pidfd
        self._proc = proc

    @classmethod
    def open(
        cls, identity: Identity, proc: str = "/proc", *, use_pidfd: bool = True
    ) -> ProcessHandle | None:
        """A handle on *identity*, or ``None`` when that process is gone or has exited
        (including when its PID now belongs to another process)."""
        pidfd = None
        if use_pidfd:
            try:
                pidfd = _open_pidfd(identity.pid)
            except ProcessLookupError:
                return None
        # read after the pidfd is open: a match proves the pidfd is this process
        stat = read_stat(identity.pid, proc)
        leader = pidfd is not None or _thread_group_leader(identity.pid, proc)
        if not identity.matches(stat) or stat is None or stat.exited or not leader:
            if pidfd is not None:
                os.close(pidfd)
            return None
        return cls(identity, pidfd, proc)

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def stat(self) -> ProcStat | None:
        """The process's stat now, or ``None`` when it is gone (its PID freed or reused)."""
        stat = read_stat(self.identity.pid, self._proc)
        return stat if self.identity.matches(stat) else None

    def exited(self) -> bool:
        """Whether the process has exited: gone, or a zombie its parent has not reaped."""
        if self.pidfd is not None:
            return _readable(self.pidfd, 0)
        stat = self.stat()
        return stat is None or stat.exited

    def send(self, signum: int) -> bool:
        """Send *signum*; ``False`` (and nothing sent) when the process has exited."""
        if self.exited():
            return False
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signum)
            else:
                # the start time was re-read just above, in exited()
                os.kill(self.identity.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def wait_exited(
        self,
        timeout_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> bool:
        """Wait up to *timeout_s* for the process to exit; whether it did.

        With a pidfd this blocks in ``poll()`` (readable once the process exits, whether or
        not it was reaped); without one it re-reads the stat at growing intervals
        (1 ms up to 50 ms), never busily.
        """
        deadline = clock() + max(timeout_s, 0.0)
        pause_s = 0.001
        while True:
            if self.exited():
                return True
            remaining_s = deadline - clock()
            if remaining_s <= 0:
                return False
            if self.pidfd is not None:
                _readable(self.pidfd, remaining_s)
            else:
                sleep(min(pause_s, remaining_s))
                pause_s = min(pause_s * 2, 0.05)


def _thread_group_leader(pid: int, proc: str) -> bool:
    """Whether *pid* is a process rather than one of its other threads (``Tgid`` in
    ``/proc/<pid>/status``): a signal to a thread's id reaches its whole process."""
    try:
        with open(f"{proc}/{pid}/status", "rb") as file:
            for line in file:
                if line.startswith(b"Tgid:"):
                    return line.split()[1:2] == [str(pid).encode()]
    except OSError:
        pass
    return False


def _readable(fd: int, timeout_s: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    # round up: poll(0.4 ms) must not become a busy poll(0); at most a minute per call,
    # since poll() takes a C int (the caller's loop waits again until its deadline)
    return bool(poller.poll(max(0, min(int(timeout_s * 1000 + 0.999), 60_000))))
