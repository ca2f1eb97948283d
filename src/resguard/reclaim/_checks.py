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
    "MATCH_DEADLINE_S",
    "BoundedMatcher",
    "check_candidate",
    "check_flag",
    "compile_patterns",
    "is_cheap",
    "own_pids",
    "pattern_problem",
    "protected_names",
    "search_bounded",
]

MATCHED_CHARS = 1024
"""How much of a process's name and of its command line a pattern is matched against
(each cut to this many characters)."""

MATCH_DEADLINE_S = 1.0
"""How long a pattern that is not provably cheap may take on one batch of texts (in a
child process) before it is refused: it then matches nothing, so nothing is touched."""

_NAME_IT = "expected a pattern that names what may be touched"
_UNBOUNDED = 64  # a repeat of more than this many is treated as unbounded
_REPEATS = frozenset({_sre_parse.MAX_REPEAT, _sre_parse.MIN_REPEAT})
_ATOMS = frozenset({_sre_parse.LITERAL, _sre_parse.NOT_LITERAL, _sre_parse.ANY, _sre_parse.IN})
_PLAIN = _ATOMS | {_sre_parse.AT, _sre_parse.GROUPREF}


def _probe_texts() -> tuple[str, ...]:
    """A fixed, diverse set of names and command lines: a pattern matching more than half
    of them matches almost any process."""
    import random

    chance = random.Random(14)  # a fixed seed: the same probes everywhere, every run
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@ "
    names = tuple(
        "".join(chance.choice(alphabet) for _ in range(length))
        for length in (1, 2, 3, 5, 8, 12, 16, 24, 32, 40)
    )
    typical = (
        "/usr/lib/systemd/systemd --user",
        "/usr/bin/python3 -m http.server 8000",
        "bash",
        "-zsh",
        "sshd: alice@pts/0",
        "/usr/sbin/cron -f",
        "node /home/bob/app/server.js --port=3000",
        "/opt/google/chrome/chrome --type=renderer --lang=en-US",
        "ollama runner --model /root/.ollama/models/blobs/sha256-1",
        "[kworker/0:1-events]",
        "java -Xmx2g -jar build/libs/service.jar",
        "/usr/bin/dbus-daemon --session --address=systemd:",
    )
    return ("", "x", "Q", "7", "/", "-", "_", ".", "ab", "Z9", "a b", "~/.", *names, *typical)


_PROBES = _probe_texts()


def is_cheap(regex: re.Pattern[str]) -> bool:
    """Whether *regex* is provably cheap on any text of ``MATCHED_CHARS``, so it may be
    matched in this process: literals, classes, anchors and alternations of them, with at
    most one repeat in the whole pattern, of a single character or class (``.*``,
    ``[a-z]+``), never of a group, an alternation or another repeat."""
    try:
        tree = _sre_parse.parse(regex.pattern, regex.flags & ~re.UNICODE)
    except Exception:  # it compiled: the parser's internals are not ours
        return False
    repeats = _count_repeats(tree)
    return repeats is not None and repeats <= 1


def _count_repeats(items: Any) -> int | None:
    """How many repeats the parsed *items* hold, or ``None`` for anything not provably cheap."""
    count = 0
    for op, value in items:
        if op in _REPEATS:
            body = list(value[2])
            if len(body) != 1 or body[0][0] not in _ATOMS:
                return None
            count += 1
        elif op is _sre_parse.BRANCH:
            for branch in value[1]:
                inner = _count_repeats(branch)
                if inner is None:
                    return None
                count += inner
        elif op is _sre_parse.SUBPATTERN:
            inner = _count_repeats(value[-1])
            if inner is None:
                return None
            count += inner
        elif op in (_sre_parse.ASSERT, _sre_parse.ASSERT_NOT):
            inner = _count_repeats(value[1])
            if inner is None:
                return None
            count += inner
        elif op not in _PLAIN:
            return None
    return count


_CHILD = (
    "import json, re, sys\n"
    "job = json.load(sys.stdin)\n"
    "regex = re.compile(job['pattern'], job['flags'])\n"
    "json.dump([regex.search(text) is not None for text in job['texts']], sys.stdout)\n"
)


def search_bounded(
    regex: re.Pattern[str], texts: list[str], *, deadline: float = MATCH_DEADLINE_S
) -> list[bool] | None:
    """Whether *regex* finds something in each of *texts*, or ``None`` when that took longer
    than *deadline* (or could not be found out): a provably cheap pattern is searched here,
    any other in a child process that is killed at the deadline (Python's ``re`` has no
    timeout and holds the GIL, so it could not be stopped here)."""
    if is_cheap(regex):
        return [regex.search(text) is not None for text in texts]
    if not texts:
        return []
    import json
    import subprocess

    job = json.dumps({"pattern": regex.pattern, "flags": regex.flags, "texts": texts})
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _CHILD],
            input=job.encode(),
            capture_output=True,
            timeout=deadline,
            check=False,
        )
        found = json.loads(done.stdout) if done.returncode == 0 else None
    except (subprocess.TimeoutExpired, OSError, ValueError):
        return None
    if not isinstance(found, list) or len(found) != len(texts):
        return None
    return [item is True for item in found]


def pattern_problem(regex: re.Pattern[str]) -> str | None:
    """Why *regex* may not choose processes to act on, or ``None``: it matches an empty
    string or more than half of a fixed set of short names and typical command lines (so
    almost every process), it holds a repeat or an alternation inside an unbounded repeat
    (``(a+)+``, ``(a|ab)*``), or it takes longer than ``MATCH_DEADLINE_S`` on those short
    texts. A pattern let through that is not provably cheap is still matched in a child
    process with a deadline (:class:`BoundedMatcher`): this check is not what bounds it."""
    try:
        tree = _sre_parse.parse(regex.pattern, regex.flags & ~re.UNICODE)
    except Exception:  # it compiled: the parser's internals are not ours
        tree = None
    if tree is not None and _exponential(tree, inside=False):
        return (
            "can take exponential time (a repeat or an alternation inside an unbounded "
            "repeat, as in (a+)+ or (a|ab)*); expected it written without the nesting"
        )
    found = search_bounded(regex, list(_PROBES))
    if found is None:
        return (
            f"took longer than {MATCH_DEADLINE_S:g}s on short texts; expected it written "
            "without repeats side by side or inside one another"
        )
    if found[0]:
        return f"matches an empty string, so it matches every process; {_NAME_IT}"
    if sum(found) * 2 > len(found):
        return (
            f"matches {sum(found)} of {len(found)} short names and typical command lines, "
            f"so almost every process; {_NAME_IT}"
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


_KNOWN_MAX = 8192  # texts whose costly results are kept between batches


class BoundedMatcher:
    """Whether any of *patterns* matches a process's name or command line, each cut to
    ``MATCHED_CHARS``, where no pattern can hang the caller: provably cheap patterns are
    searched here, any other for a whole batch of texts in a child process with a deadline
    of ``MATCH_DEADLINE_S``. A pattern that overruns it is refused from then on (it matches
    nothing: nothing is touched through it), logged once, and ``refused`` says why."""

    def __init__(self, patterns: tuple[re.Pattern[str], ...]) -> None:
        self.patterns = patterns
        self.refused: dict[str, str] = {}
        self._cheap = tuple(regex for regex in patterns if is_cheap(regex))
        self._all_costly = tuple(regex for regex in patterns if regex not in self._cheap)
        self._known: dict[str, bool] = {}  # costly results of the latest batch, by text

    @property
    def costly(self) -> bool:
        """Whether a pattern not yet refused needs a child process to be matched."""
        return bool(self._costly())

    def _costly(self) -> list[re.Pattern[str]]:
        return [regex for regex in self._all_costly if regex.pattern not in self.refused]

    def prepare(self, texts: Iterable[str]) -> None:
        """Match the costly patterns against all of *texts* at once (one child per pattern),
        so that :meth:`matches` on them answers without a child each."""
        self._known = {}
        costly = self._costly()
        if not costly:
            return
        batch = sorted({text[:MATCHED_CHARS] for text in texts})
        known = dict.fromkeys(batch, False)
        for regex in costly:
            found = self._search(regex, batch)
            for text, hit in zip(batch, found, strict=True):
                known[text] = known[text] or hit
        self._known = known

    def _search(self, regex: re.Pattern[str], texts: list[str]) -> list[bool]:
        found = search_bounded(regex, texts)
        if found is not None:
            return found
        why = (
            f"refused: pattern {regex.pattern!r} took longer than {MATCH_DEADLINE_S:g}s on "
            "a process's name or command line; it matches nothing from now on (nothing is "
            "touched through it): expected it written without repeats side by side or "
            "inside one another"
        )
        if regex.pattern not in self.refused:
            import logging

            logging.getLogger("resguard.reclaim").warning("%s", why)
        self.refused[regex.pattern] = why
        self._known = {}  # what it matched before counts no more
        return [False] * len(texts)

    def matches(self, name: str, command: str) -> bool:
        name, command = name[:MATCHED_CHARS], command[:MATCHED_CHARS]
        if any(regex.search(command) or regex.search(name) for regex in self._cheap):
            return True
        missing = [text for text in dict.fromkeys((command, name)) if text not in self._known]
        if missing and self._costly():
            if len(self._known) > _KNOWN_MAX:
                self._known = {}
            known = dict.fromkeys(missing, False)
            for regex in self._costly():
                for text, hit in zip(missing, self._search(regex, missing), strict=True):
                    known[text] = known[text] or hit
            self._known.update(known)
        return self._known.get(command, False) or self._known.get(name, False)


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
