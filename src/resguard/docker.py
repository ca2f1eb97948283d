"""Docker containers: fast stats, memory limits and duplicate services.

``docker stats --no-stream`` takes about 2 s and the SDK's ``container.stats(stream=False)``
about 1.75 s per container, because the engine waits for a second CPU sample. A monitor
cannot wait that long, so :class:`Containers` asks the engine only for the list of running
containers (one quick call) and reads each container's numbers from its cgroup files when
the engine runs on this machine (cgroup v1 ``memory/docker/<id>``, the systemd driver's
``system.slice/docker-<id>.scope``, cgroup v2 alike). Containers whose cgroup is not found
here (a remote engine, Docker Desktop's VM) are asked through the API, all at once, with the
engine's one-shot stats. Both ways give the same numbers:

- ``memory_usage`` is the cgroup's usage, ``memory_used`` the working set (usage minus
  inactive file cache, as ``docker stats`` and the kubelet count it);
- ``memory_limit`` is ``None`` when the container has no limit of its own (the engine then
  reports the host's memory, which is not a limit of the container);
- ``cpu_percent`` (100 per full core) is measured between two calls on the same
  :class:`Containers`, so the first call has ``None`` for it.

Every failure of the engine (down, socket missing, a socket that accepts but never
answers, a refused request) raises :class:`resguard.DockerError`; the SDK's exceptions
never leak. Each request to the engine ends within ``timeout_s`` whatever the engine does
(no answer, or an answer dripped one byte at a time), so a call against a dead or hung
engine raises within ``timeout_s`` (its first request fails; a call makes a few requests
when the engine answers). A request past its deadline is abandoned in its thread; while
it is still stuck, later calls fail at once. The Monitor source
turns that into ``containers = None`` with one warning. Nothing here stops a container
unless :meth:`Containers.stop` is called.

**Sizes.** :meth:`Containers.set_limit` hands sizes to Docker, so it reads a size string
the way ``docker update --memory`` does (go-units ``RAMInBytes``): case-insensitive,
``b``, ``k``/``kb``/``kib``, ``m``/``mb``/``mib``, ``g``, ``t``, ``p`` all binary
(``"512MB"`` is 512 MiB = 536,870,912 bytes), a fraction truncated to whole bytes.
Everywhere else resguard's own convention holds (``MB`` = 10**6, ``MiB`` = 2**20).

Needs the optional ``docker`` package: ``pip install 'resguard[docker]'``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TextIO, TypeVar, cast

try:
    import docker as _sdk
    import docker.errors as _sdk_errors
    import docker.utils as _sdk_utils
    import requests.exceptions as _requests_errors
except ImportError as _exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError(
        "resguard.docker needs the 'docker' package; install it with "
        "pip install 'resguard[docker]'",
        name=_exc.name,
    ) from _exc

import attrs

from resguard._errors import DockerError, InvalidType, InvalidValue
from resguard._modules.clock import Clock, monotonic
from resguard._modules.render import ValueMixin
from resguard._probes import cgroup as _cgroup
from resguard._probes.files import read_text
from resguard.snapshot import ContainersInfo, ContainerStats
from resguard.units import format_bytes, named, parse_duration

__all__ = [
    "ContainerLimits",
    "ContainerRef",
    "Containers",
    "ContainersSource",
    "Duplicate",
    "cli",
    "docker_bytes",
    "find_duplicates",
]

Method = Literal["auto", "cgroup", "api"]
_METHODS = ("auto", "cgroup", "api")
_T = TypeVar("_T")
_R = TypeVar("_R")

_COMPOSE_PROJECT = "com.docker.compose.project"
_COMPOSE_SERVICE = "com.docker.compose.service"
_API_TRIES = 3  # an engine under load now and then answers a stats request with nothing
_ONE_SHOT_API = "1.41"  # the engine answers stats without waiting for a second CPU sample


# ---------------------------------------------------------------------------------------
# values


@attrs.frozen(slots=True)
class ContainerRef(ValueMixin):
    """A container named in a report: who it is, not what it uses."""

    id: str
    name: str
    image: str
    image_id: str
    status: str
    created: float  # epoch seconds
    compose_project: str | None = None
    compose_service: str | None = None


@attrs.frozen(slots=True)
class Duplicate(ValueMixin):
    """Containers that run the same service more than once.

    ``reason`` is ``"image"`` (the same image outside one compose project) or
    ``"compose service"`` (the same service name under two or more compose projects);
    ``key`` is the image or service name. ``containers`` are oldest first.
    """

    reason: str
    key: str
    containers: tuple[ContainerRef, ...]


@attrs.frozen(slots=True)
class ContainerLimits(ValueMixin):
    """A container's limits as the engine holds them (what ``docker update`` changes).

    ``memory_limit`` is ``None`` without a limit; ``memswap_limit`` is memory plus swap,
    ``None`` when swap is not limited; ``cpus`` is in cores; ``pids_limit`` ``None`` = none.
    """

    id: str
    name: str
    image: str
    memory_limit: int | None
    memswap_limit: int | None
    cpus: float | None
    pids_limit: int | None

    @property
    def has_memory_limit(self) -> bool:
        """Whether the container cannot grow past a memory limit of its own."""
        return self.memory_limit is not None


@attrs.frozen(slots=True)
class _CgroupDirs:
    """Where one container's cgroup files are on this machine."""

    version: str  # "v1" or "v2"
    memory: str
    cpu: str | None
    pids: str | None


@attrs.frozen(slots=True)
class _Reading:
    """One container's raw numbers from either path, before CPU percent is derived."""

    memory_usage: int
    memory_used: int
    memory_limit: int | None
    cpu_ns: int | None
    pids: int | None


# ---------------------------------------------------------------------------------------
# error translation at the boundary


_ENGINE_ERRORS: tuple[type[Exception], ...] = (
    _sdk_errors.DockerException,
    _requests_errors.RequestException,
    OSError,
    ValueError,  # requests' JSONDecodeError: an empty or cut-off answer
)


_ADDRESS = re.compile(r" (?:object )?at 0x[0-9a-fA-F]+")


def _said(exc: BaseException) -> str:
    """The exception's text without object addresses (``<... object at 0x7f…>``), so the
    same fault reads the same on every call and is logged once."""
    return _ADDRESS.sub("", str(exc))


@contextlib.contextmanager
def _engine(what: str) -> Iterator[None]:
    """Turn the SDK's and requests' exceptions into :class:`DockerError` naming *what*."""
    try:
        yield
    except DockerError:
        raise
    except _sdk_errors.NotFound as exc:
        raise DockerError(
            f"{what}: no such container or image "
            f"({_said(exc) if exc.explanation is None else exc.explanation})"
        ) from exc
    except _sdk_errors.APIError as exc:
        raise DockerError(
            f"{what}: the Docker engine refused: "
            f"{_said(exc) if exc.explanation is None else exc.explanation}"
        ) from exc
    except _ENGINE_ERRORS as exc:
        if _timed_out(exc):
            raise DockerError(
                f"{what}: the Docker engine did not answer in time ({_said(exc)}); is dockerd hung?"
            ) from exc
        if isinstance(exc, json.JSONDecodeError):  # an empty or cut-off answer
            raise DockerError(
                f"{what}: the Docker engine's answer was not JSON ({_said(exc)})"
            ) from exc
        raise DockerError(
            f"{what}: the Docker engine is not reachable ({_said(exc)}); is "
            "dockerd running, and does DOCKER_HOST point at it?"
        ) from exc


def _deadline_passed(what: str, deadline_s: float) -> DockerError:
    return DockerError(
        f"{what}: the Docker engine did not answer in time (the whole answer "
        f"took past the {deadline_s:g} s deadline); is dockerd hung?"
    )


def _timed_out(exc: BaseException) -> bool:
    """Whether a request timed out (the SDK wraps some in an exception of its own)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, _requests_errors.Timeout):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# ---------------------------------------------------------------------------------------
# sizes as Docker reads them

_DOCKER_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+) ?(?P<unit>[a-zA-Z]*)")
_DOCKER_UNITS = {"": 1, "b": 1}
for _power, _prefix in enumerate("kmgtp", start=1):
    for _suffix in ("", "b", "ib"):
        _DOCKER_UNITS[_prefix + _suffix] = 1024**_power
_DOCKER_HINT = (
    "expected a size as docker reads it: a number and k, m, g, t or p (binary, "
    "case-insensitive, optional b or ib: '512m', '512MB', '2GiB'), or bytes"
)


def docker_bytes(value: object, what: str = "size") -> int:
    """Bytes from *value* read the way Docker reads ``--memory`` (go-units ``RAMInBytes``).

    A string is a non-negative number, one optional space and an optional unit: ``b``;
    ``k``, ``m``, ``g``, ``t``, ``p``, each alone or followed by ``b`` or ``ib``, any case,
    all **binary** (``"512MB"`` = 512 MiB); a fraction is truncated to whole bytes after
    the unit is applied. An int is bytes. Anything else raises InvalidValue/InvalidType
    quoting *value* as given.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidType(f"{what}={value!r} is not a size; {_DOCKER_HINT}")
    if isinstance(value, str):
        match = _DOCKER_SIZE.fullmatch(value)
        unit = match.group("unit").lower() if match else ""
        if match is None or unit not in _DOCKER_UNITS:
            raise InvalidValue(f"{what}={value!r} is not a size; {_DOCKER_HINT}")
        from fractions import Fraction

        return int(Fraction(match.group("number")) * _DOCKER_UNITS[unit])
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise InvalidValue(f"{what}={value!r} is not a whole number of bytes; {_DOCKER_HINT}")
    number = int(value)
    if number < 0:
        raise InvalidValue(f"{what}={value!r} is below 0 bytes; {_DOCKER_HINT}")
    return number


# ---------------------------------------------------------------------------------------
# cgroup files


def _v1_mount(root: str, controller: str) -> str | None:
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


class _CgroupFinder:
    """Finds containers' cgroup directories by id; mounts are looked up once."""

    def __init__(self, root: str) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._found: dict[str, _CgroupDirs] = {}
        controllers = read_text(os.path.join(root, "cgroup.controllers"))
        if controllers is not None and "memory" in controllers.split():
            self.version = "v2"
            self._memory: str | None = root
            self._cpu: str | None = root
            self._pids: str | None = root
        else:
            self.version = "v1"
            self._memory = _v1_mount(root, "memory")
            self._cpu = _v1_mount(root, "cpuacct")
            self._pids = _v1_mount(root, "pids")

    @staticmethod
    def _relatives(container_id: str) -> tuple[str, ...]:
        # cgroupfs driver, systemd driver; the same names on v1 and v2.
        return (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope")

    def find(self, container_id: str) -> _CgroupDirs | None:
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
            found = _CgroupDirs(
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


def _cpu_ns(dirs: _CgroupDirs) -> int | None:
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


def _read_cgroup(dirs: _CgroupDirs, host_total: int | None) -> _Reading | None:
    """A container's numbers from its cgroup files, or ``None`` when they are gone."""
    memory = _cgroup.read_memory(dirs.memory, dirs.version)  # the one read of memory files
    if memory is None:
        return None
    pids = _int(read_text(dirs.pids + "/pids.current")) if dirs.pids else None
    return _Reading(
        memory.usage, memory.working_set, _own_limit(memory.limit, host_total), _cpu_ns(dirs), pids
    )


def _own_limit(limit: int | None, host_total: int | None) -> int | None:
    """A limit at or above the host's memory is no limit of the container's own."""
    if limit is None or limit <= 0:
        return None
    if host_total and limit >= host_total:
        return None
    return limit


def _read_api(data: Mapping[str, Any], host_total: int | None) -> _Reading | None:
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
    return _Reading(
        usage,
        used,
        _own_limit(memory.get("limit"), host_total),
        cpu if isinstance(cpu, int) else None,
        pids if isinstance(pids, int) else None,
    )


# ---------------------------------------------------------------------------------------
# the public object


def _container_id(container: object) -> str:
    if isinstance(container, str):
        if not container:
            raise InvalidValue("'' is not a container; give a name, an id or ContainerStats")
        return container
    ident = getattr(container, "id", None)
    if isinstance(ident, str) and ident:
        return ident
    raise InvalidType(
        f"{container!r} is not a container; give a name, an id, "
        "ContainerStats, ContainerLimits or ContainerRef"
    )


def _labels(entry: Mapping[str, Any]) -> Mapping[str, str]:
    labels = entry.get("Labels")
    return labels if isinstance(labels, dict) else {}


def _name(entry: Mapping[str, Any]) -> str:
    names = entry.get("Names") or []
    return str(names[0]).lstrip("/") if names else str(entry.get("Id", ""))[:12]


def _swap_argument(memswap: object) -> int | None:
    if memswap is None:
        return None
    if isinstance(memswap, bool):
        raise InvalidType(f"memswap={memswap!r} is not a size; give e.g. '4GiB', 'unlimited' or -1")
    if memswap in (-1, "-1", "unlimited"):
        return -1
    return docker_bytes(memswap, "memswap")


def _timeout(value: object, what: str, *, zero: bool = False) -> float:
    if isinstance(value, bool):
        raise InvalidType(f"{what}={value!r} must be seconds (a number)")
    seconds = named(what, parse_duration, value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        raise InvalidValue(
            f"{what}={value!r} must be a finite number of seconds "
            f"{'at least' if zero else 'above'} 0"
        )
    return seconds


class Containers:
    """The running containers of one Docker engine: stats, limits, duplicates.

    *client* is a ``docker.DockerClient``; without one, the engine at *base_url*
    (``"unix:///var/run/docker.sock"``, ``"tcp://host:2375"``) or else the environment's
    (``DOCKER_HOST`` or the local socket) is used, connected on first use so that building
    this object never fails. *method* ``"auto"`` reads cgroup files where it can and asks
    the API for the rest; ``"cgroup"`` and ``"api"`` force one path (tests, comparisons).
    *timeout_s* bounds each request to the engine (seconds; a client passed in keeps its
    own timeout); *max_workers* API requests run at once
    (the engine answers one-shot stats on its 1 s collection tick, so the API path takes
    about 1 s per *max_workers* containers; keep it at most the client's connection pool).
    """

    def __init__(
        self,
        client: Any = None,
        *,
        base_url: str | None = None,
        method: Method = "auto",
        timeout_s: float = 10.0,
        cgroup_root: str = "/sys/fs/cgroup",
        max_workers: int = 10,
        clock: Clock = monotonic,
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
        timeout = _timeout(timeout_s, "timeout_s")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise InvalidType(f"max_workers={max_workers!r} must be a whole number")
        if max_workers < 1:
            raise InvalidValue(f"max_workers={max_workers!r} must be at least 1")
        if not isinstance(cgroup_root, (str, os.PathLike)):
            raise InvalidType(f"cgroup_root={cgroup_root!r} must be a directory path")
        if not callable(clock):
            raise InvalidType(f"clock={clock!r} must be a callable returning seconds")
        self._client = client
        self._own_client = client is None
        self._base_url = base_url
        self._method = method
        self._timeout_s = timeout
        self._cgroup_root = os.fspath(cgroup_root)
        self._max_workers = max_workers
        self._clock = clock
        self._lock = threading.Lock()
        self._finder: _CgroupFinder | None = None
        self._host_total: int | None = None
        self._one_shot: bool | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._cpu_prev: dict[str, tuple[int, float]] = {}
        self._stuck: list[threading.Thread] = []

    # -- plumbing ------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``docker.DockerClient`` in use (connected on first use)."""
        with self._lock:
            if self._client is not None:
                return self._client
        pool = max(10, self._max_workers)

        def connect() -> Any:
            if self._base_url is not None:
                return _sdk.DockerClient(
                    base_url=self._base_url,
                    max_pool_size=pool,
                    timeout=self._timeout_s,  # type: ignore[arg-type]  # float works
                )
            return _sdk.from_env(max_pool_size=pool, timeout=self._timeout_s)  # type: ignore[arg-type]

        client = self._call("connecting to the Docker engine", connect)
        with self._lock:
            current: Any = self._client
            if current is None:
                self._client = current = client
        if current is not client:
            with contextlib.suppress(Exception):  # another thread connected meanwhile
                client.close()
        return current

    def _call(self, what: str, fn: Callable[[], _R], extra_s: float = 0.0) -> _R:
        """``fn()``, one request to the engine, ended by a deadline of ``timeout_s`` (a
        client passed in: its own timeout; plus *extra_s*) for the whole request; its
        errors as :class:`DockerError` naming *what*.

        The SDK's timeout bounds each socket read, so an engine that drips its answer one
        byte at a time would stretch it for ever: the request runs in a helper thread that
        is abandoned at the deadline (it ends when the engine stops or finishes). While
        such a request is still stuck, further calls fail at once rather than leaving one
        more stuck thread each.
        """
        deadline_s = self._timeout_s + extra_s
        if not self._own_client:  # a client passed in: its own timeout is the deadline
            given = getattr(getattr(self._client, "api", None), "timeout", None)
            if isinstance(given, (int, float)) and not isinstance(given, bool) and given > 0:
                deadline_s = float(given) + extra_s
        with self._lock:
            self._stuck = [thread for thread in self._stuck if thread.is_alive()]
            if self._stuck:
                raise DockerError(
                    f"{what}: the Docker engine did not answer in time (an "
                    "earlier request is still unanswered past its deadline); "
                    "is dockerd hung?"
                )
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append((True, fn()))
            except BaseException as exc:  # handed to the caller below
                outcome.append((False, exc))

        thread = threading.Thread(target=run, name="resguard-docker-request", daemon=True)
        thread.start()
        thread.join(deadline_s)
        if not outcome:
            with self._lock:
                self._stuck.append(thread)
            raise _deadline_passed(what, deadline_s)
        done, value = outcome[0]
        if done:
            return cast("_R", value)
        with _engine(what):
            raise value

    def _map(self, fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """*fn* over *items*, concurrently when there is more than one."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self._max_workers, thread_name_prefix="resguard-docker"
                )
            executor = self._executor
        return list(executor.map(fn, items))

    def close(self) -> None:
        """Stop the worker threads and close a client this object opened itself."""
        with self._lock:
            executor, self._executor = self._executor, None
            client = self._client if self._own_client else None
            if client is not None:
                self._client = None
        if executor is not None:
            executor.shutdown(wait=True)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> Containers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _engine_facts(self) -> tuple[int | None, bool]:
        """The engine host's memory (bytes) and whether one-shot stats are supported."""
        if self._one_shot is None:
            client = self.client
            total = self._call(
                "asking the Docker engine for its memory", lambda: client.info().get("MemTotal")
            )
            version = client.api.api_version
            self._host_total = total if isinstance(total, int) and total > 0 else None
            self._one_shot = _sdk_utils.version_gte(version, _ONE_SHOT_API)
        return self._host_total, bool(self._one_shot)

    def _finder_here(self) -> _CgroupFinder:
        if self._finder is None:
            self._finder = _CgroupFinder(self._cgroup_root)
        return self._finder

    def _list(self, *, all: bool = False) -> list[dict[str, Any]]:
        client = self.client
        entries = self._call("listing containers", lambda: client.api.containers(all=all))
        return [entry for entry in entries if isinstance(entry, dict)]

    # -- stats ---------------------------------------------------------------------------

    def stats(self) -> tuple[ContainerStats, ...]:
        """One :class:`ContainerStats` per running container, in the engine's order.

        Raises :class:`DockerError` when the engine cannot be reached.
        """
        entries = self._list()
        host_total, one_shot = self._engine_facts()
        finder = self._finder_here() if self._method != "api" else None
        readings: dict[str, _Reading | None] = {}
        ask: list[str] = []
        for entry in entries:
            container_id = str(entry["Id"])
            dirs = finder.find(container_id) if finder is not None else None
            if dirs is None:
                if self._method == "cgroup":
                    raise DockerError(
                        f"the cgroup files of container {_name(entry)} "
                        f"({container_id[:12]}) are not on this machine"
                    )
                ask.append(container_id)
            else:
                readings[container_id] = _read_cgroup(dirs, host_total)
        if ask:
            client = self.client

            def fetch(container_id: str) -> _Reading | None:
                for attempt in range(_API_TRIES):
                    try:
                        data = self._call(
                            f"reading stats of container {container_id[:12]}",
                            functools.partial(
                                client.api.stats, container_id, stream=False, one_shot=True
                            )
                            if one_shot
                            else functools.partial(client.api.stats, container_id, stream=False),
                        )
                    except DockerError as exc:
                        if isinstance(exc.__cause__, _sdk_errors.NotFound):
                            return None  # it stopped between the list and the read
                        if not isinstance(exc.__cause__, ValueError) or attempt == _API_TRIES - 1:
                            raise
                        continue  # a busy engine sometimes sends an empty answer
                    return _read_api(data, host_total)
                return None  # not reached: the last attempt returns or raises

            readings.update(zip(ask, self._map(fetch, ask), strict=True))
        if finder is not None:
            finder.forget(readings)
        now_s = self._clock()
        result = []
        with self._lock:
            previous = self._cpu_prev
            self._cpu_prev = {}
            for entry in entries:
                container_id = str(entry["Id"])
                reading = readings.get(container_id)
                if reading is None:
                    continue  # gone between the list and the read
                cpu_percent = None
                if reading.cpu_ns is not None:
                    self._cpu_prev[container_id] = (reading.cpu_ns, now_s)
                    before = previous.get(container_id)
                    if before is not None and now_s > before[1]:
                        delta_ns = max(reading.cpu_ns - before[0], 0)
                        cpu_percent = delta_ns / 1e9 / (now_s - before[1]) * 100.0
                result.append(self._stats_value(entry, reading, cpu_percent))
        return tuple(result)

    @staticmethod
    def _stats_value(
        entry: Mapping[str, Any], reading: _Reading, cpu_percent: float | None
    ) -> ContainerStats:
        labels = _labels(entry)
        limit = reading.memory_limit
        return ContainerStats(
            id=str(entry["Id"]),
            name=_name(entry),
            image=str(entry.get("Image", "")),
            status=str(entry.get("State", "")),
            memory_usage=reading.memory_usage,
            memory_used=reading.memory_used,
            memory_limit=limit,
            memory_percent=reading.memory_used / limit * 100.0 if limit else None,
            cpu_percent=cpu_percent,
            pids=reading.pids,
            compose_project=labels.get(_COMPOSE_PROJECT),
            compose_service=labels.get(_COMPOSE_SERVICE),
        )

    def info(self) -> ContainersInfo:
        """The running containers as the judge layer sees them (``containers.memory.total``)."""
        return ContainersInfo.from_items(self.stats())

    def as_source(self, name: str = "containers") -> ContainersSource:
        """A monitor source that puts :meth:`info` into each snapshot as ``containers``."""
        return ContainersSource(self, name=name)

    # -- limits --------------------------------------------------------------------------

    def _limits_of(self, container_id: str) -> ContainerLimits:
        client = self.client
        data = self._call(
            f"inspecting container {container_id[:12]}",
            lambda: client.api.inspect_container(container_id),
        )
        host = data.get("HostConfig") or {}
        memory = host.get("Memory") or 0
        memswap = host.get("MemorySwap") or 0
        nano_cpus = host.get("NanoCpus") or 0
        quota, period = host.get("CpuQuota") or 0, host.get("CpuPeriod") or 0
        cpus = (
            nano_cpus / 1e9
            if nano_cpus > 0
            else quota / period
            if quota > 0 and period > 0
            else None
        )
        pids_limit = host.get("PidsLimit")
        return ContainerLimits(
            id=str(data.get("Id", container_id)),
            name=str(data.get("Name", "")).lstrip("/"),
            image=str((data.get("Config") or {}).get("Image", "")),
            memory_limit=memory if memory > 0 else None,
            memswap_limit=memswap if memswap > 0 else None,
            cpus=cpus,
            pids_limit=pids_limit if isinstance(pids_limit, int) and pids_limit > 0 else None,
        )

    def limits(self, *, all: bool = False) -> tuple[ContainerLimits, ...]:
        """Running containers without a memory limit (every running one with ``all=True``)."""
        ids = [str(entry["Id"]) for entry in self._list()]

        def one(container_id: str) -> ContainerLimits | None:
            try:
                return self._limits_of(container_id)
            except DockerError as exc:
                if isinstance(exc.__cause__, _sdk_errors.NotFound):
                    return None  # removed since the list
                raise

        found = [item for item in self._map(one, ids) if item is not None]
        return tuple(item for item in found if all or not item.has_memory_limit)

    def set_limit(
        self,
        container: str | ContainerStats | ContainerLimits | ContainerRef,
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
        container_id = _container_id(container)
        if memory is None and memswap is None:
            raise InvalidValue("set_limit needs memory= or memswap= (e.g. memory='2GiB')")
        memory_bytes = docker_bytes(memory, "memory") if memory is not None else None
        if memory_bytes is not None and memory_bytes <= 0:
            raise InvalidValue(f"memory={memory!r} must be above 0 bytes")
        memswap_bytes = _swap_argument(memswap)
        if memory_bytes is not None and memswap_bytes is None:
            before = self._limits_of(container_id)
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
        self._call(
            f"updating the limits of container {container_id[:12]}",
            lambda: client.api.update_container(
                container_id, mem_limit=memory_bytes, memswap_limit=memswap_bytes
            ),
        )
        return self._limits_of(container_id)

    # -- duplicates and stopping ---------------------------------------------------------

    def _refs(self, *, all: bool = False) -> list[ContainerRef]:
        refs = []
        for entry in self._list(all=all):
            labels = _labels(entry)
            created = entry.get("Created")
            refs.append(
                ContainerRef(
                    id=str(entry["Id"]),
                    name=_name(entry),
                    image=str(entry.get("Image", "")),
                    image_id=str(entry.get("ImageID", "")),
                    status=str(entry.get("State", "")),
                    created=float(created) if isinstance(created, (int, float)) else 0.0,
                    compose_project=labels.get(_COMPOSE_PROJECT),
                    compose_service=labels.get(_COMPOSE_SERVICE),
                )
            )
        return refs

    def duplicates(self, *, all: bool = False) -> tuple[Duplicate, ...]:
        """Services that run twice: report only, nothing is stopped.

        Two running containers (all containers with ``all=True``) are duplicates when they
        come from the same image, unless both belong to one compose project (a project's
        own replicas and sibling services are on purpose), or when they are the same
        compose service under two projects.
        """
        return find_duplicates(self._refs(all=all))

    def stop(
        self,
        container: str | ContainerStats | ContainerLimits | ContainerRef,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        """Stop one container (``docker stop``): SIGTERM, then SIGKILL after *timeout_s*."""
        grace_s = _timeout(timeout_s, "timeout_s", zero=True)
        container_id = _container_id(container)
        client = self.client
        grace = max(0, math.ceil(grace_s))
        # the engine answers once the container stopped: after up to the grace period
        self._call(
            f"stopping container {container_id[:12]}",
            lambda: client.api.stop(container_id, timeout=grace),
            extra_s=grace,
        )


def find_duplicates(refs: Iterable[ContainerRef]) -> tuple[Duplicate, ...]:
    """The duplicate groups among *refs* (the rule of :meth:`Containers.duplicates`)."""
    by_image: dict[str, list[ContainerRef]] = {}
    by_service: dict[str, list[ContainerRef]] = {}
    for ref in refs:
        by_image.setdefault(ref.image_id or ref.image, []).append(ref)
        if ref.compose_service and ref.compose_project:
            by_service.setdefault(ref.compose_service, []).append(ref)
    groups: list[Duplicate] = []
    seen: set[frozenset[str]] = set()

    def add(reason: str, key: str, members: list[ContainerRef]) -> None:
        ids = frozenset(member.id for member in members)
        if ids in seen:
            return
        seen.add(ids)
        members.sort(key=lambda member: (member.created, member.name))
        groups.append(Duplicate(reason, key, tuple(members)))

    # The more telling reason first: a group found both ways is reported once.
    for service, members in by_service.items():
        if len({member.compose_project for member in members}) >= 2:
            add("compose service", service, members)
    for members in by_image.values():
        owners = {member.compose_project or "container:" + member.id for member in members}
        if len(members) >= 2 and len(owners) >= 2:
            add("image", members[0].image, members)
    return tuple(groups)


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


# ---------------------------------------------------------------------------------------
# command line


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _size(value: int | None) -> str:
    return "none" if value is None else format_bytes(value)


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")


def cli(
    command: str,
    *,
    as_json: bool,
    out: TextIO,
    err: TextIO | None = None,
    containers: Containers | None = None,
    cpu_sample_s: float = 0.5,
) -> int:
    """``resguard docker stats|limits``: print a table (or JSON) and return the exit code.

    0 on success; 2 when the engine cannot be reached (message on *err*, default stderr).
    ``stats`` reads twice, *cpu_sample_s* apart, to show CPU percent.
    """
    err = err if err is not None else sys.stderr
    if command not in ("stats", "limits"):
        err.write(f"resguard docker: unknown command {command!r}; use stats or limits\n")
        return 2
    own = containers is None
    engine = containers if containers is not None else Containers()
    try:
        if command == "stats":
            engine.stats()
            if cpu_sample_s > 0:
                time.sleep(cpu_sample_s)
            info = engine.info()
            if as_json:
                json.dump(info.to_dict(), out, indent=2)
                out.write("\n")
                return 0
            items = sorted(info.items, key=lambda item: item.memory_used, reverse=True)
            rows: list[tuple[str, ...]] = [
                ("CONTAINER ID", "NAME", "IMAGE", "MEM USED", "LIMIT", "MEM %", "CPU %", "PIDS")
            ]
            rows += [
                (
                    item.id[:12],
                    item.name,
                    item.image,
                    format_bytes(item.memory_used),
                    _size(item.memory_limit),
                    _percent(item.memory_percent),
                    _percent(item.cpu_percent),
                    "-" if item.pids is None else str(item.pids),
                )
                for item in items
            ]
            _table(rows, out)
            out.write(f"{len(items)} running, {format_bytes(info.memory.total)} in total\n")
            return 0
        limits = engine.limits(all=True)
        if as_json:
            json.dump([item.to_dict() for item in limits], out, indent=2)
            out.write("\n")
            return 0
        rows = [("CONTAINER ID", "NAME", "IMAGE", "MEMORY", "MEM+SWAP", "CPUS", "PIDS")]
        rows += [
            (
                item.id[:12],
                item.name,
                item.image,
                _size(item.memory_limit),
                "unlimited" if item.memswap_limit is None else format_bytes(item.memswap_limit),
                "none" if item.cpus is None else f"{item.cpus:g}",
                "none" if item.pids_limit is None else str(item.pids_limit),
            )
            for item in sorted(limits, key=lambda item: (item.has_memory_limit, item.name))
        ]
        _table(rows, out)
        unlimited = [item.name for item in limits if not item.has_memory_limit]
        if unlimited:
            out.write(
                f"{len(unlimited)} of {len(limits)} running containers have no memory "
                f"limit: {', '.join(unlimited)} (set one with "
                "`docker update --memory 2g --memory-swap 2g NAME`)\n"
            )
        else:
            out.write(f"all {len(limits)} running containers have a memory limit\n")
        return 0
    except DockerError as exc:
        err.write(f"resguard docker {command}: {exc}\n")
        return 2
    finally:
        if own:
            engine.close()
