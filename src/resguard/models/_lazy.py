"""LazyModel: a model loaded on first use, pinned while used, unloaded when idle or short."""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import anyio
import anyio.to_thread

from resguard import reclaim as _reclaim
from resguard._errors import InvalidState, InvalidType, ResourceExhausted
from resguard._modules.clock import Clock, monotonic
from resguard.models._common import (
    DEFAULT_WAIT_S,
    HeadroomSource,
    check_duration,
    check_flag,
    headroom_from,
    log,
    size_of,
)
from resguard.models._sweeper import sweeper
from resguard.units import format_bytes

if TYPE_CHECKING:
    from resguard.models._pool import ModelPool

__all__ = ["LazyModel"]

T = TypeVar("T")


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
            size_of(size, "size")  # validate now
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise InvalidType(f"name={name!r} must be a non-empty string")
        if not callable(clock):
            raise InvalidType(f"clock={clock!r} must be a callable returning seconds")
        from resguard.models._pool import ModelPool

        if pool is not None and not isinstance(pool, ModelPool):
            raise InvalidType(f"pool={pool!r} must be a resguard.ModelPool")
        check_flag(sweep, "sweep")
        check_flag(register, "register")
        self.wait_s = cast("float", check_duration(wait, "wait"))
        self._load = load
        self._unload = unload
        self._size = size
        self.idle_ttl_s = check_duration(idle_ttl, "idle_ttl", allow_none=True)
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
        return size_of(self._size, f"size of model {self._name!r}")

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
            log.warning(
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
                sweeper.add(self)

    def _make_room(self) -> None:
        size = self.size_bytes
        if self.pool is not None:
            self.pool._make_room(self, size)
            return
        headroom = headroom_from(self.guard)
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
                log.exception("unloading model %r failed", self._name)
        del value
        log.info("unloaded model %r", self._name)
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
