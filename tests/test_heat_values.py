"""The heat values (HeatInfo, TemperatureSensor, FanSpeed) and the snapshot's new fields:
units, dicts, and the monitor's check of what a source may put there."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard import InvalidValue
from resguard.monitor._sources import SOURCE_FIELDS, source_fields
from resguard.snapshot import (
    UNITS,
    FanSpeed,
    HeatInfo,
    Snapshot,
    TemperatureSensor,
    metric_paths,
    metric_unit,
)


def sensor(current: float, high: float | None = 80.0) -> TemperatureSensor:
    return TemperatureSensor("coretemp", "Core 0", current, high, 100.0)


def test_the_heat_units_are_registered_with_the_others() -> None:
    assert {"celsius", "rpm"} <= set(UNITS)
    assert metric_unit("heat.hottest_celsius") == "celsius"
    assert metric_unit("heat.fastest_fan_rpm") == "rpm"
    assert metric_unit("heat.sensors.current_celsius") == "celsius"
    assert metric_unit("heat.sensors.high_celsius") == "celsius"
    assert metric_unit("heat.fans.rpm") == "rpm"


def test_rules_may_name_the_hottest_sensor_and_the_fastest_fan() -> None:
    paths = metric_paths()
    assert paths["heat.hottest_celsius"] is float
    assert paths["heat.fastest_fan_rpm"] is float
    assert "cgroup_pids" not in paths  # a tuple of pids is no metric


def test_the_hottest_and_fastest_are_found_once_from_the_readings() -> None:
    heat = HeatInfo.from_readings(
        (sensor(41.5), sensor(77.0), sensor(60.0)),
        (FanSpeed("thinkpad", "fan1", 2400.0), FanSpeed("thinkpad", "fan2", 3100.0)),
        None,
        "hwmon",
    )
    assert heat.hottest_celsius == 77.0
    assert heat.fastest_fan_rpm == 3100.0


def test_no_sensors_and_no_fans_are_unknown_not_zero() -> None:
    heat = HeatInfo.from_readings((), (), "nominal", "pmset")
    assert heat.hottest_celsius is None
    assert heat.fastest_fan_rpm is None
    assert heat.thermal_pressure == "nominal"


@given(st.lists(st.floats(-40, 150), max_size=8), st.lists(st.floats(0, 20000), max_size=4))
def test_hottest_and_fastest_are_the_maxima(temps: list[float], rpms: list[float]) -> None:
    heat = HeatInfo.from_readings(
        tuple(sensor(t) for t in temps),
        tuple(FanSpeed("chip", f"fan{i}", r) for i, r in enumerate(rpms)),
        None,
        "psutil",
    )
    assert heat.hottest_celsius == (max(temps) if temps else None)
    assert heat.fastest_fan_rpm == (max(rpms) if rpms else None)


def test_heat_is_a_plain_dict_for_json() -> None:
    heat = HeatInfo.from_readings((sensor(50.0, None),), (FanSpeed("f", "fan1", 900.0),), None, "x")
    assert heat.to_dict() == {
        "sensors": [
            {
                "chip": "coretemp",
                "label": "Core 0",
                "current_celsius": 50.0,
                "high_celsius": None,
                "critical_celsius": 100.0,
            }
        ],
        "fans": [{"chip": "f", "label": "fan1", "rpm": 900.0}],
        "hottest_celsius": 50.0,
        "fastest_fan_rpm": 900.0,
        "thermal_pressure": None,
        "thermal_rank": None,
        "source": "x",
    }


def test_heat_values_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        sensor(1.0).current_celsius = 2.0  # type: ignore[misc]


def test_a_snapshot_without_them_has_none_of_either() -> None:
    fields = attrs.fields_dict(Snapshot)
    assert fields["heat"].default is None
    assert fields["cgroup_pids"].default is None


def test_sources_may_fill_heat_and_cgroup_pids() -> None:
    assert {"heat", "cgroup_pids"} <= SOURCE_FIELDS
    heat = HeatInfo.from_readings((sensor(40.0),), (), None, "hwmon")
    assert source_fields({"heat": heat, "cgroup_pids": (12, 40)}) == {
        "heat": heat,
        "cgroup_pids": (12, 40),
    }
    assert source_fields({"heat": None, "cgroup_pids": None})


@pytest.mark.parametrize(
    "answer",
    [
        {"heat": ({"chip": "x"},)},
        {"heat": (sensor(40.0),)},
        {"cgroup_pids": [1, 2]},
        {"cgroup_pids": ("12",)},
        {"cgroup_pids": (True,)},
        {"cgroup_pids": (0,)},
    ],
)
def test_a_source_cannot_put_garbage_in_heat_or_cgroup_pids(answer: dict[str, object]) -> None:
    with pytest.raises(InvalidValue, match="expected what Snapshot"):
        source_fields(answer)
