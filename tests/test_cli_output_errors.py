"""A standard output that cannot be written (a full disk, a closed descriptor) is one
line on stderr, ``cannot write to standard output: ...``, and exit 2, in every command
that prints; never ``internal error`` and never a traceback (R1 11)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from resguard.cli import main

COMMANDS = [
    ["watch", "--once", "--window", "0.1"],
    ["watch", "--once", "--json", "--window", "0.1"],
    ["snapshot", "--window", "0.1"],
    ["snapshot", "--json", "--window", "0.1"],
    ["top", "--window", "0.1"],
    ["top", "--json", "--window", "0.1"],
    ["--version"],
    ["--help"],
    ["budget", "--help"],
]


def _run(args: list[str], redirect: str) -> subprocess.CompletedProcess[str]:
    """``python -m resguard ARGS`` with stdout redirected by the shell (*redirect*)."""
    shell = f'exec "$@" {redirect}'
    command = ["bash", "-c", shell, "bash", sys.executable, "-m", "resguard", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_full_stdout_is_one_line_and_exit_2(args: list[str]) -> None:
    done = _run(args, ">/dev/full")
    assert done.returncode == 2, done.stderr
    assert done.stderr.endswith("cannot write to standard output: No space left on device\n")
    assert done.stderr.count("\n") == 1, done.stderr
    assert "internal error" not in done.stderr


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_closed_stdout_is_one_line_and_exit_2(args: list[str]) -> None:
    done = _run(args, ">&-")
    assert done.returncode == 2, done.stderr
    assert done.stderr.endswith("cannot write to standard output: it is closed\n")
    assert done.stderr.count("\n") == 1, done.stderr


class _Full(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


class _ShutFlush(io.StringIO):
    def flush(self) -> None:
        raise ValueError("I/O operation on closed file.")


@pytest.mark.parametrize("stream", [_Full(), _ShutFlush()])
def test_main_says_so_for_a_stream_it_was_given(
    stream: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["snapshot", "--window", "0.1"], out=stream) == 2
    err = capsys.readouterr().err
    assert "resguard snapshot: cannot write to standard output: " in err
    assert "internal error" not in err
