"""The HTTP transport resguard gives the ``ollama`` client: every request ends by its
deadline (connect, send and the whole answer together) and reads at most ``max_answer``;
and the one boundary that turns the client's failures into :class:`resguard.OllamaError`.

The bounds live in the transport, passed through the client's public ``transport=``
argument (the client forwards it to httpx), so they hold for the client's own methods too.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import anyio
import httpcore
import httpx

from resguard._errors import OllamaError
from resguard.ollama._client import ollama
from resguard.units import format_bytes

__all__ = [
    "AsyncBoundedTransport",
    "BoundedTransport",
    "DeadlineExceeded",
    "boundary",
    "within",
]

# The absolute time.monotonic() by which the current request must have ended; set around
# each call resguard makes (the transport falls back to its own timeout when unset).
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "resguard_ollama_deadline", default=None
)


class DeadlineExceeded(httpx.TimeoutException):
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
        raise DeadlineExceeded("the request's deadline passed")
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
        raise DeadlineExceeded(f"looking up {host!r} took past the request's deadline")
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


class _Body:
    """An answer's body read so far; refused past *limit_bytes* (on its Content-Length
    at once, else when the bytes read pass it)."""

    def __init__(self, headers: Iterable[tuple[bytes, bytes]], limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.chunks: list[bytes] = []
        self.total_bytes = 0
        for key, value in headers:
            if key.lower() == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return  # h11 refuses a bad Content-Length itself
                if length > limit_bytes:
                    raise _AnswerTooLarge(limit_bytes)

    def add(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        if self.total_bytes > self.limit_bytes:
            raise _AnswerTooLarge(self.limit_bytes)
        self.chunks.append(chunk)

    def bytes(self) -> bytes:
        return b"".join(self.chunks)


def _answer(status: int, headers: Any, body: bytes, extensions: Any) -> httpx.Response:
    kept: dict[str, Any] = {
        key: extensions[key] for key in ("http_version", "reason_phrase") if key in extensions
    }
    return httpx.Response(status_code=status, headers=headers, content=body, extensions=kept)


class BoundedTransport(httpx.BaseTransport):
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
                    body = _Body(response.headers, self.max_bytes)
                    for chunk in response.iter_stream():
                        body.add(chunk)
                finally:
                    response.close()
            except (DeadlineExceeded, _AnswerTooLarge):
                raise
            except httpcore.TimeoutException as error:  # every wait is cut to the deadline
                raise DeadlineExceeded("the request's deadline passed") from error
            except Exception as error:
                mapped = _as_httpx(error)
                if mapped is error:
                    raise
                raise mapped from error
            return _answer(response.status, response.headers, body.bytes(), response.extensions)
        finally:
            if token is not None:
                _DEADLINE.reset(token)

    def close(self) -> None:
        self._pool.close()


class AsyncBoundedTransport(httpx.AsyncBaseTransport):
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
            raise DeadlineExceeded("the request's deadline passed")
        try:
            with anyio.fail_after(left):
                response = await self._inner.handle_async_request(request)
                try:
                    body = _Body(response.headers.raw, self.max_bytes)
                    assert isinstance(response.stream, httpx.AsyncByteStream)
                    async for chunk in response.stream:
                        body.add(chunk)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise DeadlineExceeded("the request's deadline passed") from None
        return _answer(
            response.status_code, response.headers, body.bytes(), dict(response.extensions)
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Within:
    """Requests in this block end by the earliest of *seconds* from now, *outer_s* from now
    and a deadline already set around it (a plain class: entered once per request)."""

    __slots__ = ("_seconds", "_token")

    def __init__(self, *seconds: float | None) -> None:
        self._seconds = min(s for s in seconds if s is not None)

    def __enter__(self) -> None:
        deadline = time.monotonic() + self._seconds
        outer = _DEADLINE.get()
        self._token = _DEADLINE.set(deadline if outer is None else min(outer, deadline))

    def __exit__(self, *exc: object) -> None:
        _DEADLINE.reset(self._token)


def within(seconds: float) -> contextlib.AbstractContextManager[None]:
    """Requests in this block end by *seconds* from now (or an earlier outer deadline)."""
    return _Within(seconds)


def _deadline(
    seconds: float | None, outer_s: float | None
) -> contextlib.AbstractContextManager[None]:
    if seconds is None and outer_s is None:
        return contextlib.nullcontext()
    return _Within(seconds, outer_s)


@contextlib.contextmanager
def boundary(
    host: str, what: str, seconds: float | None = None, outer_s: float | None = None
) -> Iterator[None]:
    """Translate the client's exceptions (protocol §5.1) into OllamaError; with *seconds*,
    the requests in the block end within that long (the transport enforces it), and never
    past *outer_s* from now."""
    try:
        with _deadline(seconds, outer_s):
            yield
    except DeadlineExceeded as error:
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
