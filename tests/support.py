"""Small helpers shared by several test modules (fixtures live in tests/plugins/)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from resguard.snapshot import Sampler, Snapshot


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_python(code: str) -> str:
    """Run *code* in a fresh interpreter (this one's) and return what it printed."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def wait_until(predicate: Callable[[], object], *, timeout_s: float = 10.0, what: str) -> None:
    """Poll *predicate* until it is true; fail the test with *what* after *timeout_s*.

    For waiting on another process or thread to reach a state (a real integration test);
    timing logic is tested with ``resguard.testing.ManualClock`` instead.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.005)


@contextlib.contextmanager
def fresh_fault_log() -> Iterator[None]:
    """Inside it, the sense layer's fault log starts empty: each test sees its own first
    warnings (the psutil calls' and files' names are the same in every test, and a source
    failing again within a minute is not logged again). Its own MonkeyPatch, so a test's
    ``monkeypatch.undo()`` leaves it in place."""
    from resguard._probes import reporting

    patch = pytest.MonkeyPatch()
    patch.setattr(reporting, "_logged_at", {})
    patch.setattr(reporting, "_quiet", set())
    patch.setattr(reporting.SENSING_FAULTS, "_failing", {})
    patch.setattr(reporting.SENSING_FAULTS, "_kinds", {})
    try:
        yield
    finally:
        patch.undo()


def warnings_about(
    caplog: pytest.LogCaptureFixture, source: str, text: str = "is failing"
) -> list[str]:
    """The sense layer's warnings (``resguard.snapshot``) about *source* that say *text*:
    ``"is failing"`` (the default) or ``"works again"``, or a kind such as
    ``"is failing: garbage"``."""
    import logging

    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "resguard.snapshot"
        and record.levelno == logging.WARNING
        and record.getMessage().startswith(source + " ")
        and text in record.getMessage()
    ]


def sample_beside_a_stalled_walk(
    sampler: Sampler,
    walk: Callable[[], object],
    walking: threading.Event,
    release: threading.Event,
) -> Snapshot | None:
    """Run *walk* (a sample that sums children) in a thread until it sets the event
    *walking* inside its children walk, then take ``sampler.sample(children=False)`` in
    another thread: that snapshot, or ``None`` when it still waited after 5 s (it was
    blocked behind the walk). Setting *release* lets the walk finish."""
    walker = threading.Thread(target=walk)
    walker.start()
    try:
        assert walking.wait(5), "the walk never reached the children"
        other: list[Snapshot] = []
        sampling = threading.Thread(target=lambda: other.append(sampler.sample(children=False)))
        sampling.start()
        sampling.join(5)
        return other[0] if other else None
    finally:
        release.set()
        walker.join(10)


def run_threads(
    count: int,
    target: Callable[[int], object],
    *,
    switch_interval_s: float | None = None,
    join_timeout_s: float = 120.0,
) -> None:
    """Run ``target(index)`` in *count* threads released together by a barrier, and fail the
    test when any raised or is still running after *join_timeout_s* (daemon threads: a hung
    one cannot hold the run open). With *switch_interval_s* the interpreter switches threads
    that often meanwhile (``sys.setswitchinterval``), so that their steps interleave."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    old_interval_s = sys.getswitchinterval()
    if switch_interval_s is not None:
        sys.setswitchinterval(switch_interval_s)
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + join_timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    finally:
        sys.setswitchinterval(old_interval_s)
    assert not any(thread.is_alive() for thread in threads), "threads hung"
    assert errors == []


def process_state(pid: int) -> str:
    """The process's state letter in /proc/PID/stat (``R``, ``S``, ``D``; ``T`` stopped)."""
    with open(f"/proc/{pid}/stat") as file:
        return file.read().rsplit(")", 1)[1].split()[0]


def process_cmdline(pid: int) -> bytes:
    """/proc/PID/cmdline as read now (empty when the process is gone): a child just forked
    still has its parent's, so tests wait for their marker in it before acting."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read()
    except OSError:
        return b""
