"""Clocks, injectable so that time-dependent behaviour is tested without sleeping."""

from __future__ import annotations

import time
from typing import Protocol

from resguard._errors import InvalidValue

__all__ = ["Clock", "ManualClock", "monotonic"]


class Clock(Protocol):
    """A callable returning monotonic seconds, like :func:`time.monotonic`."""

    def __call__(self) -> float: ...


monotonic: Clock = time.monotonic


class ManualClock:
    """A clock that moves only when told to; for tests and simulations."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        """Move the clock forward by *seconds*."""
        if not seconds >= 0:  # also refuses NaN
            raise InvalidValue(
                f"seconds={seconds!r}: a clock cannot go back; expected a number of seconds >= 0"
            )
        self.now_s += seconds
