"""macOS's thermal state from ``pmset -g therm``: warning levels and the CPU speed limit.

macOS gives no temperatures to an unprivileged process, but ``pmset -g therm`` says
whether the machine is being held back for heat. Its output, as macOS prints it::

    Note: No thermal warning level has been recorded
    Note: No performance warning level has been recorded
    2020-11-24 13:10:40 +0100 CPU Power notify
        CPU_Scheduler_Limit     = 100
        CPU_Available_CPUs      = 8
        CPU_Speed_Limit         = 35

and, once a level has been recorded, ``Thermal Warning Level = N`` /
``Performance Warning Level = N`` lines instead of the notes. Apple Silicon Macs often
print the notes alone. :func:`parse_pmset_therm` reads all of these (any spacing, tabs,
``=`` or ``:``; the last value of a key wins), :func:`thermal_pressure` names the state
and :func:`pressure_rank` ranks it, from the same numbers.

This was written and tested against fixture texts of that output on Linux; it has not
been run on a Mac here. :func:`run_pmset` runs the command only where ``pmset`` exists,
with a deadline, and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from resguard._probes.files import READ_CAP_BYTES, FaultKind

__all__ = [
    "PMSET_COMMAND",
    "PMSET_TIMEOUT_S",
    "PmsetTherm",
    "parse_pmset_therm",
    "pressure_rank",
    "run_pmset",
    "thermal_pressure",
]

PMSET_COMMAND = ("pmset", "-g", "therm")
PMSET_TIMEOUT_S = 2.0
"""How long ``pmset -g therm`` may take (it answers in milliseconds)."""

_NO_LEVEL = re.compile(r"no (thermal|performance) warning level has been recorded", re.I)
_LEVEL = re.compile(r"^\s*(thermal|performance) warning level\s*[=:]\s*([0-9]{1,6})\s*$", re.I)
_CPU_KEY = re.compile(
    r"^\s*CPU_(Scheduler_Limit|Available_CPUs|Speed_Limit)\s*[=:]\s*([0-9]{1,6})\s*$"
)

Damage = tuple[str, FaultKind, str]


class PmsetTherm(NamedTuple):
    """What ``pmset -g therm`` said; ``None`` where it said nothing of that (a warning
    level that "has not been recorded" is ``None`` too: nothing has happened)."""

    thermal_warning_level: int | None
    performance_warning_level: int | None
    cpu_scheduler_limit_percent: int | None
    cpu_available_cpus: int | None
    cpu_speed_limit_percent: int | None


def parse_pmset_therm(text: str) -> PmsetTherm | None:
    """The state in ``pmset -g therm`` output, or ``None`` for text that holds none of its
    lines (not pmset's output, or a format this parser does not know); never raises."""
    levels: dict[str, int] = {}
    cpu: dict[str, int] = {}
    recognised = False
    for line in text.splitlines():
        if _NO_LEVEL.search(line):
            recognised = True
        elif (match := _LEVEL.match(line)) is not None:
            recognised = True
            levels[match.group(1).lower()] = int(match.group(2))
        elif (match := _CPU_KEY.match(line)) is not None:
            recognised = True
            cpu[match.group(1)] = int(match.group(2))
    if not recognised:
        return None
    return PmsetTherm(
        levels.get("thermal"),
        levels.get("performance"),
        cpu.get("Scheduler_Limit"),
        cpu.get("Available_CPUs"),
        cpu.get("Speed_Limit"),
    )


def thermal_pressure(therm: PmsetTherm) -> str:
    """The state for people and rules: ``"nominal"`` when no warning level is above 0 and
    no limit below 100 %, else what holds the machine back, most telling first, e.g.
    ``"thermal warning level 5, cpu speed limit 35%"`` (also ``"performance warning level
    N"``, ``"cpu scheduler limit N%"``)."""
    parts = []
    if therm.thermal_warning_level:
        parts.append(f"thermal warning level {therm.thermal_warning_level}")
    if therm.cpu_speed_limit_percent is not None and therm.cpu_speed_limit_percent < 100:
        parts.append(f"cpu speed limit {therm.cpu_speed_limit_percent}%")
    if therm.cpu_scheduler_limit_percent is not None and therm.cpu_scheduler_limit_percent < 100:
        parts.append(f"cpu scheduler limit {therm.cpu_scheduler_limit_percent}%")
    if therm.performance_warning_level:
        parts.append(f"performance warning level {therm.performance_warning_level}")
    return ", ".join(parts) or "nominal"


def pressure_rank(therm: PmsetTherm) -> int:
    """The rank of *therm* in ``resguard.rules.THERMAL_STATES`` (0 nominal, 1 moderate,
    2 heavy, 3 trapping), by its worst figure: a thermal warning level of IOKit's scale
    (0 normal, 5 danger, 10 crisis) is nominal at 0, moderate below 5, heavy from 5 and
    trapping from 10; a CPU speed or scheduler limit below 100 % (the Mac slowing itself
    to cool down) and any performance warning level above 0 are heavy. This is
    resguard's reading of what pmset prints, tested on its fixture output, not on a Mac.
    """
    ranks = [0]
    level = therm.thermal_warning_level
    if level:
        ranks.append(1 if level < 5 else 2 if level < 10 else 3)
    limits = (therm.cpu_speed_limit_percent, therm.cpu_scheduler_limit_percent)
    if any(limit is not None and limit < 100 for limit in limits):
        ranks.append(2)
    if therm.performance_warning_level:
        ranks.append(2)
    return max(ranks)


def run_pmset(
    timeout_s: float = PMSET_TIMEOUT_S,
    *,
    which: Callable[[str], str | None] | None = None,
    run: Callable[..., Any] | None = None,
) -> str | Damage | None:
    """The output of ``pmset -g therm``, ``None`` where there is no ``pmset`` (not macOS),
    or why it gave none: it failed, exited non-zero or did not answer within *timeout_s*.
    Never raises; *which* (default :func:`shutil.which`) and *run* (default
    :func:`subprocess.run`) are injectable for tests."""
    import shutil
    import subprocess  # here: only a reader on macOS runs it

    which = shutil.which if which is None else which
    run = subprocess.run if run is None else run
    source = " ".join(PMSET_COMMAND)
    try:
        executable = which(PMSET_COMMAND[0])
    except Exception as error:  # an injected finder failing in any way
        return source, "unreadable", f"cannot look for pmset: {type(error).__name__}: {error}"
    if executable is None:
        return None
    try:
        done = run(
            [executable, *PMSET_COMMAND[1:]],
            capture_output=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return source, "unreadable", f"no answer within {timeout_s:g} s"
    except Exception as error:  # OSError, or anything an injected runner raises
        return source, "unreadable", f"{type(error).__name__}: {error}"
    output = getattr(done, "stdout", b"") or b""
    if isinstance(output, str):
        output = output.encode("utf-8", "replace")
    if getattr(done, "returncode", 1) != 0:
        return source, "unreadable", f"exited with status {getattr(done, 'returncode', '?')}"
    return bytes(output[:READ_CAP_BYTES]).decode("utf-8", "replace")
