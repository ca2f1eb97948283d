"""Containers' numbers read from their cgroup files on this machine, or from the engine's
stats answer: the same numbers either way (``memory_used`` is the working set)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from resguard._probes import cgroup as _cgroup
from resguard._probes.files import read_text

__all__ = ["CgroupDirs", "CgroupFinder", "Reading", "cpu_percent", "read_api", "read_cgroup"]


@attrs.frozen(slots=True)
class CgroupDirs:
    """Where one container's cgroup files are on this machine."""

    version: str  # "v1" or "v2"
    memory: str
    cpu: str | None
    pids: str | None


@attrs.frozen(slots=True)
class Reading:
    """One container's raw numbers from either path, before CPU percent is derived."""

    memory_usage: int
    memory_used: int
    memory_limit: int | None
    cpu_ns: int | None
    pids: int | None


def v1_mount(root: str, controller: str) -> str | None:
    """The cgroup v1 hierarchy of *controller* under *root* (``cpu,cpuacct`` included)."""
    direct = os.path.join(root, controller)
    if os.path.isfile(os.path.join(direct, "cgroup.procs")):
        return direct
    try:
        names = os.listdir(root)
    except OSError:
        return None
    for name in sorted(names):
        if controller in name.split(","):
            path = os.path.join(root, name)
            if os.path.isfile(os.path.join(path, "cgroup.procs")):
                return path
    return None


class CgroupFinder:
    """Finds containers' cgroup directories by id; mounts are looked up once."""

    def __init__(self, root: str) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._found: dict[str, CgroupDirs] = {}
        controllers = read_text(os.path.join(root, "cgroup.controllers"))
        if controllers is not None and "memory" in controllers.split():
            self.version = "v2"
            self._memory: str | None = root
            self._cpu: str | None = root
            self._pids: str | None = root
        else:
            self.version = "v1"
            self._memory = v1_mount(root, "memory")
            self._cpu = v1_mount(root, "cpuacct")
            self._pids = v1_mount(root, "pids")

    @property
    def available(self) -> bool:
        """Whether this machine has a memory cgroup hierarchy at all (not on macOS or
        Windows, where Docker runs containers in a VM, nor without a cgroup mount)."""
        return self._memory is not None

    @staticmethod
    def _relatives(container_id: str) -> tuple[str, ...]:
        # cgroupfs driver, systemd driver; the same names on v1 and v2.
        return (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope")

    def find(self, container_id: str) -> CgroupDirs | None:
        """The container's directories, or ``None`` when it has none on this machine."""
        found = self._found.get(container_id)
        if found is not None:
            return found
        if self._memory is None:
            return None
        for relative in self._relatives(container_id):
            memory = os.path.join(self._memory, relative)
            if not os.path.isdir(memory):
                continue
            cpu = os.path.join(self._cpu, relative) if self._cpu else None
            pids = os.path.join(self._pids, relative) if self._pids else None
            found = CgroupDirs(
                self.version,
                memory,
                cpu if cpu and os.path.isdir(cpu) else None,
                pids if pids and os.path.isdir(pids) else None,
            )
            with self._lock:
                self._found[container_id] = found
            return found
        return None

    def forget(self, keep: Iterable[str]) -> None:
        """Drop directories of containers that are gone."""
        keep_set = set(keep)
        with self._lock:
            for container_id in [key for key in self._found if key not in keep_set]:
                del self._found[container_id]


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _cpu_ns(dirs: CgroupDirs) -> int | None:
    if dirs.cpu is None:
        return None
    if dirs.version == "v1":
        return _int(read_text(dirs.cpu + "/cpuacct.usage"))
    for line in (read_text(dirs.cpu + "/cpu.stat") or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            usec = _int(value)
            return None if usec is None else usec * 1000
    return None


def read_cgroup(dirs: CgroupDirs, host_total: int | None) -> Reading | None:
    """A container's numbers from its cgroup files, or ``None`` when they are gone."""
    memory = _cgroup.read_memory(dirs.memory, dirs.version)  # the one read of memory files
    if memory is None:
        return None
    pids = _int(read_text(dirs.pids + "/pids.current")) if dirs.pids else None
    return Reading(
        memory.usage, memory.working_set, own_limit(memory.limit, host_total), _cpu_ns(dirs), pids
    )


def own_limit(limit: int | None, host_total: int | None) -> int | None:
    """A limit at or above the host's memory is no limit of the container's own."""
    if limit is None or limit <= 0:
        return None
    if host_total and limit >= host_total:
        return None
    return limit


def read_api(data: Mapping[str, Any], host_total: int | None) -> Reading | None:
    """A container's numbers from the engine's stats answer, or ``None`` when not running."""
    memory = data.get("memory_stats") or {}
    usage = memory.get("usage")
    if not isinstance(usage, int):
        return None
    stats = memory.get("stats") or {}
    # cgroup v1 has hierarchical totals; v2 has only inactive_file (like the docker CLI).
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0)) or 0
    used = usage - inactive if inactive < usage else usage
    cpu = ((data.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    pids = (data.get("pids_stats") or {}).get("current")
    return Reading(
        usage,
        used,
        own_limit(memory.get("limit"), host_total),
        cpu if isinstance(cpu, int) else None,
        pids if isinstance(pids, int) else None,
    )


def cpu_percent(reading: Reading, before: tuple[int, float] | None, now_s: float) -> float | None:
    """CPU percent (100 per full core) between the reading *before* ``(cpu_ns, at_s)`` and
    *reading* taken at *now_s*; ``None`` without an earlier reading."""
    if reading.cpu_ns is None or before is None or now_s <= before[1]:
        return None
    delta_ns = max(reading.cpu_ns - before[0], 0)
    return delta_ns / 1e9 / (now_s - before[1]) * 100.0
