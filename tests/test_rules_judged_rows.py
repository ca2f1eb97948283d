"""Which process rows the rules judge: never a kernel thread, never resguard itself (the
process that took the snapshot), and never a CPU figure that is a process's average
since it started (the table's first scan of it); and a culprit's small share is shown
with the precision it needs (R1 7 and the weaker points)."""

from __future__ import annotations

import os
import subprocess

import attrs
import pytest

from resguard.processes import ProcessTable
from resguard.processes._rows import RowFacts, rows_from
from resguard.rules import Level, Policy, ProcessCount, ProcessThreshold, Threshold, culprits
from resguard.snapshot import ProcessInfo
from resguard.testing import make_process, make_snapshot

from factories import MB, GiB

SELF_PID = 4242  # make_snapshot's snapshot.process.pid


def kworker(pid: int = 77, cpu_percent: float = 150.0) -> ProcessInfo:
    """A kernel thread as R1 built it: a child of kthreadd, no memory, no command line."""
    row = make_process(pid, "kworker/0:1", cpu_percent=cpu_percent, rss=0)
    return attrs.evolve(row, cmdline=(), ppid=2, uid=0)


def first_scan(row: ProcessInfo) -> ProcessInfo:
    return attrs.evolve(row, cpu_since_start=True)


def verdict(rule: object, *tables: tuple[ProcessInfo, ...]) -> list[object]:
    policy = Policy([rule])  # type: ignore[list-item]
    state = policy.new_state()
    return [
        policy.evaluate(make_snapshot(at=float(t), processes=rows), state, now=float(t))
        for t, rows in enumerate(tables)
    ]


@pytest.mark.parametrize(
    "rule",
    [
        ProcessThreshold(cpu_percent_above=90, for_=0, name="run"),
        ProcessCount(cpu_percent_above=90, at_least=1, name="count"),
    ],
)
def test_a_busy_kernel_thread_fires_no_process_rule_and_is_never_named(rule: object) -> None:
    (judged,) = verdict(rule, (kworker(), make_process(10, "shell", cpu_percent=1.0)))
    assert judged.level == Level.OK  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "rule",
    [
        ProcessThreshold(cpu_percent_above=90, for_=0, name="run"),
        ProcessCount(cpu_percent_above=90, at_least=1, name="count"),
        ProcessThreshold(rss_above="1GiB", name="big"),
    ],
)
def test_resguard_never_names_itself_as_an_offender(rule: object) -> None:
    me = make_process(SELF_PID, "resguard", cpu_percent=97.0, rss=2 * GiB)
    (judged,) = verdict(rule, (me,))
    assert judged.level == Level.OK  # type: ignore[attr-defined]
    other = make_process(10, "python3", cpu_percent=97.0, rss=2 * GiB)
    (judged,) = verdict(rule, (me, other))
    names = [o.pid for b in judged.breaches for o in b.offenders]  # type: ignore[attr-defined]
    assert names == [10]


def test_resguard_is_never_its_own_culprit() -> None:
    me = make_process(SELF_PID, "resguard", cpu_percent=94.0, rss=8 * GiB)
    other = make_process(10, "python3", cpu_percent=97.0, rss=1 * GiB)
    snapshot = make_snapshot(memory_percent=95, processes=(me, other))
    assert [o.pid for o in culprits(snapshot, "memory.percent")] == [10]
    assert [o.pid for o in culprits(snapshot, "cpu.percent")] == [10]


def test_a_first_scan_cpu_figure_fires_no_cpu_rule_until_the_next_scan() -> None:
    rule = ProcessThreshold(cpu_percent_above=50, for_=0, name="hot")
    busy_earlier = make_process(10, "batch", cpu_percent=94.0)
    judged = verdict(rule, (first_scan(busy_earlier),), (busy_earlier,))
    assert [v.level for v in judged] == [Level.OK, Level.WARNING]  # type: ignore[attr-defined]
    count = ProcessCount(cpu_percent_above=50, at_least=1, name="count")
    judged = verdict(count, (first_scan(busy_earlier),), (busy_earlier,))
    assert [v.level for v in judged] == [Level.OK, Level.WARNING]  # type: ignore[attr-defined]


def test_a_first_scan_row_is_still_judged_by_its_memory() -> None:
    big = first_scan(make_process(10, "batch", cpu_percent=94.0, rss=3 * GiB))
    (judged,) = verdict(ProcessThreshold(rss_above="1GiB", name="big"), (big,))
    assert judged.level == Level.WARNING  # type: ignore[attr-defined]
    snapshot = make_snapshot(memory_percent=95, processes=(big,))
    assert [o.pid for o in culprits(snapshot, "memory.percent")] == [10]
    assert culprits(snapshot, "cpu.percent") == ()


def test_the_table_marks_lifetime_figures_and_only_them() -> None:
    fact = RowFacts(7, "p", 1, 1000.0, 0, cpu_s=50.0, num_threads=1, uid=0, age_s=100.0)
    rows, previous = rows_from([fact], {}, 10.0, 4)
    assert rows[0].cpu_since_start
    assert rows[0].cpu_percent == pytest.approx(50.0)
    # a second scan too soon to measure keeps the baseline, lifetime figure and mark
    rows, previous = rows_from([fact._replace(cpu_s=50.001)], previous, 10.01, 4)
    assert rows[0].cpu_since_start
    rows, previous = rows_from([fact._replace(cpu_s=50.5)], previous, 11.0, 4)
    assert not rows[0].cpu_since_start
    assert rows[0].cpu_percent == pytest.approx(50.0)
    went_back = fact._replace(cpu_s=1.0)  # a counter that went back: lifetime again
    rows, _ = rows_from([went_back], previous, 12.0, 4)
    assert rows[0].cpu_since_start


def test_a_real_table_s_first_scan_is_marked_and_its_second_is_not() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        now = [100.0]
        table = ProcessTable(clock=lambda: now[0])
        first = {row.pid: row for row in table.sample()}
        assert first[os.getpid()].cpu_since_start
        assert first[child.pid].cpu_since_start
        now[0] = 101.0
        second = {row.pid: row for row in table.sample()}
        assert not second[os.getpid()].cpu_since_start
        grouped = table.top(500, group=True, rows=list(first.values()))
        assert all(row.cpu_since_start for row in grouped)
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    ("rss", "shown"),
    [(300 * MB, "0.4% of memory"), (5 * MB, "<0.1% of memory"), (2 * GiB, "3% of memory")],
)
def test_a_small_culprit_share_is_not_shown_as_zero(rss: int, shown: str) -> None:
    dockerd = make_process(10, "dockerd", rss=rss)
    policy = Policy([Threshold("memory.percent", ">", 80, name="full")])
    snapshot = make_snapshot(memory_percent=90, limit=64 * GiB, processes=(dockerd,))
    (breach,) = policy.evaluate(snapshot).breaches
    assert f"10 dockerd {shown}" in breach.message
