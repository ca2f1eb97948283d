"""The guardian against R1's review (issue 14, second round), with real processes: a pause
survives a guardian killed outright (the next one resumes it), a stop's grace never holds
the guardian, catastrophic and catch-all patterns are refused at load, a pause holds while
the paused process cools, --once never pauses, the config search reads parsed TOML,
--install refuses what would break the unit, and a rule's name cannot drive the terminal."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from resguard import ConfigError, InvalidValue
from resguard.cli import main
from resguard.guardian import (
    ActionSpec,
    Guardian,
    GuardianConfig,
    Journal,
    Outcome,
    Target,
    load_config,
)
from resguard.monitor import Monitor, State
from resguard.reclaim import MATCHED_CHARS, ProcessStopper
from resguard.rules import Breach, Level, Policy, ProcessThreshold, Verdict
from resguard.snapshot import ProcessInfo, Sampler, Snapshot
from resguard.testing import make_snapshot

from support import process_cmdline, process_state, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

RUN = uuid.uuid4().hex[:8]


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Children burning a core, each with its tag in its command line; all killed after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*argv: str, code: str = "while 1: pass") -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-c", code, *argv])
        started.append(child)
        if argv:  # until the exec: a child just forked still has pytest's command line
            wait_until(lambda: argv[-1].encode() in process_cmdline(child.pid), what="the child")
        return child

    yield start
    for child in started:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.wait(timeout=10)


def config_file(tmp_path: Path, action: str, *, name: str = "resguard.toml") -> Path:
    path = tmp_path / name
    path.write_text(
        '[guardian]\npreset = "none"\ndry_run = false\ninterval = "100ms"\n\n'
        '[[guardian.rule]]\nname = "always"\nmetric = "cpu.count"\nop = ">="\nvalue = 1\n\n'
        f'[[guardian.action]]\nwhen = "always"\n{action}\n'
    )
    return path


def guardian_process(config: Path, tmp_path: Path) -> subprocess.Popen[str]:
    journal = tmp_path / "j.jsonl"
    command = [sys.executable, "-m", "resguard", "guardian", "--config", str(config)]
    return subprocess.Popen(
        [*command, "--journal", str(journal)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")},
    )


def journal_lines(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "j.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ 1: a record of pauses


def test_a_guardian_killed_outright_leaves_a_record_the_next_one_resumes(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    marker = f"hardening-record-{RUN}"
    child = spawn(marker)
    config = config_file(tmp_path, f'do = "pause"\nmatch = ["{marker}"]')
    first = guardian_process(config, tmp_path)
    try:
        wait_until(lambda: process_state(child.pid) == "T", what="the child paused", timeout_s=30)
        first.kill()  # SIGKILL: no chance to resume anything
        first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    records = list((tmp_path / "state" / "resguard" / "paused").glob("guardian-*.json"))
    [record] = records
    [entry] = json.loads(record.read_text())["paused"]
    assert entry["pid"] == child.pid
    assert process_state(child.pid) == "T"  # left stopped, as R1 found
    # the next guardian resumes it at start (then pauses it again: the rule holds)
    config.write_text(config.read_text().replace('do = "pause"', 'do = "notify"').split("match")[0])
    second = guardian_process(config, tmp_path)
    try:
        wait_until(lambda: process_state(child.pid) != "T", what="the child resumed", timeout_s=30)
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
    resumed = [line for line in journal_lines(tmp_path) if line["action"] == "resume"]
    assert resumed
    assert resumed[0]["result"] == "done"
    assert not record.exists()


def test_a_record_whose_process_is_another_one_now_is_dropped_unsignalled(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    from resguard.guardian._effects import MachineEffects

    marker = f"hardening-reused-{RUN}"
    child = spawn(marker)
    os.kill(child.pid, signal.SIGSTOP)
    wait_until(lambda: process_state(child.pid) == "T", what="the child stopped by the test")
    directory = tmp_path / "paused"
    directory.mkdir()
    entry = {
        "pid": child.pid,
        "start_ticks": 1,  # not this process's start: its pid is another process's now
        "create_time": None,
        "ppid": None,
        "name": "python3",
        "cmdline": marker,
        "uid": os.getuid(),
        "match": [marker],
    }
    (directory / "guardian-1.json").write_text(json.dumps({"owner": {}, "paused": [entry]}))
    [outcome] = MachineEffects(paused_dir=directory).recover()
    assert (outcome.action, outcome.status) == ("resume", "skipped")
    assert process_state(child.pid) == "T"  # not ours to resume


# ------------------------------------------------------------------ 2: a stop's grace


def test_a_guardian_stops_within_an_interval_during_a_stops_grace(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    marker = f"hardening-stubborn-{RUN}"
    code = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile 1: pass"
    child = spawn(marker, code=code)
    config = config_file(tmp_path, f'do = "stop"\ngrace = "60s"\nmatch = ["{marker}"]')
    guardian = guardian_process(config, tmp_path)
    try:
        wait_until(
            lambda: any(line["action"] == "stop" for line in journal_lines(tmp_path)),
            what="the SIGTERM journalled",
            timeout_s=30,
        )
        guardian.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = guardian.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if guardian.poll() is None:
            guardian.kill()
    assert guardian.returncode == 0, stderr
    assert took < 10  # not the 60 s grace
    assert child.poll() is None  # the pending SIGKILL was abandoned
    kills = [line for line in journal_lines(tmp_path) if line["action"] == "kill"]
    assert [str(line["result"]).split(":")[0] for line in kills] == ["skipped"]


# ------------------------------------------------------------------ 3, 9: patterns


@pytest.mark.parametrize(
    "pattern", ["(a+)+$", "(a|ab)*c", "(?:x+y?)+z", ".*", "^", "x*", ".", "\\S", "[\\s\\S]"]
)
def test_catastrophic_and_catch_all_patterns_are_refused_at_load(
    tmp_path: Path, pattern: str
) -> None:
    path = config_file(tmp_path, f'do = "pause"\nmatch = [{json.dumps(pattern)}]')
    with pytest.raises(ConfigError, match=r"action\[0\]\.match"):
        load_config(path)
    with pytest.raises(InvalidValue, match=r"every process|exponential|any text"):
        ProcessStopper([pattern], enabled=True)


def test_a_catastrophic_pattern_cannot_hang_the_guardian_on_another_processs_argv(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    spawn("a" * 34 + "!")  # 34 characters that make (a+)+$ take 2**34 steps
    path = config_file(tmp_path, 'do = "pause"\nmatch = ["(a+)+$"]')
    started = time.monotonic()
    code = main(["guardian", "--config", str(path), "--once"], out=io.StringIO())
    assert code == 2  # refused at load, one line
    assert time.monotonic() - started < 10


def test_a_pattern_reads_a_bounded_part_of_a_command_line(
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    marker = f"hardening-far-{RUN}"
    near = spawn(marker)
    far = spawn("x" * MATCHED_CHARS, marker)  # the marker beyond the bound
    pids = {candidate.pid for candidate in ProcessStopper([marker]).candidates()}
    assert near.pid in pids
    assert far.pid not in pids


# ------------------------------------------------------------------ 4: a pause holds


def test_a_pause_on_a_cpu_rule_holds_while_the_paused_process_cools(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    marker = f"hardening-hold-{RUN}"
    child = spawn(marker)
    path = tmp_path / "resguard.toml"
    path.write_text(
        '[guardian]\npreset = "none"\ndry_run = false\n\n'
        '[[guardian.rule]]\nname = "burning"\nprocess_cpu_percent_above = 20\n\n'
        f'[[guardian.action]]\nwhen = "burning"\ndo = "pause"\nhold = "60s"\nmatch = ["{marker}"]\n'
    )

    class ChildOnly(ProcessThreshold):
        def _rows(self, snapshot: Snapshot) -> Sequence[ProcessInfo] | None:
            rows = snapshot.processes
            return None if rows is None else [row for row in rows if row.pid == child.pid]

    monitor = Monitor(
        policy=Policy([ChildOnly(cpu_percent_above=20, name="burning")]),
        sampler=Sampler(),
        reclaim=False,
        adaptive=False,
        psi_trigger=False,
    )
    guardian = Guardian(load_config(path), journal=Journal(tmp_path / "j.jsonl"), monitor=monitor)
    try:
        wait_until(
            lambda: guardian.tick() is not None and process_state(child.pid) == "T",
            what="the child paused",
        )
        cleared = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # paused, its CPU falls: the rule clears
            cleared += guardian.tick().ok
            assert process_state(child.pid) == "T"  # and the pause holds
        assert cleared
    finally:
        guardian.close()
    assert process_state(child.pid) != "T"


def test_hold_is_for_pause_and_renice_and_durations_have_upper_bounds(tmp_path: Path) -> None:
    for action, key in (
        ('do = "notify"\nhold = "5s"', "hold"),
        ('do = "pause"\nmatch = ["x1"]\nhold = "2d"', "hold"),
        ('do = "stop"\nmatch = ["x1"]\ngrace = "2h"', "grace"),
        ('do = "notify"\ncooldown = "30d"', "cooldown"),
    ):
        with pytest.raises(ConfigError, match=rf"action\[0\]\.{key}"):
            load_config(config_file(tmp_path, action))
    spec = load_config(config_file(tmp_path, 'do = "pause"\nmatch = ["x1"]')).actions[0]
    assert spec.hold == spec.cooldown_s
    with pytest.raises(ConfigError, match=r"is not a duration \(it is negative\)"):
        load_config(config_file(tmp_path, 'do = "notify"\ncooldown = -1'))


# ------------------------------------------------------------------ 6: --once


def test_once_refuses_to_pause_and_says_so_in_the_journal(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    marker = f"hardening-once-{RUN}"
    child = spawn(marker)
    path = config_file(tmp_path, f'do = "pause"\nmatch = ["{marker}"]')
    journal = tmp_path / "once.jsonl"
    argv = ["guardian", "--config", str(path), "--once", "--journal", str(journal)]
    main(argv, out=io.StringIO())
    [line] = [json.loads(text) for text in journal.read_text().splitlines()]
    assert line["action"] == "pause"
    assert line["result"].startswith("refused: --once does not pause")
    assert process_state(child.pid) in ("R", "S")


# ------------------------------------------------------------------ 8: the search


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('[tool.resguard]\nguardian = {preset = "none", interval = "5s"}\n', True),
        ('[ tool.resguard.guardian ]\npreset = "none"\n', True),
        ('[tool."resguard".guardian]\npreset = "none"\n', True),
        ("[tool.resguard]\n# the guardian goes elsewhere\n", False),
    ],
)
def test_the_search_reads_a_pyprojects_parsed_tables_not_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, found: bool
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path / "none"))
    (tmp_path / "pyproject.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert (config.path is not None) is found
    if found:
        assert config.preset == "none"


def test_a_budgets_only_resguard_toml_mentioning_the_guardian_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path / "none"))
    (tmp_path / "resguard.toml").write_text(
        '# the guardian is configured elsewhere\n[budget.train]\nmemory = "1GiB"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert load_config().path is None  # the defaults, not a refusal to start


# ------------------------------------------------------------------ 10: --install


def install(*args: str) -> int:
    return main(["guardian", "--install", "--platform", "linux", *args], out=io.StringIO())


def test_install_refuses_a_path_with_a_newline_and_a_config_that_does_not_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unit = tmp_path / "t.service"
    injected = str(tmp_path / "a\nExecStartPre=/bin/true\n.toml")
    assert install("--config", injected, "--output", str(unit)) == 2
    assert "control character" in capsys.readouterr().err
    assert install("--config", str(tmp_path / "missing.toml"), "--output", str(unit)) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("[guardian]\npreset = 'nope'\n")
    assert install("--config", str(tmp_path / "bad.toml"), "--output", str(unit)) == 2
    assert not unit.exists()


def test_install_refuses_a_relative_or_empty_home_and_ignores_a_relative_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    for home in ("", "relative", str(tmp_path / "nonexistent")):
        monkeypatch.setenv("HOME", home)
        assert install() == 2
        assert "HOME=" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written under the working directory
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", "rel")
    assert install() == 0
    assert (tmp_path / "home/.config/systemd/user/resguard-guardian.service").is_file()
    assert not (tmp_path / "rel").exists()


def test_install_output_a_directory_is_a_clear_error_and_force_replaces_a_symlink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert install("--output", str(tmp_path)) == 2
    assert "is a directory" in capsys.readouterr().err
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "unit.service"
    link.symlink_to(victim)
    assert install("--output", str(link)) == 2  # exists
    assert install("--output", str(link), "--force") == 0
    assert victim.read_text() == "precious\n"  # the link was replaced, not followed
    assert not link.is_symlink()
    assert link.read_text().startswith("[Unit]")


# ------------------------------------------------------------------ 12, when


@pytest.mark.parametrize("name", ["a\u0000b", "a\u001b[31m", "x\u202e", "two\nlines"])
def test_a_rule_name_with_a_control_character_is_refused_at_load(tmp_path: Path, name: str) -> None:
    path = tmp_path / "resguard.toml"
    path.write_text(
        '[guardian]\npreset = "none"\n[[guardian.rule]]\n'
        f'name = {json.dumps(name)}\nmetric = "cpu.count"\nop = ">"\nvalue = 1\n'
    )
    with pytest.raises(ConfigError, match="control or bidi character"):
        load_config(path)


def test_when_naming_a_preset_rules_short_name_gets_a_did_you_mean(tmp_path: Path) -> None:
    path = tmp_path / "resguard.toml"
    path.write_text('[guardian]\n[[guardian.action]]\nwhen = "runaway"\ndo = "notify"\n')
    with pytest.raises(ConfigError, match="did you mean 'runaway: a process above"):
        load_config(path)


# ------------------------------------------------------------------ the journal


def test_the_same_skip_of_the_same_process_is_journalled_once_while_it_lasts() -> None:
    target = Target(pid=4242, name="x")
    skip = Outcome("pause", target, False, "skipped", "protected: another user's process")

    class Skipping:
        def act(
            self, spec: ActionSpec, breach: Breach, snapshot: Snapshot, *, dry_run: bool
        ) -> list[Outcome]:
            return [skip]

        def clear(self, spec: ActionSpec, *, dry_run: bool) -> list[Outcome]:
            return []

        def pending(self) -> list[tuple[str | None, Outcome]]:
            return []

        def recover(self) -> list[Outcome]:
            return []

        def close(self) -> list[Outcome]:
            return []

    spec = ActionSpec(index=0, when="WARNING", do="pause", cooldown_s=0)
    lines: list[dict[str, object]] = []
    journal = Journal(None)
    journal.listeners.append(lines.append)
    guardian = Guardian(
        GuardianConfig(preset="none", actions=(spec,)),
        Skipping(),
        journal=journal,
        monitor=Monitor(policy=Policy([]), reclaim=False, adaptive=False, psi_trigger=False),
    )
    breach = Breach("hot", "m", ">", 1.0, 0.0, Level.WARNING, 0.0, 0.0, 0.0)
    for now in range(5):
        snapshot = make_snapshot(at=float(now))
        guardian.act(State(snapshot, Verdict(Level.WARNING, (breach,)), now))
    assert len(lines) == 1  # not once per cooldown while the rule holds
    guardian.act(State(make_snapshot(at=10.0), Verdict(Level.OK, ()), 10))
    guardian.act(State(make_snapshot(at=11.0), Verdict(Level.WARNING, (breach,)), 11))
    assert len(lines) == 2  # a new episode says it again


# ------------------------------------------------------------------ ancestors


def test_the_guardians_whole_parent_chain_is_protected_not_only_its_parent() -> None:
    import re

    from resguard._probes.identity import read_stat

    parent = read_stat(os.getppid())
    if parent is None or parent.ppid <= 1:
        pytest.skip("this process has no grandparent to protect")
    grandparent = read_stat(parent.ppid)
    assert grandparent is not None
    stopper = ProcessStopper([re.escape(grandparent.name)], enabled=True)
    candidate = stopper.candidate(parent.ppid)
    assert candidate is not None
    assert candidate.protected == "an ancestor of this process (its shell, terminal or session)"
    assert stopper.stop(candidate).signal == "none"


def test_a_misspelt_guardian_table_found_by_the_search_is_the_same_error_as_with_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path / "none"))
    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.resguard.guardain]\npreset = "none"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'guardian'") as searched:
        load_config()
    with pytest.raises(ConfigError) as named:
        load_config(path)
    assert str(searched.value) == str(named.value)


def test_a_bad_interval_is_quoted_as_typed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["guardian", "--interval", "1ms", "--once"], out=io.StringIO()) == 2
    assert "--interval 1ms: expected from 10ms" in capsys.readouterr().err


def test_a_rule_named_as_a_preset_rule_replaces_it_in_its_place(tmp_path: Path) -> None:
    runaway = "runaway: a process above 90% of a core for 60s"
    path = tmp_path / "resguard.toml"
    path.write_text(
        f'[guardian]\npreset = "laptop"\n[[guardian.rule]]\nname = "{runaway}"\n'
        'process_cpu_percent_above = 150\nfor = "5s"\n'
        f'[[guardian.action]]\nwhen = "{runaway}"\ndo = "notify"\n'
    )
    config = load_config(path)
    names = [rule.name for rule in config.policy().rules]
    assert names.count(runaway) == 1
    assert names == [rule.name for rule in GuardianConfig(preset="laptop").policy().rules]
    [rule] = [rule for rule in config.policy().rules if rule.name == runaway]
    assert isinstance(rule, ProcessThreshold)
    assert rule is config.rules[0]
