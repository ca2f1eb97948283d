"""Where the metrics are served: ``prometheus_client``'s HTTP server on a port of its own
(:func:`serve`), or ``/metrics`` inside an ASGI application (:func:`asgi_app`,
:func:`with_metrics`); each on a registry of its own, never the global default one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from prometheus_client import make_asgi_app, start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.paths import below_root
from resguard.prometheus._collector import ResguardCollector, objects
from resguard.units import shown

__all__ = ["Server", "asgi_app", "registry_of", "serve", "with_metrics"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def registry_of(collector: ResguardCollector | Sequence[Collector] | None) -> CollectorRegistry:
    """A fresh registry holding *collector* (default ``ResguardCollector()``) or a list of
    collectors."""
    collectors: Sequence[Any]
    if collector is None:
        collectors = (ResguardCollector(),)
    elif hasattr(collector, "collect"):
        collectors = (collector,)
    else:
        collectors = objects(collector, "collector", "collect", "collectors")
    registry = CollectorRegistry(auto_describe=False)
    for item in collectors:
        registry.register(item)
    return registry


class Server:
    """A running metrics endpoint from :func:`serve`: ``url``, ``port``, ``close()``."""

    def __init__(self, httpd: Any, thread: Any, registry: CollectorRegistry) -> None:
        self._httpd = httpd
        self._thread = thread
        self.registry = registry
        self.addr, self.port = httpd.server_address[:2]

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in str(self.addr) else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    port: int = 9108,
    addr: str = "127.0.0.1",
    *,
    collector: ResguardCollector | Sequence[Collector] | None = None,
) -> Server:
    """Serve ``/metrics`` on *addr*:*port* from a registry of its own (``port=0``: any free port).

    *collector* defaults to ``ResguardCollector()`` (machine and process figures); pass
    your own with monitor, guards, caches and models, or a list of collectors. Loopback by
    default: expose it wider only on purpose (``addr="0.0.0.0"`` in a container).
    """
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidType(f"port={shown(port)} is not a TCP port number; expected 0 to 65535")
    if not 0 <= port <= 65535:
        raise InvalidValue(f"port={shown(port)} is not a TCP port; expected 0 to 65535")
    if not isinstance(addr, str) or not addr:
        raise InvalidType(f"addr={shown(addr)} is not an address; expected e.g. '127.0.0.1'")
    registry = registry_of(collector)
    try:
        httpd, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as error:  # the port is taken, the address is not this machine's
        raise InvalidValue(
            f"cannot serve metrics on addr={shown(addr)}, port={shown(port)}: "
            f"{error}; expected a free port (or port=0) on a local address"
        ) from error
    return Server(httpd, thread, registry)


def asgi_app(collector: ResguardCollector | Sequence[Collector] | None = None) -> ASGIApp:
    """An ASGI app answering the exposition text of *collector* (default
    ``ResguardCollector()``) from a registry of its own: mount it at ``/metrics``
    (``app.mount("/metrics", asgi_app(collector))`` in FastAPI or Starlette)."""
    app: ASGIApp = make_asgi_app(registry=registry_of(collector))
    return app


def with_metrics(
    app: Any,
    collector: ResguardCollector | Sequence[Collector] | None = None,
    *,
    path: str = "/metrics",
) -> ASGIApp:
    """*app* with *path* answered by :func:`asgi_app` and everything else passed on: for a
    plain ASGI app or a :class:`resguard.asgi.GuardMiddleware` (whose default exclude list
    has ``/metrics``, so wrapping either way round a scrape is never refused)."""
    if not callable(app):
        raise InvalidType(f"app={shown(app)} is not an ASGI application; expected a callable")
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidValue(f"path={shown(path)} is not a URL path; expected e.g. '/metrics'")
    metrics = asgi_app(collector)

    async def routed(scope: Scope, receive: Any, send: Any) -> None:
        if (
            scope.get("type") == "http"
            and below_root(str(scope.get("path", "")), scope.get("root_path")) == path
        ):
            await metrics(scope, receive, send)
        else:
            await app(scope, receive, send)

    return routed
