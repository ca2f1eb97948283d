"""What the sync and async faces share: the constructor's checks, the book and the
procedures, and the parts that are the same for both (the ladder, the Monitor source,
lazy models, the names)."""

from __future__ import annotations

import abc
import contextlib
import threading
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from resguard import reclaim as _reclaim
from resguard._errors import InvalidType, InvalidValue
from resguard._modules.clockcheck import checked_clock
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard.models import HeadroomSource, LazyModel, ModelPool, headroom_from
from resguard.ollama._book import Book
from resguard.ollama._names import (
    DEFAULT_LOAD_TIMEOUT_S,
    DEFAULT_MAX_ANSWER_BYTES,
    DEFAULT_TIMEOUT_S,
    canonical,
    keep_alive_s,
    parse_host,
    positive_bytes,
    seconds,
)
from resguard.ollama._steps import Procedures, Request, Steps
from resguard.ollama._transport import boundary
from resguard.ollama._where import OllamaHeadroom

if TYPE_CHECKING:
    from resguard.ollama._glue import OllamaSource
    from resguard.ollama._sync import OllamaModels

__all__ = ["Face", "headroom_from"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
_NO_RESERVATION = contextlib.nullcontext()  # reusable; most requests hold none
_faults = FaultLog(get_logger("resguard.ollama"))  # said once per process, not per object
_UNNAMED_CLIENT = "the server of a client= given without host="


class Face(abc.ABC):
    """The state and the shared methods of :class:`OllamaModels` and
    :class:`AsyncOllamaModels`; each adds only how it performs a procedure's I/O."""

    _client_type: type  # ollama.Client or ollama.AsyncClient
    _transport_type: Callable[[float, int], Any]  # the bounded transport for it
    _registry: _reclaim.Registry | None  # where it is on a ladder (None: nowhere)

    def __init__(
        self,
        host: str | None = None,
        *,
        client: Any = None,
        timeout: float | str = DEFAULT_TIMEOUT_S,
        load_timeout: float | str = DEFAULT_LOAD_TIMEOUT_S,
        max_answer: int | str = DEFAULT_MAX_ANSWER_BYTES,
        keep_alive: float | str | None = None,
        default_keep_alive: float | str | None = None,
        guard: HeadroomSource | None = None,
        headroom: HeadroomSource | None = None,
        size_factor: float = 1.25,
        unload_timeout: float | str = 10.0,
        reclaim_min_idle: float | str = _reclaim.DEFAULT_MIN_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        register: _reclaim.RegisterTarget = True,
    ) -> None:
        _check(client, self._client_type, guard, size_factor, wall_clock)
        registry = _reclaim.registry_for(register)  # checks it: InvalidType names register=
        if headroom is not None and not isinstance(headroom, HeadroomSource):
            raise InvalidType(
                f"headroom={headroom!r} must have headroom_bytes() (a HeadroomSource such as "
                "resguard.ollama.OllamaHeadroom or a resguard.Guard watching Ollama's host)"
            )
        clock = checked_clock(clock)
        url = parse_host(host) if client is None or host is not None else None
        self.timeout_s = seconds(timeout, "timeout")
        self.load_timeout_s = seconds(load_timeout, "load_timeout")
        self.max_answer_bytes = positive_bytes(max_answer, "max_answer")
        book = Book(
            url or "ollama",
            keep_alive_s=keep_alive_s(keep_alive, "keep_alive"),
            default_keep_alive_s=keep_alive_s(default_keep_alive, "default_keep_alive"),
            clock=clock,
            wall_clock=wall_clock,
        )
        steps = Procedures(
            book,
            size_factor=float(size_factor),
            unload_timeout_s=seconds(unload_timeout, "unload_timeout"),
            reclaim_min_idle_s=seconds(reclaim_min_idle, "reclaim_min_idle", zero=True),
            reserves=getattr(guard, "admit", None) is not None,
        )
        self._owns_client = client is None
        self.client = client if client is not None else self._make_client(url)
        if headroom is None and guard is None:
            headroom = _default_headroom(url, clock)
        if isinstance(headroom, OllamaHeadroom):
            measured = headroom
            steps.where = lambda: f"where Ollama runs ({measured.where()})"
        self._share(book, steps, guard, url, headroom if headroom is not None else guard)
        self._registry = registry
        if registry is not None:
            registry.register(self)

    def _share(
        self,
        book: Book,
        steps: Procedures,
        guard: HeadroomSource | None,
        url: str | None,
        headroom: HeadroomSource | None,
    ) -> None:
        self._book = book
        self._steps = steps
        self._url = url
        self.guard = guard
        self.headroom = headroom
        self.size_factor = steps.size_factor
        self.unload_timeout_s = steps.unload_timeout_s
        self.reclaim_min_idle_s = steps.reclaim_min_idle_s
        self.name = f"ollama@{book.host}"
        self._closed = False
        self._registry = None  # the async face's sync one is never registered
        self._lock = threading.Lock()
        self._sync_face: OllamaModels | None = None  # the async face's, made when needed

    def _make_client(self, url: str | None) -> Any:
        transport = self._transport_type(self.timeout_s, self.max_answer_bytes)
        return self._client_type(host=url, timeout=None, transport=transport)

    @abc.abstractmethod
    def _threads(self) -> OllamaModels:
        """The sync face over this object's record (itself, for the sync face)."""

    def _in_thread(self, steps: Callable[[], Steps[T]]) -> T:
        """Run the procedure *steps()* for a caller in a thread (the ladder, the Monitor
        source, a lazy model's loader): through the sync face."""
        return self._threads()._run(steps())

    # ------------------------------------------------------------------ shared parts
    @property
    def host(self) -> str:
        return self._book.host

    @property
    def cost(self) -> float:
        """``Cost.MODEL`` plus the mean measured load time in seconds."""
        return self._book.cost()

    def _keep_alive(self, keep_alive: float | str | None) -> float | None:
        given = keep_alive_s(keep_alive)
        return self._book.keep_alive_s if given is None else given

    def _unload_wait_s(self, timeout: float | str | None) -> float:
        return self.unload_timeout_s if timeout is None else seconds(timeout, "timeout")

    def _bounds(self, request: Request) -> Any:
        """One request's deadline and the translation of its failures into OllamaError."""
        limit_s = self.load_timeout_s if request.load else self.timeout_s
        return boundary(self.host, request.what, limit_s, request.within_s)

    def _reservation(self, reserve: int | None) -> Any:
        if reserve is None:
            return _NO_RESERVATION
        return self.guard.admit(reserve=reserve)  # type: ignore[union-attr]

    def lazy(
        self,
        name: str,
        *,
        keep_alive: float | str | None = None,
        idle_ttl: float | str | None = None,
        pool: ModelPool | None = None,
    ) -> LazyModel[str]:
        """A LazyModel whose value is the model name, loaded in Ollama on first use (the
        async face's loads it in a thread: ``async with`` runs it there)."""
        from resguard.ollama._glue import OllamaLazy

        key = canonical(name)
        model = OllamaLazy(self, name, self._keep_alive(keep_alive), idle_ttl, pool)
        self._book.lazies[key] = model
        return model

    def reclaimable_bytes(self) -> int:
        """Bytes held by loaded models that nobody is using (0 when Ollama is unreachable)."""
        if self._closed:
            return 0
        return self._in_thread(lambda: self._steps.reclaimable_bytes(self.name))

    def reclaim(self, target_bytes: int) -> int:
        """Unload idle models, least recently used first, until *target_bytes* are freed."""
        if self._closed:
            return 0
        return self._in_thread(lambda: self._steps.reclaim(self.name, target_bytes))

    def as_source(self) -> OllamaSource:
        """A Monitor source sampling the loaded models into ``snapshot.ollama``."""
        from resguard.ollama._glue import OllamaSource

        return OllamaSource(self)

    def source(self) -> OllamaSource:
        """Deprecated name of :meth:`as_source` (every headroom source is ``as_source()``)."""
        warnings.warn("OllamaModels.source() is deprecated; use as_source()", DeprecationWarning, 2)
        return self.as_source()


def _default_headroom(url: str | None, clock: Callable[[], float]) -> OllamaHeadroom:
    """Where Ollama's room is measured without a ``headroom=``: at the host the user gave
    (``host=``, else ``$OLLAMA_HOST`` or the default, as :func:`parse_host` reads them).
    A ``client=`` without ``host=`` names no server resguard may rely on (the client keeps
    its URL in private attributes): this machine's memory counts, said once. *clock* is
    the client's: it paces the look for Ollama's process and bounds its scan."""
    if url is None:
        _faults.failed(
            _UNNAMED_CLIENT,
            "unknown: pass host= with client= so Ollama's headroom is measured where it "
            "runs; until then it is this machine's available memory",
        )
    return OllamaHeadroom(url, clock=clock)


def _check(
    client: object,
    client_type: type,
    guard: object,
    size_factor: object,
    wall_clock: object,
) -> None:
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
    if not callable(wall_clock):
        raise InvalidType(f"wall_clock={wall_clock!r} must be a callable returning epoch seconds")
