"""The process stopper never signals the wrong process: exact identity, pidfds, zombies,
and the safety rules (PID 1, this process, its parent, other users, protected names)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard import InvalidType, InvalidValue, ResguardError
from resguard._probes import identity as identity_module
from resguard._probes.identity import (
    Identity,
    PortableHandle,
    PortableIdentity,
    ProcessHandle,
    parse_stat,
    read_portable,
    read_stat,
    same_start,
    same_user,
)
from resguard.reclaim import ProcessStopper, StopCandidate
from resguard.reclaim._stopper import protection_reason
from resguard.testing import ManualClock

from plugins.integration import unavailable
from support import wait_until

TESTS = os.path.dirname(os.path.abspath(__file__))

# the linux path (/proc) with and without pidfds, and the portable path (psutil) likewise
MODES = ["pidfd", "fallback", "psutil", "psutil-fallback"]
# unique to this run: other test runs on the machine may have their own "sleep 3001"
RUN = os.getpid()
S3001, S3002, S3003, S3006 = (f"{seconds}{RUN}" for seconds in (3001, 3002, 3003, 3006))


def _stat_line(
    pid: int, name: str, start_ticks: int, state: str = "S", exit_code: int | None = None
) -> str:
    fields = [state, "1", str(pid), str(pid), "0", "-1", "4194560"] + ["0"] * 12
    fields += [str(start_ticks), "1000", "42"] + ["0"] * 27
    if exit_code is not None:
        fields.append(str(exit_code))
    return f"{pid} ({name}) " + " ".join(fields) + "\n"


def test_stat_parser_cuts_the_name_at_the_last_paren() -> None:
    stat = parse_stat(_stat_line(7, "a) (b) S 1 2", 123456))
    assert stat.name == "a) (b) S 1 2"
    assert (stat.state, stat.start_ticks, stat.rss_pages) == ("S", 123456, 42)


def test_stat_parser_keeps_a_huge_start_time_exact() -> None:
    assert parse_stat(_stat_line(7, "x", 10**17 + 1)).start_ticks == 10**17 + 1


def test_stat_parser_reads_the_exit_code_of_a_zombie() -> None:
    stat = parse_stat(_stat_line(7, "x", 5, state="Z", exit_code=15))
    assert stat.exited
    assert stat.exit_code == 15


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "7 (x",
        "7 (x) S 1 2 3",
        "(x) " + "S " * 40,
        "7 (x) S " + "a " * 40,
        _stat_line(7, "x", 5).replace(" 5 1000 ", " -5 1000 "),
        _stat_line(7, "x", 5).replace(" 5 1000 ", " \u0665 1000 "),  # an Arabic-Indic digit
    ],
)
def test_stat_parser_rejects_damaged_lines(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_stat(text)


@given(st.text(max_size=400))
def test_stat_parser_returns_or_raises_value_error_on_any_text(text: str) -> None:
    try:
        parse_stat(text)
    except ValueError:
        pass


@given(
    st.text(max_size=15).filter(lambda name: "\0" not in name),
    st.integers(min_value=0, max_value=2**64),
)
def test_stat_parser_reads_any_name_and_start_time_exactly(name: str, start: int) -> None:
    stat = parse_stat(_stat_line(99, name, start))
    assert (stat.name, stat.start_ticks) == (name, start)


# ---------------------------------------------------------------------------------------
# Real processes


def _spawn(*args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(args), **kwargs)  # type: ignore[call-overload, no-any-return]


def _runs(pid: int, command: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").strip() == command.encode()
    except OSError:
        return False


def _wait_for_exec(pid: int, command: str) -> None:
    """Until *pid* runs *command* (Popen returns before the child's exec)."""
    wait_until(lambda: _runs(pid, command), what=f"pid {pid} to run {command!r}")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = _spawn("sleep", S3001)
    _wait_for_exec(process.pid, f"sleep {S3001}")
    yield process
    process.kill()
    process.wait()


def _stopper(mode: str, *patterns: str, **kwargs: object) -> ProcessStopper:
    options: dict[str, object] = {"enabled": True, "dry_run": False, "grace": "30s"}
    options["backend"] = "psutil" if mode.startswith("psutil") else "linux"
    options.update(kwargs)
    stopper = ProcessStopper(list(patterns), **options)  # type: ignore[arg-type]
    stopper._use_pidfd = mode in ("pidfd", "psutil")  # off: the path without pidfds
    return stopper


def _open(mode: str, pid: int) -> ProcessHandle | PortableHandle | None:
    """A handle on *pid* as it is now, on the path *mode* names."""
    if mode.startswith("psutil"):
        read = read_portable(pid)
        assert read is not None
        stat = read[1]
        identity = PortableIdentity(pid, stat.create_time, stat.ppid, stat.uid, stat.name)
        return PortableHandle.open(identity, use_pidfd=mode == "psutil")
    proc_stat = read_stat(pid)
    assert proc_stat is not None
    return ProcessHandle.open(Identity(pid, proc_stat.start_ticks), use_pidfd=mode == "pidfd")


def _candidate(stopper: ProcessStopper, pid: int) -> StopCandidate:
    return next(candidate for candidate in stopper.candidates() if candidate.pid == pid)


@pytest.fixture
def signals_sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every signal resguard sends, recorded and not delivered."""
    sent: list[tuple[str, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append(("kill", pid)))
    monkeypatch.setattr(
        signal,
        "pidfd_send_signal",
        lambda fd, signum, *rest: sent.append(("pidfd", fd)),
    )
    return sent


@pytest.mark.parametrize("mode", MODES)
def test_a_process_whose_start_time_differs_by_0_3_s_is_never_signalled(
    mode: str, sleeper: subprocess.Popen[bytes]
) -> None:
    stopper = _stopper(mode, rf"^sleep {S3001}$")
    real = _candidate(stopper, sleeper.pid)
    others = []
    if real.start_ticks is not None:
        assert real.create_time is None
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        for offset in (-1, 1, int(0.3 * ticks_per_s)):
            others.append(attrs.evolve(real, start_ticks=real.start_ticks + offset))
    else:
        assert real.create_time is not None
        assert real.ppid == os.getpid()
        for offset_s in (-0.01, 0.01, 0.3):
            others.append(attrs.evolve(real, create_time=real.create_time + offset_s))
        # the same start time with another parent, owner or name is another process too
        others.append(attrs.evolve(real, ppid=1))
        others.append(attrs.evolve(real, uid=65534))
        others.append(attrs.evolve(real, name="sleeq"))
    for other in others:
        action = stopper.stop(other)
        assert (action.signal, action.done) == ("none", False), other
        # the same start time under another name: the process exec()ed another program
        changed = other.name != real.name and action.reason.startswith("changed since")
        assert "gone" in action.reason or changed, action.reason
    assert sleeper.poll() is None


def test_a_candidate_from_the_other_path_is_not_verifiable_and_not_signalled(
    sleeper: subprocess.Popen[bytes], signals_sent: list[tuple[str, int]]
) -> None:
    linux = _candidate(_stopper("pidfd", rf"^sleep {S3001}$"), sleeper.pid)
    portable = _candidate(_stopper("psutil", rf"^sleep {S3001}$"), sleeper.pid)
    assert "not verifiable" in _stopper("psutil", "x").stop(linux).reason
    assert "not verifiable" in _stopper("pidfd", "x").stop(portable).reason
    assert signals_sent == []


@pytest.mark.parametrize("mode", MODES)
def test_a_handle_opened_on_a_process_refuses_once_it_exited(mode: str) -> None:
    process = _spawn("sleep", S3002)
    _wait_for_exec(process.pid, f"sleep {S3002}")
    handle = _open(mode, process.pid)
    assert handle is not None
    with_pidfd = mode in ("pidfd", "psutil") and identity_module.pidfd_supported()
    assert (handle.pidfd is not None) == with_pidfd
    with handle:
        process.kill()
        process.wait()
        assert handle.exited()
        assert not handle.send(signal.SIGTERM)


@pytest.mark.parametrize("mode", MODES)
def test_a_victim_stopped_by_sigterm_is_recorded_as_sigterm(
    mode: str, sleeper: subprocess.Popen[bytes]
) -> None:
    stopper = _stopper(mode, rf"^sleep {S3001}$")
    action = stopper.stop(_candidate(stopper, sleeper.pid))
    assert (action.signal, action.done) == ("SIGTERM", True)
    assert sleeper.wait(timeout=10) == -signal.SIGTERM


UNREAPED = r"""
import subprocess, sys, time
child = subprocess.Popen(["sleep", sys.argv[1]])
print(child.pid, flush=True)
sys.stdin.read()          # never reaps the child until told to exit
"""


@pytest.mark.parametrize("mode", MODES)
def test_an_unreaped_zombie_counts_as_stopped_by_sigterm_at_once(mode: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", UNREAPED, S3003],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        _wait_for_exec(pid, f"sleep {S3003}")
        stopper = _stopper(mode, rf"^sleep {S3003}$", grace="60s")
        started = time.monotonic()
        action = stopper.stop(_candidate(stopper, pid))
        took_s = time.monotonic() - started
        assert (action.signal, action.done) == ("SIGTERM", True), action
        assert took_s < 30, f"waited {took_s:.1f} s of a 60 s grace for a zombie"
        stat = read_stat(pid)
        assert stat is not None
        assert stat.state == "Z"
        if stat.exit_code is not None:
            assert stat.exit_code & 0x7F == signal.SIGTERM
        # a zombie is no candidate: nothing is left to stop
        assert all(candidate.pid != pid for candidate in stopper.candidates())
    finally:
        parent.kill()
        parent.wait()


IGNORES_TERM = r"""
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
signal.pause()            # until SIGKILL
"""


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_only_after_the_grace_period_when_sigterm_is_ignored(mode: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", IGNORES_TERM, f"ignores-term-{RUN}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        stopper = _stopper(mode, rf"ignores-term-{RUN}", grace="300ms")
        started = time.monotonic()
        action = stopper.stop(_candidate(stopper, process.pid))
        assert time.monotonic() - started >= 0.3
        assert (action.signal, action.done) == ("SIGKILL", True), action
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("mode", MODES)
def test_a_huge_grace_period_waits_without_overflow(mode: str) -> None:
    process = _spawn("sleep", "0.3")
    try:
        handle = _open(mode, process.pid)
        assert handle is not None
        with handle:
            assert handle.wait_exited(1e300)  # poll() takes a C int of milliseconds
    finally:
        process.kill()
        process.wait()


THREADED = r"""
import signal, threading
threading.Thread(target=threading.Event().wait, daemon=True).start()
print("ready", flush=True)
signal.pause()            # until killed
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_thread_id_is_not_a_process_to_signal(mode: str) -> None:
    process = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        [thread_id] = [
            int(tid) for tid in os.listdir(f"/proc/{process.pid}/task") if int(tid) != process.pid
        ]
        assert _open(mode, thread_id) is None
        if mode in ("pidfd", "psutil"):  # a refusal, not a reason to give up pidfds
            assert identity_module.pidfd_supported()
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("mode", ["fallback", "psutil-fallback"])
def test_the_fallback_grace_wait_polls_at_growing_intervals(
    mode: str, sleeper: subprocess.Popen[bytes]
) -> None:
    handle = _open(mode, sleeper.pid)
    assert handle is not None
    clock = ManualClock(0.0)
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock.advance(seconds)

    assert not handle.wait_exited(5.0, clock=clock, sleep=sleep)
    assert clock() == pytest.approx(5.0)
    assert pauses[0] == 0.001
    assert max(pauses) == 0.05
    assert len(pauses) < 120  # ~100 polls of 50 ms, not a busy loop
    assert pauses == sorted(pauses[:-1]) + pauses[-1:]


# ---------------------------------------------------------------------------------------
# PID reuse, forced for real in a fresh PID namespace

REUSE = r"""
import json, os, signal, subprocess, sys, time
from resguard.reclaim import ProcessStopper
from resguard._probes.identity import (
    Identity, PortableHandle, PortableIdentity, ProcessHandle, read_portable, read_stat
)

mode, tests = sys.argv[1:3]
portable = mode.startswith("psutil")
sys.path.insert(0, tests)
from support import wait_until

TICKS_PER_S = os.sysconf("SC_CLK_TCK")

def runs(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read() == b"sleep\0" + b"3005\0"

def wait_for_exec(pid):
    wait_until(lambda: runs(pid), what=f"pid {pid} to run sleep 3005")

def wait_past(start_ticks, seconds):
    # until a process started now has a start time *seconds* after start_ticks
    target = start_ticks + seconds * TICKS_PER_S
    boot_ticks = lambda: time.clock_gettime(time.CLOCK_BOOTTIME) * TICKS_PER_S
    wait_until(lambda: boot_ticks() > target + 1, what=f"{seconds} s to pass")

def alive_after(process, seconds):
    # a signal sent by mistake has *seconds* to land
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return True
    return False

def reuse(pid):
    # the victim exited and was reaped; the next process forked gets its PID
    with open("/proc/sys/kernel/ns_last_pid", "w") as file:
        file.write(str(pid - 1))
    newcomer = subprocess.Popen(["sleep", "3005"])   # the same command line as the victim
    wait_for_exec(newcomer.pid)
    return newcomer

stopper = ProcessStopper([r"^sleep 3005$"], enabled=True, dry_run=False, grace="5s",
                         backend="psutil" if portable else "linux")
stopper._use_pidfd = mode in ("pidfd", "psutil")
result = {}

def start_of(pid):
    # the identity's time: start ticks (linux path) or psutil's create time
    return read_portable(pid)[1].create_time if portable else read_stat(pid).start_ticks

def open_handle(pid):
    if portable:
        stat = read_portable(pid)[1]
        identity = PortableIdentity(pid, stat.create_time, stat.ppid, stat.uid, stat.name)
        return PortableHandle.open(identity, use_pidfd=stopper._use_pidfd)
    ticks = read_stat(pid).start_ticks
    return ProcessHandle.open(Identity(pid, ticks), use_pidfd=stopper._use_pidfd)

# 1. the stopper lists the victim, the victim exits, a newcomer takes its PID 0.3 s later
victim = subprocess.Popen(["sleep", "3005"])
wait_for_exec(victim.pid)
[old] = [c for c in stopper.candidates() if c.pid == victim.pid]
old_ticks = read_stat(victim.pid).start_ticks
victim.kill(); victim.wait()
wait_past(old_ticks, 0.3)
newcomer = reuse(old.pid)
action = stopper.stop(old)
alive = alive_after(newcomer, 0.1)
result["listed"] = {"pid": old.pid, "newcomer": newcomer.pid, "action": action.to_dict(),
                    "new_start": start_of(newcomer.pid),
                    "newcomer_alive": alive}
newcomer.kill(); newcomer.wait()

# 2. a handle opened on the victim, the PID reused while it is held
victim = subprocess.Popen(["sleep", "3005"])
wait_for_exec(victim.pid)
start = read_stat(victim.pid).start_ticks
handle = open_handle(victim.pid)
victim.kill(); victim.wait()
wait_past(start, 0.05)
newcomer = reuse(victim.pid)
sent = handle.send(signal.SIGTERM) or handle.send(signal.SIGKILL)
alive = alive_after(newcomer, 0.1)
result["held"] = {"pid": victim.pid, "newcomer": newcomer.pid, "sent": sent,
                  "pidfd": handle.pidfd is not None,
                  "newcomer_alive": alive}
handle.close()
newcomer.kill(); newcomer.wait()
print(json.dumps(result))
"""


def _unshare_available() -> None:
    if os.geteuid() != 0:
        unavailable("forcing PID reuse needs root (a PID namespace and ns_last_pid)")
    if shutil.which("unshare") is None:
        unavailable("unshare (util-linux) is not installed")
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        unavailable(f"unshare --pid --fork --mount-proc fails here: {probe.stderr.strip()}")


@pytest.mark.parametrize("mode", MODES)
def test_a_newcomer_on_a_reused_pid_survives(mode: str) -> None:
    _unshare_available()
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", REUSE, mode, TESTS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    listed = result["listed"]
    assert listed["newcomer"] == listed["pid"]  # the PID really was reused
    kept = "create_time" if mode.startswith("psutil") else "start_ticks"
    assert listed["action"][kept] is not None
    assert listed["new_start"] != listed["action"][kept]
    assert listed["action"]["signal"] == "none"
    assert not listed["action"]["done"]
    assert listed["newcomer_alive"]
    held = result["held"]
    assert held["newcomer"] == held["pid"]
    if mode in ("pidfd", "psutil"):
        assert held["pidfd"], "this kernel has pidfds (Linux >= 5.3)"
    assert not held["sent"]
    assert held["newcomer_alive"]


# ---------------------------------------------------------------------------------------
# Safety rules


@pytest.mark.parametrize("backend", ["linux", "psutil"])
def test_pid_1_this_process_and_its_ancestors_are_never_signalled(
    backend: str, signals_sent: list[tuple[str, int]]
) -> None:
    stopper = ProcessStopper(
        [r"python"],
        enabled=True,
        dry_run=False,
        grace="10ms",
        backend=backend,  # type: ignore[arg-type]
    )
    stopper.patterns = (re.compile(r"."),)  # every process (the stopper refuses such a pattern)
    uid = os.getuid()
    grandparent = read_stat(os.getppid())
    ancestors = [grandparent.ppid] if grandparent is not None and grandparent.ppid > 1 else []
    for pid, reason in (
        (1, "PID 1"),
        (os.getpid(), "this process"),
        (os.getppid(), "this process's parent"),
        *(
            (pid, "an ancestor of this process (its shell, terminal or session)")
            for pid in ancestors
        ),
    ):
        stat = read_stat(pid)
        start = stat.start_ticks if stat is not None else 0
        # a candidate that claims to be unprotected: stop() judges the process itself
        action = stopper.stop(StopCandidate(pid, start, "x", "x", uid, 0, None))
        assert action.reason == f"protected: {reason}"
    listed = {candidate.pid: candidate for candidate in stopper.candidates()}
    assert listed[os.getpid()].protected == "this process"
    if 1 in listed:
        assert listed[1].protected == "PID 1"
    assert signals_sent == []


@pytest.mark.parametrize("mode", ["pidfd", "psutil"])
def test_another_users_process_is_never_signalled(mode: str) -> None:
    if os.geteuid() != 0:
        unavailable("starting another user's process needs root")
    process = _spawn("sleep", S3006, user=65534)
    try:
        _wait_for_exec(process.pid, f"sleep {S3006}")
        stopper = _stopper(mode, rf"^sleep {S3006}$", grace="10ms")
        candidate = _candidate(stopper, process.pid)
        assert candidate.protected == "another user's process"
        assert stopper.reclaim(10**12) == 0
        assert stopper.actions[0].reason == "protected: another user's process"
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


RENAMED = r"""
import signal, sys
with open("/proc/self/comm", "w") as file:
    file.write(sys.argv[1])
print("ready", flush=True)
signal.pause()            # until killed
"""


@pytest.mark.parametrize("mode", ["pidfd", "psutil"])
@pytest.mark.parametrize(("name", "protect"), [("sshd", ()), ("precious", ("precious",))])
def test_a_protected_name_is_never_signalled(
    mode: str, name: str, protect: tuple[str, ...]
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", RENAMED, name, f"renamed-{RUN}"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        stopper = _stopper(mode, rf"renamed-{RUN}", grace="10ms", protect=protect)
        assert _candidate(stopper, process.pid).protected == f"a protected name ({name})"
        stopper.reclaim(10**12)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_a_kernel_thread_is_never_signalled(signals_sent: list[tuple[str, int]]) -> None:
    stopper = ProcessStopper([r"^kthreadd$"], enabled=True, dry_run=False)
    threads = [candidate for candidate in stopper.candidates() if candidate.name == "kthreadd"]
    if not threads:
        pytest.skip("no kthreadd visible in this PID namespace")
    if os.getuid() == 0:
        assert threads[0].protected == "a kernel thread"
    stopper.reclaim(10**12)
    assert signals_sent == []


@pytest.mark.parametrize("backend", ["linux", "psutil"])
def test_dry_run_signals_nothing_and_says_what_it_would_do(
    backend: str, sleeper: subprocess.Popen[bytes], signals_sent: list[tuple[str, int]]
) -> None:
    stopper = ProcessStopper(
        [rf"^sleep {S3001}$"],
        enabled=True,  # dry_run defaults to True
        backend=backend,  # type: ignore[arg-type]
    )
    assert stopper.reclaim(10**12) > 0
    [action] = [action for action in stopper.actions if action.pid == sleeper.pid]
    assert action.signal == "SIGTERM"
    assert not action.done
    assert action.reason.startswith("dry run: would send SIGTERM, then SIGKILL after")
    assert signals_sent == []
    assert sleeper.poll() is None


def test_nothing_is_stopped_without_a_matching_pattern(
    sleeper: subprocess.Popen[bytes], signals_sent: list[tuple[str, int]]
) -> None:
    assert ProcessStopper([], enabled=True, dry_run=False).reclaim(10**12) == 0
    assert ProcessStopper([rf"^sleep {S3001}$"], dry_run=False).reclaim(10**12) == 0  # not enabled
    assert ProcessStopper([rf"^sleep {S3001}$"], dry_run=False).reclaimable_bytes() == 0
    assert signals_sent == []
    assert sleeper.poll() is None


# ---------------------------------------------------------------------------------------
# Bad input: one error tree, the value quoted as typed


@pytest.mark.parametrize(
    ("kwargs", "error", "quoted"),
    [
        ({"patterns": ["("]}, InvalidValue, "'('"),
        ({"patterns": None}, InvalidType, "None"),
        ({"patterns": 5}, InvalidType, "5"),
        ({"patterns": "sleep"}, InvalidType, "'sleep'"),
        ({"patterns": [b"sleep"]}, InvalidType, "b'sleep'"),
        ({"patterns": [".*"]}, InvalidValue, "'.*'"),
        ({"patterns": [""]}, InvalidValue, "''"),
        ({"patterns": ["x"], "enabled": "false"}, InvalidType, "'false'"),
        ({"patterns": ["x"], "enabled": 1}, InvalidType, "enabled=1"),
        ({"patterns": ["x"], "dry_run": "no"}, InvalidType, "'no'"),
        ({"patterns": ["x"], "dry_run": None}, InvalidType, "dry_run=None"),
        ({"patterns": ["x"], "grace": "soon"}, InvalidValue, "'soon'"),
        ({"patterns": ["x"], "grace": -1}, InvalidValue, "-1"),
        ({"patterns": ["x"], "protect": "sshd"}, InvalidType, "'sshd'"),
        ({"patterns": ["x"], "protect": [3]}, InvalidType, "3"),
    ],
)
def test_bad_stopper_arguments_raise_resguard_errors(
    kwargs: dict[str, object], error: type[Exception], quoted: str
) -> None:
    patterns = kwargs.pop("patterns")
    with pytest.raises(error) as caught:
        ProcessStopper(patterns, **kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, ResguardError)
    assert quoted in str(caught.value)
    assert "expected" in str(caught.value)


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(),
        st.lists(st.one_of(st.text(), st.integers(), st.none()), max_size=3),
    ),
    st.one_of(st.booleans(), st.none(), st.text(), st.integers()),
    st.one_of(st.text(), st.integers(), st.floats(), st.none()),
)
def test_the_stopper_accepts_or_raises_only_resguard_errors(
    patterns: object, enabled: object, grace: object
) -> None:
    try:
        stopper = ProcessStopper(patterns, enabled=enabled, grace=grace)  # type: ignore[arg-type]
    except ResguardError:
        return
    assert isinstance(stopper.enabled, bool)
    assert all(pattern.search("") is None for pattern in stopper.patterns)


def test_stop_takes_only_a_candidate() -> None:
    with pytest.raises(InvalidType, match="StopCandidate"):
        ProcessStopper(["x"], enabled=True).stop(1234)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# The portable path: a hostile psutil, a platform without SIGKILL


@pytest.mark.parametrize(
    ("create_time", "error"),
    [
        (float("nan"), InvalidValue),
        (float("inf"), InvalidValue),
        (-1.0, InvalidValue),
        (0.0, InvalidValue),
        ("1.0", InvalidType),
        (1, InvalidType),
        (True, InvalidType),
    ],
)
def test_a_hand_made_portable_candidate_with_a_bad_create_time_is_refused(
    create_time: object, error: type[Exception], signals_sent: list[tuple[str, int]]
) -> None:
    stopper = _stopper("psutil-fallback", "x")
    candidate = StopCandidate(
        12345,
        None,
        "x",
        "x",
        os.getuid(),
        1,
        None,
        create_time=create_time,  # type: ignore[arg-type]
        ppid=1,
    )
    with pytest.raises(error, match="create_time"):
        stopper.stop(candidate)
    assert signals_sent == []


@pytest.mark.parametrize(
    ("call", "answer"),
    [
        ("uids", None),
        ("memory_info", None),
        ("create_time", None),
        ("status", RuntimeError("odd")),
        ("ppid", OSError(5, "EIO")),
    ],
)
@pytest.mark.parametrize("mode", ["psutil", "psutil-fallback"])
def test_what_psutil_cannot_answer_cannot_be_verified_and_is_not_signalled(
    mode: str,
    call: str,
    answer: object,
    sleeper: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psutil

    stopper = _stopper(mode, rf"^sleep {S3001}$")
    candidate = _candidate(stopper, sleeper.pid)

    def odd(self: psutil.Process) -> object:
        if isinstance(answer, BaseException):
            raise answer
        return answer

    real = getattr(psutil.Process, call)
    for hook in ("cache_activate", "cache_deactivate"):  # oneshot() still works
        if hasattr(real, hook):
            setattr(odd, hook, getattr(real, hook))
    monkeypatch.setattr(psutil.Process, call, odd)
    # the row reads as damaged, not as a process that vanished inside oneshot()
    assert (read_portable(sleeper.pid) is None) == (call != "uids")
    action = stopper.stop(candidate)
    assert (action.signal, action.done) == ("none", False)
    assert "gone" in action.reason
    # listed again, it is left out, or protected as an owner that cannot be known
    again = [c for c in stopper.candidates() if c.pid == sleeper.pid]
    assert all(c.protected == "another user's process" for c in again)
    assert again == [] or call == "uids"
    stopper.reclaim(10**12)
    assert sleeper.poll() is None


@pytest.mark.parametrize("denied", [False, True])
def test_where_there_is_no_sigkill_the_portable_path_kills_through_psutil(
    denied: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    sigkill = signal.SIGKILL
    process = subprocess.Popen(
        [sys.executable, "-c", IGNORES_TERM, f"no-sigkill-{RUN}"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        stopper = _stopper("psutil-fallback", rf"no-sigkill-{RUN}", grace="300ms")
        candidate = _candidate(stopper, process.pid)
        killed: list[int] = []

        def kill(self: psutil.Process) -> None:  # Windows: TerminateProcess
            if denied:
                raise psutil.AccessDenied(self.pid)
            killed.append(self.pid)
            os.kill(self.pid, sigkill)

        monkeypatch.delattr(signal, "SIGKILL")
        monkeypatch.setattr(psutil.Process, "kill", kill)
        action = stopper.stop(candidate)
        if denied:
            assert (action.signal, action.done) == ("none", False), action
            assert action.reason.startswith("not permitted")
            assert process.poll() is None
            return
        assert (action.signal, action.done) == ("SIGKILL", True), action
        assert killed == [process.pid]
        assert process.wait(timeout=10) == -sigkill
    finally:
        if process.poll() is None:
            os.kill(process.pid, sigkill)
        process.wait()


@pytest.mark.parametrize("mode", ["pidfd", "psutil"])
def test_without_select_poll_no_pidfd_is_used_and_the_stop_still_works(
    mode: str, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    import select

    monkeypatch.setattr(identity_module, "_pidfd_works", None)
    monkeypatch.delattr(select, "poll")
    assert not identity_module.pidfd_supported()
    stopper = _stopper(mode, rf"^sleep {S3001}$")
    handle = _open(mode, sleeper.pid)
    assert handle is not None
    assert handle.pidfd is None
    handle.close()
    action = stopper.stop(_candidate(stopper, sleeper.pid))
    assert (action.signal, action.done) == ("SIGTERM", True)
    assert sleeper.wait(timeout=10) == -signal.SIGTERM


WITHOUT_UNIX_NAMES = r"""
import json, os, select, signal, subprocess, sys
import psutil
sys.modules["pwd"] = None
for module, name in [(os, "pidfd_open"), (os, "O_CLOEXEC"), (select, "poll"),
                     (signal, "SIGKILL"), (signal, "SIGSTOP"), (signal, "pidfd_send_signal")]:
    if hasattr(module, name):
        delattr(module, name)
from resguard.reclaim import ProcessStopper

tag = sys.argv[1]
result = {}
child = subprocess.Popen(["sleep", tag])
stopper = ProcessStopper([f"^sleep {tag}$"], enabled=True, dry_run=False, grace="5s",
                         backend="psutil")
while not [c for c in stopper.candidates() if c.pid == child.pid]:
    pass  # until the child has exec'd sleep
[candidate] = [c for c in stopper.candidates() if c.pid == child.pid]
result["stopped"] = stopper.stop(candidate).to_dict()
result["returncode"] = child.wait(timeout=10)

del os.getuid  # Windows: no uids; here nothing can prove the owner, so nothing is touched
child = subprocess.Popen(["sleep", tag])
while not [c for c in stopper.candidates() if c.pid == child.pid]:
    pass
[candidate] = [c for c in stopper.candidates() if c.pid == child.pid]
result["unknown_owner"] = candidate.protected
result["reclaimed"] = stopper.reclaim(10**12)
result["alive"] = child.poll() is None
child.terminate(); child.wait()
print(json.dumps(result))
"""


def test_the_portable_stopper_works_without_the_unix_only_names() -> None:
    tag = f"3009{RUN}"
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_UNIX_NAMES, tag],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["stopped"]["signal"], result["stopped"]["done"]) == ("SIGTERM", True)
    assert result["returncode"] == -signal.SIGTERM
    assert result["unknown_owner"] == "another user's process"
    assert result["reclaimed"] == 0
    assert result["alive"]


@pytest.mark.parametrize("gone", [False, True])
def test_an_odd_os_error_from_the_signal_is_a_refusal_unless_the_process_is_gone(
    gone: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows' os.kill says "gone" (and more) with errnos other than ESRCH
    process = _spawn("sleep", S3002)
    real_kill = os.kill
    try:
        _wait_for_exec(process.pid, f"sleep {S3002}")
        stopper = _stopper("psutil-fallback", rf"^sleep {S3002}$")
        candidate = _candidate(stopper, process.pid)

        def kill(pid: int, signum: int) -> None:
            if gone:
                real_kill(pid, signal.SIGKILL)
                process.wait()
            raise OSError(22, "The parameter is incorrect")

        monkeypatch.setattr(os, "kill", kill)
        action = stopper.stop(candidate)
        if gone:
            assert (action.signal, action.done) == ("none", True), action
            assert action.reason == "exited before it was signalled"
        else:
            assert (action.signal, action.done) == ("none", False), action
            assert action.reason == "could not be signalled: The parameter is incorrect"
            assert process.poll() is None
    finally:
        monkeypatch.undo()
        process.kill()
        process.wait()


# ---------------------------------------------------------------------------------------
# One rule for whose process it is, on both paths


def test_same_user_only_when_both_uids_are_known_and_equal() -> None:
    assert same_user(1000, 1000)
    assert not same_user(1000, 1001)
    assert not same_user(None, 1000)  # a process without uids (Windows)
    assert not same_user(1000, None)  # a platform without os.getuid (Windows)
    assert not same_user(None, None)


def test_same_start_is_within_a_millisecond() -> None:
    assert same_start(1000.0, 1000.0005)
    assert not same_start(1000.0, 1000.3)


@given(
    pid=st.integers(-5, 10**6),
    mine=st.booleans(),
    kernel_thread=st.booleans(),
    name=st.sampled_from(["sshd", "worker", None]),
)
def test_the_protection_rule_never_lets_a_pid_rule_or_another_user_through(
    pid: int, mine: bool, kernel_thread: bool, name: str | None
) -> None:
    own = (4242, 4241)
    reason = protection_reason(
        pid,
        own_pids=own,
        same_user=mine,
        kernel_thread=kernel_thread,
        name=name,
        protected_names=frozenset({"sshd"}),
    )
    unprotected = pid > 1 and pid not in own and mine and not kernel_thread and name != "sshd"
    assert (reason is None) == unprotected
    if pid > 1 and pid not in own and not mine:
        assert reason == "another user's process"


class _WindowsProcess:
    """A psutil.Process as on Windows: no uids(); its owner's name is the one
    ``psutil.Process().username()`` gives for this process too."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    @contextlib.contextmanager
    def oneshot(self) -> Iterator[None]:
        yield

    def status(self) -> str:
        return "sleeping"

    def create_time(self) -> float:
        return 1000.0

    def name(self) -> str:
        return "sleep"

    def ppid(self) -> int:
        return os.getpid()

    def memory_info(self) -> object:
        return type("Memory", (), {"rss": 1 << 20})()

    def username(self) -> str:
        return "alice"


def _as_on_windows(monkeypatch: pytest.MonkeyPatch, pid: int) -> None:
    import psutil

    monkeypatch.delattr(os, "getuid")
    monkeypatch.setattr(
        psutil, "Process", lambda *given: _WindowsProcess(given[0] if given else pid)
    )


def test_a_process_without_uids_where_there_is_no_getuid_is_another_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _as_on_windows(monkeypatch, 4321)
    read = read_portable(4321)
    assert read is not None
    assert (read[1].uid, read[1].same_user) == (None, False)
    assert ProcessStopper.protected(4321, None) == "another user's process"


@pytest.mark.parametrize("mode", ["psutil", "psutil-fallback"])
def test_where_uids_cannot_be_compared_no_process_is_signalled(
    mode: str, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    stopper = _stopper(mode, rf"^sleep {S3001}$", grace="10ms")
    _as_on_windows(monkeypatch, sleeper.pid)
    # a candidate that claims to be unprotected: stop() judges the process itself
    candidate = StopCandidate(
        sleeper.pid, None, "sleep", f"sleep {S3001}", None, 1 << 20, None, 1000.0, os.getpid()
    )
    action = stopper.stop(candidate)
    monkeypatch.undo()
    assert (action.signal, action.done) == ("none", False), action
    assert action.reason == "protected: another user's process"
    assert sleeper.poll() is None


def test_the_stopper_takes_a_backend_as_the_table_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from resguard._probes import backend as backend_module

    assert ProcessStopper(["x"], backend="psutil").backend == "psutil"
    assert ProcessStopper(["x"], backend="linux").backend == "linux"
    monkeypatch.setattr(backend_module, "_chosen", "psutil")
    assert ProcessStopper(["x"]).backend == "psutil"
    with pytest.raises(InvalidValue, match="backend='bsd'"):
        ProcessStopper(["x"], backend="bsd")  # type: ignore[arg-type]
    with pytest.raises(InvalidType, match="backend=3"):
        ProcessStopper(["x"], backend=3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# One process, and a verified handle for actions other than stop (the guardian's)


@pytest.mark.parametrize("mode", MODES)
def test_candidate_reads_one_process_as_candidates_lists_it(
    mode: str, sleeper: subprocess.Popen[bytes]
) -> None:
    stopper = _stopper(mode, rf"^sleep {S3001}$")
    one, listed = stopper.candidate(sleeper.pid), _candidate(stopper, sleeper.pid)
    assert one is not None
    fields = ("pid", "start_ticks", "create_time", "name", "cmdline", "uid", "protected")
    assert [getattr(one, f) for f in fields] == [getattr(listed, f) for f in fields]
    assert _stopper(mode, rf"^sleep {S3002}$").candidate(sleeper.pid) is None  # no match
    sleeper.kill()
    sleeper.wait()
    assert stopper.candidate(sleeper.pid) is None  # gone


@pytest.mark.parametrize("mode", MODES)
def test_verified_hands_out_a_handle_on_the_listed_process(
    mode: str, sleeper: subprocess.Popen[bytes]
) -> None:
    stopper = _stopper(mode, rf"^sleep {S3001}$")
    candidate = stopper.candidate(sleeper.pid)
    assert candidate is not None
    with stopper.verified(candidate) as (handle, why):
        assert (handle is not None, why) == (True, "")
        assert handle is not None
        assert handle.send(signal.SIGSTOP)
        wait_until(lambda: _stat_state(sleeper.pid) == "T", what="the sleeper to stop")
        assert handle.send(signal.SIGCONT)
    assert sleeper.poll() is None


def _stat_state(pid: int) -> str | None:
    stat = read_stat(pid)
    return stat.state if stat is not None else None


@pytest.mark.parametrize("mode", MODES)
def test_verified_refuses_a_process_that_is_not_the_listed_one(
    mode: str, sleeper: subprocess.Popen[bytes]
) -> None:
    stopper = _stopper(mode, rf"^sleep {S3001}$")
    candidate = stopper.candidate(sleeper.pid)
    assert candidate is not None
    if candidate.start_ticks is not None:  # listed one tick before this process started
        earlier = attrs.evolve(candidate, start_ticks=candidate.start_ticks - 1)
    else:
        assert candidate.create_time is not None
        earlier = attrs.evolve(candidate, create_time=candidate.create_time - 1.0)
    with stopper.verified(earlier) as (handle, why):
        assert handle is None
        assert why.startswith("gone before it was signalled")
    assert _stat_state(sleeper.pid) in ("S", "R")


@pytest.mark.parametrize("mode", ["pidfd", "psutil"])
def test_verified_refuses_another_users_process(mode: str) -> None:
    if os.geteuid() != 0:
        unavailable("starting another user's process needs root")
    process = _spawn("sleep", S3006, user=65534)
    try:
        _wait_for_exec(process.pid, f"sleep {S3006}")
        stopper = _stopper(mode, rf"^sleep {S3006}$")
        candidate = stopper.candidate(process.pid)
        assert candidate is not None
        with stopper.verified(candidate) as (handle, why):
            assert (handle, why) == (None, "protected: another user's process")
        # a listing forged as this user's is re-checked: the owner (linux), or the whole
        # identity with its owner (psutil: another process then, by its uid)
        forged = attrs.evolve(candidate, uid=os.getuid(), protected=None)
        refusal = "protected: another user's process" if mode == "pidfd" else "gone before"
        with stopper.verified(forged) as (handle, why):
            assert handle is None
            assert why.startswith(refusal)
        assert _stat_state(process.pid) in ("S", "R")
    finally:
        process.kill()
        process.wait()
