"""What each call does, written once for both faces: each procedure is a generator that
yields the I/O it needs (an HTTP request through the client, the headroom, a pause, the
time) and is sent the result; the sync face performs them by calling, the async face by
awaiting (h11's "write the logic once, vary only the I/O")."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, NamedTuple, TypeVar

from resguard._errors import OllamaError
from resguard._modules.log import emit, fields
from resguard.ollama import _core
from resguard.ollama._book import Book, log
from resguard.ollama._names import canonical, wire_keep_alive
from resguard.snapshot import OllamaModelInfo
from resguard.units import format_bytes

__all__ = ["HEADROOM", "NOW", "Procedures", "Request", "Run", "Sleep", "Steps"]

T = TypeVar("T")


def _as_is(answer: Any) -> Any:
    return answer


class Request(NamedTuple):
    """Call ``client.<method>(**kwargs)`` within its deadline (``load_timeout`` when
    *load*, else ``timeout``; never past *within_s* from now), holding a reservation of
    *reserve* bytes from the guard meanwhile, and give back ``parse(answer)``. (A named
    tuple: one is made per request, on the path of ``ensure``.)"""

    what: str
    method: str
    kwargs: Mapping[str, Any] = MappingProxyType({})
    load: bool = False
    within_s: float | None = None
    reserve: int | None = None
    parse: Callable[[Any], Any] = _as_is


@dataclass(frozen=True)
class Sleep:
    """Pause *seconds* (the polling of an unload)."""

    seconds: float


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


HEADROOM = _Marker("HEADROOM")  # the bytes a load may take now (None: unknown)
NOW = _Marker("NOW")  # time.monotonic(): the real time that bounds waits

Effect = Request | Sleep | _Marker
Steps = Generator[Effect, Any, T]


class Run(Generic[T]):
    """Steps a procedure for a face, which performs each effect it is given::

        with Run(steps) as run:
            for effect in run:
                with run.replying():
                    run.value = perform(effect)  # or: await perform(effect)
        return run.result

    What ``perform`` raises (an Exception) is thrown into the procedure at its yield."""

    def __init__(self, steps: Steps[T]) -> None:
        self._steps = steps
        self.value: Any = None
        self.error: Exception | None = None
        self.result: T = None  # type: ignore[assignment]  # set when the procedure returns
        self._reply = _Reply(self)

    def __iter__(self) -> Iterator[Effect]:
        steps = self._steps
        while True:
            value, error, self.value, self.error = self.value, self.error, None, None
            try:
                yield steps.send(value) if error is None else steps.throw(error)
            except StopIteration as stop:
                self.result = stop.value
                return

    def replying(self) -> _Reply:
        """The block that performs one effect: its Exception goes to the procedure."""
        return self._reply

    def __enter__(self) -> Run[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._steps.close()


class _Reply:
    """``with run.replying():`` (a plain class: entered once per request)."""

    __slots__ = ("_run",)

    def __init__(self, run: Run[Any]) -> None:
        self._run = run

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> bool:
        if isinstance(error, Exception):
            self._run.error = error
            return True
        return False


class Procedures:
    """The calls of :class:`resguard.ollama.OllamaModels`, as steps over one book."""

    def __init__(
        self,
        book: Book,
        *,
        size_factor: float,
        unload_timeout_s: float,
        reclaim_min_idle_s: float,
        reserves: bool,
    ) -> None:
        self.book = book
        self.size_factor = size_factor
        self.unload_timeout_s = unload_timeout_s
        self.reclaim_min_idle_s = reclaim_min_idle_s
        self.reserves = reserves  # the guard has admit(reserve=): hold one while loading
        self._ps = Request("GET /api/ps", "ps", parse=book.infos)
        self.where: Callable[[], str] = lambda: f"at Ollama on {book.host}"  # for refusals

    def loaded(self, within_s: float | None = None) -> Steps[tuple[OllamaModelInfo, ...]]:
        request = self._ps if within_s is None else self._ps._replace(within_s=within_s)
        infos: tuple[OllamaModelInfo, ...] = yield request
        self.book.ps_read_s = self.book.clock()  # the sizes of all loaded ones are learned
        return infos

    def installed(self) -> Steps[dict[str, int]]:
        sizes: dict[str, int] = yield Request("GET /api/tags", "list", parse=_disk_sizes)
        self.book.disk_sizes.update(
            (key, size) for key, size in sizes.items() if _core.learned_bytes(size) is not None
        )
        return sizes

    def estimate_bytes(self, name: str) -> Steps[int]:
        """The learned size (``/api/ps``; read again first, at most every
        :data:`PS_FRESH_S`, in case someone else loaded the model), else the size on disk
        times ``size_factor`` (``/api/tags``, asked only for a model not seen there)."""
        key = canonical(name)
        book = self.book
        if key not in book.sizes and not book.ps_is_fresh():
            yield from self.loaded()  # learns the size of every model loaded now
        known = _core.estimate_bytes(key, book.sizes, book.disk_sizes, self.size_factor)
        if known is not None:
            return known
        installed = yield from self.installed()
        if key in installed and _core.learned_bytes(installed[key]) is None:
            raise OllamaError(
                f"Ollama at {book.host} reports {installed[key]!r} bytes on disk for {name!r}: "
                "not a size its memory can be estimated from (1 byte to 1 PiB)"
            )
        estimate = _core.estimate_bytes(key, {}, installed, self.size_factor)
        if estimate is None:
            raise OllamaError(
                f"model {name!r} is not installed in Ollama at {self.book.host}", status_code=404
            )
        return estimate

    def unload(self, name: str, wait_s: float) -> Steps[int]:
        key = canonical(name)
        before = {i.name: i.size for i in (yield from self.loaded())}
        yield Request(f"unloading {name!r}", "generate", {"model": name, "keep_alive": 0})
        self.book.forget(key)
        started_s = yield NOW
        delay_s = 0.01
        while True:
            left_s = wait_s - ((yield NOW) - started_s)
            try:
                if left_s <= 0:
                    raise OllamaError("unload_timeout passed")
                listed = {i.name for i in (yield from self.loaded(within_s=left_s))}
            except OllamaError as error:
                if (yield NOW) - started_s < wait_s:
                    raise
                raise OllamaError(
                    f"Ollama at {self.book.host} still lists {name!r} "
                    f"{wait_s:g} s after being asked to unload it (is a request "
                    "still running on it?)"
                ) from error
            if key not in listed:
                break
            yield Sleep(min(delay_s, max(wait_s - ((yield NOW) - started_s), 0.0)))
            delay_s = min(delay_s * 2, 0.2)
        emit(
            log,
            logging.INFO,
            "unloaded Ollama model %s (%s)",
            key,
            format_bytes(before.get(key, 0)),
            extra=fields("model_unload", model=key, freed_bytes=before.get(key)),
        )
        return before.get(key, 0)

    def unload_idle(self, min_idle_s: float) -> Steps[list[str]]:
        done = []
        infos = yield from self.loaded()
        for info in self.book.victims(infos, min_idle_s=max(min_idle_s, 1e-9)):
            yield from self.unload(info.name, self.unload_timeout_s)
            done.append(info.name)
        return done

    def free(
        self, need: int, exclude: str | None, min_idle_s: float, wait_s: float | None = None
    ) -> Steps[int]:
        """Unload idle models, least recently used first, until *need* bytes are freed
        (a model whose idle time is unknown counts as the least recently used)."""
        infos = yield from self.loaded()
        candidates = self.book.victims(infos, exclude, min_idle_s, unknown_is_idle=True)
        plan = _core.plan_unloads(candidates, need)
        freed = 0
        for info in [*plan, *candidates[len(plan) :]]:  # more only if the sizes were off
            if freed >= need:
                break
            wait = self.unload_timeout_s if wait_s is None else wait_s
            freed += (yield from self.unload(info.name, wait)) or info.size
        return freed

    def admit(self, name: str, need: int) -> Steps[None]:
        """Make room for a load of *need* bytes, or raise ResourceExhausted."""
        headroom = yield HEADROOM
        shortfall = _core.shortfall_bytes(need, headroom)
        if not shortfall:
            return
        freed = yield from self.free(shortfall, canonical(name), 0.0)
        if headroom + freed < need:
            raise _core.refused(name, need, headroom, freed, self.where())

    def load(
        self, name: str, keep_alive_s: float | None, *, reserve: bool = True
    ) -> Steps[OllamaModelInfo]:
        key = canonical(name)
        started_s = yield NOW
        need = (yield from self.estimate_bytes(name)) if reserve and self.reserves else None
        try:
            yield Request(
                f"loading {name!r}",
                "generate",
                {"model": name, "keep_alive": wire_keep_alive(keep_alive_s)},
                load=True,
                reserve=need,
            )
        except OllamaError as error:  # the server's own check: no room where it runs
            refused = _core.refused_by_server(name, self.book.host, str(error))
            if refused is None:
                raise
            raise refused from error
        self.book.loaded_as(key, keep_alive_s, (yield NOW) - started_s)
        found = _core.find((yield from self.loaded()), key)
        if found is None:
            raise OllamaError(f"Ollama at {self.book.host} loaded {name!r} but does not list it")
        return found

    def ensure(self, name: str, keep_alive_s: float | None) -> Steps[OllamaModelInfo]:
        key = canonical(name)
        found = _core.find((yield from self.loaded()), key)
        if found is not None:
            self.book.touch(key)
            return found
        yield from self.admit(name, (yield from self.estimate_bytes(name)))
        return (yield from self.load(name, keep_alive_s))

    def reclaimable_bytes(self, who: str) -> Steps[int]:
        try:
            infos = yield from self.loaded()
        except OllamaError as error:
            self.book.faults.failed(who, error)
            return 0
        self.book.faults.recovered(who)
        victims = self.book.victims(infos, None, self.reclaim_min_idle_s, unknown_is_idle=True)
        return sum(i.size for i in victims)

    def reclaim(self, who: str, target_bytes: int) -> Steps[int]:
        try:
            freed = yield from self.free(
                max(int(target_bytes), 1),
                None,
                self.reclaim_min_idle_s,
                wait_s=min(self.unload_timeout_s, 5.0),
            )
        except OllamaError as error:
            self.book.faults.failed(who, error)
            return 0
        self.book.faults.recovered(who)
        return freed

    def sample(self, who: str) -> Steps[dict[str, object]]:
        try:
            infos = yield from self.loaded()
        except OllamaError as error:
            self.book.faults.failed(who, error)
            return {"ollama": None}
        self.book.faults.recovered(who)
        return {"ollama": infos}


def _disk_sizes(response: Any) -> dict[str, int]:
    return {canonical(m.model or ""): int(m.size or 0) for m in response.models}
