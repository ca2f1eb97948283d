"""The reclaim ladder: things that hold memory they can give back, cheapest first.

Anything that can free memory on request (caches, lazy models, idle Ollama models)
implements :class:`Reclaimable` and registers with :func:`register`. The registry keeps
weak references, so registering never keeps an object alive. Costs order the ladder:
lower cost is reclaimed first (see :class:`Cost`).
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol, runtime_checkable

__all__ = [
    "Cost",
    "Reclaimable",
    "register",
    "registered",
    "unregister",
]


class Cost:
    """Cost ranks on the ladder; a reclaimable's ``cost`` is a float, lower goes first.

    Models use ``MODEL + reload time in seconds`` so that a model that reloads quickly is
    unloaded before one that takes a minute, and every model after every cache.
    """

    GC = 0.0
    MALLOC_TRIM = 0.5
    CACHE = 1.0
    MODEL = 10.0
    PROCESS = 1000.0


@runtime_checkable
class Reclaimable(Protocol):
    """Something that holds memory it can give back on request."""

    @property
    def name(self) -> str:
        """A short name for logs and metrics."""
        ...

    @property
    def cost(self) -> float:
        """Where it stands on the ladder; see :class:`Cost`."""
        ...

    def reclaimable_bytes(self) -> int:
        """Bytes it could free now (its own accounting; the ladder re-measures)."""
        ...

    def reclaim(self, target_bytes: int) -> int:
        """Free about *target_bytes* (more is fine) and return the bytes it believes it freed."""
        ...


_lock = threading.Lock()
_registry: dict[int, weakref.ref[Reclaimable]] = {}


def register(item: Reclaimable) -> None:
    """Put *item* on the ladder, held by a weak reference."""
    key = id(item)

    def _forget(_: weakref.ref[Reclaimable], key: int = key) -> None:
        with _lock:
            if _registry.get(key) is _:
                del _registry[key]

    with _lock:
        _registry[key] = weakref.ref(item, _forget)


def unregister(item: Reclaimable) -> None:
    """Take *item* off the ladder; a no-op when it is not on it."""
    with _lock:
        ref = _registry.get(id(item))
        if ref is not None and ref() is item:
            del _registry[id(item)]


def registered() -> list[Reclaimable]:
    """The live reclaimables, cheapest first (ties keep registration order)."""
    with _lock:
        refs = list(_registry.values())
    items = [item for item in (ref() for ref in refs) if item is not None]
    return sorted(items, key=lambda item: item.cost)
