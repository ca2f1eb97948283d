"""Sense layer: a whole snapshot, top-N processes, and the import itself."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from resguard.processes import ProcessTable
from resguard.snapshot import Sampler

from _harness import Table, Target, per_call_s

EXTRA_PROCESSES = 300


def _import_s(statement: str, rounds: int = 15) -> float:
    """Median wall time of a fresh interpreter importing *statement*, minus a bare start."""

    def timed(code: str) -> float:
        samples = []
        for _ in range(rounds):
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            samples.append(float(out.stdout))
        samples.sort()
        return samples[len(samples) // 2]

    return timed(statement)


def run(table: Table) -> None:
    sampler = Sampler()
    sampler.sample()
    ours = per_call_s(lambda: sampler.sample(children=False))
    theirs = per_call_s(psutil.virtual_memory)
    table.compare(
        "snapshot(): memory, cgroup, PSI, CPU, self",
        ours,
        "psutil.virtual_memory()",
        theirs,
        Target.cost_at_most(3, of="the psutil call"),
    )
    table.note("  … as a multiple of psutil.virtual_memory()", f"{ours / theirs:.1f}×")
    _backend_rows(table, ours)

    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(EXTRA_PROCESSES)]
    try:
        process_table = ProcessTable()
        process_table.sample()
        count = len(process_table.sample())
        top = per_call_s(lambda: process_table.top(10, by="memory"), repeat=5, min_time_s=1)
        pipeline = per_call_s(
            lambda: subprocess.run(
                "ps aux | sort -k4 -nr | head", shell=True, capture_output=True, check=True
            ),
            repeat=5,
            min_time_s=1,
        )

        def psutil_loop() -> list[tuple[int, int]]:
            rows = []
            for process in psutil.process_iter(["pid", "memory_info", "cpu_percent"]):
                info = process.info
                if info["memory_info"] is not None:
                    rows.append((info["memory_info"].rss, info["pid"]))
            rows.sort(reverse=True)
            return rows[:10]

        loop = per_call_s(psutil_loop, repeat=5, min_time_s=1)
        table.compare(
            f"top_processes(10), {count} processes",
            top,
            "ps aux | sort -k4 -nr | head",
            pipeline,
            Target.speedup_at_least(2, text="≥ 2× faster"),
        )
        table.compare(
            f"top_processes(10), {count} processes", top, "psutil.process_iter loop", loop
        )
    finally:
        for sleeper in sleepers:
            sleeper.kill()
        for sleeper in sleepers:
            sleeper.wait()

    base = _import_s("import psutil, attrs, anyio")
    ours_import = _import_s("import resguard")
    table.compare(
        "import resguard",
        ours_import,
        "import psutil, attrs, anyio",
        base,
        Target.cost_at_most(1.3, text="adds ≤ 30 %"),
    )
    first_use = _import_s("import resguard; resguard.snapshot()")
    base_use = _import_s("import psutil, attrs, anyio; psutil.virtual_memory()")
    table.compare(
        "import resguard; snapshot()",
        first_use,
        "import psutil, attrs, anyio; virtual_memory()",
        base_use,
    )
    everything = _import_s(
        "import resguard; resguard.Guard; resguard.Monitor; resguard.LRUCache; resguard.presets"
    )
    table.note(
        "  … and every core name (Guard, Monitor, caches, rules)", f"{everything * 1e3:.1f} ms"
    )


def _backend_rows(table: Table, linux_s: float) -> None:
    """snapshot() on the psutil backend beside the linux backend (*linux_s*, this run) and
    beside the psutil calls that give the same numbers, asked directly."""
    portable = Sampler(backend="psutil")
    portable.sample()
    psutil_s = per_call_s(lambda: portable.sample(children=False))
    me = psutil.Process()

    def plain() -> None:
        psutil.virtual_memory()
        psutil.swap_memory()
        psutil.cpu_times()
        me.memory_info()

    plain_s = per_call_s(plain)
    table.compare("snapshot(), psutil backend", psutil_s, "snapshot(), linux backend", linux_s)
    table.compare(
        "snapshot(), psutil backend",
        psutil_s,
        "virtual_memory + swap_memory + cpu_times + Process().memory_info()",
        plain_s,
    )


if __name__ == "__main__":
    t = Table()
    start = time.perf_counter()
    run(t)
    print(t.markdown())
