"""The guardian against R1b's second pass (issue 14, third round), with real processes and
real FIFOs: a malformed paused-process record is skipped alone (the others resumed), a
FIFO among the records or named as ``--config`` never hangs the guardian, a running
guardian resumes what a guardian beside it left paused when it died, a pause is refused
while its record cannot be written, a broken unrelated ``pyproject.toml`` is passed over
by the config search, a negative duration string says it is negative, and an early firing
(a new culprit within the cooldown) that finds nothing is not journalled."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from resguard import ConfigError
from resguard.guardian import ActionSpec, Guardian, Journal, Outcome, Target, load_config
from resguard.guardian._effects import MachineEffects
from resguard.monitor import State
from resguard.reclaim import ProcessStopper
from resguard.rules import Breach, Level, Offender, Verdict
from resguard.snapshot import Snapshot
from resguard.testing import make_snapshot

from support import process_cmdline, process_state, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

RUN = uuid.uuid4().hex[:8]
_RECORDED = ("pid", "start_ticks", "create_time", "ppid", "name", "cmdline", "uid")


@pytest.fixture
def spawn() -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Children burning a core, each with its tag in its command line; all killed after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(marker: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-c", "while 1: pass", marker])
        started.append(child)
        wait_until(  # until the exec: a child just forked still has pytest's command line
            lambda: marker.encode() in process_cmdline(child.pid), what=f"{marker} to start"
        )
        return child

    yield start
    for child in started:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.wait(timeout=10)


def stopped(child: subprocess.Popen[bytes]) -> None:
    os.kill(child.pid, signal.SIGSTOP)
    wait_until(lambda: process_state(child.pid) == "T", what="the child stopped")


def entry_for(child: subprocess.Popen[bytes], marker: str) -> dict[str, Any]:
    candidate = ProcessStopper([marker], enabled=True).candidate(child.pid)
    assert candidate is not None
    return {**{key: getattr(candidate, key) for key in _RECORDED}, "match": [marker]}


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    return gone.pid


def record(directory: Path, name: str, entries: list[dict[str, Any]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    owner = {"pid": dead_pid(), "start": 1.0}
    (directory / name).write_text(json.dumps({"owner": owner, "paused": entries}))


def in_time(call: Callable[[], object], timeout_s: float = 10.0) -> object:
    """*call*'s answer (or its exception, raised here), failing (not hanging) when it has
    none within *timeout_s*."""
    answer: list[object] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            answer.append(call())
        except Exception as error:
            failed.append(error)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout_s)
    assert not worker.is_alive(), "it hung"
    if failed:
        raise failed[0]
    return answer[0]


# ------------------------------------------------------------------ R1b 2 and 3: records


def test_a_record_nested_too_deeply_is_skipped_and_the_others_are_resumed(
    tmp_path: Path, spawn: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    marker = f"third-nested-{RUN}"
    child = spawn(marker)
    stopped(child)
    directory = tmp_path / "paused"
    record(directory, "guardian-2.json", [entry_for(child, marker)])
    (directory / "guardian-1.json").write_text("[" * 200_000 + "]" * 200_000)
    outcomes = MachineEffects(paused_dir=directory).recover()
    assert [(o.action, o.status) for o in outcomes] == [("resume", "done")]
    assert process_state(child.pid) != "T"
    assert list(directory.glob("guardian-*.json")) == []


def test_a_fifo_among_the_records_never_hangs_the_guardian(
    tmp_path: Path, spawn: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    marker = f"third-fifo-{RUN}"
    child = spawn(marker)
    stopped(child)
    directory = tmp_path / "paused"
    record(directory, "guardian-2.json", [entry_for(child, marker)])
    fifo = directory / "guardian-1.json"
    os.mkfifo(fifo)
    try:
        outcomes = in_time(MachineEffects(paused_dir=directory).recover)
    finally:
        if fifo.exists():  # let a reader blocked in open() go
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
    assert [(o.action, o.status) for o in outcomes] == [("resume", "done")]  # type: ignore[attr-defined]
    assert process_state(child.pid) != "T"


def test_a_fifo_named_as_the_config_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "resguard.toml"
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "resguard", "guardian", "--config", str(fifo), "--once"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "not a regular file" in done.stderr
    with pytest.raises(ConfigError, match="not a regular file"):
        in_time(lambda: load_config(fifo))


# ------------------------------------------------------------------ R1b 5: a guardian beside


def test_a_running_guardian_resumes_what_a_guardian_beside_it_left_when_it_died(
    tmp_path: Path, spawn: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    marker = f"third-beside-{RUN}"
    child = spawn(marker)
    now = [0.0]
    directory = tmp_path / "paused"
    effects = MachineEffects(paused_dir=directory, clock=lambda: now[0])
    assert effects.recover() == []
    stopped(child)  # the guardian beside it pauses, records it, and is SIGKILLed
    record(directory, "guardian-2.json", [entry_for(child, marker)])
    now[0] = 1.0
    assert effects.pending() == []  # not re-read at every tick
    now[0] = 11.0
    [(rule, outcome)] = effects.pending()
    assert (rule, outcome.action, outcome.status) == (None, "resume", "done")
    assert process_state(child.pid) != "T"


# ------------------------------------------------------------------ R1b 7: no record, no pause


def test_a_pause_is_refused_while_its_record_cannot_be_written(
    tmp_path: Path, spawn: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    marker = f"third-unrecorded-{RUN}"
    child = spawn(marker)
    (tmp_path / "state").write_text("a file where the state directory would be\n")
    effects = MachineEffects(paused_dir=tmp_path / "state" / "resguard" / "paused")
    spec = ActionSpec(index=0, do="pause", when="burning", match=(re.compile(marker),))
    offender = Offender(child.pid, "python3", 99.0, 0.0)
    breach = Breach("burning", "processes.cpu_percent", ">", 99.0, 20.0, Level.WARNING, 0, 0, 0)
    breach = attrs.evolve(breach, offenders=(offender,))
    [outcome] = effects.act(spec, breach, make_snapshot(), dry_run=False)
    assert outcome.status == "refused", outcome
    assert "paused-process record" in outcome.result
    assert process_state(child.pid) != "T"  # never stopped


# ------------------------------------------------------------------ R1b 6: the search


@pytest.mark.parametrize(
    "text", ["[project\nname = 1\n", "# big\n" + "x = 1\n" * 200_000 + "y = 'a'" * 0]
)
def test_a_broken_or_huge_unrelated_pyproject_is_passed_over_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path / "none"))
    (tmp_path / "pyproject.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="resguard"):
        assert load_config().path is None  # the defaults, not a refusal to start
    assert any("pyproject.toml" in record.getMessage() for record in caplog.records)


# ------------------------------------------------------------------ R1b 8c: durations


@pytest.mark.parametrize(("key", "value"), [("interval", "-1s"), ("interval", "-5m")])
def test_a_negative_duration_string_says_it_is_negative(
    tmp_path: Path, key: str, value: str
) -> None:
    path = tmp_path / "resguard.toml"
    path.write_text(f'[guardian]\npreset = "none"\n{key} = "{value}"\n')
    with pytest.raises(ConfigError, match=r"is not a duration \(it is negative\)"):
        load_config(path)


# ------------------------------------------------------------------ R1b 8e: journal noise


class _Scripted:
    """Effects that pause pid 4242 once, then find nothing (the new culprit is not one
    `match` covers)."""

    def __init__(self) -> None:
        self.calls = 0

    def act(
        self, spec: ActionSpec, breach: Breach, snapshot: Snapshot, *, dry_run: bool
    ) -> list[Outcome]:
        self.calls += 1
        if self.calls == 1:
            return [Outcome("pause", Target(pid=4242, name="chrome"), False, "done")]
        return [Outcome("pause", None, False, "skipped", "no culprit of the breach matches")]

    def clear(self, spec: ActionSpec, *, dry_run: bool) -> list[Outcome]:
        return []

    def pending(self) -> list[tuple[str | None, Outcome]]:
        return []

    def recover(self) -> list[Outcome]:
        return []

    def close(self) -> list[Outcome]:
        return []


def test_an_early_firing_that_finds_nothing_is_not_journalled(tmp_path: Path) -> None:
    path = tmp_path / "resguard.toml"
    path.write_text(
        '[guardian]\npreset = "none"\ndry_run = false\n\n'
        '[[guardian.rule]]\nname = "burning"\nprocess_cpu_percent_above = 20\n\n'
        '[[guardian.action]]\nwhen = "burning"\ndo = "pause"\nmatch = ["chrome"]\n'
        'cooldown = "1s"\n'
    )
    effects = _Scripted()
    guardian = Guardian(load_config(path), effects, journal=Journal(tmp_path / "j.jsonl"))
    held = Breach("burning", "processes.cpu_percent", ">", 99.0, 20.0, Level.WARNING, 0, 0, 0)
    first = attrs.evolve(held, offenders=(Offender(4242, "chrome", 99.0, 0.0),))
    second = attrs.evolve(held, offenders=(Offender(5555, "make", 30.0, 0.0),))
    snapshot = make_snapshot()
    for moment, breach in [(1.0, first), (1.5, second)]:
        state = State(
            attrs.evolve(snapshot, monotonic=moment), Verdict(Level.WARNING, (breach,)), 1
        )
        guardian.act(state)
    assert effects.calls == 2  # the new culprit was looked at within the cooldown
    lines = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert [line["result"] for line in lines] == ["done"]
