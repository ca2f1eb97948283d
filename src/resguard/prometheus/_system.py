"""The machine's figures of one snapshot as metric families: memory against the effective
limit, CPU, PSI (avg10 ratios and node_exporter's stall-time counters), this process, and
the containers of a Docker source. A figure the snapshot left unknown has no sample."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from resguard.snapshot import Snapshot, metric_unit

__all__ = ["container_metrics", "gpu_metrics", "system_metrics"]

# Prometheus's base-unit suffix for each unit of resguard.snapshot.metric_unit; a count
# (CPUs) or a plain number has none
_SUFFIX: dict[str | None, str] = {"bytes": "_bytes", "seconds": "_seconds", "percent": "_percent"}

_US_PER_S = 1_000_000.0


def _metric(name: str, path: str) -> str:
    """The metric for the snapshot figure at *path*: ``resguard_`` + *name* + the suffix of
    its unit (``("memory_used", "memory.used")`` is ``resguard_memory_used_bytes``), so the
    unit comes from the snapshot's own field metadata."""
    return f"resguard_{name}{_SUFFIX.get(metric_unit(path), '')}"


def _gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    """A gauge family with one sample, or none when the figure is unknown (never 0)."""
    family = GaugeMetricFamily(name, documentation)
    if value is not None:
        family.add_metric([], value)
    return family


def _ratio(percent: float | None) -> float | None:
    return None if percent is None else percent / 100.0


def _deprecated(instead: str, documentation: str) -> str:
    return f"Deprecated, use {instead}; removed in the next release. {documentation}"


def _percent_and_ratio(
    names: tuple[str, str], documentation: str, scale: tuple[str, str], percent: float | None
) -> Iterator[Metric]:
    """The ``_ratio`` gauge and, for one release, the deprecated ``_percent`` one; *scale*
    says what 1 and 100 mean in each."""
    ratio_name, percent_name = names
    yield _gauge(ratio_name, f"{documentation}, {scale[0]}", _ratio(percent))
    yield _gauge(percent_name, _deprecated(ratio_name, f"{documentation}, {scale[1]}"), percent)


_SHARE = ("0 to 1", "0-100")


def system_metrics(snap: Snapshot) -> Iterator[Metric]:
    memory = snap.memory
    limit = GaugeMetricFamily(
        _metric("memory_limit", "memory.limit"), "Effective memory limit", labels=["source"]
    )
    if memory.limit is not None:
        limit.add_metric([memory.source], memory.limit)
    yield limit
    used = _metric("memory_used", "memory.used")
    yield _gauge(used, "Memory used against the effective limit", memory.used)
    yield _gauge(
        "resguard_memory_working_set_bytes",
        "The cgroup's working set: usage minus inactive file cache (in a cgroup only)",
        memory.used if memory.source == "cgroup" else None,
    )
    yield _gauge(
        _metric("memory_available", "memory.available"),
        "Memory still available under the effective limit",
        memory.available,
    )
    yield _gauge(_metric("memory_total", "memory.total"), "Host physical memory", memory.total)
    yield from _percent_and_ratio(
        ("resguard_memory_used_ratio", _metric("memory_used", "memory.percent")),
        "Memory used over the effective limit",
        _SHARE,
        memory.percent,
    )
    yield _gauge(_metric("swap_used", "swap.used"), "Swap in use", snap.swap.used)
    yield from _percent_and_ratio(
        ("resguard_cpu_usage_ratio", _metric("cpu", "cpu.percent")),
        "Host CPU busy over all CPUs",
        _SHARE,
        snap.cpu.percent,
    )
    yield _gauge("resguard_cpu_effective", "CPUs this process may use", snap.cpu.effective)
    yield from _pressure_metrics(snap)
    yield _gauge(
        "resguard_pressure_memory_level",
        "macOS memory-pressure level: 1 normal, 2 warning, 4 critical",
        snap.pressure.memory_level,
    )
    yield _gauge(
        _metric("process_rss", "process.rss"), "This process's resident set size", snap.process.rss
    )
    yield from _percent_and_ratio(
        ("resguard_process_cpu_usage_ratio", _metric("process_cpu", "process.cpu_percent")),
        "This process's CPU",
        ("1 = one full core", "100 = one full core"),
        snap.process.cpu_percent,
    )


def _pressure_metrics(snap: Snapshot) -> Iterator[Metric]:
    """PSI: the avg10 shares (ratio, and the deprecated percent) and, like node_exporter,
    the stall time counters: ``some`` is *waiting*, ``full`` is *stalled*; a line the kernel
    does not write (CPU ``full`` before 5.13) is absent, never 0."""
    ratio = GaugeMetricFamily(
        "resguard_pressure_avg10_ratio",
        "PSI share of the last 10 s stalled, 0 to 1",
        labels=["resource", "kind"],
    )
    percent_name = _metric("pressure_avg10", "pressure.memory.some.avg10")
    percent = GaugeMetricFamily(
        percent_name,
        _deprecated("resguard_pressure_avg10_ratio", "PSI stall share over 10 s, 0-100"),
        labels=["resource", "kind"],
    )
    counters: list[Metric] = []
    for resource in ("memory", "cpu", "io"):
        value = getattr(snap.pressure, resource)
        waiting = CounterMetricFamily(
            f"resguard_pressure_{resource}_waiting_seconds",
            f"PSI: seconds in which at least one task waited for {resource} (some)",
        )
        stalled = CounterMetricFamily(
            f"resguard_pressure_{resource}_stalled_seconds",
            f"PSI: seconds in which all non-idle tasks stalled on {resource} (full)",
        )
        counters += (waiting, stalled)
        if value is None:
            continue
        lines = [("some", value.some, waiting)]
        if value.full is not None:
            lines.append(("full", value.full, stalled))
        for kind, line, counter in lines:
            ratio.add_metric([resource, kind], line.avg10 / 100.0)
            percent.add_metric([resource, kind], line.avg10)
            counter.add_metric([], line.total_us / _US_PER_S)
    yield ratio
    yield percent
    yield from counters


def gpu_metrics(snap: Snapshot) -> Iterator[Metric]:
    """Each NVIDIA GPU by its index (``gpu``), when NVML could be asked (``resguard[gpu]``):
    ``resguard_gpu_devices`` is 0 where NVML lists none; a reading it could not give is
    absent."""
    gpus = snap.gpus
    if gpus is None:  # unknown: no NVML, no driver
        return
    yield GaugeMetricFamily("resguard_gpu_devices", "NVIDIA GPUs NVML lists", value=len(gpus))
    readings = (
        ("memory_total_bytes", "GPU memory in total", lambda gpu: gpu.memory_total_bytes),
        ("memory_used_bytes", "GPU memory in use", lambda gpu: gpu.memory_used_bytes),
        ("memory_free_bytes", "GPU memory free", lambda gpu: gpu.memory_free_bytes),
        (
            "utilization_ratio",
            "Share of the last sample period a kernel ran on the GPU, 0 to 1",
            lambda gpu: _ratio(gpu.utilization_percent),
        ),
        ("temperature_celsius", "GPU temperature", lambda gpu: gpu.temperature_celsius),
    )
    for suffix, documentation, read in readings:
        family = GaugeMetricFamily(f"resguard_gpu_{suffix}", documentation, labels=["gpu"])
        for gpu in gpus:
            value = read(gpu)
            if value is not None:
                family.add_metric([str(gpu.index)], value)
        yield family


def container_metrics(snap: Snapshot) -> Iterator[Metric]:
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
