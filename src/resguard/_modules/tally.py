"""A count that threads raise without a lock (the caches' hit and miss counts, the guards'
lock-free admissions)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

__all__ = ["Tally"]


class Tally:
    """A count that threads raise without a lock: :attr:`tick` is ``itertools.count``'s
    ``__next__``, one C call that runs no Python code, so under the GIL no two ticks can
    interleave and none is lost. Read and set it only under the owner's lock (a read is a
    tick too, which it subtracts; two reads at once would each miss the other's)."""

    __slots__ = ("_offset", "count", "tick")

    count: Iterator[int]
    """The ``itertools.count`` under it: ``next(count)`` is :attr:`tick` (and CPython 3.11
    specialises that call, where a call of the bound ``__next__`` it does not)."""
    tick: Callable[[], int]
    """Count one (returns a number that is no use to the caller)."""

    def __init__(self) -> None:
        self.count = itertools.count()
        self.tick = self.count.__next__
        self._offset = 0  # ticks that were reads, less the value a set() started from

    def get(self) -> int:
        """The ticks so far (under the owner's lock)."""
        value = self.tick() - self._offset
        self._offset += 1
        return value

    def set(self, value: int) -> None:
        """Make the count *value* now (under the owner's lock)."""
        self._offset = self.tick() + 1 - value
