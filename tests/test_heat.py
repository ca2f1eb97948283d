"""Sensing heat: the hwmon reader on fixture trees (healthy, older layouts, damaged files,
hostile trees), the psutil backend's guards, and HeatReader / read_heat.

This machine (a VM) has no /sys/class/hwmon, so the hwmon tests read a KernelTree's."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resguard import InvalidType, InvalidValue
from resguard._probes import hwmon
from resguard.snapshot import HeatInfo, HeatReader, TemperatureSensor, read_heat
from resguard.testing import KernelTree, make_snapshot

from support import fresh_fault_log, warnings_about


@pytest.fixture
def tree(tmp_path: Path) -> KernelTree:
    return KernelTree(tmp_path / "kernel")


def laptop(tree: KernelTree) -> None:
    """A ThinkPad-like machine: a CPU package and cores, an NVMe drive, one fan."""
    tree.add_hwmon(
        "coretemp",
        [
            ("Package id 0", 71.0, 84.0, 100.0),
            ("Core 0", 69.0, 84.0, 100.0),
            (None, 65.5, None, None),
        ],
    )
    tree.add_hwmon("nvme", [("Composite", 38.85, 81.85, 84.85)])
    tree.add_hwmon("thinkpad", [], [("fan1", 4120.0)])


def test_a_laptop_s_sensors_and_fans_are_read_in_degrees_and_rpm(tree: KernelTree) -> None:
    laptop(tree)
    heat = HeatReader(hwmon_root=tree.hwmon_root).read()
    assert heat is not None
    assert heat.source == "hwmon"
    assert heat.sensors[0] == TemperatureSensor("coretemp", "Package id 0", 71.0, 84.0, 100.0)
    assert heat.sensors[2] == TemperatureSensor("coretemp", "temp3", 65.5, None, None)
    assert heat.sensors[3].chip == "nvme"
    assert heat.sensors[3].current_celsius == pytest.approx(38.85)
    assert [(fan.chip, fan.label, fan.rpm) for fan in heat.fans] == [("thinkpad", "fan1", 4120.0)]
    assert heat.hottest_celsius == 71.0
    assert heat.fastest_fan_rpm == 4120.0
    assert heat.thermal_pressure is None


def test_a_machine_without_hwmon_gives_none_and_no_fault(tmp_path: Path) -> None:
    reader = HeatReader(hwmon_root=str(tmp_path / "no-such-class"))
    assert reader.read() is None
    assert reader.faults == ()


def test_chips_are_read_in_number_order_not_text_order(tree: KernelTree) -> None:
    for number in range(12):
        tree.add_hwmon(f"chip{number}", [(None, 30.0 + number, None, None)])
    heat = HeatReader(hwmon_root=tree.hwmon_root).read()
    assert heat is not None
    assert [sensor.chip for sensor in heat.sensors] == [f"chip{n}" for n in range(12)]


def test_older_drivers_keep_their_inputs_in_device(tree: KernelTree) -> None:
    chip = Path(tree.hwmon_root) / "hwmon0"
    (chip / "device").mkdir(parents=True)
    (chip / "name").write_text("it8728\n")
    (chip / "device" / "temp1_input").write_text("45000\n")
    (chip / "device" / "fan2_input").write_text("1250\n")
    (chip / "device" / "fan2_label").write_text("CPU fan\n")
    heat = HeatReader(hwmon_root=tree.hwmon_root).read()
    assert heat is not None
    assert heat.sensors == (TemperatureSensor("it8728", "temp1", 45.0, None, None),)
    assert [(fan.label, fan.rpm) for fan in heat.fans] == [("CPU fan", 1250.0)]


def test_a_chip_without_a_name_is_named_by_its_directory(tree: KernelTree) -> None:
    tree.add_hwmon("acpitz", [(None, 50.0, None, None)])
    os.unlink(tree.path("hwmon0/name"))
    heat = HeatReader(hwmon_root=tree.hwmon_root).read()
    assert heat is not None
    assert heat.sensors[0].chip == "hwmon0"


def test_marks_of_zero_mean_the_chip_has_none(tree: KernelTree) -> None:
    """Some chips write 0 for "no high mark": a rule must not see every sensor above 0 °C."""
    tree.add_hwmon("acpitz", [(None, 50.0, 0.0, 0.0)])
    heat = HeatReader(hwmon_root=tree.hwmon_root).read()
    assert heat is not None
    assert heat.sensors[0].high_celsius is None
    assert heat.sensors[0].critical_celsius is None


def test_labels_with_control_characters_are_made_printable(tree: KernelTree) -> None:
    tree.add_hwmon("evil\x1b[2Jchip", [("lab\x07el\x00", 40.0, None, None)])
    heat = HeatReader(hwmon_root=tree.hwmon_root).read()
    assert heat is not None
    sensor = heat.sensors[0]
    assert sensor.chip.isprintable()
    assert "\x1b" not in sensor.chip
    assert sensor.label.isprintable()


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "huge", "unreadable"])
def test_a_damaged_sensor_is_skipped_with_one_warning_and_the_others_read(
    tree: KernelTree, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    laptop(tree)
    tree.damage("hwmon0/temp1_input", kind)
    reader = HeatReader(hwmon_root=tree.hwmon_root)
    with caplog.at_level(logging.WARNING, logger="resguard"):
        for _ in range(3):
            heat = reader.read()
    assert heat is not None
    assert [sensor.label for sensor in heat.sensors][:2] == ["Core 0", "temp3"]
    assert heat.hottest_celsius == 69.0
    (fault,) = reader.faults
    assert fault.source == tree.path("hwmon0/temp1_input")
    assert fault.field == "heat.sensors"
    assert fault.fallback is not None  # skipped, not unknown: the others were read
    # a huge file is cut at the read cap: what was read is cut short
    assert fault.kind == ("truncated" if kind == "huge" else kind)
    assert len(warnings_about(caplog, tree.path("hwmon0/temp1_input"))) == 1


def test_a_damaged_mark_leaves_only_the_mark_unknown(tree: KernelTree) -> None:
    laptop(tree)
    tree.damage("hwmon0/temp1_max", "garbage")
    reader = HeatReader(hwmon_root=tree.hwmon_root)
    heat = reader.read()
    assert heat is not None
    assert heat.sensors[0].current_celsius == 71.0
    assert heat.sensors[0].high_celsius is None
    assert heat.sensors[0].critical_celsius == 100.0
    assert [fault.source for fault in reader.faults] == [tree.path("hwmon0/temp1_max")]


def test_a_damaged_fan_is_skipped(tree: KernelTree) -> None:
    laptop(tree)
    tree.damage("hwmon2/fan1_input", "garbage")
    reader = HeatReader(hwmon_root=tree.hwmon_root)
    heat = reader.read()
    assert heat is not None
    assert heat.fans == ()
    assert heat.fastest_fan_rpm is None
    # its only fan: no "other fans" were read, the fastest is unknown, not absent
    (fault,) = reader.faults
    assert (fault.field, fault.fallback) == ("heat.fastest_fan_rpm", None)


def test_every_sensor_failing_beside_a_fan_leaves_the_hottest_unknown_on_both_backends(
    tree: KernelTree, fake_sensors: dict[str, Any]
) -> None:
    tree.add_hwmon("coretemp", [(None, 50.0, None, None)])
    tree.add_hwmon("thinkpad", [], [("fan1", 4120.0)])
    tree.damage("hwmon0/temp1_input", "unreadable")
    fake_sensors["temperatures"] = OSError(5, "Input/output error")
    fake_sensors["fans"] = {"thinkpad": [Row(label="fan1", current=4120)]}
    for reader in (HeatReader(hwmon_root=tree.hwmon_root), HeatReader(backend="psutil")):
        with fresh_fault_log():  # psutil's failure stays news to the tests after this one
            heat = reader.read()
        assert heat is not None
        assert heat.hottest_celsius is None
        assert heat.fastest_fan_rpm == 4120.0
        snap = attrs.evolve(make_snapshot(), heat=heat, faults=reader.faults)
        assert snap.fault_for("heat.hottest_celsius") is not None, reader
        assert snap.fault_for("heat.fastest_fan_rpm") is None
        assert [fault.field for fault in reader.faults] == ["heat.hottest_celsius"]


def test_a_repaired_sensor_is_read_again_and_its_recovery_said(
    tree: KernelTree, caplog: pytest.LogCaptureFixture
) -> None:
    laptop(tree)
    tree.damage("hwmon1/temp1_input", "empty")
    reader = HeatReader(hwmon_root=tree.hwmon_root)
    reader.read()
    tree.restore("hwmon1/temp1_input")
    with caplog.at_level(logging.WARNING, logger="resguard"):
        heat = reader.read()
    assert heat is not None
    assert [sensor.chip for sensor in heat.sensors].count("nvme") == 1
    assert reader.faults == ()
    assert len(warnings_about(caplog, tree.path("hwmon1/temp1_input"), "works again")) == 1


def test_impossible_readings_are_garbage_not_temperatures(tree: KernelTree) -> None:
    tree.add_hwmon("broken", [(None, 20.0, None, None), (None, 30.0, None, None)])
    Path(tree.path("hwmon0/temp1_input")).write_text("-300000\n")  # below absolute zero
    Path(tree.path("hwmon0/temp2_input")).write_text("9000000\n")  # 9000 °C
    reader = HeatReader(hwmon_root=tree.hwmon_root)
    assert reader.read() is None  # nothing sane at all: heat is unknown ...
    assert {fault.field for fault in reader.faults} == {"heat"}  # ... and says why
    assert {fault.kind for fault in reader.faults} == {"garbage"}


def test_when_every_sensor_fails_heat_is_unknown_not_absent(tree: KernelTree) -> None:
    tree.add_hwmon("coretemp", [(None, 50.0, None, None)])
    tree.damage("hwmon0/temp1_input", "unreadable")
    reader = HeatReader(hwmon_root=tree.hwmon_root)
    assert reader.read() is None
    (fault,) = reader.faults
    assert fault.field == "heat"
    assert fault.fallback is None


def test_an_unlistable_class_directory_is_a_fault(tmp_path: Path) -> None:
    root = tmp_path / "hwmon"
    root.write_text("not a directory\n")
    reader = HeatReader(hwmon_root=str(root))
    assert reader.read() is None
    assert reader.faults[0].source == str(root)


def test_the_walk_is_bounded(tree: KernelTree) -> None:
    tree.add_hwmon("many", [(None, 40.0 + index % 10, None, None) for index in range(100)])
    heat = HeatReader(hwmon_root=tree.hwmon_root).read()
    assert heat is not None
    assert len(heat.sensors) == hwmon.MAX_INPUTS


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=64), mark=st.binary(max_size=32), label=st.binary(max_size=80))
def test_no_content_of_a_sensor_file_makes_the_reader_raise(
    tmp_path: Path, content: bytes, mark: bytes, label: bytes
) -> None:
    chip = tmp_path / "hwmon" / "hwmon0"
    chip.mkdir(parents=True, exist_ok=True)
    (chip / "name").write_bytes(label)
    (chip / "temp1_input").write_bytes(content)
    (chip / "temp1_max").write_bytes(mark)
    (chip / "temp1_label").write_bytes(label)
    (chip / "fan1_input").write_bytes(content)
    reader = HeatReader(hwmon_root=str(tmp_path / "hwmon"))
    heat = reader.read()
    if heat is not None:
        for sensor in heat.sensors:
            assert -273.15 <= sensor.current_celsius <= 500
            assert sensor.chip.isprintable()
            assert sensor.label.isprintable()
        for fan in heat.fans:
            assert 0 <= fan.rpm <= 100_000


def test_heat_reader_arguments_are_checked() -> None:
    with pytest.raises(InvalidType, match="hwmon_root=42"):
        HeatReader(hwmon_root=42)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match="backend='posix'"):
        HeatReader(backend="posix")  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match="hwmon_root"):
        HeatReader(backend="psutil", hwmon_root="/tmp/x")
    with pytest.raises(InvalidType, match="pmset="):
        HeatReader(pmset="pmset -g therm")  # type: ignore[arg-type]


def test_a_re_rooted_reader_is_on_the_linux_backend(tree: KernelTree) -> None:
    assert HeatReader(hwmon_root=tree.hwmon_root).backend == "linux"


# -- the psutil backend ---------------------------------------------------------------


class Row:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        return f"Row({self.__dict__})"


@pytest.fixture
def fake_sensors(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """psutil's sensor functions answer what the test puts here (this VM has no sensors:
    the real ones answer {}); the rest of psutil is real."""
    import psutil

    answers: dict[str, Any] = {"temperatures": {}, "fans": {}}

    def answer(name: str) -> Any:
        def call() -> Any:
            value = answers[name]
            if isinstance(value, BaseException):
                raise value
            return value

        return call

    monkeypatch.setattr(psutil, "sensors_temperatures", answer("temperatures"), raising=False)
    monkeypatch.setattr(psutil, "sensors_fans", answer("fans"), raising=False)
    return answers


def test_psutil_sensors_are_read_with_their_marks(fake_sensors: dict[str, Any]) -> None:
    fake_sensors["temperatures"] = {
        "coretemp": [Row(label="Package id 0", current=88.0, high=84.0, critical=100.0)],
        "acpitz": [Row(label="", current=45.0, high=None, critical=None)],
    }
    fake_sensors["fans"] = {"thinkpad": [Row(label="", current=5200)]}
    heat = HeatReader(backend="psutil").read()
    assert heat is not None
    assert heat.source == "psutil"
    assert heat.sensors == (
        TemperatureSensor("coretemp", "Package id 0", 88.0, 84.0, 100.0),
        TemperatureSensor("acpitz", "temp1", 45.0, None, None),
    )
    assert [(fan.label, fan.rpm) for fan in heat.fans] == [("fan1", 5200.0)]
    assert heat.hottest_celsius == 88.0


def test_psutil_that_raises_is_unknown_heat_with_one_warning(
    fake_sensors: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    fake_sensors["temperatures"] = OSError(5, "Input/output error")
    reader = HeatReader(backend="psutil")
    with caplog.at_level(logging.WARNING, logger="resguard"):
        assert reader.read() is None
        assert reader.read() is None
    assert [fault.field for fault in reader.faults] == ["heat"]
    assert len(warnings_about(caplog, "psutil.sensors_temperatures()")) == 1


def test_psutil_rows_that_are_no_readings_are_skipped(fake_sensors: dict[str, Any]) -> None:
    fake_sensors["temperatures"] = {
        "a": [Row(label="x", current=float("nan"), high=None, critical=None)],
        "b": [Row(label="y", current="hot", high=None, critical=None), "junk"],
        "c": [Row(label="z", current=50.0, high=float("inf"), critical=-5.0)],
    }
    fake_sensors["fans"] = {"f": [Row(label="", current=-1)], "g": "no rows"}
    reader = HeatReader(backend="psutil")
    heat = reader.read()
    assert heat is not None
    assert heat.sensors == (TemperatureSensor("c", "z", 50.0, None, None),)
    assert heat.fans == ()
    assert sum(fault.fallback is not None for fault in reader.faults) == 3  # the sensors'
    # no fan was read: its bad row leaves the fastest unknown, not "the other fans" read
    assert [f.field for f in reader.faults if f.fallback is None] == ["heat.fastest_fan_rpm"]


def test_psutil_answering_something_else_is_a_fault(fake_sensors: dict[str, Any]) -> None:
    fake_sensors["temperatures"] = ["not", "a", "dict"]
    fake_sensors["fans"] = {"f": [Row(label="", current=900)]}
    reader = HeatReader(backend="psutil")
    heat = reader.read()
    assert heat is not None
    assert heat.hottest_celsius is None
    assert [fault.field for fault in reader.faults] == ["heat.hottest_celsius"]


def test_psutil_without_sensor_functions_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS and Windows psutil have no sensors_temperatures/sensors_fans."""
    import psutil

    monkeypatch.delattr(psutil, "sensors_temperatures", raising=False)
    monkeypatch.delattr(psutil, "sensors_fans", raising=False)
    reader = HeatReader(backend="psutil", pmset=lambda: None)
    assert reader.read() is None
    assert reader.faults == ()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="compares with Linux psutil")
def test_the_real_psutil_and_the_hwmon_reader_agree_on_this_machine() -> None:
    """Both read /sys/class/hwmon (empty on this VM: both say None)."""
    import psutil

    linux = HeatReader(backend="linux").read()
    portable = HeatReader(backend="psutil").read()
    if not psutil.sensors_temperatures() and not psutil.sensors_fans():
        assert portable is None
    if linux is not None and portable is not None:
        assert linux.hottest_celsius == pytest.approx(portable.hottest_celsius, abs=3)


def test_read_heat_is_a_one_shot_of_the_default_backend() -> None:
    result = read_heat()
    assert result is None or isinstance(result, HeatInfo)
    with pytest.raises(InvalidValue, match="backend='nope'"):
        read_heat(backend="nope")  # type: ignore[arg-type]
    with pytest.raises(InvalidType):
        read_heat(backend=[])  # type: ignore[arg-type]


def test_a_tree_numbers_its_chips_in_the_order_they_were_added(tree: KernelTree) -> None:
    assert tree.add_hwmon("a", [(None, 30.0, None, None)]) == "hwmon0"
    os.unlink(tree.path("hwmon0/name"))  # damage does not renumber the chips after it
    assert tree.add_hwmon("b", [(None, 31.0, None, None)]) == "hwmon1"
    assert tree.path("hwmon1/temp1_input").endswith(os.path.join("hwmon1", "temp1_input"))


def test_a_reader_says_where_it_reads(tree: KernelTree) -> None:
    assert repr(HeatReader(hwmon_root=tree.hwmon_root)) == (
        f"HeatReader(backend='linux', hwmon_root={tree.hwmon_root!r})"
    )
    assert repr(HeatReader(backend="psutil", pmset=lambda: None)) == (
        "HeatReader(backend='psutil', pmset)"
    )


def test_psutil_that_cannot_be_imported_is_a_fault_not_an_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    reader = HeatReader(backend="psutil", pmset=lambda: None)
    assert reader.read() is None
    assert [(fault.field, fault.source) for fault in reader.faults] == [("heat", "psutil")]
