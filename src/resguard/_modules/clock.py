"""Clocks, injectable so that time-dependent behaviour is tested without sleeping."""

from __future__ import annotations

import math
import time
from typing import Protocol

from resguard._errors import InvalidType, InvalidValue
from resguard.units import shown

__all__ = ["Clock", "ManualClock", "monotonic"]


class Clock(Protocol):
    """A callable returning monotonic seconds, like :func:`time.monotonic`."""

    def __call__(self) -> float: ...


monotonic: Clock = time.monotonic


class ManualClock:
    """A clock that moves only when told to; for tests and simulations."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s: float = _seconds(start_s, "start_s", "a finite number of seconds")

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        """Move the clock forward by *seconds*."""
        step = _seconds(seconds, "seconds", "a finite number of seconds >= 0")
        if step < 0:
            raise InvalidValue(
                f"seconds={seconds!r}: a clock cannot go back; expected a number of seconds >= 0"
            )
        self.now_s += step


def _seconds(value: object, what: str, expected: str) -> float:
    """*value* as finite seconds, else an error naming *what* (a str, a bool, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType(f"{what}={shown(value)} is not a number; expected {expected}")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond a float
        seconds = math.inf
    if not math.isfinite(seconds):
        raise InvalidValue(f"{what}={shown(value)} is not finite; expected {expected}")
    return seconds
