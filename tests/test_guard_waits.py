"""What a guard's wait ends in (issue 16, round 2, R3 #4): a CRITICAL verdict is shed at
once, never queued; a wait for memory that runs out keeps the memory's reason; only a wait
for other calls (a slot, a reservation, a turn) ends as ``"timeout"``."""

from __future__ import annotations

import math
import time
from typing import Any

import attrs
import pytest

from resguard import ResourceExhausted
from resguard.asgi import GuardMiddleware
from resguard.guard import Guard
from resguard.guard._core import Counts, Limits, View, decide
from resguard.rules import Level, Policy, Threshold
from resguard.testing import StaticMonitor, make_snapshot
from resguard.testing.nvml import make_gpu
from resguard.units import Amount

from support import Recorder, call

GiB = 2**30


def view(level: Level = Level.OK, **snapshot: Any) -> View:
    return View(make_snapshot(**snapshot), level)


def queued_at(view: View, limits: Limits, counts: Counts, reserve: int, now_s: float) -> Any:
    """A caller queued at 10 s with a 2 s wait, deciding again at *now_s*."""
    return decide(
        view, limits, counts, reserve, ahead=False, queued=True, wait_s=2.0, deadline_s=12.0,
        now_s=now_s,
    )  # fmt: skip


@pytest.mark.parametrize("ahead", [False, True])
def test_a_critical_verdict_is_refused_at_once_even_for_a_caller_that_may_wait(
    ahead: bool,
) -> None:
    decision = decide(
        view(Level.CRITICAL), Limits(memory=Amount("80%")), Counts(), GiB, ahead=ahead,
        queued=False, wait_s=2.0, deadline_s=math.inf, now_s=0.0,
    )  # fmt: skip
    assert decision.action == "refuse"
    assert decision.refusal is not None
    assert decision.refusal.reason == "level"
    assert "waited_s" not in decision.refusal.numbers


def test_a_queued_caller_is_refused_for_the_level_as_soon_as_the_verdict_reaches_it() -> None:
    limits, counts = Limits(max_concurrent=1), Counts(in_flight=1)
    assert queued_at(view(), limits, counts, 0, 10.5).action == "queue"
    decision = queued_at(view(Level.CRITICAL), limits, counts, 0, 10.5)
    assert decision.action == "refuse"
    assert decision.refusal is not None
    assert decision.refusal.reason == "level"
    assert decision.refusal.numbers["waited_s"] == 0.5
    assert decision.refusal.numbers["cause"] == "level"
    assert decision.refusal.detail == "the verdict is CRITICAL (after waiting 0.5s)"


@pytest.mark.parametrize(
    ("limits", "counts", "reserve", "still", "reason"),
    [
        (Limits(memory=Amount("40%")), Counts(), 0, view(memory_percent=50), "memory"),
        (Limits(rss=Amount("1GiB")), Counts(), 0, view(rss=2 * GiB), "rss"),
        (Limits(on_unknown="refuse"), Counts(), 0, View(make_snapshot(), Level.OK, "?"), "unknown"),
        (Limits(max_concurrent=1), Counts(in_flight=1), 0, view(), "timeout"),
        (Limits(), Counts(reserved=9 * GiB), 2 * GiB, view(), "timeout"),
    ],
)
def test_a_wait_that_runs_out_keeps_a_memory_cause_and_times_out_on_others(
    limits: Limits, counts: Counts, reserve: int, still: View, reason: str
) -> None:
    assert queued_at(still, limits, counts, reserve, 11.9).action == "queue"
    decision = queued_at(still, limits, counts, reserve, 12.0)
    assert decision.action == "refuse"
    assert decision.refusal is not None
    assert decision.refusal.reason == reason
    assert decision.refusal.numbers["waited_s"] == 2.0
    cause = decision.refusal.numbers["cause"]
    assert cause == reason if reason != "timeout" else cause in {"concurrency", "reservation"}
    assert decision.refusal.detail.endswith("(after waiting 2s)")


def test_a_wait_for_vram_that_runs_out_is_refused_for_vram() -> None:
    snap = attrs.evolve(make_snapshot(), gpus=(make_gpu(0, used_percent=95, total_bytes=GiB),))
    still = View(snap, Level.OK)
    decision = queued_at(still, Limits(vram=Amount("90%")), Counts(), 0, 12.0)
    assert decision.refusal is not None
    assert decision.refusal.reason == "vram"
    assert decision.refusal.numbers["waited_s"] == 2.0


def test_a_guard_with_a_wait_sheds_a_critical_verdict_without_waiting() -> None:
    policy = Policy([Threshold("memory.percent", ">", 90, level=Level.CRITICAL)])
    guard = Guard(memory="80%", reserve="32MiB", wait="5s",
                  monitor=StaticMonitor(memory_percent=95, policy=policy))  # fmt: skip
    started = time.monotonic()
    with pytest.raises(ResourceExhausted) as info:
        with guard:
            pytest.fail("admitted at CRITICAL")
    assert time.monotonic() - started < 2.5  # not the 5 s wait
    assert info.value.reason == "level"
    assert guard.stats().refused_by_reason == {"level": 1}
    assert guard.stats().waiting == 0


def test_the_middleware_answers_a_critical_verdict_at_once_with_reason_level() -> None:
    policy = Policy([Threshold("memory.percent", ">", 90, level=Level.CRITICAL)])
    monitor = StaticMonitor(memory_percent=95, policy=policy)
    guard = Guard(memory="80%", reserve="32MiB", wait="5s", monitor=monitor, name="api")
    app = Recorder()
    started = time.monotonic()
    response = call(GuardMiddleware(app, guard, start_monitor=False), "/chat")
    assert time.monotonic() - started < 2.5  # not the 5 s wait
    assert response.status == 503
    assert response.json()["reason"] == "level"
    assert app.paths == []
    assert guard.stats().refused_by_reason == {"level": 1}
