"""The Monitor: reaction latency under real cgroup pressure, and its own CPU cost.

Reaction: a child process in a real cgroup-v1 child of 256 MiB climbs in 1 MiB steps and
reads the cgroup's usage file after each step; the first read that shows resguard's working
set (usage minus inactive file cache) past the threshold is the crossing. The Monitor's
verdict is timed by a subscriber. Both sides read ``CLOCK_MONOTONIC`` (``perf_counter`` is
not comparable across processes). The latency is signed: the kernel can wake the Monitor
during the crossing step, before the child's own read, and such a verdict is negative, never
counted as 0; each row also gives the median from the start of the crossing step (never
negative). Cells: thresholds at 30, 50, 80 and 95 % of the limit, a sudden allocation (the
steps back to back) and a steady climb (a pause after each step), each from a start where the
threshold is within 10 % of the usage, with kernel events and with ``events=False`` (pure
polling). An events cell's alternative is the same cell measured with ``events=False``; a
polling cell's is a nominal figure, not measured: other tools' check intervals, where a poller
with period T sees a crossing T/2 late on average. A crossing that starts while the Monitor
has no usage threshold armed is counted, and its cell is judged missed (it measured polling).

CPU: the Monitor at its defaults on this (calm) machine, with and without events, beside a
psutil poller at 50 ms. ``RESGUARD_BENCH_MONITOR_S`` shortens the 30 s windows.
Run: ``.venv/bin/python benchmarks/run.py monitor``.
"""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))

from resguard.monitor import Monitor, State
from resguard.rules import Level, Policy, Threshold

from _harness import Table, Target, format_s

MiB = 2**20
MONITOR_CPU_S = float(os.environ.get("RESGUARD_BENCH_MONITOR_S", "30"))
V1 = Path("/sys/fs/cgroup/memory")
LIMIT_BYTES = 256 * MiB
THRESHOLDS_PERCENT = (30, 50, 80, 95)
REPETITIONS = int(os.environ.get("RESGUARD_BENCH_REACTION_REPS", "7"))
CLIMB_PAUSE_S = 0.005  # the steady climb: 1 MiB every 5 ms (200 MiB/s)
VERDICT_DEADLINE_S = 3.0
EVENTS_TARGET_S = 0.002
POLLING_TARGET_S = 0.020
NOMINAL = (  # other tools' check intervals: documented figures, not measured here
    ("Dask's 100 ms", 0.1),
    ("Ray's 250 ms", 0.25),
    ("earlyoom's 100 ms (its fastest)", 0.1),
    ("kubelet's 10 s", 10.0),
)

# The allocating child: "base B" grows or shrinks its buffer until the working set is about
# B bytes; "climb EDGE PAUSE" adds 1 MiB steps until the working set read from the usage file
# is past EDGE, and answers the CLOCK_MONOTONIC times of that read and of the start of the
# step that crossed.
CHILD = r"""
import mmap, os, sys, time
MiB = 1 << 20
cgroup = sys.argv[1]
usage_fd = os.open(cgroup + "/memory.usage_in_bytes", os.O_RDONLY)
def usage():
    return int(os.pread(usage_fd, 32, 0))
def inactive():
    with open(cgroup + "/memory.stat") as stat:
        for line in stat:
            if line.startswith("total_inactive_file "):
                return int(line.split()[1])
    return 0
steps = 250
buffer = mmap.mmap(-1, steps * MiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
block = b"x" * MiB
top = 0
for line in sys.stdin:
    command, *args = line.split()
    gap = inactive()
    if command == "base":
        target = int(args[0])
        while usage() - gap < target and top < steps:
            buffer[top * MiB:(top + 1) * MiB] = block
            top += 1
        while usage() - gap > target + MiB and top > 0:
            top -= 1
            buffer.madvise(mmap.MADV_DONTNEED, top * MiB, MiB)
        print("ok", usage() - gap, flush=True)
    elif command == "climb":
        edge, pause = int(args[0]), float(args[1])
        crossed = step = -1.0
        while top < steps:
            step = time.clock_gettime(time.CLOCK_MONOTONIC)
            buffer[top * MiB:(top + 1) * MiB] = block
            top += 1
            if usage() - gap > edge:
                crossed = time.clock_gettime(time.CLOCK_MONOTONIC)
                break
            if pause:
                time.sleep(pause)
        print("crossed", crossed, step, flush=True)
"""


def _now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _monitor_cpu(window_s: float, **options: Any) -> float:
    """Share of a core this process spends over *window_s* while a Monitor runs."""
    with Monitor(**options):
        time.sleep(1)
        start_cpu, start = _cpu_s(), time.monotonic()
        time.sleep(window_s)
        return (_cpu_s() - start_cpu) / (time.monotonic() - start)


def _naive_cpu(window_s: float) -> float:
    stop = threading.Event()

    def naive() -> None:
        while not stop.wait(0.05):
            psutil.virtual_memory()
            psutil.cpu_percent()
            psutil.Process().memory_info()

    thread = threading.Thread(target=naive)
    start_cpu, start = _cpu_s(), time.monotonic()
    thread.start()
    time.sleep(window_s)
    stop.set()
    thread.join()
    return (_cpu_s() - start_cpu) / (time.monotonic() - start)


def monitor_cpu(table: Table) -> None:
    """CPU the monitor costs on a calm machine, with and without kernel events."""
    theirs = _naive_cpu(MONITOR_CPU_S)
    alternative = "psutil poller at 50 ms (vm, cpu, rss)"
    cases: list[tuple[str, dict[str, Any], float]] = [
        ("with kernel events (default)", {}, 0.2),
        ("without events (`events=False`)", {"events": False}, 0.5),
    ]
    for label, options, bound_percent in cases:
        what = f"Monitor CPU, calm machine, over {MONITOR_CPU_S:g} s, {label}"
        target = Target.ours_at_most(bound_percent, "% of a core")
        ours = _monitor_cpu(MONITOR_CPU_S, **options)
        table.note(
            what,
            f"{ours * 100:.2f} % of a core",
            alternative,
            f"{theirs * 100:.2f} % of a core",
            f"{theirs / ours:.1f}×" if ours else "",
            target,
            ours_value=ours * 100,
        )
    window_s = min(MONITOR_CPU_S, 10.0)
    busy = _monitor_cpu(window_s, adaptive=False)
    table.note(
        f"Monitor CPU sampling every 50 ms (`adaptive=False`), over {window_s:g} s",
        f"{busy * 100:.2f} % of a core",
        alternative,
        f"{theirs * 100:.2f} % of a core",
        f"{theirs / busy:.1f}×" if busy else "",
        "(context)",
    )


class _Child:
    """The allocating process inside the cgroup, driven over its stdin."""

    def __init__(self, cgroup: Path) -> None:
        self.process = subprocess.Popen(
            [
                "/bin/sh",
                "-c",
                f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"',
                "sh",
                sys.executable,
                "-c",
                CHILD,
                str(cgroup),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, line: str) -> list[str]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(line + "\n")
        stdin.flush()
        answer = stdout.readline().split()
        if not answer:
            raise RuntimeError(f"the allocating child ended (exit {self.process.poll()})")
        return answer

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@contextmanager
def _cgroup() -> Iterator[Path]:
    path = V1 / f"resguard-bench-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        (path / "memory.limit_in_bytes").write_text(str(LIMIT_BYTES))
        yield path
    finally:
        for _ in range(100):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.05)


def _wait(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@dataclass
class Cell:
    """The crossings of one cell.

    *latencies_s* are signed: the verdict's time minus the child's read that saw the
    crossing (negative: the kernel woke the Monitor during the step, before that read).
    *from_step_s* are the verdict's time minus the start of the crossing step. *lost*
    crossings got no verdict in VERDICT_DEADLINE_S; *unarmed* ones started while the Monitor
    said no usage threshold was armed (with events: those crossings were polled).
    """

    latencies_s: list[float] = field(default_factory=list)
    from_step_s: list[float] = field(default_factory=list)
    lost: int = 0
    unarmed: int = 0

    def median_s(self) -> float | None:
        return statistics.median(self.latencies_s) if self.latencies_s else None


def _thresholds_armed(monitor: Monitor) -> bool:
    """Whether the Monitor says at least one v1 usage threshold is registered now."""
    for armed in monitor.events_armed:
        found = re.search(r"usage thresholds at (\d+)", armed)
        if found and int(found.group(1)) > 0:
            return True
    return False


def _cell(
    cgroup: Path, child: _Child, percent: int, pause_s: float, options: dict[str, Any]
) -> Cell:
    """REPETITIONS crossings of *percent* by *child*, timed against the Monitor's verdict."""
    edge = LIMIT_BYTES * percent // 100
    base = int(edge / 1.1)  # the threshold within 10 % of the usage at the start
    policy = Policy([Threshold("memory.percent", ">", percent, level=Level.WARNING, clear=percent)])
    monitor = Monitor(policy=policy, cgroup=str(cgroup), reclaim=False, **options)
    events = options.get("events", True)
    published: list[float] = []

    def subscriber(new: State, old: State | None) -> None:
        if new.level >= Level.WARNING and (old is None or old.level < Level.WARNING):
            published.append(_now())

    monitor.subscribe(subscriber)
    cell = Cell()
    with monitor:
        time.sleep(1)  # a monitor runs long before a crossing: let it arm its edges first
        if events:
            _wait(lambda: _thresholds_armed(monitor), 2.0)
        for _ in range(REPETITIONS):
            child.ask(f"base {base}")
            _wait(lambda: monitor.state.level == Level.OK, 5.0)
            time.sleep(0.3)  # let the monitor see the start (pacing, armed thresholds)
            cell.unarmed += events and not _thresholds_armed(monitor)
            published.clear()
            answer = child.ask(f"climb {edge} {pause_s}")
            crossed, step = float(answer[1]), float(answer[2])
            if crossed < 0 or not _wait(lambda: bool(published), VERDICT_DEADLINE_S):
                cell.lost += 1
            else:
                cell.latencies_s.append(published[0] - crossed)
                cell.from_step_s.append(published[0] - step)
            child.ask(f"base {base}")
            _wait(lambda: monitor.state.level == Level.OK, 5.0)
    return cell


MODES: tuple[tuple[str, dict[str, Any], float], ...] = (
    ("events", {}, EVENTS_TARGET_S),
    ("`events=False`", {"events": False}, POLLING_TARGET_S),
)
PATTERNS = (("sudden", 0.0), ("steady climb", CLIMB_PAUSE_S))

CellKey = tuple[str, str, int]  # (mode, pattern, percent)


def reaction_latency(table: Table) -> None:
    """From the crossing read by the allocating process to the Monitor's published verdict."""
    if os.geteuid() != 0 or not (V1 / "memory.limit_in_bytes").exists():
        table.note("reaction latency", "skipped: needs root and a cgroup v1 memory hierarchy")
        return
    cells: dict[CellKey, Cell] = {}
    with _cgroup() as cgroup:
        child = _Child(cgroup)
        try:
            for mode, options, _ in MODES:
                for pattern, pause_s in PATTERNS:
                    for percent in THRESHOLDS_PERCENT:
                        cells[mode, pattern, percent] = _cell(
                            cgroup, child, percent, pause_s, options
                        )
        finally:
            child.close()
    reaction_rows(table, cells)


def _ratio(theirs_s: float | None, ours_s: float | None) -> str:
    """theirs ÷ ours, or nothing where resguard's figure is 0 or negative (before the read)."""
    if theirs_s is None or ours_s is None or ours_s <= 0:
        return ""
    return f"{theirs_s / ours_s:.1f}×"


def reaction_rows(table: Table, cells: dict[CellKey, Cell]) -> None:
    """The reaction rows: each events cell beside the same cell with ``events=False``
    (measured), each polling cell beside a nominal T/2 (not measured), then all cells."""
    nominal_name, nominal_s = NOMINAL[0]
    for mode, _, bound_s in MODES:
        everything: list[float] = []
        for pattern, _ in PATTERNS:
            for percent in THRESHOLDS_PERCENT:
                cell = cells[mode, pattern, percent]
                everything += cell.latencies_s
                if mode == "events":
                    polled = cells["`events=False`", pattern, percent].median_s()
                    alternative = "the same cell with `events=False` (measured)"
                    theirs = polled
                else:
                    alternative = f"nominal: {nominal_name} check interval, T/2 (not measured)"
                    theirs = nominal_s / 2
                _cell_row(
                    table,
                    f"reaction, {mode}, threshold {percent} %, {pattern}",
                    cell,
                    alternative,
                    theirs,
                    Target.ours_at_most(bound_s, what="median"),
                )
        if not everything:
            continue
        median = statistics.median(everything)
        what = f"reaction, {mode}, all cells (median of {len(everything)})"
        if mode == "events":
            polled_all = [
                s for key, cell in cells.items() if key[0] != "events" for s in cell.latencies_s
            ]
            theirs_all = statistics.median(polled_all) if polled_all else None
            table.note(
                what,
                format_s(median),
                "all cells with `events=False` (measured)",
                format_s(theirs_all) if theirs_all is not None else "not measured",
                _ratio(theirs_all, median),
            )
            continue
        for name, interval_s in NOMINAL[1:]:
            table.note(
                what,
                format_s(median),
                f"nominal: {name} check interval, T/2 (not measured)",
                format_s(interval_s / 2),
                _ratio(interval_s / 2, median),
            )


def _cell_row(
    table: Table,
    what: str,
    cell: Cell,
    alternative: str,
    theirs_s: float | None,
    target: Target,
) -> None:
    median = cell.median_s()
    unarmed = f"{cell.unarmed} of {REPETITIONS} crossings began with no usage threshold armed"
    if median is None:
        detail = f"no verdict in {VERDICT_DEADLINE_S:g} s ({cell.lost} tries)"
        table.note(what, detail + (f"; {unarmed}" if cell.unarmed else ""), target=target)
        return
    detail = f"median of {len(cell.latencies_s)}, max {format_s(max(cell.latencies_s))}"
    early = sum(1 for latency in cell.latencies_s if latency < 0)
    if early:
        detail += f", {early} before the child's read (negative)"
    detail += f", from the step's start: median {format_s(statistics.median(cell.from_step_s))}"
    if cell.lost:
        detail += f", {cell.lost} without a verdict"
    if cell.unarmed:
        detail += f"; not armed: {unarmed} (polled, judged missed)"
    table.note(
        f"{what} ({detail})",
        format_s(median),
        alternative,
        format_s(theirs_s) if theirs_s is not None else "not measured",
        _ratio(theirs_s, median),
        target,
        ours_value=median if not cell.lost and not cell.unarmed else float("inf"),
    )


def run(table: Table) -> None:
    reaction_latency(table)
    monitor_cpu(table)


if __name__ == "__main__":
    t = Table()
    run(t)
    print(t.markdown())
