"""The public :class:`Containers` (stats, limits, duplicates, stop) and its monitor source."""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Mapping
from typing import Any, Literal

import docker as _sdk
import docker.utils as _sdk_utils

from resguard._errors import DockerError, InvalidType, InvalidValue
from resguard._modules.clock import Clock, monotonic
from resguard._modules.log import get_logger
from resguard.docker._cgroups import CgroupFinder, Reading, cpu_percent, read_api, read_cgroup
from resguard.docker._engine import Engine, is_not_found
from resguard.docker._values import (
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    UNSET,
    ContainerLimits,
    ContainerRef,
    Duplicate,
    Unset,
    container_id,
    docker_bytes,
    entry_name,
    find_duplicates,
    labels,
    renamed_timeout,
    seconds,
    swap_argument,
)
from resguard.snapshot import ContainersInfo, ContainerStats

__all__ = ["Containers", "ContainersSource", "Method"]

Method = Literal["auto", "cgroup", "api"]
_METHODS = ("auto", "cgroup", "api")
_API_TRIES = 3  # an engine under load now and then answers a stats request with nothing
_ONE_SHOT_API = "1.41"  # the engine answers stats without waiting for a second CPU sample

Container = str | ContainerStats | ContainerLimits | ContainerRef


_said_no_cgroups = False  # logged once per process


def _say_no_cgroup_files(root: str) -> None:
    """Say once that stats come from the engine here, not from cgroup files (Docker
    Desktop on macOS and Windows runs the containers in a VM)."""
    global _said_no_cgroups
    if not _said_no_cgroups:
        _said_no_cgroups = True
        get_logger("resguard.docker").info(
            "container cgroup files are not available on this platform (no memory cgroup "
            "under %s); using the engine's stats",
            root,
        )


class Containers:
    """The running containers of one Docker engine: stats, limits, duplicates.

    *client* is a ``docker.DockerClient``; without one, the engine at *base_url*
    (``"unix:///var/run/docker.sock"``, ``"tcp://host:2375"``) or else the environment's
    (``DOCKER_HOST`` or the local socket) is used, connected on first use so that building
    this object never fails. *method* ``"auto"`` reads cgroup files where it can and asks
    the API for the rest; ``"cgroup"`` and ``"api"`` force one path (tests, comparisons).
    *timeout* bounds each request to the engine (a duration, ``"10s"`` or seconds; default
    10 s; a client passed in keeps its own timeout; the old ``timeout_s=`` is still
    accepted, with a DeprecationWarning); *max_workers* API requests run at once
    (the engine answers one-shot stats on its 1 s collection tick, so the API path takes
    about 1 s per *max_workers* containers; keep it at most the client's connection pool).
    """

    def __init__(
        self,
        client: Any = None,
        *,
        base_url: str | None = None,
        method: Method = "auto",
        timeout: float | str | None = None,
        cgroup_root: str = "/sys/fs/cgroup",
        max_workers: int = 10,
        clock: Clock = monotonic,
        timeout_s: float | str | Unset = UNSET,
    ) -> None:
        if client is not None and not isinstance(client, _sdk.DockerClient):
            raise InvalidType(f"client={client!r} must be a docker.DockerClient")
        if client is not None and base_url is not None:
            raise InvalidValue("give either client= or base_url=, not both")
        if base_url is not None and (not isinstance(base_url, str) or not base_url.strip()):
            raise InvalidValue(
                f"base_url={base_url!r} is not an engine address; expected "
                "e.g. 'unix:///var/run/docker.sock' or 'tcp://127.0.0.1:2375'"
            )
        if not isinstance(method, str) or method not in _METHODS:
            raise InvalidValue(f"method={method!r} is not one of {', '.join(_METHODS)}")
        given, keyword = renamed_timeout(timeout, timeout_s, "Containers", default_s=10.0)
        timeout_seconds = seconds(given, keyword)
        if isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise InvalidType(f"max_workers={max_workers!r} must be a whole number")
        if max_workers < 1:
            raise InvalidValue(f"max_workers={max_workers!r} must be at least 1")
        if not isinstance(cgroup_root, (str, os.PathLike)):
            raise InvalidType(f"cgroup_root={cgroup_root!r} must be a directory path")
        if not callable(clock):
            raise InvalidType(f"clock={clock!r} must be a callable returning seconds")
        self._engine = Engine(client, base_url, timeout_seconds, max_workers)
        self._method = method
        self._cgroup_root = os.fspath(cgroup_root)
        self._clock = clock
        self._lock = threading.Lock()
        self._finder: CgroupFinder | None = None
        self._host_total: int | None = None
        self._one_shot: bool | None = None
        self._cpu_prev: dict[str, tuple[int, float]] = {}

    # -- plumbing ------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``docker.DockerClient`` in use (connected on first use)."""
        return self._engine.client

    def close(self) -> None:
        """Stop the worker threads and close a client this object opened itself."""
        self._engine.close()

    def __enter__(self) -> Containers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _engine_facts(self) -> tuple[int | None, bool]:
        """The engine host's memory (bytes) and whether one-shot stats are supported."""
        if self._one_shot is None:
            client = self.client
            total = self._engine.call(
                "asking the Docker engine for its memory", lambda: client.info().get("MemTotal")
            )
            version = client.api.api_version
            self._host_total = total if isinstance(total, int) and total > 0 else None
            self._one_shot = _sdk_utils.version_gte(version, _ONE_SHOT_API)
        return self._host_total, bool(self._one_shot)

    def _list(self, *, all: bool = False) -> list[dict[str, Any]]:
        client = self.client
        entries = self._engine.call("listing containers", lambda: client.api.containers(all=all))
        return [entry for entry in entries if isinstance(entry, dict)]

    # -- stats ---------------------------------------------------------------------------

    def stats(self) -> tuple[ContainerStats, ...]:
        """One :class:`ContainerStats` per running container, in the engine's order.

        Raises :class:`DockerError` when the engine cannot be reached.
        """
        entries = self._list()
        host_total, one_shot = self._engine_facts()
        if self._method != "api" and self._finder is None:
            self._finder = CgroupFinder(self._cgroup_root)
            if not self._finder.available and self._method == "auto":
                _say_no_cgroup_files(self._cgroup_root)
        finder = self._finder if self._method != "api" else None
        readings: dict[str, Reading | None] = {}
        ask: list[str] = []
        for entry in entries:
            ident = str(entry["Id"])
            dirs = finder.find(ident) if finder is not None else None
            if dirs is not None:
                readings[ident] = read_cgroup(dirs, host_total)
            elif self._method == "cgroup":
                where = (
                    "are not on this machine"
                    if finder is None or finder.available
                    else f"are not available on this platform (no memory cgroup under "
                    f"{self._cgroup_root}); use method='auto' or 'api'"
                )
                raise DockerError(
                    f"the cgroup files of container {entry_name(entry)} ({ident[:12]}) {where}"
                )
            else:
                ask.append(ident)
        if ask:
            fetch = functools.partial(self._read_api, host_total=host_total, one_shot=one_shot)
            readings.update(zip(ask, self._engine.map(fetch, ask), strict=True))
        if finder is not None:
            finder.forget(readings)
        return self._with_cpu(entries, readings)

    def _read_api(self, ident: str, *, host_total: int | None, one_shot: bool) -> Reading | None:
        """One container's numbers from the engine's stats (``None``: it is gone)."""
        client = self.client
        extra = {"one_shot": True} if one_shot else {}
        request = functools.partial(client.api.stats, ident, stream=False, **extra)
        for attempt in range(_API_TRIES):
            try:
                data = self._engine.call(f"reading stats of container {ident[:12]}", request)
            except DockerError as exc:
                if is_not_found(exc):
                    return None  # it stopped between the list and the read
                if not isinstance(exc.__cause__, ValueError) or attempt == _API_TRIES - 1:
                    raise
                continue  # a busy engine sometimes sends an empty answer
            return read_api(data, host_total)
        return None  # not reached: the last attempt returns or raises

    def _with_cpu(
        self, entries: list[dict[str, Any]], readings: Mapping[str, Reading | None]
    ) -> tuple[ContainerStats, ...]:
        """The stats of the containers still there, CPU percent measured since the last
        call (``None`` on the first)."""
        now_s = self._clock()
        result = []
        with self._lock:
            previous, self._cpu_prev = self._cpu_prev, {}
            for entry in entries:
                ident = str(entry["Id"])
                reading = readings.get(ident)
                if reading is None:
                    continue  # gone between the list and the read
                if reading.cpu_ns is not None:
                    self._cpu_prev[ident] = (reading.cpu_ns, now_s)
                percent = cpu_percent(reading, previous.get(ident), now_s)
                result.append(_stats_value(entry, reading, percent))
        return tuple(result)

    def info(self) -> ContainersInfo:
        """The running containers as the judge layer sees them (``containers.memory.total``)."""
        return ContainersInfo.from_items(self.stats())

    def as_source(self, name: str = "containers") -> ContainersSource:
        """A monitor source that puts :meth:`info` into each snapshot as ``containers``."""
        return ContainersSource(self, name=name)

    # -- limits --------------------------------------------------------------------------

    def _limits_of(self, ident: str) -> ContainerLimits:
        client = self.client
        data = self._engine.call(
            f"inspecting container {ident[:12]}",
            lambda: client.api.inspect_container(ident),
        )
        return _limits_value(data, ident)

    def limits(self, *, all: bool = False) -> tuple[ContainerLimits, ...]:
        """Running containers without a memory limit (every running one with ``all=True``)."""
        ids = [str(entry["Id"]) for entry in self._list()]

        def one(ident: str) -> ContainerLimits | None:
            try:
                return self._limits_of(ident)
            except DockerError as exc:
                if is_not_found(exc):
                    return None  # removed since the list
                raise

        found = [item for item in self._engine.map(one, ids) if item is not None]
        return tuple(item for item in found if all or not item.has_memory_limit)

    def set_limit(
        self,
        container: Container,
        *,
        memory: int | float | str | None = None,
        memswap: int | float | str | None = None,
    ) -> ContainerLimits:
        """Change a running container's memory limit, like ``docker update --memory``.

        *memory* and *memswap* are sizes read **as Docker reads them** (go-units
        ``RAMInBytes``: case-insensitive, ``k``/``kb``/``kib``, ``m``/``mb``/``mib``, ``g``
        ... all binary, so ``"512MB"`` is 536,870,912 bytes, exactly what
        ``docker update --memory 512MB`` sets), or ints of bytes; *memswap* is memory plus
        swap, ``-1``/``"unlimited"`` for unlimited swap. Without *memswap* the container keeps the
        swap allowance it had (``memswap - memory``, or unlimited swap), so raising the
        memory limit past the old memswap, or limiting a container that had no limit, does
        not fail as ``docker update --memory`` alone does.
        Returns the limits the engine holds afterwards.
        """
        ident = container_id(container)
        if memory is None and memswap is None:
            raise InvalidValue("set_limit needs memory= or memswap= (e.g. memory='2GiB')")
        memory_bytes = docker_bytes(memory, "memory") if memory is not None else None
        if memory_bytes is not None and memory_bytes <= 0:
            raise InvalidValue(f"memory={memory!r} must be above 0 bytes")
        memswap_bytes = swap_argument(memswap)
        if memory_bytes is not None and memswap_bytes is None:
            before = self._limits_of(ident)
            if before.memswap_limit is None:
                memswap_bytes = -1  # swap stays unlimited (the engine refuses it left out)
            else:
                allowance = before.memswap_limit - (before.memory_limit or 0)
                memswap_bytes = memory_bytes + max(allowance, 0)
        if (
            memory_bytes is not None
            and memswap_bytes is not None
            and memswap_bytes != -1
            and memswap_bytes < memory_bytes
        ):
            raise InvalidValue(
                f"memswap={memswap!r} is below memory={memory!r}; memswap is "
                "memory plus swap, so it must be at least the memory limit"
            )
        client = self.client
        self._engine.call(
            f"updating the limits of container {ident[:12]}",
            lambda: client.api.update_container(
                ident, mem_limit=memory_bytes, memswap_limit=memswap_bytes
            ),
        )
        return self._limits_of(ident)

    # -- duplicates and stopping ---------------------------------------------------------

    def duplicates(self, *, all: bool = False) -> tuple[Duplicate, ...]:
        """Services that run twice: report only, nothing is stopped.

        Two running containers (all containers with ``all=True``) are duplicates when they
        come from the same image, unless both belong to one compose project (a project's
        own replicas and sibling services are on purpose), or when they are the same
        compose service under two projects.
        """
        return find_duplicates(_ref_value(entry) for entry in self._list(all=all))

    def stop(
        self,
        container: Container,
        *,
        timeout: float | str | None = None,
        timeout_s: float | str | Unset = UNSET,
    ) -> None:
        """Stop one container (``docker stop``): SIGTERM, then SIGKILL after *timeout* (a
        duration, ``"10s"`` or seconds; default 10 s; 0 kills at once; the old
        ``timeout_s=`` is still accepted, with a DeprecationWarning)."""
        given, keyword = renamed_timeout(timeout, timeout_s, "Containers.stop", default_s=10.0)
        grace_s = seconds(given, keyword, zero=True)
        ident = container_id(container)
        client = self.client
        grace = max(0, math.ceil(grace_s))
        # the engine answers once the container stopped: after up to the grace period
        self._engine.call(
            f"stopping container {ident[:12]}",
            lambda: client.api.stop(ident, timeout=grace),
            extra_s=grace,
        )


def _stats_value(
    entry: Mapping[str, Any], reading: Reading, cpu_percent: float | None
) -> ContainerStats:
    tags = labels(entry)
    limit = reading.memory_limit
    return ContainerStats(
        id=str(entry["Id"]),
        name=entry_name(entry),
        image=str(entry.get("Image", "")),
        status=str(entry.get("State", "")),
        memory_usage=reading.memory_usage,
        memory_used=reading.memory_used,
        memory_limit=limit,
        memory_percent=reading.memory_used / limit * 100.0 if limit else None,
        cpu_percent=cpu_percent,
        pids=reading.pids,
        compose_project=tags.get(COMPOSE_PROJECT),
        compose_service=tags.get(COMPOSE_SERVICE),
    )


def _limits_value(data: Mapping[str, Any], ident: str) -> ContainerLimits:
    """The limits in the engine's ``inspect`` answer."""
    host = data.get("HostConfig") or {}
    memory = host.get("Memory") or 0
    memswap = host.get("MemorySwap") or 0
    nano_cpus = host.get("NanoCpus") or 0
    quota, period = host.get("CpuQuota") or 0, host.get("CpuPeriod") or 0
    cpus = (
        nano_cpus / 1e9 if nano_cpus > 0 else quota / period if quota > 0 and period > 0 else None
    )
    pids_limit = host.get("PidsLimit")
    return ContainerLimits(
        id=str(data.get("Id", ident)),
        name=str(data.get("Name", "")).lstrip("/"),
        image=str((data.get("Config") or {}).get("Image", "")),
        memory_limit=memory if memory > 0 else None,
        memswap_limit=memswap if memswap > 0 else None,
        cpus=cpus,
        pids_limit=pids_limit if isinstance(pids_limit, int) and pids_limit > 0 else None,
    )


def _ref_value(entry: Mapping[str, Any]) -> ContainerRef:
    tags = labels(entry)
    created = entry.get("Created")
    return ContainerRef(
        id=str(entry["Id"]),
        name=entry_name(entry),
        image=str(entry.get("Image", "")),
        image_id=str(entry.get("ImageID", "")),
        status=str(entry.get("State", "")),
        created=float(created) if isinstance(created, (int, float)) else 0.0,
        compose_project=tags.get(COMPOSE_PROJECT),
        compose_service=tags.get(COMPOSE_SERVICE),
    )


class ContainersSource:
    """A monitor source: ``sample()`` returns ``{"containers": ContainersInfo}``.

    It raises :class:`DockerError` when the engine is down; the monitor logs that once
    (``FaultLog``), clears the ``fields`` it fills (no stale numbers) and keeps sampling
    everything else.
    """

    fields = ("containers",)

    def __init__(self, containers: Containers | None = None, *, name: str = "containers") -> None:
        self.name = name
        self.containers = containers if containers is not None else Containers()

    def sample(self) -> dict[str, object]:
        """The containers' numbers for the next snapshot."""
        return {"containers": self.containers.info()}

    def __repr__(self) -> str:
        return f"ContainersSource(name={self.name!r})"
