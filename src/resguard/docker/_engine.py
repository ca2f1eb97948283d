"""One Docker engine's client: connected on first use, every request ended by a deadline,
and the SDK's exceptions turned into :class:`~resguard.DockerError` at this boundary."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import docker as _sdk
import docker.errors as _sdk_errors
import requests.exceptions as _requests_errors

from resguard._errors import DockerError

__all__ = ["Engine", "engine_errors", "is_not_found"]

_T = TypeVar("_T")
_R = TypeVar("_R")


_ENGINE_ERRORS: tuple[type[Exception], ...] = (
    _sdk_errors.DockerException,
    _requests_errors.RequestException,
    OSError,
    ValueError,  # requests' JSONDecodeError: an empty or cut-off answer
)


_ADDRESS = re.compile(r" (?:object )?at 0x[0-9a-fA-F]+")


def _said(exc: BaseException) -> str:
    """The exception's text without object addresses (``<... object at 0x7f…>``), so the
    same fault reads the same on every call and is logged once."""
    return _ADDRESS.sub("", str(exc))


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Turn the SDK's and requests' exceptions into :class:`DockerError` naming *what*."""
    try:
        yield
    except DockerError:
        raise
    except _sdk_errors.NotFound as exc:
        raise DockerError(
            f"{what}: no such container or image "
            f"({_said(exc) if exc.explanation is None else exc.explanation})"
        ) from exc
    except _sdk_errors.APIError as exc:
        raise DockerError(
            f"{what}: the Docker engine refused: "
            f"{_said(exc) if exc.explanation is None else exc.explanation}"
        ) from exc
    except _ENGINE_ERRORS as exc:
        if _timed_out(exc):
            raise DockerError(
                f"{what}: the Docker engine did not answer in time ({_said(exc)}); is dockerd hung?"
            ) from exc
        if isinstance(exc, json.JSONDecodeError):  # an empty or cut-off answer
            raise DockerError(
                f"{what}: the Docker engine's answer was not JSON ({_said(exc)})"
            ) from exc
        raise DockerError(
            f"{what}: the Docker engine is not reachable ({_said(exc)}); is "
            "dockerd running, and does DOCKER_HOST point at it?"
        ) from exc


def _deadline_passed(what: str, deadline_s: float) -> DockerError:
    return DockerError(
        f"{what}: the Docker engine did not answer in time (the whole answer "
        f"took past the {deadline_s:g} s deadline); is dockerd hung?"
    )


def _timed_out(exc: BaseException) -> bool:
    """Whether a request timed out (the SDK wraps some in an exception of its own)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, _requests_errors.Timeout):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_not_found(exc: DockerError) -> bool:
    """Whether the engine said "no such container" (gone since it was listed)."""
    return isinstance(exc.__cause__, _sdk_errors.NotFound)


class Engine:
    """A ``docker.DockerClient`` (given, or connected on first use to *base_url* or the
    environment's engine) whose every request ends within *timeout_s* (a client passed in:
    its own timeout); *max_workers* requests at once through :meth:`map`."""

    def __init__(
        self, client: Any, base_url: str | None, timeout_s: float, max_workers: int
    ) -> None:
        self._client = client
        self.own_client = client is None
        self._base_url = base_url
        self.timeout_s = timeout_s
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._stuck: list[threading.Thread] = []

    @property
    def client(self) -> Any:
        """The ``docker.DockerClient`` in use (connected on first use)."""
        with self._lock:
            if self._client is not None:
                return self._client
        pool = max(10, self._max_workers)

        def connect() -> Any:
            if self._base_url is not None:
                return _sdk.DockerClient(
                    base_url=self._base_url,
                    max_pool_size=pool,
                    timeout=self.timeout_s,  # type: ignore[arg-type]  # float works
                )
            return _sdk.from_env(max_pool_size=pool, timeout=self.timeout_s)  # type: ignore[arg-type]

        client = self.call("connecting to the Docker engine", connect)
        with self._lock:
            current: Any = self._client
            if current is None:
                self._client = current = client
        if current is not client:
            with contextlib.suppress(Exception):  # another thread connected meanwhile
                client.close()
        return current

    def deadline_s(self, extra_s: float = 0.0) -> float:
        """How long one request may take: ``timeout_s`` (a client passed in: its own
        timeout), plus *extra_s*."""
        if not self.own_client:
            given = getattr(getattr(self._client, "api", None), "timeout", None)
            if isinstance(given, (int, float)) and not isinstance(given, bool) and given > 0:
                return float(given) + extra_s
        return self.timeout_s + extra_s

    def call(self, what: str, fn: Callable[[], _R], extra_s: float = 0.0) -> _R:
        """``fn()``, one request to the engine, ended by :meth:`deadline_s` for the whole
        request; its errors as :class:`DockerError` naming *what*.

        The SDK's timeout bounds each socket read, so an engine that drips its answer one
        byte at a time would stretch it for ever: the request runs in a helper thread that
        is abandoned at the deadline (it ends when the engine stops or finishes). While
        such a request is still stuck, further calls fail at once rather than leaving one
        more stuck thread each.
        """
        deadline_s = self.deadline_s(extra_s)
        with self._lock:
            self._stuck = [thread for thread in self._stuck if thread.is_alive()]
            if self._stuck:
                raise DockerError(
                    f"{what}: the Docker engine did not answer in time (an "
                    "earlier request is still unanswered past its deadline); "
                    "is dockerd hung?"
                )
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append((True, fn()))
            except BaseException as exc:  # handed to the caller below
                outcome.append((False, exc))

        thread = threading.Thread(target=run, name="resguard-docker-request", daemon=True)
        thread.start()
        thread.join(deadline_s)
        if not outcome:
            with self._lock:
                self._stuck.append(thread)
            raise _deadline_passed(what, deadline_s)
        done, value = outcome[0]
        if done:
            return cast("_R", value)
        with engine_errors(what):
            raise value

    def map(self, fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """*fn* over *items*, concurrently when there is more than one."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self._max_workers, thread_name_prefix="resguard-docker"
                )
            executor = self._executor
        return list(executor.map(fn, items))

    def close(self) -> None:
        """Stop the worker threads and close a client this object opened itself."""
        with self._lock:
            executor, self._executor = self._executor, None
            client = self._client if self.own_client else None
            if client is not None:
                self._client = None
        if executor is not None:
            executor.shutdown(wait=True)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
