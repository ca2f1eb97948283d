"""The guardian's effects on real processes: pause and resume, renice and back, stop
(SIGTERM, SIGKILL after the grace), dry runs that touch nothing, and the stopper's rules
(opt-in by match, never another user's process, never a process that took a pid)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import attrs
import pytest

from resguard._probes.backend import Backend
from resguard.guardian._actions import ActionSpec
from resguard.guardian._effects import MachineEffects
from resguard.guardian._notify import Notifier
from resguard.processes import ProcessTable
from resguard.reclaim import StopCandidate
from resguard.rules import Breach, Level, Offender
from resguard.snapshot import ProcessInfo, Snapshot
from resguard.testing import make_snapshot

from support import process_cmdline, process_state, wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="real processes are read from /proc here"
)

RUN = os.getpid()


def _spawn(
    tag: str, code: str = "while 1: pass", python: str = sys.executable, **options: object
) -> subprocess.Popen[bytes]:
    """A child burning a core, with *tag* in its command line so only this test matches it."""
    process = subprocess.Popen(  # type: ignore[call-overload]
        [python, "-c", code, f"guardian-{tag}-{RUN}"], **options
    )
    assert isinstance(process, subprocess.Popen)
    wait_until(
        lambda: f"guardian-{tag}".encode() in process_cmdline(process.pid),
        what=f"the {tag} child to start",
    )
    return process


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as file:
        mask = next(line for line in file if line.startswith("SigIgn:")).split()[1]
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.fixture
def children() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(tag: str, code: str = "while 1: pass", **options: object) -> subprocess.Popen[bytes]:
        process = _spawn(tag, code, **options)  # type: ignore[arg-type]
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
        process.wait()


def _spec(do: str, *patterns: str, **fields: object) -> ActionSpec:
    return ActionSpec(
        index=0,
        when="runaway",
        do=do,
        match=tuple(re.compile(p) for p in patterns),
        **fields,  # type: ignore[arg-type]
    )


def _breach(*pids: int, metric: str = "processes.cpu_percent") -> Breach:
    offenders = tuple(Offender(pid, "python", 99.0, 0.0) for pid in pids)
    return Breach(
        rule="runaway",
        metric=metric,
        op=">=",
        value=99.0,
        threshold=90.0,
        level=Level.WARNING,
        since=0.0,
        since_wall=0.0,
        held_s=60.0,
        unit="percent",
        offenders=offenders,
    )


def _snapshot() -> Snapshot:
    """A snapshot whose process table is this machine's, read now."""
    return make_snapshot(processes=tuple(ProcessTable().sample()))


def _effects(backend: Backend | None = None) -> MachineEffects:
    return MachineEffects(backend=backend, notifier=Notifier(which=lambda name: None))


@pytest.mark.parametrize("backend", ["linux", "psutil"])
def test_pause_stops_the_matching_culprit_and_clear_resumes_that_same_process(
    children: Callable[..., subprocess.Popen[bytes]], backend: Backend
) -> None:
    burner = children(f"pause{backend}")
    effects, spec = _effects(backend), _spec("pause", rf"guardian-pause{backend}-{RUN}")
    [outcome] = effects.act(spec, _breach(burner.pid), _snapshot(), dry_run=False)
    assert (outcome.result, outcome.target and outcome.target.pid) == ("done", burner.pid)
    assert outcome.target is not None
    assert outcome.target.start_time is not None
    wait_until(lambda: process_state(burner.pid) == "T", what="the child to be stopped")
    [again] = effects.act(spec, _breach(burner.pid), _snapshot(), dry_run=False)
    assert again.result == "skipped: already paused by this action"
    [resumed] = effects.clear(spec, dry_run=False)
    assert (resumed.action, resumed.result) == ("resume", "done")  # not "pause" again
    wait_until(lambda: process_state(burner.pid) in ("R", "S"), what="the child to run again")
    assert effects.clear(spec, dry_run=False) == []  # resumed once, forgotten


def test_close_resumes_every_process_still_paused(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    burner = children("close")
    effects = _effects()
    spec = _spec("pause", rf"guardian-close-{RUN}")
    [outcome] = effects.act(spec, _breach(burner.pid), _snapshot(), dry_run=False)
    assert outcome.result == "done"
    wait_until(lambda: process_state(burner.pid) == "T", what="the child to be stopped")
    [resumed] = effects.close()
    assert resumed.result == "done"
    wait_until(lambda: process_state(burner.pid) in ("R", "S"), what="the child to run again")


def test_renice_lowers_priority_by_the_step_and_clear_puts_it_back(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    burner = children("renice")
    before = os.getpriority(os.PRIO_PROCESS, burner.pid)
    effects, spec = _effects(), _spec("renice", rf"guardian-renice-{RUN}", renice_by=5)
    [outcome] = effects.act(spec, _breach(burner.pid), _snapshot(), dry_run=False)
    assert outcome.result == "done"
    assert os.getpriority(os.PRIO_PROCESS, burner.pid) == min(before + 5, 19)
    [restored] = effects.clear(spec, dry_run=False)
    assert restored.result == "done"
    assert os.getpriority(os.PRIO_PROCESS, burner.pid) == before


def test_renice_never_raises_priority_past_19(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    burner = children("nice19")
    os.setpriority(os.PRIO_PROCESS, burner.pid, 19)
    effects, spec = _effects(), _spec("renice", rf"guardian-nice19-{RUN}", renice_by=10)
    [outcome] = effects.act(spec, _breach(burner.pid), _snapshot(), dry_run=False)
    assert outcome.result == "skipped: already at nice 19"
    assert os.getpriority(os.PRIO_PROCESS, burner.pid) == 19


def test_stop_ends_the_culprit_with_sigterm_and_reports_its_rss_as_freed(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    burner = children("stop", "block = b'x' * (32 << 20)\nwhile 1: pass")
    wait_until(lambda: _rss(burner.pid) >= 32 << 20, what="the child to hold 32 MiB")
    effects, spec = _effects(), _spec("stop", rf"guardian-stop-{RUN}", grace_s=10.0)
    [outcome] = effects.act(spec, _breach(burner.pid), _snapshot(), dry_run=False)
    assert outcome.result == "done: SIGTERM sent; SIGKILL in 10 s"
    assert burner.wait(timeout=10) == -signal.SIGTERM
    [(rule, exited)] = effects.pending()  # the next tick sees it gone
    assert (rule, exited.action, exited.result) == (
        "runaway",
        "stop",
        "done: gone since its SIGTERM was sent",
    )
    assert exited.freed_bytes is not None
    assert exited.freed_bytes >= 32 << 20


def test_stop_kills_a_process_that_ignores_sigterm_after_the_grace(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    code = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile 1: pass"
    stubborn = children("stubborn", code)
    wait_until(lambda: _ignores_sigterm(stubborn.pid), what="the child to ignore SIGTERM")
    now = [0.0]
    effects = MachineEffects(notifier=Notifier(which=lambda name: None), clock=lambda: now[0])
    spec = _spec("stop", rf"guardian-stubborn-{RUN}", grace_s=30.0)
    [outcome] = effects.act(spec, _breach(stubborn.pid), _snapshot(), dry_run=False)
    assert outcome.result == "done: SIGTERM sent; SIGKILL in 30 s"  # returned at once
    now[0] = 29.9
    assert effects.pending() == []  # within its grace: nothing yet, and no waiting
    assert stubborn.poll() is None
    [again] = effects.act(spec, _breach(stubborn.pid), _snapshot(), dry_run=False)
    assert again.result == "skipped: already sent SIGTERM; SIGKILL due"
    now[0] = 30.0
    [(_, killed)] = effects.pending()
    assert (killed.action, killed.result) == ("kill", "done: still running 30 s after SIGTERM")
    assert stubborn.wait(timeout=10) == -signal.SIGKILL


def test_shutdown_abandons_a_pending_kill_and_never_waits_for_the_grace(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    code = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile 1: pass"
    stubborn = children("abandon", code)
    wait_until(lambda: _ignores_sigterm(stubborn.pid), what="the child to ignore SIGTERM")
    effects, spec = _effects(), _spec("stop", rf"guardian-abandon-{RUN}", grace_s=600.0)
    [outcome] = effects.act(spec, _breach(stubborn.pid), _snapshot(), dry_run=False)
    assert outcome.result.startswith("done: SIGTERM sent")
    [abandoned] = effects.close()
    assert (abandoned.action, abandoned.status) == ("kill", "skipped")
    assert "not killed" in abandoned.reason
    assert stubborn.poll() is None  # SIGTERM only: it ignored it and runs on


@pytest.mark.parametrize("do", ["pause", "renice", "stop"])
def test_a_dry_run_signals_nothing_and_says_what_it_would_do(
    children: Callable[..., subprocess.Popen[bytes]], do: str
) -> None:
    burner = children(f"dry{do}")
    nice = os.getpriority(os.PRIO_PROCESS, burner.pid)
    effects, spec = _effects(), _spec(do, rf"guardian-dry{do}-{RUN}")
    [outcome] = effects.act(spec, _breach(burner.pid), _snapshot(), dry_run=True)
    assert (outcome.result, outcome.dry_run) == ("would", True)
    assert outcome.target is not None
    assert outcome.target.pid == burner.pid
    assert process_state(burner.pid) in ("R", "S")
    assert os.getpriority(os.PRIO_PROCESS, burner.pid) == nice
    assert burner.poll() is None
    assert effects.clear(spec, dry_run=True) == []


def test_a_culprit_no_pattern_matches_is_never_touched(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    burner = children("unmatched")
    effects = _effects()
    spec = _spec("stop", rf"guardian-something-else-{RUN}", grace_s=0.1)
    [outcome] = effects.act(spec, _breach(burner.pid), _snapshot(), dry_run=False)
    assert outcome.result == "skipped: no culprit of the breach matches `match`"
    assert outcome.target is None
    assert burner.poll() is None
    assert process_state(burner.pid) in ("R", "S")


def test_an_action_without_match_is_refused_never_a_default(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    burner = children("nomatch")
    [outcome] = _effects().act(_spec("pause"), _breach(burner.pid), _snapshot(), dry_run=False)
    assert outcome.result.startswith("refused: a process action needs `match`")
    assert process_state(burner.pid) in ("R", "S")


def _as_nobody() -> None:
    os.setgid(65534)
    os.setuid(65534)


@pytest.mark.skipif(os.geteuid() != 0, reason="starting another user's process needs root")
@pytest.mark.parametrize("backend", ["linux", "psutil"])
@pytest.mark.parametrize("do", ["pause", "renice", "stop"])
def test_another_users_matching_process_is_never_touched(
    children: Callable[..., subprocess.Popen[bytes]], do: str, backend: Backend
) -> None:
    python = next(
        (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None
    )
    if python is None:
        pytest.skip("no python3 that another user may run")
    theirs = children(f"nobody{do}{backend}", python=python, preexec_fn=_as_nobody)
    nice = os.getpriority(os.PRIO_PROCESS, theirs.pid)
    effects = _effects(backend)
    spec = _spec(do, rf"guardian-nobody{do}{backend}-{RUN}", grace_s=0.1)
    for breach in (_breach(theirs.pid), _breach()):  # named as a culprit, or found by rank
        [outcome] = effects.act(spec, breach, _snapshot(), dry_run=False)
        assert outcome.result == "skipped: protected: another user's process"
    assert theirs.poll() is None
    assert process_state(theirs.pid) != "T"  # not stopped (a starting child may be in D)
    assert os.getpriority(os.PRIO_PROCESS, theirs.pid) == nice


def test_without_culprits_the_busiest_matching_process_is_the_one_target(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    idle = children("rankidle", "import signal\nsignal.pause()")
    busy = children("rankbusy")
    table = ProcessTable()
    table.sample()
    rows: list[ProcessInfo] = []

    def busy_shows() -> bool:
        # the snapshot is the sample that showed it: a fresh sample right after covers a few
        # milliseconds, where the idle child's start-up can outweigh the burner (seen in CI)
        rows[:] = table.sample()
        cpu = {r.pid: r.cpu_percent for r in rows}
        return cpu.get(busy.pid, 0) > max(20, cpu.get(idle.pid, 0))  # idle done starting

    wait_until(busy_shows, what="the busy child's CPU to show")
    snapshot = make_snapshot(processes=tuple(rows))
    effects = _effects()
    spec = _spec("pause", rf"guardian-rank(idle|busy)-{RUN}")
    [outcome] = effects.act(spec, _breach(metric="cpu.percent"), snapshot, dry_run=True)
    assert outcome.target is not None
    assert outcome.target.pid == busy.pid
    assert idle.poll() is None


def test_a_snapshot_row_whose_pid_changed_hands_is_refused(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    burner = children("reused")
    snapshot = _snapshot()
    row = next(r for r in snapshot.processes or () if r.pid == burner.pid)
    # the table saw an earlier process with this pid: it started 10 s before this one
    stale = attrs.evolve(row, create_time=row.create_time - 10.0)
    rows = tuple(stale if r.pid == burner.pid else r for r in snapshot.processes or ())
    snapshot = attrs.evolve(snapshot, processes=rows)
    spec = _spec("stop", rf"guardian-reused-{RUN}", grace_s=0.1)
    effects = _effects()
    for breach in (_breach(burner.pid), _breach()):
        [outcome] = effects.act(spec, breach, snapshot, dry_run=False)
        assert outcome.result.startswith("skipped: no ")
    assert burner.poll() is None


def test_resume_refuses_a_process_that_is_not_the_one_paused(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    burner = children("swap")
    effects, spec = _effects(), _spec("pause", rf"guardian-swap-{RUN}")
    [outcome] = effects.act(spec, _breach(burner.pid), _snapshot(), dry_run=False)
    assert outcome.result == "done"
    wait_until(lambda: process_state(burner.pid) == "T", what="the child to be stopped")
    [held] = effects._paused[0]
    # the remembered process started earlier: the pid now is another process's (the linux
    # backend compares start ticks, psutil start times)
    ticks, created = held.candidate.start_ticks, held.candidate.create_time
    earlier = attrs.evolve(
        held.candidate,
        start_ticks=None if ticks is None else ticks - 1,
        create_time=None if created is None else created - 5.0,
    )
    effects._paused[0] = [attrs.evolve(held, candidate=earlier)]
    [refused] = effects.clear(spec, dry_run=False)
    assert refused.result.startswith("skipped: it is gone")
    assert process_state(burner.pid) == "T"  # nothing was sent to it


@pytest.mark.parametrize("by", [0, -5, 20])
def test_renice_never_raises_a_priority_even_when_asked_to(
    children: Callable[..., subprocess.Popen[bytes]], by: int
) -> None:
    burner = children(f"raise{by}")
    os.setpriority(os.PRIO_PROCESS, burner.pid, 5)
    spec = _spec("renice", rf"guardian-raise{by}-{RUN}", renice_by=by)
    [outcome] = _effects().act(spec, _breach(burner.pid), _snapshot(), dry_run=False)
    assert outcome.result == f"refused: by = {by}, not 1-19"
    assert os.getpriority(os.PRIO_PROCESS, burner.pid) == 5


def test_an_action_is_logged_once_by_the_journal_never_by_the_effect_as_well(
    children: Callable[..., subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    from resguard.guardian import Journal

    burner = children("logonce")
    effects, spec = _effects(), _spec("pause", rf"guardian-logonce-{RUN}")
    journal = Journal(None)
    with caplog.at_level(logging.DEBUG, logger="resguard"):
        for outcome in effects.act(spec, _breach(burner.pid), _snapshot(), dry_run=False):
            journal.write("runaway", outcome)
        for outcome in effects.clear(spec, dry_run=False):
            journal.write("runaway", outcome)
    said = [r for r in caplog.records if str(burner.pid) in r.getMessage()]
    assert [r.getMessage().split(" ")[:2] for r in said] == [
        ["pause", str(burner.pid)],
        ["resume", str(burner.pid)],
    ]
    assert {r.name for r in said} == {"resguard.guardian"}


def test_without_culprits_the_processes_are_scanned_once_not_read_one_by_one(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    burner = children("scanonce")
    effects, spec = _effects(), _spec("pause", rf"guardian-scanonce-{RUN}")
    stopper = effects._stopper(spec)
    calls: list[str] = []
    one, every = stopper.candidate, stopper.candidates

    def candidate(pid: int) -> StopCandidate | None:
        calls.append("candidate")
        return one(pid)

    def candidates() -> list[StopCandidate]:
        calls.append("candidates")
        return every()

    stopper.candidate = candidate  # type: ignore[method-assign]
    stopper.candidates = candidates  # type: ignore[method-assign]
    [outcome] = effects.act(spec, _breach(metric="memory.percent"), _snapshot(), dry_run=True)
    assert outcome.target is not None
    assert outcome.target.pid == burner.pid
    assert calls == ["candidates"]


def test_a_refusal_and_a_skip_are_told_apart_by_status_not_by_their_words(
    children: Callable[..., subprocess.Popen[bytes]],
) -> None:
    burner = children("status")
    snapshot = _snapshot()
    [no_match] = _effects().act(_spec("pause"), _breach(burner.pid), snapshot, dry_run=False)
    assert (no_match.status, no_match.reason) == (
        "refused",
        "a process action needs `match` patterns (there is no default)",
    )
    spec = _spec("stop", rf"guardian-status-{RUN}", grace_s=0.1)
    [row] = [row for row in snapshot.processes or () if row.pid == burner.pid]
    effects = MachineEffects(protect=[row.name], notifier=Notifier(which=lambda name: None))
    [protected] = effects.act(spec, _breach(burner.pid), snapshot, dry_run=False)
    assert protected.status == "skipped"
    assert protected.reason.startswith("protected")
    assert burner.poll() is None


def test_a_stop_is_logged_once_by_the_journal_not_by_the_stopper_as_well(
    children: Callable[..., subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    from resguard.guardian import Journal

    burner = children("stoplogonce")
    spec = _spec("stop", rf"guardian-stoplogonce-{RUN}", grace_s=2.0)
    effects = _effects()
    with caplog.at_level(logging.DEBUG, logger="resguard"):
        for outcome in effects.act(spec, _breach(burner.pid), _snapshot(), dry_run=False):
            Journal(None).write("runaway", outcome)
        burner.wait(timeout=10)
        for rule, outcome in effects.pending():
            Journal(None).write(rule, outcome)
    said = [r.getMessage() for r in caplog.records if str(burner.pid) in r.getMessage()]
    assert len(said) == 2  # the SIGTERM, then its end: each once
    assert said[0].startswith(f"stop {burner.pid} ")
    assert ": done: SIGTERM sent" in said[0]
    assert ": done: gone since its SIGTERM was sent, freed " in said[1]
