"""A FastAPI service whose requests each take 16 MiB for 200 ms: the OOM test's workload.

Run unguarded (``apps.alloc_app:app``) or behind :class:`resguard.asgi.GuardMiddleware`
(``--factory apps.alloc_app:guarded_app``). ``/stats`` reports how many requests held their
memory at once, what was served, the guard's counters and how resguard sees the memory
(``source`` must be ``"cgroup"`` inside a test cgroup).
"""

from __future__ import annotations

import os
from typing import Any

import anyio
from fastapi import FastAPI

import resguard
from resguard.asgi import GuardMiddleware
from resguard.guard import Guard
from resguard.monitor import Monitor

ALLOC_BYTES = 16 * 2**20
HOLD_S = 0.2
PAGE_BYTES = 4096

app = FastAPI()
counters = {"in_flight": 0, "peak_in_flight": 0, "served": 0}
middleware: GuardMiddleware | None = None


@app.get("/alloc")
async def alloc() -> dict[str, int]:
    """Take 16 MiB (every page touched, so it is resident), hold it 200 ms, free it."""
    counters["in_flight"] += 1
    counters["peak_in_flight"] = max(counters["peak_in_flight"], counters["in_flight"])
    try:
        block = bytearray(ALLOC_BYTES)
        block[::PAGE_BYTES] = b"x" * (ALLOC_BYTES // PAGE_BYTES)
        await anyio.sleep(HOLD_S)
        counters["served"] += 1
        return {"bytes": len(block)}
    finally:
        counters["in_flight"] -= 1


@app.get("/stats")
async def stats() -> dict[str, Any]:
    memory = resguard.snapshot(children=False).memory
    answer: dict[str, Any] = {
        **counters,
        "pid": os.getpid(),
        "memory": {"source": memory.source, "limit": memory.limit, "used": memory.used},
    }
    if middleware is not None:
        answer["guard"] = middleware.guard.stats().to_dict()
    return answer


def guarded_app() -> GuardMiddleware:
    """The same app behind the middleware: a 70 % share, 20 MiB reserved per request, a
    queue of RESGUARD_TEST_WAIT (default 5 s), memory sampled every 10 ms."""
    global middleware
    guard = Guard(
        memory="70%",
        reserve="20MiB",
        wait=os.environ.get("RESGUARD_TEST_WAIT", "5s"),
        monitor=Monitor(interval="10ms"),
    )
    middleware = GuardMiddleware(app, guard, exclude=("/stats",))
    return middleware
