"""The command line, run as a user would: a real subprocess, real output."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import attrs
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resguard as rg
from resguard._probes.backend import default_backend
from resguard.cli import build_parser, format_frame, format_line, format_snapshot, main
from resguard.snapshot import Fault


def resguard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resguard", *args], capture_output=True, text=True, timeout=timeout
    )


def test_snapshot_json() -> None:
    out = resguard("snapshot", "--json", "--window", "0.1")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["memory"]["total"] == psutil.virtual_memory().total
    assert data["memory"]["source"] in ("host", "cgroup", "rlimit")
    assert set(data) >= {"memory", "swap", "cpu", "pressure", "process", "taken_at"}


def test_snapshot_text_names_the_limit_source() -> None:
    out = resguard("snapshot", "--window", "0.1")
    assert out.returncode == 0, out.stderr
    assert "limit from" in out.stdout
    assert "pressure" in out.stdout


def test_top_json_by_memory() -> None:
    out = resguard("top", "-n", "3", "--by", "memory", "--json", "--interval", "0")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 3
    assert rows[0]["rss"] >= rows[1]["rss"] >= rows[2]["rss"]
    assert all(row["pid"] > 0 for row in rows)


def test_top_text_has_a_header() -> None:
    out = resguard("top", "-n", "2", "--group", "--window", "0.1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split()[:3] == ["PID", "CPU%", "RSS"]


@pytest.mark.parametrize(
    "args",
    [
        ["top", "-n", "-1"],
        ["top", "--by", "disk"],
        ["top", "--interval", "soon"],
        ["frobnicate"],
        [],
    ],
)
def test_bad_usage_exits_2_with_one_line_that_points_at_help(args: list[str]) -> None:
    out = resguard(*args)
    assert out.returncode == 2
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert "--help" in out.stderr


def test_watch_piped_prints_one_line_per_update() -> None:
    out = resguard("watch", "--count", "3", "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    assert all(" mem " in line for line in lines)
    assert not any(line.endswith("| OK") for line in lines)  # the level is said once


def test_watch_json_lines() -> None:
    out = resguard("watch", "--count", "2", "--interval", "0.1", "--json", "--preset", "service")
    assert out.returncode == 0, out.stderr
    updates = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(updates) == 2
    assert updates[0]["level"] in ("OK", "WARNING", "CRITICAL")
    assert "memory" in updates[0]["snapshot"]


def test_watch_once_exit_code_follows_the_verdict() -> None:
    out = resguard("watch", "--once", "--json", "--window", "0.1")
    level = json.loads(out.stdout)["level"]
    assert out.returncode == (0 if level == "OK" else 1)


def test_watch_live_view_on_a_terminal() -> None:
    """On a terminal the view refreshes in place (clear screen, then a whole frame)."""
    import pty

    main, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "resguard", "watch", "--count", "2", "--interval", "0.1"],
        stdout=secondary,
        stderr=subprocess.PIPE,
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(main)
    screen = b"".join(chunks).decode()
    assert process.returncode == 0
    assert screen.count("\x1b[H\x1b[2J") == 2
    assert "verdict:" in screen
    assert "PID" in screen  # the process table


# ------------------------------------------------------------ no tracebacks, ever ---

GARBAGE = "∞garbage∞"


_FILES_TO_CREATE = {"journal"}
"""Options naming a file the command creates: any name is a legal one, so garbage is no
bad input there (``guardian --journal ∞garbage∞`` is a valid run)."""


def _bad_inputs() -> list[list[str]]:
    """For every subcommand (read from the parser, so a new one is covered): an unknown
    option, and garbage for each option that takes a value and each choice argument."""
    parser = build_parser()
    (commands,) = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    cases = []
    for name, sub in commands.choices.items():
        positionals = [action for action in sub._actions if not action.option_strings]
        valid = [
            str(next(iter(action.choices)))
            for action in positionals
            if action.choices and action.nargs is None
        ]
        cases.append([name, *valid, "--no-such-option"])
        for action in sub._actions:
            if action.dest in _FILES_TO_CREATE:
                continue
            if action.option_strings and action.nargs != 0 and action.dest != "help":
                cases.append([name, *valid, action.option_strings[-1], GARBAGE])
            elif not action.option_strings and action.choices and action.nargs is None:
                cases.append([name, GARBAGE])
    return cases


def test_the_bad_inputs_cover_every_subcommand() -> None:
    parser = build_parser()
    (commands,) = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    assert {case[0] for case in _bad_inputs()} == set(commands.choices)
    assert ["watch", "--interval", GARBAGE] in _bad_inputs()


def _assert_one_line_and_exit_2(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith("resguard"), out.stderr


@pytest.mark.parametrize("args", _bad_inputs(), ids=" ".join)
def test_every_subcommand_answers_bad_input_with_one_line_and_exit_2(args: list[str]) -> None:
    _assert_one_line_and_exit_2(resguard(*args))


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["watch", "--interval", "0"], "1ms or more"),
        (["watch", "--interval", "1ns"], "1ms or more"),
        (["watch", "--count", str(10**400)[:5] + "x"], "whole number"),
        (["top", "--interval", "1e999s"], "1e999s"),
        (["budget", "--config", "/nonexistent/budgets.toml"], "no such file"),
        (["ollama", "ps", "--host", "http://127.0.0.1:99999"], "ollama"),
        (["ollama", "ps", "--host", "nonsense::host"], "ollama"),
    ],
)
def test_known_bad_inputs_give_one_line_naming_the_problem(args: list[str], text: str) -> None:
    out = resguard(*args)
    _assert_one_line_and_exit_2(out)
    assert text in out.stderr


def test_a_non_utf8_budget_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    path = str(tmp_path / "budgets.toml")
    Path(path).write_bytes(b"[[budget]]\nname = '\xff'\n")
    out = resguard("budget", "--config", path)
    _assert_one_line_and_exit_2(out)
    assert "not UTF-8" in out.stderr
    assert path in out.stderr


def _with_closed_stdout(*args: str) -> subprocess.CompletedProcess[str]:
    """Run with a stdout pipe whose reader is gone, as after ``| head -1`` has read."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "resguard", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ["top", "--json", "--interval", "0"],
        ["snapshot"],
        ["watch", "--count", "2", "--interval", "0.1", "--json"],
    ],
)
def test_a_closed_stdout_exits_141_quietly_like_a_unix_tool(args: list[str]) -> None:
    out = _with_closed_stdout(*args)
    assert out.returncode == 141
    assert out.stderr == ""


def test_docker_stats_into_a_closed_pipe_exits_quietly(docker_client: Any) -> None:
    out = _with_closed_stdout("docker", "stats", "--json")
    assert out.returncode == 141
    assert out.stderr == ""


def test_head_reads_the_first_line_and_the_pipeline_is_quiet() -> None:
    shell = (
        f"set -o pipefail; {sys.executable} -m resguard watch --json --count 50 "
        f"--interval 0.01 | head -1"
    )
    out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["level"] in ("OK", "WARNING", "CRITICAL")
    assert out.stderr == ""
    assert out.returncode == 141


def test_ctrl_c_exits_130_without_a_traceback() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "resguard", "watch", "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline()  # it is running
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err
    assert err == ""


def test_an_internal_error_is_one_line_and_debug_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import resguard.cli as cli

    def broken(args: Any, out: Any) -> int:
        raise KeyError("a bug")

    real = cli.build_parser

    def parser_with_a_bug() -> argparse.ArgumentParser:
        parser = real()
        parser.set_defaults(handler=broken)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                action.choices["snapshot"].set_defaults(handler=broken)
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_with_a_bug)
    monkeypatch.delenv("RESGUARD_DEBUG", raising=False)
    assert main(["snapshot"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resguard: internal error: KeyError: 'a bug'")
    assert len(err.splitlines()) == 1
    assert "RESGUARD_DEBUG=1" in err
    monkeypatch.setenv("RESGUARD_DEBUG", "1")
    assert main(["snapshot"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_resguard_error_in_a_command_is_one_line_naming_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    module = importlib.import_module("resguard.snapshot")

    def refuse(**kwargs: Any) -> Any:
        raise rg.InvalidValue("bad\nvalue 'x'")

    monkeypatch.setattr(module, "snapshot", refuse)
    assert main(["snapshot"]) == 2
    assert capsys.readouterr().err == "resguard snapshot: bad value 'x'\n"


def test_version_is_the_installed_version() -> None:
    from importlib.metadata import version

    out = resguard("--version")
    assert out.returncode == 0
    assert out.stdout == f"resguard {version('resguard')}\n"
    assert rg.__version__ == version("resguard")


def test_version_is_not_read_at_import() -> None:
    from support import run_python

    code = (
        "import sys, resguard; print('importlib.metadata' in sys.modules, "
        "'__version__' in vars(resguard)); print(resguard.__version__)"
    )
    first, second = run_python(code).splitlines()
    assert first == "False False"
    assert second == rg.__version__


# ------------------------------------------------------- unknown figures are shown ---


def _blind_state(unknown: tuple[str, ...] = ("memory.percent: /proc/meminfo empty",)) -> Any:
    """A monitor state whose snapshot could read nothing numeric (decision: None)."""
    from resguard.monitor import State
    from resguard.rules import Level, Verdict
    from resguard.testing import unknown_memory

    snap = unknown_memory(rg.snapshot(), swap=True)
    cpu = attrs.evolve(snap.cpu, percent=None, load_1m=None, load_5m=None, load_15m=None)
    process = attrs.evolve(
        snap.process, rss=None, vms=None, cpu_percent=None, num_threads=None, children_rss=None
    )
    rows = rg.top_processes(2) or []
    # figures that could not be read are None at run time (the table's types say int/float)
    rows = [attrs.evolve(row, rss=None, cpu_percent=None) for row in rows]  # type: ignore[arg-type]
    blind = attrs.evolve(snap, cpu=cpu, process=process, processes=tuple(rows))
    return State(snapshot=blind, verdict=Verdict(Level.OK, (), unknown), sequence=1)


def test_unknown_figures_are_shown_as_question_marks_not_zero() -> None:
    state = _blind_state()
    text = format_snapshot(state.snapshot)
    assert "? used of ?" in text
    assert "(?%)" in text
    assert "0 B" not in text
    line = format_line(state, "stale: last sample 3.2 s ago")
    assert "mem ?%" in line
    assert "| unknown: " in line  # one list: the stale state first, as the frame has it
    assert "memory.percent: /proc/meminfo empty" in line
    assert "stale: last sample 3.2 s ago" in line
    frame = format_frame(state, 5, "stale: last sample 3.2 s ago")
    assert "? unknown: memory.percent: /proc/meminfo empty" in frame
    assert "? unknown: stale: last sample 3.2 s ago" in frame


def test_watch_names_a_stale_state_and_json_lists_the_unknowns() -> None:
    import time

    from resguard.cli.watch import stale_reason
    from resguard.testing import ManualClock

    clock = ManualClock(time.monotonic())
    monitor = rg.Monitor(reclaim=False, clock=clock)
    monitor.sample_now()
    assert stale_reason(monitor) is None
    clock.advance(monitor.stale_after_s + 5)
    stale = stale_reason(monitor)
    assert stale is not None
    assert stale.startswith("stale: last sample")
    assert stale in format_line(monitor.state, stale)
    assert f"? unknown: {stale}" in format_frame(monitor.state, 3, stale)
    out = resguard("watch", "--once", "--json", "--window", "0.1")
    assert isinstance(json.loads(out.stdout)["unknown"], list)


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "snapshot",
                    "top",
                    "watch",
                    "docker",
                    "ollama",
                    "budget",
                    "stats",
                    "ps",
                    "-n",
                    "--interval",
                    "--count",
                    "--by",
                    "--config",
                    "--host",
                    "--json",
                    "--preset",
                    "--version",
                    "-h",
                    "--",
                ]
            ),
            st.text(max_size=12),
        ),
        max_size=5,
    )
)
def test_the_parser_answers_any_argv_with_at_most_one_line(argv: list[str]) -> None:
    """Whatever the words, parsing ends in a command to run or one line and exit 2 (the
    commands themselves are replaced here, so nothing runs for real)."""
    import contextlib
    import io

    import resguard.cli as cli

    ran: list[str] = []

    def recorder(name: str) -> Callable[[argparse.Namespace, TextIO], int]:
        def handler(args: argparse.Namespace, out: TextIO) -> int:
            ran.append(name)
            return 0

        return handler

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sub.set_defaults(handler=recorder(name))
    err, out = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(out),
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr(cli, "build_parser", lambda: parser)
        code = main(argv, out=io.StringIO())
    assert "Traceback" not in err.getvalue()
    if "-h" in argv or "--version" in argv:
        assert code in (0, 2)
    elif code == 0:
        assert len(ran) == 1
    else:
        assert code == 2
        assert len(err.getvalue().splitlines()) == 1, err.getvalue()


def _damaged_meminfo(
    content: bytes, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run resguard in a mount namespace where /proc/meminfo is *content* (as root)."""
    import shutil

    from plugins.integration import unavailable

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        unavailable("damaging /proc/meminfo needs root and unshare(1)")
    fake = tmp_path / "meminfo"
    fake.write_bytes(content)
    script = f"mount --bind {fake} /proc/meminfo && exec {sys.executable} -m resguard " + " ".join(
        args
    )
    out = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    if "mount" in out.stderr and out.returncode != 0 and "Traceback" not in out.stderr:
        unavailable(f"cannot bind-mount over /proc/meminfo here: {out.stderr.strip()}")
    return out


@pytest.mark.parametrize("content", [b"garbage\n", b"", b"MemTotal: 16 kB\nMemFree:"])
def test_a_damaged_meminfo_shows_unknown_never_zero_or_a_traceback(
    content: bytes, tmp_path: Path
) -> None:
    out = _damaged_meminfo(content, tmp_path, "snapshot", "--window", "0.1")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("memory   ? used of "), first  # a truncated file keeps its total
    assert "0 B" not in first
    assert "unknown  memory" in out.stdout


def test_watch_with_a_damaged_meminfo_says_what_is_unknown(tmp_path: Path) -> None:
    out = _damaged_meminfo(b"garbage\n", tmp_path, "watch", "--once", "--json", "--window", "0.1")
    assert "Traceback" not in out.stderr
    update = json.loads(out.stdout)
    # the source that failed: the file itself, or psutil's call that reads it
    source = "/proc/meminfo" if default_backend() == "linux" else "psutil.virtual_memory()"
    assert any(source in reason for reason in update["unknown"]), update["unknown"]
    assert update["snapshot"]["memory"]["limit"] is None


def test_budget_with_a_damaged_meminfo_marks_the_machine_unavailable(tmp_path: Path) -> None:
    config = tmp_path / "budgets.toml"
    config.write_text("[[budget]]\nname = 'machine'\nmachine = true\nmax = '1TB'\n")
    out = _damaged_meminfo(b"", tmp_path, "budget", "--json", "--config", str(config))
    assert out.returncode == 0, out.stderr
    (component,) = json.loads(out.stdout)["components"]
    assert component["used"] is None
    assert component["status"] == "unavailable"
    assert "unknown" in component["detail"]


def test_the_snapshot_view_shows_uss_when_measured_and_children_only_when_known() -> None:
    measured = format_snapshot(rg.snapshot(uss=True))
    assert "uss " in measured
    plain = rg.snapshot(children=False)
    text = format_snapshot(plain)
    assert "uss " not in text
    assert "children" not in text  # not measured is not unknown: no "children ?"
    damaged = attrs.evolve(
        plain,
        faults=(Fault("process.children_rss", "/proc/1/task", "unreadable", "permission denied"),),
    )
    assert "children ?" in format_snapshot(damaged)


# ---------------------------------------------------- the one table/live renderer ---


def test_one_table_renderer_pads_fixed_and_fitted_columns() -> None:
    from resguard.cli._render import Column, table

    fixed = (Column("ID", ">", 4), Column("USER", "<", 5, cut=5), Column("COMMAND", cut=6))
    assert table(fixed, [("1", "rooted-user", "python -m x"), ("22", "", "")]).splitlines() == [
        "  ID USER  COMMAN",
        "   1 roote python",
        "  22       ",
    ]
    fitted = [Column("NAME"), Column("SIZE")]
    text = table(fitted, [("llama3.2:1b", "1.4 GiB"), ("a", "")], gap="  ", strip=True)
    assert text.splitlines() == ["NAME         SIZE", "llama3.2:1b  1.4 GiB", "a"]
    assert table(fitted, []) == "NAME SIZE"


def test_the_stream_of_updates_appends_a_line_or_a_json_object_each() -> None:
    import io

    from resguard.cli._render import Live

    pipe = io.StringIO()
    appended = Live(pipe)
    appended.show("one")
    appended.show_json({"level": "OK"})
    assert pipe.getvalue() == 'one\n{"level":"OK"}\n'


@pytest.mark.parametrize("encoding", ["ascii", "latin-1", "utf-8"])
def test_no_command_fails_on_a_name_its_output_cannot_encode(
    monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    """A process, container or model name that the terminal's encoding cannot hold (an
    emoji on Latin-1, a lone surrogate from an undecodable file name) is written with a
    replacement character by every command, not only top and watch."""
    import io

    import resguard.cli as cli

    def prints_names(args: Any, out: Any) -> int:
        out.write("model \U0001f999-llama, process spin\udcff\n")
        return 0

    real = cli.build_parser

    def parser_printing_names() -> argparse.ArgumentParser:
        parser = real()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for command in action.choices.values():
                    command.set_defaults(handler=prints_names)
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_printing_names)
    for command in (["snapshot"], ["budget"], ["top"], ["watch", "--once"]):
        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding=encoding)
        assert main(command, out) == 0, command
        out.flush()
        assert raw.getvalue().decode(encoding).startswith("model ")


def test_a_process_row_has_one_json_shape_in_top_snapshot_and_watch() -> None:
    """``top --json``, ``snapshot --json``'s ``top_processes`` and ``watch --json``'s
    ``top`` print a row as ProcessInfo.to_dict() (watch adds ``culprit``); snapshot had
    six keys of its own."""
    import io

    def json_of(*argv: str) -> Any:
        out = io.StringIO()
        assert main(list(argv), out=out) in (0, 1)
        return json.loads(out.getvalue())

    row_keys = set(rg.top_processes(1)[0].to_dict())
    (top,) = json_of("top", "--json", "-n", "1", "--window", "0.25")
    snapshot = json_of("snapshot", "--json", "--window", "0.25")
    watch = json_of("watch", "--once", "--json", "-n", "1", "--window", "0.25")
    assert set(top) == row_keys
    assert {frozenset(row) for row in snapshot["top_processes"]} == {frozenset(row_keys)}
    assert {frozenset(row) for row in watch["top"]} == {frozenset(row_keys | {"culprit"})}


def test_the_window_measured_is_said_once_raised_to_the_shortest_cpu_window() -> None:
    """measure_window says the window it waited (a short one raised to 0.25 s), so no
    command clamps it again on its own."""
    from resguard.cli._args import measure_window

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    short = measure_window(0.1, clock=lambda: now[0], sleep=sleep)
    assert short.window_s == 0.25
    assert now[0] == pytest.approx(0.25)
    assert measure_window(2.0, clock=lambda: now[0], sleep=sleep).window_s == 2.0
    assert now[0] == pytest.approx(2.25)


def test_top_shows_a_process_without_a_command_line_as_its_name_in_brackets() -> None:
    """As ps, watch and the notebook do (one command_text): a kernel thread or a zombie
    is ``[name]``, escaped."""
    from resguard.cli import format_processes
    from resguard.testing import make_process

    bare = attrs.evolve(make_process(7, "kworker/0:1\x1b"), cmdline=())
    (line,) = format_processes([bare]).splitlines()[1:]
    assert line.endswith(r"[kworker/0:1\x1b]")
