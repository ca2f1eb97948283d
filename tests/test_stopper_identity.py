"""A stop candidate's identity, written once in the stopper for everyone who acts on
processes (the guardian included): two readings are one process only with the same pid
and exact start time, and a process table's row is the candidate's only when its start
time agrees to a clock tick; a refusal says it is one, not only in words."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard._probes.identity import SAME_START_S, boot_time_s
from resguard._probes.procfs import TICKS_PER_S
from resguard.processes import ProcessTable
from resguard.reclaim import ProcessStopper, StopCandidate
from resguard.testing import make_process

from support import wait_until


def linux(pid: int = 42, ticks: int | None = 1000) -> StopCandidate:
    return StopCandidate(pid, ticks, "python3", "python3 -c x", os.getuid(), 1, None)


def portable(pid: int = 42, created: float | None = 1_700_000_000.0) -> StopCandidate:
    return StopCandidate(pid, None, "python3", "python3", 0, 1, None, created, 1)


@given(st.integers(1, 10**9), st.integers(-3, 3))
def test_two_linux_readings_are_one_process_only_with_the_same_start_tick(
    ticks: int, delta: int
) -> None:
    assert linux(ticks=ticks).same_process(linux(ticks=ticks + delta)) is (delta == 0)
    assert not linux(pid=1, ticks=ticks).same_process(linux(pid=2, ticks=ticks))


@given(st.floats(-0.01, 0.01))
def test_two_portable_readings_agree_to_psutils_precision(delta: float) -> None:
    a, b = portable(), portable(created=1_700_000_000.0 + delta)
    assert a.same_process(b) is (abs(delta) <= SAME_START_S)


def test_a_reading_without_a_start_time_is_never_the_same_process() -> None:
    assert not portable(created=None).same_process(portable(created=None))
    assert not linux(ticks=None).same_process(linux())


@pytest.mark.parametrize("ticks_off", [0, 1, -1, 2, 100])
def test_a_rows_start_time_is_the_candidates_to_a_clock_tick(ticks_off: int) -> None:
    candidate = linux(ticks=5000)
    start_s = boot_time_s() + (5000 + ticks_off) / TICKS_PER_S
    row = make_process(pid=42, create_time=start_s)
    assert candidate.is_row(row) is (abs(ticks_off) <= 1)
    assert not candidate.is_row(attrs.evolve(row, pid=43))
    assert linux(ticks=None).is_row(row)  # nothing to compare: the table's row stands


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_live_processes_row_is_its_candidate_and_a_protected_stop_is_a_refusal() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()", "identity-x1"])
    try:
        stopper = ProcessStopper([r"identity-x1"], enabled=True, dry_run=False)
        wait_until(lambda: stopper.candidate(child.pid) is not None, what="the child listed")
        candidate = stopper.candidate(child.pid)
        assert candidate is not None
        [row] = [row for row in ProcessTable().sample() if row.pid == child.pid]
        assert candidate.is_row(row)
        assert candidate.start_time_s == pytest.approx(row.create_time, abs=1.5 / TICKS_PER_S)
        action = stopper.stop(attrs.evolve(candidate, protected="a protected name"))
        assert (action.done, action.refused, action.signal) == (False, True, "none")
        gone = attrs.evolve(  # on either backend: the linux one compares ticks, psutil times
            candidate,
            start_ticks=(candidate.start_ticks or 0) + 1,
            create_time=None if candidate.create_time is None else candidate.create_time + 5.0,
        )
        action = stopper.stop(gone)  # another process's identity: verified, refused
        assert (action.done, action.refused) == (False, True)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_a_dry_runs_log_line_escapes_the_process_name(caplog: pytest.LogCaptureFixture) -> None:
    stopper = ProcessStopper([r"x"], enabled=True, dry_run=True)
    forged = attrs.evolve(linux(pid=2**22 + 7), name="x\nresguard: forged\x1b[2J")
    with caplog.at_level(logging.WARNING, logger="resguard"):
        stopper.stop(forged)
    [record] = caplog.records
    assert not {"\n", "\x1b"} & set(record.getMessage())
    assert "x\\nresguard: forged\\x1b[2J" in record.getMessage()
