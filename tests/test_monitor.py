"""The Monitor: publishing, subscribers, loops, sources, adaptive sampling, real pressure."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resguard import InvalidState, InvalidType, InvalidValue, ResguardError
from resguard._probes.psi import PsiTrigger, arm_trigger
from resguard.monitor import Monitor, State
from resguard.reclaim import Cost
from resguard.rules import ContainerThreshold, Level, Policy, Threshold
from resguard.snapshot import Sampler, Snapshot
from resguard.testing import ManualClock, Roots

from support import wait_until

MiB = 2**20
GiB = 2**30


class FixedMachine:
    """A /proc fixture whose memory use the test sets; read by a real Sampler."""

    def __init__(self, root: Path, total_gib: float = 16) -> None:
        self.proc = root / "proc"
        (self.proc / "self").mkdir(parents=True)
        (self.proc / "self" / "statm").write_text("1000 500 0 0 0 0 0\n")
        self.total = int(total_gib * GiB)
        self.set_used_percent(10)
        self.sampler = Sampler(Roots(proc=str(self.proc), cgroup=str(root / "no-cgroup")))

    def set_used_percent(self, percent: float) -> None:
        available_kib = int(self.total * (1 - percent / 100)) // 1024
        text = (
            f"MemTotal: {self.total // 1024} kB\nMemFree: {available_kib} kB\n"
            f"MemAvailable: {available_kib} kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
        )
        # in place, as the kernel does: the sampler keeps the file open
        (self.proc / "meminfo").write_text(text)


def two_levels() -> Policy:
    return Policy(
        [
            Threshold(
                "memory.percent", ">", 50, level=Level.WARNING, clear=40, name="memory-warning"
            ),
            Threshold(
                "memory.percent", ">", 80, level=Level.CRITICAL, clear=70, name="memory-critical"
            ),
        ]
    )


def test_sample_now_publishes_whole_states(tmp_path: Path) -> None:
    machine = FixedMachine(tmp_path)
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, reclaim=False)
    first = monitor.state
    assert isinstance(first, State)
    assert first.level == Level.OK
    machine.set_used_percent(60)
    second = monitor.sample_now()
    assert monitor.state is second
    assert second.sequence == first.sequence + 1
    assert second.level == Level.WARNING
    assert second.verdict.breaches[0].rule == "memory-warning"
    assert first.level == Level.OK  # states are values: the old one did not change


def test_subscribers_hear_each_level_change_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    machine = FixedMachine(tmp_path)
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, reclaim=False)
    heard: list[tuple[Level, Level]] = []
    monitor.subscribe(lambda new, old: heard.append((old.level, new.level)))  # type: ignore[union-attr]

    def broken(new: State, old: State | None) -> None:
        raise RuntimeError("subscriber bug")

    unsubscribe_broken = monitor.subscribe(broken)
    caplog.set_level(logging.INFO, logger="resguard")
    for percent in (60, 61, 59, 90, 85, 60, 45, 30, 30):
        machine.set_used_percent(percent)
        monitor.sample_now()
    assert heard == [
        (Level.OK, Level.WARNING),
        (Level.WARNING, Level.CRITICAL),
        (Level.CRITICAL, Level.WARNING),
        (Level.WARNING, Level.OK),
    ]
    # four level changes, each failing the same way: logged once, not on every call
    assert (
        sum(
            "subscriber bug" in record.getMessage() or record.exc_info is not None
            for record in caplog.records
        )
        == 1
    )
    assert len(heard) == 4
    assert any("OK -> WARNING" in record.getMessage() for record in caplog.records)
    unsubscribe_broken()
    unsubscribe_broken()  # twice is harmless


def test_background_thread_samples_and_stops(tmp_path: Path) -> None:
    machine = FixedMachine(tmp_path)
    monitor = Monitor(
        "10ms", policy=two_levels(), sampler=machine.sampler, reclaim=False, psi_trigger=False
    )
    levels: list[Level] = []
    monitor.subscribe(lambda new, old: levels.append(new.level))
    with monitor:
        wait_until(lambda: monitor.ticks >= 5, what="five ticks of the fast thread")
        machine.set_used_percent(90)
        wait_until(lambda: monitor.state.level == Level.CRITICAL, what="the CRITICAL state")
    # stop() joined both threads: nothing is left to tick
    assert not any(t.name.startswith("resguard-monitor") for t in threading.enumerate())
    ticks = monitor.ticks
    assert not monitor.running
    assert monitor.ticks == ticks
    assert levels[-1] == Level.CRITICAL


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_with_runs_as_tasks(tmp_path: Path, backend: str) -> None:
    machine = FixedMachine(tmp_path)
    monitor = Monitor("10ms", policy=two_levels(), sampler=machine.sampler, reclaim=False)

    async def main() -> None:
        async with monitor:
            start = monitor.ticks
            with anyio.fail_after(10):
                while monitor.ticks < start + 5:
                    await anyio.sleep(0.01)
            machine.set_used_percent(60)
            with anyio.fail_after(10):
                while monitor.state.level != Level.WARNING:
                    await anyio.sleep(0.01)

    anyio.run(main, backend=backend)
    assert monitor.state.level == Level.WARNING


class FlakySource:
    name = "flaky"
    fields = ("containers",)

    def __init__(self) -> None:
        self.calls = 0
        self.failing = True

    def sample(self) -> dict[str, Any]:
        self.calls += 1
        if self.failing:
            raise ConnectionError("engine down")
        return {}


def test_a_failing_source_is_logged_once_and_never_stops_sampling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    machine = FixedMachine(tmp_path)
    source = FlakySource()
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, sources=[source], reclaim=False)
    caplog.set_level(logging.WARNING, logger="resguard")
    for _ in range(5):
        monitor.sample_slow()
        monitor.sample_now()
    assert source.calls == 5
    assert monitor.faults == {"flaky": "ConnectionError: engine down"}
    assert sum("flaky is failing" in r.getMessage() for r in caplog.records) == 1
    source.failing = False
    monitor.sample_slow()
    assert monitor.faults == {}
    assert sum("flaky works again" in r.getMessage() for r in caplog.records) == 1


def _paced_monitor(tmp_path: Path, clock: ManualClock, **kwargs: Any) -> tuple[Any, Monitor]:
    machine = FixedMachine(tmp_path)  # 10 % of 16 GiB in use
    monitor = Monitor(
        "100ms",
        policy=two_levels(),  # edges at 40, 50, 70 and 80 %
        sampler=BrokenSampler(machine.sampler, clock),  # type: ignore[arg-type]
        clock=clock,
        reclaim=False,
        min_interval="5ms",
        relaxed_interval="400ms",
        **kwargs,
    )
    return machine, monitor


def test_the_interval_shrinks_as_memory_nears_the_nearest_edge(tmp_path: Path) -> None:
    clock = ManualClock()
    machine, monitor = _paced_monitor(tmp_path, clock)
    intervals = []
    for percent in (5, 15, 25, 35, 38, 39.8):  # towards the clear level at 40 %
        machine.set_used_percent(percent)
        monitor.sample_now()  # back to back: no fill rate measured, the default one
        intervals.append(monitor.next_interval_s())
    assert intervals[0] == 0.4  # far from every edge: relaxed
    assert intervals == sorted(intervals, reverse=True)
    assert len(set(intervals)) == len(intervals)  # strictly: every step nearer is faster
    assert intervals[-1] == 0.005  # 33 MiB from the edge: at min_interval
    fixed = Monitor(
        "100ms", policy=two_levels(), sampler=machine.sampler, reclaim=False, adaptive=False
    )
    assert fixed.next_interval_s() == 0.1


def test_a_threshold_at_half_the_limit_is_not_polled_at_the_relaxed_interval(
    tmp_path: Path,
) -> None:
    # issue 15: calm meant "below relax_below (50 %) of the limit", so a threshold at 50 %
    # was approached at the slowest pace; now relax_below is only an extra edge if given
    clock = ManualClock()
    machine, monitor = _paced_monitor(tmp_path, clock)
    machine.set_used_percent(49.5)
    monitor.sample_now()
    assert monitor.state.level == Level.OK
    assert monitor.next_interval_s() < 0.02


def test_an_edge_no_kernel_threshold_covers_still_paces_the_loop(tmp_path: Path) -> None:
    # issue 15 (R2 4): one armed threshold made every edge "covered"; a threshold use has
    # already passed (it fired early, the gap shrank) wakes nothing at the edge itself
    from resguard.monitor import _decide

    clock = ManualClock()
    machine, monitor = _paced_monitor(tmp_path, clock)
    machine.set_used_percent(49.5)
    monitor.sample_now()
    memory = monitor.state.snapshot.memory
    assert memory.used is not None
    used = memory.used
    edges = monitor._events.edges(monitor.policy, memory)
    half = min(edges, key=lambda edge: abs(edge - used))
    others = tuple(edge for edge in edges if edge != half)

    def wait_s(covered: tuple[int, ...]) -> float:
        options, history = monitor._options, monitor._history
        return _decide.next_interval_s(options, monitor.state, history, edges, covered=covered)

    assert wait_s(tuple(edges)) == 0.4  # the kernel wakes the loop at each: relaxed
    assert wait_s(others) < 0.02  # the near edge at 50 % is paced by its distance
    assert wait_s(()) < 0.02


class CountedEdges(Sequence[int]):
    """Sorted edges that count how many of them were read."""

    def __init__(self, edges: range) -> None:
        self.edges, self.read = edges, 0

    def __len__(self) -> int:
        return len(self.edges)

    def __getitem__(self, index: Any) -> Any:
        found = self.edges[index]
        self.read += len(found) if isinstance(found, range) else 1
        return found


def test_a_million_edges_cost_a_tick_a_few_reads_not_a_million(tmp_path: Path) -> None:
    # R1 C: next_interval_s copied every edge not covered into a list on every tick (a
    # million edges: 40-170 ms a call); the sorted edges are bisected now
    from resguard.monitor import _decide

    clock = ManualClock()
    _, monitor = _paced_monitor(tmp_path, clock)
    monitor.sample_now()
    edges = CountedEdges(range(0, 10**6 * 4096, 4096))
    options, history = monitor._options, monitor._history
    waited_s = _decide.next_interval_s(options, monitor.state, history, edges)
    assert waited_s == 0.005  # an edge every 4 KiB: always near one
    assert edges.read < 1000


def test_relax_below_paces_the_loop_even_where_thresholds_cover_the_edges(
    tmp_path: Path,
) -> None:
    # relax_below's edge is no threshold's: nothing wakes the loop there, covered or not
    from resguard.monitor import _decide

    clock = ManualClock()
    _, monitor = _paced_monitor(tmp_path, clock, relax_below="11%")
    monitor.sample_now()  # at 10 %: 1 % of 16 GiB below the extra edge
    edges = monitor._events.edges(monitor.policy, monitor.state.snapshot.memory)
    options, history = monitor._options, monitor._history
    waited_s = _decide.next_interval_s(options, monitor.state, history, edges, covered=edges)
    assert waited_s < 0.4


def test_relax_below_when_given_is_one_more_edge_to_pace_by(tmp_path: Path) -> None:
    clock = ManualClock()
    _, plain = _paced_monitor(tmp_path / "a", clock)
    _, extra = _paced_monitor(tmp_path / "b", clock, relax_below="11%")
    assert plain.relax_below_percent is None
    for monitor in (plain, extra):
        monitor.sample_now()  # at 10 %: 1 % of 16 GiB below the extra edge
    assert extra.next_interval_s() < plain.next_interval_s()


def test_a_fast_fill_shortens_the_interval_and_a_warning_keeps_it_at_most_interval(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    machine, monitor = _paced_monitor(tmp_path, clock)
    machine.set_used_percent(20)
    monitor.sample_now()
    calm = monitor.next_interval_s()  # 20 % of the limit from the edge at 40 %
    percent = 20.0
    for _ in range(3):  # 1 % of 16 GiB per 10 ms: 16 GiB/s, faster than the default
        percent += 1
        machine.set_used_percent(percent)
        clock.advance(0.01)
        monitor.sample_now()
    assert 0.005 <= monitor.next_interval_s() < calm
    machine.set_used_percent(60)  # WARNING, 10 points from the next edge at 70 %
    for _ in range(3):
        clock.advance(10.0)  # slowly: the fastest fill seen is still the one above
        monitor.sample_now()
    assert monitor.state.level == Level.WARNING
    assert monitor.next_interval_s() <= 0.1


def _armed(monitor: Monitor) -> bool:
    """Whether the running monitor armed a PSI trigger."""
    with monitor:
        return any(line.startswith("PSI") for line in monitor.events_armed)


def test_psi_trigger_is_armed_exactly_where_the_kernel_allows(tmp_path: Path) -> None:
    monitor = Monitor(policy=two_levels(), reclaim=False)
    source = monitor.state.snapshot.pressure.source
    # a snapshot without PSI (the psutil backend) still has the host's file armed
    path = "/proc/pressure/memory" if source in (None, "system") else f"{source}/memory.pressure"
    probe = arm_trigger(path)
    if isinstance(probe, PsiTrigger):
        os.close(probe.fd)
    assert _armed(monitor) == isinstance(probe, PsiTrigger)  # the kernel's answer, not a guess
    assert not _armed(Monitor(policy=two_levels(), reclaim=False, psi_trigger=False))
    machine = FixedMachine(tmp_path)  # no PSI in this tree: nothing to arm, no error
    assert not _armed(Monitor(policy=two_levels(), sampler=machine.sampler, reclaim=False))
    assert not monitor.running


@pytest.mark.linux_backend
@pytest.mark.cgroup
def test_as_root_the_psi_trigger_is_armed_for_a_cgroup_and_for_this_process(
    memory_cgroup: Any,
) -> None:
    monitor = Monitor(policy=two_levels(), cgroup=str(memory_cgroup.path), reclaim=False)
    source = monitor.state.snapshot.pressure.source  # its memory.pressure, or the system's
    if source is None:
        pytest.skip("this kernel has no PSI")
    assert source in (str(memory_cgroup.path), "system")
    assert _armed(monitor)  # root may arm a trigger with any window
    assert _armed(Monitor(policy=two_levels(), reclaim=False))


class Recorder:
    """A reclaimable that records when the ladder asks it."""

    def __init__(self, name: str, cost: float, calls: list[str]) -> None:
        self.name, self.cost, self.calls = name, cost, calls

    def reclaimable_bytes(self) -> int:
        return MiB

    def reclaim(self, target_bytes: int) -> int:
        self.calls.append(self.name)
        return MiB


def test_warning_climbs_the_ladder_cheapest_first(tmp_path: Path) -> None:
    machine = FixedMachine(tmp_path)
    calls: list[str] = []
    model = Recorder("model", Cost.MODEL + 3, calls)
    cache = Recorder("cache", Cost.CACHE, calls)
    monitor = Monitor("10ms", policy=two_levels(), sampler=machine.sampler, psi_trigger=False)
    monitor.reclaimables.register(model)
    monitor.reclaimables.register(cache)
    with monitor:
        machine.set_used_percent(60)
        wait_until(lambda: monitor.last_reclaim is not None, what="a climb of the ladder")
    report = monitor.last_reclaim
    assert report is not None
    names = [step.name for step in report.steps]
    assert names[0] == "gc.collect"
    assert names.index("cache") < names.index("model")
    assert calls[:2] == ["cache", "model"]
    assert report.target_bytes >= monitor.ladder.min_reclaim_bytes


def test_bad_arguments() -> None:
    with pytest.raises(InvalidValue, match="interval"):
        Monitor(interval="0s")
    with pytest.raises(InvalidValue):
        Monitor(interval="fast")
    with pytest.raises(InvalidType):
        Monitor(policy=[Threshold("memory.percent", ">", 50)])  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        Monitor(reclaim_to="80%%")


CHILD = """
import sys
blocks = []
for line in sys.stdin:
    command = line.strip()
    if command == "grow":
        blocks.append(b"x" * (20 * 2**20))
    elif command == "free":
        blocks.clear()
    print("done", flush=True)
"""


@pytest.mark.cgroup
@pytest.mark.slow
def test_real_pressure_in_a_cgroup_goes_warning_critical_ok(memory_cgroup) -> None:  # type: ignore[no-untyped-def]
    memory_cgroup.set_limit(200 * MiB)
    child = memory_cgroup.python(CHILD, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    monitor = Monitor("10ms", policy=two_levels(), cgroup=str(memory_cgroup.path), reclaim=False)
    changes: list[tuple[Level, list[str]]] = []
    monitor.subscribe(
        lambda new, old: changes.append(
            (new.level, [breach.rule for breach in new.verdict.breaches])
        )
    )

    def command(text: str) -> None:
        child.stdin.write(text + "\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"

    def wait_for(level: Level) -> None:
        wait_until(
            lambda: monitor.state.level == level,
            timeout_s=30,
            what=f"{level.name} (now {monitor.state.verdict.reason}, "
            f"{monitor.state.snapshot.memory})",
        )

    def percent_now() -> float:
        percent = monitor.sample_now().snapshot.memory.percent  # fresh, not relaxed
        assert percent is not None, monitor.state.snapshot.faults
        return percent

    try:
        with monitor:
            assert monitor.state.snapshot.memory.limit == 200 * MiB
            assert monitor.state.snapshot.memory.source == "cgroup"
            while percent_now() < 55:
                command("grow")
            wait_for(Level.WARNING)
            while percent_now() < 85:
                command("grow")
            wait_for(Level.CRITICAL)
            command("free")
            wait_for(Level.OK)
    finally:
        child.kill()
        child.wait()
    levels = [level for level, _ in changes]
    assert levels[0] == Level.WARNING
    assert Level.CRITICAL in levels
    assert levels.index(Level.WARNING) < levels.index(Level.CRITICAL)
    assert levels[-1] == Level.OK
    assert "memory-warning" in changes[0][1]
    critical = next(rules for level, rules in changes if level == Level.CRITICAL)
    assert "memory-critical" in critical


# ------------------------------------------------- never stops ticking, logs once per kind ---


class BrokenSampler:
    """A real Sampler whose sample() raises while ``failing`` says so (``every``: on every
    n-th call only), with snapshots stamped by *clock* when one is given."""

    def __init__(self, inner: Sampler, clock: ManualClock | None = None) -> None:
        self.inner, self.clock = inner, clock
        self.failing = False
        self.every = 1
        self.calls = 0

    def sample(self, **kwargs: Any) -> Snapshot:
        self.calls += 1
        if self.failing and self.calls % self.every == 0:
            raise OSError(5, f"Input/output error (call {self.calls})")
        snapshot = self.inner.sample(**kwargs)
        if self.clock is not None:
            snapshot = attrs.evolve(snapshot, monotonic=self.clock())
        return snapshot


def failure_records(caplog: pytest.LogCaptureFixture, word: str) -> int:
    return sum(
        word in record.getMessage() and "is failing" in record.getMessage()
        for record in caplog.records
    )


def test_a_sampler_that_raises_is_logged_once_and_the_monitor_keeps_ticking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    machine = FixedMachine(tmp_path)
    sampler = BrokenSampler(machine.sampler)
    monitor = Monitor(
        policy=two_levels(),
        sampler=sampler,  # type: ignore[arg-type]
        reclaim=False,
    )
    caplog.set_level(logging.WARNING, logger="resguard")
    sampler.failing, sampler.every = True, 2  # intermittent: every other sample fails
    sequences = []
    for _ in range(300):
        sequences.append(monitor.sample_now().sequence)  # never raises
    assert monitor.ticks == 300
    assert failure_records(caplog, "the monitor's sample") == 1  # not 150: once per kind
    assert sequences[-1] == 1 + 150  # every good sample is published
    assert sequences == sorted(sequences)
    sampler.every = 1  # now every sample fails
    assert monitor.sample_now().sequence == sequences[-1]  # the last good state stays
    assert monitor.faults["the monitor's sample"].startswith("OSError")
    assert failure_records(caplog, "the monitor's sample") == 1
    sampler.failing = False
    monitor.sample_now()
    assert monitor.faults == {}
    assert sum("works again" in r.getMessage() for r in caplog.records) == 1


def test_the_background_loop_survives_a_sampler_that_always_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    machine = FixedMachine(tmp_path)
    sampler = BrokenSampler(machine.sampler)
    monitor = Monitor(
        "1ms",
        policy=two_levels(),
        sampler=sampler,  # type: ignore[arg-type]
        reclaim=False,
        psi_trigger=False,
        adaptive=False,
    )
    caplog.set_level(logging.WARNING, logger="resguard")
    with monitor:
        sampler.failing = True
        start = monitor.ticks
        wait_until(lambda: monitor.ticks >= start + 100, what="100 failing ticks")
        assert monitor.running
        sampler.failing = False
        sequence = monitor.state.sequence
        wait_until(lambda: monitor.state.sequence >= sequence + 5, what="5 good states")
    assert failure_records(caplog, "the monitor's sample") == 1
    assert not any(record.exc_info for record in caplog.records)


class RaisingRule:
    """A custom rule with a bug: its step raises on every call."""

    name = "buggy"
    level = Level.CRITICAL

    def new_state(self) -> None:
        return None

    def step(self, snapshot: Snapshot, state: None, now: float) -> None:
        raise KeyError(f"no such thing at {now}")


def test_a_rule_that_raises_never_stops_the_monitor_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    machine = FixedMachine(tmp_path)
    policy = Policy([RaisingRule(), *two_levels().rules])
    monitor = Monitor(policy=policy, sampler=machine.sampler, reclaim=False)
    caplog.set_level(logging.WARNING, logger="resguard")
    machine.set_used_percent(60)
    first = monitor.sample_now().sequence
    for _ in range(200):
        state = monitor.sample_now()
    assert state.sequence == first + 200
    assert state.level == Level.WARNING  # the other rules still judge
    assert state.verdict.unknown[0].startswith("rule 'buggy' failed: KeyError")
    reason = monitor.unknown_reason(now=state.snapshot.monotonic)
    assert reason is not None
    assert reason.startswith("unknown: rule 'buggy' failed")
    assert failure_records(caplog, "buggy") == 1


# ----------------------------------------------------------------------------- staleness ---


def test_the_state_grows_stale_when_no_sample_succeeds(tmp_path: Path) -> None:
    machine = FixedMachine(tmp_path)
    clock = ManualClock()
    sampler = BrokenSampler(machine.sampler, clock)
    monitor = Monitor(
        policy=two_levels(),
        sampler=sampler,  # type: ignore[arg-type]
        reclaim=False,
        stale_after="2s",
        clock=clock,
    )
    assert monitor.stale_after_s == 2.0
    assert monitor.unknown_reason() is None
    assert monitor.state.age_s(clock()) == 0.0
    clock.advance(1.5)
    assert monitor.sample_now().age_s(clock()) == 0.0
    sampler.failing = True
    clock.advance(1.5)
    monitor.sample_now()
    assert monitor.state.age_s(clock()) == 1.5
    assert monitor.unknown_reason() is None  # 1.5 s: not stale yet
    clock.advance(1.7)
    monitor.sample_now()
    assert monitor.unknown_reason() == "stale: last sample 3.2 s ago"
    assert monitor.unknown_reason(now=clock() - 3) is None  # an explicit now wins
    sampler.failing = False
    monitor.sample_now()
    assert monitor.unknown_reason() is None


def test_age_is_measured_on_the_monotonic_clock_by_default(tmp_path: Path) -> None:
    machine = FixedMachine(tmp_path)
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, reclaim=False)
    state = monitor.sample_now()
    assert 0 <= state.age_s() < 5
    assert state.age_s(state.snapshot.monotonic + 7) == 7
    assert state.age_s(state.snapshot.monotonic - 7) == 0  # never negative
    assert monitor.unknown_reason(now=state.snapshot.monotonic + 0.5) is None
    assert monitor.unknown_reason(now=state.snapshot.monotonic + 60) == (
        "stale: last sample 60.0 s ago"
    )


def test_stale_after_defaults_to_five_relaxed_intervals_and_at_least_a_second() -> None:
    assert Monitor(reclaim=False).stale_after_s == 1.0
    assert Monitor(relaxed_interval="1s", reclaim=False).stale_after_s == 5.0
    assert Monitor("2s", adaptive=False, reclaim=False).stale_after_s == 10.0
    with pytest.raises(InvalidValue, match="stale_after"):
        Monitor(stale_after="100ms", reclaim=False)  # shorter than the relaxed interval
    with pytest.raises(InvalidValue, match="stale_after"):
        Monitor(stale_after="soon", reclaim=False)
    with pytest.raises(InvalidType, match="clock"):
        Monitor(clock=5, reclaim=False)  # type: ignore[arg-type]


# ------------------------------------------------------------------ unknown memory (None) ---


def test_unknown_memory_is_reported_and_never_raises(tmp_path: Path) -> None:
    machine = FixedMachine(tmp_path)
    monitor = Monitor(
        "100ms", policy=two_levels(), sampler=machine.sampler, relaxed_interval="400ms"
    )
    for _ in range(5):
        monitor.sample_now()
    assert monitor.next_interval_s() == 0.4
    (machine.proc / "meminfo").write_text("")  # the kernel file is damaged
    for _ in range(5):
        state = monitor.sample_now()
    memory = state.snapshot.memory
    assert memory.percent is None
    assert not state.verdict.known
    assert state.level == Level.OK
    reason = monitor.unknown_reason(now=state.snapshot.monotonic)
    assert reason is not None
    assert reason.startswith("unknown: memory.percent: ")
    assert "meminfo" in reason
    assert monitor.next_interval_s() == 0.1  # blind is not calm
    report = monitor.reclaim_now()  # the goal is unknown: the ladder's minimum
    assert report.target_bytes >= 0
    machine.set_used_percent(10)
    for _ in range(3):
        state = monitor.sample_now()
    assert state.verdict.known


def test_a_firing_level_holds_while_memory_is_unknown(tmp_path: Path) -> None:
    machine = FixedMachine(tmp_path)
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, reclaim=False)
    changes: list[Level] = []
    monitor.subscribe(lambda new, old: changes.append(new.level))
    machine.set_used_percent(90)
    monitor.sample_now()
    (machine.proc / "meminfo").write_text("MemTotal: garbage\n")
    for _ in range(10):
        assert monitor.sample_now().level == Level.CRITICAL  # no flapping to OK
    assert changes == [Level.CRITICAL]


def test_a_failing_source_makes_the_rules_on_its_fields_unknown(tmp_path: Path) -> None:
    machine = FixedMachine(tmp_path)
    source = FlakySource()
    policy = Policy([ContainerThreshold(percent_above=90)])
    monitor = Monitor(policy=policy, sampler=machine.sampler, sources=[source], reclaim=False)
    monitor.sample_slow()
    state = monitor.sample_now()
    assert state.snapshot.containers is None
    assert [fault.field for fault in state.snapshot.faults if fault.source == "flaky"] == [
        "containers"
    ]
    assert state.verdict.unknown == ("containers: flaky unreadable",)
    source.failing = False
    monitor.sample_slow()
    assert monitor.sample_now().verdict.known


# ------------------------------------------------------------------------ bad arguments ---


@pytest.mark.parametrize("name", ["interval", "min_interval", "relaxed_interval", "slow_interval"])
@pytest.mark.parametrize("value", ["1ns", "999us", 0.0001, "0s"])
def test_intervals_below_a_millisecond_are_rejected(name: str, value: object) -> None:
    with pytest.raises(InvalidValue, match=f"{name}.*1ms"):
        Monitor(**{name: value}, reclaim=False)  # type: ignore[arg-type]
    Monitor(**{name: "1ms"}, reclaim=False)  # type: ignore[arg-type]


def test_a_cgroup_that_does_not_exist_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(InvalidValue, match="/nonexistent"):
        Monitor(cgroup="/nonexistent", reclaim=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidValue):
        Monitor(cgroup=str(tmp_path / "file"), reclaim=False)
    with pytest.raises(InvalidValue, match="not a cgroup"):
        Monitor(cgroup=tmp_path, reclaim=False)  # type: ignore[arg-type]  # a directory, but no cgroup
    with pytest.raises(InvalidType):
        Monitor(cgroup=5, reclaim=False)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match="both"):
        Monitor(cgroup="/sys/fs/cgroup", sampler=Sampler(), reclaim=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"policy": False}, InvalidType, "False"),
        ({"policy": "service"}, InvalidType, "'service'"),
        ({"adaptive": "false"}, InvalidType, "'false'"),
        ({"psi_trigger": 1}, InvalidType, "psi_trigger"),
        ({"events": "yes"}, InvalidType, "events"),
        ({"reclaim": None}, InvalidType, "reclaim"),
        ({"sources": "docker"}, InvalidType, "'docker'"),
        ({"sources": [object()]}, InvalidType, "object"),
        ({"sources": 5}, InvalidType, "5"),
        ({"sampler": 5}, InvalidType, "sampler"),
        ({"ladder": "gc"}, InvalidType, "ladder"),
        ({"relax_below": "150%"}, InvalidValue, "relax_below"),
        ({"reclaim_to": None}, InvalidType, "reclaim_to"),
        ({"interval": 10**400}, InvalidValue, "interval"),
        ({"slow_interval": "1e999"}, InvalidValue, "'1e999'"),
    ],
)
def test_every_bad_argument_is_a_resguard_error_naming_it(
    kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error) as info:
        Monitor(**kwargs)
    assert named in str(info.value)
    assert isinstance(info.value, ResguardError)


MONITOR_ARGUMENT = st.one_of(
    st.text(max_size=10),
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**60, max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["50ms", "1ns", "85%", "150%", "1e999", "/nonexistent", "-1"]),
    st.lists(st.integers(), max_size=2),
    st.just(object()),
)


@pytest.mark.parametrize(
    "name",
    [
        "interval",
        "policy",
        "sources",
        "slow_interval",
        "min_interval",
        "relaxed_interval",
        "relax_below",
        "adaptive",
        "psi_trigger",
        "cgroup",
        "sampler",
        "reclaim",
        "reclaim_to",
        "ladder",
        "stale_after",
        "clock",
    ],
)
@settings(max_examples=25)
@given(value=MONITOR_ARGUMENT)
def test_every_monitor_argument_is_accepted_or_rejected_in_the_error_tree(
    name: str, value: object
) -> None:
    kwargs: dict[str, Any] = {"reclaim": False, name: value}
    try:
        monitor = Monitor(**kwargs)
    except (InvalidValue, InvalidType):
        return
    monitor.sample_now()
    assert monitor.interval_s >= 0.001


class GarbageSource:
    """A source whose answer is not snapshot fields."""

    name = "garbage"
    fields: Any = "containers"  # a string where a tuple belongs

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def sample(self) -> Any:
        return self.answer


@pytest.mark.parametrize("answer", [["containers"], {"memory": None}, {"bogus": 1}, None])
def test_a_source_answering_garbage_is_a_failing_source_not_a_dead_monitor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, answer: object
) -> None:
    machine = FixedMachine(tmp_path)
    monitor = Monitor(
        policy=two_levels(), sampler=machine.sampler, sources=[GarbageSource(answer)], reclaim=False
    )
    caplog.set_level(logging.WARNING, logger="resguard")
    first = monitor.sample_now().sequence
    for _ in range(20):
        monitor.sample_slow()
        state = monitor.sample_now()
    assert state.sequence == first + 20
    assert "garbage" in monitor.faults
    assert failure_records(caplog, "garbage") == 1


def test_a_subscriber_with_a_broken_repr_cannot_stop_the_monitor(tmp_path: Path) -> None:
    class Hostile:
        calls = 0

        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

        def __call__(self, new: State, old: State | None) -> None:
            Hostile.calls += 1
            raise ValueError("and no callback either")

    machine = FixedMachine(tmp_path)
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, reclaim=False)
    monitor.subscribe(Hostile())
    for percent in (60, 10, 60, 10):
        machine.set_used_percent(percent)
        monitor.sample_now()
    assert Hostile.calls == 4
    assert any("Hostile at 0x" in name for name in monitor.faults)


class GarbageRule:
    name = "garbage"
    level = Level.WARNING

    def new_state(self) -> None:
        return None

    def step(self, snapshot: Snapshot, state: None, now: float) -> object:
        return "not a breach"


def test_a_rule_answering_garbage_cannot_break_the_monitor_at_construction(tmp_path: Path) -> None:
    machine = FixedMachine(tmp_path)
    garbage = Policy([GarbageRule()])  # type: ignore[list-item]
    monitor = Monitor(policy=garbage, sampler=machine.sampler, reclaim=False)
    assert monitor.state.verdict.unknown[0].startswith("rule 'garbage' failed")
    before = monitor.state.sequence
    assert monitor.sample_now().sequence == before + 1


def _monitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("resguard-monitor")]


def _running(monitor: Monitor) -> bool:
    """``monitor.running`` read again (a plain read would stay narrowed for mypy)."""
    return monitor.running


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_stop_from_a_subscriber_stops_the_monitor_and_it_can_start_again(tmp_path: Path) -> None:
    machine = FixedMachine(tmp_path)
    monitor = Monitor(
        "5ms", policy=two_levels(), sampler=machine.sampler, reclaim=False, psi_trigger=False
    )
    fds = _open_fds()
    unsubscribe = monitor.subscribe(lambda new, old: monitor.stop())
    monitor.start()
    machine.set_used_percent(60)  # WARNING: the subscriber stops the monitor
    wait_until(lambda: not monitor.running, what="the monitor to stop")
    assert monitor.faults == {}  # stop() raised nothing into the loop
    wait_until(lambda: not _monitor_threads(), what="the monitor's threads to end")
    assert _open_fds() <= fds  # the pipe is closed (a collected sampler may close more)
    unsubscribe()
    monitor.start()  # a real restart, not a no-op on stale bookkeeping
    try:
        assert monitor.running
        ticks = monitor.ticks
        wait_until(lambda: monitor.ticks > ticks + 3, what="ticks after the restart")
    finally:
        monitor.stop()
    assert not _running(monitor)
    assert not _monitor_threads()


def test_start_stop_start_runs_one_fast_loop_even_after_a_stop_that_gave_up_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resguard.monitor as monitor_module

    monkeypatch.setattr(monitor_module, "JOIN_TIMEOUT_S", 0.05, raising=False)
    machine = FixedMachine(tmp_path)
    monitor = Monitor(
        "5ms", policy=two_levels(), sampler=machine.sampler, reclaim=False, psi_trigger=False
    )
    fds = _open_fds()
    release = threading.Event()
    unsubscribe = monitor.subscribe(lambda new, old: release.wait(30))  # a subscriber blocks
    monitor.start()
    machine.set_used_percent(60)
    wait_until(lambda: monitor.state.level == Level.WARNING, what="WARNING")
    monitor.stop()  # gives up waiting for the blocked loop
    assert not monitor.running
    unsubscribe()
    monitor.start()
    try:
        release.set()  # the old loop ends now; it must not tick on beside the new one
        wait_until(lambda: len(_monitor_threads()) == 2, what="the old loop to end")
        ticks = monitor.ticks
        time.sleep(0.2)
        assert monitor.ticks - ticks < 0.2 / 0.005 * 1.5  # one loop at 5 ms, not two
    finally:
        monitor.stop()
    wait_until(lambda: not _monitor_threads(), what="the monitor's threads to end")
    assert _open_fds() <= fds  # nothing left open (a collected sampler may close more)


def test_a_monitor_survives_a_fork_the_child_can_start_it_and_sample(tmp_path: Path) -> None:
    from forking import held_by_another_thread, in_child

    machine = FixedMachine(tmp_path)
    monitor = Monitor(
        "5ms", policy=two_levels(), sampler=machine.sampler, reclaim=False, psi_trigger=False
    )

    def child() -> None:
        assert not monitor.running  # its threads stayed in the parent
        monitor.sample_now()  # the tick lock the parent's loop held is not held here
        monitor.start()
        ticks = monitor.ticks
        wait_until(lambda: monitor.ticks > ticks + 2, timeout_s=5, what="ticks in the child")
        monitor.stop()

    with monitor:
        with held_by_another_thread(monitor._tick_lock):  # mid-tick at the fork
            status = in_child(child, timeout_s=10)
    assert status == 0


class HangingSource:
    """A source whose sample() hangs (a Docker engine that accepts and never answers)."""

    name = "hanging"
    fields = ("containers",)

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def sample(self) -> dict[str, Any]:
        self.entered.set()
        self.release.wait(60)
        return {}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_leaving_async_with_does_not_wait_for_a_hanging_source(
    tmp_path: Path, backend: str
) -> None:
    machine = FixedMachine(tmp_path)
    source = HangingSource()
    monitor = Monitor(
        "10ms",
        policy=two_levels(),
        sampler=machine.sampler,
        reclaim=False,
        sources=[source],
        psi_trigger=False,
    )

    async def main() -> float:
        async with monitor:
            with anyio.fail_after(10):
                while not source.entered.is_set():
                    await anyio.sleep(0.01)
            left = time.monotonic()
        return time.monotonic() - left

    try:
        assert anyio.run(main, backend=backend) < 2.0
    finally:
        source.release.set()


def test_start_does_not_hang_on_a_hanging_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resguard.monitor as monitor_module

    monkeypatch.setattr(monitor_module, "JOIN_TIMEOUT_S", 0.1, raising=False)
    machine = FixedMachine(tmp_path)
    source = HangingSource()
    monitor = Monitor(
        "10ms",
        policy=two_levels(),
        sampler=machine.sampler,
        reclaim=False,
        sources=[source],
        psi_trigger=False,
    )
    started = time.monotonic()
    try:
        with monitor:
            assert time.monotonic() - started < 5
            assert source.entered.is_set()
            ticks = monitor.ticks
            wait_until(
                lambda: monitor.ticks > ticks + 2, what="fast ticks"
            )  # the fast loop judges meanwhile
    finally:
        source.release.set()
    wait_until(lambda: not _monitor_threads(), what="the monitor's threads to end")


class CountingStep:
    name, cost = "counting", Cost.CACHE

    def __init__(self) -> None:
        self.calls = 0

    def reclaimable_bytes(self) -> int:
        return 0

    def reclaim(self, target_bytes: int) -> int:
        self.calls += 1
        return 0


def _more_ticks(monitor: Monitor, count: int) -> Callable[[], bool]:
    """Whether *count* more fast ticks came than now."""
    start = monitor.ticks
    return lambda: monitor.ticks > start + count


def _more_calls(step: CountingStep, calls: int) -> Callable[[], bool]:
    return lambda: step.calls > calls


@pytest.mark.parametrize("mode", ["threads", "asyncio", "trio"])
def test_a_lasting_warning_climbs_the_ladder_at_the_slow_pace_not_every_tick(
    tmp_path: Path, mode: str
) -> None:
    from resguard.reclaim import Ladder

    machine = FixedMachine(tmp_path)
    step = CountingStep()
    clock = ManualClock()  # the pace is read on the monitor's clock
    monitor = Monitor(
        "5ms",
        policy=two_levels(),
        sampler=machine.sampler,
        adaptive=False,
        psi_trigger=False,
        slow_interval="50ms",
        ladder=Ladder(lambda: 0, extra=[step]),
        clock=clock,
    )
    machine.set_used_percent(60)  # WARNING for the whole run

    def watch() -> None:
        wait_until(lambda: step.calls >= 1, what="the first climb")  # it comes at once
        for climbs in (1, 2, 3):
            wait_until(_more_ticks(monitor, 30), what="30 fast ticks at WARNING")
            assert step.calls == climbs  # every tick asked for a climb: the pace said no
            clock.advance(0.05)  # one slow interval later: the next climb is due
            wait_until(_more_calls(step, climbs), what="the climb a slow interval later")

    if mode == "threads":
        with monitor:
            watch()
    else:

        async def main() -> None:
            async with monitor:
                await anyio.to_thread.run_sync(watch)

        anyio.run(main, backend=mode)


@pytest.mark.parametrize(
    ("now", "error"),
    [
        ("soon", InvalidType),
        ([], InvalidType),
        (True, InvalidType),
        (b"1", InvalidType),
        (float("nan"), InvalidValue),
        (float("inf"), InvalidValue),
        (10**400, InvalidValue),
        (-(10**400), InvalidValue),
    ],
)
def test_unknown_reason_and_age_of_a_bad_now_are_resguard_errors(
    tmp_path: Path, now: object, error: type[Exception]
) -> None:
    monitor = Monitor(sampler=FixedMachine(tmp_path).sampler, reclaim=False, psi_trigger=False)
    with pytest.raises(error, match="now="):
        monitor.unknown_reason(now)  # type: ignore[arg-type]
    with pytest.raises(error, match="now="):
        monitor.state.age_s(now)  # type: ignore[arg-type]
    assert monitor.unknown_reason(monitor.state.snapshot.monotonic) is None
    assert monitor.state.age_s(monitor.state.snapshot.monotonic + 2) == 2


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_threads_and_tasks_never_run_one_monitor_twice(tmp_path: Path, backend: str) -> None:
    machine = FixedMachine(tmp_path)
    monitor = Monitor(
        "10ms", policy=two_levels(), sampler=machine.sampler, reclaim=False, psi_trigger=False
    )

    async def main() -> None:
        async with monitor:
            monitor.start()  # running as tasks already: nothing more starts
            assert not _monitor_threads()
            with pytest.raises(InvalidState):
                async with monitor:
                    pass
            assert monitor.running
        assert not monitor.running

    anyio.run(main, backend=backend)
    with monitor:
        with pytest.raises(InvalidState):
            anyio.run(monitor.__aenter__, backend=backend)
    assert not monitor.running


@pytest.mark.parametrize(
    "answer",
    [
        {"containers": "x"},
        {"containers": ()},
        {"processes": "x"},
        {"processes": ("x",)},
        {"processes": [1]},
        {"ollama": {"a": 1}},
        {"ollama": (None,)},
    ],
)
def test_a_source_answering_garbage_values_cannot_break_rules_or_scrapes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, answer: object
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from resguard.prometheus import ResguardCollector

    machine = FixedMachine(tmp_path)
    source = GarbageSource(answer)
    source.fields = tuple(answer)  # type: ignore[arg-type]
    policy = Policy([*two_levels().rules, ContainerThreshold(percent_above=50)])
    monitor = Monitor(
        policy=policy, sampler=machine.sampler, sources=[source], reclaim=False, psi_trigger=False
    )
    caplog.set_level(logging.WARNING, logger="resguard")
    for _ in range(5):
        monitor.sample_slow()
        state = monitor.sample_now()
    assert "garbage" in monitor.faults
    assert not [u for u in state.verdict.unknown if "failed" in u]  # no rule broke on it
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ResguardCollector(monitor=monitor))
    assert b"resguard_memory_used_bytes" in generate_latest(registry)
    assert failure_records(caplog, "garbage") == 1


# ------------------------------------------------------------ the decisions, directly ---


def test_the_slow_schedule_climbs_at_once_then_at_the_slow_pace() -> None:
    from resguard.monitor._decide import SlowSchedule

    schedule = SlowSchedule(slow_interval_s=2.0)
    first = schedule.due(100.0, Level.OK)
    assert (first.climb, first.sample) == (False, True)  # a fresh start samples first
    schedule.sampled(100.0)
    assert schedule.wait_s(100.0) == 2.0
    assert schedule.want_climb()  # news: wake the slow loop
    assert not schedule.want_climb()  # the next tick's want is not
    assert schedule.wait_s(100.5) == 0.0
    assert schedule.due(100.5, Level.WARNING).climb
    assert schedule.want_climb()
    assert schedule.wait_s(101.0) == 1.0  # the sample (102) comes before the paced climb
    assert not schedule.due(101.0, Level.WARNING)
    work = schedule.due(102.0, Level.WARNING)
    assert (work.climb, work.sample) == (False, True)
    schedule.sampled(102.0)
    assert schedule.wait_s(102.0) == 0.5  # wanted, but paced until 102.5
    assert schedule.due(102.5, Level.WARNING).climb
    assert schedule.want_climb()
    assert not schedule.due(104.5, Level.OK).climb  # the warning ended meanwhile
    assert schedule.wait_s(104.5) == 0.0  # the sample is overdue
    schedule.restart()
    assert schedule.due(104.5, Level.OK).sample


def test_failures_are_news_once_per_kind_and_again_only_after_a_minute() -> None:
    from resguard.monitor._decide import RELOG_AFTER_S, FailureMemo

    memo = FailureMemo()
    assert memo.failed("docker", ConnectionError("down"), 0.0)
    assert not memo.failed("docker", ConnectionError("still down"), 1.0)
    assert memo.errors == {"docker": "ConnectionError: still down"}
    assert memo.failed("docker", TimeoutError("hung"), 2.0)  # another kind
    assert memo.worked("docker")
    assert not memo.worked("docker")
    assert memo.errors == {}
    assert not memo.failed("docker", TimeoutError("hung"), 3.0)  # flapping: not again yet
    memo.worked("docker")
    assert memo.failed("docker", TimeoutError("hung"), 2.0 + RELOG_AFTER_S)


def test_unknown_reason_is_a_function_of_the_state_and_now(tmp_path: Path) -> None:
    from resguard.monitor._decide import unknown_reason

    state = Monitor(policy=two_levels(), sampler=FixedMachine(tmp_path).sampler).state
    at = state.snapshot.monotonic
    assert unknown_reason(state, at + 1.0, stale_after_s=2.0) is None
    assert unknown_reason(state, at + 2.5, stale_after_s=2.0) == "stale: last sample 2.5 s ago"


# ---------------------------------------------------- resguard.testing.StaticMonitor ---


def test_a_static_monitor_lets_a_guard_refuse_at_97_percent_and_admit_at_40() -> None:
    from resguard import Guard, ResourceExhausted
    from resguard.testing import StaticMonitor, make_snapshot

    monitor = StaticMonitor(memory_percent=40)
    guard = Guard(memory="90%", monitor=monitor)
    assert monitor.state.level == Level.OK
    assert monitor.unknown_reason() is None
    assert guard.would_admit()
    with guard:
        pass
    state = monitor.set(memory_percent=97)
    assert state is monitor.state
    assert state.level == Level.CRITICAL  # the service preset's own verdict
    assert "memory" in state.verdict.reason
    assert not guard.would_admit()
    with pytest.raises(ResourceExhausted):
        with guard:
            pass
    monitor.set(make_snapshot(memory_percent=40))
    assert guard.would_admit()
    assert not monitor.running
    with monitor:  # nothing runs in the background
        assert not _monitor_threads()


def test_a_static_monitor_tells_subscribers_and_judges_with_the_given_policy() -> None:
    from resguard.testing import StaticMonitor

    monitor = StaticMonitor(memory_percent=10, policy=two_levels())
    heard: list[tuple[Level, Level]] = []
    monitor.subscribe(
        lambda new, old: heard.append((Level.OK if old is None else old.level, new.level))
    )
    monitor.set(memory_percent=60)
    monitor.set(memory_percent=61)
    monitor.set(memory_percent=85)
    assert heard == [(Level.OK, Level.WARNING), (Level.WARNING, Level.CRITICAL)]
    assert monitor.state.verdict.breaches[-1].rule == "memory-critical"


def test_a_scripted_monitor_steps_along_a_manual_clock() -> None:
    from resguard.testing import StaticMonitor, make_snapshot

    clock = ManualClock()
    monitor = StaticMonitor(
        script=[(0, make_snapshot(memory_percent=40)), (10, make_snapshot(memory_percent=97))],
        clock=clock,
    )
    assert monitor.state.snapshot.memory.percent == 40
    clock.advance(9.5)
    state = monitor.state
    assert state.level == Level.OK
    assert state.snapshot.monotonic == clock()
    assert monitor.unknown_reason() is None  # live: judged again at the new time
    clock.advance(0.5)
    state = monitor.state
    assert state.snapshot.memory.percent == 97
    assert state.level == Level.CRITICAL
    assert state.snapshot.monotonic == clock()


def test_a_scripted_monitor_fires_a_sustained_rule_only_once_it_has_held() -> None:
    from resguard.testing import StaticMonitor, make_snapshot

    clock = ManualClock()
    policy = Policy([Threshold("memory.percent", ">", 90, for_="10s", level=Level.WARNING)])
    monitor = StaticMonitor(
        script=[(0, make_snapshot(memory_percent=40)), (30, make_snapshot(memory_percent=97))],
        clock=clock,
        policy=policy,
    )
    levels = []
    for step_s in (30, 9, 1.5):  # full at 30 s; held 9 s, then 10.5 s
        clock.advance(step_s)
        levels.append(monitor.state.level)
    assert levels == [Level.OK, Level.OK, Level.WARNING]


def test_a_static_monitor_that_is_not_live_grows_stale() -> None:
    from resguard import Guard, ResourceExhausted
    from resguard.testing import StaticMonitor

    clock = ManualClock()
    monitor = StaticMonitor(memory_percent=40, clock=clock, live=False, stale_after="2s")
    guard = Guard(memory="90%", monitor=monitor, on_unknown="refuse")
    assert guard.would_admit()
    clock.advance(3)
    assert monitor.unknown_reason() == "stale: last sample 3.0 s ago"
    with pytest.raises(ResourceExhausted) as info:
        with guard:
            pass
    assert info.value.reason == "unknown"
    monitor.set(memory_percent=40)
    assert monitor.unknown_reason() is None


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"snapshot": "97%"}, InvalidType, "snapshot="),
        ({"live": "yes"}, InvalidType, "live="),
        ({"script": "soon"}, InvalidType, "script="),
        ({"script": [(1,)]}, InvalidType, "(1,)"),
        ({"script": [(-1, None)]}, InvalidValue, "-1"),
        ({"script": [(5, None), (1, None)]}, InvalidValue, "time order"),
        ({"memory_percent": 50, "snapshot": None, "bogus": 1}, TypeError, "bogus"),
    ],
)
def test_a_static_monitor_names_a_bad_argument(
    kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    from resguard.testing import StaticMonitor, make_snapshot

    script = kwargs.get("script")
    if isinstance(script, list):
        kwargs["script"] = [
            (step[0], make_snapshot()) if len(step) == 2 else step for step in script
        ]
    with pytest.raises(error, match=named.replace("(", r"\(").replace(")", r"\)")):
        StaticMonitor(**kwargs)


@pytest.mark.parametrize("backend", ["linux", "psutil"])
def test_the_monitor_s_process_table_follows_its_sampler_s_backend(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Monitor(sampler=Sampler(backend='psutil')) still listed processes through the linux
    readers (the process default): one Monitor measured two ways."""
    import resguard._probes.backend
    from resguard.rules import ProcessCount

    other = "linux" if backend == "psutil" else "psutil"
    monkeypatch.setattr(resguard._probes.backend, "_chosen", other)  # the default differs
    policy = Policy([ProcessCount(rss_above="1TiB", at_least=1)])
    monitor = Monitor(policy=policy, sampler=Sampler(backend=backend), reclaim=False)
    table = monitor._builtin.process_table
    assert table is not None
    assert table.backend == backend
    assert table.sample()  # it lists this machine's processes
