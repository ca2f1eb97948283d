"""``resguard snapshot``: memory, CPU, pressure and this process, once."""

from __future__ import annotations

import argparse
import importlib
from typing import Any, TextIO

from resguard.cli._args import Commands
from resguard.cli._render import fixed, print_json, size

__all__ = ["add_parser", "format_snapshot", "run"]


def _pressure_text(pressure: Any) -> str:
    if pressure is None:
        return "n/a"
    full = fixed(pressure.full.avg10, ".1f") if pressure.full is not None else "-"
    return f"{fixed(pressure.some.avg10, '.1f')}/{full}%"


_LEVEL_NAMES = {1: "normal", 2: "warning", 4: "critical"}  # kern.memorystatus_vm_pressure_level


def _pressure_line(pressure: Any) -> str:
    """PSI's memory, CPU and I/O lines, and macOS's memory-pressure level where known."""
    line = (
        f"pressure memory {_pressure_text(pressure.memory)}, "
        f"cpu {_pressure_text(pressure.cpu)}, io {_pressure_text(pressure.io)} "
        "(PSI some/full, avg10)"
    )
    level = getattr(pressure, "memory_level", None)
    if level is not None:
        line += f"; macOS memory pressure {_LEVEL_NAMES.get(level, 'level')} ({level})"
    return line


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
        f"memory   {size(memory.used)} used of {size(memory.limit)} "
        f"({fixed(memory.percent, '.1f')}%), {size(memory.available)} available; "
        f"limit from {memory.source}"
        + (f" ({memory.source_detail})" if memory.source_detail else ""),
        f"swap     {size(snap.swap.used)} used of {size(snap.swap.total)}",
        f"cpu      {fixed(cpu.percent, '.1f')}% busy, {fixed(cpu.effective, 'g')} of "
        f"{fixed(cpu.count, 'd')} CPUs usable ({cpu.effective_source}), load "
        f"{fixed(cpu.load_1m, '.2f')} {fixed(cpu.load_5m, '.2f')} {fixed(cpu.load_15m, '.2f')}",
        _pressure_line(snap.pressure),
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
    parts = [f"rss {size(process.rss)}"]
    if process.uss is not None:
        parts.append(f"uss {size(process.uss)}")
    parts.append(f"{fixed(process.cpu_percent, '.1f')}% cpu")
    parts.append(f"{fixed(threads, 'd')} thread{'' if threads == 1 else 's'}")
    if process.children_rss is not None or snap.fault_for("process.children_rss"):
        parts.append(f"children {size(process.children_rss)}")
    return f"process  pid {process.pid}: " + ", ".join(parts)


def run(args: argparse.Namespace, out: TextIO) -> int:
    # The module, looked up per call (tests replace its snapshot()): `import
    # resguard.snapshot as m` would bind the package attribute, which is the function
    # once resguard.snapshot() was called.
    sensing = importlib.import_module("resguard.snapshot")

    snap = sensing.snapshot(uss=args.uss)
    if args.json:
        print_json(snap.to_dict(), out)
    else:  # snapshot() measures through the default sampler
        out.write(format_snapshot(snap) + f"\nbackend  {sensing.default_sampler().backend}\n")
    return 0


def add_parser(commands: Commands) -> None:
    snap = commands.add_parser("snapshot", help="memory, CPU, pressure and this process, once")
    snap.add_argument("--json", action="store_true", help="print JSON")
    snap.add_argument("--uss", action="store_true", help="also measure unique set size (slow)")
    snap.set_defaults(handler=run)
