"""The reclaim ladder under a real squeeze, and the opt-in process stopper's safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from resguard.reclaim import GarbageCollect, Ladder, MallocTrim, ProcessStopper, registered

MiB = 2**20

SQUEEZE = r"""
import json, time
import resguard as rg
from resguard.rules import Level, Policy, Threshold

cache = rg.LRUCache(max_bytes="200MiB")
for index in range(30):
    cache[index] = bytes([index]) * (4 * 2**20)          # 120 MiB of large values
model = rg.LazyModel(load=lambda: b"m" * (40 * 2**20), size="40MiB", name="model")
model.get()                                               # loaded, idle, unpinned

policy = Policy([Threshold("memory.percent", ">", 60, level=Level.WARNING, clear=55)])
monitor = rg.Monitor("10ms", policy=policy, reclaim_to="50%", psi_trigger=False)
with monitor:
    ballast = b"b" * (30 * 2**20)                         # push the cgroup past 60 %
    deadline = time.monotonic() + 30
    while monitor.last_reclaim is None and time.monotonic() < deadline:
        time.sleep(0.01)
    report = monitor.last_reclaim
    time.sleep(0.2)
    after = rg.snapshot().memory
stats = cache.stats()
print(json.dumps({
    "steps": [[step.name, step.claimed_bytes, step.measured_bytes] for step in report.steps],
    "target": report.target_bytes, "freed": report.freed_bytes,
    "shrinks": stats.shrinks, "reclaimed": stats.reclaimed_bytes, "cache_bytes": stats.bytes,
    "model_loaded": model.loaded, "source": after.source, "percent_after": after.percent,
}))
"""


@pytest.mark.cgroup
@pytest.mark.slow
def test_caches_shrink_first_under_a_real_squeeze(memory_cgroup) -> None:  # type: ignore[no-untyped-def]
    memory_cgroup.set_limit(300 * MiB)
    child = memory_cgroup.python(SQUEEZE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["source"] == "cgroup"
    names = [name for name, _, _ in result["steps"]]
    assert names[0] == "gc.collect"
    assert "LRUCache" in names[1] or "cache" in names[1].lower()
    assert result["shrinks"] >= 1
    assert result["reclaimed"] >= 4 * MiB  # the cache's own account of what it gave back
    assert result["freed"] >= result["target"]  # measured, not claimed
    assert result["model_loaded"]  # the cache was enough: the model was not unloaded
    assert "model" not in names
    assert result["percent_after"] < 60


def test_ladder_trusts_measurements_not_claims() -> None:
    used = [1000 * MiB]

    class Liar:
        name, cost = "liar", 1.0

        def reclaimable_bytes(self) -> int:
            return 500 * MiB

        def reclaim(self, target_bytes: int) -> int:
            return 500 * MiB  # claims a lot, frees nothing

    class Honest:
        name, cost = "honest", 2.0

        def reclaimable_bytes(self) -> int:
            return 100 * MiB

        def reclaim(self, target_bytes: int) -> int:
            used[0] -= 100 * MiB
            return 100 * MiB

    ladder = Ladder(lambda: used[0], min_reclaim="10MiB", extra=[Liar(), Honest()])
    report = ladder.run(50 * MiB)
    assert report.target_bytes == 60 * MiB
    assert [step.name for step in report.steps] == ["gc.collect", "liar", "honest"]
    liar = report.steps[1]
    assert (liar.claimed_bytes, liar.measured_bytes) == (500 * MiB, 0)
    assert report.freed_bytes == 100 * MiB
    assert report.reached


def test_a_failing_step_does_not_break_the_ladder(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        name, cost = "broken", 1.0

        def reclaimable_bytes(self) -> int:
            return 1

        def reclaim(self, target_bytes: int) -> int:
            raise RuntimeError("bug in a reclaimable")

    report = Ladder(lambda: 0, extra=[Broken()]).run(1)
    assert "broken" not in [step.name for step in report.steps]
    assert "bug in a reclaimable" in caplog.text


def test_gc_is_throttled_to_its_share_of_wall_time() -> None:
    now = [100.0]

    def clock() -> float:
        return now[0]

    step = GarbageCollect(max_share=0.05, clock=clock)
    step.reclaim(1)
    assert step.collections == 1
    step.reclaim(1)  # the clock has not moved: a collection "took" 0 s, so allowed again
    assert step.collections == 2
    original = step._clock
    calls = iter([200.0, 201.0])  # the next collection takes 1 s ...
    step._clock = lambda: next(calls)
    step.reclaim(1)
    step._clock = original
    now[0] = 210.0  # ... so the next may run only 20 s later
    step.reclaim(1)
    assert step.collections == 3
    now[0] = 221.0
    step.reclaim(1)
    assert step.collections == 4


def test_malloc_trim_is_found_on_glibc() -> None:
    trim = MallocTrim()
    if sys.platform.startswith("linux") and os.path.exists("/lib/x86_64-linux-gnu/libc.so.6"):
        assert trim.available
    trim.trim()  # harmless where present, a no-op elsewhere


def test_registry_holds_weak_references() -> None:
    from resguard.reclaim import register

    class Item:
        name, cost = "temporary", 1.0

        def reclaimable_bytes(self) -> int:
            return 0

        def reclaim(self, target_bytes: int) -> int:
            return 0

    item = Item()
    register(item)
    assert item in registered()
    del item
    import gc

    gc.collect()
    assert all(entry.name != "temporary" for entry in registered())


@pytest.fixture
def sleeper() -> subprocess.Popen[bytes]:
    process = subprocess.Popen(["sleep", "300"])
    yield process  # type: ignore[misc]
    process.kill()
    process.wait()


def test_process_stopper_does_nothing_unless_enabled(sleeper: subprocess.Popen[bytes]) -> None:
    stopper = ProcessStopper([r"^sleep 300$"])
    assert stopper.reclaim(10**12) == 0
    assert stopper.reclaimable_bytes() == 0
    assert sleeper.poll() is None


def test_process_stopper_dry_run_lists_and_spares(sleeper: subprocess.Popen[bytes]) -> None:
    stopper = ProcessStopper([r"^sleep 300$"], enabled=True)  # dry_run defaults to True
    stopper.reclaim(10**12)
    assert any(action.pid == sleeper.pid and action.reason == "dry run"
               for action in stopper.actions)
    time.sleep(0.1)
    assert sleeper.poll() is None


def test_process_stopper_stops_a_match_when_opted_in(sleeper: subprocess.Popen[bytes]) -> None:
    stopper = ProcessStopper([r"^sleep 300$"], enabled=True, dry_run=False, grace="2s")
    stopper.reclaim(1)
    assert sleeper.wait(timeout=10) is not None
    action = next(action for action in stopper.actions if action.pid == sleeper.pid)
    assert action.done
    assert action.signal == "SIGTERM"


def test_process_stopper_never_touches_protected_processes() -> None:
    me, parent = os.getpid(), os.getppid()
    assert ProcessStopper.protected(1, 0) == "PID 1"
    assert ProcessStopper.protected(me, os.getuid()) == "this process"
    assert ProcessStopper.protected(parent, os.getuid()) == "this process's parent"
    assert ProcessStopper.protected(999_999, os.getuid() + 1) == "another user's process"
    assert ProcessStopper.protected(999_999, None) == "another user's process"
    # a pattern matching everything, in dry run: PID 1, this process and its parent are
    # reported as protected and never as a stop
    stopper = ProcessStopper([r"."], enabled=True)
    stopper.reclaim(10**15)
    by_pid = {action.pid: action for action in stopper.actions}
    for pid in (1, me, parent):
        if pid in by_pid:
            assert by_pid[pid].reason.startswith("protected"), by_pid[pid]
            assert not by_pid[pid].done
    assert by_pid[me].reason == "protected: this process"


def test_process_stopper_rejects_a_single_string() -> None:
    from resguard import InvalidType

    with pytest.raises(InvalidType, match="one string"):
        ProcessStopper("sleep")  # type: ignore[arg-type]
