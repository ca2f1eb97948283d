"""Fault injection, seen by the consumers of sensing (issue 11, items 1 and 2): with a
damaged kernel or cgroup file under a real Sampler, the Monitor keeps ticking and says what
is unknown, and a Guard follows its ``on_unknown`` policy instead of refusing on a 0."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from resguard._errors import ResourceExhausted
from resguard.guard import Guard
from resguard.monitor import Monitor
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import Sampler
from resguard.testing import KernelTree

from support import wait_until

MiB = 2**20

# (tree with a cgroup, file, damage): the memory numbers a guard needs become unknown
UNKNOWN_MEMORY = [
    pytest.param(False, "meminfo", "empty", id="meminfo-empty"),
    pytest.param(False, "meminfo", "garbage", id="meminfo-garbage"),
    pytest.param(False, "meminfo", "unreadable", id="meminfo-unreadable"),
    pytest.param(True, "memory.current", "truncated", id="cgroup-usage-truncated"),
    pytest.param(True, "memory.current", "huge", id="cgroup-usage-huge"),
]


def monitor_over(
    tmp_path: Path, cgroup: bool, name: str, damage: str
) -> tuple[KernelTree, Monitor]:
    """A Monitor over a tree whose *name* is damaged from the start (a sampler keeps its
    files open, so a file replaced later would still be read through the old one)."""
    tree = KernelTree(tmp_path, cgroup=cgroup)
    tree.damage(name, damage)
    sampler = Sampler(tree.roots, limits_max_age_s=0, slow_files_max_age_s=0)
    policy = Policy([Threshold("memory.percent", ">", 90, level=Level.CRITICAL)])
    return tree, Monitor(policy=policy, sampler=sampler, reclaim=False, psi_trigger=False)


@pytest.mark.parametrize(("cgroup", "name", "damage"), UNKNOWN_MEMORY)
def test_the_monitor_keeps_ticking_and_names_the_unknown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cgroup: bool, name: str, damage: str
) -> None:
    caplog.set_level(logging.WARNING, logger="resguard")
    tree, monitor = monitor_over(tmp_path, cgroup, name, damage)
    states = [monitor.sample_now() for _ in range(20)]
    assert all(state.snapshot.memory.percent is None for state in states)
    assert states[-1].verdict.unknown
    assert "memory.percent" in states[-1].verdict.unknown[0]
    reason = monitor.unknown_reason()
    assert reason is not None
    assert reason.startswith("unknown:")
    failing = [
        record
        for record in caplog.records
        if record.getMessage().startswith(tree.path(name) + " is failing")
    ]
    assert len(failing) == 1

    with monitor:  # the thread, too, keeps producing states
        first = monitor.state.snapshot.monotonic
        wait_until(
            lambda: monitor.state.snapshot.monotonic > first,
            what="a new state (the monitor stopped ticking)",
        )
    assert monitor.state.snapshot.memory.percent is None
    tree.restore(name)
    assert monitor.sample_now().snapshot.memory.percent is not None
    assert monitor.unknown_reason() is None


@pytest.mark.parametrize(("cgroup", "name", "damage"), UNKNOWN_MEMORY)
def test_a_guard_follows_on_unknown(tmp_path: Path, cgroup: bool, name: str, damage: str) -> None:
    tree, monitor = monitor_over(tmp_path, cgroup, name, damage)
    monitor.sample_now()
    admitting = Guard(memory="90%", monitor=monitor, on_unknown="admit")
    refusing = Guard(memory="90%", monitor=monitor, on_unknown="refuse")

    reservation = admitting.acquire(reserve=64 * MiB)
    admitting.release(reservation)
    with pytest.raises(ResourceExhausted) as info:
        refusing.acquire(reserve=64 * MiB)
    assert info.value.reason == "unknown"
    assert "memory" in str(info.value)

    tree.restore(name)
    monitor.sample_now()
    reservation = refusing.acquire(reserve=64 * MiB)  # known again: admitted on numbers
    refusing.release(reservation)
