"""``resguard snapshot``: memory, CPU over a window, pressure, heat, the GPUs, the
processes busiest over that window and this process, once."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, TextIO

from resguard._modules.render import printable
from resguard.cli._args import Commands, add_window_argument, measure_window
from resguard.cli._render import Column, fixed, print_json, size, table, writable
from resguard.cli._view import NO_HEAT, gpu_lines, heat_text, process_row, psi_text

if TYPE_CHECKING:
    from resguard.processes import ProcessTable
    from resguard.snapshot import HeatInfo, PressureInfo, ProcessInfo, Snapshot

__all__ = ["TOP_N", "add_parser", "format_snapshot", "run"]

TOP_N = 5
"""How many of the processes busiest over the window ``resguard snapshot`` shows."""


NO_GPU_READINGS = "unknown (no NVML: install the gpu extra, pip install 'resguard[gpu]')"
"""The GPU line of ``resguard snapshot`` where no GPU could be read and the ``gpu`` extra
(nvidia-ml-py) is not installed."""


def no_gpu_readings() -> str:
    """The GPU line of ``resguard snapshot`` where no GPU could be read: the extra to
    install only when it is missing; with it, that no driver is loaded (Linux shows a
    loaded one in ``/proc/driver/nvidia``) or that NVML gave nothing."""
    from resguard._probes.gpu import DRIVER_DIR

    if importlib.util.find_spec("pynvml") is None:
        return NO_GPU_READINGS
    if sys.platform.startswith("linux") and not os.path.isdir(DRIVER_DIR):
        return f"unknown (no NVIDIA driver loaded: {DRIVER_DIR} is absent)"
    return "unknown (NVML gave no readings: no NVIDIA GPU or driver, or a reading that hung)"


_LEVEL_NAMES = {1: "normal", 2: "warning", 4: "critical"}  # kern.memorystatus_vm_pressure_level


def _pressure_line(pressure: PressureInfo) -> str:
    """PSI's memory, CPU and I/O lines, and macOS's memory-pressure level where known."""
    line = (
        f"pressure memory {psi_text(pressure.memory)}, "
        f"cpu {psi_text(pressure.cpu)}, io {psi_text(pressure.io)} "
        "(PSI some/full, avg10)"
    )
    level = pressure.memory_level
    if level is not None:
        line += f"; macOS memory pressure {_LEVEL_NAMES.get(level, 'level')} ({level})"
    return line


def _faults_text(snap: Snapshot) -> str | None:
    """What the snapshot could not read, one entry per damaged field, or None."""
    faults = snap.faults
    if not faults:
        return None
    return "; ".join(f"{fault.field} ({fault.source}: {fault.kind})" for fault in faults)


def _heat_line(heat: HeatInfo | None) -> str:
    """The heat line (:func:`~resguard.cli._view.heat_text`, as ``watch`` shows it) and
    where it came from, or, as ``watch`` says it, that none was readable."""
    if heat is None:
        return f"heat     {NO_HEAT}"
    return f"heat     {heat_text(heat)} (from {heat.source})"


def format_top(rows: Sequence[ProcessInfo], window_s: float | None) -> str:
    """The processes busiest over the window, as a small table under a title."""
    over = f" over {window_s:g}s" if window_s is not None else ""
    title = f"busiest{over} (CPU% of one core, as top counts)"
    if not rows:
        return title + ": none readable"
    columns = (
        Column("PID", ">", 7),
        Column("CPU%", ">", 6),
        Column("RSS", ">", 10),
        Column("NAME", cut=40),
    )
    body = table(
        columns,
        [
            (str(row.pid), fixed(row.cpu_percent, ".1f"), size(row.rss), printable(row.name))
            for row in rows
        ],
    )
    return title + "\n" + body


def format_snapshot(
    snap: Snapshot, top: Sequence[ProcessInfo] | None = None, window_s: float | None = None
) -> str:
    """A short human-readable summary of a snapshot (``?`` for what could not be read);
    with *top*, the processes busiest over the window of *window_s* seconds after it."""
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
    ]
    lines.append(_heat_line(snap.heat))
    lines += gpu_lines(snap.gpus, "gpu {index:<5}", "gpu      ") or [
        f"gpu      {no_gpu_readings()}"
    ]
    lines.append(_process_line(snap))
    faults = _faults_text(snap)
    if faults:
        lines.append(f"unknown  {faults}")
    if top is not None:
        lines.append(format_top(top, window_s))
    return "\n".join(lines)


def _process_line(snap: Snapshot) -> str:
    """This process (resguard itself, not one of the machine's): RSS, USS when it was
    measured, CPU, threads, and the descendants' RSS when it was measured (``?`` only for
    what a fault left unknown)."""
    process = snap.process
    threads = process.num_threads
    parts = [f"rss {size(process.rss)}"]
    if process.uss is not None:
        parts.append(f"uss {size(process.uss)}")
    parts.append(f"{fixed(process.cpu_percent, '.1f')}% cpu")
    parts.append(f"{fixed(threads, 'd')} thread{'' if threads == 1 else 's'}")
    if process.children_rss is not None or snap.fault_for("process.children_rss"):
        parts.append(f"children {size(process.children_rss)}")
    return f"resguard itself, pid {process.pid}: " + ", ".join(parts)


def _busiest(processes: ProcessTable, rows: list[ProcessInfo] | None) -> list[ProcessInfo]:
    """The :data:`TOP_N` processes busiest over the window, kernel threads left out."""
    from resguard.cli.top import top_rows

    return top_rows(processes, rows or [], TOP_N, by="cpu")


def _with_heat(sensing: ModuleType, snap: Snapshot) -> Snapshot:
    """*snap* with the heat read now, where the OS gives it."""
    import attrs

    heat: HeatInfo | None = sensing.read_heat()
    return attrs.evolve(snap, heat=heat) if heat is not None else snap


def run(args: argparse.Namespace, out: TextIO) -> int:
    from resguard.processes import ProcessTable

    # The module, looked up per call (tests replace its snapshot()): `import
    # resguard.snapshot as m` would bind the package attribute, which is the function
    # once resguard.snapshot() was called.
    sensing = importlib.import_module("resguard.snapshot")
    processes = ProcessTable()
    # two readings a window apart: one sample knows no CPU percent, and a first scan of
    # the table only each process's average since it started
    window = measure_window(
        args.window, sampler=sensing.snapshot, processes=processes, uss=args.uss
    )
    assert window.snapshot is not None  # a sampler was given
    snap = _with_heat(sensing, window.snapshot)
    busiest = _busiest(processes, window.rows)
    if args.json:
        data = snap.to_dict()
        data["window_s"] = window.window_s
        data["top_processes"] = [process_row(row) for row in busiest]
        print_json(data, out)
    else:  # snapshot() measures through the default sampler
        text = format_snapshot(snap, busiest, window.window_s)
        out.write(writable(text + f"\nbackend  {sensing.default_sampler().backend}\n", out))
    return 0


def add_parser(commands: Commands) -> None:
    snap = commands.add_parser(
        "snapshot",
        help="memory, CPU, pressure, heat, the busiest processes and this process, once",
    )
    add_window_argument(snap)
    snap.add_argument("--json", action="store_true", help="print JSON")
    snap.add_argument("--uss", action="store_true", help="also measure unique set size (slow)")
    snap.set_defaults(handler=run)
