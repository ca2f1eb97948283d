"""Who is on a ladder: weak registries of reclaimables, and the process-wide one.

A :class:`Registry` holds weak references, so registering never keeps an object alive.
Each :class:`~resguard.reclaim.Ladder` (so each Monitor) has its own; the process-wide
:data:`PROCESS_REGISTRY` is climbed only by a ladder that asks for it (``process=True``,
``Monitor(reclaim="process")``): a monitor reclaims what was registered with it, not every
model and cache of the process.
"""

from __future__ import annotations

import collections
import math
import threading
import weakref
from collections.abc import Iterable
from typing import Protocol, Union

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard.reclaim._base import Reclaimable, shown

__all__ = [
    "PROCESS_REGISTRY",
    "RegisterTarget",
    "Registry",
    "by_cost",
    "check_reclaimable",
    "label",
    "registry_for",
    "valid_cost",
]

_logger = get_logger("resguard")
_bad_costs = FaultLog(_logger)


def check_reclaimable(item: object, where: str) -> Reclaimable:
    """*item*, or InvalidType saying what *where* expected."""
    if not isinstance(item, Reclaimable):
        raise InvalidType(
            f"{shown(item)} is not a Reclaimable; {where} expected an object "
            "with name, cost, reclaimable_bytes() and reclaim(target_bytes)"
        )
    return item


def label(item: object) -> str:
    """*item*'s name as a string, for logs and results (never raises: a hostile ``name`` or
    ``__str__`` gives ``<a TYPE>``)."""
    try:
        return str(item.name)  # type: ignore[attr-defined]
    except Exception:
        return f"<a {type(item).__name__}>"


def valid_cost(item: Reclaimable) -> float | None:
    """*item*'s cost, or ``None`` when it is not a finite number (or reading it failed)."""
    try:
        cost = item.cost
    except Exception:
        return None
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost):
        return None
    return float(cost)


def by_cost(items: Iterable[Reclaimable]) -> list[Reclaimable]:
    """*items* cheapest first (ties keep their order); one whose cost is no finite number is
    left out, with a warning."""
    ranked: list[tuple[float, Reclaimable]] = []
    for item in items:
        cost = valid_cost(item)
        if cost is None:
            _bad_costs.failed(
                f"the cost of reclaimable {label(item)!r}",
                "not a finite number; left off the ladder",
            )
            continue
        ranked.append((cost, item))
    ranked.sort(key=lambda pair: pair[0])
    return [item for _, item in ranked]


class Registry:
    """Reclaimables held by weak references, in registration order; thread-safe.

    A collected item's weak reference is only queued by its callback (an atomic append)
    and dropped at the next call: the callback may run from a garbage collection inside
    this registry's own lock, which it must not wait for.
    """

    __slots__ = ("__weakref__", "_gone", "_items", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, weakref.ref[Reclaimable]] = {}
        self._gone: collections.deque[tuple[int, weakref.ref[Reclaimable]]] = collections.deque()

    def _purge_locked(self) -> None:
        gone = self._gone
        while gone:
            key, ref = gone.popleft()
            if self._items.get(key) is ref:
                del self._items[key]

    def register(self, item: Reclaimable) -> None:
        """Put *item* on this registry, held by a weak reference (again: a no-op)."""
        check_reclaimable(item, "register()")
        if valid_cost(item) is None:
            raise InvalidValue(
                f"{shown(getattr(item, 'cost', None))} is not a cost for "
                f"{shown(item)}; expected a finite number (see resguard.Cost)"
            )
        key = id(item)
        owner = weakref.ref(self)

        def forget(gone: weakref.ref[Reclaimable], key: int = key) -> None:
            registry = owner()
            if registry is not None:
                registry._gone.append((key, gone))

        try:
            ref = weakref.ref(item, forget)
        except TypeError:
            raise InvalidType(
                f"{shown(item)} cannot be held by a weak reference; expected an "
                "object that allows one (add '__weakref__' to its __slots__)"
            ) from None
        with self._lock:
            self._purge_locked()
            held = self._items.get(key)
            if held is None or held() is not item:
                self._items[key] = ref

    def unregister(self, item: Reclaimable) -> None:
        """Take *item* off this registry; a no-op when it is not on it."""
        check_reclaimable(item, "unregister()")
        with self._lock:
            self._purge_locked()
            ref = self._items.get(id(item))
            if ref is not None and ref() is item:
                del self._items[id(item)]

    def registered(self) -> list[Reclaimable]:
        """The live reclaimables, cheapest first (ties keep registration order)."""
        with self._lock:
            self._purge_locked()
            refs = list(self._items.values())
        return by_cost(item for item in (ref() for ref in refs) if item is not None)

    def __contains__(self, item: object) -> bool:
        with self._lock:
            ref = self._items.get(id(item))
        return ref is not None and ref() is item

    def __len__(self) -> int:
        with self._lock:
            self._purge_locked()
            refs = list(self._items.values())
        return sum(1 for ref in refs if ref() is not None)

    def __repr__(self) -> str:
        return f"<Registry of {len(self)} reclaimables>"


PROCESS_REGISTRY = Registry()
"""The process-wide registry: what ``register()`` and ``register=True`` put things on. Only
a ladder made with ``process=True`` (a ``Monitor(reclaim="process")``) climbs it."""


class _HasRegistry(Protocol):
    """A Monitor or a Ladder: something with its own registry."""

    @property
    def reclaimables(self) -> Registry: ...


RegisterTarget = Union[bool, None, Registry, _HasRegistry]  # noqa: UP007 (a runtime alias)
"""What a ``register=`` argument takes: True (process-wide), False or None (nowhere), a
Registry, or a Monitor or Ladder (its own registry)."""


def registry_for(target: RegisterTarget) -> Registry | None:
    """The registry a ``register=`` argument names: ``True`` the process-wide one,
    ``False``/``None`` none, a :class:`Registry` itself, a Monitor or a Ladder (anything with
    a ``reclaimables`` registry) its own."""
    if target is True:
        return PROCESS_REGISTRY
    if target is False or target is None:
        return None
    if isinstance(target, Registry):
        return target
    try:
        own = getattr(target, "reclaimables", None)
    except Exception:  # a hostile property: not a place to register with
        own = None
    if isinstance(own, Registry):
        return own
    raise InvalidType(
        f"register={shown(target)} is not a place to register with; expected True "
        "(process-wide), False, a resguard.Monitor, a resguard.reclaim.Ladder or a "
        "resguard.reclaim.Registry"
    )
