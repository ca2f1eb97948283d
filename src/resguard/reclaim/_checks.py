"""The stopper's argument checks: its flags, patterns and protected names, and a
:class:`~resguard.reclaim.StopCandidate` checked before anything is signalled."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from resguard._errors import InvalidType, InvalidValue
from resguard.reclaim._base import shown as _shown

__all__ = ["check_candidate", "check_flag", "compile_patterns", "protected_names"]


def check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidType(f"{name}={_shown(value)} is not a bool; expected True or False")
    return value


def compile_patterns(patterns: object) -> tuple[re.Pattern[str], ...]:
    expected = "expected a list of regular expressions (strings), e.g. [r'^python worker']"
    if isinstance(patterns, (str, bytes)):
        raise InvalidType(f"{_shown(patterns)} is one string; {expected}")
    if not isinstance(patterns, Iterable):
        raise InvalidType(f"{_shown(patterns)} is not a list of patterns; {expected}")
    compiled = []
    for pattern in list(patterns):
        if isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str):
            regex = pattern
        elif isinstance(pattern, str):
            try:
                regex = re.compile(pattern)
            except (re.error, RecursionError, OverflowError) as error:
                raise InvalidValue(
                    f"{_shown(pattern)} is not a regular expression: {error}; {expected}"
                ) from None
        else:
            raise InvalidType(
                f"{_shown(pattern)} in {_shown(patterns)} is not a pattern; {expected}"
            )
        if regex.search("") is not None:
            raise InvalidValue(
                f"{regex.pattern!r} matches an empty string, so it matches "
                "every process; expected a pattern that names what may be "
                "stopped"
            )
        compiled.append(regex)
    return tuple(compiled)


def protected_names(protect: object) -> frozenset[str]:
    expected = "expected a list of process names, e.g. ['postgres']"
    if isinstance(protect, (str, bytes)):
        raise InvalidType(f"protect={_shown(protect)} is one string; {expected}")
    if not isinstance(protect, Iterable):
        raise InvalidType(f"protect={_shown(protect)} is not a list of names; {expected}")
    names = list(protect)
    for name in names:
        if not isinstance(name, str):
            raise InvalidType(f"{_shown(name)} in protect is not a process name; {expected}")
    from resguard.reclaim import DEFAULT_PROTECTED_NAMES  # documented there, with the ladder

    return DEFAULT_PROTECTED_NAMES | frozenset(names)


def check_candidate(candidate: object) -> None:
    """Refuse anything but a StopCandidate naming one process, before any signal."""
    from resguard.reclaim._stopper import StopCandidate

    if not isinstance(candidate, StopCandidate):
        raise InvalidType(
            f"{_shown(candidate)} is not a StopCandidate; expected one "
            "from ProcessStopper.candidates()"
        )
    expected = "expected a StopCandidate from ProcessStopper.candidates()"
    created = candidate.create_time
    # an identity is start ticks (the linux path) or a create time (the portable path)
    optional = {"pid": False, "start_ticks": created is not None, "ppid": True}
    for field, may_be_none in optional.items():
        value = getattr(candidate, field)
        if (value is None and may_be_none) or (
            isinstance(value, int) and not isinstance(value, bool)
        ):
            continue
        raise InvalidType(f"candidate.{field}={_shown(value)} is not a whole number; {expected}")
    if created is not None and not isinstance(created, float):
        raise InvalidType(f"candidate.create_time={_shown(created)} is not a time; {expected}")
    ticks = candidate.start_ticks
    bad_time = created is not None and not (math.isfinite(created) and created > 0)
    if candidate.pid <= 0 or (ticks is not None and ticks < 0) or bad_time:
        # os.kill(0) and os.kill(-1) signal whole groups: never let such a PID near it
        raise InvalidValue(
            f"candidate.pid={candidate.pid!r} (start_ticks={ticks!r}, create_time="
            f"{created!r}) is not one process; {expected}"
        )
