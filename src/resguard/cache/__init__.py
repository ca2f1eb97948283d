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
- **Hostile keys cannot break the cache.** The lock is re-entrant, so a key whose ``__hash__``
  or ``__eq__`` uses the same cache (or memoized function) does not deadlock. Such nested
  calls only read (a hit is served; a memoized miss computes without storing); a nested
  change raises :class:`~resguard.InvalidState`, because changing an OrderedDict from inside
  one of its own operations can crash CPython. An entry whose
  key can no longer be found (its hash changed after insertion) is dropped when the cache meets
  it and counted in ``stats().broken``. A memoized call whose result cannot be stored still
  releases every caller waiting for it, and a waiter stops waiting for a leader thread that
  died without an answer.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
import threading

# Bound at import, not looked up at call time: code may memoize a builtin and put the wrapper
# in its place (``builtins.len = memoize(len)``, as CPython's own lru_cache test does); the
# cache's own calls must not reach that wrapper.
from builtins import callable, getattr, hash, isinstance, len, next, type  # noqa: UP029
from collections import OrderedDict
from collections.abc import (
    Awaitable,
    Callable,
    Hashable,
    ItemsView,
    Iterator,
    MutableMapping,
    ValuesView,
)
from typing import (
    Any,
    Final,
    Generic,
    NamedTuple,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

import attrs

from resguard import reclaim as _reclaim
from resguard._errors import InvalidState, InvalidType, InvalidValue
from resguard._modules.clock import Clock, monotonic
from resguard._modules.log import get_logger
from resguard.cache._sizeof import sizeof as default_sizeof
from resguard.units import format_bytes, named, parse_bytes, parse_duration

__all__ = [
    "CacheInfo",
    "CacheStats",
    "LRUCache",
    "Memoized",
    "ValueTooLarge",
    "memoize",
]

logger = get_logger("resguard.cache")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
P = ParamSpec("P")
R = TypeVar("R")

_MISSING: Final[Any] = object()


class ValueTooLarge(InvalidValue):
    """A value is larger than the cache's ``max_bytes`` (or the cache holds nothing: a bound
    of 0); nothing was stored. ``size_bytes`` is its cost, ``max_bytes`` the bound (0 for
    ``max_items=0``)."""

    def __init__(self, message: str, *, size_bytes: int, max_bytes: int) -> None:
        super().__init__(message)
        self.size_bytes = size_bytes
        self.max_bytes = max_bytes


@attrs.frozen(slots=True)
class CacheStats:
    """Counters and sizes of one cache at one moment.

    ``evictions`` are entries dropped to stay within ``max_bytes``/``max_items``;
    ``shrink_evictions`` and ``reclaimed_bytes`` are what :meth:`LRUCache.shrink` /
    :meth:`LRUCache.reclaim` removed (under memory pressure, or on request), in ``shrinks``
    calls; ``expirations`` are entries that outlived ``ttl``; ``too_large`` counts values not
    stored because they alone exceed ``max_bytes``; ``merged`` counts memoized calls that
    waited for another caller's computation of the same key instead of computing; ``broken``
    counts entries dropped because their key could no longer be found (its hash or equality
    changed after insertion).
    """

    hits: int
    misses: int
    evictions: int
    expirations: int
    shrinks: int
    shrink_evictions: int
    reclaimed_bytes: int
    too_large: int
    merged: int
    bytes: int
    items: int
    max_bytes: int | None
    max_items: int | None
    broken: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits over lookups, 0.0 to 1.0 (0.0 before the first lookup)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field plus ``hit_rate``."""
        result = attrs.asdict(self)
        result["hit_rate"] = self.hit_rate
        return result


class CacheInfo(NamedTuple):
    """``cache_info()`` of a memoized function, shaped like :func:`functools.lru_cache`'s."""

    hits: int
    misses: int
    maxsize: int | None
    currsize: int


def _check_max_bytes(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidType(
            f'max_bytes={value!r} is not a size; expected e.g. "512MiB", a number of bytes or None'
        )
    try:
        result = parse_bytes(value)
    except InvalidValue as exc:
        raise InvalidValue(f"max_bytes: {exc}") from None
    if result < 0:
        raise InvalidValue(
            f"max_bytes={value!r} must not be negative (0 stores nothing; None for no bound)"
        )
    if result == 0 and isinstance(value, (int, float)) and value != 0:
        raise InvalidValue(
            f"max_bytes={value!r} is less than 1 byte; expected 0 (store "
            "nothing), at least 1 byte, or None"
        )
    return result


def _check_max_items(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"max_items={value!r} is not a whole number; expected e.g. 1000 or None")
    if value < 0:
        raise InvalidValue(
            f"max_items={value!r} must not be negative (0 stores nothing; None for no bound)"
        )
    return value


def _check_ttl(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidType(f'ttl={value!r} is not a duration; expected e.g. "5m", 30 or None')
    result = named("ttl", parse_duration, value)
    if result <= 0:
        raise InvalidValue(f"ttl={value!r} must be longer than zero (or None for no expiry)")
    return result


def _check_callable(value: object, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not callable(value):
        raise InvalidType(f"{what}={value!r} is not callable")


_Entry = tuple[Any, int, float]
"""An entry: (value, size in bytes, monotonic expiry time); a plain tuple, the cheapest to build."""


class LRUCache(MutableMapping[K, V], Generic[K, V]):
    """A thread-safe LRU mapping bounded by bytes and/or items, with optional TTL.

    ``max_bytes`` takes what :func:`resguard.parse_bytes` takes (``"512MiB"``, ``2**20``);
    ``max_items`` a count; ``ttl`` what :func:`resguard.parse_duration` takes (``"5m"``, 30).
    With neither bound the cache grows until memory pressure shrinks it; a bound of 0 stores
    nothing. ``sizeof(value)`` returns the cost of a value, in the units of ``max_bytes``
    (without it, the default sizer counts key and value bytes; see the module docstring).
    ``on_evict(key, value)`` is called, outside the lock, for every entry the cache drops on its
    own (capacity, expiry, shrink) but not for ``del``, ``pop`` or ``clear``; an exception from
    it is logged, never raised. ``clock`` is the monotonic clock for TTL (inject one in tests).

    Where it makes sense it is a drop-in for ``cachetools.LRUCache``: a subclass may define
    ``__missing__(key)``, ``maxsize``/``currsize``/``getsizeof`` exist, it pickles and copies
    (without its lock, TTLs carried as time left, a subclass's own attributes kept), and
    ``LRUCache[str, bytes]`` works in annotations. Reads through ``[]`` and ``get`` refresh
    recency; ``in``, iteration and ``items()`` do not.
    """

    def __init__(
        self,
        max_bytes: int | float | str | None = None,
        max_items: int | None = None,
        ttl: float | str | None = None,
        sizeof: Callable[[Any], int] = default_sizeof,
        on_evict: Callable[[K, V], object] | None = None,
        *,
        clock: Clock = monotonic,
        name: str | None = None,
    ) -> None:
        max_bytes_checked = _check_max_bytes(max_bytes)
        max_items_checked = _check_max_items(max_items)
        ttl_checked = _check_ttl(ttl)
        _check_callable(sizeof, "sizeof")
        _check_callable(on_evict, "on_evict", optional=True)
        _check_callable(clock, "clock")
        if name is not None and not isinstance(name, str):
            raise InvalidType(f"name={name!r} is not a string")
        self._max_bytes = max_bytes_checked
        self._max_items = max_items_checked
        self._ttl_s = ttl_checked
        self._sizeof = sizeof
        self._user_sized = sizeof is not default_sizeof
        self._on_evict = on_evict
        self._clock = clock
        self._name = name if name is not None else f"LRUCache@{id(self):x}"
        self._setup()
        _reclaim.register(self)

    def _setup(self) -> None:
        """The unpicklable and per-instance state (also rebuilt when unpickling)."""
        # Re-entrant: a key's __hash__/__eq__ runs under the lock and may use this cache
        # (CPython's test_need_for_rlock). An uncontended RLock costs what a Lock does.
        self._lock = threading.RLock()
        self._acquire, self._release = self._lock.acquire, self._lock.release
        # Asked before taking the lock on the slow paths: True when this thread is already
        # inside one of the cache's operations (re-entered from a key's __hash__/__eq__).
        # Such nested calls only read: changing an OrderedDict while CPython is inside one of
        # its operations on it can crash the interpreter.
        self._is_owned: Callable[[], bool] = cast(Any, self._lock)._is_owned
        self._data: OrderedDict[Any, _Entry] = OrderedDict()  # least recently used first
        self._get, self._move_to_end = self._data.get, self._data.move_to_end  # hit path
        self._expiry: OrderedDict[Any, None] = OrderedDict()  # insertion order = expiry order
        self._inflight: dict[Any, _Call] = {}
        self._bytes = 0
        self._hits = self._misses = self._evictions = self._expirations = 0
        self._shrinks = self._shrink_evictions = self._reclaimed_bytes = 0
        self._too_large = self._merged = self._broken = 0
        self._broken_logged = False

    # ----------------------------------------------------------------- reading

    def __getitem__(self, key: K) -> V:
        # The hot path: one lookup, one move, no allocation. Bound acquire/release with
        # try/finally cost half of ``with lock`` and are as safe.
        self._acquire()
        try:
            entry = self._get(key)
            if entry is not None and (self._ttl_s is None or entry[2] > self._clock()):
                try:
                    self._move_to_end(key)
                except KeyError:  # nested in a change that has its node out (see _is_owned)
                    pass
                self._hits += 1
                return entry[0]  # type: ignore[no-any-return]
        finally:
            self._release()
        return self._getitem_miss(key)

    def _getitem_miss(self, key: K) -> V:
        dropped = None
        nested = self._is_owned()
        with self._lock:
            entry = self._data.get(key)
            if entry is not None:
                if self._ttl_s is None or entry[2] > self._clock():  # stored meanwhile
                    try:
                        self._data.move_to_end(key)
                    except KeyError:  # nested in a change that has its node out (see _is_owned)
                        pass
                    self._hits += 1
                    return entry[0]  # type: ignore[no-any-return]
                if not nested:
                    dropped = [self._drop_expired_locked(key, entry)]
            self._misses += 1
        if dropped:
            self._notify(dropped)
        return self.__missing__(key)

    def __missing__(self, key: K) -> V:
        """Called by ``cache[key]`` on a miss, outside the lock; a subclass may compute here."""
        raise KeyError(key)

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, /, default: V) -> V: ...
    @overload
    def get(self, key: K, /, default: R) -> V | R: ...

    def get(self, key: K, /, default: object = None) -> object:
        """The value for *key* (refreshing recency) or *default*; never calls ``__missing__``."""
        self._acquire()
        try:
            entry = self._get(key)
            if entry is not None and (self._ttl_s is None or entry[2] > self._clock()):
                try:
                    self._move_to_end(key)
                except KeyError:  # nested in a change that has its node out (see _is_owned)
                    pass
                self._hits += 1
                return entry[0]
        finally:
            self._release()
        data = self._data
        dropped = None
        nested = self._is_owned()
        with self._lock:
            entry = data.get(key)
            if entry is not None:
                if self._ttl_s is None or entry[2] > self._clock():  # stored meanwhile
                    try:
                        data.move_to_end(key)
                    except KeyError:  # nested in a change that has its node out (see _is_owned)
                        pass
                    self._hits += 1
                    return entry[0]
                if not nested:
                    dropped = [self._drop_expired_locked(key, entry)]
            self._misses += 1
        if dropped:
            self._notify(dropped)
        return default

    def __contains__(self, key: object) -> bool:
        dropped = None
        nested = self._is_owned()
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return False
            if self._ttl_s is None or entry[2] > self._clock():
                return True
            if nested:
                return False
            dropped = [self._drop_expired_locked(key, entry)]
        self._notify(dropped)
        return False

    def __len__(self) -> int:
        if self._ttl_s is None or self._is_owned():
            return len(self._data)
        with self._lock:
            dropped = self._expire_locked(self._clock())
            count = len(self._data)
        self._notify(dropped)
        return count

    def __iter__(self) -> Iterator[K]:
        """Keys from least to most recently used, from a copy taken under the lock."""
        return iter([key for key, _ in self._snapshot_items()])

    def _snapshot_items(self) -> list[tuple[K, V]]:
        nested = self._is_owned()
        with self._lock:
            expiring = self._ttl_s is not None and not nested
            dropped = self._expire_locked(self._clock()) if expiring else []
            pairs = [(key, entry[0]) for key, entry in self._pairs_locked(nested)]
        self._notify(dropped)
        return pairs

    def items(self) -> ItemsView[K, V]:
        """A view whose iteration copies the pairs under the lock and leaves recency alone."""
        return _ItemsView(self)

    def values(self) -> ValuesView[V]:
        """A view whose iteration copies the values under the lock and leaves recency alone."""
        return _ValuesView(self)

    # ----------------------------------------------------------------- writing

    def __setitem__(self, key: K, value: V) -> None:
        if self._is_owned():  # inlined _refuse_nested: inserting is the second hottest path
            self._refuse_nested("cache[key] = value")
        size = self._entry_size(key, value)
        with self._lock:
            dropped = self._put_locked(key, value, size)
        self._notify(dropped)

    def __delitem__(self, key: K) -> None:
        self._refuse_nested("del cache[key]")
        with self._lock:
            try:
                entry = self._data.pop(key)
            except BaseException:
                self._resync_locked()
                raise
            self._forget_locked(key, entry)
            expired = self._ttl_s is not None and entry[2] <= self._clock()
            if expired:
                self._expirations += 1
        if expired:
            self._notify([(key, entry[0])])
            raise KeyError(key)

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, /, default: V) -> V: ...
    @overload
    def pop(self, key: K, /, default: R) -> V | R: ...

    def pop(self, key: K, /, default: object = _MISSING) -> object:
        """Remove *key* and return its value, or *default* (``KeyError`` without one)."""
        self._refuse_nested("pop()")
        dropped = None
        with self._lock:
            try:
                entry = self._data.pop(key, None)
            except BaseException:
                self._resync_locked()
                raise
            if entry is not None:
                self._forget_locked(key, entry)
                if self._ttl_s is None or entry[2] > self._clock():
                    return entry[0]
                self._expirations += 1
                dropped = [(key, entry[0])]
        if dropped:
            self._notify(dropped)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[K, V]:
        """Remove and return the least recently used pair (``KeyError`` when empty)."""
        self._refuse_nested("popitem()")
        with self._lock:
            dropped = self._expire_locked(self._clock()) if self._ttl_s is not None else []
            if not self._data:
                result = None
            else:
                try:
                    key, entry = self._data.popitem(last=False)
                except BaseException:
                    self._resync_locked()
                    raise
                self._forget_locked(key, entry)
                result = (key, entry[0])
        self._notify(dropped)
        if result is None:
            raise KeyError("popitem(): cache is empty") from None
        return cast("tuple[K, V]", result)

    def setdefault(self, key: K, default: V = None) -> V:  # type: ignore[assignment]
        """The value for *key*; when absent, store *default* and return it (atomically)."""
        self._refuse_nested("setdefault()")
        size = self._entry_size(key, default)
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and (self._ttl_s is None or entry[2] > self._clock()):
                try:
                    self._data.move_to_end(key)
                except KeyError:  # nested in a change that has its node out (see _is_owned)
                    pass
                self._hits += 1
                return cast(V, entry[0])
            self._misses += 1
            dropped = self._put_locked(key, default, size)
        self._notify(dropped)
        return default

    def clear(self) -> None:
        """Drop every entry (without ``on_evict``); the counters are kept."""
        self._refuse_nested("clear()")
        with self._lock:
            self._data.clear()
            self._expiry.clear()
            self._bytes = 0

    def expire(self) -> int:
        """Drop every entry whose TTL has passed now; return how many went."""
        if self._ttl_s is None:
            return 0
        self._refuse_nested("expire()")
        with self._lock:
            dropped = self._expire_locked(self._clock())
        self._notify(dropped)
        return len(dropped)

    def _refuse_nested(self, what: str) -> None:
        """Raise InvalidState for a change made from inside one of the cache's operations."""
        if self._is_owned():
            raise InvalidState(
                f"{what} on cache {self._name!r} from inside one of its own operations (a "
                "key's __hash__ or __eq__ using the cache it is stored in): such nested calls "
                "may only read"
            )

    # ----------------------------------------------------------------- pressure

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
            dropped = self._expire_locked(self._clock()) if self._ttl_s is not None else []
            candidates = self._pairs_locked() if target_bytes > 0 else []
        # Sort outside the lock: a large cache must not stall readers while it is ordered.
        candidates.sort(key=_entry_size_key, reverse=True)  # stable: LRU first among equals
        freed = 0
        with self._lock:
            data = self._data
            for key, _ in candidates:
                if freed >= target_bytes:
                    break
                try:
                    entry = data.pop(key, None)
                except BaseException:
                    self._resync_locked()
                    raise
                if entry is None:
                    continue
                self._forget_locked(key, entry)
                freed += entry[1]
                self._shrink_evictions += 1
                dropped.append((key, entry[0]))
            self._shrinks += 1
            self._reclaimed_bytes += freed
        self._notify(dropped)
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

    # ----------------------------------------------------------------- numbers

    def stats(self) -> CacheStats:
        """Counters and current sizes (expired entries are dropped first)."""
        nested = self._is_owned()
        with self._lock:
            expiring = self._ttl_s is not None and not nested
            dropped = self._expire_locked(self._clock()) if expiring else []
            result = CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                expirations=self._expirations,
                shrinks=self._shrinks,
                shrink_evictions=self._shrink_evictions,
                reclaimed_bytes=self._reclaimed_bytes,
                too_large=self._too_large,
                merged=self._merged,
                bytes=self._bytes,
                items=len(self._data),
                max_bytes=self._max_bytes,
                max_items=self._max_items,
                broken=self._broken,
            )
        self._notify(dropped)
        return result

    def reset_stats(self) -> None:
        """Set every counter back to zero (the entries stay)."""
        with self._lock:
            self._hits = self._misses = self._evictions = self._expirations = 0
            self._shrinks = self._shrink_evictions = self._reclaimed_bytes = 0
            self._too_large = self._merged = self._broken = 0

    @property
    def max_bytes(self) -> int | None:
        """The byte bound, or None."""
        return self._max_bytes

    @property
    def max_items(self) -> int | None:
        """The item bound, or None."""
        return self._max_items

    @property
    def ttl(self) -> float | None:
        """Seconds an entry lives after insertion, or None."""
        return self._ttl_s

    @property
    def current_bytes(self) -> int:
        """What the cache holds now by its accounting: key and value bytes with the default
        sizer, the sum of ``sizeof(value)`` with a hook."""
        return self._bytes

    @property
    def maxsize(self) -> float:
        """``cachetools`` compatibility: ``max_bytes`` if set, else ``max_items``, else inf."""
        if self._max_bytes is not None:
            return self._max_bytes
        return self._max_items if self._max_items is not None else math.inf

    @property
    def currsize(self) -> int:
        """``cachetools`` compatibility: bytes held when bounded by bytes, else items."""
        return self._bytes if self._max_bytes is not None else len(self._data)

    def getsizeof(self, value: V) -> int:
        """``cachetools`` compatibility: the size of *value* by this cache's sizer when bounded
        by bytes, else 1 (a bound in items counts every value as one)."""
        if self._max_bytes is None:
            return 1
        return self._size_of_value(value)

    def __repr__(self) -> str:
        bound = []
        if self._max_bytes is not None:
            bound.append(f"max_bytes={format_bytes(self._max_bytes)}")
        if self._max_items is not None:
            bound.append(f"max_items={self._max_items}")
        if self._ttl_s is not None:
            bound.append(f"ttl={self._ttl_s:g}s")
        # Starts with the class name, as cachetools' reprs do (its test suite checks it).
        return (
            f"{type(self).__name__}({self._name!r}, items={len(self._data)}, "
            f"bytes={format_bytes(self._bytes)}{', ' if bound else ''}{', '.join(bound)})"
        )

    # ----------------------------------------------------------------- pickling

    def __getstate__(self) -> dict[str, Any]:
        nested = self._is_owned()
        with self._lock:
            now = self._clock()
            entries = [
                (key, entry[0], entry[1], entry[2] - now)
                for key, entry in self._pairs_locked(nested)
            ]
            counters = (
                self._hits,
                self._misses,
                self._evictions,
                self._expirations,
                self._shrinks,
                self._shrink_evictions,
                self._reclaimed_bytes,
                self._too_large,
                self._merged,
                self._broken,
            )
        # A subclass's own attributes travel too (copy.copy shares them, deepcopy copies them).
        attributes = {
            name: value for name, value in self.__dict__.items() if name not in _OWN_ATTRIBUTES
        }
        return {
            "max_bytes": self._max_bytes,
            "max_items": self._max_items,
            "ttl_s": self._ttl_s,
            "sizeof": self._sizeof,
            "on_evict": self._on_evict,
            "clock": self._clock,
            "name": self._name,
            "entries": entries,
            "counters": counters,
            "attributes": attributes,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state.get("attributes", {}))
        self._max_bytes = state["max_bytes"]
        self._max_items = state["max_items"]
        self._ttl_s = state["ttl_s"]
        self._sizeof = state["sizeof"]
        self._user_sized = self._sizeof is not default_sizeof
        self._on_evict = state["on_evict"]
        self._clock = state["clock"]
        self._name = state["name"]
        self._setup()
        now = self._clock()
        live = [entry for entry in state["entries"] if self._ttl_s is None or entry[3] > 0]
        for key, value, size, left_s in live:  # least recently used first
            expires = now + left_s if self._ttl_s is not None else math.inf
            self._data[key] = (value, size, expires)
            self._bytes += size
        if self._ttl_s is not None:  # the expiry order is the order of time left
            for key, *_ in sorted(live, key=operator.itemgetter(3)):
                self._expiry[key] = None
        counters = (*state["counters"], 0)[:10]  # a pickle from before ``broken`` has nine
        (
            self._hits,
            self._misses,
            self._evictions,
            self._expirations,
            self._shrinks,
            self._shrink_evictions,
            self._reclaimed_bytes,
            self._too_large,
            self._merged,
            self._broken,
        ) = counters
        _reclaim.register(self)

    # ----------------------------------------------------------------- internals

    def _size_of_value(self, value: object) -> int:
        result = self._sizeof(value)
        try:
            size = operator.index(result)
        except TypeError:
            raise InvalidType(
                f"sizeof={self._sizeof!r} returned {result!r} for a {type(value).__name__}; "
                "expected a whole number of bytes"
            ) from None
        if size < 0:
            raise InvalidValue(
                f"sizeof={self._sizeof!r} returned {size} for a {type(value).__name__}; "
                "expected a number of bytes >= 0"
            )
        return size

    def _entry_size(self, key: object, value: object) -> int:
        """The cost of one entry; raises ValueTooLarge (counting it) when it cannot fit.

        A ``sizeof=`` hook alone is the cost (cachetools' ``getsizeof``); the default sizer
        counts the key too.
        """
        if self._user_sized:
            size = self._size_of_value(value)
        else:
            size = default_sizeof(key) + default_sizeof(value)
        max_bytes = self._max_bytes
        if (max_bytes is not None and size > max_bytes) or self._max_items == 0:
            with self._lock:
                self._too_large += 1
            if self._max_items == 0:
                message = "a cache of max_items=0 stores nothing; nothing was stored"
            elif self._user_sized:
                message = (
                    f"a {type(value).__name__} of size {size} (by sizeof="
                    f"{self._sizeof!r}) does not fit in a cache of max_bytes={max_bytes}; "
                    "nothing was stored"
                )
            else:
                message = (
                    f"a {type(value).__name__} of {format_bytes(size)} (with its key) "
                    f"does not fit in a cache of max_bytes={format_bytes(max_bytes or 0)}; "
                    "nothing was stored"
                )
            raise ValueTooLarge(message, size_bytes=size, max_bytes=max_bytes or 0)
        return size

    def _put_locked(self, key: Any, value: Any, size: int) -> list[tuple[Any, Any]]:
        """Insert or replace under the lock; return the pairs dropped to make room.

        When a key's ``__eq__`` raises part-way (an OrderedDict operation then may have
        done half its work), the byte count is taken again from what is stored.
        """
        data = self._data
        try:
            if self._ttl_s is not None:
                now = self._clock()
                dropped = self._expire_locked(now)
                expires = now + self._ttl_s
            else:
                dropped = []
                expires = math.inf
            old = data.pop(key, None)
            if old is not None:
                self._forget_locked(key, old)
            # Make room before inserting, so that even a reader that does not take the lock
            # (``current_bytes``) never sees more than max_bytes.
            max_bytes, max_items = self._max_bytes, self._max_items
            repaired = False
            while data and (
                (max_bytes is not None and self._bytes + size > max_bytes)
                or (max_items is not None and len(data) >= max_items)
            ):
                try:
                    old_key, old_entry = data.popitem(last=False)
                except KeyError:
                    if repaired:
                        raise
                    self._repair_locked()  # an entry the order lost: rebuild, go on
                    repaired = True
                    continue
                self._forget_locked(old_key, old_entry)
                self._evictions += 1
                dropped.append((old_key, old_entry[0]))
            count = len(data)
            data[key] = (value, size, expires)
            self._bytes += size
            if len(data) == count:  # it replaced an entry after all (a key's __eq__ re-entered)
                self._resync_locked()
            if self._ttl_s is not None:
                self._expiry[key] = None
        except BaseException:
            self._resync_locked()
            raise
        return dropped

    def _resync_locked(self) -> None:
        """Take the byte count again from the stored entries (after an interrupted change)."""
        self._bytes = sum(entry[1] for entry in dict.values(self._data))

    def _forget_locked(self, key: Any, entry: _Entry) -> None:
        """Account for an entry already popped from ``_data``."""
        self._bytes -= entry[1]
        if self._ttl_s is not None:
            try:
                self._expiry.pop(key, None)
            except Exception:  # a key that cannot be compared: _expire_locked drops it later
                pass

    def _drop_expired_locked(self, key: Any, entry: _Entry) -> tuple[Any, Any]:
        try:
            del self._data[key]
        except BaseException:
            self._resync_locked()
            raise
        self._forget_locked(key, entry)
        self._expirations += 1
        return (key, entry[0])

    def _expire_locked(self, now: float) -> list[tuple[Any, Any]]:
        """Drop entries whose TTL has passed, oldest insertion first; O(expired).

        A key that can no longer be looked up (its hash or ``__eq__`` changed after
        insertion) makes the OrderedDicts raise KeyError even on iteration: then the broken
        entries are dropped (:meth:`_repair_locked`) instead of breaking every later call.
        """
        dropped: list[tuple[Any, Any]] = []
        expiry, data = self._expiry, self._data
        repairs = 0
        while expiry:
            try:
                key = next(iter(expiry))
                entry = data.get(key)
            except Exception:
                entry = None
            if entry is None:  # in the expiry order but not found: only a repair finds why
                if repairs == 2:  # a key that fails at random: leave it for the next call
                    break
                repairs += 1
                self._repair_locked()
                continue
            if entry[2] > now:
                break
            expiry.popitem(last=False)
            try:
                del data[key]
            except BaseException:
                self._resync_locked()
                raise
            self._bytes -= entry[1]
            self._expirations += 1
            dropped.append((key, entry[0]))
        return dropped

    def _pairs_locked(self, nested: bool = False) -> list[tuple[Any, _Entry]]:
        """``list(self._data.items())`` in LRU order, mended when a broken key is met.

        Iterating an OrderedDict looks every key up; a broken key raises KeyError (then the
        cache is repaired, unless this call is nested: it only reads), and a key whose
        ``__eq__`` reads the cache moves entries meanwhile (RuntimeError). What still fails
        lists the pairs in storage order, which needs no lookup.
        """
        for attempt in range(2):
            try:
                return list(self._data.items())
            except Exception:
                if attempt == 0 and not nested:
                    self._repair_locked()
        return list(dict.items(self._data))

    def _repair_locked(self) -> None:
        """Drop every entry whose key cannot be found by its hash any more; O(n), rare.

        ``popitem`` finds an entry by the hash it was stored with, so it empties both
        OrderedDicts whatever their keys do now; healthy keys go back in the same order
        (in place: the memoize wrappers hold a reference to ``_data``). It also mends an
        OrderedDict whose order lost an entry its dict still holds.
        """
        data, expiry = self._data, self._expiry
        broken: set[int] = set()
        for key in list(dict.keys(data)):  # dict's own iteration does not look keys up
            try:
                if key not in data:
                    broken.add(id(key))
            except Exception:
                broken.add(id(key))
        pairs = _drain(data)
        expiry_keys = [key for key, _ in _drain(expiry)]
        self._bytes = 0
        kept: set[int] = set()
        for key, entry in pairs:
            if id(key) not in broken:
                try:
                    data[key] = entry
                except Exception:
                    pass
                else:
                    self._bytes += entry[1]
                    kept.add(id(key))
                    continue
            self._broken += 1
        for key in expiry_keys:
            if id(key) in kept:
                try:
                    expiry[key] = None
                except Exception:  # it went back into _data a moment ago; let it not expire
                    pass
        self._resync_locked()
        if len(kept) < len(pairs) and not self._broken_logged:
            self._broken_logged = True
            logger.warning(
                "cache %r dropped an entry whose key can no longer be found (its "
                "hash or equality changed after it was stored); keys must not "
                "change while cached; stats().broken counts these",
                self._name,
            )

    def _notify(self, dropped: list[tuple[Any, Any]] | None) -> None:
        """Call ``on_evict`` for dropped pairs, outside the lock; log what it raises."""
        if not dropped or self._on_evict is None:
            return
        for key, value in dropped:
            try:
                self._on_evict(key, value)
            except Exception:
                logger.warning(
                    "on_evict of cache %r raised for key %r", self._name, key, exc_info=True
                )

    # ------------------------------------------------------- memoize internals

    def _memo_miss(self, key: Any, token: Hashable, merge: bool) -> tuple[Any, _Call | None, bool]:
        """After a fast-path miss: (value or _MISSING, call to wait on or lead, leading?).

        A nested call (from a key's __eq__ while the cache is busy) neither merges nor, in
        :meth:`_memo_store`, stores: it computes and returns.
        """
        dropped = None
        nested = self._is_owned()
        try:
            with self._lock:
                entry = self._data.get(key)
                if entry is not None:
                    if self._ttl_s is None or entry[2] > self._clock():
                        try:
                            self._data.move_to_end(key)
                        except KeyError:  # nested in a change that has its node out (see _is_owned)
                            pass
                        self._hits += 1
                        return entry[0], None, False
                    if not nested:
                        dropped = [self._drop_expired_locked(key, entry)]
                self._misses += 1
                if not merge or nested:
                    return _MISSING, None, False
                call = self._inflight.get(key)
                if call is not None and not call.finished and call.leader_alive():
                    return _MISSING, call, False
                # none in flight, or one left behind (its key could not be removed, or its
                # leader thread died without an answer): lead a new computation
                call = self._inflight[key] = _Call(token)
                return _MISSING, call, True
        finally:
            if dropped:
                self._notify(dropped)

    def _memo_event(self, call: _Call, new_event: Callable[[], Any]) -> Any:
        """The event to wait on for *call*, made on the first waiter; None if it is over."""
        with self._lock:
            if call.finished:
                return None
            if call.event is None:
                call.event = new_event()
            return call.event

    def _memo_wait(self, call: _Call) -> None:
        """Block until *call* is over, or until its leader thread is found dead."""
        event = self._memo_event(call, threading.Event)
        if event is None:
            return
        while not event.wait(LEADER_CHECK_S):
            if not call.leader_alive():  # it died without releasing: stop waiting for it
                self._memo_finish(_MISSING, call, _MISSING, None)
                return

    def _memo_store(self, key: Any, value: Any, call: _Call | None) -> None:
        """Cache a computed value (skipping it when too large) and release its waiters.

        Waiters are released whatever happens: when storing raises (a key whose ``__eq__``
        fails on a hash collision, a MemoryError), they get that error, as the leader does.
        """
        dropped: list[tuple[Any, Any]] = []
        if self._is_owned():  # nested (see _memo_miss): never a leader, nothing to store
            return
        try:
            try:
                size = self._entry_size(key, value)
            except ValueTooLarge:
                pass  # returned, not cached
            else:
                with self._lock:
                    dropped = self._put_locked(key, value, size)
        except BaseException as exc:
            self._memo_finish(key, call, _MISSING, exc)
            raise
        self._memo_finish(key, call, value, None)
        self._notify(dropped)

    def _memo_abandon(self, key: Any, call: _Call | None, error: BaseException | None) -> None:
        """The leader failed or was cancelled: nothing is cached; waiters see *error* or retry."""
        self._memo_finish(key, call, _MISSING, error)

    def _memo_finish(
        self, key: Any, call: _Call | None, value: Any, error: BaseException | None
    ) -> None:
        """Mark *call* over (with *value*, else *error*, else for a retry) and wake its waiters.

        Never raises for a key that cannot be compared: the finished call is then left in
        ``_inflight``, where the next miss of that key replaces it.
        """
        if call is None:
            return
        with self._lock:
            if value is not _MISSING:
                call.value = value
                call.done = True
            elif isinstance(error, Exception):
                call.error = error
            call.finished = True
            if key is not _MISSING:
                try:
                    if self._inflight.get(key) is call:
                        del self._inflight[key]
                except Exception:
                    pass
            event = call.event
        if event is not None:
            event.set()

    def _memo_merged(self) -> None:
        with self._lock:
            self._merged += 1


_OWN_ATTRIBUTES: Final = frozenset(
    {
        "_max_bytes",
        "_max_items",
        "_ttl_s",
        "_sizeof",
        "_user_sized",
        "_on_evict",
        "_clock",
        "_name",
        "_lock",
        "_acquire",
        "_release",
        "_is_owned",
        "_data",
        "_get",
        "_move_to_end",
        "_expiry",
        "_inflight",
        "_bytes",
        "_hits",
        "_misses",
        "_evictions",
        "_expirations",
        "_shrinks",
        "_shrink_evictions",
        "_reclaimed_bytes",
        "_too_large",
        "_merged",
        "_broken",
        "_broken_logged",
    }
)
"""LRUCache's own instance attributes; pickling carries every other one (a subclass's)."""


def _drain(ordered: OrderedDict[Any, Any]) -> list[tuple[Any, Any]]:
    """Empty *ordered*, returning its pairs in order (then any its order had lost)."""
    pairs = []
    while True:
        try:
            pairs.append(ordered.popitem(last=False))
        except Exception:  # empty, or a colliding key's __eq__ raised: the dict has the rest
            break
    pairs.extend(dict.items(ordered))  # in the dict but no longer in the order
    OrderedDict.clear(ordered)
    return pairs


def _entry_size_key(pair: tuple[Any, _Entry]) -> int:
    return pair[1][1]


class _ItemsView(ItemsView[K, V]):
    _mapping: LRUCache[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return iter(self._mapping._snapshot_items())


class _ValuesView(ValuesView[V]):
    _mapping: LRUCache[Any, V]

    def __iter__(self) -> Iterator[V]:
        return iter([value for _, value in self._mapping._snapshot_items()])


# ===================================================================== memoize

LEADER_CHECK_S: Final = 1.0
"""How often a thread waiting for another thread's computation checks that it is alive."""


class _Call:
    """One in-flight computation of a key: its owner, and how waiters learn the outcome.

    ``finished`` is set (under the cache lock) when the computation is over, with ``done``
    and ``value`` on success or ``error`` on failure; neither means "try again". The event
    is made by the first waiter only, so a miss nobody waits for allocates none.
    """

    __slots__ = ("done", "error", "event", "finished", "leader", "owner", "thread", "value")

    def __init__(self, owner: Hashable) -> None:
        self.owner = owner
        self.thread = threading.get_ident()
        # the leading thread, watched by waiters; None for a task (its loop's thread waits)
        self.leader = None if isinstance(owner, tuple) else threading.current_thread()
        self.event: Any = None  # a threading.Event (sync) or an anyio.Event (async)
        self.value: Any = None
        self.error: Exception | None = None
        self.done = False
        self.finished = False

    def leader_alive(self) -> bool:
        """False when the leading thread ended without finishing (it cannot answer)."""
        return self.leader is None or self.leader.is_alive()


# Who waits for which computation, across every memoized function: a waiter whose wait would
# close a cycle (recursion with the same key, A waits on B which waits on A) computes instead.
_waits_lock = threading.Lock()
_waiting: dict[Hashable, _Call] = {}


def _start_waiting(token: Hashable, call: _Call) -> bool:
    """Record that *token* waits for *call*; False (not recorded) if that would deadlock."""
    with _waits_lock:
        owner = call.owner
        for _ in range(10_000):
            if owner == token:
                return False
            blocker = _waiting.get(owner)
            if blocker is None:
                break
            owner = blocker.owner
        else:
            return False
        _waiting[token] = call
        return True


def _stop_waiting(token: Hashable) -> None:
    with _waits_lock:
        _waiting.pop(token, None)


class _HashedKey(list):  # type: ignore[type-arg]
    """A call's arguments with their hash computed once (the cache hashes a key twice)."""

    __slots__ = ("hash_value",)

    def __init__(self, items: tuple[Any, ...]) -> None:
        super().__init__(items)
        self.hash_value = hash(items)

    def __hash__(self) -> int:  # type: ignore[override]
        return self.hash_value


_KWARGS_MARK: Final = object()
_FAST_TYPES: Final = frozenset({int, str})


def _make_key(args: tuple[Any, ...], kwargs: dict[str, Any], typed: bool) -> Hashable:
    """The default key: positional and keyword arguments (keyword order matters)."""
    if not kwargs and not typed and len(args) == 1 and type(args[0]) in _FAST_TYPES:
        return cast(Hashable, args[0])
    items = args
    if kwargs:
        items = (*args, _KWARGS_MARK, *kwargs.items())
    if typed:
        items = (*items, *(type(arg) for arg in args), *(type(v) for v in kwargs.values()))
    return _HashedKey(items)


class Memoized(Protocol[P, R]):
    """A memoized function: call it as the original; inspect and clear its cache."""

    cache: LRUCache[Any, Any]
    __wrapped__: Callable[P, R]
    __name__: str
    __qualname__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def __get__(self, instance: object, owner: type | None = None) -> Callable[..., R]: ...

    def cache_info(self) -> CacheInfo:
        """``functools.lru_cache`` style: hits, misses, maxsize (items), currsize (items)."""
        ...

    def cache_clear(self) -> None:
        """Drop every entry and reset the counters."""
        ...

    def cache_stats(self) -> CacheStats:
        """The full counters and byte figures of the underlying :class:`LRUCache`."""
        ...

    def cache_parameters(self) -> dict[str, Any]:
        """The bounds and options the function was memoized with."""
        ...


@overload
def memoize(func: Callable[P, R], /) -> Memoized[P, R]: ...


@overload
def memoize(
    func: None = None,
    /,
    *,
    max_bytes: int | float | str | None = None,
    max_items: int | None = None,
    ttl: float | str | None = None,
    key: Callable[..., Hashable] | None = None,
    typed: bool = False,
    merge: bool = True,
    sizeof: Callable[[Any], int] = default_sizeof,
    on_evict: Callable[[Any, Any], object] | None = None,
    name: str | None = None,
    clock: Clock = monotonic,
) -> Callable[[Callable[P, R]], Memoized[P, R]]: ...


def memoize(
    func: Callable[..., Any] | None = None,
    /,
    *,
    max_bytes: int | float | str | None = None,
    max_items: int | None = None,
    ttl: float | str | None = None,
    key: Callable[..., Hashable] | None = None,
    typed: bool = False,
    merge: bool = True,
    sizeof: Callable[[Any], int] = default_sizeof,
    on_evict: Callable[[Any, Any], object] | None = None,
    name: str | None = None,
    clock: Clock = monotonic,
) -> Any:
    """Cache a sync or ``async`` function's results in an :class:`LRUCache`.

    ``@memoize`` alone caches without bound (until memory pressure shrinks it), like
    ``functools.cache``; ``max_bytes``, ``max_items`` and ``ttl`` bound it as in
    :class:`LRUCache`. ``key(*args, **kwargs)`` replaces the default key (the arguments,
    keyword order included; with ``typed=True`` their types too, as in ``lru_cache``).

    With ``merge=True`` (the default) concurrent callers of the same key wait for the first
    one's computation instead of starting their own (stampede protection): threads wait on a
    :class:`threading.Event`, tasks on an :class:`anyio.Event` (asyncio and trio). A failure is
    not cached: callers already waiting get the same exception; if the first caller is
    cancelled, the waiters try again and one of them computes. A caller whose wait would
    deadlock (the function calling itself with the same key, or two keys waiting on each
    other across threads or tasks) computes on its own instead. ``merge=False`` gives
    ``functools.lru_cache``'s behaviour: every missing caller computes.

    A result too large for ``max_bytes`` is returned and not cached (``too_large`` in
    :meth:`~Memoized.cache_stats`).
    """
    cache: LRUCache[Any, Any] = LRUCache(
        max_bytes, max_items, ttl, sizeof, on_evict, clock=clock, name=name
    )
    _check_callable(key, "key", optional=True)
    if not isinstance(typed, bool):
        raise InvalidType(f"typed={typed!r} is not a bool")
    if not isinstance(merge, bool):
        raise InvalidType(f"merge={merge!r} is not a bool")

    def decorate(function: Callable[..., Any]) -> Any:
        if not callable(function):
            raise InvalidType(f"memoize expects a function, got {function!r}")
        if name is None:
            cache._name = f"memoize:{getattr(function, '__qualname__', repr(function))}"
        if inspect.iscoroutinefunction(function):
            wrapper = _async_wrapper(function, cache, key, typed, merge)
        else:
            wrapper = _sync_wrapper(function, cache, key, typed, merge)
        functools.update_wrapper(wrapper, function)
        _attach(wrapper, cache, typed, merge)
        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


def _attach(wrapper: Any, cache: LRUCache[Any, Any], typed: bool, merge: bool) -> None:
    def cache_info() -> CacheInfo:
        stats = cache.stats()
        return CacheInfo(stats.hits, stats.misses, stats.max_items, stats.items)

    def cache_clear() -> None:
        cache.clear()
        cache.reset_stats()

    def cache_parameters() -> dict[str, Any]:
        return {
            "max_bytes": cache.max_bytes,
            "max_items": cache.max_items,
            "ttl": cache.ttl,
            "typed": typed,
            "merge": merge,
            "maxsize": cache.max_items,
        }

    wrapper.cache = cache
    wrapper.cache_info = cache_info
    wrapper.cache_clear = cache_clear
    wrapper.cache_stats = cache.stats
    wrapper.cache_parameters = cache_parameters


def _sync_wrapper(
    function: Callable[..., Any],
    cache: LRUCache[Any, Any],
    key: Callable[..., Hashable] | None,
    typed: bool,
    merge: bool,
) -> Callable[..., Any]:
    acquire, release = cache._lock.acquire, cache._lock.release
    data, clock = cache._data, cache._clock
    expiring = cache._ttl_s is not None
    make_key, fast_types = _make_key, _FAST_TYPES
    get_ident = threading.get_ident
    # Locals, not globals: the wrapper may itself replace builtins.len (and a bound method
    # saves a lookup on every hit; ``_data`` is never replaced, only changed in place).
    len_, type_ = len, type
    get, move_to_end = data.get, data.move_to_end
    plain = key is None and not typed  # the default key of one int or str is the argument

    def miss(k: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        token = get_ident()
        while True:
            value, call, leading = cache._memo_miss(k, token, merge)
            if value is not _MISSING:
                return value
            if call is None:  # merging is off: compute like lru_cache
                return _compute_sync(function, cache, k, args, kwargs, None)
            if leading:
                return _compute_sync(function, cache, k, args, kwargs, call)
            if isinstance(call.owner, tuple) or not _start_waiting(token, call):
                # an async owner, or waiting would deadlock: compute on our own
                return _compute_sync(function, cache, k, args, kwargs, None)
            try:
                cache._memo_wait(call)
            finally:
                _stop_waiting(token)
            if call.done:
                cache._memo_merged()
                return call.value
            if call.error is not None:
                raise call.error
            # the leader was interrupted without a result: try again

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if plain and not kwargs and len_(args) == 1 and type_(args[0]) in fast_types:
            k = args[0]  # as _make_key would, without the call
        elif key is not None:
            k = key(*args, **kwargs)
        else:
            k = make_key(args, kwargs, typed)
        acquire()
        try:
            entry = get(k)
            if entry is not None and (not expiring or entry[2] > clock()):
                try:
                    move_to_end(k)
                except KeyError:  # nested in a change that has its node out (see _is_owned)
                    pass
                cache._hits += 1
                return entry[0]
        finally:
            release()
        return miss(k, args, kwargs)

    return wrapper


def _compute_sync(
    function: Callable[..., Any],
    cache: LRUCache[Any, Any],
    k: Hashable,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    call: _Call | None,
) -> Any:
    try:
        value = function(*args, **kwargs)
    except BaseException as exc:
        cache._memo_abandon(k, call, exc)
        raise
    cache._memo_store(k, value, call)
    return value


def _async_wrapper(
    function: Callable[..., Awaitable[Any]],
    cache: LRUCache[Any, Any],
    key: Callable[..., Hashable] | None,
    typed: bool,
    merge: bool,
) -> Callable[..., Awaitable[Any]]:
    import anyio

    acquire, release = cache._lock.acquire, cache._lock.release
    data, clock = cache._data, cache._clock
    expiring = cache._ttl_s is not None
    make_key, fast_types = _make_key, _FAST_TYPES
    len_, type_ = len, type
    get, move_to_end = data.get, data.move_to_end
    plain = key is None and not typed

    async def compute(
        k: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any], call: _Call | None
    ) -> Any:
        try:
            value = await function(*args, **kwargs)
        except BaseException as exc:
            cache._memo_abandon(k, call, exc)
            raise
        cache._memo_store(k, value, call)
        return value

    async def miss(k: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        token = ("task", anyio.get_current_task().id)
        while True:
            value, call, leading = cache._memo_miss(k, token, merge)
            if value is not _MISSING:
                return value
            if call is None:
                return await compute(k, args, kwargs, None)
            if leading:
                return await compute(k, args, kwargs, call)
            if (
                call.thread != threading.get_ident()
                or not isinstance(call.owner, tuple)
                or not _start_waiting(token, call)
            ):
                # owned in another thread's event loop, or waiting would deadlock
                return await compute(k, args, kwargs, None)
            try:
                event = cache._memo_event(call, anyio.Event)
                if event is not None:
                    await event.wait()
            finally:
                _stop_waiting(token)
            if call.done:
                cache._memo_merged()
                return call.value
            if call.error is not None:
                raise call.error

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        # The hit path repeats the sync wrapper's on purpose: a shared helper would add a
        # function call to every hit, the figure the benchmark holds against cachetools.
        if plain and not kwargs and len_(args) == 1 and type_(args[0]) in fast_types:
            k = args[0]
        elif key is not None:
            k = key(*args, **kwargs)
        else:
            k = make_key(args, kwargs, typed)
        acquire()
        try:
            entry = get(k)
            if entry is not None and (not expiring or entry[2] > clock()):
                try:
                    move_to_end(k)
                except KeyError:  # nested in a change that has its node out (see _is_owned)
                    pass
                cache._hits += 1
                return entry[0]
        finally:
            release()
        return await miss(k, args, kwargs)

    return wrapper
