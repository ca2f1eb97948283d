"""The presets fire at their documented numbers and clear without flapping."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

import attrs
import pytest

import resguard
from resguard import presets
from resguard._probes.backend import Backend
from resguard.rules import Level, Policy, ProcessCount, ProcessThreshold, Verdict
from resguard.snapshot import Fault, Sampler, Snapshot
from resguard.testing import ManualClock, make_process, make_snapshot, unknown_memory

from factories import MB, GiB


def judge(policy: Policy, snapshots: Iterable[Snapshot]) -> list[Verdict]:
    state = policy.new_state()
    return [policy.evaluate(snapshot, state) for snapshot in snapshots]


def memory_levels(policy: Policy, percents: Iterable[float]) -> list[Level]:
    return [
        v.level
        for v in judge(
            policy, [make_snapshot(at=float(t), memory_percent=p) for t, p in enumerate(percents)]
        )
    ]


W, C, OK = Level.WARNING, Level.CRITICAL, Level.OK


@pytest.mark.parametrize(
    ("preset", "percents", "expected"),
    [
        (
            presets.laptop,
            [50, 84.9, 85, 84, 80.5, 79.9, 95, 91, 89.9, 79],
            [OK, OK, W, W, W, OK, C, C, W, OK],
        ),
        (
            presets.service,
            [50, 79.9, 80, 76, 74.9, 90, 86, 84.9, 70],
            [OK, OK, W, W, OK, C, C, W, OK],
        ),
    ],
)
def test_memory_levels_and_clear_levels(
    preset: Callable[[], Policy], percents: list[float], expected: list[Level]
) -> None:
    assert memory_levels(preset(), percents) == expected


@pytest.mark.parametrize("preset", [presets.laptop, presets.service])
def test_memory_at_the_edge_does_not_flap(preset: Callable[[], Policy]) -> None:
    policy = preset()
    warning = 85 if preset is presets.laptop else 80
    oscillating = [warning + (1 if i % 2 else -1) for i in range(1, 60)]
    result = memory_levels(policy, oscillating)
    assert result == [W] * len(oscillating)


def test_laptop_pressure_rules() -> None:
    policy = presets.laptop()
    assert policy.evaluate(make_snapshot(psi_some=10.0)).ok
    assert policy.evaluate(make_snapshot(psi_some=10.5), policy.new_state()).level is W
    critical = policy.evaluate(make_snapshot(psi_some=30.0, psi_full=5.5), policy.new_state())
    assert critical.level is C
    assert "full avg10" in critical.reason
    assert policy.evaluate(make_snapshot(psi_some=None), policy.new_state()).ok  # no PSI


def test_laptop_single_busy_process_after_30_seconds() -> None:
    policy = presets.laptop()
    snapshots = [
        make_snapshot(
            at=float(t),
            processes=(
                make_process(100, "renderer", cpu_percent=240.0),
                make_process(101, "editor", cpu_percent=5.0),
            ),
        )
        for t in range(32)
    ]
    verdicts = judge(policy, snapshots)
    assert all(v.ok for v in verdicts[:30])
    assert verdicts[30].level is W
    (breach,) = verdicts[30].breaches
    assert (breach.offenders[0].pid, breach.offenders[0].name) == (100, "renderer")


def test_laptop_two_processes_above_half_a_core_after_10_seconds() -> None:
    policy = presets.laptop()
    snapshots = [
        make_snapshot(
            at=float(t),
            processes=(
                make_process(1, "api", cpu_percent=55.0),
                make_process(2, "worker", cpu_percent=60.0),
                make_process(3, "idle", cpu_percent=0.5),
            ),
        )
        for t in range(12)
    ]
    verdicts = judge(policy, snapshots)
    assert all(v.ok for v in verdicts[:10])
    assert verdicts[10].level is W
    assert {o.name for o in verdicts[10].breaches[0].offenders} == {"api", "worker"}


def test_laptop_leak_of_the_process_rss() -> None:
    policy = presets.laptop()
    snapshots = [
        make_snapshot(at=float(t), rss=round(200 * MB + t * 100 * MB / 600))
        for t in range(0, 900, 2)
    ]  # +100 MB per 10 min for 15 min
    verdicts = judge(policy, snapshots)
    assert verdicts[-1].level is W
    assert "RSS grows" in verdicts[-1].reason


def test_service_has_no_process_rules_and_forecasts_the_limit() -> None:
    policy = presets.service()
    assert not any(isinstance(r, (ProcessThreshold, ProcessCount)) for r in policy.rules)
    busy = tuple(make_process(pid, "hog", cpu_percent=300.0) for pid in range(5))
    verdicts = judge(policy, [make_snapshot(at=float(t), processes=busy) for t in range(60)])
    assert all(v.ok for v in verdicts)
    # 50 % used and filling at 40 MiB/s: 8 GiB left, about 205 s at first
    filling = [
        make_snapshot(at=float(t), limit=16 * GiB, used=8 * GiB + t * 40 * 2**20)
        for t in range(120)
    ]
    verdicts = judge(policy, filling)
    fired = next(i for i, v in enumerate(verdicts) if not v.ok)
    assert 80 <= fired <= 100  # when about 120 s are left
    estimate_s = verdicts[fired].breaches[0].estimate_s
    assert estimate_s is not None
    assert estimate_s < 120


def test_presets_are_fresh_policies_and_judge_a_real_snapshot() -> None:
    first, second = presets.laptop(), presets.laptop()
    assert isinstance(first, Policy)
    assert first is not second
    assert first.rules is not second.rules
    for policy in (presets.laptop(), presets.service()):
        verdict = policy.evaluate(resguard.snapshot())
        assert verdict.level in (OK, W, C)
        json.dumps(verdict.to_dict())


@pytest.mark.parametrize("preset", [presets.laptop, presets.service])
def test_presets_report_unreadable_memory_as_unknown_and_hold_a_firing_level(
    preset: Callable[[], Policy],
) -> None:
    def blind(at: float) -> Snapshot:
        fault = Fault("memory", "/proc/meminfo", "truncated", "MemAvailable missing")
        return unknown_memory(make_snapshot(at=at), fault)

    verdicts = judge(
        preset(),
        [make_snapshot(at=0.0, memory_percent=97), *(blind(float(t)) for t in range(1, 20))],
    )
    assert [v.level for v in verdicts] == [C] * 20  # no flapping to OK on a damaged file
    assert "memory.percent: /proc/meminfo truncated" in verdicts[-1].unknown
    assert verdicts[-1].reason.startswith("CRITICAL: ")
    assert "(unknown: memory.percent: /proc/meminfo truncated" in verdicts[-1].reason
    quiet = judge(preset(), [blind(float(t)) for t in range(20)])
    assert all(v.level is OK and not v.known for v in quiet)


@pytest.mark.parametrize("preset", [presets.laptop, presets.service])
def test_a_preset_takes_the_clock_of_its_policy(preset: Callable[..., Policy]) -> None:
    clock = ManualClock()
    assert preset(clock=clock).clock is clock
    assert preset().clock is time.monotonic  # monotonic by default


def with_memory_level(snap: Snapshot, level: int | None) -> Snapshot:
    return attrs.evolve(snap, pressure=attrs.evolve(snap.pressure, memory_level=level))


@pytest.mark.parametrize("preset", [presets.laptop, presets.service])
def test_the_macos_pressure_level_warns_at_2_and_is_critical_at_4(
    preset: Callable[[], Policy],
) -> None:
    levels = [1, 2, 2, 1, 4, 4, 2, 4, 1]
    snapshots = [with_memory_level(make_snapshot(at=float(t)), n) for t, n in enumerate(levels)]
    verdicts = judge(preset(), snapshots)
    assert [v.level for v in verdicts] == [OK, W, W, OK, C, C, W, C, OK]
    assert "macOS memory pressure critical" in verdicts[4].reason


@pytest.mark.parametrize("preset", [presets.laptop, presets.service])
@pytest.mark.parametrize("backend", ["linux", "psutil"])
def test_the_macos_rules_are_inactive_off_macos_not_unknown(
    preset: Callable[[], Policy], backend: Backend
) -> None:
    """Off macOS the level is None with no fault (like PSI on a kernel without it): the
    verdict must not call itself unknown because of it."""
    snap = Sampler(backend=backend).sample()
    assert snap.pressure.memory_level is None
    verdict = preset().evaluate(snap)
    assert verdict.known, verdict.unknown
    assert not any("memory_level" in reason for reason in verdict.unknown)
    bare = preset().evaluate(with_memory_level(make_snapshot(at=0.0), None))
    assert (bare.level, bare.unknown) == (OK, ())


def test_an_unreadable_macos_level_is_unknown_and_holds_a_firing_level() -> None:
    fault = Fault(
        "pressure.memory_level",
        "sysctl kern.memorystatus_vm_pressure_level",
        "unreadable",
        "SysctlError: [Errno 1] Operation not permitted",
    )
    blind = [
        attrs.evolve(with_memory_level(make_snapshot(at=float(t)), None), faults=(fault,))
        for t in range(1, 5)
    ]
    verdicts = judge(presets.laptop(), [with_memory_level(make_snapshot(at=0.0), 4), *blind])
    assert [v.level for v in verdicts] == [C] * 5
    assert any("pressure.memory_level: sysctl" in reason for reason in verdicts[-1].unknown)
