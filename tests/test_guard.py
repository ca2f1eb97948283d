"""Guards: admission, reservations, FIFO waiting, cancellation, breaches, self-limits."""

from __future__ import annotations

import functools
import logging
import math
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard import (
    InvalidState,
    InvalidType,
    InvalidValue,
    ResguardError,
    ResourceExhausted,
    testing,
)
from resguard.guard import REFUSAL_REASONS, Guard, limit_self
from resguard.monitor import Monitor
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import Sampler, Snapshot
from resguard.testing import ManualClock, Roots, make_snapshot
from resguard.testing.nvml import make_gpu

from support import run_python, wait_until

MiB = 2**20
GiB = 2**30


def fixed_machine(tmp_path: Path, total_gib: float = 16, available_gib: float = 8) -> Sampler:
    """A sampler over a fixture /proc: the numbers stay put while the test runs."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    kib = 1024
    (proc / "meminfo").write_text(
        f"MemTotal: {int(total_gib * GiB / kib)} kB\nMemFree: {int(available_gib * GiB / kib)} kB\n"
        f"MemAvailable: {int(available_gib * GiB / kib)} kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
    )
    (proc / "self" / "statm").write_text(f"{GiB // 4096} {(256 * MiB) // 4096} 0 0 0 0 0\n")
    return Sampler(Roots(proc=str(proc), cgroup=str(tmp_path / "no-cgroup")))


def queued_at_least(guard: Guard, count: int) -> bool:
    """Whether *count* callers or more are queued at *guard* (for ``wait_until``)."""
    return guard.stats().waiting >= count


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

    guard.acquire()  # hold the only slot while the workers line up
    threads = []
    for index in range(8):
        thread = threading.Thread(target=worker, args=(index,))
        thread.start()
        threads.append(thread)
        wait_until(  # make the arrival order certain
            functools.partial(queued_at_least, guard, index + 1), what=f"worker {index} to queue"
        )
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
    assert info.value.reason == "timeout"
    assert info.value.numbers["cause"] == "concurrency"
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
    assert rss is not None
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
    assert rss is not None
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


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"memory": "90%%"}, InvalidValue),
        ({"memory": True}, InvalidType),
        ({"rss": -1}, InvalidValue),
        ({"max_concurrent": 0}, InvalidValue),
        ({"max_concurrent": True}, InvalidType),
        ({"wait": "soon"}, InvalidValue),
        ({"reserve": "lots"}, InvalidValue),
        ({"level": 2}, InvalidType),
        ({"on_breach": "explode"}, InvalidValue),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        Guard(**kwargs)  # type: ignore[arg-type]
    assert repr(next(iter(kwargs.values()))) in str(info.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Guard(memory=0), "memory=0 must be above zero; expected e.g. '20GiB' or '90%'"),
        (lambda: Guard(rss="0B"), "rss='0B' must be above zero; expected e.g. '20GiB' or '90%'"),
        (
            lambda: Guard(memory="0%"),
            "memory='0%' must be above 0% (it would refuse everything); expected a share of "
            "the effective memory limit such as '90%'",
        ),
        (
            lambda: limit_self("0B"),
            "memory='0B' must be above zero; expected e.g. '20GiB' or '90%'",
        ),
    ],
)
def test_a_zero_bound_is_refused_in_the_guards_own_words(make: Any, message: str) -> None:
    """The one Amount must not change what a guard says of a zero bound (it said
    "memory='0': '0' must be above zero (it would refuse everything)", also for
    limit_self, which refuses nothing)."""
    with pytest.raises(InvalidValue) as info:
        make()
    assert str(info.value) == message


# ------------------------------------------------------------- scripted machines ---


class ScriptedSampler(Sampler):
    """A sampler that returns the snapshot the test sets (numbers may be None)."""

    def __init__(self, snap: Snapshot) -> None:
        super().__init__()
        self.snap = snap
        self.samples = 0

    def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        self.samples += 1
        return self.snap


def unknown_memory(at: float) -> Snapshot:
    """A snapshot whose memory numbers could not be read (an empty /proc/meminfo)."""
    return testing.unknown_memory(make_snapshot(at=at))


def scripted_monitor(snap: Snapshot, **kwargs: Any) -> Monitor:
    policy = Policy([Threshold("memory.percent", ">", 90, level=Level.CRITICAL)])
    return Monitor(
        policy=policy, sampler=ScriptedSampler(snap), reclaim=False, psi_trigger=False, **kwargs
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("resguard")
    ]


# --------------------------------------------------------------- unknown numbers ---


def test_unknown_headroom_is_admitted_by_default_with_one_warning(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = scripted_monitor(unknown_memory(clock()))
    guard = Guard(memory="90%", rss="50%", monitor=monitor, reserve="1GiB", clock=clock)
    caplog.set_level(logging.WARNING, "resguard")
    for _ in range(5):
        with guard:
            pass
        with guard.admit(reserve="2GiB"):
            pass
    assert guard.stats().admitted == 10
    assert guard.headroom_bytes() > 2**40  # nothing known bounds it
    warned = [m for m in warnings_of(caplog) if guard.name in m]
    assert len(warned) == 1, warned
    assert "memory.available is unknown" in warned[0]
    assert "/proc/meminfo" in warned[0]


def test_unknown_headroom_is_refused_with_the_reason_when_asked(clock: ManualClock) -> None:
    monitor = scripted_monitor(unknown_memory(clock()))
    guard = Guard(memory="90%", monitor=monitor, reserve="1GiB", on_unknown="refuse", clock=clock)
    with pytest.raises(ResourceExhausted) as info:
        with guard:
            pytest.fail("must not run")
    assert info.value.reason == "unknown"
    assert "memory.limit is unknown" in str(info.value)
    assert "/proc/meminfo empty" in str(info.value)
    assert info.value.numbers["limit_bytes"] is None  # unknown, not 0
    assert guard.unknown_reason() is not None
    assert guard.headroom_bytes() == 0
    assert guard.stats().refused_by_reason == {"unknown": 1}


def test_unknown_numbers_are_never_read_as_zero(clock: ManualClock) -> None:
    """Today an empty meminfo read as limit 0 refused everything ("0 B used of 0 B")."""
    monitor = scripted_monitor(unknown_memory(clock()))
    guard = Guard(monitor=monitor, reserve="1GiB", clock=clock)
    with guard:
        assert guard.stats().reserved_bytes == 2**30


def test_a_guard_that_needs_no_numbers_is_not_unknown(clock: ManualClock) -> None:
    monitor = scripted_monitor(unknown_memory(clock()))
    guard = Guard(max_concurrent=2, level=None, monitor=monitor, on_unknown="refuse", clock=clock)
    with guard:  # no verdict, no memory bound, nothing reserved: nothing it needs is unknown
        assert guard.unknown_reason() is None


def test_a_known_number_still_refuses_when_others_are_unknown(clock: ManualClock) -> None:
    snap = make_snapshot(at=clock(), rss=3 * GiB)
    snap = attrs.evolve(snap, memory=attrs.evolve(snap.memory, available=None))
    guard = Guard(rss="2GiB", monitor=scripted_monitor(snap), clock=clock)
    with pytest.raises(ResourceExhausted) as info:
        with guard:
            pass
    assert info.value.reason == "rss"


def test_a_verdict_with_unknowns_follows_on_unknown(clock: ManualClock) -> None:
    monitor = scripted_monitor(unknown_memory(clock()))
    if monitor.state.verdict.known:
        pytest.skip("the policy does not report unknown rules yet")
    guard = Guard(monitor=monitor, on_unknown="refuse", clock=clock)
    with pytest.raises(ResourceExhausted, match="unknown") as info:
        with guard:
            pass
    assert info.value.reason == "unknown"
    with Guard(monitor=monitor, clock=clock):  # admit: the known part says OK
        pass


@pytest.mark.parametrize("damage", ["", "MemTotal: lots\n", "MemTotal: 16"])
def test_a_damaged_meminfo_follows_on_unknown_end_to_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    """A real Sampler over a /proc whose meminfo is empty, garbage or cut short."""
    sampler = fixed_machine(tmp_path)
    (tmp_path / "proc" / "meminfo").write_text(damage)
    policy = Policy([Threshold("memory.percent", ">", 90, level=Level.CRITICAL)])
    clock = ManualClock(time.monotonic())
    monitor = Monitor(policy=policy, sampler=sampler, reclaim=False, psi_trigger=False, clock=clock)
    assert monitor.state.snapshot.memory.limit is None  # unknown, not 0
    caplog.set_level(logging.WARNING, "resguard")
    admitting = Guard(memory="90%", reserve="512MiB", monitor=monitor, name="admitting")
    for _ in range(3):
        with admitting:
            pass
    assert len([m for m in warnings_of(caplog) if "admitting" in m]) == 1
    refusing = Guard(memory="90%", reserve="512MiB", monitor=monitor, on_unknown="refuse")
    error = _refusal(refusing)
    assert error.reason == "unknown"
    assert "meminfo" in str(error)


# -------------------------------------------------------------------- staleness ---


def test_a_stale_state_is_not_trusted_forever(clock: ManualClock) -> None:
    """A monitor whose thread died keeps a CRITICAL verdict; the guard must notice."""
    monitor = scripted_monitor(make_snapshot(at=clock(), memory_percent=95))
    refusing = Guard(monitor=monitor, on_unknown="refuse", clock=clock)
    admitting = Guard(monitor=monitor, clock=clock)
    for guard in (refusing, admitting):
        with pytest.raises(ResourceExhausted) as info:
            with guard:
                pass
        assert info.value.reason == "level"
    clock.advance(10)  # ten seconds without a sample
    with pytest.raises(ResourceExhausted) as info:
        with refusing:
            pass
    assert info.value.reason == "unknown"
    assert "stale: last sample 10.0 s ago" in str(info.value)
    with admitting:  # the old CRITICAL is not trusted: the verdict is unknown
        pass
    assert "stale" in (admitting.unknown_reason() or "")


def test_a_stale_state_is_logged_once_not_per_call(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = scripted_monitor(make_snapshot(at=clock()))
    guard = Guard(monitor=monitor, clock=clock)
    caplog.set_level(logging.WARNING, "resguard")
    clock.advance(5)
    for _ in range(20):
        clock.advance(0.5)  # the age in the message changes every call
        with guard:
            pass
    warned = [m for m in warnings_of(caplog) if "stale" in m]
    assert len(warned) == 1, warned


def test_the_hot_path_notices_staleness(clock: ManualClock) -> None:
    monitor = scripted_monitor(make_snapshot(at=clock()))
    guard = Guard(monitor=monitor, on_unknown="refuse", clock=clock)
    with guard:  # fresh: the no-I/O path admits
        pass
    clock.advance(0.5)
    with guard:
        pass
    clock.advance(5)
    with pytest.raises(ResourceExhausted) as info:
        with guard:
            pass
    assert info.value.reason == "unknown"


def test_staleness_is_measured_on_the_monitors_clock(clock: ManualClock) -> None:
    monitor = scripted_monitor(make_snapshot(at=clock()), clock=clock, stale_after="2s")
    guard = Guard(monitor=monitor, on_unknown="refuse")  # no clock of its own
    with guard:
        pass
    clock.advance(1.5)
    with guard:
        pass
    clock.advance(1)
    assert _refusal(guard).reason == "unknown"


def test_a_stale_state_falls_back_to_fresh_numbers(clock: ManualClock) -> None:
    """Admitting on a stale state still checks memory, with numbers sampled now."""
    monitor = scripted_monitor(make_snapshot(at=clock(), memory_percent=40))
    guard = Guard(memory="80%", monitor=monitor, clock=clock)
    with guard:
        pass
    sampler = monitor._sampler
    assert isinstance(sampler, ScriptedSampler)
    clock.advance(10)
    sampler.snap = make_snapshot(at=clock(), memory_percent=95)  # the monitor never saw it
    with pytest.raises(ResourceExhausted) as info:
        with guard:
            pass
    assert info.value.reason == "memory"


# ---------------------------------------------------------------- refusal reasons ---


def test_refusal_reasons_are_one_closed_documented_set() -> None:
    package = Path(sys.modules["resguard.guard"].__file__ or "").parent
    source = "\n".join(path.read_text() for path in sorted(package.glob("*.py")))
    produced = set(re.findall(r'_refuse\(\s*"(\w+)"', source))
    produced |= set(re.findall(r'reason="(\w+)"', source))
    produced |= {"reservation", "memory"}  # chosen in one expression
    assert produced <= set(REFUSAL_REASONS)
    assert set(REFUSAL_REASONS) <= produced | {"reservation", "memory"}
    doc = sys.modules["resguard.guard"].__doc__ or ""
    assert "REFUSAL_REASONS" in doc
    for reason in REFUSAL_REASONS:
        assert f'``"{reason}"``' in source  # each is described next to the constant


def _refusal(guard: Guard, **admit: Any) -> ResourceExhausted:
    with pytest.raises(ResourceExhausted) as info:
        with guard.admit(**admit):
            pass
    return info.value


def test_every_refusal_reason_is_produced_where_it_applies(clock: ManualClock) -> None:
    seen: dict[str, ResourceExhausted] = {}
    calm = scripted_monitor(make_snapshot(at=clock(), memory_percent=50, rss=2 * GiB))
    seen["memory"] = _refusal(Guard(memory="40%", monitor=calm, clock=clock))
    roomy = Guard(memory="75%", monitor=calm, clock=clock)  # 4 GiB of room
    with roomy.admit(reserve="3GiB"):
        seen["reservation"] = _refusal(roomy, reserve="2GiB")
        seen["memory-too"] = _refusal(roomy, reserve="5GiB")  # would not fit even alone
    seen["rss"] = _refusal(Guard(rss="1GiB", monitor=calm, clock=clock))
    hot = scripted_monitor(make_snapshot(at=clock(), memory_percent=95))
    seen["level"] = _refusal(Guard(monitor=hot, clock=clock))
    single = Guard(max_concurrent=1, monitor=calm, clock=clock)
    with single:
        seen["concurrency"] = _refusal(single)
        timed_out: list[ResourceExhausted] = []
        waiter = threading.Thread(target=lambda: timed_out.append(_refusal(single, wait="10ms")))
        waiter.start()
        wait_until(lambda: single.stats().waiting == 1, what="the call to queue")
        clock.advance(0.01)  # its whole wait passes on the guard's clock
        waiter.join(timeout=10)
        seen["timeout"] = timed_out[0]
        waiter = threading.Thread(target=lambda: single.acquire(wait_s=30))
        waiter.start()
        wait_until(lambda: single.stats().waiting == 1, what="the second call to queue")
        seen["queued"] = _refusal(single)
    waiter.join(timeout=10)
    single.release(0)
    unknown = scripted_monitor(unknown_memory(clock()))
    seen["unknown"] = _refusal(
        Guard(memory="90%", monitor=unknown, on_unknown="refuse", clock=clock)
    )
    full_gpu = attrs.evolve(make_snapshot(at=clock()), gpus=(make_gpu(used_percent=95),))
    seen["vram"] = _refusal(Guard(vram="90%", monitor=scripted_monitor(full_gpu), clock=clock))
    reasons = {key: error.reason for key, error in seen.items()}
    assert reasons.pop("memory-too") == "memory"
    assert reasons == {reason: reason for reason in REFUSAL_REASONS}
    assert seen["timeout"].numbers["cause"] == "concurrency"


# ----------------------------------------------------------------- cancel on breach ---


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_on_breach_cancel_keeps_the_body_exception_type() -> None:
    guard = Guard(on_breach="cancel", max_age="1s")
    with pytest.raises(ValueError, match="the body's own") as info:
        async with guard.admit():
            raise ValueError("the body's own")
    assert type(info.value) is ValueError  # not an ExceptionGroup around it
    with pytest.raises(ResourceExhausted, match="inner guard"):
        async with guard.admit():
            raise ResourceExhausted("inner guard", reason="memory")
    assert guard.stats().in_flight == 0


@pytest.mark.anyio
async def test_on_breach_cancel_still_cancels_at_a_breach(clock: ManualClock) -> None:
    monitor = scripted_monitor(make_snapshot(at=clock(), memory_percent=50))
    guard = Guard(monitor=monitor, on_breach="cancel", clock=clock)
    sampler = monitor._sampler
    assert isinstance(sampler, ScriptedSampler)
    finished = False

    async def block() -> None:
        nonlocal finished
        async with guard.admit():
            sampler.snap = make_snapshot(at=clock(), memory_percent=95)
            monitor.sample_now()
            await anyio.sleep(10)
            finished = True

    with pytest.raises(ResourceExhausted) as info:
        await block()
    assert info.value.reason == "level"
    assert not finished
    assert guard.stats().in_flight == 0


@pytest.mark.anyio
async def test_on_breach_cancel_lets_an_outer_cancellation_through() -> None:
    guard = Guard(on_breach="cancel", max_age="1s")
    with anyio.move_on_after(0.01) as scope:
        async with guard.admit():
            await anyio.sleep(10)
    assert scope.cancelled_caught
    assert guard.stats().in_flight == 0


# ---------------------------------------------------------------- hand-over wake-ups ---


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_hand_over_between_threads_and_tasks_wakes_the_next_at_once(
    monitor: Monitor, backend: str
) -> None:
    """16 alternating thread and task waiters behind one slot: today 7 s (each task noticed
    a thread's hand-over only on its 1 s safety poll), expected tens of milliseconds."""
    guard = Guard(
        max_concurrent=1, wait="30s", monitor=monitor, clock=ManualClock(time.monotonic())
    )
    order: list[int] = []
    threads: list[threading.Thread] = []

    def thread_worker(index: int) -> None:
        with guard:
            order.append(index)

    async def task_worker(index: int) -> None:
        async with guard:
            order.append(index)

    guard.acquire()  # hold the only slot while the waiters line up
    with anyio.from_thread.start_blocking_portal(backend) as portal:
        futures = []
        for index in range(16):
            if index % 2:
                futures.append(portal.start_task_soon(task_worker, index))
            else:
                thread = threading.Thread(target=thread_worker, args=(index,))
                thread.start()
                threads.append(thread)
            wait_until(
                functools.partial(queued_at_least, guard, index + 1),
                what=f"waiter {index} to queue",
            )
        started = time.monotonic()
        guard.release(0)
        for future in futures:
            future.result(timeout=30)
        for thread in threads:
            thread.join(timeout=30)
        elapsed = time.monotonic() - started
    assert order == list(range(16))
    assert elapsed < 0.5, f"16 hand-overs took {elapsed:.2f} s"


# ------------------------------------------------------------------------- leaks ---


@pytest.mark.anyio
async def test_cancellation_while_queued_leaves_no_trace(monitor: Monitor) -> None:
    guard = Guard(
        max_concurrent=1,
        wait="30s",
        monitor=monitor,
        reserve="1MiB",
        clock=ManualClock(time.monotonic()),
    )
    with guard:
        with anyio.move_on_after(0.05):
            async with guard:
                pytest.fail("must not get in")
        assert guard.stats().waiting == 0
    stats = guard.stats()
    assert (stats.in_flight, stats.reserved_bytes, stats.waiting) == (0, 0, 0)


class BrokenSampler(Sampler):
    def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        raise OSError("the sampler broke")


def test_a_failing_measurement_in_exit_still_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    guard = Guard(reserve="auto", max_age="1h")
    with guard.admit(reserve="1MiB"):
        pass  # fills the guard's snapshot cache
    admission = guard.admit()
    with admission:
        monkeypatch.setattr(guard, "_sampler", BrokenSampler())
    stats = guard.stats()
    assert (stats.in_flight, stats.reserved_bytes) == (0, 0)


@pytest.mark.parametrize("on_unknown", ["admit", "refuse"])
def test_a_sampler_that_raises_never_reaches_the_caller(
    monkeypatch: pytest.MonkeyPatch, on_unknown: str
) -> None:
    """Without a Monitor the guard samples on the request path; a failure there is
    unknown numbers, not an exception out of ``with guard:``."""
    guard = Guard(memory="90%", reserve="1MiB", on_unknown=on_unknown)  # type: ignore[arg-type]
    monkeypatch.setattr(guard, "_sampler", BrokenSampler())
    if on_unknown == "admit":
        with guard:
            pass
        assert guard.breach() is None
    else:
        error = _refusal(guard)
        assert error.reason == "unknown"
        assert "sampling failed: OSError: the sampler broke" in str(error)
    assert guard.stats().in_flight == 0


def test_an_admission_cannot_be_entered_twice_at_once(monitor: Monitor) -> None:
    guard = Guard(monitor=monitor, clock=ManualClock(time.monotonic()))
    admission = guard.admit(reserve="1MiB")
    with admission:
        with pytest.raises(InvalidState):
            with admission:
                pass
        assert guard.stats().in_flight == 1
    with admission:  # again, after it left
        pass
    assert guard.stats().in_flight == 0


def test_a_release_without_an_admission_cannot_corrupt_the_counts(monitor: Monitor) -> None:
    guard = Guard(monitor=monitor, clock=ManualClock(time.monotonic()))
    with pytest.raises(InvalidState, match="without a matching acquire"):
        guard.release(0)
    reserved = guard.acquire(reserve=MiB)
    with pytest.raises(InvalidState):
        guard.release(reserved + 1)
    with pytest.raises(InvalidType):
        guard.release("1MiB")  # type: ignore[arg-type]
    guard.release(reserved)
    stats = guard.stats()
    assert (stats.in_flight, stats.reserved_bytes) == (0, 0)


# --------------------------------------------------------------------- bad input ---


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"retry_after": None}, InvalidType),
        ({"retry_after": "x"}, InvalidValue),
        ({"retry_after": math.nan}, InvalidValue),
        ({"retry_after": -5}, InvalidValue),
        ({"memory": "0%"}, InvalidValue),
        ({"rss": "0%"}, InvalidValue),
        ({"memory": 0}, InvalidValue),
        ({"monitor": 5}, InvalidType),
        ({"name": 123}, InvalidType),
        ({"name": ""}, InvalidValue),
        ({"on_unknown": "maybe"}, InvalidValue),
        ({"on_unknown": None}, InvalidValue),
        ({"on_breach": ["cancel"]}, InvalidValue),
        ({"max_age": "soon"}, InvalidValue),
        ({"wait": -1}, InvalidValue),
        ({"reserve": -1}, InvalidValue),
        ({"reserve": True}, InvalidType),
        ({"max_concurrent": 1.5}, InvalidType),
        ({"clock": 5}, InvalidType),
    ],
)
def test_bad_guard_arguments_say_what_is_expected(
    kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        Guard(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ResguardError)
    name, value = next(iter(kwargs.items()))
    assert f"{name}={value!r}" in str(info.value)
    assert "expected" in str(info.value) or "must" in str(info.value)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda g: g.admit(reserve="lots"), InvalidValue),
        (lambda g: g.admit(wait="x"), InvalidValue),
        (lambda g: g.admit(on_breach="explode"), InvalidValue),
        (lambda g: g.admit(key=5), InvalidType),
        (lambda g: g.acquire(reserve="x"), InvalidValue),
        (lambda g: g.acquire(wait_s=math.nan), InvalidValue),
        (lambda g: g(reserve="lots"), InvalidValue),
        (lambda g: g(5), InvalidType),
    ],
)
def test_bad_admission_arguments_say_what_is_expected(call: Any, error: type[Exception]) -> None:
    guard = Guard(max_age="1h")
    with pytest.raises(error) as info:
        call(guard)
    assert isinstance(info.value, ResguardError)
    assert guard.stats().in_flight == 0


_ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.lists(st.integers(), max_size=2),
    st.integers(min_value=10**300, max_value=10**400),
)


@given(
    _ANYTHING,
    st.sampled_from(
        [
            "memory",
            "rss",
            "reserve",
            "wait",
            "max_age",
            "retry_after",
            "max_concurrent",
            "name",
            "on_unknown",
            "on_breach",
            "level",
            "monitor",
        ]
    ),
)
def test_any_guard_argument_is_accepted_or_refused_in_the_tree(value: object, name: str) -> None:
    try:
        Guard(**{name: value})  # type: ignore[arg-type]
    except (InvalidValue, InvalidType):
        pass


def test_limit_self_refuses_limits_the_process_cannot_live_under() -> None:
    code = """
import resource
from resguard import ResguardError
from resguard.guard import limit_self
before = resource.getrlimit(resource.RLIMIT_DATA), resource.getrlimit(resource.RLIMIT_AS)
for value in ("0%", "0.0001%", 1, "1MiB", None, True, "lots", -5):
    try:
        limit_self(value)
        print("accepted", repr(value))
    except ResguardError as error:
        print(type(error).__name__, repr(value) in str(error))
try:
    limit_self("1GiB", kind="heap")
except ResguardError as error:
    print(type(error).__name__, "'heap'" in str(error))
after = resource.getrlimit(resource.RLIMIT_DATA), resource.getrlimit(resource.RLIMIT_AS)
print("unchanged", before == after)
"""
    lines = run_python(code).splitlines()
    assert lines[:2] == ["InvalidValue True", "InvalidValue True"]  # nothing to run on
    assert lines[2:4] == ["InvalidValue True", "InvalidValue True"]
    assert lines[4:6] == ["InvalidType True", "InvalidType True"]
    assert lines[6:9] == ["InvalidValue True", "InvalidValue True", "InvalidValue True"]
    assert lines[9] == "unchanged True"


def test_limit_self_takes_effect_for_the_next_admission_at_once() -> None:
    """A 500 MiB reservation was admitted right after a 300 MiB self-limit (limits cached
    for a second); it must be refused at once."""
    code = """
from resguard import ResourceExhausted
from resguard.guard import Guard, limit_self
guard = Guard(max_age="1h")  # even a long-lived cached snapshot must not hide it
try:
    with guard.admit(reserve="500MiB"):
        pass
except ResourceExhausted:
    print("no room to start with")
    raise SystemExit
limit_self("300MiB")
try:
    with guard.admit(reserve="500MiB"):
        print("admitted")
except ResourceExhausted as error:
    print("refused", error.reason)
"""
    out = run_python(code).strip()
    if out == "no room to start with":
        pytest.skip("this machine has less than 500 MiB available")
    assert out == "refused memory"


def test_a_forked_child_gets_a_working_guard_whatever_the_parents_threads_held(
    monitor: Monitor,
) -> None:
    from forking import held_by_another_thread, in_child

    guard = Guard(monitor=monitor, max_concurrent=1, wait="5s")
    admitted, done = threading.Event(), threading.Event()

    def holder() -> None:
        with guard:
            admitted.set()
            done.wait(30)

    holding = threading.Thread(target=holder)
    holding.start()
    assert admitted.wait(10)
    queued = threading.Thread(target=lambda: guard.acquire(wait_s=5) and None)
    queued.start()
    wait_until(lambda: guard.stats().waiting > 0, what="the second thread to queue")

    def child() -> None:
        # the parent's threads are not here: their admission and their place in the queue
        # must not keep this process's calls out, nor their lock hang it
        stats = guard.stats()
        assert (stats.in_flight, stats.waiting, stats.reserved_bytes) == (0, 0, 0)
        with guard:
            pass
        with guard.admit(wait=0):
            pass
        assert guard.stats().in_flight == 0

    try:
        with held_by_another_thread(guard._lock):
            status = in_child(child, timeout_s=10)
    finally:
        done.set()
        holding.join(10)
        queued.join(10)
    assert status == 0
    guard.release(0)  # the queued thread's admission, in the parent
    assert guard.stats().in_flight == 0


def test_a_child_forked_inside_a_guarded_block_can_leave_it(monitor: Monitor) -> None:
    from forking import in_child

    guard = Guard(monitor=monitor, max_concurrent=2)
    with guard, guard.admit():
        status = in_child(lambda: _leave_blocks(guard), timeout_s=10)
    assert status == 0
    assert guard.stats().in_flight == 0


def _leave_blocks(guard: Guard) -> None:
    """What a child forked inside ``with guard, guard.admit():`` does: it leaves the blocks."""
    guard.__exit__(None, None, None)
    guard.release(0)
    assert guard.stats().in_flight == 0
    with guard:  # and the guard still works
        pass


def test_leaving_a_guard_block_never_entered_is_invalid_state_not_negative_counts(
    monitor: Monitor,
) -> None:
    guard = Guard(monitor=monitor, reserve="1MiB")
    with pytest.raises(InvalidState):
        guard.__exit__(None, None, None)
    stats = guard.stats()
    assert (stats.in_flight, stats.reserved_bytes) == (0, 0)
    with guard:
        assert guard.stats().in_flight == 1
    assert guard.stats().in_flight == 0


@pytest.mark.parametrize(
    ("reading", "error"),
    [
        (math.nan, InvalidValue),
        (math.inf, InvalidValue),
        (10**400, InvalidValue),
        ("1000", InvalidType),
        (None, InvalidType),
        (True, InvalidType),
    ],
)
def test_a_clock_that_does_not_tell_time_is_refused_when_given(
    monitor: Monitor, reading: object, error: type[Exception]
) -> None:
    from resguard.processes import ProcessTable
    from resguard.prometheus import ResguardCollector

    def clock() -> Any:
        return reading

    for make in (
        lambda: Guard(monitor=monitor, clock=clock),
        lambda: Monitor(sampler=monitor.sampler, reclaim=False, clock=clock),
        lambda: ResguardCollector(monitor=monitor, clock=clock),
        lambda: ProcessTable(clock=clock),
    ):
        with pytest.raises(error, match="clock="):
            make()


def test_limit_self_by_percent_again_sets_the_same_limit_not_a_share_of_the_last() -> None:
    code = """
from resguard.guard import limit_self
print(limit_self("80%"), limit_self("80%"), limit_self("80%", kind="as"),
      limit_self("80%", kind="as"))
"""
    data_1, data_2, as_1, as_2 = map(int, run_python(code).split())
    assert data_1 == data_2  # it was 80 % of 80 %: 64 % of the machine, then 51 %...
    assert as_1 == as_2


@pytest.mark.parametrize(
    ("held_s", "error"),
    [
        (math.nan, InvalidValue),
        (math.inf, InvalidValue),
        (-1.0, InvalidValue),
        (10**400, InvalidValue),
        ("1", InvalidType),
        (True, InvalidType),
    ],
)
def test_release_refuses_a_held_time_that_is_not_one_and_changes_nothing(
    monitor: Monitor, held_s: object, error: type[Exception]
) -> None:
    guard = Guard(monitor=monitor, max_concurrent=1)
    reserve = guard.acquire()
    with pytest.raises(error, match="held_s="):
        guard.release(reserve, held_s)  # type: ignore[arg-type]
    assert guard.stats().in_flight == 1  # nothing half-applied
    guard.release(reserve, 2)  # an int is seconds too
    with guard.admit():
        with pytest.raises(ResourceExhausted) as refused:
            guard.acquire()
    assert math.isfinite(refused.value.retry_after)


class _NoRepr:
    """A hostile argument: its repr raises, and it is no number, size or duration."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    def __call__(self) -> object:
        return self


def test_an_argument_whose_repr_raises_still_gets_a_resguard_error() -> None:
    from resguard.asgi import GuardMiddleware
    from resguard.prometheus import ResguardCollector
    from resguard.rules import ProcessThreshold

    hostile: Any = _NoRepr()  # no type is right for it: that is the point
    for make in (
        lambda: Guard(memory=hostile),
        lambda: Guard(wait=hostile),
        lambda: Guard(retry_after=hostile),
        lambda: Guard(level=hostile),
        lambda: Guard(name=hostile),
        lambda: Guard(clock=hostile),
        lambda: Guard(monitor=hostile),
        lambda: Guard().admit(reserve=hostile),
        lambda: Monitor(interval=hostile),
        lambda: Monitor(policy=hostile),
        lambda: Monitor(clock=hostile),
        lambda: Policy([hostile]),
        lambda: Threshold("memory.percent", hostile, 1),
        lambda: Threshold("memory.percent", ">", hostile),
        lambda: ProcessThreshold(rss_above=hostile),
        lambda: GuardMiddleware(hostile, hostile),
        lambda: ResguardCollector(guards=hostile),
        lambda: ResguardCollector(clock=hostile),
    ):
        with pytest.raises(ResguardError):
            make()


def test_with_guard_feeds_the_concurrency_retry_after_as_admit_does(clock: ManualClock) -> None:
    """``with guard:`` gave its admission back without its hold time, so a concurrency
    refusal behind such blocks always suggested retrying after 0.01 s."""
    monitor = scripted_monitor(make_snapshot(at=clock()))
    plain = Guard(max_concurrent=1, monitor=monitor, clock=clock)
    admitting = Guard(max_concurrent=1, monitor=monitor, clock=clock)
    with plain:
        clock.advance(0.5)
    with admitting.admit():
        clock.advance(0.5)
    with plain:
        behind_plain = _refusal(plain)
    with admitting.admit():
        behind_admit = _refusal(admitting)
    assert behind_plain.reason == behind_admit.reason == "concurrency"
    assert behind_plain.retry_after == pytest.approx(0.05)  # a tenth of 0.5 s, averaged in
    assert behind_plain.retry_after == pytest.approx(behind_admit.retry_after)


def test_a_limit_assigned_after_construction_takes_effect(clock: ManualClock) -> None:
    """level, max_concurrent, on_unknown and retry_after_s are still assignable, and the
    next admission (the no-I/O path too) follows the new value."""
    hot = scripted_monitor(make_snapshot(at=clock(), memory_percent=95))
    guard = Guard(monitor=hot, clock=clock)
    assert _refusal(guard).reason == "level"
    guard.level = None
    with guard:
        pass
    guard.max_concurrent = 1
    with guard:
        assert _refusal(guard).reason == "concurrency"
    guard.retry_after_s = 7.0
    guard.level = Level.CRITICAL
    refused = _refusal(guard)
    assert (refused.reason, refused.retry_after) == ("level", 7.0)
    assert (guard.level, guard.max_concurrent, guard.retry_after_s) == (Level.CRITICAL, 1, 7.0)
