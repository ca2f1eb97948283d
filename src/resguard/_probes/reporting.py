"""The sense layer's one voice for damaged files: one warning per file and kind of damage,
whichever sampler or process table met it, and one when the file can be read again.

A file that flaps (fails, works for a moment, fails again in the same way) is not logged
again within :data:`RELOG_AFTER_S` of its last warning, nor is its recovery. The time of
each report is an argument (the reporter's own clock), so the rate limit is tested
without waiting.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Protocol

from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger

__all__ = [
    "RELOG_AFTER_S",
    "SENSING_FAULTS",
    "fields_outcome",
    "log_faults",
    "report_failure",
    "report_recovery",
]

SENSING_FAULTS = FaultLog(get_logger("resguard.snapshot"))
"""Process-wide: one warning per damaged file and kind of damage, whichever sampler saw it,
and one more when it can be read again."""

RELOG_AFTER_S = 60.0
"""A file that fails again in the same way within this long of its last warning, after
working in between (a flapping file), is not logged again, nor its recovery."""

_flap_lock = threading.Lock()
_logged_at: dict[tuple[str, str], float] = {}  # (file, kind) -> when its warning was logged
_quiet: set[str] = set()  # files failing again within RELOG_AFTER_S: neither logged


def report_failure(source: str, message: str, kind: str, now_s: float) -> None:
    """Log *source* failing (once per kind) at monotonic time *now_s*, unless it is
    flapping (see :data:`RELOG_AFTER_S`)."""
    with _flap_lock:
        recently = now_s - _logged_at.get((source, kind), -math.inf) < RELOG_AFTER_S
        if source in _quiet:
            if recently:
                return
            _quiet.discard(source)  # a new kind of damage, or a minute on: log it
        elif recently and source not in SENSING_FAULTS.failing():
            _quiet.add(source)  # it worked for a moment and fails again: no new warning
            return
    if SENSING_FAULTS.failed(source, message, kind=kind):
        with _flap_lock:
            _logged_at[(source, kind)] = now_s
            if len(_logged_at) > 4096:  # many short-lived cgroup files: stay bounded
                _logged_at.clear()


def report_recovery(source: str) -> None:
    """Log that *source* can be read again (unless its failure was not logged either)."""
    with _flap_lock:
        if source in _quiet:
            _quiet.discard(source)  # its failure was not logged: neither is the recovery
            return
    SENSING_FAULTS.recovered(source)


class FaultLike(Protocol):
    """What :func:`log_faults` reads of a fault (a :class:`resguard.snapshot.Fault`)."""

    @property
    def field(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def fallback(self) -> str | None: ...


def _own_source(fault: FaultLike) -> str:
    return fault.source


def fields_outcome(source: str, faults: Sequence[FaultLike]) -> str:
    """What *faults* (all of one *source*) did to a snapshot: the fields left unknown and
    those filled in from a fallback, e.g. ``"cpu.percent unknown; memory.used from
    wired + active"``."""
    unknown = sorted({fault.field for fault in faults if fault.fallback is None})
    filled = sorted(
        {f"{fault.field} from {fault.fallback}" for fault in faults if fault.fallback is not None}
    )
    parts = ([", ".join(unknown) + " unknown"] if unknown else []) + (
        [", ".join(filled)] if filled else []
    )
    return "; ".join(parts)


def log_faults(
    faults: Iterable[FaultLike],
    failing: frozenset[str],
    now_s: float,
    *,
    source_of: Callable[[FaultLike], str] = _own_source,
    outcome: Callable[[str, Sequence[FaultLike]], str] = fields_outcome,
    once: Collection[FaultLike] = (),
) -> frozenset[str]:
    """Warn once per failing source and kind (not once per sample) and say when a source
    that was *failing* works again; returns the sources failing now, to pass back next time.

    *source_of* names the source a fault is logged under (a process table logs every
    PID's ``stat`` as one), *outcome* says what the source's faults did (the first fault's
    kind and detail lead the message). Faults in *once* are logged but not counted as
    failing: they come with one sample only, so their absence later is no recovery.
    """
    by_source: dict[str, list[FaultLike]] = {}
    for fault in faults:
        by_source.setdefault(source_of(fault), []).append(fault)
    for source, mine in by_source.items():
        first = mine[0]
        report_failure(
            source, f"{first.kind}: {first.detail}; {outcome(source, mine)}", first.kind, now_s
        )
    current = frozenset(by_source) - {source_of(fault) for fault in once}
    for source in failing - current:
        report_recovery(source)
    return current


def _fresh_lock() -> None:
    global _flap_lock
    _flap_lock = threading.Lock()  # a parent's thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock)
