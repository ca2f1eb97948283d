"""Giving memory back: a cache's entries evicted largest first until a target is freed
(what the reclaim ladder and :meth:`~resguard.cache.LRUCache.shrink` ask for), and reading
``shrink()``'s amount (bytes, or a share of what the cache holds).

Under pressure, evicting many small objects returns little to the operating system (the
allocator keeps its arenas), while a large buffer goes back at once: hence largest first,
least recently used first among equals.
"""

from __future__ import annotations

import logging
import math

# Bound at import (see _core): code may memoize a builtin and put the wrapper in its place.
from builtins import isinstance  # noqa: UP029
from typing import TYPE_CHECKING, Any

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.log import emit, fields, get_logger
from resguard.units import format_bytes, parse_bytes

if TYPE_CHECKING:
    from resguard.cache._core import CacheCore, Dropped, Entry

__all__ = ["reclaim_largest", "shrink_bytes"]

_logger = get_logger("resguard.cache")


def reclaim_largest(core: CacheCore, target_bytes: int) -> int:
    """Evict, largest values first, until at least *target_bytes* are freed (or the cache is
    empty); the bytes freed by the cache's own accounting (``LRUCache.reclaim``)."""
    if isinstance(target_bytes, bool) or not isinstance(target_bytes, int):
        raise InvalidType(f"target_bytes={target_bytes!r} is not a whole number of bytes")
    if target_bytes < 0:
        raise InvalidValue(f"target_bytes={target_bytes!r} must not be negative")
    core._refuse_nested("reclaim()")
    with core._lock:
        dropped = core._expire_unless_nested_locked(False)
        candidates = core._pairs_locked() if target_bytes > 0 else []
    # Sort outside the lock: a large cache must not stall readers while it is ordered.
    candidates.sort(key=_entry_size_key, reverse=True)  # stable: LRU first among equals
    with core._lock:
        freed = _evict_largest_locked(core, candidates, target_bytes, dropped)
    core._notify(dropped)
    if freed:  # the ladder's step line says it too: this one is for a direct shrink()
        emit(
            _logger,
            logging.DEBUG,
            "cache %r shrank by %s",
            core._name,
            format_bytes(freed),
            extra=fields(
                "cache_shrink", cache=core._name, freed_bytes=freed, target_bytes=target_bytes
            ),
        )
    return freed


def _evict_largest_locked(
    core: CacheCore, candidates: list[tuple[Any, Entry]], target_bytes: int, dropped: Dropped
) -> int:
    """Evict *candidates* in their order until *target_bytes* are freed; under the lock."""
    counters = core._counters
    freed = 0
    for key, _ in candidates:
        if freed >= target_bytes:
            break
        entry = core._pop_locked(key)
        if entry is None:
            continue
        freed += entry[1]
        counters.shrink_evictions += 1
        dropped.append((key, entry[0]))
    counters.shrinks += 1
    counters.reclaimed_bytes += freed
    return freed


def shrink_bytes(amount: object, held_bytes: int) -> int:
    """The bytes ``shrink(amount)`` frees of *held_bytes*: bytes, or a share of them."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float, str)):
        raise InvalidType(
            f'shrink({amount!r}): expected bytes (e.g. "64MiB", 1024) or a share (0.5 or "50%")'
        )
    share: float | None = None
    if isinstance(amount, float) and 0.0 <= amount <= 1.0:
        share = amount
    elif isinstance(amount, str) and amount.strip().endswith("%"):
        from resguard.units import parse_percent

        share = parse_percent(amount) / 100
    if share is not None:
        return math.ceil(held_bytes * share)
    return parse_bytes(amount)


def _entry_size_key(pair: tuple[Any, Entry]) -> int:
    size: int = pair[1][1]
    return size
