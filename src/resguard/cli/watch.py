"""``resguard watch``: the verdict, its culprits, memory, CPU, pressure, heat, Ollama's
models and the processes behind them: a live view on a terminal (the alternate screen,
colour by level, keys ``q``/``c``/``m``), one line per update to a pipe, or JSON lines.

The frame is built sans I/O by :mod:`._view` and painted by :mod:`._screen`; this module
measures (a Monitor driven once per period, so CPU covers the period), reads keys and
chooses the output.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, TextIO

from resguard._errors import InvalidState
from resguard._probes.procfs import CPU_WINDOW_MIN_S
from resguard.cli._args import (
    Commands,
    add_window_argument,
    non_negative_int,
    over_window,
    period,
    positive_int,
)
from resguard.cli._render import Live, fixed, size
from resguard.cli._view import ViewOptions, build_frame, choose_rows, culprit_pids, sort_resource

__all__ = ["add_parser", "format_frame", "format_line", "run", "stale_reason", "update"]

EXIT_TERMINATED = 143  # 128 + SIGTERM
_BIG_HEIGHT = 10_000


def _described(rows: list[Any]) -> list[Any]:
    """*rows* with their command lines and users read (only the rows shown)."""
    from resguard.processes import describe

    return [describe(row) for row in rows]


def stale_reason(monitor: Any) -> str | None:
    """Why the monitor's state is too old to trust ("stale: last sample 3.2 s ago"), or
    None; the verdict's own unknowns are shown from the verdict."""
    reason: str | None = monitor.unknown_reason()
    return None if reason is None or reason.startswith("unknown: ") else reason


def _unknowns(state: Any, stale: str | None) -> list[str]:
    """Why the state is not fresh (``stale``), then what the verdict could not judge."""
    return ([stale] if stale else []) + list(state.verdict.unknown)


def _width() -> int:
    import shutil

    return shutil.get_terminal_size().columns


def format_frame(
    state: Any,
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
    frame = build_frame(state, rows, options, width or _width(), _BIG_HEIGHT, stale, footer=False)
    return frame.plain()


def format_line(state: Any, stale: str | None = None) -> str:
    """One line of ``resguard watch`` when the output is not a terminal."""
    from resguard.cli._view import printable

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
    return printable(
        f"{_clock_text(snap.taken_at)} "
        f"{verdict.level.name:<8} mem {fixed(memory.percent, '.1f')}% "
        f"({size(memory.used)}/{size(memory.limit)} {memory.source})"
        f"{psi_text} cpu {fixed(snap.cpu.percent, '.0f')}%{top_text}"
        f"{f' | {reason}' if reason else ''}"
    )


def _clock_text(taken_at: float) -> str:
    import time

    return time.strftime("%H:%M:%S", time.localtime(taken_at))


def _line_reason(state: Any, stale: str | None) -> str:
    """What the line's level does not say already: the breaches (with their culprits),
    the worst first, then what is unknown; empty for a plain OK."""
    breaches = sorted(state.verdict.breaches, key=lambda breach: -breach.level)
    reason = "; ".join(breach.message for breach in breaches)
    unknown = _unknowns(state, stale)
    if unknown:
        reason += f"{' (' if reason else ''}unknown: {'; '.join(unknown)}{')' if reason else ''}"
    return reason


def update(state: Any, stale: str | None, options: ViewOptions) -> dict[str, Any]:
    """One update of ``watch --json``: the verdict, its breaches with their culprits, the
    top rows (culprits marked) and the snapshot without its process table."""
    verdict = state.verdict
    culprits = culprit_pids(verdict)
    rows = _described(choose_rows(state, options))
    snapshot = state.snapshot.to_dict()
    snapshot.pop("processes", None)
    return {
        "level": verdict.level.name,
        "reason": verdict.reason,
        "unknown": _unknowns(state, stale),
        "breaches": [breach.to_dict() for breach in verdict.breaches],
        "sorted_by": sort_resource(verdict, options.sort),
        "top": [{**row.to_dict(), "culprit": row.pid in culprits} for row in rows],
        "snapshot": snapshot,
    }


# ------------------------------------------------------------------------- running ---


def _policy(args: argparse.Namespace) -> Any:
    """The rules to judge by: ``--config``'s ``[guardian]`` policy, else the preset."""
    from resguard import presets

    if args.config is not None:
        load = getattr(importlib.import_module("resguard.guardian"), "load_policy", None)
        if load is None:
            raise InvalidState(
                f"--config {args.config!r} needs resguard.guardian.load_policy, which this "
                "resguard does not have yet; use --preset"
            )
        return load(args.config)
    return presets.service() if args.preset == "service" else presets.laptop()


def _monitor(args: argparse.Namespace, ollama: Any) -> Any:
    from resguard.cli._feeds import ProcessFeed, monitor_options
    from resguard.monitor import Monitor

    policy = _policy(args)
    options, add_table = monitor_options(policy)
    sources: list[Any] = [ProcessFeed()] if add_table else []
    if ollama is not None:
        sources.append(ollama)
    return Monitor(
        policy=policy,
        sources=sources,
        slow_interval=min(args.interval, 2.0),
        stale_after=max(3 * args.interval, 5.0),
        reclaim=False,
        **options,
    )


def _window(args: argparse.Namespace) -> float:
    """How long the first update measures CPU over: ``--window`` for ``--once`` (default
    1 s), else the period (at least the table's shortest window)."""
    window = float(args.window)
    return max(window if args.once else min(window, args.interval), CPU_WINDOW_MIN_S)


def _measure(monitor: Any) -> Any:
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
        if out.isatty() and not args.json and not args.once:
            return _live(monitor, state, args, out)
        return _stream(monitor, state, args, out)
    finally:
        if ollama is not None:
            ollama.close()


def _stream(monitor: Any, state: Any, args: argparse.Namespace, out: TextIO) -> int:
    """Updates appended to *out*: JSON lines, or one line each (a frame for ``--once``
    on a terminal)."""
    import time

    live = Live(out, redraw=False)
    options = ViewOptions(rows=args.n, show_all=args.all)
    frames = 0
    while True:
        stale = stale_reason(monitor)
        if args.json:
            live.show_json(update(state, stale, options))
        elif args.once and out.isatty():
            live.show(format_frame(state, args.n, stale, show_all=args.all))
        else:
            live.show(format_line(state, stale))
        frames += 1
        if args.once or (args.count is not None and frames >= args.count):
            return 0 if state.verdict.ok or not args.once else 1
        time.sleep(args.interval)
        state = _measure(monitor)


def _live(monitor: Any, state: Any, args: argparse.Namespace, out: TextIO) -> int:
    """The live view: the alternate screen, a frame per period, keys between frames;
    ``q`` ends it (0), as Ctrl-C does (130, from main) and SIGTERM (143)."""
    from resguard.cli._screen import RESIZED, Screen, colour_wanted, default_keys

    options = ViewOptions(rows=args.n, show_all=args.all)
    frames = 0
    with Screen(out, default_keys(), colour=colour_wanted(out)) as screen:
        while not screen.terminated:
            rows = _described(choose_rows(state, options))
            stale = stale_reason(monitor)
            screen.show(build_frame(state, rows, options, *_terminal_size(out), stale))
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


def _next_key(screen: Any, period_s: float) -> str | None:
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


def _terminal_size(out: TextIO) -> tuple[int, int]:
    """*out*'s columns and lines; 80×24 (or ``COLUMNS``/``LINES``) where the terminal does
    not say (a pty nobody sized reports 0×0)."""
    import os
    import shutil

    try:
        columns, lines = os.get_terminal_size(out.fileno())
    except (OSError, ValueError, AttributeError):
        columns = lines = 0
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
        "--all", action="store_true", help="show kernel threads too (hidden by default)"
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
