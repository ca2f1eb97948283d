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

from resguard._errors import InvalidType, InvalidValue

__all__ = [
    "DEFAULT_BACKOFF_MAX_S",
    "DEFAULT_BACKOFF_S",
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_RESTART",
    "DEFAULT_STABLE_S",
    "DEFAULT_STOP_TIMEOUT_S",
    "RESTART_POLICIES",
    "Backoff",
    "Decision",
    "Exit",
    "Plan",
    "RestartPolicy",
    "signal_name",
]

RestartPolicy = Literal["on-failure", "always", "never"]
RESTART_POLICIES: Final[tuple[RestartPolicy, ...]] = ("on-failure", "always", "never")

# The one set of defaults: Plan, Backoff, RunConfig and the CLI's flags and help read these.
DEFAULT_RESTART: Final[RestartPolicy] = "on-failure"
DEFAULT_MAX_RESTARTS: Final = 5
DEFAULT_BACKOFF_S: Final = 1.0
DEFAULT_BACKOFF_MAX_S: Final = 30.0
DEFAULT_STABLE_S: Final = 10.0
DEFAULT_STOP_TIMEOUT_S: Final = 10.0


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number this platform does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@attrs.frozen
class Exit:
    """How one run ended: *returncode* as :class:`subprocess.Popen` gives it (negative: the
    signal that ended it), *oom_kills* the rise of the budget's OOM-kill counter during the
    run (``None``: the budget cannot count them, as with RLIMIT_AS), *run_s* how long it
    ran; *started* false when the command's ``exec`` failed (*returncode* is then the
    code a shell gives: 127 not found, 126 not runnable)."""

    returncode: int
    oom_kills: int | None = None
    run_s: float = 0.0
    started: bool = True

    @property
    def exit_code(self) -> int:
        """The status a shell reports: the child's own code, 128 + N when signal N ended it."""
        return 128 - self.returncode if self.returncode < 0 else self.returncode

    @property
    def signal(self) -> str | None:
        """The name of the signal that ended the run (``SIGKILL``), or ``None``."""
        return signal_name(-self.returncode) if self.returncode < 0 else None

    @property
    def kind(self) -> Literal["exited", "killed", "oom-killed", "not-started"]:
        """``oom-killed`` when SIGKILL ended it and the budget counted an OOM kill during the
        run (the kernel's OOM killer, not a crash); ``killed`` for any other signal;
        ``exited`` when the child returned a code (even after a helper of its was
        OOM-killed: then ``oom_kills`` says so); ``not-started`` when its exec failed."""
        if not self.started:
            return "not-started"
        if self.returncode == -signal.SIGKILL and self.oom_kills:
            return "oom-killed"
        return "killed" if self.returncode < 0 else "exited"

    @property
    def failed(self) -> bool:
        """A non-zero end, except a death by SIGPIPE: its reader went away, which systemd
        also counts as a clean exit (``resguard run -- yes | head -1`` is not a crash)."""
        return self.exit_code != 0 and self.signal != "SIGPIPE"

    def describe(self) -> str:
        """``OOM-killed (exit 137, SIGKILL, 1 OOM kill in its budget)``, ``exited 0``."""
        if self.kind == "not-started":
            return f"could not be started (exit {self.exit_code})"
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


def _not_a_number(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float))


def check_seconds(name: str, value: object, *, positive: bool = False) -> None:
    """Refuse *value* for the duration *name* unless it is a finite number of seconds, 0 or
    more (more than 0 when *positive*): :class:`~resguard.InvalidType` for what is not a
    number, :class:`~resguard.InvalidValue` for a number out of range, quoting it."""
    expected = (
        "a duration of more than 0 seconds" if positive else "a duration of 0 or more seconds"
    )
    if _not_a_number(value):
        raise InvalidType(f"{name}={value!r} is not a number; expected {expected}")
    assert isinstance(value, (int, float))
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise InvalidValue(f"{name}={value!r} is out of range; expected {expected}")


def check_policy(restart: object, max_restarts: object) -> None:
    """Refuse a *restart* that is not a policy or a *max_restarts* that is not a count."""
    if restart not in RESTART_POLICIES:
        raise InvalidValue(
            f"restart={restart!r} is not a restart policy; expected one of "
            + ", ".join(RESTART_POLICIES)
        )
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int):
        raise InvalidType(f"max_restarts={max_restarts!r} is not an integer; expected a count")
    if max_restarts < 0:
        raise InvalidValue(f"max_restarts={max_restarts!r} is out of range; expected 0 or more")


def check_cap(name: str, cap_s: float, first_name: str, first_s: float) -> None:
    """Refuse a backoff's cap *cap_s* below its first wait *first_s*."""
    if cap_s < first_s:
        raise InvalidValue(
            f"{name}={cap_s!r} is below {first_name}={first_s!r}; expected a cap of at "
            "least the first wait"
        )


def _seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds(attribute.name, value)


def _positive_seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds(attribute.name, value, positive=True)


@attrs.frozen
class Backoff:
    """Exponential backoff: *initial_s* before the first restart, doubled before each next
    one, never more than *max_s* (a *max_s* below *initial_s* is refused)."""

    initial_s: float = attrs.field(default=DEFAULT_BACKOFF_S, validator=_seconds)
    max_s: float = attrs.field(default=DEFAULT_BACKOFF_MAX_S, validator=_seconds)

    def __attrs_post_init__(self) -> None:
        check_cap("max_s", self.max_s, "initial_s", self.initial_s)

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

    policy: RestartPolicy = DEFAULT_RESTART
    max_restarts: int = DEFAULT_MAX_RESTARTS
    backoff: Backoff = attrs.field(factory=Backoff)
    stable_s: float = attrs.field(default=DEFAULT_STABLE_S, validator=_positive_seconds)
    """A run this long is stable (more than 0: at 0 every run would be, and a crash loop
    would never reach ``max_restarts``)."""
    restarts: int = 0
    """Restarts since the last stable run (the count ``max_restarts`` bounds)."""
    runs: int = 0
    oom_kills: int | None = 0
    """OOM kills over all runs; ``None`` once a run's could not be counted (RLIMIT_AS)."""
    stopping: bool = False

    def __attrs_post_init__(self) -> None:
        check_policy(self.policy, self.max_restarts)
        if not isinstance(self.backoff, Backoff):
            raise InvalidType(f"backoff={self.backoff!r} is not a Backoff")

    def stop(self) -> None:
        """A stop signal came: whatever the current run ends with, it is the last."""
        self.stopping = True

    def after(self, ended: Exit) -> Decision:
        """The decision that follows the run that ended as *ended*."""
        code = ended.exit_code
        if not ended.started:  # nothing ran: a restart would fail the same way
            return Decision(False, code, "the command could not be started")
        self.runs += 1
        if self.oom_kills is not None:
            self.oom_kills = None if ended.oom_kills is None else self.oom_kills + ended.oom_kills
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
