"""The real Monitor's polling interval shrinks as memory nears any edge: a threshold of its
policy (whatever its form) or a watched guard's budget (issue 15, item 2 and acceptance),
on scripted snapshots and a ManualClock, without events."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from resguard import Guard
from resguard.monitor import Monitor
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import MemoryInfo, Snapshot
from resguard.testing import ManualClock, make_snapshot

from factories import GiB

LIMIT = 16 * GiB
MIN_S, RELAXED_S = 0.01, 0.2


class ScriptedSampler:
    """Snapshots at the memory use the test sets, stamped with the test's clock."""

    def __init__(self, clock: ManualClock, percent: float = 10.0) -> None:
        self.clock, self.percent = clock, percent

    def sample(self, **_: Any) -> Snapshot:
        return make_snapshot(at=self.clock(), memory_percent=self.percent, limit=LIMIT)


class Budget:
    """A guard's side of the pacing: the memory.used value where it stops admitting."""

    def __init__(self, percent: float) -> None:
        self.percent = percent

    def memory_edges_bytes(self, memory: MemoryInfo) -> tuple[int, ...]:
        assert memory.limit is not None
        return (int(memory.limit * self.percent / 100),)


def monitor_on(policy: Policy) -> tuple[Monitor, ScriptedSampler, ManualClock]:
    clock = ManualClock()
    sampler = ScriptedSampler(clock)
    monitor = Monitor(
        "100ms",
        policy=policy,
        sampler=sampler,  # type: ignore[arg-type]  # anything with sample()
        clock=clock,
        reclaim=False,
        events=False,
        min_interval=f"{MIN_S}s",
        relaxed_interval=f"{RELAXED_S}s",
        relax_below="100%",  # no extra edge of the monitor's own below the limit
    )
    return monitor, sampler, clock


def intervals(
    monitor: Monitor, sampler: ScriptedSampler, clock: ManualClock, percents: list[float]
) -> list[float]:
    """The wait after each sample at *percents* of the limit, 1 s apart (a slow fill: the
    pace's default rate applies)."""
    waits = []
    for percent in percents:
        sampler.percent = percent
        clock.advance(1.0)
        monitor.sample_now()
        waits.append(monitor.next_interval_s())
    return waits


def shrinking(waits: list[float]) -> bool:
    """Relaxed far away, at min_interval at the edge, never longer on the way."""
    return waits[0] == RELAXED_S and waits[-1] == MIN_S and waits == sorted(waits, reverse=True)


CLIMB = [10, 40, 60, 70, 73, 74, 74.6, 74.95]  # towards 75 % of the limit


@pytest.mark.parametrize(
    "rule",
    [
        Threshold("memory.percent", ">=", 75),
        Threshold("memory.used", ">", "12GiB"),
        Threshold("memory.used", ">", "75%"),
        Threshold("memory.available", "<", "4GiB"),
        Threshold("memory.percent", ">=", 90, clear=75),  # its clear level is an edge too
    ],
    ids=["percent", "size", "share", "available", "clear"],
)
def test_the_interval_shrinks_as_use_nears_a_threshold_of_the_policy(rule: Threshold) -> None:
    monitor, sampler, clock = monitor_on(Policy([rule]))
    waits = intervals(monitor, sampler, clock, CLIMB)
    assert shrinking(waits), waits
    assert len(set(waits)) >= 5  # it follows the distance, not two fixed levels


def test_the_interval_shrinks_as_use_nears_a_watched_guards_edge_and_forgets_it_after() -> None:
    monitor, sampler, clock = monitor_on(Policy([Threshold("memory.percent", ">=", 99)]))
    far = intervals(monitor, sampler, clock, CLIMB)
    assert far[-1] == RELAXED_S  # the policy's edge is 24 % of 16 GiB away: calm
    budget = Budget(75)
    unwatch = monitor.watch_edges(budget)
    assert shrinking(intervals(monitor, sampler, clock, CLIMB))
    unwatch()
    assert intervals(monitor, sampler, clock, [74.95]) == [RELAXED_S]
    monitor.watch_edges(budget)
    assert intervals(monitor, sampler, clock, [74.95]) == [MIN_S]
    del budget  # held weakly: a collected guard stops counting
    gc.collect()
    assert intervals(monitor, sampler, clock, [74.95]) == [RELAXED_S]


def test_falling_use_nears_a_firing_rules_clear_level_as_fast() -> None:
    monitor, sampler, clock = monitor_on(
        Policy([Threshold("memory.percent", ">=", 90, clear=75, level=Level.WARNING)])
    )
    intervals(monitor, sampler, clock, [95])
    assert monitor.state.level == Level.WARNING
    falling = intervals(monitor, sampler, clock, [80, 78, 76, 75.5, 75.05])
    assert falling == sorted(falling, reverse=True)
    assert falling[-1] == MIN_S
    assert monitor.state.level == Level.WARNING  # still firing above its clear level


def test_a_slow_fill_measured_never_relaxes_polling_near_an_edge() -> None:
    monitor, sampler, clock = monitor_on(Policy([Threshold("memory.percent", ">=", 75)]))
    (near,) = intervals(monitor, sampler, clock, [73])  # 2 % of 16 GiB: 27 ms at 6000 MiB/s
    assert MIN_S < near < RELAXED_S
    for _ in range(5):  # a crawl: 0.01 % of the limit per 10 s
        sampler.percent += 0.01
        clock.advance(10.0)
        monitor.sample_now()
    assert monitor.next_interval_s() <= near  # the default rate is a floor


def test_a_guard_given_the_monitor_paces_it_at_its_memory_budget() -> None:
    monitor, sampler, clock = monitor_on(Policy([Threshold("memory.percent", ">=", 99)]))
    guard = Guard(memory="75%", monitor=monitor)
    assert guard.memory_edges_bytes(monitor.state.snapshot.memory) == (LIMIT * 3 // 4,)
    assert shrinking(intervals(monitor, sampler, clock, CLIMB))
    del guard
    gc.collect()
    assert intervals(monitor, sampler, clock, [74.95]) == [RELAXED_S]
