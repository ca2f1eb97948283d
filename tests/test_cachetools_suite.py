"""cachetools' own CacheTestMixin and test_lru, run against resguard's LRUCache.

The suite is downloaded at test time (:mod:`plugins.peers`); nothing of it is committed.
:class:`CachetoolsLRU` is the whole adapter: it translates cachetools' constructor
``LRUCache(maxsize, getsizeof=None)`` into resguard's (``max_items`` when counting items,
``max_bytes`` plus ``sizeof`` when a sizer is given), as a user switching would. The tests
that fail because of a deliberate API difference are marked, each with its reason (see
"Switching from cachetools" in docs/caching.md); with ``xfail_strict`` a marked test that
starts passing fails, so this list cannot go stale.
"""

from __future__ import annotations

import math
import unittest
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from resguard.cache import LRUCache

from plugins.integration import unavailable
from plugins.peers import cachetools_test_module, cachetools_tests, expected_difference

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class CachetoolsLRU(LRUCache[K, V]):
    """``cachetools.LRUCache(maxsize, getsizeof=None)`` on top of resguard's LRUCache."""

    def __init__(self, maxsize: float, getsizeof: Callable[[Any], int] | None = None) -> None:
        if getsizeof is None and type(self).getsizeof is not CachetoolsLRU.getsizeof:
            getsizeof = self.getsizeof  # a subclass overriding getsizeof, as cachetools allows
        bound = None if maxsize == math.inf else maxsize
        if getsizeof is None:
            super().__init__(max_items=bound)  # type: ignore[arg-type]
        else:
            super().__init__(max_bytes=bound, sizeof=getsizeof)
            self.getsizeof = getsizeof  # type: ignore[method-assign,assignment]  # as cachetools


DIFFERENCES: dict[str, tuple[str, type[BaseException]]] = {
    "test_maxsize_negative": (
        "maxsize=-math.inf without getsizeof becomes max_items=-inf, and a count that is not "
        "a whole number is an InvalidType (a TypeError), where cachetools raises ValueError; "
        "maxsize=-1 raises InvalidValue (a ValueError) as cachetools does",
        TypeError,
    ),
}
"""Test name -> (why resguard differs on purpose, the exception the difference raises)."""


def _mark_differences(cls: type) -> type:
    for name, (reason, raises) in DIFFERENCES.items():
        test = getattr(cls, name, None)
        if test is not None:
            setattr(cls, name, expected_difference(test, reason, raises))
    return cls


_package = cachetools_tests()
_test_lru = cachetools_test_module("test_lru")

if isinstance(_package, str) or isinstance(_test_lru, str):
    _reason = _package if isinstance(_package, str) else str(_test_lru)

    def test_cachetools_suite_is_available() -> None:
        unavailable(_reason)

else:
    _test_lru.LRUCache = CachetoolsLRU  # type: ignore[attr-defined]  # its test_lru* methods build caches by this name

    @_mark_differences
    class TestCachetoolsMixinOnLRUCache(unittest.TestCase, _package.CacheTestMixin):  # type: ignore[name-defined,misc]
        """cachetools.CacheTestMixin: the behaviour every cachetools cache shares."""

        Cache = CachetoolsLRU

    @_mark_differences
    class TestCachetoolsLRUOnLRUCache(_test_lru.LRUCacheTest):  # type: ignore[name-defined,misc]
        """cachetools' tests/test_lru.py: the mixin again plus the LRU order tests."""

        Cache = CachetoolsLRU


def test_the_adapter_only_translates_the_constructor() -> None:
    by_items: CachetoolsLRU[str, int] = CachetoolsLRU(maxsize=3)
    assert (by_items.max_items, by_items.max_bytes) == (3, None)
    by_size: CachetoolsLRU[str, int] = CachetoolsLRU(maxsize=10, getsizeof=lambda v: v)
    assert (by_size.max_items, by_size.max_bytes) == (None, 10)
    assert CachetoolsLRU(maxsize=math.inf).maxsize == math.inf
    defined = {
        name
        for name, value in vars(CachetoolsLRU).items()
        if callable(value) and not name.startswith("__abstract")
    }
    assert defined == {"__init__"}
