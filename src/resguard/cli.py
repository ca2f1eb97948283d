"""The ``resguard`` command line.

Exit codes: 0 success, 1 the verdict is not OK (``watch --once``) or a budget is over,
2 bad usage, a bad value, an unreachable service or an internal error, 130 interrupted
(Ctrl-C), 141 stdout was closed early (``resguard top --json | head -1``), the status a
shell reports for a program that SIGPIPE ended. ``--json`` prints machine-readable output
on stdout.

It never prints a traceback: every error is one line on stderr, ``resguard: internal
error: ...`` for an unexpected one (``RESGUARD_DEBUG=1`` adds the traceback). A figure
that could not be measured is shown as ``?``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from resguard._errors import ResguardError
from resguard.units import format_bytes

__all__ = ["main"]

_UNKNOWN = "?"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell shows for `yes | head -1` with pipefail


def _size(value: int | None) -> str:
    return _UNKNOWN if value is None else format_bytes(value)


def _fixed(value: float | None, spec: str) -> str:
    return _UNKNOWN if value is None else format(value, spec)


def _print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2, sort_keys=False)
    out.write("\n")


def _pressure_text(pressure: Any) -> str:
    if pressure is None:
        return "n/a"
    full = _fixed(pressure.full.avg10, ".1f") if pressure.full is not None else "-"
    return f"{_fixed(pressure.some.avg10, '.1f')}/{full}%"


def _faults_text(snap: Any) -> str | None:
    """What the snapshot could not read, one entry per damaged field, or None."""
    faults = getattr(snap, "faults", ())
    if not faults:
        return None
    return "; ".join(f"{fault.field} ({fault.source}: {fault.kind})" for fault in faults)


def format_snapshot(snap: Any) -> str:
    """A short human-readable summary of a snapshot (``?`` for what could not be read)."""
    memory, cpu = snap.memory, snap.cpu
    lines = [
        f"memory   {_size(memory.used)} used of {_size(memory.limit)} "
        f"({_fixed(memory.percent, '.1f')}%), {_size(memory.available)} available; "
        f"limit from {memory.source}"
        + (f" ({memory.source_detail})" if memory.source_detail else ""),
        f"swap     {_size(snap.swap.used)} used of {_size(snap.swap.total)}",
        f"cpu      {_fixed(cpu.percent, '.1f')}% busy, {_fixed(cpu.effective, 'g')} of "
        f"{_fixed(cpu.count, 'd')} CPUs usable ({cpu.effective_source}), load "
        f"{_fixed(cpu.load_1m, '.2f')} {_fixed(cpu.load_5m, '.2f')} {_fixed(cpu.load_15m, '.2f')}",
        f"pressure memory {_pressure_text(snap.pressure.memory)}, "
        f"cpu {_pressure_text(snap.pressure.cpu)}, io {_pressure_text(snap.pressure.io)} "
        "(PSI some/full, avg10)",
        _process_line(snap),
    ]
    faults = _faults_text(snap)
    if faults:
        lines.append(f"unknown  {faults}")
    return "\n".join(lines)


def _process_line(snap: Any) -> str:
    """This process: RSS, USS when it was measured, CPU, threads, and the descendants' RSS
    when it was measured (``?`` only for what a fault left unknown)."""
    process = snap.process
    threads = process.num_threads
    parts = [f"rss {_size(process.rss)}"]
    if process.uss is not None:
        parts.append(f"uss {_size(process.uss)}")
    parts.append(f"{_fixed(process.cpu_percent, '.1f')}% cpu")
    parts.append(f"{_fixed(threads, 'd')} thread{'' if threads == 1 else 's'}")
    if process.children_rss is not None or snap.fault_for("process.children_rss"):
        parts.append(f"children {_size(process.children_rss)}")
    return f"process  pid {process.pid}: " + ", ".join(parts)


def format_processes(rows: Sequence[Any], width: int = 120) -> str:
    """A fixed-width table of process rows, command lines cut to fit *width* columns."""
    lines = [f"{'PID':>7} {'CPU%':>6} {'RSS':>10} {'N':>3} {'USER':<10} COMMAND"]
    room = max(width - 42, 20)
    for row in rows:
        command = " ".join(row.cmdline) or row.name
        lines.append(
            f"{row.pid:>7} {_fixed(row.cpu_percent, '.1f'):>6} {_size(row.rss):>10} "
            f"{row.count:>3} {(row.username or '?')[:10]:<10} {command[:room]}"
        )
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

    rows = [row for row in snap.processes or () if row.rss is not None and row.rss > 0]
    rows.sort(key=lambda row: (_or_low(row.cpu_percent), row.rss), reverse=True)
    return [describe(row) for row in rows[:n]]


def _or_low(value: float | None) -> float:
    """Sort key: an unknown figure sorts below every known one."""
    return -1.0 if value is None else value


def _unknowns(state: Any, stale: str | None) -> list[str]:
    """Why the state is not fresh (``stale``), then what the verdict could not judge."""
    return ([stale] if stale else []) + list(state.verdict.unknown)


def format_frame(state: Any, n: int, stale: str | None = None) -> str:
    """One full-screen frame of ``resguard watch``: verdict, reasons, what is unknown,
    numbers, top rows."""
    import time

    snap, verdict = state.snapshot, state.verdict
    clock = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    lines = [f"resguard watch  {clock}  verdict: {verdict.level.name}"]
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
    import time

    snap, verdict = state.snapshot, state.verdict
    memory = snap.memory
    psi = snap.pressure.memory
    psi_text = f" psi-mem {_fixed(psi.some.avg10, '.1f')}%" if psi is not None else ""
    top = _top_rows(snap, 1)
    top_text = f" top {top[0].name} {_fixed(top[0].cpu_percent, '.0f')}%" if top else ""
    reason = verdict.reason
    unknown = [text for text in _unknowns(state, stale) if text not in reason]
    if unknown:
        reason += f" (unknown: {'; '.join(unknown)})"
    return (
        f"{time.strftime('%H:%M:%S', time.localtime(snap.taken_at))} "
        f"{verdict.level.name:<8} mem {_fixed(memory.percent, '.1f')}% "
        f"({_size(memory.used)}/{_size(memory.limit)} {memory.source})"
        f"{psi_text} cpu {_fixed(snap.cpu.percent, '.0f')}%{top_text} | {reason}"
    )


def _stale_reason(monitor: Any) -> str | None:
    """Why the monitor's state is too old to trust ("stale: last sample 3.2 s ago"), or
    None; the verdict's own unknowns are shown from the verdict."""
    reason: str | None = monitor.unknown_reason()
    return None if reason is None or reason.startswith("unknown: ") else reason


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
            stale = _stale_reason(monitor)
            if args.json:
                _print_compact_json(
                    {
                        "level": state.verdict.level.name,
                        "reason": state.verdict.reason,
                        "unknown": _unknowns(state, stale),
                        "snapshot": state.snapshot.to_dict(),
                    },
                    out,
                )
            elif live:
                out.write("\x1b[H\x1b[2J" + format_frame(state, args.n, stale) + "\n")
            else:
                out.write(format_line(state, stale) + "\n")
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
    return int(
        ollama.cli(args.ollama_command, args.names, host=args.host, as_json=args.json, out=out)
    )


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
    except ResguardError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _period(text: str) -> float:
    """A refresh period: a duration of at least 1 ms (0 would be a busy loop)."""
    seconds = _duration(text)
    if seconds < 0.001:
        raise argparse.ArgumentTypeError(
            f"{text!r} is too short; expected a period of 1ms or more, e.g. 1s"
        )
    return seconds


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (with where to find help)."""

    def error(self, message: str) -> NoReturn:
        _error_line(f"{self.prog}: {message} (see '{self.prog} --help')")
        raise SystemExit(EXIT_USAGE)


class _Version(argparse.Action):
    """``--version``, reading the installed version only when asked."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str = argparse.SUPPRESS,
        default: str = argparse.SUPPRESS,
        help: str | None = None,
    ) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> NoReturn:
        import resguard

        sys.stdout.write(f"resguard {resguard.__version__}\n")
        sys.stdout.flush()
        raise SystemExit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="resguard", description="See memory and CPU pressure early and act on it."
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    snap = commands.add_parser("snapshot", help="memory, CPU, pressure and this process, once")
    snap.add_argument("--json", action="store_true", help="print JSON")
    snap.add_argument("--uss", action="store_true", help="also measure unique set size (slow)")
    snap.set_defaults(handler=_cmd_snapshot)

    top = commands.add_parser("top", help="the processes using the most CPU or memory")
    top.add_argument("-n", type=_non_negative_int, default=10, help="rows (default 10)")
    top.add_argument("--by", choices=("cpu", "memory"), default="cpu")
    top.add_argument("--group", action="store_true", help="one row per process name")
    top.add_argument(
        "--interval",
        type=_duration,
        default=0.5,
        help="measure CPU over this long (default 0.5s; 0 = since start)",
    )
    top.add_argument("--json", action="store_true", help="print JSON")
    top.set_defaults(handler=_cmd_top)

    watch = commands.add_parser(
        "watch", help="a live view of memory, pressure, top processes and the verdict"
    )
    watch.add_argument("--interval", type=_period, default=1.0, help="refresh period (default 1s)")
    watch.add_argument(
        "--preset",
        choices=("laptop", "service"),
        default="laptop",
        help="the rules to judge by (default laptop)",
    )
    watch.add_argument("-n", type=_non_negative_int, default=8, help="process rows (default 8)")
    watch.add_argument(
        "--count",
        type=_non_negative_int,
        default=0,
        help="stop after this many updates (default: run until Ctrl-C)",
    )
    watch.add_argument(
        "--once", action="store_true", help="print one update; exit 1 if the verdict is not OK"
    )
    watch.add_argument("--json", action="store_true", help="one JSON object per update")
    watch.set_defaults(handler=_cmd_watch)

    docker = commands.add_parser(
        "docker", help="containers' memory, limits (needs the docker extra)"
    )
    docker.add_argument("docker_command", choices=("stats", "limits"), metavar="stats|limits")
    docker.add_argument("--json", action="store_true", help="print JSON")
    docker.set_defaults(handler=_cmd_docker)

    ollama = commands.add_parser("ollama", help="models loaded in Ollama (needs the ollama extra)")
    ollama.add_argument("ollama_command", choices=("ps", "unload"), metavar="ps|unload")
    ollama.add_argument("names", nargs="*", metavar="NAME", help="models to unload")
    ollama.add_argument(
        "--host", default=None, help="the Ollama server (default $OLLAMA_HOST or 127.0.0.1:11434)"
    )
    ollama.add_argument("--json", action="store_true", help="print JSON")
    ollama.set_defaults(handler=_cmd_ollama)

    budget = commands.add_parser("budget", help="each component's use against its budget")
    budget.add_argument(
        "--config", default=None, help="a TOML file (default: [tool.resguard] in ./pyproject.toml)"
    )
    budget.add_argument("--json", action="store_true", help="print JSON")
    budget.set_defaults(handler=_cmd_budget)
    return parser


def _error_line(text: str) -> None:
    """*text* as exactly one line on stderr (a closed stderr is not worth a traceback)."""
    line = " ".join(text.split()) or "resguard: error"
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what is left in
    its buffer does not fail again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    stream = out if out is not None else sys.stdout
    command = "resguard"
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help, --version, a usage error (already on stderr)
            return done.code if isinstance(done.code, int) else EXIT_USAGE
        command = f"resguard {args.command}"
        code = int(args.handler(args, stream))
        stream.flush()  # inside the try: a closed pipe shows here, not at exit
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `resguard top --json | head -1`: the reader has all it wants
        if out is None:
            _silence_stdout()
        return EXIT_BROKEN_PIPE
    except ResguardError as error:
        _error_line(f"{command}: {error}")
        return EXIT_USAGE
    except Exception as error:  # a bug in resguard: one line, never a traceback
        if os.environ.get("RESGUARD_DEBUG"):
            import traceback

            traceback.print_exc()
        _error_line(
            f"resguard: internal error: {type(error).__name__}: {error} (in "
            f"'{command}'; set RESGUARD_DEBUG=1 to see where, and please report it)"
        )
        return EXIT_USAGE
