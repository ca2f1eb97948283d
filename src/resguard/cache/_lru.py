""":class:`LRUCache`: the thread-safe mapping over the storage engine (:mod:`._core`), as its
users, the reclaim ladder and monitoring see it."""

from __future__ import annotations

import math
from builtins import isinstance, len, next, type  # noqa: UP029 (see _core)
from collections.abc import Callable, Hashable, ItemsView, Iterator, MutableMapping, ValuesView
from typing import Any, Generic, TypeVar, cast, overload

from resguard import reclaim as _reclaim
from resguard._errors import InvalidType
from resguard._modules.clock import Clock, monotonic
from resguard.cache._core import EXPIRED, MISSING, CacheCore, Dropped
from resguard.cache._cost import entry_size, refuse_too_large, size_of_value
from resguard.cache._hits import (
    ATOMIC_KEYS,
    dict_get,
    od_move_to_end,
    od_pop,
    od_popitem,
    rlock_is_owned,
    rlock_release,
)
from resguard.cache._pickling import get_state, set_state
from resguard.cache._shrink import reclaim_largest, shrink_bytes
from resguard.cache._sizeof import FLAT_TYPES
from resguard.cache._sizeof import sizeof as default_sizeof
from resguard.cache._stats import (
    CacheStats,
    check_callable,
    check_max_bytes,
    check_max_items,
    check_ttl,
)
from resguard.units import format_bytes

__all__ = ["LRUCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")


class LRUCache(CacheCore, MutableMapping[K, V], Generic[K, V]):
    """A thread-safe LRU mapping bounded by bytes and/or items, with optional TTL.

    ``max_bytes`` takes what :func:`resguard.parse_bytes` takes (``"512MiB"``, ``2**20``);
    ``max_items`` a count; ``ttl`` what :func:`resguard.parse_duration` takes (``"5m"``, 30).
    With neither bound the cache grows until memory pressure shrinks it; a bound of 0 stores
    nothing. ``sizeof(value)`` returns the cost of a value, in the units of ``max_bytes``
    (without it, the default sizer counts key and value bytes; see the module docstring).
    ``on_evict(key, value)`` is called, outside the lock, for every entry the cache drops on its
    own (capacity, expiry, shrink) but not for ``del``, ``pop`` or ``clear``; an exception from
    it is logged, never raised. ``clock`` is the monotonic clock for TTL (inject one in tests).
    ``register`` puts the cache on a reclaim ladder: ``True`` (default) the process-wide
    registry (climbed by ``Monitor(reclaim="process")``), a Monitor or Ladder that one's
    only, ``False`` none (a copy or an unpickled cache is on the process-wide registry when
    the original was, else on none).

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
        register: _reclaim.RegisterTarget = True,
    ) -> None:
        registry = _reclaim.registry_for(register)
        max_bytes_checked = check_max_bytes(max_bytes)
        max_items_checked = check_max_items(max_items)
        ttl_checked = check_ttl(ttl)
        check_callable(sizeof, "sizeof")
        check_callable(on_evict, "on_evict", optional=True)
        check_callable(clock, "clock")
        if name is not None and not isinstance(name, str):
            raise InvalidType(f"name={name!r} is not a string")
        self._configure(
            max_bytes_checked,
            max_items_checked,
            ttl_checked,
            sizeof,
            cast("Callable[[Any, Any], object] | None", on_evict),
            clock,
            name if name is not None else f"LRUCache@{id(self):x}",
        )
        self._process_registered = registry is _reclaim.PROCESS_REGISTRY
        if registry is not None:
            registry.register(self)

    # ----------------------------------------------------------------- reading

    def __getitem__(self, key: K) -> V:
        # The lock-free hit written out rather than through _find_locked: it is the figure the
        # benchmark holds against cachetools, and a method call would add a fifth to it.
        data = self._fast
        if data is not None and type(key) in ATOMIC_KEYS:  # lock-free (see _hits)
            # Called unbound, or through a local: ``self._hit()`` or ``data.get(key)`` take
            # CPython 3.11's unspecialised method lookup.
            entry = dict_get(data, key)
            if entry is None:
                count = self._miss
                count()
                return self.__missing__(key)
            if self._ttl_s is None or entry[2] > self._clock():
                try:
                    od_move_to_end(data, key)
                except KeyError:  # evicted since it was read: it was live then
                    pass
                next(self._hits)  # self._hit(), in a call CPython 3.11 specialises
                return entry[0]  # type: ignore[no-any-return]
        else:
            # Bound acquire/release with try/finally cost half of ``with lock``, as safe.
            self._acquire()
            try:
                value = self._hit_locked(key)
                if value is MISSING:
                    self._miss()
            finally:
                self._release()
            if value is MISSING:
                return self.__missing__(key)
            if value is not EXPIRED:
                return cast(V, value)
        # expired: the one lookup drops it (it knows a nested call)
        value = self._find_expired(key)
        if value is not MISSING:  # stored again meanwhile
            return cast(V, value)
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
        data = self._fast
        if data is not None and type(key) in ATOMIC_KEYS:  # lock-free, as in __getitem__
            entry = dict_get(data, key)
            if entry is None:
                count = self._miss
                count()
                return default
            if self._ttl_s is None or entry[2] > self._clock():
                try:
                    od_move_to_end(data, key)
                except KeyError:  # evicted since it was read: it was live then
                    pass
                next(self._hits)
                return entry[0]
        self._acquire()  # not through _find or _find_locked: a call fewer on every get
        try:
            value = self._hit_locked(key)
            if value is MISSING:
                self._miss()
        finally:
            self._release()
        if value is EXPIRED:
            value = self._find_expired(key)
        return default if value is MISSING else value

    def __contains__(self, key: object) -> bool:
        data = self._fast
        if data is not None and type(key) in ATOMIC_KEYS:  # lock-free: one dict lookup
            entry = dict_get(data, key)
            if entry is None:
                return False
            if self._ttl_s is None or entry[2] > self._clock():
                return True
        return self._find(key, counted=False) is not MISSING

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

    def items(self) -> ItemsView[K, V]:
        """A view whose iteration copies the pairs under the lock and leaves recency alone."""
        return _ItemsView(self)

    def values(self) -> ValuesView[V]:
        """A view whose iteration copies the values under the lock and leaves recency alone."""
        return _ValuesView(self)

    # ----------------------------------------------------------------- writing

    def __setitem__(self, key: K, value: V) -> None:
        # Written out (_refuse_nested, entry_size, _put_locked) for the common case: inserting
        # is the second hottest path, and each call would add a tenth to it.
        lock = self._lock  # its methods called unbound: CPython 3.11 specialises those calls
        if rlock_is_owned(lock):
            self._refuse_nested("cache[key] = value")
        kind = type(key)
        if self._user_sized:
            size = size_of_value(self, value)
        else:
            size = (key.__sizeof__() if kind in FLAT_TYPES else default_sizeof(key)) + (
                value.__sizeof__() if type(value) in FLAT_TYPES else default_sizeof(value)
            )
        cap = self._size_cap
        if cap is not None and size > cap:
            refuse_too_large(self, value, size)
        acquire = self._acquire
        acquire()
        try:
            data = self._fast_put  # read under the lock, under which _lock_hits_locked sets it
            if data is None or kind not in ATOMIC_KEYS:
                dropped = self._put_locked(key, value, size)
            else:  # an atomic key in a lock-free cache without TTL: no Python code can re-enter
                if key in data:  # a replacement: rare, and a test is cheaper than a pop
                    self._bytes -= od_pop(data, key)[1]
                max_bytes, max_items = self._max_bytes, self._max_items
                full = max_items is not None and len(data) >= max_items
                dropped = None
                if full and max_bytes is None and not self._keep_dropped:
                    # The item bound alone, and nobody to tell: one eviction (every insert
                    # keeps len(data) <= max_items), written out.
                    self._bytes -= od_popitem(data, False)[1][1]
                    self._counters.evictions += 1
                elif full or (max_bytes is not None and self._bytes + size > max_bytes):
                    dropped = self._make_room_locked(size, None)
                data[key] = (value, size)
                self._bytes += size
        finally:
            rlock_release(lock)
        if dropped:
            self._notify(dropped)

    def __delitem__(self, key: K) -> None:
        self._refuse_nested("del cache[key]")
        if self._remove(key) is MISSING:
            raise KeyError(key)

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, /, default: V) -> V: ...
    @overload
    def pop(self, key: K, /, default: R) -> V | R: ...

    def pop(self, key: K, /, default: object = MISSING) -> object:
        """Remove *key* and return its value, or *default* (``KeyError`` without one)."""
        self._refuse_nested("pop()")
        value = self._remove(key)
        if value is not MISSING:
            return value
        if default is MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[K, V]:
        """Remove and return the least recently used pair (``KeyError`` when empty)."""
        self._refuse_nested("popitem()")
        with self._lock:
            dropped = self._expire_unless_nested_locked(False)
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
        size = entry_size(self, key, default)
        dropped: Dropped = []
        with self._lock:
            value = self._find_locked(key, True, False, dropped)
            if value is MISSING:
                dropped += self._put_locked(key, default, size) or ()
                value = default
        self._notify(dropped)
        return cast(V, value)

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

    # ----------------------------------------------------------------- pressure and numbers

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
        return reclaim_largest(self, target_bytes)

    def shrink(self, amount: int | float | str) -> int:
        """Free *amount*: bytes (``"64MiB"``, ``1024``) or a share of what the cache holds.

        A ``float`` from 0.0 to 1.0 or a string like ``"50%"`` is a share (``shrink(0.5)`` frees
        half, ``shrink(1.0)`` everything); anything else is read by :func:`resguard.parse_bytes`.
        Largest values go first, as in :meth:`reclaim`. Returns the bytes freed.
        """
        return self.reclaim(shrink_bytes(amount, self._bytes))

    def stats(self) -> CacheStats:
        """Counters and current sizes (expired entries are dropped first)."""
        return _stats(self)

    def reset_stats(self) -> None:
        """Set every counter back to zero (the entries stay)."""
        with self._lock:
            self._counters.reset()

    # ----------------------------------------------------------------- bounds

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
        return size_of_value(self, value)

    def __repr__(self) -> str:
        return _describe(self)

    # ----------------------------------------------------------------- pickling

    def __getstate__(self) -> dict[str, Any]:
        state = get_state(self)
        state["process_registered"] = self._process_registered
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        set_state(self, state)
        # a pickle from before registries were scoped was always process-wide
        self._process_registered = bool(state.get("process_registered", True))
        if self._process_registered:
            _reclaim.register(self)


def _stats(cache: LRUCache[Any, Any]) -> CacheStats:
    """:meth:`LRUCache.stats`: the counters and sizes, read under the lock."""
    nested = cache._is_owned()
    with cache._lock:
        dropped = cache._expire_unless_nested_locked(nested)
        result = CacheStats(
            bytes=cache._bytes,
            items=len(cache._data),
            max_bytes=cache._max_bytes,
            max_items=cache._max_items,
            **cache._counters.as_dict(),
        )
    cache._notify(dropped)
    return result


def _describe(cache: LRUCache[Any, Any]) -> str:
    """The repr: the class name first, as cachetools' reprs (its test suite checks it)."""
    bound = []
    if cache._max_bytes is not None:
        bound.append(f"max_bytes={format_bytes(cache._max_bytes)}")
    if cache._max_items is not None:
        bound.append(f"max_items={cache._max_items}")
    if cache._ttl_s is not None:
        bound.append(f"ttl={cache._ttl_s:g}s")
    return (
        f"{type(cache).__name__}({cache._name!r}, items={len(cache._data)}, "
        f"bytes={format_bytes(cache._bytes)}{', ' if bound else ''}{', '.join(bound)})"
    )


class _ItemsView(ItemsView[K, V]):
    _mapping: LRUCache[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return iter(self._mapping._snapshot_items())


class _ValuesView(ValuesView[V]):
    _mapping: LRUCache[Any, V]

    def __iter__(self) -> Iterator[V]:
        return iter([value for _, value in self._mapping._snapshot_items()])
