"""``resguard watch``: the verdict, its culprits, memory, CPU, pressure, heat, the GPUs,
Ollama's models (with their CPU/GPU split) and the processes behind them: a live view on
a terminal (the alternate screen, colour by level, keys ``q``/``c``/``m``), one line per
update to a pipe, or JSON lines.

The frame is built sans I/O by :mod:`._view` and painted by :mod:`._screen`; this module
measures (a Monitor driven once per period, so CPU covers the period), reads keys and
chooses the output.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, TextIO

from resguard._modules.render import printable
from resguard.cli._args import (
    Commands,
    add_window_argument,
    non_negative_int,
    over_window,
    period,
    positive_int,
)
from resguard.cli._render import Live, fixed, size
from resguard.cli._screen import redraws
from resguard.cli._view import (
    ViewOptions,
    build_frame,
    choose_rows,
    clock_text,
    culprit_pids,
    process_row,
    sort_resource,
    unknowns,
)

if TYPE_CHECKING:
    from resguard.cli._feeds import OllamaFeed
    from resguard.cli._screen import Screen
    from resguard.monitor import Monitor, State
    from resguard.rules import Policy
    from resguard.snapshot import ProcessInfo

__all__ = [
    "add_parser",
    "format_frame",
    "format_line",
    "run",
    "stale_reason",
    "terminal_size",
    "update",
]

EXIT_TERMINATED = 143  # 128 + SIGTERM
_BIG_HEIGHT = 10_000


def _described(rows: list[ProcessInfo]) -> list[ProcessInfo]:
    """*rows* with their command lines and users read (only the rows shown)."""
    from resguard.processes import describe

    return [describe(row) for row in rows]


def stale_reason(monitor: Monitor) -> str | None:
    """Why the monitor's state is too old to trust ("stale: last sample 3.2 s ago"), or
    None; the verdict's own unknowns are shown from the verdict."""
    reason = monitor.unknown_reason()
    return None if reason is None or reason.startswith("unknown: ") else reason


def format_frame(
    state: State,
    n: int,
    stale: str | None = None,
    *,
    width: int | None = None,
    show_all: bool = False,
) -> str:
    """The frame of ``resguard watch`` as plain text, without the keys' footer: verdict,
    breaches and culprits, what is unknown, numbers, the top *n* processes."""
    options = ViewOptions(rows=n, show_all=show_all)
    rows = _described(choose_rows(state, options))
    width = width or terminal_size(None)[0]
    frame = build_frame(state, rows, options, width, _BIG_HEIGHT, stale, footer=False)
    return frame.plain()


def format_line(state: State, stale: str | None = None) -> str:
    """One line of ``resguard watch`` when the output is not a terminal."""
    snap, verdict = state.snapshot, state.verdict
    memory = snap.memory
    psi = snap.pressure.memory
    psi_text = f" psi-mem {fixed(psi.some.avg10, '.1f')}%" if psi is not None else ""
    top = choose_rows(state, ViewOptions(rows=1))
    resource = sort_resource(verdict, "auto")
    top_text = ""
    if top:
        figure = (
            size(top[0].rss) if resource == "memory" else f"{fixed(top[0].cpu_percent, '.0f')}%"
        )
        top_text = f" top {top[0].name} {figure}"
    reason = _line_reason(state, stale)
    gpu = snap.gpu.memory if snap.gpu is not None else None  # the fullest GPU's
    vram_text = f" vram {fixed(gpu.percent, '.0f')}%" if gpu is not None else ""
    return printable(
        f"{clock_text(snap.taken_at)} "
        f"{verdict.level.name:<8} mem {fixed(memory.percent, '.1f')}% "
        f"({size(memory.used)}/{size(memory.limit)} {memory.source})"
        f"{psi_text} cpu {fixed(snap.cpu.percent, '.0f')}%{vram_text}{top_text}"
        f"{f' | {reason}' if reason else ''}"
    )


def _line_reason(state: State, stale: str | None) -> str:
    """What the line's level does not say already: the breaches (with their culprits),
    the worst first, then what is unknown; empty for a plain OK."""
    breaches = sorted(state.verdict.breaches, key=lambda breach: -breach.level)
    reason = "; ".join(breach.message for breach in breaches)
    unknown = unknowns(state.verdict, stale)
    if unknown:
        reason += f"{' (' if reason else ''}unknown: {'; '.join(unknown)}{')' if reason else ''}"
    return reason


def update(state: State, stale: str | None, options: ViewOptions) -> dict[str, Any]:
    """One update of ``watch --json``: the verdict, its breaches with their culprits, the
    top rows (:func:`process_row`: ``culprit`` marks a breach's culprit) and the snapshot
    without its process table."""
    verdict = state.verdict
    culprits = culprit_pids(verdict)
    rows = _described(choose_rows(state, options))
    snapshot = state.snapshot.to_dict()
    snapshot.pop("processes", None)
    return {
        "level": verdict.level.name,
        "reason": verdict.reason,
        "unknown": unknowns(verdict, stale),
        "breaches": [breach.to_dict() for breach in verdict.breaches],
        "sorted_by": sort_resource(verdict, options.sort),
        "top": [process_row(row, culprit=row.pid in culprits) for row in rows],
        "snapshot": snapshot,
    }


# ------------------------------------------------------------------------- running ---


def _policy(args: argparse.Namespace) -> Policy:
    """The rules to judge by: ``--config``'s ``[guardian]`` policy, else the preset."""
    from resguard import presets

    if args.config is not None:
        from resguard.guardian import load_policy

        return load_policy(args.config)
    return presets.service() if args.preset == "service" else presets.laptop()


def _monitor(args: argparse.Namespace, ollama: OllamaFeed | None) -> Monitor:
    """A Monitor that samples heat and the whole process table (watch shows them whatever
    the policy's rules read) and Ollama's models where the extra is installed."""
    from resguard.monitor import Monitor

    return Monitor(
        policy=_policy(args),
        sources=[ollama] if ollama is not None else [],
        slow_interval=min(args.interval, 2.0),
        stale_after=max(3 * args.interval, 5.0),
        reclaim=False,
        heat=True,
        processes=True,
    )


def _window(args: argparse.Namespace) -> float:
    """How long the first update measures CPU over: ``--window`` for ``--once`` (default
    1 s), else at most the period (:func:`over_window` raises it to the shortest CPU
    window)."""
    window = float(args.window)
    return window if args.once else min(window, args.interval)


def _measure(monitor: Monitor) -> State:
    """One update: the process table and sources, then the fast sample judged."""
    monitor.sample_slow()
    return monitor.sample_now()


def run(args: argparse.Namespace, out: TextIO) -> int:
    from resguard.cli._feeds import OllamaFeed

    ollama = OllamaFeed.if_installed()
    monitor = _monitor(args, ollama)
    if ollama is not None:
        ollama.start()
    try:
        state = over_window(_window(args), lambda: _measure(monitor))
        if not args.json and not args.once and redraws(out):
            return _live(monitor, state, args, out)
        return _stream(monitor, state, args, out)
    finally:
        if ollama is not None:
            ollama.close()


def _stream(monitor: Monitor, state: State, args: argparse.Namespace, out: TextIO) -> int:
    """Updates appended to *out*: JSON lines, or one line each (a frame for ``--once``
    on a terminal that is not ``TERM=dumb``). Between updates SIGTERM ends it (143, as
    the live view does) and, on a terminal (``TERM=dumb``), ``q`` (with or without
    Enter) ends it (0)."""
    live = Live(out)
    options = ViewOptions(rows=args.n, show_all=args.all)
    if args.once:
        stale = stale_reason(monitor)
        if args.json:
            live.show_json(update(state, stale, options))
        elif redraws(out):
            live.show(format_frame(state, args.n, stale, show_all=args.all))
        else:
            live.show(format_line(state, stale))
        return 0 if state.verdict.ok else 1
    from resguard.cli._screen import Screen, default_keys

    keys = default_keys() if _is_terminal(out) else None
    frames = 0
    with Screen(out, keys, colour=False, alternate=False) as screen:
        while not screen.terminated:
            stale = stale_reason(monitor)
            if args.json:
                live.show_json(update(state, stale, options))
            else:
                live.show(format_line(state, stale))
            frames += 1
            if args.count is not None and frames >= args.count:
                return 0
            if _next_key(screen, args.interval) == "q":
                return 0
            if not screen.terminated:
                state = _measure(monitor)
    return EXIT_TERMINATED


def _is_terminal(out: TextIO) -> bool:
    try:
        return bool(out.isatty())
    except (OSError, ValueError):
        return False


def _live(monitor: Monitor, state: State, args: argparse.Namespace, out: TextIO) -> int:
    """The live view: the alternate screen, a frame per period, keys between frames;
    ``q`` ends it (0), as Ctrl-C does (130, from main) and SIGTERM (143)."""
    from resguard.cli._screen import RESIZED, Screen, colour_wanted, default_keys

    options = ViewOptions(rows=args.n, show_all=args.all)
    frames = 0
    with Screen(out, default_keys(), colour=colour_wanted(out)) as screen:
        while not screen.terminated:
            rows = _described(choose_rows(state, options))
            stale = stale_reason(monitor)
            screen.show(build_frame(state, rows, options, *terminal_size(out), stale))
            frames += 1
            if args.count is not None and frames >= args.count:
                return 0
            key = _next_key(screen, args.interval)
            if key == "q":
                return 0
            if key in ("c", "m"):
                options = _sorted_by(options, key)
            if key in ("c", "m", RESIZED):
                continue  # the same state, sorted anew or fitted to the new size, at once
            if not screen.terminated:
                state = _measure(monitor)
    return EXIT_TERMINATED


def _next_key(screen: Screen, period_s: float) -> str | None:
    """The first of ``q``, ``c``, ``m`` pressed within *period_s* (others ignored) or a
    resize, or ``None`` when the period ends or SIGTERM arrives first."""
    import time

    from resguard.cli._screen import RESIZED

    due = time.monotonic() + period_s
    while not screen.terminated:
        key = screen.key(max(due - time.monotonic(), 0.0))
        if key is None:
            return None
        if key == RESIZED:
            return RESIZED
        if key.lower() in ("q", "c", "m"):
            return str(key.lower())
    return None


def _sorted_by(options: ViewOptions, key: str) -> ViewOptions:
    import dataclasses

    return dataclasses.replace(options, sort="cpu" if key == "c" else "memory")


def terminal_size(out: TextIO | None) -> tuple[int, int]:
    """*out*'s columns and lines (``None``: ``COLUMNS``/``LINES`` or stdout's); 80×24 (or
    ``COLUMNS``/``LINES``) where the terminal does not say (a pty nobody sized reports
    0×0)."""
    import os
    import shutil

    columns = lines = 0
    if out is not None:
        try:
            columns, lines = os.get_terminal_size(out.fileno())
        except (OSError, ValueError, AttributeError):
            pass
    fallback = shutil.get_terminal_size()
    return columns or fallback.columns, lines or fallback.lines


def add_parser(commands: Commands) -> None:
    watch = commands.add_parser(
        "watch",
        help="a live view of the verdict, its culprits, memory, CPU, heat and processes",
        description="On a terminal: a live view (q quits, c sorts by CPU, m by memory). "
        "Piped: one line per update. --json: one JSON object per update.",
    )
    watch.add_argument("--interval", type=period, default=1.0, help="refresh period (default 1s)")
    judge = watch.add_mutually_exclusive_group()
    judge.add_argument(
        "--preset",
        choices=("laptop", "service"),
        default=None,
        help="the rules to judge by (default laptop)",
    )
    judge.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="judge by the [guardian] policy of this resguard.toml",
    )
    watch.add_argument("-n", type=non_negative_int, default=8, help="process rows (default 8)")
    watch.add_argument(
        "--all",
        action="store_true",
        help="show kernel threads and resguard itself too (hidden by default)",
    )
    stop = watch.add_mutually_exclusive_group()
    stop.add_argument(
        "--count",
        type=positive_int,
        default=None,
        help="stop after this many updates, 1 or more (default: run until q or Ctrl-C)",
    )
    stop.add_argument(
        "--once", action="store_true", help="print one update; exit 1 if the verdict is not OK"
    )
    watch.add_argument("--json", action="store_true", help="one JSON object per update")
    add_window_argument(watch)
    watch.set_defaults(handler=run)
