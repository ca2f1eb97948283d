"""A guarded bare ASGI app on a fixture /proc: what an operator's ``uvicorn app:app`` shows.

``RESGUARD_TEST_PROC`` names the /proc the test writes (its ``meminfo`` sets the memory
use). The policy says WARNING above 50 % used and CRITICAL above 90 %; the Monitor samples
every 20 ms and climbs its reclaim ladder on WARNING; the guard writes a refusal summary at
most once an hour, so a test's burst is its first line and its tail. Run it with uvicorn's
default logging (``uvicorn apps.logged_app:app``): resguard's lines must be in its stderr.
"""

from __future__ import annotations

import os
from typing import Any

from resguard.asgi import GuardMiddleware
from resguard.guard import Guard
from resguard.monitor import Monitor
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import Roots, Sampler

#: The guard's refusal summary interval here (its default is 10 s).
REFUSAL_INTERVAL_S = 3600.0


async def hello(scope: Any, receive: Any, send: Any) -> None:
    """Answer 200 "hello" at ``/``, 404 elsewhere (it has no health paths of its own)."""
    if scope["type"] != "http":
        return
    found = scope["path"] == "/"
    await send({"type": "http.response.start", "status": 200 if found else 404, "headers": []})
    await send({"type": "http.response.body", "body": b"hello" if found else b"not found"})


def guarded(proc: str) -> GuardMiddleware:
    """*hello* behind the middleware, judging the machine of the fixture /proc *proc*."""
    policy = Policy(
        [
            Threshold("memory.percent", ">", 50, level=Level.WARNING, name="memory-high"),
            Threshold("memory.percent", ">", 90, level=Level.CRITICAL, name="memory-full"),
        ]
    )
    sampler = Sampler(Roots(proc=proc, cgroup=os.path.join(proc, "no-cgroup")))
    monitor = Monitor(policy=policy, sampler=sampler, interval="20ms", psi_trigger=False)
    guard = Guard(memory="100%", monitor=monitor)
    # One summary interval outlasts any test's burst however slow the machine: a burst is
    # then exactly its first line and the tail told at the level change, never a summary
    # in between (10 s, the default, is what 20 requests on a loaded CI runner may take).
    guard._refusals.interval_s = REFUSAL_INTERVAL_S
    return GuardMiddleware(hello, guard)


app = guarded(os.environ.get("RESGUARD_TEST_PROC", "/proc"))
