"""The cache as the reclaim ladder and monitoring see it: its name and cost, shrinking it
(largest values first), and its counters."""

from __future__ import annotations

import math
from builtins import isinstance, len  # noqa: UP029 (see _core)
from typing import Any

from resguard import reclaim as _reclaim
from resguard._errors import InvalidType, InvalidValue
from resguard.cache._core import CacheCore, Dropped, Entry
from resguard.cache._stats import CacheStats
from resguard.units import parse_bytes

__all__ = ["LadderFace"]


class LadderFace(CacheCore):
    """Reclaiming and reporting: what :mod:`resguard.reclaim` and ``stats()`` read."""

    @property
    def name(self) -> str:
        """The name on the reclaim ladder and in logs."""
        return self._name

    @property
    def cost(self) -> float:
        """Rank on the reclaim ladder: :attr:`resguard.reclaim.Cost.CACHE`."""
        return _reclaim.Cost.CACHE

    def reclaimable_bytes(self) -> int:
        """The bytes the cache holds by its own accounting (all of it can go)."""
        return self._bytes

    def reclaim(self, target_bytes: int) -> int:
        """Evict, largest values first, until at least *target_bytes* are freed (or it is empty).

        Returns the bytes freed by the cache's own accounting. Counted in ``stats()`` as
        ``shrinks``, ``shrink_evictions`` and ``reclaimed_bytes``.
        """
        if isinstance(target_bytes, bool) or not isinstance(target_bytes, int):
            raise InvalidType(f"target_bytes={target_bytes!r} is not a whole number of bytes")
        if target_bytes < 0:
            raise InvalidValue(f"target_bytes={target_bytes!r} must not be negative")
        self._refuse_nested("reclaim()")
        with self._lock:
            dropped = self._expire_unless_nested_locked(False)
            candidates = self._pairs_locked() if target_bytes > 0 else []
        # Sort outside the lock: a large cache must not stall readers while it is ordered.
        candidates.sort(key=_entry_size_key, reverse=True)  # stable: LRU first among equals
        with self._lock:
            freed = self._evict_largest_locked(candidates, target_bytes, dropped)
        self._notify(dropped)
        return freed

    def _evict_largest_locked(
        self, candidates: list[tuple[Any, Entry]], target_bytes: int, dropped: Dropped
    ) -> int:
        counters = self._counters
        freed = 0
        for key, _ in candidates:
            if freed >= target_bytes:
                break
            entry = self._pop_locked(key)
            if entry is None:
                continue
            freed += entry[1]
            counters.shrink_evictions += 1
            dropped.append((key, entry[0]))
        counters.shrinks += 1
        counters.reclaimed_bytes += freed
        return freed

    def shrink(self, amount: int | float | str) -> int:
        """Free *amount*: bytes (``"64MiB"``, ``1024``) or a share of what the cache holds.

        A ``float`` from 0.0 to 1.0 or a string like ``"50%"`` is a share (``shrink(0.5)`` frees
        half, ``shrink(1.0)`` everything); anything else is read by :func:`resguard.parse_bytes`.
        Largest values go first, as in :meth:`reclaim`. Returns the bytes freed.
        """
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
            return self.reclaim(math.ceil(self._bytes * share))
        return self.reclaim(parse_bytes(amount))

    def stats(self) -> CacheStats:
        """Counters and current sizes (expired entries are dropped first)."""
        nested = self._is_owned()
        with self._lock:
            dropped = self._expire_unless_nested_locked(nested)
            result = CacheStats(
                bytes=self._bytes,
                items=len(self._data),
                max_bytes=self._max_bytes,
                max_items=self._max_items,
                **self._counters.as_dict(),
            )
        self._notify(dropped)
        return result

    def reset_stats(self) -> None:
        """Set every counter back to zero (the entries stay)."""
        with self._lock:
            self._counters.reset()


def _entry_size_key(pair: tuple[Any, Entry]) -> int:
    return pair[1][1]
