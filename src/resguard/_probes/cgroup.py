"""cgroup v1 and v2: where this process sits, its memory limits and usage, its CPU quota.

Limits are found by walking from the process's own cgroup up to the root of the mounted
hierarchy, because a limit set on a parent binds every child. ``memory.low``/``memory.min``
are protections, never limits, and are not read. cgroup v1 reports "no limit" as a huge
number (``PAGE_COUNTER_MAX``), which is treated as no limit.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import attrs

from resguard._probes.files import read_text
from resguard._probes.paths import DEFAULT_ROOTS, Roots

__all__ = [
    "CgroupLocation",
    "CgroupMemory",
    "MemoryBound",
    "cpu_quota",
    "locate",
    "location_of",
    "memory_bound",
    "memory_limit",
    "parse_proc_cgroup",
    "read_memory",
]

Reader = Callable[[str], "str | None"]

_V1_UNLIMITED = 1 << 62


@attrs.frozen
class CgroupMemory:
    """Memory numbers of one cgroup directory, in bytes; ``limit``/``high`` ``None`` = none."""

    limit: int | None
    high: int | None
    usage: int
    inactive_file: int

    @property
    def working_set(self) -> int:
        """Usage minus inactive file cache: what the kernel cannot drop (kubelet's rule)."""
        return max(self.usage - self.inactive_file, 0)


@attrs.frozen
class CgroupLocation:
    """Where this process's memory and cpu cgroups are on disk."""

    version: str  # "v1" or "v2"
    memory_dir: str | None  # absolute directory of the process's memory cgroup
    memory_mount: str | None  # the hierarchy's root directory (the walk stops there)
    cpu_dir: str | None
    cpu_mount: str | None
    relative: str  # the path as /proc/<pid>/cgroup shows it


@attrs.frozen
class MemoryBound:
    """The tightest memory limit on the walk, where it was found and its cgroup's usage."""

    limit: int
    directory: str
    file: str  # "memory.max", "memory.high" or "memory.limit_in_bytes"
    memory: CgroupMemory


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Map each controller in ``/proc/<pid>/cgroup`` to its path; cgroup v2's key is ``""``."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            result[""] = path
        for controller in controllers.split(","):
            if controller:
                result[controller.removeprefix("name=")] = path
    return result


def _v1_mount(cgroup_root: str, controller: str) -> str | None:
    direct = os.path.join(cgroup_root, controller)
    if os.path.isdir(direct):
        return direct
    try:
        names = os.listdir(cgroup_root)
    except OSError:
        return None
    for name in names:
        if controller in name.split(","):
            return os.path.join(cgroup_root, name)
    return None


def _resolve(mount: str, path: str) -> str:
    """The directory of *path* under *mount*; inside a container without a cgroup namespace
    /proc shows the host's path, so leading parts are dropped until one exists."""
    parts = [part for part in path.split("/") if part]
    for start in range(len(parts)):
        candidate = os.path.join(mount, *parts[start:])
        if os.path.isdir(candidate):
            return candidate
    return mount


def locate(roots: Roots = DEFAULT_ROOTS, pid: str = "self") -> CgroupLocation | None:
    """Find the memory and cpu cgroups of *pid*, or ``None`` where there are no cgroups."""
    text = read_text(os.path.join(roots.proc, pid, "cgroup"))
    if not text:
        return None
    paths = parse_proc_cgroup(text)
    if "memory" in paths:
        memory_mount = _v1_mount(roots.cgroup, "memory")
        cpu_mount = _v1_mount(roots.cgroup, "cpu")
        return CgroupLocation(
            version="v1",
            memory_dir=_resolve(memory_mount, paths["memory"]) if memory_mount else None,
            memory_mount=memory_mount,
            cpu_dir=_resolve(cpu_mount, paths.get("cpu", "/")) if cpu_mount else None,
            cpu_mount=cpu_mount,
            relative=paths["memory"],
        )
    if "" in paths:
        mount = roots.cgroup
        if not os.path.exists(os.path.join(mount, "cgroup.controllers")):
            unified = os.path.join(mount, "unified")  # hybrid layout: v2 without controllers
            if not os.path.exists(os.path.join(unified, "cgroup.controllers")):
                return None
            mount = unified
        directory = _resolve(mount, paths[""])
        return CgroupLocation(version="v2", memory_dir=directory, memory_mount=mount,
                              cpu_dir=directory, cpu_mount=mount, relative=paths[""])
    return None


def location_of(directory: str, roots: Roots = DEFAULT_ROOTS) -> CgroupLocation:
    """The location of an explicit cgroup *directory* (e.g. to watch a child's cgroup)."""
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory!r} is not a cgroup directory")
    if os.path.exists(os.path.join(directory, "memory.limit_in_bytes")):
        mount = _v1_mount(roots.cgroup, "memory") or roots.cgroup
        version = "v1"
    else:
        mount = roots.cgroup
        if not directory.startswith(mount.rstrip("/") + "/") and directory != mount:
            mount = os.path.dirname(directory)
        version = "v2"
    relative = "/" + os.path.relpath(directory, mount).lstrip(".")
    cpu = directory if version == "v2" else None
    return CgroupLocation(version=version, memory_dir=directory, memory_mount=mount,
                          cpu_dir=cpu, cpu_mount=mount if cpu else None,
                          relative=relative.rstrip("/") or "/")


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    value = text.strip()
    if value == "max" or not value:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return None if number < 0 or number >= _V1_UNLIMITED else number


def _stat_value(stat: str, *keys: str) -> int:
    """The first of *keys* found in a ``memory.stat`` text (``key value`` lines), else 0."""
    wanted = {key: index for index, key in enumerate(keys)}
    found: dict[int, int] = {}
    for line in stat.splitlines():
        key, _, value = line.partition(" ")
        index = wanted.get(key)
        if index is not None:
            found[index] = int(value)
            if index == 0:
                break
    return found[min(found)] if found else 0


def read_memory(directory: str | Path, version: str,
                reader: Reader = read_text) -> CgroupMemory | None:
    """Read one cgroup directory's memory numbers (works for containers' cgroups too)."""
    base = str(directory)
    if version == "v1":
        usage = _int_or_none(reader(base + "/memory.usage_in_bytes"))
        limit = _int_or_none(reader(base + "/memory.limit_in_bytes"))
        high = None
        inactive_keys: tuple[str, ...] = ("total_inactive_file", "inactive_file")
    else:
        usage = _int_or_none(reader(base + "/memory.current"))
        limit = _int_or_none(reader(base + "/memory.max"))
        high = _int_or_none(reader(base + "/memory.high"))
        inactive_keys = ("inactive_file",)
    if usage is None:
        return None
    stat = reader(base + "/memory.stat") or ""
    return CgroupMemory(limit=limit, high=high, usage=usage,
                        inactive_file=_stat_value(stat, *inactive_keys))


@functools.lru_cache(maxsize=64)
def _ancestors(directory: str, mount: str) -> tuple[str, ...]:
    """*directory* and its parents up to and including *mount*."""
    result = [directory]
    mount = mount.rstrip("/")
    while directory.rstrip("/") != mount and len(directory) > len(mount):
        directory = os.path.dirname(directory)
        result.append(directory)
    return tuple(result)


def memory_limit(location: CgroupLocation,
                 reader: Reader = read_text) -> tuple[int, str, str] | None:
    """The tightest limit between the process's cgroup and the root, as (bytes, directory,
    file name), or ``None`` when no level sets one."""
    if location.memory_dir is None or location.memory_mount is None:
        return None
    files = (("memory.limit_in_bytes",) if location.version == "v1"
             else ("memory.max", "memory.high"))
    best: tuple[int, str, str] | None = None
    for directory in _ancestors(location.memory_dir, location.memory_mount):
        for name in files:
            limit = _int_or_none(reader(directory + "/" + name))
            if limit is not None and (best is None or limit < best[0]):
                best = (limit, directory, name)
    return best


def memory_bound(location: CgroupLocation, reader: Reader = read_text) -> MemoryBound | None:
    """The tightest memory limit on the walk with its cgroup's usage, or ``None``."""
    best = memory_limit(location, reader)
    if best is None:
        return None
    memory = read_memory(best[1], location.version, reader)
    if memory is None:
        return None
    return MemoryBound(limit=best[0], directory=best[1], file=best[2], memory=memory)


def cpu_quota(location: CgroupLocation, reader: Reader = read_text) -> float | None:
    """The tightest CPU quota on the walk, in CPUs (``1.5`` = 150 ms per 100 ms), or ``None``."""
    if location.cpu_dir is None or location.cpu_mount is None:
        return None
    best: float | None = None
    for directory in _ancestors(location.cpu_dir, location.cpu_mount):
        if location.version == "v1":
            quota = reader(directory + "/cpu.cfs_quota_us")
            period = reader(directory + "/cpu.cfs_period_us")
            if quota is None or period is None:
                continue
            quota_text, period_text = quota.strip(), period.strip()
        else:
            text = reader(directory + "/cpu.max")
            if text is None:
                continue
            quota_text, _, period_text = text.strip().partition(" ")
        if quota_text in ("max", "-1") or not period_text:
            continue
        try:
            cpus = int(quota_text) / int(period_text)
        except (ValueError, ZeroDivisionError):
            continue
        if cpus > 0 and (best is None or cpus < best):
            best = cpus
    return best
