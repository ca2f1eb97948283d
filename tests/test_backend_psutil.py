"""The psutil sensing backend on this machine: how a Sampler picks it, the numbers it
reads (against psutil's own), and psutil calls that fail or answer nonsense."""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resguard._probes.backend
from resguard import InvalidType, InvalidValue
from resguard._modules.render import flatten
from resguard.snapshot import Roots, Sampler, Snapshot
from resguard.snapshot._portable import PsutilSampler
from resguard.testing import KernelTree, ManualClock

from support import fresh_fault_log, sample_beside_a_stalled_walk, wait_until, warnings_about

MiB = 2**20


@pytest.fixture(autouse=True)
def _fresh_fault_log() -> Iterator[None]:
    with fresh_fault_log():
        yield


# ------------------------------------------------------------- choosing it ---


def test_backend_none_takes_the_default_and_says_which(monkeypatch: pytest.MonkeyPatch) -> None:
    for chosen in ("linux", "psutil"):
        monkeypatch.setattr(resguard._probes.backend, "_chosen", chosen)
        assert Sampler().backend == chosen
    assert Sampler(backend="psutil").backend == "psutil"
    assert Sampler(backend="linux").backend == "linux"


def test_roots_or_a_cgroup_mean_the_kernel_readers_even_when_psutil_is_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(resguard._probes.backend, "_chosen", "psutil")
    tree = KernelTree(tmp_path)
    sampler = Sampler(tree.roots)
    assert sampler.backend == "linux"
    assert sampler.sample().memory.source_detail.startswith(str(tmp_path))


def test_psutil_with_roots_or_a_cgroup_is_refused_quoting_them(tmp_path: Any) -> None:
    roots = Roots(proc=str(tmp_path))
    with pytest.raises(InvalidValue, match=r"roots=.*backend='linux'"):
        Sampler(roots, backend="psutil")
    with pytest.raises(InvalidValue, match=r"cgroup='/sys/fs/cgroup/x'.*backend='linux'"):
        Sampler(backend="psutil", cgroup="/sys/fs/cgroup/x")


@pytest.mark.parametrize(
    ("backend", "error"), [("macos", InvalidValue), ("PSUTIL", InvalidValue), (3, InvalidType)]
)
def test_a_bad_backend_is_refused_quoting_it(backend: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"backend=.*expected 'linux' or 'psutil'"):
        Sampler(backend=backend)


def test_the_psutil_backend_has_no_cgroup_location() -> None:
    assert Sampler(backend="psutil").location is None


# ---------------------------------------------------------- the real numbers ---


def _children_rss() -> int:
    """psutil's own sum of this process's descendants' RSS (those that exit meanwhile
    count 0)."""
    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


def test_psutil_numbers_are_psutil_s_own() -> None:
    from resguard.snapshot._limits import rlimits

    if rlimits():
        pytest.skip(f"a soft rlimit binds here ({rlimits()}), not the host's total")
    sampler = Sampler(backend="psutil")
    snap = sampler.sample(uss=True)
    vm = psutil.virtual_memory()
    children_rss = _children_rss()
    assert snap.faults == ()
    memory = snap.memory
    assert memory.total == psutil.virtual_memory().total
    assert (memory.source, memory.source_detail, memory.cgroup) == (
        "host",
        "psutil.virtual_memory()",
        None,
    )
    assert memory.used is not None
    assert memory.available is not None
    assert memory.limit == memory.total
    # psutil's available, and used as the linux host path counts it (not psutil's "used")
    assert memory.available == pytest.approx(vm.available, abs=64 * MiB)
    assert memory.used == pytest.approx(vm.total - vm.available, abs=64 * MiB)
    assert memory.percent == pytest.approx(100 * memory.used / memory.total)
    assert snap.swap.total == psutil.swap_memory().total
    assert snap.cpu.count == psutil.cpu_count()
    assert snap.cpu.effective == len(psutil.Process().cpu_affinity())
    assert snap.cpu.percent is None  # the first sample: unknown, and not a fault
    assert snap.cpu.load_1m == pytest.approx(os.getloadavg()[0], abs=0.5)
    process = snap.process
    assert process.cpu_percent is None
    assert process.pid == os.getpid()
    assert process.rss == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)
    assert process.uss is not None
    assert 0 < process.uss <= (process.rss or 0)
    assert process.num_threads == psutil.Process().num_threads()
    assert process.children_rss == pytest.approx(children_rss, abs=16 * MiB)
    pressure = snap.pressure
    assert (pressure.memory, pressure.cpu, pressure.io, pressure.source) == (None,) * 4
    assert pressure.memory_level is None  # macOS only


def test_cpu_percent_since_the_previous_sample_follows_real_work() -> None:
    clock = ManualClock(1000.0)
    sampler = Sampler(backend="psutil", clock=clock)
    sampler.sample()
    start = psutil.Process().cpu_times()
    deadline = start.user + start.system + 0.2
    while sum(psutil.Process().cpu_times()[:2]) < deadline:
        pass  # burn 0.2 s of this process's CPU
    clock.advance(0.4)
    percent = sampler.sample().process.cpu_percent
    assert percent is not None
    assert 40 <= percent <= 100


def test_the_first_sample_knows_no_cpu_percent_and_the_next_one_measures_since_it() -> None:
    """The first sample once reported the host's average since boot and this process's
    average since it started (42.6 % while htop said 100 %): now it says unknown."""
    clock = ManualClock(1000.0)
    sampler = Sampler(backend="psutil", clock=clock)
    first = sampler.sample(children=False)
    assert (first.cpu.percent, first.process.cpu_percent) == (None, None)
    assert first.faults == ()  # unknown because nothing was measured yet: no damage
    cpus = psutil.cpu_count() or 1
    total_s = sum(psutil.cpu_times())  # the host's window is counted in its CPU seconds
    wait_until(lambda: sum(psutil.cpu_times()) - total_s >= 0.3 * cpus, what="0.3 s to pass")
    clock.advance(1.0)
    second = sampler.sample(children=False)
    assert second.cpu.percent is not None
    assert second.process.cpu_percent is not None


def test_children_rss_counts_a_real_child() -> None:
    grow = "b = bytearray(64 * 2**20); print('ready', flush=True); import sys; sys.stdin.read()"
    child = subprocess.Popen(
        [sys.executable, "-c", grow], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        rss = Sampler(backend="psutil").sample().process.children_rss
        assert rss == pytest.approx(psutil.Process(child.pid).memory_info().rss, rel=0.05)
        assert rss is not None
        assert rss >= 64 * MiB
    finally:
        child.kill()
        child.wait()


def test_a_sampler_subclass_calls_through_to_the_psutil_backend() -> None:
    class Counting(Sampler):
        taken = 0

        def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot:
            self.taken += 1
            return super().sample(uss=uss, children=children)

    sampler = Counting(backend="psutil")
    assert sampler.sample().memory.total == psutil.virtual_memory().total
    assert sampler.limit_without_rlimit("RLIMIT_AS") == psutil.virtual_memory().total
    assert sampler.taken == 2


RLIMITED = """
import json, resource, psutil
from resguard.snapshot import Sampler
resource.setrlimit(resource.RLIMIT_{name}, ({limit}, resource.RLIM_INFINITY))
sampler = Sampler(backend="psutil")
snap = sampler.sample()
print(json.dumps({{
    "memory": snap.memory.to_dict(), "faults": [str(f) for f in snap.faults],
    "vms": psutil.Process().memory_info().vms, "data": psutil.Process().memory_info().data,
    "without": sampler.limit_without_rlimit("RLIMIT_{name}"),
    "total": psutil.virtual_memory().total,
}}))
"""


@pytest.mark.parametrize("name", ["AS", "DATA"])
def test_a_soft_rlimit_binds_the_psutil_backend_and_says_so(name: str) -> None:
    limit = 2 * 2**30
    out = subprocess.run(
        [sys.executable, "-c", RLIMITED.format(name=name, limit=limit)],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(out.stdout)
    memory = found["memory"]
    assert (memory["source"], memory["source_detail"], memory["limit"]) == (
        "rlimit",
        f"RLIMIT_{name}",
        limit,
    )
    expected = found["vms"] if name == "AS" else found["data"]
    assert memory["used"] == pytest.approx(expected, rel=0.1)
    assert memory["percent"] == pytest.approx(100 * memory["used"] / limit)
    assert found["without"] == found["total"]
    assert found["faults"] == []


def test_a_forked_child_reads_its_own_process() -> None:
    sampler = Sampler(backend="psutil")
    assert sampler.sample().process.pid == os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        try:
            snap = sampler.sample()
            ok = snap.process.pid == os.getpid() and snap.process.rss is not None
            os._exit(0 if ok and not snap.faults else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# ------------------------------------------------------------ hostile psutil ---


def _raise(error: BaseException) -> Any:
    def call(*args: object, **kwargs: object) -> Any:
        raise error

    return call


@pytest.mark.parametrize(
    "error",
    [psutil.AccessDenied(), OSError(5, "Input/output error"), RuntimeError("odd"), ValueError()],
    ids=["AccessDenied", "OSError", "RuntimeError", "ValueError"],
)
def test_virtual_memory_that_raises_leaves_memory_unknown_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: BaseException
) -> None:
    sampler = Sampler(backend="psutil")
    monkeypatch.setattr(psutil, "virtual_memory", _raise(error))
    with caplog.at_level(logging.WARNING, "resguard.snapshot"):
        first, second = sampler.sample(), sampler.sample()
    for snap in (first, second):
        memory = snap.memory
        assert (memory.total, memory.limit, memory.used, memory.available, memory.percent) == (
            (None,) * 5
        )
        assert memory.source == "unknown"
        fault = snap.fault_for("memory.percent")
        assert fault is not None
        assert fault.source == "psutil.virtual_memory()"
        assert fault.kind == "unreadable"
        assert type(error).__name__ in fault.detail
        assert snap.swap.total is not None  # the other calls still answer
    assert len(warnings_about(caplog, "psutil.virtual_memory()")) == 1
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, "resguard.snapshot"):
        assert sampler.sample().memory.total == psutil.virtual_memory().total
    assert any("psutil.virtual_memory() works again" in r.getMessage() for r in caplog.records)


Vm = collections.namedtuple("Vm", "total available percent used free")


@pytest.mark.parametrize(
    ("vm", "unknown"),
    [
        (Vm(0, 0, 0.0, 0, 0), "memory"),
        (Vm(-5, 1, 0.0, 0, 0), "memory"),
        (Vm("8GiB", 1, 0.0, 0, 0), "memory"),
        (Vm(8 * 2**30, 9 * 2**30, 0.0, 0, 0), "memory.used"),
        (Vm(8 * 2**30, None, 0.0, 0, 0), "memory.used"),
        ((1, 2), "memory"),
    ],
)
def test_virtual_memory_nonsense_is_garbage_never_zero(
    monkeypatch: pytest.MonkeyPatch, vm: Any, unknown: str
) -> None:
    monkeypatch.setattr(psutil, "virtual_memory", lambda: vm)
    snap = Sampler(backend="psutil").sample()
    assert snap.memory.used is None
    assert snap.memory.percent is None
    assert snap.memory.available is None
    fault = snap.fault_for(unknown)
    assert fault is not None
    assert (fault.source, fault.kind) == (
        "psutil.virtual_memory()",
        "garbage",
    )
    monkeypatch.undo()
    Sampler(backend="psutil").sample()  # recovered: the next test's warnings are its own


@pytest.mark.parametrize(
    ("name", "field", "source"),
    [
        ("swap_memory", "swap.total", "psutil.swap_memory()"),
        ("cpu_times", "cpu.percent", "psutil.cpu_times()"),
        ("getloadavg", "cpu.load_1m", "psutil.getloadavg()"),
    ],
)
def test_each_failing_host_call_leaves_only_its_fields_unknown(
    monkeypatch: pytest.MonkeyPatch, name: str, field: str, source: str
) -> None:
    monkeypatch.setattr(psutil, name, _raise(psutil.AccessDenied()))
    snap = Sampler(backend="psutil").sample()
    part, leaf = field.split(".")
    assert getattr(getattr(snap, part), leaf) is None
    fault = snap.fault_for(field)
    assert fault is not None
    assert fault.source == source
    assert snap.memory.total == psutil.virtual_memory().total
    monkeypatch.undo()
    Sampler(backend="psutil").sample()


def test_nonsense_swap_and_load_are_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    Swap = collections.namedtuple("Swap", "total used free percent sin sout")
    monkeypatch.setattr(psutil, "swap_memory", lambda: Swap(10, 20, 0, 200.0, 0, 0))
    monkeypatch.setattr(psutil, "getloadavg", lambda: (1.0, float("nan"), 2.0))
    snap = Sampler(backend="psutil").sample()
    assert (snap.swap.total, snap.swap.used, snap.swap.percent) == (None, None, None)
    assert snap.cpu.load_1m is None
    assert snap.cpu.load_15m is None
    assert {f.source for f in snap.faults} == {"psutil.swap_memory()", "psutil.getloadavg()"}
    monkeypatch.undo()
    Sampler(backend="psutil").sample()


def test_this_process_s_calls_failing_leave_its_fields_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sampler = Sampler(backend="psutil")
    sampler.sample()
    platform_process = type(psutil.Process()._proc)  # type: ignore[attr-defined]  # psutil's own
    for method in ("memory_info", "cpu_times", "num_threads", "memory_full_info"):
        monkeypatch.setattr(platform_process, method, _raise(psutil.AccessDenied(os.getpid())))
    monkeypatch.setattr(psutil.Process, "children", _raise(psutil.NoSuchProcess(os.getpid())))
    snap = sampler.sample(uss=True)
    process = snap.process
    assert process.pid == os.getpid()
    assert (process.rss, process.vms, process.uss, process.cpu_percent) == (None,) * 4
    assert (process.num_threads, process.children_rss) == (None, None)
    assert snap.fault_for("process.rss") is not None
    assert snap.fault_for("process.children_rss") is not None
    assert snap.memory.total is not None  # the host's numbers do not need this process
    monkeypatch.undo()
    assert sampler.sample().process.rss is not None


def test_a_process_handle_that_cannot_be_made_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    real = psutil.Process
    monkeypatch.setattr(psutil, "Process", _raise(psutil.AccessDenied()))
    sampler = Sampler(backend="psutil")
    snap = sampler.sample()
    assert snap.process.rss is None
    assert snap.process.pid == os.getpid()
    assert snap.fault_for("process.rss") is not None
    monkeypatch.setattr(psutil, "Process", real)
    assert sampler.sample().process.rss is not None


def test_swap_is_read_at_most_every_slow_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """swap_memory() is the costliest psutil call of a sample (two files on Linux) and
    nothing admits on swap: it is read like the load averages, at most every 0.5 s."""
    clock = ManualClock(50.0)
    sampler = Sampler(backend="psutil", clock=clock)
    first = sampler.sample().swap
    Swap = collections.namedtuple("Swap", "total used free percent sin sout")
    calls: list[int] = []

    def swap_memory() -> Swap:
        calls.append(1)
        return Swap(4 * 2**30, 2**30, 3 * 2**30, 25.0, 0, 0)

    monkeypatch.setattr(psutil, "swap_memory", swap_memory)
    assert sampler.sample().swap == first
    clock.advance(0.6)
    swap = sampler.sample().swap
    assert (swap.total, swap.used, swap.free, swap.percent) == (4 * 2**30, 2**30, 3 * 2**30, 25.0)
    assert sampler.sample().swap == swap
    assert calls == [1]


class _Raise:
    """An answer that is an exception, raised by the faked call."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"raises {self.error!r}"


_RAISES = st.sampled_from(
    [
        _Raise(psutil.AccessDenied()),
        _Raise(psutil.NoSuchProcess(1)),
        _Raise(OSError(13, "Permission denied")),
        _Raise(RuntimeError("odd")),
        _Raise(ZeroDivisionError()),
    ]
)
_ODD = st.one_of(st.none(), st.text(max_size=2), st.lists(st.integers(-3, 3), max_size=2))
# mostly plausible numbers, with the edges a broken platform layer could give (integers
# too large for a float among them: 10**400 raised OverflowError out of sample())
_HUGE = [2**63, 2**64, 10**400]
_BYTES = st.one_of(
    st.integers(0, 2**36), st.sampled_from([0, 1, -1, *_HUGE]), st.floats(), st.none()
)
_SECONDS = st.one_of(
    st.floats(0, 1e7), st.sampled_from([-1.0, math.inf, math.nan, 1e308, *_HUGE]), st.none()
)


def _shaped(name: str, fields: str, value: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Answers shaped like psutil's named tuple *name*, any field odd; or anything odd."""
    shape = collections.namedtuple(name, fields)  # type: ignore[misc]
    return st.one_of(st.builds(shape, *[value] * len(shape._fields)), _ODD, _RAISES)


_ANSWERS = {
    "virtual_memory": _shaped("svmem", "total available percent used free active wired", _BYTES),
    "swap_memory": _shaped("sswap", "total used free percent sin sout", _BYTES),
    "cpu_times": _shaped("scputimes", "user nice system idle iowait guest", _SECONDS),
    "getloadavg": st.one_of(st.tuples(_SECONDS, _SECONDS, _SECONDS), _ODD, _RAISES),
    "cpu_count": st.one_of(st.integers(-1, 64), st.sampled_from(_HUGE), _ODD, _RAISES),
    "own.memory_info": _shaped("pmem", "rss vms data", _BYTES),
    "own.cpu_times": _shaped("pcputimes", "user system", _SECONDS),
    "own.num_threads": st.one_of(st.integers(-1, 64), _ODD, _RAISES),
    "own.memory_full_info": _shaped("pfullmem", "rss vms uss", _BYTES),
    "own.cpu_affinity_get": st.one_of(st.lists(st.integers(-1, 8), max_size=4), _ODD, _RAISES),
    "own.children": st.one_of(st.just([]), _ODD, _RAISES),
    "sysctl": st.one_of(st.binary(max_size=9), _RAISES),
}


def _answering(answer: object) -> Any:
    def call(*args: object, **kwargs: object) -> object:
        if isinstance(answer, _Raise):
            raise answer.error
        return answer

    return call


def _sane(snap: Snapshot) -> None:
    """No nonsense in a snapshot: numbers finite and not negative, a total above zero,
    CPU at most 100 %, and a field that is unknown while the total is known explained."""
    for path, value in flatten(snap):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value), path
            assert value >= 0, path
    memory = snap.memory
    assert memory.total is None or memory.total > 0
    assert memory.used is None or memory.limit is not None
    assert snap.cpu.percent is None or snap.cpu.percent <= 100
    assert snap.cpu.count >= 1
    assert snap.pressure.memory_level in (None, 1, 2, 4)
    assert snap.process.pid == os.getpid()
    for field in ("used", "available", "percent"):
        if getattr(memory, field) is None and memory.limit is not None:
            assert snap.fault_for(f"memory.{field}") is not None, field


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers=st.fixed_dictionaries(_ANSWERS), uss=st.booleans(), darwin=st.booleans())
def test_whatever_psutil_answers_a_sample_never_raises_and_holds_no_nonsense(
    answers: dict[str, object], uss: bool, darwin: bool
) -> None:
    platform_process = type(psutil.Process()._proc)  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        for name, answer in answers.items():
            if name == "own.children":
                patch.setattr(psutil.Process, "children", _answering(answer))
            elif name.startswith("own."):
                patch.setattr(platform_process, name[4:], _answering(answer))
            elif name != "sysctl":
                patch.setattr(psutil, name, _answering(answer))
        sampler = PsutilSampler(
            limits_max_age_s=1.0,
            slow_files_max_age_s=0.5,
            clock=ManualClock(10.0),
            wall_clock=time.time,
            platform="darwin" if darwin else "linux",
            sysctl=_answering(answers["sysctl"]),
        )
        snaps = [sampler.sample(uss=uss), sampler.sample(uss=uss)]
    for snap in snaps:
        _sane(snap)


NO_RESOURCE = """
import json, resource, sys
import psutil  # psutil's Linux layer needs resource; Windows' does not
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, resource.RLIM_INFINITY))
sys.modules["resource"] = None  # as on Windows: the module cannot be imported
from resguard.snapshot import Sampler
print(json.dumps([Sampler(backend=name).sample().memory.source for name in ("linux", "psutil")]))
"""


def test_without_the_resource_module_no_rlimit_binds_and_nothing_fails() -> None:
    """Windows has no resource module: the limit is the host's (or the cgroup's), the
    import and the sample work."""
    out = subprocess.run(
        [sys.executable, "-c", NO_RESOURCE], capture_output=True, text=True, check=True
    )
    linux, portable = json.loads(out.stdout)
    assert linux in ("host", "cgroup")
    assert portable == "host"


RLIMIT_WITHOUT_HOST = """
import json, resource, psutil
from resguard.snapshot import Sampler
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, resource.RLIM_INFINITY))
def broken():
    raise psutil.AccessDenied()
psutil.virtual_memory = broken
snap = Sampler(backend="psutil").sample()
print(json.dumps({
    "memory": snap.memory.to_dict(),
    "unknown": {p: str(snap.fault_for(p)) for p in ("memory.total", "memory.percent")},
}))
"""


def test_an_rlimit_still_judges_memory_when_the_host_reading_fails() -> None:
    """virtual_memory() failing leaves the host's total unknown, not the rlimit's
    reading: the percent of the rlimit is known and no fault says otherwise."""
    out = subprocess.run(
        [sys.executable, "-c", RLIMIT_WITHOUT_HOST], capture_output=True, text=True, check=True
    )
    found = json.loads(out.stdout)
    memory = found["memory"]
    assert (memory["source"], memory["limit"], memory["total"]) == ("rlimit", 2 * 2**30, None)
    assert memory["percent"] is not None
    assert found["unknown"]["memory.percent"] == "None"
    assert "psutil.virtual_memory() unreadable" in found["unknown"]["memory.total"]


# ----------------------------------------------- faults that must not flap or leak ---


def test_an_unreadable_affinity_stays_a_fault_until_the_limits_are_read_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The affinity is read with the limits, once a second; its fault is on every sample
    in between (it was only on the re-reading ones, and each other sample logged a
    false "works again"), and says the host's count stands in."""
    platform_process = type(psutil.Process()._proc)  # type: ignore[attr-defined]
    monkeypatch.setattr(platform_process, "cpu_affinity_get", _raise(psutil.AccessDenied()))
    clock = ManualClock(100.0)
    sampler = Sampler(backend="psutil", clock=clock)
    with caplog.at_level(logging.WARNING, "resguard.snapshot"):
        snaps = [sampler.sample()]
        for _ in range(3):
            clock.advance(0.3)  # within limits_max_age_s: the limits are not read again
            snaps.append(sampler.sample())
    for snap in snaps:
        assert [(f.field, f.source, f.fallback) for f in snap.faults] == [
            ("cpu.effective", "psutil.Process().cpu_affinity()", "the host's CPU count")
        ]
        assert snap.fault_for("cpu.effective") is None  # filled in: not unknown
        assert snap.cpu.effective == psutil.cpu_count()
        assert snap.cpu.effective_source == "host"
    messages = [r.getMessage() for r in caplog.records if "cpu_affinity" in r.getMessage()]
    assert len(messages) == 1
    assert "cpu.effective from the host's CPU count" in messages[0]
    assert "unknown" not in messages[0]


Pmem = collections.namedtuple("Pmem", "rss vms shared text lib data dirty")


def test_a_looser_rlimit_s_unreadable_use_leaves_no_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under RLIMIT_AS and a tighter RLIMIT_DATA only the data segment counts: the
    address space that could not be read is no damage to the snapshot, and the data
    segment comes from the sample's one memory_info() (inside oneshot())."""
    from resguard.snapshot import _portable as portable

    total = psutil.virtual_memory().total
    found = (("RLIMIT_AS", total // 2), ("RLIMIT_DATA", total // 4))
    monkeypatch.setattr(portable, "rlimits", lambda: found)
    platform_process = type(psutil.Process()._proc)  # type: ignore[attr-defined]
    calls: list[int] = []

    def memory_info(self: object) -> Pmem:
        calls.append(1)
        return Pmem(50 * MiB, "no vms here", 0, 0, 0, 70 * MiB, 0)  # vms unreadable

    monkeypatch.setattr(platform_process, "memory_info", memory_info)
    snap = Sampler(backend="psutil").sample(children=False)
    memory = snap.memory
    assert (memory.limit, memory.source, memory.source_detail) == (
        total // 4,
        "rlimit",
        "RLIMIT_DATA",
    )
    assert memory.used == 70 * MiB
    assert memory.percent == pytest.approx(100 * 70 * MiB / (total // 4))
    assert [f for f in snap.faults if f.field.startswith("memory")] == []
    assert snap.fault_for("process.vms") is not None  # the process's own field, honestly
    assert calls == [1]


def test_a_winning_rlimit_hides_the_host_s_used_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    """On macOS "used" needs wired and active; when an rlimit binds, the host's used is
    not what the snapshot reports, so its missing parts are no fault either."""
    from resguard.snapshot import _portable as portable

    MacVm = collections.namedtuple("MacVm", "total available percent used free")  # no wired
    monkeypatch.setattr(psutil, "virtual_memory", lambda: MacVm(16 << 30, 6 << 30, 0.0, 0, 0))
    monkeypatch.setattr(portable, "rlimits", lambda: (("RLIMIT_AS", 8 << 30),))
    sampler = PsutilSampler(
        limits_max_age_s=1.0,
        slow_files_max_age_s=0.5,
        clock=ManualClock(10.0),
        wall_clock=time.time,
        platform="darwin",
        sysctl=_raise(OSError(2, "No such file")),
    )
    snap = sampler.sample(children=False)
    assert snap.memory.source_detail == "RLIMIT_AS"
    assert snap.memory.used is not None
    assert [f for f in snap.faults if f.field.startswith("memory")] == []


def test_a_slow_children_walk_does_not_block_another_thread_s_sample() -> None:
    """psutil walks every process to find descendants (milliseconds with many): another
    thread sharing the sampler takes its sample meanwhile instead of waiting on the lock."""
    sampler = Sampler(backend="psutil")
    sampler.sample()
    walking, release = threading.Event(), threading.Event()
    own: Any = getattr(sampler._impl, "_process")  # noqa: B009  # the backend's psutil handle
    real_children = own.children

    def slow_children(recursive: bool = False) -> list[psutil.Process]:
        walking.set()
        release.wait(10)
        return list(real_children(recursive=recursive))

    own.children = slow_children
    try:
        other = sample_beside_a_stalled_walk(sampler, sampler.sample, walking, release)
    finally:
        del own.children
    assert other is not None, "a sample without children waited for another thread's walk"
    assert other.memory.total == psutil.virtual_memory().total


def test_under_a_binding_rlimit_a_host_without_available_only_loses_the_host_s_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host's available only caps the headroom of a tighter limit: used and percent
    are the rlimit's own and stay known without a fault; available is the rlimit's
    headroom, with a fault saying where it came from."""
    from resguard.snapshot import _portable as portable

    Vm = collections.namedtuple("Vm", "total available percent used free")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Vm(64 << 30, None, 0.0, 0, 0))
    monkeypatch.setattr(portable, "rlimits", lambda: (("RLIMIT_AS", 32 << 30),))
    snap = Sampler(backend="psutil").sample(children=False)
    memory = snap.memory
    assert (memory.total, memory.limit, memory.source_detail) == (64 << 30, 32 << 30, "RLIMIT_AS")
    assert memory.used == snap.process.vms
    assert memory.available == max((32 << 30) - (memory.used or 0), 0)
    assert [(f.field, f.source, f.fallback) for f in snap.faults] == [
        ("memory.available", "psutil.virtual_memory()", "RLIMIT_AS")
    ]
