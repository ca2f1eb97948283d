"""A protocol-faithful stand-in for the Ollama server, for tests (see ollama-protocol.md).

It speaks the subset of the Ollama HTTP API that resguard touches — ``/``, ``/api/version``,
``/api/tags``, ``/api/ps``, ``/api/show``, ``/api/generate``, ``/api/chat``, ``/api/embed`` —
over real HTTP on loopback, with Ollama's scheduler rules: keep-alive timers and their
stickiness, unload via ``keep_alive: 0`` (asynchronous removal from ``/api/ps``), a cap on
loaded models, a memory budget with eviction by shortest keep-alive (not LRU), one load at a
time, 404/400/500/503 errors.

Like Ollama, each loaded model runs in its own CHILD PROCESS that really allocates the
model's size times ``scale`` (default 1 MB per GB), so unloading (killing that child) frees
measurable memory; ``cgroup=`` puts the runners into a memory cgroup directory.

Test hooks that Ollama does not have: an injectable wall clock (``clock`` returns epoch
seconds; expiry is checked on every request and by a reaper thread), per-model load delays,
``fail(...)`` to answer chosen paths with an error status, ``delay_s`` to answer slowly,
``drop_connections`` to close sockets without answering.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["CATALOGUE", "CatalogueModel", "OffsetClock", "OllamaStandIn", "parse_keep_alive"]

VERSION = "0.12.3"
FOREVER_S = 292 * 365.25 * 86400.0
GIB = 1024**3


class OffsetClock:
    """Wall-clock epoch seconds that a test can move forward without sleeping."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


@dataclass(frozen=True)
class CatalogueModel:
    """One installed model: ``disk_bytes`` as /api/tags reports, ``loaded_bytes`` as /api/ps."""

    name: str
    disk_bytes: int
    loaded_bytes: int
    family: str = "llama"
    parameter_size: str = "1B"
    quantization_level: str = "Q4_K_M"
    capabilities: tuple[str, ...] = ("completion",)
    load_s: float = 0.0
    context_length: int = 4096

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    def details(self, *, for_ps: bool = False) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }


CATALOGUE: tuple[CatalogueModel, ...] = (
    CatalogueModel("llama3.2:1b", 1_321_098_329, 1_514_584_145, "llama", "1.2B", "Q8_0"),
    CatalogueModel("llama3.2:3b", 2_019_393_189, 3_518_155_776, "llama", "3.2B"),
    CatalogueModel(
        "gpt-oss:20b",
        13_780_173_724,
        13_421_772_800,
        "gptoss",
        "20.9B",
        "MXFP4",
        ("completion", "tools", "thinking"),
    ),
    CatalogueModel("qwen3:8b", 5_225_388_164, 6_654_289_920, "qwen3", "8.2B"),
    CatalogueModel("qwen2.5:0.5b", 397_821_319, 650_000_000, "qwen2", "494.03M"),
)

_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class BadRequest(Exception):
    """A request the server answers with 400 and this message."""


def parse_keep_alive(value: object) -> float | None:
    """Seconds (``math.inf`` for forever) from a JSON keep_alive, per protocol §3."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequest("Unsupported type: 'bool'")
    if isinstance(value, (int, float)):
        return math.inf if value < 0 else float(value)
    if not isinstance(value, str):
        raise BadRequest(f"Unsupported type: '{type(value).__name__}'")
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    if not body:
        raise BadRequest(f'time: invalid duration "{value}"')
    position, total = 0, 0.0
    while position < len(body):
        match = _DURATION.match(body, position)
        if match is None:
            if re.fullmatch(r"[0-9.]+", body[position:]):
                raise BadRequest(f'time: missing unit in duration "{value}"')
            raise BadRequest(f'time: invalid duration "{value}"')
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        position = match.end()
    return math.inf if sign < 0 else total


def _timestamp(epoch_s: float, *, utc: bool = False) -> str:
    if utc:
        return (
            _dt.datetime.fromtimestamp(epoch_s, _dt.timezone.utc).isoformat().replace("+00:00", "Z")
        )
    return _dt.datetime.fromtimestamp(epoch_s).astimezone().isoformat()


_RUNNER = (
    "import sys\n"
    "block = b'\\x01' * int(sys.argv[1])\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "sys.stdin.read()\n"
)


@dataclass
class _Runner:
    """A loaded (or loading) model: its child process and scheduler state."""

    model: CatalogueModel
    keep_alive_s: float
    process: subprocess.Popen[bytes] | None = None
    in_flight: int = 0
    loading: bool = True
    expires_at: float | None = None
    stopping: bool = False
    started: float = 0.0
    loaded_event: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Fault:
    status: int
    message: str
    paths: tuple[str, ...] | None
    remaining: int | None


class OllamaStandIn:
    """The stand-in server. ``start()`` binds a free loopback port; ``host`` is its URL."""

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
        unload_lag_s: float = 0.01,
    ) -> None:
        self.catalogue = {m.name.lower(): m for m in catalogue}
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
        self._faults: list[_Fault] = []
        # scheduler state
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._load_lock = threading.Lock()
        self._queued = 0
        self._runners: dict[str, _Runner] = {}
        self._httpd: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> OllamaStandIn:
        handler = type("Handler", (_Handler,), {"standin": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
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
            self._kill(runner)

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
        return f"http://127.0.0.1:{self.port}"

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
        self._faults.append(_Fault(status, message, tuple(paths) if paths else None, count))

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

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in list(self._faults):
            if fault.paths is None or path in fault.paths:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    # ----------------------------------------------------------------- model lookup
    def _resolve(self, name: object) -> CatalogueModel | None:
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
    def _spawn(self, model: CatalogueModel) -> subprocess.Popen[bytes]:
        nbytes = max(1, int(model.loaded_bytes * self.scale))
        argv = [sys.executable, "-I", "-S", "-c", _RUNNER, str(nbytes)]
        if self.cgroup is not None:
            procs = self.cgroup / "cgroup.procs"
            argv = ["/bin/sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *argv]
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert process.stdout is not None
        line = process.stdout.readline()
        if line.strip() != b"ready":
            process.kill()
            process.wait()
            raise RuntimeError(f"runner for {model.name} failed to start (exit {process.poll()})")
        return process

    def _kill(self, runner: _Runner) -> None:
        process = runner.process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _finish_unload(self, runner: _Runner) -> None:
        self._kill(runner)
        with self._lock:
            if self._runners.get(runner.model.name) is runner:
                del self._runners[runner.model.name]
            self._changed.notify_all()

    def _request_unload(self, model: CatalogueModel) -> None:
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
            time.sleep(self.unload_lag_s)
            self._finish_unload(runner)

        threading.Thread(target=later, daemon=True).start()

    def _victim(self, exclude: str) -> _Runner | None:
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

    def acquire(self, model: CatalogueModel, keep_alive_s: float | None) -> _Runner:
        """Start a request on *model*: load it if needed (queued, one load at a time)."""
        with self._lock:
            runner = self._runners.get(model.name)
            if runner is not None and not runner.stopping and not runner.loading:
                runner.in_flight += 1
                if keep_alive_s is not None:
                    runner.keep_alive_s = keep_alive_s
                return runner
            if self._queued >= self.max_queue:
                raise _HTTPError(
                    503, "server busy, please try again.  maximum pending requests exceeded"
                )
            self._queued += 1
        try:
            with self._load_lock:
                return self._load(model, keep_alive_s)
        finally:
            with self._lock:
                self._queued -= 1

    def _load(self, model: CatalogueModel, keep_alive_s: float | None) -> _Runner:
        with self._lock:
            runner = self._runners.get(model.name)
            if runner is not None and not runner.stopping:
                runner.in_flight += 1
                if keep_alive_s is not None:
                    runner.keep_alive_s = keep_alive_s
                return runner
            if self.memory_bytes is not None and model.loaded_bytes > self.memory_bytes:
                raise _HTTPError(
                    500,
                    (
                        f"model requires more system memory ({model.loaded_bytes / GIB:.1f} GiB) "
                        f"than is available ({self.memory_bytes / GIB:.1f} GiB)"
                    ),
                )
            deadline = time.monotonic() + 60
            while True:
                # wait for anything stopping to go away before counting
                while any(r.stopping for r in self._runners.values()):
                    if not self._changed.wait(timeout=max(0.0, deadline - time.monotonic())):
                        raise _HTTPError(500, "timed out waiting for a model to unload")
                over_count = len(self._runners) >= self.max_loaded
                over_memory = (
                    self.memory_bytes is not None
                    and self._loaded_total(model.name) + model.loaded_bytes > self.memory_bytes
                )
                if not (over_count or over_memory):
                    break
                victim = self._victim(model.name)
                if victim is None:
                    raise _HTTPError(500, "no model can be unloaded to make room")
                victim.expires_at = self.clock()
                if victim.in_flight == 0:
                    victim.stopping = True
                    self._lock.release()
                    try:
                        self._finish_unload(victim)
                    finally:
                        self._lock.acquire()
                elif not self._changed.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise _HTTPError(500, "timed out waiting for a busy model to finish")
            runner = _Runner(
                model,
                self.default_keep_alive_s if keep_alive_s is None else keep_alive_s,
                in_flight=1,
                started=self.clock(),
            )
            self._runners[model.name] = runner
        try:
            if model.load_s:
                time.sleep(model.load_s)
            runner.process = self._spawn(model)
        except BaseException:
            with self._lock:
                self._runners.pop(model.name, None)
                self._changed.notify_all()
            self._kill(runner)
            raise
        with self._lock:
            runner.loading = False
            runner.loaded_event.set()
            stopped = self._stop.is_set()
        if stopped:  # the server stopped while this model loaded: leave no runner behind
            self._kill(runner)
            raise _HTTPError(500, "server is shutting down")
        return runner

    def release(self, runner: _Runner) -> None:
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
        models = []
        for model in self.catalogue.values():
            models.append(
                {
                    "name": model.name,
                    "model": model.name,
                    "modified_at": _timestamp(self.clock() - 86400),
                    "size": model.disk_bytes,
                    "digest": model.digest,
                    "details": model.details(),
                }
            )
        return {"models": models}

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
        models = []
        for expires, runner in rows:
            model = runner.model
            models.append(
                {
                    "name": model.name,
                    "model": model.name,
                    "size": model.loaded_bytes,
                    "digest": model.digest,
                    "details": model.details(for_ps=True),
                    "expires_at": _timestamp(expires),
                    "size_vram": 0,
                    "context_length": model.context_length,
                }
            )
        return {"models": models}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # dropped connections and clients that went away are expected in tests


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Dropped(Exception):
    """The test asked to drop the connection."""


class _Handler(BaseHTTPRequestHandler):
    standin: OllamaStandIn
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes
    server_version = "ollama-standin"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # ----------------------------------------------------------------- plumbing
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(
            status,
            json.dumps(payload, separators=(",", ":")).encode(),
            "application/json; charset=utf-8",
        )

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _stream(self, objects: Iterator[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for obj in objects:
            line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            raise _HTTPError(400, "missing request body")
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as error:
            if error.msg.startswith("Expecting value") and error.pos >= len(raw.strip()):
                raise _HTTPError(400, "unexpected EOF") from None
            char = raw[error.pos : error.pos + 1].decode(errors="replace")
            raise _HTTPError(
                400, f"invalid character '{char}' looking for beginning of value"
            ) from None
        if not isinstance(body, dict):
            raise _HTTPError(400, "json: cannot unmarshal into Go value of type api.Request")
        self.standin.requests.append((self.command, self.path, body))
        model = body.get("model", body.get("name"))
        if model is not None and not isinstance(model, str):
            raise _HTTPError(
                400,
                "json: cannot unmarshal number into Go struct field "
                "GenerateRequest.model of type string",
            )
        return body

    def _dispatch(self, method: str) -> None:
        standin = self.standin
        path = self.path.split("?", 1)[0]
        if standin.drop_connections:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        if standin.delay_s:
            time.sleep(standin.delay_s)
        standin.tick()
        routes: dict[str, dict[str, Callable[[], None]]] = {
            "/": {"GET": self._root, "HEAD": self._root},
            "/api/version": {"GET": self._version, "HEAD": self._version},
            "/api/tags": {"GET": self._tags, "HEAD": self._tags},
            "/api/ps": {"GET": self._ps},
            "/api/show": {"POST": self._show},
            "/api/generate": {"POST": lambda: self._generate(chat=False)},
            "/api/chat": {"POST": lambda: self._generate(chat=True)},
            "/api/embed": {"POST": self._embed},
        }
        if path not in routes:
            self._text(404, "404 page not found")
            return
        if method not in routes[path]:
            self._text(405, "405 method not allowed")
            return
        fault = standin._take_fault(path)
        if fault is not None:
            self._json(fault.status, {"error": fault.message})
            return
        try:
            routes[path][method]()
        except _HTTPError as error:
            self._json(error.status, {"error": error.message})
        except BadRequest as error:
            self._json(400, {"error": str(error)})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ----------------------------------------------------------------- endpoints
    def _root(self) -> None:
        self._text(200, "Ollama is running")

    def _version(self) -> None:
        self._json(200, {"version": VERSION})

    def _tags(self) -> None:
        self._json(200, self.standin.tags())

    def _ps(self) -> None:
        self._json(200, self.standin.ps())

    def _show(self) -> None:
        body = self._body()
        name = body.get("model") or body.get("name")
        if not name:
            raise _HTTPError(400, "model is required")
        model = self.standin._resolve(name)
        if model is None:
            raise _HTTPError(404, f"model '{name}' not found")
        self._json(
            200,
            {
                "license": "",
                "modelfile": f"FROM {model.name}\n",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": model.details(),
                "model_info": {
                    "general.architecture": model.family,
                    f"{model.family}.context_length": 131072,
                },
                "capabilities": list(model.capabilities),
                "modified_at": _timestamp(self.standin.clock() - 86400),
            },
        )

    def _generate(self, *, chat: bool) -> None:
        standin = self.standin
        body = self._body()
        sent = body.get("model")
        if not sent:
            raise _HTTPError(
                400 if chat else 404, "model is required" if chat else "model '' not found"
            )
        model = standin._resolve(sent)
        if model is None:
            raise _HTTPError(404, f"model '{sent}' not found")
        keep_alive_s = parse_keep_alive(body.get("keep_alive"))
        text = _prompt_text(body, chat=chat)
        created = _timestamp(standin.clock(), utc=True)

        def reply(done_reason: str, response: str = "", **extra: Any) -> dict[str, Any]:
            obj: dict[str, Any] = {"model": sent, "created_at": created}
            if chat:
                obj["message"] = {"role": "assistant", "content": response}
            else:
                obj["response"] = response
            obj.update(done=True, done_reason=done_reason, **extra)
            return obj

        if not text and keep_alive_s == 0 and "keep_alive" in body:
            standin._request_unload(model)
            self._json(200, reply("unload"))
            return
        runner = standin.acquire(model, keep_alive_s)
        try:
            if not text:
                self._json(200, reply("load"))
                return
            pieces = [f"{word} " for word in text.split()][::-1] or ["ok"]
            answer = "".join(pieces).strip()
            if body.get("stream", True):

                def chunks() -> Iterator[dict[str, Any]]:
                    for piece in pieces:
                        obj: dict[str, Any] = {"model": sent, "created_at": created, "done": False}
                        if chat:
                            obj["message"] = {"role": "assistant", "content": piece}
                        else:
                            obj["response"] = piece
                        yield obj
                    yield reply("stop", "", eval_count=len(pieces), total_duration=1000)

                self._stream(chunks())
            else:
                self._json(200, reply("stop", answer, eval_count=len(pieces), total_duration=1000))
        finally:
            standin.release(runner)

    def _embed(self) -> None:
        standin = self.standin
        body = self._body()
        sent = body.get("model")
        model = standin._resolve(sent)
        if model is None:
            raise _HTTPError(404, f'model "{sent}" not found, try pulling it first')
        keep_alive_s = parse_keep_alive(body.get("keep_alive"))
        items = body.get("input") or []
        if isinstance(items, str):
            items = [items] if items else []
        if not all(isinstance(item, str) for item in items):
            raise _HTTPError(400, "invalid input type")
        runner = standin.acquire(model, keep_alive_s)
        try:
            vectors = [[float(len(item)), 1.0] for item in items]
            self._json(200, {"model": sent, "embeddings": vectors})
        finally:
            standin.release(runner)


def _prompt_text(body: dict[str, Any], *, chat: bool) -> str:
    if chat:
        messages = body.get("messages") or []
        return " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""
