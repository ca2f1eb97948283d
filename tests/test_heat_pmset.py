"""macOS's thermal state from ``pmset -g therm``: the parser on fixture texts, the command
run with a deadline, and HeatReader on macOS's path.

Not run on a Mac here: the fixtures are written after ``pmset -g therm`` output as macOS
prints it (Intel and Apple Silicon, with and without a recorded warning level); the
command is a stand-in ``pmset`` script, a real process on this machine's PATH."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard._probes.thermal import (
    PmsetTherm,
    parse_pmset_therm,
    pressure_rank,
    run_pmset,
    thermal_pressure,
)
from resguard.snapshot import HeatReader

NOMINAL_APPLE_SILICON = (
    "Note: No thermal warning level has been recorded\n"
    "Note: No performance warning level has been recorded\n"
    "Note: No CPU power status has been recorded\n"
)
NOMINAL_INTEL = (
    "Note: No thermal warning level has been recorded\n"
    "Note: No performance warning level has been recorded\n"
    "2024-03-02 09:14:51 +0100 CPU Power notify\n"
    "\tCPU_Scheduler_Limit \t= 100\n"
    "\tCPU_Available_CPUs \t= 8\n"
    "\tCPU_Speed_Limit \t= 100\n"
)
THROTTLED_INTEL = (
    "Note: No thermal warning level has been recorded\n"
    "Note: No performance warning level has been recorded\n"
    "2020-11-24 13:10:40 +0100 CPU Power notify\n"
    "    CPU_Scheduler_Limit     = 100\n"
    "    CPU_Available_CPUs  = 8\n"
    "    CPU_Speed_Limit     = 35\n"
)
WARNING_RECORDED = (
    "Thermal Warning Level = 5\n"
    "Performance Warning Level = 0\n"
    "2024-07-15 16:02:11 +0200 CPU Power notify\n"
    "\tCPU_Scheduler_Limit \t= 80\n"
    "\tCPU_Available_CPUs \t= 6\n"
    "\tCPU_Speed_Limit \t= 62\n"
)
TWO_RECORDS = (  # a later notification replaces an earlier one: the last value wins
    "Note: No thermal warning level has been recorded\n"
    "2024-07-15 16:02:11 +0200 CPU Power notify\n"
    "\tCPU_Speed_Limit \t= 50\n"
    "2024-07-15 16:09:40 +0200 CPU Power notify\n"
    "\tCPU_Speed_Limit \t= 100\n"
)


@pytest.mark.parametrize(
    ("text", "expected", "pressure"),
    [
        (NOMINAL_APPLE_SILICON, PmsetTherm(None, None, None, None, None), "nominal"),
        (NOMINAL_INTEL, PmsetTherm(None, None, 100, 8, 100), "nominal"),
        (THROTTLED_INTEL, PmsetTherm(None, None, 100, 8, 35), "cpu speed limit 35%"),
        (
            WARNING_RECORDED,
            PmsetTherm(5, 0, 80, 6, 62),
            "thermal warning level 5, cpu speed limit 62%, cpu scheduler limit 80%",
        ),
        (TWO_RECORDS, PmsetTherm(None, None, None, None, 100), "nominal"),
        (
            "Performance Warning Level: 2\n",
            PmsetTherm(None, 2, None, None, None),
            "performance warning level 2",
        ),
    ],
)
def test_pmset_output_is_parsed(text: str, expected: PmsetTherm, pressure: str) -> None:
    therm = parse_pmset_therm(text)
    assert therm == expected
    assert thermal_pressure(therm) == pressure


@pytest.mark.parametrize("text", ["", "pmset: unknown option\n", "CPU_Speed_Limit = fast\n"])
def test_text_without_its_lines_is_not_a_state(text: str) -> None:
    assert parse_pmset_therm(text) is None


_KEYS = {
    "Thermal Warning Level": "thermal_warning_level",
    "Performance Warning Level": "performance_warning_level",
    "CPU_Scheduler_Limit": "cpu_scheduler_limit_percent",
    "CPU_Available_CPUs": "cpu_available_cpus",
    "CPU_Speed_Limit": "cpu_speed_limit_percent",
}
_LINES = st.one_of(
    st.tuples(st.sampled_from(sorted(_KEYS)), st.integers(0, 200), st.sampled_from([" = ", ":"])),
    st.sampled_from(
        [
            "Note: No thermal warning level has been recorded",
            "2024-03-02 09:14:51 +0100 CPU Power notify",
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40),
)


@given(st.lists(_LINES, max_size=12))
def test_the_parser_keeps_the_last_figure_of_each_key_and_names_and_ranks_it_alike(
    lines: list[tuple[str, int, str] | str],
) -> None:
    text = "\n".join(
        line if isinstance(line, str) else f"\t{line[0]}{line[2]}{line[1]}" for line in lines
    )
    therm = parse_pmset_therm(text)
    figures = {_KEYS[line[0]]: line[1] for line in lines if isinstance(line, tuple)}
    if figures:
        assert therm is not None
        assert therm._asdict() == {field: figures.get(field) for field in PmsetTherm._fields}
    if therm is None:
        return
    rank = pressure_rank(therm)
    assert rank in (0, 1, 2, 3)
    assert (thermal_pressure(therm) == "nominal") == (rank == 0)


@pytest.mark.parametrize(
    ("therm", "rank"),
    [
        (PmsetTherm(None, None, None, None, None), 0),
        (PmsetTherm(0, 0, 100, 8, 100), 0),
        (PmsetTherm(3, None, None, None, None), 1),
        (PmsetTherm(5, None, None, None, None), 2),
        (PmsetTherm(10, None, None, None, None), 3),
        (PmsetTherm(None, 1, None, None, None), 2),
        (PmsetTherm(None, None, 100, 8, 80), 2),
        (PmsetTherm(None, None, 50, 8, 100), 2),
        (PmsetTherm(2, None, 100, 8, 62), 2),
        (PmsetTherm(10, None, 100, 8, 35), 3),
    ],
)
def test_the_rank_is_the_worst_figure_s(therm: PmsetTherm, rank: int) -> None:
    assert pressure_rank(therm) == rank


def stand_in(tmp_path: Path, script: str) -> str:
    """A ``pmset`` on a private PATH: a real executable that runs *script* (sh)."""
    path = tmp_path / "pmset"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(tmp_path)


def which_in(directory: str) -> Any:
    import shutil

    return lambda name: shutil.which(name, path=directory)


def test_the_command_s_output_is_returned(tmp_path: Path) -> None:
    directory = stand_in(tmp_path, f"printf '{THROTTLED_INTEL}'")
    assert run_pmset(which=which_in(directory)) == THROTTLED_INTEL


def test_it_is_run_with_its_arguments(tmp_path: Path) -> None:
    directory = stand_in(tmp_path, 'echo "$@"')
    assert run_pmset(which=which_in(directory)) == "-g therm\n"


def test_no_pmset_is_no_state_and_no_damage(tmp_path: Path) -> None:
    assert run_pmset(which=which_in(str(tmp_path))) is None


def test_a_hanging_pmset_is_given_up_at_its_deadline(tmp_path: Path) -> None:
    directory = stand_in(tmp_path, "exec sleep 30")
    started = time.monotonic()
    result = run_pmset(0.3, which=which_in(directory))
    assert time.monotonic() - started < 5
    assert isinstance(result, tuple)
    assert result[1] == "unreadable"
    assert "no answer within 0.3 s" in result[2]


def test_a_failing_pmset_is_a_damage(tmp_path: Path) -> None:
    directory = stand_in(tmp_path, "echo oops >&2; exit 3")
    result = run_pmset(which=which_in(directory))
    assert result == ("pmset -g therm", "unreadable", "exited with status 3")


def test_a_runner_that_raises_is_a_damage() -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    result = run_pmset(which=lambda name: "/usr/bin/pmset", run=broken)
    assert isinstance(result, tuple)
    assert "PermissionError" in result[2]


def test_heat_reader_reports_the_thermal_state(tmp_path: Path) -> None:
    directory = stand_in(tmp_path, f"printf '{THROTTLED_INTEL}'")
    reader = HeatReader(backend="psutil", pmset=lambda: run_pmset(which=which_in(directory)))
    heat = reader.read()
    assert heat is not None
    assert heat.thermal_pressure == "cpu speed limit 35%"
    assert heat.thermal_rank == 2  # heavy: found from the figures, not the text
    assert "pmset" in heat.source.split("+")


def test_unparseable_pmset_output_leaves_the_state_unknown(tmp_path: Path) -> None:
    reader = HeatReader(backend="linux", hwmon_root=str(tmp_path), pmset=lambda: "¯\\_(ツ)_/¯\n")
    assert reader.read() is None
    (fault,) = reader.faults
    assert fault.field == "heat"
    assert fault.source == "pmset -g therm"
    assert fault.kind == "garbage"


def test_a_pmset_damage_with_sensors_read_leaves_only_the_state_unknown(tmp_path: Path) -> None:
    from resguard.testing import KernelTree

    tree = KernelTree(tmp_path / "k")
    tree.add_hwmon("coretemp", [(None, 60.0, None, None)])
    reader = HeatReader(
        hwmon_root=tree.hwmon_root,
        pmset=lambda: ("pmset -g therm", "unreadable", "no answer within 2 s"),
    )
    heat = reader.read()
    assert heat is not None
    assert heat.hottest_celsius == 60.0
    assert heat.thermal_pressure is None
    assert heat.thermal_rank is None
    assert [(fault.field, fault.fallback) for fault in reader.faults] == [
        ("heat.thermal_pressure", None)
    ]


def test_importing_the_snapshot_layer_does_not_import_subprocess() -> None:
    """The pmset probe imports subprocess when it runs (macOS), not on every import."""
    from support import run_python

    loaded = run_python("import sys, resguard.snapshot; print('subprocess' in sys.modules)")
    assert loaded.strip() == "False"


def test_pmset_is_run_again_only_when_its_answer_is_old() -> None:
    from resguard.snapshot._heat import PMSET_MAX_AGE_S
    from resguard.testing import ManualClock

    clock = ManualClock()
    runs: list[float] = []

    def pmset() -> str:
        runs.append(clock())
        return THROTTLED_INTEL if len(runs) == 1 else NOMINAL_INTEL

    reader = HeatReader(backend="psutil", pmset=pmset, clock=clock)
    first = reader.read()
    clock.advance(PMSET_MAX_AGE_S / 2)
    second = reader.read()
    assert first is not None
    assert second is not None
    assert second.thermal_pressure == first.thermal_pressure == "cpu speed limit 35%"
    assert len(runs) == 1
    clock.advance(PMSET_MAX_AGE_S)
    third = reader.read()
    assert third is not None
    assert third.thermal_pressure == "nominal"
    assert len(runs) == 2
