"""LRUCache and memoize against cachetools and functools.lru_cache, and the sizer's honesty.

Rows: a hit (beside cachetools without a lock, and with one), 200k inserts without eviction
and with eviction at a 10k cap, the bookkeeping per entry (tracemalloc over 200k int
entries, beside cachetools and a plain dict), a memoized call that hits (beside
``functools.lru_cache`` and ``cachetools.cached`` with a lock), and the default sizer's cost
and its error against what tracemalloc says Python allocated.
Run: ``.venv/bin/python benchmarks/run.py cache``.
"""

from __future__ import annotations

import functools
import gc
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, MutableMapping
from pathlib import Path

import cachetools

sys.path.insert(0, str(Path(__file__).parent))

from resguard.cache import LRUCache, memoize
from resguard.cache._sizeof import sizeof

from _harness import Table, Target, per_call_s

N_KEYS = 1000
N_INSERTS = 200_000
EVICT_CAP = 10_000


def _paired(
    ours: Callable[[], object], theirs: Callable[[], object], rounds: int = 5
) -> tuple[float, float]:
    """Time both alternately and keep each one's best: fair on a shared, noisy machine."""
    ours_s, theirs_s = [], []
    for _ in range(rounds):
        ours_s.append(per_call_s(ours, repeat=3, min_time_s=0.1))
        theirs_s.append(per_call_s(theirs, repeat=3, min_time_s=0.1))
    return min(ours_s), min(theirs_s)


def _lock_cost(table: Table) -> None:
    lock = threading.Lock()

    def locked() -> None:
        with lock:
            pass

    table.note(
        "uncontended `with threading.Lock()` (the price of thread safety here)",
        f"{min(per_call_s(locked) for _ in range(3)) * 1e9:.0f} ns",
        "",
        "",
        "",
        "",
    )


def _hits(table: Table) -> None:
    ours: LRUCache[int, bytes] = LRUCache(max_items=N_KEYS)
    theirs: cachetools.LRUCache[int, bytes] = cachetools.LRUCache(maxsize=N_KEYS)
    for i in range(N_KEYS):
        ours[i] = theirs[i] = b"v"
    key = N_KEYS // 2
    lock = threading.Lock()

    def theirs_locked() -> bytes:
        with lock:
            return theirs[key]

    ours_s, theirs_s = _paired(lambda: ours[key], lambda: theirs[key])
    table.compare(
        "LRUCache hit `cache[k]` (thread-safe)",
        ours_s,
        "cachetools.LRUCache (no lock)",
        theirs_s,
        Target.cost_at_most(1.5, of="cachetools"),
    )
    ours_s, locked_s = _paired(lambda: ours[key], theirs_locked)
    table.compare(
        "LRUCache hit `cache[k]` (thread-safe)",
        ours_s,
        "cachetools.LRUCache behind a `threading.Lock`",
        locked_s,
        "(context)",
    )
    bounded: LRUCache[int, bytes] = LRUCache(max_bytes="1MiB", ttl="1h")
    for i in range(N_KEYS):
        bounded[i] = b"v"
    ours_s, theirs_s = _paired(lambda: bounded[key], lambda: theirs[key])
    table.compare(
        "LRUCache hit, max_bytes and ttl set",
        ours_s,
        "cachetools.LRUCache (no lock)",
        theirs_s,
        "(context)",
    )


def _insert_s(make: Callable[[], MutableMapping[int, int]], keys: list[int]) -> float:
    """Seconds per ``cache[k] = k`` over *keys* into a fresh cache (the best of 3 rounds)."""
    rounds = []
    for _ in range(3):
        cache = make()
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            for key in keys:
                cache[key] = key
            rounds.append((time.perf_counter() - start) / len(keys))
        finally:
            gc.enable()
        del cache
    return min(rounds)


def _inserts(table: Table) -> None:
    keys = list(range(N_INSERTS))
    cases: list[tuple[str, int]] = [
        (f"LRUCache insert, {N_INSERTS:,} ints, no eviction", N_INSERTS),
        (f"LRUCache insert + evict, {N_INSERTS:,} ints at a {EVICT_CAP:,} cap", EVICT_CAP),
    ]
    for what, cap in cases:
        ours_s: list[float] = []
        theirs_s: list[float] = []
        for _ in range(2):  # alternate: fair on a noisy machine
            ours_s.append(_insert_s(functools.partial(LRUCache, max_items=cap), keys))
            theirs_s.append(_insert_s(functools.partial(cachetools.LRUCache, maxsize=cap), keys))
        table.compare(
            what,
            min(ours_s),
            "cachetools.LRUCache",
            min(theirs_s),
            Target.cost_at_most(1.5, of="cachetools"),
        )


def _traced_bytes(make: Callable[[], MutableMapping[int, int]], keys: list[int]) -> int:
    """Bytes tracemalloc sees a cache allocate to hold *keys* (made beforehand) as k -> k."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = make()
        for key in keys:
            cache[key] = key
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del cache
    return after - before


def _bookkeeping(table: Table) -> None:
    keys = list(range(10**6, 10**6 + N_INSERTS))  # not the small-int cache: real objects
    ours = _traced_bytes(lambda: LRUCache(max_items=N_INSERTS), keys) / N_INSERTS
    theirs = _traced_bytes(lambda: cachetools.LRUCache(maxsize=N_INSERTS), keys) / N_INSERTS
    plain = _traced_bytes(dict, keys) / N_INSERTS
    what = f"LRUCache bookkeeping per entry, {N_INSERTS:,} int entries (tracemalloc)"
    table.note(
        what,
        f"{ours:.0f} B",
        "cachetools.LRUCache",
        f"{theirs:.0f} B",
        f"{theirs / ours:.2f}×",
        Target.cost_at_most(1.2, of="cachetools"),
        ours_value=ours,
        theirs_value=theirs,
    )
    table.note(what, f"{ours:.0f} B", "a plain dict", f"{plain:.0f} B", f"{plain / ours:.2f}×")


def _memoized(table: Table) -> None:
    @memoize(max_items=N_KEYS)
    def ours(x: int) -> int:
        return x

    @cachetools.cached(cachetools.LRUCache(maxsize=N_KEYS), lock=threading.Lock())
    def theirs(x: int) -> int:
        return x

    @functools.lru_cache(maxsize=N_KEYS)
    def stdlib(x: int) -> int:
        return x

    for fn in (ours, theirs, stdlib):
        fn(7)
    ours_s, stdlib_s = _paired(lambda: ours(7), lambda: stdlib(7))
    table.compare(
        "memoize hit f(7) (thread-safe)",
        ours_s,
        "functools.lru_cache (C, thread-safe)",
        stdlib_s,
        Target.cost_at_most(4, of="lru_cache"),
    )
    ours_s, theirs_s = _paired(lambda: ours(7), lambda: theirs(7))
    table.compare(
        "memoize hit f(7) (thread-safe)",
        ours_s,
        "cachetools.cached + a lock",
        theirs_s,
        Target.faster(),
    )

    @memoize(max_items=N_KEYS)
    def ours2(x: int, y: str = "") -> int:
        return x

    @cachetools.cached(cachetools.LRUCache(maxsize=N_KEYS), lock=threading.Lock())
    def theirs2(x: int, y: str = "") -> int:
        return x

    ours2(7, y="a")
    theirs2(7, y="a")
    ours_s, theirs_s = _paired(lambda: ours2(7, y="a"), lambda: theirs2(7, y="a"))
    table.compare(
        "memoize hit f(7, y='a')", ours_s, "cachetools.cached + a lock", theirs_s, Target.faster()
    )


def _allocated_bytes(make: Callable[[], object], copies: int) -> tuple[object, int]:
    """Build *copies* values under tracemalloc; return one and the bytes allocated per value.

    Several copies average out the allocator's and tracemalloc's own fixed noise, which would
    swamp a value of a few hundred bytes.
    """
    gc.collect()
    holder: list[object] = [None] * copies  # allocated before tracing starts
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(copies):
            holder[i] = make()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return holder[0], (after - before) // copies


def _sizer(table: Table) -> None:
    cases: list[tuple[str, Callable[[], object]]] = [
        ("bytes 1 KiB", lambda: bytes(1024)),
        ("bytes 1 MiB", lambda: bytes(2**20)),
        ("str 100 chars", lambda: "".join(["y"] * 100)),
        ("bytearray 1 MiB", lambda: bytearray(2**20)),
        ("list of 1,000 short str", lambda: [f"item-{i}" for i in range(1000)]),
        ("dict of 1,000 str → int", lambda: {f"key-{i}": i * 1000 for i in range(1000)}),
        ("list of 10,000 float", lambda: [i * 0.5 for i in range(10_000)]),
        ("tuple of 10 bytes of 10 KiB", lambda: tuple(bytes(10240) for _ in range(10))),
    ]
    try:
        import numpy as np

        cases.append(("numpy float64[131072] (1 MiB)", lambda: np.ones(131072)))
        cases.append(
            ("tuple of 3 numpy arrays 8 KiB", lambda: tuple(np.ones(1024) for _ in range(3)))
        )
    except ImportError:  # numpy is optional for the benchmark too
        pass
    for what, make in cases:
        value, allocated = _allocated_bytes(make, copies=16)
        measured = sizeof(value)
        error = (measured - allocated) / allocated * 100 if allocated else 0.0
        cost = per_call_s(functools.partial(sizeof, value), min_time_s=0.05)
        table.note(
            f"sizeof({what})",
            f"{measured:,} B, {cost * 1e6:.2f} µs",
            "tracemalloc",
            f"{allocated:,} B",
            f"error {error:+.1f} %",
            Target.ours_at_most(15, "%", what="|error|"),
            ours_value=abs(error),
        )


def run(table: Table) -> None:
    _lock_cost(table)
    _hits(table)
    _inserts(table)
    _bookkeeping(table)
    _memoized(table)
    _sizer(table)


if __name__ == "__main__":
    result = Table()
    run(result)
    print(result.markdown())
