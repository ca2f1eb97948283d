"""LRUCache and memoize: bounds, order, TTL, shrinking, threads, asyncio and trio."""

from __future__ import annotations

import collections
import copy
import gc
import logging
import math
import pickle
import random
import sys
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resguard import reclaim
from resguard._errors import InvalidState, InvalidType, InvalidValue
from resguard.cache import CacheInfo, CacheStats, LRUCache, ValueTooLarge, memoize
from resguard.cache import _hits as cache_hits
from resguard.cache._sizeof import sizeof
from resguard.testing import ManualClock

from support import run_python, run_threads, wait_until

JOIN_TIMEOUT_S = 120.0


def _entry_bytes(key: object, value: bytes) -> int:
    return sizeof(key) + len(value)


# ------------------------------------------------------------------ construction


def test_sizes_accept_what_parse_bytes_accepts() -> None:
    cache: LRUCache[str, bytes] = LRUCache(max_bytes="512MiB", max_items=10, ttl="5m")
    assert cache.max_bytes == 512 * 2**20
    assert cache.max_items == 10
    assert cache.ttl == 300.0


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"max_bytes": "lots"}, InvalidValue, "max_bytes"),
        ({"max_bytes": 0.5}, InvalidValue, "less than 1 byte"),
        ({"max_bytes": -5}, InvalidValue, "max_bytes"),
        ({"max_bytes": True}, InvalidType, "max_bytes=True"),
        ({"max_bytes": [1]}, InvalidType, "max_bytes"),
        ({"max_items": -1}, InvalidValue, "max_items=-1"),
        ({"max_items": 2.5}, InvalidType, "max_items=2.5"),
        ({"ttl": "soon"}, InvalidValue, "ttl"),
        ({"ttl": 0}, InvalidValue, "ttl=0"),
        ({"sizeof": 3}, InvalidType, "sizeof=3"),
        ({"on_evict": "x"}, InvalidType, "on_evict"),
    ],
)
def test_bad_arguments_raise_naming_the_value(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        LRUCache(**kwargs)
    assert issubclass(error, (ValueError, TypeError))


def test_annotations_and_cachetools_attributes() -> None:
    cache: LRUCache[str, bytes] = LRUCache[str, bytes](max_items=3)
    assert cache.maxsize == 3
    cache["a"] = b"1"
    assert cache.currsize == 1
    by_bytes: LRUCache[str, bytes] = LRUCache(max_bytes=1000)
    by_bytes["a"] = b"12345"
    assert by_bytes.currsize == _entry_bytes("a", b"12345") - len(b"12345") + sizeof(b"12345")
    assert by_bytes.getsizeof(b"12345") == sizeof(b"12345")
    assert LRUCache().maxsize == float("inf")


# ------------------------------------------------------------------ mapping behaviour


def test_mapping_operations_and_lru_order() -> None:
    cache: LRUCache[str, int] = LRUCache(max_items=3)
    cache["a"], cache["b"], cache["c"] = 1, 2, 3
    assert cache["a"] == 1  # a becomes most recently used
    cache["d"] = 4  # evicts b, the least recently used
    assert list(cache) == ["c", "a", "d"]
    assert "b" not in cache
    assert cache.get("b") is None
    assert cache.get("b", 0) == 0
    assert len(cache) == 3
    assert dict(cache.items()) == {"c": 3, "a": 1, "d": 4}
    assert list(cache) == ["c", "a", "d"]  # iterating items() left the order alone
    assert sorted(cache.values()) == [1, 3, 4]
    assert cache.pop("c") == 3
    assert cache.pop("c", None) is None
    with pytest.raises(KeyError):
        cache.pop("c")
    assert cache.setdefault("a", 99) == 1
    assert cache.setdefault("e", 5) == 5
    assert cache.popitem() == ("d", 4)  # setdefault refreshed a
    del cache["a"]
    with pytest.raises(KeyError):
        del cache["a"]
    cache.update({"x": 10})
    assert dict(cache) == {"e": 5, "x": 10}
    cache.clear()
    assert len(cache) == 0
    assert cache.current_bytes == 0
    with pytest.raises(KeyError, match="empty"):
        cache.popitem()


def test_stats_count_hits_misses_and_evictions() -> None:
    cache: LRUCache[int, bytes] = LRUCache(max_items=2)
    cache[1], cache[2], cache[3] = b"a", b"b", b"c"
    assert cache[3] == b"c"
    with pytest.raises(KeyError):
        cache[1]
    stats = cache.stats()
    assert isinstance(stats, CacheStats)
    assert (stats.hits, stats.misses, stats.evictions, stats.items) == (1, 1, 1, 2)
    assert stats.hit_rate == 0.5
    assert stats.bytes == sum(_entry_bytes(k, v) - len(v) + sizeof(v) for k, v in cache.items())
    assert stats.to_dict()["hit_rate"] == 0.5
    cache.reset_stats()
    assert cache.stats().hits == 0


def test_byte_bound_evicts_least_recently_used_first() -> None:
    size = _entry_bytes(0, bytes(1000)) - 1000 + sizeof(bytes(1000))
    cache: LRUCache[int, bytes] = LRUCache(max_bytes=size * 3)
    for key in range(5):
        cache[key] = bytes(1000)
        assert cache.current_bytes <= size * 3
    assert list(cache) == [2, 3, 4]
    assert cache.stats().evictions == 2


def test_value_larger_than_max_bytes_raises_and_changes_nothing() -> None:
    evicted: list[object] = []
    cache: LRUCache[str, bytes] = LRUCache(
        max_bytes="1KiB", on_evict=lambda k, v: evicted.append(k)
    )
    cache["keep"] = b"old"
    with pytest.raises(ValueTooLarge) as info:
        cache["keep"] = bytes(4096)
    assert isinstance(info.value, ValueError)  # as cachetools raises
    assert info.value.size_bytes > info.value.max_bytes == 1024
    assert "1.0 KiB" in str(info.value)
    assert cache["keep"] == b"old"
    assert cache.stats().too_large == 1
    assert evicted == []


def test_the_default_sizer_counts_keys_toward_the_size() -> None:
    cache: LRUCache[str, bytes] = LRUCache()
    long_key = "k" * 10_000
    cache[long_key] = b"v"
    assert cache.current_bytes == sizeof(long_key) + sizeof(b"v")


def test_a_sizeof_hook_returning_nonsense_is_reported() -> None:
    cache: LRUCache[str, str] = LRUCache(sizeof=lambda v: "big")  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidType, match="whole number"):
        cache["a"] = "b"
    negative: LRUCache[str, str] = LRUCache(sizeof=lambda v: -1)
    with pytest.raises(InvalidValue, match=">= 0"):
        negative["a"] = "b"
    assert len(cache) == len(negative) == 0


def test_missing_hook_works_like_cachetools() -> None:
    class Squares(LRUCache[int, int]):
        def __missing__(self, key: int) -> int:
            self[key] = key * key
            return key * key

    squares = Squares(max_items=10)
    assert squares[7] == 49
    assert 7 in squares
    assert squares.get(8) is None  # get does not compute, as in cachetools


def test_on_evict_sees_capacity_drops_and_its_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[object, object]] = []

    def on_evict(key: object, value: object) -> None:
        seen.append((key, value))
        raise RuntimeError("callback bug")

    cache: LRUCache[str, int] = LRUCache(max_items=1, on_evict=on_evict)
    cache["a"] = 1
    with caplog.at_level(logging.WARNING, logger="resguard.cache"):
        cache["b"] = 2
    assert seen == [("a", 1)]
    assert "on_evict" in caplog.text
    del cache["b"]  # an explicit delete is not an eviction
    assert seen == [("a", 1)]


# ------------------------------------------------------------------ TTL


def test_ttl_expires_entries_with_an_injected_clock() -> None:
    clock = ManualClock()
    evicted: list[object] = []
    cache: LRUCache[str, int] = LRUCache(
        ttl="10s", clock=clock, on_evict=lambda k, v: evicted.append(k)
    )
    cache["a"] = 1
    clock.advance(5)
    cache["b"] = 2
    assert cache["a"] == 1  # a read does not extend the life of an entry
    clock.advance(5)
    assert "a" not in cache
    assert cache.get("a") is None
    assert list(cache) == ["b"]
    clock.advance(5)
    assert len(cache) == 0
    stats = cache.stats()
    assert stats.expirations == 2
    assert stats.bytes == 0
    assert sorted(evicted) == ["a", "b"]  # type: ignore[type-var]
    cache["c"] = 3
    clock.advance(10)
    assert cache.expire() == 1


# ------------------------------------------------------------------ shrinking and the ladder


def _sized_cache() -> LRUCache[str, bytes]:
    cache: LRUCache[str, bytes] = LRUCache(sizeof=len)
    for i in range(10):
        cache[f"small{i}"] = bytes(100)
    cache["big"] = bytes(50_000)
    cache["medium"] = bytes(10_000)
    return cache


def test_reclaim_takes_large_values_first_and_reports_its_accounting() -> None:
    cache = _sized_cache()
    before = cache.current_bytes
    freed = cache.reclaim(1)
    assert "big" not in cache
    assert freed == before - cache.current_bytes == 50_000
    freed = cache.reclaim(10_250)
    assert "medium" not in cache
    assert freed == 10_300
    assert len(cache) == 7  # medium went, then the three least recently used small ones
    assert list(cache) == [f"small{i}" for i in range(3, 10)]
    stats = cache.stats()
    assert stats.shrinks == 2
    assert stats.shrink_evictions == 5
    assert stats.reclaimed_bytes == before - cache.current_bytes
    assert stats.evictions == 0  # capacity evictions are counted apart


def test_shrink_accepts_bytes_shares_and_percentages() -> None:
    cache = _sized_cache()
    total = cache.current_bytes
    assert cache.shrink(0.0) == 0
    assert cache.shrink("10KiB") >= 10 * 1024
    cache = _sized_cache()
    assert cache.shrink("50%") >= total / 2
    cache = _sized_cache()
    assert cache.shrink(1.0) == total
    assert len(cache) == 0


@pytest.mark.parametrize("amount", ["lots", -1, True, None, [1]])
def test_bad_shrink_amounts_raise_before_anything_changes(amount: object) -> None:
    cache = _sized_cache()
    before = dict(cache.items())
    with pytest.raises((InvalidValue, InvalidType)):
        cache.shrink(amount)  # type: ignore[arg-type]
    assert dict(cache.items()) == before
    assert cache.stats().shrinks == 0


def test_every_cache_is_on_the_reclaim_ladder_by_weak_reference() -> None:
    cache: LRUCache[str, bytes] = LRUCache(name="embeddings")
    assert cache in reclaim.registered()
    assert isinstance(cache, reclaim.Reclaimable)
    assert cache.cost == reclaim.Cost.CACHE
    assert cache.name == "embeddings"
    cache["a"] = bytes(1000)
    assert cache.reclaimable_bytes() == cache.current_bytes > 1000

    @memoize
    def f(x: int) -> int:
        return x

    assert f.cache in reclaim.registered()
    assert f.cache.name.startswith("memoize:")
    del cache
    gc.collect()
    assert "embeddings" not in [item.name for item in reclaim.registered()]
    assert f.cache in reclaim.registered()


# ------------------------------------------------------------------ pickling


def test_pickles_without_its_lock_and_keeps_time_left() -> None:
    clock = ManualClock()
    cache: LRUCache[str, bytes] = LRUCache(max_items=5, ttl=10, clock=clock)
    cache["a"] = b"1"
    clock.advance(4)
    cache["b"] = b"2"
    cache["a"]
    restored = pickle.loads(pickle.dumps(cache))
    assert list(restored) == ["b", "a"]
    assert restored.current_bytes == cache.current_bytes
    assert restored.stats().hits == 1
    assert restored in reclaim.registered()
    restored._clock.advance(6)  # a's 10 s are up, b has 4 left
    assert list(restored) == ["b"]
    duplicate = copy.deepcopy(cache)
    duplicate["c"] = b"3"
    assert "c" not in cache


# ------------------------------------------------------------------ the model check


class _PoisonKey:
    """A key that becomes unhashable once ``poisoned``: the extreme of a hash that changed."""

    def __init__(self, value: int) -> None:
        self.value, self.poisoned = value, False

    def __hash__(self) -> int:
        if self.poisoned:
            raise TypeError("this key changed while cached")
        return self.value

    def __eq__(self, other: object) -> bool:
        return self is other


class CacheModel(RuleBasedStateMachine):
    """Random operations against a list-based model: same LRU order, never over budget."""

    MAX_BYTES = 600
    MAX_ITEMS = 6
    TTL_S: float | None = 10.0

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.cache: LRUCache[int, bytes] = LRUCache(
            max_bytes=self.MAX_BYTES,
            max_items=self.MAX_ITEMS,
            ttl=self.TTL_S,
            sizeof=len,
            clock=self.clock,
        )
        self.model: list[tuple[Any, bytes, int, float]] = []  # LRU first: key, value, size, expiry
        self.poisoned = 0

    def _find(self, key: object) -> int | None:
        for index, item in enumerate(self.model):
            if item[0] == key:
                return index
        return None

    def _purge(self) -> None:
        now = self.clock()
        self.model = [item for item in self.model if item[3] > now]

    @rule(key=st.integers(0, 9), length=st.integers(0, 700))
    def set(self, key: Any, length: int) -> None:
        value = bytes([hash(key) % 256]) * length
        size = len(value)  # the sizeof hook alone is the cost of an entry
        if size > self.MAX_BYTES:
            with pytest.raises(ValueTooLarge):
                self.cache[key] = value
            return
        self.cache[key] = value
        self._purge()
        index = self._find(key)
        if index is not None:
            del self.model[index]
        expires = math.inf if self.TTL_S is None else self.clock() + self.TTL_S
        self.model.append((key, value, size, expires))
        while (
            sum(item[2] for item in self.model) > self.MAX_BYTES or len(self.model) > self.MAX_ITEMS
        ):
            self.model.pop(0)

    @rule(length=st.integers(0, 300))
    def poison(self, length: int) -> None:
        """Store under a key, then change the key's hash: the entry is lost, nothing breaks."""
        key = _PoisonKey(1000 + self.poisoned)
        self.set(key, length)
        key.poisoned = True
        if self._find(key) is not None:
            del self.model[self._find(key)]  # type: ignore[arg-type]
            self.poisoned += 1
        list(self.cache)  # iteration finds the broken entry and drops it
        assert self.cache.stats().broken == self.poisoned

    @rule(how=st.sampled_from(["copy", "deepcopy", "pickle"]))
    def duplicate(self, how: str) -> None:
        """A copy carries entries, order, sizes and time left: the model goes on unchanged."""
        if how == "copy":
            self.cache = copy.copy(self.cache)
        elif how == "deepcopy":
            self.cache = copy.deepcopy(self.cache)
        else:
            self.cache = pickle.loads(pickle.dumps(self.cache))
        self.clock = self.cache._clock  # type: ignore[assignment]
        assert self.cache.stats().broken == self.poisoned

    @rule(key=st.integers(0, 9))
    def get(self, key: int) -> None:
        index = self._find(key)
        if index is not None and self.model[index][3] <= self.clock():
            del self.model[index]
            index = None
        if index is None:
            with pytest.raises(KeyError):
                self.cache[key]
            return
        item = self.model.pop(index)
        self.model.append(item)
        assert self.cache[key] == item[1]

    @rule(key=st.integers(0, 9))
    def delete(self, key: int) -> None:
        index = self._find(key)
        live = index is not None and self.model[index][3] > self.clock()
        if index is not None:
            del self.model[index]
        if live:
            del self.cache[key]
        else:
            with pytest.raises(KeyError):
                del self.cache[key]

    @rule(target_bytes=st.integers(0, 700))
    def shrink(self, target_bytes: int) -> None:
        self._purge()
        order = sorted(self.model, key=lambda item: item[2], reverse=True)
        freed, gone = 0, set()
        for item in order:
            if freed >= target_bytes:
                break
            freed += item[2]
            gone.add(item[0])
        self.model = [item for item in self.model if item[0] not in gone]
        assert self.cache.reclaim(target_bytes) == freed

    @rule(seconds=st.sampled_from([0.5, 3.0, 9.99, 10.0, 25.0]))
    def expire(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: bool(self.model))
    @rule()
    def popitem(self) -> None:
        self._purge()
        if not self.model:
            with pytest.raises(KeyError):
                self.cache.popitem()
            return
        key, value, _, _ = self.model.pop(0)
        assert self.cache.popitem() == (key, value)

    @invariant()
    def within_budget(self) -> None:
        assert self.cache.current_bytes <= self.MAX_BYTES
        assert len(self.cache._data) <= self.MAX_ITEMS

    @invariant()
    def same_order_and_bytes(self) -> None:
        self._purge()
        assert list(self.cache) == [item[0] for item in self.model]
        assert self.cache.current_bytes == sum(item[2] for item in self.model)
        assert self.cache.stats().items == len(self.model)


class CacheModelWithoutTTL(CacheModel):
    """The model again with entries that never expire (the cache's insert written out for
    lock-free caches serves these; ``poison`` switches a cache to locked hits)."""

    TTL_S = None


class CacheModelLocked(CacheModel):
    """The model again on caches built as on a free-threaded build: every hit locked."""

    def __init__(self) -> None:
        saved, cache_hits.LOCK_FREE_HITS = cache_hits.LOCK_FREE_HITS, False
        try:
            super().__init__()
        finally:
            cache_hits.LOCK_FREE_HITS = saved
        assert self.cache._fast is None


_MODEL_SETTINGS = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CacheModel.TestCase.settings = _MODEL_SETTINGS
CacheModelWithoutTTL.TestCase.settings = settings(_MODEL_SETTINGS, max_examples=200)
CacheModelLocked.TestCase.settings = settings(_MODEL_SETTINGS, max_examples=100)
TestCacheModel = CacheModel.TestCase
TestCacheModelWithoutTTL = CacheModelWithoutTTL.TestCase
TestCacheModelLocked = CacheModelLocked.TestCase


# ------------------------------------------------------------------ threads


def test_32_threads_hammering_one_cache_keep_its_invariants() -> None:
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        cache: LRUCache[tuple[int, int], bytes] = LRUCache(max_bytes=20_000, max_items=64)
        gets = [0] * 32

        def hammer(index: int) -> None:
            rng = random.Random(index)
            for _ in range(1500):
                key = (rng.randrange(8), rng.randrange(20))
                action = rng.random()
                if action < 0.45:
                    gets[index] += 1
                    value = cache.get(key)
                    assert value is None or value[:2] == bytes(key)
                elif action < 0.9:
                    cache[key] = bytes(key) + bytes(rng.randrange(500))
                elif action < 0.97:
                    cache.pop(key, None)
                else:
                    cache.shrink(0.25)
                assert cache.current_bytes <= 20_000

        run_threads(32, hammer)
        stats = cache.stats()
        assert stats.hits + stats.misses == sum(gets)
        assert stats.bytes == sum(sizeof(k) + sizeof(v) for k, v in cache.items())
        assert stats.bytes <= 20_000
        assert stats.items == len(cache) <= 64

        # no lost updates: with room for everything, every write is there afterwards
        roomy: LRUCache[tuple[int, int], int] = LRUCache()

        def write(index: int) -> None:
            for i in range(300):
                roomy[(index, i)] = i

        run_threads(32, write)
        assert len(roomy) == 32 * 300
        assert all(roomy[(t, i)] == i for t in range(32) for i in range(300))
    finally:
        sys.setswitchinterval(old_interval)


def test_32_threads_on_one_memoized_function_compute_each_key_once() -> None:
    computed: collections.Counter[int] = collections.Counter()
    counter_lock = threading.Lock()

    @memoize(max_items=1000)
    def slow_square(x: int) -> int:
        with counter_lock:
            computed[x] += 1
        sum(range(5000))  # work during which (switching threads often) other threads miss
        return x * x

    def call(index: int) -> None:
        rng = random.Random(index)
        for _ in range(200):
            x = rng.randrange(40)
            assert slow_square(x) == x * x

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        run_threads(32, call)
    finally:
        sys.setswitchinterval(old_interval)
    assert set(computed) == set(range(40))
    assert all(count == 1 for count in computed.values()), computed
    info = slow_square.cache_info()
    assert info.hits + info.misses == 32 * 200
    stats = slow_square.cache_stats()
    assert stats.misses - stats.merged == 40  # a miss either computed or waited


def test_32_threads_on_an_evicting_memoized_function_stay_consistent() -> None:
    computed = collections.Counter[int]()
    counter_lock = threading.Lock()

    @memoize(max_items=5)
    def ident(x: int) -> int:
        with counter_lock:
            computed[x] += 1
        return x

    def call(index: int) -> None:
        rng = random.Random(index)
        for _ in range(300):
            x = rng.randrange(20)
            assert ident(x) == x

    run_threads(32, call)
    stats = ident.cache_stats()
    assert stats.items <= 5
    assert sum(computed.values()) == stats.misses - stats.merged


# ------------------------------------------------------------------ memoize, sync


def test_memoize_caches_and_reports_like_lru_cache() -> None:
    calls: list[tuple[Any, ...]] = []

    @memoize(max_items=2)
    def add(a: int, b: int = 0) -> int:
        calls.append((a, b))
        return a + b

    assert add(1) == 1
    assert add(1) == 1
    assert add(1, b=2) == 3
    assert add(1, 2) == 3  # positional and keyword calls are different keys, as in lru_cache
    assert calls == [(1, 0), (1, 2), (1, 2)]
    assert add.cache_info() == CacheInfo(hits=1, misses=3, maxsize=2, currsize=2)
    assert add.__name__ == "add"
    assert add.__wrapped__(5) == 5
    assert add.cache_parameters()["maxsize"] == 2
    add.cache_clear()
    assert add.cache_info() == CacheInfo(0, 0, 2, 0)


def test_memoize_typed_and_custom_keys() -> None:
    @memoize(typed=True)
    def kind(x: object) -> str:
        return type(x).__name__

    assert kind(1) == "int"
    assert kind(1.0) == "float"

    @memoize(key=lambda text, **_: text.lower())
    def shout(text: str, *, loud: bool = True) -> str:
        return text.upper()

    assert shout("Hi") == "HI"
    assert shout("hI", loud=False) == "HI"
    assert shout.cache_info().hits == 1

    with pytest.raises(InvalidType, match="key"):
        memoize(key=5)  # type: ignore[call-overload]
    with pytest.raises(InvalidValue, match="max_bytes"):
        memoize(max_bytes="huge")


def test_memoize_does_not_cache_failures_or_oversized_results() -> None:
    attempts = collections.Counter[int]()

    @memoize(max_bytes="1KiB")
    def flaky(x: int) -> bytes:
        attempts[x] += 1
        if attempts[x] == 1:
            raise ConnectionError("first try fails")
        return bytes(x)

    with pytest.raises(ConnectionError):
        flaky(10)
    assert flaky(10) == bytes(10)
    assert flaky(10) == bytes(10)
    assert attempts[10] == 2
    with pytest.raises(ConnectionError):
        flaky(5000)
    assert flaky(5000) == bytes(5000)  # too large: returned, not kept
    assert flaky(5000) == bytes(5000)
    assert attempts[5000] == 3
    assert flaky.cache_stats().too_large == 2
    assert flaky.cache_stats().items == 1


def test_memoize_ttl_recomputes_after_expiry() -> None:
    clock = ManualClock()
    calls = []

    @memoize(ttl="1m", clock=clock)
    def now(tag: str) -> float:
        calls.append(tag)
        return clock()

    first = now("a")
    clock.advance(30)
    assert now("a") == first
    clock.advance(31)
    assert now("a") == first + 61
    assert calls == ["a", "a"]


def test_recursion_with_the_same_key_does_not_deadlock() -> None:
    depth = []

    @memoize
    def reentrant(x: int) -> int:
        depth.append(x)
        if len(depth) == 1:
            return reentrant(x) + 1  # calls itself with the key it is computing
        return x

    assert reentrant(3) == 4

    @memoize
    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(80) == 23416728348467685


def test_two_threads_waiting_on_each_others_keys_do_not_deadlock() -> None:
    started = {1: threading.Event(), 2: threading.Event()}
    nested = threading.local()

    @memoize
    def crossed(x: int) -> int:
        if getattr(nested, "inside", False):
            return x
        nested.inside = True
        started[x].set()
        other = 2 if x == 1 else 1
        assert started[other].wait(JOIN_TIMEOUT_S)  # both computations are now in flight
        return crossed(other) + 10 * x

    results: dict[int, int] = {}

    def call(index: int) -> None:
        results[index + 1] = crossed(index + 1)

    run_threads(2, call)
    assert set(results) == {1, 2}


def test_merge_false_lets_every_missing_caller_compute() -> None:
    computed = collections.Counter[int]()
    gate = threading.Barrier(4)

    @memoize(merge=False)
    def slow(x: int) -> int:
        computed[x] += 1
        gate.wait(JOIN_TIMEOUT_S)  # all four are computing at the same time
        return x

    run_threads(4, lambda index: slow(1))
    assert computed[1] == 4


def test_waiters_get_the_first_callers_exception() -> None:
    entered = threading.Event()
    release = threading.Event()
    calls = collections.Counter[int]()

    @memoize
    def failing(x: int) -> int:
        calls[x] += 1
        entered.set()
        release.wait(JOIN_TIMEOUT_S)
        raise LookupError("backend down")

    outcomes: list[str] = []

    def release_once_the_second_caller_found_it_in_flight() -> None:
        wait_until(
            lambda: failing.cache_stats().misses >= 2,
            timeout_s=JOIN_TIMEOUT_S,
            what="the second caller to find the computation in flight",
        )
        release.set()

    def call(index: int) -> None:
        if index:
            entered.wait(JOIN_TIMEOUT_S)
            threading.Thread(
                target=release_once_the_second_caller_found_it_in_flight, daemon=True
            ).start()
        try:
            failing(1)
        except LookupError:
            outcomes.append("LookupError")

    run_threads(2, call)
    assert outcomes == ["LookupError", "LookupError"]
    assert calls[1] == 1
    assert failing.cache_stats().items == 0


def test_memoized_methods_bind() -> None:
    class Model:
        def __init__(self, scale: int) -> None:
            self.scale = scale

        @memoize(max_items=10)
        def predict(self, x: int) -> int:
            return x * self.scale

    assert Model(2).predict(3) == 6
    assert Model(3).predict(3) == 9


def test_bare_decorator_rejects_non_functions() -> None:
    with pytest.raises(InvalidType, match="function"):
        memoize(max_items=3)(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------ memoize, async


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_async_memoize_merges_concurrent_callers() -> None:
    computed = collections.Counter[int]()

    @memoize(max_items=100)
    async def fetch(x: int) -> int:
        computed[x] += 1
        await anyio.sleep(0.01)
        return x * 2

    results: list[int] = []

    async def call(x: int) -> None:
        results.append(await fetch(x))

    async with anyio.create_task_group() as group:
        for i in range(50):
            group.start_soon(call, i % 5)
    assert sorted(results) == sorted([2 * (i % 5) for i in range(50)])
    assert computed == dict.fromkeys(range(5), 1)
    assert await fetch(3) == 6
    stats = fetch.cache_stats()
    assert stats.merged == 45
    assert fetch.cache_info().hits == 1


@pytest.mark.anyio
async def test_cancelling_the_first_caller_does_not_poison_the_key() -> None:
    calls = 0
    first_started = anyio.Event()

    @memoize
    async def load(x: int) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_started.set()
            await anyio.sleep_forever()  # the first caller hangs until cancelled
        return f"value-{x}"

    results: list[str] = []

    async def waiter() -> None:
        results.append(await load(1))

    first_scope = anyio.CancelScope()

    async def leader() -> None:
        with first_scope:
            await load(1)

    async with anyio.create_task_group() as group:
        group.start_soon(leader)
        await first_started.wait()
        group.start_soon(waiter)  # waits for the leader's computation
        await anyio.sleep(0.05)
        assert load.cache_stats().misses == 2
        first_scope.cancel()
    assert calls == 2
    assert results == ["value-1"]
    assert await load(1) == "value-1"
    assert calls == 2


@pytest.mark.anyio
async def test_async_failures_are_not_cached_and_reentry_does_not_deadlock() -> None:
    attempts = 0

    @memoize
    async def flaky(x: int) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise TimeoutError("slow backend")
        if attempts == 2:
            return await flaky(x) + 1  # re-enters with the key it is computing
        return x

    with pytest.raises(TimeoutError):
        await flaky(7)
    assert await flaky(7) == 8
    assert await flaky(7) == 8
    assert attempts == 3


@pytest.mark.anyio
async def test_async_and_threads_share_one_cache() -> None:
    @memoize(max_items=10)
    async def double(x: int) -> int:
        await anyio.sleep(0)
        return 2 * x

    assert await double(4) == 8

    def in_thread() -> int:
        return anyio.from_thread.run(double, 4)

    assert await anyio.to_thread.run_sync(in_thread) == 8
    assert double.cache_info().misses == 1


@pytest.mark.anyio
async def test_waiters_wake_when_the_leader_finishes_not_at_the_next_liveness_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resguard.cache import _flight

    monkeypatch.setattr(_flight, "LEADER_CHECK_S", 3600.0)  # a missed wake-up would hang
    release = anyio.Event()
    calls = 0

    @memoize
    async def slow(x: int) -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return x + 1

    results: list[int] = []

    async def call() -> None:
        results.append(await slow(1))

    with anyio.fail_after(DEADLOCK_TIMEOUT_S):
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(call)
            while slow.cache_stats().misses < 3:
                await anyio.sleep(0)
            release.set()
    assert results == [2, 2, 2]
    assert calls == 1
    assert slow.cache_stats().merged == 2


def test_a_waiting_thread_wakes_when_the_leader_finishes(monkeypatch: pytest.MonkeyPatch) -> None:
    from resguard.cache import _flight

    monkeypatch.setattr(_flight, "LEADER_CHECK_S", 3600.0)  # a missed wake-up would hang
    entered, release = threading.Event(), threading.Event()

    @memoize
    def slow(k: int) -> str:
        entered.set()
        release.wait(DEADLOCK_TIMEOUT_S)
        return "value"

    leader, waiter = _leader_and_waiter(slow, 1, entered, release, lambda: None)
    assert (leader, waiter) == ("value", "value")
    assert slow.cache_stats().merged == 1


# ------------------------------------------------------------------ the decisions, directly


def test_a_miss_leads_waits_or_goes_alone() -> None:
    from resguard.cache._flight import Role, role_on_miss

    assert role_on_miss(merging=False, live_call=True) is Role.ALONE
    assert role_on_miss(merging=False, live_call=False) is Role.ALONE
    assert role_on_miss(merging=True, live_call=True) is Role.WAIT
    assert role_on_miss(merging=True, live_call=False) is Role.LEAD


def test_a_caller_waits_only_where_its_wait_cannot_stall_the_leader() -> None:
    from resguard.cache._flight import may_wait

    assert may_wait(waiter_is_task=False, leader_is_task=False, same_thread=False)
    assert may_wait(waiter_is_task=False, leader_is_task=False, same_thread=True)
    assert not may_wait(waiter_is_task=False, leader_is_task=True, same_thread=True)
    assert not may_wait(waiter_is_task=False, leader_is_task=True, same_thread=False)
    assert may_wait(waiter_is_task=True, leader_is_task=True, same_thread=True)
    assert not may_wait(waiter_is_task=True, leader_is_task=True, same_thread=False)
    assert not may_wait(waiter_is_task=True, leader_is_task=False, same_thread=True)


def test_a_finished_wait_gives_the_value_the_error_or_a_retry() -> None:
    from resguard.cache._flight import Outcome, outcome

    assert outcome(done=True, error=None) is Outcome.VALUE
    assert outcome(done=False, error=LookupError("down")) is Outcome.ERROR
    assert outcome(done=False, error=None) is Outcome.RETRY


def test_the_wait_for_graph_refuses_a_cycle_and_forgets_a_finished_wait() -> None:
    from resguard._modules.waiter import Waiter
    from resguard.cache._flight import Call, SingleFlight

    flight = SingleFlight(threading.RLock())
    a_call = Call(("task", 1))  # computed by task 1
    b_call = Call(("task", 2))  # computed by task 2
    waiter = Waiter()
    assert flight.enter(b_call, ("task", 1), waiter)  # task 1 waits for task 2
    assert not flight.enter(a_call, ("task", 2), waiter)  # task 2 waiting for 1: a cycle
    assert not flight.enter(a_call, ("task", 1), waiter)  # waiting for itself
    flight.leave(b_call, ("task", 1), waiter)
    assert flight.enter(a_call, ("task", 2), waiter)  # no cycle any more
    flight.leave(a_call, ("task", 2), waiter)


# ------------------------------------------------------------------ the real ladder


class _Model:
    """A stand-in for a loaded model on the ladder, above every cache."""

    name = "model"
    cost = reclaim.Cost.MODEL + 5

    def __init__(self) -> None:
        self.asked = 0

    def reclaimable_bytes(self) -> int:
        return 1 << 30

    def reclaim(self, target_bytes: int) -> int:
        self.asked += 1
        return 0


def test_the_ladder_shrinks_caches_before_models_and_large_buffers_really_go_back() -> None:
    psutil = pytest.importorskip("psutil")
    process = psutil.Process()

    def rss() -> int:
        return int(process.memory_info().rss)

    model = _Model()
    ladder = reclaim.Ladder(rss, min_reclaim=0, extra=[model])
    cache: LRUCache[int, bytes] = LRUCache(max_bytes="1GiB", name="ladder-test", register=ladder)
    for i in range(48):
        cache[i] = bytes([i]) * (4 * 2**20)  # 4 MiB, touched; malloc maps, free unmaps them
    for i in range(48, 2048):
        cache[i] = bytes(64)  # and small ones, which would give little back
    report = ladder.run(64 * 2**20)
    assert report.reached, report.steps
    assert model.asked == 0  # the caches were enough
    step = next(s for s in report.steps if s.name == "ladder-test")
    assert step.claimed_bytes >= 4 * 2**20  # gc may have freed part of the target first
    assert step.measured_bytes is not None  # the RSS was measured both times
    assert step.measured_bytes >= step.claimed_bytes // 2  # large values: RSS really fell
    stats = cache.stats()
    assert stats.shrinks == 1
    assert stats.reclaimed_bytes == step.claimed_bytes
    assert stats.items == 2048 - stats.shrink_evictions
    assert all(i in cache for i in range(48, 2048))  # the small ones were left alone


@pytest.mark.anyio
async def test_a_cancelled_waiter_leaves_the_computation_alone() -> None:
    release = anyio.Event()
    calls = 0

    @memoize
    async def slow(x: int) -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return x + 1

    results: list[int] = []

    async def leader() -> None:
        results.append(await slow(1))

    async with anyio.create_task_group() as group:
        group.start_soon(leader)
        await anyio.sleep(0.01)
        with anyio.move_on_after(0.05) as scope:
            await slow(1)  # waits for the leader, then gives up
        assert scope.cancelled_caught
        release.set()
    assert results == [2]
    assert calls == 1
    assert await slow(1) == 2


def test_works_as_the_cache_behind_cachetools_cached() -> None:
    cachetools = pytest.importorskip("cachetools")
    store: LRUCache[Any, bytes] = LRUCache(max_bytes="4KiB")
    calls = collections.Counter[int]()

    cached: Callable[[Callable[[int], bytes]], Callable[[int], bytes]] = cachetools.cached(store)

    @cached
    def payload(n: int) -> bytes:
        calls[n] += 1
        return bytes(n)

    assert payload(100) == payload(100) == bytes(100)
    assert payload(10_000) == payload(10_000)  # too large: cachetools swallows the ValueError
    assert calls == {100: 1, 10_000: 2}
    assert store.stats().too_large == 2


# ------------------------------------------------------------------ issue 11: hostile use

DEADLOCK_TIMEOUT_S = 10.0


def _finishes(target: Any, timeout_s: float = DEADLOCK_TIMEOUT_S) -> list[object]:
    """Run *target* in a daemon thread; return [result] or [exception]; fail if it hangs."""
    outcome: list[object] = []

    def body() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:  # reported to the caller
            outcome.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), "deadlocked"
    return outcome


class _ReentrantKey:
    """A key whose ``__eq__`` uses the cache it is stored in (CPython's DoubleEq)."""

    def __init__(self, x: int, cache: Any) -> None:
        self.x, self.cache = x, cache

    def __hash__(self) -> int:
        return self.x

    def __eq__(self, other: object) -> bool:
        if self.x == 2:
            self.cache(_ReentrantKey(1, self.cache))
        return isinstance(other, _ReentrantKey) and self.x == other.x


def test_a_key_whose_eq_reads_the_same_cache_does_not_deadlock() -> None:
    cache: LRUCache[Any, str] = LRUCache(max_items=10)
    one, two = _ReentrantKey(1, cache.get), _ReentrantKey(2, cache.get)
    cache[one] = "one"
    bytes_of_one = cache.current_bytes
    cache[two] = "two"
    assert _finishes(lambda: cache.get(_ReentrantKey(2, cache.get))) == ["two"]
    assert _finishes(lambda: cache[_ReentrantKey(2, cache.get)]) == ["two"]
    assert _finishes(lambda: _ReentrantKey(2, cache.get) in cache) == [True]
    assert _finishes(lambda: cache.pop(_ReentrantKey(2, cache.get))) == ["two"]
    assert len(cache) == 1
    assert cache.stats().bytes == bytes_of_one


def test_a_memoized_key_whose_eq_calls_the_function_does_not_deadlock() -> None:
    @memoize(max_items=10)
    def identity(x: object) -> object:
        return x

    identity(_ReentrantKey(1, identity))
    identity(_ReentrantKey(2, identity))
    [result] = _finishes(lambda: identity(_ReentrantKey(2, identity)))
    assert isinstance(result, _ReentrantKey)
    assert result.x == 2
    assert identity.cache_info().hits >= 1


class _Colliding:
    """Keys that share one hash; comparing an ``explosive`` one raises."""

    def __init__(self, name: str, explosive: bool = False) -> None:
        self.name, self.explosive = name, explosive

    def __hash__(self) -> int:
        return 42

    def __eq__(self, other: object) -> bool:
        if self.explosive or getattr(other, "explosive", False):
            raise RuntimeError("cannot compare")
        return self is other


def _leader_and_waiter(
    function: Any, key: object, entered: threading.Event, release: threading.Event, between: Any
) -> tuple[object, object]:
    """Start a leader computing *key* and a waiter merged onto it; run *between*; release."""
    outcomes: dict[str, object] = {}

    def call(role: str) -> None:
        try:
            outcomes[role] = function(key)
        except BaseException as exc:  # compared below
            outcomes[role] = exc

    leader = threading.Thread(target=call, args=("leader",), daemon=True)
    leader.start()
    assert entered.wait(DEADLOCK_TIMEOUT_S)
    waiter = threading.Thread(target=call, args=("waiter",), daemon=True)
    waiter.start()
    wait_until(
        lambda: function.cache_stats().misses >= 2,
        timeout_s=DEADLOCK_TIMEOUT_S,
        what="the waiter to find the computation in flight",
    )
    between()
    release.set()
    leader.join(DEADLOCK_TIMEOUT_S)
    waiter.join(DEADLOCK_TIMEOUT_S)
    assert not leader.is_alive(), "the leader was stranded"
    assert not waiter.is_alive(), "a waiter was stranded"
    return outcomes["leader"], outcomes["waiter"]


def test_waiters_are_released_when_storing_fails_on_a_key_that_cannot_be_compared() -> None:
    entered, release = threading.Event(), threading.Event()

    @memoize(key=lambda k: k)
    def slow(k: object) -> str:
        entered.set()
        release.wait(DEADLOCK_TIMEOUT_S)
        return "value"

    key = _Colliding("a")

    def plant_a_colliding_key() -> None:
        slow.cache[_Colliding("b", explosive=True)] = "planted"

    leader, waiter = _leader_and_waiter(slow, key, entered, release, plant_a_colliding_key)
    assert isinstance(leader, RuntimeError)  # storing raised in the leader's call
    assert isinstance(waiter, RuntimeError)  # and the waiter got the same error, not a hang
    assert len(slow._single_flight) == 0  # type: ignore[attr-defined]


def test_waiters_are_released_when_the_insert_runs_out_of_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered, release = threading.Event(), threading.Event()

    @memoize
    def slow(k: int) -> str:
        entered.set()
        release.wait(DEADLOCK_TIMEOUT_S)
        return "value"

    def no_memory(*args: object) -> list[tuple[Any, Any]]:
        raise MemoryError

    leader, waiter = _leader_and_waiter(
        slow, 1, entered, release, lambda: monkeypatch.setattr(slow.cache, "_put_locked", no_memory)
    )
    assert isinstance(leader, MemoryError)
    assert isinstance(waiter, MemoryError)
    monkeypatch.undo()
    assert slow(1) == "value"  # nothing was poisoned: the next call computes and caches
    assert slow.cache_info().currsize == 1


def test_a_waiter_stops_waiting_for_a_leader_thread_that_died(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resguard.cache import _flight, _memo

    monkeypatch.setattr(_flight, "LEADER_CHECK_S", 0.01)
    entered, release = threading.Event(), threading.Event()
    calls = collections.Counter[str]()

    @memoize
    def slow(k: int) -> str:
        calls[threading.current_thread().name] += 1
        if len(calls) == 1:  # the leader: it will vanish without an answer
            entered.set()
            release.wait(DEADLOCK_TIMEOUT_S)
            raise SystemExit  # a thread ending in a way that skips the release
        return "value"

    monkeypatch.setattr(_memo._Memo, "abandon", lambda *args: None)
    leader, waiter = _leader_and_waiter(slow, 1, entered, release, lambda: None)
    assert isinstance(leader, SystemExit)
    assert waiter == "value"  # computed on its own once the leader was found dead
    assert sum(calls.values()) == 2


class _MutableKey:
    """Its hash follows ``value``; the tests' other keys are ints whose slots the new hash
    finds empty (lookups of the old object by its new hash then miss deterministically)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __hash__(self) -> int:
        return hash(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _MutableKey) and self.value == other.value


def test_a_ttl_cache_survives_a_key_whose_hash_changed(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    cache: LRUCache[Any, str] = LRUCache(ttl="10s", clock=clock)
    key = _MutableKey(1)
    cache[key] = "poisoned"
    cache[5] = "fine"
    key.value = 2  # its hash changed while it is stored
    with caplog.at_level(logging.WARNING, logger="resguard.cache"):
        assert len(cache) == 1
    assert "can no longer be found" in caplog.text
    cache[4] = "also fine"
    assert list(cache) == [5, 4]
    stats = cache.stats()
    assert stats.broken == 1
    assert stats.bytes == sum(sizeof(k) + sizeof(v) for k, v in cache.items())
    clock.advance(11)
    assert len(cache) == 0
    assert cache.stats().expirations == 2


def test_a_ttl_cache_survives_an_evicted_key_whose_hash_changed() -> None:
    clock = ManualClock()
    cache: LRUCache[Any, str] = LRUCache(max_items=1, ttl="10s", clock=clock)
    key = _MutableKey(1)
    cache[key] = "first"
    key.value = 2
    cache[13] = "evicts the first"  # its expiry record cannot be found by hash
    assert len(cache) == 1
    assert list(cache) == [13]
    assert cache.stats().items == 1
    cache[14] = "x"
    assert list(cache.items()) == [(14, "x")]


def test_a_user_sizeof_alone_is_the_cost_of_an_entry() -> None:
    cache: LRUCache[str, int] = LRUCache(max_bytes=3, sizeof=lambda v: v)
    cache["a"] = 1
    cache["b"] = 2
    assert cache.currsize == cache.current_bytes == 3
    with pytest.raises(ValueTooLarge, match="size 4"):
        cache["c"] = 4
    assert cache.getsizeof(2) == 2
    by_items: LRUCache[str, int] = LRUCache(max_items=5, sizeof=lambda v: v)
    assert by_items.getsizeof(1000) == 1  # without max_bytes a value counts as one item
    by_items["a"] = 1000
    assert by_items.currsize == 1
    assert by_items.current_bytes == 1000
    assert LRUCache[str, bytes](max_items=3).getsizeof(b"x" * 100) == 1


def test_zero_bounds_store_nothing_as_in_cachetools_and_lru_cache() -> None:
    caches: list[LRUCache[str, bytes]] = [LRUCache(max_items=0), LRUCache(max_bytes=0)]
    for cache in caches:
        with pytest.raises(ValueTooLarge):
            cache["a"] = b"x"
        assert len(cache) == 0
        assert cache.stats().too_large == 1
    calls = []

    @memoize(max_items=0)
    def f(x: int) -> int:
        calls.append(x)
        return x

    assert [f(1), f(1), f(1)] == [1, 1, 1]
    assert calls == [1, 1, 1]
    assert f.cache_info() == CacheInfo(hits=0, misses=3, maxsize=0, currsize=0)


class _Tagged(LRUCache[str, int]):
    """A subclass with its own attributes, for copy and pickle (module level: picklable)."""

    def __init__(self, tag: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tag = tag
        self.seen: list[str] = []


@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda c: pickle.loads(pickle.dumps(c))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_copies_of_a_subclass_keep_its_own_attributes(duplicate: Any) -> None:
    source = _Tagged("mine", max_items=3)
    source["a"] = 1
    source.seen.append("a")
    twin = duplicate(source)
    assert type(twin) is _Tagged
    assert twin.tag == "mine"
    assert twin.seen == ["a"]
    assert twin["a"] == 1
    twin["b"] = 2
    assert "b" not in source
    if duplicate is copy.copy:
        assert twin.seen is source.seen  # a shallow copy shares attributes, as cachetools'
    else:
        assert twin.seen is not source.seen


def test_only_lru_caches_own_attributes_are_left_out_of_a_pickle() -> None:
    from resguard.cache._pickling import OWN_ATTRIBUTES

    cache: LRUCache[str, int] = LRUCache(max_items=2, ttl=5, name="x")
    assert set(vars(cache)) == set(OWN_ATTRIBUTES)


def test_memoizing_builtin_len_and_type_does_not_recurse() -> None:
    import builtins

    old_len, old_type = builtins.len, builtins.type
    try:
        builtins.len = memoize(max_items=4)(len)
        for i in [0, 0, 1, 2, 3, 3, 4, 5, 6, 1, 7, 2, 1]:
            assert len("abcdefghijklmn"[:i]) == i
        builtins.type = memoize(max_items=4)(type)  # type: ignore[misc,assignment]
        for value in [1, "a", 2.0, (1,), 1, b"x"]:
            assert type(value) is old_type(value)
    finally:
        builtins.len, builtins.type = old_len, old_type  # type: ignore[misc]


def test_popitem_on_an_empty_cache_hides_its_context() -> None:
    with pytest.raises(KeyError) as info:
        LRUCache().popitem()
    assert info.value.__suppress_context__


def test_repr_starts_with_the_class_name() -> None:
    assert repr(_Tagged("t", max_items=2)).startswith("_Tagged(")


def test_iterating_and_pickling_survive_a_key_whose_hash_changed() -> None:
    cache: LRUCache[Any, str] = LRUCache(max_items=5)
    key = _MutableKey(1)
    cache[100] = "a"
    cache[key] = "poisoned"
    cache[200] = "b"
    key.value = 2
    assert list(cache) == [100, 200]
    assert dict(cache.items()) == {100: "a", 200: "b"}
    assert cache.stats().broken == 1
    assert cache.stats().bytes == sum(sizeof(k) + sizeof(v) for k, v in cache.items())
    assert list(pickle.loads(pickle.dumps(cache))) == [100, 200]
    assert cache.reclaim(1) > 0


_ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=4),
    st.sampled_from(["1e999", "-1KiB", "0", "0B", "5m", "nan", "inf", "10%", "1ns"]),
    st.lists(st.integers(), max_size=2),
)


@given(field=st.sampled_from(["max_bytes", "max_items", "ttl"]), value=_ANYTHING)
def test_constructors_accept_or_reject_with_a_resguard_error_quoting_the_value(
    field: str, value: object
) -> None:
    kwargs: dict[str, Any] = {field: value}
    for build in (lambda: LRUCache(**kwargs), lambda: memoize(**kwargs)):
        error: BaseException | None = None
        try:
            build()
        except (InvalidValue, InvalidType) as exc:
            error = exc
        if error is None:
            continue
        assert isinstance(error, (ValueError, TypeError))
        assert field in str(error)
        if not isinstance(value, (bytes, list)):
            assert repr(value)[:20] in str(error) or str(value)[:20] in str(error)


@pytest.mark.anyio
async def test_async_waiters_are_released_when_storing_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = anyio.Event()

    @memoize
    async def slow(x: int) -> int:
        await release.wait()
        return x

    def no_memory(*args: object) -> list[tuple[Any, Any]]:
        raise MemoryError

    outcomes: list[str] = []

    async def call() -> None:
        try:
            await slow(1)
        except MemoryError:
            outcomes.append("MemoryError")

    with anyio.fail_after(DEADLOCK_TIMEOUT_S):
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(call)
            while slow.cache_stats().misses < 3:
                await anyio.sleep(0)
            monkeypatch.setattr(slow.cache, "_put_locked", no_memory)
            release.set()
    assert outcomes == ["MemoryError"] * 3
    assert slow.cache_stats().merged == 0  # nobody got a value from the failed store
    monkeypatch.undo()
    assert await slow(1) == 1


class _WritingKey:
    """A key whose ``__eq__`` writes to the cache it is stored in."""

    def __init__(self, x: int, cache: LRUCache[Any, int]) -> None:
        self.x, self.cache = x, cache

    def __hash__(self) -> int:
        return self.x % 2  # collisions: __eq__ runs on most lookups

    def __eq__(self, other: object) -> bool:
        self.cache[_WritingKey(99, self.cache)] = 0
        return isinstance(other, _WritingKey) and self.x == other.x


def test_a_key_that_writes_to_its_own_cache_from_eq_gets_an_error_not_a_deadlock() -> None:
    cache: LRUCache[Any, int] = LRUCache(max_items=4)
    cache[_WritingKey(1, cache)] = 1  # alone: nothing to compare with

    def write_colliding() -> None:
        cache[_WritingKey(3, cache)] = 3  # compared with the first key: its __eq__ writes

    [outcome] = _finishes(write_colliding)
    assert isinstance(outcome, InvalidState)
    assert "from inside one of its own operations" in str(outcome)
    assert len(cache) == 1  # nothing was half-applied
    assert cache.stats().bytes == sum(entry[1] for entry in cache._data.values())


def test_a_memoized_key_whose_eq_misses_the_function_computes_without_storing() -> None:
    calls: list[int] = []

    @memoize(max_items=10)
    def twice(x: object) -> object:
        calls.append(1)
        return x

    class Probing:
        def __init__(self, x: int) -> None:
            self.x = x

        def __hash__(self) -> int:
            return 7

        def __eq__(self, other: object) -> bool:
            twice(f"probe-{self.x}")  # a miss, nested inside the cache's lookup
            return isinstance(other, Probing) and self.x == other.x

    twice(Probing(1))
    [result] = _finishes(lambda: twice(Probing(2)))
    assert isinstance(result, Probing)
    assert "probe-1" not in twice.cache  # computed, not stored
    assert "probe-2" not in twice.cache
    assert twice.cache_info().currsize == 2


_HOSTILE_EQ_SCRIPT = """
import random
from resguard._errors import InvalidState
from resguard.cache import LRUCache, memoize
quiet = [False]
for seed in range(40):
    rng = random.Random(seed)
    quiet[0] = False
    cache = LRUCache(max_items=rng.choice([3, 8]), ttl=rng.choice([None, 100]))

    @memoize(max_items=rng.choice([2, 5]))
    def f(k):
        return k.x

    class K:
        def __init__(self, x): self.x = x
        def __hash__(self): return self.x % 4
        def __eq__(self, other):
            r = 1.0 if quiet[0] else rng.random()
            try:
                if r < 0.1: cache[K(rng.randrange(20))] = 1
                elif r < 0.2: cache.get(K(rng.randrange(20)))
                elif r < 0.25: cache.pop(K(rng.randrange(20)), None)
                elif r < 0.252: list(cache); len(cache); cache.stats()
                elif r < 0.35: f(K(rng.randrange(20)))
            except InvalidState:
                if seed % 2: raise
            return isinstance(other, K) and self.x == other.x

    for step in range(200):
        op, k = rng.random(), K(rng.randrange(20))
        try:
            if op < 0.4: cache[k] = step
            elif op < 0.6: cache.get(k)
            elif op < 0.7: cache.pop(k, None)
            elif op < 0.9: f(k)
            else: len(cache); list(cache.items()); cache.reclaim(1)
        except InvalidState:
            pass
    quiet[0] = True
    for c in (cache, f.cache):
        list(c)  # mends an order that a raising __eq__ left half-changed
        assert c.current_bytes == sum(e[1] for e in dict.values(c._data)), seed
        assert len(c) <= c.max_items, seed
        assert c is cache or not len(f._single_flight), seed
print("survived")
"""


def test_keys_whose_eq_uses_the_cache_at_random_never_crash_or_corrupt_it() -> None:
    # In a child interpreter: changing an OrderedDict from inside one of its own operations
    # could crash the interpreter (a segfault) before nested calls were made read-only.
    assert run_python(_HOSTILE_EQ_SCRIPT).strip() == "survived"


def test_a_pickled_cache_names_its_default_sizer_by_a_public_path() -> None:
    """A pickle must survive the package's private layout changing again (a cache pickled
    before issue 12 named ``resguard._modules.sizeof``, which no longer exists)."""
    cache: LRUCache[str, bytes] = LRUCache(max_bytes="1MiB")
    cache["a"] = b"x"
    data = pickle.dumps(cache)
    assert b"._sizeof" not in data
    assert pickle.loads(data)["a"] == b"x"
