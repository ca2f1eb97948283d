"""The cost of ``resguard.profile``: a CPU-bound loop with and without profiling.

Rows: the same pure-Python loop (about 0.5 s) run bare and under ``profile()`` at 100 ms and
at 10 ms (the ratio bare/profiled is the slowdown: 0.99× means 1 % slower); with
``tracemalloc=True`` on an allocation-heavy loop; and the cost of one sample against the
psutil calls a hand-written profiler would make (RSS plus system memory).
Run: ``.venv/bin/python benchmarks/run.py profile``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))

from resguard.profile import profile
from resguard.snapshot import Sampler

from _harness import Table, Target, per_call_s


def _spin(n: int = 5_000_000) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def _allocate(n: int = 200_000) -> int:
    return len([str(i) for i in range(n)])


def _interleaved(
    bare: Callable[[], object],
    profiled: Callable[[], object],
    rounds: int = 7,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float]:
    """Median seconds of each by *clock*, run alternately so that noise hits both alike.

    With ``time.process_time`` the figure is the CPU this process spent (the sampler
    thread included), which other programs on a busy machine hardly disturb."""
    bare_s, profiled_s = [], []
    for _ in range(rounds):
        start = clock()
        bare()
        bare_s.append(clock() - start)
        start = clock()
        profiled()
        profiled_s.append(clock() - start)
    return statistics.median(bare_s), statistics.median(profiled_s)


def run(table: Table) -> None:
    _spin()  # warm up

    def empty() -> None:
        with profile():
            pass

    def empty_no_uss() -> None:
        with profile(uss_interval=None):
            pass

    table.note(
        "fixed cost of one profiled block (thread, first and last sample, USS)",
        f"{per_call_s(empty, repeat=3) * 1e3:.2f} ms",
        "without USS",
        f"{per_call_s(empty_no_uss, repeat=3) * 1e3:.2f} ms",
    )
    for interval in ("100ms", "10ms"):

        def profiled(interval: str = interval) -> None:
            with profile(interval=interval):
                _spin()

        bare_s, profiled_s = _interleaved(_spin, profiled)
        table.compare(
            f"CPU-bound loop under profile(interval={interval!r}), wall time",
            profiled_s,
            "the same loop, not profiled",
            bare_s,
            Target.cost_at_most(1.01, text="slowdown ≈ 1 % (≤ 1.01×)"),
        )
        bare_cpu, profiled_cpu = _interleaved(_spin, profiled, clock=time.process_time)
        table.compare(
            "  the same, CPU time of the process (sampler included)",
            profiled_cpu,
            "the same loop, not profiled",
            bare_cpu,
            "(context)",
        )
        table.note(
            f"  profiling overhead at {interval}: wall, CPU",
            f"{100 * (profiled_s / bare_s - 1):+.1f} %, "
            f"{100 * (profiled_cpu / bare_cpu - 1):+.1f} %",
        )

    def traced() -> None:
        with profile(interval="100ms", tracemalloc=True):
            _allocate()

    bare_s, traced_s = _interleaved(_allocate, traced)
    table.compare(
        "allocating loop under profile(tracemalloc=True)",
        traced_s,
        "the same loop, not profiled",
        bare_s,
        "(tracemalloc is costly)",
    )

    sampler = Sampler()
    process = psutil.Process()

    def one_sample() -> None:
        sampler.sample(children=True)

    def psutil_sample() -> None:
        process.memory_info()
        process.cpu_times()
        psutil.virtual_memory()

    table.compare(
        "one profile sample (RSS, children, CPU, headroom, PSI)",
        per_call_s(one_sample),
        "psutil: memory_info + cpu_times + virtual_memory",
        per_call_s(psutil_sample),
    )
