"""The linux backend of :class:`~resguard.snapshot.Sampler`: reads the kernel's files and
composes a :class:`Snapshot` from the memory and limit reading (``_limits``), the CPU
counters (``_cpu``), PSI and this process."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from resguard._modules import forks
from resguard._probes import cgroup as _cgroup
from resguard._probes import procfs as _procfs
from resguard._probes.files import READ_CAP_BYTES, FaultKind, FileCache, damage_of
from resguard._probes.paths import Roots
from resguard._probes.psi import parse_pressure
from resguard._probes.reporting import log_faults
from resguard.snapshot._cpu import CpuCounters
from resguard.snapshot._limits import Damage, Limits, MemoryReader
from resguard.snapshot._slow import SlowValues
from resguard.snapshot._values import (
    CpuInfo,
    Fault,
    MemoryInfo,
    PressureInfo,
    ProcessSelf,
    ResourcePressure,
    Snapshot,
)

if TYPE_CHECKING:
    from resguard._modules.clock import Clock

__all__ = ["LinuxSampler"]

_T = TypeVar("_T")


class LinuxSampler:
    """The kernel readers behind a linux-backend :class:`~resguard.snapshot.Sampler`; the
    façade checked the arguments. It keeps the descriptors of the files it reads, the
    location of this process's cgroup and the previous CPU counters (so CPU percentages
    need no sleep). Thread-safe: every sample holds its lock."""

    def __init__(
        self,
        roots: Roots,
        cgroup: str | None,
        *,
        limits_max_age_s: float,
        slow_files_max_age_s: float,
        clock: Clock,
        wall_clock: Callable[[], float],
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._roots = roots
        self._cgroup_dir: str | None = cgroup
        self._files = FileCache()
        self._lock = threading.Lock()
        self._pid = -1
        forks.register(self)
        self._location: _cgroup.CgroupLocation | None = None
        self._cpu_count = os.cpu_count() or 1
        self._counters = CpuCounters()
        self._memory = MemoryReader(
            self._files,
            roots.proc,
            cgroup_dir=cgroup,
            cpu_count=self._cpu_count,
            max_age_s=limits_max_age_s,
        )
        self._psi_paths: tuple[str, str, str] = ("", "", "")
        self._psi_source: str | None = None
        self._setup_faults: tuple[Fault, ...] = ()
        self._failing: frozenset[str] = frozenset()
        self._meminfo_path = self._proc("meminfo")
        self._stat_path = self._proc("stat")
        self._loadavg_path = self._proc("loadavg")
        self._self_stat_path = self._proc("self", "stat")
        self._self_statm_path = self._proc("self", "statm")
        self._slow = SlowValues(slow_files_max_age_s)  # PSI, load averages

    def _proc(self, *parts: str) -> str:
        return os.path.join(self._roots.proc, *parts)

    def _after_fork_in_child(self) -> None:
        # a thread of the parent may have held it at the fork: it will never release
        self._lock = threading.Lock()

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
        self._find_psi()
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
        self._counters.reset()  # the next sample's CPU percents are unknown: a baseline

    def _find_psi(self) -> None:
        """PSI of the cgroup when it has its own, else the system's, else none."""
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
        faults: list[Fault] = []
        # the descendants' walk reads every child's files: not under the lock, which
        # every thread sharing the default sampler waits on
        children_rss = _children_rss(self._roots.proc, os.getpid(), faults) if children else None
        with self._lock:
            if self._pid != os.getpid():
                self._setup()
            now_s = self._clock()
            text = self._files.read(self._meminfo_path)
            meminfo = _procfs.parse_meminfo(text) if text is not None else {}
            process = self._process(now_s, faults, uss=uss, children_rss=children_rss)
            limits = self._memory.limits(self._location, now_s)
            memory = self._memory.memory(text, meminfo, process, limits, self._location, faults)
            swap = self._memory.swap(text, meminfo, faults)
            cpu = self._cpu(limits, faults, now_s)
            pressure = self._pressure(faults, now_s)
            if limits.faults:
                faults.extend(limits.faults)
            if self._setup_faults:
                faults.extend(self._setup_faults)
            if faults or self._failing:
                self._failing = log_faults(faults, self._failing, now_s)
            return Snapshot(
                memory=memory,
                swap=swap,
                cpu=cpu,
                pressure=pressure,
                process=process,
                taken_at=self._wall_clock(),
                monotonic=now_s,
                faults=tuple(faults),
            )

    def limit_without_rlimit(self, memory: MemoryInfo, rlimit: str) -> int | None:
        """The effective limit as if the soft *rlimit* were not set, from *memory* just
        sampled (see :meth:`resguard.snapshot.Sampler.limit_without_rlimit`)."""
        with self._lock:
            return self._memory.limit_without_rlimit(memory, self._location, rlimit)

    def _cpu(self, limits: Limits, faults: list[Fault], now_s: float) -> CpuInfo:
        text = self._files.read(self._stat_path)
        ticks = _procfs.parse_total_cpu_ticks(text) if text is not None else None
        if ticks is None:
            path, kind, why = self._files.damage(self._stat_path, text)
            faults.append(Fault("cpu.percent", path, kind, why))
            percent = None
        else:
            percent = self._counters.host_percent(ticks)
        loads, damage = self._parse_once(self._loadavg_path, _procfs.parse_loadavg, now_s)
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

    def _pressure(self, faults: list[Fault], now_s: float) -> PressureInfo:
        values: list[ResourcePressure | None] = []
        for name, path in zip(("memory", "cpu", "io"), self._psi_paths, strict=True):
            if not path:
                values.append(None)
                continue
            value, damage = self._parse_once(path, _parse_pressure, now_s)
            if damage is not None:
                _, kind, why = damage
                faults.append(Fault(f"pressure.{name}", path, kind, why))
            values.append(value)
        return PressureInfo(memory=values[0], cpu=values[1], io=values[2], source=self._psi_source)

    def _parse_once(
        self, path: str, parse: Callable[[str], _T | None], now_s: float
    ) -> tuple[_T | None, Damage | None]:
        """Read and parse a slowly changing file (PSI, load averages), at most once per
        *slow_files_max_age_s*; the kernel recomputes their averages every 2 to 5 s.
        Returns the value and, when it is ``None``, why."""
        return self._slow.get(path, now_s, lambda: self._read_parsed(path, parse))

    def _read_parsed(
        self, path: str, parse: Callable[[str], _T | None]
    ) -> tuple[_T | None, Damage | None]:
        text = self._files.read(path)
        value = parse(text) if text is not None else None
        return value, self._files.damage(path, text) if value is None else None

    def _process(
        self, now_s: float, faults: list[Fault], *, uss: bool, children_rss: int | None
    ) -> ProcessSelf:
        text = self._files.read(self._self_stat_path)
        stat = _procfs.parse_pid_stat(text) if text is not None else None
        cpu_percent: float | None = None
        threads: int | None = None
        rss: int | None = None
        vms: int | None = None
        if stat is not None:
            _, _, _, ticks, threads, _, rss, vms = stat
            cpu_percent = self._counters.process_percent(ticks, now_s)
        else:
            path, kind, why = self._files.damage(self._self_stat_path, text)
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
        return ProcessSelf(
            pid=self._pid,
            rss=rss,
            vms=vms,
            uss=_uss() if uss else None,
            cpu_percent=cpu_percent,
            num_threads=threads,
            children_rss=children_rss,
        )


def _parse_pressure(text: str) -> ResourcePressure | None:
    return ResourcePressure.from_lines(parse_pressure(text))


def _uss() -> int | None:
    """This process's unique set size (``None`` when smaps cannot be read)."""
    import psutil  # only here: USS needs smaps, and psutil costs ~20 ms to import

    try:
        return int(psutil.Process().memory_full_info().uss)
    except (psutil.Error, OSError):
        return None


def _children_rss(proc: str, pid: int, faults: list[Fault]) -> int | None:
    """Summed RSS of all descendants of *pid*, found through ``/proc/<pid>/task/*/children``;
    ``None`` when its own task list cannot be read. Descendants that exit while they are
    counted are skipped (they hold no memory any more)."""
    own = os.path.join(proc, str(pid), "task")
    try:
        own_tasks = os.listdir(own)
    except OSError as error:
        kind: FaultKind = "missing" if isinstance(error, FileNotFoundError) else "unreadable"
        faults.append(Fault("process.children_rss", own, kind, error.strerror or str(error)))
        return None
    total, pending, seen = 0, [str(pid)], set()
    while pending:
        parent = pending.pop()
        if parent == str(pid):
            tasks = own_tasks
        else:
            try:
                tasks = os.listdir(os.path.join(proc, parent, "task"))
            except OSError:
                continue
        for task in tasks:
            for child in _read_children(os.path.join(proc, parent, "task", task, "children")):
                if child in seen:
                    continue
                seen.add(child)
                pending.append(child)
                total += _statm_rss(os.path.join(proc, child, "statm"))
    return total


def _read_children(path: str) -> list[str]:
    try:
        with open(path, "rb") as handle:
            kids = handle.read(READ_CAP_BYTES).split()
    except OSError:
        return []
    return [kid.decode() for kid in kids if kid.isdigit()]


def _statm_rss(path: str) -> int:
    """The RSS in a ``statm`` file, 0 for a process that is gone."""
    try:
        with open(path, "rb") as handle:
            statm = _procfs.parse_statm(handle.read(READ_CAP_BYTES).decode("ascii", "replace"))
    except OSError:
        return 0
    return statm[1] if statm is not None else 0
