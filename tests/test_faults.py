"""Fault injection for sensing (issue 11, items 1 and 2): every kernel and cgroup file the
Sampler and the process table read, damaged in every way, on a re-rooted /proc and cgroup
tree read by the real Sampler.

For each case: sample() returns; exactly the fields fed by the damaged file are None (or
filled in by a named fallback); a Fault names the file and the kind of damage; one warning
over many samples; one "works again" after the file is repaired.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.render import flatten, format_value
from resguard._probes import cgroup as _cgroup
from resguard._probes import files as _files
from resguard._probes import procfs, psi
from resguard.processes import ProcessTable
from resguard.snapshot import (
    FAULT_KINDS,
    RELOG_AFTER_S,
    Fault,
    Sampler,
    Snapshot,
    invalidate_limits,
)
from resguard.testing import KernelTree, ManualClock, Roots

from factories import GiB
from support import run_python, warnings_about

SAMPLES = 25

# What each file feeds: the fields that must be None when it is damaged (those another
# source fills in are listed under "fallback"), whether a missing file is normal, and
# whether the file is read once at setup (then it is not re-read, so there is no recovery).
SOURCES: dict[str, dict[str, Any]] = {
    "meminfo": {"none": {"memory.total", "swap.total", "swap.used", "swap.free", "swap.percent"}},
    "stat": {"none": {"cpu.percent"}},
    "loadavg": {"none": {"cpu.load_1m", "cpu.load_5m", "cpu.load_15m"}},
    "self/stat": {
        "none": {"process.cpu_percent", "process.num_threads"},
        "fallback": "process.rss",
    },
    # without its cgroup the sampler cannot find the cgroup's PSI (the tree has no system PSI)
    "self/cgroup": {
        "none": {"pressure.memory", "pressure.cpu", "pressure.io"},
        "labels": {"pressure.source", "memory.cgroup"},
        "fallback": "memory.limit",
        "setup": True,
        "optional": True,
        "no_vanish": True,
    },
    "memory.max": {"none": set(), "fallback": "memory.limit", "optional": True},
    "memory.current": {"none": {"memory.used", "memory.available", "memory.percent"}},
    "memory.stat": {"none": set(), "fallback": "memory.used"},
    "memory.pressure": {"none": {"pressure.memory"}, "optional": True},
    "cpu.pressure": {"none": {"pressure.cpu"}, "optional": True},
    "io.pressure": {"none": {"pressure.io"}, "optional": True},
    "cpu.max": {"none": set(), "fallback": "cpu.effective", "optional": True},
}
DAMAGE = ("garbage", "truncated", "empty", "huge", "unreadable", "vanished", "missing")
EXPECTED_KIND = {"huge": "truncated"}  # a file past the read cap is cut at the cap

CASES = [
    pytest.param(name, damage, id=f"{name}-{damage}")
    for name, spec in SOURCES.items()
    for damage in DAMAGE
    if not (damage == "missing" and spec.get("optional"))
    and not (damage == "vanished" and spec.get("no_vanish"))
]


@pytest.fixture
def tree(tmp_path: Path) -> KernelTree:
    return KernelTree(tmp_path)


class Vanish:
    """Makes the kernel's answer for a file that went away after it was opened (ESRCH for
    a process's file, ENODEV for a removed cgroup) come back from ``pread`` for chosen
    paths; the files themselves stay as they are."""

    def __init__(self) -> None:
        self.paths: set[str] = set()
        self._real = _files._pread

    def __call__(self, fd: int, size: int, offset: int) -> bytes:
        if self.paths and os.readlink(f"/proc/self/fd/{fd}") in self.paths:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return self._real(fd, size, offset)


@pytest.fixture
def vanish(monkeypatch: pytest.MonkeyPatch) -> Vanish:
    injector = Vanish()
    monkeypatch.setattr(_files, "_pread", injector)
    return injector


def none_fields(snap: Snapshot) -> set[str]:
    return {path for path, value in flatten(snap) if value is None}


def healthy_none(tree: KernelTree) -> set[str]:
    return none_fields(Sampler(tree.roots, clock=ManualClock(100.0)).sample())


def make_sampler(tree: KernelTree) -> Sampler:
    # no caching of limits and slow files: the repair must show on the next sample; a
    # clock that stands still keeps every CPU percent at its first sample's (unknown)
    return Sampler(tree.roots, limits_max_age_s=0, slow_files_max_age_s=0, clock=ManualClock(100.0))


def test_the_healthy_tree_has_no_faults_and_the_cgroup_binds(tree: KernelTree) -> None:
    snap = make_sampler(tree).sample()
    assert snap.faults == ()
    assert snap.memory.source == "cgroup"
    assert snap.memory.limit == 2 * GiB
    assert snap.memory.used == GiB - GiB // 4
    assert snap.cpu.effective == 1.5
    assert snap.pressure.memory is not None
    # memory_level is macOS's pressure level: the linux backend never has it (not a fault)
    assert none_fields(snap) == {
        "cpu.percent",  # a first sample: unknown, and not a fault
        "process.cpu_percent",
        "process.uss",
        "processes",
        "containers",
        "ollama",
        "pressure.memory_level",
        "heat",
        "cgroup_pids",
        "gpus",  # a re-rooted tree reads no GPUs (the Sampler reads them on this machine's roots)
        "gpu",
    }


@pytest.mark.parametrize(("name", "damage"), CASES)
def test_a_damaged_file_leaves_its_fields_unknown_with_one_warning(
    tree: KernelTree, vanish: Vanish, caplog: pytest.LogCaptureFixture, name: str, damage: str
) -> None:
    spec = SOURCES[name]
    baseline = healthy_none(tree)
    path = tree.path(name)
    if damage == "vanished":
        vanish.paths.add(path)
    else:
        tree.damage(name, damage)
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    sampler = make_sampler(tree)

    snaps = [sampler.sample() for _ in range(SAMPLES)]

    kind = EXPECTED_KIND.get(damage, damage)
    for number, snap in enumerate(snaps):
        assert isinstance(snap, Snapshot)
        assert none_fields(snap) == baseline | spec["none"] | spec.get("labels", set()), (
            f"sample {number}"
        )
        for field in spec["none"]:
            fault = snap.fault_for(field)
            assert fault is not None, field
            assert (fault.source, fault.kind) == (path, kind)
    first = snaps[0]
    ours = [fault for fault in first.faults if fault.source == path]
    assert ours, first.faults
    assert {fault.kind for fault in ours} == {kind}
    assert all(fault.kind in FAULT_KINDS for snap in snaps for fault in snap.faults)
    if "fallback" in spec:
        degraded = [fault for fault in ours if fault.field == spec["fallback"]]
        assert degraded, ours
        assert degraded[0].fallback
        assert first.fault_for(spec["fallback"]) is None  # filled in, so not unknown
    assert len(warnings_about(caplog, path, "is failing")) == 1, caplog.text

    if damage == "vanished":
        vanish.paths.clear()
    else:
        tree.restore(name)
    repaired = [sampler.sample() for _ in range(5)]
    if spec.get("setup"):
        return  # read once, when the sampler starts: nothing to recover
    for snap in repaired:
        assert snap.faults == ()
        assert none_fields(snap) == baseline
    assert len(warnings_about(caplog, path, "works again")) == 1, caplog.text
    assert len(warnings_about(caplog, path, "is failing")) == 1, caplog.text


def test_a_new_kind_of_damage_is_logged_again(
    tree: KernelTree, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    sampler = make_sampler(tree)
    path = tree.path("meminfo")
    for damage in ("garbage", "garbage", "empty", "empty", "garbage"):
        tree.damage("meminfo", damage)
        for _ in range(5):
            sampler.sample()
    failing = warnings_about(caplog, path, "is failing")
    assert len(failing) == 3
    assert [message.split(": ", 1)[1].split(":")[0] for message in failing] == [
        "garbage",
        "empty",
        "garbage",
    ]


def test_damaged_meminfo_gives_unknown_not_zero(tmp_path: Path) -> None:
    # issue 11 item 2: empty meminfo gave limit=0, so every reservation was refused
    tree = KernelTree(tmp_path, cgroup=False)
    for damage in ("empty", "garbage", "truncated", "unreadable", "missing"):
        tree.damage("meminfo", damage)
        memory = Sampler(tree.roots).sample().memory
        assert memory.source == "unknown", damage
        assert (memory.total, memory.limit, memory.used, memory.available, memory.percent) == (
            None,
            None,
            None,
            None,
            None,
        ), damage


def test_unknown_memory_names_its_reason(tmp_path: Path) -> None:
    tree = KernelTree(tmp_path, cgroup=False)
    tree.damage("meminfo", "empty")
    snap = Sampler(tree.roots).sample()
    fault = snap.fault_for("memory.limit")
    assert fault == Fault("memory", tree.path("meminfo"), "empty", "the file is empty")
    assert snap.fault_for("cpu.percent") is None


def test_meminfo_without_memavailable_uses_memfree(tmp_path: Path) -> None:
    tree = KernelTree(tmp_path, cgroup=False)
    (tmp_path / "proc/meminfo").write_text(
        "MemTotal: 16777216 kB\nMemFree: 4194304 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
    )
    snap = Sampler(tree.roots).sample()
    assert snap.faults == ()
    assert snap.memory.source == "host"
    assert snap.memory.available == 4 * GiB
    assert snap.memory.used == 12 * GiB


def test_meminfo_total_cut_short_is_not_trusted(tmp_path: Path) -> None:
    # "MemTotal: 1677" cut from "16777216 kB" would read as a machine of 1.6 MB
    tree = KernelTree(tmp_path, cgroup=False)
    (tmp_path / "proc/meminfo").write_text("MemAvailable: 8388608 kB\nMemTotal:  1677")
    memory = Sampler(tree.roots).sample().memory
    assert memory.total is None
    assert memory.source == "unknown"


def test_damaged_cgroup_usage_keeps_the_cgroup_limit(tree: KernelTree) -> None:
    # the host's numbers would answer another question: how full the host is
    tree.damage("memory.current", "garbage")
    memory = Sampler(tree.roots).sample().memory
    assert memory.source == "cgroup"
    assert memory.limit == 2 * GiB
    assert memory.used is None
    assert memory.percent is None


def test_damaged_cgroup_limit_falls_back_to_the_host(tree: KernelTree) -> None:
    tree.damage("memory.max", "garbage")
    snap = Sampler(tree.roots).sample()
    assert snap.memory.source == "host"
    assert snap.memory.limit == 16 * GiB
    assert snap.memory.used == 8 * GiB
    (fault,) = [fault for fault in snap.faults if fault.field == "memory.limit"]
    assert fault.fallback is not None
    assert fault.source == tree.path("memory.max")


def test_damaged_memory_stat_counts_all_usage(tree: KernelTree) -> None:
    tree.damage("memory.stat", "truncated")
    memory = Sampler(tree.roots).sample().memory
    assert memory.used == GiB  # usage, file cache included: more, never less


def test_damaged_self_stat_takes_rss_from_statm(tree: KernelTree) -> None:
    tree.damage("self/stat", "garbage")
    process = Sampler(tree.roots).sample().process
    assert process.rss is not None
    assert process.rss > 0
    assert process.vms is not None
    assert process.cpu_percent is None


def test_damaged_self_stat_and_statm_leave_the_process_sizes_unknown(
    tree: KernelTree, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    tree.damage("self/stat", "empty")
    tree.damage("self/statm", "garbage")
    sampler = make_sampler(tree)
    snaps = [sampler.sample() for _ in range(SAMPLES)]
    process = snaps[-1].process
    assert (process.rss, process.vms, process.cpu_percent, process.num_threads) == (
        None,
        None,
        None,
        None,
    )
    assert snaps[-1].fault_for("process.rss") == Fault(
        "process.rss", tree.path("self/stat"), "empty", "the file is empty"
    )
    assert len(warnings_about(caplog, tree.path("self/stat"), "is failing")) == 1


def test_statm_is_not_read_while_stat_is_healthy(tree: KernelTree) -> None:
    tree.damage("self/statm", "garbage")
    assert Sampler(tree.roots).sample().faults == ()


def test_a_huge_file_is_read_only_up_to_the_cap(tree: KernelTree) -> None:
    tree.damage("meminfo", "huge")
    (fault, *_) = Sampler(tree.roots).sample().faults
    assert fault.kind == "truncated"
    assert "read cap" in fault.detail
    assert _files.read_text(tree.path("meminfo")) is not None
    assert len(_files.read_text(tree.path("meminfo")) or "") == _files.READ_CAP_BYTES


def test_own_stat_that_really_vanishes(tmp_path: Path) -> None:
    """A real process's /proc/<pid>/stat stops reading (ESRCH) once it exits, while the
    descriptor stays open: the sampler's /proc/self here is that process."""
    tree = KernelTree(tmp_path, cgroup=False)
    child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        self_dir = tmp_path / "proc" / "self"
        for name in ("stat", "statm"):
            (self_dir / name).unlink()
            (self_dir / name).symlink_to(f"/proc/{child.pid}/{name}")
        sampler = make_sampler(tree)
        assert sampler.sample().process.num_threads == 1
    finally:
        child.kill()
        child.wait()
    snap = sampler.sample()
    assert snap.process.num_threads is None
    assert snap.process.rss is None
    fault = snap.fault_for("process.num_threads")
    assert fault is not None
    assert fault.kind in ("vanished", "missing")


def test_a_removed_explicit_cgroup_is_unknown_after_fork(tmp_path: Path) -> None:
    tree = KernelTree(tmp_path)
    sampler = Sampler(tree.roots, cgroup=str(tmp_path / "cgroup" / "a"))
    assert sampler.sample().memory.limit == 2 * GiB
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            import shutil

            shutil.rmtree(tmp_path / "cgroup" / "a")
            memory = sampler.sample().memory
            os.write(write, repr((memory.limit, memory.source)).encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == "(None, 'unknown')"


# --- the process table -------------------------------------------------------------------


@pytest.fixture
def proc_with_children(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[bytes]]]]:
    """A re-rooted /proc whose process entries are real processes (symlinks)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "stat").write_text("cpu  1 1 1 1 1 1 1 1 0 0\nbtime 1700000000\n")
    (proc / "uptime").write_text(Path("/proc/uptime").read_text())
    children = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    for child in children:
        (proc / str(child.pid)).symlink_to(f"/proc/{child.pid}")
    try:
        yield proc, children
    finally:
        for child in children:
            child.kill()
            child.wait()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "huge"])
def test_a_damaged_process_stat_skips_its_row_with_one_warning(
    proc_with_children: tuple[Path, list[subprocess.Popen[bytes]]],
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    proc, children = proc_with_children
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    for pid in (999_991, 999_992):
        (proc / str(pid)).mkdir()
        fake = KernelTree.__new__(KernelTree)
        fake.files = {"stat": proc / str(pid) / "stat"}
        fake.contents = {"stat": Path(f"/proc/{children[0].pid}/stat").read_text()}
        KernelTree.damage(fake, "stat", damage)
    table = ProcessTable(Roots(proc=str(proc)))
    for _ in range(SAMPLES):
        rows = table.sample()
        assert sorted(row.pid for row in rows) == sorted(child.pid for child in children)
    kind = EXPECTED_KIND.get(damage, damage)
    assert {fault.kind for fault in table.faults} == {kind}
    source = str(proc / "<pid>" / "stat")
    assert len(warnings_about(caplog, source, "is failing")) == 1, caplog.text
    for pid in (999_991, 999_992):
        (proc / str(pid) / "stat").write_text(Path(f"/proc/{children[0].pid}/stat").read_text())
    table.sample()
    assert table.faults == ()
    assert len(warnings_about(caplog, source, "works again")) == 1


def test_processes_that_exit_are_skipped_without_a_warning(
    proc_with_children: tuple[Path, list[subprocess.Popen[bytes]]], caplog: pytest.LogCaptureFixture
) -> None:
    proc, children = proc_with_children
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    table = ProcessTable(Roots(proc=str(proc)))
    assert len(table.sample()) == 3
    children[0].kill()
    children[0].wait()
    rows = table.sample()
    assert children[0].pid not in {row.pid for row in rows}
    assert len(rows) == 2
    assert table.faults == ()
    assert not caplog.records


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "unreadable", "missing"])
def test_damaged_uptime_in_the_process_table_falls_back_to_the_boot_clock(
    proc_with_children: tuple[Path, list[subprocess.Popen[bytes]]],
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    proc, _ = proc_with_children
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    fake = KernelTree.__new__(KernelTree)
    fake.files = {"uptime": proc / "uptime", "stat": proc / "stat"}
    fake.contents = {"uptime": (proc / "uptime").read_text(), "stat": (proc / "stat").read_text()}
    KernelTree.damage(fake, "uptime", damage)
    KernelTree.damage(fake, "stat", damage)  # and the boot time
    table = ProcessTable(Roots(proc=str(proc)))
    for _ in range(SAMPLES):
        rows = table.sample()
    assert len(rows) == 3
    assert all(abs(row.create_time - time.time()) < 3600 for row in rows)
    assert {fault.source for fault in table.faults} == {str(proc / "uptime"), str(proc / "stat")}
    assert all(fault.fallback for fault in table.faults)
    assert len(warnings_about(caplog, str(proc / "uptime"), "is failing")) == 1


def test_an_unreadable_proc_gives_an_empty_table_not_an_exception(tmp_path: Path) -> None:
    table = ProcessTable(Roots(proc=str(tmp_path / "nowhere")))
    assert table.sample() == []
    assert table.faults
    assert "processes" in {fault.field for fault in table.faults}


# --- limits take effect at once (item 4) ---------------------------------------------------


def test_invalidate_limits_makes_every_sampler_see_a_new_rlimit_at_once() -> None:
    # issue 11 item 4: a self-limit was ignored for up to the limits' max age (1 s)
    code = """
import resource
from resguard.snapshot import Sampler, invalidate_limits
GiB = 2**30
soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
resource.setrlimit(resource.RLIMIT_DATA, (6 * GiB, hard))
first, second = Sampler(limits_max_age_s=3600), Sampler(limits_max_age_s=3600)
before = [s.sample(children=False).memory for s in (first, second)]
resource.setrlimit(resource.RLIMIT_DATA, (5 * GiB, hard))
stale = first.sample(children=False).memory.limit
invalidate_limits()
after = [s.sample(children=False).memory for s in (first, second)]
print(min(b.limit for b in before) <= 6 * GiB, stale == before[0].limit,
      [(a.limit, a.source, a.source_detail) for a in after])
"""
    host_total = Sampler().sample(children=False).memory.limit
    assert host_total is not None
    if host_total <= 6 * GiB:
        pytest.skip("needs a machine (or cgroup) with more than 6 GiB")
    out = run_python(code).split(" ", 2)
    assert out[0] == "True"
    assert out[1] == "True"  # cached without the call: the bug the call fixes
    assert out[2].strip() == repr([(5 * GiB, "rlimit", "RLIMIT_DATA")] * 2)


def test_limits_are_not_reread_on_the_hot_path_without_invalidation(tree: KernelTree) -> None:
    sampler = Sampler(tree.roots, limits_max_age_s=3600)
    assert sampler.sample().memory.limit == 2 * GiB
    tree.files["memory.max"].write_text(f"{GiB}\n")
    assert sampler.sample().memory.limit == 2 * GiB
    invalidate_limits()
    assert sampler.sample().memory.limit == GiB


# --- arguments (item 20) -------------------------------------------------------------------


@pytest.mark.parametrize("value", [5, 1.5, True, b"/sys/fs/cgroup", ["/sys"]])
def test_sampler_cgroup_of_the_wrong_type_is_invalid_type(value: object) -> None:
    with pytest.raises(InvalidType, match=re.escape(f"cgroup={value!r}")):
        Sampler(cgroup=value)  # type: ignore[arg-type]


def test_sampler_cgroup_that_does_not_exist_is_invalid_value_naming_it() -> None:
    with pytest.raises(InvalidValue, match="'/nonexistent'") as info:
        Sampler(cgroup="/nonexistent")
    assert not isinstance(info.value, FileNotFoundError)


def test_monitor_cgroup_that_does_not_exist_is_invalid_value() -> None:
    from resguard.monitor import Monitor

    with pytest.raises(InvalidValue, match="'/nonexistent'"):
        Monitor(cgroup="/nonexistent")


def test_sampler_cgroup_accepts_a_path_object(tree: KernelTree) -> None:
    sampler = Sampler(tree.roots, cgroup=tree.root / "cgroup" / "a")
    assert sampler.sample().memory.limit == 2 * GiB


# --- rendering unknowns --------------------------------------------------------------------


def test_unknown_numbers_render_as_unknown_not_zero(tmp_path: Path) -> None:
    import json

    tree = KernelTree(tmp_path, cgroup=False)
    tree.damage("meminfo", "empty")
    tree.damage("stat", "garbage")
    snap = Sampler(tree.roots).sample()
    data = json.loads(json.dumps(snap.to_dict()))
    assert data["memory"]["limit"] is None
    assert data["cpu"]["percent"] is None
    assert data["faults"][0]["source"] == tree.path("meminfo")
    html = snap._repr_html_()
    assert ">Memory<" in html
    assert "unknown (" in html
    assert ">0<" not in html.replace(" ", "")
    assert snap.memory._repr_html_()  # every value type renders None
    assert format_value(None, ".1f") == "unknown"
    assert format_value(12.345, ".1f") == "12.3"


# --- parsers: any text gives a value or None, never an exception --------------------------

TEXT = st.one_of(
    st.text(),
    st.text(alphabet="0123456789 .-\nkBmaxcpufullsome=avg:()/", max_size=300),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(
            [
                KernelTree.MEMINFO,
                "cpu  1 2 3 4 5 6 7 8 9 10\n",
                "0.5 0.4 0.3 1/2 3\n",
                "123.4 567.8\n",
                KernelTree.PSI,
                "max 100000\n",
                "150000 100000\n",
                Path("/proc/self/stat").read_text(),
                "1 2 3 4 5 6 7\n",
                "0::/a\n",
            ]
        ),
        st.text(max_size=40),
    ),
)

PARSERS: list[Callable[[str], object]] = [
    procfs.parse_meminfo,
    procfs.parse_total_cpu_ticks,
    procfs.parse_btime,
    procfs.parse_loadavg,
    procfs.parse_uptime,
    procfs.parse_pid_stat,
    procfs.parse_statm,
    _cgroup.parse_limit,
    _cgroup.parse_count,
    _cgroup.parse_proc_cgroup,
    psi.parse_pressure,
    lambda text: _cgroup.parse_stat_value(text, "total_inactive_file", "inactive_file"),
    _files.damage_of,
]


@settings(max_examples=300)
@given(text=TEXT)
def test_parsers_turn_any_text_into_a_value_or_none(text: str) -> None:
    for parse in PARSERS:
        parse(text)  # raises on a bug
    meminfo = procfs.parse_meminfo(text)
    assert all(isinstance(value, int) and 0 <= value < 2**74 for value in meminfo.values())
    loads = procfs.parse_loadavg(text)
    assert loads is None or all(value >= 0 for value in loads)
    kind, _ = _files.damage_of(text)
    assert kind in FAULT_KINDS


@given(digits=st.integers(min_value=21, max_value=6000))
def test_overlong_numbers_are_damage_not_overflow(digits: int) -> None:
    number = "9" * digits
    assert procfs.parse_meminfo(f"MemTotal: {number} kB\n") == {}
    assert _cgroup.parse_limit(number + "\n") is _cgroup.DAMAGED
    assert _cgroup.parse_count(number + "\n") is None
    assert psi.parse_pressure(f"some avg10=1.00 avg60=1.00 avg300=1.00 total={number}\n") is None


FILES = [name for name in SOURCES if name != "self/cgroup"] + ["self/statm"]


@settings(max_examples=60)
@given(name=st.sampled_from(FILES), text=TEXT)
def test_the_sampler_survives_any_text_in_any_file(
    tmp_path_factory: pytest.TempPathFactory, name: str, text: str
) -> None:
    tree = KernelTree(tmp_path_factory.mktemp("tree"))
    tree.files[name].write_text(text, errors="replace")
    snap = Sampler(tree.roots).sample()
    memory = snap.memory
    if memory.percent is not None:
        assert memory.percent >= 0
    for value in (memory.total, memory.limit, memory.used, memory.available):
        assert value is None or value >= 0
    assert snap.cpu.percent is None or 0 <= snap.cpu.percent <= 100


def test_permission_denied_is_unreadable() -> None:
    """A real EACCES: as root the check is made by a child that gives up root after
    importing resguard (root reads any file)."""
    import json
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="resguard-eacces-"))
    try:
        root.chmod(0o755)
        tree = KernelTree(root, cgroup=False)
        for directory in (root / "proc", root / "proc" / "self"):
            directory.chmod(0o755)
        tree.files["meminfo"].chmod(0o000)
        code = f"""
import json, os
from resguard.snapshot import Sampler
from resguard.testing import Roots
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
snap = Sampler(Roots(proc={str(root / "proc")!r})).sample(children=False)
fault = snap.fault_for("memory.limit")
print(json.dumps([snap.memory.source, snap.memory.limit, fault.kind, fault.detail]))
"""
        source, limit, kind, detail = json.loads(run_python(code))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert (source, limit, kind) == ("unknown", None, "unreadable")
    assert "Permission denied" in detail


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("1s", InvalidType),
        (None, InvalidType),
        (True, InvalidType),
        (-1, InvalidValue),
        (float("nan"), InvalidValue),
        (float("inf"), InvalidValue),
    ],
)
def test_sampler_max_ages_are_checked_when_it_is_made(
    value: object, error: type[Exception]
) -> None:
    # before: accepted, then a TypeError out of the first sample()
    with pytest.raises(error, match="limits_max_age_s="):
        Sampler(limits_max_age_s=value)  # type: ignore[arg-type]
    with pytest.raises(error, match="slow_files_max_age_s="):
        Sampler(slow_files_max_age_s=value)  # type: ignore[arg-type]


def test_damaged_statm_under_a_binding_rlimit_data_leaves_used_unknown(tree: KernelTree) -> None:
    import json

    tree.damage("self/statm", "truncated")
    code = f"""
import json, resource
from resguard.snapshot import Sampler
from resguard.testing import Roots
soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
resource.setrlimit(resource.RLIMIT_DATA, (2**30, hard))
snap = Sampler(Roots(proc={tree.roots.proc!r}, cgroup={tree.roots.cgroup!r})).sample()
memory, fault = snap.memory, snap.fault_for("memory.used")
print(json.dumps([memory.source, memory.limit, memory.used, memory.percent,
                  fault.source, fault.kind]))
"""
    assert json.loads(run_python(code)) == [
        "rlimit",
        2**30,
        None,
        None,
        tree.path("self/statm"),
        "truncated",
    ]


def test_an_explicit_cgroup_removed_while_watched_is_unknown(tree: KernelTree) -> None:
    import shutil

    directory = tree.root / "cgroup" / "a"
    sampler = Sampler(tree.roots, cgroup=str(directory), limits_max_age_s=0)
    assert sampler.sample().memory.limit == 2 * GiB
    shutil.rmtree(directory)
    snap = sampler.sample()
    memory = snap.memory
    assert (memory.limit, memory.used, memory.percent, memory.source) == (
        None,
        None,
        None,
        "unknown",
    )  # not the host's numbers: another question
    fault = snap.fault_for("memory.limit")
    assert fault is not None
    assert (fault.source, fault.kind) == (str(directory), "vanished")


@pytest.mark.cgroup
def test_a_real_cgroup_removed_while_watched_is_unknown(memory_cgroup: Any) -> None:
    memory_cgroup.set_limit(64 * 2**20)
    sampler = Sampler(cgroup=str(memory_cgroup.path), limits_max_age_s=0)
    assert sampler.sample(children=False).memory.limit == 64 * 2**20
    memory_cgroup.cleanup()  # rmdir: the kept descriptors now answer ENODEV
    snap = sampler.sample(children=False)
    assert snap.memory.limit is None
    assert snap.memory.source == "unknown"
    assert any(fault.kind == "vanished" for fault in snap.faults)


def test_a_flapping_file_is_logged_once_not_twice_per_flap(
    tree: KernelTree, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    sampler = make_sampler(tree)
    path = tree.path("meminfo")
    for _ in range(50):  # a file that is damaged on every other read
        tree.damage("meminfo", "empty")
        assert sampler.sample().memory.total is None
        tree.restore("meminfo")
        assert sampler.sample().memory.total is not None
    assert len(warnings_about(caplog, path, "is failing")) == 1, caplog.text
    assert len(warnings_about(caplog, path, "works again")) == 1, caplog.text
    tree.damage("meminfo", "garbage")  # a new kind of damage is news, flapping or not
    sampler.sample()
    assert len(warnings_about(caplog, path, "is failing: garbage")) == 1, caplog.text


def test_a_flapping_file_is_logged_again_a_minute_on_by_the_samplers_clock(
    tree: KernelTree, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    clock = ManualClock()
    sampler = Sampler(tree.roots, limits_max_age_s=0, slow_files_max_age_s=0, clock=clock)
    path = tree.path("meminfo")

    def flap() -> None:
        tree.damage("meminfo", "empty")
        sampler.sample()
        tree.restore("meminfo")
        sampler.sample()

    flap()
    clock.advance(RELOG_AFTER_S - 1)
    flap()  # within the minute: neither the failure nor the recovery is news
    assert len(warnings_about(caplog, path, "is failing")) == 1, caplog.text
    assert len(warnings_about(caplog, path, "works again")) == 1, caplog.text
    clock.advance(1)
    flap()  # a minute after the warning: logged again, and its recovery
    assert len(warnings_about(caplog, path, "is failing")) == 2, caplog.text
    assert len(warnings_about(caplog, path, "works again")) == 2, caplog.text


def test_a_damaged_process_row_that_comes_and_goes_is_logged_once(
    proc_with_children: tuple[Path, list[subprocess.Popen[bytes]]], caplog: pytest.LogCaptureFixture
) -> None:
    proc, _ = proc_with_children
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    table = ProcessTable(Roots(proc=str(proc)))
    broken = proc / "999993"
    for _ in range(30):  # a short-lived process whose stat reads as garbage, again and again
        broken.mkdir()
        (broken / "stat").write_text("garbage\n")
        table.sample()
        (broken / "stat").unlink()
        broken.rmdir()
        table.sample()
    source = str(proc / "<pid>" / "stat")
    assert len(warnings_about(caplog, source, "is failing")) == 1, caplog.text
    assert len(warnings_about(caplog, source, "works again")) == 1, caplog.text


def test_a_fault_log_held_by_another_thread_at_a_fork_does_not_hang_the_child() -> None:
    import logging

    from forking import held_by_another_thread, in_child
    from resguard._modules.faults import FaultLog

    log = FaultLog(logging.getLogger("resguard.test"))
    with held_by_another_thread(log._lock):
        assert in_child(lambda: log.failed("source", "damaged"), timeout_s=10) == 0
