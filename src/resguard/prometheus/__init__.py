"""Prometheus metrics: a custom collector for ``prometheus_client``, ``/metrics`` for ASGI
apps and a tiny server.

``ResguardCollector(monitor=None, guards=(), caches=(), models=(), readiness=None)`` is
registered with a ``prometheus_client`` registry; each scrape reads the monitor's latest
state (one attribute read, no I/O) or, without a monitor, takes one fresh snapshot. Memory
figures are the *effective* ones (the cgroup's limit inside a container, see
:class:`resguard.MemoryInfo`), so many replicas scale and alert on what their own limits
allow. Names follow Prometheus's conventions: base units (bytes, seconds), ``_ratio``
gauges from 0 to 1, counters ending in ``_total`` and present from the first scrape with
every label value at 0.

==============================================  =========  ==============  =========================
metric                                          type       labels          meaning
==============================================  =========  ==============  =========================
resguard_memory_limit_bytes                     gauge      source          effective memory limit
                                                                           (source:
                                                                           host/cgroup/rlimit)
resguard_memory_used_bytes                      gauge                      used against the limit
resguard_memory_working_set_bytes               gauge                      the cgroup's working set
                                                                           (in a cgroup only)
resguard_memory_available_bytes                 gauge                      available under the limit
resguard_memory_total_bytes                     gauge                      the host's physical
                                                                           memory
resguard_memory_used_ratio                      gauge                      used / limit, 0–1
resguard_swap_used_bytes                        gauge                      swap in use on the host
resguard_cpu_usage_ratio                        gauge                      host CPU busy, 0–1
resguard_cpu_effective                          gauge                      CPUs this process may use
resguard_pressure_avg10_ratio                   gauge      resource, kind  PSI stall share over 10 s
resguard_pressure_memory_waiting_seconds_total  counter                    PSI memory ``some`` time
resguard_pressure_memory_stalled_seconds_total  counter                    PSI memory ``full`` time
resguard_pressure_cpu_waiting_seconds_total     counter                    PSI cpu ``some`` time
resguard_pressure_cpu_stalled_seconds_total     counter                    PSI cpu ``full`` time
resguard_pressure_io_waiting_seconds_total      counter                    PSI io ``some`` time
resguard_pressure_io_stalled_seconds_total      counter                    PSI io ``full`` time
resguard_pressure_memory_level                  gauge                      macOS level: 1 normal, 2
                                                                           warning, 4 critical
resguard_process_rss_bytes                      gauge                      this process's RSS
resguard_process_cpu_usage_ratio                gauge                      this process's CPU (1 =
                                                                           one core)
resguard_verdict_level                          gauge                      0 OK, 1 WARNING, 2
                                                                           CRITICAL
resguard_verdict_breaches                       gauge                      rules firing
resguard_ready                                  gauge                      1 ready, 0 not (as the
                                                                           readiness path answers)
resguard_guard_admitted_total                   counter    guard           admissions
resguard_guard_refused_total                    counter    guard, reason   refusals, every reason at
                                                                           0 from the start
resguard_guard_admission_wait_seconds           histogram  guard           wait before admission
resguard_guard_in_flight                        gauge      guard           admitted calls running
resguard_guard_reserved_bytes                   gauge      guard           reserved by calls in
                                                                           flight
resguard_guard_waiting                          gauge      guard           calls queued for
                                                                           admission
resguard_reclaim_freed_bytes_total              counter    step            freed by each ladder step
resguard_cache_bytes                            gauge      cache           bytes held
resguard_cache_items                            gauge      cache           entries held
resguard_cache_hit_ratio                        gauge      cache           hits / lookups, 0–1
resguard_cache_hits_total                       counter    cache           hits
resguard_cache_misses_total                     counter    cache           misses
resguard_cache_evictions_total                  counter    cache           entries evicted for room
resguard_model_loaded                           gauge      model, source   1 when in memory, else 0
resguard_model_loaded_bytes                     gauge      model, source   memory a loaded model
                                                                           takes
resguard_model_vram_bytes                       gauge      model           GPU memory of an Ollama
                                                                           model
resguard_container_memory_used_bytes            gauge      container       a container's working set
resguard_container_memory_limit_bytes           gauge      container       its limit, when it has
                                                                           one
resguard_gpu_devices                            gauge                      NVIDIA GPUs NVML lists
resguard_gpu_memory_total_bytes                 gauge      gpu             a GPU's memory
resguard_gpu_memory_used_bytes                  gauge      gpu             its memory in use
resguard_gpu_memory_free_bytes                  gauge      gpu             its memory free
resguard_gpu_utilization_ratio                  gauge      gpu             kernel busy share, 0–1
resguard_gpu_temperature_celsius                gauge      gpu             its temperature
resguard_scrape_errors_total                    counter    part            parts of scrapes that
                                                                           failed
resguard_sensing_up                             gauge                      1 when every figure is
                                                                           known and the state is
                                                                           fresh
resguard_sensing_faults                         gauge      field, kind     1 per damaged source
resguard_state_age_seconds                      gauge                      age of the monitor's
                                                                           state
resguard_verdict_unknown                        gauge                      rules that could not
                                                                           judge
resguard_oom_kills_total                        counter                    OOM kills in the
                                                                           monitor's cgroup
resguard_memory_events_total                    counter    kind            kernel memory events
==============================================  =========  ==============  =========================

Deprecated, kept for this one release (their ``HELP`` says so; use the ``_ratio`` names):
``resguard_memory_used_percent``, ``resguard_cpu_percent``,
``resguard_process_cpu_percent``, ``resguard_pressure_avg10_percent`` (0–100).

A figure resguard could not measure (a damaged ``/proc`` file, an unreadable cgroup limit,
a PSI ``full`` line the kernel does not write) is *absent* from the scrape, never exported
as 0: its family keeps its ``HELP`` and ``TYPE`` lines without a sample,
``resguard_sensing_up`` drops to 0 and ``resguard_sensing_faults`` names what is unknown.

``with_metrics(app, collector)`` answers ``/metrics`` in front of an ASGI app,
``asgi_app(collector)`` is the app to mount, and ``serve(port)`` starts
``prometheus_client``'s HTTP server (loopback by default) for processes without a web
framework; each has a registry of its own. See :doc:`prometheus` for the alert rules.
"""

from __future__ import annotations

try:
    import prometheus_client as _prometheus_client  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised by the import test
    raise ImportError(
        "resguard.prometheus needs prometheus_client: pip install 'resguard[prometheus]' "
        "(from a checkout of resguard: pip install -e '.[prometheus]')"
    ) from error

from resguard.prometheus._collector import ResguardCollector
from resguard.prometheus._serve import Server, asgi_app, serve, with_metrics

__all__ = [
    "DEPRECATED",
    "METRICS",
    "ResguardCollector",
    "Server",
    "asgi_app",
    "serve",
    "with_metrics",
]

# the public path in reprs, pickles and the API reference, not the private module's
for _public in (ResguardCollector, Server, asgi_app, serve, with_metrics):
    _public.__module__ = __name__
del _public

#: The deprecated names, each with the one that replaces it (removed in the next release).
DEPRECATED: dict[str, str] = {
    "resguard_memory_used_percent": "resguard_memory_used_ratio",
    "resguard_cpu_percent": "resguard_cpu_usage_ratio",
    "resguard_process_cpu_percent": "resguard_process_cpu_usage_ratio",
    "resguard_pressure_avg10_percent": "resguard_pressure_avg10_ratio",
}

#: Every metric name this module can expose (counters with their ``_total`` suffix), the
#: deprecated ones included.
METRICS: tuple[str, ...] = (
    "resguard_memory_limit_bytes",
    "resguard_memory_used_bytes",
    "resguard_memory_working_set_bytes",
    "resguard_memory_available_bytes",
    "resguard_memory_total_bytes",
    "resguard_memory_used_ratio",
    "resguard_swap_used_bytes",
    "resguard_cpu_usage_ratio",
    "resguard_cpu_effective",
    "resguard_pressure_avg10_ratio",
    *(
        f"resguard_pressure_{resource}_{kind}_seconds_total"
        for resource in ("memory", "cpu", "io")
        for kind in ("waiting", "stalled")
    ),
    "resguard_pressure_memory_level",
    "resguard_process_rss_bytes",
    "resguard_process_cpu_usage_ratio",
    "resguard_verdict_level",
    "resguard_verdict_breaches",
    "resguard_ready",
    "resguard_guard_admitted_total",
    "resguard_guard_refused_total",
    "resguard_guard_admission_wait_seconds",
    "resguard_guard_in_flight",
    "resguard_guard_reserved_bytes",
    "resguard_guard_waiting",
    "resguard_reclaim_freed_bytes_total",
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
    "resguard_gpu_devices",
    "resguard_gpu_memory_total_bytes",
    "resguard_gpu_memory_used_bytes",
    "resguard_gpu_memory_free_bytes",
    "resguard_gpu_utilization_ratio",
    "resguard_gpu_temperature_celsius",
    "resguard_scrape_errors_total",
    "resguard_sensing_up",
    "resguard_sensing_faults",
    "resguard_state_age_seconds",
    "resguard_verdict_unknown",
    "resguard_oom_kills_total",
    "resguard_memory_events_total",
    *DEPRECATED,
)
