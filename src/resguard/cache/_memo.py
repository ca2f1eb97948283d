""":func:`memoize`: a sync or async function's results in an :class:`~resguard.cache.LRUCache`,
one computation per key at a time.

The decisions are made once, in :class:`_Memo`, for both kinds of function: a miss's role
(lead, wait for the computation in flight, or compute alone), what a finished wait means,
storing or abandoning a computation. The sync and the async wrapper differ only in how they
wait (through :class:`~resguard.cache._flight.SingleFlight`) and call the function.
"""

from __future__ import annotations

import functools
import inspect
import threading
from builtins import callable, getattr, hash, isinstance, len, next, type  # noqa: UP029 (see _core)
from collections.abc import Awaitable, Callable, Hashable
from types import TracebackType
from typing import Any, Final, ParamSpec, Protocol, TypeVar, cast, overload

from resguard._errors import InvalidType
from resguard._modules.clock import Clock, monotonic
from resguard.cache._core import MISSING, Dropped, MemoAccess
from resguard.cache._flight import Call, Outcome, Role, SingleFlight, may_wait, outcome
from resguard.cache._hits import ATOMIC_KEYS, dict_get, od_move_to_end
from resguard.cache._lru import LRUCache
from resguard.cache._sizeof import sizeof as default_sizeof
from resguard.cache._stats import CacheInfo, CacheStats, check_callable
from resguard.reclaim import RegisterTarget

__all__ = ["Memoized", "memoize"]

P = ParamSpec("P")
R = TypeVar("R")

_HIT, _WAIT = Role.HIT, Role.WAIT


class _Memo:
    """The decisions both wrappers of one memoized function share; they only wait and call."""

    __slots__ = ("access", "flight", "merge")

    def __init__(self, cache: LRUCache[Any, Any], merge: bool) -> None:
        self.access = MemoAccess(cache)
        self.flight = SingleFlight(self.access.lock)
        self.merge = merge

    def claim(self, key: Any, token: Hashable) -> _Step:
        """The cache's one locked lookup and, on a miss, the key's role, in one lock.

        A nested call (from a key's ``__eq__`` while the cache is busy) neither merges nor
        stores: it computes and returns.
        """
        access = self.access
        nested = access.is_nested()
        dropped: Dropped = []
        with access.lock:
            value = access.find_locked(key, nested, dropped)
            if value is MISSING:
                role, call = self.flight.join_locked(key, token, self.merge and not nested)
        if dropped:
            access.notify(dropped)
        if value is not MISSING:
            return _Step(self, key, token, _HIT, None, value)
        if (
            role is Role.WAIT
            and call is not None
            and not may_wait(
                isinstance(token, tuple), call.by_task, call.thread == threading.get_ident()
            )
        ):
            role, call = Role.ALONE, None  # its leader would stall: compute on our own
        return _Step(self, key, token, role, call)

    def after_wait(self, step: _Step, waited: bool) -> _Step:
        """The next step once *step*'s wait is over (not *waited*: it would have deadlocked)."""
        call = step.call
        if not waited or call is None:
            return _Step(self, step.key, step.token, Role.ALONE, None)
        result = outcome(call.done, call.error)
        if result is Outcome.VALUE:
            self.access.count_merged()
            return _Step(self, step.key, step.token, _HIT, None, call.value)
        if result is Outcome.ERROR and call.error is not None:
            raise call.error  # the leader's own exception, as a direct call would raise
        return self.claim(step.key, step.token)  # the leader stopped without an answer

    def store(self, step: _Step) -> None:
        """Cache the computed value (skipping it when too large) and release the waiters.

        They are released whatever happens: when storing raises (a key whose ``__eq__``
        fails on a hash collision, a MemoryError), they get that error, as the leader does.
        """
        try:
            dropped = self.access.store(step.key, step.value)
        except BaseException as exc:
            self.flight.finish(step.key, step.call, MISSING, exc)
            raise
        self.flight.finish(step.key, step.call, step.value, None)
        self.access.notify(dropped)

    def abandon(self, step: _Step, error: BaseException) -> None:
        """The computation failed or was cancelled: nothing is cached; waiters see *error*
        (an Exception) or try again."""
        self.flight.finish(step.key, step.call, MISSING, error)


class _Step:
    """One call's role for its key; around the computation (``with step:``), it stores the
    value set on it, or abandons the computation when it raises."""

    __slots__ = ("call", "key", "memo", "role", "token", "value")

    def __init__(
        self,
        memo: _Memo,
        key: Any,
        token: Hashable,
        role: Role,
        call: Call | None,
        value: Any = None,
    ) -> None:
        self.memo, self.key, self.token = memo, key, token
        self.role, self.call, self.value = role, call, value

    def __enter__(self) -> _Step:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if error is not None:
            self.memo.abandon(self, error)
        else:
            self.memo.store(self)


class _HashedKey(list):  # type: ignore[type-arg]
    """A call's arguments with their hash computed once (the cache hashes a key twice).

    No ``__init__`` of its own: list's C one is a third of the cost of a Python one, so
    :func:`_make_key` sets ``hash_value`` itself.
    """

    __slots__ = ("hash_value",)

    hash_value: int

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
    key = _HashedKey(items)
    key.hash_value = hash(items)  # raises TypeError for an unhashable argument, as before
    return key


class Memoized(Protocol[P, R]):
    """A memoized function: call it as the original; inspect and clear its cache."""

    cache: LRUCache[Any, Any]
    __wrapped__: Callable[P, R]
    __name__: str
    __qualname__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def __get__(self, instance: object, owner: type | None = None) -> Callable[..., R]: ...

    def cache_info(self) -> CacheInfo:
        """``functools.lru_cache`` style: hits, misses, maxsize, currsize; in bytes when
        bounded by ``max_bytes`` (as ``cachetools.cached(info=True)`` reports a cache
        bounded by size), else in items."""
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
    register: RegisterTarget = True,
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
    register: RegisterTarget = True,
) -> Any:
    """Cache a sync or ``async`` function's results in an :class:`LRUCache`.

    ``@memoize`` alone caches without bound (until memory pressure shrinks it), like
    ``functools.cache``; ``max_bytes``, ``max_items`` and ``ttl`` bound it as in
    :class:`LRUCache`. ``key(*args, **kwargs)`` replaces the default key (the arguments,
    keyword order included; with ``typed=True`` their types too, as in ``lru_cache``).

    With ``merge=True`` (the default) concurrent callers of the same key wait for the first
    one's computation instead of starting their own (stampede protection): threads and tasks
    (asyncio and trio) wait through one waiter that wakes either at once. A failure is
    not cached: callers already waiting get the same exception; if the first caller is
    cancelled, the waiters try again and one of them computes. A caller whose wait would
    deadlock (the function calling itself with the same key, or two keys waiting on each
    other across threads or tasks) computes on its own instead. ``merge=False`` gives
    ``functools.lru_cache``'s behaviour: every missing caller computes.

    A result too large for ``max_bytes`` is returned and not cached (``too_large`` in
    :meth:`~Memoized.cache_stats`). ``register`` is :class:`LRUCache`'s.
    """
    check_callable(key, "key", optional=True)
    for flag, what in ((typed, "typed"), (merge, "merge")):
        if not isinstance(flag, bool):
            raise InvalidType(f"{what}={flag!r} is not a bool")
    cache: LRUCache[Any, Any] = LRUCache(
        max_bytes, max_items, ttl, sizeof, on_evict, clock=clock, name=name, register=register
    )

    def decorate(function: Callable[..., Any]) -> Any:
        if not callable(function):
            raise InvalidType(f"memoize expects a function, got {function!r}")
        memo = _Memo(cache, merge)
        if name is None:
            memo.access.rename(f"memoize:{getattr(function, '__qualname__', repr(function))}")
        if inspect.iscoroutinefunction(function):
            wrapper = _async_wrapper(function, memo, key, typed)
        else:
            wrapper = _sync_wrapper(function, memo, key, typed)
        functools.update_wrapper(wrapper, function)
        _attach(wrapper, cache, memo, typed, merge)
        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


def info_of(stats: CacheStats) -> CacheInfo:
    """``cache_info()`` from the cache's counters: bounded by bytes, maxsize and currsize
    are bytes (cachetools' units for a cache bounded by size, so ``currsize / maxsize`` is
    how full it is); else items (functools'), maxsize ``None`` when unbounded."""
    if stats.max_bytes is not None:
        return CacheInfo(stats.hits, stats.misses, stats.max_bytes, stats.bytes)
    return CacheInfo(stats.hits, stats.misses, stats.max_items, stats.items)


def _attach(wrapper: Any, cache: LRUCache[Any, Any], memo: _Memo, typed: bool, merge: bool) -> None:
    def cache_info() -> CacheInfo:
        return info_of(cache.stats())

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
            "maxsize": cache.max_bytes if cache.max_bytes is not None else cache.max_items,
        }

    wrapper.cache = cache
    wrapper.cache_info = cache_info
    wrapper.cache_clear = cache_clear
    wrapper.cache_stats = cache.stats
    wrapper.cache_parameters = cache_parameters
    wrapper._single_flight = memo.flight  # for tests: what is in flight


def _sync_wrapper(
    function: Callable[..., Any],
    memo: _Memo,
    key: Callable[..., Hashable] | None,
    typed: bool,
) -> Callable[..., Any]:
    access = memo.access
    core, clock, expiring = access.core, access.clock, access.expiring
    hits, next_ = access.counters.hit_tally.count, next  # next(hits) counts a hit
    claim, after_wait, wait, hit_locked = (
        memo.claim,
        memo.after_wait,
        memo.flight.wait_thread,
        access.hit,
    )
    make_key, fast_types, get_ident = _make_key, _FAST_TYPES, threading.get_ident
    atomic_keys, get, move_to_end = ATOMIC_KEYS, dict_get, od_move_to_end
    # Locals, not globals: the wrapper may itself replace builtins.len (and a bound method
    # saves a lookup on every hit).
    len_, type_ = len, type
    plain = key is None and not typed  # the default key of one int or str is the argument

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # The hit, written out rather than through claim() (the cache's one lookup): it is the
        # figure the benchmark holds against functools.lru_cache, and calls would double it.
        if plain and not kwargs and len_(args) == 1 and type_(args[0]) in fast_types:
            k = args[0]  # as _make_key would, without the call; an atomic key
        else:
            k = key(*args, **kwargs) if key is not None else make_key(args, kwargs, typed)
            if type_(k) not in atomic_keys:
                value = hit_locked(k)
                return miss(k, args, kwargs) if value is MISSING else value
        data = core._fast
        if data is None:
            value = hit_locked(k)
            return miss(k, args, kwargs) if value is MISSING else value
        entry = get(data, k)  # lock-free (see _hits)
        if entry is not None and (not expiring or entry[2] > clock()):
            try:
                move_to_end(data, k)
            except KeyError:  # evicted since it was read: it was live then
                pass
            next_(hits)
            return entry[0]
        return miss(k, args, kwargs)  # its locked lookup counts the miss (or a late hit)

    def miss(k: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        step = claim(k, get_ident())
        while step.role is _WAIT:
            step = after_wait(step, wait(cast(Call, step.call), step.token))
        if step.role is _HIT:
            return step.value
        with step:
            step.value = function(*args, **kwargs)
        return step.value

    return wrapper


def _async_wrapper(
    function: Callable[..., Awaitable[Any]],
    memo: _Memo,
    key: Callable[..., Hashable] | None,
    typed: bool,
) -> Callable[..., Awaitable[Any]]:
    import anyio

    claim, after_wait, wait = memo.claim, memo.after_wait, memo.flight.wait_task
    current_task = anyio.get_current_task

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = key(*args, **kwargs) if key is not None else _make_key(args, kwargs, typed)
        step = claim(k, ("task", current_task().id))  # a hit too: a task costs more than it
        while step.role is _WAIT:
            waited = await wait(cast(Call, step.call), step.token)
            step = after_wait(step, waited)
        if step.role is not _HIT:
            with step:
                step.value = await function(*args, **kwargs)
        return step.value

    return wrapper
