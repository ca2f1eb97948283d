"""The psutil backend of :class:`~resguard.snapshot.Sampler`: host memory and swap, CPU,
load averages and this process through psutil, on every platform psutil supports, and on
macOS the kernel's memory-pressure level and the compressor's bytes (``_probes.macos``).

Every psutil call is guarded: one that raises, or answers nonsense (a total of 0, more
available than there is), leaves its fields ``None`` and a :class:`Fault` naming the call,
logged once like a damaged file. Numbers a platform never has (PSI, cgroups) are ``None``
with no fault; docs/platforms.md lists them.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from resguard._modules import forks
from resguard._probes import macos
from resguard._probes.files import FaultKind
from resguard._probes.reporting import log_faults
from resguard.snapshot._cpu import CpuCounters
from resguard.snapshot._limits import limits_generation, rlimits
from resguard.snapshot._values import (
    CpuInfo,
    Fault,
    MemoryInfo,
    PressureInfo,
    ProcessSelf,
    Snapshot,
    SwapInfo,
)

if TYPE_CHECKING:
    from resguard._modules.clock import Clock

__all__ = ["PsutilSampler"]

_T = TypeVar("_T")

VIRTUAL_MEMORY = "psutil.virtual_memory()"
_LEVEL_SOURCE = f"sysctl {macos.PRESSURE_LEVEL}"
_COMPRESSED_SOURCE = f"sysctl {macos.COMPRESSOR_BYTES}"


class _Limits:
    """What changes rarely: the rlimits and the CPUs this process may use."""

    __slots__ = ("cpu_effective", "cpu_source", "expire_s", "generation", "rlimits")

    def __init__(
        self,
        found: tuple[tuple[str, int], ...],
        cpu: tuple[float, str],
        expire_s: float,
        generation: int,
    ) -> None:
        self.rlimits = found
        self.cpu_effective, self.cpu_source = cpu
        self.expire_s = expire_s
        self.generation = generation


class PsutilSampler:
    """The portable readers behind a psutil-backend :class:`~resguard.snapshot.Sampler`;
    the façade checked the arguments. *platform* and *sysctl* are for tests (the macOS
    path is tested on Linux with a fake sysctl and fake psutil values)."""

    def __init__(
        self,
        *,
        limits_max_age_s: float,
        slow_files_max_age_s: float,
        clock: Clock,
        wall_clock: Callable[[], float],
        platform: str = sys.platform,
        sysctl: macos.Sysctl | None = None,
    ) -> None:
        import psutil  # only here: ~20 ms to import, and the linux backend needs none

        self._psutil = psutil
        self._clock = clock
        self._wall_clock = wall_clock
        self._limits_max_age_s = limits_max_age_s
        self._slow_max_age_s = slow_files_max_age_s
        self._darwin = platform == "darwin"
        self._windows = platform.startswith("win")
        self._sysctl = sysctl if sysctl is not None else macos.libc_sysctl
        self._lock = threading.Lock()
        self._pid = -1
        self._process: Any = None
        self._counters = CpuCounters(ticks_per_s=1.0)
        self._cpu_count = self._count()
        self._limits: _Limits | None = None
        self._slow: dict[str, tuple[float, Any, list[Fault]]] = {}
        self._failing: frozenset[str] = frozenset()
        forks.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it at the fork

    @property
    def location(self) -> None:
        """No cgroups on this backend."""
        return None

    def _setup(self) -> None:
        """(Re)make the psutil handle on this process: at first use and after a fork."""
        self._pid = os.getpid()
        self._counters.reset()  # the first sample reports the average since boot
        self._slow.clear()
        self._limits = None
        self._process = None

    def _own_process(self, faults: list[Fault]) -> Any:
        """psutil's handle on this process (made again when making it failed before)."""
        process = _guarded("psutil.Process()", self._psutil.Process, faults, "process")
        return process if process is not None and process.pid == self._pid else None

    def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        """Take a snapshot (see :meth:`resguard.snapshot.Sampler.sample`)."""
        with self._lock:
            faults: list[Fault] = []
            if self._pid != os.getpid():
                self._setup()
            if self._process is None:
                self._process = self._own_process(faults)
            now_s = self._clock()
            limits = self._current_limits(now_s, faults)
            process = self._process_self(now_s, faults, uss=uss, children=children)
            memory = self._memory(limits, process, faults)
            swap, swap_faults = self._slow_value("swap", self._swap, now_s)
            faults.extend(swap_faults)
            cpu = self._cpu(limits, now_s, faults)
            pressure = PressureInfo(
                memory=None, cpu=None, io=None, source=None, memory_level=self._level(now_s, faults)
            )
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
        """The effective limit as if the soft *rlimit* were not set: the host's total and
        the other rlimit."""
        with self._lock:
            limits = self._limits
            bounds = [memory.total] if memory.total is not None else []
            if limits is not None:
                bounds.extend(soft for name, soft in limits.rlimits if name != rlimit)
            return min(bounds) if bounds else None

    # ------------------------------------------------------------------ the calls ---

    def _slow_value(
        self, key: str, read: Callable[[list[Fault]], _T], now_s: float
    ) -> tuple[_T, list[Fault]]:
        """A value that changes slowly or is recomputed every few seconds (load averages,
        the pressure level, swap), read at most once per *slow_files_max_age_s*, with its
        faults."""
        previous = self._slow.get(key)
        if previous is not None and now_s - previous[0] < self._slow_max_age_s:
            return previous[1], previous[2]
        faults: list[Fault] = []
        value = read(faults)
        self._slow[key] = (now_s, value, faults)
        return value, faults

    def _current_limits(self, now_s: float, faults: list[Fault]) -> _Limits:
        """The rlimits and the CPU bound, re-read at most once per *limits_max_age_s* or
        after :func:`~resguard.snapshot.invalidate_limits`."""
        generation = limits_generation()
        limits = self._limits
        if limits is not None and now_s < limits.expire_s and generation == limits.generation:
            return limits
        limits = _Limits(
            rlimits(), self._cpu_bound(faults), now_s + self._limits_max_age_s, generation
        )
        self._limits = limits
        return limits

    def _cpu_bound(self, faults: list[Fault]) -> tuple[float, str]:
        """The CPUs this process may use: the host's, or its affinity mask where psutil
        has one (Linux, Windows, FreeBSD) and it is smaller."""
        count = self._cpu_count
        process = self._process
        if process is None or not hasattr(process, "cpu_affinity"):
            return float(count), "host"
        affinity = _guarded(
            "psutil.Process().cpu_affinity()", process.cpu_affinity, faults, "cpu.effective"
        )
        if isinstance(affinity, list) and 0 < len(affinity) < count:
            return float(len(affinity)), "affinity"
        return float(count), "host"

    def _count(self) -> int:
        try:
            count = self._psutil.cpu_count()
        except Exception:
            count = None
        return count if isinstance(count, int) and count > 0 else os.cpu_count() or 1

    # -------------------------------------------------------------------- memory ---

    def _memory(self, limits: _Limits, process: ProcessSelf, faults: list[Fault]) -> MemoryInfo:
        """Host memory from ``virtual_memory()``, against the tightest of the host's total
        and the soft rlimits (see :class:`MemoryInfo`)."""
        host_faults: list[Fault] = []
        vm = _guarded(VIRTUAL_MEMORY, self._psutil.virtual_memory, host_faults, "memory")
        total, host_available = _checked_memory(vm, host_faults) if vm is not None else (None, None)
        used: int | None = None
        if total is not None and host_available is not None:
            used = self._used(vm, total, host_available, faults)
        limit: int | None = total
        source, detail = ("host", VIRTUAL_MEMORY) if total is not None else ("unknown", "")
        for name, soft in limits.rlimits:
            if limit is None or soft < limit:
                limit, source, detail = soft, "rlimit", name
                used = self._rlimit_used(name, process, faults)
        available: int | None = None
        percent: float | None = None
        if limit is not None and used is not None:
            headroom = limit - used
            if host_available is not None:
                headroom = min(headroom, host_available)
            available = max(headroom, 0)
            percent = 100.0 * used / limit if limit else 100.0
        memory = MemoryInfo(
            total=total,
            limit=limit,
            used=used,
            available=available,
            percent=percent,
            source=source,
            source_detail=detail,
            cgroup=None,
        )
        faults.extend(_narrowed(host_faults, memory))
        return memory

    def _used(self, vm: Any, total: int, available: int, faults: list[Fault]) -> int:
        """What counts as used: on macOS wired + active + compressed, as Activity Monitor
        counts "Memory Used"; elsewhere total minus available, as on Linux's host path."""
        if not self._darwin:
            return max(total - available, 0)
        wired, active = _byte_count(vm, "wired"), _byte_count(vm, "active")
        if wired is None or active is None:
            faults.append(
                Fault(
                    "memory.used",
                    VIRTUAL_MEMORY,
                    "garbage",
                    "no wired or active bytes",
                    fallback="total minus available",
                )
            )
            return max(total - available, 0)
        compressed, kind, why = macos.read_int(self._sysctl, macos.COMPRESSOR_BYTES)
        if compressed is None:
            faults.append(
                Fault("memory.used", _COMPRESSED_SOURCE, kind, why, fallback="wired + active")
            )
            compressed = 0
        return min(wired + active + compressed, total)

    def _rlimit_used(self, name: str, process: ProcessSelf, faults: list[Fault]) -> int | None:
        """What an rlimit counts: the address space (``RLIMIT_AS``) or the data segment
        (where psutil gives one: Linux and the BSDs)."""
        if name == "RLIMIT_AS":
            if process.vms is None:
                _unknown_used(faults, "psutil.Process().memory_info()", "no virtual size")
            return process.vms
        info = _guarded(
            "psutil.Process().memory_info()",
            self._process.memory_info if self._process is not None else _no_process,
            faults,
            "memory.used",
            "memory.available",
            "memory.percent",
        )
        data = getattr(info, "data", None) if info is not None else None
        if info is not None and not isinstance(data, int):
            _unknown_used(
                faults, "psutil.Process().memory_info()", "no data segment size on this platform"
            )
            return None
        return data

    def _swap(self, faults: list[Fault]) -> SwapInfo:
        """The host's swap, read at most every *slow_files_max_age_s*: psutil reads two
        files for it on Linux (the costliest call of a sample), and nothing admits or
        refuses on swap."""
        swap = _guarded("psutil.swap_memory()", self._psutil.swap_memory, faults, "swap")
        if swap is None:
            return SwapInfo(total=None, used=None, free=None, percent=None)
        total, used, free = (_byte_count(swap, name) for name in ("total", "used", "free"))
        if total is None or used is None or free is None or used > total or free > total:
            detail = f"total={getattr(swap, 'total', None)!r} used={getattr(swap, 'used', None)!r}"
            faults.append(Fault("swap", "psutil.swap_memory()", "garbage", detail))
            return SwapInfo(total=None, used=None, free=None, percent=None)
        return SwapInfo(
            total=total, used=used, free=free, percent=100.0 * used / total if total else 0.0
        )

    # ------------------------------------------------------------ CPU, pressure ---

    def _cpu(self, limits: _Limits, now_s: float, faults: list[Fault]) -> CpuInfo:
        times = _guarded("psutil.cpu_times()", self._psutil.cpu_times, faults, "cpu.percent")
        percent: float | None = None
        if times is not None:
            busy_total = _busy_total(times)
            if busy_total is None:
                faults.append(
                    Fault("cpu.percent", "psutil.cpu_times()", "garbage", f"{times!r}"[:200])
                )
            else:
                percent = self._counters.host_percent(busy_total)
        loads, load_faults = self._slow_value("load", self._loads, now_s)
        faults.extend(load_faults)
        load_1m, load_5m, load_15m = loads if loads is not None else (None, None, None)
        return CpuInfo(
            percent=percent,
            count=self._cpu_count,
            effective=limits.cpu_effective,
            effective_source=limits.cpu_source,
            load_1m=load_1m,
            load_5m=load_5m,
            load_15m=load_15m,
        )

    def _loads(self, faults: list[Fault]) -> tuple[float, float, float] | None:
        """The 1, 5 and 15 minute load averages; ``None`` on Windows (psutil emulates them
        there with a thread of its own, starting from zeros) and where psutil has none."""
        getloadavg = getattr(self._psutil, "getloadavg", None)
        if self._windows or getloadavg is None:
            return None
        fields = ("cpu.load_1m", "cpu.load_5m", "cpu.load_15m")
        loads = _guarded("psutil.getloadavg()", getloadavg, faults, *fields)
        if loads is None:
            return None
        if (
            not isinstance(loads, tuple)
            or len(loads) != 3
            or not all(isinstance(load, (int, float)) and 0 <= load < 1e9 for load in loads)
        ):
            faults.extend(
                Fault(field, "psutil.getloadavg()", "garbage", repr(loads)[:200])
                for field in fields
            )
            return None
        return float(loads[0]), float(loads[1]), float(loads[2])

    def _level(self, now_s: float, faults: list[Fault]) -> int | None:
        """macOS's memory-pressure level (``None`` elsewhere)."""
        if not self._darwin:
            return None
        level, level_faults = self._slow_value("level", self._read_level, now_s)
        faults.extend(level_faults)
        return level

    def _read_level(self, faults: list[Fault]) -> int | None:
        level, kind, why = macos.read_int(self._sysctl, macos.PRESSURE_LEVEL)
        if level is not None and level not in macos.PRESSURE_LEVELS:
            kind, why, level = "garbage", f"level {level} is none of 1, 2, 4", None
        if level is None:
            faults.append(Fault("pressure.memory_level", _LEVEL_SOURCE, kind, why))
        return level

    # ------------------------------------------------------------- this process ---

    def _process_self(
        self, now_s: float, faults: list[Fault], *, uss: bool, children: bool
    ) -> ProcessSelf:
        process = self._process
        if process is None:
            return ProcessSelf(
                pid=os.getpid(),
                rss=None,
                vms=None,
                uss=None,
                cpu_percent=None,
                num_threads=None,
                children_rss=None,
            )
        info, times, threads = _own_numbers(process, faults)
        cpu_percent = None
        cpu_s = _cpu_seconds(times, faults) if times is not None else None
        if cpu_s is not None:
            baseline = None if self._counters.has_process_baseline else self._start(process)
            cpu_percent = self._counters.process_percent(cpu_s, now_s, baseline)
        if threads is not None and (not isinstance(threads, int) or threads <= 0):
            _garbage(faults, "psutil.Process().num_threads()", threads, "process.num_threads")
            threads = None
        return ProcessSelf(
            pid=self._pid,
            rss=_own_bytes(info, "rss", faults),
            vms=_own_bytes(info, "vms", faults),
            uss=_uss(process, faults) if uss else None,
            cpu_percent=cpu_percent,
            num_threads=threads,
            children_rss=_children_rss(process, faults) if children else None,
        )

    def _start(self, process: Any) -> tuple[float, float] | None:
        """(0 s of CPU, the clock's time when this process started), so the first sample
        reports the average since it started; ``None`` when the start cannot be placed."""
        try:
            age_s = self._wall_clock() - float(process.create_time())
        except Exception:
            return None
        return (0.0, self._clock() - age_s) if age_s > 0 else None


def _guarded(source: str, call: Callable[[], _T], faults: list[Fault], *fields: str) -> _T | None:
    """``call()``, or ``None`` and a fault on each of *fields* when it raises."""
    try:
        return call()
    except Exception as error:  # psutil.Error, OSError, or anything odd: never raise
        kind: FaultKind = "vanished" if _is_gone(error) else "unreadable"
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        faults.extend(Fault(field, source, kind, detail) for field in fields)
        return None


def _is_gone(error: BaseException) -> bool:
    psutil = sys.modules.get("psutil")
    gone = getattr(psutil, "NoSuchProcess", ProcessLookupError)
    return isinstance(error, (gone, ProcessLookupError))


def _no_process() -> Any:
    raise LookupError("no psutil handle on this process")


def _byte_count(value: Any, name: str) -> int | None:
    """The non-negative integer attribute *name* of a psutil result, else ``None``."""
    number = getattr(value, name, None)
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        return None
    return number


def _checked_memory(vm: Any, faults: list[Fault]) -> tuple[int | None, int | None]:
    """(total, available) of a ``virtual_memory()`` result, or a fault for nonsense."""
    total, available = _byte_count(vm, "total"), _byte_count(vm, "available")
    if total is None or total == 0:
        detail = f"total={getattr(vm, 'total', None)!r} is no machine's memory"
        faults.append(Fault("memory", VIRTUAL_MEMORY, "garbage", detail))
        return None, None
    if available is None or available > total:
        detail = f"available={getattr(vm, 'available', None)!r} of total={total}"
        for field in ("memory.used", "memory.available", "memory.percent"):
            faults.append(Fault(field, VIRTUAL_MEMORY, "garbage", detail))
        return total, None
    return total, available


def _narrowed(host_faults: list[Fault], memory: MemoryInfo) -> Iterator[Fault]:
    """The host reading's faults as they stand once an rlimit answered: a field the
    rlimit filled in keeps its value (the fault names the rlimit as fallback), and a
    failed reading leaves only the total unknown."""
    for fault in host_faults:
        field = fault.field
        if field == "memory" and memory.limit is not None:
            field = "memory.total"
        known = field != "memory" and getattr(memory, field.split(".")[1]) is not None
        fallback = memory.source_detail if known else None
        yield attrs.evolve(fault, field=field, fallback=fallback)


def _unknown_used(faults: list[Fault], source: str, detail: str) -> None:
    for field in ("memory.used", "memory.available", "memory.percent"):
        faults.append(Fault(field, source, "missing", detail))


def _busy_total(times: Any) -> tuple[float, float] | None:
    """(busy, total) seconds of all CPUs from ``cpu_times()``; guest time is inside user
    time on Linux, so it is not counted twice."""
    try:
        parts = {
            name: float(getattr(times, name))
            for name in times._fields
            if name not in ("guest", "guest_nice")
        }
    except (AttributeError, TypeError, ValueError):
        return None
    if "idle" not in parts or any(not 0 <= value < float("inf") for value in parts.values()):
        return None
    idle = parts["idle"] + parts.get("iowait", 0.0)
    total = sum(parts.values())
    return total - idle, total


def _own_numbers(process: Any, faults: list[Fault]) -> tuple[Any, Any, Any]:
    """This process's memory_info(), cpu_times() and num_threads() (``None`` each
    where it failed), read in one psutil ``oneshot()``."""
    info = times = threads = None
    try:
        with process.oneshot():
            info = _guarded(
                "psutil.Process().memory_info()",
                process.memory_info,
                faults,
                "process.rss",
                "process.vms",
            )
            times = _guarded(
                "psutil.Process().cpu_times()",
                process.cpu_times,
                faults,
                "process.cpu_percent",
            )
            threads = _guarded(
                "psutil.Process().num_threads()",
                process.num_threads,
                faults,
                "process.num_threads",
            )
    except Exception as error:  # oneshot()'s own bookkeeping: keep what was read
        detail = f"{type(error).__name__}: {error}"
        faults.append(Fault("process", "psutil.Process().oneshot()", "unreadable", detail))
    return info, times, threads


def _garbage(faults: list[Fault], source: str, value: object, *fields: str) -> None:
    """Faults for a psutil call that answered *value*, which makes no sense."""
    detail = f"answered {value!r}"[:200]
    faults.extend(Fault(field, source, "garbage", detail) for field in fields)


def _own_bytes(info: Any, name: str, faults: list[Fault]) -> int | None:
    """``memory_info().<name>`` of this process (``None`` where the call failed, and with
    a fault where it answered nonsense)."""
    if info is None:
        return None
    value = _byte_count(info, name)
    if value is None:
        _garbage(faults, "psutil.Process().memory_info()", info, f"process.{name}")
    return value


def _cpu_seconds(times: Any, faults: list[Fault]) -> float | None:
    """User + system seconds of a ``cpu_times()`` answer, or a fault for nonsense."""
    try:
        cpu_s = float(times.user) + float(times.system)
    except (AttributeError, TypeError, ValueError):
        cpu_s = -1.0
    if not 0 <= cpu_s < float("inf"):
        _garbage(faults, "psutil.Process().cpu_times()", times, "process.cpu_percent")
        return None
    return cpu_s


def _uss(process: Any, faults: list[Fault]) -> int | None:
    source = "psutil.Process().memory_full_info()"
    full = _guarded(source, process.memory_full_info, faults, "process.uss")
    if full is None:
        return None
    uss = _byte_count(full, "uss")
    if uss is None:
        _garbage(faults, source, full, "process.uss")
    return uss


def _children_rss(process: Any, faults: list[Fault]) -> int | None:
    """Summed RSS of all descendants; those that exit while counted are skipped."""
    kids = _guarded(
        "psutil.Process().children()",
        lambda: process.children(recursive=True),
        faults,
        "process.children_rss",
    )
    if kids is None:
        return None
    if not isinstance(kids, (list, tuple)):
        _garbage(faults, "psutil.Process().children()", kids, "process.children_rss")
        return None
    total = 0
    for kid in kids:
        try:
            total += max(int(kid.memory_info().rss), 0)
        except Exception:  # gone since children() listed it, or not ours to read
            continue
    return total
