"""The guard's hot path (issue 15, item 4): ``with guard:`` admits without the lock where
nothing is counted but the call, in one critical section each way otherwise, with counters
exact under 32 threads; the free-threaded fallback; and the guard's memory edges, watched by
its monitor."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import attrs
import pytest

from resguard import InvalidState, InvalidType, ResourceExhausted
from resguard._modules import gil
from resguard.guard import Guard, _expiry, _settings
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import MemoryInfo
from resguard.testing import ManualClock, StaticMonitor, make_snapshot

from support import run_python, wait_until

MiB = 2**20
GiB = 2**30
THREADS = 32
CALLS = 300  # per thread


def critical_above(percent: float) -> Policy:
    return Policy([Threshold("memory.percent", ">", percent, level=Level.CRITICAL)])


def static(
    percent: float = 40, *, clock: Callable[[], float] | None = None, **kw: Any
) -> StaticMonitor:
    """A monitor at *percent* of 16 GiB whose verdict is CRITICAL above 90 %."""
    return StaticMonitor(memory_percent=percent, policy=critical_above(90), clock=clock, **kw)


@pytest.fixture
def switching() -> Iterator[None]:
    """Threads switched every 10 µs instead of every 5 ms: one thread would otherwise run
    its calls through alone, and a race would never be met."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class CountingLock:
    """A lock that counts how often it is taken (single-threaded checks only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.taken = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self.taken += 1
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_free(guard: Guard) -> bool:
    """``guard.lock_free``, read afresh (a property that changes with the settings)."""
    return guard.lock_free


def count_locks(guard: Guard) -> CountingLock:
    counting = CountingLock()
    guard._lock = counting  # type: ignore[assignment]
    return counting


def hammer(guard: Guard, body: Any = None, *, calls: int = CALLS) -> list[BaseException]:
    """THREADS threads each entering ``with guard:`` *calls* times; what went wrong."""
    failures: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker() -> None:
        try:
            start.wait(10)
            for _ in range(calls):
                with guard:
                    if body is not None:
                        body()
        except BaseException as error:  # reported by the test
            failures.append(error)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    return failures


class Watcher:
    """Samples ``guard.stats().in_flight`` from its own thread while the workers run."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.append(self.guard.stats().in_flight)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def assert_within(self, most: int) -> None:
        """Every sample was between 0 and *most* (and there were samples)."""
        assert self.seen
        assert min(self.seen) >= 0
        assert max(self.seen) <= most


# -- which guards are lock-free -------------------------------------------------------------


def test_only_a_guard_that_counts_nothing_but_the_call_admits_lock_free() -> None:
    monitor = static()
    assert Guard(memory="90%", monitor=monitor).lock_free
    assert Guard(rss="50%", level=Level.WARNING, wait="1s", monitor=monitor).lock_free
    assert not Guard(memory="90%", monitor=monitor, reserve="1MiB").lock_free
    assert not Guard(memory="90%", monitor=monitor, reserve="auto").lock_free
    assert not Guard(memory="90%", monitor=monitor, max_concurrent=8).lock_free
    assert not Guard(memory="90%").lock_free  # no monitor: its own cached snapshot


def test_the_lock_free_path_takes_no_lock_and_the_locked_one_one_each_way() -> None:
    monitor = static()
    for guard, per_block in (
        (Guard(memory="90%", monitor=monitor), 0),
        (Guard(memory="90%", monitor=monitor, reserve="1MiB"), 2),
        (Guard(memory="90%", monitor=monitor, max_concurrent=4), 2),
    ):
        with guard:  # the first works the state's budget out
            pass
        counting = count_locks(guard)
        for _ in range(100):
            with guard:
                pass
        assert counting.taken == 100 * per_block, guard
        stats = guard.stats()
        assert (stats.admitted, stats.in_flight, stats.reserved_bytes) == (101, 0, 0)


def test_async_with_takes_the_same_paths() -> None:
    monitor = static()
    free, locked = Guard(monitor=monitor), Guard(monitor=monitor, reserve="1MiB")

    async def main(check: bool) -> None:
        for guard in (free, locked):
            for _ in range(50):
                async with guard:
                    assert not check or guard.stats().in_flight == 1

    anyio.run(main, True)
    counting = count_locks(free)
    anyio.run(main, False)
    assert counting.taken == 0
    assert free.stats().admitted == locked.stats().admitted == 100


# -- exact counters under 32 threads --------------------------------------------------------


def test_32_threads_through_the_lock_free_path_count_every_call(switching: None) -> None:
    guard = Guard(memory="90%", monitor=static())
    assert guard.lock_free
    with Watcher(guard) as watcher:
        assert hammer(guard) == []
    stats = guard.stats()
    assert (stats.admitted, stats.refused, stats.in_flight) == (THREADS * CALLS, 0, 0)
    assert stats.reserved_bytes == 0
    watcher.assert_within(THREADS)


@pytest.mark.parametrize("kind", ["reserve", "max_concurrent", "both"])
def test_32_threads_through_the_locked_path_never_pass_max_concurrent(
    kind: str, switching: None
) -> None:
    limit = 4 if kind != "reserve" else None
    reserve = "64MiB" if kind != "max_concurrent" else None
    guard = Guard(memory="90%", monitor=static(), max_concurrent=limit, reserve=reserve, wait="60s")
    assert not guard.lock_free
    inside = peak = 0
    count = threading.Lock()
    overlap: list[int] = []

    def body() -> None:
        nonlocal inside, peak
        with count:
            inside += 1
            peak = max(peak, inside)
            if limit is not None and inside > limit:
                overlap.append(inside)
        with count:
            inside -= 1

    with Watcher(guard) as watcher:
        assert hammer(guard, body, calls=100) == []
    stats = guard.stats()
    assert (stats.admitted, stats.refused, stats.in_flight) == (THREADS * 100, 0, 0)
    assert (stats.reserved_bytes, stats.waiting) == (0, 0)
    assert overlap == []
    bound = limit if limit is not None else THREADS
    watcher.assert_within(bound)
    assert peak >= 1


def test_refusals_are_counted_exactly_while_the_state_flips(switching: None) -> None:
    """A scripted state flips between admitting (40 %) and refusing (97 %: CRITICAL) while
    32 threads call: what the callers saw is exactly what the guard counted."""
    monitor = static()
    guard = Guard(memory="99%", monitor=monitor)
    outcomes = {"admitted": 0, "refused": 0}
    tally = threading.Lock()
    reasons: set[str] = set()
    done = threading.Event()

    def worker() -> None:
        calls, deadline_s = 0, time.monotonic() + 30
        # at least CALLS each, and on until both outcomes were seen (the flips may lag)
        while calls < CALLS or (min(outcomes.values()) == 0 and time.monotonic() < deadline_s):
            calls += 1
            try:
                with guard:
                    pass
                outcome = "admitted"
            except ResourceExhausted as error:
                reasons.add(error.reason)
                outcome = "refused"
            with tally:
                outcomes[outcome] += 1

    def flipper() -> None:
        high, deadline_s = False, time.monotonic() + 60  # never past the test, whatever it saw
        while (not done.is_set() or min(outcomes.values()) == 0) and time.monotonic() < deadline_s:
            high = not high
            monitor.set(memory_percent=97 if high else 40)

    # daemons: a thread that never ends fails this test, never the interpreter's exit
    flipping = threading.Thread(target=flipper, daemon=True)
    flipping.start()
    try:
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        done.set()
        flipping.join(70)
    assert not any(thread.is_alive() for thread in [*threads, flipping])
    stats = guard.stats()
    assert outcomes["admitted"] + outcomes["refused"] >= THREADS * CALLS
    assert outcomes["admitted"] > 0
    assert outcomes["refused"] > 0
    assert (stats.admitted, stats.refused) == (outcomes["admitted"], outcomes["refused"])
    assert stats.refused_by_reason == {"level": outcomes["refused"]}
    assert reasons == {"level"}
    assert stats.in_flight == 0


# -- the free-threaded fallback -------------------------------------------------------------


def test_gil_enabled_reads_sys_is_gil_enabled_where_there_is_one() -> None:
    def fake_sys(name: str = "cpython", **gil: Any) -> types.SimpleNamespace:
        return types.SimpleNamespace(implementation=types.SimpleNamespace(name=name), **gil)

    assert gil.gil_enabled(fake_sys()) is True  # before 3.13: always a GIL
    assert gil.gil_enabled(fake_sys(_is_gil_enabled=lambda: True)) is True
    assert gil.gil_enabled(fake_sys(_is_gil_enabled=lambda: False)) is False
    assert gil.gil_enabled(fake_sys("pypy")) is False  # atomicity not checked there


def test_a_free_threaded_build_without_the_gil_is_detected_at_import() -> None:
    out = run_python(
        "import sys\n"
        "sys._is_gil_enabled = lambda: False\n"
        "from resguard.guard import Guard, _settings\n"
        "from resguard.testing import StaticMonitor\n"
        "print(_settings.LOCK_FREE, Guard(monitor=StaticMonitor()).lock_free)\n"
    )
    assert out.split() == ["False", "False"]


def test_without_the_gil_every_guard_takes_the_locked_path_and_counts_exactly(
    monkeypatch: pytest.MonkeyPatch, switching: None
) -> None:
    monkeypatch.setattr(_settings, "LOCK_FREE", False)
    guard = Guard(memory="90%", monitor=static())
    assert not guard.lock_free
    with guard:
        pass
    counting = count_locks(guard)
    with guard:
        pass
    assert counting.taken == 2
    guard._lock = threading.Lock()
    with Watcher(guard) as watcher:
        assert hammer(guard) == []
    stats = guard.stats()
    assert (stats.admitted, stats.in_flight, stats.reserved_bytes) == (THREADS * CALLS + 2, 0, 0)
    watcher.assert_within(THREADS)


# -- what the lock-free path must not skip --------------------------------------------------


@contextlib.contextmanager
def queued_big_call(guard: Guard, clock: ManualClock) -> Iterator[list[ResourceExhausted]]:
    """A call reserving 12 GiB (which cannot fit in the 8 GiB left under 90 % of 16 GiB)
    queued on *guard* with a 10 s wait for the block; then its deadline passes on *clock*.
    Yields the refusals it got."""
    refused: list[ResourceExhausted] = []

    def big() -> None:
        try:
            with guard.admit(reserve="12GiB", wait="10s"):
                pass
        except ResourceExhausted as error:
            refused.append(error)

    waiter = threading.Thread(target=big, daemon=True)
    waiter.start()
    try:
        wait_until(lambda: guard.stats().waiting == 1, what="the big call to queue")
        yield refused
    finally:
        clock.advance(11)  # the waiter's deadline passes
        waiter.join(10)


def test_a_lock_free_call_does_not_overtake_a_queued_caller() -> None:
    clock = ManualClock()
    guard = Guard(memory="90%", monitor=static(clock=clock))
    assert guard.lock_free
    with guard:
        pass
    with queued_big_call(guard, clock) as refused:
        with pytest.raises(ResourceExhausted) as info:
            with guard:
                pytest.fail("a lock-free admission overtook the queue")
        assert info.value.reason == "queued"
    assert [error.reason for error in refused] == ["memory"]  # what it waited on
    with guard:  # the clock moved: the new state's budget is worked out
        pass
    counting = count_locks(guard)
    with guard:  # the queue is empty again: lock-free again
        pass
    assert counting.taken == 0
    assert guard.stats().refused_by_reason == {"queued": 1, "memory": 1}


def test_a_new_state_published_while_a_caller_is_queued_does_not_open_the_lock_free_path() -> None:
    clock = ManualClock()
    monitor = static(clock=clock)
    guard = Guard(memory="90%", monitor=monitor)
    with guard:  # the first state's budget worked out: open
        pass
    with queued_big_call(guard, clock) as refused:
        monitor.set(memory_percent=41)  # a new state: its budget is worked out anew
        for _ in range(3):  # the first works it out under the lock, the others must not pass
            with pytest.raises(ResourceExhausted) as info:
                with guard:
                    pytest.fail("a block overtook the queued caller")
            assert info.value.reason == "queued"
    assert [error.reason for error in refused] == ["memory"]  # what it waited on
    assert guard.stats().refused_by_reason == {"queued": 3, "memory": 1}


def test_a_stale_state_is_not_trusted_by_the_lock_free_path() -> None:
    clock = ManualClock()
    guard = Guard(monitor=static(clock=clock, live=False, stale_after="1s"), on_unknown="refuse")
    with guard:
        pass
    clock.advance(2)
    with pytest.raises(ResourceExhausted) as info:
        with guard:
            pytest.fail("admitted on a stale state")
    assert info.value.reason == "unknown"


def test_a_refusing_state_and_reservations_past_the_budget_close_the_lock_free_path() -> None:
    monitor = static(40)
    guard = Guard(memory="75%", monitor=monitor)  # 12 GiB of 16; 6.4 used
    with guard.admit(reserve="5GiB"):
        with guard:  # 5.6 GiB of room, 5 reserved: a call reserving nothing fits
            pass
        monitor.set(memory_percent=70)  # 11.2 GiB used: 0.8 GiB of room, 5 reserved
        with pytest.raises(ResourceExhausted) as info:
            with guard:
                pass
        assert info.value.reason == "reservation"
    counting = count_locks(guard)
    with guard:  # the reservation is back: lock-free again
        pass
    assert counting.taken == 0
    monitor.set(memory_percent=95)
    with pytest.raises(ResourceExhausted) as info:
        with guard:
            pass
    assert info.value.reason == "level"


def test_settings_changed_while_blocks_are_in_flight_leave_the_counts_exact() -> None:
    guard = Guard(memory="90%", monitor=static())
    with guard:  # admitted lock-free, leaves locked
        guard.max_concurrent = 2
        assert not lock_free(guard)
        with guard:  # admitted locked: the lock-free one counts against the limit
            assert guard.stats().in_flight == 2
            with pytest.raises(ResourceExhausted) as info:
                with guard:
                    pass
            assert info.value.reason == "concurrency"
            guard.max_concurrent = None  # the locked one leaves lock-free
    assert lock_free(guard)
    stats = guard.stats()
    assert (stats.admitted, stats.in_flight, stats.reserved_bytes) == (2, 0, 0)
    guard.reserve_bytes = 1 * MiB
    assert not lock_free(guard)
    with guard:
        assert guard.stats().reserved_bytes == 1 * MiB
    assert guard.stats().reserved_bytes == 0


def test_reserve_bytes_is_refused_while_admissions_are_in_flight() -> None:
    guard = Guard(memory="90%", monitor=static())
    for reserving in (0, 1 * MiB):  # lock-free blocks, then locked ones
        guard.reserve_bytes = reserving
        with guard:
            with pytest.raises(InvalidState, match=r"reserve_bytes=2097152 assigned while 1"):
                guard.reserve_bytes = 2 * MiB
            guard.reserve_bytes = reserving  # the same value changes nothing
            assert guard.stats().reserved_bytes == reserving
        stats = guard.stats()
        assert (stats.in_flight, stats.reserved_bytes) == (0, 0)
    with guard.admit(reserve="4MiB"):  # an admission of admit() counts too
        with pytest.raises(InvalidState):
            guard.reserve_bytes = 0
    guard.reserve_bytes = 0  # none in flight: taken
    assert guard.reserve_bytes == 0
    assert lock_free(guard)


def test_a_lock_free_block_left_without_entering_it_is_still_refused() -> None:
    guard = Guard(monitor=static())
    with pytest.raises(Exception, match="without a matching acquire"):
        guard.__exit__(None, None, None)


def test_a_forked_child_leaves_a_lock_free_block_entered_before_the_fork() -> None:
    guard = Guard(monitor=static())
    with guard:
        guard._after_fork_in_child()  # what the fork handler does in the child
        assert guard.stats().in_flight == 0
    assert guard.stats().in_flight == 0
    with guard:
        assert guard.stats().in_flight == 1


_EXPIRY_FORK_SCRIPT = """
import os, signal, threading, time
from resguard.guard._expiry import Expiry

class Open:
    def _expire(self, now_s):
        return now_s + 3600

class Soon:
    def __init__(self):
        self.closed = threading.Event()

    def _expire(self, now_s):
        self.closed.set()

expiry, held = Expiry(), Open()  # not the module's EXPIRY: any Expiry is reset
expiry.watch(held, time.monotonic() + 3600)  # its thread sleeps towards an hour from now
with expiry._cond:  # held at the fork, as the parent's thread may hold it
    pid = os.fork()
if pid == 0:
    signal.alarm(10)
    fresh = expiry._thread is None and not list(expiry._guards)
    soon = Soon()
    expiry.watch(soon, time.monotonic())
    os._exit(0 if fresh and soon.closed.wait(5) else 1)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_a_forked_child_starts_each_expiry_afresh_through_the_shared_fork_hook() -> None:
    assert run_python(_EXPIRY_FORK_SCRIPT).strip() == "0"


# -- edges ----------------------------------------------------------------------------------


def memory(limit: int | None) -> MemoryInfo:
    info = make_snapshot(limit=16 * GiB).memory
    return attrs.evolve(info, limit=limit)


def test_memory_edges_are_the_budget_in_bytes_or_share_of_the_limit() -> None:
    monitor = static()
    assert Guard(memory="50%", monitor=monitor).memory_edges_bytes(memory(16 * GiB)) == (8 * GiB,)
    assert Guard(memory="4GiB").memory_edges_bytes(memory(16 * GiB)) == (4 * GiB,)
    reserving = Guard(memory="50%", reserve="1GiB")
    assert reserving.memory_edges_bytes(memory(16 * GiB)) == (7 * GiB, 8 * GiB, 15 * GiB)
    assert Guard().memory_edges_bytes(memory(16 * GiB)) == ()  # no budget, no reservation
    assert Guard(memory="32GiB").memory_edges_bytes(memory(16 * GiB)) == ()  # past the limit


@pytest.mark.parametrize("wrong", [None, {"limit": 16 * GiB}, make_snapshot(), 16 * GiB])
def test_memory_edges_of_anything_but_a_memory_reading_are_refused_by_type(wrong: object) -> None:
    guard = Guard(memory="50%", reserve="1GiB", monitor=static())
    with pytest.raises(InvalidType, match=r"^memory=.* is not a resguard\.snapshot\.MemoryInfo"):
        guard.memory_edges_bytes(wrong)  # type: ignore[arg-type]
    assert guard.memory_edges_bytes(memory(16 * GiB)) == (7 * GiB, 8 * GiB, 15 * GiB)


def test_memory_edges_with_the_limit_unknown() -> None:
    assert Guard(memory="50%").memory_edges_bytes(memory(None)) == ()
    assert Guard(memory="4GiB").memory_edges_bytes(memory(None)) == (4 * GiB,)
    assert Guard(memory="4GiB", reserve="1GiB").memory_edges_bytes(memory(None)) == (
        3 * GiB,
        4 * GiB,
    )


def test_a_guard_is_watched_by_its_monitor_until_collected_or_moved() -> None:
    first, second = static(), static()
    guard = Guard(memory="50%", monitor=first)
    assert guard in first._events.providers()
    guard.reserve_bytes = 1 * GiB  # watched again, with its new edges
    assert first._events.providers() == [guard]
    guard.monitor = second
    assert guard not in first._events.providers()
    assert second._events.providers() == [guard]
    assert guard.monitor is second
    assert not guard.lock_free  # it reserves now
    guard.monitor = None
    assert second._events.providers() == []
    assert not guard.lock_free
    again = Guard(memory="50%", monitor=first)
    assert first._events.providers() == [again]
    del again
    gc.collect()
    assert first._events.providers() == []


def test_a_monitor_assigned_later_brings_its_clock() -> None:
    clock = ManualClock(500.0)
    guard = Guard(memory="90%")
    guard.monitor = static(clock=clock)
    assert guard.clock is clock
    assert guard.lock_free
    counting = count_locks(guard)
    with guard:
        pass
    with guard:
        pass
    assert counting.taken == 1  # the budget of the state, once; then no lock
    pinned = ManualClock()
    fixed = Guard(clock=pinned)
    fixed.monitor = static(clock=clock)
    assert fixed.clock is pinned
    with pytest.raises(TypeError):
        fixed.monitor = "monitor"  # type: ignore[assignment]


def test_the_monitor_arms_and_paces_at_the_guards_edges_as_they_move() -> None:
    monitor = static()
    info = monitor.state.snapshot.memory
    policy = Policy([])  # no edges of its own: only the guard's count
    guard = Guard(memory="50%", monitor=monitor)
    assert monitor._events.edges(policy, info) == (8 * GiB,)
    guard.reserve_bytes = 1 * GiB  # the same guard watched again: its edges worked out again
    assert monitor._events.edges(policy, info) == (7 * GiB, 8 * GiB, 15 * GiB)
    guard.monitor = None
    assert monitor._events.edges(policy, info) == ()


# -- the expiry thread (guards on the real clock read no clock per admission) ---------------


def expiry_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "resguard-guard-expiry"]


def test_on_the_real_clock_a_stale_state_is_withdrawn_by_the_expiry_thread() -> None:
    monitor = static(clock=time.monotonic, live=False, stale_after="300ms")
    guard = Guard(monitor=monitor, on_unknown="refuse")
    assert guard.clock is time.monotonic
    with guard:  # opens the state, and hands it to the expiry thread
        pass
    published_s = monitor.state.snapshot.monotonic
    assert expiry_threads()

    reasons: list[str] = []

    def refused() -> bool:
        try:
            with guard:
                return False
        except ResourceExhausted as error:
            reasons.append(error.reason)
            return True

    wait_until(refused, timeout_s=10, what="the lock-free path to refuse the stale state")
    assert reasons == ["unknown"]
    assert time.monotonic() - published_s > 0.3  # not before it was stale
    # nothing open any more: the thread ends
    wait_until(lambda: not expiry_threads(), timeout_s=10, what="the expiry thread to end")
    monitor.set(memory_percent=40)  # a fresh state opens again, lock-free
    with guard:
        pass
    counting = count_locks(guard)
    with guard:
        pass
    assert counting.taken == 0


def test_the_expiry_thread_closes_each_guard_at_its_own_time_and_restarts_after_a_fork() -> None:
    expiry = _expiry.Expiry()
    now_s = time.monotonic()

    class Open:
        def __init__(self, stale_at_s: float) -> None:
            self.stale_at_s: float | None = stale_at_s
            self.closed = threading.Event()

        def _expire(self, at_s: float) -> float | None:
            if self.stale_at_s is not None and at_s > self.stale_at_s:
                self.stale_at_s = None
                self.closed.set()
            return self.stale_at_s

    soon, later = Open(now_s + 0.05), Open(now_s + 0.3)
    expiry.watch(later, later.stale_at_s or 0)
    expiry.watch(soon, soon.stale_at_s or 0)  # earlier: wakes the thread sooner
    assert soon.closed.wait(5)
    assert not later.closed.is_set() or time.monotonic() > now_s + 0.3
    assert later.closed.wait(5)
    wait_until(lambda: expiry._thread is None, timeout_s=5, what="the thread to end")
    expiry._after_fork_in_child()
    again = Open(time.monotonic() + 0.01)
    expiry.watch(again, again.stale_at_s or 0)
    assert again.closed.wait(5)


def test_an_injected_clock_is_read_on_every_lock_free_admission() -> None:
    clock = ManualClock()
    guard = Guard(monitor=static(clock=clock, live=False, stale_after="1s"))
    assert guard.lock_free
    assert not guard._expiring  # ManualClock time is not the expiry thread's
