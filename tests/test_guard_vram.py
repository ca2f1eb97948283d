"""Guards on VRAM (``Guard(vram=...)``), the refusal summaries and the queued-wait counts."""

from __future__ import annotations

import logging
import threading

import attrs
import pytest

from resguard import Guard, ResourceExhausted
from resguard.guard import WAIT_BUCKETS_S
from resguard.snapshot import Sampler, Snapshot
from resguard.testing import ManualClock, StaticMonitor, make_snapshot
from resguard.testing.nvml import FakeGpu, FakeNVML, make_gpu

from support import wait_until

GIB = 1 << 30


def _gpus(*percents: float) -> Snapshot:
    gpus = tuple(make_gpu(i, used_percent=p, total_bytes=10 * GIB) for i, p in enumerate(percents))
    return attrs.evolve(make_snapshot(), gpus=gpus)


def _refused(guard: Guard) -> ResourceExhausted:
    with pytest.raises(ResourceExhausted) as info:
        with guard:
            pass
    return info.value


def test_a_share_of_the_fullest_gpu_refuses_with_reason_vram() -> None:
    monitor = StaticMonitor(_gpus(20, 50))
    guard = Guard(vram="90%", monitor=monitor)
    with guard:
        pass
    monitor.set(_gpus(20, 95))  # one board full: the emptier one does not save it
    error = _refused(guard)
    assert error.reason == "vram"
    assert "GPU 1 uses 9.5 GiB of VRAM, above the guard's 9.0 GiB = 90% of 10.0 GiB" in str(error)
    assert (error.numbers["vram_used_bytes"], error.numbers["vram_device"]) == (
        int(9.5 * GIB),
        1,
    )
    monitor.set(_gpus(20, 50))
    with guard:
        pass


def test_a_size_is_a_ceiling_of_used_vram() -> None:
    guard = Guard(vram="8GiB", monitor=StaticMonitor(_gpus(81)))
    assert _refused(guard).reason == "vram"
    assert Guard(vram="8GiB", monitor=StaticMonitor(_gpus(79))).would_admit()


def test_unknown_vram_follows_on_unknown_and_never_raises_anything_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for snap in (make_snapshot(), attrs.evolve(make_snapshot(), gpus=())):
        monitor = StaticMonitor(snap)
        assert Guard(vram="90%", monitor=monitor).would_admit()
        error = _refused(Guard(vram="90%", monitor=monitor, on_unknown="refuse"))
        assert error.reason == "unknown"
        assert "gpu.memory is unknown" in str(error)
    assert any("gpu.memory is unknown" in r.getMessage() for r in caplog.records)


def test_vram_keeps_the_lock_free_path_and_refuses_on_it() -> None:
    monitor = StaticMonitor(_gpus(10))
    plain, judged = Guard(monitor=monitor), Guard(vram="90%", monitor=monitor)
    assert plain.lock_free
    assert judged.lock_free
    with judged:
        pass
    monitor.set(_gpus(99))
    assert _refused(judged).reason == "vram"
    with plain:  # the guard without vram does not judge it
        pass


def test_a_bad_vram_is_refused_naming_the_argument() -> None:
    with pytest.raises(ValueError, match=r"vram='0%' must be above 0%"):
        Guard(vram="0%")
    with pytest.raises(ValueError, match=r"vram='lots'"):
        Guard(vram="lots")
    assert Guard(vram="90%").vram is not None
    assert Guard().vram is None


def test_vram_of_an_injected_nvml_through_a_sampler() -> None:
    nvml = FakeNVML(devices=[FakeGpu(memory_total_bytes=10 * GIB, memory_used_bytes=GIB)])
    sampler = Sampler(nvml=nvml)
    monitor = StaticMonitor(sampler.sample())
    guard = Guard(vram="90%", monitor=monitor)
    with guard:
        pass
    nvml.devices[0].memory_used_bytes = 10 * GIB
    monitor.set(Sampler(nvml=nvml).sample())
    assert _refused(guard).reason == "vram"


def test_a_refusal_burst_is_one_warning_line_not_one_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = Guard(vram="90%", monitor=StaticMonitor(_gpus(99)), name="api")
    with caplog.at_level(logging.WARNING, logger="resguard"):
        for _ in range(50):
            _refused(guard)
    lines = [r.getMessage() for r in caplog.records if r.name == "resguard.guard"]
    assert len(lines) == 1
    assert "api refused 1 request: vram;" in lines[0]


def test_a_queued_admission_counts_its_wait_and_an_immediate_one_does_not() -> None:
    clock = ManualClock(1000.0)
    single = Guard(max_concurrent=1, monitor=StaticMonitor(clock=clock), clock=clock)
    with single:
        pass
    empty = single.stats()
    assert empty.queued_wait_counts == (0,) * (len(WAIT_BUCKETS_S) + 1)
    reserve = single.acquire()
    admitted = threading.Event()

    def queue() -> None:
        single.acquire(wait_s=30)
        admitted.set()

    waiter = threading.Thread(target=queue)
    waiter.start()
    wait_until(lambda: single.stats().waiting == 1, what="the call to queue")
    clock.advance(0.04)
    single.release(reserve)
    waiter.join(timeout=10)
    assert admitted.is_set()
    stats = single.stats()
    bucket = WAIT_BUCKETS_S.index(0.05)  # 0.025 < 0.04 <= 0.05
    assert stats.queued_wait_counts[bucket] == 1
    assert sum(stats.queued_wait_counts) == 1
    assert stats.queued_wait_s == pytest.approx(0.04)
    single.release(0)
