"""Turning snapshot values into plain dicts (JSON) and small HTML tables (notebooks), and
the pieces of text those tables show people: local times, percentages, command lines."""

from __future__ import annotations

import datetime as _dt
import html
import math
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from resguard.units import format_bytes

__all__ = [
    "ValueMixin",
    "command_text",
    "flatten",
    "format_value",
    "html_table",
    "leaf_unit",
    "local_time",
    "percent_text",
    "printable",
    "program_name",
    "rows_table",
    "sections_table",
    "sizes_apart",
    "to_plain",
]

UNKNOWN = "unknown"

# (how many value types it was built from, leaf name -> unit), swapped whole when rebuilt
_leaf_units: tuple[int, dict[str, str | None]] = (0, {})


def _value_types() -> list[type]:
    found, todo = [], [ValueMixin]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


def _declared_units(types: Iterable[type]) -> dict[str, str | None]:
    declared: dict[str, set[str]] = {}
    for cls in types:
        if attrs.has(cls):
            for field in attrs.fields(cls):
                unit = field.metadata.get("unit")
                if isinstance(unit, str):
                    declared.setdefault(field.name, set()).add(unit)
    return {leaf: units.pop() if len(units) == 1 else None for leaf, units in declared.items()}


def leaf_unit(name: str) -> str | None:
    """The unit (``"bytes"``, ``"percent"``...) that the value types' fields named *name*
    declare in their attrs metadata (``metadata={"unit": ...}``, as the snapshot's fields
    do: the one place units are written), or ``None`` when none does or they disagree.

    A table of (name, value) rows carries no types, so it is formatted by this; the table
    is rebuilt when a module defining more value types has been imported."""
    global _leaf_units
    types = _value_types()
    built_from, units = _leaf_units
    if len(types) != built_from:
        units = _declared_units(types)
        _leaf_units = (len(types), units)
    return units.get(name)


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


def _format(path: str, value: Any, unit: str | None = None) -> str:
    """*value* for people: a whole number of bytes in IEC units (JSON keeps the raw
    integers), a percentage with ``%``, another float with two decimals, ``—`` for
    ``None``."""
    from resguard.units import format_size

    if unit is None:
        unit = leaf_unit(path.rsplit(".", 1)[-1])
    if isinstance(value, int) and not isinstance(value, bool) and unit == "bytes":
        return format_size(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and unit == "percent":
        return percent_text(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return "—" if value is None else str(value)


def html_table(
    rows: Iterable[tuple[str, Any]], title: str = "", *, units: Mapping[str, str] | None = None
) -> str:
    """A two-column HTML table of (name, value) rows, values formatted for people by their
    unit: *units* by row name for rows that are no field of a value type (``peak_rss``),
    else the unit the fields of that name declare (:func:`leaf_unit`)."""
    units = units or {}
    caption = f"<caption>{html.escape(title)}</caption>" if title else ""
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(path)}</th>"
        f"<td style='text-align:right'>"
        f"{html.escape(_format(path, value, units.get(path)))}</td></tr>"
        for path, value in rows
    )
    return f"<table>{caption}{body}</table>"


def records_table(records: Iterable[Any], columns: tuple[str, ...], title: str = "") -> str:
    """An HTML table with one row per attrs record and the given columns, each value
    formatted by the unit its field declares (:func:`rows_table` draws it: texts made
    printable and escaped, numbers aligned right)."""
    cells = [
        [(getattr(record, column), _unit(record, column)) for column in columns]
        for record in records
    ]
    numeric = frozenset(
        index for index in range(len(columns)) if any(_is_number(row[index][0]) for row in cells)
    )
    texts = [
        [_format(column, value, unit) for column, (value, unit) in zip(columns, row, strict=True)]
        for row in cells
    ]
    return rows_table(columns, texts, title, numeric=numeric)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unit(record: Any, name: str) -> str | None:
    """The unit *record*'s own field *name* declares, or ``None``."""
    if attrs.has(type(record)):
        field = attrs.fields_dict(type(record)).get(name)
        if field is not None:
            unit = field.metadata.get("unit")
            return unit if isinstance(unit, str) else None
    return None


def local_time(epoch_s: float | None, *, unknown: str = UNKNOWN) -> str:
    """Wall-clock epoch seconds as this machine's local time, ``2026-12-01 17:20:03``;
    *unknown* for ``None``; a time no calendar holds (NaN, year 10⁶) is shown as the
    number it is, never an exception in a repr."""
    if epoch_s is None:
        return unknown
    try:
        return _dt.datetime.fromtimestamp(epoch_s).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError, TypeError):
        return repr(epoch_s)


def percent_text(value: float | None, *, unknown: str = UNKNOWN) -> str:
    """A percentage for people, ``45.9%``; *unknown* for ``None``."""
    if value is None:
        return unknown
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return repr(value)
    return f"{value:.1f}%"


def printable(text: str) -> str:
    """*text* with every control character (newlines, escapes, bidi overrides) written as
    its escape (``\\n``, ``\\x1b``, ``\\u202e``): a command line is shown on one line as it
    is, and nothing in it can move the cursor or reorder what follows."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or char == " ":
            out.append(char)
        elif unicodedata.category(char) == "Zs":  # a no-break or wide space: a space
            out.append(" ")
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def command_text(
    cmdline: Sequence[str], name: str, *, width: int = 120, program: bool = False
) -> str:
    """A process's command line for a table: its arguments joined by spaces, control
    characters escaped (:func:`printable`), cut to *width* characters with ``…``; a process
    without one (a kernel thread, a zombie) shows its name in brackets, as ``ps`` does.
    With *program*, the program's path is cut to its last part (``python3 -c …``, not
    ``/root/.pyenv/versions/3.11.7/bin/python3 -…``) so a narrow column still shows
    what runs."""
    if cmdline and program:
        cmdline = (program_name(cmdline[0]), *cmdline[1:])
    text = printable(" ".join(cmdline)) if cmdline else f"[{printable(name)}]"
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def program_name(argv0: str) -> str:
    """*argv0* with the directories of its program left out: ``/usr/bin/python3`` is
    ``python3``; a title a process set itself (``/opt/app/chrome --type=renderer`` in one
    argument, ``postgres: checkpointer``) keeps what follows its first space."""
    head, space, rest = argv0.partition(" ")
    base = head.replace("\\", "/").rsplit("/", 1)[-1]
    return (base or head) + space + rest


def _text(text: str) -> str:
    """*text* for an HTML cell: one line, no control character, no markup."""
    return html.escape(printable(text))


def sections_table(sections: Iterable[tuple[str, Iterable[tuple[str, str]]]], title: str) -> str:
    """One HTML table of labelled groups: a heading row per section, then its (label,
    text) rows; texts are already formatted for people and are made :func:`printable` and
    escaped here, as are the labels and the title. A section without rows is left out."""
    parts = [f"<table><caption>{_text(title)}</caption>"]
    for heading, rows in sections:
        body = "".join(
            f"<tr><th style='text-align:left'>{_text(label)}</th>"
            f"<td style='text-align:left'>{_text(text)}</td></tr>"
            for label, text in rows
        )
        if body:
            parts.append(
                f"<tbody><tr><th colspan='2' style='text-align:left'>{_text(heading)}"
                f"</th></tr>{body}</tbody>"
            )
    parts.append("</table>")
    return "".join(parts)


def rows_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    title: str = "",
    *,
    numeric: frozenset[int] = frozenset(),
) -> str:
    """An HTML table with a header of *columns* and one row per sequence of texts (already
    formatted for people; made :func:`printable` and escaped here, as are the columns and
    the title). The columns at the indices in *numeric* are aligned right."""
    caption = f"<caption>{_text(title)}</caption>" if title else ""
    head = "".join(f"<th>{_text(column)}</th>" for column in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td style='text-align:{'right' if index in numeric else 'left'}'>{_text(text)}</td>"
            for index, text in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>{caption}<tr>{head}</tr>{body}</table>"


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


def sizes_apart(first: int, second: int) -> tuple[str, str]:
    """*first* and *second* formatted (``1.4 GiB``), or as exact bytes when different
    sizes would read the same (``1,503,238,554 bytes`` and ``1,503,000,000 bytes``), so a
    refusal's "needs X; Y is free" shows which is larger."""
    one, other = format_bytes(first), format_bytes(second)
    if one == other and first != second:
        return f"{first:,} bytes", f"{second:,} bytes"
    return one, other
