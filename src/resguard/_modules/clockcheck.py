"""Check an injected clock once, when it is given: a clock answering NaN would make every
state look fresh forever (``age > stale_after`` is never true for NaN)."""

from __future__ import annotations

import math
from collections.abc import Callable

from resguard._errors import InvalidType, InvalidValue
from resguard.units import shown

__all__ = ["checked_clock"]


def checked_clock(clock: object, what: str = "clock") -> Callable[[], float]:
    """*clock* if it is callable and its reading now is a finite number, else an error
    naming it."""
    if not callable(clock):
        raise InvalidType(
            f"{what}={shown(clock)} is not callable; expected a function returning "
            "monotonic seconds, e.g. time.monotonic"
        )
    try:
        reading = clock()
    except Exception as error:  # a callable that is no clock: type, a function of one argument
        raise InvalidType(
            f"{what}={shown(clock)} could not be read ({type(error).__name__}: {error}); "
            "expected a function of no arguments returning monotonic seconds, e.g. "
            "time.monotonic"
        ) from error
    if isinstance(reading, bool) or not isinstance(reading, (int, float)):
        raise InvalidType(
            f"{what}={shown(clock)} returned {shown(reading)}, not monotonic "
            "seconds; expected a function like time.monotonic"
        )
    try:
        finite = math.isfinite(reading)
    except OverflowError:
        finite = False
    if not finite:
        raise InvalidValue(
            f"{what}={shown(clock)} returned {shown(reading)}, not a finite "
            "number of monotonic seconds; expected a function like "
            "time.monotonic"
        )
    return clock
