"""The stopper's argument checks: its flags, patterns and protected names, and a
:class:`~resguard.reclaim.StopCandidate` checked before anything is signalled."""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from resguard._errors import InvalidType, InvalidValue
from resguard.reclaim._base import shown as _shown

if sys.version_info >= (3, 11):
    from re import _parser as _sre_parse
else:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse

__all__ = [
    "MATCHED_CHARS",
    "check_candidate",
    "check_flag",
    "compile_patterns",
    "own_pids",
    "pattern_problem",
    "protected_names",
]

MATCHED_CHARS = 1024
"""How much of a process's name and of its command line a pattern is matched against
(each cut to this many characters): a pattern's work is bounded by the text's length."""

_PROBES = ("x", "Q", "7", "/", "-", "_", ".")  # a pattern matching all of them matches anything
_REPEATS = frozenset({_sre_parse.MAX_REPEAT, _sre_parse.MIN_REPEAT})
_NAME_IT = "expected a pattern that names what may be touched"
_UNBOUNDED = 64  # a repeat of more than this many is treated as unbounded


def pattern_problem(regex: re.Pattern[str]) -> str | None:
    """Why *regex* may not choose processes to act on, or ``None``: it matches an empty
    string or any one-character text (so every process), or it can take exponential time
    (a repeat nested in an unbounded repeat, ``(a+)+``; an alternation in one, ``(a|ab)*``)."""
    if regex.search("") is not None:
        return f"matches an empty string, so it matches every process; {_NAME_IT}"
    if all(regex.search(probe) for probe in _PROBES):
        return f"matches any text, so it matches every process; {_NAME_IT}"
    try:
        tree = _sre_parse.parse(regex.pattern, regex.flags & ~re.UNICODE)
    except Exception:  # it compiled: the parser's internals are not ours
        return None
    if _exponential(tree, inside=False):
        return (
            "can take exponential time (a repeat or an alternation inside an unbounded "
            "repeat, as in (a+)+ or (a|ab)*); expected it written without the nesting"
        )
    return None


def _exponential(items: Any, *, inside: bool) -> bool:
    """Whether the parsed *items* hold a repeat or a branch inside an unbounded repeat."""
    for op, value in items:
        if op in _REPEATS:
            _low, high, body = value
            unbounded = high is _sre_parse.MAXREPEAT or high > _UNBOUNDED
            if inside and unbounded:
                return True
            if _exponential(body, inside=inside or unbounded):
                return True
        elif op is _sre_parse.BRANCH:
            if inside:
                return True
            if any(_exponential(branch, inside=inside) for branch in value[1]):
                return True
        elif op is _sre_parse.SUBPATTERN:
            if _exponential(value[-1], inside=inside):
                return True
        elif op in (_sre_parse.ASSERT, _sre_parse.ASSERT_NOT) and _exponential(
            value[1], inside=inside
        ):
            return True
    return False


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
        problem = pattern_problem(regex)
        if problem is not None:
            raise InvalidValue(f"{regex.pattern!r} {problem}")
        compiled.append(regex)
    return tuple(compiled)


_MAX_ANCESTORS = 64  # a loop in a damaged table cannot make the walk endless


def own_pids() -> tuple[int, ...]:
    """This process, its parent and every ancestor above (its shell, the terminal, tmux,
    the session's manager ...), nearest first: none of them is ever touched (a pattern
    matching ``bash`` or ``tmux`` must not pause the terminal the caller runs in)."""
    from resguard._probes.identity import read_stat

    chain = [os.getpid(), os.getppid()]
    if os.path.exists("/proc/self/stat"):
        while len(chain) < _MAX_ANCESTORS and chain[-1] > 1:
            stat = read_stat(chain[-1])
            if stat is None or stat.ppid <= 0 or stat.ppid in chain:
                break
            chain.append(stat.ppid)
        return tuple(chain)
    try:
        import psutil

        parents = [parent.pid for parent in psutil.Process(chain[-1]).parents()]
    except Exception:  # psutil missing or a platform's refusal: the parent at least
        parents = []
    return (*chain, *parents[: _MAX_ANCESTORS - 2])


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
