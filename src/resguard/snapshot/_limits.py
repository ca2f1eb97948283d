"""Memory against the effective limit: reading the limits (cgroup, rlimits, CPU quota) at
most once per :data:`LIMITS_MAX_AGE_S`, and choosing which of host, cgroup and rlimit
binds and what counts as used under it."""

from __future__ import annotations

import os
import threading

import attrs

from resguard._probes import cgroup as _cgroup
from resguard._probes import procfs as _procfs
from resguard._probes.files import FaultKind, FileCache, damage_of
from resguard.snapshot._values import Fault, MemoryInfo, ProcessSelf, SwapInfo

try:
    import resource
except ImportError:  # not on Windows: no rlimits there
    resource = None  # type: ignore[assignment]

_HAS_RESOURCE = resource is not None

__all__ = [
    "LIMITS_MAX_AGE_S",
    "Limits",
    "MemoryReader",
    "bound_memory",
    "cpu_bound",
    "headroom",
    "invalidate_limits",
    "limit_without",
    "limits_generation",
    "memory_faults",
    "rlimits",
    "tightest",
]

LIMITS_MAX_AGE_S = 1.0
"""How stale the limits in a snapshot may be (cgroup limit, rlimits, CPU quota); see also
:func:`invalidate_limits`."""

_limits_generation = 0
_generation_lock = threading.Lock()

Damage = tuple[str, FaultKind, str]  # (path, kind, detail)


def invalidate_limits() -> None:
    """Make every :class:`Sampler` in this process re-read its limits (cgroup limit,
    rlimits, CPU quota) on its next sample instead of up to :data:`LIMITS_MAX_AGE_S` later.

    Call it right after changing a limit of this process (``limit_self`` does), so the new
    limit binds the next admission decision.
    """
    global _limits_generation
    with _generation_lock:
        _limits_generation += 1


def limits_generation() -> int:
    """Counts :func:`invalidate_limits` calls: a reader whose limits were read under an
    older generation re-reads them."""
    return _limits_generation


def _fresh_lock() -> None:
    global _generation_lock
    _generation_lock = threading.Lock()  # a parent's thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock)


@attrs.frozen
class Limits:
    """The limits of one reading; they change rarely (a ``docker update``, a setrlimit)."""

    memory: tuple[int, str, str] | None  # (bytes, cgroup directory, file) of the tightest
    rlimits: tuple[tuple[str, int], ...]
    cpu_effective: float
    cpu_source: str
    faults: tuple[Fault, ...]
    cgroup_gone: bool = False  # the cgroup named by Sampler(cgroup=...) was removed


class MemoryReader:
    """The memory and limit part of a :class:`Sampler`; not locked (the sampler holds its
    lock around every call). *cgroup_dir* is the cgroup asked about, ``None`` for this
    process's own."""

    def __init__(
        self,
        files: FileCache,
        proc: str,
        *,
        cgroup_dir: str | None,
        cpu_count: int,
        max_age_s: float,
    ) -> None:
        self._files = files
        self._cgroup_dir = cgroup_dir
        self._cpu_count = cpu_count
        self._max_age_s = max_age_s
        self._meminfo_path = os.path.join(proc, "meminfo")
        self._self_stat_path = os.path.join(proc, "self", "stat")
        self._self_statm_path = os.path.join(proc, "self", "statm")
        self._limits: Limits | None = None
        self._expire_s = -1.0
        self._seen = _limits_generation

    @property
    def last_limits(self) -> Limits | None:
        """The limits of the last reading (``None`` before the first)."""
        return self._limits

    def limits(self, location: _cgroup.CgroupLocation | None, now_s: float) -> Limits:
        """The limits, re-read at most once per *max_age_s* (or after
        :func:`invalidate_limits`), not per sample."""
        generation = _limits_generation
        if self._limits is not None and now_s < self._expire_s and generation == self._seen:
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
        quota = _cgroup.cpu_quota(location, self._files.read, report) if location else None
        effective, source = self._cpu_bound(quota)
        self._limits = Limits(memory, rlimits(), effective, source, tuple(faults), gone)
        self._expire_s = now_s + self._max_age_s
        self._seen = generation
        return self._limits

    def _cpu_bound(self, quota: float | None) -> tuple[float, str]:
        """The CPUs this process may use and what bounds them (see :func:`cpu_bound`)."""
        try:
            affinity: int | None = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            affinity = None
        return cpu_bound(self._cpu_count, affinity, quota)

    def memory(
        self,
        text: str | None,
        meminfo: dict[str, int],
        process: ProcessSelf,
        limits: Limits,
        location: _cgroup.CgroupLocation | None,
        faults: list[Fault],
    ) -> MemoryInfo:
        """Memory against whichever of host, cgroup and rlimit binds (see
        :class:`MemoryInfo`); *text* is ``/proc/meminfo`` and *meminfo* its parse."""
        total = meminfo.get("MemTotal") or None  # a total of 0 is damage, not a machine
        host_available = meminfo.get("MemAvailable", meminfo.get("MemFree"))
        host_damage = (
            self._files.damage(self._meminfo_path, text)
            if total is None or host_available is None
            else None
        )
        used: int | None = None
        used_damage: Damage | None = None
        if self._cgroup_dir is not None and (location is None or limits.cgroup_gone):
            # the cgroup asked about is gone: the host's numbers would answer another question
            limit, source, detail = None, "unknown", ""
        else:
            limit, source, detail = (
                (total, "host", self._meminfo_path) if total is not None else (None, "unknown", "")
            )
            bound = limits.memory if location is not None else None
            if bound is not None and (limit is None or bound[0] < limit):
                limit, source, detail = bound[0], "cgroup", f"{bound[1]}/{bound[2]}"
            limit, source, detail = tightest(limit, source, detail, limits.rlimits)
            # only the binding limit's "used" is read: a looser one's faults are no damage
            if source == "host" and total is not None and host_available is not None:
                used = max(total - host_available, 0)
            elif source == "cgroup" and bound is not None and location is not None:
                used, used_damage = self._cgroup_used(bound[1], location.version, faults)
            elif source == "rlimit":
                used, used_damage = self._rlimit_used(detail, process)
        memory, damage = bound_memory(
            total=total,
            limit=limit,
            used=used,
            host_available=host_available,
            source=source,
            detail=detail,
            cgroup=location.relative if location else None,
            host_damage=host_damage,
            used_damage=used_damage,
        )
        faults.extend(damage)
        return memory

    def _rlimit_used(self, name: str, process: ProcessSelf) -> tuple[int | None, Damage | None]:
        """What an rlimit counts: the address space (``RLIMIT_AS``) or the data segment."""
        if name == "RLIMIT_AS":
            if process.vms is not None:
                return process.vms, None
            return None, (self._self_stat_path, "unreadable", "no virtual size")
        text = self._files.read(self._self_statm_path)
        statm = _procfs.parse_statm(text) if text is not None else None
        if statm is None:
            return None, self._files.damage(self._self_statm_path, text)
        return statm[2], None

    def _cgroup_used(
        self, directory: str, version: str, faults: list[Fault]
    ) -> tuple[int | None, Damage | None]:
        """The working set of the binding cgroup (usage minus inactive file cache)."""
        usage_path = directory + (
            "/memory.usage_in_bytes" if version == "v1" else "/memory.current"
        )
        text = self._files.read(usage_path)
        usage = _cgroup.parse_count(text) if text is not None else None
        if usage is None:
            return None, self._files.damage(usage_path, text)
        stat_path = directory + "/memory.stat"
        stat = self._files.read(stat_path)
        keys = ("total_inactive_file", "inactive_file") if version == "v1" else ("inactive_file",)
        inactive = _cgroup.parse_stat_value(stat, *keys) if stat is not None else None
        if inactive is None:
            _, kind, why = self._files.damage(stat_path, stat)
            faults.append(
                Fault(
                    "memory.used", stat_path, kind, why, fallback="all usage, file cache included"
                )
            )
            return usage, None
        return max(usage - inactive, 0), None

    def swap(self, text: str | None, meminfo: dict[str, int], faults: list[Fault]) -> SwapInfo:
        """The host's swap from ``/proc/meminfo`` (*text*, parsed as *meminfo*)."""
        total = meminfo.get("SwapTotal")
        free = meminfo.get("SwapFree")
        if total is None or free is None or free > total:
            path, kind, why = self._files.damage(self._meminfo_path, text)
            faults.append(Fault("swap", path, kind, why))
            return SwapInfo(total=None, used=None, free=None, percent=None)
        used = total - free
        return SwapInfo(
            total=total, used=used, free=free, percent=100.0 * used / total if total else 0.0
        )

    def limit_without_rlimit(
        self, memory: MemoryInfo, location: _cgroup.CgroupLocation | None, rlimit: str
    ) -> int | None:
        """The effective limit as if the soft *rlimit* were not set (``None``: unknown),
        from the *memory* just sampled and the limits read for it."""
        limits = self._limits
        if self._cgroup_dir is not None and (
            location is None or (limits is not None and limits.cgroup_gone)
        ):
            return None  # the cgroup asked about is gone: no limit is known
        if limits is None:
            return memory.total
        bound = limits.memory[0] if limits.memory is not None and location is not None else None
        return limit_without((memory.total, bound), limits.rlimits, rlimit)


def rlimits() -> tuple[tuple[str, int], ...]:
    """This process's soft ``RLIMIT_AS`` and ``RLIMIT_DATA`` where they are set (none
    where the platform has no :mod:`resource` module or not that limit)."""
    if not _HAS_RESOURCE:
        return ()
    found = []
    for name in ("RLIMIT_AS", "RLIMIT_DATA"):
        kind = getattr(resource, name, None)
        if kind is None:
            continue
        try:
            soft = resource.getrlimit(kind)[0]
        except (OSError, ValueError):
            continue
        if soft != resource.RLIM_INFINITY and soft > 0:
            found.append((name, soft))
    return tuple(found)


def cpu_bound(count: int, affinity: int | None, quota: float | None) -> tuple[float, str]:
    """(CPUs this process may use, what bounds them): the host's *count*, the *affinity*
    mask's size or the cgroup *quota* in CPUs, whichever is smallest (``None``: not known
    or not set)."""
    effective, source = float(count), "host"
    if affinity is not None and 0 < affinity < effective:
        effective, source = float(affinity), "affinity"
    if quota is not None and quota < effective:
        effective, source = quota, "cgroup"
    return effective, source


def tightest(
    limit_bytes: int | None, source: str, detail: str, found: tuple[tuple[str, int], ...]
) -> tuple[int | None, str, str]:
    """(limit, source, detail) of the tightest of *limit_bytes* (from *source*, *detail*;
    ``None``: unknown) and the soft rlimits *found* (see :func:`rlimits`)."""
    for name, soft in found:
        if limit_bytes is None or soft < limit_bytes:
            limit_bytes, source, detail = soft, "rlimit", name
    return limit_bytes, source, detail


def headroom(
    limit_bytes: int | None, used_bytes: int | None, host_available_bytes: int | None
) -> tuple[int | None, float | None]:
    """(available bytes, percent used) under *limit_bytes*: the limit minus what is used,
    at most what the host has available (a limit above the free memory does not free
    any); both ``None`` when the limit or the use is unknown."""
    if limit_bytes is None or used_bytes is None:
        return None, None
    available = limit_bytes - used_bytes
    if host_available_bytes is not None:
        available = min(available, host_available_bytes)
    return max(available, 0), 100.0 * used_bytes / limit_bytes if limit_bytes else 100.0


def bound_memory(
    *,
    total: int | None,
    limit: int | None,
    used: int | None,
    host_available: int | None,
    source: str,
    detail: str,
    cgroup: str | None,
    host_damage: Damage | None,
    used_damage: Damage | None,
) -> tuple[MemoryInfo, list[Fault]]:
    """Memory against the binding *limit* (chosen by :func:`tightest`, its *used* read by
    the backend), with its headroom and percent, and the faults of that reading (see
    :func:`memory_faults`); both backends end their memory reading here."""
    available, percent = headroom(limit, used, host_available)
    memory = MemoryInfo(
        total=total,
        limit=limit,
        used=used,
        available=available,
        percent=percent,
        source=source,
        source_detail=detail,
        cgroup=cgroup,
    )
    return memory, memory_faults(memory, host_damage, used_damage)


def limit_without(
    bounds: tuple[int | None, ...], found: tuple[tuple[str, int], ...], rlimit: str
) -> int | None:
    """The least of *bounds* (``None`` ones unknown) and the rlimits *found* other than
    *rlimit*: the limit as if *rlimit* were not set (``None``: unknown)."""
    known = [bound for bound in bounds if bound is not None]
    known.extend(soft for name, soft in found if name != rlimit)
    return min(known) if known else None


def memory_faults(
    memory: MemoryInfo, host_damage: Damage | None, used_damage: Damage | None
) -> list[Fault]:
    """The faults of a *memory* reading: *host_damage* is why the host's total or
    available is unknown, *used_damage* why the binding limit's "used" is (read only for
    the limit that binds, so a looser limit's damage never shows)."""
    faults: list[Fault] = []
    if host_damage is not None:
        path, kind, why = host_damage
        if memory.total is None:
            faults.append(
                Fault("memory" if memory.limit is None else "memory.total", path, kind, why)
            )
        elif memory.source == "host":
            for name in ("memory.used", "memory.available", "memory.percent"):
                faults.append(Fault(name, path, kind, why))
        elif memory.limit is not None:
            # another limit binds: only its headroom misses the host's cap
            fallback = memory.source_detail if memory.available is not None else None
            faults.append(Fault("memory.available", path, kind, why, fallback=fallback))
    if memory.limit is not None and memory.used is None and used_damage is not None:
        path, kind, why = used_damage
        for name in ("memory.used", "memory.available", "memory.percent"):
            faults.append(Fault(name, path, kind, why))
    return faults
