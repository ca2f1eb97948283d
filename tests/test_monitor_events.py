"""The Monitor woken by kernel memory events (issue 15): a real cgroup v1 child crossing a
threshold, re-armed at a new limit, an OOM kill published and exported, the same verdicts
without events, the single line of the polling fallback, ``async with``, and no descriptor
or thread left behind (after stop, after ``async with``, in a forked child)."""

from __future__ import annotations

import gc
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from forking import in_child
from resguard import InvalidType
from resguard.monitor import BURST_S, EVENT_KINDS, Monitor, _events, _steps
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import Sampler, Snapshot
from resguard.testing import KernelTree, ManualClock, Roots, make_snapshot

from plugins.integration import unavailable
from support import wait_until

MiB = 2**20
GiB = 2**30

GROWER = """
import sys
blocks = []
for line in sys.stdin:
    blocks.append(b"x" * (int(line) * 2**20))
    print("done", flush=True)
"""

SLOW = "30s"  # every wait of the fast loop: polling alone cannot see a crossing in time


def half_warns() -> Policy:
    """WARNING above 50 % of the limit (clear at 40 %): edges at 40 and 50 %."""
    return Policy(
        [Threshold("memory.percent", ">", 50, level=Level.WARNING, clear=40, name="half")]
    )


class Grower:
    """A child in the cgroup that allocates what it is told, in MiB."""

    def __init__(self, cgroup: Any) -> None:
        self.cgroup = cgroup
        self.process = cgroup.python(
            GROWER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def grow(self, mib: int) -> None:
        self.process.stdin.write(f"{mib}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "done"

    def grow_to(self, target_bytes: int, step_mib: int = 8) -> None:
        while self.cgroup.usage_bytes() < target_bytes:
            self.grow(step_mib)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def v1_cgroup(memory_cgroup: Any) -> Any:
    if memory_cgroup.version != "v1":
        unavailable("the usage thresholds are cgroup v1's (cgroup.event_control)")
    return memory_cgroup


@pytest.fixture
def grower(v1_cgroup: Any) -> Iterator[Grower]:
    child = Grower(v1_cgroup)
    try:
        yield child
    finally:
        child.close()


def slow_monitor(cgroup: Any, **kwargs: Any) -> Monitor:
    """A monitor of *cgroup* whose every wait is :data:`SLOW`: only an event wakes it."""
    options: dict[str, Any] = {
        "policy": half_warns(),
        "cgroup": str(cgroup.path),
        "reclaim": False,
        "interval": SLOW,
        "min_interval": SLOW,
        "relaxed_interval": SLOW,
    }
    options.update(kwargs)
    return Monitor(**options)


def thresholds_armed(monitor: Monitor) -> bool:
    """Whether the loop ticked and armed usage thresholds ("v1 usage thresholds at 2 ...")."""
    found = re.search(r"usage thresholds at (\d+)", " ".join(monitor.events_armed))
    return monitor.ticks >= 1 and found is not None and int(found.group(1)) > 0


def wait_all_armed(monitor: Monitor) -> None:
    """Until the loop armed thresholds, and the kernel side registered all it was asked
    for (a worker registers them one by one, nearest first)."""
    wait_until(lambda: thresholds_armed(monitor), what=f"thresholds ({monitor.events_armed})")
    events = monitor._wakeups.events
    assert events is not None
    assert events.wait_armed(10.0)


# -- a real crossing ---------------------------------------------------------------------


@pytest.mark.cgroup
@pytest.mark.linux_backend
def test_a_crossing_in_a_real_cgroup_wakes_the_monitor_through_an_event(
    v1_cgroup: Any, grower: Grower
) -> None:
    v1_cgroup.set_limit(256 * MiB)
    grower.grow_to(60 * MiB)  # below both edges (102 and 128 MiB)
    monitor = slow_monitor(v1_cgroup)
    seen: list[Any] = []
    monitor.subscribe_events(seen.append)
    with monitor:
        wait_all_armed(monitor)
        grower.grow_to(150 * MiB)  # past 50 %
        wait_until(
            lambda: monitor.state.level == Level.WARNING,
            timeout_s=20,  # within one 30 s wait: only an event can have woken it
            what=f"WARNING (now {monitor.state.snapshot.memory})",
        )
    assert monitor.triggered_wakeups >= 1  # by an event that said something
    assert monitor.event_counts["threshold"] >= 1
    assert any(event.kind == "threshold" for event in seen)
    assert monitor.events_armed == ()  # stopped: nothing armed any more


@pytest.mark.cgroup
@pytest.mark.linux_backend
def test_a_cgroup_removed_and_made_again_is_armed_anew_and_its_removal_is_no_event(
    v1_cgroup: Any,
) -> None:
    # R1 A and D: the events stayed on the dead memcg (the binding looked the same once
    # the cgroup was back), so crossings in the new one woke nothing; and the removal
    # itself, which signals every eventfd, was counted as threshold, oom and pressure
    v1_cgroup.set_limit(256 * MiB)
    monitor = Monitor(
        policy=half_warns(),
        cgroup=str(v1_cgroup.path),
        reclaim=False,
        interval="50ms",  # while the cgroup is gone memory is unknown: polled at this
        min_interval="5ms",
        relaxed_interval="30s",  # once armed only an event can wake it in time
    )
    with monitor:
        wait_all_armed(monitor)
        counts = monitor.event_counts
        v1_cgroup.path.rmdir()  # nothing runs in it: the kernel lets it go while armed
        wait_until(lambda: monitor.events_armed == (), timeout_s=10, what="events closed")
        assert monitor.event_counts == counts  # the removal's signals are no events
        v1_cgroup.path.mkdir()
        v1_cgroup.set_limit(256 * MiB)
        wait_all_armed(monitor)  # on the new cgroup
        grower = Grower(v1_cgroup)
        try:
            wakeups = monitor.triggered_wakeups
            grower.grow_to(150 * MiB)  # past 50 %
            wait_until(
                lambda: monitor.state.level == Level.WARNING,
                timeout_s=20,  # within one 30 s wait: only an event can have woken it
                what=f"WARNING (now {monitor.state.snapshot.memory})",
            )
        finally:
            grower.close()
    assert monitor.triggered_wakeups > wakeups
    assert monitor.event_counts["threshold"] > counts["threshold"]


@pytest.mark.cgroup
@pytest.mark.linux_backend
def test_a_new_limit_is_armed_at_its_own_edges(v1_cgroup: Any, grower: Grower) -> None:
    v1_cgroup.set_limit(256 * MiB)
    grower.grow_to(60 * MiB)
    # a 1 s pace, so that the new limit is seen; the edge that fires says which was armed
    monitor = slow_monitor(v1_cgroup, interval="1s", min_interval="1s", relaxed_interval="1s")
    seen: list[Any] = []
    monitor.subscribe_events(seen.append)
    with monitor:
        wait_until(lambda: thresholds_armed(monitor), what="thresholds")
        v1_cgroup.set_limit(512 * MiB)  # the edges move to 204.8 and 256 MiB
        wait_until(
            lambda: monitor.state.snapshot.memory.limit == 512 * MiB,
            timeout_s=20,
            what="the new limit",
        )
        ticks = monitor.ticks
        wait_until(lambda: monitor.ticks >= ticks + 2, timeout_s=10, what="a tick after it")
        events = monitor._wakeups.events
        assert events is not None
        assert events.wait_armed(10.0)  # the worker registered the new edges
        seen.clear()
        grower.grow_to(270 * MiB)  # past 50 % of the new limit
        wait_until(lambda: monitor.state.level == Level.WARNING, timeout_s=20, what="WARNING")
        wait_until(
            lambda: any(str(256 * MiB) in event.detail for event in seen),
            timeout_s=10,
            what=f"the new 50 % edge firing ({[event.detail for event in seen]})",
        )
    old_edges = (str(int(256 * MiB * 0.4)), str(128 * MiB))
    assert not any(edge in event.detail for event in seen for edge in old_edges)


@pytest.mark.cgroup
@pytest.mark.linux_backend
def test_with_thresholds_armed_at_the_edges_the_loop_relaxes_in_a_small_cgroup(
    v1_cgroup: Any, grower: Grower
) -> None:
    v1_cgroup.set_limit(256 * MiB)  # 256 MiB fills in 43 ms at the pace's rate: all is near
    grower.grow_to(60 * MiB)
    pace: dict[str, Any] = {"reclaim": False, "min_interval": "5ms", "relaxed_interval": "400ms"}
    polled = Monitor(policy=half_warns(), cgroup=str(v1_cgroup.path), events=False, **pace)
    polled.sample_now()
    assert polled.next_interval_s() == 0.005  # pacing alone: every edge is close
    monitor = Monitor(policy=half_warns(), cgroup=str(v1_cgroup.path), **pace)
    with monitor:
        wait_until(lambda: thresholds_armed(monitor), what="thresholds")
        # the kernel wakes the loop at each edge: no need to poll towards them
        wait_until(lambda: monitor.next_interval_s() == 0.4, timeout_s=5, what="relaxed")
    assert monitor.next_interval_s() == 0.005  # stopped: nothing armed, paced again


@pytest.mark.cgroup
@pytest.mark.linux_backend
def test_an_oom_kill_is_published_counted_logged_and_exported(
    v1_cgroup: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from resguard.prometheus import ResguardCollector

    caplog.set_level(logging.WARNING, logger="resguard")
    v1_cgroup.set_limit(64 * MiB)
    monitor = slow_monitor(v1_cgroup)
    registry = CollectorRegistry()
    registry.register(ResguardCollector(monitor))
    before = generate_latest(registry).decode()
    assert "resguard_oom_kills_total 0.0" in before  # present at 0 from the first scrape
    for kind in EVENT_KINDS:
        assert f'resguard_memory_events_total{{kind="{kind}"}} 0.0' in before
    seen: list[Any] = []
    monitor.subscribe_events(seen.append)
    with monitor:
        wait_until(lambda: monitor.events_armed != (), what="the events armed")
        hog = v1_cgroup.python("blocks = [b'x' * 2**20 for _ in range(256)]")
        hog.wait(timeout=30)
        wait_until(
            lambda: any(event.kind == "oom_kill" for event in seen),
            timeout_s=20,
            what=f"an oom_kill event (seen {seen})",
        )
    assert v1_cgroup.oom_kills() >= 1
    assert monitor.event_counts["oom_kill"] >= 1
    kills = [r.getMessage() for r in caplog.records if r.getMessage().startswith("OOM kill")]
    assert kills
    assert str(v1_cgroup.path) in kills[0]
    after = generate_latest(registry).decode()
    count = monitor.event_counts["oom_kill"]
    assert f"resguard_oom_kills_total {float(count)}" in after
    assert f'resguard_memory_events_total{{kind="oom_kill"}} {float(count)}' in after


# -- async ---------------------------------------------------------------------------------


@pytest.mark.cgroup
@pytest.mark.linux_backend
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_with_is_woken_by_an_event_and_leaves_nothing_behind(
    v1_cgroup: Any, grower: Grower, backend: str
) -> None:
    v1_cgroup.set_limit(256 * MiB)
    grower.grow_to(60 * MiB)
    monitor = slow_monitor(v1_cgroup)
    fds, threads = _open_fds(), _our_threads()

    async def main() -> None:
        async with monitor:
            with anyio.fail_after(10):
                while not thresholds_armed(monitor):
                    await anyio.sleep(0.01)
            await anyio.to_thread.run_sync(wait_all_armed, monitor)
            grower.grow_to(150 * MiB)
            with anyio.fail_after(20):  # within one 30 s wait: an event woke the task
                while monitor.state.level != Level.WARNING:
                    await anyio.sleep(0.01)

    anyio.run(main, backend=backend)
    assert monitor.triggered_wakeups >= 1
    assert monitor.event_counts["threshold"] >= 1
    assert not monitor.running
    assert monitor.events_armed == ()
    assert _open_fds() <= fds
    _no_new_threads(threads)


def test_leaving_async_with_at_once_never_hangs_and_leaks_nothing() -> None:
    monitor = Monitor(policy=half_warns(), reclaim=False, interval=SLOW, relaxed_interval=SLOW)
    fds, threads = _open_fds(), _our_threads()

    async def main() -> None:
        with anyio.fail_after(10):
            for _ in range(3):
                async with monitor:
                    await anyio.sleep(0)

    anyio.run(main)
    assert _open_fds() <= fds
    _no_new_threads(threads)


# -- no leaks ------------------------------------------------------------------------------


def _open_fds() -> set[int]:
    """The process's open descriptors, once what earlier tests left is collected."""
    gc.collect()
    return {int(name) for name in os.listdir("/proc/self/fd")}


def _our_threads() -> set[threading.Thread]:
    """resguard's threads (an event loop's pool of worker threads stays for reuse)."""
    return {thread for thread in threading.enumerate() if thread.name.startswith("resguard")}


def _no_new_threads(before: set[threading.Thread]) -> None:
    """resguard's threads besides *before* end (a worker told to stop ends on its own)."""
    wait_until(
        lambda: _our_threads() <= before,
        timeout_s=5,
        what=f"resguard's threads to end ({_our_threads() - before})",
    )


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _events_or_skip(monitor: Monitor) -> None:
    if not monitor.events_armed:
        unavailable(f"no kernel memory events could be armed here ({sys.platform})")


def test_stop_closes_every_descriptor_and_thread_it_opened() -> None:
    monitor = Monitor(policy=half_warns(), reclaim=False)
    fds, threads = _open_fds(), _our_threads()
    for _ in range(2):
        with monitor:
            wait_until(lambda: monitor.ticks >= 2, what="two ticks")
            _events_or_skip(monitor)
    assert _open_fds() <= fds
    _no_new_threads(threads)


def test_a_forked_child_closes_its_copies_of_the_events() -> None:
    monitor = Monitor(policy=half_warns(), reclaim=False).start()
    try:
        wait_until(lambda: monitor.ticks >= 2, what="two ticks")
        _events_or_skip(monitor)
        armed = [fd for fd, _ in monitor._wakeups.descriptors]
        assert armed

        def check() -> None:
            still_open = [fd for fd in armed if _is_open(fd)]
            assert still_open == [], still_open
            assert not monitor.running
            assert monitor.events_armed == ()

        assert in_child(check) == 0
        assert all(_is_open(fd) for fd in armed)  # the parent's stay armed
    finally:
        monitor.stop()


# -- events=False: the same verdicts, no descriptors ---------------------------------------


class Scripted:
    """Hands out one scripted snapshot per sample, stamped with the clock (then the last)."""

    def __init__(self, snapshots: list[Snapshot], clock: ManualClock) -> None:
        self.snapshots, self.clock, self.calls = snapshots, clock, 0

    def sample(self, **_: Any) -> Snapshot:
        import attrs

        snapshot = self.snapshots[min(self.calls, len(self.snapshots) - 1)]
        self.calls += 1
        return attrs.evolve(snapshot, monotonic=float(self.clock()))


_EVENTS_AT = {2, 4, 8}  # the steps before which the kernel says memory.high grew


def _levels(events: bool, percents: list[float], tmp_path: Path) -> tuple[list[Level], Any]:
    """The levels a monitor on a v2 tree concludes as use moves through *percents* of its
    2 GiB limit, the kernel's ``memory.events`` growing (and, with *events*, the loop
    woken by it) before the steps in ``_EVENTS_AT``; also each tick's wait and the events
    delivered."""
    clock = ManualClock()
    tree = KernelTree(tmp_path)  # used = memory.current - inactive_file (256 MiB)
    current = Path(tree.path("memory.current"))
    events_file = current.with_name("memory.events")
    events_file.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    monitor = Monitor(
        policy=half_warns(),
        sampler=Sampler(tree.roots, clock=clock),
        clock=clock,
        reclaim=False,
        events=events,
        min_interval="5ms",
        relaxed_interval="400ms",
    )
    seen: list[str] = []
    monitor.subscribe_events(lambda event: seen.append(event.kind))
    wakeups = _steps.open_wakeups(monitor)
    try:
        steps = _steps.steps_for(monitor, wakeups)
        levels, waits, high = [], [], 0
        for step, percent in enumerate(percents):
            current.write_text(f"{int(2 * GiB * percent / 100) + GiB // 4}\n")
            if step in _EVENTS_AT:
                high += 1
                events_file.write_text(f"low 0\nhigh {high}\nmax 0\noom 0\noom_kill 0\n")
                steps.woken(tuple(fd for fd, _ in wakeups.descriptors))  # as poll() says
            waits.append(steps.tick())
            levels.append(monitor.state.level)
            clock.advance(0.05)
        opened = wakeups.events is not None and wakeups.events.available
        return levels, (waits, seen, opened)
    finally:
        wakeups.close()


def test_events_change_when_the_monitor_looks_never_what_it_concludes(tmp_path: Path) -> None:
    # R2 2: events are delivered between the ticks, so the two modes run different code
    percents = [10.0, 45, 51, 60, 49, 45, 39, 30, 55, 38]
    polled, (polled_waits, unheard, opened) = _levels(False, percents, tmp_path / "a")
    assert not opened  # events=False: no kernel events at all, PSI included
    assert unheard == []
    woken, (woken_waits, heard, opened) = _levels(True, percents, tmp_path / "b")
    assert opened
    assert heard == ["high", "high", "high"]  # each growth delivered once, between ticks
    assert [woken_waits[step] for step in sorted(_EVENTS_AT)] == [0.005] * 3  # a burst
    assert woken_waits != polled_waits  # when it looks changed ...
    assert woken == polled  # ... what it concludes did not
    assert polled == [
        Level.OK,
        Level.OK,
        Level.WARNING,
        Level.WARNING,
        Level.WARNING,  # held down to the clear level
        Level.WARNING,
        Level.OK,
        Level.OK,
        Level.WARNING,
        Level.OK,
    ]


def test_events_false_opens_no_descriptor() -> None:
    monitor = Monitor(policy=half_warns(), reclaim=False, events=False)
    with monitor:
        wait_until(lambda: monitor.ticks >= 2, what="two ticks")
        assert monitor._wakeups.events is None
        assert monitor._wakeups.descriptors == ()
        assert monitor.events_armed == ()


# -- a burst after an event ----------------------------------------------------------------


def test_after_an_event_the_loop_samples_at_min_interval_for_the_burst(tmp_path: Path) -> None:
    clock = ManualClock()
    tree = KernelTree(tmp_path)  # a cgroup v2 tree: memory.events is a plain file here
    events_file = Path(tree.path("memory.max")).with_name("memory.events")
    events_file.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    monitor = Monitor(
        policy=Policy([Threshold("memory.percent", ">", 90, level=Level.WARNING)]),
        sampler=Sampler(tree.roots, clock=clock),  # 768 MiB of 2 GiB used
        clock=clock,
        reclaim=False,
        min_interval="5ms",
        relaxed_interval="400ms",
    )
    wakeups = _steps.open_wakeups(monitor)
    seen: list[Any] = []
    monitor.subscribe_events(seen.append)
    try:
        steps = _steps.steps_for(monitor, wakeups)
        calm = steps.tick()
        assert calm > 0.005
        events_file.write_text("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n")  # the kernel's
        assert steps.tick() == 0.005  # read on the tick: no descriptor fires on a file
        assert [event.kind for event in seen] == ["max", "oom", "oom_kill"]
        assert monitor.event_counts["oom_kill"] == 1
        clock.advance(BURST_S / 2)
        assert steps.tick() == 0.005
        clock.advance(BURST_S)
        assert steps.tick() == calm  # relaxed again
    finally:
        wakeups.close()


# -- the fallback --------------------------------------------------------------------------


def test_where_nothing_can_be_armed_the_monitor_polls_and_says_why_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_events, "_said", set())
    caplog.set_level(logging.INFO, logger="resguard")
    tree = KernelTree(tmp_path, cgroup=False)  # a host tree without PSI files
    for _ in range(2):
        monitor = Monitor(policy=half_warns(), sampler=Sampler(tree.roots), reclaim=False)
        with monitor:
            wait_until(lambda: monitor.ticks >= 2, what="two ticks")  # noqa: B023
            assert monitor.events_armed == ()
    lines = [r.getMessage() for r in caplog.records if "the monitor polls" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "no kernel memory events" in lines[0]
    assert caplog.records[[r.getMessage() for r in caplog.records].index(lines[0])].levelno == (
        logging.INFO
    )


def test_the_root_of_a_fixture_tree_is_where_its_proc_is(tmp_path: Path) -> None:
    assert _events.sampler_root(Sampler()) == "/"
    tree = Sampler(Roots(proc=str(tmp_path / "proc"), cgroup=str(tmp_path / "cgroup")))
    assert _events.sampler_root(tree) == str(tmp_path)
    elsewhere = Sampler(Roots(proc=str(tmp_path / "p"), cgroup=str(tmp_path / "cgroup")))
    assert _events.sampler_root(elsewhere) is None  # then no PSI: it is not the tree's


def test_the_root_is_read_from_the_samplers_public_roots(tmp_path: Path) -> None:
    # R2 11: it reached into the sampler's private reader, so a sampler's stand-in (or
    # a new reader) with the same public roots was taken for the host's
    roots = Roots(proc=str(tmp_path / "proc"), cgroup=str(tmp_path / "cgroup"))
    assert Sampler(roots).roots == roots

    class StandIn:
        def __init__(self) -> None:
            self.roots = roots

    assert _events.sampler_root(StandIn()) == str(tmp_path)
    assert _events.sampler_root(object()) == "/"  # nothing said: the host's


# -- watch_edges ---------------------------------------------------------------------------


class Budget:
    """An edge provider, as a guard with a memory budget is."""

    def __init__(self, edge_bytes: int) -> None:
        self.edge_bytes = edge_bytes

    def memory_edges_bytes(self, memory: Any) -> list[int]:
        return [self.edge_bytes]


def test_watched_edges_pace_the_loop_until_unwatched_or_collected(tmp_path: Path) -> None:
    import gc

    clock = ManualClock()
    script = [make_snapshot(memory_percent=10)]  # 10 % of 16 GiB; edges at 40, 50 %
    monitor = Monitor(
        policy=half_warns(),
        sampler=Scripted(script, clock),  # type: ignore[arg-type]
        clock=clock,
        reclaim=False,
        min_interval="5ms",
        relaxed_interval="400ms",
    )
    monitor.sample_now()
    far = monitor.next_interval_s()
    used = monitor.state.snapshot.memory.used
    assert used is not None
    budget = Budget(used + 16 * MiB)  # a guard's budget ends just above
    unwatch = monitor.watch_edges(budget)
    assert monitor.next_interval_s() == 0.005
    unwatch()
    assert monitor.next_interval_s() == far
    monitor.watch_edges(budget)
    assert monitor.next_interval_s() == 0.005
    budget.edge_bytes = used + 8192 * MiB  # its edge moved (a guard's reserve_bytes set)
    monitor.watch_edges(budget)  # so it watches itself again: recomputed
    assert monitor.next_interval_s() == far
    budget.edge_bytes = used + 16 * MiB
    monitor.watch_edges(budget)
    assert monitor.next_interval_s() == 0.005
    del budget
    gc.collect()
    assert monitor.next_interval_s() == far  # held weakly
    with pytest.raises(InvalidType, match="memory_edges_bytes"):
        monitor.watch_edges(object())  # type: ignore[arg-type]


def test_a_provider_watched_twice_counts_until_both_watches_are_undone() -> None:
    # R1 E: the guard watches itself and a user watches it too; one unwatch undid both
    monitor = Monitor(policy=half_warns(), reclaim=False)
    memory = monitor.sample_now().snapshot.memory
    budget = Budget(4096)
    first, second = monitor.watch_edges(budget), monitor.watch_edges(budget)
    first()
    first()  # undoing the same watch twice undoes it once
    assert 4096 in monitor._events.edges(monitor.policy, memory)
    second()
    assert 4096 not in monitor._events.edges(monitor.policy, memory)


class Given:
    """An edge provider that gives whatever it was given (R1's misbehaving providers)."""

    def __init__(self, edges: Any) -> None:
        self.edges = edges

    def memory_edges_bytes(self, memory: Any) -> Any:
        return self.edges() if callable(self.edges) else self.edges


def test_a_provider_that_gives_endless_or_wrong_edges_is_a_fault_and_arms_none_of_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # R1 B and G: itertools.count() hung the fast loop (all of it was read into a set);
    # ["123", "abc"] armed 123 B then raised, and [True] became an edge at 1 B
    import itertools

    caplog.set_level(logging.WARNING, logger="resguard")
    monitor = Monitor(policy=half_warns(), reclaim=False)
    memory = monitor.sample_now().snapshot.memory
    policy_edges = monitor._events.edges(monitor.policy, memory)
    provider = Given(itertools.count)
    monitor.watch_edges(provider)
    assert monitor._events.edges(monitor.policy, memory) == policy_edges
    for wrong in (["123", "abc"], [True], [4096, -1], [1.5], range(_events.MAX_PROVIDER_EDGES + 1)):
        provider.edges = wrong
        monitor.watch_edges(provider)  # its edges moved: read again
        assert monitor._events.edges(monitor.policy, memory) == policy_edges, wrong
    faults = [r.getMessage() for r in caplog.records if "the edges of" in r.getMessage()]
    assert faults
    assert "more than 1024 edges" in caplog.text
    provider.edges = [4096, 8192]  # it behaves: its edges count, and that is said
    monitor.watch_edges(provider)
    assert {4096, 8192} <= set(monitor._events.edges(monitor.policy, memory))


# -- a storm of pressure wake-ups ----------------------------------------------------------


class FakeEvents:
    """Stands in for the kernel side: read() says what the test scripted."""

    gone = False  # its cgroup is never removed
    covered_edges_bytes = ()

    def __init__(self, said: tuple[Any, ...]) -> None:
        self.said = said
        self.generation = 0
        self.armed = ("fake",)

    def read(self, ready_fds: Any = ()) -> tuple[Any, ...]:
        return self.said if ready_fds else ()

    def descriptors(self) -> tuple[tuple[int, int], ...]:
        return ((5, 1),)

    def close(self) -> None:
        pass


def _event(kind: str) -> Any:
    from resguard._probes.memevents import MemoryEvent

    return MemoryEvent(kind, 1, "/sys/fs/cgroup/memory/x/memory.pressure_level", kind)


@pytest.mark.parametrize(
    ("kinds", "hold"),
    [
        (("pressure",), True),
        (("pressure", "threshold"), False),
        (("oom_kill",), False),
        ((), False),
    ],
)
def test_a_wake_up_by_pressure_alone_mutes_those_descriptors_for_min_interval(
    kinds: tuple[str, ...], hold: bool
) -> None:
    monitor = Monitor(policy=half_warns(), reclaim=False, min_interval="7ms")
    wakeups = _events.Wakeups(monitor._events, FakeEvents(tuple(map(_event, kinds))))  # type: ignore[arg-type]
    steps = _steps.steps_for(monitor, wakeups)
    assert steps.woken((5,)) == (0.007 if hold else 0.0)
    assert monitor.triggered_wakeups == (1 if kinds else 0)  # a re-arm's wake-up says nothing
    if not kinds:  # that one published the new set; saying nothing again is muted
        assert wakeups.descriptors == ((5, 1),)
        assert steps.woken((5,)) == min(0.007, _steps.SILENT_HOLD_S)
    burst = monitor.clock() < monitor._events.burst_until_s
    assert burst == (bool(kinds) and not hold)  # pressure alone starts no burst
    mute = _events.Mute()
    mute.hold((5,), 60.0)
    active, left_s = mute.active(((5, 1), (6, 1)))
    assert active == ((6, 1),)
    assert left_s is not None
    assert 0 < left_s <= 60.0
    mute.hold((5,), 0.0)
    assert mute.active(((5, 1), (6, 1))) == (((5, 1), (6, 1)), None)


def test_a_mute_holds_on_the_clock_it_is_given() -> None:
    # R2 12: the hold read time.monotonic itself; the loops now give it the poll's clock
    clock = ManualClock()
    mute = _events.Mute(clock)
    mute.hold((5,), 0.5)
    clock.advance(0.4)
    active, left_s = mute.active(((5, 1), (6, 1)))
    assert active == ((6, 1),)
    assert left_s == pytest.approx(0.1)
    clock.advance(0.1)
    assert mute.active(((5, 1), (6, 1))) == (((5, 1), (6, 1)), None)


def test_the_burst_is_read_once_as_a_run_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    # R2 12: each tick and wake-up read the module global, so a run's burst could change
    # under it; a changed BURST_S holds from the next start on
    import resguard.monitor

    clock = ManualClock()
    monitor = Monitor(policy=half_warns(), reclaim=False, clock=clock)
    wakeups = _events.Wakeups(monitor._events, FakeEvents((_event("oom_kill"),)))  # type: ignore[arg-type]
    steps = _steps.steps_for(monitor, wakeups)
    monkeypatch.setattr(resguard.monitor, "BURST_S", 60.0)
    steps.woken((5,))
    assert monitor._events.burst_until_s == clock() + BURST_S
    steps = _steps.steps_for(monitor, wakeups)  # the next run
    steps.woken((5,))
    assert monitor._events.burst_until_s == clock() + 60.0


def test_a_failing_event_callback_is_logged_once_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="resguard")
    monitor = Monitor(policy=half_warns(), reclaim=False)
    heard: list[str] = []

    def broken(event: Any) -> None:
        raise RuntimeError("callback bug")

    monitor.subscribe_events(broken)
    unsubscribe = monitor.subscribe_events(lambda event: heard.append(event.kind))
    wakeups = _events.Wakeups(monitor._events, FakeEvents((_event("oom_kill"),)))  # type: ignore[arg-type]
    steps = _steps.steps_for(monitor, wakeups)
    for _ in range(3):
        steps.woken((5,))
    assert heard == ["oom_kill"] * 3
    assert monitor.event_counts["oom_kill"] == 3
    failing = [r for r in caplog.records if "callback bug" in r.getMessage()]
    assert len(failing) == 1
    assert sum(r.getMessage().startswith("OOM kill in") for r in caplog.records) == 3
    unsubscribe()
    unsubscribe()  # again: nothing
    steps.woken((5,))
    assert len(heard) == 3
    with pytest.raises(InvalidType, match="not callable"):
        monitor.subscribe_events("print")  # type: ignore[arg-type]


class ClosingEvents(FakeEvents):
    """A fake kernel side that remembers being closed."""

    def __init__(self) -> None:
        super().__init__(())
        self.closed = False
        self.thresholds_bytes = ()

    def arm(self, edges_bytes: Any, used_bytes: Any) -> None:
        pass

    def descriptors(self) -> tuple[tuple[int, int], ...]:
        return ()

    def close(self) -> None:
        self.closed = True


def test_when_the_binding_limit_moves_the_events_of_the_new_place_are_opened() -> None:
    import attrs

    host = make_snapshot(memory_percent=40)
    cgroup = attrs.evolve(
        host,
        memory=attrs.evolve(
            host.memory,
            source="cgroup",
            source_detail="/sys/fs/cgroup/memory/x/memory.limit_in_bytes",
        ),
    )
    opened: list[ClosingEvents] = []

    def opener(snapshot: Snapshot) -> Any:
        opened.append(ClosingEvents())
        return opened[-1]

    monitor = Monitor(policy=half_warns(), reclaim=False)
    first = ClosingEvents()
    wakeups = _events.Wakeups(
        monitor._events,
        first,  # type: ignore[arg-type]
        opener=opener,
        binding=_events.binding_of(host.memory),
    )
    wakeups.after_tick(monitor.policy, host, 0.0, BURST_S)
    assert opened == []  # the same place: nothing re-opened
    wakeups.after_tick(monitor.policy, cgroup, 0.0, BURST_S)  # a cgroup's limit binds now
    assert first.closed
    assert len(opened) == 1
    assert id(wakeups.events) == id(opened[0])
    wakeups.after_tick(monitor.policy, cgroup, 0.0, BURST_S)
    assert len(opened) == 1
    unknown = attrs.evolve(cgroup, memory=attrs.evolve(cgroup.memory, limit=None, source="host"))
    wakeups.after_tick(monitor.policy, unknown, 0.0, BURST_S)
    assert len(opened) == 1  # an unknown limit is no move
    wakeups.close()
    assert opened[0].closed


def test_events_armed_only_in_part_are_said_once_at_info(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_events, "_said", set())
    caplog.set_level(logging.INFO, logger="resguard")
    tree = KernelTree(tmp_path)  # v2: memory.events armed; its PSI file is no kernel file
    events_file = Path(tree.path("memory.max")).with_name("memory.events")
    events_file.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    snapshot = Sampler(tree.roots).sample()
    for _ in range(2):
        events = _events.open_events(snapshot, psi=True, root=str(tmp_path))
        assert events is not None
        events.close()
    lines = [
        r.getMessage() for r in caplog.records if "some kernel memory events" in r.getMessage()
    ]
    assert len(lines) == 1, lines
    assert "PSI" in lines[0]
