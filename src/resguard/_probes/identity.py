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

import abc
import errno
import math
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import attrs

from resguard._probes.files import read_bytes
from resguard._probes.names import clean_text
from resguard._probes.procfs import TICKS_PER_S, parse_btime, parse_cmdline

if TYPE_CHECKING:
    import psutil

__all__ = [
    "SAME_START_S",
    "STAT_READ_BYTES",
    "Identity",
    "PortableHandle",
    "PortableIdentity",
    "PortableStat",
    "ProcStat",
    "ProcessHandle",
    "boot_clock_s",
    "boot_time_s",
    "clock_boot_time_s",
    "cmdline_of",
    "my_uid",
    "parse_stat",
    "pidfd_supported",
    "proc_cmdline_of",
    "read_cmdline",
    "read_portable",
    "read_stat",
    "same_start",
    "same_user",
]

SAME_START_S = 1e-3
"""Two start times (epoch seconds) within this of each other are one process's: psutil
reads them to microseconds (macOS, Windows) or to a clock tick (10 ms on Linux, where a
later process with the PID has a later tick), so nothing finer can tell two apart."""
PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread


def _forget_psutil_processes() -> None:
    """In a forked child: drop ``process_iter()``'s cached ``psutil.Process`` objects.
    Each has a lock that a parent's thread may have held at the fork, which nothing in the
    child would ever release."""
    psutil = sys.modules.get("psutil")
    iterate = getattr(psutil, "process_iter", None)
    clear = getattr(iterate, "cache_clear", None)
    cache = getattr(psutil, "_pmap", None)  # what cache_clear() clears (older psutil)
    try:
        if callable(clear):
            clear()
        elif isinstance(cache, dict):
            cache.clear()
    except Exception:  # a child must start even if the cache cannot be cleared
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_psutil_processes)


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


STAT_READ_BYTES = 1 << 20
"""The most read of ``/proc/stat``: btime follows the per-interrupt counts, far down on
big machines."""


def boot_clock_s() -> float | None:
    """Seconds since boot by ``CLOCK_BOOTTIME``; ``None`` where there is none."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return None
    try:
        return time.clock_gettime(boottime)
    except OSError:
        return None


def clock_boot_time_s() -> float:
    """The boot time as the clock minus ``CLOCK_BOOTTIME`` (``0.0`` without it)."""
    uptime_s = boot_clock_s()
    return time.time() - uptime_s if uptime_s is not None else 0.0


def boot_time_s(proc: str = "/proc") -> float:
    """The boot time (epoch seconds) in *proc*'s ``stat``, else :func:`clock_boot_time_s`:
    what the linux process table dates processes by (boot time + start ticks)."""
    raw = read_bytes(f"{proc}/stat", STAT_READ_BYTES)
    btime = parse_btime(raw.decode("ascii", "replace")) if raw is not None else None
    return btime if btime is not None else clock_boot_time_s()


def read_cmdline(proc: str, pid: int) -> tuple[str, ...]:
    """``/proc/<pid>/cmdline`` as its arguments; ``()`` when it cannot be read."""
    return parse_cmdline(read_bytes(f"{proc}/{pid}/cmdline") or b"")


def proc_cmdline_of(proc: str, pid: int, create_time_s: float, booted_s: float) -> tuple[str, ...]:
    """*pid*'s command line from *proc* while it is still the process that started at
    *create_time_s* (a linux row's, dated from the boot time *booted_s*); ``()``
    otherwise. The start ticks are read *after* the command line: a match then proves the
    line was this process's (a newcomer on the PID has later ticks)."""
    cmdline = read_cmdline(proc, pid)
    stat = read_stat(pid, proc)
    row_ticks = round((create_time_s - booted_s) * TICKS_PER_S)
    return cmdline if stat is not None and stat.start_ticks == row_ticks else ()


def read_stat(pid: int, proc: str = "/proc") -> ProcStat | None:
    """*pid*'s stat, or ``None`` when it is gone, unreadable or damaged."""
    raw = read_bytes(f"{proc}/{pid}/stat", 4096)
    if raw is None:
        return None
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
    return (
        hasattr(os, "pidfd_open")
        and hasattr(signal, "pidfd_send_signal")
        and hasattr(select, "poll")  # an exited process is seen by polling its pidfd
    )


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


_T = TypeVar("_T")
_H = TypeVar("_H", bound="_Handle")


def _open_verified(
    pid: int, use_pidfd: bool, verify: Callable[[int | None], _T | None]
) -> tuple[int | None, _T] | None:
    """A pidfd for *pid* (where pidfds work and *use_pidfd*) and what *verify* found with
    it, or ``None`` (the pidfd closed) when *pid* is gone or *verify* refuses it.

    *verify* runs after the pidfd is open: a process that still matches then proves the
    pidfd is that very process, not a newcomer that took its PID.
    """
    pidfd = None
    if use_pidfd:
        try:
            pidfd = _open_pidfd(pid)
        except ProcessLookupError:
            return None
    try:
        verified = verify(pidfd)
    except BaseException:
        if pidfd is not None:
            os.close(pidfd)
        raise
    if verified is None:
        if pidfd is not None:
            os.close(pidfd)
        return None
    return pidfd, verified


class _Handle(abc.ABC):
    """What both handles share: the pidfd (or ``None``), closing it, and waiting for the
    process to exit."""

    pidfd: int | None

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    @abc.abstractmethod
    def exited(self) -> bool:
        """Whether the process has exited."""

    def wait_exited(
        self,
        timeout_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> bool:
        """Wait up to *timeout_s* for the process to exit; whether it did.

        With a pidfd this blocks in ``poll()`` (readable once the process exits, whether or
        not it was reaped); without one it re-reads the process at growing intervals
        (1 ms up to 50 ms), never busily.
        """
        return _wait_exited(self.exited, self.pidfd, timeout_s, clock, sleep)

    def _signal(self, pid: int, signum: int) -> None:
        """Send *signum* through the pidfd where there is one, else by *pid* (which the
        caller has just verified); ``ProcessLookupError`` when it has exited."""
        if self.pidfd is not None:
            signal.pidfd_send_signal(self.pidfd, signum)
        else:
            os.kill(pid, signum)  # Windows: TerminateProcess for SIGTERM


class ProcessHandle(_Handle):
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

        def verify(pidfd: int | None) -> ProcStat | None:
            stat = read_stat(identity.pid, proc)
            leader = pidfd is not None or _thread_group_leader(identity.pid, proc)
            if stat is None or not identity.matches(stat) or stat.exited or not leader:
                return None
            return stat

        opened = _open_verified(identity.pid, use_pidfd, verify)
        return None if opened is None else cls(identity, opened[0], proc)

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
            self._signal(self.identity.pid, signum)  # its start time re-read in exited()
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> bool:
        """Send SIGKILL; ``False`` (and nothing sent) when the process has exited."""
        return self.send(signal.SIGKILL)


def _wait_exited(
    exited: Callable[[], bool],
    pidfd: int | None,
    timeout_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> bool:
    deadline = clock() + max(timeout_s, 0.0)
    pause_s = 0.001
    while True:
        if exited():
            return True
        remaining_s = deadline - clock()
        if remaining_s <= 0:
            return False
        if pidfd is not None:
            _readable(pidfd, remaining_s)
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
    poller = select.poll()  # only with a pidfd: pidfd_supported() checked poll() exists
    poller.register(fd, select.POLLIN)
    # round up: poll(0.4 ms) must not become a busy poll(0); at most a minute per call,
    # since poll() takes a C int (the caller's loop waits again until its deadline)
    return bool(poller.poll(max(0, min(int(timeout_s * 1000 + 0.999), 60_000))))


# ---------------------------------------------------------------------------------------
# The portable path: psutil, where /proc cannot be read or the backend is psutil


@attrs.frozen
class PortableStat:
    """What psutil says about one process now, read afresh (never psutil's cached
    ``Process`` of ``process_iter``, which remembers a reused PID's old start time).

    ``uid`` is the owner when the real and effective uids agree (``None`` when they differ
    or the platform has none, as on Windows); ``same_user`` says whether it is this
    process's user, by :func:`same_user` (never where uids cannot be compared).
    """

    pid: int
    create_time: float
    name: str
    ppid: int
    uid: int | None
    same_user: bool
    rss: int
    exited: bool
    kernel_thread: bool


@attrs.frozen
class PortableIdentity:
    """One process on the portable path: its PID and psutil's create time, with the
    parent, owner and name it had when it was listed (all checked before each signal)."""

    pid: int
    create_time: float
    ppid: int
    uid: int | None
    name: str

    def matches(self, stat: PortableStat | None) -> bool:
        return (
            stat is not None
            and same_start(stat.create_time, self.create_time)
            and (stat.ppid, stat.uid, stat.name) == (self.ppid, self.uid, self.name)
        )


def my_uid() -> int | None:
    """This process's real uid; ``None`` where the platform has none (Windows)."""
    getuid = getattr(os, "getuid", None)
    return getuid() if getuid is not None else None


def same_user(process_uid: int | None, mine: int | None) -> bool:
    """Whether a process owned by *process_uid* is this user's (*mine*, as :func:`my_uid`
    gives it): only when both uids are known and equal. Where they cannot be compared (no
    ``os.getuid``, a process without ``uids()``, real and effective uids that differ) the
    process counts as another user's, so the stopper never signals it."""
    return process_uid is not None and mine is not None and process_uid == mine


def same_start(a_s: float, b_s: float) -> bool:
    """Whether two start times (epoch seconds) are one process's (see :data:`SAME_START_S`)."""
    return abs(a_s - b_s) <= SAME_START_S


def cmdline_of(pid: int, create_time_s: float) -> tuple[str, ...]:
    """*pid*'s command line through psutil while it is still the process that started at
    *create_time_s*; ``()`` when it is gone, another process now, not ours to read, or
    psutil answers oddly (a command line must never be another process's)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if not same_start(process.create_time(), create_time_s):
            return ()
        parts: object = process.cmdline()  # a platform's psutil may answer oddly
    except Exception:  # psutil.Error, OSError or anything odd: no command line
        return ()
    if not isinstance(parts, list):
        return ()
    return tuple(clean_text(part) for part in parts if isinstance(part, str) and part)


def read_portable(pid: int) -> tuple[psutil.Process, PortableStat] | None:
    """A fresh ``psutil.Process`` for *pid* and what it says now, or ``None`` when it is
    gone, a zombie macOS will not describe, cannot be read, or answers oddly (``None``
    where a value was promised): what cannot be read cannot be verified."""
    import psutil

    try:
        process = psutil.Process(pid)
        with process.oneshot():
            exited = process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
            return _portable_stat(process, exited)
    except Exception:  # psutil.Error, OSError, or anything odd from a platform's psutil
        return None


def _portable_stat(
    process: psutil.Process, exited: bool
) -> tuple[psutil.Process, PortableStat] | None:
    created, name, ppid = process.create_time(), process.name(), process.ppid()
    name = clean_text(name) if isinstance(name, str) else name
    rss = getattr(process.memory_info(), "rss", None)
    uid: int | None = None
    if hasattr(process, "uids"):  # not on Windows: there whose process it is is unknown
        uids = process.uids()
        real, effective = getattr(uids, "real", None), getattr(uids, "effective", None)
        uid = real if _whole(real) and real == effective else None
    if not (isinstance(created, float) and math.isfinite(created) and created > 0):
        return None
    if not (isinstance(name, str) and _whole(ppid) and isinstance(rss, int) and _whole(rss)):
        return None
    pid = process.pid
    kernel_thread = sys.platform.startswith("linux") and 2 in (pid, ppid)  # kthreadd's own
    mine = same_user(uid, my_uid())
    stat = PortableStat(pid, created, name, ppid, uid, mine, rss, exited, kernel_thread)
    return process, stat


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class PortableHandle(_Handle):
    """A verified handle on one process on the portable path: signals reach it, or nothing.

    Obtain one with :meth:`open`; close it (or use ``with``) when done. Before every
    signal the process is read afresh and must still match its identity; where the
    platform has pidfds one is opened before the first check, so the signals go to that
    very process.
    """

    def __init__(
        self, identity: PortableIdentity, process: psutil.Process, pidfd: int | None
    ) -> None:
        self.identity = identity
        self.pidfd = pidfd
        self._process = process

    @classmethod
    def open(cls, identity: PortableIdentity, *, use_pidfd: bool = True) -> PortableHandle | None:
        """A handle on *identity*, or ``None`` when that process is gone, has exited, or
        its PID, parent, owner or name no longer match."""

        def verify(pidfd: int | None) -> psutil.Process | None:
            # Linux lets a thread's id stand for its process: without a pidfd, refuse threads
            thread = pidfd is None and os.path.isdir("/proc/self/task")
            if thread and not _thread_group_leader(identity.pid, "/proc"):
                return None
            read = read_portable(identity.pid)
            if read is None or read[1].exited or not identity.matches(read[1]):
                return None
            return read[0]

        opened = _open_verified(identity.pid, use_pidfd, verify)
        return None if opened is None else cls(identity, opened[1], opened[0])

    def stat(self) -> PortableStat | None:
        """What the process says now, or ``None`` when it is gone or no longer matches."""
        read = read_portable(self.identity.pid)
        if read is None or read[1].exited:
            return None
        return read[1] if self.identity.matches(read[1]) else None

    def exited(self) -> bool:
        """Whether the process has exited: gone, a zombie, or its PID is another's now
        (one that exec()ed another program has not: :meth:`send` refuses it)."""
        if self.pidfd is not None:
            return _readable(self.pidfd, 0)
        read = read_portable(self.identity.pid)
        return (
            read is None
            or read[1].exited
            or not same_start(read[1].create_time, self.identity.create_time)
        )

    def send(self, signum: int) -> bool:
        """Send *signum* after verifying the process afresh; ``False`` (and nothing sent)
        when it has exited or no longer matches. ``PermissionError`` when refused."""
        if self.stat() is None or (self.pidfd is not None and self.exited()):
            return False
        try:
            self._signal(self.identity.pid, signum)  # verified just above
        except ProcessLookupError:
            return False
        except PermissionError:
            raise
        except OSError:  # Windows says "gone" with other errnos: refuse only the living
            if self.stat() is None:
                return False
            raise
        return True

    def kill(self) -> bool:
        """SIGKILL where the platform has it, else psutil's ``kill()``, after verifying
        the process afresh; ``psutil.AccessDenied`` (or ``PermissionError``) when refused."""
        sigkill = getattr(signal, "SIGKILL", None)
        if sigkill is not None:
            return self.send(sigkill)
        import psutil

        if self.stat() is None:
            return False
        try:
            self._process.kill()
        except psutil.NoSuchProcess:
            return False
        return True
