"""A model pool: several lazy models under one memory budget, idle ones evicted LRU first."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from resguard._errors import InvalidType, InvalidValue, ResourceExhausted
from resguard.models._common import HeadroomSource, faults, headroom_from, log, size_of
from resguard.models._lazy import LazyModel
from resguard.units import format_bytes, is_percent, parse_percent

__all__ = ["MIN_BUDGET_PERCENT", "ModelPool"]

T = TypeVar("T")

MIN_BUDGET_PERCENT = 0.01
"""The smallest share of the limit a pool budget may be (1.6 MiB of 16 GiB): below it a
share is a typo, not a budget."""


class ModelPool:
    """Several lazy models under one memory budget; idle ones are evicted LRU first.

    ``budget`` is bytes, ``"16GiB"`` or a share of the effective memory limit (``"50%"``,
    above 0); ``None`` means only the machine's headroom counts. A share is resolved when
    the pool is made; while the limit is unknown it is resolved at the next load that can
    read it, and until then only the machine's headroom counts. ``guard`` (optional) is
    where the machine headroom comes from; without it a fresh :func:`resguard.snapshot` is
    read.
    """

    def __init__(
        self,
        budget: int | str | None = None,
        *,
        guard: HeadroomSource | None = None,
        models: Iterable[LazyModel[Any]] = (),
        name: str = "pool",
    ) -> None:
        self._budget_share: float | None = None
        self._budget_bytes: int | None = None
        if budget is None:
            pass
        elif isinstance(budget, bool) or not isinstance(budget, (int, float, str)):
            raise InvalidType(
                f"pool budget={budget!r} must be bytes, a size such as "
                "'16GiB' or a share of the memory limit such as '50%'"
            )
        elif is_percent(budget):
            try:
                share = parse_percent(budget)
            except (InvalidValue, InvalidType) as error:
                raise type(error)(f"pool budget: {error}") from None
            if share < MIN_BUDGET_PERCENT:
                raise InvalidValue(
                    f"pool budget={budget!r} must be a share of at least "
                    f"{MIN_BUDGET_PERCENT:g}% (a smaller one would refuse "
                    "every load); give bytes for a tiny budget"
                )
            self._budget_share = share
            self._resolve_budget()
        else:
            self._budget_bytes = size_of(budget, "pool budget")
            if self._budget_bytes <= 0:
                raise InvalidValue(f"pool budget={budget!r} must be above 0 bytes")
        if guard is not None and not isinstance(guard, HeadroomSource):
            raise InvalidType(f"guard must have headroom_bytes() (a resguard.Guard), not {guard!r}")
        if not isinstance(name, str) or not name.strip():
            raise InvalidType(f"pool name={name!r} must be a non-empty string")
        self.guard = guard
        self.name = name
        self._lock = threading.RLock()
        self._models: list[LazyModel[Any]] = []
        self._order = 0
        self._used_order: dict[int, int] = {}
        if isinstance(models, (str, bytes)) or not isinstance(models, Iterable):  # type: ignore[unreachable]
            raise InvalidType(
                f"models={models!r} is not a list of LazyModel; expected e.g. "
                f"[LazyModel(load_small), LazyModel(load_large)]"
            )
        for model in models:
            self.add(model)

    def _resolve_budget(self) -> None:
        """Turn a share of the limit into bytes once the limit is known."""
        if self._budget_share is None or self._budget_bytes is not None:
            return
        from resguard.snapshot import snapshot

        limit = snapshot(children=False).memory.limit
        if limit is None:
            faults.failed(
                f"pool {getattr(self, 'name', 'pool')!r} budget",
                f"the memory limit is unknown, so {self._budget_share:g}% of it "
                "cannot be resolved yet; only the machine's headroom counts",
            )
            return
        self._budget_bytes = max(1, round(self._budget_share * int(limit) / 100))

    @property
    def budget_bytes(self) -> int | None:
        """The budget in bytes; ``None``: no budget (or a share of a limit not known yet)."""
        return self._budget_bytes

    def add(self, model: LazyModel[Any]) -> LazyModel[Any]:
        """Put *model* in the pool (a model belongs to one pool)."""
        if not isinstance(model, LazyModel):
            raise InvalidType(f"a ModelPool holds LazyModel objects, not {model!r}")
        if model.pool is not None and model.pool is not self:
            raise InvalidValue(f"model {model.name!r} already belongs to pool {model.pool.name!r}")
        with self._lock:
            if model.pool is None:
                model.pool = self
                self._models.append(model)
                self._touch(model)
        return model

    def lazy(
        self, load: Callable[[], T], unload: Callable[[T], object] | None = None, **kwargs: Any
    ) -> LazyModel[T]:
        """Make a :class:`LazyModel` that belongs to this pool."""
        return LazyModel(load, unload, pool=self, **kwargs)

    @property
    def models(self) -> tuple[LazyModel[Any], ...]:
        return tuple(self._models)

    def _touch(self, model: LazyModel[Any]) -> None:
        with self._lock:
            self._order += 1
            self._used_order[id(model)] = self._order

    def used_bytes(self, exclude: LazyModel[Any] | None = None) -> int:
        """Sizes of the members that are loaded or loading."""
        return sum(
            m.size_bytes for m in self._models if m is not exclude and (m.loaded or m.loading)
        )

    def _pending_bytes(self, exclude: LazyModel[Any] | None) -> int:
        return sum(m.size_bytes for m in self._models if m is not exclude and m.loading)

    def headroom_bytes(self, exclude: LazyModel[Any] | None = None) -> int | None:
        """Bytes a new load may take now: the budget left and the machine's headroom
        (``None`` when neither is known: no budget and the machine's memory unreadable)."""
        self._resolve_budget()
        machine = headroom_from(self.guard)
        if machine is not None:
            machine -= self._pending_bytes(exclude)
        if self.budget_bytes is None:
            return machine
        budget_left = self.budget_bytes - self.used_bytes(exclude)
        return budget_left if machine is None else min(machine, budget_left)

    def idle_models(self, exclude: Sequence[LazyModel[Any]] = ()) -> list[LazyModel[Any]]:
        """Loaded, unpinned members, least recently used first."""
        with self._lock:
            idle = [
                m
                for m in self._models
                if m.loaded and not m.pinned and not m.loading and all(m is not e for e in exclude)
            ]
            return sorted(idle, key=lambda m: self._used_order.get(id(m), 0))

    def unload_idle(self, now: float | None = None) -> list[LazyModel[Any]]:
        """Unload the members whose ``idle_ttl`` has passed; return them."""
        return [m for m in list(self._models) if m.unload_if_idle(now)]

    def _make_room(self, model: LazyModel[Any], size: int) -> None:
        with self._lock:
            self.unload_idle()
            headroom = self.headroom_bytes(exclude=model)
            if headroom is None:
                return  # unknown: admitted (logged once by _headroom)
            freed = 0
            evicted: list[str] = []
            while headroom + freed < size:
                victims = self.idle_models(exclude=[model])
                if not victims:
                    raise ResourceExhausted(
                        f"no room to load model {model.name!r}: it needs {format_bytes(size)}, "
                        f"{format_bytes(max(headroom + freed, 0))} is free in pool "
                        f"{self.name!r} and no idle model is left to evict",
                        reason="memory",
                        retry_after=5.0,
                        numbers={
                            "size_bytes": size,
                            "headroom_bytes": headroom + freed,
                            "budget_bytes": self.budget_bytes,
                            "evicted": evicted,
                        },
                    )
                victim = victims[0]
                victim_size = victim.size_bytes
                if victim.unload():
                    freed += victim_size
                    evicted.append(victim.name)
            if evicted:
                log.info("pool %r evicted %s to load %r", self.name, evicted, model.name)

    def choose(self, variants: Sequence[LazyModel[Any]]) -> LazyModel[Any]:
        """The largest variant that fits now (counting idle members as evictable).

        A variant that is already loaded always fits. Raises ResourceExhausted when none
        fits. Variants need not be members of the pool; members are added.
        """
        if not isinstance(variants, Sequence) or isinstance(variants, (str, bytes)):  # type: ignore[unreachable]
            raise InvalidType(f"choose() takes a list of LazyModel variants, not {variants!r}")
        if not variants:
            raise InvalidValue("choose() needs at least one model variant")
        for variant in variants:
            self.add(variant)
        with self._lock:
            headroom = self.headroom_bytes()
            ranked = sorted(variants, key=lambda m: m.size_bytes, reverse=True)
            if headroom is None:
                return ranked[0]  # unknown room: the largest (logged once by _headroom)
            free = headroom + sum(m.size_bytes for m in self.idle_models())
            for variant in ranked:
                if variant.loaded or variant.loading or variant.size_bytes <= free:
                    return variant
        smallest = ranked[-1]
        raise ResourceExhausted(
            f"none of the variants fits: the smallest, {smallest.name!r}, needs "
            f"{format_bytes(smallest.size_bytes)} and {format_bytes(max(free, 0))} is free",
            reason="memory",
            retry_after=5.0,
            numbers={"headroom_bytes": free, "sizes": {m.name: m.size_bytes for m in ranked}},
        )
