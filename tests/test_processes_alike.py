"""Both backends see one process alike: its name (cut by the kernel or not), whether it is
protected, how it prints when its name or arguments are not UTF-8, whether a zombie is
listed, and what the stopper does once a listed process exec()s another program. Also
that a forked child can read processes through psutil, and that CPU percents are measured
over windows long enough to mean something."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard._probes.backend import Backend
from resguard._probes.procfs import CPU_WINDOW_MIN_S
from resguard.cli._render import Live, writable
from resguard.processes import ProcessTable, describe
from resguard.processes._rows import Previous, RowFacts, rows_from
from resguard.reclaim import DEFAULT_PROTECTED_NAMES, ProcessStopper
from resguard.reclaim._stopper import protection_reason

from support import wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="starts processes through Linux's /proc"
)
BACKENDS: list[Backend] = ["linux", "psutil"]
LONG_NAME = "precious-database-server"  # longer than the 15 characters comm keeps


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read()
    except OSError:
        return b""


@pytest.fixture
def long_named(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A copy of sleep whose name the kernel cuts to ``precious-databa``."""
    program = tmp_path / LONG_NAME
    shutil.copy(shutil.which("sleep") or "/bin/sleep", program)
    process = subprocess.Popen([str(program), "3011"])
    wait_until(lambda: _cmdline(process.pid).startswith(str(program).encode()), what="exec")
    yield process
    process.kill()
    process.wait()


# --- names and protection -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["systemd-journald", "systemd-journal"])
def test_systemd_journald_is_protected_in_full_and_in_the_kernels_cut_form(name: str) -> None:
    reason = protection_reason(
        12345,
        own_pids=(1, 1),
        same_user=True,
        name=name,
        protected_names=DEFAULT_PROTECTED_NAMES,
    )
    assert reason == f"a protected name ({name})"


@pytest.mark.parametrize("name", ["precious-database-server", "precious-databa"])
def test_a_long_protected_name_protects_the_process_in_either_form(name: str) -> None:
    protected = DEFAULT_PROTECTED_NAMES | {LONG_NAME}
    reason = protection_reason(
        12345, own_pids=(1, 1), same_user=True, name=name, protected_names=protected
    )
    assert reason == f"a protected name ({name})"


@pytest.mark.parametrize(
    "name",
    [
        *("launchd", "kernel_task", "WindowServer", "loginwindow", "Dock", "Finder"),
        *("coreaudiod", "System", "Registry", "smss.exe", "csrss.exe", "wininit.exe"),
        *("services.exe", "lsass.exe", "winlogon.exe", "explorer.exe"),
    ],
)
def test_the_macos_and_windows_essentials_are_protected_by_default(name: str) -> None:
    assert name in DEFAULT_PROTECTED_NAMES


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_long_protected_name_protects_a_real_process_on_both_backends(
    backend: Backend, long_named: subprocess.Popen[bytes]
) -> None:
    stopper = ProcessStopper(
        ["precious"], enabled=True, dry_run=False, protect=[LONG_NAME], backend=backend
    )
    found = [candidate for candidate in stopper.candidates() if candidate.pid == long_named.pid]
    assert [(candidate.name, candidate.protected) for candidate in found] == [
        (LONG_NAME, f"a protected name ({LONG_NAME})")
    ]
    assert stopper.stop(found[0]).signal == "none"
    assert long_named.poll() is None


def test_both_backends_name_and_group_a_cut_name_alike(
    long_named: subprocess.Popen[bytes],
) -> None:
    names = {}
    for backend in BACKENDS:
        rows = ProcessTable(backend=backend).sample()
        names[backend] = next(row.name for row in rows if row.pid == long_named.pid)
        groups = ProcessTable(backend=backend).top(10**6, by="memory", group=True)
        assert LONG_NAME in {row.name for row in groups}
    assert names == {"linux": LONG_NAME, "psutil": LONG_NAME}


# --- names and arguments that are not UTF-8 -------------------------------------------------

_NAMED_SELF = (
    "import ctypes, sys; ctypes.CDLL(None).prctl(15, ctypes.c_char_p(b'spin\\xff'), 0, 0, 0);"
    " print(flush=True); sys.stdin.read()"
)


@pytest.fixture
def badly_named() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose name and last argument are not UTF-8."""
    process = subprocess.Popen(
        [os.fsencode(sys.executable), b"-c", _NAMED_SELF.encode(), b"\xff\xfe"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.readline()  # renamed
    yield process
    process.kill()
    process.wait()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_name_and_arguments_that_are_not_utf8_read_as_replacement_characters(
    backend: Backend, badly_named: subprocess.Popen[bytes]
) -> None:
    rows = ProcessTable(backend=backend).sample()
    row = next(row for row in rows if row.pid == badly_named.pid)
    assert row.name == "spin\ufffd"
    described = describe(row, backend=backend)
    assert described.cmdline[-1] == "\ufffd\ufffd"
    for text in (described.name, *described.cmdline, described.username or ""):
        text.encode("utf-8")  # printable: no lone surrogates


@pytest.mark.parametrize("encoding", ["utf-8", "ascii", "latin-1"])
def test_the_cli_writes_what_its_stream_cannot_encode_as_a_replacement(encoding: str) -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding=encoding)
    Live(out).show("top spin\udcff \u2603 ok")
    out.flush()
    text = raw.getvalue().decode(encoding)
    assert text.startswith("top spin")
    assert text.endswith(" ok\n")
    assert writable("plain", out) == "plain"


# --- zombies and exec ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_zombie_is_not_a_row_of_the_table_on_either_backend(backend: Backend) -> None:
    zombie = subprocess.Popen(["true"])
    try:
        wait_until(
            lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE,
            what="the child to exit unreaped",
        )
        pids = {row.pid for row in ProcessTable(backend=backend).sample()}
        assert zombie.pid not in pids
        assert os.getpid() in pids
    finally:
        zombie.wait()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_process_that_execs_another_program_after_it_was_listed_is_not_signalled(
    backend: Backend, tmp_path: Path
) -> None:
    program = tmp_path / LONG_NAME
    shutil.copy(shutil.which("sleep") or "/bin/sleep", program)
    shell = subprocess.Popen(["sh", "-c", f"read x; exec {program} 3012"], stdin=subprocess.PIPE)
    try:
        wait_until(lambda: b"read x" in _cmdline(shell.pid), what="the shell to start")
        stopper = ProcessStopper(["read x"], enabled=True, dry_run=False, backend=backend)
        listed = next(candidate for candidate in stopper.candidates() if candidate.pid == shell.pid)
        assert shell.stdin is not None
        shell.stdin.write(b"go\n")
        shell.stdin.flush()
        ran = str(program).encode()
        wait_until(lambda: _cmdline(shell.pid).startswith(ran), what="the exec")
        action = stopper.stop(listed)
        assert (action.signal, action.done) == ("none", False)
        assert action.reason.startswith("changed since it was listed: now 'precious-database")
        assert shell.poll() is None  # still running: nothing was sent
    finally:
        shell.kill()
        shell.wait()


# --- a fork while another thread reads through psutil -----------------------------------------


def test_a_child_forked_while_a_thread_holds_a_cached_psutil_process_reads_the_table() -> None:
    from forking import held_by_another_thread, in_child

    table = ProcessTable(backend="psutil")
    table.sample()  # psutil now caches a Process, each with its own lock, per PID
    cached = next(iter(psutil.process_iter()))
    lock: threading.RLock = vars(cached)["_lock"]  # psutil's own, taken by oneshot()
    with held_by_another_thread(lock):
        status = in_child(table.sample, timeout_s=10)
    assert status == 0


# --- CPU percent windows ----------------------------------------------------------------------

_STEPS = st.lists(
    st.tuples(st.floats(0.0, 2.0), st.floats(0.0, 20.0)),  # (seconds passed, CPU seconds used)
    min_size=1,
    max_size=20,
)


@given(steps=_STEPS, cpus=st.integers(1, 64), age_s=st.floats(0.0, 10.0))
def test_no_sequence_of_samples_reports_more_than_100_percent_per_cpu(
    steps: list[tuple[float, float]], cpus: int, age_s: float
) -> None:
    previous: Previous = {}
    now_s, cpu_s = 100.0, 0.0
    for passed_s, used_s in [(0.0, 0.0), *steps]:
        now_s += passed_s
        cpu_s += used_s
        fact = RowFacts(7, "p", 1, 1000.0, 0, cpu_s, 1, 0, age_s + now_s - 100.0)
        before = previous.get((7, 1000.0))
        rows, previous = rows_from([fact], previous, now_s, cpus)
        assert 0.0 <= rows[0].cpu_percent <= 100.0 * cpus
        if before is not None and now_s - before[1] < CPU_WINDOW_MIN_S:
            assert previous[(7, 1000.0)] == before  # a sub-minimum window: the same baseline
            assert rows[0].cpu_percent == before[2]


def test_a_window_of_a_few_milliseconds_keeps_the_previous_percent() -> None:
    first = RowFacts(7, "p", 1, 1000.0, 0, 10.0, 1, 0, 100.0)
    rows, previous = rows_from([first], {(7, 1000.0): (9.0, 99.0, 0.0, False)}, 100.0, 2)
    assert rows[0].cpu_percent == pytest.approx(100.0)  # 1 CPU second in 1 s
    tick_later = first._replace(cpu_s=10.01)  # one 10 ms tick in 2 ms: not 500 %
    rows, after = rows_from([tick_later], previous, 100.002, 2)
    assert rows[0].cpu_percent == pytest.approx(100.0)
    assert after == previous


@pytest.mark.parametrize("pattern", [LONG_NAME, "precious-databa", "precious-.*"])
def test_a_process_budget_matches_a_long_name_in_full_or_in_the_kernels_cut_form(
    pattern: str,
) -> None:
    from resguard.budget import Budget
    from resguard.budget._match import process_matches
    from resguard.snapshot import ProcessInfo

    budget = Budget("db", "process", pattern, None, 1 << 30)
    row = ProcessInfo(
        pid=10,
        name=LONG_NAME,
        cmdline=(),
        username=None,
        uid=0,
        ppid=1,
        rss=1,
        uss=None,
        cpu_percent=0.0,
        num_threads=1,
        create_time=1.0,
    )
    assert process_matches(budget, re.compile(pattern), row)
    assert not process_matches(budget, re.compile("precious"), row)  # a whole name only


def test_watch_once_measures_cpu_over_at_least_the_minimum_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from resguard.cli import main
    from resguard.monitor import Monitor

    slow_samples: list[float] = []
    sample_slow = Monitor.sample_slow

    def timed(self: Monitor) -> None:
        sample_slow(self)
        slow_samples.append(time.monotonic())

    printed: list[float] = []

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            printed.append(time.monotonic())
            return super().write(text)

    monkeypatch.setattr(Monitor, "sample_slow", timed)
    assert main(["watch", "--once", "--json"], Out()) in (0, 1)
    before_frame = [at for at in slow_samples if at <= printed[0]]
    assert len(before_frame) >= 2
    assert before_frame[-1] - before_frame[0] >= CPU_WINDOW_MIN_S


_EXECS_ON_SIGTERM = """
import os, signal, sys
program = sys.argv[1]
signal.signal(signal.SIGTERM, lambda *_: os.execv(program, [program, "3014"]))
print(flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("mode", ["linux", "psutil", "psutil-fallback"])
def test_a_process_that_execs_another_program_on_sigterm_is_not_killed(
    mode: str, tmp_path: Path
) -> None:
    backend: Backend = "linux" if mode == "linux" else "psutil"
    program = tmp_path / LONG_NAME
    shutil.copy(shutil.which("sleep") or "/bin/sleep", program)
    victim = subprocess.Popen(
        [sys.executable, "-c", _EXECS_ON_SIGTERM, str(program), "execs-on-sigterm"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert victim.stdout is not None
        victim.stdout.readline()  # the handler is in place
        stopper = ProcessStopper(
            ["execs-on-sigterm"], enabled=True, dry_run=False, grace="1s", backend=backend
        )
        stopper._use_pidfd = mode != "psutil-fallback"  # without: its exit is polled for
        listed = next(c for c in stopper.candidates() if c.pid == victim.pid)
        action = stopper.stop(listed)
        assert action.reason.startswith("not killed: changed since it was listed")
        assert (action.signal, action.done) == ("SIGTERM", False)
        assert victim.poll() is None  # the other program was never SIGKILLed
        assert _cmdline(victim.pid).startswith(str(program).encode())
    finally:
        victim.kill()
        victim.wait()
