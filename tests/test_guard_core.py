"""The guard's decisions as pure functions, given hand-made numbers: no Monitor, no lock, no
waiting, no clock (``resguard.guard._core``)."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from resguard.guard import REFUSAL_REASONS
from resguard.guard._core import (
    NO_LIMIT_BYTES,
    Counts,
    Decision,
    HoldMeter,
    Limits,
    View,
    WarnOnce,
    breach,
    budget,
    decide,
    judge,
    state_unknown,
)
from resguard.rules import Level
from resguard.testing import make_snapshot
from resguard.units import Amount

GiB = 2**30


def calm(**snapshot: Any) -> View:
    """A fresh view with an OK verdict: 16 GiB limit, 40 % used unless told otherwise."""
    return View(make_snapshot(**snapshot), Level.OK)


def first_try(view: View, limits: Limits, counts: Counts, reserve: int, **queue: Any) -> Decision:
    """A caller's first try: nobody ahead, not queued, no wait unless told."""
    where: dict[str, Any] = {"ahead": False, "queued": False, "wait_s": 0.0}
    where.update(queue)
    return decide(view, limits, counts, reserve, deadline_s=math.inf, now_s=0.0, **where)


def test_room_enough_is_admitted() -> None:
    decision = first_try(calm(), Limits(memory=Amount("90%")), Counts(), GiB)
    assert decision == Decision("admit")
    assert decision.refusal is None


def test_over_the_share_is_refused_for_memory() -> None:
    decision = first_try(calm(memory_percent=50), Limits(memory=Amount("40%")), Counts(), 0)
    assert decision.action == "refuse"
    assert decision.refusal is not None
    assert decision.refusal.reason == "memory"
    assert decision.refusal.numbers["used_bytes"] == 8 * GiB
    assert decision.refusal.retry_after_s == 1.0


@pytest.mark.parametrize(("memory", "ceiling"), [("1%", "163.8 MiB = 1%"), ("200MiB", "200.0 MiB")])
def test_a_memory_refusal_names_the_guards_ceiling(memory: str, ceiling: str) -> None:
    """``Guard(memory="1%")`` said "0 B of headroom ... (6.4 GiB used of 16.0 GiB)",
    never the 1 % that made the headroom 0."""
    decision = first_try(calm(), Limits(memory=Amount(memory)), Counts(), 100 * 2**20)
    assert decision.refusal is not None
    assert f"the guard's ceiling {ceiling}" in decision.refusal.detail
    whole = first_try(calm(memory_percent=99), Limits(memory=Amount("100%")), Counts(), GiB)
    assert whole.refusal is not None
    assert "ceiling" not in whole.refusal.detail  # the limit itself: nothing to add


def test_what_others_reserved_is_a_reservation_refusal() -> None:
    limits = Limits(memory=Amount("75%"))  # 12 GiB of 16; 8 GiB used: 4 GiB of room
    view = calm(memory_percent=50)
    alone = first_try(view, limits, Counts(in_flight=1, reserved=0), 3 * GiB)
    assert alone.action == "admit"
    crowded = first_try(view, limits, Counts(in_flight=1, reserved=3 * GiB), 2 * GiB)
    assert crowded.refusal is not None
    assert crowded.refusal.reason == "reservation"
    too_big = first_try(view, limits, Counts(in_flight=1, reserved=3 * GiB), 5 * GiB)
    assert too_big.refusal is not None
    assert too_big.refusal.reason == "memory"


def test_a_share_is_of_the_limit_current_when_judged() -> None:
    limits = Limits(memory=Amount("50%"))
    used = 6 * GiB
    assert first_try(calm(used=used, limit=16 * GiB), limits, Counts(), 0).action == "admit"
    shrunk = first_try(calm(used=used, limit=8 * GiB), limits, Counts(), 0)
    assert shrunk.refusal is not None
    assert shrunk.refusal.reason == "memory"


def test_concurrency_suggests_the_average_hold_time() -> None:
    limits = Limits(max_concurrent=2)
    decision = first_try(calm(), limits, Counts(in_flight=2, hold_s=0.75), 0)
    assert decision.refusal is not None
    assert (decision.refusal.reason, decision.refusal.retry_after_s) == ("concurrency", 0.75)
    never_held = first_try(calm(), limits, Counts(in_flight=2), 0)
    assert never_held.refusal is not None
    assert never_held.refusal.retry_after_s == 0.01


def test_nobody_overtakes_the_queue() -> None:
    decision = first_try(calm(), Limits(), Counts(), 0, ahead=True)
    assert decision.refusal is not None
    assert decision.refusal.reason == "queued"
    assert first_try(calm(), Limits(), Counts(), 0, ahead=True, wait_s=5.0).action == "queue"


def test_a_caller_that_may_wait_queues_then_times_out_at_its_deadline() -> None:
    limits, counts = Limits(max_concurrent=1), Counts(in_flight=1)
    assert first_try(calm(), limits, counts, 0, wait_s=2.0).action == "queue"

    def queued(now_s: float) -> Decision:
        return decide(
            calm(), limits, counts, 0, ahead=False, queued=True, wait_s=2.0, deadline_s=12.0,
            now_s=now_s,
        )  # fmt: skip

    assert queued(11.9).action == "queue"
    late = queued(12.0)
    assert late.action == "refuse"
    assert late.refusal is not None
    assert late.refusal.reason == "timeout"
    assert late.refusal.numbers["cause"] == "concurrency"
    assert late.refusal.numbers["waited_s"] == 2.0
    assert late.refusal.detail.endswith("(after waiting 2s)")


def test_the_verdict_level_refuses_before_anything_else() -> None:
    view = View(make_snapshot(), Level.CRITICAL, "the monitor's verdict is unknown (x)")
    decision = first_try(view, Limits(on_unknown="refuse", max_concurrent=1), Counts(), 0)
    assert decision.refusal is not None
    assert decision.refusal.reason == "level"
    assert decision.unknown == {}  # not looked at
    assert first_try(view, Limits(level=None), Counts(), 0).action == "admit"


def test_unknown_numbers_follow_on_unknown_and_are_named() -> None:
    snap = make_snapshot()
    snap = attrs.evolve(snap, memory=attrs.evolve(snap.memory, available=None))
    view = View(snap, Level.OK)
    admitting = first_try(view, Limits(), Counts(), GiB)
    assert admitting.action == "admit"
    assert list(admitting.unknown) == ["memory.available"]  # for the guard to log once
    refusing = first_try(view, Limits(on_unknown="refuse"), Counts(), GiB)
    assert refusing.refusal is not None
    assert refusing.refusal.reason == "unknown"
    assert "memory.available is unknown" in refusing.refusal.detail
    assert first_try(view, Limits(on_unknown="refuse"), Counts(), 0).action == "admit"


def test_no_snapshot_at_all_is_unknown_never_zero() -> None:
    view = View(None, None, None, "sampling failed: OSError: gone")
    refusal, unknown = judge(view, Limits(memory=Amount("90%"), on_unknown="refuse"), Counts(), 0)
    assert refusal is not None
    assert refusal.reason == "unknown"
    assert refusal.numbers["used_bytes"] is None
    assert "sampling failed" in unknown["sample"]


def test_every_reason_decide_gives_is_a_documented_one() -> None:
    produced = [
        first_try(calm(memory_percent=50), Limits(memory=Amount("40%")), Counts(), 0),
        first_try(calm(rss=3 * GiB), Limits(rss=Amount("2GiB")), Counts(), 0),
        first_try(View(make_snapshot(), Level.CRITICAL), Limits(), Counts(), 0),
        first_try(calm(), Limits(), Counts(), 0, ahead=True),
    ]
    reasons = {decision.refusal.reason for decision in produced if decision.refusal}
    assert reasons == {"memory", "rss", "level", "queued"}
    assert reasons <= set(REFUSAL_REASONS)


def test_the_hot_path_budget_leaves_what_is_in_flight_out() -> None:
    """The budget is what the state allows before any reservation: the guard subtracts its
    own reservations on the hot path (it once zeroed and restored its counts for this)."""
    limits = Limits(memory=Amount("75%"))
    assert budget(calm(memory_percent=50), limits, 0) == (4 * GiB, {})
    assert budget(View(make_snapshot(), Level.CRITICAL), limits, 0) == (-1, {})
    over = budget(calm(memory_percent=80), limits, 0)
    assert over[0] < 0  # over the share: below any reservation


def test_the_budget_with_unknowns_follows_on_unknown() -> None:
    snap = make_snapshot()
    view = View(attrs.evolve(snap, memory=attrs.evolve(snap.memory, available=None)), Level.OK)
    room_bytes, unknown = budget(view, Limits(), GiB)
    assert room_bytes == NO_LIMIT_BYTES
    assert "memory.available" in unknown
    assert budget(view, Limits(on_unknown="refuse"), GiB) == (-1, {})


def test_a_breach_is_rss_past_the_limit_or_the_level() -> None:
    counts = Counts()
    assert breach(calm(rss=GiB), Limits(rss=Amount("2GiB")), counts) is None
    past = breach(calm(rss=3 * GiB), Limits(rss=Amount("2GiB")), counts)
    assert past is not None
    assert past.reason == "rss"
    assert "passed" in past.detail
    hot = breach(View(make_snapshot(), Level.CRITICAL), Limits(), counts)
    assert hot is not None
    assert hot.reason == "level"


class FakeState:
    """The three things state_unknown reads of a Monitor state."""

    def __init__(self, at: float, sequence: int = 1, unknown: tuple[str, ...] = ()) -> None:
        self.sequence = sequence
        self.snapshot = make_snapshot(at=at)
        self.verdict = attrs.make_class("Verdict", ["unknown"])(unknown)


class FakeMonitor:
    stale_after_s = 2.0


def test_a_state_is_stale_past_stale_after_at_the_time_given() -> None:
    monitor, state = FakeMonitor(), FakeState(at=100.0)
    assert state_unknown(monitor, state, 101.0) == (False, None)  # type: ignore[arg-type]
    assert state_unknown(monitor, state, 103.0) == (  # type: ignore[arg-type]
        True,
        "stale: last sample 3.0 s ago",
    )
    unknown = FakeState(at=100.0, unknown=("memory.percent: gone",))
    assert state_unknown(monitor, unknown, 100.0) == (  # type: ignore[arg-type]
        False,
        "unknown: memory.percent: gone",
    )
    never = FakeState(at=100.0, sequence=0)
    assert state_unknown(monitor, never, 100.0) == (True, "no sample yet")  # type: ignore[arg-type]


def test_the_hold_meter_is_exact_one_at_a_time() -> None:
    meter = HoldMeter()
    meter.enter(10.0)
    assert meter.leave(12.5) == 2.5
    meter.enter(20.0)  # the idle time between is nobody's hold
    assert meter.leave(20.5) == 0.5
    assert meter.leave(30.0) is None  # nothing counted in


def test_the_hold_meter_adds_up_to_the_total_held_when_overlapping() -> None:
    meter = HoldMeter()
    meter.enter(0.0)  # A holds 0 → 2
    meter.enter(1.0)  # B holds 1 → 5
    first, second = meter.leave(2.0), meter.leave(5.0)
    assert first is not None
    assert second is not None
    assert first + second == pytest.approx(2.0 + 4.0)


def test_an_unknown_is_warned_about_once_a_minute() -> None:
    warn = WarnOnce()
    assert warn.due(["memory.available"], 0.0)
    assert not warn.due(["memory.available"], 30.0)
    assert warn.due(["memory.available", "process.rss"], 31.0)  # something new
    assert not warn.due(["memory.available"], 80.0)  # still unknown: not a quiet minute
    assert warn.due(["memory.available"], 140.0)  # a minute without it
