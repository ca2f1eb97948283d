"""What an entry costs a cache (by its ``sizeof=`` hook, or key and value bytes by the
default sizer), and refusing one that cannot fit."""

from __future__ import annotations

import operator

# Bound at import (see _core): code may memoize a builtin and put the wrapper in its place.
from builtins import type
from typing import TYPE_CHECKING, NoReturn

from resguard._errors import InvalidType, InvalidValue
from resguard.cache._sizeof import FLAT_TYPES
from resguard.cache._sizeof import sizeof as default_sizeof
from resguard.cache._stats import ValueTooLarge
from resguard.units import format_bytes

if TYPE_CHECKING:
    from resguard.cache._core import CacheCore

__all__ = ["entry_size", "refuse_too_large", "size_of_value"]


def size_of_value(core: CacheCore, value: object) -> int:
    """What the cache's ``sizeof=`` hook says *value* costs, checked to be bytes >= 0."""
    result = core._sizeof(value)
    try:
        size = operator.index(result)
    except TypeError:
        raise InvalidType(
            f"sizeof={core._sizeof!r} returned {result!r} for a {type(value).__name__}; "
            "expected a whole number of bytes"
        ) from None
    if size < 0:
        raise InvalidValue(
            f"sizeof={core._sizeof!r} returned {size} for a {type(value).__name__}; "
            "expected a number of bytes >= 0"
        )
    return size


def entry_size(core: CacheCore, key: object, value: object) -> int:
    """The cost of one entry; raises ValueTooLarge (counting it) when it cannot fit.

    A ``sizeof=`` hook alone is the cost (cachetools' ``getsizeof``); the default sizer
    counts the key too.
    """
    if core._user_sized:
        size = size_of_value(core, value)
    else:  # what default_sizeof does for flat values (see there), without calling it
        size = (key.__sizeof__() if type(key) in FLAT_TYPES else default_sizeof(key)) + (
            value.__sizeof__() if type(value) in FLAT_TYPES else default_sizeof(value)
        )
    cap = core._size_cap
    if cap is not None and size > cap:
        refuse_too_large(core, value, size)
    return size


def refuse_too_large(core: CacheCore, value: object, size: int) -> NoReturn:
    """Count a value that cannot be stored and raise ValueTooLarge for it."""
    max_bytes = core._max_bytes
    with core._lock:
        core._counters.too_large += 1
    if core._max_items == 0:
        message = "a cache of max_items=0 stores nothing; nothing was stored"
    elif core._user_sized:
        message = (
            f"a {type(value).__name__} of size {size} (by sizeof="
            f"{core._sizeof!r}) does not fit in a cache of max_bytes={max_bytes}; "
            "nothing was stored"
        )
    else:
        message = (
            f"a {type(value).__name__} of {format_bytes(size)} (with its key) "
            f"does not fit in a cache of max_bytes={format_bytes(max_bytes or 0)}; "
            "nothing was stored"
        )
    raise ValueTooLarge(message, size_bytes=size, max_bytes=max_bytes or 0)
