"""Issue 13's acceptance on this machine, no mocks: the psutil backend against psutil and
the linux backend while a real process grows, a Guard and the presets on it, the command
line under RESGUARD_BACKEND=psutil; and the linux backend on an empty /proc (what a Mac
looked like to resguard before) reporting unknown, never zeros."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import psutil
import pytest

from resguard import Guard, Monitor, ResourceExhausted, presets
from resguard.rules import Level, Policy
from resguard.snapshot import Roots, Sampler

MiB = 2**20
GROWER = """
import sys
chunks = []
print("ready", flush=True)
for line in sys.stdin:  # one line per step: allocate and touch that many bytes
    chunks.append(b"\\x01" * int(line))
    print("grown", flush=True)
"""
RESGUARD = [sys.executable, "-m", "resguard"]


@pytest.fixture
def grower() -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", GROWER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    yield child
    child.kill()
    child.wait()


def grow(child: subprocess.Popen[str], size: int) -> None:
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write(f"{size}\n")
    child.stdin.flush()
    assert child.stdout.readline() == "grown\n"


def test_the_psutil_total_is_psutil_s() -> None:
    assert Sampler(backend="psutil").sample().memory.total == psutil.virtual_memory().total


def test_used_and_available_agree_with_the_linux_backend_while_a_process_grows(
    grower: subprocess.Popen[str],
) -> None:
    portable, kernel = Sampler(backend="psutil"), Sampler(backend="linux")
    if kernel.sample().memory.source != "host":
        pytest.skip("a cgroup limit binds the linux backend here: it answers another question")
    for step in range(5):
        if step:
            grow(grower, 50 * MiB)
        ours, theirs = portable.sample().memory, kernel.sample().memory
        assert ours.used is not None
        assert ours.available is not None
        assert theirs.used is not None
        assert theirs.available is not None
        assert ours.used == pytest.approx(theirs.used, rel=0.05)
        assert ours.available == pytest.approx(theirs.available, rel=0.05)
    assert psutil.Process(grower.pid).memory_info().rss >= 200 * MiB


def test_a_guard_on_the_psutil_backend_admits_and_refuses_beyond_the_headroom() -> None:
    sampler = Sampler(backend="psutil")
    monitor = Monitor(sampler=sampler, reclaim=False, psi_trigger=False)
    guard = Guard(memory="90%", reserve="100MiB", monitor=monitor)
    memory = sampler.sample().memory
    assert memory.percent is not None
    if memory.percent > 80:
        pytest.skip(f"this machine is not calm: {memory.percent:.0f}% of memory used")
    with guard.admit():
        assert guard.stats().reserved_bytes == 100 * MiB
    headroom = guard.headroom_bytes()
    assert memory.total is not None
    assert 0 < headroom < memory.total
    with pytest.raises(ResourceExhausted, match="headroom"), guard.admit(reserve=headroom + MiB):
        pass
    assert guard.unknown_reason(verdict=False) is None  # every number it needs is known


def _expected(percent: float, warning: float, critical: float) -> Level:
    if percent >= critical:
        return Level.CRITICAL
    return Level.WARNING if percent >= warning else Level.OK


@pytest.mark.parametrize(
    ("preset", "warning", "critical"), [(presets.laptop, 85, 95), (presets.service, 80, 90)]
)
def test_the_presets_evaluate_a_psutil_snapshot(
    preset: Callable[[], Policy], warning: float, critical: float
) -> None:
    """The presets judge the psutil backend's memory percentage by their thresholds (a
    one-sample verdict: the process and trend rules have nothing to judge yet), for the
    measured number and for the same snapshot at each threshold."""
    snap = Sampler(backend="psutil").sample()
    percent = snap.memory.percent
    assert percent is not None
    verdict = preset().evaluate(snap)
    assert verdict.known, verdict.unknown
    assert verdict.level == _expected(percent, warning, critical), verdict
    for at in (warning - 1, warning, critical):
        moved = attrs.evolve(snap, memory=attrs.evolve(snap.memory, percent=float(at)))
        assert preset().evaluate(moved).level == _expected(at, warning, critical), at


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESGUARD_BACKEND": "psutil"}
    return subprocess.run(
        [*RESGUARD, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_snapshot_json_on_the_psutil_backend_shows_real_numbers() -> None:
    done = cli("snapshot", "--json")
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    assert snap["memory"]["total"] == psutil.virtual_memory().total
    assert snap["memory"]["source_detail"] == "psutil.virtual_memory()"
    assert 0 < snap["memory"]["used"] < snap["memory"]["total"]
    assert snap["process"]["rss"] > 0
    assert snap["faults"] == []


def test_watch_once_on_the_psutil_backend_shows_real_numbers() -> None:
    done = cli("watch", "--once")
    assert done.returncode == 0, done.stderr
    gib = psutil.virtual_memory().total / 2**30
    assert f"/{gib:.1f} GiB host" in done.stdout
    assert "unknown" not in done.stdout
    assert "0 B/0 B" not in done.stdout


# -------------------------------------------- the linux backend on an empty /proc ---


@pytest.fixture
def empty_roots(tmp_path: Path) -> Roots:
    (tmp_path / "proc").mkdir()
    (tmp_path / "cgroup").mkdir()
    return Roots(proc=str(tmp_path / "proc"), cgroup=str(tmp_path / "cgroup"))


def test_an_empty_proc_is_unknown_never_zero(empty_roots: Roots) -> None:
    snap = Sampler(empty_roots).sample()
    memory = snap.memory
    assert (memory.total, memory.limit, memory.used, memory.available) == (None,) * 4
    assert memory.percent is None
    assert memory.source == "unknown"
    assert snap.fault_for("memory.percent") is not None
    assert (snap.swap.total, snap.cpu.percent, snap.process.rss) == (None, None, None)


def test_on_an_empty_proc_the_laptop_verdict_says_unknown_not_ok_zero(
    empty_roots: Roots,
) -> None:
    verdict = presets.laptop().evaluate(Sampler(empty_roots).sample())
    assert not verdict.known
    assert "unknown: memory.percent" in verdict.reason
    assert "0.0" not in verdict.reason


def test_on_an_empty_proc_a_guard_with_a_reservation_does_not_refuse_every_call(
    empty_roots: Roots,
) -> None:
    monitor = Monitor(sampler=Sampler(empty_roots), reclaim=False, psi_trigger=False)
    guard = Guard(memory="90%", reserve="100MiB", monitor=monitor)
    for _ in range(3):
        with guard.admit(reserve="1MiB"):
            pass
    assert guard.stats().admitted == 3
    reason = guard.unknown_reason()
    assert reason is not None
    assert "memory.available is unknown" in reason


def test_a_plain_guard_measures_through_the_psutil_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As under RESGUARD_BACKEND=psutil (or on a Mac): Guard(memory="90%",
    reserve="100MiB") with no Monitor samples through the default sampler."""
    from resguard.snapshot import default_sampler, snapshot
    from resguard.testing import use_backend

    with use_backend("psutil"):
        assert default_sampler().backend == "psutil"
        snap = snapshot()
        guard = Guard(memory="90%", reserve="100MiB")
    assert snap.memory.source_detail in ("psutil.virtual_memory()", "RLIMIT_AS", "RLIMIT_DATA")
    assert snap.memory.percent is not None
    if snap.memory.percent > 80:
        pytest.skip(f"this machine is not calm: {snap.memory.percent:.0f}% of memory used")
    with guard.admit():
        pass
    with pytest.raises(ResourceExhausted), guard.admit(reserve=guard.headroom_bytes() + MiB):
        pass
    assert guard.stats().admitted == 1
