"""The figures of what a service registered as metric families: guards (counters with every
label value from the first scrape, the admission wait histogram), the reclaim ladder's
freed bytes per step, the monitor's kernel events, caches and models.

Each function takes *failed(part, error)*, which counts and logs a part that raised; the
scrape still answers without it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from resguard.guard import REFUSAL_REASONS, WAIT_BUCKETS_S
from resguard.snapshot import Snapshot

__all__ = [
    "Failed",
    "Names",
    "cache_metrics",
    "event_metrics",
    "guard_metrics",
    "model_metrics",
    "reclaim_metrics",
    "wait_buckets",
]

Failed = Callable[[str, BaseException], None]


class Names:
    """Label values that stay unique within one scrape: a repeated name gets ``#2``, ``#3``
    (two guards both called "guard" would otherwise make duplicate series)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, name: object) -> str:
        text = str(name)
        count = self._seen.get(text, 0) + 1
        self._seen[text] = count
        return text if count == 1 else f"{text}#{count}"


def wait_buckets(
    bounds_s: Sequence[float], queued_counts: Sequence[int], admitted: int
) -> list[tuple[str, float]] | None:
    """The cumulative ``le`` buckets of the admission wait: the admissions that never
    queued (``admitted`` minus the queued ones) waited 0 s and are in every bucket; each
    queued one is in the buckets from its own bound up. ``None`` when the guard does not
    count its queued waits (*queued_counts* not one per bound plus the overflow)."""
    if len(queued_counts) != len(bounds_s) + 1:
        return None
    queued = sum(queued_counts)
    cumulative = max(admitted - queued, 0)
    buckets: list[tuple[str, float]] = []
    for bound_s, count in zip(bounds_s, queued_counts, strict=False):
        cumulative += count
        buckets.append((str(float(bound_s)), cumulative))  # Prometheus's le text
    buckets.append(("+Inf", cumulative + queued_counts[-1]))
    return buckets


def guard_metrics(guards: Sequence[Any], failed: Failed) -> Iterator[Metric]:
    if not guards:
        return
    admitted = CounterMetricFamily(
        "resguard_guard_admitted", "Admissions through a guard", labels=["guard"]
    )
    refused = CounterMetricFamily(
        "resguard_guard_refused", "Refusals by a guard, by reason", labels=["guard", "reason"]
    )
    wait = HistogramMetricFamily(
        "resguard_guard_admission_wait_seconds",
        "Seconds a call waited before it was admitted (0 for those admitted at once)",
        labels=["guard"],
    )
    in_flight = GaugeMetricFamily(
        "resguard_guard_in_flight", "Admitted calls still running", labels=["guard"]
    )
    reserved = GaugeMetricFamily(
        "resguard_guard_reserved_bytes", "Bytes reserved by calls in flight", labels=["guard"]
    )
    waiting = GaugeMetricFamily(
        "resguard_guard_waiting", "Calls queued for admission", labels=["guard"]
    )
    unique = Names()
    for guard in guards:
        try:
            stats = guard.stats()
        except Exception as error:
            failed("guard", error)
            continue
        name = unique(stats.name)
        admitted.add_metric([name], stats.admitted)
        counts = dict.fromkeys(REFUSAL_REASONS, 0)  # every reason from the start
        counts.update(stats.refused_by_reason)
        for reason, count in counts.items():
            refused.add_metric([name, reason], count)
        buckets = wait_buckets(WAIT_BUCKETS_S, stats.queued_wait_counts, stats.admitted)
        if buckets is not None:
            wait.add_metric([name], buckets, sum_value=stats.queued_wait_s)
        in_flight.add_metric([name], stats.in_flight)
        reserved.add_metric([name], stats.reserved_bytes)
        waiting.add_metric([name], stats.waiting)
    yield from (admitted, refused, wait, in_flight, reserved, waiting)


def reclaim_metrics(ladder: Any, failed: Failed) -> Iterator[Metric]:
    """``resguard_reclaim_freed_bytes_total{step}``: every rung the ladder has now at 0
    from the first scrape, and every rung that ever freed something (the ladder's own
    running sums, ``freed_bytes_by_step``, so no climb between two scrapes is lost)."""
    family = CounterMetricFamily(
        "resguard_reclaim_freed_bytes",
        "Bytes the reclaim ladder freed, by step (measured; claimed where unmeasurable)",
        labels=["step"],
    )
    try:
        names = [str(getattr(item, "name", item)) for item in ladder.steps()]
        counts = dict(ladder.freed_bytes_by_step)
    except Exception as error:
        failed("reclaim", error)
        return
    for step in dict.fromkeys((*names, *sorted(counts))):
        family.add_metric([step], counts.get(step, 0))
    yield family


def event_metrics(monitor: Any) -> Iterator[Metric]:
    """The monitor's kernel memory events by kind (``Monitor.event_counts``), every kind
    at 0 until one is seen, and its OOM kills alone (the alert everyone wants)."""
    from resguard.monitor import EVENT_KINDS

    counts = getattr(monitor, "event_counts", None)
    counts = counts if isinstance(counts, dict) else {}
    yield CounterMetricFamily(
        "resguard_oom_kills",
        "OOM kills the kernel reported in the monitor's cgroup",
        value=counts.get("oom_kill", 0),
    )
    events = CounterMetricFamily(
        "resguard_memory_events",
        "Kernel memory events the monitor saw, by kind",
        labels=["kind"],
    )
    for kind in dict.fromkeys((*EVENT_KINDS, *sorted(counts))):
        events.add_metric([kind], counts.get(kind, 0))
    yield events


def cache_metrics(caches: Sequence[Any], failed: Failed) -> Iterator[Metric]:
    if not caches:
        return
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        "bytes": GaugeMetricFamily(
            "resguard_cache_bytes", "Bytes held by a cache", labels=["cache"]
        ),
        "items": GaugeMetricFamily("resguard_cache_items", "Entries in a cache", labels=["cache"]),
        "ratio": GaugeMetricFamily(
            "resguard_cache_hit_ratio", "Hits over lookups, 0 to 1", labels=["cache"]
        ),
        "hits": CounterMetricFamily("resguard_cache_hits", "Cache hits", labels=["cache"]),
        "misses": CounterMetricFamily("resguard_cache_misses", "Cache misses", labels=["cache"]),
        "evictions": CounterMetricFamily(
            "resguard_cache_evictions", "Entries evicted for room", labels=["cache"]
        ),
    }
    unique = Names()
    for cache in caches:
        try:
            stats = cache.stats()
            name = [unique(cache.name)]
        except Exception as error:
            failed("cache", error)
            continue
        families["bytes"].add_metric(name, stats.bytes)
        families["items"].add_metric(name, stats.items)
        families["ratio"].add_metric(name, stats.hit_rate)
        families["hits"].add_metric(name, stats.hits)
        families["misses"].add_metric(name, stats.misses)
        families["evictions"].add_metric(name, stats.evictions)
    yield from families.values()


def _models_of(obj: Any) -> list[Any]:
    """LazyModel objects of a LazyModel or a ModelPool."""
    models = getattr(obj, "models", None)
    if models is not None and not hasattr(obj, "loaded"):
        return list(models)
    return [obj]


def model_metrics(models: Sequence[Any], snap: Snapshot, failed: Failed) -> Iterator[Metric]:
    ollama = snap.ollama or ()
    if not models and not ollama:
        return
    loaded = GaugeMetricFamily(
        "resguard_model_loaded", "1 when the model is in memory", labels=["model", "source"]
    )
    loaded_bytes = GaugeMetricFamily(
        "resguard_model_loaded_bytes", "Memory a loaded model takes", labels=["model", "source"]
    )
    seen: set[int] = set()
    unique = Names()
    for holder in models:
        for model in _models_of(holder):
            if id(model) in seen:
                continue
            seen.add(id(model))
            try:
                is_loaded = bool(model.loaded)
                size = int(model.size_bytes) if is_loaded else 0
                name = unique(model.name)
            except Exception as error:
                failed("model", error)
                continue
            loaded.add_metric([name, "lazy"], 1 if is_loaded else 0)
            loaded_bytes.add_metric([name, "lazy"], size)
    vram = GaugeMetricFamily(
        "resguard_model_vram_bytes", "GPU memory of an Ollama model", labels=["model"]
    )
    for info in ollama:
        loaded.add_metric([info.name, "ollama"], 1)
        if info.size is not None:
            loaded_bytes.add_metric([info.name, "ollama"], info.size)
        if info.size_vram is not None:
            vram.add_metric([info.name], info.size_vram)
    yield from (loaded, loaded_bytes)
    if ollama:
        yield vram
