"""A guard's admission against doing nothing and against a per-call psutil check.

Rows: ``with guard:`` while a Monitor samples in the background, without a reservation (the
lock-free path: one read of the published state and a comparison) and with one
(``reserve="1MiB"``: one short critical section on enter and one on exit), each beside an
empty ``with nullcontext():``; the same under ``async with`` beside ``async with
nullcontext():``; and what services often write instead: ``psutil.virtual_memory().percent
< 90`` on every call (reads /proc/meminfo each time; under ``async with``, an async context
manager that checks it on entry, so both sides pay the async protocol). Each pair, the
psutil ones included, is timed in interleaved rounds and keeps each side's best, so one
run's verdict does not hang on a neighbour's burst during one side alone.
Run: ``.venv/bin/python benchmarks/run.py guard``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import anyio
import psutil

sys.path.insert(0, str(Path(__file__).parent))

from resguard.guard import Guard
from resguard.monitor import Monitor

from _harness import Table, Target, per_call_s

ASYNC_CALLS = 100_000


def _paired(
    ours: Callable[[], float], theirs: Callable[[], float], rounds: int = 3
) -> tuple[float, float]:
    """Run both timers alternately; keep each one's best."""
    ours_s, theirs_s = [], []
    for _ in range(rounds):
        ours_s.append(ours())
        theirs_s.append(theirs())
    return min(ours_s), min(theirs_s)


def _async_per_call_s(manager: Any, calls: int = ASYNC_CALLS) -> float:
    """Seconds per ``async with manager:`` (the best of 3 runs of *calls* in one task)."""

    async def loop() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            async with manager:
                pass
        return (time.perf_counter() - start) / calls

    return min(anyio.run(loop) for _ in range(3))


class _PsutilCheck:
    """``async with`` a per-call psutil check: the async alternative pays the protocol too."""

    async def __aenter__(self) -> None:
        if not psutil.virtual_memory().percent < 90:
            raise RuntimeError("memory is short")

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def _with(manager: Any) -> Callable[[], float]:
    def enter_exit() -> None:
        with manager:
            pass

    enter_exit()
    return lambda: per_call_s(enter_exit, repeat=3, min_time_s=0.1)


def run(table: Table) -> None:
    lock = threading.Lock()

    def locked() -> None:
        with lock:
            pass

    table.note(
        "uncontended `with threading.Lock()` (context for the rows below)",
        f"{per_call_s(locked) * 1e9:.0f} ns",
    )

    def psutil_check() -> None:
        if not psutil.virtual_memory().percent < 90:
            raise RuntimeError("memory is short")

    def psutil_timer() -> float:
        return per_call_s(psutil_check, repeat=3, min_time_s=0.1)

    nothing = nullcontext()
    with Monitor(interval="50ms") as monitor:
        plain = Guard(memory="90%", monitor=monitor)
        reserving = Guard(memory="90%", reserve="1MiB", monitor=monitor)
        ours, theirs = _paired(_with(plain), _with(nothing))
        what = "Guard admission `with guard:` (Monitor running, no reservation)"
        table.compare(
            what, ours, "`with nullcontext():`", theirs, Target.cost_at_most(2.5, of="nullcontext")
        )
        ours, psutil_s = _paired(_with(plain), psutil_timer, rounds=5)
        table.compare(
            what,
            ours,
            "per-call `psutil.virtual_memory().percent < 90`",
            psutil_s,
            Target.speedup_at_least(100),
        )
        ours, theirs = _paired(_with(reserving), _with(nothing))
        table.compare(
            "Guard admission `with guard:` (Monitor running, `reserve='1MiB'`)",
            ours,
            "`with nullcontext():`",
            theirs,
            Target.cost_at_most(5, of="nullcontext"),
        )
        ours, theirs = _paired(lambda: _async_per_call_s(plain), lambda: _async_per_call_s(nothing))
        what = "Guard admission `async with guard:` (Monitor running, no reservation)"
        table.compare(
            what,
            ours,
            "`async with nullcontext():`",
            theirs,
            Target.cost_at_most(2.5, of="nullcontext"),
        )
        ours, psutil_s = _paired(
            lambda: _async_per_call_s(plain),
            lambda: _async_per_call_s(_PsutilCheck(), calls=10_000),
            rounds=5,
        )
        table.compare(
            what,
            ours,
            "`async with` a per-call `psutil.virtual_memory()` check",
            psutil_s,
            Target.speedup_at_least(100),
        )
        ours, theirs = _paired(
            lambda: _async_per_call_s(reserving), lambda: _async_per_call_s(nothing)
        )
        table.compare(
            "Guard admission `async with guard:` (Monitor running, `reserve='1MiB'`)",
            ours,
            "`async with nullcontext():`",
            theirs,
            Target.cost_at_most(5, of="nullcontext"),
        )
        for guard in (plain, reserving):
            stats = guard.stats()
            assert stats.in_flight == 0, stats
