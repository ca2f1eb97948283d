"""The reclaim ladder under a real squeeze, and the opt-in process stopper's safety."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard import InvalidType, InvalidValue, ResguardError
from resguard import reclaim as reclaim_module
from resguard.reclaim import (
    Cost,
    GarbageCollect,
    Ladder,
    MallocTrim,
    ProcessStopper,
    register,
    registered,
    unregister,
)
from resguard.testing import ManualClock

MiB = 2**20
SLEEP_S = f"300{os.getpid()}"  # unique: other runs on this machine may sleep 300 too

SQUEEZE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from support import wait_until
import resguard as rg
from resguard.rules import Level, Policy, Threshold

policy = Policy([Threshold("memory.percent", ">", 60, level=Level.WARNING, clear=55)])
monitor = rg.Monitor("10ms", policy=policy, reclaim_to="50%", psi_trigger=False)
cache = rg.LRUCache(max_bytes="200MiB", register=monitor)  # on this monitor's ladder
for index in range(30):
    cache[index] = bytes([index]) * (4 * 2**20)          # 120 MiB of large values
model = rg.LazyModel(
    load=lambda: b"m" * (40 * 2**20), size="40MiB", name="model", register=monitor,
    reclaim_min_idle=0,                                   # idle enough at once
)
model.get()                                               # loaded, idle, unpinned
with monitor:
    ballast = b"b" * (30 * 2**20)                         # push the cgroup past 60 %
    wait_until(lambda: monitor.last_reclaim is not None, timeout_s=30, what="a reclaim")
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


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only the rungs it registers: caches other test modules left registered
    (alive until a gc) must not join these ladders."""
    monkeypatch.setattr(reclaim_module.PROCESS_REGISTRY, "_items", {})


@pytest.mark.linux_backend
@pytest.mark.cgroup
@pytest.mark.slow
def test_caches_shrink_first_under_a_real_squeeze(memory_cgroup) -> None:  # type: ignore[no-untyped-def]
    memory_cgroup.set_limit(300 * MiB)
    tests = os.path.dirname(os.path.abspath(__file__))
    child = memory_cgroup.python(SQUEEZE, tests, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
    clock = ManualClock(100.0)
    step = GarbageCollect(max_share=0.05, clock=clock)
    step.reclaim(1)
    assert step.collections == 1
    step.reclaim(1)  # the clock has not moved: a collection "took" 0 s, so allowed again
    assert step.collections == 2
    clock.advance(100.0)

    def one_second(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            clock.advance(1.0)

    gc.callbacks.append(one_second)  # the next collection takes 1 s ...
    try:
        step.reclaim(1)
    finally:
        gc.callbacks.remove(one_second)
    clock.now_s = 210.0  # ... so the next may run only 20 s later
    step.reclaim(1)
    assert step.collections == 3
    clock.now_s = 221.0
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
    gc.collect()
    assert all(entry.name != "temporary" for entry in registered())


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", SLEEP_S])
    yield process
    process.kill()
    process.wait()


def test_process_stopper_does_nothing_unless_enabled(sleeper: subprocess.Popen[bytes]) -> None:
    stopper = ProcessStopper([rf"^sleep {SLEEP_S}$"])
    assert stopper.reclaim(10**12) == 0
    assert stopper.reclaimable_bytes() == 0
    assert sleeper.poll() is None


def test_process_stopper_dry_run_lists_and_spares(sleeper: subprocess.Popen[bytes]) -> None:
    stopper = ProcessStopper([rf"^sleep {SLEEP_S}$"], enabled=True)  # dry_run defaults to True
    stopper.reclaim(10**12)
    assert any(
        action.pid == sleeper.pid and action.reason.startswith("dry run")
        for action in stopper.actions
    )
    with pytest.raises(subprocess.TimeoutExpired):  # nothing was sent: it runs on
        sleeper.wait(timeout=0.1)
    assert sleeper.poll() is None


def test_process_stopper_stops_a_match_when_opted_in(sleeper: subprocess.Popen[bytes]) -> None:
    stopper = ProcessStopper([rf"^sleep {SLEEP_S}$"], enabled=True, dry_run=False, grace="2s")
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
    stopper = ProcessStopper([r"never-a-process-name"], enabled=True)
    stopper.patterns = (re.compile(r"."),)  # every process (the stopper refuses such a pattern)
    stopper.reclaim(10**15)
    by_pid = {action.pid: action for action in stopper.actions}
    for pid in (1, me, parent):
        if pid in by_pid:
            assert by_pid[pid].reason.startswith("protected"), by_pid[pid]
            assert not by_pid[pid].done
    assert by_pid[me].reason == "protected: this process"


def test_process_stopper_rejects_a_single_string() -> None:
    with pytest.raises(InvalidType, match="one string"):
        ProcessStopper("sleep")


# ---------------------------------------------------------------------------------------
# Unknown memory (a measure that returns None) and bad input


class _Step:
    def __init__(self, name: str, cost: float, frees: int, used: list[int | None]) -> None:
        self.name, self.cost, self.frees, self.used = name, cost, frees, used
        self.calls = 0

    def reclaimable_bytes(self) -> int:
        return self.frees

    def reclaim(self, target_bytes: int) -> int:
        self.calls += 1
        if self.used[0] is not None:
            self.used[0] -= self.frees
        return self.frees


def test_unknown_memory_never_stops_processes() -> None:
    used: list[int | None] = [None]
    cache = _Step("cache", Cost.CACHE, 1 * MiB, used)
    stopper = _Step("stop processes", Cost.PROCESS, 500 * MiB, used)
    report = Ladder(lambda: used[0], min_reclaim=0, extra=[cache, stopper]).run(100 * MiB)
    assert stopper.calls == 0
    assert cache.calls == 1
    assert not report.measured
    assert [step.measured_bytes for step in report.steps] == [None, None]
    assert report.freed_bytes == 1 * MiB  # the cache's claim, counted for want of a measure
    assert not report.reached


def test_a_measure_that_fails_gives_unknown_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def measure() -> int:
        raise OSError("meminfo unreadable")

    ladder = Ladder(measure, min_reclaim=0)
    for _ in range(3):
        report = ladder.run(1)
    assert report.steps[0].measured_bytes is None
    assert caplog.text.count("meminfo unreadable") == 1


def test_a_measure_returning_garbage_is_unknown_not_a_number() -> None:
    for garbage in (-1, "5", 1.5, True):
        report = Ladder(lambda garbage=garbage: garbage, min_reclaim=0).run(1)  # type: ignore[misc]
        assert not report.measured


def test_known_memory_still_reaches_the_process_step() -> None:
    used: list[int | None] = [1000 * MiB]
    stopper = _Step("stop processes", Cost.PROCESS, 100 * MiB, used)
    report = Ladder(lambda: used[0], min_reclaim=0, extra=[stopper]).run(50 * MiB)
    assert stopper.calls == 1
    assert report.measured
    assert report.reached


@pytest.mark.parametrize(
    ("make", "error", "quoted"),
    [
        (lambda: GarbageCollect(max_share="x"), InvalidType, "'x'"),  # type: ignore[arg-type]
        (lambda: GarbageCollect(max_share=True), InvalidType, "True"),
        (lambda: GarbageCollect(max_share=None), InvalidType, "None"),  # type: ignore[arg-type]
        (lambda: GarbageCollect(max_share=float("nan")), InvalidValue, "nan"),
        (lambda: GarbageCollect(max_share=0), InvalidValue, "0"),
        (lambda: GarbageCollect(max_share=1.5), InvalidValue, "1.5"),
        (lambda: GarbageCollect(clock=5), InvalidType, "5"),  # type: ignore[arg-type]
        (lambda: Ladder(5), InvalidType, "5"),  # type: ignore[arg-type]
        (lambda: Ladder(lambda: 0, min_reclaim="lots"), InvalidValue, "'lots'"),
        (lambda: Ladder(lambda: 0, min_reclaim=-1), InvalidValue, "-1"),
        (lambda: Ladder(lambda: 0, gc_step=5), InvalidType, "5"),  # type: ignore[arg-type]
        (lambda: Ladder(lambda: 0, trim_step="trim"), InvalidType, "'trim'"),  # type: ignore[arg-type]
        (lambda: Ladder(lambda: 0, extra=[5]), InvalidType, "5"),  # type: ignore[list-item]
        (lambda: Ladder(lambda: 0, extra="cache"), InvalidType, "'cache'"),  # type: ignore[arg-type]
        (lambda: Ladder(lambda: 0).run("5MiB"), InvalidType, "'5MiB'"),  # type: ignore[arg-type]
        (lambda: Ladder(lambda: 0).run(None), InvalidType, "None"),  # type: ignore[arg-type]
        (lambda: register(5), InvalidType, "5"),  # type: ignore[arg-type]
        (lambda: register("cache"), InvalidType, "'cache'"),  # type: ignore[arg-type]
        (lambda: unregister(None), InvalidType, "None"),  # type: ignore[arg-type]
        (lambda: Cost(), InvalidType, "Cost.CACHE"),
        (lambda: Cost(5), InvalidType, "Cost.CACHE"),
        (lambda: ProcessStopper(["x"], enabled=True).reclaim("1GiB"), InvalidType, "'1GiB'"),  # type: ignore[arg-type]
    ],
)
def test_bad_reclaim_arguments_raise_resguard_errors(
    make: object, error: type[Exception], quoted: str
) -> None:
    with pytest.raises(error) as caught:
        make()  # type: ignore[operator]
    assert isinstance(caught.value, ResguardError)
    assert quoted in str(caught.value)
    assert "expected" in str(caught.value) or "not" in str(caught.value)


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()))
def test_gc_share_is_accepted_or_refused_with_a_resguard_error(share: object) -> None:
    try:
        step = GarbageCollect(max_share=share)  # type: ignore[arg-type]
    except ResguardError:
        return
    assert 0 < step.max_share <= 1


def test_a_reclaimable_with_a_bad_cost_is_refused_and_not_registered() -> None:
    class NaNCost:
        name, cost = "nan-cost", float("nan")

        def reclaimable_bytes(self) -> int:
            return 0

        def reclaim(self, target_bytes: int) -> int:
            return 0

    item = NaNCost()
    with pytest.raises(InvalidValue, match="nan"):
        register(item)
    assert item not in registered()


def test_a_cost_that_turns_bad_later_leaves_the_ladder_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Drifting:
        name = "drifting"

        def __init__(self) -> None:
            self.cost: object = 1.0

        def reclaimable_bytes(self) -> int:
            return 0

        def reclaim(self, target_bytes: int) -> int:
            return 0

    item = Drifting()
    register(item)  # type: ignore[arg-type]
    try:
        item.cost = "cheap"
        names = [step.name for step in Ladder(lambda: 0, process=True).steps()]  # no TypeError
        assert "drifting" not in names
        assert "drifting" in caplog.text
    finally:
        unregister(item)  # type: ignore[arg-type]


def test_an_object_without_weak_references_is_refused_with_a_reason() -> None:
    class Slotted:
        __slots__ = ()
        name, cost = "slotted", 1.0

        def reclaimable_bytes(self) -> int:
            return 0

        def reclaim(self, target_bytes: int) -> int:
            return 0

    with pytest.raises(InvalidType, match="weak reference"):
        register(Slotted())


def test_a_step_failing_on_every_climb_is_logged_once_not_per_climb(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    class Broken:
        name, cost = "broken", 1.0

        def __init__(self) -> None:
            self.calls = 0

        def reclaimable_bytes(self) -> int:
            return 1

        def reclaim(self, target_bytes: int) -> int:
            self.calls += 1
            raise RuntimeError(f"bug number {self.calls}")

    broken = Broken()
    ladder = Ladder(lambda: 0, extra=[broken])
    caplog.set_level(logging.INFO, logger="resguard")
    for _ in range(50):  # a Monitor at WARNING climbs the ladder again and again
        ladder.run(1)
    assert broken.calls == 50
    assert sum("broken" in record.getMessage() for record in caplog.records) == 1


def test_an_unknown_memory_use_skips_the_process_step_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    used: list[int | None] = [None]
    stopper = _Step("stop processes", Cost.PROCESS, 500 * MiB, used)
    ladder = Ladder(lambda: used[0], min_reclaim=0, extra=[stopper])
    caplog.set_level(logging.INFO, logger="resguard")
    for _ in range(50):
        ladder.run(100 * MiB)
    assert stopper.calls == 0
    assert (
        sum(
            "stop processes" in record.getMessage() and "unknown" in record.getMessage()
            for record in caplog.records
        )
        == 1
    )


@pytest.mark.parametrize(
    ("pid", "start_ticks", "error"),
    [
        (0, 1, InvalidValue),
        (-1, 1, InvalidValue),
        (-2, 1, InvalidValue),
        (12, -1, InvalidValue),
        ("123", 1, InvalidType),
        (1.0, 1, InvalidType),
        (None, 1, InvalidType),
        (12, "1", InvalidType),
        (12, None, InvalidType),
    ],
)
def test_a_hand_made_candidate_that_is_not_one_process_is_refused_before_any_signal(
    pid: object, start_ticks: object, error: type[Exception]
) -> None:
    from resguard.reclaim import StopCandidate

    stopper = ProcessStopper([r"x"], enabled=True, dry_run=False, grace="10ms")
    stopper._use_pidfd = False  # the fallback path that would call os.kill(pid)
    candidate = StopCandidate(
        pid=pid,  # type: ignore[arg-type]
        start_ticks=start_ticks,  # type: ignore[arg-type]
        name="x",
        cmdline="x",
        uid=os.getuid(),
        rss=1,
        protected=None,
    )
    with pytest.raises(error):
        stopper.stop(candidate)


@pytest.mark.parametrize("pid", [0, -1, -5])
def test_group_pids_are_protected(pid: int) -> None:
    assert ProcessStopper.protected(pid, os.getuid()) is not None


@pytest.mark.parametrize("pid", ["1", None, 1.0, True])
def test_protected_of_what_is_not_a_pid_is_a_type_error(pid: object) -> None:
    with pytest.raises(InvalidType):
        ProcessStopper.protected(pid, os.getuid())  # type: ignore[arg-type]


def test_a_dry_run_warns_once_per_process_not_per_climb(
    sleeper: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from resguard.reclaim import ACTIONS_KEPT

    stopper = ProcessStopper([rf"sleep {SLEEP_S}"], enabled=True)
    caplog.set_level(logging.WARNING, logger="resguard")
    for _ in range(ACTIONS_KEPT + 20):
        stopper.reclaim(1)
    assert sum(f"pid {sleeper.pid}" in record.getMessage() for record in caplog.records) == 1
    assert len(stopper.actions) == ACTIONS_KEPT  # the latest, not every climb forever
    assert stopper.actions[-1].pid == sleeper.pid
    assert sleeper.poll() is None


@pytest.mark.parametrize("clock", [lambda: "x", lambda: float("nan"), lambda: 10**400])
def test_a_gc_clock_answering_garbage_is_refused_when_given(clock: object) -> None:
    with pytest.raises((InvalidType, InvalidValue), match="clock="):
        GarbageCollect(clock=clock)  # type: ignore[arg-type]
