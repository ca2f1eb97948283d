"""The heat rules: a sensor above its high mark (or a figure) for 30 s, fans above an rpm
for 5 minutes, macOS's thermal pressure; sustained per sensor and fan, naming them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resguard
from resguard._probes.thermal import PmsetTherm, pressure_rank, thermal_pressure
from resguard.rules import (
    THERMAL_STATES,
    FanThreshold,
    Level,
    Policy,
    Rule,
    SensorThreshold,
    ThermalPressure,
    Threshold,
    Verdict,
    thermal_rank,
)
from resguard.snapshot import FanSpeed, Fault, HeatInfo, Snapshot, TemperatureSensor
from resguard.testing import make_snapshot


def sensor(
    current: float, high: float | None = 80.0, chip: str = "coretemp", label: str = "Package id 0"
) -> TemperatureSensor:
    return TemperatureSensor(chip, label, current, high, None if high is None else high + 20)


def fan(rpm: float, label: str = "fan1") -> FanSpeed:
    return FanSpeed("thinkpad", label, rpm)


def hot(
    at: float,
    sensors: Sequence[TemperatureSensor] = (),
    fans: Sequence[FanSpeed] = (),
    pressure: str | PmsetTherm | None = None,
) -> Snapshot:
    """A snapshot at *at* with this heat; *pressure* a state's name or what pmset said."""
    text: str | None
    rank: int | None
    if isinstance(pressure, PmsetTherm):
        text, rank = thermal_pressure(pressure), pressure_rank(pressure)
    else:
        text, rank = pressure, thermal_rank(pressure)
    heat = HeatInfo.from_readings(tuple(sensors), tuple(fans), text, "hwmon", thermal_rank=rank)
    return attrs.evolve(make_snapshot(at=at), heat=heat)


def run(rule: Rule, snapshots: Iterable[Snapshot]) -> list[Verdict]:
    policy = Policy([rule])
    state = policy.new_state()
    return [policy.evaluate(snapshot, state) for snapshot in snapshots]


# ------------------------------------------------------------------------- sensors ---


def test_a_sensor_above_its_high_mark_for_30_seconds_names_the_sensor() -> None:
    rule = SensorThreshold(above_high=True, for_="30s")
    snaps = [hot(float(t), [sensor(92.0), sensor(50.0, label="Core 1")]) for t in range(32)]
    verdicts = run(rule, snaps)
    assert all(v.ok for v in verdicts[:30])
    (breach,) = verdicts[30].breaches
    assert (breach.value, breach.threshold, breach.unit) == (92.0, 80.0, "celsius")
    assert [(o.pid, o.name, o.value, o.unit) for o in breach.offenders] == [
        (None, "coretemp Package id 0", 92.0, "celsius")
    ]
    assert breach.message == (
        "a sensor above its high mark for 30s: 92 °C (coretemp Package id 0 92 °C) for 30s"
    )
    assert verdicts[30].to_dict()["breaches"][0]["offenders"][0]["name"] == (
        "coretemp Package id 0"
    )


def test_each_sensor_is_judged_against_its_own_mark_and_one_without_a_mark_is_skipped() -> None:
    rule = SensorThreshold(above_high=True)
    rows = [
        sensor(70.0, high=65.0, chip="nvme", label="Composite"),
        sensor(85.0, high=100.0),
        sensor(120.0, high=None, chip="acpitz", label="temp1"),
    ]
    (breach,) = run(rule, [hot(0.0, rows)])[0].breaches
    assert [o.name for o in breach.offenders] == ["nvme Composite"]
    assert breach.threshold == 65.0


def test_a_dip_below_the_mark_restarts_the_30_seconds() -> None:
    rule = SensorThreshold(above_high=True, for_=30)
    temps = [90.0] * 20 + [79.0] + [90.0] * 31
    verdicts = run(rule, [hot(float(t), [sensor(c)]) for t, c in enumerate(temps)])
    assert all(v.ok for v in verdicts[:51])
    assert verdicts[51].level is Level.WARNING


def test_a_firing_sensor_clears_at_margin_below_its_mark() -> None:
    rule = SensorThreshold(above_high=True, margin_celsius=5)
    temps = [85.0, 79.0, 75.5, 75.0, 82.0]
    levels = [v.level for v in run(rule, [hot(float(t), [sensor(c)]) for t, c in enumerate(temps)])]
    assert levels == [Level.WARNING, Level.WARNING, Level.WARNING, Level.OK, Level.WARNING]


def test_a_fixed_figure_and_its_clear_level() -> None:
    rule = SensorThreshold(celsius_above="90°C", clear=85, level="critical")
    temps = [91.0, 86.0, 85.0, 89.0, 90.5]
    verdicts = run(rule, [hot(float(t), [sensor(c, high=None)]) for t, c in enumerate(temps)])
    assert [v.level for v in verdicts] == [
        Level.CRITICAL,
        Level.CRITICAL,
        Level.OK,
        Level.OK,
        Level.CRITICAL,
    ]
    assert verdicts[0].breaches[0].threshold == 90.0
    assert rule.name == "a sensor above 90 °C"


def test_heat_not_sampled_is_inactive_and_forgets() -> None:
    rule = SensorThreshold(above_high=True, for_=10)
    snaps = [hot(0.0, [sensor(95.0)]), make_snapshot(at=5.0), hot(10.0, [sensor(95.0)])]
    verdicts = run(rule, snaps)
    assert [v.ok for v in verdicts] == [True, True, True]  # pending was forgotten at 5 s
    assert verdicts[1].known


def test_heat_unreadable_is_unknown_and_a_firing_rule_keeps_firing() -> None:
    rule = SensorThreshold(above_high=True)
    fault = Fault("heat", "/sys/class/hwmon", "unreadable", "EIO")
    blind = attrs.evolve(make_snapshot(at=4.0), faults=(fault,))
    verdicts = run(rule, [hot(0.0, [sensor(95.0)]), blind, hot(6.0, [sensor(60.0)])])
    assert verdicts[1].level is Level.WARNING
    assert verdicts[1].breaches[0].held_s == 4.0
    assert verdicts[1].breaches[0].value == 95.0
    assert any("heat" in reason for reason in verdicts[1].unknown)
    assert verdicts[2].ok


def test_a_non_finite_reading_is_never_above_anything() -> None:
    rule = SensorThreshold(celsius_above=50)
    assert run(rule, [hot(0.0, [sensor(float("nan")), sensor(float("inf"), label="x")])])[0].ok


@pytest.mark.parametrize(
    ("kwargs", "error", "quoted"),
    [
        ({}, resguard.InvalidValue, "exactly one of"),
        ({"above_high": True, "celsius_above": 80}, resguard.InvalidValue, "exactly one of"),
        ({"above_high": "yes"}, resguard.InvalidType, "above_high='yes'"),
        ({"celsius_above": "hot"}, resguard.InvalidValue, "celsius_above='hot'"),
        ({"celsius_above": -5}, resguard.InvalidValue, "celsius_above=-5"),
        ({"celsius_above": 400}, resguard.InvalidValue, "celsius_above=400 is above 300"),
        ({"celsius_above": 80, "clear": 85}, resguard.InvalidValue, "clear=85 is above"),
        ({"above_high": True, "clear": 70}, resguard.InvalidValue, "clear=70 is for celsius"),
        (
            {"above_high": True, "margin_celsius": "lots"},
            resguard.InvalidValue,
            "margin_celsius='lots'",
        ),
        ({"above_high": True, "for_": "soon"}, resguard.InvalidValue, "for_: 'soon'"),
        ({"above_high": True, "level": "ok"}, resguard.InvalidValue, "level='ok'"),
        ({"above_high": True, "name": 5}, resguard.InvalidType, "name=5"),
    ],
)
def test_a_bad_sensor_rule_is_refused_quoting_the_value(
    kwargs: dict[str, object], error: type[Exception], quoted: str
) -> None:
    with pytest.raises(error, match=quoted):
        SensorThreshold(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- fans ---


def test_fans_above_an_rpm_for_five_minutes() -> None:
    rule = FanThreshold(rpm_above=4000, for_="5m", clear=3600)
    snaps = [hot(float(t), fans=[fan(4500), fan(2000, "fan2")]) for t in range(0, 301, 10)]
    snaps += [hot(310.0, fans=[fan(3700)]), hot(320.0, fans=[fan(3500)])]
    verdicts = run(rule, snaps)
    assert all(v.ok for v in verdicts[:30])
    (breach,) = verdicts[30].breaches
    assert (
        breach.message
        == "a fan above 4000 rpm for 5m00s: 4500 rpm (thinkpad fan1 4500 rpm) for 5m00s"
    )
    assert verdicts[31].level is Level.WARNING  # 3700 > clear
    assert verdicts[32].ok


@pytest.mark.parametrize(
    ("kwargs", "error", "quoted"),
    [
        ({"rpm_above": "fast"}, resguard.InvalidValue, "rpm_above='fast'"),
        ({"rpm_above": None}, resguard.InvalidType, "rpm_above=None"),
        ({"rpm_above": 10**6}, resguard.InvalidValue, "is above 100000"),
        ({"rpm_above": 3000, "clear": 3500}, resguard.InvalidValue, "clear=3500 is above"),
    ],
)
def test_a_bad_fan_rule_is_refused_quoting_the_value(
    kwargs: dict[str, object], error: type[Exception], quoted: str
) -> None:
    with pytest.raises(error, match=quoted):
        FanThreshold(**kwargs)  # type: ignore[arg-type]


def test_an_rpm_may_be_written_with_its_unit() -> None:
    assert FanThreshold(rpm_above="4000 rpm").rpm_above == 4000.0


# ------------------------------------------------------------------ thermal pressure ---


def test_macos_thermal_pressure_heavy_warns_and_trapping_is_critical() -> None:
    policy = Policy(
        [ThermalPressure("heavy", level="warning"), ThermalPressure("trapping", level="critical")]
    )
    states = ["nominal", "moderate", "heavy", "Trapping", "sleeping", "heavy", "nominal"]
    state = policy.new_state()
    levels = [
        policy.evaluate(hot(float(t), pressure=name), state).level for t, name in enumerate(states)
    ]
    W, C, OK = Level.WARNING, Level.CRITICAL, Level.OK
    assert levels == [OK, OK, W, C, C, W, OK]


def test_a_thermal_breach_says_the_state() -> None:
    (breach,) = run(ThermalPressure("heavy"), [hot(0.0, pressure="heavy")])[0].breaches
    assert breach.message == "macOS thermal pressure heavy or worse: heavy"


@pytest.mark.parametrize(
    ("state", "rank"),
    [
        ("nominal", 0),
        (" Heavy ", 2),
        ("serious", 2),
        ("critical", 3),
        ("fair", 1),
        ("sleeping", 4),
        ("cpu speed limit 80%", None),  # pmset's text is ranked from its figures when read
        ("banana", None),
        (None, None),
        ("", None),
    ],
)
def test_thermal_ranks(state: object, rank: int | None) -> None:
    assert thermal_rank(state) == rank


def test_the_laptop_warns_when_pmset_says_the_mac_slows_itself_and_is_critical_at_crisis() -> None:
    policy = Policy(
        [ThermalPressure("heavy", level="warning"), ThermalPressure("trapping", level="critical")]
    )
    readings = [
        PmsetTherm(None, None, 100, 8, 100),
        PmsetTherm(None, None, 100, 8, 62),
        PmsetTherm(10, None, 100, 8, 35),
    ]
    levels = [policy.evaluate(hot(0.0, pressure=r), policy.new_state()).level for r in readings]
    assert levels == [Level.OK, Level.WARNING, Level.CRITICAL]


def test_the_thermal_rule_judges_the_rank_read_with_the_heat_not_its_text() -> None:
    rule = ThermalPressure("heavy")
    said_heavy = HeatInfo.from_readings((), (), "heavy", "pmset", thermal_rank=0)
    ranked_heavy = HeatInfo.from_readings((), (), "something new", "pmset", thermal_rank=2)
    verdicts = run(
        rule,
        [
            attrs.evolve(make_snapshot(at=0.0), heat=said_heavy),
            attrs.evolve(make_snapshot(at=1.0), heat=ranked_heavy),
        ],
    )
    assert [v.ok for v in verdicts] == [True, False]
    assert verdicts[1].breaches[0].message == "macOS thermal pressure heavy or worse: heavy"


def test_off_macos_the_thermal_rules_are_inactive() -> None:
    assert run(ThermalPressure("moderate"), [hot(0.0, [sensor(50.0)]), make_snapshot()])[0].ok


@pytest.mark.parametrize(
    ("value", "error"),
    [("nominal", resguard.InvalidValue), ("hot", resguard.InvalidValue), (3, resguard.InvalidType)],
)
def test_a_bad_thermal_state_is_refused_quoting_it(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=f"at_least={value!r}"):
        ThermalPressure(value)  # type: ignore[arg-type]


# --------------------------------------------------------------- what the rules read ---


def test_heat_rules_say_they_read_heat_so_a_monitor_samples_it() -> None:
    for rule in (
        SensorThreshold(above_high=True),
        FanThreshold(rpm_above=3000),
        ThermalPressure(),
        Threshold("heat.hottest_celsius", ">", 90),
    ):
        policy = Policy([rule])
        assert policy.needs("heat"), rule
        assert not policy.needs("processes")
    assert not Policy([Threshold("memory.percent", ">", 50)]).needs("heat")


# ---------------------------------------------------------------------- properties ---


def model_fires(
    values: list[float], times: list[float], threshold: float, for_s: float
) -> list[bool]:
    """Without hysteresis: firing iff every sample of the current run is above the figure
    and the run began at least for_s ago."""
    result, run_start = [], None
    for value, now in zip(values, times, strict=True):
        if value > threshold:
            run_start = now if run_start is None else run_start
            result.append(now - run_start >= for_s)
        else:
            run_start = None
            result.append(False)
    return result


samples = st.lists(st.floats(0, 130, allow_nan=False), min_size=1, max_size=40)
steps = st.lists(st.floats(0.1, 20), min_size=40, max_size=40)


@settings(max_examples=200, deadline=None)
@given(values=samples, gaps=steps, threshold=st.floats(0, 120), for_s=st.floats(0, 60))
def test_a_sensor_fires_exactly_when_it_stayed_above_for_long_enough(
    values: list[float], gaps: list[float], threshold: float, for_s: float
) -> None:
    times = [sum(gaps[: i + 1]) for i in range(len(values))]
    rule = SensorThreshold(celsius_above=threshold, for_=for_s)
    fired = [
        not v.ok
        for v in run(rule, [hot(t, [sensor(c)]) for c, t in zip(values, times, strict=True)])
    ]
    assert fired == model_fires(values, times, threshold, for_s)


@settings(max_examples=200, deadline=None)
@given(values=samples, gaps=steps, threshold=st.floats(0, 120), for_s=st.floats(0, 60))
def test_a_fan_fires_exactly_when_it_stayed_above_for_long_enough(
    values: list[float], gaps: list[float], threshold: float, for_s: float
) -> None:
    times = [sum(gaps[: i + 1]) for i in range(len(values))]
    rule = FanThreshold(rpm_above=threshold * 50, for_=for_s)
    snaps = [hot(t, fans=[fan(value * 50)]) for value, t in zip(values, times, strict=True)]
    fired = [not v.ok for v in run(rule, snaps)]
    assert fired == model_fires([v * 50 for v in values], times, threshold * 50, for_s)


@settings(max_examples=200, deadline=None)
@given(
    temps=st.lists(st.floats(0, 130), min_size=1, max_size=30),
    high=st.floats(1, 120),
    margin=st.floats(0, 20),
)
def test_a_firing_sensor_holds_until_margin_below_its_mark(
    temps: list[float], high: float, margin: float
) -> None:
    rule = SensorThreshold(above_high=True, margin_celsius=margin)
    firing = False
    for t, (verdict, temp) in enumerate(
        zip(
            run(rule, [hot(float(t), [sensor(c, high=high)]) for t, c in enumerate(temps)]),
            temps,
            strict=True,
        )
    ):
        firing = temp - high > 0 or (firing and temp - high > -margin)
        assert (not verdict.ok) == firing, t


@settings(max_examples=200, deadline=None)
@given(figure=st.floats(0, 300) | st.integers(0, 300))
def test_any_celsius_figure_in_range_is_read_as_given(figure: float) -> None:
    assert SensorThreshold(celsius_above=figure).celsius_above == float(figure)
    assert SensorThreshold(celsius_above=str(figure)).celsius_above == float(figure)


@settings(max_examples=100, deadline=None)
@given(figure=st.floats(max_value=-0.001) | st.floats(300.001, 1e300))
def test_a_celsius_figure_out_of_range_is_refused_quoting_it(figure: float) -> None:
    with pytest.raises(resguard.InvalidValue, match="celsius_above="):
        SensorThreshold(celsius_above=figure)


@settings(max_examples=200, deadline=None)
@given(
    states=st.lists(
        st.sampled_from(
            [
                *THERMAL_STATES,
                "serious",
                PmsetTherm(None, None, 100, 8, 70),
                PmsetTherm(10, None, None, None, None),
                "?",
                None,
            ]
        ),
        min_size=1,
        max_size=30,
    ),
    at_least=st.sampled_from(THERMAL_STATES[1:]),
    for_s=st.sampled_from([0.0, 2.0, 5.0]),
)
def test_thermal_pressure_fires_exactly_when_at_or_above_its_state_long_enough(
    states: list[str | PmsetTherm | None], at_least: str, for_s: float
) -> None:
    rule = ThermalPressure(at_least, for_=for_s)
    times = [float(t) for t in range(len(states))]
    fired = [
        not v.ok
        for v in run(rule, [hot(t, pressure=s) for t, s in zip(times, states, strict=True)])
    ]
    ranks = [
        pressure_rank(state) if isinstance(state, PmsetTherm) else thermal_rank(state)
        for state in states
    ]
    above = [rank is not None and rank >= THERMAL_STATES.index(at_least) for rank in ranks]
    assert fired == model_fires([1.0 if a else 0.0 for a in above], times, 0.5, for_s)


def test_an_unknown_heat_sample_keeps_a_pending_sensor_pending() -> None:
    rule = SensorThreshold(above_high=True, for_=10)
    fault = Fault("heat", "/sys/class/hwmon", "unreadable", "EIO")
    blind = attrs.evolve(make_snapshot(at=5.0), faults=(fault,))
    verdicts = run(rule, [hot(0.0, [sensor(95.0)]), blind, hot(10.0, [sensor(95.0)])])
    assert [v.level for v in verdicts] == [Level.OK, Level.OK, Level.WARNING]
    assert not verdicts[1].known


@pytest.mark.parametrize("typed", ["85", "85C", "85c", "85 °C", " 85°C "])
def test_a_celsius_figure_may_carry_its_unit(typed: str) -> None:
    assert SensorThreshold(celsius_above=typed).celsius_above == 85.0


def test_a_firing_thermal_rule_keeps_its_figures_while_the_heat_is_unknown() -> None:
    rule = ThermalPressure("heavy")
    fault = Fault("heat", "pmset -g therm", "unreadable", "no answer within 2 s")
    blind = attrs.evolve(make_snapshot(at=5.0), faults=(fault,))
    verdicts = run(rule, [hot(0.0, pressure="trapping"), blind])
    breaches = [verdict.breaches[0] for verdict in verdicts]
    assert [(b.op, b.value, b.threshold, b.unit) for b in breaches] == [
        (">=", 3.0, 2.0, "thermal_pressure")
    ] * 2
    assert [b.held_s for b in breaches] == [0.0, 5.0]
    assert not verdicts[1].known
