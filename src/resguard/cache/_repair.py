"""Mending a cache whose keys turned out broken: a key whose hash or equality changed after
it was stored can no longer be found, and makes the OrderedDicts raise even on iteration.
:func:`repair_locked` drops such entries and keeps the rest in order."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from resguard._modules.log import emit, get_logger

if TYPE_CHECKING:
    from resguard.cache._core import CacheCore

__all__ = ["repair_locked"]

logger = get_logger("resguard.cache")


def repair_locked(core: CacheCore) -> None:
    """Drop every entry of *core* whose key cannot be found by its hash any more; O(n), rare;
    under the lock.

    ``popitem`` finds an entry by the hash it was stored with, so it empties both
    OrderedDicts whatever their keys do now; healthy keys go back in the same order
    (in place). It also mends an OrderedDict whose order lost an entry its dict still
    holds.
    """
    data, expiry = core._data, core._expiry
    broken: set[int] = set()
    for key in list(dict.keys(data)):  # dict's own iteration does not look keys up
        try:
            if key not in data:
                broken.add(id(key))
        except Exception:
            broken.add(id(key))
    pairs = _drain(data)
    expiry_keys = [key for key, _ in _drain(expiry)]
    core._bytes = 0
    kept: set[int] = set()
    for key, entry in pairs:
        if id(key) not in broken:
            try:
                data[key] = entry
            except Exception:
                pass
            else:
                core._bytes += entry[1]
                kept.add(id(key))
                continue
        core._counters.broken += 1
    for key in expiry_keys:
        if id(key) in kept:
            try:
                expiry[key] = None
            except Exception:  # it went back into _data a moment ago; let it not expire
                pass
    core._resync_locked()
    if len(kept) < len(pairs) and not core._broken_logged:
        core._broken_logged = True
        emit(
            logger,
            logging.WARNING,
            "cache %r dropped an entry whose key can no longer be found (its "
            "hash or equality changed after it was stored); keys must not "
            "change while cached; stats().broken counts these",
            core._name,
        )


def _drain(ordered: OrderedDict[Any, Any]) -> list[tuple[Any, Any]]:
    """Empty *ordered*, returning its pairs in order (then any its order had lost)."""
    pairs = []
    while True:
        try:
            pairs.append(ordered.popitem(last=False))
        except Exception:  # empty, or a colliding key's __eq__ raised: the dict has the rest
            break
    pairs.extend(dict.items(ordered))  # in the dict but no longer in the order
    OrderedDict.clear(ordered)
    return pairs
