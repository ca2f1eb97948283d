"""readiness_answer: what the readiness path answers, decided over values read once (no
clock, Monitor or guard reads of its own), and GuardMiddleware.readiness() built on it."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from resguard import Guard, Level
from resguard.asgi import GuardMiddleware, readiness_answer
from resguard.rules import Breach, Verdict
from resguard.testing import ManualClock

KEYS = ("level", "status", "breaches", "age_s")


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("readiness never reaches the app")


def _breach(level: Level) -> Breach:
    return Breach(
        rule="memory_percent",
        metric="memory.percent",
        op=">",
        value=97.0,
        threshold=95.0,
        level=level,
        since=0.0,
        since_wall=0.0,
        held_s=2.5,
        unit="percent",
    )


def _verdict(level: Level) -> Verdict:
    return Verdict(level, () if level == Level.OK else (_breach(level),))


levels = st.sampled_from(list(Level))
texts = st.none() | st.sampled_from(["stale: last sample 9.0 s ago", "unknown: psi: gone"])


@given(
    level=levels,
    unready_level=levels,
    unknown=texts,
    on_unknown=st.sampled_from(["admit", "refuse"]),
    guard_breach=st.none() | st.just("process RSS 2 GiB passed 1 GiB"),
    over_share=st.booleans(),
    numbers_unknown=st.none() | st.just("memory.available: unknown"),
    age_s=st.none() | st.floats(0, 100),
)
def test_a_fresh_verdict_decides_and_the_guards_reading_is_not_looked_at(
    level: Level,
    unready_level: Level,
    unknown: str | None,
    on_unknown: Any,
    guard_breach: str | None,
    over_share: bool,
    numbers_unknown: str | None,
    age_s: float | None,
) -> None:
    common: dict[str, Any] = {
        "age_s": age_s,
        "unknown": unknown,
        "unready_level": unready_level,
        "on_unknown": on_unknown,
    }
    answer = readiness_answer(_verdict(level), **common)
    with_guard = readiness_answer(
        _verdict(level),
        **common,
        guard_breach=guard_breach,
        over_share=over_share,
        numbers_unknown=numbers_unknown,
    )
    assert with_guard == answer
    assert all(key in answer for key in KEYS)
    assert answer["level"] == level.name
    assert answer["age_s"] == age_s
    assert answer.get("unknown") == unknown
    assert len(answer["breaches"]) == (level != Level.OK)
    refused_unknown = unknown is not None and on_unknown == "refuse"
    unready = level >= unready_level or refused_unknown
    assert answer["status"] == ("unready" if unready else "ready")
    assert ("reason" in answer) == unready


@given(
    unknown=texts,
    on_unknown=st.sampled_from(["admit", "refuse"]),
    guard_breach=st.none() | st.just("process RSS 2 GiB passed 1 GiB"),
    over_share=st.booleans(),
    numbers_unknown=st.none() | st.just("memory.available: unknown"),
)
def test_without_a_verdict_the_guards_reading_decides(
    unknown: str | None,
    on_unknown: Any,
    guard_breach: str | None,
    over_share: bool,
    numbers_unknown: str | None,
) -> None:
    answer = readiness_answer(
        None,
        age_s=None,
        unknown=unknown,
        unready_level=Level.CRITICAL,
        on_unknown=on_unknown,
        guard_breach=guard_breach,
        over_share=over_share,
        numbers_unknown=numbers_unknown,
    )
    assert (answer["level"], answer["breaches"], answer["age_s"]) == (None, [], None)
    if guard_breach is not None:
        assert (answer["status"], answer["reason"]) == ("unready", guard_breach)
        assert answer.get("unknown") == unknown  # the numbers are not asked after a breach
    elif over_share:
        assert (answer["status"], answer["reason"]) == ("unready", "over the memory share")
        assert answer.get("unknown") == unknown
    else:
        told = "; ".join(part for part in (unknown, numbers_unknown) if part is not None)
        assert answer.get("unknown") == (told or None)
        refused = bool(told) and on_unknown == "refuse"
        assert answer["status"] == ("unready" if refused else "ready")
        if refused:
            assert answer["reason"].startswith("unknown: ")


def test_the_answer_is_the_same_for_the_same_values() -> None:
    values: dict[str, Any] = {
        "age_s": 0.5,
        "unknown": None,
        "unready_level": Level.CRITICAL,
        "on_unknown": "admit",
    }
    first = readiness_answer(_verdict(Level.CRITICAL), **values)
    assert readiness_answer(_verdict(Level.CRITICAL), **values) == first
    assert first["breaches"][0]["metric"] == "memory.percent"
    assert first["breaches"][0]["held_s"] == 2.5


def test_middleware_readiness_without_a_monitor_is_the_guards_answer() -> None:
    clock = ManualClock()
    middleware = GuardMiddleware(_app, Guard(clock=clock), start_monitor=False)
    answer = middleware.readiness()
    assert (answer["status"], answer["ready"], answer["level"]) == ("ready", True, None)
    assert (answer["breaches"], answer["age_s"]) == ([], None)
    assert list(answer)[:2] == ["status", "ready"]
