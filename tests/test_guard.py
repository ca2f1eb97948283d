"""Guards: admission, reservations, FIFO waiting, cancellation, breaches, self-limits."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from resguard import InvalidType, InvalidValue, ResourceExhausted
from resguard._probes.paths import Roots
from resguard.guard import Guard
from resguard.monitor import Monitor
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import Sampler

MiB = 2**20
GiB = 2**30


def fixed_machine(tmp_path: Path, total_gib: float = 16, available_gib: float = 8) -> Sampler:
    """A sampler over a fixture /proc: the numbers stay put while the test runs."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    kib = 1024
    (proc / "meminfo").write_text(
        f"MemTotal: {int(total_gib * GiB / kib)} kB\nMemFree: {int(available_gib * GiB / kib)} kB\n"
        f"MemAvailable: {int(available_gib * GiB / kib)} kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n")
    (proc / "self" / "statm").write_text(f"{GiB // 4096} {(256 * MiB) // 4096} 0 0 0 0 0\n")
    return Sampler(Roots(proc=str(proc), cgroup=str(tmp_path / "no-cgroup")))


@pytest.fixture
def monitor(tmp_path: Path) -> Monitor:
    policy = Policy([Threshold("memory.percent", ">", 90, level=Level.CRITICAL)])
    return Monitor(policy=policy, sampler=fixed_machine(tmp_path), reclaim=False)


def test_admits_and_counts(monitor: Monitor) -> None:
    guard = Guard(memory="90%", monitor=monitor)
    with guard:
        assert guard.stats().in_flight == 1
    stats = guard.stats()
    assert (stats.admitted, stats.refused, stats.in_flight) == (1, 0, 0)


def test_refuses_over_the_memory_share(monitor: Monitor) -> None:
    guard = Guard(memory="40%", monitor=monitor)  # 50 % is used on the fixture machine
    with pytest.raises(ResourceExhausted) as info:
        with guard:
            pytest.fail("must not run")
    error = info.value
    assert error.reason == "memory"
    assert error.retry_after > 0
    assert error.numbers["used_bytes"] == 8 * GiB
    assert guard.stats().refused_by_reason == {"memory": 1}


def test_refuses_at_the_verdict_level(tmp_path: Path) -> None:
    policy = Policy([Threshold("memory.percent", ">", 40, level=Level.CRITICAL)])
    monitor = Monitor(policy=policy, sampler=fixed_machine(tmp_path), reclaim=False)
    with pytest.raises(ResourceExhausted, match="CRITICAL") as info:
        with Guard(monitor=monitor):
            pass
    assert info.value.reason == "level"
    with Guard(monitor=monitor, level=None):  # level checks can be turned off
        pass


def test_reservations_add_up_and_are_released(monitor: Monitor) -> None:
    guard = Guard(memory="75%", monitor=monitor)  # 12 GiB allowed, 8 used: 4 GiB headroom
    assert guard.headroom_bytes() == 4 * GiB
    with guard.admit(reserve="3GiB") as first:
        assert first.reserved == 3 * GiB
        assert guard.headroom_bytes() == 1 * GiB
        with pytest.raises(ResourceExhausted) as info:
            with guard.admit(reserve="2GiB"):
                pass
        assert info.value.reason == "reservation"
        with guard.admit(reserve="1GiB"):
            assert guard.stats().reserved_bytes == 4 * GiB
    assert guard.stats().reserved_bytes == 0
    assert guard.headroom_bytes() == 4 * GiB


def test_reservation_is_released_on_exceptions(monitor: Monitor) -> None:
    guard = Guard(monitor=monitor, reserve="1GiB")
    with pytest.raises(ZeroDivisionError):
        with guard:
            1 / 0  # noqa: B018
    assert guard.stats().reserved_bytes == 0
    assert guard.stats().in_flight == 0


def test_concurrency_limit_and_retry_after(monitor: Monitor) -> None:
    guard = Guard(max_concurrent=1, monitor=monitor)
    with guard:
        with pytest.raises(ResourceExhausted) as info:
            with guard:
                pass
    assert info.value.reason == "concurrency"
    assert info.value.retry_after > 0


def test_without_a_monitor_a_cached_snapshot_is_used() -> None:
    guard = Guard(memory="100%", max_age="1s")
    with guard:
        pass
    with pytest.raises(ResourceExhausted):
        with Guard(memory=1):  # one byte: the machine already uses more
            pass


def test_decorates_sync_and_async_functions(monitor: Monitor) -> None:
    guard = Guard(max_concurrent=1, monitor=monitor)

    @guard
    def double(x: int) -> int:
        assert guard.stats().in_flight == 1
        return 2 * x

    @guard(reserve="1GiB")
    async def triple(x: int) -> int:
        assert guard.stats().reserved_bytes == GiB
        return 3 * x

    assert double(2) == 4
    assert double.__name__ == "double"
    assert anyio.run(triple, 3) == 9
    assert guard.stats().admitted == 2


def test_fifo_waiting_is_fair(monitor: Monitor) -> None:
    guard = Guard(max_concurrent=1, wait="30s", monitor=monitor)
    order: list[int] = []

    def worker(index: int) -> None:
        with guard:
            order.append(index)
            time.sleep(0.005)

    guard.acquire()  # hold the only slot while the workers line up
    threads = []
    for index in range(8):
        thread = threading.Thread(target=worker, args=(index,))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10
        while guard.stats().waiting < index + 1:  # make the arrival order certain
            assert time.monotonic() < deadline
            time.sleep(0.001)
    guard.release(0)
    for thread in threads:
        thread.join(timeout=30)
    assert order == list(range(8))
    assert guard.stats().waiting == 0


def test_waiting_times_out_with_a_reason(monitor: Monitor) -> None:
    guard = Guard(max_concurrent=1, monitor=monitor)
    with guard:
        started = time.monotonic()
        with pytest.raises(ResourceExhausted, match="after waiting") as info:
            with guard.admit(wait="0.2s"):
                pass
        assert time.monotonic() - started >= 0.2
    assert info.value.reason == "concurrency"
    assert info.value.numbers["waited_s"] == 0.2
    assert guard.stats().waiting == 0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_many_tasks_and_threads_never_over_reserve(monitor: Monitor, backend: str) -> None:
    """1,000 tasks and 32 threads through one guard with reservations and waiting."""
    guard = Guard(memory="75%", monitor=monitor, wait="60s")  # 4 GiB of headroom
    reserve = 512 * MiB
    peak = 0
    lock = threading.Lock()
    failures: list[BaseException] = []

    def observe() -> None:
        nonlocal peak
        reserved = guard.stats().reserved_bytes
        with lock:
            peak = max(peak, reserved)
        if reserved > 4 * GiB:
            failures.append(AssertionError(f"reserved {reserved} beyond the headroom"))

    def thread_worker(index: int) -> None:
        for _ in range(5):
            try:
                with guard.admit(reserve=reserve):
                    observe()
                    time.sleep(0.001)
                    if index % 7 == 0:
                        raise KeyError(index)
            except KeyError:
                pass

    async def task_worker(index: int) -> None:
        try:
            async with guard.admit(reserve=reserve):
                observe()
                await anyio.sleep(0.001)
                if index % 5 == 0:
                    raise KeyError(index)
        except KeyError:
            pass

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for index in range(1000):
                group.start_soon(task_worker, index)
        # cancellation while waiting and while inside releases the reservation too
        with anyio.move_on_after(0.05):
            async with anyio.create_task_group() as group:
                for index in range(50):
                    group.start_soon(task_worker, index)
                await anyio.sleep(1)

    threads = [threading.Thread(target=thread_worker, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    anyio.run(main, backend=backend)
    for thread in threads:
        thread.join(timeout=120)
    assert not failures
    assert 0 < peak <= 4 * GiB
    stats = guard.stats()
    assert (stats.in_flight, stats.reserved_bytes, stats.waiting) == (0, 0, 0)
    assert stats.admitted >= 1000 + 32 * 5


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_block_is_cancelled_when_rss_passes_the_hard_limit(backend: str) -> None:
    import resguard

    rss = resguard.snapshot().process.rss
    guard = Guard(rss=rss + 200 * MiB, on_breach="cancel", max_age="5ms")
    finished = False

    async def main() -> None:
        nonlocal finished
        async with guard.admit():
            ballast = b"x" * (400 * MiB)
            await anyio.sleep(10)
            finished = bool(ballast)

    started = time.monotonic()
    with pytest.raises(ResourceExhausted) as info:
        anyio.run(main, backend=backend)
    assert info.value.reason == "rss"
    assert not finished
    assert time.monotonic() - started < 9
    assert guard.stats().in_flight == 0


def test_sync_check_is_cooperative() -> None:
    import resguard

    rss = resguard.snapshot().process.rss
    guard = Guard(rss=rss + 200 * MiB, max_age="0s")
    guard.check()
    ballast = b"x" * (400 * MiB)
    with pytest.raises(ResourceExhausted, match="passed"):
        guard.check()
    del ballast


def test_auto_reserve_learns_from_growth() -> None:
    guard = Guard(reserve="auto", max_age="0s")

    @guard
    def grow() -> bytes:
        return b"x" * (64 * MiB)

    kept = grow()
    key = f"{grow.__module__}.{grow.__qualname__}"
    assert guard.learned_reserve_bytes(key) >= 60 * MiB
    del kept


def test_limit_self_turns_a_runaway_allocation_into_memory_error() -> None:
    code = """
import resguard.guard as g
g.limit_self("300MiB")
try:
    block = bytearray(2 * 2**30)
except MemoryError:
    print("MemoryError")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "MemoryError", out.stderr


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"memory": "90%%"}, InvalidValue),
    ({"memory": True}, InvalidType),
    ({"rss": -1}, InvalidValue),
    ({"max_concurrent": 0}, InvalidValue),
    ({"max_concurrent": True}, InvalidValue),
    ({"wait": "soon"}, InvalidValue),
    ({"reserve": "lots"}, InvalidValue),
    ({"level": 2}, InvalidType),
    ({"on_breach": "explode"}, InvalidValue),
])
def test_bad_arguments_are_named(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        Guard(**kwargs)  # type: ignore[arg-type]
    assert repr(next(iter(kwargs.values()))) in str(info.value)
