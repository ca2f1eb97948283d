"""The benchmarks report honestly: net timings, signed latencies, labelled alternatives.

The harness and the reaction rows are plain functions over figures, so they are checked on
made-up figures (an injected timer, scripted crossings) without timing anything here.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> Iterator[tuple[ModuleType, ModuleType]]:
    path = list(sys.path)  # bench_monitor puts benchmarks/ on it, as run.py does
    try:
        yield _load("_harness"), _load("bench_monitor")
    finally:
        sys.path[:] = path
        sys.modules.pop("_harness", None)
        sys.modules.pop("bench_monitor", None)


class _Clock:
    """A timer that moves only when the timed functions say they cost something."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_a_timing_is_net_of_the_empty_call_timed_beside_it(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    harness, _ = bench
    clock = _Clock()

    def call_overhead() -> None:
        clock.now_s += 1.0

    def timed() -> None:
        clock.now_s += 1.0 + 5.0  # the same call, and 5 of work

    per_call = harness.per_call_s(
        timed, repeat=3, min_time_s=0.0, timer=clock, baseline=call_overhead
    )
    assert per_call == pytest.approx(5.0)
    gross = harness.per_call_s(timed, repeat=3, min_time_s=0.0, timer=clock, baseline=None)
    assert gross == pytest.approx(6.0)


def test_a_negative_duration_is_printed_with_its_sign_and_unit(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    harness, _ = bench
    assert harness.format_s(-0.0005) == "-500.00 µs"
    assert harness.format_s(-2e-8) == "-20 ns"
    assert harness.format_s(0.0005) == "500.00 µs"


Cells = dict[tuple[str, str, int], Any]


def _cells(monitor: ModuleType, events_s: list[float], polled_s: list[float]) -> Cells:
    cells: Cells = {}
    for mode, _, _ in monitor.MODES:
        for pattern, _ in monitor.PATTERNS:
            for percent in monitor.THRESHOLDS_PERCENT:
                latencies = events_s if mode == "events" else polled_s
                cells[mode, pattern, percent] = monitor.Cell(
                    latencies_s=list(latencies), from_step_s=[abs(s) + 1e-4 for s in latencies]
                )
    return cells


def _rows(bench: tuple[ModuleType, ModuleType], cells: Cells) -> list[Any]:
    harness, monitor = bench
    table = harness.Table()
    monitor.reaction_rows(table, cells)
    return list(table.rows)


def test_a_verdict_before_the_childs_read_counts_negative_not_zero(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    _, monitor = bench
    cells = _cells(monitor, [-0.0004, -0.0003, -0.0002, 0.0001, 0.0002], [0.005])
    rows = [row for row in _rows(bench, cells) if row.what.startswith("reaction, events, thr")]
    assert rows
    for row in rows:
        assert row.ours == "-200.00 µs"  # the signed median, never a clamped "0 ns"
        assert "3 before the child's read (negative)" in row.what
        assert "from the step's start: median" in row.what
        assert row.met is True


def test_an_events_cell_is_beside_the_same_cell_measured_without_events(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    _, monitor = bench
    cells = _cells(monitor, [0.0005], [0.004, 0.006, 0.008])
    rows = _rows(bench, cells)
    events = [row for row in rows if row.what.startswith("reaction, events, ")]
    assert events
    for row in events:
        assert row.alternative.endswith("(measured)")
        assert row.theirs == "6.00 ms"  # the polled cell's own median
        assert row.ratio == "12.0×"
    for row in rows:  # a figure nobody measured here says so where it stands
        if row.theirs in ("50.00 ms", "125.00 ms", "5.00 s"):
            assert row.alternative.startswith("nominal: ")
            assert "(not measured)" in row.alternative


def test_an_events_cell_whose_thresholds_were_not_armed_is_marked_and_missed(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    _, monitor = bench
    cells = _cells(monitor, [0.0005], [0.004])
    cells["events", "sudden", 50].unarmed = 2
    rows = _rows(bench, cells)
    (row,) = [row for row in rows if row.what.startswith("reaction, events, threshold 50 %, sud")]
    assert "not armed: 2 of" in row.what
    assert row.ours == "500.00 µs"
    assert row.met is False
    others = [r for r in rows if r.what.startswith("reaction, events, threshold") and r is not row]
    assert all(r.met is True for r in others)


def test_thresholds_count_as_armed_only_when_one_is_registered(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    _, monitor = bench

    class Armed:
        def __init__(self, *lines: str) -> None:
            self.events_armed = lines

    assert monitor._thresholds_armed(Armed("v1 usage thresholds at 2 on /cg/memory.usage"))
    assert not monitor._thresholds_armed(Armed("v1 usage thresholds at 0 on /cg/memory.usage"))
    assert not monitor._thresholds_armed(Armed("PSI some 150ms/1s on /proc/pressure/memory"))
    assert not monitor._thresholds_armed(Armed())


def test_a_part_whose_alternative_is_not_installed_is_a_failed_row_saying_what_to_install(
    bench: tuple[ModuleType, ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = _load("run")
    real_import = run.importlib.import_module

    def import_module(name: str) -> ModuleType:
        if name == "bench_cache":
            raise ModuleNotFoundError("No module named 'cachetools'", name="cachetools")
        return real_import(name)  # type: ignore[no-any-return]

    monkeypatch.setattr(run.importlib, "import_module", import_module)
    monkeypatch.setattr(run, "empty_call_s", lambda: 4e-8)
    try:
        assert run.main(["cache"]) == 0
    finally:
        sys.modules.pop("run", None)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    (row,) = [line for line in out.splitlines() if line.startswith("| bench_cache |")]
    assert "failed: No module named 'cachetools'" in row
    assert "pip install -e '.[bench]'" in row
    assert "nox -s bench" in err
