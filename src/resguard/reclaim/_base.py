"""What every rung of the reclaim ladder is: a cost rank and the Reclaimable protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from resguard._errors import InvalidType

__all__ = ["Cost", "Reclaimable", "shown"]


class Cost:
    """Cost ranks on the ladder; a reclaimable's ``cost`` is a float, lower goes first.

    Models use ``MODEL + reload time in seconds`` so that a model that reloads quickly is
    unloaded before one that takes a minute, and every model after every cache.
    """

    GC = 0.0
    CACHE = 1.0
    MODEL = 10.0
    PROCESS = 1000.0

    def __new__(cls, *args: object, **kwargs: object) -> Cost:
        raise InvalidType(
            "Cost is a set of ranks, not a value to construct; expected one "
            "of Cost.GC, Cost.CACHE, Cost.MODEL, Cost.PROCESS (or any float)"
        )


@runtime_checkable
class Reclaimable(Protocol):
    """Something that holds memory it can give back on request."""

    @property
    def name(self) -> str:
        """A short name for logs and metrics."""
        ...

    @property
    def cost(self) -> float:
        """Where it stands on the ladder; see :class:`Cost`."""
        ...

    def reclaimable_bytes(self) -> int:
        """Bytes it could free now (its own accounting; the ladder re-measures)."""
        ...

    def reclaim(self, target_bytes: int) -> int:
        """Free about *target_bytes* (more is fine) and return the bytes it believes it freed."""
        ...


def shown(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__, or an int too long to print
        return f"<a {type(value).__name__}>"
    return text if len(text) <= 200 else text[:200] + "..."
