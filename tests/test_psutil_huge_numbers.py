"""psutil answering integers too large for a float (``10**400`` bytes or seconds): the
psutil backend's conversions raised OverflowError out of ``sample()``. Each such answer is
garbage: its fields are unknown with a fault naming the call, never a raise."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from resguard.snapshot import Sampler

from support import fresh_fault_log

HUGE = 10**400


@pytest.fixture(autouse=True)
def _fresh_fault_log() -> Iterator[None]:
    with fresh_fault_log():
        yield


def _sample_with(monkeypatch: pytest.MonkeyPatch, name: str, answer: Callable[[], Any]) -> Any:
    monkeypatch.setattr(psutil, name, lambda *args, **kwargs: answer())
    sampler = Sampler(backend="psutil", slow_files_max_age_s=0, limits_max_age_s=0)
    sampler.sample()
    return sampler.sample()


@pytest.mark.parametrize(
    ("call", "field", "fields"),
    [
        ("virtual_memory", "total", ("memory.total", "memory")),
        ("virtual_memory", "available", ("memory.used", "memory.available")),
        ("swap_memory", "total", ("swap",)),
        ("cpu_times", "user", ("cpu.percent",)),
        ("cpu_times", "idle", ("cpu.percent",)),
    ],
)
def test_a_huge_integer_from_psutil_is_a_fault_not_an_overflow_error(
    monkeypatch: pytest.MonkeyPatch, call: str, field: str, fields: tuple[str, ...]
) -> None:
    real = getattr(psutil, call)()
    snap = _sample_with(monkeypatch, call, lambda: real._replace(**{field: HUGE}))
    faults = [fault for fault in snap.faults if fault.source == f"psutil.{call}()"]
    assert faults, snap.faults
    assert {fault.field for fault in faults} & set(fields)
    assert all(fault.kind == "garbage" for fault in faults)


def test_cpu_times_that_sum_past_a_float_leave_the_percentage_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = psutil.cpu_times()
    snap = _sample_with(monkeypatch, "cpu_times", lambda: real._replace(user=1e308, system=1e308))
    assert snap.cpu.percent is None
    assert snap.fault_for("cpu.percent") is not None


def test_a_huge_cpu_count_falls_back_to_the_interpreter_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    snap = _sample_with(monkeypatch, "cpu_count", lambda: HUGE)
    assert snap.cpu.count == (os.cpu_count() or 1)
    assert math.isfinite(snap.cpu.effective)


def test_a_huge_own_memory_info_is_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    platform_process = type(psutil.Process()._proc)  # type: ignore[attr-defined]
    real = psutil.Process().memory_info()
    monkeypatch.setattr(
        platform_process, "memory_info", lambda self: real._replace(vms=HUGE, data=HUGE)
    )
    snap = Sampler(backend="psutil").sample()
    assert snap.process.vms is None
    fault = snap.fault_for("process.vms")
    assert fault is not None
    assert fault.kind == "garbage"
    assert snap.process.rss == real.rss
