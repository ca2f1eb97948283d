"""HTML tables of values (notebooks): numbers are formatted by the unit their fields
declare in the attrs metadata, the one place units are written (resguard.snapshot's
fields; ``snapshot.metric_unit`` reads the same)."""

from __future__ import annotations

import attrs
import pytest

from resguard._modules.render import ValueMixin, html_table, leaf_unit, records_table
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
    assert "5.0 MiB" in html
    assert "1.0 GiB" in html
    assert "<td>—</td>" in html  # an unknown figure (no CPU reading yet) is a dash, never 0
