"""Budgets' command lines on the psutil backend: read through psutil, only while the
row's PID is still the row's process, and never an exception from a hostile psutil."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import attrs
import psutil
import pytest

from resguard._probes.procfs import TICKS_PER_S
from resguard.budget._match import CmdlineCache
from resguard.processes import ProcessTable
from resguard.snapshot import ProcessInfo

from support import wait_until


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(["sleep", "31"])
    wait_until(lambda: psutil.Process(child.pid).cmdline() == ["sleep", "31"], what="the exec")
    yield child
    child.kill()
    child.wait()


def _row(pid: int) -> ProcessInfo:
    return next(row for row in ProcessTable(backend="psutil").sample() if row.pid == pid)


def test_the_psutil_cache_reads_a_command_line_once_per_process(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CmdlineCache(backend="psutil")
    row = _row(sleeper.pid)
    [filled] = cache.fill([row])
    assert filled.cmdline == ("sleep", "31")
    monkeypatch.setattr(psutil.Process, "cmdline", lambda self: ["changed"])
    [again] = cache.fill([row])
    assert again.cmdline == ("sleep", "31")  # known by identity: not read again


def test_a_row_whose_pid_is_another_process_now_gets_no_command_line(
    sleeper: subprocess.Popen[bytes],
) -> None:
    row = attrs.evolve(_row(sleeper.pid), create_time=_row(sleeper.pid).create_time - 1)
    assert CmdlineCache(backend="psutil").fill([row])[0].cmdline == ()


@pytest.mark.parametrize(
    "answer", [None, [None, 3], RuntimeError("odd"), psutil.AccessDenied(1), OSError(5, "EIO")]
)
def test_a_hostile_psutil_gives_an_empty_command_line(
    answer: object, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def cmdline(self: psutil.Process) -> object:
        if isinstance(answer, BaseException):
            raise answer
        return answer

    row = _row(sleeper.pid)
    monkeypatch.setattr(psutil.Process, "cmdline", cmdline)
    assert CmdlineCache(backend="psutil").fill([row])[0].cmdline == ()


def test_a_re_rooted_proc_reads_the_linux_way(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "4242").mkdir()
    (root / "4242" / "cmdline").write_bytes(b"worker\0--fast\0")
    (root / "stat").write_text("cpu  1 0 1 1 0 0 0 0 0 0\nbtime 1700000000\n")
    fields = ["S", "1"] + ["0"] * 17 + ["12345", "1000", "42"] + ["0"] * 10
    (root / "4242" / "stat").write_text("4242 (worker) " + " ".join(fields) + "\n")
    row = attrs.evolve(
        _row(psutil.Process().pid), pid=4242, create_time=1700000000 + 12345 / TICKS_PER_S
    )
    assert CmdlineCache(str(root)).fill([row])[0].cmdline == ("worker", "--fast")
    # the same PID with another start: a newcomer, whose command line is not the row's
    other = attrs.evolve(row, create_time=row.create_time - 5)
    assert CmdlineCache(str(root)).fill([other])[0].cmdline == ()


def test_on_linux_a_row_whose_pid_is_another_process_now_gets_no_command_line(
    sleeper: subprocess.Popen[bytes],
) -> None:
    row = next(r for r in ProcessTable(backend="linux").sample() if r.pid == sleeper.pid)
    assert CmdlineCache(backend="linux").fill([row])[0].cmdline == ("sleep", "31")
    other = attrs.evolve(row, create_time=row.create_time - 1)
    assert CmdlineCache(backend="linux").fill([other])[0].cmdline == ()
