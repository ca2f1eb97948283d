"""The process table on the psutil backend: the same rows as the linux readers, real
processes, and what a hostile psutil does to it (processes vanishing between the listing
and the read, access denied, ``None`` where a value was promised, a failing
``process_iter``, a PID that changed hands between two samples)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resguard._probes.backend
from resguard._errors import InvalidType, InvalidValue
from resguard.processes import ProcessTable, describe, top_processes
from resguard.snapshot import Backend, ProcessInfo, Roots
from resguard.testing import ManualClock

from support import wait_until, warnings_about

BUSY = "import time\nwhile True: pass"


def _mine(rows: list[ProcessInfo], pid: int) -> ProcessInfo:
    return next(row for row in rows if row.pid == pid)


# --- choosing the backend -------------------------------------------------------------------


def test_the_backend_is_chosen_by_argument_roots_and_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ProcessTable(backend="psutil").backend == "psutil"
    assert ProcessTable(backend="linux").backend == "linux"
    assert ProcessTable(Roots(proc="/nowhere")).backend == "linux"  # re-rooted: kernel readers
    monkeypatch.setattr(resguard._probes.backend, "_chosen", "psutil")
    assert ProcessTable().backend == "psutil"
    assert ProcessTable(Roots(proc="/nowhere")).backend == "linux"
    monkeypatch.setattr(resguard._probes.backend, "_chosen", "linux")
    assert ProcessTable().backend == "linux"


def test_psutil_with_re_rooted_proc_is_refused_quoting_both() -> None:
    with pytest.raises(
        InvalidValue, match=r"backend='psutil' cannot take roots=Roots\(proc='/x'"
    ) as caught:
        ProcessTable(Roots(proc="/x"), backend="psutil")
    assert "backend='linux'" in str(caught.value)
    with pytest.raises(InvalidValue, match=r"proc='/x'.*backend='linux'"):
        describe(_fake_row(os.getpid()), "/x", backend="psutil")


@pytest.mark.parametrize(
    ("backend", "error"), [("bsd", InvalidValue), (3, InvalidType), ("", InvalidValue)]
)
def test_a_bad_backend_is_named(backend: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=re.escape(repr(backend))):
        ProcessTable(backend=backend)  # type: ignore[arg-type]
    with pytest.raises(error, match=re.escape(repr(backend))):
        describe(_fake_row(os.getpid()), backend=backend)  # type: ignore[arg-type]


# --- real processes -------------------------------------------------------------------------


def test_the_psutil_rows_agree_with_the_linux_rows_for_this_process() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the linux readers need Linux")
    ours = _mine(ProcessTable(backend="psutil").sample(), os.getpid())
    theirs = _mine(ProcessTable(backend="linux").sample(), os.getpid())
    assert (ours.name, ours.ppid, ours.uid) == (theirs.name, theirs.ppid, theirs.uid)
    assert ours.create_time == pytest.approx(theirs.create_time, abs=0.02)
    assert ours.num_threads == theirs.num_threads
    assert abs(ours.rss - theirs.rss) < 16 * 2**20
    assert (ours.cmdline, ours.username, ours.uss) == ((), None, None)  # filled only by top()


def test_a_busy_child_leads_by_cpu_on_psutil_after_one_interval() -> None:
    child = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        clock = ManualClock()
        table = ProcessTable(clock=clock, backend="psutil")
        table.sample()
        process = psutil.Process(child.pid)
        before_s = sum(process.cpu_times()[:2])
        wait_until(
            lambda: sum(process.cpu_times()[:2]) >= before_s + 0.5,
            timeout_s=60,
            what="the busy child to burn half a second of CPU",
        )
        clock.advance(1.0)
        top = table.top(10, by="cpu")
        assert top == sorted(top, key=lambda row: row.cpu_percent, reverse=True)
        row = _mine(top, child.pid)
        assert row.cpu_percent > 30
        assert row.cmdline[-1] == BUSY
        assert row.username is not None
    finally:
        child.kill()
        child.wait()


GROWER = """
import sys
block = b"x" * int(sys.argv[1])   # written, so every page is resident
print("ready", flush=True)
sys.stdin.readline()
"""
_GROWTH_BYTES = 200 * 2**20
_MARGIN_BYTES = 1 << 30  # left available for the rest of the machine while it lives


def _largest_rss_bytes() -> int:
    sizes = [0]
    for process in psutil.process_iter(["memory_info"]):
        memory = process.info["memory_info"]
        if memory is not None:
            sizes.append(memory.rss)
    return max(sizes)


@pytest.mark.parametrize("backend", ["psutil", "linux"])
def test_top_processes_by_memory_names_the_grower_first(backend: Backend) -> None:
    """Issue 13's acceptance: a process grown 200 MiB past the largest one on the machine
    is ``top_processes(10, by="memory")[0]``."""
    from resguard.testing import use_backend

    if backend == "linux" and not os.path.exists("/proc/self/stat"):
        pytest.skip("the linux backend reads /proc, which this platform does not have")
    target_bytes = _largest_rss_bytes() + _GROWTH_BYTES
    available_bytes = psutil.virtual_memory().available
    if target_bytes + _MARGIN_BYTES > available_bytes:
        pytest.skip(
            f"growing a process to {target_bytes >> 20} MiB (the largest here + 200 MiB) "
            f"needs it plus 1 GiB available; {available_bytes >> 20} MiB are"
        )
    child = subprocess.Popen(
        [sys.executable, "-c", GROWER, str(target_bytes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        with use_backend(backend):
            top = top_processes(10, by="memory")
        assert top[0].pid == child.pid, (target_bytes, top[:3])
        assert top[0].rss >= target_bytes
        assert top[0].cmdline[:2] == (sys.executable, "-c")  # the top rows are described
        assert top == sorted(top, key=lambda row: row.rss, reverse=True)
    finally:
        child.kill()
        child.wait()


def test_grouping_on_psutil_merges_by_name() -> None:
    children = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        pids = {child.pid for child in children}
        wait_until(
            lambda: all(psutil.Process(pid).name() == "sleep" for pid in pids), what="the execs"
        )
        top = ProcessTable(backend="psutil").top(1000, by="memory", group=True)
        [sleeps] = [row for row in top if row.name == "sleep"]
        assert sleeps.count >= 3
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_describe_on_psutil_reads_only_the_rows_own_process() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        wait_until(lambda: psutil.Process(child.pid).cmdline() == ["sleep", "30"], what="exec")
        row = _mine(ProcessTable(backend="psutil").sample(), child.pid)
        assert describe(row, backend="psutil").cmdline == ("sleep", "30")
        # the same PID with another start time is another process: nothing of it is shown
        import attrs

        other = attrs.evolve(row, create_time=row.create_time - 5)
        assert describe(other, backend="psutil").cmdline == ()
    finally:
        child.kill()
        child.wait()
    assert describe(row, backend="psutil").cmdline == ()  # gone


def test_top_processes_uses_the_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from resguard.testing import use_backend

    real_iter = psutil.process_iter
    scans: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        scans.append(1)
        return real_iter(*args, **kwargs)

    monkeypatch.setattr(psutil, "process_iter", counted)
    with use_backend("psutil"):
        rows = top_processes(5, by="memory")
    assert scans  # the psutil table measured
    scans.clear()
    with use_backend("linux"):
        assert len(top_processes(5, by="memory")) == 5
    assert not scans  # the linux table read /proc
    assert len(rows) == 5
    assert rows == sorted(rows, key=lambda row: row.rss, reverse=True)


# --- a hostile psutil -------------------------------------------------------------------------


def _fake_row(pid: int, create_time: float = 1.0) -> ProcessInfo:
    return ProcessInfo(
        pid=pid,
        name="x",
        cmdline=(),
        username=None,
        uid=None,
        ppid=1,
        rss=1,
        uss=None,
        cpu_percent=0.0,
        num_threads=1,
        create_time=create_time,
    )


class FakeProcess:
    """A psutil.Process whose answers (or exceptions) the test sets."""

    def __init__(self, pid: int, **answers: object) -> None:
        self.pid = pid
        self.answers: dict[str, object] = {
            "status": psutil.STATUS_RUNNING,
            "name": f"fake{pid}",
            "ppid": 1,
            "create_time": 1000.0 + pid,
            "memory_info": SimpleNamespace(rss=pid * 4096),
            "cpu_times": SimpleNamespace(user=1.0, system=0.5),
            "num_threads": 2,
            "uids": SimpleNamespace(real=os.getuid(), effective=os.getuid()),
            "cmdline": ["fake", str(pid)],
            "username": "fakeuser",
        }
        self.answers.update(answers)

    @contextmanager
    def oneshot(self) -> Iterator[None]:
        yield

    def __getattr__(self, call: str) -> Callable[[], object]:
        answers = self.__dict__["answers"]
        if call not in answers:
            raise AttributeError(call)

        def answer() -> object:
            value = answers[call]
            if isinstance(value, BaseException) or (
                isinstance(value, type) and issubclass(value, BaseException)
            ):
                raise value
            return value

        return answer


class World(dict[int, FakeProcess]):
    """The processes psutil.process_iter() lists (its cached Process objects); ``fresh``
    holds what a new psutil.Process(pid) reads instead, where the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.fresh: dict[int, FakeProcess] = {}

    def process(self, pid: int) -> FakeProcess:
        if pid in self.fresh:
            return self.fresh[pid]
        if pid not in self:
            raise psutil.NoSuchProcess(pid)
        return self[pid]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    processes = World()
    monkeypatch.setattr(psutil, "process_iter", lambda *a, **k: iter(list(processes.values())))
    monkeypatch.setattr(psutil, "Process", processes.process)
    return processes


def _pids(rows: list[ProcessInfo]) -> list[int]:
    return sorted(row.pid for row in rows)


@pytest.mark.parametrize(
    "error",
    [psutil.NoSuchProcess(11), psutil.ZombieProcess(11), psutil.AccessDenied(11)],
    ids=["vanished", "zombie", "denied"],
)
@pytest.mark.parametrize("call", ["name", "memory_info", "cpu_times", "num_threads", "uids"])
def test_a_process_that_vanishes_or_refuses_while_read_is_skipped_silently(
    world: World, error: Exception, call: str, caplog: pytest.LogCaptureFixture
) -> None:
    world[10] = FakeProcess(10)
    world[11] = FakeProcess(11, **{call: error})
    table = ProcessTable(backend="psutil")
    assert _pids(table.sample()) == [10]
    assert table.faults == ()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_process_iter_failing_gives_an_empty_table_one_warning_and_a_recovery(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    world[10] = FakeProcess(10)

    def broken(*_: object, **__: object) -> Iterator[FakeProcess]:
        raise OSError(24, "Too many open files")

    working = psutil.process_iter
    monkeypatch.setattr(psutil, "process_iter", broken)
    clock = ManualClock(5_000_000.0)
    table = ProcessTable(clock=clock, backend="psutil")
    for _ in range(3):
        assert table.sample() == []
        clock.advance(1)
    [fault] = table.faults
    assert (fault.field, fault.source, fault.kind) == (
        "processes",
        "psutil.process_iter()",
        "unreadable",
    )
    assert "Too many open files" in fault.detail
    assert len(warnings_about(caplog, "psutil.process_iter()")) == 1, caplog.text
    monkeypatch.setattr(psutil, "process_iter", working)
    assert _pids(table.sample()) == [10]
    assert table.faults == ()
    assert len(warnings_about(caplog, "psutil.process_iter()", "works again")) == 1


def test_a_process_iter_that_fails_halfway_gives_an_empty_table(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def halfway(*_: object, **__: object) -> Iterator[FakeProcess]:
        yield FakeProcess(10)
        raise RuntimeError("the platform's psutil broke")

    monkeypatch.setattr(psutil, "process_iter", halfway)
    table = ProcessTable(backend="psutil")
    assert table.sample() == []
    assert [fault.source for fault in table.faults] == ["psutil.process_iter()"]


@pytest.mark.parametrize(
    ("call", "value"),
    [
        ("memory_info", None),
        ("memory_info", SimpleNamespace(rss=-1)),
        ("cpu_times", None),
        ("cpu_times", SimpleNamespace(user=float("nan"), system=0.0)),
        ("create_time", None),
        ("num_threads", "2"),
        ("ppid", True),
        ("name", None),
    ],
)
def test_a_value_psutil_should_not_return_skips_the_row_with_a_fault(
    world: World, call: str, value: object
) -> None:
    world[10] = FakeProcess(10)
    world[11] = FakeProcess(11, **{call: value})
    table = ProcessTable(backend="psutil")
    assert _pids(table.sample()) == [10]
    [fault] = table.faults
    assert fault.field == "processes"
    assert fault.source == f"psutil.Process.{call}()"
    assert fault.kind == "garbage"


def test_an_odd_exception_from_psutil_skips_the_row_with_a_fault(
    world: World,
) -> None:
    world[10] = FakeProcess(10)
    world[11] = FakeProcess(11, memory_info=RuntimeError("odd"))
    table = ProcessTable(backend="psutil")
    assert _pids(table.sample()) == [10]
    assert [(f.source, f.kind) for f in table.faults] == [("psutil.Process", "unreadable")]


def test_no_uids_means_an_unknown_uid_not_a_skipped_row(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world[10] = FakeProcess(10, uids=None)
    world[11] = FakeProcess(11)
    table = ProcessTable(backend="psutil")
    assert [(row.pid, row.uid) for row in table.sample()] == [(10, None), (11, os.getuid())]
    from resguard.processes import _portable

    monkeypatch.setattr(_portable, "_HAS_UIDS", False)  # Windows: no uids() at all
    del world[11].answers["uids"]
    assert [(row.pid, row.uid) for row in table.sample()] == [(10, None), (11, None)]


def test_cpu_percent_is_since_the_previous_sample_and_a_new_process_starts_afresh(
    world: World,
) -> None:
    clock = ManualClock()
    table = ProcessTable(clock=clock, backend="psutil")
    world[10] = FakeProcess(10, cpu_times=SimpleNamespace(user=100.0, system=0.0))
    table.sample()
    world[10].answers["cpu_times"] = SimpleNamespace(user=101.0, system=0.5)
    clock.advance(3.0)
    [row] = table.sample()
    assert row.cpu_percent == pytest.approx(50.0)  # 1.5 s of CPU in 3 s
    # the PID changes hands: a newcomer with a later start time is not its predecessor
    world[10] = FakeProcess(
        10, create_time=1e9, cpu_times=SimpleNamespace(user=0.2, system=0.0), name="newcomer"
    )
    clock.advance(1.0)
    [row] = table.sample()
    assert (row.name, row.create_time) == ("newcomer", 1e9)
    assert row.cpu_percent < 100.0  # its life's average, not (0.2 - 101.5) / 1 s


def test_a_pid_reused_behind_psutils_cached_process_is_read_as_the_newcomer(
    world: World,
) -> None:
    # process_iter() hands back its cached Process, which remembers the old start time
    # and refuses to be read (psutil >= 6 checks in ppid()); the table reads it afresh
    clock = ManualClock()
    table = ProcessTable(clock=clock, backend="psutil")
    world[10] = FakeProcess(10, cpu_times=SimpleNamespace(user=100.0, system=0.0))
    table.sample()
    cached = world[10]
    cached.answers.update(ppid=psutil.NoSuchProcess(10, msg="its PID has been reused"))
    world.fresh[10] = FakeProcess(
        10, create_time=2e9, cpu_times=SimpleNamespace(user=0.1, system=0.0), name="newcomer"
    )
    clock.advance(1.0)
    [row] = table.sample()
    assert (row.name, row.create_time) == ("newcomer", 2e9)


_ANSWERS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.sampled_from([psutil.NoSuchProcess(9), psutil.AccessDenied(9), OSError(5, "EIO")]),
    st.builds(SimpleNamespace, rss=st.integers(), user=st.floats(), system=st.floats()),
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["name", "ppid", "create_time", "memory_info", "cpu_times", "num_threads", "uids"]
        ),
        _ANSWERS,
    )
)
def test_whatever_psutil_answers_the_table_never_raises_and_rows_are_sound(
    answers: dict[str, object],
) -> None:
    processes = [FakeProcess(10), FakeProcess(11, **answers)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(psutil, "process_iter", lambda *a, **k: iter(processes))
        table = ProcessTable(clock=ManualClock(), backend="psutil")
        rows = table.sample() + table.sample()
    assert 10 in {row.pid for row in rows}
    for row in rows:
        assert isinstance(row.name, str)
        assert isinstance(row.rss, int)
        assert row.rss >= 0
        assert row.cpu_percent >= 0
        assert row.cpu_percent == row.cpu_percent
        assert isinstance(row.num_threads, int)
        assert row.num_threads >= 0
        assert row.uid is None or isinstance(row.uid, int)


NO_PWD = r"""
import sys
sys.modules["pwd"] = None            # Windows: no user database module
import psutil
import resguard.processes as processes
from resguard.processes import _users
assert not _users.HAS_PWD
# as on Windows, where psutil asks the process (on POSIX psutil itself needs pwd)
psutil.Process.username = lambda self: f"user-of-{self.pid}"
table = processes.ProcessTable(backend="psutil")
rows = table.top(5, by="memory")
assert len(rows) == 5
print(sum(row.username == f"user-of-{row.pid}" for row in rows))
"""


def test_without_pwd_the_user_names_come_from_psutil() -> None:
    from support import run_python

    assert int(run_python(NO_PWD)) >= 3  # a row whose process exits first keeps no name


def test_describe_keeps_what_it_can_when_the_command_line_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = _mine(ProcessTable(backend="psutil").sample(), os.getpid())

    def refused(self: psutil.Process) -> list[str]:
        raise psutil.AccessDenied(self.pid)

    monkeypatch.setattr(psutil.Process, "cmdline", refused)
    described = describe(row, backend="psutil")
    assert described.cmdline == ()
    assert described.username is not None


REUSE = r"""
import json, os, subprocess, sys, time
import psutil
from resguard._probes.identity import read_stat
from resguard.processes import ProcessTable

sys.path.insert(0, sys.argv[1])
from support import wait_until, warnings_about

def runs(pid, command):
    try:
        return psutil.Process(pid).cmdline() == command
    except psutil.Error:
        return False

table = ProcessTable(backend="psutil")
victim = subprocess.Popen(["sleep", "3007"])
wait_until(lambda: runs(victim.pid, ["sleep", "3007"]), what="the victim's exec")
[old] = [row for row in table.sample() if row.pid == victim.pid]
start_s = read_stat(victim.pid).start_ticks / os.sysconf("SC_CLK_TCK")
victim.kill(); victim.wait()
# a newcomer within the same clock tick would have the same start time: wait past it
boot_s = lambda: time.clock_gettime(time.CLOCK_BOOTTIME)
wait_until(lambda: boot_s() > start_s + 0.05, what="50 ms to pass")
with open("/proc/sys/kernel/ns_last_pid", "w") as file:   # the next fork gets its PID
    file.write(str(victim.pid - 1))
newcomer = subprocess.Popen(["sleep", "3007"])               # the same name and parent
wait_until(lambda: runs(newcomer.pid, ["sleep", "3007"]), what="the newcomer's exec")
rows = [row for row in table.top(1000, by="memory") if row.pid == newcomer.pid]
print(json.dumps({
    "reused": newcomer.pid == victim.pid,
    "old": old.create_time,
    "rows": [row.create_time for row in rows],
    "fresh": psutil.Process(newcomer.pid).create_time(),
    "cmdline": [list(row.cmdline) for row in rows],
}))
newcomer.kill(); newcomer.wait()
"""


def test_a_pid_reused_between_two_samples_is_the_newcomer_for_real() -> None:
    import json
    import shutil

    from plugins.integration import unavailable

    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        unavailable("forcing PID reuse needs root on Linux (a PID namespace and ns_last_pid)")
    if shutil.which("unshare") is None:
        unavailable("unshare (util-linux) is not installed")
    tests = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", REUSE, tests],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0 and "unshare failed" in done.stderr:
        unavailable(f"unshare --pid --fork --mount-proc fails here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["reused"]
    assert result["rows"] == [result["fresh"]]  # one row, with the newcomer's start time
    assert result["fresh"] != result["old"]
    assert result["cmdline"] == [["sleep", "3007"]]  # described: it is the row's process
