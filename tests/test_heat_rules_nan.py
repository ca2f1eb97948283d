"""A sensor or fan whose figure is NaN or infinite cannot be judged: the verdict lists it
in ``unknown``, never a plain OK, and the rows beside it are still judged (R1, weaker
points: NaN/+inf in HeatInfo gave OK with nothing unknown)."""

from __future__ import annotations

import math

import attrs
import pytest

from resguard.rules import FanThreshold, Level, Policy, SensorThreshold, Threshold
from resguard.snapshot import FanSpeed, HeatInfo, TemperatureSensor
from resguard.testing import make_snapshot


def _heat(*sensors: TemperatureSensor, fans: tuple[FanSpeed, ...] = ()) -> HeatInfo:
    return HeatInfo.from_readings(tuple(sensors), fans, None, "hwmon")


def _judge(rule: object, heat: HeatInfo):  # type: ignore[no-untyped-def]
    policy = Policy([rule])  # type: ignore[list-item]
    return policy.evaluate(attrs.evolve(make_snapshot(), heat=heat))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_sensor_reading_no_finite_figure_is_unknown_not_ok(bad: float) -> None:
    heat = _heat(TemperatureSensor("coretemp", "Core 0", bad, 84.0, 100.0))
    for rule in (SensorThreshold(above_high=True), SensorThreshold(celsius_above=90)):
        verdict = _judge(rule, heat)
        assert verdict.level == Level.OK
        assert not verdict.known
        assert verdict.unknown == (
            "heat.sensors.current_celsius: coretemp Core 0 read no finite figure",
        )


def test_a_mark_that_is_nan_leaves_that_sensor_unknown_for_the_high_mark_rule() -> None:
    heat = _heat(TemperatureSensor("nvme", "Composite", 40.0, math.nan, None))
    assert not _judge(SensorThreshold(above_high=True), heat).known
    assert _judge(SensorThreshold(celsius_above=90), heat).known  # it reads no mark


def test_the_rows_beside_a_broken_one_are_judged() -> None:
    heat = _heat(
        TemperatureSensor("coretemp", "Core 0", math.nan, 84.0, 100.0),
        TemperatureSensor("coretemp", "Core 1", 95.0, 84.0, 100.0),
    )
    verdict = _judge(SensorThreshold(above_high=True), heat)
    assert verdict.level == Level.WARNING
    assert [o.name for o in verdict.breaches[0].offenders] == ["coretemp Core 1"]
    assert len(verdict.unknown) == 1
    assert heat.hottest_celsius == 95.0  # the finite one, whatever the order


def test_a_fan_spinning_nan_rpm_is_unknown() -> None:
    heat = _heat(fans=(FanSpeed("thinkpad", "fan1", math.inf),))
    verdict = _judge(FanThreshold(rpm_above=4000), heat)
    assert verdict.unknown == ("heat.fans.rpm: thinkpad fan1 read no finite figure",)


def test_finite_readings_and_no_heat_rule_add_nothing_unknown() -> None:
    heat = _heat(TemperatureSensor("coretemp", "Core 0", 50.0, 84.0, 100.0))
    assert _judge(SensorThreshold(above_high=True), heat).known
    broken = _heat(TemperatureSensor("coretemp", "Core 0", math.nan, 84.0, 100.0))
    assert _judge(Threshold("memory.percent", ">", 90), broken).known
    assert _heat(TemperatureSensor("a", "b", math.nan, None, None)).hottest_celsius is None
