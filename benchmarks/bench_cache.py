"""LRUCache and memoize against cachetools and functools.lru_cache, and the sizer's honesty.

Rows: a hit, a miss plus insert (with eviction at capacity), a memoized call that hits, and
the default sizer's cost and its error against what tracemalloc says Python allocated.
Run: ``.venv/bin/python benchmarks/run.py cache``.
"""

from __future__ import annotations

import functools
import gc
import itertools
import sys
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import cachetools

sys.path.insert(0, str(Path(__file__).parent))

from resguard.cache import LRUCache, memoize
from resguard.cache._sizeof import sizeof

from _harness import Table, per_call_s

N_KEYS = 1000


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
    ours_s, theirs_s = _paired(lambda: ours[key], lambda: theirs[key])
    table.compare(
        "LRUCache hit `cache[k]` (thread-safe)",
        ours_s,
        "cachetools.LRUCache (no lock)",
        theirs_s,
        "≥ 0.5x (within 2x)",
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
        "≥ 0.5x",
    )


def _misses(table: Table) -> None:
    ours: LRUCache[int, bytes] = LRUCache(max_items=N_KEYS)
    theirs: cachetools.LRUCache[int, bytes] = cachetools.LRUCache(maxsize=N_KEYS)
    counter_a, counter_b = itertools.count(), itertools.count()
    value = b"v" * 100

    def insert_ours() -> None:
        ours[next(counter_a)] = value

    def insert_theirs() -> None:
        theirs[next(counter_b)] = value

    ours_s, theirs_s = _paired(insert_ours, insert_theirs)
    table.compare(
        "LRUCache miss + insert (evicting, sized)", ours_s, "cachetools.LRUCache", theirs_s, ""
    )


def _memoized(table: Table) -> None:
    @memoize(max_items=N_KEYS)
    def ours(x: int) -> int:
        return x

    @cachetools.cached(cachetools.LRUCache(maxsize=N_KEYS))
    def theirs(x: int) -> int:
        return x

    @functools.lru_cache(maxsize=N_KEYS)
    def stdlib(x: int) -> int:
        return x

    for fn in (ours, theirs, stdlib):
        fn(7)
    ours_s, theirs_s = _paired(lambda: ours(7), lambda: theirs(7))
    table.compare(
        "memoize hit f(7) (thread-safe)", ours_s, "cachetools.cached (no lock)", theirs_s, "≥ 1x"
    )
    ours_s, stdlib_s = _paired(lambda: ours(7), lambda: stdlib(7))
    table.compare(
        "memoize hit f(7) (thread-safe)", ours_s, "functools.lru_cache (C, lock)", stdlib_s, ""
    )

    @memoize(max_items=N_KEYS)
    def ours2(x: int, y: str = "") -> int:
        return x

    @cachetools.cached(cachetools.LRUCache(maxsize=N_KEYS))
    def theirs2(x: int, y: str = "") -> int:
        return x

    ours2(7, y="a")
    theirs2(7, y="a")
    ours_s, theirs_s = _paired(lambda: ours2(7, y="a"), lambda: theirs2(7, y="a"))
    table.compare(
        "memoize hit f(7, y='a')", ours_s, "cachetools.cached (no lock)", theirs_s, "≥ 1x"
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
        cost = per_call_s(lambda value=value: sizeof(value), min_time_s=0.05)
        table.note(
            f"sizeof({what})",
            f"{measured:,} B, {cost * 1e6:.2f} µs",
            "tracemalloc",
            f"{allocated:,} B",
            f"error {error:+.1f} %",
            "|error| < 15 %",
        )


def run(table: Table) -> None:
    _lock_cost(table)
    _hits(table)
    _misses(table)
    _memoized(table)
    _sizer(table)


if __name__ == "__main__":
    result = Table()
    run(result)
    print(result.markdown())
