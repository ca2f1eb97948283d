"""The decisions of resguard's Ollama support, as pure functions: no I/O, no locks, no
clock reads (the time is an argument). Both faces, sync and async, act on what they say."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

from resguard._errors import ResourceExhausted
from resguard._modules.render import sizes_apart
from resguard.ollama._names import FOREVER_AFTER_S
from resguard.snapshot import OllamaModelInfo
from resguard.units import parse_bytes

__all__ = [
    "MAX_LOADED_BYTES",
    "estimate_bytes",
    "find",
    "idle_since",
    "learned_bytes",
    "plan_unloads",
    "refused",
    "refused_by_server",
    "shortfall_bytes",
    "sizes_apart",
    "victims",
]

# Ollama's own refusal of a load it cannot fit (llm/server.go), the one number a remote
# server gives about its memory: "model requires more system memory (12.5 GiB) than is
# available (3.0 GiB)".
_SERVER_REFUSAL = re.compile(
    r"requires more system memory \(([0-9.]+ ?[KMGT]?i?B)\) "
    r"than is available \(([0-9.]+ ?[KMGT]?i?B)\)"
)


MAX_LOADED_BYTES = 2**50
"""The largest size Ollama may report for a loaded model that resguard believes (1 PiB):
a larger one, 0 or a negative one is unknown, and the estimate from its size on disk
counts instead."""


def learned_bytes(reported: object) -> int | None:
    """A size ``/api/ps`` reported for a loaded model, when it is a plausible one: a
    whole number of bytes from 1 to :data:`MAX_LOADED_BYTES`; else ``None`` (unknown)."""
    if isinstance(reported, bool) or not isinstance(reported, int):
        return None
    return reported if 0 < reported <= MAX_LOADED_BYTES else None


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


def refused(
    name: str, need: int, headroom: int, freed: int, where: str = "where Ollama runs"
) -> ResourceExhausted:
    """The refusal of a load that does not fit even after unloading idle models; the two
    sizes are rounded so that their comparison shows (exact bytes when they round alike)."""
    free = max(headroom + freed, 0)
    need_text, free_text = sizes_apart(need, free)
    after = " after unloading idle models" if freed else ""
    return ResourceExhausted(
        f"no room to load Ollama model {name!r}: it needs about {need_text}; "
        f"{free_text} is free {where}{after}",
        reason="memory",
        retry_after=5.0,
        numbers={"size_bytes": need, "headroom_bytes": headroom, "freed_bytes": freed},
    )


def refused_by_server(name: str, host: str, message: str) -> ResourceExhausted | None:
    """Ollama's own "model requires more system memory" answer to a load as the same
    refusal resguard gives (``reason="memory"``, Ollama's figures in ``numbers``); ``None``
    for any other error."""
    found = _SERVER_REFUSAL.search(message)
    if found is None:
        return None
    need: int | None
    available: int | None
    try:
        need, available = parse_bytes(found.group(1)), parse_bytes(found.group(2))
    except ValueError:  # a figure resguard cannot read is unknown, not 0
        need = available = None
    return ResourceExhausted(
        f"Ollama at {host} has no room to load {name!r}: it says the model needs "
        f"{found.group(1)} and {found.group(2)} is available",
        reason="memory",
        retry_after=5.0,
        numbers={"size_bytes": need, "headroom_bytes": available, "freed_bytes": 0},
    )
