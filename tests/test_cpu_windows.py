"""Honest CPU: a one-shot measures over a real window (``--window``), a sampler's first
sample says CPU is unknown, and later ones cover the time since the sampler's previous
sample, never since boot."""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forking import in_child
from resguard._probes.procfs import TICKS_PER_S
from resguard.cli import main
from resguard.cli._args import (
    DEFAULT_WINDOW_S,
    Parser,
    add_window_argument,
    over_window,
    window_seconds,
)
from resguard.snapshot import ProcessInfo, Sampler
from resguard.snapshot._cpu import CpuCounters
from resguard.testing import KernelTree, ManualClock, make_process

from support import run_python


class FakeTime:
    """A monotonic clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


def test_over_window_reads_twice_with_the_window_between() -> None:
    fake = FakeTime()
    readings: list[float] = []

    def read() -> float:
        readings.append(fake.now_s)
        return fake.now_s

    last = over_window(1.0, read, clock=fake.clock, sleep=fake.sleep)
    assert readings == [100.0, 101.0]
    assert last == 101.0
    assert all(0 < step <= 0.25 for step in fake.sleeps)  # in slices: a Ctrl-C lands soon


def test_over_window_never_measures_below_the_shortest_cpu_window() -> None:
    from resguard._probes.procfs import CPU_WINDOW_MIN_S

    fake = FakeTime()
    readings: list[float] = []
    over_window(0.001, lambda: readings.append(fake.now_s), clock=fake.clock, sleep=fake.sleep)
    assert readings[1] - readings[0] == pytest.approx(CPU_WINDOW_MIN_S)


def test_over_window_a_sleep_cut_short_does_not_end_the_wait_early() -> None:
    fake = FakeTime()
    readings: list[float] = []

    def short_sleep(seconds: float) -> None:  # a signal woke it: only a tenth passed
        fake.now_s += max(seconds / 10, 0.01)

    over_window(1.0, lambda: readings.append(fake.now_s), clock=fake.clock, sleep=short_sleep)
    assert readings[1] - readings[0] >= 1.0


def test_over_window_ctrl_c_during_the_wait_propagates_before_the_second_read() -> None:
    reads: list[int] = []

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        over_window(1.0, lambda: reads.append(1), sleep=interrupted)
    assert reads == [1]


def parsed_window(*argv: str) -> float:
    parser = Parser(prog="resguard snapshot")
    add_window_argument(parser)
    window: float = parser.parse_args(list(argv)).window
    return window


def test_window_defaults_to_one_second() -> None:
    assert DEFAULT_WINDOW_S == 1.0
    assert parsed_window() == 1.0


@pytest.mark.parametrize(("text", "seconds"), [("1", 1.0), ("2s", 2.0), ("500ms", 0.5)])
def test_window_takes_the_cli_duration_syntax(text: str, seconds: float) -> None:
    assert parsed_window("--window", text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-1", "soon", "2h"])
def test_a_window_that_is_no_window_is_refused_quoting_it(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text).replace("'", ".")):
        window_seconds(text)


def test_a_bad_window_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parsed_window("--window", "0")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "'0'" in err
    assert "above 0" in err


# --------------------------------------------- a sampler's first and later samples ---

HOST_STAT = "cpu  {user} 0 {system} {idle} 0 0 0 0 0 0\nbtime 1700000000\n"


def write_host(tree: KernelTree, *, user: int, system: int, idle: int) -> None:
    Path(tree.path("stat")).write_text(HOST_STAT.format(user=user, system=system, idle=idle))


def write_self(tree: KernelTree, ticks: int) -> None:
    """This process's stat in the tree with *ticks* of user time (and no system time)."""
    text = Path(tree.path("self/stat")).read_text()
    head, _, tail = text.rpartition(") ")
    fields = tail.split()
    fields[11], fields[12] = str(ticks), "0"  # utime, stime: fields 14 and 15 of proc(5)
    Path(tree.path("self/stat")).write_text(f"{head}) {' '.join(fields)}\n")


def test_linux_first_sample_is_unknown_and_later_ones_cover_the_time_since_the_last(
    tmp_path: Path,
) -> None:
    """The first sample reported the host's average since boot (42.6 % five runs in a row
    while htop said 100 %) and this process's average since it started."""
    tree = KernelTree(tmp_path)
    write_host(tree, user=50_000, system=10_000, idle=900_000)  # 6 % since boot
    write_self(tree, 10_000)  # 100 s of CPU over its life
    clock = ManualClock(100.0)
    sampler = Sampler(tree.roots, clock=clock)
    cpus = os.cpu_count() or 1

    first = sampler.sample(children=False)
    assert (first.cpu.percent, first.process.cpu_percent) == (None, None)
    assert first.faults == ()  # unknown is not damage

    write_host(tree, user=50_000 + 80 * cpus, system=10_000, idle=900_000 + 20 * cpus)
    write_self(tree, 10_000 + TICKS_PER_S // 2)
    clock.advance(1.0)
    second = sampler.sample(children=False)
    assert second.cpu.percent == pytest.approx(80.0)  # the window's, not boot's 6 %
    assert second.process.cpu_percent == pytest.approx(50.0)

    write_host(tree, user=50_000 + 90 * cpus, system=10_000, idle=900_000 + 110 * cpus)
    write_self(tree, 10_000 + TICKS_PER_S // 2 + TICKS_PER_S)
    clock.advance(2.0)
    third = sampler.sample(children=False)
    assert third.cpu.percent == pytest.approx(10.0)  # since the second sample only
    assert third.process.cpu_percent == pytest.approx(50.0)


def test_linux_a_window_too_short_keeps_the_previous_share(tmp_path: Path) -> None:
    tree = KernelTree(tmp_path)
    cpus = os.cpu_count() or 1
    write_host(tree, user=1000, system=0, idle=1000)
    write_self(tree, 0)
    clock = ManualClock(100.0)
    sampler = Sampler(tree.roots, clock=clock)
    sampler.sample(children=False)
    clock.advance(0.01)
    write_host(tree, user=1001, system=0, idle=1000)
    write_self(tree, 1)  # one tick in 10 ms: 100 % of a core, were it measured
    short = sampler.sample(children=False)
    assert (short.cpu.percent, short.process.cpu_percent) == (None, None)  # nothing known yet
    clock.advance(1.0)
    write_host(tree, user=1000 + 50 * cpus, system=0, idle=1000 + 50 * cpus)
    write_self(tree, TICKS_PER_S // 4)
    measured = sampler.sample(children=False)
    assert measured.cpu.percent == pytest.approx(50.0)
    assert measured.process.cpu_percent == pytest.approx(25.0 / 1.01)  # from the baseline
    clock.advance(0.01)
    again = sampler.sample(children=False)
    assert again.cpu.percent == measured.cpu.percent
    assert again.process.cpu_percent == measured.process.cpu_percent


def test_linux_after_a_fork_the_child_s_first_sample_is_unknown_again(tmp_path: Path) -> None:
    tree = KernelTree(tmp_path)
    write_host(tree, user=1000, system=0, idle=1000)
    clock = ManualClock(100.0)
    sampler = Sampler(tree.roots, clock=clock)
    sampler.sample(children=False)
    clock.advance(1.0)
    write_host(tree, user=1000 + 400, system=0, idle=1000 + 400)
    assert sampler.sample(children=False).cpu.percent == pytest.approx(50.0)

    def child() -> None:
        clock.advance(1.0)
        write_host(tree, user=2000, system=0, idle=2000)
        snap = sampler.sample(children=False)
        # the parent's baseline means nothing here: the child's first sample is a baseline
        assert (snap.cpu.percent, snap.process.cpu_percent) == (None, None)

    assert in_child(child) == 0


class Times(NamedTuple):
    user: float
    system: float
    idle: float


class OwnTimes(NamedTuple):
    user: float
    system: float
    children_user: float
    children_system: float


def test_psutil_counters_first_reading_is_unknown_and_later_ones_cover_the_time_since() -> None:
    """The psutil backend's path: its answers made into counters as the sampler makes them
    (busy and total seconds of all CPUs; user + system seconds of this process), judged by
    CpuCounters in seconds (``ticks_per_s=1.0``)."""
    from resguard.snapshot._portable import _busy_total, _cpu_seconds

    cpus = 4
    counters = CpuCounters(ticks_per_s=1.0, cpu_count=cpus)
    faults: list[Any] = []

    def read(host: Times, own: OwnTimes, now_s: float) -> tuple[float | None, float | None]:
        busy_total = _busy_total(host)
        cpu_s = _cpu_seconds(own, faults)
        assert busy_total is not None
        assert cpu_s is not None
        return counters.host_percent(busy_total), counters.process_percent(cpu_s, now_s)

    assert read(Times(5000.0, 1000.0, 90_000.0), OwnTimes(100.0, 0.0, 0.0, 0.0), 100.0) == (
        None,
        None,
    )
    second = read(
        Times(5000.0 + 0.8 * cpus, 1000.0, 90_000.0 + 0.2 * cpus),
        OwnTimes(100.5, 0.0, 0.0, 0.0),
        101.0,
    )
    assert second == pytest.approx((80.0, 50.0))
    third = read(
        Times(5000.0 + 1.0 * cpus, 1000.0, 90_000.0 + 2.0 * cpus),
        OwnTimes(101.5, 0.5, 0.0, 0.0),
        103.0,
    )
    assert third == pytest.approx((100 * 0.2 / 2.0, 75.0))
    assert faults == []


def test_psutil_sampler_s_first_sample_is_unknown_and_so_is_a_forked_child_s() -> None:
    clock = ManualClock(100.0)
    sampler = Sampler(backend="psutil", clock=clock)
    first = sampler.sample(children=False)
    assert (first.cpu.percent, first.process.cpu_percent) == (None, None)
    assert first.faults == ()
    clock.advance(1.0)
    second = sampler.sample(children=False)
    assert second.process.cpu_percent is not None  # a second of the clock is a window

    def child() -> None:
        clock.advance(1.0)
        snap = sampler.sample(children=False)
        assert (snap.cpu.percent, snap.process.cpu_percent) == (None, None)

    assert in_child(child) == 0


# ------------------------------------------------------- the one-shots on the CLI ---


def run_cli(*args: str) -> str:
    out = io.StringIO()
    assert main(list(args), out) == 0
    return out.getvalue()


def test_top_hides_kernel_threads_unless_all() -> None:
    from resguard.processes import is_kernel_thread

    def kernel_threads(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [row for row in rows if is_kernel_thread(ProcessInfo(**row_fields(row)))]

    everything = json.loads(run_cli("top", "--json", "--all", "--by", "memory", "-n", "100000"))
    programs = json.loads(run_cli("top", "--json", "--by", "memory", "-n", "100000"))
    assert kernel_threads(programs) == []
    if any(row["pid"] == 2 and row["name"] == "kthreadd" for row in everything):
        assert kernel_threads(everything)  # kworkers, ksoftirqd: --all shows them
    else:
        pytest.skip("no kernel threads visible here (not Linux, or a PID namespace)")


def row_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "cmdline": tuple(row["cmdline"])}


def test_top_still_takes_the_old_interval_as_a_window() -> None:
    rows = json.loads(run_cli("top", "--json", "-n", "1", "--interval", "0"))
    assert len(rows) == 1  # 0 no longer means each process's lifetime average: 0.25 s


def test_snapshot_shows_the_busiest_processes_over_its_window() -> None:
    text = run_cli("snapshot", "--window", "300ms")
    lines = text.splitlines()
    title = next(index for index, line in enumerate(lines) if line.startswith("busiest"))
    assert lines[title] == "busiest over 0.3s (CPU% of one core, as top counts)"
    assert lines[title + 1].split() == ["PID", "CPU%", "RSS", "NAME"]
    rows = lines[title + 2 : -1]
    assert 1 <= len(rows) <= 5
    assert str(os.getpid()) in {row.split()[0] for row in rows} or len(rows) == 5
    data = json.loads(run_cli("snapshot", "--json", "--window", "0.3"))
    assert data["window_s"] == 0.3
    assert 1 <= len(data["top_processes"]) <= 5
    # the same row as top --json's (R3 14: one JSON shape for a process row)
    assert set(data["top_processes"][0]) == set(make_process(1, "x").to_dict())
    shares = [row["cpu_percent"] for row in data["top_processes"]]
    assert shares == sorted(shares, reverse=True)
    assert data["cpu"]["percent"] is not None  # measured over the window, never unknown here


def test_resguard_snapshot_follows_its_default_sampler() -> None:
    """``resguard.snapshot()``: unknown at first in a fresh interpreter, then since the
    previous call."""
    code = (
        "import json, time, resguard\n"
        "first = resguard.snapshot(children=False)\n"
        "end = time.monotonic() + 0.6\n"
        "while time.monotonic() < end: pass\n"  # a busy wait: the window holds real work
        "second = resguard.snapshot(children=False)\n"
        "print(json.dumps([first.cpu.percent, first.process.cpu_percent,"
        " second.cpu.percent, second.process.cpu_percent]))\n"
    )
    first_host, first_own, host, own = json.loads(run_python(code))
    assert (first_host, first_own) == (None, None)
    assert host > 0  # the busy wait kept a core busy (the neighbours may share it)
    assert own > 0


@given(
    st.lists(st.tuples(st.integers(-50, 10**5), st.integers(-50, 10**5)), min_size=1, max_size=30),
    st.integers(1, 64),
)
def test_host_shares_are_unknown_first_and_after_counters_go_back_else_0_to_100(
    steps: list[tuple[int, int]], cpu_count: int
) -> None:
    counters = CpuCounters(cpu_count=cpu_count)
    busy, idle = 10**6, 10**6
    seen: list[tuple[int, int]] = []  # the baseline is one of them
    for more_busy, more_idle in steps:
        busy, idle = max(busy + more_busy, 0), max(idle + more_idle, 0)
        percent = counters.host_percent((busy, busy + idle))
        below_all = all(busy < old[0] or busy + idle < old[1] for old in seen)
        if below_all:  # the first reading, or counters back below any baseline: unknown
            assert percent is None
        assert percent is None or 0.0 <= percent <= 100.0
        seen.append((busy, busy + idle))
