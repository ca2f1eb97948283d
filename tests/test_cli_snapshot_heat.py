"""``resguard snapshot`` shows heat where the OS gives it, Ctrl-C during a one-shot's
window ends it cleanly, and ``resguard top`` never writes a command line's control
characters to the terminal."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import attrs
import psutil

import resguard as rg
from resguard.cli import format_snapshot
from resguard.snapshot import FanSpeed, HeatInfo, TemperatureSensor

from support import wait_until


def test_the_hottest_sensor_and_fastest_fan_are_one_line() -> None:
    heat = HeatInfo.from_readings(
        (
            TemperatureSensor("coretemp", "Package id 0", 71.0, 80.0, 100.0),
            TemperatureSensor("nvme", "Composite", 44.0, None, None),
        ),
        (FanSpeed("thinkpad", "fan1", 4100.0), FanSpeed("thinkpad", "fan2", 2000.0)),
        None,
        "hwmon",
    )
    text = format_snapshot(attrs.evolve(rg.snapshot(children=False), heat=heat))
    (line,) = [line for line in text.splitlines() if line.startswith("heat")]
    assert line == (
        "heat     71 °C coretemp Package id 0 (high 80 °C); fan 4100 rpm thinkpad fan1 (from hwmon)"
    )


def test_the_heat_line_says_none_is_readable_where_the_os_gives_none() -> None:
    text = format_snapshot(attrs.evolve(rg.snapshot(children=False), heat=None))
    heat = [line for line in text.splitlines() if line.startswith("heat")]
    assert heat == ["heat     no temperature sensor or fan readable here"]  # as watch says


def test_macos_thermal_pressure_is_shown() -> None:
    heat = HeatInfo.from_readings((), (), "cpu speed limit 80%", "pmset")
    text = format_snapshot(attrs.evolve(rg.snapshot(children=False), heat=heat))
    assert "heat     thermal pressure cpu speed limit 80% (from pmset)" in text


def test_ctrl_c_during_the_window_exits_130_without_a_traceback() -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "resguard", "snapshot", "--window", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        process = psutil.Process(child.pid)
        seen: list[float] = []

        def waiting_in_the_window() -> bool:  # started, and no longer burning CPU on imports
            seen.append(sum(process.cpu_times()[:2]))
            settled = len(seen) > 40 and seen[-1] == seen[-40]
            return settled and time.time() - process.create_time() > 0.5

        wait_until(waiting_in_the_window, timeout_s=30, what="the window's wait")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 130
    assert err == ""
    assert out == ""


def test_top_escapes_control_characters_of_command_lines() -> None:
    import io

    from resguard.cli import main

    hostile = "x\ny\x1b[2J\x07"
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", hostile], stdin=subprocess.PIPE
    )
    try:
        wait_until(
            lambda: hostile in psutil.Process(child.pid).cmdline(), what="the child to start"
        )
        out = io.StringIO()
        assert main(["top", "--by", "memory", "-n", "100000", "--window", "0.25"], out) == 0
    finally:
        child.kill()
        child.wait()
    text = out.getvalue()
    assert "\x1b" not in text
    assert "\x07" not in text
    (line,) = [line for line in text.splitlines() if line.lstrip().startswith(f"{child.pid} ")]
    assert "x\\ny\\x1b[2J\\x07" in line
