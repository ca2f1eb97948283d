"""``resguard run`` for real: a child in its own memory cgroup (below the test's cgroup,
as root), OOM kills, restarts, forwarded signals, the cgroup removed at the end; the
RLIMIT_AS fallback and the v2 files on a fixture tree need no root."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from resguard.supervise import (
    Budget,
    Cgroup,
    ParentFacts,
    RunConfig,
    RunJournal,
    Supervisor,
    budget_for,
    choose_budget,
)

from plugins.cgroup import MemoryCgroup
from support import sigint_counter, wait_until

pytestmark = pytest.mark.linux_backend

GROW = "b = []\nwhile True: b.append(bytearray(8 << 20))"
MiB = 1 << 20


def _resguard(*args: str, journal: Path, **kwargs: Any) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "resguard", "run", "--journal", str(journal), *args]
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs
    )


def _lines(journal: Path, event: str | None = None) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    return [line for line in lines if event is None or line["event"] == event]


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def _no_run_cgroup_left(parent: MemoryCgroup) -> bool:
    return not [p for p in parent.path.iterdir() if p.name.startswith("resguard-run-")]


@pytest.mark.cgroup
def test_max_restarts_2_reports_two_oom_kills_restarted_and_exits_non_zero_after_them(
    memory_cgroup: MemoryCgroup, tmp_path: Path
) -> None:
    """The issue's acceptance, "reports two OOM kills and exits non-zero after the
    restarts": two OOM kills are each reported and restarted (--max-restarts 2 counts
    restarts), the third run's OOM kill ends it; every exit is an OOM kill, none a crash,
    and the exit code is the child's own 137."""
    journal = tmp_path / "journal.jsonl"
    process = _resguard(
        "--memory",
        "64MiB",
        "--restart",
        "on-failure",
        "--max-restarts",
        "2",
        "--backoff",
        "0.05s",
        "--cgroup-parent",
        str(memory_cgroup.path),
        "--",
        sys.executable,
        "-c",
        GROW,
        journal=journal,
    )
    code, err = _finish(process)
    assert code == 137, err
    (budget,) = _lines(journal, "budget")
    assert budget["kind"] == f"cgroup-{memory_cgroup.version}"
    assert budget["limit_bytes"] == 64 * MiB
    assert len(_lines(journal, "start")) == 3
    exits = _lines(journal, "exit")
    assert [e["status"] for e in exits] == ["oom-killed"] * 3
    assert [e["oom_kills"] for e in exits] == [1, 1, 1]
    assert [e["restart"] for e in exits] == [True, True, False]
    restarted_ooms = [e for e in exits if e["status"] == "oom-killed" and e["restart"]]
    assert len(restarted_ooms) == 2
    assert [e["delay_s"] for e in exits] == [0.05, 0.1, None]
    assert "gave up after 2 restart(s)" in exits[-1]["reason"]
    assert err.count("OOM-killed (exit 137, SIGKILL)") == 3
    assert err.count("restarting in") == 2
    (end,) = _lines(journal, "end")
    assert (end["code"], end["runs"], end["oom_kills"], end["cgroup_left"]) == (137, 3, 3, None)
    assert _no_run_cgroup_left(memory_cgroup)


@pytest.mark.cgroup
def test_a_clean_exit_is_not_restarted_and_its_cgroup_is_removed(
    memory_cgroup: MemoryCgroup, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    code, err = _finish(
        _resguard(
            "--memory",
            "64MiB",
            "--backoff",
            "0.05s",
            "--cgroup-parent",
            str(memory_cgroup.path),
            "--",
            sys.executable,
            "-c",
            "pass",
            journal=journal,
        )
    )
    assert code == 0, err
    assert len(_lines(journal, "start")) == 1
    (ended,) = _lines(journal, "exit")
    assert (ended["status"], ended["code"], ended["restart"]) == ("exited", 0, False)
    assert _no_run_cgroup_left(memory_cgroup)


WAITER = """
import os, signal, sys, time
out = sys.argv[1]
def note(signum, frame):
    with open(out, "a") as f:
        f.write(signal.Signals(signum).name + "\\n")
    if signum == signal.SIGTERM:
        sys.exit(7)
signal.signal(signal.SIGTERM, note)
signal.signal(signal.SIGUSR1, note)
with open(out + ".ready", "w") as f:
    f.write(str(os.getpid()))
while True:
    signal.pause()
"""


def _started(marker: Path) -> None:
    wait_until(lambda: Path(f"{marker}.ready").exists(), timeout_s=20, what="the child to start")


@pytest.mark.cgroup
def test_sigterm_reaches_the_child_and_resguard_exits_with_the_childs_code(
    memory_cgroup: MemoryCgroup, tmp_path: Path
) -> None:
    journal, marker = tmp_path / "journal.jsonl", tmp_path / "marker"
    process = _resguard(
        "--memory",
        "64MiB",
        "--cgroup-parent",
        str(memory_cgroup.path),
        "--",
        sys.executable,
        "-c",
        WAITER,
        str(marker),
        journal=journal,
    )
    _started(marker)
    child = int(Path(f"{marker}.ready").read_text())
    assert f"{memory_cgroup.relative}/resguard-run-" in Path(f"/proc/{child}/cgroup").read_text()
    process.send_signal(signal.SIGUSR1)  # forwarded only: the child goes on
    wait_until(lambda: marker.exists(), timeout_s=10, what="SIGUSR1 to reach the child")
    process.send_signal(signal.SIGTERM)
    code, err = _finish(process)
    assert code == 7, err  # the child's own code, not restarted (on-failure)
    assert marker.read_text().split() == ["SIGUSR1", "SIGTERM"]
    signals = _lines(journal, "signal")
    assert [(s["signal"], s["forwarded"], s["action"]) for s in signals] == [
        ("SIGUSR1", True, "forward"),
        ("SIGTERM", True, "stop"),
    ]
    (ended,) = _lines(journal, "exit")
    assert (ended["code"], ended["restart"], ended["reason"]) == (7, False, "stopped by a signal")
    assert _no_run_cgroup_left(memory_cgroup)


@pytest.mark.cgroup
def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout(
    memory_cgroup: MemoryCgroup, tmp_path: Path
) -> None:
    journal, marker = tmp_path / "journal.jsonl", tmp_path / "marker"
    stubborn = WAITER.replace("signal.signal(signal.SIGTERM, note)", "signal.signal(15, 1)")
    process = _resguard(
        "--memory",
        "64MiB",
        "--stop-timeout",
        "0.2s",
        "--cgroup-parent",
        str(memory_cgroup.path),
        "--",
        sys.executable,
        "-c",
        stubborn,
        str(marker),
        journal=journal,
    )
    _started(marker)
    process.send_signal(signal.SIGTERM)
    code, err = _finish(process)
    assert code == 137, err
    assert [s["action"] for s in _lines(journal, "signal")] == ["stop", "kill"]
    (ended,) = _lines(journal, "exit")
    assert (ended["status"], ended["restart"]) == ("killed", False)  # no OOM: killed by us


@pytest.mark.cgroup
def test_a_helper_left_running_is_killed_with_the_cgroup_at_the_end(
    memory_cgroup: MemoryCgroup, tmp_path: Path
) -> None:
    journal, helper = tmp_path / "journal.jsonl", tmp_path / "helper.pid"
    code_text = (
        "import subprocess, sys\n"
        "p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        f"open({str(helper)!r}, 'w').write(str(p.pid))\n"
    )
    code, err = _finish(
        _resguard(
            "--memory",
            "64MiB",
            "--restart",
            "never",
            "--cgroup-parent",
            str(memory_cgroup.path),
            "--",
            sys.executable,
            "-c",
            code_text,
            journal=journal,
        )
    )
    assert code == 0, err
    pid = int(helper.read_text())

    def gone() -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX"
        except (OSError, IndexError):
            return True

    wait_until(gone, timeout_s=10, what=f"the helper {pid} to be killed")
    assert _no_run_cgroup_left(memory_cgroup)


def test_without_a_cgroup_rlimit_as_bounds_the_child_and_the_journal_says_what_it_cannot_see(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal.jsonl"
    budget = Budget("rlimit-as", 256 * MiB, "not root: test")
    config = RunConfig(
        (sys.executable, "-c", "bytearray(1 << 30)"), memory_bytes=256 * MiB, restart="never"
    )
    with open(os.devnull, "w") as err:
        code = Supervisor(config, RunJournal(journal, err), budget=budget).run()
    assert code == 1  # MemoryError: an allocation failed, which looks like any crash
    (line,) = _lines(journal, "budget")
    assert line["kind"] == "rlimit-as"
    (ended,) = _lines(journal, "exit")
    assert (ended["status"], ended["oom_kills"]) == ("exited", None)
    (end,) = _lines(journal, "end")
    assert end["oom_kills"] is None  # unknown under RLIMIT_AS, not 0
    assert "cannot be told from a crash" in Budget("rlimit-as", MiB, "x").describe()


def _v2_tree(root: Path) -> Path:
    parent = root / "delegated"
    parent.mkdir()
    for name, text in [
        ("cgroup.procs", ""),
        ("cgroup.subtree_control", ""),
        ("cgroup.controllers", "cpu memory"),
    ]:
        (parent / name).write_text(text)
    return parent


def test_choosing_a_v2_budget_writes_nothing_and_making_its_cgroup_enables_memory(
    tmp_path: Path,
) -> None:
    """The kernel is not needed to check which v2 files are written (this machine is v1)."""
    parent = _v2_tree(tmp_path)
    budget = choose_budget(64 * MiB, cgroup_parent=str(parent))
    assert (budget.kind, budget.parent) == ("cgroup-v2", str(parent))
    assert (parent / "cgroup.subtree_control").read_text() == ""  # choosing writes nothing
    cgroup = Cgroup.create(str(parent), "run", "v2", 64 * MiB)
    assert (parent / "cgroup.subtree_control").read_text() == "+memory"
    assert (parent / "run" / "memory.max").read_text() == str(64 * MiB)
    cgroup.add(4242)
    assert (parent / "run" / "cgroup.procs").read_text() == "4242"
    (parent / "run" / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    assert cgroup.oom_kills() == 1


def test_v2_without_a_memory_controller_for_children_falls_back_to_rlimit_as_saying_why(
    tmp_path: Path,
) -> None:
    parent = _v2_tree(tmp_path)
    (parent / "cgroup.subtree_control").unlink()
    (parent / "cgroup.subtree_control").mkdir()  # cannot be read or written
    budget = choose_budget(256 * MiB, cgroup_parent=str(parent))
    assert budget.kind == "cgroup-v2"  # the controller is enabled when the cgroup is made
    journal = RunJournal(None, io.StringIO())
    config = RunConfig((sys.executable, "-c", "pass"), memory_bytes=256 * MiB, restart="never")
    assert Supervisor(config, journal, budget=budget).run() == 0
    line = journal.lines[0]
    assert (line["event"], line["kind"], line["cgroup"]) == ("budget", "rlimit-as", None)
    assert f"cannot make a cgroup below {parent}" in line["why"]
    assert sorted(os.listdir(parent)) == [
        "cgroup.controllers",
        "cgroup.procs",
        "cgroup.subtree_control",
    ]


@pytest.mark.parametrize(
    ("facts", "kind", "why"),
    [
        (ParentFacts(None), "rlimit-as", "no memory cgroup hierarchy is mounted"),
        (ParentFacts("/cg", is_cgroup=False), "rlimit-as", "/cg is not a cgroup directory"),
        (ParentFacts("/cg", writable=False, root=False), "rlimit-as", "not root: /cg is not"),
        (ParentFacts("/cg", writable=False), "rlimit-as", "no write access: /cg is not"),
        (ParentFacts("/cg", "v1"), "cgroup-v1", "below its own cgroup"),
        (ParentFacts("/cg", "v2", given=True), "cgroup-v2", "below the given --cgroup-parent"),
    ],
)
def test_budget_for_decides_from_the_parent_s_facts_alone(
    facts: ParentFacts, kind: str, why: str
) -> None:
    budget = budget_for(facts, 64 * MiB)
    assert (budget.kind, budget.limit_bytes) == (kind, 64 * MiB)
    assert budget.why.startswith(why)
    assert budget.parent == (facts.path if kind.startswith("cgroup") else None)
    assert budget_for(facts, None) == Budget("none", None, "--memory not given")


def test_a_parent_that_is_not_writable_falls_back_to_rlimit_as(tmp_path: Path) -> None:
    budget = choose_budget(
        64 * MiB, cgroup_parent=str(_v2_tree(tmp_path)), writable=lambda p: False
    )
    assert budget.kind == "rlimit-as"
    assert "is not writable" in budget.why


@pytest.mark.cgroup
def test_a_second_ctrl_c_kills_a_child_that_ignores_the_first(
    memory_cgroup: MemoryCgroup, tmp_path: Path
) -> None:
    journal, marker = tmp_path / "journal.jsonl", tmp_path / "marker"
    deaf = WAITER.replace("signal.signal(signal.SIGTERM, note)", "signal.signal(2, 1)")
    process = _resguard(
        "--memory",
        "64MiB",
        "--cgroup-parent",
        str(memory_cgroup.path),
        "--",
        sys.executable,
        "-c",
        deaf,
        str(marker),
        journal=journal,
    )
    _started(marker)
    process.send_signal(signal.SIGINT)  # not from a terminal: forwarded
    wait_until(lambda: _lines(journal, "signal"), timeout_s=10, what="the first SIGINT")
    process.send_signal(signal.SIGINT)
    code, err = _finish(process)
    assert code == 137, err
    assert [(s["forwarded"], s["action"]) for s in _lines(journal, "signal")] == [
        (True, "stop"),
        (False, "kill"),
    ]
    assert "a second stop signal (SIGINT)" in err


@pytest.mark.cgroup
def test_a_child_ended_by_a_forwarded_sighup_was_stopped_not_crashed(
    memory_cgroup: MemoryCgroup, tmp_path: Path
) -> None:
    journal, marker = tmp_path / "journal.jsonl", tmp_path / "marker"
    process = _resguard(
        "--memory",
        "64MiB",
        "--restart",
        "always",
        "--cgroup-parent",
        str(memory_cgroup.path),
        "--",
        sys.executable,
        "-c",
        WAITER,
        str(marker),
        journal=journal,
    )
    _started(marker)
    process.send_signal(signal.SIGHUP)  # its default action ends the child
    code, err = _finish(process)
    assert code == 129, err
    (ended,) = _lines(journal, "exit")
    assert (ended["status"], ended["signal"], ended["restart"]) == ("killed", "SIGHUP", False)


def test_a_stop_signal_during_the_backoff_ends_it_without_another_start(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    process = _resguard("--backoff", "60s", "--", sys.executable, "-c", "exit(3)", journal=journal)
    wait_until(lambda: journal.exists() and _lines(journal, "exit"), what="the first exit")
    process.send_signal(signal.SIGTERM)
    code, err = _finish(process)
    assert code == 3, err  # the last run's code, long before the 60 s wait is over
    assert len(_lines(journal, "start")) == 1
    (stop,) = _lines(journal, "signal")
    assert (stop["signal"], stop["pid"], stop["action"]) == ("SIGTERM", None, "stop")
    (budget,) = _lines(journal, "budget")
    assert budget["kind"] == "none"  # no --memory: supervised, unbounded


def test_a_journal_that_cannot_be_written_is_said_once_and_stderr_goes_on(tmp_path: Path) -> None:
    err = io.StringIO()
    journal = RunJournal(tmp_path, err)  # a directory: every append fails
    for run in (1, 2):
        journal.write("start", f"run {run}: started", run=run)
    lines = err.getvalue().splitlines()
    assert lines[0] == "resguard run: run 1: started"
    assert sum("cannot be written" in line for line in lines) == 1
    assert lines[-1] == "resguard run: run 2: started"
    assert [line["run"] for line in journal.lines] == [1, 2]


COUNTER = sigint_counter(ready="os.getpid()", exit_code=5)


def test_a_terminal_ctrl_c_reaches_the_child_once_not_twice(tmp_path: Path) -> None:
    """The child shares the terminal's foreground group: the kernel sends it the Ctrl-C,
    so resguard does not forward that SIGINT again."""
    import pty

    journal, marker = tmp_path / "journal.jsonl", tmp_path / "marker"
    argv = [sys.executable, "-m", "resguard", "run", "--journal", str(journal), "--"]
    pid, terminal = pty.fork()
    if pid == 0:  # the child: resguard in the foreground of a new terminal
        os.execv(sys.executable, [*argv, sys.executable, "-c", COUNTER, str(marker)])
    try:
        _started(marker)
        os.write(terminal, b"\x03")  # Ctrl-C typed on the terminal
        status: list[int] = []

        def ended() -> bool:
            with contextlib.suppress(OSError):
                os.read(terminal, 65536)  # keep the terminal's buffer from filling
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status.append(os.waitstatus_to_exitcode(code))
            return bool(done)

        wait_until(ended, timeout_s=20, what="resguard to end after Ctrl-C")
    finally:
        os.close(terminal)
    assert status == [5]
    assert marker.read_text() == "INT\n"
    (stop,) = _lines(journal, "signal")
    assert (stop["signal"], stop["forwarded"], stop["action"]) == ("SIGINT", False, "stop")


def test_the_supervisor_refuses_to_run_off_the_main_thread(tmp_path: Path) -> None:
    import threading

    from resguard import InvalidState

    errors: list[BaseException] = []
    supervisor = Supervisor(RunConfig(("true",)), RunJournal(None, io.StringIO()))

    def run() -> None:
        try:
            supervisor.run()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    assert len(errors) == 1
    assert isinstance(errors[0], InvalidState)
    assert "main thread" in str(errors[0])


def test_without_pidfds_the_supervisor_says_it_needs_linux(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resguard import InvalidState

    monkeypatch.delattr(os, "pidfd_open", raising=False)
    supervisor = Supervisor(RunConfig(("true",)), RunJournal(None, io.StringIO()))
    with pytest.raises(InvalidState, match=r"needs Linux 5\.3"):
        supervisor.run()


def test_a_budget_that_cannot_be_applied_runs_nothing_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from resguard import InvalidState
    from resguard.supervise import _run

    def refuse(pid: int, limit_bytes: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(_run, "limit_address_space", refuse)
    marker = tmp_path / "ran"
    config = RunConfig(("touch", str(marker)), memory_bytes=256 * MiB)
    journal = RunJournal(None, io.StringIO())
    supervisor = Supervisor(config, journal, budget=Budget("rlimit-as", 256 * MiB, "test"))
    with pytest.raises(InvalidState, match="cannot apply the rlimit-as budget to 'touch'"):
        supervisor.run()
    assert not marker.exists()  # the wrapper was told not to exec
    assert [line["event"] for line in journal.lines] == ["budget"]
