"""Memory-bounded, thread-safe LRU caches and memoization that give memory back under pressure.

:class:`LRUCache` is a :class:`~collections.abc.MutableMapping` bounded by bytes and/or items,
with an optional time to live. :func:`memoize` caches a sync or async function in one, running
one computation per key at a time. Every cache registers itself (by weak reference) on the
reclaim ladder (:mod:`resguard.reclaim`) with cost :attr:`~resguard.reclaim.Cost.CACHE`, so on
WARNING the ladder shrinks caches before it unloads any model.

Decisions, written down once:

- **What an entry costs.** With the default sizer an entry costs ``sizeof(key) +
  sizeof(value)``: the cache holds both, and memoized calls are often keyed by long prompts or
  documents. A ``sizeof=`` hook is the whole cost of an entry, in the hook's own units (bytes,
  tokens, rows), as ``getsizeof`` is in ``cachetools``: ``current_bytes == sum(sizeof(v))``.
- **Zero bounds store nothing.** ``max_items=0`` or ``max_bytes=0`` is a cache that is switched
  off (as ``maxsize=0`` in ``functools.lru_cache`` and ``cachetools``): every insert raises
  :class:`ValueTooLarge` and :func:`memoize` computes every call.
- **A value larger than** ``max_bytes`` **raises** :class:`ValueTooLarge` (a ``ValueError``, as
  ``cachetools`` raises) and changes nothing; ``stats().too_large`` counts them. Raising tells
  the caller at once that ``cache[k] = v`` did not store, where a silent skip would surface
  later as a puzzling miss; and code written for ``cachetools`` already catches ``ValueError``.
  :func:`memoize` catches it for you: the result is returned and simply not cached.
- **TTL counts from insertion** (like ``cachetools.TTLCache``), not from the last access.
- **Shrinking prefers large values.** Under pressure, evicting many small objects returns
  little to the operating system (the allocator keeps its arenas), while a large buffer goes
  back at once. :meth:`LRUCache.reclaim` evicts the largest entries first (least recently
  used first among equals) and reports the bytes from its own accounting; the ladder
  re-measures the process rather than trusting that figure.
- **Hits without the lock.** While every key a cache holds is of a type in
  ``_hits.ATOMIC_KEYS`` (exactly ``int``, ``str``, ``bytes``, ``float``, ``bool``, ``None``),
  a hit on such a key (``cache[k]``, ``get``, ``in``, a memoized call keyed by one int or str)
  takes no lock: it reads the entry with ``dict.get``, refreshes recency with
  ``OrderedDict.move_to_end`` and counts itself with ``itertools.count``'s ``__next__``. Each
  is one C call that runs no Python code (comparing two such keys is C), so under the GIL it
  is atomic: no change can land half-way through it, and every change (insert, evict, expire,
  shrink) still takes the lock and is made of such whole C calls. A key whose hash or
  equality is Python code could let another thread change the OrderedDict in the middle of a
  lookup, which can crash CPython (its odict reads the key table before the comparison and
  trusts it after); so the first such key stored switches that cache to locked hits for good,
  moving its entries to a new OrderedDict that the lock-free hits still in flight never see
  changed. A free-threaded build (``sys._is_gil_enabled()`` False at import) takes the lock on
  every hit. A lock-free hit returns the value stored under its key when it read it; if the
  entry is evicted before recency is refreshed, the refresh finds nothing and is dropped.
  Hit and miss counts stay exact (``itertools.count`` never loses a tick under the GIL).
- **Hostile keys cannot break the cache.** The lock is re-entrant, so a key whose ``__hash__``
  or ``__eq__`` uses the same cache (or memoized function) does not deadlock. Such nested
  calls only read (a hit is served; a memoized miss computes without storing); a nested
  change raises :class:`~resguard.InvalidState`, because changing an OrderedDict from inside
  one of its own operations can crash CPython. An entry whose
  key can no longer be found (its hash changed after insertion) is dropped when the cache meets
  it and counted in ``stats().broken``. A memoized call whose result cannot be stored still
  releases every caller waiting for it, and a waiter stops waiting for a leader thread that
  died without an answer.

Layout, by job: ``_core`` is the storage engine (entries, bounds, expiry, the one locked
hit and lookup) and the small interface the memo layer uses; ``_hits`` what hits without the
lock rely on; ``_cost`` what an entry costs; ``_repair`` mending broken keys; ``_pickling``
what a pickle carries; ``_shrink`` evicting largest first under pressure; ``_lru`` the mapping;
``_flight`` single-flight (the computations in flight and the wait-for graph); ``_memo`` the
decorators; ``_stats`` the numbers and argument checks; ``_sizeof`` the default sizer.
"""

from __future__ import annotations

from resguard.cache._flight import LEADER_CHECK_S as LEADER_CHECK_S  # importable here as before
from resguard.cache._lru import LRUCache
from resguard.cache._memo import Memoized, memoize
from resguard.cache._sizeof import sizeof as sizeof  # the default sizer: pickles name it here
from resguard.cache._stats import CacheInfo, CacheStats, ValueTooLarge

__all__ = [
    "CacheInfo",
    "CacheStats",
    "LRUCache",
    "Memoized",
    "ValueTooLarge",
    "memoize",
]

# The public path, for reprs, pickles and the API reference (they live in private modules).
for _public in (CacheInfo, CacheStats, LRUCache, Memoized, ValueTooLarge, memoize, sizeof):
    _public.__module__ = __name__
del _public
