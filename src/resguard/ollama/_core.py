"""The decisions of resguard's Ollama support, as pure functions: no I/O, no locks, no
clock reads (the time is an argument). Both faces, sync and async, act on what they say."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from resguard._errors import ResourceExhausted
from resguard.ollama._names import FOREVER_AFTER_S
from resguard.snapshot import OllamaModelInfo
from resguard.units import format_bytes

__all__ = [
    "estimate_bytes",
    "find",
    "idle_since",
    "plan_unloads",
    "refused",
    "shortfall_bytes",
    "victims",
]


def idle_since(
    *,
    wall_now: float,
    busy: bool,
    expires_at: float | None,
    keep_alive_s: float | None,
    idle_for_s: float | None,
) -> float | None:
    """Since when (wall-clock epoch seconds) a model has been idle, or ``None`` if unknown.

    The evidence is ``expires_at - keep_alive`` when the keep-alive in force is known (and
    finite, and the model does not stay "forever"), and *idle_for_s*, the time since
    resguard last used the model by its own monotonic clock; the later of the two wins. A
    model in use is idle since now.
    """
    if busy:
        return wall_now
    evidence = []
    if (
        expires_at is not None
        and keep_alive_s is not None
        and math.isfinite(keep_alive_s)
        and expires_at - wall_now < FOREVER_AFTER_S
    ):
        evidence.append(min(wall_now, expires_at - keep_alive_s))
    if idle_for_s is not None:
        evidence.append(wall_now - idle_for_s)
    return max(evidence) if evidence else None


def victims(
    infos: Sequence[OllamaModelInfo],
    *,
    wall_now: float,
    busy: Callable[[str], bool],
    exclude: str | None = None,
    min_idle_s: float = 0.0,
    unknown_is_idle: bool = False,
) -> list[OllamaModelInfo]:
    """The models that may be unloaded, least recently used first (an unknown idle time
    counts as the oldest): not *exclude*, not busy, idle for at least *min_idle_s* (a
    model whose idle time is unknown only when *min_idle_s* is 0 or *unknown_is_idle*:
    the ladder's view, where a model nobody here used is the least recently used)."""
    out = [
        info
        for info in infos
        if info.name != exclude
        and not busy(info.name)
        and (
            min_idle_s <= 0
            or (info.idle_since is None and unknown_is_idle)
            or (info.idle_since is not None and wall_now - info.idle_since >= min_idle_s)
        )
    ]
    return sorted(out, key=lambda i: -math.inf if i.idle_since is None else i.idle_since)


def plan_unloads(candidates: Sequence[OllamaModelInfo], need_bytes: int) -> list[OllamaModelInfo]:
    """Which of *candidates* (in their order) to unload to free *need_bytes*: the shortest
    prefix whose sizes add up to it, or all of them when they are not enough."""
    plan, freed = [], 0
    for info in candidates:
        if freed >= need_bytes:
            break
        plan.append(info)
        freed += info.size
    return plan


def shortfall_bytes(need_bytes: int, headroom_bytes: int | None) -> int:
    """How much must be freed before a load of *need_bytes* fits (0: it fits, or the
    headroom is unknown and the load is admitted)."""
    if headroom_bytes is None or headroom_bytes >= need_bytes:
        return 0
    return need_bytes - headroom_bytes


def find(infos: Sequence[OllamaModelInfo], key: str) -> OllamaModelInfo | None:
    """The loaded model named *key* (canonical), if listed."""
    for info in infos:
        if info.name == key:
            return info
    return None


def estimate_bytes(
    key: str, reported: Mapping[str, int], installed: Mapping[str, int], size_factor: float
) -> int | None:
    """Memory *key* takes loaded: as Ollama last reported it, else its disk size times
    *size_factor*; ``None`` when it is not installed."""
    if key in reported:
        return reported[key]
    if key not in installed:
        return None
    return math.ceil(installed[key] * size_factor)


def refused(name: str, need: int, headroom: int, freed: int) -> ResourceExhausted:
    """The refusal of a load that does not fit even after unloading idle models."""
    return ResourceExhausted(
        f"no room to load Ollama model {name!r}: it needs about {format_bytes(need)}, "
        f"{format_bytes(max(headroom + freed, 0))} is free after unloading idle models",
        reason="memory",
        retry_after=5.0,
        numbers={"size_bytes": need, "headroom_bytes": headroom, "freed_bytes": freed},
    )
