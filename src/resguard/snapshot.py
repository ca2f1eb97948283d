"""Snapshots: immutable values describing memory, CPU, pressure and this process.

A :class:`Snapshot` is built by a :class:`Sampler` from the kernel's files and does no I/O
afterwards. Memory numbers are *effective*: inside a container or a cgroup the limit is the
cgroup's, not the host's (see :class:`MemoryInfo`). All sizes are bytes, times are seconds,
percentages run from 0 to 100.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import attrs

from resguard._modules.render import ValueMixin, flatten, html_table
from resguard._probes import cgroup as _cgroup
from resguard._probes import procfs as _procfs
from resguard._probes.files import FileCache
from resguard._probes.paths import DEFAULT_ROOTS, Roots
from resguard._probes.psi import PressureLine, ResourcePressure, parse_pressure

__all__ = [
    "FAULT_KINDS",
    "ContainerStats",
    "ContainersInfo",
    "ContainersMemory",
    "CpuInfo",
    "Fault",
    "FaultKind",
    "MemoryInfo",
    "OllamaModelInfo",
    "PressureInfo",
    "PressureLine",
    "ProcessInfo",
    "ProcessSelf",
    "ResourcePressure",
    "Sampler",
    "Snapshot",
    "SwapInfo",
    "snapshot",
]

_T = TypeVar("_T")


@attrs.frozen
class MemoryInfo(ValueMixin):
    """Memory against the *effective* limit.

    ``limit`` is the smallest of the host's total, the cgroup limit found by walking this
    process's cgroup up the hierarchy (v2 ``memory.max``/``memory.high``, v1
    ``memory.limit_in_bytes``) and ``RLIMIT_AS``/``RLIMIT_DATA``. ``used`` follows the bound:
    under a cgroup it is the working set (usage minus inactive file cache, as kubelet counts
    it), on the host it is total minus ``MemAvailable``, under an rlimit the process's
    address space (or data segment). ``source`` is ``"host"``, ``"cgroup"`` or
    ``"rlimit"``; ``source_detail`` names the file or limit that bound it.

    A number that could not be read is ``None`` (*unknown*, never 0) and the snapshot's
    ``faults`` say why; ``source`` is ``"unknown"`` when no source could be read at all.
    """

    total: int | None
    limit: int | None
    used: int | None
    available: int | None
    percent: float | None
    source: str
    source_detail: str
    cgroup: str | None


@attrs.frozen
class SwapInfo(ValueMixin):
    """Swap space of the host, in bytes (``None`` where ``/proc/meminfo`` could not say)."""

    total: int | None
    used: int | None
    free: int | None
    percent: float | None


@attrs.frozen
class CpuInfo(ValueMixin):
    """CPU use and the CPUs this process may really use.

    ``percent`` is the host's busy share since the previous sample (0–100 over all CPUs).
    ``effective`` is the number of CPUs the process can use: the smaller of its affinity
    mask and its cgroup quota (``cpu.max`` or ``cfs_quota_us/cfs_period_us``);
    ``effective_source`` says which (``"host"``, ``"affinity"`` or ``"cgroup"``).
    ``percent`` and the load averages are ``None`` when their files could not be read.
    """

    percent: float | None
    count: int
    effective: float
    effective_source: str
    load_1m: float | None
    load_5m: float | None
    load_15m: float | None


@attrs.frozen
class PressureInfo(ValueMixin):
    """PSI for memory, CPU and I/O (``None`` where the kernel has none); ``source`` names
    ``"system"`` (``/proc/pressure``) or the cgroup v2 directory it was read from."""

    memory: ResourcePressure | None
    cpu: ResourcePressure | None
    io: ResourcePressure | None
    source: str | None


@attrs.frozen
class ProcessSelf(ValueMixin):
    """This process: resident and virtual size, USS (only when asked for, it is costly),
    CPU percent since the previous sample (100 = one full core), threads, and the summed
    RSS of its descendants. A number that could not be read is ``None``."""

    pid: int
    rss: int | None
    vms: int | None
    uss: int | None
    cpu_percent: float | None
    num_threads: int | None
    children_rss: int | None


@attrs.frozen
class ProcessInfo(ValueMixin):
    """One row of the process table (or a group of processes with one name when ``count``
    is above 1). Identity is ``(pid, create_time)``; ``cpu_percent`` is since the table's
    previous sample, 100 = one full core."""

    pid: int
    name: str
    cmdline: tuple[str, ...]
    username: str | None
    uid: int | None
    ppid: int
    rss: int
    uss: int | None
    cpu_percent: float
    num_threads: int
    create_time: float
    count: int = 1


@attrs.frozen
class ContainerStats(ValueMixin):
    """One running container. ``memory_used`` follows the working-set rule (usage minus
    inactive file cache); ``memory_percent`` is of ``memory_limit`` (``None`` when there is
    no limit); ``cpu_percent`` is 100 per full core."""

    id: str
    name: str
    image: str
    status: str
    memory_usage: int
    memory_used: int
    memory_limit: int | None
    memory_percent: float | None
    cpu_percent: float | None
    pids: int | None
    compose_project: str | None = None
    compose_service: str | None = None


@attrs.frozen
class ContainersMemory(ValueMixin):
    """Totals over running containers: working-set bytes and the highest percent of limit."""

    total: int
    max_percent: float | None


@attrs.frozen
class ContainersInfo(ValueMixin):
    """The running containers as the judge layer sees them (``containers.memory.total``)."""

    items: tuple[ContainerStats, ...]
    memory: ContainersMemory

    @classmethod
    def from_items(cls, items: tuple[ContainerStats, ...]) -> ContainersInfo:
        percents = [item.memory_percent for item in items if item.memory_percent is not None]
        return cls(items, ContainersMemory(sum(item.memory_used for item in items),
                                           max(percents) if percents else None))


@attrs.frozen
class OllamaModelInfo(ValueMixin):
    """A model loaded in Ollama: total and GPU bytes, when its keep-alive ends and since
    when it has been idle (wall-clock epoch seconds; ``None`` when unknown)."""

    name: str
    size: int
    size_vram: int
    expires_at: float | None
    idle_since: float | None
    context_length: int | None = None


FaultKind = Literal["garbage", "truncated", "empty", "unreadable", "vanished", "missing"]
"""How a source was damaged: content that does not parse, content cut short, an empty
file, a file that exists but cannot be read (permission denied, I/O error), a file that
disappeared between open and read, and a file that is not there at all."""

FAULT_KINDS: tuple[str, ...] = typing.get_args(FaultKind)


@attrs.frozen
class Fault(ValueMixin):
    """Why part of a snapshot is unknown.

    ``field`` is the dotted snapshot prefix that is ``None`` because of it (``"memory"``,
    ``"memory.total"``, ``"cpu.percent"``, ``"pressure.memory"``, ``"process"``); a metric
    path is covered when it equals ``field`` or starts with ``field + "."`` (see
    :meth:`Snapshot.fault_for`). ``source`` is the file (or probe) that failed, ``kind`` one
    of :data:`FAULT_KINDS` and ``detail`` a short human-readable explanation.
    """

    field: str
    source: str
    kind: FaultKind
    detail: str

    def __str__(self) -> str:
        return f"{self.field}: {self.source} {self.kind} ({self.detail})"


@attrs.frozen
class Snapshot(ValueMixin):
    """Everything resguard knows at one instant. ``taken_at`` is wall-clock epoch seconds,
    ``monotonic`` the :func:`time.monotonic` reading. ``processes``, ``containers`` and
    ``ollama`` are filled in by a Monitor whose sources sample them, else ``None``.
    ``faults`` lists the sources that could not be read for this snapshot and the fields
    they left unknown (``None``); it is empty when everything was read.
    """

    memory: MemoryInfo
    swap: SwapInfo
    cpu: CpuInfo
    pressure: PressureInfo
    process: ProcessSelf
    taken_at: float
    monotonic: float
    processes: tuple[ProcessInfo, ...] | None = None
    containers: ContainersInfo | None = None
    ollama: tuple[OllamaModelInfo, ...] | None = None
    faults: tuple[Fault, ...] = ()

    def fault_for(self, path: str) -> Fault | None:
        """The fault that left the metric *path* (``"memory.percent"``) unknown, else ``None``."""
        for fault in self.faults:
            field = fault.field
            if path == field or (path.startswith(field) and path[len(field):len(field) + 1]
                                 == "."):
                return fault
        return None

    def _repr_html_(self) -> str:
        return html_table(flatten(self), "resguard snapshot")


LIMITS_MAX_AGE_S = 1.0
"""How stale the limits in a snapshot may be (cgroup limit, rlimits, CPU quota)."""

SLOW_FILES_MAX_AGE_S = 0.5
"""How stale PSI and load averages may be; the kernel updates them every 2 s and 5 s."""


@attrs.frozen
class _Limits:
    memory: tuple[int, str, str] | None  # (bytes, cgroup directory, file) of the tightest
    rlimits: tuple[tuple[str, int], ...]
    cpu_effective: float
    cpu_source: str


class Sampler:
    """Builds snapshots from the kernel's files, cheaply and repeatedly.

    It keeps the descriptors of the files it reads, the location of this process's cgroup
    and the previous CPU counters (so CPU percentages need no sleep). One sampler may be
    shared by threads. *roots* re-roots ``/proc`` and ``/sys/fs/cgroup`` for tests.
    *cgroup* names a cgroup directory to judge memory by instead of this process's own
    (e.g. a worker's cgroup watched from outside); the ``process`` part stays this process.
    Limits (the cgroup limit, rlimits, the CPU quota) are re-read at most every
    *limits_max_age_s* (default one second), PSI and load averages at most every
    *slow_files_max_age_s* (half a second); usage is read on every sample.
    """

    def __init__(self, roots: Roots = DEFAULT_ROOTS, *, cgroup: str | None = None,
                 limits_max_age_s: float = LIMITS_MAX_AGE_S,
                 slow_files_max_age_s: float = SLOW_FILES_MAX_AGE_S) -> None:
        self._roots = roots
        self._slow_max_age_s = slow_files_max_age_s
        self._limits_max_age_s = limits_max_age_s
        self._cgroup_dir = cgroup
        if cgroup is not None:
            _cgroup.location_of(cgroup, roots)  # fail now, not on the first sample
        self._files = FileCache()
        self._lock = threading.Lock()
        self._pid = -1
        self._location: _cgroup.CgroupLocation | None = None
        self._previous_system: tuple[int, int] = (0, 0)
        self._previous_self: tuple[int, float] = (0, 0.0)
        self._limits: _Limits | None = None
        self._limits_expire_s = -1.0
        self._psi_paths: tuple[str, str, str] = ("", "", "")
        self._psi_source: str | None = None
        self._cpu_count = os.cpu_count() or 1
        self._meminfo_path = self._proc("meminfo")
        self._stat_path = self._proc("stat")
        self._loadavg_path = self._proc("loadavg")
        self._self_stat_path = self._proc("self", "stat")
        self._self_statm_path = self._proc("self", "statm")
        self._parsed: dict[str, tuple[float, Any]] = {}  # slowly changing files

    def _proc(self, *parts: str) -> str:
        return os.path.join(self._roots.proc, *parts)

    def _setup(self) -> None:
        """(Re)discover cgroup and PSI locations; runs at first use and after a fork."""
        self._pid = os.getpid()
        self._location = (_cgroup.location_of(self._cgroup_dir, self._roots)
                          if self._cgroup_dir else _cgroup.locate(self._roots))
        location = self._location
        cgroup_dir = location.memory_dir if location and location.version == "v2" else None
        if cgroup_dir and cgroup_dir != location.memory_mount and os.path.exists(  # type: ignore[union-attr]
                os.path.join(cgroup_dir, "memory.pressure")):
            self._psi_paths = tuple(os.path.join(cgroup_dir, f"{name}.pressure")  # type: ignore[assignment]
                                    for name in ("memory", "cpu", "io"))
            self._psi_source = cgroup_dir
        elif os.path.exists(self._proc("pressure", "memory")):
            self._psi_paths = tuple(self._proc("pressure", name)  # type: ignore[assignment]
                                    for name in ("memory", "cpu", "io"))
            self._psi_source = "system"
        else:
            self._psi_paths, self._psi_source = ("", "", ""), None
        uptime = self._files.read(self._proc("uptime"))
        stat = self._files.read(self._self_stat_path)
        if uptime and stat:
            start_s = _procfs.parse_pid_stat(stat)[5] / _procfs.TICKS_PER_S
            self._previous_self = (0, time.monotonic() - (float(uptime.split()[0]) - start_s))
        self._previous_system = (0, 0)  # the first sample reports the average since boot

    @property
    def location(self) -> _cgroup.CgroupLocation | None:
        """Where this process's cgroups are (``None`` without cgroups)."""
        if self._pid != os.getpid():
            self._setup()
        return self._location

    def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        """Take a snapshot. ``uss=True`` adds the process's unique set size (reads smaps,
        milliseconds); ``children=False`` skips summing descendants' RSS."""
        with self._lock:
            if self._pid != os.getpid():
                self._setup()
            now_monotonic = time.monotonic()
            meminfo = _procfs.parse_meminfo(self._files.read(self._meminfo_path) or "")
            process = self._process(now_monotonic, uss=uss, children=children)
            limits = self._current_limits(now_monotonic)
            return Snapshot(
                memory=self._memory(meminfo, process, limits),
                swap=_swap(meminfo),
                cpu=self._cpu(limits),
                pressure=self._pressure(),
                process=process,
                taken_at=time.time(),
                monotonic=now_monotonic,
            )

    def _current_limits(self, now_monotonic: float) -> _Limits:
        """Limits change rarely (a `docker update`, a setrlimit): re-read them at most once
        per :data:`LIMITS_MAX_AGE_S` instead of on every sample."""
        if self._limits is not None and now_monotonic < self._limits_expire_s:
            return self._limits
        location = self._location
        memory = _cgroup.memory_limit(location, self._files.read) if location else None
        rlimits = []
        for name, kind in (("RLIMIT_AS", resource.RLIMIT_AS),
                           ("RLIMIT_DATA", resource.RLIMIT_DATA)):
            soft = resource.getrlimit(kind)[0]
            if soft != resource.RLIM_INFINITY and soft > 0:
                rlimits.append((name, soft))
        effective, source = float(self._cpu_count), "host"
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            affinity = self._cpu_count
        if affinity < effective:
            effective, source = float(affinity), "affinity"
        quota = _cgroup.cpu_quota(location, self._files.read) if location else None
        if quota is not None and quota < effective:
            effective, source = quota, "cgroup"
        self._limits = _Limits(memory, tuple(rlimits), effective, source)
        self._limits_expire_s = now_monotonic + self._limits_max_age_s
        return self._limits

    def _memory(self, meminfo: dict[str, int], process: ProcessSelf,
                limits: _Limits) -> MemoryInfo:
        total = meminfo.get("MemTotal", 0)
        host_available = meminfo.get("MemAvailable", meminfo.get("MemFree", 0))
        limit, used, source, detail = total, total - host_available, "host", "/proc/meminfo"
        location = self._location
        if limits.memory is not None and limits.memory[0] < limit and location is not None:
            bound_limit, directory, name = limits.memory
            usage = _cgroup.read_memory(directory, location.version, self._files.read)
            if usage is not None:
                limit, used = bound_limit, usage.working_set
                source, detail = "cgroup", f"{directory}/{name}"
        for name, soft in limits.rlimits:
            if soft < limit:
                limit, source, detail = soft, "rlimit", name
                used = (process.vms or 0) if name == "RLIMIT_AS" else self._data_bytes()
        available = max(min(limit - used, host_available), 0)
        percent = 100.0 * used / limit if limit else 0.0
        return MemoryInfo(total=total, limit=limit, used=used, available=available,
                          percent=percent, source=source, source_detail=detail,
                          cgroup=location.relative if location else None)

    def _data_bytes(self) -> int:
        text = self._files.read(self._self_statm_path)
        return int(text.split()[5]) * _procfs.PAGE_SIZE if text else 0

    def _cpu(self, limits: _Limits) -> CpuInfo:
        text = self._files.read(self._stat_path)
        percent = 0.0
        if text:
            busy, total = _procfs.parse_total_cpu_ticks(text)
            previous_busy, previous_total = self._previous_system
            if total > previous_total:
                percent = 100.0 * (busy - previous_busy) / (total - previous_total)
                self._previous_system = (busy, total)
        loads = self._parse_once(self._loadavg_path, _parse_loadavg)
        return CpuInfo(percent=min(max(percent, 0.0), 100.0), count=self._cpu_count,
                       effective=limits.cpu_effective, effective_source=limits.cpu_source,
                       load_1m=loads[0], load_5m=loads[1], load_15m=loads[2])

    def _pressure(self) -> PressureInfo:
        memory_path, cpu_path, io_path = self._psi_paths
        return PressureInfo(
            memory=self._parse_once(memory_path, parse_pressure) if memory_path else None,
            cpu=self._parse_once(cpu_path, parse_pressure) if cpu_path else None,
            io=self._parse_once(io_path, parse_pressure) if io_path else None,
            source=self._psi_source,
        )

    def _parse_once(self, path: str, parse: Callable[[str | None], _T]) -> _T:
        """Read and parse a slowly changing file (PSI, load averages), at most once per
        :data:`SLOW_FILES_MAX_AGE_S`; the kernel recomputes their averages every 2 to 5 s."""
        now = time.monotonic()
        previous = self._parsed.get(path)
        if previous is not None and now - previous[0] < self._slow_max_age_s:
            return previous[1]  # type: ignore[no-any-return]
        value = parse(self._files.read(path))
        self._parsed[path] = (now, value)
        return value

    def _process(self, now_monotonic: float, *, uss: bool, children: bool) -> ProcessSelf:
        stat = self._files.read(self._self_stat_path) or ""
        cpu_percent, threads, rss, vms = 0.0, 0, 0, 0
        if stat:
            _, _, _, ticks, threads, _, rss, vms = _procfs.parse_pid_stat(stat)
            previous_ticks, previous_time = self._previous_self
            elapsed = now_monotonic - previous_time
            if elapsed > 0:
                cpu_percent = 100.0 * (ticks - previous_ticks) / _procfs.TICKS_PER_S / elapsed
                self._previous_self = (ticks, now_monotonic)
        unique = None
        if uss:
            import psutil  # only here: USS needs smaps, and psutil costs ~20 ms to import

            try:
                unique = psutil.Process().memory_full_info().uss
            except (psutil.Error, OSError):
                unique = None
        return ProcessSelf(pid=self._pid, rss=rss, vms=vms, uss=unique,
                           cpu_percent=max(cpu_percent, 0.0), num_threads=threads,
                           children_rss=self._children_rss() if children else 0)

    def _children_rss(self) -> int:
        """Summed RSS of all descendants, found through ``/proc/<pid>/task/*/children``."""
        total, pending, seen = 0, [str(self._pid)], set()
        while pending:
            pid = pending.pop()
            try:
                tasks = os.listdir(self._proc(pid, "task"))
            except OSError:
                continue
            for task in tasks:
                try:
                    with open(self._proc(pid, "task", task, "children"), "rb") as handle:
                        kids = handle.read().split()
                except OSError:
                    continue
                for kid in kids:
                    child = kid.decode()
                    if child in seen:
                        continue
                    seen.add(child)
                    pending.append(child)
                    try:
                        with open(self._proc(child, "statm"), "rb") as handle:
                            total += _procfs.parse_statm(handle.read().decode())[1]
                    except OSError:
                        continue
        return total


def _parse_loadavg(text: str | None) -> list[float]:
    return [float(value) for value in text.split()[:3]] if text else [0.0, 0.0, 0.0]


def _swap(meminfo: dict[str, int]) -> SwapInfo:
    total = meminfo.get("SwapTotal", 0)
    free = meminfo.get("SwapFree", 0)
    used = total - free
    return SwapInfo(total=total, used=used, free=free,
                    percent=100.0 * used / total if total else 0.0)


_default_sampler: Sampler | None = None
_default_lock = threading.Lock()


def default_sampler() -> Sampler:
    """The process-wide sampler behind :func:`snapshot`."""
    global _default_sampler
    if _default_sampler is None:
        with _default_lock:
            if _default_sampler is None:
                _default_sampler = Sampler()
    return _default_sampler


def snapshot(*, uss: bool = False, children: bool = True) -> Snapshot:
    """Take a :class:`Snapshot` of this machine, its cgroup limits and this process."""
    return default_sampler().sample(uss=uss, children=children)


def metric_paths() -> dict[str, Any]:
    """Every dotted numeric path of a :class:`Snapshot` (for validating rules early)."""
    result: dict[str, Any] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
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


class _CallableModule(types.ModuleType):
    """Makes ``resguard.snapshot()`` work whether the package attribute names this module
    or the function: importing a submodule rebinds the package attribute to the module."""

    def __call__(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        return snapshot(uss=uss, children=children)


sys.modules[__name__].__class__ = _CallableModule
