"""The supervisor's decisions, without I/O: how a run ended (:class:`Exit`), how long to
wait before the next start (:class:`Backoff`) and whether there is one (:class:`Plan`).

``--max-restarts N`` counts restarts, not starts: N restarts after the first start, so
at most N + 1 runs in a row. A run that lasted ``stable_s`` or more is a stable run: it
resets both the backoff and the restart count (a service that crashes once a day is
restarted every day, as systemd's ``StartLimitIntervalSec=`` window and Kubernetes'
backoff reset after a quiet while do). A stop asked for by a signal (SIGTERM, SIGINT,
SIGHUP, SIGQUIT) is never followed by a restart.
"""

from __future__ import annotations

import math
import signal
from typing import Final, Literal

import attrs

from resguard._errors import InvalidValue

__all__ = ["RESTART_POLICIES", "Backoff", "Decision", "Exit", "Plan", "RestartPolicy"]

RestartPolicy = Literal["on-failure", "always", "never"]
RESTART_POLICIES: Final[tuple[RestartPolicy, ...]] = ("on-failure", "always", "never")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@attrs.frozen
class Exit:
    """How one run ended: *returncode* as :class:`subprocess.Popen` gives it (negative: the
    signal that ended it), *oom_kills* the rise of the budget's OOM-kill counter during the
    run (``None``: the budget cannot count them, as with RLIMIT_AS), *run_s* how long it
    ran."""

    returncode: int
    oom_kills: int | None = None
    run_s: float = 0.0

    @property
    def exit_code(self) -> int:
        """The status a shell reports: the child's own code, 128 + N when signal N ended it."""
        return 128 - self.returncode if self.returncode < 0 else self.returncode

    @property
    def signal(self) -> str | None:
        """The name of the signal that ended the run (``SIGKILL``), or ``None``."""
        return _signal_name(-self.returncode) if self.returncode < 0 else None

    @property
    def kind(self) -> Literal["exited", "killed", "oom-killed"]:
        """``oom-killed`` when SIGKILL ended it and the budget counted an OOM kill during the
        run (the kernel's OOM killer, not a crash); ``killed`` for any other signal;
        ``exited`` when the child returned a code (even after a helper of its was
        OOM-killed: then ``oom_kills`` says so)."""
        if self.returncode == -signal.SIGKILL and self.oom_kills:
            return "oom-killed"
        return "killed" if self.returncode < 0 else "exited"

    @property
    def failed(self) -> bool:
        return self.exit_code != 0

    def describe(self) -> str:
        """``OOM-killed (exit 137, SIGKILL, 1 OOM kill in its budget)``, ``exited 0``."""
        if self.kind == "exited":
            text = f"exited {self.exit_code}"
        elif self.kind == "killed":
            text = f"killed by {self.signal} (exit {self.exit_code})"
        else:
            text = f"OOM-killed (exit {self.exit_code}, {self.signal})"
        if self.oom_kills:
            plural = "s" if self.oom_kills > 1 else ""
            text += f"; {self.oom_kills} OOM kill{plural} in its budget"
        return text


def _seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
    ):
        raise InvalidValue(f"{attribute.name}={value!r} is not a duration of 0 or more seconds")


@attrs.frozen
class Backoff:
    """Exponential backoff: *initial_s* before the first restart, doubled before each next
    one, never more than *max_s* (a *max_s* below *initial_s* is raised to it)."""

    initial_s: float = attrs.field(default=1.0, validator=_seconds)
    max_s: float = attrs.field(default=30.0, validator=_seconds)

    def delay_s(self, restart: int) -> float:
        """The wait before restart number *restart* (1 = the first restart)."""
        cap_s = max(self.initial_s, self.max_s)
        if self.initial_s == 0 or restart <= 1:
            return min(self.initial_s, cap_s)
        doublings = restart - 1
        if doublings >= math.log2(cap_s) - math.log2(self.initial_s):  # no float overflow
            return cap_s
        return min(math.ldexp(self.initial_s, doublings), cap_s)


@attrs.frozen
class Decision:
    """What follows a run: a restart after *delay_s*, or the end with *exit_code*;
    *reason* says why in words for the journal."""

    restart: bool
    exit_code: int
    reason: str
    delay_s: float = 0.0
    restart_number: int = 0  # which restart in the current unstable streak (1-based)


@attrs.define
class Plan:
    """The restart state machine: feed it each run's :class:`Exit` with :meth:`after`;
    :meth:`stop` when a stop signal came."""

    policy: RestartPolicy = "on-failure"
    max_restarts: int = 5
    backoff: Backoff = attrs.field(factory=Backoff)
    stable_s: float = 10.0
    restarts: int = 0
    """Restarts since the last stable run (the count ``max_restarts`` bounds)."""
    runs: int = 0
    oom_kills: int = 0
    stopping: bool = False

    def __attrs_post_init__(self) -> None:
        if self.policy not in RESTART_POLICIES:
            raise InvalidValue(
                f"restart={self.policy!r} is not a restart policy; expected one of "
                + ", ".join(RESTART_POLICIES)
            )
        if isinstance(self.max_restarts, bool) or not (
            isinstance(self.max_restarts, int) and self.max_restarts >= 0
        ):
            raise InvalidValue(f"max_restarts={self.max_restarts!r} is not a count of 0 or more")

    def stop(self) -> None:
        """A stop signal came: whatever the current run ends with, it is the last."""
        self.stopping = True

    def after(self, ended: Exit) -> Decision:
        """The decision that follows the run that ended as *ended*."""
        self.runs += 1
        self.oom_kills += ended.oom_kills or 0
        code = ended.exit_code
        if ended.run_s >= self.stable_s:
            self.restarts = 0
        if self.stopping:
            return Decision(False, code, "stopped by a signal")
        if self.policy == "never":
            return Decision(False, code, "--restart never")
        if self.policy == "on-failure" and not ended.failed:
            return Decision(False, code, "a clean exit is not restarted (--restart on-failure)")
        if self.restarts >= self.max_restarts:
            return Decision(
                False, code, f"gave up after {self.restarts} restart(s) (--max-restarts)"
            )
        self.restarts += 1
        delay_s = self.backoff.delay_s(self.restarts)
        return Decision(
            True,
            code,
            f"restart {self.restarts} of {self.max_restarts}",
            delay_s,
            self.restarts,
        )
