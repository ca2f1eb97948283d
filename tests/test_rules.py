"""The judge layer: rule semantics with an injected clock, errors, and a reference model."""

from __future__ import annotations

import itertools
import json
import math
import operator
import random
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resguard
from resguard import InvalidType, InvalidValue, UnknownMetric, testing
from resguard.rules import (
    Breach,
    ContainerThreshold,
    LeakDetector,
    Level,
    Policy,
    ProcessCount,
    ProcessThreshold,
    Rule,
    Sustain,
    Threshold,
    TimeToLimit,
    Verdict,
    least_squares_slope,
    theil_sen_slope,
)
from resguard.snapshot import Fault, ProcessInfo, Snapshot
from resguard.testing import (
    WALL_OFFSET_S,
    ManualClock,
    make_container,
    make_process,
    make_snapshot,
)

from factories import MB, GiB


def run(rule: Rule, snapshots: Iterable[tuple[float, Snapshot]]) -> list[Verdict]:
    """Evaluate *rule* in a fresh policy over (now, snapshot) pairs; return the verdicts."""
    policy = Policy([rule])
    state = policy.new_state()
    return [policy.evaluate(snapshot, state, now=now) for now, snapshot in snapshots]


def series(
    values: Iterable[float | None], *, step_s: float = 1.0, start: float = 1000.0, **fields: Any
) -> list[tuple[float, Snapshot]]:
    """Snapshots with memory.percent following *values*, one every *step_s* seconds."""
    return [
        (start + i * step_s, make_snapshot(at=start + i * step_s, memory_percent=value, **fields))
        for i, value in enumerate(values)
    ]


def levels(verdicts: Iterable[Verdict]) -> list[Level]:
    return [verdict.level for verdict in verdicts]


# ------------------------------------------------------------------ construction ---


def test_unknown_metric_fails_at_construction_and_suggests_close_matches() -> None:
    with pytest.raises(UnknownMetric, match=r"'memory\.percnt'.*'memory\.percent'"):
        Threshold("memory.percnt", ">", 85)
    with pytest.raises(UnknownMetric, match=r"pressure\.memory\.some\.avg10"):
        Threshold("pressure.memory.some.avg01", ">", 10)
    with pytest.raises(UnknownMetric, match=r"process\.rss"):
        LeakDetector("process.rsss")
    with pytest.raises(UnknownMetric, match=r"memory\.limit"):
        TimeToLimit(limit="memory.limt")
    with pytest.raises(UnknownMetric):
        Threshold("processes", ">", 1)  # a table, judged by the process rules


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "named"),
    [
        (("memory.percent", ">", "85%%"), {}, InvalidValue, "85%%"),
        (("memory.percent", "=>", 85), {}, InvalidValue, "=>"),
        (("memory.percent", ">", 85), {"for_": -1}, InvalidValue, "-1"),
        (("memory.percent", ">", 85), {"cooldown": "soon"}, InvalidValue, "soon"),
        (("memory.percent", ">", 85), {"level": "fatal"}, InvalidValue, "fatal"),
        (("memory.percent", ">", 85), {"level": Level.OK}, InvalidValue, "Level.OK"),
        (("memory.percent", ">", 85), {"clear": 90}, InvalidValue, "90"),
        (("memory.percent", "<", 10), {"clear": 5}, InvalidValue, "5"),
        (("memory.percent", ">", "2GiB"), {}, InvalidValue, "2GiB"),
        (("process.rss", ">", "2 GiBs"), {}, InvalidValue, "2 GiBs"),
        (("process.rss", ">", "120%"), {}, InvalidValue, "120%"),
        (("cpu.count", ">", "85%"), {}, InvalidValue, "85%"),
        (("memory.percent", ">", -1), {}, InvalidValue, "-1"),
        (("memory.percent", ">", True), {}, InvalidType, "True"),
        ((42, ">", 1), {}, InvalidType, "42"),
    ],
)
def test_bad_threshold_arguments_raise_naming_the_value(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error) as raised:
        Threshold(*args, **kwargs)
    assert named in str(raised.value)


def test_bad_process_and_trend_arguments_raise() -> None:
    with pytest.raises(InvalidValue, match="exactly one"):
        ProcessThreshold(for_="30s")
    with pytest.raises(InvalidValue, match="exactly one"):
        ProcessThreshold(cpu_percent_above=100, rss_above="1GiB")
    with pytest.raises(InvalidValue, match="at_least=0"):
        ProcessCount(cpu_percent_above=50, at_least=0)
    with pytest.raises(InvalidValue, match="-5"):
        ProcessCount(cpu_percent_above=-5)
    with pytest.raises(InvalidValue, match="growth"):
        LeakDetector(growth=0)
    with pytest.raises(InvalidValue, match="10 parsecs"):
        LeakDetector(window="10 parsecs")
    with pytest.raises(InvalidValue, match="clear"):
        TimeToLimit(within="5m", clear="1m")
    with pytest.raises(InvalidType, match="not a rule"):
        Policy([Threshold("memory.percent", ">", 85), "memory.percent > 85"])  # type: ignore[list-item]
    with pytest.raises(InvalidType):
        Policy("memory.percent > 85")  # type: ignore[arg-type]


def test_values_accept_units_and_percentages() -> None:
    snapshot = make_snapshot(memory_percent=50.0, limit=16 * GiB, rss=3 * GiB)
    fired = [
        Threshold("memory.percent", ">", "45%"),
        Threshold("memory.percent", ">", "45"),
        Threshold("memory.used", ">", "45%"),
        Threshold("memory.used", ">", "7GiB"),
        Threshold("process.rss", ">=", "2g"),
        Threshold("process.rss", ">", 2 * 10**9),
        Threshold("memory.available", "<", "9GiB"),
        Threshold("cpu.count", ">=", "8"),
    ]
    quiet = [
        Threshold("memory.percent", ">", "55%"),
        Threshold("memory.used", ">", "55%"),
        Threshold("process.rss", ">", "4GiB"),
        Threshold("memory.available", "<", "7GiB"),
    ]
    policy = Policy(fired + quiet)
    verdict = policy.evaluate(snapshot)
    assert {breach.rule for breach in verdict.breaches} == {rule.name for rule in fired}


def test_the_design_example_builds_and_judges() -> None:
    policy = Policy(
        [
            Threshold("memory.percent", ">", 85, level=Level.WARNING, for_="10s", clear="80"),
            Threshold("memory.percent", ">", 95, level=Level.CRITICAL),
            LeakDetector("process.rss", growth="50MB", window="10m"),
        ]
    )
    verdicts = [
        policy.evaluate(make_snapshot(at=float(t), memory_percent=p))
        for t, p in enumerate([90] * 10 + [96, 82, 79])
    ]
    assert [v.level for v in verdicts] == [Level.OK] * 10 + [
        Level.CRITICAL,
        Level.WARNING,
        Level.OK,
    ]


def test_percent_of_limit_follows_the_limit_of_each_snapshot() -> None:
    rule = Threshold("memory.used", ">", "85%")
    used = 10 * GiB
    small_limit = make_snapshot(at=1, used=used, limit=11 * GiB)  # 91 %
    large_limit = make_snapshot(at=2, used=used, limit=32 * GiB)  # 31 %
    verdicts = run(rule, [(1, small_limit), (2, large_limit)])
    assert levels(verdicts) == [Level.WARNING, Level.OK]
    assert verdicts[0].breaches[0].threshold == pytest.approx(0.85 * 11 * GiB)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 100),
    st.lists(st.tuples(st.integers(1, 2**40), st.integers(0, 2**40)), min_size=1, max_size=20),
)
def test_a_share_threshold_is_resolved_against_the_limit_of_each_snapshot(
    percent: int, samples: list[tuple[int, int]]
) -> None:
    rule = Threshold("memory.used", ">=", f"{percent}%")
    snapshots = [
        (float(t), make_snapshot(at=float(t), used=used, limit=limit))
        for t, (limit, used) in enumerate(samples)
    ]
    for (limit, used), verdict in zip(samples, run(rule, snapshots), strict=True):
        figure = percent / 100 * float(limit)
        assert verdict.ok is not (used >= figure)
        if not verdict.ok:
            assert verdict.breaches[0].threshold == figure


@pytest.mark.parametrize("separator", ["\x1c", "\x1d", "\x1e", "\x1f", "\u2028"])
def test_a_figure_padded_with_a_separator_is_read_like_one_padded_with_spaces(
    separator: str,
) -> None:
    # the pattern's \s allows these, float() does not strip them: a bare ValueError escaped
    padded = f"5{separator}"
    assert Threshold("cpu.load_1m", ">", padded).name == "cpu.load_1m > 5"
    assert Threshold("memory.percent", ">", padded).name == "memory.percent > 5%"
    assert Threshold("memory.used", ">", f"{padded}%").name == "memory.used > 5% of memory.limit"
    assert ProcessThreshold(cpu_percent_above=f"{padded}%").name == "a process cpu_percent > 5%"


def test_a_share_of_the_limit_is_its_exact_fraction_not_whole_bytes() -> None:
    rule = Threshold("memory.used", ">=", "85%")  # of 10 bytes: 8.5, which 8 bytes is not
    verdicts = run(
        rule,
        [(1, make_snapshot(at=1, used=8, limit=10)), (2, make_snapshot(at=2, used=9, limit=10))],
    )
    assert levels(verdicts) == [Level.OK, Level.WARNING]
    assert verdicts[1].breaches[0].threshold == 8.5


# ---------------------------------------------------------------- threshold logic ---


def test_fires_at_once_without_grace_and_describes_the_breach() -> None:
    rule = Threshold("memory.percent", ">=", 95, level=Level.CRITICAL)
    (verdict,) = run(rule, series([96.5], start=500.0))
    assert verdict.level is Level.CRITICAL
    assert not verdict.ok
    (breach,) = verdict.breaches
    assert breach.rule == "memory.percent >= 95%"
    assert breach.metric == "memory.percent"
    assert breach.value == pytest.approx(96.5, abs=0.01)
    assert breach.threshold == 95
    assert breach.since == 500.0
    assert breach.since_wall == WALL_OFFSET_S + 500.0
    assert "CRITICAL" in verdict.reason
    assert "96.5%" in verdict.reason


def test_grace_period_needs_the_condition_on_every_sample() -> None:
    rule = Threshold("memory.percent", ">", 85, for_="10s")
    above = [90.0] * 15
    verdicts = run(rule, series(above))
    assert levels(verdicts)[:10] == [Level.OK] * 10  # t = 0 .. 9 s
    assert levels(verdicts)[10:] == [Level.WARNING] * 5  # t >= 10 s
    assert verdicts[-1].breaches[0].since == 1000.0  # held since the first sample
    assert verdicts[-1].breaches[0].held_s == 14.0

    dipping = [90.0] * 8 + [80.0] + [90.0] * 12  # one dip at t = 8 s resets it
    verdicts = run(rule, series(dipping))
    first = levels(verdicts).index(Level.WARNING)
    assert first == 19  # 10 s after the dip


def test_hysteresis_stops_flapping_around_the_threshold() -> None:
    oscillating = [85 + (1 if i % 2 else -1) for i in range(40)]  # 84, 86, 84, ...
    flapping = levels(run(Threshold("memory.percent", ">", 85), series(oscillating)))
    steady = levels(run(Threshold("memory.percent", ">", 85, clear=80), series(oscillating)))
    changes = sum(a != b for a, b in itertools.pairwise(flapping))
    assert changes == len(oscillating) - 1  # the plain rule flaps every sample
    assert steady == [Level.OK] + [Level.WARNING] * 39  # one change, then it holds
    cleared = levels(
        run(Threshold("memory.percent", ">", 85, clear=80), series([86, 84, 81, 80, 79, 84, 86]))
    )
    assert cleared == [Level.WARNING] * 3 + [Level.OK] * 3 + [Level.WARNING]


def test_cooldown_blocks_refiring_for_its_duration() -> None:
    rule = Threshold("memory.percent", ">", 85, cooldown="30s")
    values = [90, 70] + [90] * 40
    result = levels(run(rule, series(values)))
    assert result[0] is Level.WARNING
    assert result[1] is Level.OK  # cleared at t = 1 s
    assert result[2:31] == [Level.OK] * 29  # t = 2 .. 30 s: cooling down
    assert result[31] is Level.WARNING  # t = 31 s: cooldown over


def test_below_operator_and_hysteresis_upwards() -> None:
    rule = Threshold("memory.available", "<", "2GiB", clear="3GiB")
    limit = 16 * GiB
    available = [4, 1.9, 2.5, 2.9, 3.1, 2.5]
    snapshots = [
        (i, make_snapshot(at=i, used=round(limit - gib * GiB), limit=limit))
        for i, gib in enumerate(available)
    ]
    assert levels(run(rule, snapshots)) == [
        Level.OK,
        Level.WARNING,
        Level.WARNING,
        Level.WARNING,
        Level.OK,
        Level.OK,
    ]


def test_missing_metric_makes_the_rule_inactive() -> None:
    some = Threshold("pressure.memory.some.avg10", ">", 10)
    full = Threshold("pressure.memory.full.avg10", ">", 5, level=Level.CRITICAL)
    containers = Threshold("containers.memory.total", ">", "5GB")
    policy = Policy([some, full, containers])
    no_psi = make_snapshot(psi_some=None, memory_percent=99)
    assert policy.evaluate(no_psi).ok
    no_full_line = make_snapshot(psi_some=50.0, psi_full=None)
    assert {b.rule for b in policy.evaluate(no_full_line, policy.new_state()).breaches} == {
        some.name
    }
    many = (make_container("db", memory_used=4 * GiB), make_container("web", memory_used=2 * GiB))
    verdict = policy.evaluate(
        make_snapshot(psi_full=9.0, psi_some=1.0, containers=many), policy.new_state()
    )
    assert verdict.level is Level.CRITICAL
    assert {b.rule for b in verdict.breaches} == {full.name, containers.name}
    # a firing rule whose metric disappears clears
    verdicts = run(
        some, [(0, make_snapshot(at=0, psi_some=20.0)), (1, make_snapshot(at=1, psi_some=None))]
    )
    assert levels(verdicts) == [Level.WARNING, Level.OK]


# ----------------------------------------------------------------- process rules ---


def table(*rows: tuple[int, str, float]) -> tuple[ProcessInfo, ...]:
    return tuple(make_process(pid, name, cpu_percent=cpu) for pid, name, cpu in rows)


def test_process_threshold_needs_one_process_sustained() -> None:
    rule = ProcessThreshold(cpu_percent_above=100, for_="30s")
    snapshots = []
    for t in range(41):
        rows = [(10, "renderer", 240.0), (11, "shell", 3.0)]
        if t >= 20:
            rows.append((12, "compiler", 150.0))  # above from t = 20 s only
        snapshots.append((t, make_snapshot(at=t, processes=table(*rows))))
    verdicts = run(rule, snapshots)
    assert levels(verdicts)[:30] == [Level.OK] * 30
    breach = verdicts[30].breaches[0]
    assert [(o.pid, o.name, o.value) for o in breach.offenders] == [(10, "renderer", 240.0)]
    assert breach.since == 0
    assert breach.value == 240.0
    assert "renderer" in verdicts[30].reason
    last = verdicts[40].breaches[0]
    assert [o.pid for o in last.offenders] == [10]  # compiler: 20 s only
    assert run(rule, [(0, make_snapshot(processes=None))])[0].ok


def test_process_threshold_tracks_identity_not_pid_and_forgets_gone_processes() -> None:
    rule = ProcessThreshold(cpu_percent_above=100, for_="10s")
    policy = Policy([rule])
    state = policy.new_state()
    for t in range(15):
        # pid 7 restarts every 5 s (a new create_time): no instance is busy for 10 s
        process = make_process(7, "worker", cpu_percent=200.0, create_time=float(t // 5))
        verdict = policy.evaluate(make_snapshot(at=t, processes=(process,)), state)
        assert verdict.ok
    per_process = state.rule_states[0]
    assert list(per_process) == [(7, 2.0)]  # only the live instance is kept
    policy.evaluate(make_snapshot(at=20, processes=()), state)
    assert per_process == {}


def test_process_threshold_hysteresis_and_rss() -> None:
    rule = ProcessThreshold(cpu_percent_above=100, clear=80)
    cpu = [120, 90, 85, 79, 95, 101]
    verdicts = run(
        rule, [(t, make_snapshot(at=t, processes=table((5, "x", c)))) for t, c in enumerate(cpu)]
    )
    assert levels(verdicts) == [Level.WARNING] * 3 + [Level.OK, Level.OK, Level.WARNING]
    big = ProcessThreshold(rss_above="2GiB", level="critical")
    rows = (make_process(1, "small", rss=GiB), make_process(2, "big", rss=3 * GiB))
    (verdict,) = run(big, [(0, make_snapshot(processes=rows))])
    assert verdict.level is Level.CRITICAL
    assert [o.name for o in verdict.breaches[0].offenders] == ["big"]
    assert "3.0 GiB" in verdict.reason


def test_process_count_needs_enough_processes_at_once() -> None:
    rule = ProcessCount(cpu_percent_above=50, at_least=2, for_="10s")
    snapshots = []
    for t in range(25):
        # two busy processes at any time, but which ones changes every 4 s
        busy = {t % 3, (t // 4) % 3 + 3}
        # pids from 10: pid 0 is the kernel's own process, which no rule judges
        rows = table(*[(10 + pid, f"p{pid}", 60.0 if pid in busy else 10.0) for pid in range(6)])
        snapshots.append((t, make_snapshot(at=t, processes=rows)))
    verdicts = run(rule, snapshots)
    assert levels(verdicts)[:10] == [Level.OK] * 10
    assert levels(verdicts)[10:] == [Level.WARNING] * 15
    breach = verdicts[-1].breaches[0]
    assert breach.value == 2
    assert breach.threshold == 2
    assert len(breach.offenders) == 2
    lonely = run(
        rule,
        [
            (t, make_snapshot(at=t, processes=table((1, "a", 99.0), (2, "b", 10.0))))
            for t in range(30)
        ],
    )
    assert all(verdict.ok for verdict in lonely)


# -------------------------------------------------------------------- leak detector ---


def rss_series(
    *,
    seed: int,
    minutes: float,
    leak_mb_per_10min: float,
    noise_mb: float = 20.0,
    step_s: float = 5.0,
    spikes: float = 0.0,
) -> list[tuple[float, Snapshot]]:
    """(now, snapshot) pairs of process.rss: base + linear leak + uniform noise (+ spikes)."""
    rng = random.Random(seed)
    result = []
    for i in range(int(minutes * 60 / step_s)):
        t = 1000.0 + i * step_s
        rss = 500 * MB + leak_mb_per_10min * MB * (i * step_s) / 600
        rss += rng.uniform(-noise_mb, noise_mb) * MB
        if spikes and rng.random() < spikes:
            rss += 400 * MB  # a transient allocation
        result.append((t, make_snapshot(at=t, rss=round(rss))))
    return result


@pytest.mark.parametrize("seed", range(4))
def test_leak_detector_finds_a_noisy_leak(seed: int) -> None:
    rule = LeakDetector("process.rss", growth="50MB", window="10m")
    verdicts = run(rule, rss_series(seed=seed, minutes=20, leak_mb_per_10min=75))
    first = levels(verdicts).index(Level.WARNING) * 5.0  # seconds after the start
    assert first <= 600  # found within one window
    assert all(level is Level.WARNING for level in levels(verdicts)[int(720 / 5) :])
    breach = verdicts[-1].breaches[0]
    assert 55 * MB < breach.value < 95 * MB  # the estimated growth per 10 min
    assert breach.threshold == 50 * MB
    assert "grows" in verdicts[-1].reason


@pytest.mark.parametrize("seed", range(4))
def test_leak_detector_stays_quiet_on_noise_and_spikes(seed: int) -> None:
    rule = LeakDetector("process.rss", growth="50MB", window="10m")
    assert all(v.ok for v in run(rule, rss_series(seed=seed, minutes=30, leak_mb_per_10min=0)))
    spiky = rss_series(seed=seed, minutes=30, leak_mb_per_10min=0, spikes=0.1)
    assert all(v.ok for v in run(rule, spiky))


def test_robust_slope_ignores_outliers_where_least_squares_does_not() -> None:
    times = [float(t) for t in range(100)]
    values = [0.0] * 100
    for i in range(90, 100):
        values[i] = 1000.0  # 10 % outliers at the end
    assert theil_sen_slope(times, values) == 0.0
    slope = least_squares_slope(times, values)
    assert slope is not None
    assert slope > 1.0


def test_leak_detector_state_is_bounded_and_clears_when_growth_stops() -> None:
    rule = LeakDetector("process.rss", growth="50MB", window="10m", points=120)
    policy = Policy([rule])
    state = policy.new_state()
    t, rss, verdict = 0.0, 100.0 * MB, None
    while t < 1200:  # 20 min at 10 samples/s, leaking
        verdict = policy.evaluate(make_snapshot(at=t, rss=round(rss)), state)
        t += 0.1
        rss += 100 * MB / 600 * 0.1  # 100 MB per 10 min
    assert verdict is not None
    assert verdict.level is Level.WARNING
    series_state = state.rule_states[0]
    assert len(series_state.times) <= 121
    while t < 2400:  # then flat for 20 min
        verdict = policy.evaluate(make_snapshot(at=t, rss=round(rss)), state)
        t += 1.0
    assert verdict.ok
    assert len(series_state.times) <= 121


def test_leak_detector_is_inactive_without_the_metric() -> None:
    rule = LeakDetector("process.uss", growth="10MB", window="1m")
    assert all(v.ok for v in run(rule, [(t, make_snapshot(at=t)) for t in range(100)]))


# ------------------------------------------------------------------- time to limit ---


def filling(
    rate_bytes_per_s: float,
    *,
    limit: int = 16 * GiB,
    start_used: int = 8 * GiB,
    seconds: float = 120,
    step: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> list[tuple[float, Snapshot]]:
    rng = random.Random(seed)
    return [
        (
            i * step,
            make_snapshot(
                at=i * step,
                limit=limit,
                used=round(start_used + rate_bytes_per_s * i * step + rng.uniform(-noise, noise)),
            ),
        )
        for i in range(int(seconds / step))
    ]


def test_time_to_limit_estimates_and_fires_below_within() -> None:
    rule = TimeToLimit(within="5m", window="1m")
    rate = 20 * MB  # 20 MB/s, ~8 GiB left -> ~7 min
    verdicts = run(rule, filling(rate, seconds=300, noise=50 * MB))
    policy_levels = levels(verdicts)
    assert policy_levels[0] is Level.OK
    fired_at = policy_levels.index(Level.WARNING)
    # it fires when (limit - used) / rate drops under 300 s, give or take the noise
    used_then = 8 * GiB + rate * fired_at
    assert (16 * GiB - used_then) / rate == pytest.approx(300, abs=25)
    breach = verdicts[-1].breaches[0]
    left = (16 * GiB - (8 * GiB + rate * 299)) / rate
    assert breach.estimate_s == pytest.approx(left, rel=0.15)
    assert breach.value == breach.estimate_s
    assert breach.unit == "seconds"
    assert "reaches memory.limit" in verdicts[-1].reason


def test_time_to_limit_is_quiet_when_flat_or_shrinking_and_zero_past_the_limit() -> None:
    rule = TimeToLimit(within="5m", window="1m")
    assert all(v.ok for v in run(rule, filling(0, noise=100 * MB, seed=3)))
    assert all(v.ok for v in run(rule, filling(-10 * MB)))
    policy = Policy([rule])
    state = policy.new_state()
    for now, snapshot in filling(1 * MB, start_used=16 * GiB + GiB):
        verdict = policy.evaluate(snapshot, state, now=now)
    assert verdict.breaches[0].estimate_s == 0.0
    assert rule.estimate_s(state.rule_states[0]) == 0.0


def test_time_to_limit_against_a_fixed_size() -> None:
    rule = TimeToLimit(within="1m", metric="process.rss", limit="1GiB", window="30s")
    snapshots = [(t, make_snapshot(at=t, rss=900 * 2**20 + t * 2 * 2**20)) for t in range(60)]
    verdicts = run(rule, snapshots)  # 2 MiB/s, 124 MiB left at first
    assert levels(verdicts)[0] is Level.OK
    assert verdicts[-1].level is Level.WARNING
    assert verdicts[-1].breaches[0].estimate_s == pytest.approx((124 - 2 * 59) / 2, abs=1)


# -------------------------------------------------------------------------- policy ---


def test_verdict_is_the_max_of_breaches_and_serialises() -> None:
    policy = Policy(
        [
            Threshold("memory.percent", ">=", 85, clear=80),
            Threshold("memory.percent", ">=", 95, level=Level.CRITICAL, clear=90),
            Threshold("pressure.memory.some.avg10", ">", 10),
        ]
    )
    assert policy.evaluate(make_snapshot(memory_percent=50)).ok
    assert policy.evaluate(make_snapshot(memory_percent=50)) == Verdict(Level.OK, ())
    verdict = policy.evaluate(make_snapshot(memory_percent=97, psi_some=30.0))
    assert verdict.level is Level.CRITICAL
    assert len(verdict.breaches) == 3
    assert verdict.reason.startswith("CRITICAL: memory.percent >= 95%")
    plain = verdict.to_dict()
    assert plain["level"] == "CRITICAL"
    assert plain["breaches"][0]["level"] == "WARNING"
    json.dumps(plain)
    assert "CRITICAL" in verdict._repr_html_()
    assert isinstance(verdict.breaches[0], Breach)


def test_states_are_independent_and_bound_to_their_policy() -> None:
    policy = Policy([Threshold("memory.percent", ">", 85, for_="5s")])
    first, second = policy.new_state(), policy.new_state()
    for t in range(6):
        policy.evaluate(make_snapshot(at=t, memory_percent=90), first)
    assert not policy.evaluate(make_snapshot(at=6, memory_percent=90), first).ok
    assert policy.evaluate(make_snapshot(at=6, memory_percent=90), second).ok
    other = Policy([Threshold("memory.percent", ">", 85)])
    with pytest.raises(InvalidValue, match="another policy"):
        other.evaluate(make_snapshot(), first)
    # the policy's own state is used when none is passed, and now is snapshot.monotonic
    for t in range(6):
        verdict = policy.evaluate(make_snapshot(at=t, memory_percent=90))
    assert verdict.breaches[0].held_s == 5
    policy.reset()
    assert policy.evaluate(make_snapshot(at=7, memory_percent=90)).ok


def test_a_real_snapshot_is_judged() -> None:
    policy = Policy(
        [
            Threshold("memory.percent", ">=", 0),
            Threshold("process.rss", ">", 0),
            Threshold("pressure.memory.some.avg10", ">=", 0),
        ]
    )
    verdict = policy.evaluate(resguard.snapshot())
    assert verdict.level is Level.WARNING
    rules = {breach.rule for breach in verdict.breaches}
    assert "process.rss > 0 B" in rules
    assert "memory.percent >= 0%" in rules


# ------------------------------------------------------- reference model (hypothesis) ---

_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def reference_from_conditions(
    samples: list[tuple[float, bool, bool]], for_s: float, cooldown_s: float
) -> list[bool]:
    """The documented semantics over (t, trigger, hold) samples, from the whole history at
    each step (no state machine): fire when the run of triggering samples since the last
    clear has lasted for_s and the cooldown after that clear is over; stay firing while
    hold holds."""
    firing_history: list[bool] = []
    last_clear_t = -math.inf
    last_clear_index = -1
    for k, (t, trigger, hold) in enumerate(samples):
        was_firing = bool(firing_history) and firing_history[-1]
        if was_firing:
            firing = hold
            if not firing:
                last_clear_t, last_clear_index = t, k
        else:
            start = k
            while (
                start - 1 > last_clear_index
                and samples[start - 1][1]
                and not (firing_history[start - 1])
            ):
                start -= 1
            firing = trigger and t - samples[start][0] >= for_s and t >= last_clear_t + cooldown_s
        firing_history.append(firing)
    return firing_history


def reference_firing(
    samples: list[tuple[float, float | None]],
    op: str,
    value: float,
    clear: float,
    for_s: float,
    cooldown_s: float,
) -> list[bool]:
    """:func:`reference_from_conditions` for ``metric op value`` held by ``metric op clear``;
    a ``None`` metric is a false condition."""
    compare = _COMPARE[op]
    conditions = []
    for t, x in samples:
        trigger = x is not None and compare(x, value)
        conditions.append((t, trigger, x is not None and (trigger or compare(x, clear))))
    return reference_from_conditions(conditions, for_s, cooldown_s)


ThresholdCase = tuple[str, int, int, float, float, list[tuple[float, int | None]]]
ProcessCase = tuple[float, float, float, list[dict[int, float]]]


@st.composite
def threshold_cases(draw: st.DrawFn) -> ThresholdCase:
    op = draw(st.sampled_from([">", ">=", "<", "<="]))
    value = draw(st.integers(20, 80))
    gap = draw(st.sampled_from([0, 0, 1, 5, 10]))
    clear = value - gap if op in (">", ">=") else value + gap
    for_s = draw(st.sampled_from([0, 0, 1, 2.5, 5, 10]))
    cooldown_s = draw(st.sampled_from([0, 0, 1, 3, 10]))
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 7.0]),
                st.one_of(st.none(), st.integers(0, 100)),
            ),
            min_size=1,
            max_size=60,
        )
    )
    return op, value, clear, for_s, cooldown_s, steps


@settings(max_examples=300, deadline=None)
@given(threshold_cases())
def test_threshold_matches_the_reference_model(case: ThresholdCase) -> None:
    op, value, clear, for_s, cooldown_s, steps = case
    metric = "pressure.memory.some.avg10"
    rule = Threshold(metric, op, value, for_=for_s, clear=clear, cooldown=cooldown_s)
    policy = Policy([rule])
    state = policy.new_state()
    t = 0.0
    samples: list[tuple[float, float | None]] = []
    for dt, drawn in steps:
        t += dt
        samples.append((t, None if drawn is None else float(drawn)))
    expected = reference_firing(samples, op, value, clear, for_s, cooldown_s)
    previous = False
    for (now, x), want in zip(samples, expected, strict=True):
        snapshot = make_snapshot(at=now, psi_some=x)
        verdict = policy.evaluate(snapshot, state)
        firing = not verdict.ok
        assert firing == want, (now, x)
        if firing and not previous:  # OK -> firing: trigger held
            assert x is not None
            assert _COMPARE[op](x, value)
        if previous and not firing:  # firing -> OK: hold failed
            assert x is None or not _COMPARE[op](x, clear)
        previous = firing


@st.composite
def process_cases(draw: st.DrawFn) -> ProcessCase:
    threshold = 100.0
    clear = draw(st.sampled_from([100.0, 90.0, 50.0]))
    for_s = draw(st.sampled_from([0, 1, 3]))
    frames = draw(
        st.lists(
            st.dictionaries(
                st.integers(1, 4), st.sampled_from([0.0, 60.0, 95.0, 100.0, 150.0]), max_size=4
            ),
            min_size=1,
            max_size=30,
        )
    )
    return threshold, clear, for_s, frames


@settings(max_examples=200, deadline=None)
@given(process_cases())
def test_process_threshold_matches_a_per_process_reference(case: ProcessCase) -> None:
    threshold, clear, for_s, frames = case
    rule = ProcessThreshold(cpu_percent_above=threshold, clear=clear, for_=for_s)
    policy = Policy([rule])
    state = policy.new_state()
    # reference: each pid is its own Threshold series (absent = condition false)
    histories: dict[int, list[tuple[float, float | None]]] = {pid: [] for pid in range(1, 5)}
    for t, frame in enumerate(frames):
        for pid in histories:
            histories[pid].append((float(t), frame.get(pid)))
        expected = {
            pid
            for pid, samples in histories.items()
            if reference_firing(samples, ">", threshold, clear, for_s, 0)[-1]
        }
        rows = tuple(make_process(pid, f"p{pid}", cpu_percent=cpu) for pid, cpu in frame.items())
        verdict = policy.evaluate(make_snapshot(at=float(t), processes=rows), state)
        got = {o.pid for b in verdict.breaches for o in b.offenders}
        assert got == expected


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    noise_mb=st.floats(0, 20),
    step_s=st.sampled_from([1.0, 5.0, 13.0]),
    base_mb=st.integers(50, 5000),
)
def test_leak_detector_never_fires_on_bounded_random_noise(
    seed: int, noise_mb: float, step_s: float, base_mb: int
) -> None:
    rule = LeakDetector("process.rss", growth="50MB", window="10m")
    policy = Policy([rule])
    state = policy.new_state()
    rng = random.Random(seed)
    for i in range(int(1500 / step_s)):
        rss = (base_mb + rng.uniform(-noise_mb, noise_mb)) * MB
        verdict = policy.evaluate(make_snapshot(at=i * step_s, rss=round(rss)), state)
        assert verdict.ok


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 40.0), st.floats(-1e9, 1e9)), min_size=1, max_size=300))
def test_incremental_theil_sen_equals_a_full_recomputation(
    steps: list[tuple[float, float]],
) -> None:
    rule = LeakDetector("process.rss", growth="50MB", window="60s", points=12)
    state = rule.new_state()
    now = 0.0
    for dt, value in steps:
        now += dt
        state.add(now, value, rule.width_s, rule.window_s)
        assert len(state.times) <= 12
        assert not state.times or state.times[0] >= now - rule.window_s - rule.width_s
        expected = theil_sen_slope(state.times, state.values)
        assert state.median_slope() == expected


def test_trend_rules_survive_a_clock_that_goes_back() -> None:
    policy = Policy(
        [
            LeakDetector("process.rss", growth="1MB", window="1m", points=8),
            TimeToLimit(within="1m", metric="process.rss", limit="1GiB", window="8s", points=4),
        ]
    )
    state = policy.new_state()
    times = [0, 10, 20, 30, 5, 6, 40, 41, 7.5, 50, 60, 70, 80, 90, 100]
    for i, t in enumerate(times):
        verdict = policy.evaluate(make_snapshot(at=float(t), rss=100 * MB + i * 5 * MB), state)
        assert verdict.level in (Level.OK, Level.WARNING)
    for rule_state in state.rule_states:
        assert list(rule_state.times) == sorted(rule_state.times)


@settings(max_examples=200, deadline=None)
@given(
    clear=st.sampled_from([50.0, 40.0]),
    at_least=st.integers(1, 3),
    for_s=st.sampled_from([0, 1, 3]),
    cooldown_s=st.sampled_from([0, 2]),
    frames=st.lists(
        st.one_of(st.none(), st.lists(st.sampled_from([0.0, 45.0, 50.0, 60.0]), max_size=5)),
        min_size=1,
        max_size=30,
    ),
)
def test_process_count_matches_the_reference_model(
    clear: float, at_least: int, for_s: float, cooldown_s: float, frames: list[list[float] | None]
) -> None:
    rule = ProcessCount(
        cpu_percent_above=50, at_least=at_least, for_=for_s, clear=clear, cooldown=cooldown_s
    )
    policy = Policy([rule])
    state = policy.new_state()
    conditions = []
    for t, frame in enumerate(frames):
        cpus = frame or []
        conditions.append(
            (
                float(t),
                sum(c > 50 for c in cpus) >= at_least,
                sum(c > clear for c in cpus) >= at_least,
            )
        )
        expected = reference_from_conditions(conditions, for_s, cooldown_s)[-1]
        rows = (
            None
            if frame is None
            else tuple(
                make_process(pid, f"p{pid}", cpu_percent=cpu) for pid, cpu in enumerate(frame, 1)
            )
        )
        verdict = policy.evaluate(make_snapshot(at=float(t), processes=rows), state)
        assert (not verdict.ok) == expected
        if not verdict.ok:
            assert verdict.breaches[0].value == sum(c > clear for c in cpus)


# -------------------------------------------------------------- container threshold ---


def test_container_threshold_names_the_container_over_its_limit() -> None:
    from resguard.rules import ContainerThreshold

    rule = ContainerThreshold(percent_above=90, for_="30s", clear=80)
    policy = Policy([rule])
    state = policy.new_state()

    def judge(at: float, used_mb: int) -> Verdict:
        containers = (
            make_container("postgres", memory_used=used_mb * MB, memory_limit=100 * MB),
            make_container("redis", memory_used=10 * MB, memory_limit=100 * MB),
            make_container("unlimited", memory_used=5 * GiB),
        )
        return policy.evaluate(make_snapshot(at=at, containers=containers), state)

    assert judge(0, 95).ok  # pending: the grace period runs
    assert judge(20, 95).ok
    fired = judge(31, 95)
    assert fired.level == Level.WARNING
    (breach,) = fired.breaches
    assert [(o.name, o.pid, o.id) for o in breach.offenders] == [("postgres", None, "postgres" * 3)]
    assert breach.value == pytest.approx(95)
    assert breach.held_s == pytest.approx(31)
    assert "postgrespost postgres 95.0%" in breach.message
    assert judge(40, 85).level == Level.WARNING  # above clear: still firing (hysteresis)
    assert judge(50, 79).ok  # below clear: cleared
    assert judge(51, 95).ok  # and pending again from here


def test_container_threshold_on_working_set_and_without_containers() -> None:
    from resguard.rules import ContainerThreshold

    rule = ContainerThreshold(used_above="1GiB")
    state = rule.new_state()
    big = (make_container("ollama", memory_used=2 * GiB),)
    breach = rule.step(make_snapshot(at=0, containers=big), state, 0)
    assert breach is not None
    assert breach.offenders[0].name == "ollama"
    assert rule.step(make_snapshot(at=1), state, 1) is None  # no Docker source: inactive
    assert state == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one"),
        ({"percent_above": 90, "used_above": "1GiB"}, "exactly one"),
        ({"used_above": "90%"}, "percent_above"),
        ({"percent_above": "90%%"}, "90%%"),
        ({"used_above": "20 GB/s"}, "20 GB/s"),
        ({"percent_above": 90, "clear": 95}, "clear"),
    ],
)
def test_container_threshold_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    from resguard.rules import ContainerThreshold

    with pytest.raises((InvalidValue, InvalidType), match=match):
        ContainerThreshold(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------- hostile arguments: a closed error tree ---


@pytest.mark.parametrize("op", [[], {}, None, 5, b">", (">",)])
def test_an_op_of_the_wrong_type_is_an_invalid_type(op: object) -> None:
    with pytest.raises(InvalidType, match=r"op=.*is not a comparison"):
        Threshold("memory.percent", op, 85)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("metric", "op", "value"),
    [
        ("memory.percent", ">", 150),
        ("memory.percent", ">=", "150%"),
        ("memory.percent", "<", 101),
        ("swap.percent", ">", "100.5"),
        ("cpu.percent", ">", 200),
        ("pressure.memory.some.avg10", ">", 120),
        ("memory.percent", ">", 100),  # can never fire: never above 100
        ("memory.percent", "<", 0),  # can never fire: never below 0
        ("cpu.load_1m", "<", 0),
    ],
)
def test_a_threshold_that_can_never_fire_is_rejected(metric: str, op: str, value: object) -> None:
    with pytest.raises(InvalidValue) as info:
        Threshold(metric, op, value)  # type: ignore[arg-type]
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_a_forecast_that_can_never_fire_is_rejected() -> None:
    with pytest.raises(InvalidValue, match="within=0"):
        TimeToLimit(within=0)


def test_percentages_that_may_exceed_100_are_still_accepted() -> None:
    assert Threshold("process.cpu_percent", ">", 150).kind == "percent"  # 100 per core
    assert ProcessThreshold(cpu_percent_above=400).name == "a process cpu_percent > 400%"
    Threshold("memory.percent", ">=", 100)
    with pytest.raises(InvalidValue, match="150"):
        ContainerThreshold(percent_above=150)


HUGE = [10**400, "1e999", float("inf"), -(10**400)]


@pytest.mark.parametrize("huge", HUGE, ids=["10**400", "'1e999'", "inf", "-10**400"])
@pytest.mark.parametrize(
    "build",
    [
        lambda v: Threshold("cpu.load_1m", ">", v),
        lambda v: Threshold("memory.used", ">", v),
        lambda v: Threshold("memory.percent", ">", v),
        lambda v: Threshold("memory.percent", ">", 80, for_=v),
        lambda v: ProcessThreshold(cpu_percent_above=v),
        lambda v: ProcessThreshold(rss_above=v),
        lambda v: ProcessCount(cpu_percent_above=v),
        lambda v: ProcessCount(cpu_percent_above=50, at_least=v),
        lambda v: ContainerThreshold(used_above=v),
        lambda v: LeakDetector(growth=v),
        lambda v: LeakDetector("cpu.load_1m", growth=v),
        lambda v: LeakDetector(window=v),
        lambda v: TimeToLimit(within=v),
        lambda v: TimeToLimit(limit=v),
    ],
    ids=[
        "load",
        "used",
        "percent",
        "for_",
        "proc-cpu",
        "proc-rss",
        "count-cpu",
        "at_least",
        "container",
        "leak",
        "leak-plain",
        "window",
        "within",
        "limit",
    ],
)
def test_numbers_beyond_float_range_are_invalid_values_not_overflow(
    build: Callable[[Any], object], huge: object
) -> None:
    with pytest.raises((InvalidValue, InvalidType)) as info:
        build(huge)
    if huge == "1e999":
        assert "'1e999'" in str(info.value)
        assert "inf" not in str(info.value).replace("info", "")


ARGUMENT = st.one_of(
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**60, max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "85%",
            "150%",
            "2GiB",
            "1e999",
            "-5",
            "nan",
            "10s",
            ">",
            "warning",
            "memory.percent",
            "memory.limit",
            Level.OK,
            Level.CRITICAL,
        ]
    ),
    st.lists(st.integers(), max_size=2),
    st.just(type),
    st.just({}),
)
CONSTRUCTORS: dict[str, Callable[[Any], object]] = {
    "Threshold.metric": lambda v: Threshold(v, ">", 80),
    "Threshold.op": lambda v: Threshold("memory.percent", v, 80),
    "Threshold.value": lambda v: Threshold("memory.percent", ">", v),
    "Threshold.bytes": lambda v: Threshold("memory.used", ">", v),
    "Threshold.plain": lambda v: Threshold("cpu.load_1m", ">", v),
    "Threshold.level": lambda v: Threshold("memory.percent", ">", 80, level=v),
    "Threshold.for_": lambda v: Threshold("memory.percent", ">", 80, for_=v),
    "Threshold.clear": lambda v: Threshold("memory.percent", ">", 80, clear=v),
    "Threshold.cooldown": lambda v: Threshold("memory.percent", ">", 80, cooldown=v),
    "Threshold.name": lambda v: Threshold("memory.percent", ">", 80, name=v),
    "ProcessThreshold.cpu": lambda v: ProcessThreshold(cpu_percent_above=v),
    "ProcessThreshold.rss": lambda v: ProcessThreshold(rss_above=v),
    "ProcessThreshold.clear": lambda v: ProcessThreshold(cpu_percent_above=90, clear=v),
    "ProcessThreshold.for_": lambda v: ProcessThreshold(cpu_percent_above=90, for_=v),
    "ProcessThreshold.level": lambda v: ProcessThreshold(cpu_percent_above=90, level=v),
    "ProcessThreshold.name": lambda v: ProcessThreshold(cpu_percent_above=90, name=v),
    "ContainerThreshold.percent": lambda v: ContainerThreshold(percent_above=v),
    "ContainerThreshold.used": lambda v: ContainerThreshold(used_above=v),
    "ContainerThreshold.clear": lambda v: ContainerThreshold(percent_above=90, clear=v),
    "ContainerThreshold.name": lambda v: ContainerThreshold(percent_above=90, name=v),
    "ProcessCount.cpu": lambda v: ProcessCount(cpu_percent_above=v),
    "ProcessCount.at_least": lambda v: ProcessCount(cpu_percent_above=50, at_least=v),
    "ProcessCount.cooldown": lambda v: ProcessCount(cpu_percent_above=50, cooldown=v),
    "ProcessCount.name": lambda v: ProcessCount(cpu_percent_above=50, name=v),
    "LeakDetector.metric": lambda v: LeakDetector(v),
    "LeakDetector.growth": lambda v: LeakDetector(growth=v),
    "LeakDetector.window": lambda v: LeakDetector(window=v),
    "LeakDetector.clear": lambda v: LeakDetector(clear=v),
    "LeakDetector.points": lambda v: LeakDetector(points=v),
    "LeakDetector.min_fill": lambda v: LeakDetector(min_fill=v),
    "LeakDetector.level": lambda v: LeakDetector(level=v),
    "LeakDetector.name": lambda v: LeakDetector(name=v),
    "TimeToLimit.within": lambda v: TimeToLimit(within=v),
    "TimeToLimit.metric": lambda v: TimeToLimit(metric=v),
    "TimeToLimit.limit": lambda v: TimeToLimit(limit=v),
    "TimeToLimit.window": lambda v: TimeToLimit(window=v),
    "TimeToLimit.clear": lambda v: TimeToLimit(clear=v),
    "TimeToLimit.points": lambda v: TimeToLimit(points=v),
    "TimeToLimit.min_fill": lambda v: TimeToLimit(min_fill=v),
    "TimeToLimit.name": lambda v: TimeToLimit(name=v),
    "Policy": lambda v: Policy(v),
    "Policy.rule": lambda v: Policy([v]),
}


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
@settings(max_examples=60)
@given(value=ARGUMENT)
def test_every_rule_argument_is_accepted_or_rejected_in_the_error_tree(
    name: str, value: object
) -> None:
    try:
        rule = CONSTRUCTORS[name](value)
    except (InvalidValue, InvalidType):  # both ResguardError and ValueError/TypeError
        return
    if not isinstance(rule, Policy):
        assert isinstance(rule, Rule)
        rule = Policy([rule])  # what was accepted also judges a snapshot without raising
    rule.evaluate(make_snapshot())


# ----------------------------------------------------------------- unknown is not OK ---


MEMINFO_EMPTY = Fault("memory", "/proc/meminfo", "empty", "no numbers in the file")


def unknown_memory(snapshot: Snapshot, *faults: Fault) -> Snapshot:
    """*snapshot* with every memory number unknown, explained by *faults*."""
    return testing.unknown_memory(snapshot, *(faults or (MEMINFO_EMPTY,)))


def test_a_metric_unknown_because_of_a_fault_is_reported_not_judged_ok() -> None:
    policy = Policy([Threshold("memory.percent", ">=", 85, name="memory high")])
    verdict = policy.evaluate(unknown_memory(make_snapshot()))
    assert verdict.level is Level.OK
    assert not verdict.known
    assert verdict.unknown == ("memory.percent: /proc/meminfo empty",)
    assert verdict.reason == "OK (unknown: memory.percent: /proc/meminfo empty)"
    assert "unknown" in verdict._repr_html_()
    assert verdict.to_dict()["unknown"] == ["memory.percent: /proc/meminfo empty"]
    known = policy.evaluate(make_snapshot())
    assert known.known
    assert known.reason == "OK"


def test_an_unknown_limit_makes_a_share_of_it_unknown() -> None:
    used = Threshold("memory.used", ">", "80%", name="used above 80% of limit")
    snapshot = make_snapshot(memory_percent=90)
    limitless = attrs.evolve(
        snapshot,
        memory=attrs.evolve(snapshot.memory, limit=None, percent=None),
        faults=(Fault("memory.limit", "/sys/fs/cgroup/memory.max", "garbage", "'12x'"),),
    )
    verdict = Policy([used]).evaluate(limitless)
    assert verdict.unknown == ("memory.limit: /sys/fs/cgroup/memory.max garbage",)
    assert verdict.ok
    assert Policy([used]).evaluate(snapshot).level is Level.WARNING


def test_a_firing_rule_keeps_firing_while_its_metric_is_unknown() -> None:
    rule = Threshold("memory.percent", ">=", 90, level=Level.CRITICAL, clear=80)
    snapshots = [
        (0, make_snapshot(at=0, memory_percent=95)),
        (1, unknown_memory(make_snapshot(at=1))),
        (2, unknown_memory(make_snapshot(at=2))),
        (3, make_snapshot(at=3, memory_percent=85)),  # known, holds above clear
        (4, make_snapshot(at=4, memory_percent=50)),
    ]
    verdicts = run(rule, snapshots)
    assert levels(verdicts) == [Level.CRITICAL] * 4 + [Level.OK]
    held = verdicts[2].breaches[0]
    assert held.value == 95.0  # the last known figure
    assert held.held_s == 2
    assert held.since == 0
    assert verdicts[2].unknown == ("memory.percent: /proc/meminfo empty",)
    assert verdicts[3].known


def test_an_unknown_sample_neither_confirms_nor_resets_a_pending_rule() -> None:
    rule = Threshold("memory.percent", ">", 85, for_="3s")
    values = [90, None, 90, 90]
    snapshots = [
        (
            t,
            make_snapshot(at=t, memory_percent=v)
            if v is not None
            else unknown_memory(make_snapshot(at=t)),
        )
        for t, v in enumerate(values)
    ]
    verdicts = run(rule, snapshots)
    assert levels(verdicts) == [Level.OK, Level.OK, Level.OK, Level.WARNING]
    assert verdicts[3].breaches[0].since == 0


def test_trend_rules_keep_firing_while_their_metric_is_unknown() -> None:
    forecast = TimeToLimit(within="2m", window="1m", clear="3m")
    leak = LeakDetector("process.rss", growth="50MB", window="100s", points=10)
    limit = 16 * GiB
    policy = Policy([forecast, leak])
    state = policy.new_state()
    verdict = None
    for t in range(200):
        snapshot = make_snapshot(
            at=t, used=8 * GiB + t * 40 * 2**20, limit=limit, rss=30 * MB + t * MB
        )
        verdict = policy.evaluate(snapshot, state, now=t)
    assert verdict is not None
    assert {b.rule for b in verdict.breaches} == {forecast.name, leak.name}
    blind = unknown_memory(
        make_snapshot(at=200),
        MEMINFO_EMPTY,
        Fault("process", "/proc/self/statm", "vanished", "gone"),
    )
    blind = attrs.evolve(blind, process=attrs.evolve(blind.process, rss=None))
    verdict = policy.evaluate(blind, state, now=200)
    assert {b.rule for b in verdict.breaches} == {forecast.name, leak.name}
    assert set(verdict.unknown) == {
        "memory.used: /proc/meminfo empty",
        "memory.limit: /proc/meminfo empty",
        "process.rss: /proc/self/statm vanished",
    }


def test_a_metric_absent_without_a_fault_is_still_inactive_not_unknown() -> None:
    rule = Threshold("pressure.memory.some.avg10", ">", 10)
    verdicts = run(
        rule, [(0, make_snapshot(at=0, psi_some=20.0)), (1, make_snapshot(at=1, psi_some=None))]
    )
    assert levels(verdicts) == [Level.WARNING, Level.OK]
    assert verdicts[1].known


def test_every_rule_judges_a_snapshot_with_every_number_unknown() -> None:
    policy = Policy(
        [
            Threshold("memory.percent", ">=", 80),
            Threshold("memory.used", ">", "50%"),
            Threshold("swap.percent", ">", 50),
            Threshold("cpu.load_1m", ">", 4),
            Threshold("process.rss", ">", "10%"),
            ProcessThreshold(rss_above="10%"),
            ProcessCount(rss_above="5%", at_least=1),
            ContainerThreshold(percent_above=90),
            LeakDetector(),
            TimeToLimit(),
            TimeToLimit(limit="swap.total", metric="swap.used"),
        ]
    )
    state = policy.new_state()
    base = make_snapshot(
        processes=table((10, "a", 50.0)), containers=(make_container("db", memory_used=GiB),)
    )
    blind = unknown_memory(base, MEMINFO_EMPTY)
    blind = attrs.evolve(
        blind,
        swap=attrs.evolve(blind.swap, total=None, used=None, free=None, percent=None),
        cpu=attrs.evolve(blind.cpu, percent=None, load_1m=None, load_5m=None, load_15m=None),
        process=attrs.evolve(
            blind.process, rss=None, vms=None, cpu_percent=None, num_threads=None, children_rss=None
        ),
        processes=(attrs.evolve(make_process(11), rss=None, cpu_percent=None),),  # type: ignore[arg-type]
    )
    for t in range(30):
        verdict = policy.evaluate(attrs.evolve(blind, monotonic=float(t)), state, now=t)
        assert verdict.ok
    assert "memory.percent: /proc/meminfo empty" in verdict.unknown


class BrokenRule:
    name = "broken"
    level = Level.CRITICAL

    def __init__(self) -> None:
        self.failing = True

    def new_state(self) -> None:
        return None

    def step(self, snapshot: Snapshot, state: None, now: float) -> Breach | None:
        if self.failing:
            raise ZeroDivisionError(f"bug at {now}")
        return None


def test_a_rule_that_raises_is_reported_once_and_the_others_still_judge(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    broken = BrokenRule()
    policy = Policy([broken, Threshold("memory.percent", ">", 50, name="memory high")])
    caplog.set_level(logging.WARNING, logger="resguard")
    for t in range(100):
        verdict = policy.evaluate(make_snapshot(at=t, memory_percent=60))
        assert verdict.level is Level.WARNING
        assert [b.rule for b in verdict.breaches] == ["memory high"]
        assert verdict.unknown == (f"rule 'broken' failed: ZeroDivisionError: bug at {t}",)
    failing = [r for r in caplog.records if "broken" in r.getMessage()]
    assert len(failing) == 1
    broken.failing = False
    assert policy.evaluate(make_snapshot(at=100, memory_percent=60)).known
    assert sum("works again" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("not a snapshot",), {}),
        ((None,), {}),
        ((make_snapshot(), "state"), {}),
        ((make_snapshot(),), {"now": "soon"}),
        ((make_snapshot(),), {"now": True}),
    ],
)
def test_evaluate_rejects_what_is_not_a_snapshot_state_or_time(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidType):
        Policy([Threshold("memory.percent", ">", 80)]).evaluate(*args, **kwargs)


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf, 10**400])
def test_evaluate_rejects_a_time_that_is_not_finite(now: float) -> None:
    with pytest.raises(InvalidValue, match="now="):
        Policy([Threshold("memory.percent", ">", 80)]).evaluate(make_snapshot(), now=now)


def test_a_fault_explains_only_the_metrics_it_covers() -> None:
    load = Threshold("cpu.load_1m", ">", 4, name="load")
    snapshot = make_snapshot()
    no_loadavg = attrs.evolve(
        snapshot,
        cpu=attrs.evolve(snapshot.cpu, load_1m=None),
        faults=(Fault("cpu.percent", "/proc/stat", "garbage", "x"),),
    )
    assert Policy([load]).evaluate(no_loadavg).known  # absent, not explained by /proc/stat
    explained = attrs.evolve(
        no_loadavg, faults=(Fault("cpu.load_1m", "/proc/loadavg", "empty", ""),)
    )
    assert Policy([load]).evaluate(explained).unknown == ("cpu.load_1m: /proc/loadavg empty",)


class GarbageRule:
    """A custom rule whose step() answers something that is not a Breach."""

    name = "garbage"
    level = Level.WARNING

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def new_state(self) -> None:
        return None

    def step(self, snapshot: Snapshot, state: None, now: float) -> Any:
        return self.answer


@pytest.mark.parametrize(
    "answer",
    [
        "not a breach",
        0,
        True,
        {"level": 2},
        attrs.evolve(
            Breach("x", "memory.percent", ">", 1.0, 0.0, Level.CRITICAL, 0.0, 0.0, 0.0),
            level=7,  # type: ignore[arg-type]
        ),
    ],
)
def test_a_rule_answering_garbage_is_a_failing_rule_not_a_broken_policy(
    answer: object, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="resguard")
    policy = Policy([GarbageRule(answer), Threshold("memory.percent", ">", 50, name="high")])
    for t in range(20):
        verdict = policy.evaluate(make_snapshot(at=t, memory_percent=60))
        assert verdict.level is Level.WARNING
        assert [b.rule for b in verdict.breaches] == ["high"]
        assert len(verdict.unknown) == 1
        assert verdict.unknown[0].startswith("rule 'garbage' failed: InvalidValue: step() returned")
    assert sum("garbage" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("unit", ["bytes", "percent", "seconds", "count", ""])
@pytest.mark.parametrize("figure", [math.nan, math.inf, -math.inf, 10**400, -5.0, 1e300])
def test_a_breach_with_a_non_finite_figure_still_has_a_message(unit: str, figure: float) -> None:
    breach = Breach(
        "r",
        "process.rss",
        ">",
        figure,
        figure,
        Level.WARNING,
        0.0,
        0.0,
        figure if unit == "seconds" else 2.0,
        unit,
        offenders=(resguard.rules.Offender(7, "p", figure, 0.0),),
    )
    assert breach.message.startswith("r: ")
    assert Verdict(Level.WARNING, (breach,)).reason.startswith("WARNING: r: ")


def test_a_policy_judging_an_infinite_rss_says_so_instead_of_raising() -> None:
    policy = Policy([Threshold("process.rss", ">=", "1GiB", name="big")])
    snap = make_snapshot()
    snap = attrs.evolve(snap, process=attrs.evolve(snap.process, rss=math.inf))  # type: ignore[arg-type]
    assert policy.evaluate(snap).reason == "WARNING: big: inf"


def test_a_rule_failing_on_every_other_sample_is_logged_once_not_per_flap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    broken = BrokenRule()
    policy = Policy([broken])
    caplog.set_level(logging.WARNING, logger="resguard")
    for t in range(100):
        broken.failing = t % 2 == 0
        verdict = policy.evaluate(make_snapshot(at=t))
        assert verdict.known is not broken.failing
    assert sum("broken" in r.getMessage() for r in caplog.records) == 2  # failing, works again


# --------------------------------------------- the shared sustain state machine ---

_samples = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.5, 10.0]),  # seconds since the last sample
        st.booleans(),  # trigger
        st.booleans(),  # hold beyond the trigger (the hysteresis band)
    ),
    max_size=80,
)


def _drive(
    for_s: float, cooldown_s: float, samples: list[tuple[float, bool, bool]]
) -> list[tuple[float, bool, bool, bool, float | None]]:
    """Advance a Sustain through *samples* on an injected clock; return per sample
    (now, trigger, hold, fires, firing_since)."""
    clock = ManualClock(start_s=500.0)
    state = Sustain(for_s=for_s, cooldown_s=cooldown_s)
    trace = []
    for dt, trigger, band in samples:
        clock.advance(dt)
        hold = trigger or band
        fires = state.advance(clock(), trigger, hold)
        trace.append((clock(), trigger, hold, fires, state.firing_since))
    return trace


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0.0, 1.0, 3.0, 10.0]), st.sampled_from([0.0, 2.0, 5.0]), _samples)
def test_sustain_never_fires_before_for_and_only_on_an_unbroken_trigger(
    for_s: float, cooldown_s: float, samples: list[tuple[float, bool, bool]]
) -> None:
    trace = _drive(for_s, cooldown_s, samples)
    was_firing = False
    for index, (now, trigger, _, fires, since) in enumerate(trace):
        if fires and not was_firing:
            assert trigger
            # pending began at a sample of an unbroken run of triggers ending now
            run_start = index
            while run_start > 0 and trace[run_start - 1][1] and not trace[run_start - 1][3]:
                run_start -= 1
            assert since is not None
            assert since >= trace[run_start][0]
            assert now - since >= for_s
        was_firing = fires


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0.0, 1.0, 3.0]), st.sampled_from([0.0, 2.0, 5.0]), _samples)
def test_sustain_clears_only_past_clear_and_respects_the_cooldown(
    for_s: float, cooldown_s: float, samples: list[tuple[float, bool, bool]]
) -> None:
    trace = _drive(for_s, cooldown_s, samples)
    was_firing, cleared_at = False, -math.inf
    for now, _, hold, fires, since in trace:
        if was_firing:
            assert fires == hold  # firing holds exactly while `hold` does: hysteresis
            if not fires:
                cleared_at = now
                assert since is None
        elif fires:
            assert now >= cleared_at + cooldown_s  # never re-fires inside the cooldown
        was_firing = fires


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([0.0, 1.0, 3.0]), st.sampled_from([0.0, 2.0]), _samples)
def test_sustain_fires_once_the_trigger_has_held_for_for_past_the_cooldown(
    for_s: float, cooldown_s: float, samples: list[tuple[float, bool, bool]]
) -> None:
    clock = ManualClock(start_s=500.0)
    state = Sustain(for_s=for_s, cooldown_s=cooldown_s)
    for dt, trigger, band in samples:
        clock.advance(dt)
        state.advance(clock(), trigger, trigger or band)
    clock.advance(1.0)
    assert not state.advance(clock(), False, False)  # whatever came before: clear now
    clock.advance(cooldown_s)  # and let the cooldown run out
    started = clock()
    while not state.advance(clock(), True):
        assert clock() - started < for_s  # fires at the first sample `for_s` after the start
        clock.advance(0.5)
    assert state.firing_since == started
    assert clock() - started >= for_s


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0.0, 1.0, 2.5, 10.0]), st.sampled_from([0.0, 1.0, 3.0, 10.0]), _samples)
def test_sustain_matches_the_reference_model(
    for_s: float, cooldown_s: float, samples: list[tuple[float, bool, bool]]
) -> None:
    trace = _drive(for_s, cooldown_s, samples)
    conditions = [(now, trigger, hold) for now, trigger, hold, _, _ in trace]
    assert [fires for *_, fires, _ in trace] == reference_from_conditions(
        conditions, for_s, cooldown_s
    )


def test_sustain_hold_defaults_to_the_trigger_and_bad_durations_are_refused() -> None:
    state = Sustain(for_s=0.0)
    assert state.advance(1.0, True)
    assert state.advance(2.0, True)
    assert not state.advance(3.0, False)  # no hysteresis without `hold`
    assert state.firing_since is None
    assert state.pending_since is None
    with pytest.raises(InvalidValue, match="for_s=-1"):
        Sustain(for_s=-1)
    for hostile in (math.nan, math.inf, 10**400, -(10**400)):
        with pytest.raises(InvalidValue, match="cooldown_s="):
            Sustain(cooldown_s=hostile)
    with pytest.raises(InvalidType, match="cooldown_s='5s'"):
        Sustain(cooldown_s="5s")  # type: ignore[arg-type]
    assert Sustain.__module__ == "resguard.rules"
    assert resguard.rules.SustainState is Sustain


def test_threshold_state_is_the_shared_sustain_machine() -> None:
    rule = Threshold("memory.percent", ">=", 85, for_="2s", clear=80, cooldown="5s")
    state = rule.new_state()
    assert isinstance(state, Sustain)
    assert (state.for_s, state.cooldown_s) == (2.0, 5.0)


def test_a_flapping_rule_is_logged_again_after_a_minute_of_the_policy_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    clock = ManualClock()
    broken = BrokenRule()
    policy = Policy([broken], clock=clock)
    caplog.set_level(logging.WARNING, logger="resguard")

    def flap(times: int) -> int:
        for t in range(times):
            broken.failing = t % 2 == 0
            policy.evaluate(make_snapshot(at=t))
        return sum("broken" in r.getMessage() for r in caplog.records)

    assert flap(10) == 2  # failing, works again: once within the minute
    clock.advance(59.0)
    assert flap(10) == 2
    clock.advance(1.0)  # a minute after the first log: the next failure is logged again
    assert flap(10) == 4


def test_a_policy_clock_must_be_callable() -> None:
    with pytest.raises(InvalidType, match="clock=5 is not a clock"):
        Policy([], clock=5)  # type: ignore[arg-type]
