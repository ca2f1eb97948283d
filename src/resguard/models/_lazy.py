"""LazyModel: a model loaded on first use, pinned while used, unloaded when idle or short."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import anyio
import anyio.to_thread

from resguard import reclaim as _reclaim
from resguard._errors import InvalidType, InvalidValue, ResourceExhausted
from resguard._modules.clock import Clock, monotonic
from resguard._modules.log import emit, fields
from resguard._modules.waiter import Waiter
from resguard.models._claim import (
    Attempt,
    Claim,
    Claimant,
    Owner,
    claim,
    reentered_error,
    timed_out_error,
)
from resguard.models._common import (
    DEFAULT_WAIT_S,
    HeadroomSource,
    check_duration,
    check_flag,
    headroom_from,
    log,
    size_of,
    sizes_apart,
)
from resguard.models._sweeper import sweeper
from resguard.units import format_bytes, named, parse_duration

if TYPE_CHECKING:
    from resguard.models._pool import ModelPool

__all__ = ["LazyModel"]

T = TypeVar("T")


def _this_thread() -> Owner:
    return ("thread", threading.get_ident())


def _this_task() -> Owner:
    return ("task", anyio.get_current_task().id)


def _min_idle_s(value: object) -> float:
    """``reclaim_min_idle``: a finite duration of 0 s or more."""
    seconds = named("reclaim_min_idle", parse_duration, value)
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidValue(
            f"reclaim_min_idle={value!r} must be a duration of 0 or more (e.g. 30, '1m')"
        )
    return seconds


def _check_arguments(
    load: object,
    unload: object,
    guard: object,
    size: object,
    name: object,
    clock: object,
    pool: object,
    headroom: object = None,
) -> None:
    """Refuse what a LazyModel cannot work with, before anything is set."""
    from resguard.models._pool import ModelPool

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
    if headroom is not None and not isinstance(headroom, HeadroomSource):
        raise InvalidType(
            f"headroom={headroom!r} must have headroom_bytes() (a resguard.models."
            "HeadroomSource measuring where the model's memory lives)"
        )
    if not callable(size):
        size_of(size, "size")  # type: ignore[arg-type]  # validated here, refused if not a size
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidType(f"name={name!r} must be a non-empty string")
    if not callable(clock):
        raise InvalidType(f"clock={clock!r} must be a callable returning seconds")
    if pool is not None and not isinstance(pool, ModelPool):
        raise InvalidType(f"pool={pool!r} must be a resguard.ModelPool")


class _Publish:
    """Publishes a load's outcome in its model when the ``with`` block running it ends:
    the value the block set, or the failure that ended it (sync and async loads alike)."""

    __slots__ = ("attempt", "model", "pin", "started_s", "value")

    def __init__(self, model: LazyModel[Any], attempt: Attempt, pin: bool) -> None:
        self.model = model
        self.attempt = attempt
        self.pin = pin
        self.value: Any = None
        self.started_s = 0.0

    def __enter__(self) -> _Publish:
        self.started_s = self.model.clock()
        return self

    def __exit__(self, kind: object, failure: BaseException | None, tb: object) -> None:
        if failure is None:
            elapsed_s = self.model.clock() - self.started_s
            self.model._finish(self.attempt, self.value, None, self.pin, elapsed_s)
        else:
            self.model._finish(self.attempt, None, failure, self.pin, 0.0)


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

    ``register``: whose reclaim ladder it is on (``True``: process-wide, a Monitor or
    Ladder: that one's), which unloads it only once unused for ``reclaim_min_idle``
    (default :data:`~resguard.reclaim.DEFAULT_MIN_IDLE_S`).

    ``headroom`` (a :class:`~resguard.models.HeadroomSource`) is where the model's memory
    lives when that is not this process: a model server (Ollama, vLLM, ...) whose
    ``headroom_bytes()`` is the room on the server's side. A pool without a ``guard`` reads
    its members' ``headroom`` instead of this machine's; a model outside a pool checks it
    before loading instead of ``guard`` (which still takes any reservation)."""

    def __init__(
        self,
        load: Callable[[], T] | Callable[[], Awaitable[T]],
        unload: Callable[[T], object] | None = None,
        *,
        size: int | str | Callable[[], int],
        idle_ttl: float | str | None = None,
        name: str | None = None,
        guard: HeadroomSource | None = None,
        headroom: HeadroomSource | None = None,
        pool: ModelPool | None = None,
        clock: Clock = monotonic,
        sweep: bool = True,
        register: _reclaim.RegisterTarget = True,
        wait: float | str = DEFAULT_WAIT_S,
        reclaim_min_idle: float | str = _reclaim.DEFAULT_MIN_IDLE_S,
    ) -> None:
        _check_arguments(load, unload, guard, size, name, clock, pool, headroom)
        check_flag(sweep, "sweep")
        registry = _reclaim.registry_for(register)
        self.reclaim_min_idle_s = _min_idle_s(reclaim_min_idle)
        self.wait_s = cast("float", check_duration(wait, "wait"))
        self._load = load
        self._unload = unload
        self._size = size
        self._known_size: int | None = None if callable(size) else size_of(size, "size")
        self.idle_ttl_s = check_duration(idle_ttl, "idle_ttl", allow_none=True)
        self._name = name or getattr(load, "__qualname__", None) or "model"
        self.guard = guard
        self.headroom = headroom
        self.clock = clock
        self._is_async = inspect.iscoroutinefunction(load)
        self._lock = threading.Lock()
        self._value: T | None = None
        self._loaded = False
        self._attempt: Attempt | None = None
        self._pins = 0
        self._last_used_s = clock()
        self._reload_s = 0.0
        self._sweep = sweep
        self.loads = 0
        self.unloads = 0
        self.pool: ModelPool | None = None
        if pool is not None:
            pool.add(self)
        if registry is not None:
            registry.register(self)

    # ------------------------------------------------------------------ state
    @property
    def name(self) -> str:
        """The model's name (for logs, metrics and the ladder)."""
        return self._name

    @property
    def size_bytes(self) -> int:
        """Memory the loaded model takes, in bytes."""
        size = size_of(self._size, f"size of model {self._name!r}")
        self._known_size = size  # what the repr shows (it never calls a size callable)
        return size

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
        return _describe(self)

    # ------------------------------------------------------------------ the ladder
    @property
    def cost(self) -> float:
        """``Cost.MODEL`` plus the measured reload time in seconds."""
        return _reclaim.Cost.MODEL + self._reload_s

    def _idle_enough(self) -> bool:  # under the lock, or as a hint
        return self.clock() - self._last_used_s >= self.reclaim_min_idle_s

    def reclaimable_bytes(self) -> int:
        """The size when loaded, not pinned and unused for ``reclaim_min_idle``; else 0."""
        if not self._loaded or self._pins or self._attempt is not None or not self._idle_enough():
            return 0
        try:
            return self.size_bytes
        except Exception:  # a size callable that fails must not break the ladder
            return 0

    def reclaim(self, target_bytes: int) -> int:
        """Unload it when :meth:`reclaimable_bytes` says so; return the bytes freed."""
        size = self.reclaimable_bytes()
        if size and self._unload_if(self._idle_enough):
            return size
        return 0

    # ------------------------------------------------------------------ loading
    def _next(self, caller: Claimant) -> Any:
        """Claim the model for *caller* (see :func:`claim`) and act on it: the value when
        READY (pinned when asked), the attempt to run (LOAD) or to wait for (WAIT); raises
        for the other outcomes."""
        waited, deadline_s = caller.waited, caller.deadline_s
        with self._lock:
            now_s = self.clock()
            outcome = claim(self._loaded, self._attempt, caller.me, waited, now_s, deadline_s)
            if outcome is Claim.READY:
                if caller.pin:
                    self._pins += 1
                self._last_used_s = now_s
                value = self._value
            elif outcome is Claim.LOAD:
                self._attempt = caller.waited = Attempt(caller.me)
                return outcome, self._attempt
            elif outcome is Claim.WAIT:
                caller.waited = self._attempt
                return outcome, self._attempt
        if outcome is Claim.READY:
            if self.pool is not None:
                self.pool._touch(self)
            return outcome, value
        if outcome is Claim.FAILED and waited is not None and waited.failure is not None:
            raise waited.failure
        if outcome is Claim.REENTERED:
            raise reentered_error(self._name)
        raise timed_out_error(self._name, now_s - (deadline_s - self.wait_s), self.wait_s)

    def _watch(self, attempt: Attempt, waiter: Waiter) -> bool:
        """Have *waiter* woken when *attempt* ends; False when it has ended already."""
        with self._lock:
            if attempt.done:
                return False
            attempt.waiters.append(waiter)
            return True

    def _caller(self, me: Owner, pin: bool) -> Claimant:
        return Claimant(me, pin, self.clock() + self.wait_s)

    def _left_s(self, caller: Claimant) -> float:
        return max(0.0, caller.deadline_s - self.clock())

    def _finish(
        self,
        attempt: Attempt,
        value: T | None,
        failure: BaseException | None,
        pin: bool,
        elapsed_s: float,
    ) -> None:
        if failure is not None and attempt.abandoned and isinstance(failure, Exception):
            emit(
                log,
                logging.WARNING,
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
            attempt.done = True
            waiters, attempt.waiters = attempt.waiters, []
        for waiter in waiters:
            waiter.wake()
        if failure is None:
            if self.pool is not None:
                self.pool._touch(self)
            if self._sweep and self.idle_ttl_s is not None:
                sweeper.add(self)

    def _make_room(self) -> None:
        size = self.size_bytes
        if self.pool is not None:
            self.pool._make_room(self, size)
            return
        _check_room(self._name, size, self.headroom if self.headroom is not None else self.guard)

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

    def _run_attempt(self, attempt: Attempt) -> None:
        """Run a sync load for *attempt* to its end and publish it (result kept, never pinned):
        the caller may have gone (cancelled) by then, so the outcome lives in the model."""
        with self._lock:
            if attempt.done:  # its caller was cancelled before this thread started
                return
            attempt.owner = _this_thread()
        try:
            with _Publish(self, attempt, False) as publish:
                publish.value = self._load_sync()
        except Exception:
            return  # published in the attempt: its waiters and its caller raise it

    def _abandon_unstarted(self, attempt: Attempt, me: Owner, cancelled: BaseException) -> None:
        """End *attempt* when its caller *me* was cancelled before the worker thread started
        it (cancelled at the thread's start): else nobody would ever end it, and every later
        caller would wait for a load that never runs. A started load publishes itself."""
        with self._lock:
            if attempt.done or attempt.owner != me:
                return  # started: the worker thread publishes its outcome
            attempt.done = True  # a worker thread starting now leaves it alone
        self._finish(attempt, None, cancelled, False, 0.0)

    def _acquire(self, pin: bool) -> T:
        if self._is_async:
            raise InvalidType(
                f"model {self._name!r} has an async loader; use `async with` "
                "or `await model.aget()`"
            )
        caller = self._caller(_this_thread(), pin)
        outcome, got = self._next(caller)
        while outcome is not Claim.READY:
            if outcome is Claim.LOAD:
                with _Publish(self, got, pin) as publish:
                    publish.value = value = self._load_sync()
                return value
            waiter = caller.waiting()
            if self._watch(got, waiter):
                waiter.wait_thread(self._left_s(caller))
            outcome, got = self._next(caller)
        return cast("T", got)

    async def _aacquire(self, pin: bool) -> T:
        caller = self._caller(_this_task(), pin)
        while True:
            outcome, got = self._next(caller)
            if outcome is Claim.READY:
                return cast("T", got)
            if outcome is Claim.WAIT:
                waiter = caller.waiting()
                event = waiter.arm()  # before _watch looks: an end after the look still wakes
                if self._watch(got, waiter):
                    with anyio.move_on_after(self._left_s(caller)):
                        await event.wait()
            elif not self._is_async:
                # The load runs to its end in a worker thread and publishes itself; this
                # caller only waits for it, so a cancellation returns at once.
                try:
                    await anyio.to_thread.run_sync(self._run_attempt, got, abandon_on_cancel=True)
                except anyio.get_cancelled_exc_class() as cancelled:
                    got.abandoned = True
                    self._abandon_unstarted(got, caller.me, cancelled)
                    raise
            else:
                with _Publish(self, got, pin) as publish:
                    publish.value = value = await self._load_async()
                return value

    def get(self) -> T:
        """The model, loaded if needed (not pinned: the ladder may unload it any time)."""
        with self._lock:  # claim()'s READY written out: 0.5 µs, not 1.1 (bench_models)
            if self._loaded and self.pool is None and not self._is_async:
                self._last_used_s = self.clock()
                return cast("T", self._value)
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
        with self._lock:  # claim()'s READY written out, as in get(): no pool to tell
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
        _release(self._name, self._unload, value)
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
        return _pinned_calls(self, fn)


def _release(name: str, unload: Callable[[Any], object] | None, value: Any) -> None:
    """Call the model's *unload* (a failure is logged, never raised) and say it once."""
    extra = fields("model_unload", model=name)
    if unload is not None:
        try:
            unload(value)
        except Exception:
            emit(log, logging.ERROR, "unloading model %r failed", name, extra=extra, exc_info=True)
    del value
    emit(log, logging.INFO, "unloaded model %r", name, extra=extra)


def _check_room(name: str, size: int, source: HeadroomSource | None) -> None:
    """Refuse a lone model's load of *size* bytes when *source* (the machine when
    ``None``) has less room; an unknown room admits it."""
    headroom = headroom_from(source)
    if headroom is not None and headroom < size:
        need_text, free_text = sizes_apart(size, max(headroom, 0))
        raise ResourceExhausted(
            f"no room to load model {name!r}: it needs {need_text}; {free_text} is free",
            reason="memory",
            retry_after=5.0,
            numbers={"size_bytes": size, "headroom_bytes": headroom},
        )


def _describe(lazy: LazyModel[Any]) -> str:
    """The repr: name, state (pinned, loaded, loading, unloaded) and size, formatted. A
    size callable is never called here (it may ask a server): its last answer is shown,
    ``size=?`` before the first. Never raises."""
    state = (
        "pinned"
        if lazy._pins
        else "loaded"
        if lazy._loaded
        else ("loading" if lazy._attempt else "unloaded")
    )
    try:
        known = lazy._known_size
        size = "?" if known is None else format_bytes(known)
    except Exception:  # a repr must never raise
        size = "?"
    return f"<LazyModel {lazy._name!r} {state} size={size}>"


def _pinned_calls(lazy: LazyModel[Any], fn: Callable[..., Any]) -> Callable[..., Any]:
    """*fn* (sync or async) called with *lazy*'s model, loaded and pinned for the call."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            async with lazy as model:
                return await fn(model, *args, **kwargs)

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lazy as model:
            return fn(model, *args, **kwargs)

    return wrapper
