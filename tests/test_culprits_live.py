"""Culprits of real processes, no mocks of the process table: a child growing inside a
memory cgroup is named first by the cgroup's memory breach (a larger host process is not
named at all), and a process burning a core is named by a CPU breach as a share of a core."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from resguard.monitor import Monitor
from resguard.rules import Offender, Policy, Threshold, culprits

from support import wait_until

MiB = 2**20

HOLD = (
    "import sys, time\n"
    "block = bytearray(int(sys.argv[1]) * 2**20)\n"
    "for i in range(0, len(block), 4096): block[i] = 1\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def holding(argv_prefix: list[str], mib: int) -> list[str]:
    return [*argv_prefix, sys.executable, "-c", HOLD, str(mib)]


def ready(process: subprocess.Popen[bytes]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() == b"ready", line


@pytest.mark.linux_backend
@pytest.mark.cgroup
def test_the_memory_breach_of_a_cgroup_names_its_growing_child_first(memory_cgroup: Any) -> None:
    memory_cgroup.set_limit(300 * MiB)
    grower = memory_cgroup.python(HOLD, "200", stdout=subprocess.PIPE)
    quiet = memory_cgroup.python("import time; time.sleep(120)")
    host = subprocess.Popen(holding([], 260), stdout=subprocess.PIPE)
    try:
        ready(grower)
        ready(host)
        monitor = Monitor(
            policy=Policy([Threshold("memory.percent", ">=", 50, name="cgroup memory")]),
            cgroup=str(memory_cgroup.path),
            processes=True,
            reclaim=False,
        )
        wait_until(
            lambda: quiet.pid in (cgroup_members(monitor) or ()),
            what="the cgroup's members in the snapshot",
        )
        state = monitor.sample_now()
        (breach,) = state.verdict.breaches
        named = [offender.pid for offender in breach.offenders]
        assert named[0] == grower.pid
        assert host.pid not in named  # larger, but outside the cgroup whose limit binds
        assert breach.offenders[0].unit == "memory_percent"
        assert 55 <= breach.offenders[0].value <= 100  # ~200 of 300 MiB
        assert f"{grower.pid} python" in breach.message
    finally:
        host.kill()
        host.wait(timeout=10)


def cgroup_members(monitor: Monitor) -> tuple[int, ...] | None:
    monitor.sample_slow()
    return monitor.sample_now().snapshot.cgroup_pids


def test_a_process_burning_a_core_is_the_cpu_culprit_by_share_of_a_core() -> None:
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        monitor = Monitor(policy=Policy([]), processes=True, reclaim=False)
        found: list[Offender] = []

        def burning() -> bool:
            monitor.sample_slow()
            snapshot = monitor.sample_now().snapshot
            # top 5, not first: the suite's other tests may burn cores beside this one
            named = {item.pid: item for item in culprits(snapshot, "cpu.percent", 5)}
            if burner.pid in named and named[burner.pid].value >= 20:
                found.append(named[burner.pid])
                return True
            return False

        wait_until(burning, timeout_s=30.0, what="the burner among the busiest processes")
        assert found[-1].unit == "core_percent"
        assert found[-1].value <= 110  # one thread: at most one core, as top counts it
    finally:
        burner.kill()
        burner.wait(timeout=10)
