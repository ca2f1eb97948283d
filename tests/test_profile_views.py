"""How a profile shows itself: the plot draws only series read at every sample (USS,
read every ``uss_interval``, is left out), and every size a person reads is in IEC units."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from resguard.profile import Profile
from resguard.testing import ManualClock

DECIMAL_SIZE = re.compile(r"\d\s*(?:kB|KB|MB|GB|TB|PB|EB)\b")
IEC_SIZE = re.compile(r"\d\s*(?:KiB|MiB|GiB|TiB|PiB|EiB)\b|\d B\b")


class _Cells(HTMLParser):
    """The text of each ``<th>``/``<td>`` cell of an HTML table, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def cells(html: str) -> dict[str, str]:
    parser = _Cells()
    parser.feed(html)
    return {row[0]: row[1] for row in parser.rows if len(row) == 2}


def legend_texts(figure: Any) -> list[str]:
    legends = [axis.get_legend() for axis in figure.axes]
    return [text.get_text() for legend in legends if legend for text in legend.get_texts()]


def ticked_profile(ticks: int, step_s: float, **kwargs: Any) -> Profile:
    """A real profile of this process whose samples are taken at the ManualClock's
    instants: one each *step_s* for *ticks* steps (USS at its own interval between)."""
    clock = ManualClock()
    prof = Profile("10ms", clock=clock, **kwargs)
    held = []
    with prof:
        for _ in range(ticks):
            clock.advance(step_s)
            held.append(bytearray(2**20))  # RSS moves while USS is not read
            prof.tick()  # or the thread took it: one sample per due time either way
    return prof


def test_the_plotted_series_are_sampled_at_the_same_instants() -> None:
    pytest.importorskip("matplotlib")
    prof = ticked_profile(12, 0.25, tracemalloc=True, uss_interval="1s")
    with_uss = [s for s in prof.samples if s.uss is not None]
    assert 2 < len(with_uss) < len(prof.samples)  # USS was read on some samples only
    times = [s.elapsed_s for s in prof.samples]
    figure = prof.plot()
    series = {}
    for axis in figure.axes:
        for line in axis.get_lines():
            raw: Any = line.get_xdata()  # matplotlib types it as any array-like
            xdata = [float(x) for x in raw]
            if len(xdata) > 2:  # a curve (axhline is [0, 1], the peak one point)
                series[line.get_label()] = xdata
    assert set(series) >= {"RSS", "tracemalloc"}
    assert "USS" not in series
    for label, xdata in series.items():
        assert xdata == times, label
    assert not any("USS" in label for label in legend_texts(figure))


def test_the_summary_names_how_often_uss_was_read() -> None:
    prof = ticked_profile(3, 0.5, uss_interval="1s")
    table = cells(prof._repr_html_())
    assert "peak_uss (read every 1s)" in table
    assert IEC_SIZE.search(table["peak_uss (read every 1s)"])
    assert "peak_uss" not in table  # one row, named with its interval


def test_a_profile_printout_never_mixes_decimal_and_iec_sizes() -> None:
    pytest.importorskip("matplotlib")
    prof = ticked_profile(5, 0.1, children=True)
    texts = [repr(prof), *cells(prof._repr_html_()).values()]
    figure = prof.plot()
    texts += legend_texts(figure)
    texts += [figure.get_suptitle()]
    joined = "\n".join(texts)
    assert IEC_SIZE.search(joined)
    assert not DECIMAL_SIZE.search(joined), joined
    assert "peak RSS" in repr(prof)
    assert re.search(r"\(\+-?[0-9.]+ (?:B|KiB|MiB)\)", repr(prof))


def test_the_summary_shows_percentages_and_cpu_time_for_people() -> None:
    table = cells(ticked_profile(3, 0.1)._repr_html_())
    assert table["mean_cpu_percent"].endswith("%")
    assert table["peak_cpu_percent"].endswith("%")
    assert re.fullmatch(r"[0-9.]+(?:ms|s)|[0-9]+m[0-9]{2}s", table["cpu_seconds"])
