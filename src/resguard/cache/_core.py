"""The storage engine under :class:`~resguard.cache.LRUCache`: entries kept within bytes, items
and time to live, under one re-entrant lock, mended when a key turns out broken.

:class:`CacheCore` holds the entries and their accounting; everything in it named ``*_locked``
runs with the lock held. :meth:`CacheCore._find_locked` is the one locked lookup that ``get``,
``in``, ``setdefault``, the expired path of ``cache[key]`` and a memoized miss go through.

Hits of keys in :data:`ATOMIC_KEYS` skip the lock while the cache holds only such keys (what
that relies on: the package docstring).
:class:`MemoAccess` is the small interface the memo layer drives a cache through, so that it
never reaches into the cache's attributes. Pickling state lives here too
(:func:`get_state`/:func:`set_state`): it is the engine's state.
"""

from __future__ import annotations

import math
import operator
import threading

# Bound at import, not looked up at call time: code may memoize a builtin and put the wrapper
# in its place (``builtins.len = memoize(len)``, as CPython's own lru_cache test does); the
# cache's own calls must not reach that wrapper.
from builtins import len, next, type  # noqa: UP029
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, cast

from resguard._errors import InvalidState, InvalidType, InvalidValue
from resguard._modules.clock import Clock
from resguard._modules.gil import LOCK_FREE
from resguard._modules.log import get_logger
from resguard.cache._sizeof import FLAT_TYPES
from resguard.cache._sizeof import sizeof as default_sizeof
from resguard.cache._stats import Counters, ValueTooLarge
from resguard.units import format_bytes

__all__ = [
    "ATOMIC_KEYS",
    "EXPIRED",
    "LOCK_FREE_HITS",
    "MISSING",
    "CacheCore",
    "Entry",
    "MemoAccess",
    "dict_get",
    "get_state",
    "od_move_to_end",
    "od_pop",
    "od_popitem",
    "rlock_is_owned",
    "rlock_release",
    "set_state",
]

logger = get_logger("resguard.cache")


# Called unbound by the hot paths (OrderedDict.get is dict.get; the lock's type is _thread's):
# ``data.get(key)`` or ``self._lock.release()`` take CPython 3.11's unspecialised lookup.
dict_get: Final = dict.get
od_move_to_end: Final = OrderedDict.move_to_end
od_pop: Final = OrderedDict.pop
od_popitem: Final = OrderedDict.popitem
rlock_is_owned: Final = type(threading.RLock())._is_owned  # type: ignore[attr-defined]
rlock_release: Final = type(threading.RLock()).release

MISSING: Final[Any] = object()
"""No value: a miss, or an argument not given."""
EXPIRED: Final[Any] = object()
"""What a lookup that did not ask whether it is nested returns for an expired entry."""

Entry = tuple[Any, ...]
"""An entry: ``(value, size in bytes)``, with a TTL ``(value, size, monotonic expiry time)``."""

ATOMIC_KEYS: Final[frozenset[type]] = frozenset({int, str, bytes, float, bool, type(None)})
"""Key types (exactly these, not subclasses) whose hashing and comparison with each other run
no Python code: the keys a hit may look up without the lock."""


LOCK_FREE_HITS: bool = LOCK_FREE
"""Whether a new cache serves hits without the lock (:data:`resguard._modules.gil.LOCK_FREE`:
CPython with the GIL, decided at import). Read when a cache is built; tests patch it here."""

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
        self._fast: OrderedDict[Any, Entry] | None = self._data if LOCK_FREE_HITS else None
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

    def _find_locked(
        self, key: Any, counted: bool = True, nested: bool = False, dropped: Dropped | None = None
    ) -> Any:
        """The live value of *key*, or MISSING; under the lock.

        A hit refreshes recency and counts, a miss counts (neither when not *counted*: ``in``).
        An expired entry is dropped into *dropped* (for ``on_evict`` after the lock) unless
        the call is *nested* (it only reads); without *dropped* (a caller that has not asked
        whether it is nested: the fast paths) it is left alone, uncounted, and EXPIRED is
        returned: :meth:`_find_expired` then looks again.
        """
        entry = self._get(key)
        if entry is not None:
            if self._ttl_s is None or entry[2] > self._clock():
                if counted:
                    try:
                        self._move_to_end(key)
                    except KeyError:  # nested in a change that has its node out (see _is_owned)
                        pass
                    self._hit()
                return entry[0]
            if dropped is None:
                return EXPIRED
            if not nested:
                dropped.append(self._drop_expired_locked(key, entry))
        if counted:
            self._miss()
        return MISSING

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

    # ------------------------------------------------------------------ sizing

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
        else:  # what default_sizeof does for flat values (see there), without calling it
            size = (key.__sizeof__() if type(key) in FLAT_TYPES else default_sizeof(key)) + (
                value.__sizeof__() if type(value) in FLAT_TYPES else default_sizeof(value)
            )
        cap = self._size_cap
        if cap is not None and size > cap:
            self._refuse_too_large(value, size)
        return size

    def _refuse_too_large(self, value: object, size: int) -> None:
        """Count a value that cannot be stored and raise ValueTooLarge for it."""
        max_bytes = self._max_bytes
        with self._lock:
            self._counters.too_large += 1
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

    def _drop_expired_locked(self, key: Any, entry: Entry) -> tuple[Any, Any]:
        try:
            del self._data[key]
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
        """Drop every entry whose key cannot be found by its hash any more (:func:`_repair`)."""
        _repair(self)

    def _notify(self, dropped: Dropped | None) -> None:
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


def _repair(core: CacheCore) -> None:
    """Drop every entry of *core* whose key cannot be found by its hash any more; O(n), rare;
    under the lock.

    ``popitem`` finds an entry by the hash it was stored with, so it empties both
    OrderedDicts whatever their keys do now; healthy keys go back in the same order
    (in place). It also mends an OrderedDict whose order lost an entry its dict still
    holds.
    """
    data, expiry = core._data, core._expiry
    broken: set[int] = set()
    for key in list(dict.keys(data)):  # dict's own iteration does not look keys up
        try:
            if key not in data:
                broken.add(id(key))
        except Exception:
            broken.add(id(key))
    pairs = _drain(data)
    expiry_keys = [key for key, _ in _drain(expiry)]
    core._bytes = 0
    kept: set[int] = set()
    for key, entry in pairs:
        if id(key) not in broken:
            try:
                data[key] = entry
            except Exception:
                pass
            else:
                core._bytes += entry[1]
                kept.add(id(key))
                continue
        core._counters.broken += 1
    for key in expiry_keys:
        if id(key) in kept:
            try:
                expiry[key] = None
            except Exception:  # it went back into _data a moment ago; let it not expire
                pass
    core._resync_locked()
    if len(kept) < len(pairs) and not core._broken_logged:
        core._broken_logged = True
        logger.warning(
            "cache %r dropped an entry whose key can no longer be found (its "
            "hash or equality changed after it was stored); keys must not "
            "change while cached; stats().broken counts these",
            core._name,
        )


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


# ===================================================================== pickling

OWN_ATTRIBUTES: Final = frozenset(
    {
        "_max_bytes",
        "_max_items",
        "_size_cap",
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
        "_fast",
        "_fast_put",
        "_expiry",
        "_bytes",
        "_counters",
        "_hit",
        "_hits",
        "_miss",
        "_keep_dropped",
        "_broken_logged",
    }
)
"""The cache's own instance attributes; pickling carries every other one (a subclass's)."""


def get_state(core: CacheCore) -> dict[str, Any]:
    """What a pickle or copy of *core* carries: no lock, TTLs as time left."""
    nested = core._is_owned()
    with core._lock:
        now = core._clock()
        pairs = core._pairs_locked(nested)
        if core._ttl_s is None:
            entries = [(key, entry[0], entry[1], math.inf) for key, entry in pairs]
        else:
            entries = [(key, entry[0], entry[1], entry[2] - now) for key, entry in pairs]
        counters = core._counters.as_tuple()
    # A subclass's own attributes travel too (copy.copy shares them, deepcopy copies them).
    attributes = {
        name: value for name, value in core.__dict__.items() if name not in OWN_ATTRIBUTES
    }
    return {
        "max_bytes": core._max_bytes,
        "max_items": core._max_items,
        "ttl_s": core._ttl_s,
        "sizeof": core._sizeof,
        "on_evict": core._on_evict,
        "clock": core._clock,
        "name": core._name,
        "entries": entries,
        "counters": counters,
        "attributes": attributes,
    }


def set_state(core: CacheCore, state: dict[str, Any]) -> None:
    """Rebuild *core* from :func:`get_state`'s dict (time left counts from now)."""
    core.__dict__.update(state.get("attributes", {}))
    core._configure(
        state["max_bytes"],
        state["max_items"],
        state["ttl_s"],
        state["sizeof"],
        state["on_evict"],
        state["clock"],
        state["name"],
    )
    ttl_s = core._ttl_s
    now = core._clock()
    live = [entry for entry in state["entries"] if ttl_s is None or entry[3] > 0]
    if any(type(entry[0]) not in ATOMIC_KEYS for entry in live):
        core._lock_hits_locked()  # not yet shared with any thread: no lock needed
    for key, value, size, left_s in live:  # least recently used first
        core._data[key] = (value, size) if ttl_s is None else (value, size, now + left_s)
        core._bytes += size
    if ttl_s is not None:  # the expiry order is the order of time left
        for key, *_ in sorted(live, key=operator.itemgetter(3)):
            core._expiry[key] = None
    core._counters.restore(state["counters"])  # a pickle from before ``broken`` has nine


# ===================================================================== the memo layer's view


class MemoAccess:
    """What a memoized function uses of its cache, bound once when it is decorated.

    The attributes serve the wrapper's written-out hit path, the methods its misses. It
    reads ``core._fast`` (the entries while hits are lock-free, else None), and under the
    lock ``core._get``/``core._move_to_end``, on every call: the cache replaces them when it
    switches to locked hits (:meth:`CacheCore._lock_hits_locked`).
    """

    __slots__ = (
        "acquire",
        "clock",
        "core",
        "counters",
        "expiring",
        "hit",
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
        self.hit = core._hit

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
            size = core._entry_size(key, value)
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
