"""``resguard top``: the processes using the most CPU or memory over a window."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from resguard._modules.render import command_text, printable
from resguard.cli._args import (
    Commands,
    add_window_argument,
    duration,
    measure_window,
    non_negative_int,
)
from resguard.cli._render import Column, fixed, print_json, size, table, writable
from resguard.cli._view import process_row

if TYPE_CHECKING:
    from resguard.processes import ProcessTable, SortKey
    from resguard.snapshot import ProcessInfo

__all__ = ["add_parser", "format_processes", "run", "top_rows"]


def format_processes(rows: Sequence[ProcessInfo], width: int = 120) -> str:
    """A fixed-width table of process rows, command lines cut to fit *width* columns and
    their control characters escaped (a newline or ESC in an argument cannot reach the
    terminal); a command shows its program's name, not its path (``--json`` has the whole
    command line)."""
    command = max(width - 44, 20)
    columns = (
        Column("PID", ">", 7),
        Column("CPU%", ">", 6),
        Column("RSS", ">", 10),
        Column("PROCS", ">", 5),  # how many processes the row stands for (--group merges)
        Column("USER", "<", 10, cut=10),
        Column("COMMAND", cut=command),
    )
    return table(
        columns,
        [
            (
                str(row.pid),
                fixed(row.cpu_percent, ".1f"),
                size(row.rss),
                str(row.count),
                printable(row.username or "?"),
                command_text(row.cmdline, row.name, width=command, program=True),
            )
            for row in rows
        ],
    )


def table_width(out: TextIO) -> int:
    """The columns for the table: the terminal's, else ``COLUMNS`` (piped output honours
    it, as ``ps`` does), else 120."""
    import os

    try:
        return os.get_terminal_size(out.fileno()).columns or 120
    except (OSError, ValueError, AttributeError):
        pass
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        return 120
    return columns if columns > 0 else 120


def top_rows(
    processes: ProcessTable,
    rows: list[ProcessInfo],
    n: int,
    *,
    by: SortKey = "cpu",
    group: bool = False,
    kernel_threads: bool = False,
) -> list[ProcessInfo]:
    """The *n* first of *rows* (a scan of the table *processes*) by *by*, kernel threads
    left out unless *kernel_threads*."""
    from resguard.processes import is_kernel_thread

    if not kernel_threads:
        rows = [row for row in rows if not is_kernel_thread(row)]
    return processes.top(n, by=by, group=group, rows=rows)


def run(args: argparse.Namespace, out: TextIO) -> int:
    from resguard.processes import ProcessTable

    processes = ProcessTable()
    # two scans a window apart: a table's first scan knows only each process's average
    # since it started, which is no current figure
    window = measure_window(args.window, processes=processes)
    rows = top_rows(
        processes, window.rows or [], args.n, by=args.by, group=args.group, kernel_threads=args.all
    )
    if args.json:
        print_json([process_row(row) for row in rows], out)
    else:
        out.write(writable(format_processes(rows, table_width(out)) + "\n", out))
    return 0


def add_parser(commands: Commands) -> None:
    top = commands.add_parser("top", help="the processes using the most CPU or memory")
    top.add_argument("-n", type=non_negative_int, default=10, help="rows (default 10)")
    top.add_argument(
        "--by",
        choices=("cpu", "memory"),
        default="cpu",
        help="order by CPU percent (of one core, as top counts) or resident memory (default cpu)",
    )
    top.add_argument(
        "--group",
        action="store_true",
        help="one row per process name, PROCS saying how many processes it merges",
    )
    top.add_argument(
        "--all", action="store_true", help="also show kernel threads (hidden by default)"
    )
    add_window_argument(top)
    # what --window was called before issue 14, kept for scripts; 0 (once each process's
    # average since it started) is measured over the shortest CPU window, as --window is
    top.add_argument("--interval", type=duration, dest="window", help=argparse.SUPPRESS)
    top.add_argument("--json", action="store_true", help="print JSON")
    top.set_defaults(handler=run)
