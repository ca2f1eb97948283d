"""The sync face: :class:`OllamaModels` performs the procedures' I/O by calling."""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio.to_thread

from resguard.ollama._client import ollama
from resguard.ollama._face import Face, headroom_from
from resguard.ollama._names import canonical, seconds
from resguard.ollama._steps import HEADROOM, Request, Run, Sleep, Steps
from resguard.ollama._transport import BoundedTransport
from resguard.snapshot import OllamaModelInfo

__all__ = ["OllamaModels"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class OllamaModels(Face):
    """Manage the models of one Ollama server through the official sync client.

    ``host`` as the ``ollama`` client takes it (``None``: ``$OLLAMA_HOST`` or
    ``127.0.0.1:11434``; a host that is not one is an InvalidValue), or a ready ``client``
    (which keeps its own transport: the bounds below then do not apply; ``host`` then
    only names its server in messages). ``timeout`` (default 10 s) is the deadline of
    every request, connect and whole answer together; ``load_timeout`` (default 5 min)
    that of a request that loads a model; ``max_answer`` (default 8 MiB) the largest
    answer read. ``keep_alive`` is what resguard asks for when it loads a model (``None``:
    the server's default); ``default_keep_alive`` tells resguard the server's
    ``OLLAMA_KEEP_ALIVE`` so idle times of models loaded by others can be derived.
    ``headroom`` is where admission reads the room for a model (a
    :class:`resguard.models.HeadroomSource`); without it, ``guard`` when given, else
    :class:`resguard.ollama.OllamaHeadroom` for the host: where Ollama runs, not this
    process's cgroup.
    ``clock`` (monotonic seconds) times resguard's own record of use; ``wall_clock``
    (epoch seconds) is what the server's ``expires_at`` is compared with.
    """

    _client_type = ollama.Client
    _transport_type = BoundedTransport
    client: ollama.Client

    @classmethod
    def _serving(cls, face: Face) -> OllamaModels:
        """A sync face over *face*'s book, for the callers of an async face in threads."""
        models = cls.__new__(cls)
        models.timeout_s = face.timeout_s
        models.load_timeout_s = face.load_timeout_s
        models.max_answer_bytes = face.max_answer_bytes
        models._owns_client = True
        models.client = models._make_client(face._url)
        models._share(face._book, face._steps, face.guard, face._url, face.headroom)
        return models

    def _threads(self) -> OllamaModels:
        return self

    def _run(self, steps: Steps[T]) -> T:
        """Perform a procedure's I/O in this thread, by calling."""
        with Run(steps) as run:
            for effect in run:
                with run.replying():
                    run.value = self._perform(effect)
        return run.result

    def _perform(self, effect: object) -> Any:
        if isinstance(effect, Request):
            with self._reservation(effect.reserve), self._bounds(effect):
                return effect.parse(getattr(self.client, effect.method)(**effect.kwargs))
        if isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            return None
        if effect is HEADROOM:
            return headroom_from(self.headroom, deadline_s=self.timeout_s)
        return time.monotonic()

    def close(self) -> None:
        """Take this object off the ladder and close the HTTP client (when resguard made it)."""
        self._closed = True
        if self._registry is not None:
            self._registry.unregister(self)
        if self._owns_client:
            self.client.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> OllamaModels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def loaded(self) -> tuple[OllamaModelInfo, ...]:
        """The models in memory now (``/api/ps``), longest remaining keep-alive first.

        Returns or raises OllamaError within ``timeout``."""
        return self._run(self._steps.loaded())

    def installed(self) -> dict[str, int]:
        """Installed models and their size on disk in bytes (``/api/tags``), within
        ``timeout``."""
        return self._run(self._steps.installed())

    def estimate_bytes(self, name: str) -> int:
        """Memory *name* takes loaded: as Ollama last reported, else disk size x size_factor."""
        return self._run(self._steps.estimate_bytes(name))

    def unload(self, name: str, *, timeout: float | str | None = None) -> int:
        """Unload *name* and wait until ``/api/ps`` no longer lists it.

        Returns the bytes Ollama reported for it (0 when it was not loaded). Raises
        OllamaError when the server fails or the model is still listed after *timeout*
        (default ``unload_timeout``); the whole call ends within ``2 x timeout`` plus that.
        """
        return self._run(self._steps.unload(name, self._unload_wait_s(timeout)))

    def unload_idle(self, min_idle: float | str) -> list[str]:
        """Unload the models idle for at least *min_idle*; return their names."""
        return self._run(self._steps.unload_idle(seconds(min_idle, "min_idle", zero=True)))

    def ensure(self, name: str, *, keep_alive: float | str | None = None) -> OllamaModelInfo:
        """Make sure *name* is loaded; load it after an admission check when it is not.

        When the machine lacks room for it, idle models (least recently used first) are
        unloaded; when that is not enough, ResourceExhausted is raised and nothing loads.
        """
        return self._run(self._steps.ensure(name, self._keep_alive(keep_alive)))

    @contextlib.contextmanager
    def using(
        self, name: str, *, keep_alive: float | str | None = None
    ) -> Iterator[OllamaModelInfo]:
        """Ensure *name* is loaded and mark it in use (never unloaded by resguard) meanwhile."""
        with self._book.mark_in_use(canonical(name)):
            yield self.ensure(name, keep_alive=keep_alive)

    def uses(self, name: str, *, keep_alive: float | str | None = None) -> Callable[[F], F]:
        """Decorator for a function (sync or async) that calls model *name*."""
        canonical(name)

        def decorate(fn: F) -> F:
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    with self._book.mark_in_use(canonical(name)):
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
