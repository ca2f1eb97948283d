"""The storage engine under :class:`~resguard.cache.LRUCache`: entries kept within bytes, items
and time to live, under one re-entrant lock, mended when a key turns out broken.

:class:`CacheCore` holds the entries and their accounting; everything in it named ``*_locked``
runs with the lock held. :meth:`CacheCore._hit_locked` is the one locked hit and
:meth:`CacheCore._find_locked` the one locked lookup that ``get``, ``in``, ``setdefault``, the
expired path of ``cache[key]`` and a memoized miss go through.

Hits of keys in :data:`~._hits.ATOMIC_KEYS` skip the lock while the cache holds only such keys
(what that relies on: :mod:`._hits` and the package docstring). :class:`MemoAccess` is the
small interface the memo layer drives a cache through, so that it never reaches into the
cache's attributes. What an entry costs is :mod:`._cost`; mending broken keys
:mod:`._repair`; what a pickle carries :mod:`._pickling`.
"""

from __future__ import annotations

import logging
import threading

# Bound at import, not looked up at call time: code may memoize a builtin and put the wrapper
# in its place (``builtins.len = memoize(len)``, as CPython's own lru_cache test does); the
# cache's own calls must not reach that wrapper.
from builtins import len, next, type  # noqa: UP029
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, cast

from resguard._errors import InvalidState
from resguard._modules.clock import Clock
from resguard._modules.log import emit, get_logger
from resguard.cache import _hits
from resguard.cache._cost import entry_size
from resguard.cache._hits import ATOMIC_KEYS
from resguard.cache._repair import repair_locked
from resguard.cache._sizeof import sizeof as default_sizeof
from resguard.cache._stats import Counters, ValueTooLarge

__all__ = [
    "EXPIRED",
    "MISSING",
    "CacheCore",
    "Dropped",
    "Entry",
    "MemoAccess",
]

logger = get_logger("resguard.cache")


MISSING: Final[Any] = object()
"""No value: a miss, or an argument not given."""
EXPIRED: Final[Any] = object()
"""What a lookup that did not ask whether it is nested returns for an expired entry."""

Entry = tuple[Any, ...]
"""An entry: ``(value, size in bytes)``, with a TTL ``(value, size, monotonic expiry time)``."""

Dropped = list[tuple[Any, Any]]
"""Pairs dropped under the lock, for ``on_evict`` once it is released."""


class CacheCore:
    """The entries, their byte count, expiry order and counters, and the changes to them."""

    _max_bytes: int | None
    _max_items: int | None
    _ttl_s: float | None
    _sizeof: Callable[[Any], int]
    _user_sized: bool
    _on_evict: Callable[[Any, Any], object] | None
    _clock: Clock
    _name: str

    def _configure(
        self,
        max_bytes: int | None,
        max_items: int | None,
        ttl_s: float | None,
        sizeof: Callable[[Any], int],
        on_evict: Callable[[Any, Any], object] | None,
        clock: Clock,
        name: str,
    ) -> None:
        """Set the (checked) configuration and build the empty state."""
        self._max_bytes = max_bytes
        self._max_items = max_items
        # The largest entry that fits, None for any (-1 when the cache stores nothing).
        self._size_cap = -1 if max_items == 0 else max_bytes
        self._ttl_s = ttl_s
        self._sizeof = sizeof
        self._user_sized = sizeof is not default_sizeof
        self._on_evict = on_evict
        self._clock = clock
        self._name = name
        self._setup()

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
        self._data: OrderedDict[Any, Entry] = OrderedDict()  # least recently used first
        self._get, self._move_to_end = self._data.get, self._data.move_to_end  # locked hits
        # The entries while hits of ATOMIC_KEYS may skip the lock; None once they may not.
        self._fast: OrderedDict[Any, Entry] | None = self._data if _hits.LOCK_FREE_HITS else None
        # The same for an insert that may write an entry of two (_put_locked written out).
        self._fast_put = self._fast if self._ttl_s is None else None
        self._expiry: OrderedDict[Any, None] = OrderedDict()  # insertion order = expiry order
        self._bytes = 0
        self._counters = Counters()
        self._hit, self._miss = self._counters.hit, self._counters.miss
        self._hits = self._counters.hit_tally.count  # next(self._hits) is self._hit()
        self._keep_dropped = self._on_evict is not None  # no pairs to build for nobody
        self._broken_logged = False

    def _lock_hits_locked(self) -> None:
        """From now on every hit takes the lock (a key outside ATOMIC_KEYS is being stored).

        The entries move to a new OrderedDict: a lock-free hit still in flight holds the old
        one, which nothing changes any more, so its lookup never meets the new key.
        """
        self._fast = self._fast_put = None
        data = OrderedDict(self._data)  # every key in it is atomic: copying runs no Python code
        self._data, self._get, self._move_to_end = data, data.get, data.move_to_end

    # ------------------------------------------------------------------ the one lookup

    def _live(self, entry: Entry) -> bool:
        """Whether *entry* has not outlived the time to live (the hit check)."""
        return self._ttl_s is None or entry[2] > self._clock()

    def _hit_locked(self, key: Any) -> Any:
        """The locked hit, the one there is: the live value of *key* with its recency
        refreshed and the hit counted; EXPIRED for an entry that outlived the time to live
        (left in place), MISSING for none (neither counted). Under the lock."""
        entry = self._get(key)
        if entry is None:
            return MISSING
        if self._ttl_s is not None and entry[2] <= self._clock():
            return EXPIRED
        try:
            self._move_to_end(key)
        except KeyError:  # nested in a change that has its node out (see _is_owned)
            pass
        self._hit()
        return entry[0]

    def _find_locked(
        self, key: Any, counted: bool = True, nested: bool = False, dropped: Dropped | None = None
    ) -> Any:
        """The live value of *key*, or MISSING; under the lock.

        A hit refreshes recency and counts (:meth:`_hit_locked`), a miss counts (neither when
        not *counted*: ``in``). An expired entry is dropped into *dropped* (for ``on_evict``
        after the lock) unless the call is *nested* (it only reads); without *dropped* (a
        caller that has not asked whether it is nested: the fast paths) it is left alone,
        uncounted, and EXPIRED is returned: :meth:`_find_expired` then looks again.
        """
        if counted:
            value = self._hit_locked(key)
        else:
            entry = self._get(key)
            value = MISSING if entry is None else entry[0] if self._live(entry) else EXPIRED
        if value is EXPIRED:
            if dropped is None:
                return EXPIRED
            if not nested:
                dropped.append(self._drop_expired_locked(key))
            value = MISSING
        if value is MISSING and counted:
            self._miss()
        return value

    def _find_expired(self, key: Any, counted: bool = True) -> Any:
        """:meth:`_find_locked` again after it met an expired entry, knowing whether this call
        is nested (an expired entry is rare: the fast paths do not ask), ``on_evict`` after."""
        nested = self._is_owned()
        dropped: Dropped = []
        with self._lock:
            value = self._find_locked(key, counted, nested, dropped)
        if dropped:
            self._notify(dropped)
        return value

    def _find(self, key: Any, counted: bool = True) -> Any:
        """The live value of *key* or MISSING, taking the lock once (twice when expired)."""
        self._acquire()
        try:
            value = self._find_locked(key, counted)
        finally:
            self._release()
        if value is EXPIRED:
            return self._find_expired(key, counted)
        return value

    def _refuse_nested(self, what: str) -> None:
        """Raise InvalidState for a change made from inside one of the cache's operations."""
        if self._is_owned():
            raise InvalidState(
                f"{what} on cache {self._name!r} from inside one of its own operations (a "
                "key's __hash__ or __eq__ using the cache it is stored in): such nested calls "
                "may only read"
            )

    # ------------------------------------------------------------------ changes

    def _put_locked(self, key: Any, value: Any, size: int) -> Dropped | None:
        """Insert or replace under the lock; return the pairs dropped to make room (None
        when none, or when nobody asked to see them: no ``on_evict``).

        When a key's ``__eq__`` raises part-way (an OrderedDict operation then may have
        done half its work), the byte count is taken again from what is stored.
        """
        if self._fast is not None and type(key) not in ATOMIC_KEYS:
            self._lock_hits_locked()
        data = self._data
        try:
            dropped: Dropped | None = None
            if self._ttl_s is None:
                entry: Entry = (value, size)
            else:
                now = self._clock()
                dropped = self._expire_locked(now) if self._expiry else None
                entry = (value, size, now + self._ttl_s)
            old = data.pop(key, None)
            if old is not None:
                self._forget_locked(key, old)
            # Make room before inserting, so that even a reader that does not take the lock
            # (``current_bytes``) never sees more than max_bytes.
            max_bytes, max_items = self._max_bytes, self._max_items
            if (max_bytes is not None and self._bytes + size > max_bytes) or (
                max_items is not None and len(data) >= max_items
            ):
                dropped = self._make_room_locked(size, dropped)
            if self._fast is not None:  # atomic keys: the insert cannot be re-entered
                data[key] = entry
                self._bytes += size
                if self._ttl_s is not None:
                    self._expiry[key] = None
                return dropped
            count = len(data)
            data[key] = entry
            self._bytes += size
            if len(data) == count:  # it replaced an entry after all (a key's __eq__ re-entered)
                self._resync_locked()
            if self._ttl_s is not None:
                self._expiry[key] = None
        except BaseException:
            self._resync_locked()
            raise
        return dropped

    def _make_room_locked(self, size: int, dropped: Dropped | None) -> Dropped | None:
        """Evict least recently used entries until *size* more bytes and one more item fit."""
        data, counters = self._data, self._counters
        max_bytes, max_items = self._max_bytes, self._max_items
        keep = self._keep_dropped
        expiring = self._ttl_s is not None
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
            self._bytes -= old_entry[1]
            if expiring:
                self._forget_expiry_locked(old_key)
            counters.evictions += 1
            if keep:
                if dropped is None:
                    dropped = []
                dropped.append((old_key, old_entry[0]))
        return dropped

    def _pop_locked(self, key: Any) -> Entry | None:
        """Remove *key*'s entry (None when absent), its bytes and expiry forgotten."""
        try:
            entry = self._data.pop(key, None)
        except BaseException:
            self._resync_locked()
            raise
        if entry is not None:
            self._forget_locked(key, entry)
        return entry

    def _remove(self, key: Any) -> Any:
        """Remove *key* (``del``, ``pop``), taking the lock: its live value, or MISSING when
        absent or expired (an expired entry counted and given to ``on_evict``)."""
        with self._lock:
            entry = self._pop_locked(key)
            if entry is None:
                return MISSING
            if self._live(entry):
                return entry[0]
            self._counters.expirations += 1
        self._notify([(key, entry[0])])
        return MISSING

    def _resync_locked(self) -> None:
        """Take the byte count again from the stored entries (after an interrupted change)."""
        self._bytes = sum(entry[1] for entry in dict.values(self._data))

    def _forget_locked(self, key: Any, entry: Entry) -> None:
        """Account for an entry already popped from ``_data``."""
        self._bytes -= entry[1]
        if self._ttl_s is not None:
            self._forget_expiry_locked(key)

    def _forget_expiry_locked(self, key: Any) -> None:
        try:
            self._expiry.pop(key, None)
        except Exception:  # a key that cannot be compared: _expire_locked drops it later
            pass

    def _drop_expired_locked(self, key: Any) -> tuple[Any, Any]:
        try:
            entry: Entry = self._data.pop(key)
        except BaseException:
            self._resync_locked()
            raise
        self._forget_locked(key, entry)
        self._counters.expirations += 1
        return (key, entry[0])

    def _expire_locked(self, now: float) -> Dropped:
        """Drop entries whose TTL has passed, oldest insertion first; O(expired).

        A key that can no longer be looked up (its hash or ``__eq__`` changed after
        insertion) makes the OrderedDicts raise KeyError even on iteration: then the broken
        entries are dropped (:meth:`_repair_locked`) instead of breaking every later call.
        """
        dropped: Dropped = []
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
            self._counters.expirations += 1
            dropped.append((key, entry[0]))
        return dropped

    def _expire_unless_nested_locked(self, nested: bool) -> Dropped:
        return self._expire_locked(self._clock()) if self._ttl_s is not None and not nested else []

    # ------------------------------------------------------------------ reading it all

    def _pairs_locked(self, nested: bool = False) -> list[tuple[Any, Entry]]:
        """``list(self._data.items())`` in LRU order, mended when a broken key is met.

        Iterating an OrderedDict looks every key up; a broken key raises KeyError (then the
        cache is repaired, unless this call is nested: it only reads), and a key whose
        ``__eq__`` reads the cache moves entries meanwhile (RuntimeError), as may a lock-free
        hit (when a collection runs a finaliser mid-copy and the GIL switches threads: tried
        again, the copy is whole). What still fails lists the pairs in storage order, which
        needs no lookup.
        """
        for attempt in range(3):
            try:
                return list(self._data.items())
            except Exception:
                if attempt == 0 and not nested and self._fast is None:
                    self._repair_locked()  # atomic keys cannot be broken: no repair for them
        return list(dict.items(self._data))

    def _snapshot_items(self) -> list[tuple[Any, Any]]:
        """The (key, value) pairs in LRU order, expired ones dropped first; a copy."""
        nested = self._is_owned()
        with self._lock:
            dropped = self._expire_unless_nested_locked(nested)
            pairs = [(key, entry[0]) for key, entry in self._pairs_locked(nested)]
        self._notify(dropped)
        return pairs

    def _repair_locked(self) -> None:
        """Drop every entry whose key cannot be found by its hash any more (:mod:`._repair`)."""
        repair_locked(self)

    def _notify(self, dropped: Dropped | None) -> None:
        """Call ``on_evict`` for dropped pairs, outside the lock; log what it raises."""
        if not dropped or self._on_evict is None:
            return
        for key, value in dropped:
            try:
                self._on_evict(key, value)
            except Exception:
                emit(
                    logger,
                    logging.WARNING,
                    "on_evict of cache %r raised for key %r",
                    self._name,
                    key,
                    exc_info=True,
                )


# ===================================================================== the memo layer's view


class MemoAccess:
    """What a memoized function uses of its cache, bound once when it is decorated.

    The attributes serve the wrapper's written-out lock-free hit, the methods its locked hit
    and its misses. The wrapper reads ``core._fast`` (the entries while hits are lock-free,
    else None) on every call: the cache sets it to None when it switches to locked hits
    (:meth:`CacheCore._lock_hits_locked`).
    """

    __slots__ = (
        "acquire",
        "clock",
        "core",
        "counters",
        "expiring",
        "is_nested",
        "lock",
        "release",
    )

    def __init__(self, core: CacheCore) -> None:
        self.core = core
        self.lock = core._lock
        self.acquire, self.release = core._acquire, core._release
        self.is_nested = core._is_owned
        self.clock = core._clock
        self.expiring = core._ttl_s is not None
        self.counters = core._counters

    def hit(self, key: Any) -> Any:
        """The cache's locked hit (:meth:`CacheCore._hit_locked`), taking the lock: the live
        value of *key*, counted, else MISSING, uncounted (the miss's own lookup counts it
        and drops an expired entry)."""
        self.acquire()
        try:
            value = self.core._hit_locked(key)
        finally:
            self.release()
        return MISSING if value is EXPIRED else value

    def find_locked(self, key: Any, nested: bool, dropped: Dropped) -> Any:
        """The cache's one lookup (see :meth:`CacheCore._find_locked`), under :attr:`lock`."""
        return self.core._find_locked(key, True, nested, dropped)

    def notify(self, dropped: Dropped | None) -> None:
        """``on_evict`` for what a lookup dropped; outside the lock."""
        self.core._notify(dropped)

    def store(self, key: Any, value: Any) -> Dropped | None:
        """Cache a computed value; one too large is skipped (returned, not cached), and a
        nested call (from a key's ``__eq__`` while the cache is busy) stores nothing.
        Returns what was dropped to make room, for :meth:`notify`."""
        core = self.core
        if core._is_owned():
            return None
        try:
            size = entry_size(core, key, value)
        except ValueTooLarge:
            return None
        with core._lock:
            return core._put_locked(key, value, size)

    def count_merged(self) -> None:
        """One call got another caller's result instead of computing."""
        with self.lock:
            self.counters.merged += 1

    def rename(self, name: str) -> None:
        """The name on the reclaim ladder and in logs (memoize names it for the function)."""
        self.core._name = name
