"""LazyModel and ModelPool: load once, pin, idle expiry, LRU eviction, variant choice."""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard import InvalidState, InvalidType, InvalidValue, ResourceExhausted, reclaim
from resguard.models import LazyModel, ModelPool, headroom_from, machine_headroom_bytes
from resguard.models._claim import Attempt, Claim, Owner, claim
from resguard.snapshot import Sampler
from resguard.testing import KernelTree, ManualClock
from resguard.units import Amount

from support import wait_until

MiB = 1024 * 1024


class Counter:
    """A count that threads add to."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.value += 1


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Loader:
    """A real loader: allocates *size* bytes, counts loads and unloads; a *gated* one blocks
    until the test opens ``gate`` (a slow load that many callers ask for meanwhile)."""

    def __init__(self, size: int = MiB, gated: bool = False, fail: int = 0) -> None:
        self.size = size
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.fail = fail
        self.loads = 0
        self.unloaded: list[bytearray] = []
        self._lock = threading.Lock()

    def load(self) -> bytearray:
        with self._lock:
            self.loads += 1
            failing = self.fail > 0
            self.fail -= 1
        if not self.gate.wait(30):
            raise TimeoutError("the test never opened the loader's gate")
        if failing:
            raise OSError("weights file is corrupt")
        return bytearray(self.size)

    def unload(self, model: bytearray) -> None:
        self.unloaded.append(model)


def test_fifty_threads_load_once() -> None:
    loader = Loader(gated=True)
    model = LazyModel(loader.load, loader.unload, size=MiB, name="m")
    barrier = threading.Barrier(50)
    seen: list[int] = []
    asked = Counter()

    def worker() -> None:
        barrier.wait()
        asked.add()
        with model as m:
            seen.append(id(m))

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for thread in threads:
        thread.start()
    wait_until(lambda: loader.loads and asked.value == 50, what="all 50 threads to ask")
    loader.gate.set()
    for thread in threads:
        thread.join(timeout=60)
    assert loader.loads == 1
    assert model.loads == 1
    assert len(seen) == 50
    assert len(set(seen)) == 1
    assert not model.pinned
    assert model.loaded


@pytest.mark.anyio
async def test_fifty_tasks_load_once() -> None:
    loader = Loader(gated=True)
    model = LazyModel(loader.load, loader.unload, size=MiB, name="m")
    seen: list[int] = []

    async def worker() -> None:
        async with model as m:
            seen.append(id(m))
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(worker)
        await anyio.wait_all_tasks_blocked()  # one loads (in a thread), 49 wait for it
        assert model.loading
        loader.gate.set()
    assert loader.loads == 1
    assert len(seen) == 50
    assert len(set(seen)) == 1
    assert not model.pinned


@pytest.mark.anyio
async def test_fifty_tasks_with_an_async_loader_load_once() -> None:
    loads = 0
    gate = anyio.Event()

    async def load() -> dict[str, int]:
        nonlocal loads
        loads += 1
        await gate.wait()
        return {"weights": 1}

    model: LazyModel[dict[str, int]] = LazyModel(load, size=MiB)
    results: list[dict[str, int]] = []

    async def worker() -> None:
        results.append(await model.aget())

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(worker)
        await anyio.wait_all_tasks_blocked()  # one loads, 49 wait for it
        gate.set()
    assert loads == 1
    assert all(r is results[0] for r in results)
    with pytest.raises(InvalidType, match="async loader"):
        model.get()


def test_threads_and_a_failed_load_share_the_error_then_retry_works() -> None:
    loader = Loader(gated=True, fail=1)
    model = LazyModel(loader.load, size=MiB)
    errors: list[BaseException] = []
    barrier = threading.Barrier(10)
    asked = Counter()

    def worker() -> None:
        barrier.wait()
        asked.add()
        try:
            model.get()
        except OSError as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    wait_until(lambda: loader.loads and asked.value == 10, what="all 10 threads to ask")
    loader.gate.set()
    for thread in threads:
        thread.join(timeout=60)
    # the slow failing load is shared by whoever was waiting for it; late comers may retry
    assert errors
    assert loader.loads >= 1
    assert model.get() is not None
    assert model.loaded


def test_pinned_model_is_never_unloaded() -> None:
    loader = Loader()
    clock = ManualClock()
    model = LazyModel(loader.load, loader.unload, size=MiB, idle_ttl="1m", clock=clock, sweep=False)
    with model:
        clock.advance(3600)
        assert not model.unload_if_idle()
        assert not model.unload()
        assert model.reclaimable_bytes() == 0
        assert model.reclaim(10 * MiB) == 0
        assert model.loaded
    assert loader.unloaded == []
    # the end of the block counts as use: the TTL starts again
    assert not model.unload_if_idle()
    clock.advance(61)
    assert model.unload_if_idle()
    assert len(loader.unloaded) == 1
    assert not model.loaded


def test_idle_ttl_with_an_injected_clock() -> None:
    loader = Loader()
    clock = ManualClock()
    model = LazyModel(loader.load, loader.unload, size=MiB, idle_ttl=30, clock=clock, sweep=False)
    model.get()
    clock.advance(29)
    assert not model.unload_if_idle()
    assert model.unload_if_idle(now=clock() + 1)
    assert not model.loaded
    assert model.unloads == 1
    model.get()  # loads again on next use
    assert loader.loads == 2


def test_shared_sweeper_unloads_an_idle_model_without_being_asked() -> None:
    loader = Loader()
    model = LazyModel(loader.load, loader.unload, size=MiB, idle_ttl=0.2)
    model.get()
    wait_until(lambda: not model.loaded, timeout_s=20, what="the sweeper to unload the model")
    assert not model.loaded
    assert len(loader.unloaded) == 1
    assert sum(t.name == "resguard-model-sweeper" for t in threading.enumerate()) <= 1


def test_model_is_a_reclaimable_at_model_cost_plus_reload_time() -> None:
    loader = Loader()
    clock = ManualClock()

    def load() -> bytearray:
        clock.advance(0.1)  # the load takes 0.1 s on the model's clock
        return loader.load()

    model = LazyModel(load, loader.unload, size=3 * MiB, name="reclaim-me", clock=clock)
    assert model in reclaim.registered()
    assert isinstance(model, reclaim.Reclaimable)
    assert model.reclaimable_bytes() == 0  # not loaded
    model.get()
    assert model.cost >= reclaim.Cost.MODEL + 0.1
    assert model.reclaimable_bytes() == 0  # just used: not before the minimum idle time
    clock.advance(reclaim.DEFAULT_MIN_IDLE_S - 1)
    assert model.reclaim(MiB) == 0
    assert model.unloads == 0  # still loaded
    clock.advance(1.001)
    assert model.reclaimable_bytes() == 3 * MiB
    assert model.reclaim(MiB) == 3 * MiB
    assert not model.loaded
    del model
    gc.collect()
    assert all(item.name != "reclaim-me" for item in reclaim.registered())


def test_refuses_when_the_machine_has_no_room() -> None:
    loader = Loader()
    headroom = machine_headroom_bytes()
    assert headroom is not None
    model = LazyModel(loader.load, size=headroom * 4, name="huge")
    with pytest.raises(ResourceExhausted) as caught:
        model.get()
    assert caught.value.reason == "memory"
    assert caught.value.numbers["size_bytes"] > caught.value.numbers["headroom_bytes"]
    assert loader.loads == 0
    assert not model.loading  # a refused load leaves no attempt behind


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InvalidValue, match="size"):
        LazyModel(Loader().load, size="lots")
    with pytest.raises(InvalidType, match="load must be a callable"):
        LazyModel(3, size=MiB)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        LazyModel(Loader().load, size=MiB, idle_ttl="soon")
    with pytest.raises(InvalidType, match="headroom_bytes"):
        LazyModel(Loader().load, size=MiB, guard=object())  # type: ignore[arg-type]


def test_uses_decorator_pins_during_the_call() -> None:
    loader = Loader()
    model = LazyModel(loader.load, size=MiB)

    @model.uses
    def infer(weights: bytearray, x: int) -> tuple[int, bool]:
        return len(weights) + x, model.pinned

    assert infer(1) == (MiB + 1, True)
    assert not model.pinned


# ---------------------------------------------------------------------- pools
def make(pool: ModelPool, name: str, size: int, loaders: dict[str, Loader]) -> LazyModel[Any]:
    loaders[name] = Loader(size)
    return LazyModel(
        loaders[name].load, loaders[name].unload, size=size, name=name, pool=pool, sweep=False
    )


def test_pool_evicts_the_least_recently_used_idle_model() -> None:
    pool = ModelPool(budget=100 * MiB)
    loaders: dict[str, Loader] = {}
    a, b, c = (make(pool, n, 40 * MiB, loaders) for n in "abc")
    a.get()
    b.get()
    a.get()  # a is now more recent than b
    c.get()  # needs 40 MiB of the 100: b goes
    assert (a.loaded, b.loaded, c.loaded) == (True, False, True)
    assert len(loaders["b"].unloaded) == 1
    assert pool.used_bytes() == 80 * MiB


def test_pool_never_evicts_a_pinned_model_and_refuses_instead() -> None:
    pool = ModelPool(budget=100 * MiB)
    loaders: dict[str, Loader] = {}
    a = make(pool, "a", 60 * MiB, loaders)
    b = make(pool, "b", 60 * MiB, loaders)
    with a, pytest.raises(ResourceExhausted) as caught:
        b.get()
    assert caught.value.reason == "memory"
    assert a.loaded
    assert not b.loaded
    assert loaders["b"].loads == 0
    b.get()  # a is idle now and is evicted
    assert (b.loaded, a.loaded) == (True, False)


def test_pool_sweeps_expired_models_before_counting() -> None:
    clock = ManualClock()
    pool = ModelPool(budget=10 * MiB)
    a = LazyModel(Loader().load, size=4 * MiB, idle_ttl=60, clock=clock, pool=pool, sweep=False)
    a.get()
    clock.advance(61)
    assert pool.unload_idle() == [a]
    assert pool.used_bytes() == 0


@pytest.mark.parametrize(
    ("budget_mib", "loaded", "expected"),
    [
        (100, None, "large"),  # everything fits
        (80, None, "large"),  # exactly fits
        (79, None, "medium"),
        (40, None, "medium"),
        (39, None, "small"),
        (10, None, "small"),
        (100, "small", "large"),  # an idle member counts as evictable
        (50, "medium", "medium"),  # already loaded always fits
        (15, "small", "small"),
    ],
)
def test_choose_picks_the_largest_variant_that_fits(
    budget_mib: int, loaded: str | None, expected: str
) -> None:
    pool = ModelPool(budget=budget_mib * MiB)
    loaders: dict[str, Loader] = {}
    variants = {
        name: make(pool, name, size * MiB, loaders)
        for name, size in (("small", 10), ("large", 80), ("medium", 40))
    }
    if loaded is not None:
        variants[loaded].get()
    assert pool.choose(list(variants.values())).name == expected
    with pool.choose(list(variants.values())) as model:
        assert len(model) == variants[expected].size_bytes


def test_choose_refuses_when_nothing_fits() -> None:
    pool = ModelPool(budget=5 * MiB)
    loaders: dict[str, Loader] = {}
    variants = [make(pool, n, s * MiB, loaders) for n, s in (("s", 10), ("l", 80))]
    with pytest.raises(ResourceExhausted, match="'s'"):
        pool.choose(variants)


def test_a_pool_refused_for_one_bad_model_takes_none_of_the_others() -> None:
    good = LazyModel(lambda: 1, size=MiB, name="good", register=False, sweep=False)
    other = ModelPool(name="other")
    taken = other.lazy(lambda: 2, size=MiB, name="taken", register=False, sweep=False)
    with pytest.raises(InvalidType, match="'junk'"):
        ModelPool(models=[good, "junk"])  # type: ignore[list-item]
    with pytest.raises(InvalidValue, match="already belongs to pool 'other'"):
        ModelPool(models=[good, taken])
    left_in = good.pool
    assert left_in is None  # not left in a pool that was never made
    pool = ModelPool(models=[good])
    assert good.pool is pool
    assert pool.models == (good,)


def test_pool_budget_as_a_share_of_the_limit_and_bad_budgets() -> None:
    pool = ModelPool(budget="50%")
    assert pool.budget_bytes is not None
    assert pool.budget_bytes > 0
    with pytest.raises(InvalidValue, match="budget"):
        ModelPool(budget="a lot")
    with pytest.raises(InvalidType):
        pool.add("model")  # type: ignore[arg-type]


def test_a_guard_is_asked_for_room_and_holds_a_reservation_while_loading() -> None:
    from resguard.guard import Guard

    guard = Guard()
    during: dict[str, int] = {}

    def load() -> bytearray:
        stats = guard.stats()
        during["in_flight"] = stats.in_flight
        during["reserved"] = stats.reserved_bytes
        return bytearray(MiB)

    model = LazyModel(load, size=4 * MiB, guard=guard)
    model.get()
    assert during == {"in_flight": 1, "reserved": 4 * MiB}
    assert guard.stats().reserved_bytes == 0
    tight = Guard(memory="1MiB")  # the guard's own budget leaves no headroom
    refused = LazyModel(load, size=MiB, guard=tight)
    with pytest.raises(ResourceExhausted):
        refused.get()
    assert not refused.loaded


# ---------------------------------------------------------------------- cancelling, deadlines
class Hanging:
    """A sync loader that blocks until released (a stuck weights download)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.loads = 0

    def load(self) -> bytearray:
        self.loads += 1
        self.started.set()
        if not self.release.wait(30):
            raise TimeoutError("the test never released the loader")
        return bytearray(MiB)


@pytest.mark.anyio
async def test_cancelling_aget_of_a_hanging_sync_loader_returns_at_once() -> None:
    loader = Hanging()
    model = LazyModel(loader.load, size=MiB, name="stuck", register=False, sweep=False)
    started = time.monotonic()
    with anyio.move_on_after(0.3) as scope:
        await model.aget()
    elapsed = time.monotonic() - started
    assert scope.cancelled_caught
    assert elapsed < 1.0  # returned at the cancellation, not when the load ends
    assert model.loading  # the load goes on in its thread...
    loader.release.set()
    await anyio.to_thread.run_sync(
        lambda: wait_until(lambda: model.loaded, what="the abandoned load to end")
    )
    # ...and its result is kept: the next caller gets it without a second load.
    assert len(await model.aget()) == MiB
    assert loader.loads == 1
    assert model.loads == 1
    assert not model.pinned  # the cancelled caller's pin was never taken


@pytest.mark.anyio
async def test_aget_cancelled_before_its_loader_thread_starts_leaves_the_model_loadable() -> None:
    # Cancelled at the worker thread's start, the load never ran: nobody may be left waiting
    # for it (it stayed "loading" for ever, every later caller timing out).
    loader = Loader()
    model = LazyModel(loader.load, size=MiB, name="m", register=False, sweep=False, wait=5)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await model.aget()
    assert scope.cancelled_caught
    assert not model.loading
    assert loader.loads == 0
    assert len(await model.aget()) == MiB  # the same task claims it again and loads it
    assert len(await anyio.to_thread.run_sync(model.get)) == MiB
    assert loader.loads == 1
    assert not model.pinned


@pytest.mark.anyio
async def test_waiters_of_a_load_in_progress_are_cancellable_and_no_second_load_starts() -> None:
    loader = Hanging()
    model = LazyModel(loader.load, size=MiB, name="stuck", register=False, sweep=False)
    results: list[int] = []

    async def leader() -> None:
        with anyio.move_on_after(0.2):
            await model.aget()

    async def patient() -> None:
        async with model as weights:
            results.append(len(weights))

    async with anyio.create_task_group() as group:
        group.start_soon(leader)
        await anyio.to_thread.run_sync(loader.started.wait, 10)
        started = time.monotonic()
        with anyio.move_on_after(0.3):  # a second waiter gives up at its cancellation
            await model.aget()
        assert time.monotonic() - started < 1.0
        group.start_soon(patient)  # a third one waits for the abandoned load
        await anyio.wait_all_tasks_blocked()
        assert model.loading
        assert not results
        loader.release.set()
    assert results == [MiB]
    assert loader.loads == 1
    assert not model.pinned


@pytest.mark.anyio
async def test_a_failed_abandoned_load_reaches_its_waiters_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = threading.Event()

    def load() -> bytearray:
        gate.wait(30)
        raise OSError("weights file is corrupt")

    model = LazyModel(load, size=MiB, name="broken", register=False, sweep=False)
    with anyio.move_on_after(0.1):
        await model.aget()
    gate.set()
    with pytest.raises(OSError, match="corrupt"):
        await model.aget()  # either the abandoned attempt's error or its own retry's
    assert "after its caller was cancelled" in caplog.text


def test_a_sync_waiter_of_a_load_in_progress_has_a_deadline() -> None:
    loader = Hanging()
    model = LazyModel(loader.load, size=MiB, name="stuck", register=False, sweep=False, wait=0.2)
    leader = threading.Thread(target=model.get)
    leader.start()
    try:
        assert loader.started.wait(10)
        started = time.monotonic()
        with pytest.raises(ResourceExhausted) as caught:
            model.get()
        assert caught.value.reason == "timeout"
        assert 0.15 < time.monotonic() - started < 1.5
        assert "'stuck'" in str(caught.value)
    finally:
        loader.release.set()
        leader.join(10)
    assert model.loaded


@pytest.mark.anyio
async def test_an_async_waiter_of_a_load_in_progress_has_a_deadline() -> None:
    loader = Hanging()
    model = LazyModel(loader.load, size=MiB, name="stuck", register=False, sweep=False, wait=0.2)
    thread = threading.Thread(target=model.get)
    thread.start()
    try:
        await anyio.to_thread.run_sync(loader.started.wait, 10)
        with pytest.raises(ResourceExhausted) as caught:
            await model.aget()
        assert caught.value.reason == "timeout"
    finally:
        loader.release.set()
        await anyio.to_thread.run_sync(thread.join, 10)


class UnknownHeadroom:
    """A headroom source whose memory numbers could not be read (None, not 0)."""

    def headroom_bytes(self) -> int | None:
        return None


def test_unknown_headroom_admits_the_load_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="resguard.models")
    guard = UnknownHeadroom()
    models = [
        LazyModel(Loader().load, size=MiB, guard=guard, register=False, sweep=False)
        for _ in range(3)
    ]
    for model in models:
        assert len(model.get()) == MiB  # unknown is not 0: not refused
    warnings = [r for r in caplog.records if "unknown" in r.getMessage()]
    assert len(warnings) == 1


def test_a_pool_with_unknown_machine_headroom_counts_its_budget_only() -> None:
    pool = ModelPool(budget=100 * MiB, guard=UnknownHeadroom())
    loaders: dict[str, Loader] = {}
    a = make(pool, "a", 60 * MiB, loaders)
    b = make(pool, "b", 60 * MiB, loaders)
    assert pool.headroom_bytes() == 100 * MiB
    a.get()
    b.get()  # the budget still holds: a is evicted
    assert (a.loaded, b.loaded) == (False, True)
    assert ModelPool(guard=UnknownHeadroom()).headroom_bytes() is None


@pytest.mark.parametrize("budget", [type, len, lambda: MiB, True, [1], object()])
def test_a_pool_budget_must_be_a_size_not_a_callable(budget: Any) -> None:
    with pytest.raises(InvalidType, match="pool budget"):
        ModelPool(budget=budget)


@pytest.mark.parametrize(
    "budget", ["0%", "0.0000001%", "0.009%", "0", 0, -5, "-1GiB", "150%", "nan%", "1e999"]
)
def test_a_pool_budget_of_nothing_is_refused_with_the_value_as_typed(budget: Any) -> None:
    with pytest.raises(InvalidValue, match="budget") as caught:
        ModelPool(budget=budget)
    assert repr(budget) in str(caught.value) or str(budget) in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"wait": 0}, InvalidValue),
        ({"wait": "soon"}, InvalidValue),
        ({"wait": float("nan")}, InvalidValue),
        ({"idle_ttl": -1}, InvalidValue),
        ({"idle_ttl": float("inf")}, InvalidValue),
        ({"name": 5}, InvalidType),
        ({"clock": 5}, InvalidType),
        ({"pool": "p"}, InvalidType),
        ({"sweep": "no"}, InvalidType),
        ({"register": 1}, InvalidType),
        ({"size": True}, InvalidType),
    ],
)
def test_lazy_model_arguments_are_checked(kwargs: dict[str, Any], error: type) -> None:
    arguments: dict[str, Any] = {"size": MiB, "register": False}
    arguments.update(kwargs)
    with pytest.raises(error):
        LazyModel(Loader().load, **arguments)


HOSTILE = (
    st.text(max_size=12)
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.none()
    | st.booleans()
    | st.sampled_from([10**400, -(10**400), "1e999", "nan", "0%", "-1", type, [1], b"1"])
)


@given(size=HOSTILE, idle_ttl=HOSTILE, wait=HOSTILE, budget=HOSTILE)
def test_hostile_sizes_and_durations_give_only_documented_errors(
    size: Any, idle_ttl: Any, wait: Any, budget: Any
) -> None:
    for build in (
        lambda: LazyModel(Loader().load, size=size, register=False),
        lambda: LazyModel(Loader().load, size=MiB, idle_ttl=idle_ttl, register=False),
        lambda: LazyModel(Loader().load, size=MiB, wait=wait, register=False),
        lambda: ModelPool(budget=budget),
    ):
        try:
            build()
        except (InvalidValue, InvalidType):  # ResguardError subclasses; anything else fails
            pass


def test_a_failing_headroom_probe_is_unknown_not_a_failed_load(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def headroom_bytes(self) -> int:
            raise ValueError("could not parse /proc/meminfo")

    model = LazyModel(Loader().load, size=MiB, guard=Broken(), register=False, sweep=False)
    assert len(model.get()) == MiB
    assert "could not parse" in caplog.text


@pytest.mark.parametrize(
    "given", [math.nan, math.inf, "lots", True, False, -5, "x", "1024", 10**30, [1]]
)
def test_a_headroom_source_giving_garbage_is_unknown_not_bytes_nor_a_failed_load(
    given: object, caplog: pytest.LogCaptureFixture
) -> None:
    class Odd:
        def headroom_bytes(self) -> object:
            return given

    assert headroom_from(Headroom(MiB)) == MiB  # a fault logged before has recovered
    assert headroom_from(Odd()) is None  # type: ignore[arg-type]
    model = LazyModel(Loader().load, size=MiB, guard=Odd(), register=False, sweep=False)  # type: ignore[arg-type]
    assert len(model.get()) == MiB
    assert repr(given) in caplog.text


def test_a_share_budget_is_resolved_once_the_limit_is_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib
    import types

    snapshots = importlib.import_module("resguard.snapshot")  # the module, not the function

    real = snapshots.snapshot
    unknown = types.SimpleNamespace(memory=types.SimpleNamespace(limit=None, available=None))
    monkeypatch.setattr(snapshots, "snapshot", lambda **_: unknown)
    pool = ModelPool(budget="50%")  # the limit cannot be read now: no error, no budget yet
    assert pool.budget_bytes is None
    assert pool.headroom_bytes() is None  # nothing known: unknown, not 0
    monkeypatch.setattr(snapshots, "snapshot", real)
    assert pool.headroom_bytes() is not None
    limit = real(children=False).memory.limit
    assert limit is not None
    assert pool.budget_bytes == round(limit / 2)


def test_a_loader_that_uses_its_own_model_fails_at_once_instead_of_waiting_for_itself() -> None:
    """A sync loader that calls ``model.get()`` waited ``wait`` (default 10 minutes) for its
    own load and then reported it as still loading."""
    holder: list[LazyModel[Any]] = []
    model: LazyModel[Any] = LazyModel(lambda: holder[0].get(), size=1, register=False, wait=30)
    holder.append(model)
    started = time.monotonic()
    with pytest.raises(InvalidState, match="uses the model itself"):
        model.get()
    assert time.monotonic() - started < 5
    assert not model.loaded
    assert not model.loading


@pytest.mark.anyio
async def test_an_async_loader_that_awaits_its_own_model_fails_at_once() -> None:
    holder: list[LazyModel[Any]] = []

    async def load() -> object:
        return await holder[0].aget()

    def load_sync() -> object:
        return holder[1].get()

    holder.append(LazyModel(load, size=1, register=False, wait=30))
    holder.append(LazyModel(load_sync, size=1, register=False, wait=30))
    for model in holder:
        with anyio.fail_after(5), pytest.raises(InvalidState, match="uses the model itself"):
            await model.aget()
        assert not model.loaded
        assert not model.loading


def test_other_threads_still_wait_for_a_load_in_progress() -> None:
    gate = threading.Event()
    model: LazyModel[Any] = LazyModel(lambda: gate.wait(5) and "m", size=1, register=False)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(model.get())) for _ in range(3)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(5)
    assert got == ["m", "m", "m"]
    assert model.loads == 1


# ---------------------------------------------------------------------- the claim, without I/O
ME: Owner = ("thread", 1)
OTHER: Owner = ("task", 2)


def _attempt(owner: Owner = OTHER, done: bool = False, failure: Exception | None = None) -> Attempt:
    attempt = Attempt(owner)
    attempt.done, attempt.failure = done, failure
    return attempt


@pytest.mark.parametrize(
    ("loaded", "attempt", "waited", "now_s", "expected"),
    [
        (True, None, None, 0.0, Claim.READY),
        (True, None, None, 99.0, Claim.READY),  # a loaded model is ready past any deadline
        (False, None, None, 0.0, Claim.LOAD),
        (False, "other's", None, 0.0, Claim.WAIT),
        (False, "other's", None, 10.0, Claim.TIMED_OUT),  # the deadline is 10.0
        (False, "mine", None, 0.0, Claim.REENTERED),
        (False, "mine", None, 10.0, Claim.REENTERED),  # reentered is said even past it
        (False, None, "failed", 0.0, Claim.FAILED),
        (True, None, "failed", 0.0, Claim.FAILED),  # the failure reaches those who waited
        (False, None, "cancelled", 0.0, Claim.LOAD),  # a cancelled load: a waiter loads
        (True, None, "succeeded", 0.0, Claim.READY),
        (False, "other's", "running", 5.0, Claim.WAIT),  # woken early: wait on
        (False, "other's", "running", 10.0, Claim.TIMED_OUT),
    ],
)
def test_the_claim_is_decided_from_the_state_and_the_time_alone(
    loaded: bool, attempt: str | None, waited: str | None, now_s: float, expected: Claim
) -> None:
    attempts = {None: None, "other's": _attempt(OTHER), "mine": _attempt(ME)}
    waits = {
        None: None,
        "failed": _attempt(done=True, failure=OSError("corrupt")),
        "cancelled": _attempt(done=True),
        "succeeded": _attempt(done=True),
        "running": attempts["other's"],
    }
    assert claim(loaded, attempts[attempt], ME, waits[waited], now_s, 10.0) is expected


@pytest.mark.anyio
async def test_cancelling_an_async_loader_leaves_the_model_unloaded_and_a_waiter_loads_it() -> None:
    calls = 0
    started = anyio.Event()

    async def load() -> bytearray:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await anyio.sleep_forever()  # a download that its caller gives up on
        return bytearray(MiB)

    model: LazyModel[bytearray] = LazyModel(load, size=MiB, name="dl", register=False, sweep=False)
    sizes: list[int] = []
    leader = anyio.CancelScope()

    async def lead() -> None:
        with leader:
            await model.aget()

    async def patient() -> None:
        async with model as weights:
            sizes.append(len(weights))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(lead)
            await started.wait()
            group.start_soon(patient)
            await anyio.wait_all_tasks_blocked()  # the patient one waits for the load
            assert model.loading
            assert not sizes
            leader.cancel()
    assert leader.cancelled_caught
    assert sizes == [MiB]  # woken by the cancelled load's end, it loaded the model itself
    assert calls == 2
    assert model.loads == 1
    assert model.loaded
    assert not model.loading
    assert not model.pinned


class FixedHeadroom:
    """A headroom source with plenty of room: only the pool's budget binds."""

    def headroom_bytes(self) -> int | None:
        return 64 * 2**30


def test_a_share_budget_follows_the_limit_as_it_is_now(tmp_path: Path) -> None:
    """``ModelPool(budget="50%")`` froze the share of the limit it saw when it was made:
    a container whose limit was raised (or lowered) kept the old budget."""
    tree = KernelTree(tmp_path)
    sampler = Sampler(tree.roots, limits_max_age_s=0)
    pool = ModelPool(budget="50%", guard=FixedHeadroom(), sampler=sampler)
    assert pool.budget == Amount("50%")
    assert pool.budget_bytes == 2**30  # half of the tree's 2 GiB memory.max
    model = LazyModel(Loader().load, size=1536 * MiB, pool=pool, register=False, sweep=False)
    with pytest.raises(ResourceExhausted):
        model.get()  # 1.5 GiB does not fit in half of 2 GiB
    Path(tree.path("memory.max")).write_text(f"{4 * 2**30}\n")
    assert pool.budget_bytes == 2 * 2**30
    assert pool.headroom_bytes() == 2 * 2**30
    assert len(model.get()) == MiB  # the same pool admits it under the raised limit
    Path(tree.path("memory.max")).write_text(f"{2**30}\n")
    assert pool.budget_bytes == 2**29
    assert pool.headroom_bytes() == 2**29 - 1536 * MiB  # over budget now: no new load fits


class _Room:
    """A HeadroomSource with a set value: a model server's room, as it would report it."""

    def __init__(self, value: int | None) -> None:
        self.value = value

    def headroom_bytes(self) -> int | None:
        return self.value


def test_a_model_servers_headroom_is_a_declared_argument_a_pool_reads() -> None:
    with pytest.raises(InvalidType, match="headroom="):
        LazyModel(lambda: 1, size=MiB, headroom=42, register=False, sweep=False)  # type: ignore[arg-type]
    server = _Room(10 * MiB)  # a vLLM or Ollama host with 10 MiB free
    pool = ModelPool(budget="1GiB")  # no guard: the members say where their room is
    large = LazyModel(lambda: 1, size=20 * MiB, headroom=server, pool=pool, register=False)
    small = LazyModel(lambda: 2, size=5 * MiB, headroom=server, pool=pool, register=False)
    assert large.headroom is server
    assert pool.headroom_bytes(exclude=large) == 10 * MiB  # the server's, not this machine's
    assert pool.choose([large, small]) is small
    with pytest.raises(ResourceExhausted) as refused:
        large.get()  # a pool's member is refused on the server's room
    assert refused.value.numbers["headroom_bytes"] == 10 * MiB


def test_a_lone_model_checks_its_servers_headroom_before_loading() -> None:
    server = _Room(1 * MiB)
    model = LazyModel(lambda: 1, size=2 * MiB, headroom=server, register=False, sweep=False)
    with pytest.raises(ResourceExhausted) as refused:
        model.get()
    assert refused.value.numbers["headroom_bytes"] == 1 * MiB
    server.value = 4 * MiB
    assert model.get() == 1


def test_the_repr_shows_the_size_formatted_and_never_calls_or_raises() -> None:
    fixed = LazyModel(lambda: 1, size="2GiB", name="fixed", register=False, sweep=False)
    assert repr(fixed) == "<LazyModel 'fixed' unloaded size=2.0 GiB>"
    asked: list[int] = []

    def size() -> int:
        asked.append(1)
        return 3 * MiB

    lazy = LazyModel(lambda: 1, size=size, name="asked", register=False, sweep=False)
    assert repr(lazy) == "<LazyModel 'asked' unloaded size=?>"  # never called by a repr
    assert not asked
    assert lazy.size_bytes == 3 * MiB
    assert repr(lazy) == "<LazyModel 'asked' unloaded size=3.0 MiB>"  # its last answer

    def broken() -> int:
        raise RuntimeError("the server is down")

    failing = LazyModel(lambda: 1, size=broken, name="broken", register=False, sweep=False)
    with pytest.raises(RuntimeError):
        _ = failing.size_bytes
    assert "size=?" in repr(failing)


# ---------------------------------------------------------------- hostile headroom sources
class Hangs:
    """A headroom source that answers only once released (an NFS read, a stuck RPC)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def headroom_bytes(self) -> int:
        self.calls += 1
        self.release.wait(30)
        return 1 << 40


def test_a_hanging_headroom_source_is_unknown_after_its_deadline_and_asked_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hangs = Hangs()
    assert headroom_from(Headroom(MiB)) == MiB  # a fault logged before has recovered
    try:
        started = time.monotonic()
        assert headroom_from(hangs, deadline_s=0.2) is None
        assert headroom_from(hangs, deadline_s=0.2) is None  # still hanging: not asked again
        assert time.monotonic() - started < 5
        assert hangs.calls == 1
        model = LazyModel(Loader().load, size=MiB, guard=hangs, register=False, sweep=False)
        assert len(model.get()) == MiB  # admitted, not stuck behind the source
        assert caplog.text.count("gave no answer within 0.2 s") == 1
    finally:
        hangs.release.set()
    wait_until(lambda: headroom_from(hangs, deadline_s=5) == 1 << 40, timeout_s=10, what="answer")


def test_resguards_own_over_committed_room_is_kept_not_unknown() -> None:
    sizes = {"a": 5 * MiB}
    pool = ModelPool(budget=10 * MiB, guard=Headroom(GIB))
    model = LazyModel(Loader().load, size=lambda: sizes["a"], pool=pool, register=False)
    model.get()
    sizes["a"] = 50 * MiB  # it grew past the budget once loaded
    assert pool.headroom_bytes() == -40 * MiB
    assert headroom_from(pool) == -40 * MiB  # over-committed, not "unknown: admit"


GIB = 1 << 30


class Headroom:
    """A headroom source with a set value."""

    def __init__(self, value: int) -> None:
        self.value = value

    def headroom_bytes(self) -> int:
        return self.value


class Unsized:
    """A size that cannot be read (an Ollama model that is not pulled)."""

    def __call__(self) -> int:
        raise InvalidValue("model 'gone' is not installed")


def test_a_pool_choice_skips_a_variant_whose_size_cannot_be_read() -> None:
    pool = ModelPool(budget=100 * MiB, guard=Headroom(GIB))
    gone = LazyModel(Loader().load, size=Unsized(), name="gone", register=False)
    small = LazyModel(Loader().load, size=10 * MiB, name="small", register=False)
    assert pool.choose([gone, small]) is small
    big = LazyModel(Loader().load, size=500 * MiB, name="big", register=False)
    with pytest.raises(ResourceExhausted, match="'gone' was left out"):
        pool.choose([gone, big])
    with pytest.raises(InvalidValue, match="none of the variants can be chosen: 'gone'"):
        pool.choose([gone])


def test_a_refusal_whose_sizes_round_alike_gives_them_exactly() -> None:
    need = 1_503_238_554
    model = LazyModel(Loader().load, size=need, guard=Headroom(1_503_000_000), register=False)
    with pytest.raises(ResourceExhausted) as caught:
        model.get()
    assert "it needs 1,503,238,554 bytes; 1,503,000,000 bytes is free" in str(caught.value)
    pool = ModelPool(guard=Headroom(1_503_000_000))
    with pytest.raises(ResourceExhausted, match="needs 1,503,238,554 bytes; 1,503,000,000"):
        pool.choose([LazyModel(Loader().load, size=need, name="m", register=False)])


class RaisingHandler(logging.Handler):
    """A logging handler with a bug: its emit() raises (Python's logging does not catch it)."""

    def emit(self, record: logging.LogRecord) -> None:
        raise RuntimeError("handler bug")


def test_a_raising_log_handler_never_fails_an_unload_an_eviction_or_a_fault_line() -> None:
    logger = logging.getLogger("resguard.models")
    handler = RaisingHandler()
    logger.addHandler(handler)
    try:
        pool = ModelPool(budget=100 * MiB, guard=Headroom(GIB))
        loaders: dict[str, Loader] = {}
        a = make(pool, "a", 60 * MiB, loaders)
        b = make(pool, "b", 60 * MiB, loaders)
        a.get()
        b.get()  # evicts a: the eviction line and a's unload line go to the broken handler
        assert (a.loaded, b.loaded) == (False, True)
        assert b.unload()
        assert headroom_from(UnknownHeadroom()) is None  # its fault line too
    finally:
        logger.removeHandler(handler)
