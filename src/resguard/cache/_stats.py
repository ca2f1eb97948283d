"""The cache's numbers and argument checks: the counters record, :class:`CacheStats`,
:class:`CacheInfo`, :class:`ValueTooLarge`, and the validation of bounds and hooks."""

from __future__ import annotations

# Bound at import (see _core): code may memoize a builtin and put the wrapper in its place.
from builtins import callable, getattr, isinstance, len  # noqa: UP029
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import attrs

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.tally import Tally
from resguard.units import named, parse_bytes, parse_duration

__all__ = [
    "CacheInfo",
    "CacheStats",
    "Counters",
    "ValueTooLarge",
    "check_callable",
    "check_max_bytes",
    "check_max_items",
    "check_ttl",
]


class ValueTooLarge(InvalidValue):
    """A value is larger than the cache's ``max_bytes`` (or the cache holds nothing: a bound
    of 0); nothing was stored. ``size_bytes`` is its cost, ``max_bytes`` the bound (0 for
    ``max_items=0``)."""

    def __init__(self, message: str, *, size_bytes: int, max_bytes: int) -> None:
        super().__init__(message)
        self.size_bytes = size_bytes
        self.max_bytes = max_bytes


class Counters:
    """A cache's counters in one record, the one list of their names (stats, pickles and
    resets read :attr:`FIELDS`). ``hits`` and ``misses`` are :class:`Tally` objects, raised
    without the lock by a hit that does not take it; the others change under the cache's lock.
    Read them all under the lock."""

    # In the order pickles carry them (``broken`` last: older pickles have only nine).
    FIELDS: ClassVar[tuple[str, ...]] = (
        "hits",
        "misses",
        "evictions",
        "expirations",
        "shrinks",
        "shrink_evictions",
        "reclaimed_bytes",
        "too_large",
        "merged",
        "broken",
    )
    """The counters' names, in the order above."""
    _TALLIED: ClassVar[frozenset[str]] = frozenset({"hits", "misses"})

    evictions: int
    expirations: int
    shrinks: int
    shrink_evictions: int
    reclaimed_bytes: int
    too_large: int
    merged: int
    broken: int

    __slots__ = (*FIELDS[2:], "hit", "hit_tally", "miss", "miss_tally")

    hit: Callable[[], int]
    """Count one hit: lock-free (:attr:`Tally.tick`)."""
    miss: Callable[[], int]
    """Count one miss: lock-free (:attr:`Tally.tick`)."""

    def __init__(self) -> None:
        self.hit_tally, self.miss_tally = Tally(), Tally()
        self.hit, self.miss = self.hit_tally.tick, self.miss_tally.tick
        self.reset()

    def _set(self, field: str, value: int) -> None:
        if field in self._TALLIED:
            (self.hit_tally if field == "hits" else self.miss_tally).set(value)
        else:
            setattr(self, field, value)

    def _get(self, field: str) -> int:
        if field in self._TALLIED:
            return (self.hit_tally if field == "hits" else self.miss_tally).get()
        return getattr(self, field)  # type: ignore[no-any-return]

    @property
    def hits(self) -> int:
        """Hits so far (under the cache's lock)."""
        return self.hit_tally.get()

    @property
    def misses(self) -> int:
        """Misses so far (under the cache's lock)."""
        return self.miss_tally.get()

    def reset(self) -> None:
        """Every counter back to zero."""
        for field in self.FIELDS:
            self._set(field, 0)

    def as_tuple(self) -> tuple[int, ...]:
        """The counters in :attr:`FIELDS` order (what a pickle carries)."""
        return tuple(self._get(field) for field in self.FIELDS)

    def restore(self, values: tuple[int, ...]) -> None:
        """Set the counters from :meth:`as_tuple`'s values; missing trailing ones become 0."""
        padded = (*values, *(0,) * len(self.FIELDS))[: len(self.FIELDS)]
        for field, value in zip(self.FIELDS, padded, strict=True):
            self._set(field, value)

    def as_dict(self) -> dict[str, int]:
        return {field: self._get(field) for field in self.FIELDS}


@attrs.frozen(slots=True)
class CacheStats:
    """Counters and sizes of one cache at one moment.

    ``evictions`` are entries dropped to stay within ``max_bytes``/``max_items``;
    ``shrink_evictions`` and ``reclaimed_bytes`` are what :meth:`LRUCache.shrink` /
    :meth:`LRUCache.reclaim` removed (under memory pressure, or on request), in ``shrinks``
    calls; ``expirations`` are entries that outlived ``ttl``; ``too_large`` counts values not
    stored because they alone exceed ``max_bytes``; ``merged`` counts memoized calls that
    waited for another caller's computation of the same key instead of computing; ``broken``
    counts entries dropped because their key could no longer be found (its hash or equality
    changed after insertion).
    """

    hits: int
    misses: int
    evictions: int
    expirations: int
    shrinks: int
    shrink_evictions: int
    reclaimed_bytes: int
    too_large: int
    merged: int
    bytes: int
    items: int
    max_bytes: int | None
    max_items: int | None
    broken: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits over lookups, 0.0 to 1.0 (0.0 before the first lookup)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field plus ``hit_rate``."""
        result = attrs.asdict(self)
        result["hit_rate"] = self.hit_rate
        return result


class CacheInfo(NamedTuple):
    """``cache_info()`` of a memoized function, shaped like :func:`functools.lru_cache`'s.

    ``maxsize`` and ``currsize`` share one unit: bytes when the cache is bounded by
    ``max_bytes`` (as ``cachetools.cached(info=True)`` reports a cache bounded by size),
    else items (``maxsize`` ``None`` when unbounded). Every figure, both bounds included,
    is in ``cache_stats()``.
    """

    hits: int
    misses: int
    maxsize: int | None
    currsize: int


def check_max_bytes(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidType(
            f'max_bytes={value!r} is not a size; expected e.g. "512MiB", a number of bytes or None'
        )
    try:
        result = parse_bytes(value)
    except InvalidValue as exc:
        raise InvalidValue(f"max_bytes: {exc}") from None
    if result < 0:
        raise InvalidValue(
            f"max_bytes={value!r} must not be negative (0 stores nothing; None for no bound)"
        )
    if result == 0 and isinstance(value, (int, float)) and value != 0:
        raise InvalidValue(
            f"max_bytes={value!r} is less than 1 byte; expected 0 (store "
            "nothing), at least 1 byte, or None"
        )
    return result


def check_max_items(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"max_items={value!r} is not a whole number; expected e.g. 1000 or None")
    if value < 0:
        raise InvalidValue(
            f"max_items={value!r} must not be negative (0 stores nothing; None for no bound)"
        )
    return value


def check_ttl(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidType(f'ttl={value!r} is not a duration; expected e.g. "5m", 30 or None')
    result = named("ttl", parse_duration, value)
    if result <= 0:
        raise InvalidValue(f"ttl={value!r} must be longer than zero (or None for no expiry)")
    return result


def check_callable(value: object, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not callable(value):
        raise InvalidType(f"{what}={value!r} is not callable")
