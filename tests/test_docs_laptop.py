"""The laptop tutorial's picture of ``resguard watch`` is the frame resguard draws.

docs/tutorials/laptop.md shows the live view on the afternoon of the field notes. Its
Python blocks run as tests already (Sybil), but the frame is a text block: this test
draws the same afternoon through the real view (the laptop preset judging it on a clock
that moves when told, then ``build_frame`` at 80x24) and compares it with the page, so a
change to the view or to the preset's rule names fails here until the page says the same.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

import resguard as rg
from resguard.cli._view import ViewOptions, build_frame, choose_rows
from resguard.monitor import State
from resguard.snapshot import (
    FanSpeed,
    HeatInfo,
    OllamaModelInfo,
    PressureInfo,
    PressureLine,
    ProcessInfo,
    ResourcePressure,
    Snapshot,
    TemperatureSensor,
)
from resguard.testing import ManualClock, make_process, make_snapshot

PAGE = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "laptop.md"
MB = 10**6
_CLOCK_TEXT = re.compile(r"\d\d:\d\d:\d\d")


def _process(pid: int, name: str, command: str, cpu_percent: float, rss: int) -> ProcessInfo:
    row = make_process(pid, name, cpu_percent=cpu_percent, rss=rss)
    return attrs.evolve(row, cmdline=tuple(command.split()), username="dev")


ROWS = (
    _process(
        54849,
        "chrome",
        "/opt/google/chrome/chrome --type=renderer --lang=en-US --renderer-client-id=12",
        240.0,
        410 * MB,
    ),
    _process(41020, "python", "python -m uvicorn assistant.server:app --port 8000", 52.0, 180 * MB),
    _process(
        33216,
        "ollama",
        "/usr/local/bin/ollama runner --model /home/dev/.ollama/models/blobs/sha256-b112",
        0.4,
        12_500 * MB,
    ),
    _process(1873, "gnome-shell", "/usr/bin/gnome-shell", 6.0, 520 * MB),
    _process(2410, "code", "/usr/share/code/code --type=zygote", 3.0, 640 * MB),
)


def _pressure(some: float, full: float) -> ResourcePressure:
    return ResourcePressure(PressureLine(some, some, some, 0), PressureLine(full, full, full, 0))


def _afternoon(at: float) -> Snapshot:
    """The machine of the field notes: 23 GB used of 24 GB, the renderer at 240 % of a
    core, the server at 52 %, the idle model runner with 12.5 GB, a hot laptop."""
    snapshot = make_snapshot(at=at, used="23GB", limit="24GB", cpu_percent=38.8, processes=ROWS)
    memory = attrs.evolve(
        snapshot.memory, source="host", cgroup=None, total=24 * 10**9, source_detail="meminfo"
    )
    sensor = TemperatureSensor("coretemp", "Package id 0", 94.0, 100.0, 105.0)
    heat = HeatInfo(
        sensors=(sensor,),
        fans=(FanSpeed("thinkpad", "fan1", 5200.0),),
        hottest_celsius=94.0,
        fastest_fan_rpm=5200.0,
        thermal_pressure=None,
        source="hwmon",
    )
    model = OllamaModelInfo(
        "gpt-oss:20b", 12_500 * MB, 0, snapshot.taken_at + 600, snapshot.taken_at - 42 * 60
    )
    pressure = PressureInfo(
        memory=_pressure(4.0, 0.8),
        cpu=_pressure(20.5, 0.0),
        io=_pressure(0.4, 0.2),
        source="system",
        memory_level=None,
    )
    cpu = attrs.evolve(snapshot.cpu, load_1m=3.1, load_5m=2.8, load_15m=2.2)
    return attrs.evolve(
        snapshot, memory=memory, heat=heat, ollama=(model,), pressure=pressure, cpu=cpu
    )


def _drawn() -> list[str]:
    """The frame after a minute of the afternoon, one evaluation every 10 s."""
    clock = ManualClock(1000.0)
    laptop = rg.presets.laptop(clock=clock)
    for _ in range(6):
        laptop.evaluate(_afternoon(clock()))
        clock.advance(10)
    snapshot = _afternoon(clock())
    state = State(snapshot, laptop.evaluate(snapshot), 7)
    options = ViewOptions()
    frame = build_frame(state, choose_rows(state, options), options, 80, 24)
    return [line.rstrip() for line in frame.plain().splitlines()]


def _on_the_page() -> list[str]:
    """The tutorial's frame: the text block that starts with the watch header."""
    text = PAGE.read_text(encoding="utf-8")
    block = re.search(r"```text\n(resguard watch .*?)```", text, re.S)
    assert block is not None, "the tutorial has no frame of resguard watch"
    return [line.rstrip() for line in block.group(1).splitlines()]


def test_the_tutorials_watch_frame_is_the_one_resguard_draws() -> None:
    drawn = [_CLOCK_TEXT.sub("hh:mm:ss", line, count=1) for line in _drawn()]
    page = [_CLOCK_TEXT.sub("hh:mm:ss", line, count=1) for line in _on_the_page()]
    assert page == drawn


def test_the_tutorials_frame_fits_80_columns_and_24_lines() -> None:
    lines = _on_the_page()
    assert len(lines) <= 24
    assert max(len(line) for line in lines) <= 80
