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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from resguard._modules import forks
from resguard._probes import macos
from resguard._probes.files import FaultKind
from resguard._probes.reporting import log_faults
from resguard.snapshot._cpu import CpuCounters
from resguard.snapshot._limits import (
    Damage,
    bound_memory,
    cpu_bound,
    limit_without,
    limits_generation,
    rlimits,
    tightest,
)
from resguard.snapshot._slow import SlowValues
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
_Used = tuple[int | None, Damage | None]  # bytes an rlimit counts, or why unknown

VIRTUAL_MEMORY = "psutil.virtual_memory()"
_MEMORY_INFO = "psutil.Process().memory_info()"
_AFFINITY = "psutil.Process().cpu_affinity()"
_LEVEL_SOURCE = f"sysctl {macos.PRESSURE_LEVEL}"
_COMPRESSED_SOURCE = f"sysctl {macos.COMPRESSOR_BYTES}"
_MAX_BYTES = 2**63  # no machine has this much: a count at or above it is garbage
_MAX_CPUS = 2**20
_ARITHMETIC = (ArithmeticError, TypeError, ValueError)  # a conversion of garbage failing


class _Limits:
    """What changes rarely: the rlimits and the CPUs this process may use, with the
    faults of reading them (added to every sample until they are read again, as the
    linux backend's ``Limits.faults`` are: a fault that came and went with the re-reads
    would log a false recovery each time)."""

    __slots__ = ("cpu_effective", "cpu_source", "expire_s", "faults", "generation", "rlimits")

    def __init__(
        self,
        found: tuple[tuple[str, int], ...],
        cpu: tuple[float, str],
        faults: tuple[Fault, ...],
        expire_s: float,
        generation: int,
    ) -> None:
        self.rlimits = found
        self.cpu_effective, self.cpu_source = cpu
        self.faults = faults
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
        self._darwin = platform == "darwin"
        self._windows = platform.startswith("win")
        self._sysctl = sysctl if sysctl is not None else macos.libc_sysctl
        self._lock = threading.Lock()
        self._pid = -1
        self._process: Any = None
        self._counters = CpuCounters(ticks_per_s=1.0)
        self._cpu_count = self._count()
        self._limits: _Limits | None = None
        self._slow = SlowValues(slow_files_max_age_s)  # load averages, swap, pressure level
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
        self._counters.reset()  # the next sample's CPU percents are unknown: a baseline
        self._slow.clear()
        self._limits = None
        self._process = None

    def _own_process(self, faults: list[Fault]) -> Any:
        """psutil's handle on this process (made again when making it failed before)."""
        process = _guarded("psutil.Process()", self._psutil.Process, faults, "process")
        return process if process is not None and process.pid == self._pid else None

    def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        """Take a snapshot (see :meth:`resguard.snapshot.Sampler.sample`)."""
        faults: list[Fault] = []
        with self._lock:
            if self._pid != os.getpid():
                self._setup()
            if self._process is None:
                self._process = self._own_process(faults)
            own = self._process
        # psutil walks every process for the descendants (a millisecond and more): not
        # under the lock, which every thread sharing the default sampler waits on
        children_rss = _children_rss(own, faults) if children and own is not None else None
        with self._lock:
            now_s = self._clock()
            limits = self._current_limits(now_s)
            process, data = self._process_self(now_s, faults, uss=uss, children_rss=children_rss)
            memory = self._memory(limits, process, data, faults)
            swap, swap_faults = self._slow.get("swap", now_s, lambda: _collecting(self._swap))
            faults.extend(swap_faults)
            cpu = self._cpu(limits, now_s, faults)
            pressure = PressureInfo(
                memory=None, cpu=None, io=None, source=None, memory_level=self._level(now_s, faults)
            )
            faults.extend(limits.faults)
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
            return limit_without((memory.total,), limits.rlimits if limits else (), rlimit)

    # ------------------------------------------------------------------ the calls ---

    def _current_limits(self, now_s: float) -> _Limits:
        """The rlimits and the CPU bound, re-read at most once per *limits_max_age_s* or
        after :func:`~resguard.snapshot.invalidate_limits`."""
        generation = limits_generation()
        limits = self._limits
        if limits is not None and now_s < limits.expire_s and generation == limits.generation:
            return limits
        faults: list[Fault] = []
        cpu = cpu_bound(self._cpu_count, self._affinity(faults), None)
        limits = _Limits(rlimits(), cpu, tuple(faults), now_s + self._limits_max_age_s, generation)
        self._limits = limits
        return limits

    def _affinity(self, faults: list[Fault]) -> int | None:
        """How many CPUs this process's affinity mask allows, where psutil has one (Linux,
        Windows, FreeBSD); ``None`` elsewhere or when it cannot be read (a fault then: the
        bound is the host's count)."""
        process = self._process
        if process is None or not hasattr(process, "cpu_affinity"):
            return None
        attempt: list[Fault] = []
        affinity = _guarded(_AFFINITY, process.cpu_affinity, attempt, "cpu.effective")
        if affinity is not None and not isinstance(affinity, list):
            _garbage(attempt, _AFFINITY, affinity, "cpu.effective")
            affinity = None
        faults.extend(_with_fallback(attempt, "the host's CPU count"))
        return len(affinity) if affinity is not None else None

    def _count(self) -> int:
        try:
            count = self._psutil.cpu_count()
        except Exception:
            count = None
        if isinstance(count, int) and not isinstance(count, bool) and 0 < count < _MAX_CPUS:
            return count
        return os.cpu_count() or 1

    # -------------------------------------------------------------------- memory ---

    def _memory(
        self, limits: _Limits, process: ProcessSelf, data: _Used, faults: list[Fault]
    ) -> MemoryInfo:
        """Host memory from ``virtual_memory()``, against the tightest of the host's total
        and the soft rlimits (see :class:`MemoryInfo`); *data* is this process's data
        segment (or why it is unknown), from the ``memory_info()`` read in ``oneshot()``."""
        vm, host_damage = _attempt(VIRTUAL_MEMORY, self._psutil.virtual_memory)
        total = host_available = None
        if vm is not None:
            total, host_available, host_damage = _checked_memory(vm)
        limit, source, detail = tightest(
            total,
            *(("host", VIRTUAL_MEMORY) if total is not None else ("unknown", "")),
            limits.rlimits,
        )
        # only the binding limit's "used" is read: a looser one's faults are no damage
        used: int | None = None
        used_damage: Damage | None = None
        if source == "host" and total is not None and host_available is not None:
            used = self._used(vm, total, host_available, faults)
        elif source == "rlimit" and detail == "RLIMIT_AS":
            used = process.vms
            if used is None:
                used_damage = (_MEMORY_INFO, "missing", "no virtual size")
        elif source == "rlimit":
            used, used_damage = data
        memory, damage = bound_memory(
            total=total,
            limit=limit,
            used=used,
            host_available=host_available,
            source=source,
            detail=detail,
            cgroup=None,
            host_damage=host_damage,
            used_damage=used_damage,
        )
        faults.extend(damage)
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
        compressed = macos.read_int(self._sysctl, macos.COMPRESSOR_BYTES)
        if isinstance(compressed, tuple):
            kind, why = compressed
            faults.append(
                Fault("memory.used", _COMPRESSED_SOURCE, kind, why, fallback="wired + active")
            )
            compressed = 0
        elif wired + active + compressed > total:  # more than RAM: not a real count
            faults.append(
                Fault(
                    "memory.used",
                    _COMPRESSED_SOURCE,
                    "garbage",
                    f"{compressed} compressed + {wired} wired + {active} active bytes "
                    f"exceed the total of {total}",
                    fallback="wired + active",
                )
            )
            compressed = 0
        if wired + active > total:
            faults.append(
                Fault(
                    "memory.used",
                    VIRTUAL_MEMORY,
                    "garbage",
                    f"{wired} wired + {active} active bytes exceed the total of {total}",
                    fallback="total minus available",
                )
            )
            return max(total - available, 0)
        return wired + active + compressed

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
        loads, load_faults = self._slow.get("load", now_s, lambda: _collecting(self._loads))
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
        level, level_faults = self._slow.get("level", now_s, lambda: _collecting(self._read_level))
        faults.extend(level_faults)
        return level

    def _read_level(self, faults: list[Fault]) -> int | None:
        level = macos.read_int(self._sysctl, macos.PRESSURE_LEVEL)
        if isinstance(level, int) and level not in macos.PRESSURE_LEVELS:
            level = ("garbage", f"level {level} is none of 1, 2, 4")
        if isinstance(level, tuple):
            kind, why = level
            faults.append(Fault("pressure.memory_level", _LEVEL_SOURCE, kind, why))
            return None
        return level

    # ------------------------------------------------------------- this process ---

    def _process_self(
        self, now_s: float, faults: list[Fault], *, uss: bool, children_rss: int | None
    ) -> tuple[ProcessSelf, _Used]:
        """This process's numbers, and its data segment (what ``RLIMIT_DATA`` counts) or
        why it is unknown, from the same ``memory_info()``."""
        process = self._process
        if process is None:
            empty = ProcessSelf(
                pid=os.getpid(),
                rss=None,
                vms=None,
                uss=None,
                cpu_percent=None,
                num_threads=None,
                children_rss=None,
            )
            return empty, (None, ("psutil.Process()", "unreadable", "no handle on this process"))
        info, times, threads = _own_numbers(process, faults)
        cpu_percent = None
        cpu_s = _cpu_seconds(times, faults) if times is not None else None
        if cpu_s is not None:
            cpu_percent = self._counters.process_percent(cpu_s, now_s)
        if threads is not None and (not isinstance(threads, int) or threads <= 0):
            _garbage(faults, "psutil.Process().num_threads()", threads, "process.num_threads")
            threads = None
        own = ProcessSelf(
            pid=self._pid,
            rss=_own_bytes(info, "rss", faults),
            vms=_own_bytes(info, "vms", faults),
            uss=_uss(process, faults) if uss else None,
            cpu_percent=cpu_percent,
            num_threads=threads,
            children_rss=children_rss,
        )
        return own, _data_segment(info, faults)


def _attempt(source: str, call: Callable[[], _T]) -> tuple[_T | None, Damage | None]:
    """``(call(), None)``, or ``(None, why)`` when it raises."""
    try:
        return call(), None
    except Exception as error:  # psutil.Error, OSError, or anything odd: never raise
        kind: FaultKind = "vanished" if _is_gone(error) else "unreadable"
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return None, (source, kind, detail)


def _guarded(source: str, call: Callable[[], _T], faults: list[Fault], *fields: str) -> _T | None:
    """``call()``, or ``None`` and a fault on each of *fields* when it raises."""
    value, damage = _attempt(source, call)
    if damage is not None:
        _, kind, detail = damage
        faults.extend(Fault(field, source, kind, detail) for field in fields)
    return value


def _collecting(read: Callable[[list[Fault]], _T]) -> tuple[_T, list[Fault]]:
    """``read(faults)`` and the faults it found (a slow value keeps both)."""
    faults: list[Fault] = []
    return read(faults), faults


def _with_fallback(faults: list[Fault], fallback: str) -> list[Fault]:
    return [
        Fault(fault.field, fault.source, fault.kind, fault.detail, fallback=fallback)
        for fault in faults
    ]


def _is_gone(error: BaseException) -> bool:
    psutil = sys.modules.get("psutil")
    gone = getattr(psutil, "NoSuchProcess", ProcessLookupError)
    return isinstance(error, (gone, ProcessLookupError))


def _byte_count(value: Any, name: str) -> int | None:
    """The non-negative integer attribute *name* of a psutil result below 2**63 (no
    machine counts more bytes; a float conversion of more would overflow), else ``None``."""
    number = getattr(value, name, None)
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < _MAX_BYTES:
        return None
    return number


def _checked_memory(vm: Any) -> tuple[int | None, int | None, Damage | None]:
    """(total, available, why one is unknown) of a ``virtual_memory()`` result."""
    total, available = _byte_count(vm, "total"), _byte_count(vm, "available")
    if total is None or total == 0:
        detail = f"total={getattr(vm, 'total', None)!r} is no machine's memory"
        return None, None, (VIRTUAL_MEMORY, "garbage", detail)
    if available is None or available > total:
        detail = f"available={getattr(vm, 'available', None)!r} of total={total}"
        return total, None, (VIRTUAL_MEMORY, "garbage", detail)
    return total, available, None


def _data_segment(info: Any, faults: list[Fault]) -> _Used:
    """The data segment in a ``memory_info()`` answer (Linux and the BSDs have one), or
    why it is unknown."""
    if info is None:
        failed = next((fault for fault in faults if fault.source == _MEMORY_INFO), None)
        if failed is None:
            return None, (_MEMORY_INFO, "unreadable", "memory_info() was not read")
        return None, (_MEMORY_INFO, failed.kind, failed.detail)
    data = _byte_count(info, "data")
    if data is None:
        return None, (_MEMORY_INFO, "missing", "no data segment size on this platform")
    return data, None


def _busy_total(times: Any) -> tuple[float, float] | None:
    """(busy, total) seconds of all CPUs from ``cpu_times()``; guest time is inside user
    time on Linux, so it is not counted twice."""
    try:
        parts = {
            name: float(getattr(times, name))
            for name in times._fields
            if name not in ("guest", "guest_nice")
        }
    except (AttributeError, *_ARITHMETIC):  # 10**400 seconds overflows a float
        return None
    if "idle" not in parts or any(not 0 <= value < float("inf") for value in parts.values()):
        return None
    idle = parts["idle"] + parts.get("iowait", 0.0)
    total = sum(parts.values())
    return (total - idle, total) if total < float("inf") else None


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
    except (AttributeError, *_ARITHMETIC):
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
            rss = _byte_count(kid.memory_info(), "rss")
        except Exception:  # gone since children() listed it, or not ours to read
            continue
        total += rss or 0
    return total
