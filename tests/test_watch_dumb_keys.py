"""``resguard watch`` streaming lines on a ``TERM=dumb`` terminal (R1b 8a): ``q`` (alone
or with Enter) ends it, SIGTERM ends it with 143 as the live view does, and a ``TERM``
set empty is no more able than ``dumb`` (no colour, no alternate screen)."""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Iterator

import pytest

from resguard.cli._screen import colour_wanted, redraws
from watch_terminal import Terminal

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no pty on Windows")


@pytest.fixture
def dumb() -> Iterator[Terminal]:
    term = Terminal(env={"TERM": "dumb"})
    yield term
    term.close()


def _first_line(term: Terminal) -> None:
    term.read_until(lambda out: b" mem " in out, "a first line")


@pytest.mark.parametrize("keys", [b"q", b"q\r"])
def test_q_ends_watch_on_a_dumb_terminal(dumb: Terminal, keys: bytes) -> None:
    _first_line(dumb)
    os.write(dumb.master, keys)
    assert dumb.exit_code() == 0
    assert b"\x1b[?1049h" not in dumb.output


def test_sigterm_ends_watch_on_a_dumb_terminal_with_143(dumb: Terminal) -> None:
    _first_line(dumb)
    dumb.process.send_signal(signal.SIGTERM)
    assert dumb.exit_code() == 143
    assert b"Traceback" not in dumb.output


def test_an_empty_term_gets_neither_colour_nor_the_alternate_screen() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert not redraws(Tty(), {"TERM": ""})
    assert not colour_wanted(Tty(), {"TERM": ""})
    assert redraws(Tty(), {"TERM": "xterm"})
    assert colour_wanted(Tty(), {"TERM": "xterm"})
