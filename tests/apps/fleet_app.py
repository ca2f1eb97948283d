"""One replica of a guarded service, as tests/test_prometheus_fleet.py runs three of them
under uvicorn for a real Prometheus to scrape (``--factory apps.fleet_app:replica``).

``GET /hold`` takes 16 MiB (every page touched, so it is resident) and keeps it until
``GET /release``: a load client squeezes a replica by holding memory in it until its guard
refuses. The replica's monitor calls it CRITICAL at ``RESGUARD_FLEET_CRITICAL_PERCENT``
(default 50) % of its effective limit; then the guard refuses (reason ``level``) and
``/readyz`` answers 503. ``/metrics`` is served beside the guard, never through it.
"""

from __future__ import annotations

import os
from typing import Any

from resguard.asgi import GuardMiddleware
from resguard.guard import Guard
from resguard.monitor import Monitor
from resguard.prometheus import ResguardCollector, with_metrics
from resguard.rules import Level, Policy, Threshold

HOLD_BYTES = 16 * 2**20
PAGE_BYTES = 4096

held: list[bytearray] = []


async def _answer(send: Any, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def service(scope: Any, receive: Any, send: Any) -> None:
    """The service itself: hold memory, give it back."""
    if scope["type"] == "lifespan":  # the middleware answers lifespan; this is a fallback
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/hold":
        block = bytearray(HOLD_BYTES)
        block[::PAGE_BYTES] = b"x" * (HOLD_BYTES // PAGE_BYTES)
        held.append(block)
        await _answer(send, 200, f"holding {len(held) * HOLD_BYTES} bytes")
    elif scope["path"] == "/release":
        held.clear()
        await _answer(send, 200, "released")
    else:
        await _answer(send, 404, "not found")


def replica() -> Any:
    """The service behind a guard that refuses at CRITICAL, with ``/metrics`` in front."""
    critical_percent = float(os.environ.get("RESGUARD_FLEET_CRITICAL_PERCENT", "50"))
    policy = Policy([Threshold("memory.percent", ">=", critical_percent, level=Level.CRITICAL)])
    monitor = Monitor(interval="50ms", policy=policy, reclaim=False)
    guard = Guard(monitor=monitor, name="api")
    middleware = GuardMiddleware(service, guard)
    collector = ResguardCollector(monitor, guards=[guard], readiness=middleware)
    return with_metrics(middleware, collector)
