"""The frame of ``resguard watch``, sans I/O: from a monitor state, the process rows to
show and the terminal's size, the lines of one screen, each a tuple of styled segments.

Nothing here reads the machine, writes a terminal or imports rich: :mod:`._screen`
paints a :class:`Frame` (in colour with rich, or plain), ``watch`` feeds it. Every text
that comes from the machine (command lines, process and sensor names, reasons) is escaped
here (:func:`resguard._modules.render.printable`, the one escaper: controls, bidi and
lone surrogates written as escapes, a no-break space as a space), and every line is cut to
the width (:func:`fit`), so what a process put in its command line never reaches the
terminal raw and no line wraps.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import attrs

from resguard._modules.render import command_text, printable
from resguard.cli._render import fixed, size
from resguard.processes import is_kernel_thread
from resguard.rules import culprit_resource

if TYPE_CHECKING:
    from resguard.monitor import State
    from resguard.rules import Breach, Verdict
    from resguard.snapshot import GpuInfo, HeatInfo, ProcessInfo, ResourcePressure, Snapshot

__all__ = [
    "FOOTER",
    "NO_HEAT",
    "Frame",
    "Segment",
    "ViewOptions",
    "build_frame",
    "cells",
    "choose_rows",
    "clock_text",
    "culprit_pids",
    "fit",
    "gpu_lines",
    "gpu_text",
    "heat_text",
    "process_row",
    "psi_text",
    "sort_resource",
    "unknowns",
]

Sort = Literal["auto", "cpu", "memory"]
FOOTER = "q quit  c sort by CPU  m sort by memory"
NO_GPUS = "NVML reports no GPU"
"""The GPU line where NVML answered with no device (unknown GPUs show no line in ``watch``)."""
NO_HEAT = "no temperature sensor or fan readable here"
"""The heat line of ``watch`` and ``snapshot`` where none was read."""
_MAX_BREACH_LINES = 4
_MAX_UNKNOWN_LINES = 2
_MIN_COMMAND_CELLS = 8


class Segment(NamedTuple):
    """A run of text in one style: ``""`` (plain), ``"OK"``, ``"WARNING"``, ``"CRITICAL"``
    (the levels' colours), ``"unknown"`` (dim), ``"culprit"``, ``"title"``, ``"key"`` or
    ``"active"`` (the sort in use)."""

    text: str
    style: str = ""


Line = tuple[Segment, ...]


@dataclass(frozen=True)
class ViewOptions:
    """What the person chose: how many process rows, the sort (``"auto"``: by the
    resource in breach, else CPU; keys ``c``/``m`` set ``"cpu"``/``"memory"``),
    whether kernel threads are shown (``--all``) and whether heat was asked for (then a
    snapshot without it says that no sensor or fan could be read)."""

    rows: int = 8
    sort: Sort = "auto"
    show_all: bool = False
    heat: bool = True


@dataclass(frozen=True)
class Frame:
    """One screen: lines of styled segments, each at most ``width`` cells."""

    lines: tuple[Line, ...]
    width: int
    culprits: frozenset[int] = field(default_factory=frozenset)

    def plain(self) -> str:
        """The frame as plain text, one line per line, no colour."""
        return "\n".join("".join(segment.text for segment in line) for line in self.lines)


# ------------------------------------------------------------------- text safety ---


def _char_cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def cells(text: str) -> int:
    """How many terminal cells *text* (already made printable) takes: wide East
    Asian characters two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(_char_cells(char) for char in text)


def fit(text: str, width: int) -> str:
    """*text* cut to *width* cells, ending in ``…`` when it was cut."""
    if cells(text) <= width:
        return text
    if width <= 0:
        return ""
    out, used = [], 0
    for char in text:
        wide = _char_cells(char)
        if used + wide > width - 1:
            break
        out.append(char)
        used += wide
    return "".join(out) + "…"


def _fit_line(line: Line, width: int) -> Line:
    """*line*'s segments made printable and cut so that the whole is *width* cells."""
    out: list[Segment] = []
    left = width
    for text, style in line:
        safe = printable(text)
        if cells(safe) > left:
            out.append(Segment(fit(safe, left), style))
            break
        out.append(Segment(safe, style))
        left -= cells(safe)
    return tuple(segment for segment in out if segment.text)


# --------------------------------------------------------------------- the rows ---


def _level_value(breach: Breach) -> int:
    return int(breach.level)


def sort_resource(verdict: Verdict, sort: Sort) -> Literal["cpu", "memory"]:
    """What the table is sorted by: the person's choice, else the resource of the worst
    breach that has one, else CPU (as ``top``)."""
    if sort != "auto":
        return sort
    for breach in sorted(verdict.breaches, key=_level_value, reverse=True):
        resource = culprit_resource(breach.metric)
        if resource is not None:
            return resource
    return "cpu"


def culprit_pids(verdict: Verdict) -> frozenset[int]:
    """The pids every breach names as its culprits (``Breach.offenders``)."""
    return frozenset(
        offender.pid
        for breach in verdict.breaches
        for offender in breach.offenders
        if offender.pid is not None
    )


def process_row(row: ProcessInfo, **extra: object) -> dict[str, Any]:
    """One process row as JSON, the same in every command: :meth:`ProcessInfo.to_dict`
    (what ``top --json`` prints) and the fields *extra* adds (``watch --json``'s
    ``culprit``)."""
    return {**row.to_dict(), **extra}


def _or_low(value: float | None) -> float:
    return -1.0 if value is None else float(value)


def _sort_key(resource: str) -> Callable[[ProcessInfo], tuple[float, float]]:
    if resource == "memory":
        return lambda row: (_or_low(row.rss), _or_low(row.cpu_percent))
    return lambda row: (_or_low(row.cpu_percent), _or_low(row.rss))


def bound_by_cgroup(snapshot: Snapshot) -> bool:
    """Whether the memory limit is the cgroup's (``memory.source`` ``"cgroup"``), not the
    host's or an rlimit's while the process merely sits in a cgroup."""
    return snapshot.memory.cgroup is not None and snapshot.memory.source == "cgroup"


def in_cgroup(snapshot: Snapshot) -> frozenset[int] | None:
    """The pids the table is scoped to: the memory cgroup's whose limit the verdict
    judges (``snapshot.cgroup_pids``) when the limit is a cgroup's, else ``None``."""
    pids = snapshot.cgroup_pids
    if pids is None or not bound_by_cgroup(snapshot):
        return None
    return frozenset(pids)


def short_cgroup(path: str, cells_left: int) -> str:
    """*path* within *cells_left* cells: whole when it fits, else ``…/`` and its last
    part (cut at the front too when even that is too long; *cells_left* 0: that last part
    whole), so a table title keeps what follows the path."""
    if cells(path) <= cells_left:
        return path
    last = "…/" + path.rstrip("/").rsplit("/", 1)[-1]
    if cells(last) <= cells_left or cells_left <= 0:
        return last
    tail = last[2:]
    while tail and cells(tail) > max(cells_left - 1, 1):
        tail = tail[1:]
    return "…" + tail


def choose_rows(state: State, options: ViewOptions, count: int | None = None) -> list[ProcessInfo]:
    """The process rows to show, best first: kernel threads and resguard's own process
    (``snapshot.process.pid``) left out unless ``show_all``, only the cgroup's processes
    when the limit is a cgroup's, sorted by :func:`sort_resource`, the top *count*
    (default ``options.rows``) with every culprit kept in."""
    count = options.rows if count is None else count
    snapshot, verdict = state.snapshot, state.verdict
    scope = in_cgroup(snapshot)
    me = snapshot.process.pid
    rows = [
        row
        for row in snapshot.processes or ()
        if (options.show_all or (row.pid != me and not is_kernel_thread(row)))
        and (scope is None or row.pid in scope)
    ]
    rows.sort(key=_sort_key(sort_resource(verdict, options.sort)), reverse=True)
    if count <= 0:
        return []
    culprits = culprit_pids(verdict)
    top = rows[:count]
    missing = [row for row in rows[count:] if row.pid in culprits]
    if missing:
        kept = [row for row in top if row.pid in culprits]
        others = [row for row in top if row.pid not in culprits]
        top = kept + missing + others
        top = sorted(top[:count], key=rows.index)
    return top


# ------------------------------------------------------------------- the sections ---


def clock_text(epoch_s: float) -> str:
    """*epoch_s* as the local time of day, ``HH:MM:SS`` (the header's and a line's clock)."""
    return time.strftime("%H:%M:%S", time.localtime(epoch_s))


def _header(state: State) -> Line:
    level = state.verdict.level.name
    return (
        Segment(f"resguard watch  {clock_text(state.snapshot.taken_at)}  verdict: ", "title"),
        Segment(level, level),
    )


def _limited(lines: list[Line], most: int, what: str) -> list[Line]:
    if len(lines) <= most:
        return lines
    return [*lines[: most - 1], (Segment(f"  … {len(lines) - most + 1} more {what}", "unknown"),)]


def _breaches(verdict: Verdict) -> list[Line]:
    """One line per breach, the worst first; with two or fewer, each breach's culprits
    on a line of their own (a narrow screen would cut them off the end of the first)."""
    breaches = sorted(verdict.breaches, key=_level_value, reverse=True)
    lines: list[Line] = []
    for breach in breaches:
        style = breach.level.name
        if len(breaches) > 2 or not breach.offenders:
            lines.append((Segment("  ! ", style), Segment(breach.message, style)))
            continue
        alone = attrs.evolve(breach, offenders=()).message
        lines.append((Segment("  ! ", style), Segment(alone, style)))
        lines.append((Segment("      culprits: ", "unknown"), Segment(breach.culprits, "culprit")))
    return _limited(lines, _MAX_BREACH_LINES, "breaches")


def unknowns(verdict: Verdict, stale: str | None) -> list[str]:
    """Why the state is not fresh (*stale*), then what the verdict could not judge."""
    return ([stale] if stale else []) + list(verdict.unknown)


def _unknown_lines(verdict: Verdict, stale: str | None) -> list[Line]:
    lines: list[Line] = [
        (Segment(f"  ? unknown: {reason}", "unknown"),) for reason in unknowns(verdict, stale)
    ]
    return _limited(lines, _MAX_UNKNOWN_LINES, "unknown")


def psi_text(pressure: ResourcePressure | None) -> str:
    """One resource's PSI as ``some/full%`` (avg10), ``-`` for a missing full line,
    ``n/a`` where the kernel has no PSI for it."""
    if pressure is None:
        return "n/a"
    full = fixed(pressure.full.avg10, ".1f") if pressure.full is not None else "-"
    return f"{fixed(pressure.some.avg10, '.1f')}/{full}%"


def _numbers(snapshot: Snapshot, options: ViewOptions, width: int) -> list[Line]:
    memory, cpu, pressure = snapshot.memory, snapshot.cpu, snapshot.pressure
    figures = (
        f"memory  {size(memory.used)} of {size(memory.limit)} "
        f"({fixed(memory.percent, '.1f')}%), {size(memory.available)} free; "
    )
    # the cgroup only where its limit is the one that binds (a session's cgroup under the
    # host's limit is not where the figure comes from), its path's end kept on the width
    where = memory.source
    if bound_by_cgroup(snapshot) and memory.cgroup is not None:
        where = "cgroup " + short_cgroup(memory.cgroup, width - cells(figures) - 7)
    lines = [
        figures + where,
        f"swap    {size(snapshot.swap.used)} of {size(snapshot.swap.total)}",
        f"cpu     {fixed(cpu.percent, '.1f')}% of {fixed(cpu.effective, 'g')} CPUs busy, "
        f"load {fixed(cpu.load_1m, '.2f')} {fixed(cpu.load_5m, '.2f')} "
        f"{fixed(cpu.load_15m, '.2f')}",
        f"psi     mem {psi_text(pressure.memory)}  cpu {psi_text(pressure.cpu)}  "
        f"io {psi_text(pressure.io)} (some/full avg10)",
    ]
    if snapshot.heat is not None:
        lines.append(f"heat    {heat_text(snapshot.heat)}")
    elif options.heat:
        lines.append(f"heat    {NO_HEAT}")
    lines += gpu_lines(snapshot.gpus, "gpu{index:<5}", "gpu     ")
    return [(Segment(text),) for text in lines]


def gpu_text(gpu: GpuInfo) -> str:
    """One GPU as ``watch`` and ``snapshot`` show it: name, memory used of total (share),
    utilization, temperature and how many processes hold memory on it, ``?`` for what
    NVML did not give, e.g. ``NVIDIA H200: 12.0 GiB of 140.0 GiB (8.6%), 45% busy,
    51 °C, 2 processes``."""
    busy = fixed(gpu.utilization_percent, ".0f")
    temperature = "? °C" if gpu.temperature_celsius is None else f"{gpu.temperature_celsius:.0f} °C"
    text = (
        f"{gpu.name or '?'}: {size(gpu.memory_used_bytes)} of {size(gpu.memory_total_bytes)} "
        f"({fixed(gpu.memory_percent, '.1f')}%), {busy}% busy, {temperature}"
    )
    if gpu.processes:
        count = len(gpu.processes)
        text += f", {count} process{'' if count == 1 else 'es'}"
    return text


def gpu_lines(gpus: tuple[GpuInfo, ...] | None, each: str, none: str) -> list[str]:
    """A line per GPU (*each* formatted with its ``index``, then :func:`gpu_text`), one
    saying :data:`NO_GPUS` after *none* when NVML lists no device, nothing when the GPUs
    are unknown (no NVML: most machines, nothing to say)."""
    if gpus is None:
        return []
    if not gpus:
        return [none + NO_GPUS]
    return [each.format(index=gpu.index) + gpu_text(gpu) for gpu in gpus]


def heat_text(heat: HeatInfo) -> str:
    """The hottest sensor (with its high mark), the fastest fan and macOS's thermal
    pressure, ``; ``-separated, or that none was found: the heat line of ``watch`` and
    ``snapshot``, e.g. ``71 °C coretemp Package id 0 (high 80 °C); fan 2400 rpm thinkpad
    fan1``."""
    parts = []
    if heat.sensors:
        hottest = max(heat.sensors, key=lambda sensor: sensor.current_celsius)
        high = f" (high {hottest.high_celsius:.0f} °C)" if hottest.high_celsius else ""
        parts.append(f"{hottest.current_celsius:.0f} °C {hottest.chip} {hottest.label}{high}")
    if heat.fans:
        fastest = max(heat.fans, key=lambda fan: fan.rpm)
        parts.append(f"fan {fastest.rpm:.0f} rpm {fastest.chip} {fastest.label}")
    if heat.thermal_pressure is not None:
        parts.append(f"thermal pressure {heat.thermal_pressure}")
    return "; ".join(parts) if parts else NO_HEAT


def _ollama(snapshot: Snapshot) -> list[Line]:
    """The models Ollama holds, with size, CPU/GPU split and idle time, when it answered."""
    from resguard.units import format_duration

    models = snapshot.ollama
    if models is None:
        return []
    if not models:
        return [(Segment("ollama  no model loaded"),)]
    lines: list[Line] = []
    for model in models:
        # no idle time is no evidence of use: the server did not say
        idle = (
            "idle unknown"
            if model.idle_since is None
            else f"idle {format_duration(max(0.0, snapshot.taken_at - model.idle_since))}"
        )
        where = model.processor  # as ollama ps prints it: "100% GPU", "48%/52% CPU/GPU"
        lines.append((Segment(f"ollama  {model.name}  {size(model.size)}  {where}  {idle}"),))
    return lines


def _table_title(state: State, options: ViewOptions, resource: str, width: int) -> Line:
    memory = state.snapshot.memory
    why = " (in breach)" if options.sort == "auto" and state.verdict.breaches else ""
    by = f"by {'memory' if resource == 'memory' else 'CPU'}{why}"
    hidden = "" if options.show_all else ", kernel threads hidden"
    if in_cgroup(state.snapshot) is None or memory.cgroup is None:
        return (Segment(f"processes {by}{hidden}; * culprit", "title"),)
    what = "processes of cgroup "
    last = short_cgroup(memory.cgroup, 0)  # ``…/`` and the last part
    if cells(f"{what}{last} {by}{hidden}; * culprit") > width:
        hidden = ""  # on a narrow screen the cgroup's name matters more
    rest = f" {by}{hidden}; * culprit"
    what += short_cgroup(memory.cgroup, width - cells(what) - cells(rest))
    return (Segment(what + rest, "title"),)


def _table(rows: Sequence[ProcessInfo], culprits: frozenset[int], width: int) -> list[Line]:
    command = max(width - 37, _MIN_COMMAND_CELLS)
    lines: list[Line] = [
        (Segment(f"  {'PID':>7} {'CPU%':>6} {'RSS':>9} {'USER':<9} {'COMMAND':<{command}}", "key"),)
    ]
    for row in rows:
        mark = row.pid in culprits
        user = fit(printable(row.username or "?"), 9)
        text = command_text(row.cmdline, row.name, width=command, program=True)
        cells_text = (
            f"{row.pid:>7} {fixed(row.cpu_percent, '.1f'):>6} {size(row.rss):>9} "
            f"{user:<9} {fit(text, command)}"
        )
        lines.append(
            (Segment("* ", "culprit"), Segment(cells_text, "culprit"))
            if mark
            else (Segment("  " + cells_text),)
        )
    return lines


def _footer(resource: str) -> Line:
    """:data:`FOOTER`, the keys marked and the sort in use underlined."""
    cpu, memory = ("active", "") if resource == "cpu" else ("", "active")
    return (
        Segment("q", "key"),
        Segment(" quit  "),
        Segment("c", "key"),
        Segment(" sort by CPU", cpu),
        Segment("  "),
        Segment("m", "key"),
        Segment(" sort by memory", memory),
    )


def build_frame(
    state: State,
    rows: Sequence[ProcessInfo],
    options: ViewOptions,
    width: int,
    height: int,
    stale: str | None = None,
    *,
    footer: bool = True,
) -> Frame:
    """One screen of *width* × *height* cells: the header with the level, the breaches
    and their culprits, what is unknown, memory/swap/CPU/PSI/heat/GPUs, the Ollama models,
    the process table (*rows*, from :func:`choose_rows`; culprits marked ``*``) and the
    footer with the keys. Rows are dropped first when the screen is short."""
    width, height = max(width, 20), max(height, 3)
    verdict = state.verdict
    resource = sort_resource(verdict, options.sort)
    culprits = culprit_pids(verdict)
    top: list[Line] = [_header(state), *_breaches(verdict)]
    top += _unknown_lines(verdict, stale)
    top += [(), *_numbers(state.snapshot, options, width), *_ollama(state.snapshot)]
    bottom = [_footer(resource)] if footer else []
    room = height - len(top) - len(bottom) - 3  # the blank, the title and the column names
    shown = list(rows[: max(room, 0)])
    table: list[Line] = []
    if rows and room > 0:
        table = [(), _table_title(state, options, resource, width)]
        table += _table(shown, culprits, width)
    lines = [*top, *table][: height - len(bottom)] + bottom
    return Frame(tuple(_fit_line(line, width) for line in lines), width, culprits)
