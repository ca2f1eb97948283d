"""The snapshot's values: frozen attrs records, each numeric field tagged with its unit.

A value does no I/O; :class:`~resguard.snapshot.Sampler` builds them from the kernel's files.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Final

import attrs

from resguard._modules.render import ValueMixin
from resguard._probes.files import FaultKind
from resguard._probes.psi import PsiLine

__all__ = [
    "FAULT_KINDS",
    "UNITS",
    "ContainerStats",
    "ContainersInfo",
    "ContainersMemory",
    "CpuInfo",
    "FanSpeed",
    "Fault",
    "GpuInfo",
    "GpuMemory",
    "GpuProcess",
    "GpuSummary",
    "HeatInfo",
    "MemoryInfo",
    "OllamaModelInfo",
    "PressureInfo",
    "PressureLine",
    "ProcessInfo",
    "ProcessSelf",
    "ResourcePressure",
    "Snapshot",
    "SwapInfo",
    "TemperatureSensor",
    "gpu_percent",
    "metric_paths",
    "metric_unit",
    "ollama_processor",
]

UNITS: tuple[str, ...] = (
    "bytes",
    "seconds",
    "microseconds",
    "percent",
    "count",
    "celsius",
    "rpm",
)
"""The units a numeric snapshot field is counted in (see :func:`metric_unit`). Each such
field carries its unit as attrs metadata under ``"unit"``
(``attrs.fields(MemoryInfo).used.metadata["unit"] == "bytes"``); a field without one (a
pid, a load average) is a plain number."""

BYTES: Final = types.MappingProxyType({"unit": "bytes"})
SECONDS: Final = types.MappingProxyType({"unit": "seconds"})
MICROSECONDS: Final = types.MappingProxyType({"unit": "microseconds"})
PERCENT: Final = types.MappingProxyType({"unit": "percent"})
COUNT: Final = types.MappingProxyType({"unit": "count"})
CELSIUS: Final = types.MappingProxyType({"unit": "celsius"})
RPM: Final = types.MappingProxyType({"unit": "rpm"})


@attrs.frozen
class PressureLine(ValueMixin):
    """One PSI line: share of wall time stalled (percent) over 10/60/300 s, total in µs."""

    avg10: float = attrs.field(metadata=PERCENT)
    avg60: float = attrs.field(metadata=PERCENT)
    avg300: float = attrs.field(metadata=PERCENT)
    total_us: int = attrs.field(metadata=MICROSECONDS)


@attrs.frozen
class ResourcePressure(ValueMixin):
    """``some``: at least one task stalled; ``full``: all non-idle tasks stalled (may be absent)."""

    some: PressureLine
    full: PressureLine | None

    @classmethod
    def from_lines(cls, lines: tuple[PsiLine, PsiLine | None] | None) -> ResourcePressure | None:
        """The value of a parsed PSI file: its ``some`` line and its ``full`` line (or None)."""
        if lines is None:
            return None
        some, full = lines
        return cls(PressureLine(*some), None if full is None else PressureLine(*full))


@attrs.frozen
class MemoryInfo(ValueMixin):
    """Memory against the *effective* limit.

    ``limit`` is the smallest of the host's total, the cgroup limit found by walking this
    process's cgroup up the hierarchy (v2 ``memory.max``/``memory.high``, v1
    ``memory.limit_in_bytes``) and ``RLIMIT_AS``/``RLIMIT_DATA``. ``used`` follows the bound:
    under a cgroup it is the working set (usage minus inactive file cache, as kubelet counts
    it), on the host it is total minus available (``MemAvailable``; on macOS, on the psutil
    backend, wired + active + compressed, as Activity Monitor counts it), under an rlimit
    the process's address space (or data segment). ``source`` is ``"host"``, ``"cgroup"``
    or ``"rlimit"``; ``source_detail`` names the file, psutil call or limit that bound it.
    The psutil backend knows no cgroups (``cgroup`` is ``None``; see :doc:`platforms`).

    A number that could not be read is ``None`` (*unknown*, never 0) and the snapshot's
    ``faults`` say why; ``source`` is ``"unknown"`` when no source could be read at all.
    """

    total: int | None = attrs.field(metadata=BYTES)
    limit: int | None = attrs.field(metadata=BYTES)
    used: int | None = attrs.field(metadata=BYTES)
    available: int | None = attrs.field(metadata=BYTES)
    percent: float | None = attrs.field(metadata=PERCENT)
    source: str
    source_detail: str
    cgroup: str | None


@attrs.frozen
class SwapInfo(ValueMixin):
    """Swap space of the host, in bytes (``None`` where ``/proc/meminfo`` or psutil could
    not say); ``percent`` is 0.0 on a host without swap (``total`` 0: none is used)."""

    total: int | None = attrs.field(metadata=BYTES)
    used: int | None = attrs.field(metadata=BYTES)
    free: int | None = attrs.field(metadata=BYTES)
    percent: float | None = attrs.field(metadata=PERCENT)


@attrs.frozen
class CpuInfo(ValueMixin):
    """CPU use and the CPUs this process may really use.

    ``percent`` is the host's busy share since the previous sample (0–100 over all CPUs).
    ``effective`` is the number of CPUs the process can use: the smaller of its affinity
    mask and its cgroup quota (``cpu.max`` or ``cfs_quota_us/cfs_period_us``);
    ``effective_source`` says which (``"host"``, ``"affinity"`` or ``"cgroup"``).
    ``percent`` and the load averages are ``None`` when their files could not be read.
    """

    percent: float | None = attrs.field(metadata=PERCENT)
    count: int = attrs.field(metadata=COUNT)
    effective: float = attrs.field(metadata=COUNT)
    effective_source: str
    load_1m: float | None
    load_5m: float | None
    load_15m: float | None


@attrs.frozen
class PressureInfo(ValueMixin):
    """PSI for memory, CPU and I/O (``None`` where the kernel has none); ``source`` names
    ``"system"`` (``/proc/pressure``) or the cgroup v2 directory it was read from.

    ``memory_level`` is macOS's memory-pressure level
    (``kern.memorystatus_vm_pressure_level``: 1 normal, 2 warning, 4 critical), the one
    Activity Monitor's "Memory Pressure" graph shows; ``None`` on every other platform
    (and on macOS when it could not be read)."""

    memory: ResourcePressure | None
    cpu: ResourcePressure | None
    io: ResourcePressure | None
    source: str | None
    memory_level: int | None = None


@attrs.frozen
class ProcessSelf(ValueMixin):
    """This process: resident and virtual size, USS (only when asked for, it is costly),
    CPU percent since the previous sample (100 = one full core), threads, and the summed
    RSS of its descendants (``None`` when not asked for, like ``uss``). A number that
    could not be read is ``None``."""

    pid: int
    rss: int | None = attrs.field(metadata=BYTES)
    vms: int | None = attrs.field(metadata=BYTES)
    uss: int | None = attrs.field(metadata=BYTES)
    cpu_percent: float | None = attrs.field(metadata=PERCENT)
    num_threads: int | None = attrs.field(metadata=COUNT)
    children_rss: int | None = attrs.field(metadata=BYTES)


@attrs.frozen
class ProcessInfo(ValueMixin):
    """One row of the process table (or a group of processes with one name when ``count``
    is above 1). Identity is ``(pid, create_time)``; ``cpu_percent`` is since the table's
    previous sample, 100 = one full core. ``cpu_since_start`` is true when there was no
    previous sample of the process (the table's first scan, a process started since):
    ``cpu_percent`` is then its average since it started, a lifetime figure that says
    nothing of what it does now, and the per-process rules and culprits do not judge it."""

    pid: int
    name: str
    cmdline: tuple[str, ...]
    username: str | None
    uid: int | None
    ppid: int
    rss: int = attrs.field(metadata=BYTES)
    uss: int | None = attrs.field(metadata=BYTES)
    cpu_percent: float = attrs.field(metadata=PERCENT)
    num_threads: int = attrs.field(metadata=COUNT)
    create_time: float = attrs.field(metadata=SECONDS)
    count: int = attrs.field(default=1, metadata=COUNT)
    cpu_since_start: bool = False


@attrs.frozen
class ContainerStats(ValueMixin):
    """One running container. ``memory_used`` follows the working-set rule (usage minus
    inactive file cache); ``memory_percent`` is of ``memory_limit`` (``None`` when there is
    no limit); ``cpu_percent`` is 100 per full core."""

    id: str
    name: str
    image: str
    status: str
    memory_usage: int = attrs.field(metadata=BYTES)
    memory_used: int = attrs.field(metadata=BYTES)
    memory_limit: int | None = attrs.field(metadata=BYTES)
    memory_percent: float | None = attrs.field(metadata=PERCENT)
    cpu_percent: float | None = attrs.field(metadata=PERCENT)
    pids: int | None = attrs.field(metadata=COUNT)
    compose_project: str | None = None
    compose_service: str | None = None


@attrs.frozen
class ContainersMemory(ValueMixin):
    """Totals over running containers: working-set bytes and the highest percent of limit."""

    total: int = attrs.field(metadata=BYTES)
    max_percent: float | None = attrs.field(metadata=PERCENT)


@attrs.frozen
class ContainersInfo(ValueMixin):
    """The running containers as the judge layer sees them (``containers.memory.total``)."""

    items: tuple[ContainerStats, ...]
    memory: ContainersMemory

    @classmethod
    def from_items(cls, items: tuple[ContainerStats, ...]) -> ContainersInfo:
        percents = [item.memory_percent for item in items if item.memory_percent is not None]
        return cls(
            items,
            ContainersMemory(
                sum(item.memory_used for item in items), max(percents) if percents else None
            ),
        )


def gpu_percent(size_bytes: int, size_vram_bytes: int) -> float | None:
    """The share (0-100) of a model's *size_bytes* that is in GPU memory, in whole
    percent as ``ollama ps`` prints it (the rest of its CPU share, rounded half away from
    zero: ``52.0``, never ``51.99999997``); ``None`` when it cannot be said (a size of 0
    or less, or more in VRAM than in all: a damaged ``/api/ps`` answer)."""
    if size_bytes <= 0 or not 0 <= size_vram_bytes <= size_bytes:
        return None
    return float(100 - _cpu_percent(size_bytes, size_vram_bytes))


def _cpu_percent(size_bytes: int, size_vram_bytes: int) -> int:
    """The CPU share of a model in whole percent, rounded half away from zero as Ollama's
    ``cmd`` does (Go's ``math.Round``), in exact integer arithmetic."""
    return (200 * (size_bytes - size_vram_bytes) + size_bytes) // (2 * size_bytes)


def ollama_processor(size_bytes: int, size_vram_bytes: int) -> str:
    """Where a loaded model runs, as ``ollama ps`` prints it in its PROCESSOR column:
    ``"100% CPU"`` when nothing is in VRAM, ``"100% GPU"`` when all of it is,
    ``"Unknown"`` when the sizes cannot be (more in VRAM than in all, a size of 0),
    else the CPU share rounded half away from zero, then the rest: ``"48%/52% CPU/GPU"``
    (Ollama's ``cmd`` rounds the CPU side with Go's ``math.Round``)."""
    if size_vram_bytes == 0:
        return "100% CPU"
    if size_vram_bytes == size_bytes:
        return "100% GPU"
    if size_vram_bytes > size_bytes or size_bytes <= 0 or size_vram_bytes < 0:
        return "Unknown"
    cpu_percent = _cpu_percent(size_bytes, size_vram_bytes)
    return f"{cpu_percent}%/{100 - cpu_percent}% CPU/GPU"


@attrs.frozen
class OllamaModelInfo(ValueMixin):
    """A model loaded in Ollama: total and GPU bytes, when its keep-alive ends and since
    when it has been idle (wall-clock epoch seconds; ``None`` when unknown).

    ``processor`` is its CPU/GPU split as ``ollama ps`` prints it (``"100% GPU"``,
    ``"100% CPU"``, ``"48%/52% CPU/GPU"``; see :func:`ollama_processor`) and
    ``gpu_percent`` the share of ``size`` in VRAM (0-100, ``None`` when the sizes cannot
    say), both computed from ``size`` and ``size_vram`` when the record is made."""

    name: str
    size: int = attrs.field(metadata=BYTES)
    size_vram: int = attrs.field(metadata=BYTES)
    expires_at: float | None = attrs.field(metadata=SECONDS)
    idle_since: float | None = attrs.field(metadata=SECONDS)
    context_length: int | None = attrs.field(default=None, metadata=COUNT)
    processor: str = attrs.field(init=False, eq=False)
    gpu_percent: float | None = attrs.field(init=False, eq=False, metadata=PERCENT)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "processor", ollama_processor(self.size, self.size_vram))
        object.__setattr__(self, "gpu_percent", gpu_percent(self.size, self.size_vram))


@attrs.frozen
class GpuProcess(ValueMixin):
    """A process holding GPU memory on one device (NVML's compute processes):
    ``used_bytes`` is ``None`` where NVML does not say (no per-process accounting in a
    container without the host's pid namespace, some drivers on Windows/WSL)."""

    pid: int
    used_bytes: int | None = attrs.field(metadata=BYTES)


@attrs.frozen
class GpuInfo(ValueMixin):
    """One NVIDIA GPU as NVML reports it. Each reading NVML could not give (a query the
    board does not support, a driver error, a reading past its deadline) is ``None``
    (*unknown*, never 0); ``processes`` is ``()`` when NVML lists none and ``None`` when
    it could not list them. ``utilization_percent`` is the share of the last sample
    period a kernel ran (0-100); memory is in bytes."""

    index: int
    name: str | None
    uuid: str | None
    memory_total_bytes: int | None = attrs.field(metadata=BYTES)
    memory_used_bytes: int | None = attrs.field(metadata=BYTES)
    memory_free_bytes: int | None = attrs.field(metadata=BYTES)
    utilization_percent: float | None = attrs.field(metadata=PERCENT)
    temperature_celsius: float | None = attrs.field(metadata=CELSIUS)
    processes: tuple[GpuProcess, ...] | None = ()

    @property
    def memory_percent(self) -> float | None:
        """Used memory as a share of total (0-100), ``None`` when either is unknown."""
        total, used = self.memory_total_bytes, self.memory_used_bytes
        if total is None or used is None or total <= 0:
            return None
        return 100.0 * used / total


@attrs.frozen
class GpuMemory(ValueMixin):
    """The memory of the fullest GPU (the highest used share; the first on a tie):
    ``device`` is its index. Rules and guards judge this one, so a job that fits the
    emptiest board is still refused when one board is full: VRAM is per device."""

    device: int
    total: int = attrs.field(metadata=BYTES)
    used: int = attrs.field(metadata=BYTES)
    free: int = attrs.field(metadata=BYTES)
    percent: float = attrs.field(metadata=PERCENT)


@attrs.frozen
class GpuSummary(ValueMixin):
    """The figures rules read about the GPUs (``gpu.memory.percent``, ``gpu.memory.used``):
    ``count`` devices, ``memory`` of the fullest one (``None`` when no device reported its
    memory). Made from :attr:`Snapshot.gpus` by :meth:`from_gpus`."""

    count: int = attrs.field(metadata=COUNT)
    memory: GpuMemory | None

    @classmethod
    def from_gpus(cls, gpus: tuple[GpuInfo, ...] | None) -> GpuSummary | None:
        """The summary of *gpus*; ``None`` when they are unknown (``None``)."""
        if gpus is None:
            return None
        fullest: GpuMemory | None = None
        for gpu in gpus:
            percent = gpu.memory_percent
            if percent is None or not math.isfinite(percent):
                continue
            if fullest is None or percent > fullest.percent:
                total, used = gpu.memory_total_bytes, gpu.memory_used_bytes
                assert total is not None
                assert used is not None
                free = gpu.memory_free_bytes
                fullest = GpuMemory(
                    gpu.index, total, used, max(0, total - used) if free is None else free, percent
                )
        return cls(len(gpus), fullest)


@attrs.frozen
class TemperatureSensor(ValueMixin):
    """One temperature sensor, in degrees Celsius: ``chip`` is the hwmon device's name
    (``coretemp``, ``acpitz``, ``nvme``), ``label`` the sensor's (``Package id 0``; the
    file's stem, ``temp1``, when it has none). ``high_celsius`` is the mark the hardware
    calls too warm (hwmon ``tempN_max``), ``critical_celsius`` where it shuts down
    (``tempN_crit``); ``None`` when the chip does not say."""

    chip: str
    label: str
    current_celsius: float = attrs.field(metadata=CELSIUS)
    high_celsius: float | None = attrs.field(metadata=CELSIUS)
    critical_celsius: float | None = attrs.field(metadata=CELSIUS)


@attrs.frozen
class FanSpeed(ValueMixin):
    """One fan: its chip, its label (``fan1`` when it has none) and revolutions per minute."""

    chip: str
    label: str
    rpm: float = attrs.field(metadata=RPM)


def _highest(values: typing.Iterable[float]) -> float | None:
    """The highest finite value (a NaN compares false both ways, so ``max`` would answer
    by order); ``None`` without one."""
    return max((value for value in values if math.isfinite(value)), default=None)


@attrs.frozen
class HeatInfo(ValueMixin):
    """Temperatures and fans where the OS gives them.

    ``hottest_celsius`` is the highest ``current_celsius`` of ``sensors`` and
    ``fastest_fan_rpm`` the highest ``rpm`` of ``fans`` (``None`` without any), computed
    once when read. ``thermal_pressure`` is macOS's state from ``pmset -g therm``:
    ``"nominal"``, or what holds the machine back, e.g. ``"cpu speed limit 35%"`` or
    ``"thermal warning level 5, cpu speed limit 62%"`` (see :doc:`platforms`); ``None``
    elsewhere and when it could not be read. ``thermal_rank`` is that state's rank in
    :data:`~resguard.rules.THERMAL_STATES`, found from pmset's figures when read, not
    from the text: a thermal warning level (IOKit's scale: 5 danger, 10 crisis) of 1-4 is
    moderate (1), from 5 heavy (2), from 10 trapping (3); a CPU speed or scheduler limit
    below 100 % or a performance warning level is heavy; else nominal (0). ``None`` with
    the text (or in a record built without one: the thermal rule sees no pressure; the
    mapping is resguard's reading of pmset, not tested on a Mac). ``source`` names where
    the numbers came from (``"hwmon"``, ``"psutil"``, ``"pmset"``, joined by ``+`` when
    several answered).
    """

    sensors: tuple[TemperatureSensor, ...]
    fans: tuple[FanSpeed, ...]
    hottest_celsius: float | None = attrs.field(metadata=CELSIUS)
    fastest_fan_rpm: float | None = attrs.field(metadata=RPM)
    thermal_pressure: str | None
    thermal_rank: int | None = attrs.field(default=None, kw_only=True)
    source: str

    @classmethod
    def from_readings(
        cls,
        sensors: tuple[TemperatureSensor, ...],
        fans: tuple[FanSpeed, ...],
        thermal_pressure: str | None,
        source: str,
        *,
        thermal_rank: int | None = None,
    ) -> HeatInfo:
        """The record of these readings, with the hottest sensor and fastest fan found."""
        return cls(
            sensors,
            fans,
            _highest(sensor.current_celsius for sensor in sensors),
            _highest(fan.rpm for fan in fans),
            thermal_pressure,
            source,
            thermal_rank=thermal_rank,
        )


FAULT_KINDS: tuple[str, ...] = typing.get_args(FaultKind)


@attrs.frozen
class Fault(ValueMixin):
    """Why part of a snapshot is unknown.

    ``field`` is the dotted snapshot prefix that is ``None`` because of it (``"memory"``,
    ``"memory.total"``, ``"cpu.percent"``, ``"pressure.memory"``, ``"process"``); a metric
    path is covered when it equals ``field`` or starts with ``field + "."`` (see
    :meth:`Snapshot.fault_for`). ``source`` is the file (or probe) that failed, ``kind`` one
    of :data:`FAULT_KINDS` and ``detail`` a short human-readable explanation.

    ``fallback`` is ``None`` when the field is unknown (``None`` in the snapshot); when
    another source filled it in instead (the host's numbers for an unreadable cgroup,
    ``/proc/self/statm`` for a damaged ``/proc/self/stat``) it names that source and the
    field keeps a value.
    """

    field: str
    source: str
    kind: FaultKind
    detail: str
    fallback: str | None = None

    def __str__(self) -> str:
        outcome = f", used {self.fallback}" if self.fallback else ""
        return f"{self.field}: {self.source} {self.kind} ({self.detail}{outcome})"


@attrs.frozen
class Snapshot(ValueMixin):
    """Everything resguard knows at one instant. ``taken_at`` is wall-clock epoch seconds,
    ``monotonic`` the :func:`time.monotonic` reading. ``processes``, ``containers``,
    ``ollama`` and ``heat`` are filled in by a Monitor whose sources sample them, else
    ``None``. ``gpus`` are the NVIDIA GPUs NVML reports (``None``: unknown, no NVML or
    no driver; ``()``: NVML says there is none) and ``gpu`` their summary for rules
    (:class:`GpuSummary`, ``None`` with ``gpus``). ``cgroup_pids`` are the pids in the
    memory cgroup whose limit ``memory`` reports and in its descendants, sorted, sampled
    with the process table when ``memory.cgroup`` is set (linux backend; ``None``
    otherwise). ``faults`` lists the sources that could not be read for this snapshot and
    the fields they left unknown (``None``); it is empty when everything was read.
    """

    memory: MemoryInfo
    swap: SwapInfo
    cpu: CpuInfo
    pressure: PressureInfo
    process: ProcessSelf
    taken_at: float = attrs.field(metadata=SECONDS)
    monotonic: float = attrs.field(metadata=SECONDS)
    processes: tuple[ProcessInfo, ...] | None = None
    containers: ContainersInfo | None = None
    ollama: tuple[OllamaModelInfo, ...] | None = None
    faults: tuple[Fault, ...] = ()
    heat: HeatInfo | None = None
    cgroup_pids: tuple[int, ...] | None = None
    gpus: tuple[GpuInfo, ...] | None = None
    gpu: GpuSummary | None = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "gpu", GpuSummary.from_gpus(self.gpus))

    def fault_for(self, path: str) -> Fault | None:
        """The fault that left the metric *path* (``"memory.percent"``) unknown, else ``None``
        (faults whose field another source filled in are not counted)."""
        for fault in self.faults:
            if fault.fallback is not None:
                continue
            field = fault.field
            if path == field or (
                path.startswith(field) and path[len(field) : len(field) + 1] == "."
            ):
                return fault
        return None

    def _repr_html_(self) -> str:
        from resguard.snapshot._html import snapshot_html  # it imports these values

        return snapshot_html(self)


def metric_paths() -> dict[str, Any]:
    """Every dotted numeric path of a :class:`Snapshot` (for validating rules early)."""
    result: dict[str, Any] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls, globalns=globals())
        for field in attrs.fields(cls):
            hint = hints[field.name]
            if typing.get_origin(hint) is tuple:
                continue  # rows (processes, containers) are judged by table rules
            args = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
            if any(typing.get_origin(arg) is tuple for arg in args):
                continue
            target, path = args[0], prefix + field.name
            if attrs.has(target):
                walk(target, path + ".")
            elif target in (int, float):
                result[path] = target

    walk(Snapshot, "")
    return result


_units_cache: dict[str, str | None] = {}


def metric_unit(path: str) -> str | None:
    """The unit of the numeric metric at the dotted *path*, one of :data:`UNITS`, or
    ``None`` for a plain number (``cpu.load_1m``, ``process.pid``) or a path that names no
    numeric field.

    *path* is written as rules write it: ``"memory.used"`` → ``"bytes"``,
    ``"pressure.memory.some.avg10"`` → ``"percent"``, ``"taken_at"`` → ``"seconds"``; the
    rows of the tables are named by the table (``"processes.rss"``, ``"ollama.size"``,
    ``"containers.memory_used"``, also ``"containers.items.memory_used"``). The units come
    from the fields' attrs metadata, so formatting, rule parsing and Prometheus read one
    source.
    """
    if not _units_cache:
        _units_cache.update(_walk_units(Snapshot, ""))
        _units_cache.update(_walk_units(ContainerStats, "containers."))
    return _units_cache.get(path)


def _walk_units(cls: type, prefix: str) -> dict[str, str | None]:
    """Dotted path -> unit for every numeric field under *cls*, records in tuples included."""
    result: dict[str, str | None] = {}
    hints = typing.get_type_hints(cls, globalns=globals())
    for field in attrs.fields(cls):
        path = prefix + field.name
        args = [arg for arg in typing.get_args(hints[field.name]) if arg is not type(None)]
        for arg in args or [hints[field.name]]:
            if typing.get_origin(arg) is tuple:
                arg = typing.get_args(arg)[0]  # rows: named by the table, not per row
            if attrs.has(arg):
                result.update(_walk_units(arg, path + "."))
            elif arg in (int, float):
                result[path] = field.metadata.get("unit")
    return result
