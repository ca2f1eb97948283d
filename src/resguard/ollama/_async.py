"""The async face: :class:`AsyncOllamaModels` performs the procedures' I/O by awaiting."""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread

from resguard._errors import InvalidType
from resguard.ollama._client import ollama
from resguard.ollama._face import Face, headroom_from
from resguard.ollama._names import canonical, seconds
from resguard.ollama._steps import HEADROOM, Request, Run, Sleep, Steps
from resguard.ollama._sync import OllamaModels
from resguard.ollama._transport import AsyncBoundedTransport
from resguard.snapshot import OllamaModelInfo

__all__ = ["AsyncOllamaModels"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class AsyncOllamaModels(Face):
    """:class:`OllamaModels` on ``ollama.AsyncClient``: the same arguments and methods,
    awaited, running the same procedures.

    The ladder, the Monitor source and lazy models are called from threads: from an
    AnyIO worker thread (the Monitor's task loops, ``async with`` a lazy model) they run
    on the event loop through this object's one async client; from any other thread
    through a sync client over this object's record, made when first needed (the
    ``sync`` attribute).
    """

    _client_type = ollama.AsyncClient
    _transport_type = AsyncBoundedTransport
    client: ollama.AsyncClient

    @property
    def sync(self) -> OllamaModels:
        """The sync face that serves this object's callers in threads."""
        return self._threads()

    def _in_thread(self, steps: Callable[[], Steps[T]]) -> T:
        """Run *steps()* for a caller in a thread. In an AnyIO worker thread (how the
        Monitor's task loops and ``async with`` a lazy model call) it runs on the event
        loop through this object's async client; in another thread (or when the loop has
        ended) through the sync face, whose client is made when first needed."""
        try:
            failed, value = anyio.from_thread.run(self._settled, steps)
        except RuntimeError:  # not an AnyIO worker thread, or its event loop has ended
            return self._threads()._run(steps())
        if failed:
            raise value
        return value  # type: ignore[no-any-return]

    async def _settled(self, steps: Callable[[], Steps[T]]) -> tuple[bool, Any]:
        """The outcome of ``_run(steps())``: an Exception is returned, so that a
        RuntimeError from anyio itself is the only one that reaches _in_thread."""
        try:
            return False, await self._run(steps())
        except Exception as error:
            return True, error

    def _threads(self) -> OllamaModels:
        with self._lock:
            if self._sync_face is None:
                self._sync_face = OllamaModels._serving(self)
            return self._sync_face

    async def _run(self, steps: Steps[T]) -> T:
        """Perform a procedure's I/O in this task, by awaiting."""
        with Run(steps) as run:
            for effect in run:
                with run.replying():
                    run.value = await self._perform(effect)
        return run.result

    async def _perform(self, effect: object) -> Any:
        if isinstance(effect, Request):
            async with _as_async(self._reservation(effect.reserve)):
                with self._bounds(effect):
                    answer = await getattr(self.client, effect.method)(**effect.kwargs)
                    return effect.parse(answer)
        if isinstance(effect, Sleep):
            await anyio.sleep(effect.seconds)
            return None
        if effect is HEADROOM:
            ask = functools.partial(headroom_from, self.headroom, deadline_s=self.timeout_s)
            return await anyio.to_thread.run_sync(ask)
        return time.monotonic()

    async def aclose(self) -> None:
        """Take this object off the ladder and close the HTTP clients."""
        self._closed = True
        if self._registry is not None:
            self._registry.unregister(self)
        if self._owns_client:
            await self.client.close()  # type: ignore[no-untyped-call]
        if self._sync_face is not None:
            self._sync_face.close()

    async def __aenter__(self) -> AsyncOllamaModels:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def loaded(self) -> tuple[OllamaModelInfo, ...]:
        """The models in memory now (``/api/ps``); see :meth:`OllamaModels.loaded`."""
        return await self._run(self._steps.loaded())

    async def installed(self) -> dict[str, int]:
        """Installed models and their size on disk (``/api/tags``)."""
        return await self._run(self._steps.installed())

    async def estimate_bytes(self, name: str) -> int:
        """Memory *name* takes loaded; see :meth:`OllamaModels.estimate_bytes`."""
        return await self._run(self._steps.estimate_bytes(name))

    async def unload(self, name: str, *, timeout: float | str | None = None) -> int:
        """Unload *name* and wait until ``/api/ps`` no longer lists it."""
        return await self._run(self._steps.unload(name, self._unload_wait_s(timeout)))

    async def unload_idle(self, min_idle: float | str) -> list[str]:
        """Unload the models idle for at least *min_idle*; return their names."""
        return await self._run(self._steps.unload_idle(seconds(min_idle, "min_idle", zero=True)))

    async def ensure(self, name: str, *, keep_alive: float | str | None = None) -> OllamaModelInfo:
        """Make sure *name* is loaded, after an admission check; see
        :meth:`OllamaModels.ensure`."""
        return await self._run(self._steps.ensure(name, self._keep_alive(keep_alive)))

    @contextlib.asynccontextmanager
    async def using(
        self, name: str, *, keep_alive: float | str | None = None
    ) -> AsyncIterator[OllamaModelInfo]:
        """Ensure *name* is loaded and mark it in use meanwhile."""
        with self._book.mark_in_use(canonical(name)):
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


@contextlib.asynccontextmanager
async def _as_async(manager: Any) -> AsyncIterator[None]:
    if hasattr(manager, "__aenter__"):
        async with manager:
            yield
    else:
        with manager:
            yield
