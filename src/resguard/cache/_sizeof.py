"""How many bytes a cached value holds: fast for the values people cache, honest about the rest.

:func:`sizeof` is the default sizer of :class:`resguard.LRUCache` and :func:`resguard.memoize`.

- ``bytes``, ``str``, ``bytearray``, numbers: :func:`sys.getsizeof` (header + payload).
- ``memoryview``: the view plus the object it keeps alive (``view.obj``), because caching a
  slice keeps the whole buffer in memory.
- Buffers with an integer ``nbytes`` (numpy arrays, numpy scalars, torch tensors, ...): the
  object plus ``nbytes`` when ``sys.getsizeof`` does not already include it (numpy views and
  torch tensors report only their header). numpy is never imported. An array view counts its
  own extent, not the base array it keeps alive.
- ``list``, ``tuple``, ``set``, ``frozenset``, ``dict`` (and subclasses): the container plus
  its items, to a depth of :data:`MAX_DEPTH`; deeper items count their own header only. A
  container met twice in one value counts once, and so does an item repeated in one
  container. Containers larger than :data:`SAMPLE_ITEMS` are sized from their first
  :data:`SAMPLE_ITEMS` items and scaled up, so sizing a list of a million strings costs the
  same as sizing a thousand. Lists of ASCII ``str``, of ``bytes`` or of ``float`` are summed
  from their lengths, without a call per item.
- Other objects: :func:`sys.getsizeof` plus their ``__dict__`` (one level); pass ``sizeof=`` to
  the cache for anything this does not see (e.g. objects holding native memory).
- Never raises for what it is given: an object whose ``__sizeof__``, ``__dict__``,
  ``__class__``, ``__len__`` or iteration raises (or a released ``memoryview``) counts its
  shallow size, and the rest of the value it sits in is sized as usual.

Error against :mod:`tracemalloc` (the bytes Python allocated to build the value, averaged over
16 copies), measured by ``benchmarks/bench_cache.py`` on CPython 3.11 / Linux x86-64:

================================================  ========  ====================
value                                             error     cost of sizeof()
================================================  ========  ====================
``bytes`` 1 KiB / 1 MiB, ``bytearray`` 1 MiB      -0.6 %    one getsizeof
``str`` of 100 characters                         -4.5 %    one getsizeof
``list`` of 1,000 short ``str``                   0.0 %     sum of lengths
``dict`` of 1,000 ``str`` -> ``int``              -3.5 %    ~1 getsizeof/item
``list`` of 10,000 ``float``                      0.0 %     1,000 sampled
``tuple`` of 10 ``bytes`` of 10 KiB               0.0 %     ~1 getsizeof/item
numpy ``float64[131072]``; tuple of 3 arrays      0.0 %     one getsizeof each
================================================  ========  ====================

Under-counts come from allocator rounding and a dict's spare slots; over-counts would come
from shared objects met in different containers of one value (small ints, interned strings),
which Python did not allocate for it. Sampling assumes a large container's first items are
typical of the rest.
"""

from __future__ import annotations

import itertools
import sys

# Bound at import: a memoized builtin put in place of the real one (``builtins.len =
# memoize(len)``) must not be reached from the sizer that memoize itself calls.
from builtins import all, getattr, id, isinstance, len, map, sum, type, zip  # noqa: UP029
from collections.abc import Callable
from typing import Any, Final

__all__ = ["FLAT_TYPES", "MAX_DEPTH", "SAMPLE_ITEMS", "sizeof"]

MAX_DEPTH: Final = 4
"""How deep :func:`sizeof` looks into nested containers."""

SAMPLE_ITEMS: Final = 1000
"""Containers with more items than this are sized from a sample of this many."""

_getsizeof = sys.getsizeof
_FLAT: Final[frozenset[type]] = frozenset(
    {bytes, str, bytearray, int, float, bool, complex, type(None)}
)
FLAT_TYPES: Final = _FLAT
"""Types sized by their own ``__sizeof__`` alone (exactly these; the cache's insert asks)."""
_SEQUENCES: Final = (list, tuple, set, frozenset)
# Exact sizes without a call per object: an ASCII str and a bytes object are a fixed header
# plus their length, a float is a fixed size (CPython's compact layouts).
_STR_HEADER: Final = sys.getsizeof("")
_BYTES_HEADER: Final = sys.getsizeof(b"")
_FLOAT_BYTES: Final = sys.getsizeof(0.0)


def sizeof(value: object) -> int:
    """Return the bytes *value* holds in memory (see the module docstring for the rules)."""
    kind = type(value)
    if kind in _FLAT:  # none of them is tracked by the collector: getsizeof adds nothing
        return value.__sizeof__()  # a fifth of getsizeof's cost
    return _deep(value, MAX_DEPTH, None)


def _buffer_bytes(value: object, header: int) -> int | None:
    """Size of an object exposing ``nbytes`` (arrays, tensors), or None when it has none."""
    try:
        nbytes = value.nbytes  # type: ignore[attr-defined]
    except Exception:
        return None
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        return None
    # numpy includes owned data in __sizeof__; views and tensors report only their header.
    return header if header >= nbytes else header + nbytes


def _shallow(value: object) -> int:
    """The object's own size, whatever its ``__sizeof__`` does."""
    try:
        return int(_getsizeof(value))
    except Exception:  # a broken __sizeof__ must not break caching
        pass
    try:
        return max(0, int(object.__sizeof__(value)))  # the C layout, no user code
    except Exception:
        return 64


def _deep(value: object, depth: int, seen: set[int] | None) -> int:
    """Size *value* and what it holds down to *depth* levels; *seen* avoids double counting.

    Whatever a hostile object raises on the way (``__dict__``, ``__class__``, ``__len__``,
    iteration, a released memoryview), it counts its shallow size instead.
    """
    if type(value) in _FLAT:
        return _getsizeof(value)
    try:
        return _deep_unguarded(value, depth, seen)
    except Exception:
        return _shallow(value)


def _deep_unguarded(value: object, depth: int, seen: set[int] | None) -> int:
    kind = type(value)
    if kind in _FLAT:
        return _getsizeof(value)
    try:
        header = _getsizeof(value)
    except Exception:
        header = _shallow(value)
    if isinstance(value, memoryview):
        owner = value.obj
        return header + (_deep(owner, depth - 1, seen) if owner is not None else value.nbytes)
    if isinstance(value, (bytes, str, bytearray, int, float)):
        return header
    if isinstance(value, (dict, *_SEQUENCES)):
        if depth <= 0:
            return header
        seen = _first_visit(value, seen)
        return 0 if seen is None else header + _items(value, depth - 1, seen)
    buffer = _buffer_bytes(value, header)
    if buffer is not None:
        return buffer
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict) and depth > 0:
        seen = _first_visit(value, seen)
        return 0 if seen is None else header + _deep(attributes, depth - 1, seen)
    return header


def _first_visit(value: object, seen: set[int] | None) -> set[int] | None:
    """The set of visited ids with *value* added, or ``None`` if it was counted already
    (a shared or cyclic reference); the set is made on the first container only."""
    if seen is None:
        seen = set()
    elif id(value) in seen:
        return None
    seen.add(id(value))
    return seen


def _items(container: object, depth: int, seen: set[int]) -> int:
    """The bytes of a container's items (keys and values for a dict), sampled when large."""
    if isinstance(container, dict):
        count = len(container)
        keys = list(itertools.islice(container, SAMPLE_ITEMS))
        items = list(itertools.islice(container.values(), SAMPLE_ITEMS))
        total = _many(keys, depth, seen) + _many(items, depth, seen)
    else:
        assert isinstance(container, (list, tuple, set, frozenset))
        count = len(container)
        total = _many(list(itertools.islice(container, SAMPLE_ITEMS)), depth, seen)
    if count > SAMPLE_ITEMS:
        return total * count // SAMPLE_ITEMS
    return total


def _many(items: list[object], depth: int, seen: set[int]) -> int:
    """The bytes of some items; all-flat ones (strings, numbers) at C speed, each once."""
    kinds = set(map(type, items))
    if kinds <= _FLAT:
        # Repeats within one container count once (``[chunk] * 10``); flat objects shared
        # between two containers of one value count in each (rare, and it over-counts).
        values: list[Any] = items
        if len(set(map(id, items))) < len(items):
            values = list(dict(zip(map(id, items), items, strict=True)).values())
        if kinds == {str} and all(map(str.isascii, values)):
            return _STR_HEADER * len(values) + sum(map(len, values))
        if kinds == {bytes}:
            return _BYTES_HEADER * len(values) + sum(map(len, values))
        if kinds == {float}:
            return _FLOAT_BYTES * len(values)
        return sum(map(_getsizeof, values))
    return sum(_one(item, depth, seen) for item in items)


def _one(item: object, depth: int, seen: set[int]) -> int:
    """One item inside a container: flat ones directly, shared ones once."""
    if type(item) in _FLAT:
        if id(item) in seen:
            return 0
        seen.add(id(item))
        return _getsizeof(item)
    return _deep(item, depth, seen)


Sizer = Callable[[object], int]
"""A function returning the bytes a value holds, like :func:`sizeof`."""
