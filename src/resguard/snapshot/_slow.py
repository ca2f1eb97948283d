"""Values that change slowly (PSI, load averages, swap on the psutil backend, macOS's
pressure level), read at most once per *max_age_s* by either backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["SlowValues"]

_T = TypeVar("_T")


class SlowValues:
    """A cache of reads by key, each kept for *max_age_s* seconds of the caller's clock:
    the kernel recomputes PSI and load averages every 2 to 5 s, so reading them on every
    sample costs time and tells nothing new. Not locked (the sampler's lock covers it)."""

    __slots__ = ("_max_age_s", "_values")

    def __init__(self, max_age_s: float) -> None:
        self._max_age_s = max_age_s
        self._values: dict[str, tuple[float, Any]] = {}

    def get(self, key: str, now_s: float, read: Callable[[], _T]) -> _T:
        """What ``read()`` returned for *key* less than *max_age_s* before *now_s*, else
        what it returns now (kept from *now_s* on)."""
        previous = self._values.get(key)
        if previous is not None and now_s - previous[0] < self._max_age_s:
            value: _T = previous[1]
            return value
        value = read()
        self._values[key] = (now_s, value)
        return value

    def clear(self) -> None:
        """Forget every value (after a fork: the child reads afresh)."""
        self._values.clear()
