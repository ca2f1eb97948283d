"""The ``resguard`` command line.

Exit codes: 0 success, 1 the verdict is not OK (``watch --once``), 2 bad usage or an
unreachable service. ``--json`` prints machine-readable output on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from resguard.units import format_bytes

__all__ = ["main"]


def _print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2, sort_keys=False)
    out.write("\n")


def _pressure_text(pressure: Any) -> str:
    if pressure is None:
        return "n/a"
    full = f"{pressure.full.avg10:.1f}" if pressure.full is not None else "-"
    return f"{pressure.some.avg10:.1f}/{full}%"


def format_snapshot(snap: Any) -> str:
    """A short human-readable summary of a snapshot."""
    memory, cpu, process = snap.memory, snap.cpu, snap.process
    lines = [
        f"memory   {format_bytes(memory.used)} used of {format_bytes(memory.limit)} "
        f"({memory.percent:.1f}%), {format_bytes(memory.available)} available; "
        f"limit from {memory.source} ({memory.source_detail})",
        f"swap     {format_bytes(snap.swap.used)} used of {format_bytes(snap.swap.total)}",
        f"cpu      {cpu.percent:.1f}% busy, {cpu.effective:g} of {cpu.count} CPUs usable "
        f"({cpu.effective_source}), load {cpu.load_1m:.2f} {cpu.load_5m:.2f} {cpu.load_15m:.2f}",
        f"pressure memory {_pressure_text(snap.pressure.memory)}, "
        f"cpu {_pressure_text(snap.pressure.cpu)}, io {_pressure_text(snap.pressure.io)} "
        "(PSI some/full, avg10)",
        f"process  pid {process.pid}: rss {format_bytes(process.rss)}, "
        f"{process.cpu_percent:.1f}% cpu, {process.num_threads} threads, "
        f"children {format_bytes(process.children_rss)}",
    ]
    return "\n".join(lines)


def format_processes(rows: Sequence[Any], width: int = 120) -> str:
    """A fixed-width table of process rows, command lines cut to fit *width* columns."""
    lines = [f"{'PID':>7} {'CPU%':>6} {'RSS':>10} {'N':>3} {'USER':<10} COMMAND"]
    room = max(width - 42, 20)
    for row in rows:
        command = " ".join(row.cmdline) or row.name
        lines.append(f"{row.pid:>7} {row.cpu_percent:>6.1f} {format_bytes(row.rss):>10} "
                     f"{row.count:>3} {(row.username or '?')[:10]:<10} {command[:room]}")
    return "\n".join(lines)


def _cmd_snapshot(args: argparse.Namespace, out: TextIO) -> int:
    from resguard.snapshot import snapshot

    snap = snapshot(uss=args.uss)
    if args.json:
        _print_json(snap.to_dict(), out)
    else:
        out.write(format_snapshot(snap) + "\n")
    return 0


def _cmd_top(args: argparse.Namespace, out: TextIO) -> int:
    import time

    from resguard.processes import ProcessTable

    table = ProcessTable()
    if args.interval > 0:  # a first sample, so CPU percent covers the interval
        table.sample()
        time.sleep(args.interval)
    rows = table.top(args.n, by=args.by, group=args.group)
    if args.json:
        _print_json([row.to_dict() for row in rows], out)
    else:
        out.write(format_processes(rows) + "\n")
    return 0


def _top_rows(snap: Any, n: int) -> list[Any]:
    """The busiest user-space processes of the snapshot's table (kernel threads have no
    resident memory), by CPU and then memory, with command lines and users filled in."""
    from resguard.processes import describe

    rows = [row for row in snap.processes or () if row.rss > 0]
    rows.sort(key=lambda row: (row.cpu_percent, row.rss), reverse=True)
    return [describe(row) for row in rows[:n]]


def format_frame(state: Any, n: int) -> str:
    """One full-screen frame of ``resguard watch``: verdict, reasons, numbers, top rows."""
    import time

    snap, verdict = state.snapshot, state.verdict
    clock = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    lines = [f"resguard watch  {clock}  verdict: {verdict.level.name}"]
    lines += [f"  ! {breach.message}" for breach in
              sorted(verdict.breaches, key=lambda breach: -breach.level)]
    lines += ["", format_snapshot(snap), ""]
    rows = _top_rows(snap, n)
    if rows:
        import shutil

        lines.append(format_processes(rows, shutil.get_terminal_size().columns))
    return "\n".join(lines)


def format_line(state: Any) -> str:
    """One line of ``resguard watch`` when the output is not a terminal."""
    import time

    snap, verdict = state.snapshot, state.verdict
    memory = snap.memory
    psi = snap.pressure.memory
    psi_text = f" psi-mem {psi.some.avg10:.1f}%" if psi is not None else ""
    top = _top_rows(snap, 1)
    top_text = f" top {top[0].name} {top[0].cpu_percent:.0f}%" if top else ""
    return (f"{time.strftime('%H:%M:%S', time.localtime(snap.taken_at))} "
            f"{verdict.level.name:<8} mem {memory.percent:.1f}% "
            f"({format_bytes(memory.used)}/{format_bytes(memory.limit)} {memory.source})"
            f"{psi_text} cpu {snap.cpu.percent:.0f}%{top_text} | {verdict.reason}")


def _cmd_watch(args: argparse.Namespace, out: TextIO) -> int:
    import time

    from resguard import presets
    from resguard.monitor import Monitor

    policy = presets.laptop() if args.preset == "laptop" else presets.service()
    live = out.isatty() and not args.json and not args.once
    monitor = Monitor(policy=policy, slow_interval=min(args.interval, 2.0), reclaim=False)
    frames = 0
    with monitor:
        monitor.sample_slow()
        while True:
            state = monitor.sample_now() if frames == 0 else monitor.state
            if args.json:
                _print_compact_json({"level": state.verdict.level.name,
                                     "reason": state.verdict.reason,
                                     "snapshot": state.snapshot.to_dict()}, out)
            elif live:
                out.write("\x1b[H\x1b[2J" + format_frame(state, args.n) + "\n")
            else:
                out.write(format_line(state) + "\n")
            out.flush()
            frames += 1
            if args.once or (args.count and frames >= args.count):
                return 0 if state.verdict.ok or not args.once else 1
            time.sleep(args.interval)


def _print_compact_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, separators=(",", ":"))
    out.write("\n")


def _integration(module: str) -> Any:
    """Import an integration module, or explain on stderr which extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        sys.stderr.write(f"resguard: {error}\n")
        return None


def _cmd_docker(args: argparse.Namespace, out: TextIO) -> int:
    docker = _integration("resguard.docker")
    if docker is None:
        return 2
    return int(docker.cli(args.docker_command, as_json=args.json, out=out))


def _cmd_ollama(args: argparse.Namespace, out: TextIO) -> int:
    ollama = _integration("resguard.ollama")
    if ollama is None:
        return 2
    return int(ollama.cli(args.ollama_command, args.names, host=args.host, as_json=args.json,
                          out=out))


def _cmd_budget(args: argparse.Namespace, out: TextIO) -> int:
    from resguard import budget

    return int(budget.cli(args.config, as_json=args.json, out=out))


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; expected 0 or more")
    return value


def _duration(text: str) -> float:
    from resguard.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resguard", description="See memory and CPU pressure early and act on it.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    snap = commands.add_parser("snapshot", help="memory, CPU, pressure and this process, once")
    snap.add_argument("--json", action="store_true", help="print JSON")
    snap.add_argument("--uss", action="store_true", help="also measure unique set size (slow)")
    snap.set_defaults(handler=_cmd_snapshot)

    top = commands.add_parser("top", help="the processes using the most CPU or memory")
    top.add_argument("-n", type=_non_negative_int, default=10, help="rows (default 10)")
    top.add_argument("--by", choices=("cpu", "memory"), default="cpu")
    top.add_argument("--group", action="store_true", help="one row per process name")
    top.add_argument("--interval", type=_duration, default=0.5,
                     help="measure CPU over this long (default 0.5s; 0 = since start)")
    top.add_argument("--json", action="store_true", help="print JSON")
    top.set_defaults(handler=_cmd_top)

    watch = commands.add_parser(
        "watch", help="a live view of memory, pressure, top processes and the verdict")
    watch.add_argument("--interval", type=_duration, default=1.0,
                       help="refresh period (default 1s)")
    watch.add_argument("--preset", choices=("laptop", "service"), default="laptop",
                       help="the rules to judge by (default laptop)")
    watch.add_argument("-n", type=_non_negative_int, default=8, help="process rows (default 8)")
    watch.add_argument("--count", type=_non_negative_int, default=0,
                       help="stop after this many updates (default: run until Ctrl-C)")
    watch.add_argument("--once", action="store_true",
                       help="print one update; exit 1 if the verdict is not OK")
    watch.add_argument("--json", action="store_true", help="one JSON object per update")
    watch.set_defaults(handler=_cmd_watch)

    docker = commands.add_parser("docker", help="containers' memory, limits (needs the "
                                 "docker extra)")
    docker.add_argument("docker_command", choices=("stats", "limits"), metavar="stats|limits")
    docker.add_argument("--json", action="store_true", help="print JSON")
    docker.set_defaults(handler=_cmd_docker)

    ollama = commands.add_parser("ollama", help="models loaded in Ollama (needs the ollama "
                                 "extra)")
    ollama.add_argument("ollama_command", choices=("ps", "unload"), metavar="ps|unload")
    ollama.add_argument("names", nargs="*", metavar="NAME", help="models to unload")
    ollama.add_argument("--host", default=None,
                        help="the Ollama server (default $OLLAMA_HOST or 127.0.0.1:11434)")
    ollama.add_argument("--json", action="store_true", help="print JSON")
    ollama.set_defaults(handler=_cmd_ollama)

    budget = commands.add_parser("budget", help="each component's use against its budget")
    budget.add_argument("--config", default=None,
                        help="a TOML file (default: [tool.resguard] in ./pyproject.toml)")
    budget.add_argument("--json", action="store_true", help="print JSON")
    budget.set_defaults(handler=_cmd_budget)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args, out or sys.stdout))
    except KeyboardInterrupt:
        return 130
