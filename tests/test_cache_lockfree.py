"""Cache hits without the lock: what takes it and what does not, the switch to locked hits,
the free-threaded fallback, and 32 threads hitting while others insert, evict, expire and
shrink (values always of their own key, counts exact, bounds kept)."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resguard._modules import gil
from resguard._modules.tally import Tally
from resguard.cache import LRUCache, _hits, _lru, _memo, memoize
from resguard.cache._sizeof import sizeof
from resguard.cache._stats import Counters
from resguard.testing import ManualClock

from support import run_python, run_threads

JOIN_TIMEOUT_S = 120.0
BLOCKED_S = 0.2  # how long a hit that takes the lock is seen to wait for it


class _PythonKey:
    """A key whose hash and equality are Python code (as any user class's)."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __hash__(self) -> int:
        return self.x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _PythonKey) and self.x == other.x


def _hits_of(cache: LRUCache[Any, Any], function: Any) -> list[tuple[Any, Callable[[], object]]]:
    """Each kind of hit with the lock it would take: ``cache[1]``, ``get``, ``in``, a call."""
    return [
        (cache._lock, lambda: cache[1]),
        (cache._lock, lambda: cache.get(1)),
        (cache._lock, lambda: 1 in cache),
        (function.cache._lock, lambda: function(7)),
    ]


def _finishes_while_the_lock_is_held(
    lock: Any, call: Callable[[], object], expected: bool = True
) -> bool:
    """Whether *call*, in another thread, completes while this thread holds *lock* (given
    time for it when it is *expected* to, BLOCKED_S when it is expected to wait)."""
    done = threading.Event()

    def run() -> None:
        call()
        done.set()

    with lock:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        finished = done.wait(JOIN_TIMEOUT_S if expected else BLOCKED_S)
    thread.join(JOIN_TIMEOUT_S)
    assert done.is_set(), "the hit never finished"
    return finished


@pytest.fixture
def locked_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Caches built now behave as on a free-threaded build (no GIL at import)."""
    monkeypatch.setattr(_hits, "LOCK_FREE_HITS", False)


def _memoized_square() -> Any:
    @memoize(max_items=10)
    def square(x: int) -> int:
        return x * x

    return square


# ------------------------------------------------------------------ what takes the lock


def test_hits_of_int_and_str_keys_take_no_lock() -> None:
    cache: LRUCache[int, str] = LRUCache(max_items=10)
    cache[1] = "one"
    square = _memoized_square()
    square(7)
    for lock, hit in _hits_of(cache, square):
        assert _finishes_while_the_lock_is_held(lock, hit)
    assert cache.stats().hits == 2  # cache[1] and get(1); ``in`` does not count
    assert square.cache_info().hits == 1


def test_a_key_whose_comparison_is_python_code_switches_the_cache_to_locked_hits() -> None:
    cache: LRUCache[object, str] = LRUCache(max_items=10)
    for i in range(5):
        cache[i] = str(i)
    cache[2]  # refreshed: the order is 0 1 3 4 2
    before = cache._fast
    assert before is not None
    cache[_PythonKey(9)] = "nine"
    assert cache._fast is None
    assert not _finishes_while_the_lock_is_held(cache._lock, lambda: cache[1], False)
    # Nothing lost, the order kept; hits still in flight hold the old entries, which no
    # change reaches any more.
    assert list(cache) == [0, 3, 4, 2, _PythonKey(9), 1]
    cache[20] = "twenty"
    del cache[0]
    assert list(before) == [0, 1, 3, 4, 2]
    assert cache.stats().items == 6


def test_a_memoized_call_keyed_by_several_arguments_hits_under_the_lock() -> None:
    @memoize
    def add(x: int, y: int = 0) -> int:
        return x + y

    assert add(1, y=2) == 3
    assert not _finishes_while_the_lock_is_held(add.cache._lock, lambda: add(1, y=2), False)
    assert add.cache_info().hits == 1


def test_a_locked_hit_refreshes_recency_counts_once_and_leaves_expiry_to_the_miss() -> None:
    # The one locked hit (CacheCore._hit_locked) behind cache[k], get() and a memoized
    # call of several arguments: each kind refreshes, counts, and meets an expired entry.
    clock = ManualClock()
    cache: LRUCache[_PythonKey, int] = LRUCache(max_items=2, ttl=10, clock=clock)
    keys = [_PythonKey(i) for i in range(3)]
    cache[keys[0]], cache[keys[1]] = 0, 1
    assert cache[keys[0]] == 0  # refreshed: keys[1] is now the least recently used
    assert cache.get(keys[0]) == 0
    assert keys[1] in cache  # in leaves recency alone
    cache[keys[2]] = 2
    assert list(cache) == [keys[0], keys[2]]
    clock.advance(11)
    assert cache.get(keys[0], -1) == -1
    with pytest.raises(KeyError):
        cache[keys[2]]
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.expirations, stats.items) == (2, 2, 2, 0)

    calls: list[int] = []

    @memoize(ttl=10, clock=clock)
    def add(x: int, y: int = 0) -> int:
        calls.append(x)
        return x + y

    assert [add(1, y=2), add(1, y=2)] == [3, 3]
    clock.advance(11)
    assert add(1, y=2) == 3
    assert calls == [1, 1]
    assert add.cache_info()[:2] == (1, 2)
    assert add.cache_stats().expirations == 1


def test_a_free_threaded_build_takes_the_lock_on_every_hit(locked_build: None) -> None:
    cache: LRUCache[int, str] = LRUCache(max_items=10)
    cache[1] = "one"
    square = _memoized_square()
    square(7)
    assert cache._fast is None
    assert square.cache._fast is None
    for lock, hit in _hits_of(cache, square):
        assert not _finishes_while_the_lock_is_held(lock, hit, False)
    assert cache.stats().hits == 2
    assert square.cache_info().hits == 1


def test_a_free_threaded_build_locks_hits_however_it_was_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert gil.gil_enabled(sys) is False
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert gil.gil_enabled(sys) is (sys.implementation.name == "cpython")
    assert _hits.LOCK_FREE_HITS is gil.LOCK_FREE  # the caches build on the one decision


def test_a_cache_unpickled_with_python_keys_locks_its_hits() -> None:
    import pickle

    cache: LRUCache[object, int] = LRUCache()
    cache[1] = 1
    assert pickle.loads(pickle.dumps(cache))._fast is not None
    cache[_PythonKey(2)] = 2
    restored = pickle.loads(pickle.dumps(cache))
    assert restored._fast is None
    assert restored[1] == 1
    assert restored[_PythonKey(2)] == 2


# ------------------------------------------------------------------ a hit racing a change


def test_a_hit_whose_entry_is_evicted_and_replaced_before_its_refresh_returns_what_it_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race, made certain: another thread replaces the entry between the hit's read and
    its refresh of recency (CPython may switch threads there)."""
    cache: LRUCache[int, str] = LRUCache(max_items=3)
    for i in range(3):
        cache[i] = f"old {i}"
    real = _hits.od_move_to_end

    def replace(key: int) -> None:
        cache.pop(key)
        cache[key] = "new"

    def replaced_meanwhile(data: Any, key: int) -> None:
        worker = threading.Thread(target=replace, args=(key,))
        worker.start()
        worker.join(JOIN_TIMEOUT_S)
        real(data, key)

    monkeypatch.setattr(_lru, "od_move_to_end", replaced_meanwhile)
    assert cache[0] == "old 0"
    assert cache.get(1) == "old 1"
    monkeypatch.setattr(_lru, "od_move_to_end", real)
    assert list(cache.items()) == [(2, "old 2"), (0, "new"), (1, "new")]
    assert cache.stats().hits == 2


def test_a_hit_whose_entry_is_evicted_before_its_refresh_neither_raises_nor_revives_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache: LRUCache[int, str] = LRUCache(max_items=3)
    for i in range(3):
        cache[i] = f"v{i}"
    real = _hits.od_move_to_end

    def evicted_meanwhile(data: Any, key: int) -> None:
        worker = threading.Thread(target=lambda: cache.pop(key))
        worker.start()
        worker.join(JOIN_TIMEOUT_S)
        real(data, key)  # raises KeyError: the key is gone

    monkeypatch.setattr(_lru, "od_move_to_end", evicted_meanwhile)
    assert cache[0] == "v0"
    assert cache.get(1) == "v1"
    monkeypatch.setattr(_lru, "od_move_to_end", real)
    assert list(cache) == [2]
    assert cache.current_bytes == sizeof(2) + sizeof("v2")


def test_a_memoized_hit_whose_entry_is_evicted_before_its_refresh_returns_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = _hits.od_move_to_end
    holder: list[Any] = []

    def evicted_meanwhile(data: Any, key: int) -> None:
        worker = threading.Thread(target=lambda: holder[0].cache.clear())
        worker.start()
        worker.join(JOIN_TIMEOUT_S)
        real(data, key)

    monkeypatch.setattr(_memo, "od_move_to_end", evicted_meanwhile)  # bound when decorated
    square = _memoized_square()
    holder.append(square)
    square(3)
    assert square(3) == 9
    assert square.cache_info() == (1, 1, 10, 0)


# ------------------------------------------------------------------ 32 threads


@pytest.mark.parametrize("ttl", [None, 5.0])
def test_32_threads_hitting_while_others_insert_evict_expire_and_shrink(
    ttl: float | None,
) -> None:
    clock = ManualClock()
    max_bytes = 6_000
    cache: LRUCache[int, bytes] = LRUCache(max_bytes=max_bytes, max_items=40, ttl=ttl, clock=clock)
    lookups = [0] * 32

    def hammer(index: int) -> None:
        rng = random.Random(index)
        for step in range(1200):
            key = rng.randrange(60)
            action = rng.random()
            if index < 24 or action < 0.6:  # most threads mostly hit
                lookups[index] += 1
                if action < 0.3:
                    value = cache.get(key)
                else:
                    try:
                        value = cache[key]
                    except KeyError:
                        value = None
                assert value is None or value[:1] == bytes([key]), (key, value)
                _ = key in cache  # never raises either
            elif action < 0.85:
                cache[key] = bytes([key]) * rng.randrange(1, 300)
            elif action < 0.92:
                cache.pop(key, None)
            elif action < 0.96:
                cache.shrink(0.3)
            elif ttl is not None and step % 7 == 0:
                clock.advance(1.0)
                cache.expire()
            assert cache.current_bytes <= max_bytes

    run_threads(32, hammer, switch_interval_s=1e-6)
    stats = cache.stats()
    assert stats.hits + stats.misses == sum(lookups)
    assert stats.hits > 0
    assert stats.misses > 0
    pairs = list(cache.items())
    assert stats.bytes == sum(sizeof(k) + sizeof(v) for k, v in pairs) <= max_bytes
    assert stats.items == len(pairs) <= 40
    assert len({k for k, _ in pairs}) == len(pairs)  # no duplicated entry
    if ttl is not None:
        assert list(cache._expiry) == [k for k in cache._expiry if k in cache._data]
        assert set(cache._expiry) == set(cache._data)


def test_32_threads_hitting_keep_the_counts_exact() -> None:
    cache: LRUCache[int, int] = LRUCache()
    for i in range(10):
        cache[i] = i

    def hit(index: int) -> None:
        for i in range(2000):
            assert cache[i % 10] == i % 10
            assert cache.get(10 + i % 3) is None

    run_threads(32, hit, switch_interval_s=1e-6)
    stats = cache.stats()
    assert (stats.hits, stats.misses) == (32 * 2000, 32 * 2000)


def test_32_threads_on_a_memoized_function_shrunk_meanwhile_compute_each_miss_once() -> None:
    computed = [0]
    count_lock = threading.Lock()

    @memoize(max_items=30)
    def triple(x: int) -> int:
        with count_lock:
            computed[0] += 1
        return 3 * x

    def call(index: int) -> None:
        rng = random.Random(index)
        for step in range(400):
            x = rng.randrange(40)
            assert triple(x) == 3 * x
            if index == 0 and step % 50 == 0:
                triple.cache.shrink(0.5)

    run_threads(32, call, switch_interval_s=1e-6)
    stats = triple.cache_stats()
    assert stats.hits + stats.misses == 32 * 400
    assert stats.misses - stats.merged == computed[0]  # a miss computed or waited, never both
    assert stats.items <= 30


_COLLIDING_KEYS_SCRIPT = """
import sys, threading
from resguard.cache import LRUCache
sys.setswitchinterval(1e-6)

class K:
    # hashes as the int x does; comparing runs Python code (a thread switch may come)
    def __init__(self, x): self.x = x
    def __hash__(self): return self.x
    def __eq__(self, other):
        sum(range(20))
        return isinstance(other, K) and self.x == other.x

for rnd in range(6):
    cache = LRUCache(max_items=64)
    for i in range(64):
        cache[i] = i
    def hit():
        for j in range(4000):
            cache.get(j % 80)
            try:
                cache[j % 64]
            except KeyError:
                pass
    def churn(seed):
        for j in range(1500):
            x = (j * 7 + seed) % 80
            cache[K(x) if j % 3 == 0 else x + 1000 * (j % 5)] = j  # resizes the table
            cache.pop(x + 1000 * ((j + 1) % 5), None)
    threads = [threading.Thread(target=hit) for _ in range(12)]
    threads += [threading.Thread(target=churn, args=(s,)) for s in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert cache._fast is None
    assert len(cache) <= 64
print("survived")
"""


def test_threads_hitting_int_keys_while_colliding_python_keys_arrive_never_crash() -> None:
    # In a child interpreter: a lookup running a Python __eq__ while another thread resizes
    # the OrderedDict could crash CPython; the first such key switches hits to the lock.
    assert run_python(_COLLIDING_KEYS_SCRIPT).strip() == "survived"


# ------------------------------------------------------------------ the tally


def test_a_tally_counts_ticks_not_its_own_reads_and_can_be_set() -> None:
    tally = Tally()
    for _ in range(5):
        tally.tick()
    assert tally.get() == 5
    assert tally.get() == 5  # reading is not counting
    tally.tick()
    assert tally.get() == 6
    tally.set(0)
    assert tally.get() == 0
    tally.tick()
    tally.set(41)
    tally.tick()
    assert tally.get() == 42


def test_counters_reset_restore_and_report_hits_and_misses() -> None:
    counters = Counters()
    counters.hit()
    counters.hit()
    counters.miss()
    counters.evictions = 4
    assert counters.as_dict()["hits"] == 2
    assert counters.as_tuple()[:3] == (2, 1, 4)
    counters.restore((7, 8, 9))
    assert (counters.hits, counters.misses, counters.evictions, counters.broken) == (7, 8, 9, 0)
    counters.reset()
    assert counters.as_tuple() == (0,) * len(Counters.FIELDS)


# ------------------------------------------------------------------ the written-out insert


@given(
    max_items=st.integers(1, 5),
    steps=st.lists(st.tuples(st.sampled_from("sgd"), st.integers(0, 8)), max_size=60),
)
@settings(max_examples=200, deadline=None)
def test_an_item_bounded_cache_evicts_in_lru_order_and_counts_like_a_model(
    max_items: int, steps: list[tuple[str, int]]
) -> None:
    """The insert written out for an item bound alone (one eviction per insert when full)."""
    cache: LRUCache[int, str] = LRUCache(max_items=max_items)
    model: list[tuple[int, str]] = []  # least recently used first
    evictions = 0
    for step, (action, key) in enumerate(steps):
        found = next((i for i, (k, _) in enumerate(model) if k == key), None)
        if action == "s":
            value = f"v{step}"
            cache[key] = value
            if found is not None:
                del model[found]
            elif len(model) == max_items:
                del model[0]
                evictions += 1
            model.append((key, value))
        elif action == "g":
            assert cache.get(key) == (None if found is None else model[found][1])
            if found is not None:
                model.append(model.pop(found))
        elif found is not None:
            del cache[key]
            del model[found]
        assert list(cache.items()) == model
    stats = cache.stats()
    assert stats.evictions == evictions
    assert stats.bytes == sum(sizeof(k) + sizeof(v) for k, v in model)
