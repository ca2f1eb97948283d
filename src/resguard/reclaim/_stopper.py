"""The opt-in process stopper: the last rung, with every safety rule of the charter.

Processes are listed and verified through ``/proc`` on the linux backend (identity: PID
and start time in clock ticks), and through psutil where ``/proc`` cannot be read or the
backend is psutil (identity: PID and psutil's create time, with parent, owner and name).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from resguard._errors import InvalidType
from resguard._modules.log import emit, get_logger
from resguard._modules.render import ValueMixin, printable
from resguard._probes.backend import Backend, checked_backend
from resguard._probes.identity import (
    Identity,
    PortableHandle,
    PortableIdentity,
    PortableStat,
    ProcessHandle,
    ProcStat,
    boot_time_s,
    cmdline_of,
    my_uid,
    read_cmdline,
    read_portable,
    read_stat,
    same_start,
    same_user,
)
from resguard._probes.names import full_name, short_name
from resguard._probes.procfs import PAGE_SIZE, TICKS_PER_S
from resguard.reclaim._base import Cost
from resguard.reclaim._base import shown as _shown
from resguard.reclaim._checks import (
    BoundedMatcher,
    check_candidate,
    check_flag,
    compile_patterns,
    own_pids,
    protected_names,
)
from resguard.units import format_bytes

if TYPE_CHECKING:
    from resguard.snapshot import ProcessInfo

__all__ = [
    "ACTIONS_KEPT",
    "ProcessStopper",
    "StopAction",
    "StopCandidate",
    "protected_name",
    "protection_reason",
]

_logger = get_logger("resguard")
_warn = functools.partial(emit, _logger, logging.WARNING)  # a stop's line never raises

_ROW_START_TOLERANCE_S = 1.5 / TICKS_PER_S  # a table row's start time is rounded to a tick
_KILL_WAIT_S = 5.0  # how long to wait for a SIGKILLed process to become a zombie
_GONE = "gone before it was signalled (it exited, or its PID belongs to another process now)"
_UNVERIFIABLE = (
    "not verifiable here: listed without a {what}, which this platform's process "
    "reader identifies processes by"
)


@attrs.frozen
class StopCandidate(ValueMixin):
    """A process that matched a pattern: its exact identity, what it is, and why it is
    protected (``None`` when it may be stopped).

    The identity is the PID and the start time in clock ticks since boot (``start_ticks``,
    read from ``/proc``) or, where the processes are read through psutil, psutil's
    ``create_time`` with the parent (``ppid``); the other is ``None``.
    """

    pid: int
    start_ticks: int | None
    name: str
    cmdline: str
    uid: int | None
    rss: int
    protected: str | None
    create_time: float | None = None
    ppid: int | None = None

    @property
    def start_time_s(self) -> float | None:
        """The start time in epoch seconds, as the process table dates processes (boot time
        plus start ticks on Linux, psutil's create time elsewhere); ``None`` when unknown."""
        if self.create_time is not None:
            return self.create_time
        if self.start_ticks is None:
            return None
        return boot_time_s() + self.start_ticks / TICKS_PER_S

    def same_process(self, other: StopCandidate) -> bool:
        """Whether *other* is a reading of this very process: the same pid and exact start
        time (not an earlier or later process that had the pid)."""
        if self.pid != other.pid:
            return False
        if self.start_ticks is not None or other.start_ticks is not None:
            return self.start_ticks == other.start_ticks
        if self.create_time is None or other.create_time is None:
            return False
        return same_start(self.create_time, other.create_time)

    def is_row(self, row: ProcessInfo) -> bool:
        """Whether the process table's *row* is this process, not one whose pid it took:
        the same pid and start times that agree to a clock tick (the table dates Linux
        processes by ticks since boot); ``True`` when this start time is unknown."""
        start_s = self.start_time_s
        if row.pid != self.pid:
            return False
        return start_s is None or abs(row.create_time - start_s) <= _ROW_START_TOLERANCE_S


@attrs.frozen
class StopAction(ValueMixin):
    """What the process stopper did, or would do in dry-run.

    ``signal`` is the signal that ended the process (``"SIGTERM"`` when it exited within
    the grace period, ``"SIGKILL"`` only when escalation was needed), the signal a dry run
    would send first, or ``"none"`` when nothing was sent; ``done`` says whether the
    process is stopped (a zombie its parent has not reaped counts as stopped).
    """

    pid: int
    name: str
    cmdline: str
    rss: int
    signal: str
    done: bool
    reason: str
    start_ticks: int | None = None
    create_time: float | None = None
    refused: bool = False
    """Nothing was sent because the process may not be touched: protected, gone, changed
    since it was listed, or not verifiable here (``reason`` says which)."""


def _pid_rule(pid: int) -> str | None:
    """Why *pid* is never stopped whoever owns it: PID 1, groups, this process, its
    ancestors."""
    return protection_reason(pid, own_pids=own_pids(), same_user=True)


def protection_reason(
    pid: int,
    *,
    own_pids: tuple[int, ...],
    same_user: bool,
    kernel_thread: bool = False,
    name: str | None = None,
    protected_names: frozenset[str] = frozenset(),
) -> str | None:
    """Why the process *pid* must never be stopped, or ``None`` when it may be: the one
    rule of both paths. *own_pids* is this process, its parent, then its other ancestors
    (:func:`own_pids`); *same_user* is
    :func:`resguard._probes.identity.same_user` of its owner (``False`` wherever whose it
    is cannot be proved); *name* is checked against *protected_names*."""
    if pid <= 1:
        return "PID 1" if pid == 1 else "not one process (a group or every process)"
    if pid == own_pids[0]:
        return "this process"
    if pid == own_pids[1]:
        return "this process's parent"
    if pid in own_pids[2:]:
        return "an ancestor of this process (its shell, terminal or session)"
    if not same_user:
        return "another user's process"
    if kernel_thread:
        return "a kernel thread"
    if name is not None and protected_name(name, protected_names):
        return f"a protected name ({name})"
    return None


def protected_name(name: str, protected_names: frozenset[str]) -> bool:
    """Whether *name* is one of *protected_names*, compared in full and in the kernel's
    form (the first 15 characters, all that Linux's ``comm`` keeps): the one rule of both
    backends, whichever form a backend could read. A protected name therefore also covers
    a longer name that starts with the same 15 characters."""
    if name in protected_names:
        return True
    cut = short_name(name)
    return any(short_name(protected) == cut for protected in protected_names)


_Action = Callable[..., "StopAction"]
_AnyHandle = ProcessHandle | PortableHandle


def _action(
    candidate: StopCandidate, signal_name: str, done: bool, reason: str, refused: bool = False
) -> StopAction:
    return StopAction(
        candidate.pid,
        candidate.name,
        candidate.cmdline,
        candidate.rss,
        signal_name,
        done,
        reason,
        candidate.start_ticks,
        candidate.create_time,
        refused,
    )


_Opened = tuple["_AnyHandle | None", str, Callable[[], "str | None"]]


ACTIONS_KEPT = 1000
"""How many of its latest actions a :class:`ProcessStopper` keeps in ``actions``."""
_DRY_RUN_LOGGED_MAX = 4096  # identities remembered for logging a dry run once each


class _ProcessReader:
    """How the stopper reads and verifies processes (``/proc`` or psutil): a process
    listed as one (its start time read before and after its command line and owner), a
    handle opened on that very process with its protection re-read through it, and
    whether it exec()ed another program since it was listed. :class:`ProcessStopper`
    decides what to send; this says to what, and whether it is still that process."""

    patterns: tuple[re.Pattern[str], ...]
    protected_names: frozenset[str]
    _proc: str
    _backend: Backend
    _use_pidfd: bool
    _matcher: BoundedMatcher

    def _why_protected(self, pid: int, *, mine: bool, kernel_thread: bool, name: str) -> str | None:
        return protection_reason(
            pid,
            own_pids=own_pids(),
            same_user=mine,
            kernel_thread=kernel_thread,
            name=name,
            protected_names=self.protected_names,
        )

    @property
    def matcher(self) -> BoundedMatcher:
        """How the patterns are matched, none able to hang this process (see ``refused``)."""
        if getattr(self, "_matcher", None) is None or self._matcher.patterns is not self.patterns:
            self._matcher = BoundedMatcher(self.patterns)
        return self._matcher

    def _matches(self, name: str, command: str) -> bool:
        """Whether a pattern matches *name* or *command*, each cut to ``MATCHED_CHARS``."""
        return self.matcher.matches(name, command)

    def _prepare(self, pids: list[int]) -> None:
        """The costly patterns matched against every listed process at once (one child)."""
        if self.matcher.costly:
            argvs = [(read_stat(pid, self._proc), read_cmdline(self._proc, pid)) for pid in pids]
            names = [(full_name(st.name, argv), argv) for st, argv in argvs if st is not None]
            self.matcher.prepare(t for n, argv in names for t in (n, " ".join(argv) or n))

    def _portable(self) -> bool:
        """Whether processes are read through psutil: the psutil backend, or no /proc."""
        return self._backend == "psutil" or not os.path.exists(f"{self._proc}/self/stat")

    def _linux_candidates(self) -> list[StopCandidate]:
        found: list[StopCandidate] = []
        try:
            entries = list(os.scandir(self._proc))
        except OSError:
            return []
        self._prepare([int(entry.name) for entry in entries if entry.name.isdigit()])
        for entry in entries:
            if entry.name.isdigit():
                candidate = self._linux_candidate(int(entry.name), entry)
                if candidate is not None:
                    found.append(candidate)
        return found

    def _portable_candidates(self) -> list[StopCandidate]:
        import psutil

        try:
            listed = list(psutil.process_iter())
        except Exception:  # psutil.Error, OSError or anything odd: nothing to stop
            return []
        found = []
        looked: list[tuple[Any, str, str]] = []
        for process in listed:
            try:  # a cheap first look through psutil's cached Process
                name = process.name()
                command = " ".join(process.cmdline()) or name
            except Exception:
                continue
            if isinstance(name, str):
                looked.append((process, name, command))
        self.matcher.prepare(text for _, name, command in looked for text in (name, command))
        for process, name, command in looked:
            if self._matches(name, command):
                candidate = self._portable_candidate(process.pid)
                if candidate is not None:
                    found.append(candidate)
        return found

    def _portable_candidate(self, pid: int) -> StopCandidate | None:
        """*pid* read afresh, its command line, and afresh again: the same process."""
        first = read_portable(pid)
        if first is None or first[1].exited:
            return None
        process, stat = first
        try:
            command = " ".join(process.cmdline()) or stat.name
        except Exception:
            return None
        second = read_portable(pid)
        if not self._matches(stat.name, command) or second is None:
            return None
        if not same_start(second[1].create_time, stat.create_time):
            return None  # its PID changed hands while it was read
        return StopCandidate(
            pid=pid,
            start_ticks=None,
            name=stat.name,
            cmdline=command,
            uid=stat.uid,
            rss=stat.rss,
            protected=self._why_protected(
                pid, mine=stat.same_user, kernel_thread=stat.kernel_thread, name=stat.name
            ),
            create_time=stat.create_time,
            ppid=stat.ppid,
        )

    def _changed_linux(self, candidate: StopCandidate, handle: ProcessHandle) -> str | None:
        """Why the process is no longer what was listed (it exec()ed another program), or
        ``None``; its command line is read before its start ticks, so it is its own."""
        argv = read_cmdline(self._proc, candidate.pid)
        stat = handle.stat()
        if stat is None:
            return None  # gone: sending says so
        return self._changed(candidate, full_name(stat.name, argv), argv)

    def _changed_portable(self, candidate: StopCandidate) -> str | None:
        """:meth:`_changed_linux` on the portable path: the command line (read only while
        the PID has the listed create time), then the process afresh, the same one."""
        created = candidate.create_time or 0.0
        argv = cmdline_of(candidate.pid, created)
        read = read_portable(candidate.pid)
        if read is None or read[1].exited or not same_start(read[1].create_time, created):
            return None  # gone: sending says so
        return self._changed(candidate, read[1].name, argv)

    def _changed(self, candidate: StopCandidate, name: str, argv: tuple[str, ...]) -> str | None:
        """Why a process now called *name* with *argv* is not the listed *candidate*: another
        name, or a command line no pattern matches (new arguments that match are fine)."""
        command = " ".join(argv) or name
        if name != candidate.name or not self._matches(name, command):
            return f"changed since it was listed: now {name!r} ({command!r})"
        return None

    def _linux_candidate(self, pid: int, entry: os.DirEntry[str] | None) -> StopCandidate | None:
        """*pid* read from ``/proc`` as one process: its start time is read before and after
        its command line and owner, and a process whose PID changed hands in between (or that
        matches no pattern) is left out."""
        proc = self._proc
        first = read_stat(pid, proc)
        if first is None or first.exited:
            return None
        try:
            st = (
                entry.stat(follow_symlinks=False) if entry is not None else os.stat(f"{proc}/{pid}")
            )
        except OSError:
            return None
        argv = read_cmdline(proc, pid)
        name = full_name(first.name, argv)
        command = " ".join(argv) or name
        if not self._matches(name, command):
            return None
        second = read_stat(pid, proc)
        if second is None or second.start_ticks != first.start_ticks:
            return None  # gone, or its PID changed hands while it was read
        return StopCandidate(
            pid=pid,
            start_ticks=first.start_ticks,
            name=name,
            cmdline=command,
            uid=st.st_uid,
            rss=first.rss_pages * PAGE_SIZE,
            protected=self._why_protected(
                pid,
                mine=same_user(st.st_uid, my_uid()),
                kernel_thread=first.kernel_thread,
                name=name,
            ),
        )

    @contextlib.contextmanager
    def _opened(self, candidate: StopCandidate) -> Iterator[_Opened]:
        """A handle on *candidate* with its protection re-read through it (the owner, name and
        kernel-thread flag of that very process), and what says whether it exec()ed another
        program since it was listed; or ``None`` and why not (gone, unverifiable, protected)."""
        opened: str | tuple[_AnyHandle, bool, ProcStat | PortableStat | None] = (
            self._open_portable(candidate) if self._portable() else self._open_linux(candidate)
        )
        if isinstance(opened, str):
            yield None, opened, lambda: None
            return
        handle, mine, stat = opened
        with handle:
            reason = (
                self._why_protected(
                    candidate.pid, mine=mine, kernel_thread=stat.kernel_thread, name=stat.name
                )
                if stat is not None
                else None
            )
            if reason is not None:
                yield None, f"protected: {reason}", lambda: None
            elif isinstance(handle, ProcessHandle):
                linux = handle
                yield handle, "", lambda: self._changed_linux(candidate, linux)
            else:
                yield handle, "", lambda: self._changed_portable(candidate)

    def _open_linux(
        self, candidate: StopCandidate
    ) -> str | tuple[ProcessHandle, bool, ProcStat | None]:
        if candidate.start_ticks is None:
            return _UNVERIFIABLE.format(what="start time in clock ticks")
        identity = Identity(candidate.pid, candidate.start_ticks)
        handle = ProcessHandle.open(identity, self._proc, use_pidfd=self._use_pidfd)
        if handle is None:
            return _GONE
        try:
            uid: int | None = os.stat(f"{self._proc}/{candidate.pid}").st_uid
        except OSError:
            uid = None
        stat = handle.stat()  # the owner read above is this process's
        return handle, same_user(uid, my_uid()), stat

    def _open_portable(
        self, candidate: StopCandidate
    ) -> str | tuple[PortableHandle, bool, PortableStat | None]:
        if candidate.create_time is None or candidate.ppid is None:
            return _UNVERIFIABLE.format(what="psutil create time")
        identity = PortableIdentity(
            candidate.pid, candidate.create_time, candidate.ppid, candidate.uid, candidate.name
        )
        handle = PortableHandle.open(identity, use_pidfd=self._use_pidfd)
        if handle is None:  # gone, or the same process under another name now
            return self._changed_portable(candidate) or _GONE
        stat = handle.stat()
        return handle, stat is not None and stat.same_user, stat


class ProcessStopper(_ProcessReader):
    """The opt-in last step: stop processes whose name or command line matches a pattern.

    Off unless constructed with ``enabled=True``; with ``dry_run=True`` (the default) it
    only reports what it would do. It sends SIGTERM, then SIGKILL after *grace*. It never
    touches PID 1, this process, its parent, a process of another user, a kernel thread or
    a process named in :data:`DEFAULT_PROTECTED_NAMES` or *protect*.

    A process is identified by its PID and exact start time; on Linux >= 5.3 the signals
    go through a pidfd opened while that identity is verified, so a process that took over
    a PID is never signalled (elsewhere the start time is re-checked before each signal).
    Where ``/proc`` cannot be read (macOS, Windows) or the backend is psutil, the start
    time is psutil's create time, checked with the parent, owner and name before each
    signal; where there is no SIGKILL (Windows) psutil's ``kill()`` escalates.
    A process that exits, even as a zombie its parent has not reaped yet, counts as
    stopped at once: the grace wait ends there.

    *backend* (``"linux"`` or ``"psutil"``; ``None``: the process's default backend, as
    for :class:`~resguard.processes.ProcessTable`) says how processes are listed and
    verified.
    """

    name = "stop processes"
    cost = Cost.PROCESS

    def __init__(
        self,
        patterns: Iterable[str | re.Pattern[str]],
        *,
        enabled: bool = False,
        dry_run: bool = True,
        grace: float | str = "5s",
        protect: Iterable[str] = (),
        backend: Backend | None = None,
    ) -> None:
        from resguard.units import parse_duration

        chosen = checked_backend(backend)
        compiled = compile_patterns(patterns)
        enabled = check_flag(enabled, "enabled")
        dry_run = check_flag(dry_run, "dry_run")
        grace_s = parse_duration(grace)
        protected = protected_names(protect)
        self.patterns = compiled
        self.enabled = enabled
        self.dry_run = dry_run
        self.grace_s = grace_s
        self.protected_names = protected
        self.actions: list[StopAction] = []
        self._dry_run_logged: set[tuple[int, int | None, float | None]] = set()
        self._proc = "/proc"
        self._backend: Backend = chosen
        self._use_pidfd = True  # tests turn it off to exercise the fallback
        self._clock: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], None] = time.sleep

    @property
    def backend(self) -> Backend:
        """How processes are listed and verified: ``"linux"`` or ``"psutil"``."""
        return self._backend

    @staticmethod
    def protected(pid: int, uid: int | None) -> str | None:
        """Why *pid* must never be stopped, or ``None`` when it may be (by pid and owner;
        where uids cannot be compared, as on Windows, every process is another user's)."""
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise InvalidType(f"pid={_shown(pid)} is not a process id; expected an integer")
        return protection_reason(pid, own_pids=own_pids(), same_user=same_user(uid, my_uid()))

    def candidates(self) -> list[StopCandidate]:
        """Matching processes, largest first, each with the reason it is protected (or None).

        Each is read as one process: its start time is read before and after its command
        line and owner, and a process whose PID changed hands in between is left out.
        """
        found = self._portable_candidates() if self._portable() else self._linux_candidates()
        found.sort(key=lambda candidate: candidate.rss, reverse=True)
        return found

    def candidate(self, pid: int) -> StopCandidate | None:
        """*pid* as :meth:`candidates` would list it (read as one process, with the reason
        it is protected), or ``None`` when it is gone, has exited or matches no pattern."""
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise InvalidType(f"pid={_shown(pid)} is not a process id; expected an integer")
        if pid <= 0:
            return None
        if self._portable():
            return self._portable_candidate(pid)
        return self._linux_candidate(pid, None)

    def reclaimable_bytes(self) -> int:
        if not self.enabled:
            return 0
        return sum(candidate.rss for candidate in self.candidates() if candidate.protected is None)

    def reclaim(self, target_bytes: int) -> int:
        if isinstance(target_bytes, bool) or not isinstance(target_bytes, int):
            raise InvalidType(
                f"{_shown(target_bytes)} is not a number of bytes; expected an integer"
            )
        if not self.enabled:
            return 0
        freed = 0
        for candidate in self.candidates():
            if freed >= target_bytes:
                break
            action = self.stop(candidate)
            self.actions.append(action)
            if len(self.actions) > ACTIONS_KEPT:  # a long WARNING must not grow it forever
                del self.actions[:-ACTIONS_KEPT]
            if action.done or action.reason.startswith("dry run"):
                freed += candidate.rss
        return freed

    def stop(self, candidate: StopCandidate, *, log: bool = True) -> StopAction:
        """Stop one candidate (as :meth:`candidates` listed it) and say what happened.

        Nothing is sent when it is protected, in dry run, or when the process with that
        identity has exited or its PID belongs to another process now. *log*: warn what
        was sent (``False`` for a caller that records its actions itself, as the
        guardian's journal does).
        """
        check_candidate(candidate)
        action = functools.partial(_action, candidate)
        reason = candidate.protected or _pid_rule(candidate.pid)
        if reason is not None:
            return action("none", False, f"protected: {reason}", True)
        if not self.enabled:
            return action("none", False, "not enabled")
        if self.dry_run:
            self._log_dry_run(candidate)
            return action(
                "SIGTERM",
                False,
                f"dry run: would send SIGTERM, then SIGKILL after {self.grace_s:g} s",
            )
        result = self._stop_verified(candidate, action)
        if log and (result.signal != "none" or result.done):
            name, rss = printable(candidate.name), format_bytes(candidate.rss)
            why = (result.signal, result.reason)
            _warn("stopping pid %d (%s, %s): %s, %s", candidate.pid, name, rss, *why)
        return result

    def _stop_verified(self, candidate: StopCandidate, action: _Action) -> StopAction:
        with self._opened(candidate) as (handle, refusal, changed):
            if handle is None:
                return action("none", False, refusal, True)
            if isinstance(handle, ProcessHandle):
                return self._terminate(handle, action, changed)
            import psutil

            try:
                return self._terminate(handle, action, changed)
            except psutil.AccessDenied as error:  # psutil's kill(), where there is no SIGKILL
                return action("none", False, f"not permitted: {error.msg or 'access denied'}")

    @contextlib.contextmanager
    def verified(self, candidate: StopCandidate) -> Iterator[tuple[_AnyHandle | None, str]]:
        """A handle on *candidate* for an action other than :meth:`stop` (pause, resume,
        renice), verified as :meth:`stop` verifies before its first signal: not protected
        (re-read through the handle), the same process by its exact start time (held
        through a pidfd where the kernel has one), still matching a pattern. Yields
        ``(handle, "")`` or ``(None, why not)``: every refusal is one of those checks (the
        process may not be touched), never a failure; ``enabled`` and ``dry_run`` are the
        caller's to honour."""
        check_candidate(candidate)
        reason = candidate.protected or _pid_rule(candidate.pid)
        if reason is not None:
            yield None, f"protected: {reason}"
            return
        with self._opened(candidate) as (handle, refusal, changed):
            why = refusal if handle is None else changed()
            yield (handle, "") if why is None else (None, why)

    def _log_dry_run(self, candidate: StopCandidate) -> None:
        """Warn what a dry run would stop, once per process rather than once per climb."""
        seen = (candidate.pid, candidate.start_ticks, candidate.create_time)
        if seen in self._dry_run_logged:
            return
        if len(self._dry_run_logged) >= _DRY_RUN_LOGGED_MAX:
            self._dry_run_logged.clear()
        self._dry_run_logged.add(seen)
        name, rss = printable(candidate.name), format_bytes(candidate.rss)
        _warn("dry run: would stop pid %d (%s, %s)", candidate.pid, name, rss)

    def _terminate(
        self,
        handle: ProcessHandle | PortableHandle,
        action: _Action,
        changed: Callable[[], str | None],
    ) -> StopAction:
        try:
            return self._signal(handle, action, changed)
        except PermissionError as error:
            return action("none", False, f"not permitted: {error.strerror}")
        except OSError as error:  # a platform's own refusal (Windows' errnos)
            return action("none", False, f"could not be signalled: {error.strerror or error}")

    def _signal(
        self,
        handle: ProcessHandle | PortableHandle,
        action: _Action,
        changed: Callable[[], str | None],
    ) -> StopAction:
        """SIGTERM, then SIGKILL after the grace period; before each, *changed* says why
        the process is no longer what was listed (then nothing more is sent)."""
        reason = changed()
        if reason is not None:
            return action("none", False, reason, True)
        if not handle.send(signal.SIGTERM):
            return action("none", True, "exited before it was signalled")
        if handle.wait_exited(self.grace_s, clock=self._clock, sleep=self._sleep):
            return action("SIGTERM", True, "exited within the grace period after SIGTERM")
        reason = changed()
        if reason is not None:
            return action("SIGTERM", False, f"not killed: {reason}")
        if not handle.kill():
            return action("SIGTERM", True, "exited at the end of the grace period")
        if handle.wait_exited(_KILL_WAIT_S, clock=self._clock, sleep=self._sleep):
            return action(
                "SIGKILL", True, f"still running {self.grace_s:g} s after SIGTERM; killed"
            )
        return action(
            "SIGKILL", False, f"still running {_KILL_WAIT_S:g} s after SIGKILL (uninterruptible?)"
        )
