"""The stand-in server's state and scheduler: Ollama's rules for loading, keep-alive timers,
eviction by shortest keep-alive and unloading; its HTTP side is in ``_http``."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from resguard._errors import InvalidType, InvalidValue
from resguard.testing.ollama import _runner
from resguard.testing.ollama._catalogue import (
    CATALOGUE,
    FOREVER_S,
    GIB,
    CatalogueModel,
    HTTPError,
    tags,
    timestamp,
)
from resguard.testing.ollama._http import Handler, Server
from resguard.testing.ollama._runner import Fault, Runner

__all__ = ["OllamaStandIn"]


def _whole(value: object, what: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"{what}={value!r} is not a whole number; expected {least} or more")
    if value < least:
        raise InvalidValue(f"{what}={value!r} is below {least}; expected {least} or more")


def _number(value: object, what: str, least: str = "0 or more") -> None:
    """*value* is a real number: "0 or more", "above 0" or (NaN only refused) "any"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType(f"{what}={value!r} is not a number; expected {least}")
    if math.isnan(value) or (least != "any" and not math.isfinite(value)):
        raise InvalidValue(f"{what}={value!r} is not a finite number; expected {least}")
    if (least == "0 or more" and value < 0) or (least == "above 0" and value <= 0):
        raise InvalidValue(f"{what}={value!r}: expected {least}")


def _checked_catalogue(catalogue: object) -> tuple[CatalogueModel, ...]:
    if isinstance(catalogue, (str, bytes)) or not isinstance(catalogue, Iterable):
        raise InvalidType(f"catalogue={catalogue!r} is not a list of CatalogueModel")
    models = tuple(catalogue)
    for model in models:
        if not isinstance(model, CatalogueModel):
            raise InvalidType(f"catalogue holds {model!r}; expected CatalogueModel entries")
    return models


def _check_options(
    clock: object,
    scale: object,
    max_loaded: object,
    memory_bytes: object,
    default_keep_alive_s: object,
    max_queue: object,
) -> None:
    """The stand-in's arguments, checked before anything is set (a clear error, not a
    server that misbehaves later)."""
    if clock is not None and not callable(clock):
        raise InvalidType(f"clock={clock!r} is not callable; expected e.g. an OffsetClock")
    _number(scale, "scale", "above 0")
    _whole(max_loaded, "max_loaded", 1)
    if memory_bytes is not None:
        _whole(memory_bytes, "memory_bytes", 1)
    _number(default_keep_alive_s, "default_keep_alive_s", "any")  # inf: forever
    _whole(max_queue, "max_queue", 0)


def _check_listen(bind: object, port: object, unload_lag_s: object) -> None:
    if not isinstance(bind, str) or not bind:
        raise InvalidType(f"bind={bind!r} is not an address; expected e.g. '127.0.0.1'")
    _whole(port, "port", 0)
    if port > 65535:  # type: ignore[operator]
        raise InvalidValue(f"port={port!r} is above 65535; expected 0 (any free port) to 65535")
    _number(unload_lag_s, "unload_lag_s")


class OllamaStandIn:
    """A protocol-faithful stand-in for an Ollama server, on loopback, for tests.

    ``with OllamaStandIn() as server:`` then point a client (or resguard) at
    ``server.host``. It serves ``/``, ``/api/version``, ``/api/tags``, ``/api/ps``,
    ``/api/show``, ``/api/generate``, ``/api/chat`` and ``/api/embed`` with Ollama's
    scheduler rules: keep-alive timers and their stickiness, unload via ``keep_alive: 0``
    (removed from ``/api/ps`` asynchronously), at most ``max_loaded`` models and
    ``memory_bytes`` in all with eviction by shortest keep-alive (not LRU), one load at a
    time, 400/404/500/503 errors. Each loaded model runs in a child process that really
    holds its size times ``scale`` (1 MB per GB by default), inside ``cgroup`` when given.

    Test hooks Ollama does not have: ``clock`` (epoch seconds; an :class:`OffsetClock`
    moves it forward without sleeping), ``catalogue`` (:class:`CatalogueModel`, with a
    simulated ``load_s``), ``fail()`` to answer chosen paths with an error, ``delay_s``
    to answer late, ``drop_connections``, ``unload_lag_s``; and what it saw:
    ``requests``, ``load_requests()``, ``loaded_names()``, ``runner_pids()``. A delay is
    simulated only when asked for. ``bind``/``port``: where to listen (port 0: a free one).
    """

    def __init__(
        self,
        catalogue: Iterable[CatalogueModel] = CATALOGUE,
        *,
        clock: Callable[[], float] | None = None,
        scale: float = 1 / 1024,
        max_loaded: int = 3,
        memory_bytes: int | None = None,
        default_keep_alive_s: float = 300.0,
        max_queue: int = 512,
        cgroup: Path | str | None = None,
        unload_lag_s: float = 0.0,
        bind: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        models = _checked_catalogue(catalogue)
        _check_options(clock, scale, max_loaded, memory_bytes, default_keep_alive_s, max_queue)
        _check_listen(bind, port, unload_lag_s)
        self.catalogue = {m.name.lower(): m for m in models}
        self.clock = clock or time.time
        self.scale = scale
        self.max_loaded = max_loaded
        self.memory_bytes = memory_bytes
        self.default_keep_alive_s = default_keep_alive_s
        self.max_queue = max_queue
        self.cgroup = Path(cgroup) if cgroup is not None else None
        self.unload_lag_s = unload_lag_s
        # test hooks
        self.delay_s = 0.0
        self.drop_connections = False
        self.requests: list[tuple[str, str, Any]] = []  # POSTs: (method, path, JSON body)
        self._faults: list[Fault] = []
        # scheduler state
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._load_lock = threading.Lock()
        self._queued = 0
        self._runners: dict[str, Runner] = {}
        self._httpd: Server | None = None
        self._bind = (bind, port)
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> OllamaStandIn:
        handler = type("Handler", (Handler,), {"standin": self})
        self._httpd = Server(self._bind, handler)
        serve = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="ollama-standin",
            daemon=True,
        )
        reaper = threading.Thread(target=self._reap, name="ollama-standin-reaper", daemon=True)
        self._threads = [serve, reaper]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and kill every runner (Ollama going down)."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._lock:
            runners = list(self._runners.values())
            self._runners.clear()
        for runner in runners:
            _runner.kill(runner)

    def __enter__(self) -> OllamaStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() the stand-in first"
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        """The URL to give a client: ``http://127.0.0.1:PORT``."""
        bound = self._bind[0] if self._bind[0] not in ("", "0.0.0.0") else "127.0.0.1"
        return f"http://{bound}:{self.port}"

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called (kept-alive connections then close)."""
        return self._stop.is_set()

    def pause(self, seconds: float) -> None:
        """Wait *seconds* (a simulated delay the test asked for), cut short by stop()."""
        if seconds > 0:
            self._stop.wait(seconds)

    def serve_forever(self) -> None:
        """Serve until interrupted (what ``python -m resguard.testing.ollama`` does)."""
        if self._httpd is None:
            self.start()
        try:
            self._stop.wait()
        finally:
            self.stop()

    # ----------------------------------------------------------------- test hooks
    def fail(
        self,
        status: int,
        message: str = "internal error",
        *,
        paths: Iterable[str] | None = None,
        count: int | None = None,
    ) -> None:
        """Answer requests to *paths* (None: all) with *status*, *count* times (None: always)."""
        self._faults.append(Fault(status, message, tuple(paths) if paths else None, count))

    def clear_faults(self) -> None:
        self._faults.clear()
        self.delay_s = 0.0
        self.drop_connections = False

    def runner_pids(self) -> dict[str, int]:
        """The runner child process of each loaded model."""
        with self._lock:
            return {
                name: r.process.pid for name, r in self._runners.items() if r.process is not None
            }

    def load_requests(self, name: str) -> int:
        """How many load-path requests (empty prompt, no zero keep-alive) named *name*."""
        count = 0
        for _, path, body in list(self.requests):
            if (
                path in ("/api/generate", "/api/chat")
                and body.get("model") == name
                and not (body.get("prompt") or body.get("messages"))
                and body.get("keep_alive") not in (0, 0.0, "0", "0s")
            ):
                count += 1
        return count

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._runners)

    def tick(self) -> None:
        """Unload models whose keep-alive has expired (also done on every request)."""
        now = self.clock()
        with self._lock:
            expired = [
                r
                for r in self._runners.values()
                if not r.loading
                and r.in_flight == 0
                and not r.stopping
                and r.expires_at is not None
                and r.expires_at <= now
            ]
            for runner in expired:
                runner.stopping = True
        for runner in expired:
            self._finish_unload(runner)

    def _reap(self) -> None:
        while not self._stop.wait(0.05):
            self.tick()

    def take_fault(self, path: str) -> Fault | None:
        for fault in list(self._faults):
            if fault.paths is None or path in fault.paths:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    # ----------------------------------------------------------------- model lookup
    def resolve(self, name: object) -> CatalogueModel | None:
        if not isinstance(name, str) or not name:
            return None
        key = name.lower()
        if "/" in key and key.startswith(("registry.ollama.ai/library/", "library/")):
            key = key.split("/")[-1]
        if ":" not in key.rsplit("/", 1)[-1]:
            key += ":latest"
        if key in self.catalogue:
            return self.catalogue[key]
        return None

    # ----------------------------------------------------------------- scheduler
    def _finish_unload(self, runner: Runner) -> None:
        _runner.kill(runner)
        with self._lock:
            if self._runners.get(runner.model.name) is runner:
                del self._runners[runner.model.name]
            self._changed.notify_all()

    def request_unload(self, model: CatalogueModel) -> None:
        """The keep_alive 0 path: expire now; remove asynchronously once idle."""
        with self._lock:
            runner = self._runners.get(model.name)
            if runner is None:
                return
            runner.keep_alive_s = 0.0
            runner.expires_at = self.clock()
            if runner.in_flight or runner.loading or runner.stopping:
                return  # removed when its last request ends
            runner.stopping = True

        def later() -> None:
            self.pause(self.unload_lag_s)
            self._finish_unload(runner)

        threading.Thread(target=later, daemon=True).start()

    def _victim(self, exclude: str) -> Runner | None:
        candidates = sorted(
            (r for r in self._runners.values() if r.model.name != exclude and not r.loading),
            key=lambda r: (r.keep_alive_s, r.model.digest),
        )
        for runner in candidates:
            if runner.in_flight == 0:
                return runner
        return candidates[0] if candidates else None

    def _loaded_total(self, exclude: str) -> int:
        return sum(
            r.model.loaded_bytes
            for r in self._runners.values()
            if r.model.name != exclude and not r.stopping
        )

    def acquire(self, model: CatalogueModel, keep_alive_s: float | None) -> Runner:
        """Start a request on *model*: load it if needed (queued, one load at a time)."""
        with self._lock:
            runner = self._runners.get(model.name)
            if runner is not None and not runner.stopping and not runner.loading:
                runner.in_flight += 1
                if keep_alive_s is not None:
                    runner.keep_alive_s = keep_alive_s
                return runner
            if self._queued >= self.max_queue:
                raise HTTPError(
                    503, "server busy, please try again.  maximum pending requests exceeded"
                )
            self._queued += 1
        try:
            with self._load_lock:
                return self._load(model, keep_alive_s)
        finally:
            with self._lock:
                self._queued -= 1

    def _load(self, model: CatalogueModel, keep_alive_s: float | None) -> Runner:
        with self._lock:
            runner = self._runners.get(model.name)
            if runner is not None and not runner.stopping:
                runner.in_flight += 1
                if keep_alive_s is not None:
                    runner.keep_alive_s = keep_alive_s
                return runner
            if self.memory_bytes is not None and model.loaded_bytes > self.memory_bytes:
                raise HTTPError(
                    500,
                    (
                        f"model requires more system memory ({model.loaded_bytes / GIB:.1f} GiB) "
                        f"than is available ({self.memory_bytes / GIB:.1f} GiB)"
                    ),
                )
            self._make_room(model)
            runner = Runner(
                model,
                self.default_keep_alive_s if keep_alive_s is None else keep_alive_s,
                in_flight=1,
                started=self.clock(),
            )
            self._runners[model.name] = runner
        try:
            if model.load_s:
                self.pause(model.load_s)
            runner.process = _runner.spawn(model, self.scale, self.cgroup)
        except BaseException:
            with self._lock:
                self._runners.pop(model.name, None)
                self._changed.notify_all()
            _runner.kill(runner)
            raise
        with self._lock:
            runner.loading = False
            runner.loaded_event.set()
            stopped = self._stop.is_set()
        if stopped:  # the server stopped while this model loaded: leave no runner behind
            _runner.kill(runner)
            raise HTTPError(500, "server is shutting down")
        return runner

    def _make_room(self, model: CatalogueModel) -> None:
        """Unload models (shortest keep-alive first) until *model* fits; the lock is held."""
        deadline = time.monotonic() + 60
        while True:
            # wait for anything stopping to go away before counting
            while any(r.stopping for r in self._runners.values()):
                if not self._changed.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise HTTPError(500, "timed out waiting for a model to unload")
            over_count = len(self._runners) >= self.max_loaded
            over_memory = (
                self.memory_bytes is not None
                and self._loaded_total(model.name) + model.loaded_bytes > self.memory_bytes
            )
            if not (over_count or over_memory):
                break
            victim = self._victim(model.name)
            if victim is None:
                raise HTTPError(500, "no model can be unloaded to make room")
            victim.expires_at = self.clock()
            if victim.in_flight == 0:
                victim.stopping = True
                self._lock.release()
                try:
                    self._finish_unload(victim)
                finally:
                    self._lock.acquire()
            elif not self._changed.wait(timeout=max(0.0, deadline - time.monotonic())):
                raise HTTPError(500, "timed out waiting for a busy model to finish")

    def release(self, runner: Runner) -> None:
        """End a request: restart the idle timer, or unload now when keep-alive is zero."""
        with self._lock:
            runner.in_flight -= 1
            if runner.in_flight > 0:
                return
            now = self.clock()
            if runner.keep_alive_s <= 0:
                runner.expires_at = now
                if runner.stopping:
                    return
                runner.stopping = True
                unload_now = True
            else:
                runner.expires_at = now + min(runner.keep_alive_s, FOREVER_S)
                unload_now = False
            self._changed.notify_all()
        if unload_now:
            threading.Thread(target=self._finish_unload, args=(runner,), daemon=True).start()

    # ----------------------------------------------------------------- JSON views
    def tags(self) -> dict[str, Any]:
        """The ``/api/tags`` answer: the installed models."""
        return tags(self.catalogue.values(), self.clock())

    def ps(self) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            rows = []
            for runner in self._runners.values():
                expires = runner.expires_at
                if expires is None:
                    expires = now + min(runner.keep_alive_s, FOREVER_S)
                rows.append((expires, runner))
        rows.sort(key=lambda row: -math.floor(row[0]))
        return {"models": [_ps_row(runner.model, expires) for expires, runner in rows]}


def _ps_row(model: CatalogueModel, expires_s: float) -> dict[str, Any]:
    """One loaded model as ``/api/ps`` lists it."""
    return {
        "name": model.name,
        "model": model.name,
        "size": model.loaded_bytes,
        "digest": model.digest,
        "details": model.details(for_ps=True),
        "expires_at": timestamp(expires_s),
        "size_vram": min(max(model.vram_bytes, 0), model.loaded_bytes),
        "context_length": model.context_length,
    }
