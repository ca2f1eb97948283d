"""What a new user reads in ``watch``, ``top`` and ``snapshot`` (R2's walkthrough): an
Ollama model is never "in use" without evidence, the memory line names a cgroup only when
its limit binds, ``--window``'s help speaks of the window, snapshot's heat line reads as
watch's and its own process is labelled resguard's, and on 80 columns a command shows its
program's name and a long cgroup path leaves the table title whole; piped ``top`` honours
``COLUMNS``."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import attrs
import pytest

import resguard as rg
from resguard._modules.render import command_text, program_name
from resguard.cli import build_parser, format_processes, format_snapshot
from resguard.cli._view import ViewOptions, build_frame, cells
from resguard.monitor import State
from resguard.rules import Breach, Level, Offender, Verdict
from resguard.snapshot import OllamaModelInfo
from resguard.testing import make_process

PYTHON = "/root/.pyenv/versions/3.11.7/bin/python3"
LONG_CGROUP = "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-code-4242.scope"


def _row(pid: int, cmdline: tuple[str, ...], rss: int = 500 * 2**20) -> Any:
    return attrs.evolve(make_process(pid, "python3"), cmdline=cmdline, rss=rss)


def _state(
    rows: tuple[Any, ...], *, level: Level = Level.OK, heat: Any = None, **memory: Any
) -> State:
    taken = rg.snapshot()
    snapshot = attrs.evolve(
        taken,
        processes=rows,
        process=attrs.evolve(taken.process, pid=2**22 + 1),
        memory=attrs.evolve(taken.memory, **memory),
        cgroup_pids=tuple(sorted(row.pid for row in rows)),
        heat=heat,
    )
    breaches: tuple[Breach, ...] = ()
    if level != Level.OK:
        offender = Offender(pid=rows[0].pid, name="python3", value=50.0, since=0.0)
        breaches = (
            Breach(
                rule="memory-high",
                metric="memory.percent",
                op=">=",
                value=90.0,
                threshold=85.0,
                level=level,
                since=0.0,
                since_wall=0.0,
                held_s=5.0,
                unit="percent",
                offenders=(offender,),
            ),
        )
    return State(snapshot=snapshot, verdict=Verdict(level, breaches, ()), sequence=1)


def _frame(state: State, width: int = 80, height: int = 24) -> list[str]:
    rows = list(state.snapshot.processes or ())
    return build_frame(state, rows, ViewOptions(), width, height).plain().split("\n")


# ------------------------------------------------------------------- item 1 ---


def test_an_ollama_model_without_an_idle_time_is_not_said_to_be_in_use() -> None:
    now = rg.snapshot().taken_at
    model = OllamaModelInfo("qwen2:7b", 4_700_000_000, 0, now + 240, None)
    state = _state(())
    state = attrs.evolve(state, snapshot=attrs.evolve(state.snapshot, ollama=(model,)))
    (line,) = [line for line in _frame(state, 120, 40) if line.startswith("ollama")]
    assert line == "ollama  qwen2:7b  4.4 GiB  100% CPU  idle unknown"
    assert "in use" not in line


# ------------------------------------------------------------------- item 2 ---


def test_the_memory_line_says_host_when_the_limit_is_the_hosts() -> None:
    rows = (_row(4242, (PYTHON, "-c", "while 1: pass")),)
    state = _state(rows, source="host", cgroup="/user.slice/user-1000.slice")
    lines = _frame(state, 120, 40)
    (memory,) = [line for line in lines if line.startswith("memory")]
    assert memory.endswith("; host")
    assert not any("cgroup" in line for line in lines)  # nor is the table the cgroup's


def test_the_memory_line_names_the_cgroup_whose_limit_binds() -> None:
    rows = (_row(4242, (PYTHON, "-c", "while 1: pass")),)
    state = _state(rows, source="cgroup", cgroup="/docker/abc")
    lines = _frame(state, 120, 40)
    (memory,) = [line for line in lines if line.startswith("memory")]
    assert memory.endswith("; cgroup /docker/abc")
    assert any(line.startswith("processes of cgroup /docker/abc by ") for line in lines)


def test_a_long_cgroup_path_on_the_memory_line_keeps_its_last_part_on_80_columns() -> None:
    rows = (_row(4242, (PYTHON, "-c", "while 1: pass")),)
    state = _state(rows, source="cgroup", cgroup=LONG_CGROUP)
    (memory,) = [line for line in _frame(state) if line.startswith("memory")]
    assert cells(memory) <= 80
    assert "; cgroup …" in memory  # not "/user.slice/user-1000.slice/user@100…"
    assert memory.endswith("-code-4242.scope")


# ------------------------------------------------------------------- item 4 ---


def test_the_window_help_speaks_of_the_window() -> None:
    for command in ("top", "snapshot"):
        text = " ".join(_help(command).split())
        assert "a shorter window is raised to 0.25s" in text
        assert "shorter interval" not in text


def _help(command: str) -> str:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return str(action.choices[command].format_help())  # type: ignore[index]


# ------------------------------------------------------------------- item 5 ---


def test_snapshot_says_no_heat_sensor_as_watch_does() -> None:
    text = format_snapshot(attrs.evolve(rg.snapshot(children=False), heat=None))
    heat = [line for line in text.splitlines() if line.startswith("heat")]
    assert heat == ["heat     no temperature sensor or fan readable here"]
    watched = build_frame(_state((), heat=None), [], ViewOptions(), 120, 40).plain()
    assert "heat    no temperature sensor or fan readable here" in watched


def test_snapshots_own_process_line_says_it_is_resguard_itself() -> None:
    snap = rg.snapshot(children=False)
    lines = format_snapshot(snap).splitlines()
    assert not any(line.startswith("process  pid") for line in lines)
    assert f"resguard itself, pid {snap.process.pid}: rss " in "\n".join(lines)


# ------------------------------------------------------------------- item 6 ---


@pytest.mark.parametrize(
    ("argv0", "shown"),
    [
        (PYTHON, "python3"),
        ("python3", "python3"),
        ("/opt/google/chrome/chrome --type=renderer", "chrome --type=renderer"),
        ("postgres: checkpointer", "postgres: checkpointer"),
        ("/", "/"),
        ("C:\\Python311\\python.exe", "python.exe"),
    ],
)
def test_a_program_is_shown_by_its_name_not_its_path(argv0: str, shown: str) -> None:
    assert program_name(argv0) == shown


def test_the_watch_table_shows_the_program_then_its_arguments_on_80_columns() -> None:
    rows = (_row(4242, (PYTHON, "-c", "while 1: pass")),)
    lines = _frame(_state(rows, source="host", cgroup=None))
    (line,) = [line for line in lines if line.rstrip().endswith("python3 -c while 1: pass")]
    assert "/root/.pyenv" not in line
    assert command_text(rows[0].cmdline, "python3") == f"{PYTHON} -c while 1: pass"  # default


def test_a_long_cgroup_path_leaves_the_table_title_whole_on_80_columns() -> None:
    rows = (_row(4242, (PYTHON, "-c", "while 1: pass")),)
    state = _state(rows, level=Level.WARNING, source="cgroup", cgroup=LONG_CGROUP)
    (title,) = [line for line in _frame(state) if line.startswith("processes of cgroup")]
    assert title.endswith("by memory (in breach); * culprit")
    assert cells(title) <= 80
    assert title.startswith("processes of cgroup …/app-gnome-code-4242.scope by memory")


def test_the_top_table_shows_the_program_not_its_path() -> None:
    (line,) = format_processes([_row(4242, (PYTHON, "-c", "while 1: pass"))]).splitlines()[1:]
    assert line.endswith(" python3 -c while 1: pass")


def test_piped_top_honours_columns() -> None:
    env = {**os.environ, "COLUMNS": "300"}
    long = "x" * 250
    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(60)  # {long}"])
    try:
        out = subprocess.run(
            [sys.executable, "-m", "resguard", "top", "-n", "100000", "--all", "--by", "memory"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    finally:
        child.kill()
        child.wait()
    assert out.returncode == 0, out.stderr
    (line,) = [line for line in out.stdout.splitlines() if line.startswith(f"{child.pid:>7} ")]
    assert len(line) > 200
    assert line.endswith(("…", long))
