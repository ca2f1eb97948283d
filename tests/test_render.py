"""HTML tables of values (notebooks): numbers are formatted by the unit their fields
declare in the attrs metadata, the one place units are written (resguard.snapshot's
fields; ``snapshot.metric_unit`` reads the same)."""

from __future__ import annotations

from html.parser import HTMLParser

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard._modules.render import (
    ValueMixin,
    command_text,
    html_table,
    leaf_unit,
    local_time,
    percent_text,
    printable,
    records_table,
    rows_table,
    sections_table,
)
from resguard.snapshot import metric_paths, metric_unit
from resguard.testing import make_container, make_snapshot


@pytest.mark.parametrize("path", sorted(metric_paths()))
def test_tables_format_as_bytes_exactly_the_snapshot_fields_declared_bytes(path: str) -> None:
    leaf = path.rsplit(".", 1)[-1]
    assert (leaf_unit(leaf) == "bytes") == (metric_unit(path) == "bytes")


def test_a_value_table_shows_bytes_with_units_and_keeps_other_numbers() -> None:
    snap = make_snapshot(used=3 * 2**30)
    memory_html = snap.memory._repr_html_()  # a record's flat table (the snapshot's is grouped)
    assert (
        "<th style='text-align:left'>used</th><td style='text-align:right'>3.0 GiB" in memory_html
    )
    cpu_html = snap.cpu._repr_html_()
    assert "<th style='text-align:left'>count</th><td style='text-align:right'>8<" in cpu_html
    assert snap.to_dict()["memory"]["used"] == 3 * 2**30  # JSON keeps the raw integers


def test_a_new_value_type_declaring_a_unit_is_formatted_by_it() -> None:
    @attrs.frozen
    class Sample(ValueMixin):
        resident_bytes_now: int = attrs.field(metadata={"unit": "bytes"})
        resident_pages_now: int = 0

    assert leaf_unit("resident_bytes_now") == "bytes"  # the table follows new types
    html = Sample(2**20, 2**20)._repr_html_()
    assert "1.0 MiB" in html
    assert "1048576" in html  # the field without a unit stays a plain number
    assert records_table([Sample(2**20)], ("resident_bytes_now",)).count("1.0 MiB") == 1


def test_names_declared_with_different_units_are_not_guessed() -> None:
    @attrs.frozen
    class Left(ValueMixin):
        ambiguous_figure: int = attrs.field(metadata={"unit": "bytes"})

    @attrs.frozen
    class Right(ValueMixin):
        ambiguous_figure: int = attrs.field(metadata={"unit": "count"})

    assert leaf_unit("ambiguous_figure") is None
    assert "2048" in html_table([("ambiguous_figure", 2048)])
    assert "2.0 KiB" in records_table([Left(2048)], ("ambiguous_figure",))  # its own field
    assert "2048" in records_table([Right(2048)], ("ambiguous_figure",))
    assert "2.0 KiB" in html_table(
        [("ambiguous_figure", 2048)], units={"ambiguous_figure": "bytes"}
    )


def test_container_rows_show_bytes_and_a_dash_for_unknown() -> None:
    container = make_container("web", memory_used=5 * 2**20, memory_limit=2**30)
    html = records_table(
        [attrs.evolve(container, cpu_percent=None)],
        ("name", "memory_used", "memory_limit", "cpu_percent"),
    )
    parser = _CellTexts()
    parser.feed(html)
    assert parser.cells[-4:] == ["web", "5.0 MiB", "1.0 GiB", "—"]  # unknown CPU: never 0


def test_a_record_table_escapes_control_characters_as_the_other_tables_do() -> None:
    container = make_container("evil\x1b[2J\nname", memory_used=2**20)
    html = records_table([container], ("name", "memory_used"), "title\x07")
    assert "\x1b" not in html
    assert "\x07" not in html
    parser = _CellTexts()
    parser.feed(html)
    assert printable("evil\x1b[2J\nname") in parser.cells
    assert "text-align:right'>1.0 MiB" in html  # a figure is aligned right, a text left


# -- the texts tables show people ----------------------------------------------------------


class _CellTexts(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.cells: list[str] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("th", "td", "caption"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td", "caption") and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@given(st.text())
def test_printable_text_has_no_control_character_and_keeps_printable_text(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable()
    if text.isprintable():
        assert shown == text


@given(st.lists(st.text(), max_size=5), st.text(), st.integers(min_value=1, max_value=200))
def test_a_command_line_is_one_printable_line_within_its_width(
    argv: list[str], name: str, width: int
) -> None:
    text = command_text(tuple(argv), name, width=width)
    assert text.isprintable()
    assert len(text) <= width
    if not argv and len(name) + 2 <= width and name.isprintable():
        assert text == f"[{name}]"


@given(st.text(), st.text(), st.text())
def test_table_texts_come_back_as_their_printable_selves_never_as_markup(
    title: str, label: str, text: str
) -> None:
    for html in (
        sections_table([("group", [(label, text)])], title),
        rows_table([label], [[text]], title),
    ):
        parser = _CellTexts()
        parser.feed(html)
        parser.close()
        assert printable(text) in parser.cells
        assert printable(label) in parser.cells
        assert not title or printable(title) in parser.cells
        assert set(parser.tags) <= {"table", "caption", "tbody", "tr", "th", "td"}


@given(st.one_of(st.none(), st.floats(), st.integers(min_value=-(10**30), max_value=10**30)))
def test_local_time_and_percent_text_never_raise(value: float | None) -> None:
    assert isinstance(local_time(value), str)
    assert isinstance(percent_text(value), str)


def test_local_time_is_the_local_calendar_time() -> None:
    import datetime as dt

    at = 1_800_000_000.25
    assert local_time(at) == dt.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")
    assert local_time(None) == "unknown"
    assert percent_text(45.94) == "45.9%"


def test_a_percent_field_is_shown_with_its_sign() -> None:
    @attrs.frozen
    class Share(ValueMixin):
        busy_share_now: float = attrs.field(metadata={"unit": "percent"})
        plain_ratio_now: float = 0.5

    html = Share(45.94)._repr_html_()
    assert "45.9%" in html
    assert "0.50" in html  # a float without a unit keeps two decimals
    assert "45.9%" in records_table([Share(45.94)], ("busy_share_now",))


def test_a_lone_surrogate_is_escaped_so_the_html_encodes() -> None:
    html = sections_table([("group", [("name", "a\udc80b")])], "title")
    assert "a\\udc80b" in html
    html.encode("utf-8")  # a notebook sends it as UTF-8: a lone surrogate would raise
