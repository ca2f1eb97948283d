"""The process table: top-N without sleeping, identity, grouping, vanished processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard._errors import InvalidType, InvalidValue
from resguard._probes.identity import read_cmdline
from resguard._probes.procfs import TICKS_PER_S
from resguard.processes import (
    ProcessTable,
    _group_by_name,
    describe,
    top_processes,
)
from resguard.processes._rows import RowFacts, rows_from
from resguard.snapshot import ProcessInfo
from resguard.testing import ManualClock

from support import wait_until

BUSY = "import time\nwhile True: pass"


def _cpu_ticks(pid: int) -> int:
    """User plus system ticks of process *pid* (psutil's reading: any platform)."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return round((times.user + times.system) * TICKS_PER_S)


@pytest.fixture
def busy_child() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", BUSY])
    yield child
    child.kill()
    child.wait()


def test_a_busy_process_leads_by_cpu_after_one_interval(
    busy_child: subprocess.Popen[bytes],
) -> None:
    clock = ManualClock()
    table = ProcessTable(clock=clock)
    before = _cpu_ticks(busy_child.pid)
    table.sample()
    # half a second of the child's CPU, over one second of the table's clock: >= 50 %
    wait_until(
        lambda: _cpu_ticks(busy_child.pid) >= before + TICKS_PER_S // 2,
        timeout_s=60,
        what="the busy child to burn half a second of CPU",
    )
    clock.advance(1.0)
    top = table.top(10, by="cpu")
    assert top == sorted(top, key=lambda row: row.cpu_percent, reverse=True)
    child = next(row for row in top if row.pid == busy_child.pid)  # other tests may run too
    assert child.cpu_percent > 30
    assert child.cmdline[-1] == BUSY  # cmdline is filled in for the rows returned
    assert child.username is not None


def test_first_sample_needs_no_sleep_and_reports_lifetime_average() -> None:
    rows = ProcessTable().sample()
    me = next(row for row in rows if row.pid == os.getpid())
    assert me.cpu_percent > 0  # this interpreter has burnt CPU since it started
    assert me.rss > 0


def test_top_by_memory_finds_the_big_process() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "x = b'x' * (300 * 2**20); input()"], stdin=subprocess.PIPE
    )
    try:
        table = ProcessTable()
        rows: list[ProcessInfo] = []

        def big() -> ProcessInfo | None:
            rows[:] = table.sample()
            mine = next((row for row in rows if row.pid == child.pid), None)
            return mine if mine is not None and mine.rss >= 300 * 2**20 else None

        wait_until(big, timeout_s=30, what="the child's 300 MiB to be resident")
        mine = next(row for row in rows if row.pid == child.pid)
        # other processes on the machine (compilers, other test runs) may be bigger still
        rank = 1 + sum(row.rss > mine.rss for row in rows)
        top = table.top(rank + 2, by="memory")
        assert child.pid in {row.pid for row in top}
        assert top == sorted(top, key=lambda row: row.rss, reverse=True)
        assert top[0].rss >= 300 * 2**20
    finally:
        child.kill()
        child.wait()


def test_grouping_merges_processes_by_name() -> None:
    children = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        rows = ProcessTable().sample()
        grouped = _group_by_name(rows)
        sleeps = [row for row in grouped if row.name == "sleep"]
        assert len(sleeps) == 1
        members = [row for row in rows if row.name == "sleep"]
        assert sleeps[0].count == len(members) >= 3
        assert sleeps[0].rss == sum(row.rss for row in members)
        assert sleeps[0].pid in {child.pid for child in children} | {row.pid for row in members}
        top = ProcessTable().top(1000, by="memory", group=True)
        assert len([row for row in top if row.name == "sleep"]) == 1
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_identity_is_pid_and_create_time() -> None:
    table = ProcessTable()
    rows = {row.pid: row for row in table.sample()}
    me = rows[os.getpid()]
    assert abs(me.create_time - __import__("psutil").Process().create_time()) < 1.0


def test_vanished_processes_are_skipped_silently() -> None:
    table = ProcessTable()
    children = [subprocess.Popen(["sleep", "0.01"]) for _ in range(20)]
    for _ in range(20):
        rows = table.sample()
        assert all(isinstance(row, ProcessInfo) for row in rows)
    for child in children:
        child.wait()
    assert all(row.pid != child.pid for row in table.sample() for child in children)


@pytest.mark.parametrize(
    ("n", "by", "error"),
    [
        (-1, "cpu", InvalidValue),
        (True, "cpu", InvalidType),
        (3, "disk", InvalidValue),
        ("3", "cpu", InvalidType),
        (None, "cpu", InvalidType),
        (3, None, InvalidType),
        (3.0, "cpu", InvalidType),
        (3, ["cpu"], InvalidType),
    ],
)
def test_bad_arguments_are_named(n: object, by: object, error: type[Exception]) -> None:
    quoted = repr(n) if by in ("cpu",) else repr(by)
    with pytest.raises(error, match=re.escape(quoted)):
        ProcessTable().top(n, by=by)  # type: ignore[arg-type]
    with pytest.raises(error, match=re.escape(quoted)):
        top_processes(n, by=by)  # type: ignore[arg-type]


def test_top_processes_of_none_is_a_resguard_type_error() -> None:
    # issue 11 item 20: plain ValueError escaped from top_processes(None) and by=None
    with pytest.raises(InvalidType, match="n=None"):
        top_processes(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidType, match="by=None"):
        top_processes(by=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidType, match="group='yes'"):
        top_processes(group="yes")  # type: ignore[arg-type]


def test_other_public_functions_check_their_arguments() -> None:
    with pytest.raises(InvalidType, match="roots='/proc'"):
        ProcessTable("/proc")  # type: ignore[arg-type]
    with pytest.raises(InvalidType, match="clock=5"):
        ProcessTable(clock=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidType, match="row=None"):
        describe(None)  # type: ignore[arg-type]


def test_top_processes_default_table() -> None:
    rows = top_processes(5, by="memory")
    assert len(rows) == 5
    assert rows == sorted(rows, key=lambda row: row.rss, reverse=True)


def test_a_fork_while_another_thread_samples_the_table_cannot_hang_the_child() -> None:
    from forking import held_by_another_thread, in_child

    table = ProcessTable()
    table.sample()
    with held_by_another_thread(table._lock):
        status = in_child(table.sample, timeout_s=10)
    assert status == 0


# --- the rows, without I/O (both backends build them through processes._rows) -------------

_FACT = st.builds(
    RowFacts,
    pid=st.integers(1, 50),
    name=st.just("p"),
    ppid=st.just(1),
    create_time_s=st.sampled_from([1000.0, 1000.5, 2000.0]),
    rss_bytes=st.integers(0, 1 << 40),
    cpu_s=st.floats(0, 1e6, allow_nan=False),
    num_threads=st.integers(1, 100),
    uid=st.none() | st.integers(0, 1000),
    age_s=st.none() | st.floats(-10, 1e7, allow_nan=False),
)


_CPUS = 4


def _lifetime(fact: RowFacts) -> float:
    """The lifetime average, capped at 100 % per CPU as rows_from(cpus=_CPUS) caps it."""
    average = 100.0 * fact.cpu_s / fact.age_s if fact.age_s is not None and fact.age_s > 0 else 0.0
    return min(max(average, 0.0), 100.0 * _CPUS)


@given(fact=_FACT, before_cpu_s=st.floats(0, 1e6), elapsed_s=st.floats(0.001, 100))
def test_a_reused_pid_with_another_start_never_gets_a_delta_from_its_predecessor(
    fact: RowFacts, before_cpu_s: float, elapsed_s: float
) -> None:
    predecessor = (fact.pid, fact.create_time_s - 1.0)  # the same PID, started earlier
    rows, current = rows_from(
        [fact], {predecessor: (before_cpu_s, 0.0, 50.0, False)}, elapsed_s, _CPUS
    )
    assert rows[0].cpu_percent == pytest.approx(_lifetime(fact))
    assert current == {
        (fact.pid, fact.create_time_s): (fact.cpu_s, elapsed_s, _lifetime(fact), True)
    }


@given(
    facts=st.lists(_FACT, max_size=8),
    previous=st.dictionaries(
        st.tuples(st.integers(1, 50), st.sampled_from([1000.0, 1000.5, 2000.0])),
        st.tuples(
            st.floats(0, 1e6), st.floats(-100, 100), st.floats(0, 100.0 * _CPUS), st.booleans()
        ),
        max_size=8,
    ),
    now_s=st.floats(-100, 100),
)
def test_counters_or_clocks_going_back_never_give_a_negative_percent(
    facts: list[RowFacts],
    previous: dict[tuple[int, float], tuple[float, float, float, bool]],
    now_s: float,
) -> None:
    rows, _ = rows_from(facts, previous, now_s, _CPUS)
    assert len(rows) == len(facts)
    for fact, row in zip(facts, rows, strict=True):
        assert row.cpu_percent >= 0.0
        before = previous.get((fact.pid, fact.create_time_s))
        if before is None or now_s < before[1] or fact.cpu_s < before[0]:
            assert row.cpu_percent == pytest.approx(_lifetime(fact))
        assert (row.pid, row.create_time, row.rss, row.uid) == (
            fact.pid,
            fact.create_time_s,
            fact.rss_bytes,
            fact.uid,
        )


def test_the_cpu_percent_of_a_known_process_is_since_the_previous_sample() -> None:
    fact = RowFacts(7, "p", 1, 1000.0, 0, cpu_s=12.0, num_threads=1, uid=0, age_s=100.0)
    rows, current = rows_from([fact], {(7, 1000.0): (10.0, 1.0, 80.0, False)}, 5.0)
    assert rows[0].cpu_percent == pytest.approx(50.0)  # 2 CPU seconds in 4 s
    assert current == {(7, 1000.0): (12.0, 5.0, rows[0].cpu_percent, False)}


def test_describe_on_linux_gives_no_command_line_for_a_row_of_another_start_time() -> None:
    import attrs

    child = subprocess.Popen(["sleep", "31"])
    try:
        wait_until(lambda: read_cmdline("/proc", child.pid) == ("sleep", "31"), what="exec")
        row = next(row for row in ProcessTable(backend="linux").sample() if row.pid == child.pid)
        assert describe(row, backend="linux").cmdline == ("sleep", "31")
        assert ProcessTable(backend="linux").top(10**6, by="memory")  # completes every row
        other = attrs.evolve(row, create_time=row.create_time - 5)  # the PID's predecessor
        assert describe(other, backend="linux").cmdline == ()
    finally:
        child.kill()
        child.wait()
    assert describe(row, backend="linux").cmdline == ()  # gone
