"""Issue 14's CPU acceptance on this machine, no mocks: a child burns one core and
``resguard snapshot --json``, ``resguard top --json`` and ``resguard watch --once --json``
(real subprocesses, ``--window 1``) report 90–105 % of a core for it, and snapshot and
watch the machine's total at least the share of all cores that one busy core is (45 % on
2 cores), in 5 runs of 5.

The box is shared (load 6 on 2 cores while this was written), and with the kernel's
autogroup scheduling a process's nice value counts only inside its session: a burner at
nice -20 in the test's session got 40 % of a core, one in a session of its own with the
session's nice at -20 got 99 %. So, where the test may (as root), the burner starts its
own session at the highest priority, and the test judges resguard's figure, not the
neighbours' load. Every failure says what the burner really got over the run (its CPU
time from the kernel), so a short run shows whether resguard or the scheduler was short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from support import wait_until

RESGUARD = [sys.executable, "-m", "resguard"]
RUNS = 5
BURN = "while 1: pass"


def _highest_priority() -> None:
    """In the burner before it runs: a session of its own (its own autogroup) at nice
    -20; not root, it keeps what it has and the neighbours may take some of its core."""
    os.setsid()
    try:
        with open("/proc/self/autogroup", "w", encoding="ascii") as autogroup:
            autogroup.write("-20")
    except OSError:  # no autogroup scheduling, or not root
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -20)
    except OSError:
        pass


@pytest.fixture
def burner() -> Iterator[psutil.Process]:
    child = subprocess.Popen([sys.executable, "-c", BURN], preexec_fn=_highest_priority)
    try:
        process = psutil.Process(child.pid)
        wait_until(lambda: sum(process.cpu_times()[:2]) > 0.2, what="the burner to run")
        yield process
    finally:
        child.kill()
        child.wait()


def _run(burner: psutil.Process, *args: str) -> tuple[Any, float]:
    """*args* run as resguard's command line: its JSON and the burner's own CPU percent
    (of one core) over the whole run, for the failure's message."""
    before = sum(burner.cpu_times()[:2])
    start_s = time.monotonic()
    out = subprocess.run(
        [*RESGUARD, *args], capture_output=True, text=True, timeout=60, check=False
    )
    elapsed_s = time.monotonic() - start_s
    burnt = 100.0 * (sum(burner.cpu_times()[:2]) - before) / elapsed_s
    assert out.returncode in (0, 1), out.stderr  # watch --once: 1 when the verdict is not OK
    return json.loads(out.stdout), burnt


def _one_core_share() -> float:
    return 100.0 / (os.cpu_count() or 1)


@pytest.mark.slow
def test_snapshot_shows_the_burner_at_one_core_and_the_machine_busy(
    burner: psutil.Process,
) -> None:
    for run in range(RUNS):
        data, burnt = _run(burner, "snapshot", "--json", "--window", "1")
        rows = {row["pid"]: row for row in data["top_processes"]}
        assert burner.pid in rows, f"run {run}: not among the busiest {data['top_processes']}"
        percent = rows[burner.pid]["cpu_percent"]
        assert 90 <= percent <= 105, f"run {run}: {percent:.1f} % (it burnt {burnt:.1f} %)"
        total = data["cpu"]["percent"]
        assert total is not None
        assert total >= 0.9 * _one_core_share(), f"run {run}: the machine {total:.1f} % busy"
        assert data["window_s"] == 1.0


@pytest.mark.slow
def test_top_shows_the_burner_at_one_core(burner: psutil.Process) -> None:
    for run in range(RUNS):
        rows, burnt = _run(burner, "top", "--json", "--window", "1", "-n", "5")
        found = [row for row in rows if row["pid"] == burner.pid]
        assert found, f"run {run}: not in the top 5 {[(r['pid'], r['name']) for r in rows]}"
        percent = found[0]["cpu_percent"]
        assert 90 <= percent <= 105, f"run {run}: {percent:.1f} % (it burnt {burnt:.1f} %)"


@pytest.mark.slow
def test_watch_once_shows_the_burner_at_one_core_and_the_machine_busy(
    burner: psutil.Process,
) -> None:
    for run in range(RUNS):
        data, burnt = _run(burner, "watch", "--once", "--json", "--window", "1", "-n", "5")
        found = [row for row in data["top"] if row["pid"] == burner.pid]
        assert found, f"run {run}: not in the top 5 {[(r['pid'], r['name']) for r in data['top']]}"
        percent = found[0]["cpu_percent"]
        assert 90 <= percent <= 105, f"run {run}: {percent:.1f} % (it burnt {burnt:.1f} %)"
        total = data["snapshot"]["cpu"]["percent"]
        assert total is not None
        assert total >= 0.9 * _one_core_share(), f"run {run}: the machine {total:.1f} % busy"
