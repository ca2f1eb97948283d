"""What a cache hit without the lock relies on: the key types whose lookups run no Python
code, whether this interpreter allows such hits at all, and the C functions the hot paths
call unbound (the package docstring says why each step is atomic).

The hits themselves are written out where they are served (``LRUCache.__getitem__``, ``get``,
``in`` and the memoized function's wrapper): a call into a helper would add a fifth to them.
"""

from __future__ import annotations

import threading

# Bound at import (see _core): code may memoize a builtin and put the wrapper in its place.
from builtins import type
from collections import OrderedDict
from typing import Final

from resguard._modules.gil import LOCK_FREE

__all__ = [
    "ATOMIC_KEYS",
    "LOCK_FREE_HITS",
    "dict_get",
    "od_move_to_end",
    "od_pop",
    "od_popitem",
    "rlock_is_owned",
    "rlock_release",
]

# Called unbound by the hot paths (OrderedDict.get is dict.get; the lock's type is _thread's):
# ``data.get(key)`` or ``self._lock.release()`` take CPython 3.11's unspecialised lookup.
dict_get: Final = dict.get
od_move_to_end: Final = OrderedDict.move_to_end
od_pop: Final = OrderedDict.pop
od_popitem: Final = OrderedDict.popitem
rlock_is_owned: Final = type(threading.RLock())._is_owned  # type: ignore[attr-defined]
rlock_release: Final = type(threading.RLock()).release

ATOMIC_KEYS: Final[frozenset[type]] = frozenset({int, str, bytes, float, bool, type(None)})
"""Key types (exactly these, not subclasses) whose hashing and comparison with each other run
no Python code: the keys a hit may look up without the lock."""

LOCK_FREE_HITS: bool = LOCK_FREE
"""Whether a new cache serves hits without the lock (:data:`resguard._modules.gil.LOCK_FREE`:
CPython with the GIL, decided at import). Read when a cache is built; tests patch it here."""
