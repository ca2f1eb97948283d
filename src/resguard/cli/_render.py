"""The one renderer every command prints through: fixed or fitted tables, JSON, and the
stream of updates a repeating command appends (one line or JSON object each)."""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple, TextIO, cast

from resguard._errors import ResguardError
from resguard.units import format_size

__all__ = [
    "UNKNOWN",
    "Column",
    "Live",
    "OutputError",
    "fixed",
    "print_compact_json",
    "print_json",
    "size",
    "standard_output",
    "table",
    "tolerant",
    "writable",
]

UNKNOWN = "?"


def size(value: int | None, unknown: str = UNKNOWN) -> str:
    """*value* bytes for people (the one size formatter, :func:`resguard.units.format_size`:
    IEC units), or *unknown* when it could not be measured."""
    return format_size(value, unknown=unknown)


def fixed(value: float | None, spec: str, unknown: str = UNKNOWN) -> str:
    """*value* formatted with *spec*, or *unknown* (never 0) when it is ``None``."""
    return unknown if value is None else format(value, spec)


class Column(NamedTuple):
    """A table column: its title, ``"<"`` (left) or ``">"`` (right) alignment, a fixed
    *width* (``None``: as wide as its widest cell) and a *cut* for longer cells."""

    title: str
    align: Literal["<", ">"] = "<"
    width: int | None = None
    cut: int | None = None

    def cell(self, text: str) -> str:
        return text if self.cut is None else text[: self.cut]


def table(
    columns: Sequence[Column],
    rows: Iterable[Sequence[str]],
    *,
    gap: str = " ",
    strip: bool = False,
) -> str:
    """The title row and one line per row, cells padded to their column's width and joined
    by *gap*; a last left-aligned column without a width is not padded. *strip* removes
    what trails each line."""
    cells = [
        tuple(column.cell(column.title) for column in columns),
        *(
            tuple(column.cell(text) for column, text in zip(columns, row, strict=True))
            for row in rows
        ),
    ]
    widths = [
        column.width if column.width is not None else max(len(line[index]) for line in cells)
        for index, column in enumerate(columns)
    ]
    last = columns[-1]
    natural = last.width is None and last.align == "<"
    lines = []
    for line in cells:
        padded = [
            format(text, f"{column.align}{width}")
            for column, text, width in zip(columns, line, widths, strict=True)
        ]
        if natural:
            padded[-1] = line[-1]
        text = gap.join(padded)
        lines.append(text.rstrip() if strip else text)
    return "\n".join(lines)


def print_json(value: Any, out: TextIO) -> None:
    """*value* as indented JSON and a newline."""
    json.dump(value, out, indent=2, sort_keys=False)
    out.write("\n")


def print_compact_json(value: Any, out: TextIO) -> None:
    """*value* as one line of JSON (one update of a stream)."""
    json.dump(value, out, separators=(",", ":"))
    out.write("\n")


def writable(text: str, out: TextIO) -> str:
    """*text* as *out* can write it: what its encoding cannot hold (a lone surrogate from
    an undecodable file name, an emoji on a Latin-1 terminal) becomes a replacement
    character, so no process's name can crash the command printing it."""
    encoding = getattr(out, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "replace").decode(encoding, "replace")
    except LookupError:  # an encoding Python does not know: keep what ASCII can say
        return text.encode("ascii", "replace").decode("ascii")
    return text


class OutputError(ResguardError, OSError):
    """The command's output could not be written: a full disk (``> /dev/full``), a
    closed standard output (``>&-``), an I/O error. Not a bug in resguard: the command
    line says so in one line (caught before the other errors of the tree). An
    :class:`OSError` with the failure's ``errno`` and ``strerror``; a reader that went
    away stays :class:`BrokenPipeError`."""


def _output_error(error: OSError | ValueError) -> OutputError:
    if isinstance(error, OSError):
        return OutputError(error.errno or errno.EIO, error.strerror or str(error))
    return OutputError(errno.EBADF, "it is closed")  # ValueError: I/O on a closed file


class _Tolerant:
    """A text stream whose writes never fail on a character its encoding cannot hold, and
    fail as :class:`OutputError` when the stream itself cannot be written."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        try:
            return self._out.write(writable(text, self._out))
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as error:
            raise _output_error(error) from error

    def flush(self) -> None:
        try:
            self._out.flush()
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as error:
            raise _output_error(error) from error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)  # encoding, flush, isatty, fileno, ...


class _Closed:
    """Standard output when there is none (``resguard watch >&-``: Python's
    ``sys.stdout`` is ``None``): not a terminal, and a write fails as
    :class:`OutputError`, so only a command that prints fails, and says why."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        raise OutputError(errno.EBADF, "it is closed")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OutputError(errno.EBADF, "it is closed")


def standard_output() -> TextIO:
    """``sys.stdout`` as every command writes it (:func:`tolerant`), or a closed stream
    when the process has none."""
    out = sys.stdout
    return tolerant(cast("TextIO", _Closed()) if out is None else out)


def tolerant(out: TextIO) -> TextIO:
    """*out* for every command's output: a process, container or model name its encoding
    cannot hold (a lone surrogate, an emoji on a Latin-1 terminal) is written with a
    replacement character instead of failing the command, and a write or flush that
    fails (a full disk, a closed descriptor) raises :class:`OutputError`."""
    return out if isinstance(out, _Tolerant) else cast("TextIO", _Tolerant(out))


class Live:
    """Where the appended updates of a repeating command go: one line, frame or JSON
    object per update (the live view on a terminal is :mod:`._screen`'s)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def show(self, text: str) -> None:
        self.out.write(writable(text + "\n", self.out))
        self.out.flush()

    def show_json(self, value: Any) -> None:
        print_compact_json(value, self.out)
        self.out.flush()
