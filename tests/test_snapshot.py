"""Snapshots of the real machine, and inside real memory cgroups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

import resguard
from resguard._probes.backend import Backend
from resguard._probes.procfs import TICKS_PER_S
from resguard.snapshot import (
    UNITS,
    MemoryInfo,
    PressureLine,
    ProcessInfo,
    ResourcePressure,
    Sampler,
    Snapshot,
    metric_paths,
    metric_unit,
)
from resguard.snapshot._cpu import CpuCounters
from resguard.testing import KernelTree, ManualClock

from support import sample_beside_a_stalled_walk, wait_until

MiB = 2**20

CHILD = """
import json, psutil, resguard
snap = resguard.snapshot()
print(json.dumps({"snapshot": snap.to_dict(), "psutil_total": psutil.virtual_memory().total}))
"""


def test_snapshot_of_this_machine_is_consistent() -> None:
    snap = resguard.snapshot()
    assert isinstance(snap, Snapshot)
    memory = snap.memory
    assert memory.used is not None
    assert memory.limit is not None
    assert memory.total is not None
    assert memory.available is not None
    assert snap.process.num_threads is not None
    assert 0 < memory.used <= memory.limit <= memory.total
    assert memory.available <= memory.limit
    assert memory.percent == pytest.approx(100 * memory.used / memory.limit)
    assert snap.memory.total == psutil.virtual_memory().total
    assert snap.process.pid == os.getpid()
    assert snap.process.rss == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)
    assert snap.process.num_threads >= 1
    assert snap.cpu.count == psutil.cpu_count()
    assert 0 < snap.cpu.effective <= snap.cpu.count
    assert abs(snap.taken_at - time.time()) < 5
    assert snap.process.uss is None


def test_uss_on_request() -> None:
    snap = resguard.snapshot(uss=True)
    assert snap.process.uss is not None
    assert snap.process.rss is not None
    assert 0 < snap.process.uss <= snap.process.rss


def test_children_rss_counts_descendants() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "x = bytearray(64 * 2**20); input()"], stdin=subprocess.PIPE
    )
    try:
        wait_until(
            lambda: (resguard.snapshot().process.children_rss or 0) >= 64 * MiB,
            timeout_s=30,
            what="the child's RSS to show up",
        )
        assert resguard.snapshot(children=False).process.children_rss is None  # not measured
    finally:
        child.kill()
        child.wait()


def test_process_cpu_percent_covers_the_time_between_samples() -> None:
    sampler = Sampler()
    sampler.sample()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    cpu_percent = sampler.sample().process.cpu_percent
    assert cpu_percent is not None
    assert cpu_percent > 20


@pytest.mark.linux_backend
def test_pressure_is_read_where_the_kernel_has_it() -> None:
    snap = resguard.snapshot()
    if not os.path.exists("/proc/pressure/memory"):
        assert snap.pressure.memory is None
        return
    assert snap.pressure.memory is not None
    assert 0 <= snap.pressure.memory.some.avg10 <= 100


def test_to_dict_is_json_and_html_renders() -> None:
    snap = resguard.snapshot()
    data = json.loads(json.dumps(snap.to_dict()))
    assert data["memory"]["limit"] == snap.memory.limit
    html = snap._repr_html_()
    assert "<caption>resguard snapshot at " in html
    assert ">Memory<" in html


def test_snapshots_are_immutable() -> None:
    snap = resguard.snapshot()
    with pytest.raises(AttributeError):
        snap.memory.limit = 1  # type: ignore[misc]


def test_metric_paths_name_the_numeric_fields() -> None:
    paths = metric_paths()
    for path in (
        "memory.percent",
        "memory.available",
        "pressure.memory.some.avg10",
        "process.rss",
        "cpu.percent",
        "containers.memory.total",
    ):
        assert path in paths
    assert "memory.source" not in paths


# Numbers that are deliberately plain: an identifier, the load averages (a run-queue
# length averaged by the kernel has no unit of its own) and macOS's levels and ranks.
UNITLESS = frozenset(
    {
        "process.pid",
        "cpu.load_1m",
        "cpu.load_5m",
        "cpu.load_15m",
        "pressure.memory_level",
        "heat.thermal_rank",
        "gpu.memory.device",
    }
)


@given(st.sampled_from(sorted(metric_paths())))
def test_every_metric_path_has_a_unit_or_is_deliberately_unitless(path: str) -> None:
    unit = metric_unit(path)
    if path in UNITLESS:
        assert unit is None
    else:
        assert unit in UNITS
    leaf = path.rsplit(".", 1)[-1]
    if leaf.endswith("percent") or leaf.startswith("avg"):
        assert unit == "percent"
    if leaf in {"total", "limit", "used", "available", "free", "rss", "vms", "uss"}:
        assert unit == "bytes"


@pytest.mark.parametrize(
    ("path", "unit"),
    [
        ("memory.used", "bytes"),
        ("memory.percent", "percent"),
        ("swap.free", "bytes"),
        ("cpu.count", "count"),
        ("cpu.load_1m", None),
        ("pressure.memory.some.avg10", "percent"),
        ("pressure.io.full.total_us", "microseconds"),
        ("process.rss", "bytes"),
        ("process.children_rss", "bytes"),
        ("process.num_threads", "count"),
        ("taken_at", "seconds"),
        ("processes.rss", "bytes"),
        ("processes.cpu_percent", "percent"),
        ("processes.create_time", "seconds"),
        ("processes.pid", None),
        ("containers.memory_used", "bytes"),
        ("containers.items.memory_limit", "bytes"),
        ("containers.memory_percent", "percent"),
        ("containers.memory.total", "bytes"),
        ("ollama.size_vram", "bytes"),
        ("ollama.idle_since", "seconds"),
        ("memory.source", None),  # not a number
        ("memory.nonsense", None),
        ("", None),
    ],
)
def test_metric_unit_of_a_dotted_path(path: str, unit: str | None) -> None:
    assert metric_unit(path) == unit


def test_units_are_the_fields_attrs_metadata() -> None:
    assert attrs.fields(MemoryInfo).used.metadata["unit"] == "bytes"
    assert attrs.fields(ProcessInfo).count.metadata["unit"] == "count"
    assert "unit" not in attrs.fields(MemoryInfo).source.metadata


def test_the_pressure_values_are_public_snapshot_types() -> None:
    assert PressureLine.__module__ == "resguard.snapshot"
    assert ResourcePressure.__module__ == "resguard.snapshot"
    line = (1.5, 1.0, 0.5, 123)
    assert ResourcePressure.from_lines((line, None)) == ResourcePressure(
        PressureLine(1.5, 1.0, 0.5, 123), None
    )
    assert ResourcePressure.from_lines(None) is None


def test_sampler_survives_fork() -> None:
    sampler = Sampler()
    parent = sampler.sample()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read)
        os.write(write, str(sampler.sample().process.pid).encode())
        os._exit(0)
    os.close(write)
    child_pid = int(os.read(read, 100))
    os.close(read)
    os.waitpid(pid, 0)
    assert child_pid == pid != parent.process.pid


@pytest.mark.cgroup
@pytest.mark.linux_backend
def test_limit_inside_a_real_memory_cgroup(memory_cgroup) -> None:  # type: ignore[no-untyped-def]
    memory_cgroup.set_limit(128 * MiB)
    child = memory_cgroup.python(CHILD, stdout=subprocess.PIPE)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    result = json.loads(out)
    memory = result["snapshot"]["memory"]
    assert memory["limit"] == 134217728
    assert memory["source"] == "cgroup"
    assert memory["cgroup"] == memory_cgroup.relative
    assert 0 < memory["used"] < 128 * MiB
    assert result["psutil_total"] == psutil.virtual_memory().total  # psutil sees the host


@pytest.mark.cgroup
@pytest.mark.linux_backend
def test_cli_snapshot_json_inside_a_real_memory_cgroup(memory_cgroup) -> None:  # type: ignore[no-untyped-def]
    memory_cgroup.set_limit(128 * MiB)
    child = memory_cgroup.spawn(
        [sys.executable, "-m", "resguard", "snapshot", "--json"], stdout=subprocess.PIPE
    )
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    memory = json.loads(out)["memory"]
    assert memory["limit"] == 134217728
    assert memory["source"] == "cgroup"


@pytest.mark.cgroup
@pytest.mark.linux_backend
def test_nested_cgroup_whose_middle_level_carries_the_limit(memory_cgroup) -> None:  # type: ignore[no-untyped-def]
    middle = memory_cgroup.child("middle")
    leaf = middle.child("leaf")
    middle.set_limit(128 * MiB)
    child = leaf.python(CHILD, stdout=subprocess.PIPE)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    memory = json.loads(out)["snapshot"]["memory"]
    assert memory["limit"] == 134217728
    assert memory["source"] == "cgroup"
    assert "/middle/" in memory["source_detail"]
    assert "/leaf/" not in memory["source_detail"]
    assert memory["cgroup"] == leaf.relative


@pytest.mark.cgroup
@pytest.mark.linux_backend
def test_used_in_a_cgroup_tracks_the_child_allocation(memory_cgroup) -> None:  # type: ignore[no-untyped-def]
    memory_cgroup.set_limit(256 * MiB)
    code = """
import json, resguard
before = resguard.snapshot().memory.used
block = bytearray(100 * 2**20)
after = resguard.snapshot().memory.used
print(json.dumps([before, after]))
"""
    child = memory_cgroup.python(code, stdout=subprocess.PIPE)
    out, _ = child.communicate(timeout=60)
    before, after = json.loads(out)
    assert after - before == pytest.approx(100 * MiB, rel=0.1)


@pytest.mark.parametrize("backend", ["linux", "psutil"])
def test_a_fork_while_another_thread_samples_cannot_hang_the_child(backend: Backend) -> None:
    from forking import held_by_another_thread, in_child

    sampler = Sampler(backend=backend)
    sampler.sample()
    impl: Any = sampler._impl  # the backend's readers
    with held_by_another_thread(impl._lock):  # that thread is mid-sample at the fork
        status = in_child(lambda: sampler.sample(children=False), timeout_s=5)
    assert status == 0
    if backend == "linux":
        with held_by_another_thread(impl._files._lock):
            status = in_child(lambda: Sampler(cgroup=None).sample() and sampler.sample(), 5)
        assert status == 0


def test_cpu_counters_give_the_share_between_two_readings() -> None:
    counters = CpuCounters(cpu_count=1)
    assert counters.host_percent((100, 1000)) is None  # one reading: unknown, not since boot
    assert counters.host_percent((150, 1100)) == pytest.approx(50.0)
    assert counters.host_percent((150, 1100)) == pytest.approx(50.0)  # no tick: the last
    assert counters.host_percent((10, 200)) is None  # went back: a new baseline, unknown
    assert counters.host_percent((60, 300)) == pytest.approx(50.0)
    assert counters.host_percent((60, 400)) == 0.0


def test_cpu_counters_of_this_process_need_a_baseline() -> None:
    counters = CpuCounters(cpu_count=1)
    ticks_per_s = TICKS_PER_S
    assert counters.process_percent(0, 10.0) is None  # the first reading is the baseline
    assert counters.process_percent(ticks_per_s // 2, 11.0) == pytest.approx(50.0)
    assert counters.process_percent(ticks_per_s // 2, 11.0) == pytest.approx(50.0)  # 0 s
    counters.reset()  # after a fork: unknown again, never the share before it
    assert counters.process_percent(ticks_per_s, 14.0) is None
    assert counters.process_percent(ticks_per_s * 2, 18.0) == pytest.approx(25.0)


def test_cpu_counters_measure_no_window_shorter_than_a_quarter_second() -> None:
    """Two samples a few milliseconds apart, counted in 10 ms ticks, gave 0 % or 300 %:
    such a window keeps the baseline and answers the previous share."""
    counters = CpuCounters(cpu_count=2)
    assert counters.process_percent(0, 10.0) is None
    assert counters.process_percent(3, 10.01) is None  # too short, and nothing known yet
    assert counters.process_percent(50, 11.0) == pytest.approx(50.0 * 100 / TICKS_PER_S)
    assert counters.process_percent(53, 11.01) == pytest.approx(50.0 * 100 / TICKS_PER_S)
    # the baseline stayed at 11.0: 0.5 s later the window covers the whole 0.5 s
    assert counters.process_percent(50 + TICKS_PER_S // 4, 11.5) == pytest.approx(50.0)
    host = CpuCounters(cpu_count=2)
    assert host.host_percent((100, 1000)) is None
    assert host.host_percent((103, 1003)) is None  # 3 ticks: too short, nothing known yet
    assert host.host_percent((100 + 60, 1000 + 100)) == pytest.approx(60.0)  # from the baseline
    assert host.host_percent((163, 1103)) == pytest.approx(60.0)  # too short: the last share


@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.floats(0, 5, allow_nan=False)), min_size=1, max_size=30
    ),
    st.integers(1, 64),
)
def test_a_process_share_never_exceeds_every_cpu_busy(
    steps: list[tuple[int, float]], cpu_count: int
) -> None:
    counters = CpuCounters(cpu_count=cpu_count)
    ticks, now_s = 0, 0.0
    for more_ticks, later_s in steps:
        ticks, now_s = ticks + more_ticks, now_s + later_s
        percent = counters.process_percent(ticks, now_s)
        assert percent is None or 0.0 <= percent <= 100.0 * cpu_count


def test_the_sampler_times_everything_by_its_clocks(tmp_path: Path) -> None:
    tree = KernelTree(tmp_path)
    clock = ManualClock(500.0)
    sampler = Sampler(tree.roots, clock=clock, wall_clock=lambda: 1_700_000_123.0)
    first = sampler.sample(children=False)
    assert first.monotonic == 500.0
    assert first.taken_at == 1_700_000_123.0
    assert first.memory.limit == 2 * 2**30
    assert first.pressure.memory is not None
    Path(tree.path("memory.max")).write_text(f"{2**30}\n")
    Path(tree.path("memory.pressure")).write_text(tree.PSI.replace("1.50", "9.50"))
    clock.advance(0.4)  # limits are kept 1 s, PSI 0.5 s
    kept = sampler.sample(children=False)
    assert kept.memory.limit == 2 * 2**30
    assert kept.pressure.memory is not None
    assert kept.pressure.memory.some.avg10 == 1.5
    clock.advance(0.2)
    slow = sampler.sample(children=False)
    assert slow.memory.limit == 2 * 2**30
    assert slow.pressure.memory is not None
    assert slow.pressure.memory.some.avg10 == 9.5
    clock.advance(0.5)
    assert sampler.sample(children=False).memory.limit == 2**30


def test_a_clock_that_is_not_one_is_refused() -> None:
    with pytest.raises(resguard.InvalidType, match="clock="):
        Sampler(clock="monotonic")  # type: ignore[arg-type]
    with pytest.raises(resguard.InvalidValue, match="wall_clock="):
        Sampler(wall_clock=lambda: float("nan"))


def test_patching_sampler_sample_on_the_class_reaches_every_sampler() -> None:
    """``mock.patch.object(Sampler, "sample")`` (how users stub the machine in their tests)
    reaches samplers made before, after, and the default one behind ``snapshot()``; an
    instance attribute shadowing the method would defeat it and show the backend's
    private class in reprs."""
    import importlib
    from unittest import mock

    # the module, whatever the package attribute is (the function once resguard.snapshot()
    # ran before its first import: `import resguard.snapshot as m` would bind that)
    snapshot_module = importlib.import_module("resguard.snapshot")

    before = Sampler()
    fake = before.sample()
    with mock.patch.object(Sampler, "sample", autospec=True, return_value=fake) as patched:
        assert before.sample() is fake
        assert Sampler(backend="psutil").sample() is fake
        assert snapshot_module.default_sampler().sample() is fake
        assert resguard.snapshot() is fake
    assert patched.call_count == 4
    assert "sample" not in vars(before)
    assert "Sampler.sample" in repr(before.sample)


def test_a_looser_cgroup_s_damaged_stat_leaves_no_fault_when_an_rlimit_binds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the binding limit's "used" is read: the cgroup's damaged memory.stat says
    nothing about memory counted against a tighter RLIMIT_DATA."""
    from resguard.snapshot import _limits

    monkeypatch.setattr(_limits, "rlimits", lambda: (("RLIMIT_DATA", 2**30),))
    tree = KernelTree(tmp_path)
    tree.damage("memory.stat", "truncated")
    snap = Sampler(tree.roots).sample(children=False)
    assert (snap.memory.source, snap.memory.source_detail) == ("rlimit", "RLIMIT_DATA")
    assert snap.memory.used is not None
    assert [fault for fault in snap.faults if fault.field.startswith("memory")] == []


_BYTES_OR_NONE = st.one_of(st.none(), st.integers(0, 2**50))
_RLIMITS = st.lists(
    st.tuples(st.sampled_from(["RLIMIT_AS", "RLIMIT_DATA"]), st.integers(1, 2**50)),
    max_size=2,
    unique_by=lambda pair: pair[0],
).map(tuple)


@given(limit=_BYTES_OR_NONE, found=_RLIMITS)
def test_tightest_is_the_least_known_limit_and_names_it(
    limit: int | None, found: tuple[tuple[str, int], ...]
) -> None:
    from resguard.snapshot._limits import tightest

    bound, source, detail = tightest(limit, "host", "meminfo", found)
    candidates = ([(limit, "host", "meminfo")] if limit is not None else []) + [
        (soft, "rlimit", name) for name, soft in found
    ]
    if not candidates:
        assert (bound, source, detail) == (None, "host", "meminfo")
        return
    assert bound == min(value for value, _, _ in candidates)
    assert (bound, source, detail) in candidates
    if limit is not None and bound == limit:
        assert source == "host"  # a tie keeps the earlier one


@given(limit=_BYTES_OR_NONE, used=_BYTES_OR_NONE, host=_BYTES_OR_NONE)
def test_headroom_never_exceeds_the_limit_nor_the_host_s_available(
    limit: int | None, used: int | None, host: int | None
) -> None:
    from resguard.snapshot._limits import headroom

    available, percent = headroom(limit, used, host)
    if limit is None or used is None:
        assert (available, percent) == (None, None)
        return
    assert available is not None
    assert percent is not None
    assert 0 <= available <= max(limit - used, 0)
    assert host is None or available <= host
    assert percent == (100.0 * used / limit if limit else 100.0)


@given(total=_BYTES_OR_NONE, cgroup=_BYTES_OR_NONE, found=_RLIMITS)
def test_limit_without_an_rlimit_is_the_least_of_the_rest(
    total: int | None, cgroup: int | None, found: tuple[tuple[str, int], ...]
) -> None:
    from resguard.snapshot._limits import limit_without

    rest = [value for value in (total, cgroup) if value is not None]
    rest += [soft for name, soft in found if name != "RLIMIT_AS"]
    assert limit_without((total, cgroup), found, "RLIMIT_AS") == (min(rest) if rest else None)


@given(
    count=st.integers(1, 512),
    affinity=st.one_of(st.none(), st.integers(-1, 600)),
    quota=st.one_of(st.none(), st.floats(0.01, 600)),
)
def test_cpu_bound_is_the_least_of_count_affinity_and_quota(
    count: int, affinity: int | None, quota: float | None
) -> None:
    from resguard.snapshot._limits import cpu_bound

    effective, source = cpu_bound(count, affinity, quota)
    bounds = {"host": float(count)}
    if affinity is not None and affinity > 0:
        bounds["affinity"] = float(affinity)
    if quota is not None:
        bounds["cgroup"] = quota
    assert effective == min(bounds.values())
    assert bounds[source] == effective


def test_a_sampler_of_a_cgroup_off_linux_is_refused_saying_cgroups_are_not_available(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On macOS a Sampler(cgroup=...) was accepted (and became a linux sampler of files
    that are not there); a re-rooted tree still works everywhere."""
    tree = KernelTree(tmp_path)
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(
        resguard.InvalidValue,
        match=r"cgroup='/sys/fs/cgroup': cgroups are not available on this platform \(darwin\)",
    ):
        Sampler(cgroup="/sys/fs/cgroup")
    with pytest.raises(resguard.InvalidValue, match="cgroups are not available"):
        resguard.Monitor(cgroup="/sys/fs/cgroup")
    with pytest.raises(resguard.InvalidType, match="is not a path"):
        Sampler(cgroup=3)  # type: ignore[arg-type]  # the type is checked first
    assert Sampler(tree.roots, cgroup=tree.path("memory.max").rsplit("/", 1)[0]).backend == "linux"


@given(steps=st.lists(st.tuples(st.floats(0, 2), st.integers()), min_size=1, max_size=20))
def test_a_slow_value_is_read_again_only_once_it_is_max_age_old(
    steps: list[tuple[float, int]],
) -> None:
    from resguard.snapshot._slow import SlowValues

    slow = SlowValues(0.5)
    now_s, read_at, kept = 0.0, None, None
    for advance_s, value in steps:
        now_s += advance_s
        got = slow.get("load", now_s, lambda value=value: value)  # type: ignore[misc]
        if read_at is None or now_s - read_at >= 0.5:
            read_at, kept = now_s, value
        assert got == kept
    slow.clear()
    assert slow.get("load", now_s, lambda: -1) == -1


def test_a_slow_children_walk_does_not_block_another_thread_s_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The linux backend reads every descendant's files for children_rss: another thread
    sharing the sampler samples meanwhile instead of waiting on its lock."""
    import threading

    from resguard.snapshot import _linux

    sampler = Sampler(backend="linux")
    sampler.sample()
    walking, release = threading.Event(), threading.Event()
    real = _linux._read_children
    walker_ident: list[int] = []

    def slow_read_children(path: str) -> list[str]:
        if threading.get_ident() in walker_ident:
            walking.set()
            release.wait(10)
        return real(path)

    monkeypatch.setattr(_linux, "_read_children", slow_read_children)

    def walk() -> None:
        walker_ident.append(threading.get_ident())
        sampler.sample()

    other = sample_beside_a_stalled_walk(sampler, walk, walking, release)
    assert other is not None, "a sample without children waited for another thread's walk"


@pytest.mark.parametrize("bad", ["", "   ", ".", "/tmp", "/sys/fs/cgroup/../../tmp"])
def test_a_cgroup_that_is_empty_or_not_under_the_cgroup_mount_is_refused_by_sampler_and_monitor(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sampler(cgroup='') was accepted and then memory was unknown forever with a
    misleading 'vanished' fault, while Monitor(cgroup='') refused it; '/tmp' and '.'
    were accepted as v2 cgroups. One check refuses them for both, quoting the value."""
    monkeypatch.setattr(sys, "platform", "linux")
    for make in (lambda: Sampler(cgroup=bad), lambda: resguard.Monitor(cgroup=bad, reclaim=False)):
        with pytest.raises(resguard.InvalidValue) as info:
            make()
        message = str(info.value)
        assert message.startswith(f"cgroup={bad!r} is not a cgroup directory")
        assert "expected a directory under /sys/fs/cgroup with cgroup.procs" in message


def test_a_directory_under_the_mount_without_cgroup_files_is_refused(tmp_path: Path) -> None:
    tree = KernelTree(tmp_path)
    plain = tmp_path / "cgroup" / "not-a-cgroup"
    plain.mkdir()
    with pytest.raises(resguard.InvalidValue, match=r"not-a-cgroup.*has no cgroup\.procs"):
        Sampler(tree.roots, cgroup=str(plain))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "cgroup.procs").write_text("")
    with pytest.raises(resguard.InvalidValue, match=r"not under the cgroup mount"):
        Sampler(tree.roots, cgroup=str(outside))
    # the fixture tree's own cgroup (memory files, as KernelTree writes them) still works
    assert Sampler(tree.roots, cgroup=str(tmp_path / "cgroup" / "a")).sample().memory.limit == (
        2 * 2**30
    )


@pytest.mark.parametrize("backend", ["linux", "psutil"])
def test_pickling_or_deep_copying_a_sampler_is_a_clear_error_from_the_tree(
    backend: Backend,
) -> None:
    """It raised a raw "TypeError: cannot pickle 'module' object" (psutil) or
    '_thread.lock' (linux)."""
    import copy
    import pickle

    sampler = Sampler(backend=backend)
    sampler.sample()
    for attempt in (lambda: pickle.dumps(sampler), lambda: copy.deepcopy(sampler)):
        with pytest.raises(resguard.InvalidType, match="make a new Sampler") as info:
            attempt()
        assert isinstance(info.value, TypeError)  # pickle's contract
        assert f"({backend} backend)" in str(info.value)
    shallow = copy.copy(sampler)  # a second façade over the same readers
    assert shallow.backend == backend
    assert shallow.sample().memory.total == sampler.sample().memory.total
