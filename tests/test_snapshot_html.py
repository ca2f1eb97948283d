"""The snapshot's HTML (notebooks): grouped, times as local times, sizes in IEC units,
unknown figures with their reason, and nothing from the machine rendered as markup.
Checked by parsing the HTML (html.parser), not by comparing strings."""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser

import attrs
import pytest

from resguard.snapshot import (
    FanSpeed,
    Fault,
    HeatInfo,
    OllamaModelInfo,
    Sampler,
    Snapshot,
    TemperatureSensor,
)
from resguard.snapshot._html import snapshot_html
from resguard.testing import make_container, make_process, make_snapshot, unknown_memory
from resguard.testing.nvml import make_gpu
from resguard.units import format_size

DECIMAL_SIZE = re.compile(r"\d\s*(?:kB|KB|MB|GB|TB|PB|EB)\b")
HOSTILE = "<script>alert(1)</script>\n\x1b[2J\u202e&amp;"


class Grouped(HTMLParser):
    """A sections table read back: caption, section order, label -> text per section,
    and every start tag seen (a name rendered as markup would add one)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.caption = ""
        self.order: list[str] = []
        self.sections: dict[str, dict[str, str]] = {}
        self.tags: list[str] = []
        self._row: list[str] = []
        self._text: list[str] | None = None
        self._in_caption = False
        self._heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "caption":
            self._in_caption = True
        elif tag == "tr":
            self._row = []
        elif tag in ("th", "td"):
            self._text = []
            self._heading = tag == "th" and ("colspan", "2") in attrs

    def handle_endtag(self, tag: str) -> None:
        if tag == "caption":
            self._in_caption = False
        elif tag in ("th", "td") and self._text is not None:
            text = "".join(self._text)
            if self._heading:
                self.order.append(text)
                self.sections[text] = {}
            else:
                self._row.append(text)
            self._text = None
        elif tag == "tr" and len(self._row) == 2:
            self.sections[self.order[-1]][self._row[0]] = self._row[1]

    def handle_data(self, data: str) -> None:
        if self._in_caption:
            self.caption += data
        elif self._text is not None:
            self._text.append(data)


def parsed(snap: Snapshot) -> Grouped:
    parser = Grouped()
    parser.feed(snapshot_html(snap))
    parser.close()
    return parser


def test_a_real_snapshot_is_grouped_with_local_times_and_iec_sizes() -> None:
    sampler = Sampler()
    sampler.sample()
    snap = sampler.sample(uss=True)
    table = parsed(snap)
    assert table.order == ["Memory", "Swap", "CPU", "Pressure", "This process", "Faults"]
    local = dt.datetime.fromtimestamp(snap.taken_at).strftime("%Y-%m-%d %H:%M:%S")
    assert table.caption == f"resguard snapshot at {local}"
    html = snapshot_html(snap)
    assert str(int(snap.taken_at)) not in html  # no raw epoch anywhere
    assert table.sections["Memory"]["limit"] == format_size(snap.memory.limit)
    assert table.sections["This process"]["RSS"] == format_size(snap.process.rss)
    assert table.sections["This process"]["USS"] == format_size(snap.process.uss)
    assert table.sections["Memory"]["used of the limit"].endswith("%")
    assert not DECIMAL_SIZE.search(html)


def test_the_groups_follow_what_the_snapshot_holds() -> None:
    bare = parsed(make_snapshot())
    assert bare.order == ["Memory", "Swap", "CPU", "Pressure", "This process", "Faults"]
    heat = HeatInfo.from_readings(
        (TemperatureSensor("coretemp", "Package id 0", 71.0, 80.0, 100.0),),
        (FanSpeed("thinkpad", "fan1", 4200.0),),
        None,
        "hwmon",
    )
    base = make_snapshot(
        processes=(make_process(1, "a"), make_process(2, "b")),
        containers=(make_container("web", memory_used=300 * 2**20, memory_limit=2**30),),
    )
    full = attrs.evolve(
        base,
        heat=heat,
        ollama=(OllamaModelInfo("llama3:8b", 5 * 2**30, 0, None, base.taken_at - 90),),
        cgroup_pids=(2,),
        gpus=(make_gpu(0, used_percent=50, total_bytes=2**34),),
    )
    table = parsed(full)
    assert table.order == [
        "Memory",
        "Swap",
        "CPU",
        "Pressure",
        "Heat",
        "GPUs",
        "This process",
        "Processes",
        "Containers",
        "Ollama",
        "Faults",
    ]
    assert table.sections["Heat"]["hottest"] == "71.0 °C"
    assert table.sections["Heat"]["coretemp Package id 0"] == (
        "71.0 °C (high 80.0 °C, critical 100.0 °C)"
    )
    assert table.sections["Heat"]["thinkpad fan1"] == "4200 rpm"
    assert table.sections["Processes"] == {
        "sampled": "2 processes",
        "in the memory cgroup": "1 processes",
    }
    assert table.sections["Containers"]["web"].startswith("300.0 MiB of 1.0 GiB")
    model = table.sections["Ollama"]["llama3:8b"]
    assert model.startswith("5.0 GiB (100% CPU), idle 1m30s (since ")
    assert table.sections["GPUs"]["0: NVIDIA Fake GPU"] == (
        "8.0 GiB of 16.0 GiB (50.0%), busy 10.0%, 45.0 °C"
    )
    since = dt.datetime.fromtimestamp(base.taken_at - 90).strftime("%Y-%m-%d %H:%M:%S")
    assert since in model


def test_unknown_figures_say_why_and_are_never_zero() -> None:
    fault = Fault("memory", "/proc/meminfo", "empty", "no data")
    snap = attrs.evolve(
        unknown_memory(make_snapshot(), fault), cpu=attrs.evolve(make_snapshot().cpu, percent=None)
    )
    table = parsed(snap)
    memory = table.sections["Memory"]
    for label in ("limit", "used", "available", "used of the limit", "total (host)"):
        assert memory[label] == "unknown (/proc/meminfo: empty)", label
    assert table.sections["CPU"]["busy (all cores)"] == (
        "unknown (no earlier sample to measure from)"
    )
    assert table.sections["Faults"] == {"memory": "/proc/meminfo empty (no data)"}


def test_names_from_the_machine_are_text_never_markup() -> None:
    heat = HeatInfo.from_readings(
        (TemperatureSensor(HOSTILE, "temp1", 50.0, None, None),), (), HOSTILE, "hwmon"
    )
    base = make_snapshot(containers=(make_container(HOSTILE, memory_used=2**20),))
    snap = attrs.evolve(
        base,
        memory=attrs.evolve(base.memory, cgroup=HOSTILE),
        heat=heat,
        ollama=(OllamaModelInfo(HOSTILE, 2**30, 0, None, None),),
        faults=(Fault("process", HOSTILE, "garbage", HOSTILE),),
    )
    html = snapshot_html(snap)
    table = parsed(snap)
    assert "script" not in table.tags
    assert "\x1b" not in html
    assert "\n" not in html
    assert "\u202e" not in html
    shown = r"<script>alert(1)</script>\n\x1b[2J\u202e&amp;"
    assert table.sections["Memory"]["cgroup"] == shown
    assert table.sections["Containers"][shown].startswith("1.0 MiB")
    assert f"{shown} temp1" in table.sections["Heat"]
    assert table.sections["Heat"]["thermal pressure"] == shown
    assert shown in table.sections["Ollama"]
    assert table.sections["Faults"]["process"] == f"{shown} garbage ({shown})"


@pytest.mark.parametrize("taken_at", [float("nan"), 1e300, -1e300])
def test_a_time_no_calendar_holds_is_shown_not_raised(taken_at: float) -> None:
    snap = attrs.evolve(make_snapshot(), taken_at=taken_at)
    assert parsed(snap).caption == f"resguard snapshot at {taken_at!r}"


def test_long_lists_are_cut_and_counted_and_a_cgroup_quota_is_named() -> None:
    sensors = tuple(
        TemperatureSensor("acpitz", f"temp{i}", 40.0 + i, None, None) for i in range(14)
    )
    base = make_snapshot(
        containers=tuple(make_container(f"c{i}", memory_used=2**20) for i in range(12))
    )
    snap = attrs.evolve(
        base,
        heat=HeatInfo.from_readings(sensors, (), None, "hwmon"),
        cpu=attrs.evolve(base.cpu, effective=0.5, effective_source="cgroup"),
    )
    table = parsed(snap)
    assert table.sections["Heat"]["hottest"] == "53.0 °C"
    assert table.sections["Heat"]["… sensors"] == "4 more"
    assert "acpitz temp9" in table.sections["Heat"]
    assert "acpitz temp10" not in table.sections["Heat"]
    assert table.sections["Containers"]["… containers"] == "2 more"
    assert table.sections["CPU"]["usable cores"] == "0.5 (cgroup)"
    assert "busy (of the cgroup's quota)" in table.sections["CPU"]
