"""The guard's decisions as plain functions: admit, queue or refuse, and why.

No I/O, no locks, no waiting and no clock reads: each function takes what the guard knows
(a :class:`View` of the numbers), its :class:`Limits`, what is admitted now
(:class:`Counts`), the caller's place in the queue and the time, and returns a value. The
:class:`~resguard.guard.Guard` keeps the state, takes the lock and does the waiting.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import attrs

from resguard._errors import ResourceExhausted
from resguard.rules import Level
from resguard.units import Amount, format_bytes

if TYPE_CHECKING:
    from resguard.monitor import State
    from resguard.snapshot import MemoryInfo, Snapshot

__all__ = [
    "NO_LIMIT_BYTES",
    "REFUSAL_REASONS",
    "WAIT_BUCKETS_S",
    "WAIT_FOR_OTHERS",
    "Counts",
    "Decision",
    "HoldMeter",
    "Limits",
    "Refusal",
    "View",
    "WarnOnce",
    "breach",
    "budget",
    "decide",
    "judge",
    "memory_edges_bytes",
    "room",
    "stale_after_s",
    "state_unknown",
    "unknown_parts",
    "verdict_unknown",
    "vram_unknown",
]

OnUnknown = Literal["admit", "refuse"]

#: Every value :attr:`ResourceExhausted.reason <resguard.ResourceExhausted>` takes when a
#: guard refuses, each a label value of ``resguard_guard_refused_total``:
#:
#: * ``"memory"``: the machine's (or cgroup's) headroom, or the guard's ``memory`` share,
#:   is too small for the reservation;
#: * ``"reservation"``: as ``"memory"``, but only because of what calls in flight reserved;
#: * ``"rss"``: this process's RSS (plus reservations) would pass the guard's ``rss``, or
#:   passed it while the work ran (``on_breach``, :meth:`Guard.check`);
#: * ``"level"``: the Monitor's verdict is at or above the guard's ``level`` (refused at
#:   once, never queued: load shedding);
#: * ``"concurrency"``: ``max_concurrent`` calls are in flight;
#: * ``"queued"``: others are queued first and this call may not wait (no overtaking);
#: * ``"timeout"``: the call queued for its whole ``wait`` for other calls (a slot, a
#:   reservation, its turn) without getting in (``numbers["cause"]`` is what it waited on;
#:   a wait for memory that ends is refused with the memory's reason, ``numbers["waited_s"]``
#:   saying how long it waited);
#: * ``"unknown"``: a number the guard needs is unknown or the Monitor's state is stale,
#:   and ``on_unknown="refuse"``;
#: * ``"vram"``: the fullest GPU's used memory is above the guard's ``vram``.
REFUSAL_REASONS: tuple[str, ...] = (
    "memory",
    "reservation",
    "rss",
    "level",
    "concurrency",
    "queued",
    "timeout",
    "unknown",
    "vram",
)

WAIT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""The upper bounds (seconds) of the buckets a queued admission's wait is counted in
(:attr:`GuardStats.queued_wait_counts <resguard.GuardStats>`; one more bucket above the
last); admissions that did not queue are not counted there."""

NO_LIMIT_BYTES = 2**63 - 1
"""The room reported when nothing known bounds it."""
_WARN_EVERY_S = 60.0
_MIN_HOLD_S = 0.01  # the smallest retry_after a concurrency refusal suggests


@attrs.frozen
class Limits:
    """What a guard allows, and how it answers what it cannot know."""

    memory: Amount | None = None
    rss: Amount | None = None
    level: Level | None = Level.CRITICAL
    max_concurrent: int | None = None
    on_unknown: OnUnknown = "admit"
    retry_after_s: float = 1.0
    vram: Amount | None = None


@attrs.frozen
class Counts:
    """What is admitted now: calls in flight, the bytes they reserved, the average time a
    call holds its admission (the ``retry_after`` of a concurrency refusal)."""

    in_flight: int = 0
    reserved: int = 0
    hold_s: float = 0.0


class View:
    """What a guard knows at one moment: the snapshot (``None`` if none could be taken),
    the verdict level (``None`` without a fresh Monitor state), why the verdict cannot be
    trusted (a stale state, verdict unknowns) and why no current numbers could be taken."""

    __slots__ = ("level", "sample_failed", "snap", "verdict_unknown")

    def __init__(
        self,
        snap: Snapshot | None,
        level: Level | None,
        verdict_unknown: str | None = None,
        sample_failed: str | None = None,
    ) -> None:
        self.snap = snap
        self.level = level
        self.verdict_unknown = verdict_unknown
        self.sample_failed = (
            sample_failed if snap is not None else (sample_failed or "no snapshot yet")
        )

    def numbers_only(self) -> View:
        """This view without the verdict's unknowns (what readiness asks about numbers)."""
        return View(self.snap, self.level, None, self.sample_failed)


@attrs.frozen
class Refusal:
    """Why a call may not start: a reason of :data:`REFUSAL_REASONS`, the detail for the
    message, the ``retry_after`` to suggest and the numbers it was judged on."""

    reason: str
    detail: str
    retry_after_s: float
    numbers: dict[str, Any] = attrs.field(eq=False)

    def error(self, name: str) -> ResourceExhausted:
        """The :class:`~resguard.ResourceExhausted` a guard called *name* raises."""
        return ResourceExhausted(
            f"{name} refused: {self.detail}",
            reason=self.reason,
            retry_after=self.retry_after_s,
            numbers=dict(self.numbers),
        )


@attrs.frozen
class Decision:
    """What to do with one call: ``"admit"``, ``"queue"`` (wait for *refusal*'s cause to
    pass) or ``"refuse"`` (raise *refusal*); *unknown* is what the guard needed but did not
    know (each thing with its explanation), for the guard to log."""

    action: Literal["admit", "queue", "refuse"]
    refusal: Refusal | None = None
    unknown: dict[str, str] = attrs.field(factory=dict, eq=False)


def _refuse(
    reason: str,
    detail: str,
    retry_after_s: float,
    snap: Snapshot | None,
    counts: Counts,
    reserve: int,
) -> Refusal:
    memory = snap.memory if snap is not None else None
    numbers = {
        "used_bytes": memory.used if memory else None,
        "limit_bytes": memory.limit if memory else None,
        "available_bytes": memory.available if memory else None,
        "rss_bytes": snap.process.rss if snap is not None else None,
        "reserved_bytes": counts.reserved,
        "reserve_bytes": reserve,
        "in_flight": counts.in_flight,
    }
    return Refusal(reason, detail, retry_after_s, numbers)


def room(
    snap: Snapshot, limits: Limits, reserved: int, *, need_available: bool
) -> tuple[int | None, list[str]]:
    """The smallest known headroom after *reserved* bytes (``None``: nothing known bounds
    it), and the numbers that would bound it but are unknown."""
    memory = snap.memory
    rooms: list[int] = []
    unknown: list[str] = []
    if need_available:
        if memory.available is None:
            unknown.append("memory.available")
        else:
            rooms.append(memory.available - reserved)
    if limits.memory is not None:
        share = limits.memory.resolve(memory.limit)
        if share is None:
            unknown.append("memory.limit")
        elif memory.used is None:
            unknown.append("memory.used")
        else:
            rooms.append(share - memory.used - reserved)
    if limits.rss is not None:
        rss_limit = limits.rss.resolve(memory.limit)
        if rss_limit is None:
            unknown.append("memory.limit")
        elif snap.process.rss is None:
            unknown.append("process.rss")
        else:
            rooms.append(rss_limit - snap.process.rss - reserved)
    return (min(rooms) if rooms else None), unknown


def unknown_parts(view: View, limits: Limits, reserved: int, reserve: int) -> dict[str, str]:
    """What the guard needs for a call reserving *reserve* (with *reserved* already in
    flight) but does not know: each unknown thing (a key) with its explanation."""
    parts: dict[str, str] = {}
    if view.verdict_unknown is not None and limits.level is not None:
        # keyed by kind ("stale", "unknown"), not by the age that changes every call
        kind = view.verdict_unknown.partition("(")[2].partition(":")[0]
        parts[f"verdict {kind}"] = view.verdict_unknown
    needs_numbers = (
        limits.memory is not None
        or limits.rss is not None
        or limits.vram is not None
        or reserve > 0
        or reserved > 0
    )
    if view.sample_failed is not None or view.snap is None:
        if needs_numbers:
            parts["sample"] = f"the numbers are unknown ({view.sample_failed})"
    else:
        snap = view.snap
        _, missing = room(snap, limits, reserved, need_available=reserve > 0 or reserved > 0)
        for path in missing:
            fault = snap.fault_for(path)
            parts[path] = f"{path} is unknown" + (f" ({fault})" if fault else "")
        if limits.vram is not None and vram_unknown(snap) is not None:
            parts["gpu.memory"] = f"gpu.memory is unknown ({vram_unknown(snap)})"
    return parts


def vram_unknown(snap: Snapshot) -> str | None:
    """Why *snap* says nothing of GPU memory, or ``None`` when it does."""
    gpu = snap.gpu
    if gpu is None:
        return "no GPU readings: no NVML, no driver, or a reading that hung"
    if gpu.count == 0:
        return "NVML reports no GPU"
    if gpu.memory is None:
        return "no GPU reported its memory"
    return None


def _vram_refusal(snap: Snapshot, limits: Limits, counts: Counts, reserve: int) -> Refusal | None:
    """Refused for ``"vram"`` when the fullest GPU uses more than the guard's ``vram``
    (bytes, or a share of that GPU's total); nothing when GPU memory is unknown."""
    vram, gpu = limits.vram, snap.gpu
    if vram is None or gpu is None or gpu.memory is None:
        return None
    memory = gpu.memory
    ceiling = vram.resolve(memory.total)
    if ceiling is None or memory.used <= ceiling:
        return None
    of_total = f" = {vram.percent:g}% of {format_bytes(memory.total)}" if vram.is_share else ""
    detail = (
        f"GPU {memory.device} uses {format_bytes(memory.used)} of VRAM, above the guard's "
        f"{format_bytes(ceiling)}{of_total}"
    )
    refusal = _refuse("vram", detail, limits.retry_after_s, snap, counts, reserve)
    refusal.numbers.update(
        vram_used_bytes=memory.used, vram_total_bytes=memory.total, vram_device=memory.device
    )
    return refusal


def judge(
    view: View, limits: Limits, counts: Counts, reserve: int
) -> tuple[Refusal | None, dict[str, str]]:
    """Why a call reserving *reserve* bytes may not start now (``None``: it may), and what
    the guard needed but did not know (looked at only past the verdict's level)."""
    snap = view.snap
    level_refusal = _level_refusal(view, limits, counts, reserve)
    if level_refusal is not None:
        return level_refusal, {}
    unknown = unknown_parts(view, limits, counts.reserved, reserve)
    if unknown and limits.on_unknown == "refuse":
        detail = "; ".join(unknown.values())
        return _refuse("unknown", detail, limits.retry_after_s, snap, counts, reserve), unknown
    if limits.max_concurrent is not None and counts.in_flight >= limits.max_concurrent:
        detail = f"{counts.in_flight} of {limits.max_concurrent} calls in flight"
        hold_s = max(counts.hold_s, _MIN_HOLD_S)
        return _refuse("concurrency", detail, hold_s, snap, counts, reserve), unknown
    if snap is None or view.sample_failed is not None:
        return None, unknown  # nothing current to check against, and on_unknown says admit
    if limits.vram is not None:
        refusal = _vram_refusal(snap, limits, counts, reserve)
        if refusal is not None:
            return refusal, unknown
    return _memory_refusal(snap, limits, counts, reserve), unknown


def _memory_refusal(snap: Snapshot, limits: Limits, counts: Counts, reserve: int) -> Refusal | None:
    """The RSS and memory checks of :func:`judge`, on a snapshot that was taken."""
    memory, rss, reserved = snap.memory, snap.process.rss, counts.reserved
    if limits.rss is not None:
        rss_limit = limits.rss.resolve(memory.limit)
        if rss_limit is not None and rss is not None and rss + reserved + reserve > rss_limit:
            detail = (
                f"process RSS {format_bytes(rss)} + reserved "
                f"{format_bytes(reserved + reserve)} exceeds {format_bytes(rss_limit)}"
            )
            return _refuse("rss", detail, limits.retry_after_s, snap, counts, reserve)
    headroom, _ = room(snap, limits, reserved, need_available=reserve > 0 or reserved > 0)
    share = limits.memory.resolve(memory.limit) if limits.memory is not None else None
    over_share = share is not None and memory.used is not None and memory.used > share
    if (headroom is None or headroom >= reserve) and not over_share:
        return None
    # "reservation" when the call would fit but for what others reserved
    fits_alone = headroom is not None and headroom + reserved >= reserve
    reason = "reservation" if fits_alone and not over_share else "memory"
    ceiling = ""
    if share is not None and limits.memory is not None and share != memory.limit:
        of_limit = f" = {limits.memory.percent:g}%" if limits.memory.is_share else ""
        ceiling = f", the guard's ceiling {format_bytes(share)}{of_limit}"
    detail = (
        f"{format_bytes(max(headroom or 0, 0))} of headroom for "
        f"{format_bytes(reserve)} ({_bytes_or_unknown(memory.used)} used of "
        f"{_bytes_or_unknown(memory.limit)}{ceiling}, {format_bytes(reserved)} reserved)"
    )
    return _refuse(reason, detail, limits.retry_after_s, snap, counts, reserve)


def decide(
    view: View,
    limits: Limits,
    counts: Counts,
    reserve: int,
    *,
    ahead: bool,
    queued: bool,
    wait_s: float,
    deadline_s: float,
    now_s: float,
) -> Decision:
    """Admit, queue or refuse a call reserving *reserve* bytes.

    *ahead*: others are queued before this caller (nobody overtakes the queue); *queued*:
    the caller is in the queue already, waiting until *deadline_s*; otherwise this is its
    first try, and it may queue when *wait_s* is above 0.

    A verdict at the guard's ``level`` never queues: the call is refused at once with
    reason ``"level"`` (load shedding), a queued one too. A queued call still refused at
    its deadline keeps its cause's reason when that is the machine's memory (``"memory"``,
    ``"rss"``, ``"vram"``, ``"unknown"``); only a wait for other calls
    (:data:`WAIT_FOR_OTHERS`) ends as ``"timeout"``. Either way ``numbers`` say how long
    it waited (``waited_s``) and what on (``cause``).
    """
    unknown: dict[str, str] = {}
    refusal = _level_refusal(view, limits, counts, reserve)
    if refusal is not None:
        return Decision("refuse", _waited(refusal, wait_s, deadline_s, now_s, queued), unknown)
    if ahead:
        refusal = _refuse(
            "queued", "others are waiting first", limits.retry_after_s, view.snap, counts, reserve
        )
    else:
        refusal, unknown = judge(view, limits, counts, reserve)
    if refusal is None:
        return Decision("admit", None, unknown)
    if (now_s < deadline_s) if queued else (wait_s > 0):
        return Decision("queue", refusal, unknown)
    return Decision("refuse", _waited(refusal, wait_s, deadline_s, now_s, queued), unknown)


#: The causes a queued call waits on that other calls hold (a slot, a reservation, a
#: place ahead in the queue): a wait for them that ends is refused as ``"timeout"``.
WAIT_FOR_OTHERS: frozenset[str] = frozenset({"concurrency", "reservation", "queued"})


def _level_refusal(view: View, limits: Limits, counts: Counts, reserve: int) -> Refusal | None:
    level = view.level
    if limits.level is None or level is None or level < limits.level:
        return None
    detail = f"the verdict is {level.name}"
    return _refuse("level", detail, limits.retry_after_s, view.snap, counts, reserve)


def _waited(
    refusal: Refusal, wait_s: float, deadline_s: float, now_s: float, queued: bool
) -> Refusal:
    """*refusal* for a call that was refused after queueing (unchanged on a first try)."""
    if not queued:
        return refusal
    waited_s = min(max(now_s - (deadline_s - wait_s), 0.0), wait_s)
    numbers = {**refusal.numbers, "waited_s": waited_s, "cause": refusal.reason}
    detail = f"{refusal.detail} (after waiting {waited_s:g}s)"
    if refusal.reason in WAIT_FOR_OTHERS:
        return attrs.evolve(refusal, reason="timeout", detail=detail, numbers=numbers)
    return attrs.evolve(refusal, detail=detail, numbers=numbers)


def budget(view: View, limits: Limits, reserve_bytes: int) -> tuple[int, dict[str, str]]:
    """What the no-I/O hot path may admit while the state of *view* holds: the bytes of
    room before any reservation (``-1``: every call takes the full path, which says why),
    and what is unknown but left out of that bound (for the guard to log)."""
    assert view.snap is not None  # a Monitor's state always has a snapshot
    refusal, _ = judge(view, limits, Counts(), 0)
    headroom, _ = room(view.snap, limits, 0, need_available=True)
    unknown = unknown_parts(view, limits, 0, max(reserve_bytes, 1))
    if (unknown and limits.on_unknown == "refuse") or refusal is not None:
        return -1, {}
    return (NO_LIMIT_BYTES if headroom is None else headroom), unknown


def memory_edges_bytes(limits: Limits, reserve_bytes: int, memory: MemoryInfo) -> tuple[int, ...]:
    """The ``memory.used`` values (bytes, sorted) at which a guard with *limits* and a
    reservation of *reserve_bytes* per block changes its mind, under *memory*'s limit.

    Its ``memory`` budget (a call is refused once ``used`` is above it), and with a
    reservation the budget minus it and the limit minus it (``available`` is the limit
    minus ``used``): where one such call stops fitting while nothing else is reserved.
    """
    limit = memory.limit
    edges: set[int] = set()
    share = None if limits.memory is None else limits.memory.resolve(limit)
    if share is not None:
        edges.add(share)
        if reserve_bytes > 0:
            edges.add(share - reserve_bytes)
    if reserve_bytes > 0 and limit is not None:
        edges.add(limit - reserve_bytes)
    return tuple(sorted(e for e in edges if e >= 0 and (limit is None or e <= limit)))


def breach(view: View, limits: Limits, counts: Counts) -> Refusal | None:
    """Why running work should stop now (the process passed the ``rss`` limit, the verdict
    reached the guard's level), or ``None``. Unknown numbers never stop running work."""
    snap = view.snap
    if limits.rss is not None and snap is not None and view.sample_failed is None:
        limit = limits.rss.resolve(snap.memory.limit)
        rss = snap.process.rss
        if limit is not None and rss is not None and rss > limit:
            detail = f"process RSS {format_bytes(rss)} passed {format_bytes(limit)}"
            return _refuse("rss", detail, limits.retry_after_s, snap, counts, 0)
    return _level_refusal(view, limits, counts, 0)


def stale_after_s(monitor: Any) -> float:
    """How old *monitor*'s state may be before it is stale (its ``stale_after``)."""
    value = getattr(monitor, "stale_after_s", None)
    if value is None:
        value = max(1.0, 5 * float(getattr(monitor, "relaxed_interval_s", 0.2)))
    return float(value)


def state_unknown(monitor: Any, state: State, now_s: float) -> tuple[bool, str | None]:
    """Whether *state* is stale at *now_s* by *monitor*'s ``stale_after``, and why it
    cannot be trusted (stale, no sample yet, verdict unknowns), or ``None``."""
    if state.sequence == 0:
        return True, "no sample yet"
    age_s = now_s - state.snapshot.monotonic
    if age_s > stale_after_s(monitor):
        return True, f"stale: last sample {age_s:.1f} s ago"
    unknown = getattr(state.verdict, "unknown", ())
    if unknown:
        return False, "unknown: " + "; ".join(unknown)
    return False, None


def verdict_unknown(reason: str | None) -> str | None:
    """The view's ``verdict_unknown`` for the reason :func:`state_unknown` gave."""
    return None if reason is None else f"the monitor's verdict is unknown ({reason})"


def _bytes_or_unknown(value: int | None) -> str:
    return "unknown" if value is None else format_bytes(value)


class HoldMeter:
    """How long ``with guard:`` blocks hold their admission, which they do not time
    themselves (the guard is shared, so a block has nowhere to keep its start).

    By Little's law: between two exits, the time the blocks in flight spent inside adds up
    (blocks x seconds); each exit hands that sum on as one hold time. It is exact while one
    block is in at a time, and its average is the average hold time with many.
    """

    __slots__ = ("_changed_s", "_holding", "_spent_s")

    def __init__(self) -> None:
        self._holding = 0
        self._spent_s = 0.0
        self._changed_s = 0.0

    def enter(self, now_s: float) -> None:
        """A block entered at *now_s*."""
        self._spent_s += self._holding * (now_s - self._changed_s)
        self._changed_s = now_s
        self._holding += 1

    def leave(self, now_s: float) -> float | None:
        """A block left at *now_s*: one hold time (``None`` if no block was counted in)."""
        if self._holding <= 0:
            return None
        spent_s = self._spent_s + self._holding * (now_s - self._changed_s)
        self._changed_s = now_s
        self._holding -= 1
        self._spent_s = 0.0
        return max(spent_s, 0.0)


class WarnOnce:
    """Which unknowns to log: a thing newly unknown at once, the same again only after a
    quiet minute (so a stale state is logged once, not per call)."""

    __slots__ = ("_every_s", "_last_s")

    def __init__(self, every_s: float = _WARN_EVERY_S) -> None:
        self._every_s = every_s
        self._last_s: dict[str, float] = {}

    def due(self, keys: list[str] | dict[str, str], now_s: float) -> bool:
        """Whether to log *keys* at *now_s* (each key counts as logged now)."""
        fresh = any(now_s - self._last_s.get(key, -math.inf) >= self._every_s for key in keys)
        for key in keys:
            self._last_s[key] = now_s
        return fresh
