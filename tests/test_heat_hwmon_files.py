"""The hwmon walk reads only regular files, without blocking, and each input once: a FIFO
or a device planted under a re-rooted tree cannot hang it, and a zero-padded name
(``temp01_input``) is no second ``temp1`` (R1 13)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from resguard._probes import hwmon
from resguard.testing import KernelTree


def _walk_within(root: str, seconds: float) -> hwmon.HwmonReading:
    """read_hwmon(*root*) in a daemon thread; fails (instead of hanging) past *seconds*."""
    answer: list[hwmon.HwmonReading] = []
    thread = threading.Thread(target=lambda: answer.append(hwmon.read_hwmon(root)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert answer, f"read_hwmon({root!r}) still blocked after {seconds} s"
    return answer[0]


def test_a_fifo_in_place_of_a_sensor_is_damage_not_a_hang(tmp_path: Path) -> None:
    tree = KernelTree(tmp_path / "kernel")
    device = tree.add_hwmon("coretemp", [("Package id 0", 71.0, 84.0, 100.0)])
    os.mkfifo(Path(tree.hwmon_root) / device / "temp2_input")
    reading = _walk_within(tree.hwmon_root, 10.0)
    assert [t.current_celsius for t in reading.temperatures] == [71.0]
    assert [(Path(path).name, kind, detail) for path, kind, detail in reading.damages] == [
        ("temp2_input", "unreadable", "not a regular file")
    ]


def test_a_fifo_as_a_chip_s_name_or_label_is_not_read(tmp_path: Path) -> None:
    tree = KernelTree(tmp_path / "kernel")
    device = tree.add_hwmon("coretemp", [(None, 50.0, None, None)])
    chip = Path(tree.hwmon_root) / device
    (chip / "name").unlink()
    os.mkfifo(chip / "name")
    os.mkfifo(chip / "temp1_label")
    os.mkfifo(chip / "temp1_max")
    reading = _walk_within(tree.hwmon_root, 10.0)
    (sensor,) = reading.temperatures
    assert (sensor.chip, sensor.label, sensor.high_celsius) == (device, "temp1", None)


def test_a_directory_in_place_of_a_sensor_is_damage(tmp_path: Path) -> None:
    tree = KernelTree(tmp_path / "kernel")
    device = tree.add_hwmon("coretemp", [(None, 50.0, None, None)])
    (Path(tree.hwmon_root) / device / "temp2_input").mkdir()
    reading = _walk_within(tree.hwmon_root, 10.0)
    assert len(reading.temperatures) == 1
    assert [Path(path).name for path, _, _ in reading.damages] == ["temp2_input"]


def test_a_zero_padded_input_beside_the_real_one_is_no_second_sensor(tmp_path: Path) -> None:
    tree = KernelTree(tmp_path / "kernel")
    device = tree.add_hwmon("coretemp", [("Package id 0", 71.0, 84.0, 100.0)], [("fan1", 3000)])
    chip = Path(tree.hwmon_root) / device
    (chip / "temp01_input").write_text("99000\n")
    (chip / "fan001_input").write_text("9000\n")
    (chip / "temp1_input\n").write_text("99000\n")
    reading = hwmon.read_hwmon(tree.hwmon_root)
    assert [(t.label, t.current_celsius) for t in reading.temperatures] == [("Package id 0", 71.0)]
    assert [fan.rpm for fan in reading.fans] == [3000.0]
    assert reading.damages == ()
