"""Readiness that explains itself and liveness that never fails on pressure (issue 16).

``/readyz`` names the breaching rules with their figures, the state's age and a
``Retry-After`` when unready; ``/livez`` and ``/healthz`` answer 200 at any pressure (a
liveness probe failing there would restart a replica that was shedding load correctly),
unless the application serves the path itself.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

from resguard import InvalidType, InvalidValue
from resguard.asgi import DEFAULT_LIVENESS, GuardMiddleware
from resguard.asgi import _breach as readiness_breach
from resguard.guard import Guard
from resguard.monitor import Monitor
from resguard.rules import Level, Policy, Threshold
from resguard.testing import ManualClock

from support import Machine, Recorder, call, make_monitor


class NotFound:
    """A bare ASGI app that serves nothing (404 everywhere) and records what reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})


def critical(tmp_path: Path, clock: ManualClock | None = None) -> tuple[Machine, GuardMiddleware]:
    machine = Machine(tmp_path)
    monitor = make_monitor(machine, clock=clock) if clock else make_monitor(machine)
    machine.set_used_percent(97)
    assert monitor.sample_now().level == Level.CRITICAL
    guard = Guard(monitor=monitor, clock=clock) if clock else Guard(monitor=monitor)
    return machine, GuardMiddleware(NotFound(), guard, start_monitor=False)


def test_readiness_names_each_breaching_rule_with_its_numbers(tmp_path: Path) -> None:
    _, middleware = critical(tmp_path)
    answer = call(middleware, "/readyz")
    assert answer.status == 503
    assert answer.headers["retry-after"] == "1"
    body = answer.json()
    assert (body["status"], body["ready"], body["level"]) == ("unready", False, "CRITICAL")
    [breach] = body["breaches"]
    assert breach["metric"] == "memory.percent"
    assert breach["op"] == ">"
    assert breach["threshold"] == 90
    assert breach["value"] == pytest.approx(97, abs=0.5)
    assert breach["unit"] == "percent"
    assert breach["level"] == "CRITICAL"
    assert isinstance(breach["rule"], str)
    assert breach["rule"]
    assert breach["culprits"] == []
    assert isinstance(body["age_s"], float)
    assert body["age_s"] >= 0


def test_readiness_tells_the_state_age_on_the_guards_clock(tmp_path: Path) -> None:
    # the snapshot's time is the sampler's real clock: the guard's starts a minute ahead, so
    # the first age is never clamped at 0 by a sample taken after the clock was made
    clock = ManualClock(time.monotonic() + 60)
    _, middleware = critical(tmp_path, clock)
    first = call(middleware, "/readyz").json()["age_s"]
    assert first > 0
    clock.advance(2.5)
    assert call(middleware, "/readyz").json()["age_s"] == pytest.approx(first + 2.5, abs=0.01)


def test_readiness_retry_after_is_the_guards_suggestion(tmp_path: Path) -> None:
    _, middleware = critical(tmp_path)
    middleware.guard.retry_after_s = 7.2
    assert call(middleware, "/readyz").headers["retry-after"] == "8"


def test_a_warning_is_listed_while_still_ready(tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    policy = Policy(
        [
            Threshold("memory.percent", ">", 80, level=Level.WARNING, name="memory-warning"),
            Threshold("memory.percent", ">", 95, level=Level.CRITICAL),
        ]
    )
    monitor = Monitor(policy=policy, sampler=machine.sampler, reclaim=False, psi_trigger=False)
    machine.set_used_percent(85)
    monitor.sample_now()
    middleware = GuardMiddleware(Recorder(), Guard(monitor=monitor), start_monitor=False)
    answer = call(middleware, "/readyz")
    assert answer.status == 200
    assert "retry-after" not in answer.headers
    body = answer.json()
    assert (body["ready"], body["level"]) == (True, "WARNING")
    assert [b["rule"] for b in body["breaches"]] == ["memory-warning"]


def test_readiness_without_a_monitor_is_json_with_no_breaches() -> None:
    body = GuardMiddleware(Recorder(), Guard(memory=1)).readiness()  # one byte: already over
    assert (body["ready"], body["level"], body["breaches"], body["age_s"]) == (
        False,
        None,
        [],
        None,
    )


@pytest.mark.parametrize("path", DEFAULT_LIVENESS)
def test_liveness_answers_200_under_critical_pressure(tmp_path: Path, path: str) -> None:
    _, middleware = critical(tmp_path)
    assert call(middleware, "/readyz").status == 503
    answer = call(middleware, path)
    assert (answer.status, answer.json()) == (200, {"status": "alive"})
    assert "retry-after" not in answer.headers
    assert call(middleware, "/work").status == 503  # the guard refuses the rest
    assert call(middleware, path, method="HEAD").body == b""


def test_liveness_is_never_guarded_even_when_not_excluded(tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    monitor = make_monitor(machine)
    machine.set_used_percent(97)
    monitor.sample_now()
    middleware = GuardMiddleware(
        NotFound(), Guard(monitor=monitor), exclude=(), start_monitor=False
    )
    assert call(middleware, "/livez").status == 200
    assert call(middleware, "/healthz").status == 200


def test_the_applications_own_health_handler_wins(tmp_path: Path) -> None:
    _, middleware = critical(tmp_path)
    app = Recorder()
    middleware.app = app
    answer = call(middleware, "/healthz")
    assert (answer.status, answer.body) == (200, b"ok")
    assert app.paths == ["/healthz"]


def test_liveness_paths_are_configurable_and_can_be_turned_off(tmp_path: Path) -> None:
    _, middleware = critical(tmp_path)
    custom = GuardMiddleware(NotFound(), middleware.guard, liveness_paths=("/alive",))
    assert call(custom, "/alive").status == 200
    assert call(custom, "/livez").status == 404  # still excluded (DEFAULT_EXCLUDE): the app's
    off = GuardMiddleware(NotFound(), middleware.guard, liveness_paths=None)
    assert off.liveness_paths == frozenset()
    assert call(off, "/healthz").status == 404  # excluded: the app's own 404


@pytest.mark.parametrize(
    ("paths", "error"),
    [("livez", InvalidValue), (["/ok", "bad"], InvalidValue), (3, InvalidType), ([1], InvalidType)],
)
def test_liveness_paths_are_checked_like_the_readiness_path(
    paths: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="liveness_paths="):
        GuardMiddleware(Recorder(), Guard(memory="90%"), liveness_paths=paths)  # type: ignore[arg-type]


def test_a_breach_figure_that_is_no_number_is_null_in_the_json(tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    machine.set_used_percent(97)
    [breach] = make_monitor(machine).sample_now().verdict.breaches
    odd = attrs.evolve(breach, value=math.nan, threshold=math.inf, held_s=math.inf)
    listed = readiness_breach(odd)
    json.dumps(listed, allow_nan=False)  # strict JSON: NaN is no number
    assert (listed["value"], listed["threshold"], listed["held_s"]) == (None, None, None)
