"""The Monitor: publishing, subscribers, loops, sources, adaptive sampling, real pressure."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from resguard import InvalidValue
from resguard._probes.paths import Roots
from resguard.monitor import Monitor, State
from resguard.reclaim import Cost, register, unregister
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import Sampler

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
        text = (f"MemTotal: {self.total // 1024} kB\nMemFree: {available_kib} kB\n"
                f"MemAvailable: {available_kib} kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n")
        # in place, as the kernel does: the sampler keeps the file open
        (self.proc / "meminfo").write_text(text)


def two_levels() -> Policy:
    return Policy([
        Threshold("memory.percent", ">", 50, level=Level.WARNING, clear=40, name="memory-warning"),
        Threshold("memory.percent", ">", 80, level=Level.CRITICAL, clear=70,
                  name="memory-critical"),
    ])


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


def test_subscribers_hear_each_level_change_once(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
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
    assert heard == [(Level.OK, Level.WARNING), (Level.WARNING, Level.CRITICAL),
                     (Level.CRITICAL, Level.WARNING), (Level.WARNING, Level.OK)]
    assert sum("subscriber bug" in record.getMessage() or record.exc_info is not None
               for record in caplog.records) == 4
    assert any("OK -> WARNING" in record.getMessage() for record in caplog.records)
    unsubscribe_broken()
    unsubscribe_broken()  # twice is harmless


def test_background_thread_samples_and_stops(tmp_path: Path) -> None:
    machine = FixedMachine(tmp_path)
    monitor = Monitor("10ms", policy=two_levels(), sampler=machine.sampler, reclaim=False,
                      psi_trigger=False)
    levels: list[Level] = []
    monitor.subscribe(lambda new, old: levels.append(new.level))
    with monitor:
        deadline = time.monotonic() + 10
        while monitor.ticks < 5:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        machine.set_used_percent(90)
        while monitor.state.level != Level.CRITICAL:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert not any(t.name.startswith("resguard-monitor") for t in threading.enumerate())
    ticks = monitor.ticks
    time.sleep(0.05)
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
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    machine = FixedMachine(tmp_path)
    source = FlakySource()
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, sources=[source],
                      reclaim=False)
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


def test_adaptive_interval_follows_headroom_and_fill_rate(tmp_path: Path) -> None:
    machine = FixedMachine(tmp_path)  # 10 % in use
    monitor = Monitor("100ms", policy=two_levels(), sampler=machine.sampler, reclaim=False,
                      min_interval="5ms", relaxed_interval="400ms", relax_below="30%")
    for _ in range(5):
        monitor.sample_now()
    assert monitor.next_interval_s() == 0.4  # calm: OK, below 30 %, flat
    machine.set_used_percent(12)  # a jump of two points of the limit
    monitor.sample_now()
    assert monitor.next_interval_s() <= 0.1
    machine.set_used_percent(35)  # above relax_below, flat from here on
    for _ in range(70):
        monitor.sample_now()
    assert monitor.next_interval_s() == 0.1
    percent = 35.0
    for _ in range(6):  # fill quickly: 8 % of 16 GiB per sample
        percent += 8
        machine.set_used_percent(percent)
        monitor.sample_now()
        time.sleep(0.01)
    assert 0.005 <= monitor.next_interval_s() < 0.1
    fixed = Monitor("100ms", policy=two_levels(), sampler=machine.sampler, reclaim=False,
                    adaptive=False)
    assert fixed.next_interval_s() == 0.1


def test_psi_trigger_is_armed_where_the_kernel_allows(tmp_path: Path) -> None:
    if not os.path.exists("/proc/pressure/memory"):
        pytest.skip("this kernel has no PSI")
    monitor = Monitor(policy=two_levels(), reclaim=False)
    with monitor:
        armed = monitor._trigger_fd is not None
    if os.geteuid() == 0:
        assert armed


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
    register(model)
    register(cache)
    try:
        monitor = Monitor("10ms", policy=two_levels(), sampler=machine.sampler,
                          psi_trigger=False)
        with monitor:
            machine.set_used_percent(60)
            deadline = time.monotonic() + 10
            while monitor.last_reclaim is None:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        report = monitor.last_reclaim
        names = [step.name for step in report.steps]
        assert names[0] == "gc.collect"
        assert names.index("cache") < names.index("model")
        assert calls[:2] == ["cache", "model"]
        assert report.target_bytes >= monitor.ladder.min_reclaim_bytes
    finally:
        unregister(model)
        unregister(cache)


def test_bad_arguments() -> None:
    with pytest.raises(InvalidValue, match="interval"):
        Monitor(interval="0s")
    with pytest.raises(InvalidValue):
        Monitor(interval="fast")
    with pytest.raises(TypeError):
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
    monitor.subscribe(lambda new, old: changes.append(
        (new.level, [breach.rule for breach in new.verdict.breaches])))

    def command(text: str) -> None:
        child.stdin.write(text + "\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"

    def wait_for(level: Level) -> None:
        deadline = time.monotonic() + 30
        while monitor.state.level != level:
            assert time.monotonic() < deadline, (level, monitor.state.verdict.reason,
                                                 monitor.state.snapshot.memory)
            time.sleep(0.01)

    try:
        with monitor:
            assert monitor.state.snapshot.memory.limit == 200 * MiB
            assert monitor.state.snapshot.memory.source == "cgroup"
            while monitor.sample_now().snapshot.memory.percent < 55:  # fresh, not relaxed
                command("grow")
            wait_for(Level.WARNING)
            while monitor.sample_now().snapshot.memory.percent < 85:
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
