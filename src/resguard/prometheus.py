"""Prometheus metrics: a custom collector for ``prometheus_client`` and a tiny server.

``ResguardCollector(monitor=None, guards=(), caches=(), models=())`` is registered with a
``prometheus_client`` registry; each scrape reads the monitor's latest state (one attribute
read, no I/O) or, without a monitor, takes one fresh snapshot. Memory figures are the
*effective* ones (the cgroup's limit inside a container, see :class:`resguard.MemoryInfo`),
so many replicas scale and alert on what their own limits allow.

=====================================  =======  ===============  ============================
metric                                 type     labels           meaning
=====================================  =======  ===============  ============================
resguard_memory_limit_bytes            gauge    source           effective memory limit
                                                                 (source: host/cgroup/rlimit)
resguard_memory_used_bytes             gauge                     used against the limit
                                                                 (working set in a cgroup)
resguard_memory_available_bytes        gauge                     available under the limit
resguard_memory_total_bytes            gauge                     the host's physical memory
resguard_memory_used_percent           gauge                     used / limit, 0–100
resguard_swap_used_bytes               gauge                     swap in use on the host
resguard_cpu_percent                   gauge                     host CPU busy, 0–100
resguard_cpu_effective                 gauge                     CPUs this process may use
resguard_pressure_avg10_percent        gauge    resource, kind   PSI stall share over 10 s;
                                                                 memory/cpu/io, some/full
resguard_pressure_memory_level         gauge                     macOS memory-pressure level:
                                                                 1 normal, 2 warning, 4
                                                                 critical (macOS only)
resguard_process_rss_bytes             gauge                     this process's RSS
resguard_process_cpu_percent           gauge                     this process's CPU (100 =
                                                                 one core)
resguard_verdict_level                 gauge                     0 OK, 1 WARNING, 2 CRITICAL
                                                                 (with a monitor only)
resguard_verdict_breaches              gauge                     rules firing (with a monitor)
resguard_guard_admitted_total          counter  guard            admissions
resguard_guard_refused_total           counter  guard, reason    refusals by reason: every
                                                                 one of REFUSAL_REASONS
                                                                 from the first scrape
resguard_guard_in_flight               gauge    guard            admitted calls running
resguard_guard_reserved_bytes          gauge    guard            reserved by calls in flight
resguard_guard_waiting                 gauge    guard            calls queued for admission
resguard_cache_bytes                   gauge    cache            bytes held
resguard_cache_items                   gauge    cache            entries held
resguard_cache_hit_ratio               gauge    cache            hits / lookups, 0–1
resguard_cache_hits_total              counter  cache            hits
resguard_cache_misses_total            counter  cache            misses
resguard_cache_evictions_total         counter  cache            entries evicted for room
resguard_model_loaded                  gauge    model, source    1 when in memory, else 0
                                                                 (source: lazy, ollama)
resguard_model_loaded_bytes            gauge    model, source    memory a loaded model takes
resguard_model_vram_bytes              gauge    model            GPU memory of an Ollama model
resguard_container_memory_used_bytes   gauge    container        a container's working set
resguard_container_memory_limit_bytes  gauge    container        its limit, when it has one
resguard_scrape_errors_total           counter  part             parts of scrapes that failed
resguard_sensing_up                    gauge                     1 when every figure is
                                                                 known and the monitor's
                                                                 state is fresh, else 0
resguard_sensing_faults                gauge    field, kind      1 per damaged source, by
                                                                 the part of the snapshot
                                                                 and the kind of damage
resguard_state_age_seconds             gauge                     age of the monitor's state
                                                                 (with a monitor)
resguard_verdict_unknown               gauge                     rules that could not judge
                                                                 (with a monitor)
resguard_oom_kills_total               counter                   OOM kills in the monitor's
                                                                 cgroup (with a monitor)
resguard_memory_events_total           counter  kind             kernel memory events, every
                                                                 kind from the first scrape
                                                                 (with a monitor)
=====================================  =======  ===============  ============================

A figure resguard could not measure (a damaged ``/proc`` file, an unreadable cgroup limit)
is *absent* from the scrape, never exported as 0: its family keeps its ``HELP`` and
``TYPE`` lines without a sample, ``resguard_sensing_up`` drops to 0 and
``resguard_sensing_faults`` names what is unknown. Alert on ``resguard_sensing_up == 0``
(or ``absent(resguard_memory_used_bytes)``) next to the thresholds. When the snapshot cannot
be taken at all, the machine figures are left out and ``resguard_scrape_errors_total``
counts ``part="snapshot"``.

Ollama and container metrics come from the monitor's snapshot, i.e. when the monitor has
an Ollama or Docker source; a scrape never calls Docker or Ollama itself. A part that fails
(a cache whose ``stats()`` raises) is skipped, counted in ``resguard_scrape_errors_total``
and logged once; the scrape still answers.

``serve(port)`` starts ``prometheus_client``'s HTTP server on a registry of its own
(loopback by default) for processes without a web framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

try:
    from prometheus_client import start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as error:  # pragma: no cover - exercised by the import test
    raise ImportError(
        "resguard.prometheus needs prometheus_client: pip install 'resguard[prometheus]' "
        "(from a checkout of resguard: pip install -e '.[prometheus]')"
    ) from error

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.clock import Clock, monotonic
from resguard._modules.clockcheck import checked_clock
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard.guard import REFUSAL_REASONS, state_unknown
from resguard.snapshot import Sampler, Snapshot, metric_unit
from resguard.units import shown

__all__ = ["METRICS", "ResguardCollector", "Server", "serve"]

_logger = get_logger("resguard")

#: Every metric name this module can expose (counters with their ``_total`` suffix).
METRICS: tuple[str, ...] = (
    "resguard_memory_limit_bytes",
    "resguard_memory_used_bytes",
    "resguard_memory_available_bytes",
    "resguard_memory_total_bytes",
    "resguard_memory_used_percent",
    "resguard_swap_used_bytes",
    "resguard_cpu_percent",
    "resguard_cpu_effective",
    "resguard_pressure_avg10_percent",
    "resguard_pressure_memory_level",
    "resguard_process_rss_bytes",
    "resguard_process_cpu_percent",
    "resguard_verdict_level",
    "resguard_verdict_breaches",
    "resguard_guard_admitted_total",
    "resguard_guard_refused_total",
    "resguard_guard_in_flight",
    "resguard_guard_reserved_bytes",
    "resguard_guard_waiting",
    "resguard_cache_bytes",
    "resguard_cache_items",
    "resguard_cache_hit_ratio",
    "resguard_cache_hits_total",
    "resguard_cache_misses_total",
    "resguard_cache_evictions_total",
    "resguard_model_loaded",
    "resguard_model_loaded_bytes",
    "resguard_model_vram_bytes",
    "resguard_container_memory_used_bytes",
    "resguard_container_memory_limit_bytes",
    "resguard_scrape_errors_total",
    "resguard_sensing_up",
    "resguard_sensing_faults",
    "resguard_state_age_seconds",
    "resguard_verdict_unknown",
    "resguard_oom_kills_total",
    "resguard_memory_events_total",
)


def _objects(values: Any, what: str, needs: str | None, expected: str) -> list[Any]:
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


def _models_of(obj: Any) -> list[Any]:
    """LazyModel objects of a LazyModel or a ModelPool."""
    models = getattr(obj, "models", None)
    if models is not None and not hasattr(obj, "loaded"):
        return list(models)
    return [obj]


class _Names:
    """Label values that stay unique within one scrape: a repeated name gets ``#2``, ``#3``
    (two guards both called "guard" would otherwise make duplicate series)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, name: object) -> str:
        text = str(name)
        count = self._seen.get(text, 0) + 1
        self._seen[text] = count
        return text if count == 1 else f"{text}#{count}"


class ResguardCollector(Collector):
    """A ``prometheus_client`` collector of resguard's figures (see the module's table).

    *monitor*: a running :class:`resguard.Monitor` (its latest state is read, and its
    verdict exported); without one, each scrape takes one snapshot (about 100 µs).
    *guards*: :class:`resguard.Guard` objects; *caches*: :class:`resguard.LRUCache` objects or
    memoized functions; *models*: :class:`resguard.LazyModel` or :class:`resguard.ModelPool`
    objects. Names (``guard.name``, ``cache.name``, ``model.name``) become label values.
    *clock* measures the monitor state's age (default the monitor's own clock).
    """

    def __init__(
        self,
        monitor: Any = None,
        guards: Iterable[Any] = (),
        caches: Iterable[Any] = (),
        models: Iterable[Any] = (),
        *,
        sampler: Sampler | None = None,
        clock: Clock | None = None,
    ) -> None:
        if monitor is not None and not hasattr(monitor, "state"):
            raise InvalidType(
                f"monitor={shown(monitor)} is not a resguard.Monitor; expected a Monitor or None"
            )
        guard_list = _objects(guards, "guards", "stats", "resguard.Guard objects")
        cache_list = [_as_cache(cache) for cache in _objects(caches, "caches", None, "caches")]
        for cache in cache_list:
            if not hasattr(cache, "stats"):
                raise InvalidType(
                    f"caches: {shown(cache)} is not a resguard.LRUCache or a memoized function"
                )
        model_list = _objects(models, "models", None, "LazyModel or ModelPool objects")
        for model in model_list:
            if not hasattr(model, "loaded") and not hasattr(model, "models"):
                raise InvalidType(
                    f"models: {shown(model)} is not a resguard.LazyModel or ModelPool"
                )
        if sampler is not None and not isinstance(sampler, Sampler):
            raise InvalidType(
                f"sampler={shown(sampler)} is not a resguard Sampler; expected a Sampler or None"
            )
        if clock is not None:
            clock = checked_clock(clock)
        self.monitor = monitor
        if clock is None:  # the monitor's own clock: the one its states' ages are in
            clock = getattr(monitor, "clock", None)
        self._clock: Clock = clock if callable(clock) else monotonic
        self.guards: tuple[Any, ...] = tuple(guard_list)
        self.caches: tuple[Any, ...] = tuple(cache_list)
        self.models: tuple[Any, ...] = tuple(model_list)
        self._sampler = sampler
        self._faults = FaultLog(_logger)
        self._errors: dict[str, int] = {}

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
            yield from _system_metrics(snap)
        if verdict is not None and snap is not None and self.monitor is not None:
            state = self.monitor.state
            stale, _ = state_unknown(self.monitor, state, self._clock())
            sensing_up = sensing_up and not stale and not verdict.unknown
            yield GaugeMetricFamily(
                "resguard_state_age_seconds",
                "Seconds since the monitor's state was sampled",
                value=max(self._clock() - snap.monotonic, 0.0),
            )
            yield GaugeMetricFamily(
                "resguard_verdict_unknown", "Rules that could not judge", value=len(verdict.unknown)
            )
            if not stale:  # an old verdict is not exported as if it were current
                yield GaugeMetricFamily(
                    "resguard_verdict_level",
                    "Verdict of the monitor: 0 OK, 1 WARNING, 2 CRITICAL",
                    value=int(verdict.level),
                )
                yield GaugeMetricFamily(
                    "resguard_verdict_breaches", "Rules firing now", value=len(verdict.breaches)
                )
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
        if self.monitor is not None:
            yield from _event_metrics(self.monitor)
        yield from self._guard_metrics()
        yield from self._cache_metrics()
        if snap is not None:
            yield from self._model_metrics(snap)
            yield from _container_metrics(snap)
        errors = CounterMetricFamily(
            "resguard_scrape_errors", "Parts of a scrape that failed", labels=["part"]
        )
        for part, count in sorted(self._errors.items()):
            errors.add_metric([part], count)
        yield errors

    def _failed(self, part: str, error: BaseException) -> None:
        self._errors[part] = self._errors.get(part, 0) + 1
        # once per kind of error: a message with changing numbers is not one per scrape
        self._faults.failed(f"prometheus {part}", error, kind=type(error).__name__)

    def _guard_metrics(self) -> Iterator[Metric]:
        if not self.guards:
            return
        admitted = CounterMetricFamily(
            "resguard_guard_admitted", "Admissions through a guard", labels=["guard"]
        )
        refused = CounterMetricFamily(
            "resguard_guard_refused", "Refusals by a guard, by reason", labels=["guard", "reason"]
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
        unique = _Names()
        for guard in self.guards:
            try:
                stats = guard.stats()
            except Exception as error:
                self._failed("guard", error)
                continue
            name = unique(stats.name)
            admitted.add_metric([name], stats.admitted)
            counts = dict.fromkeys(REFUSAL_REASONS, 0)  # every reason from the start
            counts.update(stats.refused_by_reason)
            for reason, count in counts.items():
                refused.add_metric([name, reason], count)
            in_flight.add_metric([name], stats.in_flight)
            reserved.add_metric([name], stats.reserved_bytes)
            waiting.add_metric([name], stats.waiting)
        yield from (admitted, refused, in_flight, reserved, waiting)

    def _cache_metrics(self) -> Iterator[Metric]:
        if not self.caches:
            return
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "bytes": GaugeMetricFamily(
                "resguard_cache_bytes", "Bytes held by a cache", labels=["cache"]
            ),
            "items": GaugeMetricFamily(
                "resguard_cache_items", "Entries in a cache", labels=["cache"]
            ),
            "ratio": GaugeMetricFamily(
                "resguard_cache_hit_ratio", "Hits over lookups, 0 to 1", labels=["cache"]
            ),
            "hits": CounterMetricFamily("resguard_cache_hits", "Cache hits", labels=["cache"]),
            "misses": CounterMetricFamily(
                "resguard_cache_misses", "Cache misses", labels=["cache"]
            ),
            "evictions": CounterMetricFamily(
                "resguard_cache_evictions", "Entries evicted for room", labels=["cache"]
            ),
        }
        unique = _Names()
        for cache in self.caches:
            try:
                stats = cache.stats()
                name = [unique(cache.name)]
            except Exception as error:
                self._failed("cache", error)
                continue
            families["bytes"].add_metric(name, stats.bytes)
            families["items"].add_metric(name, stats.items)
            families["ratio"].add_metric(name, stats.hit_rate)
            families["hits"].add_metric(name, stats.hits)
            families["misses"].add_metric(name, stats.misses)
            families["evictions"].add_metric(name, stats.evictions)
        yield from families.values()

    def _model_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        ollama = snap.ollama or ()
        if not self.models and not ollama:
            return
        loaded = GaugeMetricFamily(
            "resguard_model_loaded", "1 when the model is in memory", labels=["model", "source"]
        )
        loaded_bytes = GaugeMetricFamily(
            "resguard_model_loaded_bytes", "Memory a loaded model takes", labels=["model", "source"]
        )
        seen: set[int] = set()
        unique = _Names()
        for holder in self.models:
            for model in _models_of(holder):
                if id(model) in seen:
                    continue
                seen.add(id(model))
                try:
                    is_loaded = bool(model.loaded)
                    size = int(model.size_bytes) if is_loaded else 0
                    name = unique(model.name)
                except Exception as error:
                    self._failed("model", error)
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


# Prometheus's base-unit suffix for each unit of resguard.snapshot.metric_unit; a count
# (CPUs) or a plain number has none
_SUFFIX: dict[str | None, str] = {"bytes": "_bytes", "seconds": "_seconds", "percent": "_percent"}


def _metric(name: str, path: str) -> str:
    """The metric for the snapshot figure at *path*: ``resguard_`` + *name* + the suffix of
    its unit (``("memory_used", "memory.used")`` is ``resguard_memory_used_bytes``), so the
    unit comes from the snapshot's own field metadata."""
    return f"resguard_{name}{_SUFFIX.get(metric_unit(path), '')}"


def _gauge(name: str, path: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    """A gauge family with one sample, or none when the figure is unknown (never 0)."""
    family = GaugeMetricFamily(_metric(name, path), documentation)
    if value is not None:
        family.add_metric([], value)
    return family


def _system_metrics(snap: Snapshot) -> Iterator[Metric]:
    memory = snap.memory
    limit = GaugeMetricFamily(
        _metric("memory_limit", "memory.limit"), "Effective memory limit", labels=["source"]
    )
    if memory.limit is not None:
        limit.add_metric([memory.source], memory.limit)
    yield limit
    yield _gauge("memory_used", "memory.used", "Memory used against the limit", memory.used)
    yield _gauge(
        "memory_available",
        "memory.available",
        "Memory still available under the limit",
        memory.available,
    )
    yield _gauge("memory_total", "memory.total", "Host physical memory", memory.total)
    yield _gauge("memory_used", "memory.percent", "Used over limit, 0-100", memory.percent)
    yield _gauge("swap_used", "swap.used", "Swap in use", snap.swap.used)
    yield _gauge("cpu", "cpu.percent", "Host CPU busy, 0-100", snap.cpu.percent)
    yield _gauge("cpu_effective", "cpu.effective", "CPUs this process may use", snap.cpu.effective)
    pressure = GaugeMetricFamily(
        _metric("pressure_avg10", "pressure.memory.some.avg10"),
        "PSI stall share over 10 s, percent",
        labels=["resource", "kind"],
    )
    for resource in ("memory", "cpu", "io"):
        value = getattr(snap.pressure, resource)
        if value is None:
            continue
        pressure.add_metric([resource, "some"], value.some.avg10)
        if value.full is not None:
            pressure.add_metric([resource, "full"], value.full.avg10)
    yield pressure
    yield _gauge(
        "pressure_memory_level",
        "pressure.memory_level",
        "macOS memory-pressure level: 1 normal, 2 warning, 4 critical",
        snap.pressure.memory_level,
    )
    yield _gauge("process_rss", "process.rss", "This process's resident set size", snap.process.rss)
    yield _gauge(
        "process_cpu",
        "process.cpu_percent",
        "This process's CPU, 100 = one core",
        snap.process.cpu_percent,
    )


def _event_metrics(monitor: Any) -> Iterator[Metric]:
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


def _container_metrics(snap: Snapshot) -> Iterator[Metric]:
    containers = snap.containers
    if containers is None:
        return
    used = GaugeMetricFamily(
        _metric("container_memory_used", "containers.memory_used"),
        "A container's working set",
        labels=["container"],
    )
    limit = GaugeMetricFamily(
        _metric("container_memory_limit", "containers.memory_limit"),
        "A container's memory limit",
        labels=["container"],
    )
    for item in containers.items:
        if item.memory_used is not None:
            used.add_metric([item.name], item.memory_used)
        if item.memory_limit is not None:
            limit.add_metric([item.name], item.memory_limit)
    yield from (used, limit)


class Server:
    """A running metrics endpoint from :func:`serve`: ``url``, ``port``, ``close()``."""

    def __init__(self, httpd: Any, thread: Any, registry: CollectorRegistry) -> None:
        self._httpd = httpd
        self._thread = thread
        self.registry = registry
        self.addr, self.port = httpd.server_address[:2]

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in str(self.addr) else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    port: int = 9108,
    addr: str = "127.0.0.1",
    *,
    collector: ResguardCollector | Sequence[Collector] | None = None,
) -> Server:
    """Serve ``/metrics`` on *addr*:*port* from a registry of its own (``port=0``: any free port).

    *collector* defaults to ``ResguardCollector()`` (machine and process figures); pass
    your own with monitor, guards, caches and models, or a list of collectors. Loopback by
    default: expose it wider only on purpose (``addr="0.0.0.0"`` in a container).
    """
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidType(f"port={shown(port)} is not a TCP port number; expected 0 to 65535")
    if not 0 <= port <= 65535:
        raise InvalidValue(f"port={shown(port)} is not a TCP port; expected 0 to 65535")
    if not isinstance(addr, str) or not addr:
        raise InvalidType(f"addr={shown(addr)} is not an address; expected e.g. '127.0.0.1'")
    collectors: Sequence[Any]
    if collector is None:
        collectors = (ResguardCollector(),)
    elif hasattr(collector, "collect"):
        collectors = (collector,)
    else:
        collectors = _objects(collector, "collector", "collect", "collectors")
    registry = CollectorRegistry(auto_describe=False)
    for item in collectors:
        registry.register(item)
    try:
        httpd, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as error:  # the port is taken, the address is not this machine's
        raise InvalidValue(
            f"cannot serve metrics on addr={shown(addr)}, port={shown(port)}: "
            f"{error}; expected a free port (or port=0) on a local address"
        ) from error
    return Server(httpd, thread, registry)
