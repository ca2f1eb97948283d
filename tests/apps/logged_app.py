"""A guarded bare ASGI app on a fixture /proc: what an operator's ``uvicorn app:app`` shows.

``RESGUARD_TEST_PROC`` names the /proc the test writes (its ``meminfo`` sets the memory
use). The policy says WARNING above 50 % used and CRITICAL above 90 %; the Monitor samples
every 20 ms and climbs its reclaim ladder on WARNING. Run it with uvicorn's default
logging (``uvicorn apps.logged_app:app``): resguard's lines must be in its stderr.
"""

from __future__ import annotations

import os
from typing import Any

from resguard.asgi import GuardMiddleware
from resguard.guard import Guard
from resguard.monitor import Monitor
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import Roots, Sampler


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
    return GuardMiddleware(hello, Guard(memory="100%", monitor=monitor))


app = guarded(os.environ.get("RESGUARD_TEST_PROC", "/proc"))
