"""The one exception hierarchy of resguard.

Everything resguard raises on purpose derives from :class:`ResguardError`; errors from
optional integrations (Docker, Ollama) are translated at the module boundary into the
subclasses below, with the original exception kept as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ConfigError",
    "DockerError",
    "IntegrationError",
    "InvalidState",
    "InvalidType",
    "InvalidValue",
    "OllamaError",
    "ResguardError",
    "ResourceExhausted",
    "UnknownMetric",
]


class ResguardError(Exception):
    """Base class of every error resguard raises on purpose."""


class InvalidValue(ResguardError, ValueError):
    """A value (size, duration, percentage, option) that resguard cannot use.

    The message names the value and shows the accepted forms.
    """


class InvalidType(ResguardError, TypeError):
    """A value of a type resguard does not accept for that argument (e.g. ``True`` as a size)."""


class InvalidState(ResguardError, RuntimeError):
    """A call that is not allowed in the object's current state (e.g. re-entering a
    running profile, starting a stopped monitor twice)."""


class UnknownMetric(InvalidValue):
    """A rule names a snapshot field that does not exist; raised when the policy is built."""


class ConfigError(InvalidValue):
    """A configuration file (budgets) has an unknown key or a bad value.

    ``path``, ``key`` and ``value`` say where.
    """

    def __init__(
        self, message: str, *, path: str | None = None, key: str | None = None, value: object = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.key = key
        self.value = value


class ResourceExhausted(ResguardError):
    """Work was refused because memory, CPU or concurrency is short, or could not be known.

    ``reason`` is one of :data:`resguard.guard.REFUSAL_REASONS`: ``"memory"`` (headroom or
    the guard's memory share too small), ``"reservation"`` (it would fit but for what calls
    in flight reserved), ``"rss"`` (this process's RSS would pass, or passed, the guard's
    ``rss``), ``"level"`` (the Monitor's verdict is at or above the guard's level),
    ``"concurrency"`` (``max_concurrent`` calls in flight), ``"queued"`` (others wait first
    and this call may not wait), ``"timeout"`` (it waited its whole ``wait``;
    ``numbers["cause"]`` says what it waited on) or ``"unknown"`` (a figure the guard needs
    is unknown or the Monitor's state is stale, with ``on_unknown="refuse"``).
    ``retry_after`` is the number of seconds after which trying again is sensible, and
    ``numbers`` the figures that decided it (``None`` where unknown).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        retry_after: float = 1.0,
        numbers: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after
        self.numbers: dict[str, Any] = dict(numbers or {})

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only fields: the default reduce would call ResourceExhausted(message)
        # and fail, so a refusal could not cross a process pool
        return (
            _rebuild_refusal,
            (type(self), str(self), self.reason, self.retry_after, self.numbers),
            self.__dict__,
        )


def _rebuild_refusal(
    cls: type[ResourceExhausted],
    message: str,
    reason: str,
    retry_after: float,
    numbers: Mapping[str, Any],
) -> ResourceExhausted:
    return cls(message, reason=reason, retry_after=retry_after, numbers=numbers)


class IntegrationError(ResguardError):
    """An external service (Docker engine, Ollama server) failed or could not be reached."""


class DockerError(IntegrationError):
    """The Docker engine is down, its socket is missing, or it refused a request."""


class OllamaError(IntegrationError):
    """The Ollama server is down, too slow, answered an error, or dropped the connection.

    ``status_code`` is the HTTP status when the server answered, else ``None``.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
