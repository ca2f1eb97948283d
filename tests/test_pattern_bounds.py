"""A ``match`` pattern is matched against every process's name and command line, another
user's too, before the owner check: no pattern may hang resguard (Python's ``re`` has no
timeout and holds the GIL), and none may match almost every process."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from resguard import ConfigError
from resguard._errors import ResguardError
from resguard.guardian._config import parse_config
from resguard.guardian._effects import MachineEffects
from resguard.guardian._notify import Notifier
from resguard.processes import ProcessTable
from resguard.reclaim import ProcessStopper
from resguard.reclaim._checks import BoundedMatcher, is_cheap, pattern_problem
from resguard.rules import Breach, Level, Offender
from resguard.testing import make_snapshot

from support import wait_until

RUN = os.getpid()

CATASTROPHIC = (  # R1b: each accepted once, each > 10 s on a 1024-character text
    r"(a{1,64}){1,64}$",
    r"(?:(?:a{1,8}){1,8}){1,8}$",
    r"(?:a|a){1,64}$",
    r"(\w{1,64}\s?){1,64}$",
    r".*.*.*.*.*x",
    r".*a.*a.*a.*a.*a.*a!",
    r"(.*a){64}!",
    r"r1bx.*a.*a.*a.*a.*a.*a!",
)
HOSTILE = ("a" * 1023 + "!", "a " * 511 + "!", "x" * 1023 + "!", "ab" * 511 + "!")
ALMOST_ANY = ("..", ".{2}", "(?s)..", r"[\s\S]{2}", "[^x]", ".", r"\S", ".*", "^", "x*")
ORDINARY = ("chrome.*--type=renderer", "ollama runner", "renderer|gpu-process")
SLACK_S = 2.5  # a 1 s deadline, the child's start, a loaded test machine


def _stopper_or_refusal(pattern: str) -> ProcessStopper | None:
    try:
        return ProcessStopper([pattern], enabled=True, dry_run=True)
    except ResguardError:
        return None  # refused at load: bounded too


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_a_catastrophic_pattern_completes_or_fails_safe_through_the_stopper(
    pattern: str, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    stopper = _stopper_or_refusal(pattern)
    if stopper is not None:
        for text in HOSTILE:
            stopper._matches("r1bx", "r1bx" + text[4:])
        stopper._matches("r1bx", HOSTILE[0])  # a refused pattern matches nothing, at once
        assert not stopper._matches("r1bx", HOSTILE[0])
    assert time.monotonic() - started < SLACK_S + 1.0
    if stopper is not None and stopper.matcher.refused:
        [why] = stopper.matcher.refused.values()
        assert why.startswith(f"refused: pattern {pattern!r} took longer than 1s")
        assert [r.message for r in caplog.records].count(why) == 1  # logged once


def test_a_pattern_that_overruns_its_deadline_matches_nothing_and_says_why() -> None:
    matcher = BoundedMatcher((re.compile(r"(?:(?:a{1,8}){1,8}){1,8}$"),))
    assert matcher.matches("x", "a" * 30)  # short texts: it answers (in a child)
    started = time.monotonic()
    assert not matcher.matches("x", "a" * 1023 + "!")
    assert time.monotonic() - started < SLACK_S
    assert not matcher.matches("x", "a" * 30)  # refused from then on: nothing is touched
    assert list(matcher.refused) == [r"(?:(?:a{1,8}){1,8}){1,8}$"]


@pytest.fixture
def hostile() -> Iterator[subprocess.Popen[bytes]]:
    """A process of this user whose command line is a crafted 1000-character text."""
    code, text = "import time; time.sleep(60)", "r1bx" + "a" * 1000
    process = subprocess.Popen([sys.executable, "-c", code, text])
    try:
        wait_until(lambda: _argv(process.pid).endswith(b"a" * 1000), what="the child to start")
        yield process
    finally:
        process.kill()
        process.wait()


def _argv(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().rstrip(b"\0")
    except OSError:
        return b""


def _breach(pid: int) -> Breach:
    return Breach(
        rule="runaway",
        metric="processes.cpu_percent",
        op=">=",
        value=99.0,
        threshold=90.0,
        level=Level.WARNING,
        since=0.0,
        since_wall=0.0,
        held_s=60.0,
        unit="percent",
        offenders=(Offender(pid, "python", 99.0, 0.0),),
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="processes are read from /proc")
@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_a_catastrophic_pattern_cannot_hang_the_guardians_matching(
    pattern: str, hostile: subprocess.Popen[bytes]
) -> None:
    table = {"action": [{"when": "warning", "do": "pause", "match": [pattern]}]}
    started = time.monotonic()
    try:
        config = parse_config({"guardian": table}, "redos.toml")
    except ConfigError:
        return  # refused at load, in bounded time
    [spec] = config.actions
    effects = MachineEffects(notifier=Notifier(which=lambda name: None))
    snapshot = make_snapshot(processes=tuple(ProcessTable().sample()))
    outcomes = effects.act(spec, _breach(hostile.pid), snapshot, dry_run=True)
    assert time.monotonic() - started < SLACK_S + 1.0
    targeted = any(o.target is not None and o.target.pid == hostile.pid for o in outcomes)
    refused = effects._stopper(spec).matcher.refused
    assert targeted != bool(refused), (outcomes, refused)  # answered in time, or fail-safe
    os.kill(hostile.pid, signal.SIGCONT)  # never paused: still running
    assert hostile.poll() is None


@pytest.mark.parametrize("pattern", ALMOST_ANY)
def test_a_pattern_matching_almost_any_process_is_refused_at_load(pattern: str) -> None:
    with pytest.raises(ResguardError, match="every process"):
        ProcessStopper([pattern], enabled=True, dry_run=True)
    table = {"action": [{"when": "warning", "do": "pause", "match": [pattern]}]}
    with pytest.raises(ConfigError, match="every process"):
        parse_config({"guardian": table}, "any.toml")


@pytest.mark.parametrize(
    ("pattern", "name", "command"),
    [
        (ORDINARY[0], "chrome", "/opt/google/chrome/chrome --type=renderer --lang=en"),
        (ORDINARY[1], "ollama", "/usr/local/bin/ollama runner --model x"),
        (ORDINARY[2], "chrome", "chrome --type=gpu-process"),
    ],
)
def test_ordinary_patterns_match_in_this_process_without_a_child(
    pattern: str, name: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a child process was started for {pattern!r}")

    monkeypatch.setattr(subprocess, "run", no_child)
    monkeypatch.setattr(subprocess, "Popen", no_child)
    assert is_cheap(re.compile(pattern))
    assert pattern_problem(re.compile(pattern)) is None
    stopper = ProcessStopper([pattern], enabled=True, dry_run=True)
    assert stopper._matches(name, command)
    assert not stopper._matches("bash", "bash -l")
    stopper.candidates()  # a whole scan, no child either


@pytest.mark.parametrize(
    "pattern", [r".*a.*b", r"(ab)+", r"(?:a|bc)*", r"a+b+", r"(?=.*x).*y", r"(a)(?(1)b|c)"]
)
def test_a_pattern_not_provably_cheap_goes_to_a_child(pattern: str) -> None:
    assert not is_cheap(re.compile(pattern))


def test_the_journal_says_why_logging_is_once_per_pattern(caplog: pytest.LogCaptureFixture) -> None:
    matcher = BoundedMatcher((re.compile(r".*a.*a.*a.*a.*a.*a!"),))
    with caplog.at_level(logging.WARNING, logger="resguard.reclaim"):
        matcher.prepare(["a" * 1023, "b"])
        matcher.prepare(["a" * 1023, "c"])
    assert len([r for r in caplog.records if "refused: pattern" in r.message]) == 1
