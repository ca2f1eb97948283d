"""``resguard watch`` on a ``TERM=dumb`` terminal writes lines, never the alternate
screen or a clear (R1 14); its key wait takes a descriptor of 1024 or more (select()
failed on one); and its table never lists resguard's own process unless ``--all``."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator

import pytest

from resguard.cli._screen import CLEAR, Screen, redraws
from resguard.cli._view import ViewOptions, choose_rows
from resguard.monitor import State
from resguard.rules import Level, Verdict
from resguard.testing import make_process, make_snapshot
from watch_terminal import Terminal

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no pty on Windows")


@pytest.fixture
def dumb() -> Iterator[Terminal]:
    term = Terminal("--count", "3", env={"TERM": "dumb"})
    yield term
    term.close()


def test_a_dumb_terminal_gets_lines_not_the_alternate_screen(dumb: Terminal) -> None:
    assert dumb.exit_code() == 0
    assert b"\x1b[?1049h" not in dumb.output
    assert CLEAR.encode() not in dumb.output
    assert b"\x1b[2J" not in dumb.output
    lines = [line for line in dumb.output.decode().split("\r\n") if line.strip()]
    assert len(lines) == 3, lines
    assert all(" mem " in line for line in lines), lines


def test_only_a_terminal_that_is_not_dumb_redraws() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert redraws(Tty(), {"TERM": "xterm-256color"})
    assert not redraws(Tty(), {"TERM": "dumb"})
    assert not redraws(io.StringIO(), {"TERM": "xterm-256color"})


def test_keys_are_read_from_a_descriptor_above_1023() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"RLIMIT_NOFILE is {soft}: no descriptor above 1023 to test with")
    master, secondary = os.openpty()
    high = os.dup2(secondary, 1100)
    try:
        with os.fdopen(high, "r", closefd=False) as keys:
            out = io.StringIO()
            with Screen(out, keys, colour=False) as screen:
                os.write(master, b"q")
                assert screen.key(5.0) == "q"
    finally:
        os.close(high)
        os.close(secondary)
        os.close(master)


def test_the_table_leaves_resguard_itself_out_unless_all() -> None:
    snapshot = make_snapshot(
        processes=(
            make_process(4242, "resguard", cpu_percent=90.0),  # snapshot.process.pid
            make_process(10, "python3", cpu_percent=50.0),
        )
    )
    state = State(snapshot=snapshot, verdict=Verdict(Level.OK, ()), sequence=1)
    assert [row.pid for row in choose_rows(state, ViewOptions(rows=5))] == [10]
    every = choose_rows(state, ViewOptions(rows=5, show_all=True))
    assert [row.pid for row in every] == [4242, 10]
