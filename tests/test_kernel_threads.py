"""``resguard.processes.is_kernel_thread``: kernel threads told from programs, on the real
process table of both backends and on rows made to look like a container's."""

from __future__ import annotations

import os
import sys

import attrs
import pytest

from resguard.processes import ProcessTable, is_kernel_thread
from resguard.snapshot import ProcessInfo


def row(pid: int, ppid: int, name: str, rss: int) -> ProcessInfo:
    return ProcessInfo(
        pid=pid,
        name=name,
        cmdline=(),
        username=None,
        uid=0,
        ppid=ppid,
        rss=rss,
        uss=None,
        cpu_percent=0.0,
        num_threads=1,
        create_time=0.0,
    )


@pytest.mark.parametrize(
    ("pid", "ppid", "name", "rss"),
    [
        (2, 0, "kthreadd", 0),
        (17, 2, "kworker/0:1-events", 0),
        (9, 2, "ksoftirqd/0", 0),
        (0, 0, "kernel_task", 1 << 30),  # macOS: PID 0 holds memory, still the kernel
        (4, 0, "System", 0),
    ],
)
def test_kernel_threads_are_told(pid: int, ppid: int, name: str, rss: int) -> None:
    assert is_kernel_thread(row(pid, ppid, name, rss))


@pytest.mark.parametrize(
    ("pid", "ppid", "name", "rss"),
    [
        (1, 0, "systemd", 12 << 20),
        (4242, 1, "python3", 30 << 20),
        (2, 1, "sh", 2 << 20),  # PID 2 in a container is a program
        (7, 2, "python3", 30 << 20),  # ... and so are its children
        (4, 1, "sleep", 1 << 20),
    ],
)
def test_programs_are_not_kernel_threads(pid: int, ppid: int, name: str, rss: int) -> None:
    assert not is_kernel_thread(row(pid, ppid, name, rss))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kthreadd is Linux's")
@pytest.mark.parametrize("backend", ["linux", "psutil"])
def test_on_the_real_table_kworkers_are_kernel_threads_and_this_process_is_not(
    backend: str,
) -> None:
    rows = {info.pid: info for info in ProcessTable(backend=backend).sample()}  # type: ignore[arg-type]
    if 2 not in rows:
        pytest.skip("no kthreadd in this PID namespace (a container)")
    children = [info for info in rows.values() if info.ppid == 2]
    assert children, "kthreadd has no children here"
    assert is_kernel_thread(rows[2])
    assert all(is_kernel_thread(info) for info in children)
    assert not is_kernel_thread(rows[os.getpid()])
    assert not is_kernel_thread(rows[1])


def test_a_grouped_row_is_judged_by_its_leader() -> None:
    kworkers = attrs.evolve(row(17, 2, "kworker/0:1", 0), count=5)
    assert is_kernel_thread(kworkers)
