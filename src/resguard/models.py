"""Lazy model loaders and model pools that live within a memory budget.

A :class:`LazyModel` loads on first use — exactly once however many threads or tasks ask at
the same moment — and keeps the model while it earns its memory: ``with model as m:`` (or
``async with``) pins it, and a pinned model is never unloaded. An unpinned model is unloaded
after ``idle_ttl`` without use, and earlier when the machine is tight: every lazy model is
on the reclaim ladder (:mod:`resguard.reclaim`) at ``Cost.MODEL + reload seconds``, so the
models that reload fastest go first.

Before loading, a model asks for room for its ``size``: from a Guard (``headroom_bytes()``,
and a reservation through ``guard.admit(reserve=size)`` while it loads) or, without one,
from :func:`resguard.snapshot` (``memory.available``). In a :class:`ModelPool` the pool
first evicts idle members, least recently used first; when that is not enough the load is
refused with :class:`~resguard.ResourceExhausted` instead of pushing the machine into swap.

When the headroom is unknown (the memory numbers could not be read: ``None``, never 0),
the load is admitted and a warning is logged once; a Guard's reservation still applies its
own ``on_unknown`` policy.

Idle expiry needs something to look at the clock: the pool and the ladder do, and
``unload_if_idle()`` can be called directly; besides these, one shared daemon thread (the
*sweeper*, for all models together, only while some model with a TTL is loaded) checks the
TTLs so that a model nobody touches again is still unloaded.

**Waiting and cancelling.** A caller that finds a load already in progress waits at most
``wait`` (default 10 minutes) and then gets ``ResourceExhausted(reason="timeout")``. In
async code every wait is cancellable: cancelling the caller of :meth:`LazyModel.aget` (or
``async with``) returns at once, also while it runs a *sync* loader in a worker thread. A
thread cannot be stopped, so that load goes on in its thread and, when it ends, its result
is **kept**: the model counts as loaded (its memory was admitted before it started), later
callers get it, and ``idle_ttl`` and the ladder unload it when nobody uses it. Callers that
were waiting for that load keep waiting for it (no second load starts meanwhile). An
``async def`` loader is cancelled with its caller; a waiter then starts the load again.
A loader that asks for its own model (``model.get()`` inside ``load``) gets
:class:`~resguard.InvalidState` at once instead of waiting for itself.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar, cast, runtime_checkable

import anyio
import anyio.to_thread

from resguard import reclaim as _reclaim
from resguard._errors import InvalidState, InvalidType, InvalidValue, ResourceExhausted
from resguard._modules.clock import Clock, monotonic
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard.units import (
    format_bytes,
    is_percent,
    named,
    parse_bytes,
    parse_duration,
    parse_percent,
)

__all__ = ["HeadroomSource", "LazyModel", "ModelPool"]

T = TypeVar("T")
_log = get_logger("resguard.models")
_faults = FaultLog(_log)
DEFAULT_WAIT_S = 600.0  # how long a caller waits for a load that another caller runs


@runtime_checkable
class HeadroomSource(Protocol):
    """What a model asks for room: a :class:`resguard.Guard` or anything with this method."""

    def headroom_bytes(self) -> int | None:
        """Bytes that can be committed now (available memory minus reservations);
        ``None`` when that is unknown."""
        ...


def machine_headroom_bytes() -> int | None:
    """Available memory under the effective limit (cgroup-aware), from a fresh snapshot;
    ``None`` when it could not be read."""
    from resguard.snapshot import snapshot

    available = snapshot(children=False).memory.available
    return None if available is None else int(available)


def _headroom(guard: HeadroomSource | None) -> int | None:
    """The headroom from *guard* (or the machine); ``None`` = unknown, logged once."""
    where = "the guard's headroom" if guard is not None else "the machine's memory headroom"
    try:
        headroom = guard.headroom_bytes() if guard is not None else machine_headroom_bytes()
    except Exception as error:  # a probe that fails is unknown, never a failed load
        _faults.failed(
            where,
            f"unknown ({type(error).__name__}: {error}); model loads are "
            "admitted without a headroom check",
        )
        return None
    if headroom is None:
        _faults.failed(
            where,
            "unknown (memory could not be read); model loads are admitted without a headroom check",
        )
        return None
    _faults.recovered(where)
    return int(headroom)


def _size_of(value: int | str | Callable[[], int], what: str) -> int:
    if callable(value):
        return _size_of(value(), what)
    return named(what, parse_bytes, value)


def _check_duration(value: object, what: str, *, allow_none: bool = False) -> float | None:
    """*value* as seconds for argument *what*: finite and above 0 (None when allowed)."""
    if value is None and allow_none:
        return None
    seconds = named(what, parse_duration, value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidValue(f"{what}={value!r} must be a duration above 0 (e.g. 30, '10m')")
    return seconds


def _check_flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidType(f"{what}={value!r} must be True or False")
    return value


class _Attempt:
    """One load in progress; waiters block on ``done`` and re-raise ``failure``."""

    __slots__ = ("abandoned", "done", "failure", "owner")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.failure: BaseException | None = None
        self.abandoned = False  # the caller that started it was cancelled
        self.owner: tuple[str, int] | None = None  # the thread or task running the loader


def _this_thread() -> tuple[str, int]:
    return ("thread", threading.get_ident())


def _this_task() -> tuple[str, int]:
    return ("task", anyio.get_current_task().id)


class LazyModel(Generic[T]):
    """A model that is loaded on first use and unloaded when idle or when memory is short.

    ``load()`` returns the model (it may be an ``async def``; then only ``async with`` and
    :meth:`aget` can load it); ``unload(model)`` releases it (optional: without it the
    reference is dropped and the garbage collector frees it). ``size`` is the memory the
    loaded model takes (bytes, ``"4GiB"``, or a callable returning bytes, asked before each
    load). ``idle_ttl`` (seconds or ``"10m"``) unloads it after that long without use.

    ``with model as m:`` loads if needed and pins the model for the block; :meth:`get`
    loads without pinning. Loads are counted in :attr:`loads`. ``wait`` (seconds or
    ``"2m"``) bounds how long a caller waits for a load another caller is running; past it
    the caller gets ``ResourceExhausted(reason="timeout")``. In async code the wait and a
    sync loader's worker thread are cancellable (see the module docs for what happens to
    the load still running then).
    """

    def __init__(
        self,
        load: Callable[[], T] | Callable[[], Awaitable[T]],
        unload: Callable[[T], object] | None = None,
        *,
        size: int | str | Callable[[], int],
        idle_ttl: float | str | None = None,
        name: str | None = None,
        guard: HeadroomSource | None = None,
        pool: ModelPool | None = None,
        clock: Clock = monotonic,
        sweep: bool = True,
        register: bool = True,
        wait: float | str = DEFAULT_WAIT_S,
    ) -> None:
        if not callable(load):
            raise InvalidType(f"load must be a callable returning the model, not {load!r}")
        if unload is not None and not callable(unload):
            raise InvalidType(f"unload must be a callable taking the model, not {unload!r}")
        if unload is not None and inspect.iscoroutinefunction(unload):
            raise InvalidType(
                "unload must be a plain function: the reclaim ladder calls it from a monitor thread"
            )
        if guard is not None and not isinstance(guard, HeadroomSource):
            raise InvalidType(f"guard must have headroom_bytes() (a resguard.Guard), not {guard!r}")
        if not callable(size):
            _size_of(size, "size")  # validate now
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise InvalidType(f"name={name!r} must be a non-empty string")
        if not callable(clock):
            raise InvalidType(f"clock={clock!r} must be a callable returning seconds")
        if pool is not None and not isinstance(pool, ModelPool):
            raise InvalidType(f"pool={pool!r} must be a resguard.ModelPool")
        _check_flag(sweep, "sweep")
        _check_flag(register, "register")
        self.wait_s = cast("float", _check_duration(wait, "wait"))
        self._load = load
        self._unload = unload
        self._size = size
        self.idle_ttl_s = _check_duration(idle_ttl, "idle_ttl", allow_none=True)
        self._name = name or getattr(load, "__qualname__", None) or "model"
        self.guard = guard
        self.clock = clock
        self._is_async = inspect.iscoroutinefunction(load)
        self._lock = threading.Lock()
        self._value: T | None = None
        self._loaded = False
        self._attempt: _Attempt | None = None
        self._pins = 0
        self._last_used_s = clock()
        self._reload_s = 0.0
        self._sweep = sweep
        self.loads = 0
        self.unloads = 0
        self.pool: ModelPool | None = None
        if pool is not None:
            pool.add(self)
        if register:
            _reclaim.register(self)

    # ------------------------------------------------------------------ state
    @property
    def name(self) -> str:
        """The model's name (for logs, metrics and the ladder)."""
        return self._name

    @property
    def size_bytes(self) -> int:
        """Memory the loaded model takes, in bytes."""
        return _size_of(self._size, f"size of model {self._name!r}")

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def loading(self) -> bool:
        return self._attempt is not None

    @property
    def pinned(self) -> bool:
        """True while some ``with``/``async with`` block uses the model."""
        return self._pins > 0

    @property
    def last_used_s(self) -> float:
        """Clock reading of the last use (load, ``get``, end of a ``with`` block)."""
        return self._last_used_s

    @property
    def reload_s(self) -> float:
        """How long the last load took, in seconds (0 before the first load)."""
        return self._reload_s

    def idle_s(self, now: float | None = None) -> float:
        """Seconds since last use; 0 while pinned."""
        if self._pins:
            return 0.0
        return max(0.0, (self.clock() if now is None else now) - self._last_used_s)

    def __repr__(self) -> str:
        state = (
            "pinned"
            if self._pins
            else "loaded"
            if self._loaded
            else ("loading" if self._attempt else "unloaded")
        )
        return f"<LazyModel {self._name!r} {state} size={self._size!r}>"

    # ------------------------------------------------------------------ the ladder
    @property
    def cost(self) -> float:
        """``Cost.MODEL`` plus the measured reload time in seconds."""
        return _reclaim.Cost.MODEL + self._reload_s

    def reclaimable_bytes(self) -> int:
        """The model's size when it is loaded and not pinned, else 0."""
        if not self._loaded or self._pins or self._attempt is not None:
            return 0
        try:
            return self.size_bytes
        except Exception:  # a size callable that fails must not break the ladder
            return 0

    def reclaim(self, target_bytes: int) -> int:
        """Unload the model if it is idle (not pinned); return the bytes freed."""
        size = self.reclaimable_bytes()
        if size and self._unload_if(lambda: True):
            return size
        return 0

    # ------------------------------------------------------------------ loading
    def _claim(self, pin: bool) -> tuple[str, T | None, _Attempt | None]:
        with self._lock:
            if self._loaded:
                if pin:
                    self._pins += 1
                self._last_used_s = self.clock()
                value = self._value
            elif self._attempt is not None:
                return "wait", None, self._attempt
            else:
                self._attempt = _Attempt()
                return "mine", None, self._attempt
        if self.pool is not None:
            self.pool._touch(self)
        return "ready", value, None

    def _finish(
        self,
        attempt: _Attempt,
        value: T | None,
        failure: BaseException | None,
        pin: bool,
        elapsed_s: float,
    ) -> None:
        if failure is not None and attempt.abandoned and isinstance(failure, Exception):
            _log.warning(
                "loading model %r failed after its caller was cancelled: %s: %s",
                self._name,
                type(failure).__name__,
                failure,
            )
        with self._lock:
            self._attempt = None
            if failure is None:
                self._value = value
                self._loaded = True
                self.loads += 1
                self._reload_s = elapsed_s
                self._last_used_s = self.clock()
                if pin:
                    self._pins += 1
            elif isinstance(failure, Exception):
                attempt.failure = failure
        attempt.done.set()
        if failure is None:
            if self.pool is not None:
                self.pool._touch(self)
            if self._sweep and self.idle_ttl_s is not None:
                _sweeper.add(self)

    def _make_room(self) -> None:
        size = self.size_bytes
        if self.pool is not None:
            self.pool._make_room(self, size)
            return
        headroom = _headroom(self.guard)
        if headroom is not None and headroom < size:
            raise ResourceExhausted(
                f"no room to load model {self._name!r}: it needs {format_bytes(size)}, "
                f"{format_bytes(max(headroom, 0))} is free",
                reason="memory",
                retry_after=5.0,
                numbers={"size_bytes": size, "headroom_bytes": headroom},
            )

    def _reservation(self) -> Any:
        admit = getattr(self.guard, "admit", None)
        if admit is None:
            return None
        return admit(reserve=self.size_bytes)

    def _load_sync(self) -> T:
        self._make_room()
        reservation = self._reservation()
        if reservation is None:
            return cast("Callable[[], T]", self._load)()
        with reservation:
            return cast("Callable[[], T]", self._load)()

    async def _load_async(self) -> T:
        await anyio.to_thread.run_sync(self._make_room)
        reservation = self._reservation()
        load = cast("Callable[[], Awaitable[T]]", self._load)
        if reservation is None:
            return await load()
        async with reservation:
            return await load()

    def _check_not_reentered(self, attempt: _Attempt, me: tuple[str, int]) -> None:
        """The loader itself asks for its model: waiting would wait for itself."""
        if attempt.owner == me:
            raise InvalidState(
                f"the loader of model {self._name!r} uses the model itself; "
                "it would wait for its own load (load it without the model)"
            )

    def _timed_out(self, waited_s: float) -> ResourceExhausted:
        return ResourceExhausted(
            f"model {self._name!r} is still loading after waiting {waited_s:.3g} s "
            f"(wait={self.wait_s:g} s)",
            reason="timeout",
            retry_after=5.0,
            numbers={"wait_s": self.wait_s},
        )

    def _run_attempt(self, attempt: _Attempt) -> None:
        """Run a sync load for *attempt* to its end and publish it (result kept, never pinned):
        the caller may have gone (cancelled) by then, so the outcome lives in the model."""
        attempt.owner = _this_thread()
        started = time.perf_counter()
        try:
            value = self._load_sync()
        except BaseException as failure:
            self._finish(attempt, None, failure, False, 0.0)
            if not isinstance(failure, Exception):
                raise
            return
        self._finish(attempt, value, None, False, time.perf_counter() - started)

    def _acquire(self, pin: bool) -> T:
        if self._is_async:
            raise InvalidType(
                f"model {self._name!r} has an async loader; use `async with` "
                "or `await model.aget()`"
            )
        started_s = time.monotonic()
        while True:
            state, value, attempt = self._claim(pin)
            if state == "ready":
                return cast("T", value)
            assert attempt is not None
            if state == "wait":
                self._check_not_reentered(attempt, _this_thread())
                left_s = self.wait_s - (time.monotonic() - started_s)
                if left_s <= 0 or not attempt.done.wait(left_s):
                    raise self._timed_out(time.monotonic() - started_s)
                if attempt.failure is not None:
                    raise attempt.failure
                continue
            attempt.owner = _this_thread()
            started = time.perf_counter()
            try:
                value = self._load_sync()
            except BaseException as failure:
                self._finish(attempt, None, failure, pin, 0.0)
                raise
            self._finish(attempt, value, None, pin, time.perf_counter() - started)
            return value

    async def _await_attempt(self, attempt: _Attempt, started_s: float) -> None:
        """Wait (cancellably, at most ``wait``) until *attempt* is done; raise its failure."""
        # Poll rather than park a worker thread per waiter: loads take seconds,
        # and 50 waiting tasks must not use up anyio's thread limiter.
        delay_s = 0.001
        while not attempt.done.is_set():
            left_s = self.wait_s - (time.monotonic() - started_s)
            if left_s <= 0:
                raise self._timed_out(time.monotonic() - started_s)
            await anyio.sleep(min(delay_s, left_s))
            delay_s = min(delay_s * 2, 0.02)
        if attempt.failure is not None:
            raise attempt.failure

    async def _aacquire(self, pin: bool) -> T:
        started_s = time.monotonic()
        while True:
            state, value, attempt = self._claim(pin)
            if state == "ready":
                return cast("T", value)
            assert attempt is not None
            if state == "wait":
                self._check_not_reentered(attempt, _this_task())
                await self._await_attempt(attempt, started_s)
                continue
            if not self._is_async:
                # The load runs to its end in a worker thread and publishes itself; this
                # caller only waits for it, so a cancellation returns at once.
                try:
                    await anyio.to_thread.run_sync(
                        self._run_attempt, attempt, abandon_on_cancel=True
                    )
                except anyio.get_cancelled_exc_class():
                    attempt.abandoned = True
                    raise
                if attempt.failure is not None:
                    raise attempt.failure
                continue  # loaded: claim it (and pin) like any other caller
            attempt.owner = _this_task()
            started = time.perf_counter()
            try:
                value = await self._load_async()
            except BaseException as failure:
                self._finish(attempt, None, failure, pin, 0.0)
                raise
            self._finish(attempt, value, None, pin, time.perf_counter() - started)
            return value

    def get(self) -> T:
        """The model, loaded if needed (not pinned: the ladder may unload it any time)."""
        return self._acquire(pin=False)

    async def aget(self) -> T:
        """Async :meth:`get`; a sync loader runs in a worker thread."""
        return await self._aacquire(pin=False)

    def _unpin(self) -> None:
        with self._lock:
            self._pins -= 1
            self._last_used_s = self.clock()
        if self.pool is not None:
            self.pool._touch(self)

    def __enter__(self) -> T:
        with self._lock:  # fast path: loaded, no pool to tell
            if self._loaded and self.pool is None:
                self._pins += 1
                return cast("T", self._value)
        return self._acquire(pin=True)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._pins -= 1
            self._last_used_s = self.clock()
        if self.pool is not None:
            self.pool._touch(self)

    async def __aenter__(self) -> T:
        return await self._aacquire(pin=True)

    async def __aexit__(self, *exc: object) -> None:
        self._unpin()

    # ------------------------------------------------------------------ unloading
    def _unload_if(self, condition: Callable[[], bool]) -> bool:
        with self._lock:
            if not self._loaded or self._pins or self._attempt is not None or not condition():
                return False
            value, self._value, self._loaded = self._value, None, False
            self.unloads += 1
        if self._unload is not None:
            try:
                self._unload(cast("T", value))
            except Exception:
                _log.exception("unloading model %r failed", self._name)
        del value
        _log.info("unloaded model %r", self._name)
        return True

    def _forget(self) -> bool:
        """Mark the model unloaded without calling ``unload`` (something else freed it)."""
        with self._lock:
            if not self._loaded or self._pins or self._attempt is not None:
                return False
            self._value, self._loaded = None, False
            self.unloads += 1
        return True

    def unload(self) -> bool:
        """Unload now unless pinned or not loaded; return True when it unloaded."""
        return self._unload_if(lambda: True)

    def unload_if_idle(self, now: float | None = None) -> bool:
        """Unload when unused for ``idle_ttl`` (by *now*, a clock reading); True if it did."""
        ttl = self.idle_ttl_s
        if ttl is None:
            return False
        return self._unload_if(
            lambda: (self.clock() if now is None else now) - self._last_used_s >= ttl
        )

    def uses(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: the call runs with the model loaded and pinned, passed as first argument."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self as model:
                    return await fn(model, *args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self as model:
                return fn(model, *args, **kwargs)

        return wrapper


MIN_BUDGET_PERCENT = 0.01
"""The smallest share of the limit a pool budget may be (1.6 MiB of 16 GiB): below it a
share is a typo, not a budget."""


class ModelPool:
    """Several lazy models under one memory budget; idle ones are evicted LRU first.

    ``budget`` is bytes, ``"16GiB"`` or a share of the effective memory limit (``"50%"``,
    above 0); ``None`` means only the machine's headroom counts. A share is resolved when
    the pool is made; while the limit is unknown it is resolved at the next load that can
    read it, and until then only the machine's headroom counts. ``guard`` (optional) is
    where the machine headroom comes from; without it a fresh :func:`resguard.snapshot` is
    read.
    """

    def __init__(
        self,
        budget: int | str | None = None,
        *,
        guard: HeadroomSource | None = None,
        models: Iterable[LazyModel[Any]] = (),
        name: str = "pool",
    ) -> None:
        self._budget_share: float | None = None
        self._budget_bytes: int | None = None
        if budget is None:
            pass
        elif isinstance(budget, bool) or not isinstance(budget, (int, float, str)):
            raise InvalidType(
                f"pool budget={budget!r} must be bytes, a size such as "
                "'16GiB' or a share of the memory limit such as '50%'"
            )
        elif is_percent(budget):
            try:
                share = parse_percent(budget)
            except (InvalidValue, InvalidType) as error:
                raise type(error)(f"pool budget: {error}") from None
            if share < MIN_BUDGET_PERCENT:
                raise InvalidValue(
                    f"pool budget={budget!r} must be a share of at least "
                    f"{MIN_BUDGET_PERCENT:g}% (a smaller one would refuse "
                    "every load); give bytes for a tiny budget"
                )
            self._budget_share = share
            self._resolve_budget()
        else:
            self._budget_bytes = _size_of(budget, "pool budget")
            if self._budget_bytes <= 0:
                raise InvalidValue(f"pool budget={budget!r} must be above 0 bytes")
        if guard is not None and not isinstance(guard, HeadroomSource):
            raise InvalidType(f"guard must have headroom_bytes() (a resguard.Guard), not {guard!r}")
        if not isinstance(name, str) or not name.strip():
            raise InvalidType(f"pool name={name!r} must be a non-empty string")
        self.guard = guard
        self.name = name
        self._lock = threading.RLock()
        self._models: list[LazyModel[Any]] = []
        self._order = 0
        self._used_order: dict[int, int] = {}
        if isinstance(models, (str, bytes)) or not isinstance(models, Iterable):  # type: ignore[unreachable]
            raise InvalidType(
                f"models={models!r} is not a list of LazyModel; expected e.g. "
                f"[LazyModel(load_small), LazyModel(load_large)]"
            )
        for model in models:
            self.add(model)

    def _resolve_budget(self) -> None:
        """Turn a share of the limit into bytes once the limit is known."""
        if self._budget_share is None or self._budget_bytes is not None:
            return
        from resguard.snapshot import snapshot

        limit = snapshot(children=False).memory.limit
        if limit is None:
            _faults.failed(
                f"pool {getattr(self, 'name', 'pool')!r} budget",
                f"the memory limit is unknown, so {self._budget_share:g}% of it "
                "cannot be resolved yet; only the machine's headroom counts",
            )
            return
        self._budget_bytes = max(1, round(self._budget_share * int(limit) / 100))

    @property
    def budget_bytes(self) -> int | None:
        """The budget in bytes; ``None``: no budget (or a share of a limit not known yet)."""
        return self._budget_bytes

    def add(self, model: LazyModel[Any]) -> LazyModel[Any]:
        """Put *model* in the pool (a model belongs to one pool)."""
        if not isinstance(model, LazyModel):
            raise InvalidType(f"a ModelPool holds LazyModel objects, not {model!r}")
        if model.pool is not None and model.pool is not self:
            raise InvalidValue(f"model {model.name!r} already belongs to pool {model.pool.name!r}")
        with self._lock:
            if model.pool is None:
                model.pool = self
                self._models.append(model)
                self._touch(model)
        return model

    def lazy(
        self, load: Callable[[], T], unload: Callable[[T], object] | None = None, **kwargs: Any
    ) -> LazyModel[T]:
        """Make a :class:`LazyModel` that belongs to this pool."""
        return LazyModel(load, unload, pool=self, **kwargs)

    @property
    def models(self) -> tuple[LazyModel[Any], ...]:
        return tuple(self._models)

    def _touch(self, model: LazyModel[Any]) -> None:
        with self._lock:
            self._order += 1
            self._used_order[id(model)] = self._order

    def used_bytes(self, exclude: LazyModel[Any] | None = None) -> int:
        """Sizes of the members that are loaded or loading."""
        return sum(
            m.size_bytes for m in self._models if m is not exclude and (m.loaded or m.loading)
        )

    def _pending_bytes(self, exclude: LazyModel[Any] | None) -> int:
        return sum(m.size_bytes for m in self._models if m is not exclude and m.loading)

    def headroom_bytes(self, exclude: LazyModel[Any] | None = None) -> int | None:
        """Bytes a new load may take now: the budget left and the machine's headroom
        (``None`` when neither is known: no budget and the machine's memory unreadable)."""
        self._resolve_budget()
        machine = _headroom(self.guard)
        if machine is not None:
            machine -= self._pending_bytes(exclude)
        if self.budget_bytes is None:
            return machine
        budget_left = self.budget_bytes - self.used_bytes(exclude)
        return budget_left if machine is None else min(machine, budget_left)

    def idle_models(self, exclude: Sequence[LazyModel[Any]] = ()) -> list[LazyModel[Any]]:
        """Loaded, unpinned members, least recently used first."""
        with self._lock:
            idle = [
                m
                for m in self._models
                if m.loaded and not m.pinned and not m.loading and all(m is not e for e in exclude)
            ]
            return sorted(idle, key=lambda m: self._used_order.get(id(m), 0))

    def unload_idle(self, now: float | None = None) -> list[LazyModel[Any]]:
        """Unload the members whose ``idle_ttl`` has passed; return them."""
        return [m for m in list(self._models) if m.unload_if_idle(now)]

    def _make_room(self, model: LazyModel[Any], size: int) -> None:
        with self._lock:
            self.unload_idle()
            headroom = self.headroom_bytes(exclude=model)
            if headroom is None:
                return  # unknown: admitted (logged once by _headroom)
            freed = 0
            evicted: list[str] = []
            while headroom + freed < size:
                victims = self.idle_models(exclude=[model])
                if not victims:
                    raise ResourceExhausted(
                        f"no room to load model {model.name!r}: it needs {format_bytes(size)}, "
                        f"{format_bytes(max(headroom + freed, 0))} is free in pool "
                        f"{self.name!r} and no idle model is left to evict",
                        reason="memory",
                        retry_after=5.0,
                        numbers={
                            "size_bytes": size,
                            "headroom_bytes": headroom + freed,
                            "budget_bytes": self.budget_bytes,
                            "evicted": evicted,
                        },
                    )
                victim = victims[0]
                victim_size = victim.size_bytes
                if victim.unload():
                    freed += victim_size
                    evicted.append(victim.name)
            if evicted:
                _log.info("pool %r evicted %s to load %r", self.name, evicted, model.name)

    def choose(self, variants: Sequence[LazyModel[Any]]) -> LazyModel[Any]:
        """The largest variant that fits now (counting idle members as evictable).

        A variant that is already loaded always fits. Raises ResourceExhausted when none
        fits. Variants need not be members of the pool; members are added.
        """
        if not isinstance(variants, Sequence) or isinstance(variants, (str, bytes)):  # type: ignore[unreachable]
            raise InvalidType(f"choose() takes a list of LazyModel variants, not {variants!r}")
        if not variants:
            raise InvalidValue("choose() needs at least one model variant")
        for variant in variants:
            self.add(variant)
        with self._lock:
            headroom = self.headroom_bytes()
            ranked = sorted(variants, key=lambda m: m.size_bytes, reverse=True)
            if headroom is None:
                return ranked[0]  # unknown room: the largest (logged once by _headroom)
            free = headroom + sum(m.size_bytes for m in self.idle_models())
            for variant in ranked:
                if variant.loaded or variant.loading or variant.size_bytes <= free:
                    return variant
        smallest = ranked[-1]
        raise ResourceExhausted(
            f"none of the variants fits: the smallest, {smallest.name!r}, needs "
            f"{format_bytes(smallest.size_bytes)} and {format_bytes(max(free, 0))} is free",
            reason="memory",
            retry_after=5.0,
            numbers={"headroom_bytes": free, "sizes": {m.name: m.size_bytes for m in ranked}},
        )


class _Sweeper:
    """One daemon thread for all lazy models with a TTL; runs only while one is loaded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: weakref.WeakSet[LazyModel[Any]] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, model: LazyModel[Any]) -> None:
        with self._lock:
            self._models.add(model)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="resguard-model-sweeper", daemon=True
                )
                self._thread.start()
            else:
                self._wake.set()  # a shorter TTL may need an earlier look

    def _interval_s(self, models: list[LazyModel[Any]]) -> float:
        ttls = [m.idle_ttl_s for m in models if m.idle_ttl_s is not None]
        return min(30.0, max(0.05, min(ttls) / 4)) if ttls else 1.0

    def _run(self) -> None:
        while True:
            with self._lock:
                models = [m for m in self._models if m.loaded or m.loading]
                if not models:
                    self._thread = None
                    return
                interval_s = self._interval_s(models)
            del models  # hold no strong references while waiting
            self._wake.wait(interval_s)
            self._wake.clear()
            for model in list(self._models):
                try:
                    model.unload_if_idle()
                except Exception:  # never let one model stop the sweeper
                    _log.exception("idle check of model %r failed", model.name)


_sweeper = _Sweeper()
