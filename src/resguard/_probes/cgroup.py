"""cgroup v1 and v2: where this process sits, its memory limits and usage, its CPU quota,
and the processes of a cgroup and its descendants (:func:`member_pids`).

Limits are found by walking from the process's own cgroup up to the root of the mounted
hierarchy, because a limit set on a parent binds every child. ``memory.low``/``memory.min``
are protections, never limits, and are not read. cgroup v1 reports "no limit" as a huge
number (``PAGE_COUNTER_MAX``), which is treated as no limit.
"""

from __future__ import annotations

import enum
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal, NamedTuple

import attrs

from resguard._probes.files import FaultKind, read_text
from resguard._probes.paths import DEFAULT_ROOTS, Roots

__all__ = [
    "DAMAGED",
    "MAX_MEMBER_CGROUPS",
    "MAX_MEMBER_PIDS",
    "CgroupLocation",
    "CgroupMemory",
    "MemberDamage",
    "MemoryBound",
    "cpu_quota",
    "find_location",
    "locate",
    "location_of",
    "member_pids",
    "memory_bound",
    "memory_limit",
    "parse_count",
    "parse_limit",
    "parse_proc_cgroup",
    "parse_stat_value",
    "read_memory",
]

Reader = Callable[[str], "str | None"]
Report = Callable[[str, str, "str | None", bool], None]
"""Told of a damaged file: (snapshot field it feeds, path, its text or ``None`` when it
could not be read, whether a missing file is normal)."""

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
        if not path.startswith("/"):
            continue
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


def locate(
    roots: Roots = DEFAULT_ROOTS, pid: str = "self", report: Report | None = None
) -> CgroupLocation | None:
    """Find the memory and cpu cgroups of *pid*, or ``None`` where there are no cgroups
    (or ``/proc/<pid>/cgroup`` cannot be read or parsed: then *report* is told)."""
    path = os.path.join(roots.proc, pid, "cgroup")
    text = read_text(path)
    if text is None:
        if report is not None and os.path.lexists(path):
            report("memory.limit", path, None, False)
        return None
    paths = parse_proc_cgroup(text)
    if not paths:
        if report is not None:
            report("memory.limit", path, text, False)
        return None
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
        return CgroupLocation(
            version="v2",
            memory_dir=directory,
            memory_mount=mount,
            cpu_dir=directory,
            cpu_mount=mount,
            relative=paths[""],
        )
    return None


# What a cgroup directory holds: every v1 and v2 cgroup has cgroup.procs; the memory
# files stand for it in a fixture tree (resguard.testing.KernelTree writes only those).
_CONTROL_FILES = ("cgroup.procs", "memory.max", "memory.current", "memory.limit_in_bytes")


def _not_a_cgroup(directory: str, roots: Roots) -> str | None:
    """Why *directory* is no cgroup under *roots* (``None``: it is one)."""
    if not directory.strip():
        return "it is empty"
    if not os.path.isdir(directory):
        return "no such directory" if not os.path.lexists(directory) else "not a directory"
    mount = os.path.realpath(roots.cgroup)
    real = os.path.realpath(directory)
    if real != mount and not real.startswith(mount.rstrip(os.sep) + os.sep):
        return f"it is not under the cgroup mount {roots.cgroup}"
    if not any(os.path.exists(os.path.join(directory, name)) for name in _CONTROL_FILES):
        return "it has no cgroup.procs"
    return None


def location_of(directory: str, roots: Roots = DEFAULT_ROOTS) -> CgroupLocation:
    """The location of an explicit cgroup *directory* (e.g. to watch a child's cgroup);
    :class:`~resguard.InvalidValue` quoting it when it is empty, not a directory, not
    under the cgroup mount (``roots.cgroup``) or has no cgroup control files: the one
    check of ``Sampler(cgroup=...)`` and ``Monitor(cgroup=...)``."""
    problem = _not_a_cgroup(directory, roots)
    location = find_location(directory, roots) if problem is None else None
    if location is None:
        from resguard._errors import InvalidValue
        from resguard.units import shown

        quoted = shown(directory)
        if len(quoted) > 200:  # a path is at most 4096 bytes; a line need not be
            quoted = quoted[:200] + "…"
        raise InvalidValue(
            f"cgroup={quoted} is not a cgroup directory "
            f"({problem or 'it is gone'}); expected a directory under {roots.cgroup} "
            f"with cgroup.procs, e.g. '{os.path.join(roots.cgroup, 'system.slice')}'"
        )
    return location


def find_location(directory: str, roots: Roots = DEFAULT_ROOTS) -> CgroupLocation | None:
    """Like :func:`location_of`, but ``None`` when *directory* is not there (it may have
    been removed since it was named)."""
    if not directory.strip():
        return None  # abspath("") would be the working directory
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        return None
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
    return CgroupLocation(
        version=version,
        memory_dir=directory,
        memory_mount=mount,
        cpu_dir=cpu,
        cpu_mount=mount if cpu else None,
        relative=relative.rstrip("/") or "/",
    )


class _Damage(enum.Enum):
    DAMAGED = "damaged"


DAMAGED: Final = _Damage.DAMAGED
"""What :func:`parse_limit` returns for a text that is not a limit."""


def parse_limit(text: str) -> int | Literal[_Damage.DAMAGED] | None:
    """A limit file (``memory.max``, ``cpu.max``'s quota): bytes, ``None`` for no limit
    (``max``, ``-1`` or v1's huge number), :data:`DAMAGED` for anything else; never raises."""
    if not text.endswith("\n"):
        return DAMAGED  # cut short: "1234" may have been "1234567"
    value = text.strip()
    if value in ("max", "-1"):
        return None
    if not value.isdigit() or not value.isascii() or len(value) > 20:
        return DAMAGED
    number = int(value)
    return None if number >= _V1_UNLIMITED else number


def parse_count(text: str) -> int | None:
    """A usage file (``memory.current``): a non-negative integer, else ``None``."""
    if not text.endswith("\n"):
        return None
    value = text.strip()
    if not value.isdigit() or not value.isascii() or len(value) > 20:
        return None
    return int(value)


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    value = text.strip()
    if not value.isdigit() or not value.isascii() or len(value) > 20:
        return None
    number = int(value)
    return None if number >= _V1_UNLIMITED else number


def parse_stat_value(stat: str, *keys: str) -> int | None:
    """The first of *keys* found in a ``memory.stat`` text (``key value`` lines), or
    ``None`` when none is there as a whole number; never raises."""
    wanted = {key: index for index, key in enumerate(keys)}
    found: dict[int, int] = {}
    for line in stat.splitlines(keepends=True):
        key, _, value = line.partition(" ")
        index = wanted.get(key)
        if index is not None:
            if not line.endswith("\n"):
                continue  # cut short
            value = value.strip()
            if not value.isdigit() or not value.isascii() or len(value) > 20:
                continue
            found[index] = int(value)
            if index == 0:
                break
    return found[min(found)] if found else None


def _stat_value(stat: str, *keys: str) -> int:
    """The first of *keys* found in a ``memory.stat`` text, else 0."""
    value = parse_stat_value(stat, *keys)
    return 0 if value is None else value


def read_memory(
    directory: str | Path, version: str, reader: Reader = read_text
) -> CgroupMemory | None:
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
    return CgroupMemory(
        limit=limit, high=high, usage=usage, inactive_file=_stat_value(stat, *inactive_keys)
    )


@functools.lru_cache(maxsize=64)
def _ancestors(directory: str, mount: str) -> tuple[str, ...]:
    """*directory* and its parents up to and including *mount*."""
    result = [directory]
    mount = mount.rstrip("/")
    while directory.rstrip("/") != mount and len(directory) > len(mount):
        directory = os.path.dirname(directory)
        result.append(directory)
    return tuple(result)


def memory_limit(
    location: CgroupLocation, reader: Reader = read_text, report: Report | None = None
) -> tuple[int, str, str] | None:
    """The tightest limit between the process's cgroup and the root, as (bytes, directory,
    file name), or ``None`` when no level sets one. A level whose file cannot be read or
    parsed is skipped; *report* (if given) is told of it (a missing file is no limit)."""
    if location.memory_dir is None or location.memory_mount is None:
        return None
    files = (
        ("memory.limit_in_bytes",) if location.version == "v1" else ("memory.max", "memory.high")
    )
    best: tuple[int, str, str] | None = None
    for directory in _ancestors(location.memory_dir, location.memory_mount):
        for name in files:
            path = directory + "/" + name
            text = reader(path)
            if text is None:
                if report is not None:
                    report("memory.limit", path, None, True)
                continue
            limit = parse_limit(text)
            if limit is DAMAGED:
                if report is not None:
                    report("memory.limit", path, text, True)
                continue
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


def _parse_quota(quota_text: str, period_text: str) -> float | Literal[_Damage.DAMAGED] | None:
    if quota_text in ("max", "-1"):
        return None
    if not (
        quota_text.isdigit()
        and period_text.isdigit()
        and quota_text.isascii()
        and period_text.isascii()
        and len(quota_text) <= 20
        and len(period_text) <= 20
    ):
        return DAMAGED
    period = int(period_text)
    cpus = int(quota_text) / period if period else 0.0
    return cpus if cpus > 0 else DAMAGED


def cpu_quota(
    location: CgroupLocation, reader: Reader = read_text, report: Report | None = None
) -> float | None:
    """The tightest CPU quota on the walk, in CPUs (``1.5`` = 150 ms per 100 ms), or ``None``.
    A level whose files cannot be read or parsed is skipped and told to *report*."""
    if location.cpu_dir is None or location.cpu_mount is None:
        return None
    best: float | None = None
    for directory in _ancestors(location.cpu_dir, location.cpu_mount):
        if location.version == "v1":
            path = directory + "/cpu.cfs_quota_us"
            quota = reader(path)
            period = reader(directory + "/cpu.cfs_period_us")
            if quota is None or period is None:
                if report is not None:
                    report(
                        "cpu.effective",
                        path if quota is None else directory + "/cpu.cfs_period_us",
                        None,
                        True,
                    )
                continue
            text = quota + period
            cpus = (
                _parse_quota(quota.strip(), period.strip())
                if quota.endswith("\n") and period.endswith("\n")
                else DAMAGED
            )
        else:
            path = directory + "/cpu.max"
            max_text = reader(path)
            if max_text is None:
                if report is not None:
                    report("cpu.effective", path, None, True)
                continue
            text = max_text
            quota_text, _, period_text = max_text.strip().partition(" ")
            cpus = _parse_quota(quota_text, period_text) if max_text.endswith("\n") else DAMAGED
        if cpus is DAMAGED:
            if report is not None:
                report("cpu.effective", path, text, True)
            continue
        if cpus is not None and (best is None or cpus < best):
            best = cpus
    return best


MAX_MEMBER_CGROUPS = 4096
"""The most cgroup directories :func:`member_pids` walks (the cgroup and its descendants)."""
MAX_MEMBER_PIDS = 1 << 20
"""The most pids :func:`member_pids` collects (Linux's own ``pid_max`` limit is 4 M)."""


_MEMBERS_CAP_BYTES = 8 * 2**20  # a million pids of 7 digits and their newlines


class MemberDamage(NamedTuple):
    """Why the members of a cgroup could not all be read."""

    path: str
    kind: FaultKind
    detail: str


def _members_of(directory: str) -> list[int] | MemberDamage:
    """The pids in one cgroup directory's ``cgroup.procs`` (v1 and v2), else its ``tasks``
    (v1: thread ids, the pids among them), or (path, kind, detail) of why not."""
    damage = MemberDamage(directory, "missing", "no cgroup.procs or tasks")
    for name in ("cgroup.procs", "tasks"):
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as handle:
                data = handle.read(_MEMBERS_CAP_BYTES)
        except FileNotFoundError:
            continue
        except OSError as error:
            damage = MemberDamage(path, "unreadable", f"cannot read: {error.strerror or error}")
            continue
        text = data.decode("ascii", "replace")
        lines = text.split()
        if (text and not text.endswith("\n")) or not all(
            line.isdigit() and line.isascii() and len(line) < 12 for line in lines
        ):
            return MemberDamage(path, "garbage", f"not a list of pids: {text[:40]!r}")
        return [int(line) for line in lines]
    return damage


def member_pids(
    directory: str,
    *,
    max_cgroups: int = MAX_MEMBER_CGROUPS,
    max_pids: int = MAX_MEMBER_PIDS,
) -> tuple[int, ...] | MemberDamage:
    """The pids in the cgroup *directory* and every cgroup below it, sorted and without
    repeats (cgroup v1 or v2), or a :class:`MemberDamage` saying why they could not all
    be read: a member list that is missing, unreadable or damaged, or a tree beyond
    *max_cgroups* directories or *max_pids* pids (a partial list would misplace
    processes). A child cgroup removed during the walk is skipped. Never raises."""
    found: set[int] = set()
    todo = [directory]
    walked = 0
    while todo:
        current = todo.pop()
        walked += 1
        if walked > max_cgroups:
            return MemberDamage(directory, "truncated", f"more than {max_cgroups} cgroups below it")
        members = _members_of(current)
        if isinstance(members, MemberDamage):
            if current != directory and not os.path.isdir(current):
                continue  # removed since it was listed
            return members
        found.update(members)
        if len(found) > max_pids:
            return MemberDamage(directory, "truncated", f"more than {max_pids} pids in it")
        try:
            with os.scandir(current) as entries:
                todo.extend(entry.path for entry in entries if entry.is_dir(follow_symlinks=False))
        except OSError as error:
            if current == directory or os.path.isdir(current):
                return MemberDamage(
                    current, "unreadable", f"cannot list: {error.strerror or error}"
                )
    found.discard(0)
    return tuple(sorted(found))
