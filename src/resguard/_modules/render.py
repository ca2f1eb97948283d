"""Turning snapshot values into plain dicts (JSON) and small HTML tables (notebooks)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

__all__ = ["ValueMixin", "flatten", "format_value", "html_table", "to_plain"]

# Fields counted in bytes are shown with units in HTML; JSON keeps the raw integers.
_BYTE_FIELDS = frozenset(
    {
        "total",
        "limit",
        "used",
        "available",
        "free",
        "rss",
        "vms",
        "uss",
        "children_rss",
        "memory_usage",
        "memory_used",
        "memory_limit",
        "size",
        "size_vram",
        "peak_rss",
    }
)


def to_plain(value: Any) -> Any:
    """Recursively convert attrs instances, tuples and enums into JSON-ready values."""
    if attrs.has(type(value)):
        return {
            field.name: to_plain(getattr(value, field.name))
            for field in attrs.fields(type(value))
            if not field.name.startswith("_")
        }
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_plain(item) for key, item in value.items()}
    if hasattr(value, "value") and hasattr(value, "name") and type(value).__module__ != "builtins":
        return value.name  # enums
    return value


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted paths and leaf values of an attrs instance (tuples of records are skipped)."""
    for field in attrs.fields(type(value)):
        item = getattr(value, field.name)
        path = f"{prefix}{field.name}"
        if attrs.has(type(item)):
            yield from flatten(item, path + ".")
        elif isinstance(item, tuple) and item and attrs.has(type(item[0])):
            yield path, f"{len(item)} rows"
        else:
            yield path, item


def format_value(value: float | None, spec: str = "", *, unknown: str = "unknown") -> str:
    """*value* formatted with *spec* (``".1f"``), or *unknown* when it is ``None``: a number
    resguard could not read is shown as unknown, never as 0."""
    return unknown if value is None else format(value, spec)


def _format(path: str, value: Any) -> str:
    from resguard.units import format_bytes

    leaf = path.rsplit(".", 1)[-1]
    if isinstance(value, int) and not isinstance(value, bool) and leaf in _BYTE_FIELDS:
        return format_bytes(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return "—" if value is None else str(value)


def html_table(rows: Iterable[tuple[str, Any]], title: str = "") -> str:
    """A two-column HTML table of (name, value) rows, values formatted for people."""
    caption = f"<caption>{html.escape(title)}</caption>" if title else ""
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(path)}</th>"
        f"<td style='text-align:right'>{html.escape(_format(path, value))}</td></tr>"
        for path, value in rows
    )
    return f"<table>{caption}{body}</table>"


def records_table(records: Iterable[Any], columns: tuple[str, ...], title: str = "") -> str:
    """An HTML table with one row per attrs record and the given columns."""
    caption = f"<caption>{html.escape(title)}</caption>" if title else ""
    head = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(_format(column, getattr(record, column)))}</td>"
            for column in columns
        )
        + "</tr>"
        for record in records
    )
    return f"<table>{caption}<tr>{head}</tr>{rows}</table>"


class ValueMixin:
    """``to_dict()`` and ``_repr_html_()`` for the frozen attrs value types."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The value as plain dicts, lists and numbers (JSON-ready)."""
        result = to_plain(self)
        assert isinstance(result, dict)
        return result

    def _repr_html_(self) -> str:
        return html_table(flatten(self), type(self).__name__)
