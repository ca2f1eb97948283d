"""CPython's own lru_cache tests (test.test_functools.TestLRU), run against memoize.

The tests come with the interpreter (:mod:`plugins.peers`). They call
``self.module.lru_cache``; :data:`MERGING` and :data:`NOT_MERGING` give them an object whose
``lru_cache`` is :func:`lru_cache_on_memoize`, the whole adapter: ``lru_cache(maxsize=128,
typed=False)`` becomes ``memoize(max_items=maxsize, typed=typed)`` (a negative maxsize is 0,
and a function passed as maxsize is the bare ``@lru_cache``, as functools reads them).

They run twice: with ``merge=False``, which docs/caching.md documents as lru_cache's
behaviour, and with the default ``merge=True``. Tests that fail because of a deliberate API
difference are marked with the reason (strict: one that starts passing fails).
"""

from __future__ import annotations

import functools
import types
import unittest
from collections.abc import Callable
from typing import Any, cast

import pytest

from resguard.cache import memoize

from plugins.integration import unavailable
from plugins.peers import expected_difference, functools_tests


def lru_cache_on_memoize(merge: bool) -> Callable[..., Any]:
    """functools.lru_cache's signature, mapped onto memoize."""

    def lru_cache(maxsize: Any = 128, typed: bool = False) -> Any:
        if callable(maxsize) and not isinstance(maxsize, int):  # @lru_cache without arguments
            return lru_cache(128, typed)(maxsize)
        if maxsize is not None and maxsize < 0:
            maxsize = 0
        return memoize(max_items=maxsize, typed=typed, merge=merge)

    return lru_cache


def _module(merge: bool) -> types.SimpleNamespace:
    """What TestLRU reads from ``self.module``."""
    return types.SimpleNamespace(
        lru_cache=lru_cache_on_memoize(merge),
        _CacheInfo=functools._CacheInfo,  # a namedtuple, as memoize's CacheInfo
        WRAPPER_ASSIGNMENTS=functools.WRAPPER_ASSIGNMENTS,
        partial=functools.partial,
    )


NOT_MERGING = _module(merge=False)
MERGING = _module(merge=True)

_Function = Callable[..., int]


def _cached(module: types.SimpleNamespace) -> Callable[[_Function], _Function]:
    """``@module.lru_cache()``, typed for the definitions below."""
    return cast("Callable[[_Function], _Function]", module.lru_cache())


DIFFERENCES: dict[str, tuple[str, type[BaseException]]] = {
    "test_lru_cache_parameters": (
        "cache_parameters() also reports memoize's own options (max_bytes, max_items, ttl, "
        "merge) next to lru_cache's maxsize and typed",
        AssertionError,
    ),
}
"""Test name -> (why memoize differs on purpose, the exception it fails with), both runs."""

MERGING_EXCLUDED: dict[str, str] = {
    "test_lru_cache_threaded2": (
        "it requires every concurrent caller of one key to compute (the function waits on a "
        "barrier of all of them, and times out after 10 s otherwise); merge=True makes them "
        "wait for the first caller's result instead, which is the point of merging; the "
        "merge=False run passes it"
    ),
}
"""Tests not run with merge=True (they contradict merging itself), with the reason."""


def _excluded(test: Callable[..., None], reason: str) -> Callable[..., None]:
    @functools.wraps(test)
    def excluded(self: Any) -> None:
        pytest.skip(reason)

    return excluded


def _mark(
    cls: type, differences: dict[str, tuple[str, type[BaseException]]], excluded: dict[str, str]
) -> type:
    for name, (reason, raises) in differences.items():
        setattr(cls, name, expected_difference(getattr(cls, name), reason, raises))
    for name, reason in excluded.items():
        setattr(cls, name, _excluded(getattr(cls, name), reason))
    return cls


# test_pickle finds these by name, as it finds functools' own module-level cached function.
@_cached(NOT_MERGING)
def not_merging_cached_func(x: int, y: int) -> int:
    return 3 * x + y


@_cached(MERGING)
def merging_cached_func(x: int, y: int) -> int:
    return 3 * x + y


_suite = functools_tests()

if isinstance(_suite, str):
    _reason = _suite

    def test_functools_suite_is_available() -> None:
        unavailable(_reason)

else:

    class TestLRUOnMemoizeNotMerging(_suite.TestLRU, unittest.TestCase):  # type: ignore[name-defined,misc]
        """lru_cache's tests with merge=False: every missing caller computes."""

        module = NOT_MERGING
        cached_func = (not_merging_cached_func,)

        @_cached(NOT_MERGING)
        def cached_meth(self, x: int, y: int) -> int:
            return 3 * x + y

        @staticmethod
        @_cached(NOT_MERGING)
        def cached_staticmeth(x: int, y: int) -> int:
            return 3 * x + y

    class TestLRUOnMemoizeMerging(_suite.TestLRU, unittest.TestCase):  # type: ignore[name-defined,misc]
        """lru_cache's tests with memoize's default merge=True."""

        module = MERGING
        cached_func = (merging_cached_func,)

        @_cached(MERGING)
        def cached_meth(self, x: int, y: int) -> int:
            return 3 * x + y

        @staticmethod
        @_cached(MERGING)
        def cached_staticmeth(x: int, y: int) -> int:
            return 3 * x + y

    _mark(TestLRUOnMemoizeNotMerging, DIFFERENCES, {})
    _mark(TestLRUOnMemoizeMerging, DIFFERENCES, MERGING_EXCLUDED)


def test_the_adapter_maps_lru_cache_arguments() -> None:
    lru_cache = lru_cache_on_memoize(merge=False)
    assert lru_cache(maxsize=-5)(len).cache_parameters()["max_items"] == 0
    assert lru_cache(None)(len).cache_parameters()["max_items"] is None
    bare = lru_cache(len)
    assert bare.cache_parameters()["max_items"] == 128
    assert bare("abc") == 3
