"""What a pickle or copy of a cache carries (its configuration, entries with TTLs as time
left, counters, a subclass's own attributes; never its lock), and rebuilding one from it."""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Any, Final

from resguard.cache._hits import ATOMIC_KEYS

if TYPE_CHECKING:
    from resguard.cache._core import CacheCore

__all__ = ["OWN_ATTRIBUTES", "get_state", "set_state"]

OWN_ATTRIBUTES: Final = frozenset(
    {
        "_max_bytes",
        "_max_items",
        "_size_cap",
        "_ttl_s",
        "_sizeof",
        "_user_sized",
        "_on_evict",
        "_clock",
        "_name",
        "_lock",
        "_acquire",
        "_release",
        "_is_owned",
        "_data",
        "_get",
        "_move_to_end",
        "_fast",
        "_fast_put",
        "_expiry",
        "_bytes",
        "_counters",
        "_hit",
        "_hits",
        "_miss",
        "_keep_dropped",
        "_broken_logged",
        "_process_registered",
    }
)
"""The cache's own instance attributes; pickling carries every other one (a subclass's)."""


def get_state(core: CacheCore) -> dict[str, Any]:
    """What a pickle or copy of *core* carries: no lock, TTLs as time left."""
    nested = core._is_owned()
    with core._lock:
        now = core._clock()
        pairs = core._pairs_locked(nested)
        if core._ttl_s is None:
            entries = [(key, entry[0], entry[1], math.inf) for key, entry in pairs]
        else:
            entries = [(key, entry[0], entry[1], entry[2] - now) for key, entry in pairs]
        counters = core._counters.as_tuple()
    # A subclass's own attributes travel too (copy.copy shares them, deepcopy copies them).
    attributes = {
        name: value for name, value in core.__dict__.items() if name not in OWN_ATTRIBUTES
    }
    return {
        "max_bytes": core._max_bytes,
        "max_items": core._max_items,
        "ttl_s": core._ttl_s,
        "sizeof": core._sizeof,
        "on_evict": core._on_evict,
        "clock": core._clock,
        "name": core._name,
        "entries": entries,
        "counters": counters,
        "attributes": attributes,
    }


def set_state(core: CacheCore, state: dict[str, Any]) -> None:
    """Rebuild *core* from :func:`get_state`'s dict (time left counts from now)."""
    core.__dict__.update(state.get("attributes", {}))
    core._configure(
        state["max_bytes"],
        state["max_items"],
        state["ttl_s"],
        state["sizeof"],
        state["on_evict"],
        state["clock"],
        state["name"],
    )
    ttl_s = core._ttl_s
    now = core._clock()
    live = [entry for entry in state["entries"] if ttl_s is None or entry[3] > 0]
    if any(type(entry[0]) not in ATOMIC_KEYS for entry in live):
        core._lock_hits_locked()  # not yet shared with any thread: no lock needed
    for key, value, size, left_s in live:  # least recently used first
        core._data[key] = (value, size) if ttl_s is None else (value, size, now + left_s)
        core._bytes += size
    if ttl_s is not None:  # the expiry order is the order of time left
        for key, *_ in sorted(live, key=operator.itemgetter(3)):
            core._expiry[key] = None
    core._counters.restore(state["counters"])  # a pickle from before ``broken`` has nine
