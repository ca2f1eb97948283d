"""The Monitor: reaction latency under real cgroup pressure, and its own CPU cost."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil

from resguard.monitor import Monitor
from resguard.rules import Level, Policy, Threshold

from _harness import Table

MiB = 2**20
MONITOR_CPU_S = float(os.environ.get("RESGUARD_BENCH_MONITOR_S", "30"))
V1 = Path("/sys/fs/cgroup/memory")

CHILD = """
import sys
blocks = []
for line in sys.stdin:
    if line.strip() == "grow":
        blocks.append(b"x" * (10 * 2**20))
    else:
        blocks.clear()
    print("done", flush=True)
"""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _monitor_cpu(**options: object) -> float:
    with Monitor(**options):  # type: ignore[arg-type]
        time.sleep(1)
        start_cpu, start = _cpu_s(), time.monotonic()
        time.sleep(MONITOR_CPU_S)
        return (_cpu_s() - start_cpu) / (time.monotonic() - start)


def monitor_cpu(table: Table) -> None:
    """CPU the monitor costs at its default settings, vs a naive psutil poller at 50 ms."""
    ours = _monitor_cpu()
    busy = _monitor_cpu(adaptive=False)  # as if memory stayed above half the limit

    stop = threading.Event()

    def naive() -> None:
        while not stop.wait(0.05):
            psutil.virtual_memory()
            psutil.cpu_percent()
            psutil.Process().memory_info()

    thread = threading.Thread(target=naive)
    start_cpu, start = _cpu_s(), time.monotonic()
    thread.start()
    time.sleep(MONITOR_CPU_S)
    stop.set()
    thread.join()
    theirs = (_cpu_s() - start_cpu) / (time.monotonic() - start)
    table.note(
        f"Monitor CPU, default settings, a calm machine, over {MONITOR_CPU_S:g} s",
        f"{ours * 100:.2f} % of a core",
        "psutil poller at 50 ms (vm, cpu, rss)",
        f"{theirs * 100:.2f} % of a core",
        f"{theirs / ours:.1f}×" if ours else "",
        "≤ 0.5 % of a core",
    )
    table.note(
        "Monitor CPU sampling every 50 ms (memory above half the limit)",
        f"{busy * 100:.2f} % of a core",
        "psutil poller at 50 ms (vm, cpu, rss)",
        f"{theirs * 100:.2f} % of a core",
        f"{theirs / busy:.1f}×" if busy else "",
    )


def reaction_latency(table: Table) -> None:
    """From usage crossing a threshold (read from the cgroup counter) to the verdict."""
    if os.geteuid() != 0 or not (V1 / "memory.limit_in_bytes").exists():
        table.note("reaction latency", "skipped: needs root and a cgroup v1 memory hierarchy")
        return
    path = V1 / f"resguard-bench-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    limit = 400 * MiB
    (path / "memory.limit_in_bytes").write_text(str(limit))
    child = subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            f'echo $$ > {path}/cgroup.procs && exec "$@"',
            "sh",
            sys.executable,
            "-c",
            CHILD,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    threshold = 80.0  # the service preset's WARNING
    policy = Policy(
        [Threshold("memory.percent", ">", threshold, level=Level.WARNING, clear=threshold)]
    )
    monitor = Monitor(policy=policy, cgroup=str(path), reclaim=False)
    published: list[float] = []
    monitor.subscribe(
        lambda new, old: (
            published.append(time.perf_counter()) if new.level == Level.WARNING else None
        )
    )
    latencies = []

    def working_set_percent() -> float:
        usage = int((path / "memory.usage_in_bytes").read_text())
        stat = (path / "memory.stat").read_text()
        inactive = next(
            int(line.split()[1])
            for line in stat.splitlines()
            if line.startswith("total_inactive_file ")
        )
        return 100 * (usage - inactive) / limit

    try:
        with monitor:
            for _ in range(15):
                crossed: list[float] = []
                stop = threading.Event()

                def watch(crossed: list[float] = crossed, stop: threading.Event = stop) -> None:
                    while not stop.is_set():
                        if working_set_percent() > threshold:
                            crossed.append(time.perf_counter())
                            return
                        time.sleep(0.0005)

                published.clear()
                watcher = threading.Thread(target=watch)
                watcher.start()
                while not crossed:
                    child.stdin.write("grow\n")
                    child.stdin.flush()
                    child.stdout.readline()
                deadline = time.monotonic() + 5
                while not published and time.monotonic() < deadline:
                    time.sleep(0.001)
                stop.set()
                watcher.join()
                if published and crossed:
                    latencies.append(max(published[0] - crossed[0], 0.0))
                child.stdin.write("free\n")
                child.stdin.flush()
                child.stdout.readline()
                while monitor.state.level != Level.OK:
                    time.sleep(0.01)
                time.sleep(0.2)
    finally:
        child.kill()
        child.wait()
        for _ in range(100):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.05)
    median = statistics.median(latencies)
    for name, interval_s in (("Dask 100 ms", 0.1), ("Ray 250 ms", 0.25), ("kubelet 10 s", 10.0)):
        # a poller with period T sees a crossing T/2 later on average
        table.compare(
            f"reaction latency, median of {len(latencies)}",
            median,
            f"{name} check interval (median T/2)",
            interval_s / 2,
            "median ≤ 50 ms" if name.startswith("Dask") else "",
        )


def run(table: Table) -> None:
    reaction_latency(table)
    monitor_cpu(table)


if __name__ == "__main__":
    t = Table()
    run(t)
    print(t.markdown())
