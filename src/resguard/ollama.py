"""Ollama model management: see loaded models, unload idle ones, load with an admission check.

Ollama's own scheduler evicts by shortest keep-alive (not least recently used) and never
reacts to memory pressure from other programs. :class:`OllamaModels` (and its async twin
:class:`AsyncOllamaModels`), built on the official ``ollama`` client, lets resguard do that:

- ``loaded()`` lists the models in memory (``/api/ps``) as
  :class:`resguard.snapshot.OllamaModelInfo`;
- ``unload(name)`` sends ``keep_alive: 0`` and polls ``/api/ps`` until the model is gone;
- ``unload_idle(min_idle=...)`` unloads models idle for at least that long;
- ``ensure(name)`` loads a model after checking there is room for it (the size Ollama
  reported when it was last loaded, else the ``/api/tags`` disk size times ``size_factor``),
  unloading idle models first when needed;
- ``lazy(name)`` gives a :class:`resguard.LazyModel`, ``uses(name)`` a decorator for model
  calls, ``using(name)`` a context manager that marks a model as in use;
- the object is on the reclaim ladder: under WARNING it unloads idle models, least
  recently used first, before anything is refused;
- ``source()`` is a Monitor source sampling ``{"ollama": (OllamaModelInfo, ...)}``.

**Idle since.** Ollama does not report when a model was last used. resguard derives it
from ``expires_at - keep_alive`` when it knows the keep-alive in force (the one it set
itself, or ``default_keep_alive`` when you tell it the server's ``OLLAMA_KEEP_ALIVE``), and
from its own record of the last call it made through :meth:`OllamaModels.uses` /
``using`` / ``ensure``; it takes the later of the two. A model resguard is using right now
is idle since "now". Otherwise ``idle_since`` is ``None`` (unknown), and such models are
treated as the least recently used ones by the ladder.

**Errors.** Every failure of the server — down, slower than ``timeout``, an HTTP error, a
dropped connection, an answer of the wrong shape — is raised as
:class:`resguard.OllamaError` (``status_code`` set when the server answered, the original
exception as ``__cause__``). The Monitor source and the ladder never raise: they log the
fault once (until it recovers) and carry on.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TextIO, TypeVar

try:
    import httpx
    import ollama
except ImportError as _error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "resguard.ollama needs the 'ollama' package: pip install 'resguard[ollama]'"
    ) from _error

import anyio
import anyio.to_thread

from resguard import reclaim as _reclaim
from resguard._errors import InvalidType, InvalidValue, OllamaError, ResourceExhausted
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard.models import HeadroomSource, LazyModel, ModelPool, machine_headroom_bytes
from resguard.snapshot import OllamaModelInfo
from resguard.units import format_bytes, format_duration, parse_duration

__all__ = ["AsyncOllamaModels", "OllamaError", "OllamaModelInfo", "OllamaModels",
           "OllamaSource", "cli"]

F = TypeVar("F", bound=Callable[..., Any])
_log = get_logger("resguard.ollama")
FOREVER_AFTER_S = 20 * 365.25 * 86400.0  # the ollama CLI's "Forever" threshold
DEFAULT_TIMEOUT_S = 10.0


def canonical(name: str) -> str:
    """Ollama's display form of a model name: lower case with a tag (``llama3.2:latest``)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue(f"{name!r} is not an Ollama model name; expected e.g. 'llama3.2:3b'")
    key = name.strip().lower()
    for prefix in ("registry.ollama.ai/library/", "library/"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    if ":" not in key.rsplit("/", 1)[-1]:
        key += ":latest"
    return key


def _keep_alive_s(value: float | str | None) -> float | None:
    """Seconds (``math.inf`` = forever) from a keep-alive given as seconds or ``"5m"``."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return math.inf
    if isinstance(value, str) and value.strip().startswith("-"):
        return math.inf
    return parse_duration(value)


def _wire_keep_alive(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    return -1.0 if math.isinf(seconds) else seconds


@contextlib.contextmanager
def _boundary(host: str, what: str) -> Iterator[None]:
    """Translate the client's exceptions (protocol §5.1) into OllamaError."""
    try:
        yield
    except ollama.ResponseError as error:
        status = error.status_code if error.status_code > 0 else None
        raise OllamaError(f"Ollama at {host} answered {what} with an error"
                          f"{f' (HTTP {status})' if status else ''}: {error.error}",
                          status_code=status) from error
    except httpx.TimeoutException as error:
        raise OllamaError(f"Ollama at {host} did not answer {what} in time "
                          f"({type(error).__name__})") from error
    except (ConnectionError, httpx.TransportError) as error:
        raise OllamaError(f"cannot reach Ollama at {host} for {what}: "
                          f"{type(error).__name__}: {error}") from error
    except ValueError as error:  # pydantic.ValidationError, json.JSONDecodeError
        raise OllamaError(f"Ollama at {host} answered {what} with something that is not "
                          f"the Ollama API: {type(error).__name__}: {error}") from error


class _State:
    """What resguard knows beyond /api/ps; shared by a sync and an async front end."""

    def __init__(self, host: str, *, keep_alive_s: float | None,
                 default_keep_alive_s: float | None, clock: Callable[[], float]) -> None:
        self.host = host
        self.keep_alive_s = keep_alive_s
        self.default_keep_alive_s = default_keep_alive_s
        self.clock = clock
        self.lock = threading.Lock()
        self.set_keep_alive_s: dict[str, float] = {}
        self.last_used: dict[str, float] = {}
        self.in_use: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.load_s: dict[str, float] = {}
        self.lazies: weakref.WeakValueDictionary[str, LazyModel[str]] = (
            weakref.WeakValueDictionary())
        self.faults = FaultLog(_log)

    def touch(self, name: str) -> None:
        with self.lock:
            self.last_used[name] = self.clock()

    def busy(self, name: str) -> bool:
        lazy = self.lazies.get(name)
        return self.in_use.get(name, 0) > 0 or (lazy is not None and lazy.pinned)

    @contextlib.contextmanager
    def mark_in_use(self, name: str) -> Iterator[None]:
        with self.lock:
            self.in_use[name] = self.in_use.get(name, 0) + 1
        try:
            yield
        finally:
            with self.lock:
                self.in_use[name] -= 1
                if not self.in_use[name]:
                    del self.in_use[name]
                self.last_used[name] = self.clock()

    def info(self, item: Any) -> OllamaModelInfo:
        name = canonical(item.model or item.name or "")
        expires_at = item.expires_at.timestamp() if item.expires_at is not None else None
        size = int(item.size or 0)
        if size:
            self.sizes[name] = size
        fields: dict[str, Any] = {
            "name": name, "size": size, "size_vram": int(item.size_vram or 0),
            "expires_at": expires_at, "idle_since": self.idle_since(name, expires_at),
            "context_length": item.context_length}
        return OllamaModelInfo(**fields)

    def idle_since(self, name: str, expires_at: float | None) -> float | None:
        now = self.clock()
        if self.busy(name):
            return now
        evidence = []
        keep_alive = self.set_keep_alive_s.get(name, self.default_keep_alive_s)
        if (expires_at is not None and keep_alive is not None and math.isfinite(keep_alive)
                and expires_at - now < FOREVER_AFTER_S):
            evidence.append(min(now, expires_at - keep_alive))
        if name in self.last_used:
            evidence.append(self.last_used[name])
        return max(evidence) if evidence else None

    def victims(self, infos: Sequence[OllamaModelInfo], exclude: str | None = None,
                min_idle_s: float = 0.0) -> list[OllamaModelInfo]:
        """Models that may be unloaded, least recently used (unknown first) first."""
        now = self.clock()
        out = [i for i in infos if i.name != exclude and not self.busy(i.name)
               and (min_idle_s <= 0 or (i.idle_since is not None
                                        and now - i.idle_since >= min_idle_s))]
        return sorted(out, key=lambda i: -math.inf if i.idle_since is None else i.idle_since)

    def loaded_as(self, name: str, keep_alive_s: float | None, elapsed_s: float) -> None:
        with self.lock:
            if keep_alive_s is not None:
                self.set_keep_alive_s[name] = keep_alive_s
            elif name not in self.set_keep_alive_s and self.keep_alive_s is not None:
                self.set_keep_alive_s[name] = self.keep_alive_s
            self.load_s[name] = elapsed_s
            self.last_used[name] = self.clock()

    def forget(self, name: str) -> None:
        with self.lock:
            self.set_keep_alive_s.pop(name, None)

    def cost(self) -> float:
        loads = list(self.load_s.values())
        return _reclaim.Cost.MODEL + (sum(loads) / len(loads) if loads else 0.0)


def _host_of(client: Any) -> str:
    return str(client._client.base_url).rstrip("/")


def _refused(name: str, need: int, headroom: int, freed: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"no room to load Ollama model {name!r}: it needs about {format_bytes(need)}, "
        f"{format_bytes(max(headroom + freed, 0))} is free after unloading idle models",
        reason="memory", retry_after=5.0,
        numbers={"size_bytes": need, "headroom_bytes": headroom, "freed_bytes": freed})


class _Common:
    """Parts shared by the sync and async front ends."""

    _state: _State
    guard: HeadroomSource | None
    size_factor: float
    unload_timeout_s: float
    reclaim_min_idle_s: float
    name: str

    def _headroom(self) -> int:
        if self.guard is not None:
            return int(self.guard.headroom_bytes())
        return machine_headroom_bytes()

    @property
    def host(self) -> str:
        return self._state.host

    @property
    def cost(self) -> float:
        """``Cost.MODEL`` plus the mean measured load time in seconds."""
        return self._state.cost()

    def _ka(self, keep_alive: float | str | None) -> float | None:
        seconds = _keep_alive_s(keep_alive)
        return self._state.keep_alive_s if seconds is None else seconds


class OllamaModels(_Common):
    """Manage the models of one Ollama server through the official sync client.

    ``host`` as the ``ollama`` client takes it (``None``: ``$OLLAMA_HOST`` or
    ``127.0.0.1:11434``), or a ready ``client``. ``timeout`` bounds every request
    (seconds). ``keep_alive`` is what resguard asks for when it loads a model (``None``:
    the server's default); ``default_keep_alive`` tells resguard the server's
    ``OLLAMA_KEEP_ALIVE`` so idle times of models loaded by others can be derived.
    ``guard`` supplies the headroom for admission (else a fresh snapshot is read).
    """

    def __init__(self, host: str | None = None, *, client: ollama.Client | None = None,
                 timeout: float | str = DEFAULT_TIMEOUT_S, keep_alive: float | str | None = None,
                 default_keep_alive: float | str | None = None,
                 guard: HeadroomSource | None = None, size_factor: float = 1.25,
                 unload_timeout: float | str = 10.0, reclaim_min_idle: float | str = 0.0,
                 clock: Callable[[], float] = time.time, register: bool = True,
                 _state: _State | None = None) -> None:
        if client is not None and host is not None:
            raise InvalidValue("give either host= or client=, not both")
        if client is not None and not isinstance(client, ollama.Client):
            raise InvalidType(f"client must be an ollama.Client, not {client!r}")
        if guard is not None and not isinstance(guard, HeadroomSource):
            raise InvalidType(f"guard must have headroom_bytes() (a resguard.Guard), not {guard!r}")
        if isinstance(size_factor, bool) or not isinstance(size_factor, (int, float)) or (
                size_factor < 1):
            raise InvalidValue(f"size_factor {size_factor!r} must be a number >= 1")
        self._owns_client = client is None
        self.client = client or ollama.Client(host=host, timeout=parse_duration(timeout))
        self._state = _state or _State(
            _host_of(self.client), keep_alive_s=_keep_alive_s(keep_alive),
            default_keep_alive_s=_keep_alive_s(default_keep_alive), clock=clock)
        self.guard = guard
        self.size_factor = float(size_factor)
        self.unload_timeout_s = parse_duration(unload_timeout)
        self.reclaim_min_idle_s = parse_duration(reclaim_min_idle)
        self.name = f"ollama@{self._state.host}"
        self._closed = False
        if register:
            _reclaim.register(self)

    def close(self) -> None:
        """Take this object off the ladder and close the HTTP client (when resguard made it)."""
        self._closed = True
        _reclaim.unregister(self)
        if self._owns_client:
            self.client._client.close()

    def __enter__(self) -> OllamaModels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def loaded(self) -> tuple[OllamaModelInfo, ...]:
        """The models in memory now (``/api/ps``), longest remaining keep-alive first."""
        with _boundary(self.host, "GET /api/ps"):
            response = self.client.ps()
        return tuple(self._state.info(item) for item in response.models)

    def installed(self) -> dict[str, int]:
        """Installed models and their size on disk in bytes (``/api/tags``)."""
        with _boundary(self.host, "GET /api/tags"):
            response = self.client.list()
        return {canonical(m.model or ""): int(m.size or 0) for m in response.models}

    def estimate_bytes(self, name: str) -> int:
        """Memory *name* takes loaded: as Ollama last reported, else disk size x size_factor."""
        key = canonical(name)
        if key in self._state.sizes:
            return self._state.sizes[key]
        installed = self.installed()
        if key not in installed:
            raise OllamaError(f"model {name!r} is not installed in Ollama at {self.host}",
                              status_code=404)
        return math.ceil(installed[key] * self.size_factor)

    # ------------------------------------------------------------------ unloading
    def unload(self, name: str, *, timeout: float | str | None = None) -> int:
        """Unload *name* and wait until ``/api/ps`` no longer lists it.

        Returns the bytes Ollama reported for it (0 when it was not loaded). Raises
        OllamaError when the server fails or the model is still listed after *timeout*.
        """
        key = canonical(name)
        before = {i.name: i.size for i in self.loaded()}
        with _boundary(self.host, f"unloading {name!r}"):
            self.client.generate(model=name, keep_alive=0)
        self._state.forget(key)
        lazy = self._state.lazies.get(key)
        if lazy is not None:
            lazy._forget()  # its next use loads (and admits) it again
        deadline = time.monotonic() + (self.unload_timeout_s if timeout is None
                                       else parse_duration(timeout))
        delay_s = 0.01
        while key in {i.name for i in self.loaded()}:
            if time.monotonic() >= deadline:
                raise OllamaError(f"Ollama at {self.host} still lists {name!r} after being "
                                  "asked to unload it (is a request still running on it?)")
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.2)
        _log.info("unloaded Ollama model %s (%s)", key, format_bytes(before.get(key, 0)))
        return before.get(key, 0)

    def unload_idle(self, min_idle: float | str) -> list[str]:
        """Unload the models idle for at least *min_idle*; return their names."""
        min_idle_s = parse_duration(min_idle)
        done = []
        for info in self._state.victims(self.loaded(), min_idle_s=max(min_idle_s, 1e-9)):
            self.unload(info.name)
            done.append(info.name)
        return done

    def _free(self, need: int, exclude: str | None, min_idle_s: float,
              timeout_s: float | None = None) -> int:
        freed = 0
        for info in self._state.victims(self.loaded(), exclude=exclude, min_idle_s=min_idle_s):
            if freed >= need:
                break
            freed += self.unload(info.name, timeout=timeout_s) or info.size
        return freed

    # ------------------------------------------------------------------ loading
    def _admit(self, name: str, need: int) -> None:
        headroom = self._headroom()
        if headroom >= need:
            return
        freed = self._free(need - headroom, canonical(name), 0.0)
        if headroom + freed < need:
            raise _refused(name, need, headroom, freed)

    def _load(self, name: str, keep_alive_s: float | None, *, reserve: bool = True
              ) -> OllamaModelInfo:
        key = canonical(name)
        started = time.perf_counter()
        admit = getattr(self.guard, "admit", None) if reserve else None
        reservation = (admit(reserve=self.estimate_bytes(name)) if admit is not None
                       else contextlib.nullcontext())
        with reservation, _boundary(self.host, f"loading {name!r}"):
            self.client.generate(model=name, keep_alive=_wire_keep_alive(keep_alive_s))
        self._state.loaded_as(key, keep_alive_s, time.perf_counter() - started)
        for info in self.loaded():
            if info.name == key:
                return info
        raise OllamaError(f"Ollama at {self.host} loaded {name!r} but does not list it")

    def ensure(self, name: str, *, keep_alive: float | str | None = None) -> OllamaModelInfo:
        """Make sure *name* is loaded; load it after an admission check when it is not.

        When the machine lacks room for it, idle models (least recently used first) are
        unloaded; when that is not enough, ResourceExhausted is raised and nothing loads.
        """
        key = canonical(name)
        for info in self.loaded():
            if info.name == key:
                self._state.touch(key)
                return info
        self._admit(name, self.estimate_bytes(name))
        return self._load(name, self._ka(keep_alive))

    @contextlib.contextmanager
    def using(self, name: str, *, keep_alive: float | str | None = None
              ) -> Iterator[OllamaModelInfo]:
        """Ensure *name* is loaded and mark it in use (never unloaded by resguard) meanwhile."""
        key = canonical(name)
        with self._state.mark_in_use(key):
            yield self.ensure(name, keep_alive=keep_alive)

    def uses(self, name: str, *, keep_alive: float | str | None = None) -> Callable[[F], F]:
        """Decorator for a function (sync or async) that calls model *name*."""
        canonical(name)

        def decorate(fn: F) -> F:
            if inspect.iscoroutinefunction(fn):
                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    key = canonical(name)
                    with self._state.mark_in_use(key):
                        await anyio.to_thread.run_sync(
                            functools.partial(self.ensure, name, keep_alive=keep_alive))
                        return await fn(*args, **kwargs)
                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.using(name, keep_alive=keep_alive):
                    return fn(*args, **kwargs)
            return wrapper  # type: ignore[return-value]
        return decorate

    def lazy(self, name: str, *, keep_alive: float | str | None = None,
             idle_ttl: float | str | None = None, pool: ModelPool | None = None
             ) -> LazyModel[str]:
        """A LazyModel whose value is the model name, loaded in Ollama on first use."""
        key = canonical(name)
        keep_alive_s = self._ka(keep_alive)
        model = _OllamaLazy(self, name, lambda: self._load(name, keep_alive_s, reserve=False),
                             idle_ttl, pool)
        self._state.lazies[key] = model
        return model

    # ------------------------------------------------------------------ the ladder
    def reclaimable_bytes(self) -> int:
        """Bytes held by loaded models that nobody is using (0 when Ollama is unreachable)."""
        if self._closed:
            return 0
        try:
            infos = self.loaded()
        except OllamaError as error:
            self._state.faults.failed(self.name, error)
            return 0
        self._state.faults.recovered(self.name)
        return sum(i.size for i in self._state.victims(infos,
                                                       min_idle_s=self.reclaim_min_idle_s))

    def reclaim(self, target_bytes: int) -> int:
        """Unload idle models, least recently used first, until *target_bytes* are freed."""
        if self._closed:
            return 0
        try:
            freed = self._free(max(int(target_bytes), 1), None, self.reclaim_min_idle_s,
                               timeout_s=min(self.unload_timeout_s, 5.0))
        except OllamaError as error:
            self._state.faults.failed(self.name, error)
            return 0
        self._state.faults.recovered(self.name)
        return freed

    def source(self) -> OllamaSource:
        """A Monitor source sampling the loaded models."""
        return OllamaSource(self)


class _OllamaLazy(LazyModel[str]):
    """A LazyModel for an Ollama model: admission unloads idle Ollama models when needed."""

    def __init__(self, owner: OllamaModels, name: str, load: Callable[[], object],
                 idle_ttl: float | str | None, pool: ModelPool | None) -> None:
        self._owner = owner
        self._model_name = name

        def do_load() -> str:
            load()
            return name

        def do_unload(_: str) -> None:
            owner.unload(name)

        super().__init__(do_load, do_unload, size=lambda: owner.estimate_bytes(name),
                         idle_ttl=idle_ttl, name=f"ollama:{canonical(name)}",
                         guard=owner.guard, pool=pool)

    def _make_room(self) -> None:
        if self.pool is not None:
            super()._make_room()
        else:
            self._owner._admit(self._model_name, self.size_bytes)


class OllamaSource:
    """Monitor source: ``sample()`` returns ``{"ollama": (OllamaModelInfo, ...)}``.

    When Ollama cannot be read it returns ``{"ollama": None}`` and logs the fault once.
    """

    fields = ("ollama",)

    def __init__(self, models: OllamaModels, name: str = "ollama") -> None:
        self.models = models
        self.name = name

    def sample(self) -> dict[str, object]:
        try:
            infos = self.models.loaded()
        except OllamaError as error:
            self.models._state.faults.failed(self.name, error)
            return {"ollama": None}
        self.models._state.faults.recovered(self.name)
        return {"ollama": infos}


class AsyncOllamaModels(_Common):
    """The async twin of :class:`OllamaModels`, on ``ollama.AsyncClient``.

    Same arguments and methods, awaited. The ladder and the Monitor source run in threads,
    so they go through an internal sync twin that shares this object's knowledge.
    """

    def __init__(self, host: str | None = None, *, client: ollama.AsyncClient | None = None,
                 timeout: float | str = DEFAULT_TIMEOUT_S, keep_alive: float | str | None = None,
                 default_keep_alive: float | str | None = None,
                 guard: HeadroomSource | None = None, size_factor: float = 1.25,
                 unload_timeout: float | str = 10.0, reclaim_min_idle: float | str = 0.0,
                 clock: Callable[[], float] = time.time, register: bool = True) -> None:
        if client is not None and host is not None:
            raise InvalidValue("give either host= or client=, not both")
        if client is not None and not isinstance(client, ollama.AsyncClient):
            raise InvalidType(f"client must be an ollama.AsyncClient, not {client!r}")
        self._owns_client = client is None
        timeout_s = parse_duration(timeout)
        self.client = client or ollama.AsyncClient(host=host, timeout=timeout_s)
        self.sync = OllamaModels(
            _host_of(self.client), timeout=timeout_s, keep_alive=keep_alive,
            default_keep_alive=default_keep_alive, guard=guard, size_factor=size_factor,
            unload_timeout=unload_timeout, reclaim_min_idle=reclaim_min_idle, clock=clock,
            register=False)
        self._state = self.sync._state
        self.guard = guard
        self.size_factor = self.sync.size_factor
        self.unload_timeout_s = self.sync.unload_timeout_s
        self.reclaim_min_idle_s = self.sync.reclaim_min_idle_s
        self.name = self.sync.name
        if register:
            _reclaim.register(self)

    async def aclose(self) -> None:
        """Take this object off the ladder and close the HTTP clients."""
        _reclaim.unregister(self)
        if self._owns_client:
            await self.client._client.aclose()
        self.sync.close()

    async def __aenter__(self) -> AsyncOllamaModels:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def loaded(self) -> tuple[OllamaModelInfo, ...]:
        with _boundary(self.host, "GET /api/ps"):
            response = await self.client.ps()
        return tuple(self._state.info(item) for item in response.models)

    async def installed(self) -> dict[str, int]:
        with _boundary(self.host, "GET /api/tags"):
            response = await self.client.list()
        return {canonical(m.model or ""): int(m.size or 0) for m in response.models}

    async def estimate_bytes(self, name: str) -> int:
        key = canonical(name)
        if key in self._state.sizes:
            return self._state.sizes[key]
        installed = await self.installed()
        if key not in installed:
            raise OllamaError(f"model {name!r} is not installed in Ollama at {self.host}",
                              status_code=404)
        return math.ceil(installed[key] * self.size_factor)

    async def unload(self, name: str, *, timeout: float | str | None = None) -> int:
        key = canonical(name)
        before = {i.name: i.size for i in await self.loaded()}
        with _boundary(self.host, f"unloading {name!r}"):
            await self.client.generate(model=name, keep_alive=0)
        self._state.forget(key)
        lazy = self._state.lazies.get(key)
        if lazy is not None:
            lazy._forget()
        with anyio.move_on_after(self.unload_timeout_s if timeout is None
                                 else parse_duration(timeout)):
            delay_s = 0.01
            while key in {i.name for i in await self.loaded()}:
                await anyio.sleep(delay_s)
                delay_s = min(delay_s * 2, 0.2)
            return before.get(key, 0)
        raise OllamaError(f"Ollama at {self.host} still lists {name!r} after being asked "
                          "to unload it (is a request still running on it?)")

    async def unload_idle(self, min_idle: float | str) -> list[str]:
        min_idle_s = parse_duration(min_idle)
        done = []
        for info in self._state.victims(await self.loaded(), min_idle_s=max(min_idle_s, 1e-9)):
            await self.unload(info.name)
            done.append(info.name)
        return done

    async def _admit(self, name: str, need: int) -> None:
        headroom = await anyio.to_thread.run_sync(self._headroom)
        if headroom >= need:
            return
        freed = 0
        victims = self._state.victims(await self.loaded(), exclude=canonical(name))
        for info in victims:
            if headroom + freed >= need:
                break
            freed += await self.unload(info.name) or info.size
        if headroom + freed < need:
            raise _refused(name, need, headroom, freed)

    async def _load(self, name: str, keep_alive_s: float | None) -> OllamaModelInfo:
        key = canonical(name)
        started = time.perf_counter()
        admit = getattr(self.guard, "admit", None)
        need = await self.estimate_bytes(name)
        reservation = admit(reserve=need) if admit is not None else contextlib.nullcontext()
        async with _as_async(reservation):
            with _boundary(self.host, f"loading {name!r}"):
                await self.client.generate(model=name, keep_alive=_wire_keep_alive(keep_alive_s))
        self._state.loaded_as(key, keep_alive_s, time.perf_counter() - started)
        for info in await self.loaded():
            if info.name == key:
                return info
        raise OllamaError(f"Ollama at {self.host} loaded {name!r} but does not list it")

    async def ensure(self, name: str, *, keep_alive: float | str | None = None
                     ) -> OllamaModelInfo:
        key = canonical(name)
        for info in await self.loaded():
            if info.name == key:
                self._state.touch(key)
                return info
        await self._admit(name, await self.estimate_bytes(name))
        return await self._load(name, self._ka(keep_alive))

    @contextlib.asynccontextmanager
    async def using(self, name: str, *, keep_alive: float | str | None = None
                    ) -> AsyncIterator[OllamaModelInfo]:
        with self._state.mark_in_use(canonical(name)):
            yield await self.ensure(name, keep_alive=keep_alive)

    def uses(self, name: str, *, keep_alive: float | str | None = None) -> Callable[[F], F]:
        """Decorator for an async function that calls model *name*."""
        canonical(name)

        def decorate(fn: F) -> F:
            if not inspect.iscoroutinefunction(fn):
                raise InvalidType(f"AsyncOllamaModels.uses decorates async functions; "
                                  f"{fn!r} is not one (use OllamaModels.uses)")

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self.using(name, keep_alive=keep_alive):
                    return await fn(*args, **kwargs)
            return wrapper  # type: ignore[return-value]
        return decorate

    def lazy(self, name: str, *, keep_alive: float | str | None = None,
             idle_ttl: float | str | None = None, pool: ModelPool | None = None
             ) -> LazyModel[str]:
        """A LazyModel loaded through the sync twin (``async with`` runs it in a thread)."""
        return self.sync.lazy(name, keep_alive=keep_alive, idle_ttl=idle_ttl, pool=pool)

    def reclaimable_bytes(self) -> int:
        return self.sync.reclaimable_bytes()

    def reclaim(self, target_bytes: int) -> int:
        return self.sync.reclaim(target_bytes)

    def source(self) -> OllamaSource:
        return OllamaSource(self.sync)


@contextlib.asynccontextmanager
async def _as_async(manager: Any) -> AsyncIterator[None]:
    if hasattr(manager, "__aenter__"):
        async with manager:
            yield
    else:
        with manager:
            yield


# ---------------------------------------------------------------------- command line
def _until(info: OllamaModelInfo, now: float) -> str:
    if info.expires_at is None:
        return "-"
    left = info.expires_at - now
    if left > FOREVER_AFTER_S:
        return "Forever"
    if left < 0:
        return "Stopping..."
    return format_duration(left)


def cli(command: str, names: list[str], *, host: str | None, as_json: bool, out: TextIO,
        err: TextIO | None = None) -> int:
    """``resguard ollama ps|unload NAME...``; returns the exit code: 0 done, 1 Ollama
    answered an error (e.g. an unknown model), 2 bad usage or Ollama unreachable (no
    answer: down, too slow, connection dropped), as ``resguard docker`` does."""
    import sys

    err = err or sys.stderr
    if command not in ("ps", "unload"):
        print(f"resguard ollama: unknown command {command!r}; expected 'ps' or 'unload'",
              file=err)
        return 2
    if command == "unload" and not names:
        print("resguard ollama unload: name at least one model, e.g. llama3.2:3b", file=err)
        return 2
    if command == "ps" and names:
        print("resguard ollama ps: takes no model names", file=err)
        return 2
    try:
        with OllamaModels(host, register=False) as models:
            if command == "ps":
                infos = models.loaded()
                if as_json:
                    json.dump({"host": models.host, "models": [i.to_dict() for i in infos]},
                              out, indent=2)
                    out.write("\n")
                    return 0
                now = time.time()
                rows = [("NAME", "SIZE", "PROCESSOR", "UNTIL", "IDLE")]
                for i in infos:
                    cpu = round((i.size - i.size_vram) / i.size * 100) if i.size else 0
                    processor = "100% CPU" if cpu == 100 else "100% GPU" if cpu == 0 else (
                        f"{cpu}%/{100 - cpu}% CPU/GPU")
                    idle = "-" if i.idle_since is None else format_duration(
                        max(0.0, now - i.idle_since))
                    rows.append((i.name, format_bytes(i.size), processor, _until(i, now), idle))
                widths = [max(len(row[c]) for row in rows) for c in range(5)]
                for row in rows:
                    line = "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
                    out.write(line.rstrip() + "\n")
                return 0
            results = []
            for name in names:
                freed = models.unload(name)
                results.append({"name": canonical(name), "freed_bytes": freed})
                if not as_json:
                    out.write(f"unloaded {canonical(name)}"
                              f"{f' ({format_bytes(freed)})' if freed else ' (was not loaded)'}\n")
            if as_json:
                json.dump({"host": models.host, "unloaded": results}, out, indent=2)
                out.write("\n")
            return 0
    except (OllamaError, InvalidValue) as error:
        print(f"resguard ollama {command}: {error}", file=err)
        unreachable = isinstance(error, OllamaError) and error.status_code is None
        return 2 if unreachable else 1
