"""Reclaim without thrashing (issue 16, item 8): the minimum idle time, a verdict that clears
once memory fell, ladders scoped to their Monitor, and ``cache_info()`` of a cache bounded by
bytes. All on injected clocks: real LazyModels, real ladders, real policies."""

from __future__ import annotations

import gc
import logging
import random
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resguard import (
    InvalidType,
    InvalidValue,
    LazyModel,
    LRUCache,
    Monitor,
    memoize,
    presets,
    reclaim,
)
from resguard.reclaim import DEFAULT_MIN_IDLE_S, Ladder, Registry, registry_for
from resguard.rules import LeakDetector, Level, Policy, Threshold, TimeToLimit
from resguard.snapshot import Snapshot
from resguard.testing import ManualClock, make_snapshot

GiB = 2**30
MiB = 2**20


class Machine:
    """A sampler whose memory use is a base plus every loaded model's size, at the clock's
    time: what a monitor and its ladder measure, unloads included."""

    def __init__(self, clock: ManualClock, limit: int = 10 * GiB) -> None:
        self.clock = clock
        self.limit = limit
        self.base = 0
        self.models: list[LazyModel[Any]] = []

    def used(self) -> int:
        return self.base + sum(m.size_bytes for m in self.models if m.loaded)

    def sample(self, **_: Any) -> Snapshot:
        return make_snapshot(at=self.clock(), used=self.used(), limit=self.limit)


def _model(machine: Machine, register: Any, **kwargs: Any) -> LazyModel[Any]:
    model: LazyModel[Any] = LazyModel(
        lambda: object(),
        size=4 * GiB,
        name="llm",
        clock=machine.clock,
        register=register,
        sweep=False,
        **kwargs,
    )
    machine.models.append(model)
    return model


def _warning_monitor(machine: Machine, **kwargs: Any) -> Monitor:
    policy = Policy([Threshold("memory.percent", ">=", 80, level=Level.WARNING, clear=75)])
    return Monitor(
        policy=policy,
        sampler=machine,  # type: ignore[arg-type]  # duck-typed: anything with sample()
        clock=machine.clock,
        events=False,
        **kwargs,
    )


def _on(item: object, items: Any) -> bool:
    """Whether *item* itself is among *items* (caches compare equal by content)."""
    return any(entry is item for entry in items)


def _climb_while_warning(monitor: Monitor) -> reclaim.ReclaimReport | None:
    """What the slow loop does every *slow_interval* while the published level is WARNING."""
    state = monitor.sample_now()
    return monitor.reclaim_now() if state.level >= Level.WARNING else None


# ------------------------------------------------------------- the reload-then-unload replay


def test_a_model_a_request_reloaded_is_not_unloaded_again_within_the_min_idle() -> None:
    clock = ManualClock()
    machine = Machine(clock)
    monitor = _warning_monitor(machine)
    model = _model(machine, register=monitor)
    model.get()  # loaded at t=0, then unused
    clock.advance(600)
    machine.base = int(4.5 * GiB)  # 85 %: WARNING
    report = _climb_while_warning(monitor)
    assert report is not None
    assert "llm" in [step.name for step in report.steps]
    assert model.unloads == 1  # idle for 10 min: unloaded under pressure

    clock.advance(1)
    with model:  # a request reloads it (85 % again) and uses it for a second
        clock.advance(1)
    assert model.loads == 2
    # 28 s at the slow loop's pace, still WARNING: fixed times, so a shorter minimum idle
    # (0, the old behaviour) unloads it at the first step
    for _ in range(14):
        clock.advance(2)
        machine.base -= 10 * MiB  # memory falls, not yet below the clear line
        assert _climb_while_warning(monitor) is not None
        assert model.loaded, f"unloaded {model.idle_s():.0f} s after its last use"
    assert model.unloads == 1
    clock.advance(DEFAULT_MIN_IDLE_S)  # idle for longer than the minimum: fair game again
    _climb_while_warning(monitor)
    assert model.unloads == 2


def test_the_min_idle_is_the_models_own_and_zero_restores_the_old_behaviour() -> None:
    clock = ManualClock()
    machine = Machine(clock)
    ladder = Ladder(machine.used, min_reclaim=0)
    patient = _model(machine, register=ladder)
    eager = _model(machine, register=ladder, reclaim_min_idle=0)
    patient.get()
    eager.get()
    assert patient.reclaim_min_idle_s == DEFAULT_MIN_IDLE_S > 0
    assert patient.reclaimable_bytes() == 0
    assert eager.reclaimable_bytes() == 4 * GiB
    ladder.run(8 * GiB)
    assert patient.loaded
    assert eager.unloads == 1
    with pytest.raises(InvalidValue, match="reclaim_min_idle"):
        LazyModel(lambda: 1, size=1, register=False, reclaim_min_idle=-1)


# ------------------------------------------------------------- the verdict clears promptly


class Judge:
    """A policy judging memory use at the clock's time, with its own state."""

    def __init__(self, policy: Policy, clock: ManualClock) -> None:
        self.policy, self.clock, self.state = policy, clock, policy.new_state()

    def __call__(self, *, percent: float | None = None, used: int | None = None) -> Level:
        now = self.clock()
        snapshot = make_snapshot(at=now, memory_percent=percent, used=used, limit=10 * GiB)
        return self.policy.evaluate(snapshot, state=self.state, now=now).level


def test_the_service_verdict_clears_at_the_first_sample_after_memory_fell() -> None:
    """Memory climbed from 40 % to 85 % in 10 s, a reclaim brought it to 15 %: the
    time-to-limit forecast judged the fall by the fill before it and kept WARNING ~3-5 s."""
    clock = ManualClock()
    judge = Judge(presets.service(clock=clock), clock)
    for _ in range(600):  # a minute at 40 %, sampled every 100 ms
        judge(percent=40)
        clock.advance(0.1)
    for i in range(100):
        judge(percent=40 + 45 * i / 100)
        clock.advance(0.1)
    for _ in range(50):
        level = judge(percent=85)
        clock.advance(0.1)
    assert level is Level.WARNING
    assert judge(percent=15) is Level.OK
    for _ in range(100):  # and it does not fire again on the fill before the fall
        clock.advance(0.1)
        assert judge(percent=15) is Level.OK


def test_a_forecast_fires_again_on_a_new_fill_after_a_fall() -> None:
    clock = ManualClock()
    judge = Judge(Policy([TimeToLimit(within="2m", window="1m", clear="3m")]), clock)
    percent = 40.0
    for _ in range(300):
        percent += 0.1  # 1 %/s for 30 s: 30 % left at 70 %, 30 s to go
        judge(percent=percent)
        clock.advance(0.1)
    assert judge(percent=percent) is Level.WARNING
    percent -= 10  # a dip of 10 s of the fill: the forecast stands
    assert judge(percent=percent) is Level.WARNING
    percent = 5.0  # a reclaim gave back more than the fill of the last half-minute
    assert judge(percent=percent) is Level.OK
    levels = []
    for _ in range(300):
        clock.advance(0.1)
        percent += 0.1
        levels.append(judge(percent=percent))
    assert levels[50] is Level.OK  # 5 s of the new fill: too little to forecast by
    assert levels[-1] is Level.WARNING  # the new fill is forecast once measured


def test_a_leak_clears_when_its_growth_was_given_back() -> None:
    clock = ManualClock()
    judge = Judge(Policy([LeakDetector("memory.used", growth="100MiB", window="1m")]), clock)
    used = 2 * GiB
    for _ in range(120):
        used += 5 * MiB  # 300 MiB per minute
        level = judge(used=used)
        clock.advance(1)
    assert level is Level.WARNING
    used -= GiB  # a model unloaded: more than the window's growth given back
    assert judge(used=used) is Level.OK
    for _ in range(20):  # a level line after the fall: no growth to judge
        clock.advance(1)
        assert judge(used=used) is Level.OK


# ------------------------------------------------------------- ladders scoped to their monitor


def test_a_monitor_climbs_only_what_was_registered_with_it() -> None:
    clock = ManualClock()
    machine = Machine(clock)
    first = _warning_monitor(machine)
    second = _warning_monitor(machine)
    mine = _model(machine, register=first, reclaim_min_idle=0)
    theirs = _model(machine, register=second, reclaim_min_idle=0)
    everyone = _model(machine, register=True, reclaim_min_idle=0)
    for model in (mine, theirs, everyone):
        model.get()
    assert mine in first.reclaimables
    assert mine not in second.reclaimables
    assert _on(everyone, reclaim.registered())
    assert everyone not in first.reclaimables
    first.ladder.run(12 * GiB)
    assert not mine.loaded
    assert theirs.loaded
    assert everyone.loaded


def test_reclaim_process_climbs_the_process_wide_registry_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    machine = Machine(clock)
    everyone = _model(machine, register=True, reclaim_min_idle=0)
    everyone.get()
    scoped = _warning_monitor(machine)
    with caplog.at_level(logging.INFO, logger="resguard"):
        scoped.ladder.run(GiB)
        scoped.ladder.run(GiB)
    assert everyone.loaded
    told = [r for r in caplog.records if "registered process-wide" in r.getMessage()]
    assert len(told) == 1  # once per ladder
    assert "reclaim=" in told[0].getMessage()  # with the way out
    wide = _warning_monitor(machine, reclaim="process")
    assert _on(everyone, wide.ladder.steps())
    wide.ladder.run(GiB)
    assert not everyone.loaded


def test_registry_for_names_what_register_takes() -> None:
    clock = ManualClock()
    machine = Machine(clock)
    monitor = _warning_monitor(machine)
    own = Registry()
    assert registry_for(True) is reclaim.PROCESS_REGISTRY
    assert registry_for(False) is None
    assert registry_for(None) is None
    assert registry_for(own) is own
    assert registry_for(monitor) is monitor.reclaimables is monitor.ladder.reclaimables
    for bad in (1, "monitor", object()):
        with pytest.raises(InvalidType, match="register="):
            registry_for(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidType, match="reclaim="):
        _warning_monitor(machine, reclaim="yes")
    with pytest.raises(InvalidType, match="register="):
        LRUCache(register="everywhere")  # type: ignore[arg-type]


def test_caches_register_where_they_are_told() -> None:
    clock = ManualClock()
    monitor = _warning_monitor(Machine(clock))
    scoped: LRUCache[int, bytes] = LRUCache(register=monitor)
    nowhere: LRUCache[int, bytes] = LRUCache(register=False)
    default: LRUCache[int, bytes] = LRUCache()

    @memoize(register=monitor)
    def square(x: int) -> int:
        return x * x

    assert scoped in monitor.reclaimables
    assert not _on(scoped, reclaim.registered())
    assert not _on(nowhere, reclaim.registered())
    assert nowhere not in monitor.reclaimables
    assert _on(default, reclaim.registered())
    assert square.cache in monitor.reclaimables


def test_the_ladder_sums_what_each_step_freed_over_every_climb() -> None:
    clock = ManualClock()
    machine = Machine(clock)
    ladder = Ladder(machine.used, min_reclaim=0)
    cache: LRUCache[int, bytes] = LRUCache(name="blobs", register=ladder)
    for run in range(2):
        model = _model(machine, register=ladder, reclaim_min_idle=0)
        model.get()
        cache[run] = bytes(MiB)
        ladder.run(GiB)
    assert ladder.freed_bytes_by_step["llm"] == 8 * GiB  # measured, both climbs
    assert ladder.freed_bytes_by_step["blobs"] >= 0
    assert set(ladder.freed_bytes_by_step) >= {"gc.collect", "blobs", "llm"}


# ------------------------------------------------------------- cache_info and max_bytes


def test_cache_info_of_a_cache_bounded_by_bytes_is_in_bytes() -> None:
    @memoize(max_bytes="1MiB", register=False)
    def blob(n: int) -> bytes:
        return bytes(n)

    blob(1000)
    blob(2000)
    info = blob.cache_info()
    stats = blob.cache_stats()
    assert info.maxsize == MiB  # not None, which functools reads as "unbounded"
    assert info.currsize == stats.bytes >= 3000
    assert info.currsize <= info.maxsize
    assert blob.cache_parameters()["maxsize"] == MiB

    @memoize(max_items=3, register=False)
    def counted(n: int) -> int:
        return n

    counted(1)
    assert counted.cache_info() == (0, 1, 3, 1)  # items, as functools


# ------------------------------------------------------------- what the operator reads


def test_level_changes_reclaim_steps_and_unloads_carry_their_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    machine = Machine(clock)
    monitor = _warning_monitor(machine)
    model = _model(machine, register=monitor, reclaim_min_idle=0)
    model.get()
    machine.base = int(4.5 * GiB)
    with caplog.at_level(logging.INFO, logger="resguard"):
        _climb_while_warning(monitor)
    by_event = {getattr(r, "resguard_event", None): r for r in caplog.records}
    change = by_event["level_change"]
    assert change.getMessage().startswith("level OK -> WARNING")
    assert vars(change)["resguard_level"] == "WARNING"
    assert vars(change)["resguard_previous_level"] == "OK"
    assert vars(change)["resguard_rule"] == "memory.percent >= 80%"
    step = next(r for r in caplog.records if getattr(r, "resguard_step", None) == "llm")
    assert step.getMessage().startswith("reclaim step llm: freed 4.0 GiB")
    assert vars(step)["resguard_freed_bytes"] == 4 * GiB  # measured
    assert vars(by_event["model_unload"])["resguard_model"] == "llm"
    assert vars(by_event["reclaim"])["resguard_freed_bytes"] >= 4 * GiB


@settings(max_examples=40, deadline=None)
@given(
    rate_percent_per_s=st.floats(0.5, 2.0),
    noise_share=st.floats(0.0, 0.4),
    seed=st.integers(0, 2**16),
)
def test_noise_smaller_than_the_fall_line_never_ends_a_fill(
    rate_percent_per_s: float, noise_share: float, seed: int
) -> None:
    """A steady fill with noise below half the fall line (a quarter of a window's fill) keeps
    its series: the fall rule reads a real release, not noise."""
    rng = random.Random(seed)
    rule = TimeToLimit(within="2m", window="1m", clear="3m")
    state = rule.new_state()
    amplitude = noise_share * rate_percent_per_s * rule.window_s * rule.fall_share / 2
    fell = 0
    for i in range(300):  # 30 s at 100 ms, from 15 % up
        now = i * 0.1
        percent = 15 + rate_percent_per_s * now + rng.uniform(-amplitude, amplitude)
        snapshot = make_snapshot(at=now, memory_percent=min(percent, 100), limit=10 * GiB)
        fell += rule.fell(state, now, snapshot.memory.used)
        rule.step(snapshot, state, now)
    assert fell == 0
    assert len(state.times) >= 10  # every closed bucket kept


def test_a_reclaimable_whose_name_raises_does_not_break_the_ladder() -> None:
    class Nameless:
        cost = 1.0
        broken = False

        @property
        def name(self) -> str:
            if self.broken:
                raise RuntimeError("no name today")
            return "nameless"

        def reclaimable_bytes(self) -> int:
            return 0

        def reclaim(self, target_bytes: int) -> int:
            return 5

    ladder = Ladder(lambda: None, min_reclaim=0)
    item = Nameless()
    ladder.register(item)
    item.broken = True  # after it was registered, as a cost can turn bad later
    report = ladder.run(10)
    assert [step.name for step in report.steps] == ["gc.collect", "<a Nameless>"]
    assert ladder.freed_bytes_by_step["<a Nameless>"] == 5  # its claim: memory unknown


def test_reclaim_process_with_a_ladder_that_does_not_climb_it_is_refused() -> None:
    machine = Machine(ManualClock())
    with pytest.raises(InvalidValue, match="process=True"):
        _warning_monitor(machine, reclaim="process", ladder=Ladder(machine.used))
    wide = Ladder(machine.used, process=True)
    assert _warning_monitor(machine, reclaim="process", ladder=wide).ladder is wide


def test_a_monitors_verdict_is_ok_at_the_first_sample_after_its_ladder_freed_memory() -> None:
    """The whole episode on one clock: the service preset, a real ladder unloading a real
    model, and the next sample's verdict."""
    clock = ManualClock()
    machine = Machine(clock)
    monitor = Monitor(
        policy=presets.service(clock=clock),
        sampler=machine,  # type: ignore[arg-type]  # duck-typed: anything with sample()
        clock=clock,
        events=False,
    )
    model = _model(machine, register=monitor)
    model.get()  # 4 GiB of 10, then idle
    for _ in range(600):  # a minute at 40 %
        assert monitor.sample_now().level is Level.OK
        clock.advance(0.1)
    for i in range(100):  # 40 % -> 85 % in 10 s
        machine.base = int(4.5 * GiB * i / 100)
        monitor.sample_now()
        clock.advance(0.1)
    state = monitor.sample_now()
    assert state.level is Level.WARNING
    assert monitor.next_interval_s() <= monitor.interval_s  # not OK: sampled fast
    report = monitor.reclaim_now()
    assert "llm" in [step.name for step in report.steps]
    clock.advance(monitor.next_interval_s())
    after = monitor.sample_now()
    assert after.snapshot.memory.percent is not None
    assert after.snapshot.memory.percent < 50
    assert after.level is Level.OK, after.verdict.reason


def test_a_collection_inside_the_registry_lock_does_not_deadlock() -> None:
    """A registered cache in a reference cycle is freed by a garbage collection, which may
    run while this thread holds the registry's lock (any allocation in there can start one):
    the weak reference's callback must not wait for that lock."""

    class Cyclic:
        name, cost = "cyclic", 1.0

        def __init__(self) -> None:
            self.me = self

        def reclaimable_bytes(self) -> int:
            return 0

        def reclaim(self, target_bytes: int) -> int:
            return 0

    registry = Registry()
    registry.register(Cyclic())

    def collect_inside_the_lock() -> None:
        with registry._lock:
            gc.collect()

    worker = threading.Thread(target=collect_inside_the_lock, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the weakref callback waited for the lock it runs under"
    assert len(registry) == 0
    assert registry.registered() == []
