"""Where a policy changes its mind about memory: its memory edges, in bytes of ``memory.used``.

A Monitor paces its polling by the distance from the current use to the nearest edge
(``monitor._pace``) and arms the kernel's memory thresholds at them (cgroup v1
``cgroup.event_control``), so it needs every ``memory.used`` value at which a rule of the
policy could change its decision, resolved against the current ``memory.limit``:

* :class:`~resguard.rules.Threshold` on ``memory.used``, ``memory.percent`` or
  ``memory.available``: its firing value and its clear value (a firing rule clears there);
  ``memory.percent >= P`` is ``used = P % of limit``, ``memory.available < X`` is
  ``used = limit - X`` (the limit binds: ``available`` is ``limit - used`` unless the host
  has less free than the limit leaves, when the rule fires earlier than its edge);
* :class:`~resguard.rules.LeakDetector` on one of those metrics with ``only_above``: the
  figure below which it is quiet (its growth judges a trend, which has no edge);
* a rule of your own (a budget on the machine's memory) that has a
  ``memory_edges_bytes(memory) -> Iterable[int]`` method: what it returns, numbers
  (``int`` or ``float``) read up to :data:`MAX_OWN_EDGES` of them (an endless or huge
  iterable is never read to its end: the values past the cap are not asked for). A method
  that raises, or whose answer is not an iterable of numbers (a ``str``, ``bytes``, a
  ``bool`` or ``None`` among them), is passed over whole, none of its values used (a
  ``bool`` is never an edge): pacing is no place to fail a policy. A number out of range
  (below 0, above the limit, NaN, or too big for a float) is no edge, like a built-in
  rule's.

:class:`~resguard.rules.TimeToLimit` judges the fill rate, not a level: it has no edge
(the pacing's own fill rate covers it). Rules on other metrics (swap, PSI, CPU, processes,
heat) have none either. An edge that needs the limit is skipped while the limit is
unknown; a fixed byte figure (``memory.used > "2GiB"``) is kept, and only edges from 0 to
the limit (when known) count.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

from resguard._errors import InvalidType
from resguard.rules._figures import Bound
from resguard.rules._threshold import Threshold
from resguard.rules._trends import LeakDetector
from resguard.snapshot import MemoryInfo
from resguard.units import shown

if TYPE_CHECKING:
    from resguard.rules._policy import Policy
    from resguard.rules._verdict import Rule

__all__ = ["MAX_OWN_EDGES", "memory_edges_bytes", "rules_edges_bytes"]

MAX_OWN_EDGES: Final = 1024
"""The most values read from one rule's own ``memory_edges_bytes`` answer: the first
ones count, the rest are never asked for (an endless iterator must not hang the Monitor's
fast loop, nor a million values slow each tick)."""

_MEMORY_METRICS: Final = frozenset({"memory.used", "memory.percent", "memory.available"})
_FAR: Final = float(2**63)  # the ceiling of an edge while the limit is unknown (NaN, inf fail)


def memory_edges_bytes(policy: Policy, memory: MemoryInfo) -> tuple[int, ...]:
    """Every ``memory.used`` value (bytes, sorted, unique, from 0 to ``memory.limit``) at
    which one of *policy*'s rules changes its mind, resolved against *memory*'s limit;
    ``()`` when there is none (or the limit they need is unknown). Pure; cached per
    policy and limit (:meth:`Policy.memory_edges_bytes
    <resguard.rules.Policy.memory_edges_bytes>` is the same)."""
    method = getattr(policy, "memory_edges_bytes", None)
    if not callable(method):
        raise InvalidType(f"policy={shown(policy)} is not a resguard.rules.Policy")
    edges: tuple[int, ...] = method(memory)
    return edges


def rules_edges_bytes(rules: Iterable[Rule], memory: MemoryInfo) -> tuple[int, ...]:
    """The memory edges of *rules* under *memory*'s limit (see the module docstring);
    uncached: :meth:`Policy.memory_edges_bytes` keeps the last answer."""
    limit = memory.limit
    edges: list[float | int] = []
    for rule in rules:
        if isinstance(rule, Threshold):
            if rule.metric in _MEMORY_METRICS:
                for bound in (rule._value, rule._clear):
                    edges.append(_used_at(rule.metric, _resolved(bound, limit), limit))
        elif isinstance(rule, LeakDetector):
            if rule.metric in _MEMORY_METRICS and rule.only_above is not None:
                edges.append(_used_at(rule.metric, rule.only_above, limit))
        elif callable(own := getattr(rule, "memory_edges_bytes", None)):
            edges.extend(_own_edges(own, memory))
    ceiling = _FAR if limit is None else limit
    return tuple(sorted({math.ceil(edge) for edge in edges if 0 <= edge <= ceiling}))


def _resolved(bound: Bound, limit: int | None) -> float:
    """A threshold figure in its metric's unit (a share of *limit* resolved; NaN unknown)."""
    if bound.fixed is not None:
        return bound.fixed
    return math.nan if limit is None else bound.fraction * limit


def _used_at(metric: str, figure: float, limit: int | None) -> float:
    """``memory.used`` where *metric* equals *figure* (a percent for ``memory.percent``,
    bytes otherwise); NaN where that needs the unknown *limit*."""
    if metric == "memory.used":
        return figure
    if limit is None:
        return math.nan
    if metric == "memory.percent":
        return limit * figure / 100
    return limit - figure  # memory.available


def _own_edges(
    method: Callable[[MemoryInfo], Iterable[object]], memory: MemoryInfo
) -> list[float | int]:
    """The edges a rule of its own gives through its ``memory_edges_bytes(memory)``: its
    first :data:`MAX_OWN_EDGES` numbers, ints kept exact; none at all when it raises or
    answers anything but numbers (it must not stop the pacing, nor be half-used)."""
    try:
        answer = method(memory)
        if isinstance(answer, (str, bytes, bytearray, memoryview)):
            return []  # iterable, but of characters or bytes: not edges
        values = list(itertools.islice(answer, MAX_OWN_EDGES))
    except Exception:
        return []
    numbers: list[float | int] = []
    for value in values:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return []
        numbers.append(value)
    return numbers
