"""The snapshot as a notebook shows it: one table in groups (Memory, Swap, CPU, Pressure,
Heat, GPUs, This process, Processes, Containers, Ollama, Faults), times as local times, sizes in
IEC units, percentages with ``%``, and what could not be read as ``unknown (source:
why)``. Every text from the machine (cgroup paths, container and model names, sensor
labels, fault details) is escaped by the table."""

from __future__ import annotations

import math
from collections.abc import Iterator

from resguard._modules.render import local_time, percent_text, printable, sections_table
from resguard.snapshot._values import (
    ContainersInfo,
    GpuInfo,
    HeatInfo,
    OllamaModelInfo,
    PressureLine,
    ResourcePressure,
    Snapshot,
)
from resguard.units import format_duration, format_size

__all__ = ["snapshot_html"]

_Rows = Iterator[tuple[str, str]]
_FIRST_SAMPLE = "unknown (no earlier sample to measure from)"
_LISTED = 10  # sensors, fans, containers and models listed by name; the rest are counted


def snapshot_html(snapshot: Snapshot) -> str:
    """*snapshot* as a grouped HTML table (``Snapshot._repr_html_``)."""
    sections: list[tuple[str, _Rows]] = [
        ("Memory", _memory(snapshot)),
        ("Swap", _swap(snapshot)),
        ("CPU", _cpu(snapshot)),
        ("Pressure", _pressure(snapshot)),
    ]
    if snapshot.heat is not None:
        sections.append(("Heat", _heat(snapshot.heat)))
    if snapshot.gpus is not None:
        sections.append(("GPUs", _gpus(snapshot.gpus)))
    sections.append(("This process", _process(snapshot)))
    if snapshot.processes is not None:
        sections.append(("Processes", _processes(snapshot)))
    if snapshot.containers is not None:
        sections.append(("Containers", _containers(snapshot.containers)))
    if snapshot.ollama is not None:
        sections.append(("Ollama", _ollama(snapshot.ollama, snapshot.taken_at)))
    sections.append(("Faults", _faults(snapshot)))
    return sections_table(sections, f"resguard snapshot at {local_time(snapshot.taken_at)}")


def _unknown(snapshot: Snapshot, path: str, plain: str = "unknown") -> str:
    """What an unknown figure shows: the fault that left it unknown, else *plain*."""
    fault = snapshot.fault_for(path)
    return plain if fault is None else f"unknown ({fault.source}: {fault.kind})"


def _size(snapshot: Snapshot, path: str, value: int | None) -> str:
    return format_size(value) if value is not None else _unknown(snapshot, path)


def _percent(snapshot: Snapshot, path: str, value: float | None, plain: str = "unknown") -> str:
    return percent_text(value) if value is not None else _unknown(snapshot, path, plain)


def _memory(snapshot: Snapshot) -> _Rows:
    memory = snapshot.memory
    yield "limit", _size(snapshot, "memory.limit", memory.limit)
    yield "used", _size(snapshot, "memory.used", memory.used)
    yield "available", _size(snapshot, "memory.available", memory.available)
    yield "used of the limit", _percent(snapshot, "memory.percent", memory.percent)
    yield "total (host)", _size(snapshot, "memory.total", memory.total)
    source = memory.source + (f" ({memory.source_detail})" if memory.source_detail else "")
    yield "limit from", printable(source)
    if memory.cgroup is not None:
        yield "cgroup", printable(memory.cgroup)


def _swap(snapshot: Snapshot) -> _Rows:
    swap = snapshot.swap
    if swap.total == 0:
        yield "swap", "none on this host"
        return
    yield "used", _size(snapshot, "swap.used", swap.used)
    yield "total", _size(snapshot, "swap.total", swap.total)
    yield "free", _size(snapshot, "swap.free", swap.free)
    yield "used of the total", _percent(snapshot, "swap.percent", swap.percent)


def _cpu(snapshot: Snapshot) -> _Rows:
    cpu = snapshot.cpu
    busy = (
        "busy (of the cgroup's quota)" if cpu.effective_source == "cgroup" else "busy (all cores)"
    )
    yield busy, _percent(snapshot, "cpu.percent", cpu.percent, _FIRST_SAMPLE)
    yield "cores", str(cpu.count)
    yield "usable cores", f"{cpu.effective:g} ({printable(cpu.effective_source)})"
    loads = (cpu.load_1m, cpu.load_5m, cpu.load_15m)
    if all(load is None for load in loads):
        yield "load 1m / 5m / 15m", _unknown(snapshot, "cpu.load_1m")
    else:
        yield "load 1m / 5m / 15m", " / ".join("?" if x is None else f"{x:.2f}" for x in loads)


def _pressure_line(line: PressureLine) -> str:
    return (
        f"{percent_text(line.avg10)} over 10s, {percent_text(line.avg60)} over 60s, "
        f"{percent_text(line.avg300)} over 300s"
    )


def _pressure(snapshot: Snapshot) -> _Rows:
    pressure = snapshot.pressure
    resources: tuple[tuple[str, ResourcePressure | None], ...] = (
        ("memory", pressure.memory),
        ("cpu", pressure.cpu),
        ("io", pressure.io),
    )
    for name, resource in resources:
        if resource is None:
            yield f"{name} some", _unknown(snapshot, f"pressure.{name}", "unknown (no PSI)")
            continue
        yield f"{name} some", _pressure_line(resource.some)
        if resource.full is not None:
            yield f"{name} full", _pressure_line(resource.full)
    if pressure.memory_level is not None:
        levels = {1: "normal", 2: "warning", 4: "critical"}
        level = levels.get(pressure.memory_level, str(pressure.memory_level))
        yield "memory pressure level", level
    if pressure.source is not None:
        yield "read from", printable(pressure.source)


def _celsius(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} °C"


def _heat(heat: HeatInfo) -> _Rows:
    yield "hottest", _celsius(heat.hottest_celsius)
    for sensor in heat.sensors[:_LISTED]:
        marks = [
            f"{name} {_celsius(mark)}"
            for name, mark in (("high", sensor.high_celsius), ("critical", sensor.critical_celsius))
            if mark is not None
        ]
        text = _celsius(sensor.current_celsius) + (f" ({', '.join(marks)})" if marks else "")
        yield printable(f"{sensor.chip} {sensor.label}"), text
    if len(heat.sensors) > _LISTED:
        yield "… sensors", f"{len(heat.sensors) - _LISTED} more"
    for fan in heat.fans[:_LISTED]:
        yield printable(f"{fan.chip} {fan.label}"), f"{fan.rpm:.0f} rpm"
    if len(heat.fans) > _LISTED:
        yield "… fans", f"{len(heat.fans) - _LISTED} more"
    if heat.thermal_pressure is not None:
        yield "thermal pressure", printable(heat.thermal_pressure)
    yield "read from", printable(heat.source)


def _process(snapshot: Snapshot) -> _Rows:
    process = snapshot.process
    yield "pid", str(process.pid)
    yield "RSS", _size(snapshot, "process.rss", process.rss)
    if process.children_rss is not None:
        yield "RSS of its children", format_size(process.children_rss)
    if process.uss is None and snapshot.fault_for("process.uss") is None:
        yield "USS", "not read (snapshot(uss=True) reads it)"
    else:
        yield "USS", _size(snapshot, "process.uss", process.uss)
    yield "virtual size", _size(snapshot, "process.vms", process.vms)
    yield (
        "CPU (100% = one core)",
        _percent(snapshot, "process.cpu_percent", process.cpu_percent, _FIRST_SAMPLE),
    )
    threads = process.num_threads
    yield "threads", str(threads) if threads is not None else _unknown(snapshot, "process")


def _processes(snapshot: Snapshot) -> _Rows:
    assert snapshot.processes is not None
    yield "sampled", f"{len(snapshot.processes)} processes"
    if snapshot.cgroup_pids is not None:
        yield "in the memory cgroup", f"{len(snapshot.cgroup_pids)} processes"


def _containers(containers: ContainersInfo) -> _Rows:
    yield "running", str(len(containers.items))
    yield "memory in use", format_size(containers.memory.total)
    for item in containers.items[:_LISTED]:
        limit = "no limit" if item.memory_limit is None else f"of {format_size(item.memory_limit)}"
        share = "" if item.memory_percent is None else f" ({percent_text(item.memory_percent)})"
        cpu = "" if item.cpu_percent is None else f", CPU {percent_text(item.cpu_percent)}"
        yield printable(item.name), f"{format_size(item.memory_used)} {limit}{share}{cpu}"
    if len(containers.items) > _LISTED:
        yield "… containers", f"{len(containers.items) - _LISTED} more"


def _ollama(models: tuple[OllamaModelInfo, ...], now: float) -> _Rows:
    yield "models loaded", str(len(models))
    for model in models[:_LISTED]:
        text = f"{format_size(model.size)} ({model.processor}"
        if model.size_vram:
            text += f", {format_size(model.size_vram)} on the GPU"
        text += ")"
        idle_s = None if model.idle_since is None else now - model.idle_since
        if idle_s is not None and math.isfinite(idle_s):
            idle = format_duration(max(idle_s, 0.0))
            text += f", idle {idle} (since {local_time(model.idle_since)})"
        if model.expires_at is not None:
            text += f", unloads at {local_time(model.expires_at)}"
        yield printable(model.name), text
    if len(models) > _LISTED:
        yield "… models", f"{len(models) - _LISTED} more"


def _or_unknown(value: int | None) -> str:
    return "unknown" if value is None else format_size(value)


def _gpus(gpus: tuple[GpuInfo, ...]) -> _Rows:
    if not gpus:
        yield "devices", "none (NVML reports no GPU)"
    for gpu in gpus[:_LISTED]:
        text = (
            f"{_or_unknown(gpu.memory_used_bytes)} of {_or_unknown(gpu.memory_total_bytes)} "
            f"({percent_text(gpu.memory_percent)}), busy {percent_text(gpu.utilization_percent)}, "
            f"{_celsius(gpu.temperature_celsius)}"
        )
        if gpu.processes:
            text += f", {len(gpu.processes)} processes"
        yield printable(f"{gpu.index}: {gpu.name or 'unknown'}"), text
    if len(gpus) > _LISTED:
        yield "… GPUs", f"{len(gpus) - _LISTED} more"


def _faults(snapshot: Snapshot) -> _Rows:
    if not snapshot.faults:
        yield "none", "every source was read"
    for fault in snapshot.faults:
        yield printable(fault.field), printable(str(fault).split(": ", 1)[-1])
