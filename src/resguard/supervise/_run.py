"""The supervisor's I/O: start the command in its budget, wait for it or a signal, forward
signals, journal each start and exit, and follow :class:`~resguard.supervise.Plan`.

The child stays in resguard's process group, so it keeps the terminal (an interactive
command works) and a terminal's Ctrl-C or Ctrl-\\ reaches it from the kernel directly:
resguard then does not forward that SIGINT/SIGQUIT again (one Ctrl-C is one SIGINT).
SIGTERM, SIGINT and SIGQUIT ask for a stop: the child gets the signal, is not restarted,
and gets SIGKILL after ``stop_timeout_s`` or at a second stop signal (a second Ctrl-C).
SIGHUP, SIGUSR1 and SIGUSR2 are forwarded only; a child that one of them ends (its default
action) was stopped by the user, not crashed, and is not restarted. Waiting is on a pidfd
and the signal wakeup pipe together: no polling, no SIGCHLD.
"""

from __future__ import annotations

import os
import secrets
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import attrs

from resguard._errors import InvalidState
from resguard.supervise._budget import (
    Budget,
    Cgroup,
    cgroup_problem,
    choose_budget,
    limit_address_space,
)
from resguard.supervise._journal import RunJournal
from resguard.supervise._policy import (
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_BACKOFF_S,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_RESTART,
    DEFAULT_STABLE_S,
    DEFAULT_STOP_TIMEOUT_S,
    Backoff,
    Decision,
    Exit,
    Plan,
    RestartPolicy,
    check_cap,
    check_policy,
    check_seconds,
    signal_name,
)
from resguard.supervise._spawn import NotStarted, spawn
from resguard.units import format_duration

__all__ = ["FORWARDED", "RunConfig", "Supervisor"]

FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
"""The signals resguard run catches and forwards (names: not every platform has them all)."""
_STOPS = frozenset({"SIGTERM", "SIGINT", "SIGQUIT"})
_TERMINAL_SIGNALS = frozenset({"SIGINT", "SIGQUIT"})


_REMOVE_TIMEOUT_S = 5.0


@attrs.frozen
class RunConfig:
    """What ``resguard run`` was asked to do (the CLI's flags, parsed), checked when made:
    :class:`~resguard.InvalidType` or :class:`~resguard.InvalidValue` quoting a value it
    cannot use (the CLI relies on these checks)."""

    argv: tuple[str, ...]
    memory_bytes: int | None = None
    restart: RestartPolicy = DEFAULT_RESTART
    max_restarts: int = DEFAULT_MAX_RESTARTS
    backoff_s: float = DEFAULT_BACKOFF_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    stable_s: float = DEFAULT_STABLE_S
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S
    journal: str | None = None
    cgroup_parent: str | None = None

    def __attrs_post_init__(self) -> None:
        check_policy(self.restart, self.max_restarts)
        check_seconds("backoff_s", self.backoff_s)
        check_seconds("backoff_max_s", self.backoff_max_s)
        check_cap("backoff_max_s", self.backoff_max_s, "backoff_s", self.backoff_s)
        check_seconds("stable_s", self.stable_s, positive=True)
        check_seconds("stop_timeout_s", self.stop_timeout_s)

    def plan(self) -> Plan:
        return Plan(
            self.restart,
            self.max_restarts,
            Backoff(self.backoff_s, self.backoff_max_s),
            self.stable_s,
        )


class _Inbox:
    """The signals that came, read from the wakeup pipe (their numbers as bytes)."""

    def __init__(self, read_fd: int) -> None:
        self.fd = read_fd

    def wait(self, fds: list[int], timeout_s: float | None) -> None:
        with suppress(InterruptedError):
            select.select([self.fd, *fds], [], [], timeout_s)

    def take(self) -> list[int]:
        try:
            return list(os.read(self.fd, 256))
        except BlockingIOError:
            return []


@contextmanager
def _signals_caught() -> Iterator[_Inbox]:
    """Catch the forwarded signals (none of them ends resguard meanwhile) into an inbox."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous: dict[int, Any] = {}
    old_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    try:
        for number in (getattr(signal, name) for name in FORWARDED):
            previous[number] = signal.signal(number, lambda signum, frame: None)
        yield _Inbox(read_fd)
    finally:
        for caught, handler in previous.items():
            signal.signal(caught, handler)
        signal.set_wakeup_fd(old_wakeup)
        os.close(read_fd)
        os.close(write_fd)


def _foreground_of_terminal() -> bool:
    """Whether resguard's process group is the foreground of the terminal on stdin."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def _terminal_delivered(number: int) -> bool:
    """Whether the terminal sent *number* to the child already (Ctrl-C in the foreground;
    the child then shares resguard's process group)."""
    return signal_name(number) in _TERMINAL_SIGNALS and _foreground_of_terminal()


class Supervisor:
    """Runs :class:`RunConfig` to its end; :meth:`run` returns the exit code."""

    def __init__(
        self,
        config: RunConfig,
        journal: RunJournal,
        *,
        budget: Budget | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.journal = journal
        self.budget = budget
        self.plan = config.plan()
        self._clock = clock
        self.cgroup: Cgroup | None = None
        self._killed = False  # the current run got its SIGKILL
        self._not_started = ""  # why the last start failed, in words
        # in a terminal's foreground the child shares resguard's group (it keeps the
        # terminal; Ctrl-C reaches it from the kernel); else its own group, so a signal
        # to resguard's group reaches it once, forwarded
        self._own_group = not _foreground_of_terminal()

    def run(self) -> int:
        """Supervise to the end; returns the exit code. Catches the forwarded signals for
        its duration, so it runs on the main thread only."""
        if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
            raise InvalidState(
                "resguard run needs Linux 5.3 or later (pidfd_open); here, supervise with "
                "the service manager (launchd, systemd)"
            )
        if threading.current_thread() is not threading.main_thread():
            raise InvalidState("Supervisor.run() catches signals: call it on the main thread")
        with _signals_caught() as inbox:  # from here on a SIGTERM cannot strand the cgroup
            budget = self.budget or choose_budget(
                self.config.memory_bytes, cgroup_parent=self.config.cgroup_parent
            )
            self.cgroup, budget = self._make_cgroup(budget)
            self.journal.write(
                "budget",
                f"budget: {budget.describe()}"
                + (f"; cgroup {self.cgroup.path}" if self.cgroup else ""),
                **budget.to_dict(),
                cgroup=self.cgroup.path if self.cgroup else None,
            )
            left: str | None = None
            code = 0
            try:
                code = self._loop(inbox, budget)
            finally:
                if self.cgroup is not None:
                    deadline = self._clock() + _REMOVE_TIMEOUT_S
                    left = self.cgroup.remove(deadline, self._clock, time.sleep)
            # still inside: a stop signal now cannot end resguard before its end line
            self._journal_end(code, budget, left)
        return code

    def _journal_end(self, code: int, budget: Budget, left: str | None) -> None:
        oom_kills = self.plan.oom_kills
        if oom_kills is None:
            how = " under RLIMIT_AS" if budget.kind == "rlimit-as" else ""
            counted = f"OOM kills unknown{how}"
        else:
            counted = f"{oom_kills} OOM kill(s)"
        self.journal.write(
            "end",
            f"exit {code} after {self.plan.runs} run(s), {counted}" + (f"; {left}" if left else ""),
            code=code,
            runs=self.plan.runs,
            oom_kills=oom_kills,
            cgroup_left=left,
        )

    def _make_cgroup(self, budget: Budget) -> tuple[Cgroup | None, Budget]:
        if budget.parent is None or budget.limit_bytes is None:
            return None, budget
        name = f"resguard-run-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            cgroup = Cgroup.create(budget.parent, name, budget.kind[-2:], budget.limit_bytes)
        except OSError as error:
            why = cgroup_problem(budget.parent, error)
            return None, Budget("rlimit-as", budget.limit_bytes, why)
        return cgroup, budget

    def _apply(self, budget: Budget) -> Callable[[int], None]:
        def apply(pid: int) -> None:
            if self.cgroup is not None:
                self.cgroup.add(pid)
            elif budget.kind == "rlimit-as" and budget.limit_bytes is not None:
                limit_address_space(pid, budget.limit_bytes)

        return apply

    def _loop(self, inbox: _Inbox, budget: Budget) -> int:
        run = 0
        stopped_by = self._stop_pending(inbox, "before the first start")
        if stopped_by is not None:
            return 128 + stopped_by  # as a shell reports a command that signal ended
        while True:
            run += 1
            pid, ended = self._one(run, inbox, budget)
            decision = self.plan.after(ended)
            self._journal_exit(run, pid, ended, decision)
            if not decision.restart:
                return decision.exit_code
            if self._pause(decision.delay_s, inbox):
                return ended.exit_code

    def _pause(self, delay_s: float, inbox: _Inbox) -> bool:
        """Wait *delay_s* before the next start; ``True`` when a stop signal came."""
        deadline = self._clock() + delay_s
        while (left_s := deadline - self._clock()) > 0:
            inbox.wait([], left_s)
            if self._stop_pending(inbox, "while waiting to restart") is not None:
                return True
        return False

    def _stop_pending(self, inbox: _Inbox, when: str) -> int | None:
        """The stop signal that came while no command runs (journalled), if one did."""
        for number in inbox.take():
            if signal_name(number) in _STOPS:
                self.plan.stop()
                name = signal_name(number)
                self.journal.write(
                    "signal",
                    f"{name} {when}: stopping",
                    signal=name,
                    pid=None,
                    forwarded=False,
                    action="stop",
                )
                return number
        return None

    def _start(self, run: int, budget: Budget) -> subprocess.Popen[bytes] | NotStarted:
        try:
            process = spawn(self.config.argv, self._apply(budget), own_group=self._own_group)
        except OSError as error:
            command = repr(self.config.argv[0])
            if error.filename == sys.executable:  # the wrapper is this interpreter
                what = f"start the wrapper ({sys.executable}) that runs {command}"
            else:
                what = f"apply the {budget.kind} budget to {command}"
            raise InvalidState(
                f"cannot {what}: {error.strerror or error}; nothing was run"
            ) from None
        if isinstance(process, NotStarted):
            return process
        self.journal.write(
            "start",
            f"run {run}: started {process.pid}: {shlex.join(self.config.argv)}",
            run=run,
            pid=process.pid,
            argv=list(self.config.argv),
        )
        return process

    def _one(self, run: int, inbox: _Inbox, budget: Budget) -> tuple[int | None, Exit]:
        before = self.cgroup.oom_kills() if self.cgroup is not None else None
        started = self._clock()
        self._killed = False
        process = self._start(run, budget)
        if isinstance(process, NotStarted):
            self._not_started = f"{shlex.quote(self.config.argv[0])}: {process.strerror}"
            return None, Exit(process.code, run_s=self._clock() - started, started=False)
        pidfd = os.pidfd_open(process.pid)
        forwarded: set[int] = set()
        deadline: float | None = None
        try:
            while process.poll() is None:
                timeout_s = None if deadline is None else max(0.0, deadline - self._clock())
                inbox.wait([pidfd], timeout_s)
                for number in inbox.take():
                    deadline = self._on_signal(number, process.pid, pidfd, forwarded, deadline)
                if deadline is not None and self._clock() >= deadline and process.poll() is None:
                    self._kill(process.pid, pidfd, "the stop timeout passed")
                    deadline = None  # SIGKILL cannot be caught: its end is next
        finally:
            os.close(pidfd)
        returncode = int(process.returncode)
        if -returncode in forwarded:
            self.plan.stop()  # ended by a signal the user sent: a stop, not a crash
        oom_kills = None
        if self.cgroup is not None:
            after = self.cgroup.oom_kills()
            if before is not None and after is not None:
                oom_kills = after - before
            # a daemonised helper does not outlive its run, nor eat the next run's budget
            self.cgroup.empty(self._clock() + _REMOVE_TIMEOUT_S, self._clock, time.sleep)
        return process.pid, Exit(returncode, oom_kills, self._clock() - started)

    def _on_signal(
        self, number: int, pid: int, pidfd: int, forwarded: set[int], deadline: float | None
    ) -> float | None:
        name = signal_name(number)
        if name in _STOPS and self.plan.stopping:
            if not self._killed:  # a storm of stops is one SIGKILL, one line
                self._kill(pid, pidfd, f"a second stop signal ({name})")
            return None
        delivered = not self._own_group and _terminal_delivered(number)
        if not delivered:
            with suppress(OSError):
                signal.pidfd_send_signal(pidfd, number)
        forwarded.add(number)
        action = "forward"
        if name in _STOPS:
            self.plan.stop()
            action = "stop"
            deadline = self._clock() + self.config.stop_timeout_s
        how = "the terminal sent it to" if delivered else "forwarded to"
        more = (
            f"; stopping (SIGKILL in {format_duration(self.config.stop_timeout_s)} or at "
            "a second stop signal)"
            if action == "stop"
            else ""
        )
        self.journal.write(
            "signal",
            f"{name}: {how} {pid}{more}",
            signal=name,
            pid=pid,
            forwarded=not delivered,
            action=action,
        )
        return deadline

    def _kill(self, pid: int, pidfd: int, why: str) -> None:
        self._killed = True
        with suppress(OSError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill_members()
        self.journal.write(
            "signal",
            f"SIGKILL to {pid}: {why}",
            signal="SIGKILL",
            pid=pid,
            forwarded=False,
            action="kill",
        )

    def _journal_exit(self, run: int, pid: int | None, ended: Exit, decision: Decision) -> None:
        if not ended.started:
            self.journal.write(
                "exit",
                f"run {run}: {self._not_started}: {ended.describe()}; nothing ran, not restarted",
                run=run,
                pid=None,
                status=ended.kind,
                code=ended.exit_code,
                signal=None,
                oom_kills=None,
                run_s=round(ended.run_s, 3),
                restart=False,
                delay_s=None,
                reason=f"{decision.reason}: {self._not_started}",
            )
            return
        if decision.restart:
            then = f"restarting in {format_duration(decision.delay_s)} ({decision.reason})"
        else:
            then = f"not restarted: {decision.reason}"
        self.journal.write(
            "exit",
            f"run {run} ({pid}) {ended.describe()} after {format_duration(ended.run_s)}; {then}",
            run=run,
            pid=pid,
            status=ended.kind,
            code=ended.exit_code,
            signal=ended.signal,
            oom_kills=ended.oom_kills,
            run_s=round(ended.run_s, 3),
            restart=decision.restart,
            delay_s=decision.delay_s if decision.restart else None,
            reason=decision.reason,
        )
