"""GuardMiddleware: 503 + Retry-After, excluded paths, readiness, lifespan, releases, OOM.

The first tests call the middleware with real ASGI messages; the rest run real uvicorn
servers over loopback (in a thread, or as a child process inside a memory cgroup) and talk
to them with httpx. Memory levels are driven by a Monitor whose Sampler reads a fixture
/proc tree that the test rewrites.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from resguard import InvalidType, InvalidValue, ResguardError, ResourceExhausted, testing
from resguard.asgi import DEFAULT_EXCLUDE, GuardMiddleware, retry_after_header
from resguard.guard import Guard
from resguard.monitor import Monitor
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import Sampler, Snapshot
from resguard.testing import ManualClock, make_snapshot

from support import (
    GiB,
    Machine,
    MiB,
    Recorder,
    Uvicorn,
    call,
    http_scope,
    make_monitor,
    start_uvicorn,
    wait_until,
)

TESTS = Path(__file__).parent


def percent_of(monitor: Monitor | None) -> float:
    """The memory percent of *monitor*'s state (the fixture machines always know it)."""
    assert monitor is not None
    percent = monitor.state.snapshot.memory.percent
    assert percent is not None
    return percent


# ------------------------------------------------------------------------ fixtures ---


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


@pytest.fixture
def monitor(machine: Machine) -> Iterator[Monitor]:
    monitor = make_monitor(machine)
    yield monitor
    # a server that failed to stop never ran its lifespan's shutdown: its threads must not
    # outlive the test (every later test checks for leftover threads)
    monitor.stop()


def running(monitor: Monitor) -> bool:
    return any(thread.is_alive() for thread in monitor._threads)


# ------------------------------------------------------------- direct ASGI calls ---


BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@BACKENDS
def test_refusal_is_503_with_retry_after_and_json_without_calling_the_app(
    monitor: Monitor, backend: str
) -> None:
    app = Recorder()
    guard = Guard(memory="40%", monitor=monitor, retry_after=2.5)  # 50 % is used
    response = call(GuardMiddleware(app, guard, start_monitor=False), "/work", backend=backend)
    assert response.status == 503
    assert response.headers["retry-after"] == "3"  # rounded up to whole seconds
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.body)
    assert response.json() == {"error": "overloaded", "reason": "memory", "retry_after": 3}
    assert app.paths == []
    assert guard.stats().refused_by_reason == {"memory": 1}


def test_admitted_request_reaches_the_app_and_its_reservation_is_released(monitor: Monitor) -> None:
    app = Recorder()
    guard = Guard(memory="75%", monitor=monitor)  # 4 GiB of headroom
    middleware = GuardMiddleware(app, guard, reserve="1GiB", start_monitor=False)
    response = call(middleware, "/work")
    assert (response.status, response.body) == (200, b"ok")
    assert app.paths == ["/work"]
    stats = guard.stats()
    assert (stats.admitted, stats.in_flight, stats.reserved_bytes) == (1, 0, 0)
    # a reservation larger than the headroom is refused with its own reason
    big = GuardMiddleware(app, guard, reserve="5GiB", start_monitor=False)
    assert call(big, "/work").json()["reason"] == "memory"


@pytest.mark.parametrize(
    ("retry_after_s", "header"),
    [
        (0.0, 1),
        (0.01, 1),
        (1.0, 1),
        (1.2, 2),
        (2.5, 3),
        (30.0, 30),
        (float("inf"), 1),
        (float("nan"), 1),
    ],
)
def test_retry_after_is_whole_seconds_at_least_one(retry_after_s: float, header: int) -> None:
    assert retry_after_header(retry_after_s) == header


def test_excluded_paths_bypass_the_guard(monitor: Monitor) -> None:
    app = Recorder()
    guard = Guard(memory="10%", monitor=monitor)  # refuses everything guarded
    middleware = GuardMiddleware(app, guard, exclude=("/healthz", "/static/*"), start_monitor=False)
    assert call(middleware, "/healthz").status == 200
    assert call(middleware, "/static/app.js").status == 200
    assert call(middleware, "/static/").status == 200
    assert call(middleware, "/healthz/deep").status == 503  # exact, not a prefix
    assert call(middleware, "/staticx").status == 503
    assert call(middleware, "/").status == 503
    assert app.paths == ["/healthz", "/static/app.js", "/static/"]
    assert guard.stats().refused == 3
    app.paths.clear()
    assert middleware.excluded("/static/x")
    assert not middleware.excluded("/api")
    # below a root path (uvicorn --root-path /api), paths are matched without the prefix
    assert call(middleware, "/api/healthz", root_path="/api").status == 200
    assert call(middleware, "/api/readyz", root_path="/api").status == 200
    assert call(middleware, "/api/x", root_path="/api").status == 503
    # the defaults keep liveness probes and metrics scrapes out of the guard
    default = GuardMiddleware(app, guard, start_monitor=False)
    for path in DEFAULT_EXCLUDE:
        assert call(default, path).status == 200


def test_readiness_follows_the_monitor_level(machine: Machine, monitor: Monitor) -> None:
    app = Recorder()
    middleware = GuardMiddleware(app, Guard(monitor=monitor), start_monitor=False)
    ready = call(middleware, "/readyz")
    assert ready.status == 200
    assert "retry-after" not in ready.headers
    body = ready.json()
    assert (body["status"], body["ready"], body["level"], body["breaches"]) == (
        "ready",
        True,
        "OK",
        [],
    )
    machine.set_used_percent(97)
    assert monitor.sample_now().level == Level.CRITICAL
    unready = call(middleware, "/readyz")
    assert unready.status == 503
    assert unready.headers["retry-after"] == "1"  # the guard's retry_after
    assert unready.json()["status"] == "unready"
    assert unready.json()["ready"] is False
    assert unready.json()["level"] == "CRITICAL"
    assert "memory.percent" in unready.json()["reason"]
    assert call(middleware, "/readyz", method="HEAD").body == b""
    machine.set_used_percent(40)
    monitor.sample_now()
    assert call(middleware, "/readyz").status == 200
    assert app.paths == []  # answered by the middleware, never the app


def test_readiness_level_and_path_are_configurable(machine: Machine, monitor: Monitor) -> None:
    app = Recorder()
    machine.set_used_percent(95)
    monitor.sample_now()
    lenient = GuardMiddleware(
        app,
        Guard(monitor=monitor, level=None),
        start_monitor=False,
        readiness_path="/ready",
        unready_level=Level.CRITICAL,
    )
    assert call(lenient, "/ready").status == 503
    off = GuardMiddleware(
        app, Guard(monitor=monitor, level=None), start_monitor=False, readiness_path=None
    )
    assert call(off, "/readyz").status == 200  # reaches the app
    assert app.paths == ["/readyz"]


def test_readiness_without_a_monitor_asks_the_guard() -> None:
    app = Recorder()
    refusing = GuardMiddleware(app, Guard(memory=1))  # one byte: already over
    assert refusing.monitor is None
    answer = call(refusing, "/readyz")
    assert answer.status == 503
    assert answer.json()["level"] is None
    admitting = GuardMiddleware(app, Guard(memory="100%"))
    assert call(admitting, "/readyz").status == 200


def guard_and_middleware(
    app: Any, monitor: Monitor, hot_path: bool
) -> tuple[Guard, GuardMiddleware]:
    """A 1 GiB reservation per request, on the guard's sync hot path or through admit()."""
    if hot_path:
        guard = Guard(memory="90%", reserve="1GiB", monitor=monitor)
        middleware = GuardMiddleware(app, guard, start_monitor=False)
    else:
        guard = Guard(memory="90%", monitor=monitor)
        middleware = GuardMiddleware(app, guard, reserve="1GiB", start_monitor=False)
    assert middleware._plain is hot_path
    return guard, middleware


HOT_PATH = pytest.mark.parametrize("hot_path", [True, False], ids=["hot-path", "admit"])


@HOT_PATH
def test_reservation_is_released_when_the_app_raises(monitor: Monitor, hot_path: bool) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        assert guard.stats().reserved_bytes == GiB
        raise RuntimeError("handler bug")

    guard, middleware = guard_and_middleware(broken, monitor, hot_path)
    with pytest.raises(RuntimeError, match="handler bug"):
        call(middleware, "/")
    stats = guard.stats()
    assert (stats.in_flight, stats.reserved_bytes, stats.admitted) == (0, 0, 1)


@BACKENDS
@HOT_PATH
def test_reservation_is_released_when_the_request_is_cancelled(
    monitor: Monitor, backend: str, hot_path: bool
) -> None:
    entered = threading.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        assert guard.stats().reserved_bytes == GiB
        entered.set()
        await anyio.sleep(60)

    guard, middleware = guard_and_middleware(slow, monitor, hot_path)

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            await anyio.sleep(60)
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            raise AssertionError("nothing may be sent")

        with anyio.move_on_after(0.2):  # what a server does when the client goes away
            await middleware(http_scope("/"), receive, send)

    anyio.run(main, backend=backend)
    assert entered.is_set()
    assert (guard.stats().in_flight, guard.stats().reserved_bytes) == (0, 0)


async def _answer(send: Any, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _forever() -> dict[str, Any]:
    await anyio.sleep(3600)
    raise AssertionError("unreachable")


@BACKENDS
def test_a_client_that_leaves_while_queued_is_dropped(monitor: Monitor, backend: str) -> None:
    guard = Guard(max_concurrent=1, wait="60s", monitor=monitor)
    calls: list[str] = []
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        release = anyio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            calls.append(scope["path"])
            await release.wait()
            await _answer(send)

        middleware = GuardMiddleware(app, guard, start_monitor=False)
        assert middleware._watch

        async def leaving() -> dict[str, Any]:
            if not sent:
                sent.append({"read": "request"})
                return {"type": "http.request", "body": b"", "more_body": False}
            await anyio.sleep(0.1)
            return {"type": "http.disconnect"}

        async def nothing_to(message: Any) -> None:
            raise AssertionError(f"sent {message} to a client that left")

        async def ignore(message: Any) -> None:
            pass

        async with anyio.create_task_group() as group:
            group.start_soon(middleware, http_scope("/first"), _forever, ignore)
            while guard.stats().in_flight == 0:
                await anyio.sleep(0.01)
            with anyio.fail_after(20):  # far less than the 60 s it could queue
                await middleware(http_scope("/second"), leaving, nothing_to)
            assert guard.stats().waiting == 0
            release.set()

    anyio.run(main, backend=backend)
    assert calls == ["/first"]  # the second never reached the app
    stats = guard.stats()
    assert (stats.admitted, stats.refused, stats.in_flight, stats.waiting) == (1, 0, 0, 0)


@BACKENDS
def test_the_body_read_while_queued_is_replayed_to_the_app(monitor: Monitor, backend: str) -> None:
    guard = Guard(max_concurrent=1, wait="60s", monitor=monitor)
    bodies: list[bytes] = []
    chunks = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ]

    async def main() -> None:
        release = anyio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["path"] == "/first":
                await release.wait()
            else:
                body = b""
                while True:
                    message = await receive()
                    body += message["body"]
                    if not message["more_body"]:
                        break
                bodies.append(body)
            await _answer(send)

        middleware = GuardMiddleware(app, guard, start_monitor=False)

        async def upload() -> dict[str, Any]:
            if chunks:
                return chunks.pop(0)
            return await _forever()

        async def ignore(message: Any) -> None:
            pass

        async with anyio.create_task_group() as group:
            group.start_soon(middleware, http_scope("/first"), _forever, ignore)
            while guard.stats().in_flight == 0:
                await anyio.sleep(0.01)
            group.start_soon(middleware, http_scope("/second", "POST"), upload, ignore)
            while chunks:  # the watcher reads the whole body while the request queues
                await anyio.sleep(0.01)
            release.set()

    anyio.run(main, backend=backend)
    assert bodies == [b"abcd"]
    assert guard.stats().admitted == 2


def test_watching_a_queued_request_stops_at_a_server_that_breaks_the_protocol(
    monitor: Monitor,
) -> None:
    guard = Guard(max_concurrent=1, wait="60s", monitor=monitor)
    served: list[str] = []

    async def main() -> None:
        release = anyio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["path"] == "/first":
                await release.wait()
            served.append(scope["path"])
            await _answer(send)

        async def chatty() -> dict[str, Any]:  # never blocks, never says disconnect
            return {"type": "http.request", "body": b"", "more_body": False}

        async def ignore(message: Any) -> None:
            pass

        middleware = GuardMiddleware(app, guard, start_monitor=False)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(middleware, http_scope("/first"), _forever, ignore)
                while guard.stats().in_flight == 0:
                    await anyio.sleep(0.01)
                group.start_soon(middleware, http_scope("/second"), chatty, ignore)
                while guard.stats().waiting == 0:
                    await anyio.sleep(0.01)
                await anyio.sleep(0.1)  # the loop still runs: the watcher did not spin
                release.set()

    anyio.run(main)
    assert served == ["/first", "/second"]


def test_refusal_raised_inside_the_app_becomes_503_until_the_response_started(
    monitor: Monitor,
) -> None:
    async def guarded_inside(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ResourceExhausted("model guard refused", reason="rss", retry_after=4.2)

    guard = Guard(monitor=monitor)
    middleware = GuardMiddleware(guarded_inside, guard, start_monitor=False)
    early = call(middleware, "/early")
    assert (early.status, early.headers["retry-after"]) == (503, "5")
    assert early.json()["reason"] == "rss"
    with pytest.raises(ResourceExhausted):  # too late to change the status
        call(middleware, "/late")
    assert guard.stats().in_flight == 0


@BACKENDS
def test_a_refusal_inside_the_app_is_503_with_on_breach_cancel(
    monitor: Monitor, backend: str
) -> None:
    """With on_breach="cancel" the app's ResourceExhausted came out in an ExceptionGroup,
    which the middleware answered with 500; it must be 503 like without it."""

    async def guarded_inside(scope: Any, receive: Any, send: Any) -> None:
        raise ResourceExhausted("model guard refused", reason="rss", retry_after=2)

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("the app's own")

    guard = Guard(monitor=monitor, on_breach="cancel", clock=ManualClock(time.monotonic()))
    refused = call(
        GuardMiddleware(guarded_inside, guard, start_monitor=False), "/x", backend=backend
    )
    assert (refused.status, refused.json()["reason"]) == (503, "rss")
    with pytest.raises(KeyError, match="the app's own"):
        call(GuardMiddleware(broken, guard, start_monitor=False), "/x", backend=backend)
    assert guard.stats().in_flight == 0


def unknown_memory_monitor(clock: ManualClock) -> Monitor:
    """A monitor whose /proc/meminfo came back empty: memory numbers unknown."""
    snap = testing.unknown_memory(make_snapshot(at=clock()))

    class Scripted(Sampler):
        def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot:
            return snap

    policy = Policy([Threshold("memory.percent", ">", 90, level=Level.CRITICAL)])
    return Monitor(policy=policy, sampler=Scripted(), reclaim=False, psi_trigger=False)


@pytest.mark.parametrize(("on_unknown", "status"), [("admit", 200), ("refuse", 503)])
def test_readiness_says_unknown_when_the_monitor_is_stale(
    machine: Machine, on_unknown: str, status: int
) -> None:
    clock = ManualClock(time.monotonic())
    monitor = make_monitor(machine)
    machine.set_used_percent(97)
    assert monitor.sample_now().level == Level.CRITICAL
    guard = Guard(monitor=monitor, on_unknown=on_unknown, clock=clock)  # type: ignore[arg-type]
    middleware = GuardMiddleware(Recorder(), guard, start_monitor=False)
    assert call(middleware, "/readyz").status == 503  # fresh and CRITICAL
    machine.set_used_percent(40)  # the monitor would see it, but it stopped sampling
    clock.advance(30)
    answer = call(middleware, "/readyz")
    assert answer.status == status
    body = answer.json()
    assert body["level"] is None  # an old CRITICAL is not trusted forever
    assert body["unknown"].startswith("stale: last sample 30")
    if on_unknown == "refuse":
        assert body["reason"].startswith("unknown: stale")
        assert call(middleware, "/work").json()["reason"] == "unknown"
    else:
        assert call(middleware, "/work").status == 200


@pytest.mark.parametrize(("on_unknown", "status"), [("admit", 200), ("refuse", 503)])
def test_readiness_says_unknown_when_a_source_is_damaged(on_unknown: str, status: int) -> None:
    clock = ManualClock(1000.0)
    monitor = unknown_memory_monitor(clock)
    guard = Guard(
        memory="90%",
        monitor=monitor,
        on_unknown=on_unknown,  # type: ignore[arg-type]
        clock=clock,
    )
    answer = call(GuardMiddleware(Recorder(), guard, start_monitor=False), "/readyz")
    assert answer.status == status
    assert "/proc/meminfo" in answer.json()["unknown"]
    assert answer.json()["status"] == ("ready" if status == 200 else "unready")


def test_websockets_pass_through(monitor: Monitor) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = GuardMiddleware(app, Guard(memory="1%", monitor=monitor), start_monitor=False)
    anyio.run(middleware, {"type": "websocket", "path": "/ws"}, None, None)  # type: ignore[arg-type]
    assert seen == ["websocket"]
    assert guard_untouched(middleware.guard)


def guard_untouched(guard: Guard) -> bool:
    stats = guard.stats()
    return stats.admitted == stats.refused == 0


def test_bad_arguments_are_named(monitor: Monitor) -> None:
    app = Recorder()
    with pytest.raises(InvalidValue, match="exclude='healthz'"):
        GuardMiddleware(app, monitor=monitor, exclude=("healthz",))
    with pytest.raises(InvalidValue, match="readiness_path"):
        GuardMiddleware(app, monitor=monitor, readiness_path="readyz")
    with pytest.raises(InvalidType, match="guard="):
        GuardMiddleware(app, "90%")  # type: ignore[arg-type]
    with pytest.raises(InvalidType, match="not an ASGI application"):
        GuardMiddleware(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        GuardMiddleware(app, monitor=monitor, reserve="lots")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"exclude": 5}, InvalidType),
        ({"exclude": [5]}, InvalidType),
        ({"readiness_path": 5}, InvalidType),
        ({"start_monitor": "false"}, InvalidType),
        ({"reserve": True}, InvalidType),
        ({"reserve": "lots"}, InvalidValue),
        ({"wait": "x"}, InvalidValue),
        ({"wait": float("nan")}, InvalidValue),
        ({"wait": -1}, InvalidValue),
        ({"unready_level": 2}, InvalidType),
        ({"monitor": 5}, InvalidType),
    ],
)
def test_every_bad_middleware_argument_is_in_the_error_tree(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        GuardMiddleware(Recorder(), **kwargs)
    assert isinstance(info.value, ResguardError)
    name, value = next(iter(kwargs.items()))
    quoted = value[0] if isinstance(value, list) else value  # a bad entry is named alone
    assert f"{name}={quoted!r}" in str(info.value)


def test_importing_the_middleware_imports_no_framework() -> None:
    code = (
        "import sys, resguard.asgi; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'starlette', 'fastapi', 'uvicorn', 'httpx', 'h11'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


def test_defaults_build_a_guard_at_90_percent_with_its_own_monitor() -> None:
    middleware = GuardMiddleware(Recorder())
    assert isinstance(middleware.monitor, Monitor)
    assert middleware.guard.monitor is middleware.monitor
    assert middleware.readiness_path == "/readyz"
    try:
        status = call(middleware, "/x").status
        assert running(middleware.monitor)  # started at the first request (no lifespan)
        if status == 503:  # only for the default reasons: above 90 % or a CRITICAL verdict
            state = middleware.monitor.state
            assert set(middleware.guard.stats().refused_by_reason) <= {"memory", "level"}
            assert percent_of(middleware.monitor) > 90 or state.level >= Level.CRITICAL
        else:
            assert status == 200
    finally:
        middleware.monitor.stop()


# ---------------------------------------------------------------------- lifespan ---


class Lifespan:
    """Drives the ASGI lifespan protocol like a server: startup, then shutdown."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent: list[dict[str, Any]] = []
        self.between: Callable[[], object] = lambda: None
        self.error: BaseException | None = None

    def run(self, backend: str = "asyncio") -> list[str]:
        async def main() -> None:
            inbox: list[dict[str, Any]] = [{"type": "lifespan.startup"}]
            wake = anyio.Event()
            started = anyio.Event()

            async def receive() -> dict[str, Any]:
                nonlocal wake
                while not inbox:
                    await wake.wait()
                    wake = anyio.Event()
                return inbox.pop(0)

            async def send(message: dict[str, Any]) -> None:
                self.sent.append(message)
                if message["type"].startswith("lifespan.startup."):
                    started.set()

            async def serve() -> None:
                try:
                    await self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
                except Exception as error:
                    self.error = error
                started.set()

            async with anyio.create_task_group() as group:
                group.start_soon(serve)
                await started.wait()
                if self.sent and self.sent[-1]["type"] == "lifespan.startup.complete":
                    self.between()
                    inbox.append({"type": "lifespan.shutdown"})
                    wake.set()

        anyio.run(main, backend=backend)
        return [message["type"] for message in self.sent]


def starlette_app(events: list[str], monitor: Monitor, fail: bool = False) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append(f"startup, monitor running={running(monitor)}")
        if fail:
            raise RuntimeError("database is down")
        yield
        events.append(f"shutdown, monitor running={running(monitor)}")

    return Starlette(lifespan=lifespan)


def test_lifespan_starts_and_stops_the_monitor_around_the_app(monitor: Monitor) -> None:
    events: list[str] = []
    middleware = GuardMiddleware(starlette_app(events, monitor), monitor=monitor)
    driver = Lifespan(middleware)
    driver.between = lambda: events.append(f"serving, monitor running={running(monitor)}")
    assert driver.run() == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    # started before the app's startup code, stopped after its shutdown code
    assert events == [
        "startup, monitor running=True",
        "serving, monitor running=True",
        "shutdown, monitor running=True",
    ]
    assert not running(monitor)
    assert driver.error is None


def test_lifespan_failure_stops_the_monitor_and_is_reported(monitor: Monitor) -> None:
    events: list[str] = []
    middleware = GuardMiddleware(starlette_app(events, monitor, fail=True), monitor=monitor)
    driver = Lifespan(middleware)
    assert driver.run() == ["lifespan.startup.failed"]
    assert "database is down" in driver.sent[0]["message"]
    assert isinstance(driver.error, RuntimeError)  # the server sees the failure
    assert not running(monitor)


@BACKENDS
@pytest.mark.parametrize("style", ["raises", "returns"])
def test_lifespan_is_answered_for_apps_without_lifespan(
    monitor: Monitor, style: str, backend: str
) -> None:
    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" and style == "returns":
            return
        assert scope["type"] == "http"

    seen: list[bool] = []
    driver = Lifespan(GuardMiddleware(http_only, monitor=monitor))
    driver.between = lambda: seen.append(running(monitor))
    assert driver.run(backend) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert seen == [True]
    assert not running(monitor)
    assert driver.error is None


def test_a_monitor_started_by_its_owner_is_left_running(monitor: Monitor) -> None:
    with monitor:
        driver = Lifespan(GuardMiddleware(starlette_app([], monitor), monitor=monitor))
        assert driver.run()[-1] == "lifespan.shutdown.complete"
        assert running(monitor)
    assert not running(monitor)


def test_start_monitor_false_leaves_the_monitor_alone(monitor: Monitor) -> None:
    middleware = GuardMiddleware(Recorder(), monitor=monitor, start_monitor=False)
    Lifespan(middleware).run()
    call(middleware, "/x")
    assert not running(monitor)


# -------------------------------------------------------------- uvicorn in-process ---


class HoldErroredConnection(logging.Filter):
    """Holds uvicorn between answering a request whose handler raised and closing that
    keep-alive connection, until the client sent its next request on it (10 s at most).

    uvicorn closes the connection of a request that raised after its response started;
    a client that got the response reuses the connection if the close has not reached it
    yet, and its next request is reset (httpx.ReadError). A loaded machine gives the
    client that window by chance (uvicorn formats the traceback first); this gives it
    every time.
    """

    def __init__(self) -> None:
        super().__init__()
        self.errors = self.found = 0  # handler errors logged; the connection found for them

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Exception in ASGI application"):
            return True
        self.errors += 1
        frame: FrameType | None = sys._getframe(1)
        while frame is not None and frame.f_code.co_name != "run_asgi":
            frame = frame.f_back  # up to uvicorn's cycle, whose connection this is
        if frame is not None:
            self.found += 1
            transport = frame.f_locals["self"].transport
            if not transport.is_closing():  # closed already: no client will reuse it
                select.select([transport.get_extra_info("socket")], [], [], 10)
        return True


@pytest.fixture
def errored_connection_held() -> Iterator[None]:
    """Every test of a handler that raises under uvicorn meets the close race (above)."""
    logger = logging.getLogger("uvicorn.error")
    hold = HoldErroredConnection()
    logger.addFilter(hold)
    try:
        yield
    finally:
        logger.removeFilter(hold)
    # the race was met: a handler raised, and its connection was found (not a uvicorn
    # whose internals moved, where this hook would silently hold nothing)
    assert hold.errors >= 1
    assert hold.found == hold.errors


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run *app* under a real uvicorn server on a loopback port (in a thread)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: server.started or not thread.is_alive(), timeout_s=30, what="uvicorn to start"
        )
        assert server.started, "uvicorn exited during startup"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        stopped = not thread.is_alive()
        if not stopped:  # a request still in flight: fail, but leave no server behind
            server.force_exit = True
            thread.join(timeout=30)
        sock.close()
        assert stopped, "uvicorn did not stop"


CLOSE = {"connection": "close"}  # the request header that ends its connection after it


async def _stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        while True:
            yield b"chunk\n"
            await anyio.sleep(0.05)

    return StreamingResponse(chunks())


async def _boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("handler bug")


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


@pytest.mark.usefixtures("errored_connection_held")
def test_starlette_under_uvicorn(machine: Machine, monitor: Monitor) -> None:
    guard = Guard(memory="75%", reserve="1GiB", monitor=monitor)
    app = Starlette(
        routes=[Route("/", _hello), Route("/boom", _boom), Route("/healthz", _hello)],
        middleware=[Middleware(GuardMiddleware, guard=guard)],
    )
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert running(monitor)  # started by the lifespan
        response = client.get("/")
        assert (response.status_code, response.text) == (200, "hello")
        # uvicorn closes the connection of a request that raised; a client reusing it
        # could be reset (see HoldErroredConnection), so it asks for the close itself
        assert client.get("/boom", headers=CLOSE).status_code == 500
        ready = client.get("/readyz").json()
        assert (ready["status"], ready["ready"], ready["level"]) == ("ready", True, "OK")

        machine.set_used_percent(80)  # over the guard's 75 % share, under CRITICAL
        wait_until(lambda: percent_of(monitor) >= 79, timeout_s=20, what="memory at 79 %")
        refused = client.get("/")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json() == {"error": "overloaded", "reason": "memory", "retry_after": 1}
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").status_code == 200  # liveness is never refused

        machine.set_used_percent(96)
        wait_until(lambda: monitor.state.level == Level.CRITICAL, timeout_s=20, what="CRITICAL")
        assert client.get("/readyz").status_code == 503
        assert client.get("/").json()["reason"] == "level"

        machine.set_used_percent(50)
        wait_until(lambda: monitor.state.level == Level.OK, timeout_s=20, what="OK again")
        assert client.get("/").status_code == 200
    assert not running(monitor)  # stopped by the lifespan
    stats = guard.stats()
    assert (stats.in_flight, stats.reserved_bytes) == (0, 0)
    assert stats.admitted == 3
    assert stats.refused_by_reason == {"memory": 1, "level": 1}


@pytest.mark.usefixtures("errored_connection_held")
def test_fastapi_under_uvicorn(machine: Machine, monitor: Monitor) -> None:
    guard = Guard(memory="75%", reserve="1GiB", max_concurrent=2, monitor=monitor)
    app = FastAPI()
    release = threading.Event()

    @app.get("/work")
    async def work() -> dict[str, int]:
        return {"in_flight": guard.stats().in_flight}

    @app.get("/hold")
    async def hold() -> dict[str, bool]:
        while not release.is_set():
            await anyio.sleep(0.01)
        return {"held": True}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("handler bug")

    app.add_middleware(GuardMiddleware, guard=guard)

    async def scenario(url: str) -> None:
        limits = httpx.Limits(max_connections=10)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            assert (await client.get("/work")).json() == {"in_flight": 1}
            assert (await client.get("/boom", headers=CLOSE)).status_code == 500  # as above
            async with anyio.create_task_group() as group:
                try:
                    for _ in range(2):
                        group.start_soon(client.get, "/hold")
                    await anyio.to_thread.run_sync(
                        lambda: wait_until(
                            lambda: guard.stats().in_flight == 2, timeout_s=20, what="2 in flight"
                        )
                    )
                    third = await client.get("/work")  # both slots taken
                    assert third.status_code == 503
                    assert third.json()["reason"] == "concurrency"
                    assert int(third.headers["retry-after"]) >= 1
                finally:  # held requests would keep uvicorn (and its lifespan) from stopping
                    release.set()
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/docs")).status_code == 200

    with serve(app) as url:
        assert running(monitor)
        anyio.run(scenario, url)
    assert not running(monitor)
    stats = guard.stats()
    assert (stats.in_flight, stats.reserved_bytes) == (0, 0)
    assert stats.refused_by_reason == {"concurrency": 1}


def test_fastapi_with_the_default_guard_under_uvicorn() -> None:
    app = FastAPI()

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"hello": "world"}

    app.add_middleware(GuardMiddleware)  # Guard(memory="90%") and a Monitor of its own
    with serve(app) as url:
        middleware: Any = app.middleware_stack
        while not isinstance(middleware, GuardMiddleware):  # down the framework's layers
            middleware = middleware.app
        monitor = middleware.monitor
        assert monitor is not None
        assert running(monitor)
        with httpx.Client(base_url=url, timeout=30) as client:
            expected = 503 if percent_of(monitor) > 90 else 200
            assert client.get("/").status_code == expected
            assert client.get("/readyz").json()["status"] in ("ready", "unready")
    assert not running(monitor)


def test_client_disconnect_releases_the_reservation_under_uvicorn(monitor: Monitor) -> None:
    guard = Guard(memory="90%", reserve="1GiB", monitor=monitor)
    app = Starlette(
        routes=[Route("/stream", _stream)], middleware=[Middleware(GuardMiddleware, guard=guard)]
    )
    with serve(app) as url:
        for _ in range(3):
            with (
                httpx.Client(base_url=url, timeout=30) as client,
                client.stream("GET", "/stream") as response,
            ):
                assert response.status_code == 200
                lines = response.iter_lines()  # dropping the iterator would hang up
                assert next(lines) == "chunk"
                assert next(lines) == "chunk"
                assert guard.stats().reserved_bytes == GiB
            # the client hung up mid-stream: Starlette cancels the response, we release
            wait_until(lambda: guard.stats().in_flight == 0, timeout_s=20, what="none in flight")
            assert guard.stats().reserved_bytes == 0
    assert guard.stats().admitted == 3


def test_a_client_that_times_out_in_the_queue_leaves_it_under_uvicorn(monitor: Monitor) -> None:
    guard = Guard(max_concurrent=1, wait="60s", monitor=monitor)
    release = threading.Event()

    async def hold(request: Request) -> PlainTextResponse:
        await anyio.to_thread.run_sync(release.wait, 30)
        return PlainTextResponse("held")

    app = Starlette(
        routes=[Route("/hold", hold), Route("/", _hello)],
        middleware=[Middleware(GuardMiddleware, guard=guard)],
    )
    with serve(app) as url:
        holder = threading.Thread(target=lambda: httpx.get(f"{url}/hold", timeout=60))
        holder.start()
        try:
            wait_until(lambda: guard.stats().in_flight == 1, timeout_s=20, what="1 in flight")
            with pytest.raises(httpx.ReadTimeout):
                httpx.get(url, timeout=0.5)  # queues behind /hold, gives up after 0.5 s
            # the server notices the hang-up and drops the request from the queue long
            # before its 60 s wait is over
            wait_until(lambda: guard.stats().waiting == 0, timeout_s=20, what="none waiting")
        finally:
            release.set()
            holder.join(timeout=30)
    stats = guard.stats()
    assert (stats.admitted, stats.refused, stats.in_flight) == (1, 0, 0)


def test_uvicorn_without_lifespan_starts_the_monitor_on_the_first_request(monitor: Monitor) -> None:
    app = Recorder()
    middleware = GuardMiddleware(app, monitor=monitor)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(middleware, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout_s=20, what="uvicorn to start")
        assert not running(monitor)
        port = sock.getsockname()[1]
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).text == "ok"
        assert running(monitor)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        monitor.stop()


# ----------------------------------------------------------------- the OOM test ---

N_REQUESTS = 200
CGROUP_LIMIT_BYTES = 256 * MiB


def alloc_server(cgroup: Any, *target: str) -> AbstractContextManager[Uvicorn]:
    """uvicorn running tests/apps/alloc_app.py inside *cgroup*, once it answers /stats."""
    return start_uvicorn(
        "--app-dir", str(TESTS), "--log-level", "warning", "--no-access-log", *target,
        ready="/stats", env={"RESGUARD_TEST_WAIT": "8s"}, spawn=cgroup.spawn, timeout_s=60,
    )  # fmt: skip


async def burst(url: str) -> list[Any]:
    """N_REQUESTS concurrent GET /alloc; each result is (status, Retry-After) or an error."""
    limits = httpx.Limits(max_connections=N_REQUESTS, max_keepalive_connections=N_REQUESTS)
    timeout = httpx.Timeout(60, pool=60)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:

        async def one() -> Any:
            try:
                response = await client.get("/alloc")
            except httpx.TransportError as error:
                return type(error).__name__
            return response.status_code, response.headers.get("retry-after")

        return await asyncio.gather(*(one() for _ in range(N_REQUESTS)))


@pytest.mark.cgroup
@pytest.mark.slow
def test_unguarded_server_is_oom_killed(memory_cgroup: Any) -> None:
    memory_cgroup.set_limit(CGROUP_LIMIT_BYTES)
    with alloc_server(memory_cgroup, "apps.alloc_app:app") as server:
        process, url = server.process, server.url
        results: list[Any] = []
        for _ in range(3):  # one burst kills it; more only if a slow machine spread it out
            results += asyncio.run(burst(url))
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            if process.returncode is not None:
                break
        assert process.returncode == -signal.SIGKILL
        assert memory_cgroup.oom_kills() >= 1
        assert any(isinstance(result, str) for result in results)  # connections were lost


@pytest.mark.linux_backend
@pytest.mark.cgroup
@pytest.mark.slow
def test_guarded_server_sheds_load_and_survives(memory_cgroup: Any) -> None:
    memory_cgroup.set_limit(CGROUP_LIMIT_BYTES)
    with alloc_server(memory_cgroup, "--factory", "apps.alloc_app:guarded_app") as server:
        process, url = server.process, server.url
        before = httpx.get(f"{url}/stats", timeout=30).json()
        # the server judges memory by its own cgroup, not by the 24 GiB host
        assert before["memory"]["source"] == "cgroup"
        assert before["memory"]["limit"] == CGROUP_LIMIT_BYTES

        results = asyncio.run(burst(url))

        assert process.poll() is None, "the guarded server died"
        assert memory_cgroup.oom_kills() == 0
        counts = Counter(result if isinstance(result, str) else result[0] for result in results)
        assert set(counts) <= {200, 503}, f"unexpected outcomes: {counts}"
        assert all(
            retry_after is not None and int(retry_after) >= 1
            for status, retry_after in results
            if status == 503
        )
        assert counts[200] >= N_REQUESTS / 3, f"too few served: {counts}"

        after = httpx.get(f"{url}/stats", timeout=30).json()
        assert after["served"] == counts[200]  # every admitted request was answered
        assert after["guard"]["admitted"] == counts[200]
        assert after["guard"]["refused"] == counts[503]
        assert (after["guard"]["in_flight"], after["guard"]["reserved_bytes"]) == (0, 0)
        # at most what fits: 16 MiB each under the 70 % share of 256 MiB
        assert after["peak_in_flight"] * 16 * MiB < 0.7 * CGROUP_LIMIT_BYTES
        assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200


def test_readiness_reason_for_a_damaged_source_says_unknown_once() -> None:
    clock = ManualClock(1000.0)
    guard = Guard(
        memory="90%", monitor=unknown_memory_monitor(clock), on_unknown="refuse", clock=clock
    )
    body = call(GuardMiddleware(Recorder(), guard, start_monitor=False), "/readyz").json()
    assert body["reason"].startswith("unknown: memory.percent: /proc/meminfo empty")
    assert "unknown: unknown" not in body["reason"]


@pytest.mark.parametrize("value", ["2", None, b"1", [], True])
def test_retry_after_header_of_what_is_not_a_number_is_a_type_error(value: object) -> None:
    with pytest.raises(InvalidType, match="retry_after_s="):
        retry_after_header(value)  # type: ignore[arg-type]


def test_retry_after_header_of_a_huge_integer_is_exact_not_an_overflow() -> None:
    assert retry_after_header(10**30) == 10**30


@pytest.mark.parametrize("retry_after", [None, "2", float("nan"), 10**400])
def test_a_hand_raised_refusal_with_an_odd_retry_after_is_still_a_503(
    monitor: Monitor, retry_after: object
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ResourceExhausted("the model is busy", reason="model", retry_after=retry_after)  # type: ignore[arg-type]

    guard = Guard(monitor=monitor)
    response = call(GuardMiddleware(app, guard, start_monitor=False), "/work")
    assert response.status == 503
    assert response.json()["reason"] == "model"
    assert int(response.headers["retry-after"]) >= 1
    assert guard.stats().in_flight == 0
