"""The guardian's loop and command (resguard.guardian.Guardian, ``resguard guardian``)
against real processes: a child burning a core is named by the verdict, acted on (through
a recording double, and through the machine's own effects: paused, then resumed when the
rule clears or the guardian stops), journalled; ``--once`` and SIGTERM end cleanly."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from resguard.cli import main
from resguard.guardian import (
    ActionSpec,
    Effects,
    Guardian,
    GuardianConfig,
    Journal,
    Outcome,
    Target,
    load_config,
)
from resguard.guardian._effects import MachineEffects
from resguard.guardian._run import host_sampler
from resguard.monitor import Monitor, State
from resguard.rules import Breach, Policy, ProcessThreshold, Verdict
from resguard.snapshot import ProcessInfo, Sampler, Snapshot

from plugins.integration import unavailable
from support import process_state, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture
def burner() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A child burning one core, with a marker in its command line to match it by."""
    marker = f"guardian-test-{uuid.uuid4().hex[:10]}"
    child = subprocess.Popen([sys.executable, "-c", "while 1: pass", marker])
    try:
        yield child, marker
    finally:
        child.kill()
        child.wait(timeout=10)


def _matches(spec: ActionSpec, pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return any(pattern.search(command) for pattern in spec.match)


class Recording:
    """An Effects double that records its calls and answers what a dry run would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def act(
        self, spec: ActionSpec, breach: Breach, snapshot: Snapshot, *, dry_run: bool
    ) -> list[Outcome]:
        self.calls.append(("act", (spec.do, breach)))
        if not spec.match:
            return [Outcome(spec.do, None, dry_run, "would")]
        hits = [o for o in breach.offenders if o.pid is not None and _matches(spec, o.pid)]
        if not hits:
            return [Outcome(spec.do, None, dry_run, "skipped", "no culprit matches")]
        return [Outcome(spec.do, Target(pid=o.pid, name=o.name), dry_run, "would") for o in hits]

    def clear(self, spec: ActionSpec, *, dry_run: bool) -> list[Outcome]:
        self.calls.append(("clear", spec.do))
        return [Outcome(spec.do, None, dry_run, "would")]

    def pending(self) -> list[tuple[str | None, Outcome]]:
        return []

    def recover(self) -> list[Outcome]:
        self.calls.append(("recover", None))
        return []

    def close(self) -> list[Outcome]:
        self.calls.append(("close", None))
        return []


def write_config(
    tmp_path: Path, marker: str, *, dry_run: bool, extra: str = "", hold: str = "0s"
) -> Path:
    """A guardian pausing the burner; *hold*: how long the rule must be clear before the
    pause is undone (a test that waits for the resume keeps it short)."""
    path = tmp_path / "resguard.toml"
    path.write_text(
        f"""
[guardian]
preset = "none"
dry_run = {str(dry_run).lower()}
interval = "100ms"

[[guardian.rule]]
name = "burning"
process_cpu_percent_above = 20

[[guardian.action]]
when = "burning"
do = "pause"
hold = "{hold}"
match = ["{marker}"]

[[guardian.action]]
when = "warning"
do = "notify"
{extra}
"""
    )
    return path


class ChildOnly(ProcessThreshold):
    """The per-process CPU rule, judging one process: other tests burn cores on this
    machine too, and the rule must clear when *this* child stops burning."""

    def __init__(self, pid: int) -> None:
        super().__init__(cpu_percent_above=20, name="burning")
        self.pid = pid

    def _rows(self, snapshot: Snapshot) -> Sequence[ProcessInfo] | None:
        rows = snapshot.processes
        return None if rows is None else [row for row in rows if row.pid == self.pid]


def child_guardian(
    config: GuardianConfig, effects: Effects | None, pid: int, journal: Path
) -> Guardian:
    """A guardian whose policy judges only the child *pid* (its own actions unchanged)."""
    monitor = Monitor(
        policy=Policy([ChildOnly(pid)]),
        sampler=host_sampler(),
        reclaim=False,
        adaptive=False,
        psi_trigger=False,
    )
    return Guardian(config, effects, journal=Journal(journal), monitor=monitor)


def names_pid(verdict: Verdict, pid: int) -> bool:
    return any(o.pid == pid for b in verdict.breaches for o in b.offenders)


def test_the_verdict_names_the_burning_child_and_each_action_fires_as_planned(
    tmp_path: Path, burner: tuple[subprocess.Popen[bytes], str]
) -> None:
    child, marker = burner
    config = load_config(write_config(tmp_path, marker, dry_run=True))
    effects = Recording()
    journal_path = tmp_path / "journal.jsonl"
    guardian = child_guardian(config, effects, child.pid, journal_path)
    wait_until(lambda: names_pid(guardian.tick(), child.pid), what="the verdict to name the child")
    for _ in range(3):
        guardian.tick()
    acts = [call[1][0] for call in effects.calls if call[0] == "act"]
    assert acts == ["pause", "notify"]  # notify once per breach, pause held by its cooldown
    lines = [json.loads(line) for line in journal_path.read_text().splitlines()]
    pause = next(line for line in lines if line["action"] == "pause")
    assert pause["rule"] == "burning"
    assert pause["dry_run"] is True
    assert pause["target"]["pid"] == child.pid
    child.kill()
    child.wait(timeout=10)
    wait_until(lambda: guardian.tick().ok, what="the rule to clear once the child is gone")
    assert ("clear", "pause") in effects.calls
    guardian.close()
    assert effects.calls[-1] == ("close", None)


class Watched(MachineEffects):
    """The machine's effects, with the outcomes of every clearing kept."""

    def __init__(self) -> None:
        super().__init__()
        self.cleared: list[Outcome] = []

    def clear(self, spec: ActionSpec, *, dry_run: bool) -> list[Outcome]:
        outcomes = super().clear(spec, dry_run=dry_run)
        self.cleared.extend(outcomes)
        return outcomes


def test_a_burning_process_is_paused_then_resumed_when_its_rule_clears(
    tmp_path: Path, burner: tuple[subprocess.Popen[bytes], str]
) -> None:
    child, marker = burner
    config = load_config(write_config(tmp_path, marker, dry_run=False, hold="200ms"))
    effects = Watched()
    guardian = child_guardian(config, effects, child.pid, tmp_path / "j.jsonl")
    try:
        wait_until(
            lambda: guardian.tick() is not None and process_state(child.pid) == "T",
            what="the guardian to pause the burning child",
        )
        assert effects.cleared == []
        # paused, it burns nothing: the rule clears and the guardian resumes it
        wait_until(
            lambda: guardian.tick() is not None and process_state(child.pid) != "T",
            what="the guardian to resume the child when the rule cleared",
        )
    finally:
        guardian.close()
    resumed = [(o.action, o.target and o.target.pid, o.status) for o in effects.cleared]
    assert resumed == [("resume", child.pid, "done")]  # the clearing resumed it, nothing else
    lines = list(map(json.loads, (tmp_path / "j.jsonl").read_text().splitlines()))
    results = [
        (line["action"], line["result"])
        for line in lines
        if line["target"] and line["target"].get("pid") == child.pid
    ]
    assert results == [("pause", "done"), ("resume", "done")]  # paused, then resumed


def test_dry_run_signals_nothing_and_the_journal_says_what_would_have_been_done(
    tmp_path: Path, burner: tuple[subprocess.Popen[bytes], str]
) -> None:
    child, marker = burner
    config = load_config(write_config(tmp_path, marker, dry_run=True))
    journal = tmp_path / "j.jsonl"
    guardian = child_guardian(config, None, child.pid, journal)
    try:
        wait_until(
            lambda: (
                guardian.tick() is not None
                and journal.exists()
                and '"result": "would"' in journal.read_text()
            ),
            what="a dry-run pause in the journal",
        )
        assert process_state(child.pid) in ("R", "S")
    finally:
        guardian.close()
    pause = next(
        line
        for line in map(json.loads, journal.read_text().splitlines())
        if line["action"] == "pause" and line["result"] == "would"
    )
    assert (pause["result"], pause["dry_run"], pause["target"]["pid"]) == (
        "would",
        True,
        child.pid,
    )


def test_once_evaluates_and_acts_once_and_prints_the_verdict_naming_the_culprit(
    tmp_path: Path, burner: tuple[subprocess.Popen[bytes], str]
) -> None:
    child, marker = burner
    config = write_config(tmp_path, marker, dry_run=True)
    out = io.StringIO()
    journal = tmp_path / "once.jsonl"
    argv = ["guardian", "--config", str(config), "--once", "--json", "--window", "1"]
    code = main([*argv, "--journal", str(journal)], out=out)
    assert code == 1  # the verdict is not OK
    answer = json.loads(out.getvalue())
    offenders = [o["pid"] for b in answer["verdict"]["breaches"] for o in b["offenders"]]
    assert child.pid in offenders
    assert {line["action"] for line in answer["actions"]} == {"pause", "notify"}
    assert len(journal.read_text().splitlines()) == len(answer["actions"])
    assert process_state(child.pid) in ("R", "S")  # dry-run


@pytest.mark.parametrize(
    "signum",
    [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT],
    ids=["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"],
)
def test_a_signal_stops_the_guardian_cleanly_and_resumes_what_it_paused(
    tmp_path: Path, burner: tuple[subprocess.Popen[bytes], str], signum: signal.Signals
) -> None:
    child, marker = burner
    config = write_config(tmp_path, marker, dry_run=False)
    config.write_text(
        config.read_text()
        .replace('when = "burning"', 'when = "always"')
        .replace(
            "[[guardian.action]]",
            '[[guardian.rule]]\nname = "always"\nmetric = "cpu.count"\nop = ">="\nvalue = 1\n\n'
            "[[guardian.action]]",
            1,
        )
    )
    journal = tmp_path / "j.jsonl"
    command = [sys.executable, "-m", "resguard", "guardian", "--config", str(config)]
    guardian = subprocess.Popen(
        [*command, "--journal", str(journal)],
        stderr=subprocess.PIPE,
        text=True,
        # no notify-send: notify logs a line; the paused-process record under tmp_path
        env={**os.environ, "PATH": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")},
    )
    try:
        wait_until(lambda: process_state(child.pid) == "T", what="the child paused", timeout_s=30)
        guardian.send_signal(signum)
        _, stderr = guardian.communicate(timeout=30)
    finally:
        if guardian.poll() is None:
            guardian.kill()
    assert guardian.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "guardian started (ACTING" in stderr
    assert "guardian stopped" in stderr
    assert process_state(child.pid) in ("R", "S")
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    resumed = [line for line in lines if line["rule"] is None]
    assert resumed
    assert resumed[-1]["target"]["pid"] == child.pid


def test_the_process_table_is_sampled_whatever_the_rules_read() -> None:
    guardian = Guardian(GuardianConfig(preset="none"), Recording())
    assert guardian.observe().snapshot.processes  # culprits and process actions need it


@pytest.mark.linux_backend  # a memory cgroup is the kernel readers'
def test_the_guardian_judges_the_machines_memory_not_its_own_cgroup() -> None:
    own = Sampler().sample(children=False).memory.cgroup
    if own is None:
        unavailable("this process is in no memory cgroup resguard can read")
    snapshot = host_sampler().sample(children=False)
    assert snapshot.memory.cgroup == "/"  # the root cgroup: the whole machine's memory


def test_a_bad_config_is_one_line_and_exit_2_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "resguard.toml"
    path.write_text('[guardian]\npreset = "desk"\n')
    assert main(["guardian", "--config", str(path), "--once"], out=io.StringIO()) == 2
    error = capsys.readouterr().err
    assert error.strip().splitlines() == [
        f"resguard guardian: {path}: guardian.preset = 'desk': expected one of laptop, "
        "service, none"
    ]


def test_an_effect_that_raises_is_journalled_as_failed_and_the_loop_goes_on(
    tmp_path: Path, burner: tuple[subprocess.Popen[bytes], str]
) -> None:
    child, marker = burner

    class Broken(Recording):
        def act(
            self, spec: ActionSpec, breach: Breach, snapshot: Snapshot, *, dry_run: bool
        ) -> list[Outcome]:
            raise RuntimeError("boom")

    config = load_config(write_config(tmp_path, marker, dry_run=True))
    config = attrs.evolve(config, actions=config.actions[:1])  # the pause alone
    guardian = child_guardian(config, Broken(), child.pid, tmp_path / "j.jsonl")
    wait_until(
        lambda: guardian.tick() is not None and guardian.journal.lines_written > 0,
        what="the broken action journalled",
    )
    state = guardian.observe()
    assert names_pid(state.verdict, child.pid)
    later = attrs.evolve(state.snapshot, monotonic=state.snapshot.monotonic + 61.0)  # cooldown
    guardian.act(State(later, state.verdict, state.sequence))  # the loop goes on: it fires again
    lines = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert [line["result"] for line in lines] == ["failed: RuntimeError: boom"] * 2


def test_an_unconfigured_guardian_is_the_laptop_preset_in_dry_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resguard import presets

    monkeypatch.chdir(tmp_path)  # no resguard.toml here or above, none in the config dir
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    guardian = Guardian(load_config(), Recording())
    assert guardian.config.path is None
    assert guardian.dry_run is True
    names = [rule.name for rule in guardian.config.policy().rules]
    assert names == [rule.name for rule in presets.laptop().rules]
    assert guardian.config.actions == ()


def test_nothing_to_act_on_is_journalled_once_and_the_action_tries_again_next_tick(
    tmp_path: Path,
) -> None:
    from resguard.rules import Level, Offender

    class Scripted(Recording):
        def __init__(self) -> None:
            super().__init__()
            self.answers = [
                [Outcome("pause", None, True, "skipped", "no culprit matches")],
                [Outcome("pause", None, True, "skipped", "no culprit matches")],
                [Outcome("pause", Target(pid=4242, name="chrome"), True, "would")],
            ]

        def act(
            self, spec: ActionSpec, breach: Breach, snapshot: Snapshot, *, dry_run: bool
        ) -> list[Outcome]:
            self.calls.append(("act", spec.do))
            return self.answers.pop(0) if self.answers else []

    config = load_config(write_config(tmp_path, "chrome", dry_run=True))
    config = attrs.evolve(config, actions=config.actions[:1])  # the pause alone
    effects = Scripted()
    guardian = Guardian(config, effects, journal=Journal(tmp_path / "j.jsonl"))
    snapshot = host_sampler().sample(children=False)
    offender = Offender(4242, "chrome", 99.0, 0.0)
    held = Breach("burning", "processes.cpu_percent", ">", 99.0, 20.0, Level.WARNING, 0, 0, 0)
    verdict = Verdict(Level.WARNING, (attrs.evolve(held, offenders=(offender,)),))
    for sequence in range(1, 6):
        guardian.act(State(attrs.evolve(snapshot, monotonic=float(sequence)), verdict, sequence))
    assert effects.calls == [("act", "pause")] * 3  # tried again until it found its target
    lines = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert [line["result"] for line in lines] == ["skipped: no culprit matches", "would"]


def test_a_burning_process_no_pattern_names_is_never_paused(
    tmp_path: Path, burner: tuple[subprocess.Popen[bytes], str]
) -> None:
    child, _ = burner
    config = load_config(write_config(tmp_path, "no-process-is-called-this", dry_run=False))
    journal = tmp_path / "j.jsonl"
    guardian = child_guardian(config, None, child.pid, journal)
    states = []
    try:
        wait_until(
            lambda: names_pid(guardian.tick(), child.pid) and journal.exists(),
            what="a breach naming the child",
        )
        for _ in range(3):
            guardian.tick()
            states.append(process_state(child.pid))
    finally:
        guardian.close()
    assert "T" not in states
    pauses = [
        line
        for line in map(json.loads, journal.read_text().splitlines())
        if line["action"] == "pause"
    ]
    assert pauses
    assert all(line["result"].startswith("skipped") for line in pauses)
    assert all(line["target"] is None for line in pauses)


def test_renice_lowers_the_burning_childs_priority_and_stop_ends_it(
    tmp_path: Path, burner: tuple[subprocess.Popen[bytes], str]
) -> None:
    child, marker = burner
    path = write_config(tmp_path, marker, dry_run=False)
    text = path.read_text().replace('do = "pause"', 'do = "renice"\nby = 7', 1)
    path.write_text(text)
    guardian = child_guardian(load_config(path), None, child.pid, tmp_path / "r")
    try:
        wait_until(
            lambda: guardian.tick() is not None and os.getpriority(os.PRIO_PROCESS, child.pid) == 7,
            what="the child reniced by 7",
        )
    finally:
        guardian.close()
    stop = text.replace('do = "renice"\nby = 7\nhold = "0s"', 'do = "stop"\ngrace = "2s"')
    path.write_text(stop)
    guardian = child_guardian(load_config(path), None, child.pid, tmp_path / "s")
    try:
        wait_until(
            lambda: guardian.tick() is not None and child.poll() is not None,
            what="the child stopped",
        )
    finally:
        guardian.close()
    assert child.returncode == -signal.SIGTERM
    stops = [
        line
        for line in map(json.loads, (tmp_path / "s").read_text().splitlines())
        if line["action"] == "stop"
    ]
    assert stops[0]["target"]["pid"] == child.pid
    assert stops[0]["result"] == "done: SIGTERM sent; SIGKILL in 2 s"
    assert stops[-1]["result"] == "done: gone since its SIGTERM was sent"  # said at close


def test_a_rule_name_holding_a_newline_is_refused_and_forges_no_log_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "resguard.toml"
    path.write_text(
        '[guardian]\npreset = "none"\n\n[[guardian.rule]]\nname = "hot\\nresguard: forged"\n'
        'metric = "cpu.count"\nop = ">"\nvalue = 100000\n\n'
        '[[guardian.action]]\nwhen = "hot\\nresguard: forged"\ndo = "notify"\n'
    )
    # a name with a control character is refused at load (R1 12): nothing it could forge
    assert main(["guardian", "--config", str(path), "--once"], out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "holds a control or bidi character" in err
    assert "guardian started" not in err
    assert not any(line.startswith("resguard: forged") for line in err.splitlines())
