"""``resguard watch``: a live view of memory, pressure, top processes and the verdict (a
full frame redrawn on a terminal, one line per update to a pipe, or JSON lines)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from resguard._probes.procfs import CPU_WINDOW_MIN_S
from resguard.cli._args import Commands, non_negative_int, period, positive_int
from resguard.cli._render import Live, fixed, size
from resguard.cli.snapshot import format_snapshot
from resguard.cli.top import format_processes

__all__ = ["add_parser", "format_frame", "format_line", "run", "stale_reason"]

"""How long the first update measures CPU over: the process table measures no window
shorter than this (ticks are 10 ms: a few milliseconds would read as 0 % or 500 %)."""


def _top_rows(snap: Any, n: int) -> list[Any]:
    """The busiest user-space processes of the snapshot's table (kernel threads have no
    resident memory), by CPU and then memory, with command lines and users filled in."""
    from resguard.processes import describe

    rows = [row for row in snap.processes or () if row.rss is not None and row.rss > 0]
    rows.sort(key=lambda row: (_or_low(row.cpu_percent), row.rss), reverse=True)
    return [describe(row) for row in rows[:n]]


def _or_low(value: float | None) -> float:
    """Sort key: an unknown figure sorts below every known one."""
    return -1.0 if value is None else value


def _unknowns(state: Any, stale: str | None) -> list[str]:
    """Why the state is not fresh (``stale``), then what the verdict could not judge."""
    return ([stale] if stale else []) + list(state.verdict.unknown)


def _clock_text(taken_at: float) -> str:
    import time

    return time.strftime("%H:%M:%S", time.localtime(taken_at))


def format_frame(state: Any, n: int, stale: str | None = None) -> str:
    """One full-screen frame of ``resguard watch``: verdict, reasons, what is unknown,
    numbers, top rows."""
    snap, verdict = state.snapshot, state.verdict
    lines = [f"resguard watch  {_clock_text(snap.taken_at)}  verdict: {verdict.level.name}"]
    lines += [
        f"  ! {breach.message}"
        for breach in sorted(verdict.breaches, key=lambda breach: -breach.level)
    ]
    lines += [f"  ? unknown: {reason}" for reason in _unknowns(state, stale)]
    lines += ["", format_snapshot(snap), ""]
    rows = _top_rows(snap, n)
    if rows:
        import shutil

        lines.append(format_processes(rows, shutil.get_terminal_size().columns))
    return "\n".join(lines)


def format_line(state: Any, stale: str | None = None) -> str:
    """One line of ``resguard watch`` when the output is not a terminal."""
    snap, verdict = state.snapshot, state.verdict
    memory = snap.memory
    psi = snap.pressure.memory
    psi_text = f" psi-mem {fixed(psi.some.avg10, '.1f')}%" if psi is not None else ""
    top = _top_rows(snap, 1)
    top_text = f" top {top[0].name} {fixed(top[0].cpu_percent, '.0f')}%" if top else ""
    reason = _line_reason(state, stale)
    return (
        f"{_clock_text(snap.taken_at)} "
        f"{verdict.level.name:<8} mem {fixed(memory.percent, '.1f')}% "
        f"({size(memory.used)}/{size(memory.limit)} {memory.source})"
        f"{psi_text} cpu {fixed(snap.cpu.percent, '.0f')}%{top_text}"
        f"{f' | {reason}' if reason else ''}"
    )


def _line_reason(state: Any, stale: str | None) -> str:
    """What the line's level does not say already: the breaches, the worst first, then
    what is unknown; empty for a plain OK (the line starts with the level)."""
    breaches = sorted(state.verdict.breaches, key=lambda breach: -breach.level)
    reason = "; ".join(breach.message for breach in breaches)
    unknown = _unknowns(state, stale)
    if unknown:
        reason += f"{' (' if reason else ''}unknown: {'; '.join(unknown)}{')' if reason else ''}"
    return reason


def stale_reason(monitor: Any) -> str | None:
    """Why the monitor's state is too old to trust ("stale: last sample 3.2 s ago"), or
    None; the verdict's own unknowns are shown from the verdict."""
    reason: str | None = monitor.unknown_reason()
    return None if reason is None or reason.startswith("unknown: ") else reason


def _update(state: Any, stale: str | None) -> dict[str, Any]:
    """One update of ``watch --json``."""
    return {
        "level": state.verdict.level.name,
        "reason": state.verdict.reason,
        "unknown": _unknowns(state, stale),
        "snapshot": state.snapshot.to_dict(),
    }


def run(args: argparse.Namespace, out: TextIO) -> int:
    import time

    from resguard import presets
    from resguard.monitor import Monitor

    policy = presets.laptop() if args.preset == "laptop" else presets.service()
    live = Live(out, redraw=out.isatty() and not args.json and not args.once)
    monitor = Monitor(policy=policy, slow_interval=min(args.interval, 2.0), reclaim=False)
    frames = 0
    with monitor:
        monitor.sample_slow()  # every process's CPU time now: the start of the window
        time.sleep(CPU_WINDOW_MIN_S)  # the first frame's process CPU covers a real window
        monitor.sample_slow()
        while True:
            state = monitor.sample_now() if frames == 0 else monitor.state
            stale = stale_reason(monitor)
            if args.json:
                live.show_json(_update(state, stale))
            elif live.redraw:
                live.show(format_frame(state, args.n, stale))
            else:
                live.show(format_line(state, stale))
            frames += 1
            if args.once or (args.count is not None and frames >= args.count):
                return 0 if state.verdict.ok or not args.once else 1
            time.sleep(args.interval)


def add_parser(commands: Commands) -> None:
    watch = commands.add_parser(
        "watch", help="a live view of memory, pressure, top processes and the verdict"
    )
    watch.add_argument("--interval", type=period, default=1.0, help="refresh period (default 1s)")
    watch.add_argument(
        "--preset",
        choices=("laptop", "service"),
        default="laptop",
        help="the rules to judge by (default laptop)",
    )
    watch.add_argument("-n", type=non_negative_int, default=8, help="process rows (default 8)")
    stop = watch.add_mutually_exclusive_group()
    stop.add_argument(
        "--count",
        type=positive_int,
        default=None,
        help="stop after this many updates, 1 or more (default: run until Ctrl-C)",
    )
    stop.add_argument(
        "--once", action="store_true", help="print one update; exit 1 if the verdict is not OK"
    )
    watch.add_argument("--json", action="store_true", help="one JSON object per update")
    watch.set_defaults(handler=run)
