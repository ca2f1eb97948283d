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

**Deadlines and size caps.** Every HTTP request resguard makes ends within ``timeout``
(default 10 s) counted from its start — connecting, sending and the whole answer together,
whatever the server does (no answer, one byte at a time, an endless body) — except the
request that loads a model, which ends within ``load_timeout`` (default 5 minutes: Ollama
answers it only once the weights are in memory). An answer larger than ``max_answer``
(default 8 MiB; a real ``/api/ps`` is a few KiB) is not read further. Both fail as
:class:`resguard.OllamaError` saying which bound was hit. The bounds live in the HTTP
transport that resguard gives the client it makes, so they hold for the ``ollama`` client's
own methods on ``models.client`` too; a ``client=`` of your own keeps its own transport
and timeouts. A public call's whole run is bounded by the requests it makes:
``loaded()``/``installed()``: ``timeout``; ``unload()``: two requests plus
``unload_timeout`` of polling; ``ensure()``: a few requests plus one load.

**Errors.** Every failure of the server — down, past its deadline, too large an answer, an
HTTP error, a dropped connection, an answer of the wrong shape — is raised as
:class:`resguard.OllamaError` (``status_code`` set when the server answered, the original
exception as ``__cause__``). A host that is not a URL (``"nonsense::host"``, port 99999)
is an :class:`resguard.InvalidValue` when the object is made. The Monitor source and the
ladder never raise: they log the fault once (until it recovers) and carry on.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import ipaddress
import json
import math
import os
import socket
import ssl
import threading
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, TextIO, TypeVar

try:
    import httpcore
    import httpx

    try:
        import ollama
    except ValueError:
        # ollama builds a default client from $OLLAMA_HOST at import and raises for a
        # malformed one: import it without the variable, so that parse_host() can say what
        # is wrong with it where a host is needed (and an explicit host still works).
        _saved_host = os.environ.pop("OLLAMA_HOST", None)
        if _saved_host is None:
            raise
        try:
            import ollama
        finally:
            os.environ["OLLAMA_HOST"] = _saved_host
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
from resguard.models import HeadroomSource, LazyModel, ModelPool
from resguard.models import _headroom as _models_headroom
from resguard.snapshot import OllamaModelInfo
from resguard.units import format_bytes, format_duration, named, parse_bytes, parse_duration

__all__ = [
    "AsyncOllamaModels",
    "OllamaError",
    "OllamaModelInfo",
    "OllamaModels",
    "OllamaSource",
    "cli",
    "parse_host",
]

F = TypeVar("F", bound=Callable[..., Any])
_log = get_logger("resguard.ollama")
FOREVER_AFTER_S = 20 * 365.25 * 86400.0  # the ollama CLI's "Forever" threshold
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_LOAD_TIMEOUT_S = 300.0
DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024
DEFAULT_PORT = 11434


# ---------------------------------------------------------------------- arguments
def _seconds(value: object, what: str, *, zero: bool = False) -> float:
    """A duration argument: finite and above 0 (or 0 itself when *zero*), or
    InvalidValue/InvalidType quoting it."""
    seconds = named(what, parse_duration, value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        above = "at least 0" if zero else "above 0"
        raise InvalidValue(f"{what}={value!r} must be a finite duration {above} (e.g. 10, '30s')")
    return seconds


def _bytes(value: object, what: str) -> int:
    size = named(what, parse_bytes, value)
    if size <= 0:
        raise InvalidValue(f"{what}={value!r} must be above 0 bytes (e.g. '8MiB')")
    return size


def parse_host(host: str | None) -> str:
    """The server URL for *host* as the ``ollama`` client reads it (``None``: ``$OLLAMA_HOST``,
    else ``127.0.0.1:11434``; no scheme: ``http`` and port 11434; ``http://h``: port 80).

    Raises :class:`resguard.InvalidValue` quoting the host when it is not one (a bad port,
    an empty name, characters a host cannot have), instead of the client's ``ValueError``.
    """
    given = host
    if host is None:
        host = os.environ.get("OLLAMA_HOST") or None
        where = f"OLLAMA_HOST={host!r}"
    else:
        where = f"host {host!r}"
    if host is None:
        return f"http://127.0.0.1:{DEFAULT_PORT}"
    if not isinstance(host, str):
        raise InvalidType(f"host={given!r} must be a string such as 'http://127.0.0.1:11434'")
    text = host.strip()
    hint = "expected e.g. 'http://127.0.0.1:11434', '127.0.0.1:11434' or 'localhost'"
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise InvalidValue(f"{where} is not an Ollama host; {hint}")
    scheme, _, rest = text.partition("://")
    if not rest:
        scheme, rest = "http", text
        default_port = DEFAULT_PORT
    else:
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise InvalidValue(f"{where} has scheme {scheme!r}; Ollama speaks http or https")
        default_port = 443 if scheme == "https" else 80
    try:
        split = urllib.parse.urlsplit(f"{scheme}://{rest}")
        name = split.hostname
        port = split.port
    except ValueError as error:
        raise InvalidValue(f"{where} is not an Ollama host ({error}); {hint}") from None
    if port is None and split.netloc.endswith(":"):
        raise InvalidValue(f"{where} has an empty port; {hint}")
    if split.query or split.fragment or split.username or split.password:
        raise InvalidValue(f"{where} may not have a query, fragment or user; {hint}")
    if not name:
        if not split.netloc.startswith(":"):
            raise InvalidValue(f"{where} names no host; {hint}")
        name = "127.0.0.1"
    if port is not None and not 1 <= port <= 65535:
        raise InvalidValue(f"{where} has port {port}, outside 1-65535; {hint}")
    if "[" in split.netloc:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            raise InvalidValue(f"{where}: {name!r} is not an IPv6 address; {hint}") from None
        shown_name = f"[{name}]"
    else:
        if not all(c.isascii() and (c.isalnum() or c in "-._") for c in name):
            raise InvalidValue(f"{where}: {name!r} is not a host name; {hint}")
        shown_name = name
    path = split.path.rstrip("/")
    return f"{scheme}://{shown_name}:{port or default_port}{path}"


# ---------------------------------------------------------------------- the transport
# The absolute time.monotonic() by which the current request must have ended; set around
# each call resguard makes (the transport falls back to its own timeout when unset).
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "resguard_ollama_deadline", default=None
)


class _DeadlineExceeded(httpx.TimeoutException):
    """The whole request (connect, send, answer) ran past its deadline."""


class _AnswerTooLarge(httpx.TransportError):
    """The answer is larger than the cap; it was not read further."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"the answer is larger than {format_bytes(limit_bytes)}")
        self.limit_bytes = limit_bytes


def _left_s() -> float | None:
    deadline = _DEADLINE.get()
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise _DeadlineExceeded("the request's deadline passed")
    return left


def _clip(timeout: float | None) -> float | None:
    """One socket operation's timeout, cut to what is left of the request's deadline."""
    left = _left_s()
    if left is None:
        return timeout
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket whose every read and write ends by the request's deadline (so a server that
    drips one byte at a time cannot stretch a request: each byte shortens the next wait)."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clip(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clip(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _clip(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _LookupFailed(httpcore.ConnectError):
    """The host name has no address (what httpcore's own connect raises for it)."""


def _resolve(host: str, port: int) -> list[str]:
    """The addresses of *host*, looked up within the request's deadline (a resolver that
    hangs would otherwise stretch the connect past it; the lookup thread is left to end)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host]
    found: list[str] = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found.extend(dict.fromkeys(str(info[4][0]) for info in infos))
        except OSError as error:
            failure.append(error)

    thread = threading.Thread(target=lookup, name="resguard-ollama-dns", daemon=True)
    thread.start()
    thread.join(_clip(None))
    if thread.is_alive():
        raise _DeadlineExceeded(f"looking up {host!r} took past the request's deadline")
    if failure or not found:
        raise _LookupFailed(f"cannot resolve {host!r}: {failure[0] if failure else ''}")
    return found


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for address in _resolve(host, port):
            try:
                return _DeadlineStream(
                    self._inner.connect_tcp(
                        address, port, _clip(timeout), local_address, socket_options
                    )
                )
            except httpcore.ConnectError as error:  # try the next address, as a browser does
                failure = error
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.connect_unix_socket(path, _clip(timeout), socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# httpcore's exceptions as httpx names them (what the ollama client and _boundary expect).
_CORE_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
)


def _as_httpx(error: Exception) -> Exception:
    for core, mapped in _CORE_ERRORS:
        if isinstance(error, core):
            return mapped(str(error))
    return error


def _limited_timeouts(request: httpx.Request, left_s: float) -> dict[str, Any]:
    extensions = dict(request.extensions)
    given = dict(extensions.get("timeout") or {})
    extensions["timeout"] = {
        key: left_s if given.get(key) is None else min(given[key], left_s)
        for key in ("connect", "read", "write", "pool")
    }
    return extensions


def _check_length(headers: Iterable[tuple[bytes, bytes]], limit_bytes: int) -> None:
    for key, value in headers:
        if key.lower() == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return  # h11 refuses a bad Content-Length itself
            if length > limit_bytes:
                raise _AnswerTooLarge(limit_bytes)


def _answer(status: int, headers: Any, body: bytes, extensions: Any) -> httpx.Response:
    kept: dict[str, Any] = {
        key: extensions[key] for key in ("http_version", "reason_phrase") if key in extensions
    }
    return httpx.Response(status_code=status, headers=headers, content=body, extensions=kept)


class _BoundedTransport(httpx.BaseTransport):
    """The sync client's transport: each request ends within its deadline (``timeout_s``
    unless resguard set one for the call) and reads at most ``max_bytes`` of answer."""

    def __init__(self, timeout_s: float, max_bytes: int) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=20,
            max_keepalive_connections=10,
            keepalive_expiry=5.0,
            network_backend=_DeadlineBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        token = None
        if _DEADLINE.get() is None:
            token = _DEADLINE.set(time.monotonic() + self.timeout_s)
        try:
            left = _left_s()
            assert left is not None
            core_request = httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=request.url.raw_scheme,
                    host=request.url.raw_host,
                    port=request.url.port,
                    target=request.url.raw_path,
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=_limited_timeouts(request, left),
            )
            try:
                response = self._pool.handle_request(core_request)
                try:
                    _check_length(response.headers, self.max_bytes)
                    chunks, total = [], 0
                    for chunk in response.iter_stream():
                        total += len(chunk)
                        if total > self.max_bytes:
                            raise _AnswerTooLarge(self.max_bytes)
                        chunks.append(chunk)
                finally:
                    response.close()
            except (_DeadlineExceeded, _AnswerTooLarge):
                raise
            except httpcore.TimeoutException as error:  # every wait is cut to the deadline
                raise _DeadlineExceeded("the request's deadline passed") from error
            except Exception as error:
                mapped = _as_httpx(error)
                if mapped is error:
                    raise
                raise mapped from error
            return _answer(response.status, response.headers, b"".join(chunks), response.extensions)
        finally:
            if token is not None:
                _DEADLINE.reset(token)

    def close(self) -> None:
        self._pool.close()


class _AsyncBoundedTransport(httpx.AsyncBaseTransport):
    """The async twin: the deadline is a cancel scope around connect, send and answer."""

    def __init__(self, timeout_s: float, max_bytes: int) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._inner = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(
                max_connections=20, max_keepalive_connections=10, keepalive_expiry=5.0
            )
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        deadline = _DEADLINE.get()
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s
        left = deadline - time.monotonic()
        if left <= 0:
            raise _DeadlineExceeded("the request's deadline passed")
        try:
            with anyio.fail_after(left):
                response = await self._inner.handle_async_request(request)
                try:
                    _check_length(response.headers.raw, self.max_bytes)
                    chunks, total = [], 0
                    assert isinstance(response.stream, httpx.AsyncByteStream)
                    async for chunk in response.stream:
                        total += len(chunk)
                        if total > self.max_bytes:
                            raise _AnswerTooLarge(self.max_bytes)
                        chunks.append(chunk)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise _DeadlineExceeded("the request's deadline passed") from None
        return _answer(
            response.status_code, response.headers, b"".join(chunks), dict(response.extensions)
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


@contextlib.contextmanager
def _within(seconds: float) -> Iterator[None]:
    """Requests in this block end by *seconds* from now (or an earlier outer deadline)."""
    deadline = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def canonical(name: str) -> str:
    """Ollama's display form of a model name: lower case with a tag (``llama3.2:latest``)."""
    if not isinstance(name, str):
        raise InvalidType(f"{name!r} is not an Ollama model name; expected e.g. 'llama3.2:3b'")
    key = name.strip().lower()
    if not key or any(c.isspace() or not c.isprintable() for c in key):
        raise InvalidValue(f"{name!r} is not an Ollama model name; expected e.g. 'llama3.2:3b'")
    for prefix in ("registry.ollama.ai/library/", "library/"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if ":" not in key.rsplit("/", 1)[-1]:
        key += ":latest"
    return key


def _keep_alive_s(value: object, what: str = "keep_alive") -> float | None:
    """Seconds (``math.inf`` = forever) from a keep-alive given as seconds or ``"5m"``;
    a negative one means forever, as in Ollama."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return math.inf
    forever = isinstance(value, str) and value.strip().startswith("-")
    try:
        seconds = parse_duration(value.strip()[1:] if forever else value)  # type: ignore
    except (InvalidValue, InvalidType) as error:
        if forever:
            raise InvalidValue(f"{what}={value!r} is not a duration such as '-1', '5m'") from None
        raise type(error)(f"{what}: {error}") from None
    if math.isnan(seconds):
        raise InvalidValue(f"{what}={value!r} is not a duration")
    return math.inf if forever else seconds


def _wire_keep_alive(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    return -1.0 if math.isinf(seconds) else seconds


@contextlib.contextmanager
def _boundary(host: str, what: str, seconds: float | None = None) -> Iterator[None]:
    """Translate the client's exceptions (protocol §5.1) into OllamaError; with *seconds*,
    the requests in the block end within that long (the transport enforces it)."""
    try:
        with _within(seconds) if seconds is not None else contextlib.nullcontext():
            yield
    except _DeadlineExceeded as error:
        bound = f"within {seconds:g} s " if seconds is not None else "in time "
        raise OllamaError(
            f"Ollama at {host} did not finish {what} {bound}(the deadline "
            "covers connecting, sending and the whole answer)"
        ) from error
    except _AnswerTooLarge as error:
        raise OllamaError(
            f"Ollama at {host} answered {what} with more than "
            f"{format_bytes(error.limit_bytes)} (max_answer); the rest was not "
            "read"
        ) from error
    except ollama.ResponseError as error:
        status = error.status_code if error.status_code > 0 else None
        said = " ".join(str(error.error).split())
        said = said if len(said) <= 300 else said[:300] + "..."  # an error page, not a log
        raise OllamaError(
            f"Ollama at {host} answered {what} with an error"
            f"{f' (HTTP {status})' if status else ''}: {said}",
            status_code=status,
        ) from error
    except httpx.TimeoutException as error:
        raise OllamaError(
            f"Ollama at {host} did not answer {what} in time ({type(error).__name__})"
        ) from error
    except (ConnectionError, httpx.TransportError) as error:
        raise OllamaError(
            f"cannot reach Ollama at {host} for {what}: {type(error).__name__}: {error}"
        ) from error
    except (ValueError, TypeError, RecursionError) as error:
        # pydantic.ValidationError, json.JSONDecodeError, a too deeply nested answer, or a
        # model entry resguard cannot use (an empty name)
        detail = " ".join(str(error).split())[:300]
        raise OllamaError(
            f"Ollama at {host} answered {what} with something that is not "
            f"the Ollama API: {type(error).__name__}: {detail}"
        ) from error


class _Settings:
    """The constructor arguments of both front ends, checked before anything is built."""

    def __init__(
        self,
        host: object,
        client: object,
        client_type: type,
        timeout: object,
        load_timeout: object,
        max_answer: object,
        keep_alive: object,
        default_keep_alive: object,
        guard: object,
        size_factor: object,
        unload_timeout: object,
        reclaim_min_idle: object,
        clock: object,
        register: object,
    ) -> None:
        if client is not None and host is not None:
            raise InvalidValue("give either host= or client=, not both")
        if client is not None and not isinstance(client, client_type):
            raise InvalidType(f"client must be an ollama.{client_type.__name__}, not {client!r}")
        if guard is not None and not isinstance(guard, HeadroomSource):
            raise InvalidType(f"guard must have headroom_bytes() (a resguard.Guard), not {guard!r}")
        if isinstance(size_factor, bool) or not isinstance(size_factor, (int, float)):
            raise InvalidType(f"size_factor={size_factor!r} must be a number >= 1")
        if not 1 <= size_factor <= 100:  # also refuses nan; no float() of a huge int
            raise InvalidValue(
                f"size_factor={size_factor!r} must be a number from 1 to 100 "
                "(loaded size / size on disk, typically 1.1-1.5)"
            )
        if not callable(clock):
            raise InvalidType(f"clock={clock!r} must be a callable returning epoch seconds")
        if not isinstance(register, bool):
            raise InvalidType(f"register={register!r} must be True or False")
        self.url = parse_host(host) if client is None else None  # type: ignore[arg-type]
        self.timeout_s = _seconds(timeout, "timeout")
        self.load_timeout_s = _seconds(load_timeout, "load_timeout")
        self.max_answer_bytes = _bytes(max_answer, "max_answer")
        self.keep_alive_s = _keep_alive_s(keep_alive, "keep_alive")
        self.default_keep_alive_s = _keep_alive_s(default_keep_alive, "default_keep_alive")
        self.size_factor = float(size_factor)
        self.unload_timeout_s = _seconds(unload_timeout, "unload_timeout")
        self.reclaim_min_idle_s = _seconds(reclaim_min_idle, "reclaim_min_idle", zero=True)


class _State:
    """What resguard knows beyond /api/ps; shared by a sync and an async front end."""

    def __init__(
        self,
        host: str,
        *,
        keep_alive_s: float | None,
        default_keep_alive_s: float | None,
        clock: Callable[[], float],
    ) -> None:
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
            weakref.WeakValueDictionary()
        )
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
            "name": name,
            "size": size,
            "size_vram": int(item.size_vram or 0),
            "expires_at": expires_at,
            "idle_since": self.idle_since(name, expires_at),
            "context_length": item.context_length,
        }
        return OllamaModelInfo(**fields)

    def idle_since(self, name: str, expires_at: float | None) -> float | None:
        now = self.clock()
        if self.busy(name):
            return now
        evidence = []
        keep_alive = self.set_keep_alive_s.get(name, self.default_keep_alive_s)
        if (
            expires_at is not None
            and keep_alive is not None
            and math.isfinite(keep_alive)
            and expires_at - now < FOREVER_AFTER_S
        ):
            evidence.append(min(now, expires_at - keep_alive))
        if name in self.last_used:
            evidence.append(self.last_used[name])
        return max(evidence) if evidence else None

    def victims(
        self, infos: Sequence[OllamaModelInfo], exclude: str | None = None, min_idle_s: float = 0.0
    ) -> list[OllamaModelInfo]:
        """Models that may be unloaded, least recently used (unknown first) first."""
        now = self.clock()
        out = [
            i
            for i in infos
            if i.name != exclude
            and not self.busy(i.name)
            and (min_idle_s <= 0 or (i.idle_since is not None and now - i.idle_since >= min_idle_s))
        ]
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
    """The URL of a client passed in (the ollama client keeps it only on its httpx client)."""
    inner = getattr(client, "_client", None)
    return str(getattr(inner, "base_url", "ollama")).rstrip("/")


def _refused(name: str, need: int, headroom: int, freed: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"no room to load Ollama model {name!r}: it needs about {format_bytes(need)}, "
        f"{format_bytes(max(headroom + freed, 0))} is free after unloading idle models",
        reason="memory",
        retry_after=5.0,
        numbers={"size_bytes": need, "headroom_bytes": headroom, "freed_bytes": freed},
    )


class _Common:
    """Parts shared by the sync and async front ends."""

    _state: _State
    guard: HeadroomSource | None
    size_factor: float
    unload_timeout_s: float
    reclaim_min_idle_s: float
    name: str

    timeout_s: float
    load_timeout_s: float
    max_answer_bytes: int

    def _headroom(self) -> int | None:
        """Headroom for a load; ``None`` = unknown (admitted, logged once)."""
        return _models_headroom(self.guard)

    def _request(self, what: str, *, load: bool = False) -> Any:
        """The boundary of one request: its deadline (``timeout``, or ``load_timeout`` for a
        load) and the translation of every failure into OllamaError."""
        return _boundary(self.host, what, self.load_timeout_s if load else self.timeout_s)

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
    ``127.0.0.1:11434``; a host that is not one is an InvalidValue), or a ready ``client``
    (which keeps its own transport: the bounds below then do not apply). ``timeout``
    (default 10 s) is the deadline of every request, connect and whole answer together;
    ``load_timeout`` (default 5 min) that of a request that loads a model; ``max_answer``
    (default 8 MiB) the largest answer read. ``keep_alive`` is what resguard asks for when
    it loads a model (``None``: the server's default); ``default_keep_alive`` tells
    resguard the server's ``OLLAMA_KEEP_ALIVE`` so idle times of models loaded by others
    can be derived. ``guard`` supplies the headroom for admission (else a fresh snapshot
    is read).
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        client: ollama.Client | None = None,
        timeout: float | str = DEFAULT_TIMEOUT_S,
        load_timeout: float | str = DEFAULT_LOAD_TIMEOUT_S,
        max_answer: int | str = DEFAULT_MAX_ANSWER_BYTES,
        keep_alive: float | str | None = None,
        default_keep_alive: float | str | None = None,
        guard: HeadroomSource | None = None,
        size_factor: float = 1.25,
        unload_timeout: float | str = 10.0,
        reclaim_min_idle: float | str = 0.0,
        clock: Callable[[], float] = time.time,
        register: bool = True,
        _state: _State | None = None,
    ) -> None:
        settings = _Settings(
            host,
            client,
            ollama.Client,
            timeout,
            load_timeout,
            max_answer,
            keep_alive,
            default_keep_alive,
            guard,
            size_factor,
            unload_timeout,
            reclaim_min_idle,
            clock,
            register,
        )
        self.timeout_s = settings.timeout_s
        self.load_timeout_s = settings.load_timeout_s
        self.max_answer_bytes = settings.max_answer_bytes
        self._owns_client = client is None
        self.client: ollama.Client = (
            client
            if client is not None
            else ollama.Client(
                host=settings.url,
                timeout=None,
                transport=_BoundedTransport(self.timeout_s, self.max_answer_bytes),
            )
        )
        self._state = _state or _State(
            settings.url or _host_of(self.client),
            keep_alive_s=settings.keep_alive_s,
            default_keep_alive_s=settings.default_keep_alive_s,
            clock=clock,
        )
        self.guard = guard
        self.size_factor = settings.size_factor
        self.unload_timeout_s = settings.unload_timeout_s
        self.reclaim_min_idle_s = settings.reclaim_min_idle_s
        self.name = f"ollama@{self._state.host}"
        self._closed = False
        if register:
            _reclaim.register(self)

    def close(self) -> None:
        """Take this object off the ladder and close the HTTP client (when resguard made it)."""
        self._closed = True
        _reclaim.unregister(self)
        if self._owns_client:
            self.client.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> OllamaModels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def loaded(self) -> tuple[OllamaModelInfo, ...]:
        """The models in memory now (``/api/ps``), longest remaining keep-alive first.

        Returns or raises OllamaError within ``timeout``."""
        with self._request("GET /api/ps"):
            response = self.client.ps()
            return tuple(self._state.info(item) for item in response.models)

    def installed(self) -> dict[str, int]:
        """Installed models and their size on disk in bytes (``/api/tags``), within
        ``timeout``."""
        with self._request("GET /api/tags"):
            response = self.client.list()
            return {canonical(m.model or ""): int(m.size or 0) for m in response.models}

    def estimate_bytes(self, name: str) -> int:
        """Memory *name* takes loaded: as Ollama last reported, else disk size x size_factor."""
        key = canonical(name)
        if key in self._state.sizes:
            return self._state.sizes[key]
        installed = self.installed()
        if key not in installed:
            raise OllamaError(
                f"model {name!r} is not installed in Ollama at {self.host}", status_code=404
            )
        return math.ceil(installed[key] * self.size_factor)

    # ------------------------------------------------------------------ unloading
    def unload(self, name: str, *, timeout: float | str | None = None) -> int:
        """Unload *name* and wait until ``/api/ps`` no longer lists it.

        Returns the bytes Ollama reported for it (0 when it was not loaded). Raises
        OllamaError when the server fails or the model is still listed after *timeout*
        (default ``unload_timeout``); the whole call ends within ``2 x timeout`` plus that.
        """
        key = canonical(name)
        wait_s = self.unload_timeout_s if timeout is None else _seconds(timeout, "timeout")
        before = {i.name: i.size for i in self.loaded()}
        with self._request(f"unloading {name!r}"):
            self.client.generate(model=name, keep_alive=0)
        self._state.forget(key)
        lazy = self._state.lazies.get(key)
        if lazy is not None:
            lazy._forget()  # its next use loads (and admits) it again
        deadline = time.monotonic() + wait_s
        delay_s = 0.01
        while True:
            left_s = deadline - time.monotonic()
            try:
                if left_s <= 0:
                    raise _DeadlineExceeded("unload_timeout passed")
                with _within(left_s):  # the last poll ends by the deadline too
                    listed = {i.name for i in self.loaded()}
            except (OllamaError, _DeadlineExceeded) as error:
                if time.monotonic() < deadline:
                    raise
                raise OllamaError(
                    f"Ollama at {self.host} still lists {name!r} "
                    f"{wait_s:g} s after being asked to unload it (is a request "
                    "still running on it?)"
                ) from error
            if key not in listed:
                break
            time.sleep(min(delay_s, max(deadline - time.monotonic(), 0.0)))
            delay_s = min(delay_s * 2, 0.2)
        _log.info("unloaded Ollama model %s (%s)", key, format_bytes(before.get(key, 0)))
        return before.get(key, 0)

    def unload_idle(self, min_idle: float | str) -> list[str]:
        """Unload the models idle for at least *min_idle*; return their names."""
        min_idle_s = _seconds(min_idle, "min_idle", zero=True)
        done = []
        for info in self._state.victims(self.loaded(), min_idle_s=max(min_idle_s, 1e-9)):
            self.unload(info.name)
            done.append(info.name)
        return done

    def _free(
        self, need: int, exclude: str | None, min_idle_s: float, timeout_s: float | None = None
    ) -> int:
        freed = 0
        for info in self._state.victims(self.loaded(), exclude=exclude, min_idle_s=min_idle_s):
            if freed >= need:
                break
            freed += self.unload(info.name, timeout=timeout_s) or info.size
        return freed

    # ------------------------------------------------------------------ loading
    def _admit(self, name: str, need: int) -> None:
        headroom = self._headroom()
        if headroom is None or headroom >= need:
            return
        freed = self._free(need - headroom, canonical(name), 0.0)
        if headroom + freed < need:
            raise _refused(name, need, headroom, freed)

    def _load(
        self, name: str, keep_alive_s: float | None, *, reserve: bool = True
    ) -> OllamaModelInfo:
        key = canonical(name)
        started = time.perf_counter()
        admit = getattr(self.guard, "admit", None) if reserve else None
        reservation = (
            admit(reserve=self.estimate_bytes(name))
            if admit is not None
            else contextlib.nullcontext()
        )
        with reservation, self._request(f"loading {name!r}", load=True):
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
    def using(
        self, name: str, *, keep_alive: float | str | None = None
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
                            functools.partial(self.ensure, name, keep_alive=keep_alive)
                        )
                        return await fn(*args, **kwargs)

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.using(name, keep_alive=keep_alive):
                    return fn(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate

    def lazy(
        self,
        name: str,
        *,
        keep_alive: float | str | None = None,
        idle_ttl: float | str | None = None,
        pool: ModelPool | None = None,
    ) -> LazyModel[str]:
        """A LazyModel whose value is the model name, loaded in Ollama on first use."""
        key = canonical(name)
        keep_alive_s = self._ka(keep_alive)
        model = _OllamaLazy(
            self, name, lambda: self._load(name, keep_alive_s, reserve=False), idle_ttl, pool
        )
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
        return sum(i.size for i in self._state.victims(infos, min_idle_s=self.reclaim_min_idle_s))

    def reclaim(self, target_bytes: int) -> int:
        """Unload idle models, least recently used first, until *target_bytes* are freed."""
        if self._closed:
            return 0
        try:
            freed = self._free(
                max(int(target_bytes), 1),
                None,
                self.reclaim_min_idle_s,
                timeout_s=min(self.unload_timeout_s, 5.0),
            )
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

    def __init__(
        self,
        owner: OllamaModels,
        name: str,
        load: Callable[[], object],
        idle_ttl: float | str | None,
        pool: ModelPool | None,
    ) -> None:
        self._owner = owner
        self._model_name = name

        def do_load() -> str:
            load()
            return name

        def do_unload(_: str) -> None:
            owner.unload(name)

        super().__init__(
            do_load,
            do_unload,
            size=lambda: owner.estimate_bytes(name),
            idle_ttl=idle_ttl,
            name=f"ollama:{canonical(name)}",
            guard=owner.guard,
            pool=pool,
        )

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

    def __init__(
        self,
        host: str | None = None,
        *,
        client: ollama.AsyncClient | None = None,
        timeout: float | str = DEFAULT_TIMEOUT_S,
        load_timeout: float | str = DEFAULT_LOAD_TIMEOUT_S,
        max_answer: int | str = DEFAULT_MAX_ANSWER_BYTES,
        keep_alive: float | str | None = None,
        default_keep_alive: float | str | None = None,
        guard: HeadroomSource | None = None,
        size_factor: float = 1.25,
        unload_timeout: float | str = 10.0,
        reclaim_min_idle: float | str = 0.0,
        clock: Callable[[], float] = time.time,
        register: bool = True,
    ) -> None:
        settings = _Settings(
            host,
            client,
            ollama.AsyncClient,
            timeout,
            load_timeout,
            max_answer,
            keep_alive,
            default_keep_alive,
            guard,
            size_factor,
            unload_timeout,
            reclaim_min_idle,
            clock,
            register,
        )
        self.timeout_s = settings.timeout_s
        self.load_timeout_s = settings.load_timeout_s
        self.max_answer_bytes = settings.max_answer_bytes
        self._owns_client = client is None
        self.client: ollama.AsyncClient = (
            client
            if client is not None
            else ollama.AsyncClient(
                host=settings.url,
                timeout=None,
                transport=_AsyncBoundedTransport(self.timeout_s, self.max_answer_bytes),
            )
        )
        self.sync = OllamaModels(
            settings.url or _host_of(self.client),
            timeout=timeout,
            load_timeout=load_timeout,
            max_answer=max_answer,
            keep_alive=keep_alive,
            default_keep_alive=default_keep_alive,
            guard=guard,
            size_factor=size_factor,
            unload_timeout=unload_timeout,
            reclaim_min_idle=reclaim_min_idle,
            clock=clock,
            register=False,
        )
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
            await self.client.close()  # type: ignore[no-untyped-call]
        self.sync.close()

    async def __aenter__(self) -> AsyncOllamaModels:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def loaded(self) -> tuple[OllamaModelInfo, ...]:
        with self._request("GET /api/ps"):
            response = await self.client.ps()
            return tuple(self._state.info(item) for item in response.models)

    async def installed(self) -> dict[str, int]:
        with self._request("GET /api/tags"):
            response = await self.client.list()
            return {canonical(m.model or ""): int(m.size or 0) for m in response.models}

    async def estimate_bytes(self, name: str) -> int:
        key = canonical(name)
        if key in self._state.sizes:
            return self._state.sizes[key]
        installed = await self.installed()
        if key not in installed:
            raise OllamaError(
                f"model {name!r} is not installed in Ollama at {self.host}", status_code=404
            )
        return math.ceil(installed[key] * self.size_factor)

    async def unload(self, name: str, *, timeout: float | str | None = None) -> int:
        key = canonical(name)
        wait_s = self.unload_timeout_s if timeout is None else _seconds(timeout, "timeout")
        before = {i.name: i.size for i in await self.loaded()}
        with self._request(f"unloading {name!r}"):
            await self.client.generate(model=name, keep_alive=0)
        self._state.forget(key)
        lazy = self._state.lazies.get(key)
        if lazy is not None:
            lazy._forget()
        with anyio.move_on_after(wait_s):
            delay_s = 0.01
            while key in {i.name for i in await self.loaded()}:
                await anyio.sleep(delay_s)
                delay_s = min(delay_s * 2, 0.2)
            return before.get(key, 0)
        raise OllamaError(
            f"Ollama at {self.host} still lists {name!r} after being asked "
            "to unload it (is a request still running on it?)"
        )

    async def unload_idle(self, min_idle: float | str) -> list[str]:
        min_idle_s = _seconds(min_idle, "min_idle", zero=True)
        done = []
        for info in self._state.victims(await self.loaded(), min_idle_s=max(min_idle_s, 1e-9)):
            await self.unload(info.name)
            done.append(info.name)
        return done

    async def _admit(self, name: str, need: int) -> None:
        headroom = await anyio.to_thread.run_sync(self._headroom)
        if headroom is None or headroom >= need:
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
            with self._request(f"loading {name!r}", load=True):
                await self.client.generate(model=name, keep_alive=_wire_keep_alive(keep_alive_s))
        self._state.loaded_as(key, keep_alive_s, time.perf_counter() - started)
        for info in await self.loaded():
            if info.name == key:
                return info
        raise OllamaError(f"Ollama at {self.host} loaded {name!r} but does not list it")

    async def ensure(self, name: str, *, keep_alive: float | str | None = None) -> OllamaModelInfo:
        key = canonical(name)
        for info in await self.loaded():
            if info.name == key:
                self._state.touch(key)
                return info
        await self._admit(name, await self.estimate_bytes(name))
        return await self._load(name, self._ka(keep_alive))

    @contextlib.asynccontextmanager
    async def using(
        self, name: str, *, keep_alive: float | str | None = None
    ) -> AsyncIterator[OllamaModelInfo]:
        with self._state.mark_in_use(canonical(name)):
            yield await self.ensure(name, keep_alive=keep_alive)

    def uses(self, name: str, *, keep_alive: float | str | None = None) -> Callable[[F], F]:
        """Decorator for an async function that calls model *name*."""
        canonical(name)

        def decorate(fn: F) -> F:
            if not inspect.iscoroutinefunction(fn):
                raise InvalidType(
                    f"AsyncOllamaModels.uses decorates async functions; "
                    f"{fn!r} is not one (use OllamaModels.uses)"
                )

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self.using(name, keep_alive=keep_alive):
                    return await fn(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate

    def lazy(
        self,
        name: str,
        *,
        keep_alive: float | str | None = None,
        idle_ttl: float | str | None = None,
        pool: ModelPool | None = None,
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


def cli(
    command: str,
    names: list[str],
    *,
    host: str | None,
    as_json: bool,
    out: TextIO,
    err: TextIO | None = None,
) -> int:
    """``resguard ollama ps|unload NAME...``; returns the exit code: 0 done, 1 Ollama
    answered an error (e.g. an unknown model), 2 bad usage or Ollama unreachable (no
    answer: down, too slow, connection dropped), as ``resguard docker`` does."""
    import sys

    err = err or sys.stderr
    if command not in ("ps", "unload"):
        print(f"resguard ollama: unknown command {command!r}; expected 'ps' or 'unload'", file=err)
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
                    json.dump(
                        {"host": models.host, "models": [i.to_dict() for i in infos]}, out, indent=2
                    )
                    out.write("\n")
                    return 0
                now = time.time()
                rows = [("NAME", "SIZE", "PROCESSOR", "UNTIL", "IDLE")]
                for i in infos:
                    cpu = round((i.size - i.size_vram) / i.size * 100) if i.size else 0
                    processor = (
                        "100% CPU"
                        if cpu == 100
                        else "100% GPU"
                        if cpu == 0
                        else (f"{cpu}%/{100 - cpu}% CPU/GPU")
                    )
                    idle = (
                        "-"
                        if i.idle_since is None
                        else format_duration(max(0.0, now - i.idle_since))
                    )
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
                    out.write(
                        f"unloaded {canonical(name)}"
                        f"{f' ({format_bytes(freed)})' if freed else ' (was not loaded)'}\n"
                    )
            if as_json:
                json.dump({"host": models.host, "unloaded": results}, out, indent=2)
                out.write("\n")
            return 0
    except (OllamaError, InvalidValue, InvalidType) as error:
        print(f"resguard ollama {command}: {error}", file=err)
        answered = isinstance(error, OllamaError) and error.status_code is not None
        return 1 if answered else 2
