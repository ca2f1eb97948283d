"""A guard's admission against doing nothing and against a per-call psutil check.

Rows: ``with guard:`` while a Monitor samples in the background (the hot path: one attribute
read and one lock, no I/O), the same under ``async with guard:``, an empty
``with nullcontext():`` for scale, and what services often write instead:
``psutil.virtual_memory().percent < 90`` on every call (reads /proc/meminfo each time).
Run: ``.venv/bin/python benchmarks/run.py guard``.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import anyio
import psutil

sys.path.insert(0, str(Path(__file__).parent))

from resguard.guard import Guard
from resguard.monitor import Monitor

from _harness import Table, per_call_s

ASYNC_CALLS = 100_000


def _async_per_call_s(guard: Guard) -> float:
    """Seconds per ``async with guard:`` (best of 5 runs of ASYNC_CALLS in one task)."""

    async def loop() -> float:
        start = time.perf_counter()
        for _ in range(ASYNC_CALLS):
            async with guard:
                pass
        return (time.perf_counter() - start) / ASYNC_CALLS

    return min(anyio.run(loop) for _ in range(5))


def run(table: Table) -> None:
    lock = threading.Lock()

    def locked() -> None:
        with lock:
            pass

    # admission takes one uncontended lock on entry and one on exit: the floor on this machine
    table.note(
        "uncontended `with threading.Lock()` (context for the rows below)",
        f"{per_call_s(locked) * 1e9:.0f} ns",
    )
    with Monitor(interval="50ms") as monitor:
        guard = Guard(memory="90%", monitor=monitor)

        def admit() -> None:
            with guard:
                pass

        def nothing() -> None:
            with nullcontext():
                pass

        def psutil_check() -> None:
            if not psutil.virtual_memory().percent < 90:
                raise RuntimeError("memory is short")

        admit()
        ours = per_call_s(admit)
        table.compare(
            "Guard admission `with guard:` (Monitor running)",
            ours,
            "`with nullcontext():`",
            per_call_s(nothing),
            "≤ 1 µs",
        )
        table.compare(
            "Guard admission `with guard:` (Monitor running)",
            ours,
            "per-call `psutil.virtual_memory().percent < 90`",
            per_call_s(psutil_check),
            "≥ 50×",
        )
        table.compare(
            "Guard admission `async with guard:` (Monitor running)",
            _async_per_call_s(guard),
            "per-call `psutil.virtual_memory()`",
            per_call_s(psutil_check),
            "≥ 10×",
        )
        stats = guard.stats()
        assert stats.in_flight == 0, stats
