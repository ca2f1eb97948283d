"""The collector: one scrape reads the monitor's latest state (or takes one snapshot) and
the counters of everything registered, and yields their metric families."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from resguard._errors import InvalidType
from resguard._modules.clock import Clock, monotonic
from resguard._modules.clockcheck import checked_clock
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard.guard import state_unknown
from resguard.prometheus import _parts, _system
from resguard.snapshot import Sampler, Snapshot
from resguard.units import shown

__all__ = ["SCRAPE_PARTS", "ResguardCollector", "objects"]

#: The parts of a scrape that can fail on their own: ``resguard_scrape_errors_total``'s
#: ``part`` label values, each at 0 from the first scrape.
SCRAPE_PARTS: tuple[str, ...] = ("snapshot", "guard", "cache", "model", "reclaim", "readiness")

_logger = get_logger("resguard")


def objects(values: Any, what: str, needs: str | None, expected: str) -> list[Any]:
    """*values* as a list, each having the attribute *needs*; InvalidType otherwise."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InvalidType(f"{what}={shown(values)} is not a list; expected a list of {expected}")
    items = list(values)
    for item in items:
        if needs is not None and not hasattr(item, needs):
            raise InvalidType(f"{what}: {shown(item)} is not one of the {expected}")
    return items


def _as_cache(obj: Any) -> Any:
    """An LRUCache, or the ``.cache`` of a memoized function."""
    return obj.cache if hasattr(obj, "cache") and hasattr(obj.cache, "stats") else obj


def _readiness_call(readiness: Any) -> Callable[[], Any] | None:
    """What answers readiness: a GuardMiddleware's ``readiness()`` or a callable."""
    if readiness is None:
        return None
    method = getattr(readiness, "readiness", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    if callable(readiness):
        return readiness  # type: ignore[no-any-return]
    raise InvalidType(
        f"readiness={shown(readiness)} is not a resguard.asgi.GuardMiddleware or a "
        "callable; expected one of them or None"
    )


def _is_ready(answer: Any) -> bool:
    """A readiness answer as the readiness path means it: ``{"status": "ready"}`` or True."""
    if isinstance(answer, Mapping):
        return answer.get("status") == "ready"
    if isinstance(answer, bool):
        return answer
    raise InvalidType(
        f"readiness answered {shown(answer)}; expected a dict with a status or a bool"
    )


class ResguardCollector(Collector):
    """A ``prometheus_client`` collector of resguard's figures (see the module's table).

    *monitor*: a running :class:`resguard.Monitor` (its latest state is read, and its
    verdict exported); without one, each scrape takes one snapshot (about 100 µs).
    *guards*: :class:`resguard.Guard` objects; *caches*: :class:`resguard.LRUCache` objects or
    memoized functions; *models*: :class:`resguard.LazyModel` or :class:`resguard.ModelPool`
    objects. Names (``guard.name``, ``cache.name``, ``model.name``) become label values.
    *readiness*: a :class:`resguard.asgi.GuardMiddleware` (or a callable answering as its
    ``readiness()`` does, or a bool): ``resguard_ready`` is 1 exactly when its readiness
    path answers 200. *ladder*: the :class:`resguard.reclaim.Ladder` whose freed bytes are
    exported (default the monitor's). *clock* measures the monitor state's age (default
    the monitor's own clock).
    """

    def __init__(
        self,
        monitor: Any = None,
        guards: Iterable[Any] = (),
        caches: Iterable[Any] = (),
        models: Iterable[Any] = (),
        *,
        readiness: Any = None,
        ladder: Any = None,
        sampler: Sampler | None = None,
        clock: Clock | None = None,
    ) -> None:
        if monitor is not None and not hasattr(monitor, "state"):
            raise InvalidType(
                f"monitor={shown(monitor)} is not a resguard.Monitor; expected a Monitor or None"
            )
        guard_list = objects(guards, "guards", "stats", "resguard.Guard objects")
        cache_list = [_as_cache(cache) for cache in objects(caches, "caches", None, "caches")]
        for cache in cache_list:
            if not hasattr(cache, "stats"):
                raise InvalidType(
                    f"caches: {shown(cache)} is not a resguard.LRUCache or a memoized function"
                )
        model_list = objects(models, "models", None, "LazyModel or ModelPool objects")
        for model in model_list:
            if not hasattr(model, "loaded") and not hasattr(model, "models"):
                raise InvalidType(
                    f"models: {shown(model)} is not a resguard.LazyModel or ModelPool"
                )
        if ladder is not None and not hasattr(ladder, "steps"):
            raise InvalidType(
                f"ladder={shown(ladder)} is not a resguard.reclaim.Ladder; expected one or None"
            )
        if sampler is not None and not isinstance(sampler, Sampler):
            raise InvalidType(
                f"sampler={shown(sampler)} is not a resguard Sampler; expected a Sampler or None"
            )
        self._readiness = _readiness_call(readiness)
        if clock is not None:
            clock = checked_clock(clock)
        self.monitor = monitor
        if clock is None:  # the monitor's own clock: the one its states' ages are in
            clock = getattr(monitor, "clock", None)
        self._clock: Clock = clock if callable(clock) else monotonic
        self.guards: tuple[Any, ...] = tuple(guard_list)
        self.caches: tuple[Any, ...] = tuple(cache_list)
        self.models: tuple[Any, ...] = tuple(model_list)
        self.ladder = ladder if ladder is not None else getattr(monitor, "ladder", None)
        self._sampler = sampler
        self._faults = FaultLog(_logger)
        self._errors: dict[str, int] = dict.fromkeys(SCRAPE_PARTS, 0)  # all at 0 from the start

    def describe(self) -> Iterable[Metric]:
        """Nothing: the names depend on what is watched; no scrape at registration."""
        return ()

    def snapshot(self) -> tuple[Snapshot, Any]:
        """The snapshot a scrape reports on, and the verdict (``None`` without a monitor)."""
        if self.monitor is not None:
            state = self.monitor.state
            return state.snapshot, state.verdict
        if self._sampler is None:
            self._sampler = Sampler()
        return self._sampler.sample(children=False), None

    def collect(self) -> Iterator[Metric]:
        snap: Snapshot | None
        try:
            snap, verdict = self.snapshot()
        except Exception as error:  # the scrape still answers, without machine figures
            self._failed("snapshot", error)
            snap, verdict = None, None
        # a fault another source stood in for leaves nothing unknown: listed, but "up"
        sensing_up = snap is not None and not any(
            getattr(fault, "fallback", None) is None for fault in snap.faults
        )
        if snap is not None:
            yield from _system.system_metrics(snap)
        if verdict is not None and snap is not None and self.monitor is not None:
            state = self.monitor.state
            stale, _ = state_unknown(self.monitor, state, self._clock())
            sensing_up = sensing_up and not stale and not verdict.unknown
            yield from self._verdict_metrics(snap, verdict, stale)
        yield GaugeMetricFamily(
            "resguard_sensing_up",
            "1 when every figure could be read and the state is fresh",
            value=1 if sensing_up else 0,
        )
        faults = GaugeMetricFamily(
            "resguard_sensing_faults",
            "Parts of the snapshot left unknown by a damaged source",
            labels=["field", "kind"],
        )
        for field, kind in sorted({(f.field, f.kind) for f in (snap.faults if snap else ())}):
            faults.add_metric([field, kind], 1)
        yield faults
        yield from self._ready_metric()
        if self.monitor is not None:
            yield from _parts.event_metrics(self.monitor)
        if self.ladder is not None:
            yield from _parts.reclaim_metrics(self.ladder, self._failed)
        yield from _parts.guard_metrics(self.guards, self._failed)
        yield from _parts.cache_metrics(self.caches, self._failed)
        if snap is not None:
            yield from _parts.model_metrics(self.models, snap, self._failed)
            yield from _system.container_metrics(snap)
            yield from _system.gpu_metrics(snap)
        errors = CounterMetricFamily(
            "resguard_scrape_errors", "Parts of a scrape that failed", labels=["part"]
        )
        for part, count in self._errors.items():
            errors.add_metric([part], count)
        yield errors

    def _verdict_metrics(self, snap: Snapshot, verdict: Any, stale: bool) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "resguard_state_age_seconds",
            "Seconds since the monitor's state was sampled",
            value=max(self._clock() - snap.monotonic, 0.0),
        )
        yield GaugeMetricFamily(
            "resguard_verdict_unknown", "Rules that could not judge", value=len(verdict.unknown)
        )
        if stale:  # an old verdict is not exported as if it were current
            return
        yield GaugeMetricFamily(
            "resguard_verdict_level",
            "Verdict of the monitor: 0 OK, 1 WARNING, 2 CRITICAL",
            value=int(verdict.level),
        )
        yield GaugeMetricFamily(
            "resguard_verdict_breaches", "Rules firing now", value=len(verdict.breaches)
        )

    def _ready_metric(self) -> Iterator[Metric]:
        """``resguard_ready``: the readiness path's answer as 1/0; absent when it raised."""
        if self._readiness is None:
            return
        family = GaugeMetricFamily(
            "resguard_ready", "1 when the readiness path answers ready (200), else 0"
        )
        try:
            family.add_metric([], 1 if _is_ready(self._readiness()) else 0)
        except Exception as error:
            self._failed("readiness", error)
        yield family

    def _failed(self, part: str, error: BaseException) -> None:
        self._errors[part] = self._errors.get(part, 0) + 1
        # once per kind of error: a message with changing numbers is not one per scrape
        self._faults.failed(f"prometheus {part}", error, kind=type(error).__name__)
