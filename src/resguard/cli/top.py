"""``resguard top``: the processes using the most CPU or memory."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, TextIO

from resguard._probes.procfs import CPU_WINDOW_MIN_S
from resguard.cli._args import Commands, duration, non_negative_int
from resguard.cli._render import Column, fixed, print_json, size, table, writable

__all__ = ["add_parser", "format_processes", "run"]


def format_processes(rows: Sequence[Any], width: int = 120) -> str:
    """A fixed-width table of process rows, command lines cut to fit *width* columns."""
    columns = (
        Column("PID", ">", 7),
        Column("CPU%", ">", 6),
        Column("RSS", ">", 10),
        Column("PROCS", ">", 5),  # how many processes the row stands for (--group merges)
        Column("USER", "<", 10, cut=10),
        Column("COMMAND", cut=max(width - 44, 20)),
    )
    return table(
        columns,
        [
            (
                str(row.pid),
                fixed(row.cpu_percent, ".1f"),
                size(row.rss),
                str(row.count),
                row.username or "?",
                " ".join(row.cmdline) or row.name,
            )
            for row in rows
        ],
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    import time

    from resguard.processes import ProcessTable

    processes = ProcessTable()
    if args.interval > 0:  # a first sample, so CPU percent covers the interval
        processes.sample()
        time.sleep(max(args.interval, CPU_WINDOW_MIN_S))  # no shorter window is measured
    rows = processes.top(args.n, by=args.by, group=args.group)
    if args.json:
        print_json([row.to_dict() for row in rows], out)
    else:
        out.write(writable(format_processes(rows) + "\n", out))
    return 0


def add_parser(commands: Commands) -> None:
    top = commands.add_parser("top", help="the processes using the most CPU or memory")
    top.add_argument("-n", type=non_negative_int, default=10, help="rows (default 10)")
    top.add_argument(
        "--by",
        choices=("cpu", "memory"),
        default="cpu",
        help="order by CPU percent or resident memory (default cpu)",
    )
    top.add_argument(
        "--group",
        action="store_true",
        help="one row per process name, PROCS saying how many processes it merges",
    )
    top.add_argument(
        "--interval",
        type=duration,
        default=0.5,
        help=f"measure CPU over this long (default 0.5s); CPU is measured over at least "
        f"{CPU_WINDOW_MIN_S:g}s, so a shorter interval is raised to {CPU_WINDOW_MIN_S:g}s; "
        f"0 = each process's average since it started",
    )
    top.add_argument("--json", action="store_true", help="print JSON")
    top.set_defaults(handler=run)
