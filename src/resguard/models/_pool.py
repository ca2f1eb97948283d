"""A model pool: several lazy models under one memory budget, idle ones evicted LRU first."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from resguard._errors import (
    InvalidType,
    InvalidValue,
    OllamaError,
    ResguardError,
    ResourceExhausted,
)
from resguard._modules.log import emit, fields
from resguard.models._common import HeadroomSource, faults, headroom_from, log, sizes_apart
from resguard.models._lazy import LazyModel
from resguard.units import Amount, named

__all__ = ["MIN_BUDGET_PERCENT", "ModelPool"]

if TYPE_CHECKING:
    from resguard.snapshot import Sampler

T = TypeVar("T")

MIN_BUDGET_PERCENT = 0.01
"""The smallest share of the limit a pool budget may be (1.6 MiB of 16 GiB): below it a
share is a typo, not a budget."""


def _checked_budget(budget: object) -> Amount | None:
    """*budget* as an Amount, with the pool's own checks (a share of at least
    :data:`MIN_BUDGET_PERCENT`, bytes above 0) and wording."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, float, str)):
        raise InvalidType(
            f"pool budget={budget!r} must be bytes, a size such as "
            "'16GiB' or a share of the memory limit such as '50%'"
        )
    amount = named("pool budget", functools.partial(Amount, positive=False), budget)
    if amount.percent is not None and amount.percent < MIN_BUDGET_PERCENT:
        raise InvalidValue(
            f"pool budget={budget!r} must be a share of at least "
            f"{MIN_BUDGET_PERCENT:g}% (a smaller one would refuse "
            "every load); give bytes for a tiny budget"
        )
    if amount.bytes is not None and amount.bytes <= 0:
        raise InvalidValue(f"pool budget={budget!r} must be above 0 bytes")
    return amount


class ModelPool:
    """Several lazy models under one memory budget; idle ones are evicted LRU first.

    ``budget`` is bytes, ``"16GiB"`` or a share of the effective memory limit (``"50%"``,
    at least :data:`MIN_BUDGET_PERCENT`); ``None`` means only the machine's headroom
    counts. A share is resolved against the limit as it is each time the budget is used
    (:class:`resguard.units.Amount`), so it follows a container whose limit changes; while
    the limit is unknown only the machine's headroom counts. ``guard`` (optional) is where
    the machine headroom comes from; without it, a member's own ``headroom`` when it has
    one (``LazyModel(headroom=...)``; an Ollama model's is where Ollama runs, see
    :class:`resguard.ollama.OllamaHeadroom`), else a fresh :func:`resguard.snapshot`.
    ``sampler`` (optional, a :class:`resguard.snapshot.Sampler`) is where the limit is read;
    without it, the process-wide sampler behind :func:`resguard.snapshot`.
    """

    def __init__(
        self,
        budget: int | str | None = None,
        *,
        guard: HeadroomSource | None = None,
        models: Iterable[LazyModel[Any]] = (),
        name: str = "pool",
        sampler: Sampler | None = None,
    ) -> None:
        self._budget = _checked_budget(budget)
        if guard is not None and not isinstance(guard, HeadroomSource):
            raise InvalidType(f"guard must have headroom_bytes() (a resguard.Guard), not {guard!r}")
        if not isinstance(name, str) or not name.strip():
            raise InvalidType(f"pool name={name!r} must be a non-empty string")
        if sampler is not None:
            from resguard.snapshot import Sampler

            if not isinstance(sampler, Sampler):
                raise InvalidType(f"sampler={sampler!r} must be a resguard.snapshot.Sampler")
        self.guard = guard
        self.name = name
        self.sampler = sampler
        self._lock = threading.RLock()
        self._models: list[LazyModel[Any]] = []
        self._order = 0
        self._used_order: dict[int, int] = {}
        if isinstance(models, (str, bytes)) or not isinstance(models, Iterable):  # type: ignore[unreachable]
            raise InvalidType(
                f"models={models!r} is not a list of LazyModel; expected e.g. "
                f"[LazyModel(load_small), LazyModel(load_large)]"
            )
        given = list(models)
        for model in given:  # all checked before any joins: none is left in a pool never made
            self._check(model)
        for model in given:
            self.add(model)

    @property
    def budget(self) -> Amount | None:
        """The budget as given: bytes or a share of the limit; ``None``: no budget."""
        return self._budget

    @property
    def budget_bytes(self) -> int | None:
        """The budget in bytes now (a share against the limit as it is now); ``None``: no
        budget, or a share of a limit that is unknown."""
        budget = self._budget
        if budget is None or not budget.is_share:
            return None if budget is None else budget.bytes
        from resguard.snapshot import snapshot

        sampled = self.sampler.sample(children=False) if self.sampler else snapshot(children=False)
        where = f"pool {self.name!r} budget"
        resolved = budget.resolve(sampled.memory.limit)
        if resolved is None:
            faults.failed(
                where,
                f"the memory limit is unknown, so {budget.percent:g}% of it "
                "cannot be resolved now; only the machine's headroom counts",
            )
            return None
        faults.recovered(where)
        return max(1, resolved)

    def add(self, model: LazyModel[Any]) -> LazyModel[Any]:
        """Put *model* in the pool (a model belongs to one pool)."""
        self._check(model)
        with self._lock:
            if model.pool is None:
                model.pool = self
                self._models.append(model)
                self._touch(model)
        return model

    def _check(self, model: object) -> None:
        if not isinstance(model, LazyModel):
            raise InvalidType(f"a ModelPool holds LazyModel objects, not {model!r}")
        if model.pool is not None and model.pool is not self:
            raise InvalidValue(f"model {model.name!r} already belongs to pool {model.pool.name!r}")

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

    def _source(self, models: Sequence[LazyModel[Any]]) -> HeadroomSource | None:
        """Where the room for *models* is read: the pool's guard, else the first one's
        own ``headroom`` (a model server's, such as Ollama's), else the machine (None)."""
        if self.guard is not None:
            return self.guard
        for model in models:
            if model.headroom is not None:
                return model.headroom
        return None

    def headroom_bytes(
        self, exclude: LazyModel[Any] | None = None, *, source: HeadroomSource | None = None
    ) -> int | None:
        """Bytes a new load may take now: the budget left and the machine's headroom
        (``None`` when neither is known: no budget and the machine's memory unreadable).
        The machine's headroom is read from *source*, else the pool's ``guard``, else
        *exclude*'s own ``headroom``, else :func:`resguard.snapshot`."""
        budget_bytes = self.budget_bytes
        if source is None:
            source = self._source([] if exclude is None else [exclude])
        machine = headroom_from(source)
        if machine is not None:
            machine -= self._pending_bytes(exclude)
        if budget_bytes is None:
            return machine
        budget_left = budget_bytes - self.used_bytes(exclude)
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
                    need_text, free_text = sizes_apart(size, max(headroom + freed, 0))
                    raise ResourceExhausted(
                        f"no room to load model {model.name!r}: it needs {need_text}; "
                        f"{free_text} is free in pool {self.name!r} and no idle model is "
                        "left to evict",
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
                emit(
                    log,
                    logging.INFO,
                    "pool %r evicted %s to load %r",
                    self.name,
                    evicted,
                    model.name,
                    extra=fields(
                        "pool_evict", pool=self.name, evicted=list(evicted), model=model.name
                    ),
                )

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
            ranked, skipped = _sized(variants)
            headroom = self.headroom_bytes(source=self._source(variants))
            if headroom is None:
                return ranked[0][0]  # unknown room: the largest (logged once by _headroom)
            free = headroom + sum(m.size_bytes for m in self.idle_models())
            for variant, size in ranked:
                if variant.loaded or variant.loading or size <= free:
                    return variant
        smallest, smallest_size = ranked[-1]
        need_text, free_text = sizes_apart(smallest_size, max(free, 0))
        left_out = "".join(f"; {name!r} was left out ({error})" for name, error in skipped.items())
        raise ResourceExhausted(
            f"none of the variants fits: the smallest, {smallest.name!r}, needs "
            f"{need_text}; {free_text} is free{left_out}",
            reason="memory",
            retry_after=5.0,
            numbers={"headroom_bytes": free, "sizes": {m.name: size for m, size in ranked}},
        )


def _sized(
    variants: Sequence[LazyModel[Any]],
) -> tuple[list[tuple[LazyModel[Any], int]], dict[str, ResguardError]]:
    """The variants whose size can be read, largest first, and why each other one cannot
    (an Ollama model that is not pulled, a size out of range): those are left out of a
    choice, not raised into it; when none is left, one error names them all."""
    ranked: list[tuple[LazyModel[Any], int]] = []
    skipped: dict[str, ResguardError] = {}
    for variant in variants:
        try:
            ranked.append((variant, variant.size_bytes))
        except ResguardError as error:
            skipped[variant.name] = error
    if ranked:
        return sorted(ranked, key=lambda pair: pair[1], reverse=True), skipped
    errors = list(skipped.values())
    text = "none of the variants can be chosen: " + "; ".join(
        f"{name!r}: {error}" for name, error in skipped.items()
    )
    if all(isinstance(error, OllamaError) for error in errors):
        codes = {error.status_code for error in errors}  # type: ignore[attr-defined]
        raise OllamaError(text, status_code=codes.pop() if len(codes) == 1 else None) from errors[0]
    raise InvalidValue(text) from errors[0]
