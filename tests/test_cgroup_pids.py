"""``Snapshot.cgroup_pids``: the processes of the memory cgroup whose limit binds, read
with the process table: a real child memory cgroup (root, cgroup v1 or v2) with real
processes in it and in a cgroup below it, and fixture trees for v2 and for damage."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resguard._probes.cgroup import MemberDamage, member_pids
from resguard.monitor import Monitor
from resguard.monitor._sources import binding_cgroup
from resguard.rules import Policy, Threshold
from resguard.snapshot import Sampler
from resguard.testing import KernelTree

from support import wait_until, warnings_about

MiB = 2**20


def quiet_policy() -> Policy:
    return Policy([Threshold("memory.percent", ">", 99.9)])


def joined(cgroup: Any, process: subprocess.Popen[bytes]) -> None:
    procs = cgroup.path / "cgroup.procs"
    wait_until(
        lambda: str(process.pid) in procs.read_text().split(),
        what=f"pid {process.pid} to join {cgroup.path}",
    )


def test_the_members_of_a_real_cgroup_and_its_child_are_the_snapshot_s(
    memory_cgroup: Any,
) -> None:
    memory_cgroup.set_limit(300 * MiB)
    outer = memory_cgroup.python("import signal; signal.pause()")
    inner_cgroup = memory_cgroup.child("worker")
    inner = inner_cgroup.python("import signal; signal.pause()")
    joined(memory_cgroup, outer)
    joined(inner_cgroup, inner)
    monitor = Monitor(
        policy=quiet_policy(), cgroup=str(memory_cgroup.path), processes=True, reclaim=False
    )
    assert monitor.state.snapshot.memory.source == "cgroup"
    monitor.sample_slow()
    snap = monitor.sample_now().snapshot
    assert snap.cgroup_pids == tuple(sorted((outer.pid, inner.pid)))
    assert snap.processes is not None
    listed = {row.pid for row in snap.processes}
    assert {outer.pid, inner.pid} <= listed
    assert os.getpid() not in snap.cgroup_pids  # this process is outside the cgroup
    outer.kill()
    outer.wait(timeout=10)
    wait_until(
        lambda: str(outer.pid) not in (memory_cgroup.path / "cgroup.procs").read_text().split(),
        what="the killed process to leave the cgroup",
    )
    monitor.sample_slow()
    assert monitor.sample_now().snapshot.cgroup_pids == (inner.pid,)


def test_when_a_parent_s_limit_binds_its_whole_subtree_is_the_cgroup_s(
    memory_cgroup: Any,
) -> None:
    """Watching a child whose parent's limit binds: the verdict is about the parent, so
    the processes are the parent's subtree, the child's sibling included."""
    memory_cgroup.set_limit(300 * MiB)
    watched = memory_cgroup.child("watched")
    sibling = memory_cgroup.child("sibling")
    mine = watched.python("import signal; signal.pause()")
    theirs = sibling.python("import signal; signal.pause()")
    joined(watched, mine)
    joined(sibling, theirs)
    monitor = Monitor(
        policy=quiet_policy(), cgroup=str(watched.path), processes=True, reclaim=False
    )
    memory = monitor.state.snapshot.memory
    assert binding_cgroup(memory) == str(memory_cgroup.path)
    monitor.sample_slow()
    assert monitor.sample_now().snapshot.cgroup_pids == tuple(sorted((mine.pid, theirs.pid)))


def test_a_process_in_a_cgroup_without_a_limit_is_judged_by_the_host(memory_cgroup: Any) -> None:
    """The host's limit binds: the verdict is the host's, so are its processes (None)."""
    memory_cgroup.set_limit(None)
    monitor = Monitor(
        policy=quiet_policy(), cgroup=str(memory_cgroup.path), processes=True, reclaim=False
    )
    assert monitor.state.snapshot.memory.source == "host"
    monitor.sample_slow()
    assert monitor.sample_now().snapshot.cgroup_pids is None


def test_without_the_process_table_there_are_no_members(memory_cgroup: Any) -> None:
    memory_cgroup.set_limit(300 * MiB)
    monitor = Monitor(policy=quiet_policy(), cgroup=str(memory_cgroup.path), reclaim=False)
    monitor.sample_slow()
    assert monitor.sample_now().snapshot.cgroup_pids is None


@pytest.fixture
def tree(tmp_path: Path) -> KernelTree:
    """A v2 fixture tree whose cgroup /a (2 GiB) binds, with members in /a and below."""
    tree = KernelTree(tmp_path / "kernel")
    cgroup = Path(tree.roots.cgroup) / "a"
    (cgroup / "cgroup.procs").write_text("4242\n17\n")
    (cgroup / "web" / "worker").mkdir(parents=True)
    (cgroup / "web" / "cgroup.procs").write_text("")
    (cgroup / "web" / "worker" / "cgroup.procs").write_text("900\n17\n")
    (Path(tree.roots.cgroup) / "b").mkdir()
    (Path(tree.roots.cgroup) / "b" / "cgroup.procs").write_text("5\n")  # a sibling: not ours
    return tree


def test_a_v2_tree_s_members_are_read_recursively_sorted_once_each(tree: KernelTree) -> None:
    monitor = Monitor(
        policy=quiet_policy(), sampler=Sampler(tree.roots), processes=True, reclaim=False
    )
    memory = monitor.state.snapshot.memory
    assert binding_cgroup(memory) == os.path.join(tree.roots.cgroup, "a")
    monitor.sample_slow()
    assert monitor.sample_now().snapshot.cgroup_pids == (17, 900, 4242)


def test_damaged_members_are_none_with_one_warning_and_a_fault(
    tree: KernelTree, caplog: pytest.LogCaptureFixture
) -> None:
    procs = Path(tree.roots.cgroup) / "a" / "web" / "worker" / "cgroup.procs"
    procs.write_bytes(b"900\n\x00garbage 12abc\n")
    monitor = Monitor(
        policy=quiet_policy(), sampler=Sampler(tree.roots), processes=True, reclaim=False
    )
    with caplog.at_level(logging.WARNING, logger="resguard"):
        for _ in range(3):
            monitor.sample_slow()
    snap = monitor.sample_now().snapshot
    assert snap.cgroup_pids is None
    fault = snap.fault_for("cgroup_pids")
    assert fault is not None
    assert fault.source == str(procs)
    assert fault.kind == "garbage"
    assert len(warnings_about(caplog, str(procs))) == 1
    assert snap.processes  # the process table itself is fine


def test_a_cgroup_removed_below_during_the_walk_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "cgroup.procs").write_text("1\n")
    (tmp_path / "gone").mkdir()  # a child without its files: as if removed mid-walk
    (tmp_path / "gone" / "x").mkdir()
    os.rmdir(tmp_path / "gone" / "x")
    assert isinstance(member_pids(str(tmp_path)), MemberDamage)  # still there: damaged
    os.rmdir(tmp_path / "gone")
    assert member_pids(str(tmp_path)) == (1,)


def test_v1_tasks_stand_in_for_cgroup_procs(tmp_path: Path) -> None:
    (tmp_path / "tasks").write_text("10\n11\n")
    assert member_pids(str(tmp_path)) == (10, 11)


def test_the_walk_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "cgroup.procs").write_text("1\n")
    for index in range(5):
        (tmp_path / f"c{index}").mkdir()
        (tmp_path / f"c{index}" / "cgroup.procs").write_text(f"{index + 2}\n")
    result = member_pids(str(tmp_path), max_cgroups=3)
    assert isinstance(result, MemberDamage)
    assert result.kind == "truncated"
    too_many = member_pids(str(tmp_path), max_pids=2)
    assert isinstance(too_many, MemberDamage)
    assert member_pids(str(tmp_path)) == (1, 2, 3, 4, 5, 6)


def test_a_missing_cgroup_is_a_damage_not_an_exception(tmp_path: Path) -> None:
    result = member_pids(str(tmp_path / "nope"))
    assert isinstance(result, MemberDamage)
    assert result.kind == "missing"


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=120))
def test_no_content_of_cgroup_procs_makes_the_walk_raise(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "cgroup.procs").write_bytes(content)
    result = member_pids(str(tmp_path))
    if not isinstance(result, MemberDamage):
        assert list(result) == sorted(set(result))
        assert all(pid > 0 for pid in result)


def test_the_psutil_backend_has_no_members() -> None:
    monitor = Monitor(
        policy=quiet_policy(), sampler=Sampler(backend="psutil"), processes=True, reclaim=False
    )
    monitor.sample_slow()
    assert monitor.sample_now().snapshot.cgroup_pids is None
