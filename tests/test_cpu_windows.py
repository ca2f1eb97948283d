"""Honest CPU: a one-shot measures over a real window (``--window``), a sampler's first
sample says CPU is unknown, and later ones cover the time since the sampler's previous
sample, never since boot."""

from __future__ import annotations

import argparse

import pytest

from resguard.cli._args import (
    DEFAULT_WINDOW_S,
    Parser,
    add_window_argument,
    over_window,
    window_seconds,
)


class FakeTime:
    """A monotonic clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


def test_over_window_reads_twice_with_the_window_between() -> None:
    fake = FakeTime()
    readings: list[float] = []

    def read() -> float:
        readings.append(fake.now_s)
        return fake.now_s

    last = over_window(1.0, read, clock=fake.clock, sleep=fake.sleep)
    assert readings == [100.0, 101.0]
    assert last == 101.0
    assert all(0 < step <= 0.25 for step in fake.sleeps)  # in slices: a Ctrl-C lands soon


def test_over_window_never_measures_below_the_shortest_cpu_window() -> None:
    from resguard._probes.procfs import CPU_WINDOW_MIN_S

    fake = FakeTime()
    readings: list[float] = []
    over_window(0.001, lambda: readings.append(fake.now_s), clock=fake.clock, sleep=fake.sleep)
    assert readings[1] - readings[0] == pytest.approx(CPU_WINDOW_MIN_S)


def test_over_window_a_sleep_cut_short_does_not_end_the_wait_early() -> None:
    fake = FakeTime()
    readings: list[float] = []

    def short_sleep(seconds: float) -> None:  # a signal woke it: only a tenth passed
        fake.now_s += max(seconds / 10, 0.01)

    over_window(1.0, lambda: readings.append(fake.now_s), clock=fake.clock, sleep=short_sleep)
    assert readings[1] - readings[0] >= 1.0


def test_over_window_ctrl_c_during_the_wait_propagates_before_the_second_read() -> None:
    reads: list[int] = []

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        over_window(1.0, lambda: reads.append(1), sleep=interrupted)
    assert reads == [1]


def parsed_window(*argv: str) -> float:
    parser = Parser(prog="resguard snapshot")
    add_window_argument(parser)
    window: float = parser.parse_args(list(argv)).window
    return window


def test_window_defaults_to_one_second() -> None:
    assert DEFAULT_WINDOW_S == 1.0
    assert parsed_window() == 1.0


@pytest.mark.parametrize(("text", "seconds"), [("1", 1.0), ("2s", 2.0), ("500ms", 0.5)])
def test_window_takes_the_cli_duration_syntax(text: str, seconds: float) -> None:
    assert parsed_window("--window", text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-1", "soon", "2h"])
def test_a_window_that_is_no_window_is_refused_quoting_it(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text).replace("'", ".")):
        window_seconds(text)


def test_a_bad_window_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parsed_window("--window", "0")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "'0'" in err
    assert "above 0" in err
