"""Snapshots: immutable values describing memory, CPU, pressure and this process.

A :class:`Snapshot` is built by a :class:`Sampler` from the kernel's files and does no I/O
afterwards. Memory numbers are *effective*: inside a container or a cgroup the limit is the
cgroup's, not the host's (see :class:`MemoryInfo`). All sizes are bytes, times are seconds,
percentages run from 0 to 100.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import threading
import time
import types
import typing
from collections.abc import Callable
from typing import Any, Final, TypeVar

import attrs

from resguard._errors import InvalidType, InvalidValue
from resguard._modules import forks
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard._modules.render import ValueMixin, flatten, html_table
from resguard._probes import cgroup as _cgroup
from resguard._probes import procfs as _procfs
from resguard._probes.files import READ_CAP_BYTES, FaultKind, FileCache, damage_of
from resguard._probes.paths import DEFAULT_ROOTS, Roots
from resguard._probes.psi import PsiLine, parse_pressure
from resguard.units import shown

__all__ = [
    "FAULT_KINDS",
    "UNITS",
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
    "metric_paths",
    "metric_unit",
    "snapshot",
]

_T = TypeVar("_T")

UNITS: tuple[str, ...] = ("bytes", "seconds", "microseconds", "percent", "count")
"""The units a numeric snapshot field is counted in (see :func:`metric_unit`). Each such
field carries its unit as attrs metadata under ``"unit"``
(``attrs.fields(MemoryInfo).used.metadata["unit"] == "bytes"``); a field without one (a
pid, a load average) is a plain number."""

BYTES: Final = types.MappingProxyType({"unit": "bytes"})
SECONDS: Final = types.MappingProxyType({"unit": "seconds"})
MICROSECONDS: Final = types.MappingProxyType({"unit": "microseconds"})
PERCENT: Final = types.MappingProxyType({"unit": "percent"})
COUNT: Final = types.MappingProxyType({"unit": "count"})


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
        """The value of a parsed PSI file (:func:`resguard._probes.psi.parse_pressure`)."""
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
    it), on the host it is total minus ``MemAvailable``, under an rlimit the process's
    address space (or data segment). ``source`` is ``"host"``, ``"cgroup"`` or
    ``"rlimit"``; ``source_detail`` names the file or limit that bound it.

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
    """Swap space of the host, in bytes (``None`` where ``/proc/meminfo`` could not say)."""

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
    ``"system"`` (``/proc/pressure``) or the cgroup v2 directory it was read from."""

    memory: ResourcePressure | None
    cpu: ResourcePressure | None
    io: ResourcePressure | None
    source: str | None


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
    previous sample, 100 = one full core."""

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


@attrs.frozen
class OllamaModelInfo(ValueMixin):
    """A model loaded in Ollama: total and GPU bytes, when its keep-alive ends and since
    when it has been idle (wall-clock epoch seconds; ``None`` when unknown)."""

    name: str
    size: int = attrs.field(metadata=BYTES)
    size_vram: int = attrs.field(metadata=BYTES)
    expires_at: float | None = attrs.field(metadata=SECONDS)
    idle_since: float | None = attrs.field(metadata=SECONDS)
    context_length: int | None = attrs.field(default=None, metadata=COUNT)


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
    taken_at: float = attrs.field(metadata=SECONDS)
    monotonic: float = attrs.field(metadata=SECONDS)
    processes: tuple[ProcessInfo, ...] | None = None
    containers: ContainersInfo | None = None
    ollama: tuple[OllamaModelInfo, ...] | None = None
    faults: tuple[Fault, ...] = ()

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
        rows = []
        for path, value in flatten(self):
            if path == "faults":
                value = "; ".join(str(fault) for fault in self.faults) or "none"
            elif value is None:
                fault = self.fault_for(path)
                if fault is not None:
                    value = f"unknown ({fault.source}: {fault.kind})"
            rows.append((path, value))
        return html_table(rows, "resguard snapshot")


LIMITS_MAX_AGE_S = 1.0
"""How stale the limits in a snapshot may be (cgroup limit, rlimits, CPU quota); see also
:func:`invalidate_limits`."""

SLOW_FILES_MAX_AGE_S = 0.5
"""How stale PSI and load averages may be; the kernel updates them every 2 s and 5 s."""

_logger = get_logger("resguard.snapshot")

SENSING_FAULTS = FaultLog(_logger)
"""Process-wide: one warning per damaged file and kind of damage, whichever sampler saw it,
and one more when it can be read again."""

RELOG_AFTER_S = 60.0
"""A file that fails again in the same way within this long of its last warning, after
working in between (a flapping file), is not logged again, nor its recovery."""

_flap_lock = threading.Lock()
_logged_at: dict[tuple[str, str], float] = {}  # (file, kind) -> when its warning was logged
_quiet: set[str] = set()  # files failing again within RELOG_AFTER_S: neither logged


def _report_failure(source: str, message: str, kind: str) -> None:
    """Log *source* failing (once per kind), unless it is flapping (see RELOG_AFTER_S)."""
    now = time.monotonic()
    with _flap_lock:
        recently = now - _logged_at.get((source, kind), -math.inf) < RELOG_AFTER_S
        if source in _quiet:
            if recently:
                return
            _quiet.discard(source)  # a new kind of damage, or a minute on: log it
        elif recently and source not in SENSING_FAULTS.failing():
            _quiet.add(source)  # it worked for a moment and fails again: no new warning
            return
    if SENSING_FAULTS.failed(source, message, kind=kind):
        with _flap_lock:
            _logged_at[(source, kind)] = now
            if len(_logged_at) > 4096:  # many short-lived cgroup files: stay bounded
                _logged_at.clear()


def _report_recovery(source: str) -> None:
    with _flap_lock:
        if source in _quiet:
            _quiet.discard(source)  # its failure was not logged: neither is the recovery
            return
    SENSING_FAULTS.recovered(source)


_limits_generation = 0
_generation_lock = threading.Lock()


def invalidate_limits() -> None:
    """Make every :class:`Sampler` in this process re-read its limits (cgroup limit,
    rlimits, CPU quota) on its next sample instead of up to :data:`LIMITS_MAX_AGE_S` later.

    Call it right after changing a limit of this process (``limit_self`` does), so the new
    limit binds the next admission decision.
    """
    global _limits_generation
    with _generation_lock:
        _limits_generation += 1


_Damage = tuple[str, FaultKind, str]  # (path, kind, detail)


@attrs.frozen
class _Limits:
    memory: tuple[int, str, str] | None  # (bytes, cgroup directory, file) of the tightest
    rlimits: tuple[tuple[str, int], ...]
    cpu_effective: float
    cpu_source: str
    faults: tuple[Fault, ...]
    cgroup_gone: bool = False  # the cgroup named by Sampler(cgroup=...) was removed


class Sampler:
    """Builds snapshots from the kernel's files, cheaply and repeatedly.

    It keeps the descriptors of the files it reads, the location of this process's cgroup
    and the previous CPU counters (so CPU percentages need no sleep). One sampler may be
    shared by threads. *roots* re-roots ``/proc`` and ``/sys/fs/cgroup`` for tests.
    *cgroup* names a cgroup directory to judge memory by instead of this process's own
    (e.g. a worker's cgroup watched from outside); the ``process`` part stays this process.
    Limits (the cgroup limit, rlimits, the CPU quota) are re-read at most every
    *limits_max_age_s* (default one second, or at once after :func:`invalidate_limits`),
    PSI and load averages at most every *slow_files_max_age_s* (half a second); usage is
    read on every sample.

    :meth:`sample` never raises because of what it reads: a file that is missing, empty,
    cut short, unparseable, unreadable or gone leaves its numbers ``None`` (or another
    source fills in), the snapshot's ``faults`` say which, and one warning is logged per
    file and kind of damage (and one when it recovers), not one per sample.
    """

    def __init__(
        self,
        roots: Roots = DEFAULT_ROOTS,
        *,
        cgroup: str | os.PathLike[str] | None = None,
        limits_max_age_s: float = LIMITS_MAX_AGE_S,
        slow_files_max_age_s: float = SLOW_FILES_MAX_AGE_S,
    ) -> None:
        if not isinstance(roots, Roots):
            raise InvalidType(
                f"roots={shown(roots)} is not a Roots; expected "
                "resguard._probes.paths.Roots(proc=..., cgroup=...)"
            )
        if cgroup is not None:
            if not isinstance(cgroup, (str, os.PathLike)):
                raise InvalidType(
                    f"cgroup={shown(cgroup)} is not a path; expected a cgroup "
                    "directory as a string, or None for this process's own"
                )
            path = os.fspath(cgroup)
            if not isinstance(path, str):
                raise InvalidType(f"cgroup={shown(cgroup)} is not a text path; expected a str")
            _cgroup.location_of(path, roots)  # fail now (InvalidValue), not on a sample
            cgroup = path
        for name, value in (
            ("limits_max_age_s", limits_max_age_s),
            ("slow_files_max_age_s", slow_files_max_age_s),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidType(
                    f"{name}={shown(value)} is not a number of seconds; expected e.g. 1.0"
                )
            if not 0 <= value < float("inf"):
                raise InvalidValue(f"{name}={shown(value)} must be a finite number of seconds >= 0")
        self._roots = roots
        self._slow_max_age_s = slow_files_max_age_s
        self._limits_max_age_s = limits_max_age_s
        self._cgroup_dir: str | None = cgroup
        self._files = FileCache()
        self._lock = threading.Lock()
        self._pid = -1
        forks.register(self)
        self._location: _cgroup.CgroupLocation | None = None
        self._previous_system: tuple[int, int] = (0, 0)
        self._previous_self: tuple[int, float] | None = None
        self._cpu_percent: float | None = None
        self._self_cpu_percent: float | None = None
        self._limits: _Limits | None = None
        self._limits_expire_s = -1.0
        self._limits_seen = _limits_generation
        self._psi_paths: tuple[str, str, str] = ("", "", "")
        self._psi_source: str | None = None
        self._setup_faults: tuple[Fault, ...] = ()
        self._once_faults: tuple[Fault, ...] = ()
        self._failing: frozenset[str] = frozenset()
        self._cpu_count = os.cpu_count() or 1
        self._meminfo_path = self._proc("meminfo")
        self._stat_path = self._proc("stat")
        self._loadavg_path = self._proc("loadavg")
        self._uptime_path = self._proc("uptime")
        self._self_stat_path = self._proc("self", "stat")
        self._self_statm_path = self._proc("self", "statm")
        # slowly changing files: (read at, value, damage when the value is None)
        self._parsed: dict[str, tuple[float, Any, _Damage | None]] = {}

    def _proc(self, *parts: str) -> str:
        return os.path.join(self._roots.proc, *parts)

    def _after_fork_in_child(self) -> None:
        # a thread of the parent may have held these at the fork: it will never release
        self._lock = threading.Lock()
        self._files._after_fork_in_child()

    def _damage(self, path: str, text: str | None) -> _Damage:
        """Why *path* gave no value: the read failed (*text* ``None``) or the text is bad."""
        kind, detail = self._files.failure(path) if text is None else damage_of(text)
        return path, kind, detail

    def _setup(self) -> None:
        """(Re)discover cgroup and PSI locations; runs at first use and after a fork."""
        self._pid = os.getpid()
        setup: list[Fault] = []

        def report(field: str, path: str, text: str | None, optional: bool) -> None:
            damage: tuple[FaultKind, str] = (
                ("unreadable", "cannot read") if text is None else damage_of(text)
            )
            kind, detail = damage
            for name in (field, "cpu.effective"):
                setup.append(Fault(name, path, kind, detail, fallback="the host's numbers"))

        if self._cgroup_dir:
            self._location = _cgroup.find_location(self._cgroup_dir, self._roots)
            if self._location is None:
                setup.append(
                    Fault("memory", self._cgroup_dir, "vanished", "the cgroup directory is gone")
                )
        else:
            self._location = _cgroup.locate(self._roots, report=report)
        location = self._location
        cgroup_dir = location.memory_dir if location and location.version == "v2" else None
        if (
            location is not None
            and cgroup_dir
            and cgroup_dir != location.memory_mount
            and os.path.exists(os.path.join(cgroup_dir, "memory.pressure"))
        ):
            candidates = tuple(
                os.path.join(cgroup_dir, f"{name}.pressure") for name in ("memory", "cpu", "io")
            )
            self._psi_source = cgroup_dir
        elif os.path.exists(self._proc("pressure", "memory")):
            candidates = tuple(self._proc("pressure", name) for name in ("memory", "cpu", "io"))
            self._psi_source = "system"
        else:
            candidates, self._psi_source = ("", "", ""), None
        memory_psi, cpu_psi, io_psi = (
            path if path and os.path.exists(path) else "" for path in candidates
        )
        self._psi_paths = (memory_psi, cpu_psi, io_psi)
        if setup:
            # the cgroup could not be found, and with it its PSI
            origin = setup[0]
            for name in ("memory", "cpu", "io"):
                setup.append(
                    Fault(
                        f"pressure.{name}",
                        origin.source,
                        origin.kind,
                        origin.detail,
                        fallback="system PSI" if self._psi_source else None,
                    )
                )
        self._setup_faults = tuple(setup)
        self._once_faults = ()
        self._previous_self = None  # the first good read of /proc/self/stat sets it
        self._previous_system = (0, 0)  # the first sample reports the average since boot

    def _start_baseline(self, start_ticks: int) -> tuple[int, float] | None:
        """(0 ticks, monotonic time this process started), so the first sample reports the
        process's average since it started; ``None`` when the start cannot be placed."""
        text = self._files.read(self._uptime_path)
        uptime_s = _procfs.parse_uptime(text) if text is not None else None
        if uptime_s is None:
            path, kind, detail = self._damage(self._uptime_path, text)
            try:
                uptime_s = time.clock_gettime(time.CLOCK_BOOTTIME)
                fallback: str | None = "CLOCK_BOOTTIME"
            except (AttributeError, OSError):
                fallback = None
            self._once_faults = (
                Fault("process.cpu_percent", path, kind, detail, fallback=fallback),
            )
            if uptime_s is None:
                return None
        age_s = uptime_s - start_ticks / _procfs.TICKS_PER_S
        if age_s <= 0:
            return None  # inconsistent clocks: this sample sets the baseline
        return 0, time.monotonic() - age_s

    @property
    def location(self) -> _cgroup.CgroupLocation | None:
        """Where this process's cgroups are (``None`` without cgroups)."""
        if self._pid != os.getpid():
            with self._lock:
                self._setup()
        return self._location

    def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        """Take a snapshot. ``uss=True`` adds the process's unique set size (reads smaps,
        milliseconds); ``children=False`` skips summing descendants' RSS (then
        ``children_rss`` is ``None``: not measured)."""
        with self._lock:
            if self._pid != os.getpid():
                self._setup()
            now_monotonic = time.monotonic()
            faults: list[Fault] = []
            text = self._files.read(self._meminfo_path)
            meminfo = _procfs.parse_meminfo(text) if text is not None else {}
            process = self._process(now_monotonic, faults, uss=uss, children=children)
            limits = self._current_limits(now_monotonic)
            memory = self._memory(text, meminfo, process, limits, faults)
            swap = self._swap(text, meminfo, faults)
            cpu = self._cpu(limits, faults, now_monotonic)
            pressure = self._pressure(faults, now_monotonic)
            if limits.faults:
                faults.extend(limits.faults)
            if self._setup_faults:
                faults.extend(self._setup_faults)
            once = self._once_faults
            if once:
                faults.extend(once)
                self._once_faults = ()
            if faults or self._failing:
                self._log_faults(faults, once)
            return Snapshot(
                memory=memory,
                swap=swap,
                cpu=cpu,
                pressure=pressure,
                process=process,
                taken_at=time.time(),
                monotonic=now_monotonic,
                faults=tuple(faults),
            )

    def _log_faults(self, faults: list[Fault], once: tuple[Fault, ...]) -> None:
        """One warning per damaged file and kind (not per sample), one when it recovers."""
        by_source: dict[str, Fault] = {}
        for fault in faults:
            by_source.setdefault(fault.source, fault)
        for source, fault in by_source.items():
            mine = [item for item in faults if item.source == source]
            unknown = sorted({item.field for item in mine if item.fallback is None})
            filled = sorted(
                {f"{item.field} from {item.fallback}" for item in mine if item.fallback is not None}
            )
            outcome = "; ".join(
                part
                for part in (", ".join(unknown) + " unknown" if unknown else "", ", ".join(filled))
                if part
            )
            _report_failure(source, f"{fault.kind}: {fault.detail}; {outcome}", fault.kind)
        current = frozenset(by_source) - {fault.source for fault in once}
        for source in self._failing - current:
            _report_recovery(source)
        self._failing = current

    def _limit_without_rlimit(self, rlimit: str) -> int | None:
        """The effective memory limit as if this process's soft *rlimit* (``"RLIMIT_DATA"``
        or ``"RLIMIT_AS"``) were not set, ``None`` when unknown: what ``limit_self("80%")``
        takes a share of, so that setting it again does not compound."""
        memory = self.sample(children=False).memory
        with self._lock:
            limits, location = self._limits, self._location
        bounds = [memory.total] if memory.total is not None else []
        if limits is not None:
            if limits.memory is not None and location is not None and not limits.cgroup_gone:
                bounds.append(limits.memory[0])
            bounds.extend(soft for name, soft in limits.rlimits if name != rlimit)
        if self._cgroup_dir is not None and (
            location is None or (limits is not None and limits.cgroup_gone)
        ):
            return None  # the cgroup asked about is gone: no limit is known
        return min(bounds) if bounds else None

    def _current_limits(self, now_monotonic: float) -> _Limits:
        """Limits change rarely (a `docker update`, a setrlimit): re-read them at most once
        per :data:`LIMITS_MAX_AGE_S` (or after :func:`invalidate_limits`), not per sample."""
        generation = _limits_generation
        if (
            self._limits is not None
            and now_monotonic < self._limits_expire_s
            and generation == self._limits_seen
        ):
            return self._limits
        faults: list[Fault] = []

        def report(field: str, path: str, text: str | None, optional: bool) -> None:
            if text is None:
                kind, detail = self._files.failure(path)
                if optional and kind == "missing":
                    return  # a level without the file sets no limit
            else:
                kind, detail = damage_of(text)
            fallback = (
                "the other levels and the host"
                if field == "memory.limit"
                else "the affinity mask and the other levels"
            )
            faults.append(Fault(field, path, kind, detail, fallback=fallback))

        location = self._location
        memory = _cgroup.memory_limit(location, self._files.read, report) if location else None
        gone = (
            self._cgroup_dir is not None
            and location is not None
            and not os.path.isdir(self._cgroup_dir)
        )
        if gone:
            faults = [
                Fault("memory", self._cgroup_dir or "", "vanished", "the cgroup directory is gone")
            ]
        rlimits = []
        for name, kind in (
            ("RLIMIT_AS", resource.RLIMIT_AS),
            ("RLIMIT_DATA", resource.RLIMIT_DATA),
        ):
            soft = resource.getrlimit(kind)[0]
            if soft != resource.RLIM_INFINITY and soft > 0:
                rlimits.append((name, soft))
        effective, source = float(self._cpu_count), "host"
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            affinity = self._cpu_count
        if 0 < affinity < effective:
            effective, source = float(affinity), "affinity"
        quota = _cgroup.cpu_quota(location, self._files.read, report) if location else None
        if quota is not None and quota < effective:
            effective, source = quota, "cgroup"
        self._limits = _Limits(memory, tuple(rlimits), effective, source, tuple(faults), gone)
        self._limits_expire_s = now_monotonic + self._limits_max_age_s
        self._limits_seen = generation
        return self._limits

    def _memory(
        self,
        text: str | None,
        meminfo: dict[str, int],
        process: ProcessSelf,
        limits: _Limits,
        faults: list[Fault],
    ) -> MemoryInfo:
        total = meminfo.get("MemTotal") or None  # a total of 0 is damage, not a machine
        host_available = meminfo.get("MemAvailable", meminfo.get("MemFree"))
        meminfo_damage = (
            self._damage(self._meminfo_path, text)
            if total is None or host_available is None
            else None
        )
        location = self._location
        limit: int | None = total
        used: int | None = None
        source, detail = ("host", self._meminfo_path) if total is not None else ("unknown", "")
        used_damage: _Damage | None = meminfo_damage
        if total is not None and host_available is not None:
            used = max(total - host_available, 0)
        gone = self._cgroup_dir is not None and (location is None or limits.cgroup_gone)
        if gone:
            # the cgroup asked about is gone: the host's numbers would answer another question
            limit = used = None
            source, detail = "unknown", ""
        elif (
            limits.memory is not None
            and location is not None
            and (limit is None or limits.memory[0] < limit)
        ):
            bound_limit, directory, name = limits.memory
            limit, source, detail = bound_limit, "cgroup", f"{directory}/{name}"
            used, used_damage = self._cgroup_used(directory, location.version, faults)
        for name, soft in () if gone else limits.rlimits:
            if limit is None or soft < limit:
                limit, source, detail = soft, "rlimit", name
                if name == "RLIMIT_AS":
                    used = process.vms
                    used_damage = (
                        None
                        if used is not None
                        else (self._self_stat_path, "unreadable", "no virtual size")
                    )
                else:
                    used, used_damage = self._data_bytes()
        available: int | None = None
        percent: float | None = None
        if limit is not None and used is not None:
            headroom = limit - used
            if host_available is not None:
                headroom = min(headroom, host_available)
            available = max(headroom, 0)
            percent = 100.0 * used / limit if limit else 100.0
        if total is None and meminfo_damage is not None:
            path, kind, why = meminfo_damage
            if limit is None:
                faults.append(Fault("memory", path, kind, why))
            else:
                faults.append(Fault("memory.total", path, kind, why))
        if limit is not None and used is None and used_damage is not None:
            path, kind, why = used_damage
            for field in ("memory.used", "memory.available", "memory.percent"):
                faults.append(Fault(field, path, kind, why))
        return MemoryInfo(
            total=total,
            limit=limit,
            used=used,
            available=available,
            percent=percent,
            source=source,
            source_detail=detail,
            cgroup=location.relative if location else None,
        )

    def _cgroup_used(
        self, directory: str, version: str, faults: list[Fault]
    ) -> tuple[int | None, _Damage | None]:
        """The working set of the binding cgroup (usage minus inactive file cache)."""
        usage_path = directory + (
            "/memory.usage_in_bytes" if version == "v1" else "/memory.current"
        )
        text = self._files.read(usage_path)
        usage = _cgroup.parse_count(text) if text is not None else None
        if usage is None:
            return None, self._damage(usage_path, text)
        stat_path = directory + "/memory.stat"
        stat = self._files.read(stat_path)
        keys = ("total_inactive_file", "inactive_file") if version == "v1" else ("inactive_file",)
        inactive = _cgroup.parse_stat_value(stat, *keys) if stat is not None else None
        if inactive is None:
            _, kind, why = self._damage(stat_path, stat)
            faults.append(
                Fault(
                    "memory.used", stat_path, kind, why, fallback="all usage, file cache included"
                )
            )
            return usage, None
        return max(usage - inactive, 0), None

    def _data_bytes(self) -> tuple[int | None, _Damage | None]:
        text = self._files.read(self._self_statm_path)
        statm = _procfs.parse_statm(text) if text is not None else None
        if statm is None:
            return None, self._damage(self._self_statm_path, text)
        return statm[2], None

    def _swap(self, text: str | None, meminfo: dict[str, int], faults: list[Fault]) -> SwapInfo:
        total = meminfo.get("SwapTotal")
        free = meminfo.get("SwapFree")
        if total is None or free is None or free > total:
            path, kind, why = self._damage(self._meminfo_path, text)
            faults.append(Fault("swap", path, kind, why))
            return SwapInfo(total=None, used=None, free=None, percent=None)
        used = total - free
        return SwapInfo(
            total=total, used=used, free=free, percent=100.0 * used / total if total else 0.0
        )

    def _cpu(self, limits: _Limits, faults: list[Fault], now: float) -> CpuInfo:
        text = self._files.read(self._stat_path)
        ticks = _procfs.parse_total_cpu_ticks(text) if text is not None else None
        if ticks is None:
            path, kind, why = self._damage(self._stat_path, text)
            faults.append(Fault("cpu.percent", path, kind, why))
            percent = None
        else:
            busy, total = ticks
            previous_busy, previous_total = self._previous_system
            if total > previous_total and busy >= previous_busy:
                share = 100.0 * (busy - previous_busy) / (total - previous_total)
                self._cpu_percent = min(max(share, 0.0), 100.0)
                self._previous_system = ticks
            elif total < previous_total or busy < previous_busy:
                self._previous_system = ticks  # counters went back: a new baseline
            percent = self._cpu_percent  # no tick since the last sample: the last share
        loads, damage = self._parse_once(self._loadavg_path, _procfs.parse_loadavg, now)
        if loads is None:
            if damage is not None:
                path, kind, why = damage
                for field in ("cpu.load_1m", "cpu.load_5m", "cpu.load_15m"):
                    faults.append(Fault(field, path, kind, why))
            load_1m = load_5m = load_15m = None
        else:
            load_1m, load_5m, load_15m = loads
        return CpuInfo(
            percent=percent,
            count=self._cpu_count,
            effective=limits.cpu_effective,
            effective_source=limits.cpu_source,
            load_1m=load_1m,
            load_5m=load_5m,
            load_15m=load_15m,
        )

    def _pressure(self, faults: list[Fault], now: float) -> PressureInfo:
        values: list[ResourcePressure | None] = []
        for name, path in zip(("memory", "cpu", "io"), self._psi_paths, strict=True):
            if not path:
                values.append(None)
                continue
            value, damage = self._parse_once(path, _parse_pressure, now)
            if damage is not None:
                _, kind, why = damage
                faults.append(Fault(f"pressure.{name}", path, kind, why))
            values.append(value)
        return PressureInfo(memory=values[0], cpu=values[1], io=values[2], source=self._psi_source)

    def _parse_once(
        self, path: str, parse: Callable[[str], _T | None], now: float
    ) -> tuple[_T | None, _Damage | None]:
        """Read and parse a slowly changing file (PSI, load averages), at most once per
        :data:`SLOW_FILES_MAX_AGE_S`; the kernel recomputes their averages every 2 to 5 s.
        Returns the value and, when it is ``None``, why."""
        previous = self._parsed.get(path)
        if previous is not None and now - previous[0] < self._slow_max_age_s:
            return previous[1], previous[2]
        text = self._files.read(path)
        value = parse(text) if text is not None else None
        damage = self._damage(path, text) if value is None else None
        self._parsed[path] = (now, value, damage)
        return value, damage

    def _process(
        self, now_monotonic: float, faults: list[Fault], *, uss: bool, children: bool
    ) -> ProcessSelf:
        text = self._files.read(self._self_stat_path)
        stat = _procfs.parse_pid_stat(text) if text is not None else None
        cpu_percent: float | None = None
        threads: int | None = None
        rss: int | None = None
        vms: int | None = None
        if stat is not None:
            _, _, _, ticks, threads, start_ticks, rss, vms = stat
            previous = self._previous_self
            if previous is None:
                previous = self._start_baseline(start_ticks)
            if previous is None:
                self._previous_self = (ticks, now_monotonic)  # a baseline for the next one
            else:
                elapsed = now_monotonic - previous[1]
                if elapsed > 0 and ticks >= previous[0]:
                    self._self_cpu_percent = max(
                        100.0 * (ticks - previous[0]) / _procfs.TICKS_PER_S / elapsed, 0.0
                    )
                    self._previous_self = (ticks, now_monotonic)
                elif ticks < previous[0]:
                    self._previous_self = (ticks, now_monotonic)
                cpu_percent = self._self_cpu_percent
        else:
            path, kind, why = self._damage(self._self_stat_path, text)
            for field in ("process.cpu_percent", "process.num_threads"):
                faults.append(Fault(field, path, kind, why))
            statm_text = self._files.read(self._self_statm_path)
            statm = _procfs.parse_statm(statm_text) if statm_text is not None else None
            fallback = None
            if statm is not None:
                vms, rss, _ = statm
                fallback = self._self_statm_path
            for field in ("process.rss", "process.vms"):
                faults.append(Fault(field, path, kind, why, fallback=fallback))
        unique = None
        if uss:
            import psutil  # only here: USS needs smaps, and psutil costs ~20 ms to import

            try:
                unique = psutil.Process().memory_full_info().uss
            except (psutil.Error, OSError):
                unique = None
        return ProcessSelf(
            pid=self._pid,
            rss=rss,
            vms=vms,
            uss=unique,
            cpu_percent=cpu_percent,
            num_threads=threads,
            children_rss=self._children_rss(faults) if children else None,
        )

    def _children_rss(self, faults: list[Fault]) -> int | None:
        """Summed RSS of all descendants, found through ``/proc/<pid>/task/*/children``;
        ``None`` when this process's own task list cannot be read. Descendants that exit
        while they are counted are skipped (they hold no memory any more)."""
        own = self._proc(str(self._pid), "task")
        try:
            own_tasks = os.listdir(own)
        except OSError as error:
            kind: FaultKind = "missing" if isinstance(error, FileNotFoundError) else "unreadable"
            faults.append(Fault("process.children_rss", own, kind, error.strerror or str(error)))
            return None
        total, pending, seen = 0, [str(self._pid)], set()
        while pending:
            pid = pending.pop()
            if pid == str(self._pid):
                tasks = own_tasks
            else:
                try:
                    tasks = os.listdir(self._proc(pid, "task"))
                except OSError:
                    continue
            for task in tasks:
                try:
                    with open(self._proc(pid, "task", task, "children"), "rb") as handle:
                        kids = handle.read(READ_CAP_BYTES).split()
                except OSError:
                    continue
                for kid in kids:
                    if not kid.isdigit():
                        continue
                    child = kid.decode()
                    if child in seen:
                        continue
                    seen.add(child)
                    pending.append(child)
                    try:
                        with open(self._proc(child, "statm"), "rb") as handle:
                            statm = _procfs.parse_statm(
                                handle.read(READ_CAP_BYTES).decode("ascii", "replace")
                            )
                    except OSError:
                        continue
                    if statm is not None:
                        total += statm[1]
        return total


_default_sampler: Sampler | None = None
_default_lock = threading.Lock()


def _fresh_module_locks() -> None:
    global _default_lock, _generation_lock, _flap_lock
    _default_lock, _generation_lock = threading.Lock(), threading.Lock()
    _flap_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_module_locks)


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


def _parse_pressure(text: str) -> ResourcePressure | None:
    return ResourcePressure.from_lines(parse_pressure(text))


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
    hints = typing.get_type_hints(cls)
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


class _CallableModule(types.ModuleType):
    """Makes ``resguard.snapshot()`` work whether the package attribute names this module
    or the function: importing a submodule rebinds the package attribute to the module."""

    def __call__(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        return snapshot(uss=uss, children=children)


sys.modules[__name__].__class__ = _CallableModule
