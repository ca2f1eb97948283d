"""The reclaim ladder: things that hold memory they can give back, cheapest first.

Anything that can free memory on request (caches, lazy models, idle Ollama models)
implements :class:`Reclaimable` and registers with a ladder: its own (``ladder.register``,
``register=monitor`` on a model or cache, :func:`registry_for`), or the process-wide
:data:`PROCESS_REGISTRY` (:func:`register`, ``register=True``), which only a ladder made
with ``process=True`` climbs. Registries keep weak references, so registering never keeps
an object alive. Costs order the ladder: lower cost is reclaimed first (see :class:`Cost`).
Models are not reclaimed until idle for :data:`DEFAULT_MIN_IDLE_S` (their
``reclaim_min_idle``).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable

import attrs

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.clockcheck import checked_clock
from resguard._modules.faults import FaultLog
from resguard._modules.log import emit, fields, get_logger
from resguard._modules.render import ValueMixin
from resguard.reclaim._base import Cost, Reclaimable
from resguard.reclaim._base import shown as _shown
from resguard.reclaim._checks import MATCHED_CHARS, pattern_problem
from resguard.reclaim._registry import (
    PROCESS_REGISTRY,
    RegisterTarget,
    Registry,
    by_cost,
    check_reclaimable,
    label,
    registry_for,
    valid_cost,
)
from resguard.reclaim._stopper import (
    ACTIONS_KEPT,
    ProcessStopper,
    StopAction,
    StopCandidate,
)
from resguard.units import format_bytes

__all__ = [
    "ACTIONS_KEPT",
    "DEFAULT_MIN_IDLE_S",
    "DEFAULT_PROTECTED_NAMES",
    "MATCHED_CHARS",
    "PROCESS_REGISTRY",
    "Cost",
    "GarbageCollect",
    "Ladder",
    "MallocTrim",
    "ProcessStopper",
    "ReclaimReport",
    "Reclaimable",
    "RegisterTarget",
    "Registry",
    "StepResult",
    "StopAction",
    "StopCandidate",
    "pattern_problem",
    "register",
    "registered",
    "registry_for",
    "unregister",
]


DEFAULT_PROTECTED_NAMES = frozenset(
    {
        # Linux
        "init",
        "systemd",
        "systemd-journald",
        "systemd-logind",
        "systemd-udevd",
        "systemd-networkd",
        "systemd-resolved",
        "dbus-daemon",
        "dbus-broker",
        "sshd",
        "login",
        "agetty",
        "dockerd",
        "containerd",
        "Xorg",
        "Xwayland",
        "gnome-shell",
        "kwin_wayland",
        "kwin_x11",
        "sway",
        "plasmashell",
        # macOS
        "launchd",
        "kernel_task",
        "loginwindow",
        "WindowServer",
        "Dock",
        "Finder",
        "SystemUIServer",
        "coreaudiod",
        "configd",
        "mds",
        "opendirectoryd",
        "securityd",
        "syslogd",
        "logd",
        "UserEventAgent",
        # Windows
        "System",
        "System Idle Process",
        "Registry",
        "smss.exe",
        "csrss.exe",
        "wininit.exe",
        "winlogon.exe",
        "services.exe",
        "lsass.exe",
        "svchost.exe",
        "dwm.exe",
        "explorer.exe",
        "fontdrvhost.exe",
    }
)
"""Process names the stopper never touches, whatever the patterns say (Linux, macOS and
Windows essentials): losing one of these takes the machine, the session or the remote
login with it. Names are compared in full and in the kernel's 15-character form (a
protected name covers any name with the same first 15 characters), so ``systemd-journald``
is protected whether a backend reads it as ``systemd-journald`` or as Linux's
``systemd-journal``."""

_logger = get_logger("resguard")

DEFAULT_MIN_IDLE_S = 30.0
"""Seconds a model must have gone unused before the ladder may reclaim it (a lazy model, so
a pool's members, and Ollama's models; not caches, whose entries are cheap to recompute).

Why 30 s: a WARNING episode outlives the memory that caused it (PSI memory ``some avg10`` is
a 10 s average, and from 10 % it needs about 16 s to decay below the service preset's 2 %
clear line; the slow loop climbs the ladder every 2 s while it lasts), so a shorter wait lets
one episode unload a model that a request reloaded a moment ago, which the next request
reloads again: thrashing. 30 s stays far below the idle TTLs models are given (minutes) and
Ollama's own keep-alive (5 min), so a model nobody uses is still given back promptly.
``reclaim_min_idle=0`` on the model restores reclaiming at any idle time."""


def register(item: Reclaimable) -> None:
    """Put *item* on the process-wide registry (:data:`PROCESS_REGISTRY`), held by a weak
    reference; only ladders made with ``process=True`` (``Monitor(reclaim="process")``)
    climb it."""
    PROCESS_REGISTRY.register(item)


def unregister(item: Reclaimable) -> None:
    """Take *item* off the process-wide registry; a no-op when it is not on it."""
    PROCESS_REGISTRY.unregister(item)


def registered() -> list[Reclaimable]:
    """The live reclaimables of the process-wide registry, cheapest first (ties keep
    registration order). An item whose cost is no longer a finite number is left out, with
    a warning."""
    return PROCESS_REGISTRY.registered()


# ---------------------------------------------------------------------------------------
# Built-in steps


class GarbageCollect:
    """``gc.collect()``, throttled so that collections take at most *max_share* of wall time.

    After a collection that took *d* seconds the next one may run only after ``d /
    max_share`` seconds, so a process under pressure does not spend itself collecting.
    """

    name = "gc.collect"
    cost = Cost.GC

    def __init__(
        self, max_share: float = 0.05, clock: Callable[[], float] = time.monotonic
    ) -> None:
        expected = "expected a number with 0 < share <= 1, e.g. 0.05"
        if isinstance(max_share, bool) or not isinstance(max_share, (int, float)):
            raise InvalidType(
                f"max_share={_shown(max_share)} is not a share of wall time; {expected}"
            )
        if not 0 < max_share <= 1:  # NaN fails too
            raise InvalidValue(
                f"max_share={_shown(max_share)} is not a share of wall time; {expected}"
            )
        self._clock = checked_clock(clock)
        self.max_share = max_share
        self._next_allowed_s = float("-inf")
        self.collections = 0

    def reclaimable_bytes(self) -> int:
        return 0  # unknown until collected; the ladder measures

    def reclaim(self, target_bytes: int) -> int:
        now = self._clock()
        if now < self._next_allowed_s:
            return 0
        gc.collect()
        took = self._clock() - now
        self._next_allowed_s = now + took / self.max_share
        self.collections += 1
        return 0


class MallocTrim:
    """glibc's ``malloc_trim(0)``: hands free heap pages back to the OS, where present.

    The ladder runs it after every step rather than as a rung of its own: memory that a
    step frees goes back to malloc's free lists first, and only a trim returns it (once
    glibc has raised its mmap threshold, even multi-megabyte buffers live in the heap).
    """

    name = "malloc_trim"

    def __init__(self) -> None:
        self._trim: Callable[[int], int] | None = None
        try:
            import ctypes
            import ctypes.util

            libc_name = ctypes.util.find_library("c")
            libc = ctypes.CDLL(libc_name) if libc_name else None
            self._trim = getattr(libc, "malloc_trim", None)
        except (OSError, ImportError):
            self._trim = None

    @property
    def available(self) -> bool:
        """Whether this C library has ``malloc_trim`` (glibc does; musl and macOS do not)."""
        return self._trim is not None

    def trim(self) -> None:
        """Return free heap pages to the OS (a no-op without glibc's ``malloc_trim``)."""
        if self._trim is not None:
            self._trim(0)


# ---------------------------------------------------------------------------------------
# The ladder


@attrs.frozen
class StepResult(ValueMixin):
    """One rung: what the reclaimable claimed, what re-measuring showed (``None`` when
    memory could not be measured), and the time taken."""

    name: str
    claimed_bytes: int
    measured_bytes: int | None
    duration_s: float


@attrs.frozen
class ReclaimReport(ValueMixin):
    """One climb of the ladder: the target, the steps taken and the total freed.

    ``freed_bytes`` is measured; where a measurement was unknown it counts that step's
    claim instead, and ``measured`` is False.
    """

    target_bytes: int
    freed_bytes: int
    steps: tuple[StepResult, ...]
    measured: bool = True

    @property
    def reached(self) -> bool:
        return self.freed_bytes >= self.target_bytes


def _reclaimables(extra: object) -> tuple[Reclaimable, ...]:
    if isinstance(extra, (str, bytes)) or not isinstance(extra, Iterable):
        raise InvalidType(f"extra={_shown(extra)} is not a list of Reclaimables")
    return tuple(check_reclaimable(item, "Ladder(extra=...)") for item in extra)


class Ladder:
    """Climbs its reclaimables cheapest first until enough memory is back.

    Its rungs are ``gc.collect``, what was registered with it (:meth:`register`, or
    ``register=`` this ladder or its Monitor on a model or cache), *extra*, and with
    *process* the process-wide registry's items (:data:`PROCESS_REGISTRY`, what
    :func:`register` and ``register=True`` put there): a ladder reclaims what was given to
    it, not every model of the process.

    *measure* returns the memory in use now (bytes, or ``None`` when unknown), and is
    called before and after each step: the ladder trusts measurements, not what a step
    claims (freed Python objects often stay in CPython's arenas). After each step
    ``malloc_trim`` hands the heap pages it freed back to the OS. It stops once the
    measured total reaches the target, which :meth:`run` computes as what is needed plus
    *min_reclaim_bytes*. While memory cannot be measured, a step's claim is counted
    instead, and no rung of :attr:`Cost.PROCESS` or above runs: processes are never
    stopped on a number nobody could read. ``freed_bytes_by_step`` sums what each rung
    freed over every climb (by name, counted as :attr:`ReclaimReport.freed_bytes` is).
    """

    def __init__(
        self,
        measure: Callable[[], int | None],
        *,
        min_reclaim: int | str = "16MiB",
        gc_step: GarbageCollect | None = None,
        trim_step: MallocTrim | None = None,
        extra: Iterable[Reclaimable] = (),
        process: bool = False,
    ) -> None:
        from resguard.units import parse_bytes

        if not callable(measure):
            raise InvalidType(
                f"measure={_shown(measure)} is not callable; expected a "
                "function returning the bytes in use (or None when unknown)"
            )
        min_reclaim_bytes = parse_bytes(min_reclaim)
        if gc_step is not None and not isinstance(gc_step, GarbageCollect):
            raise InvalidType(
                f"gc_step={_shown(gc_step)} is not a GarbageCollect; expected "
                "resguard.reclaim.GarbageCollect(...) or None"
            )
        if trim_step is not None and not isinstance(trim_step, MallocTrim):
            raise InvalidType(
                f"trim_step={_shown(trim_step)} is not a MallocTrim; expected "
                "resguard.reclaim.MallocTrim() or None"
            )
        if not isinstance(process, bool):
            raise InvalidType(f"process={_shown(process)} is not a bool; expected True or False")
        extra_items = _reclaimables(extra)
        self.measure = measure
        self.min_reclaim_bytes = min_reclaim_bytes
        self.gc_step = gc_step if gc_step is not None else GarbageCollect()
        self.trim_step = trim_step if trim_step is not None else MallocTrim()
        self.extra = extra_items
        self.process = process
        self.reclaimables = Registry()
        self.last_report: ReclaimReport | None = None
        self.freed_bytes_by_step: dict[str, int] = {}
        self._tally_lock = threading.Lock()  # two climbs at once (a reclaim_now by hand)
        self._faults = FaultLog(_logger)  # a climb never fails on its log line
        self._told_left_out = False
        self._told_nothing = False  # "nothing left to reclaim" said in this episode

    def end_episode(self) -> None:
        """A pressure episode ended (the monitor calls this back at OK): the next climb
        that frees nothing says so again, once."""
        self._told_nothing = False

    def register(self, item: Reclaimable) -> None:
        """Put *item* on this ladder (held by a weak reference)."""
        self.reclaimables.register(item)

    def unregister(self, item: Reclaimable) -> None:
        """Take *item* off this ladder; a no-op when it is not on it."""
        self.reclaimables.unregister(item)

    def steps(self) -> list[Reclaimable]:
        """This ladder's rungs in order: gc, then its items, *extra* and (with *process*)
        the process-wide registry's, by cost (an item on two of them climbs once)."""
        items: list[Reclaimable] = [self.gc_step, *self.reclaimables.registered(), *self.extra]
        if self.process:
            items.extend(PROCESS_REGISTRY.registered())
        unique: dict[int, Reclaimable] = {}
        for item in items:
            unique.setdefault(id(item), item)  # the first place of each
        return by_cost(unique.values())

    def _measure(self) -> int | None:
        try:
            used = self.measure()
        except Exception as error:  # a broken probe must not break the ladder
            self._faults.failed("the ladder's memory measure", error)
            return None
        if isinstance(used, bool) or not isinstance(used, int) or used < 0:
            if used is not None:
                self._faults.failed(
                    "the ladder's memory measure", f"returned {_shown(used)}, not a number of bytes"
                )
            return None
        self._faults.recovered("the ladder's memory measure")
        return used

    def _tell_left_out(self) -> None:
        """Once per ladder: process-wide items exist that this ladder does not climb (their
        owners may expect the old, process-wide reclaim)."""
        if self.process or self._told_left_out:
            return
        self._told_left_out = True
        left_out = [item for item in PROCESS_REGISTRY.registered() if item not in self.reclaimables]
        if left_out:
            emit(
                _logger,
                logging.INFO,
                "reclaim: %d reclaimable(s) registered process-wide are not on this ladder "
                '(%s); pass register=monitor to them, or Monitor(reclaim="process")',
                len(left_out),
                ", ".join(_shown(label(item)) for item in left_out[:3]),
            )

    def _step(
        self, item: Reclaimable, remaining: int, before: int | None
    ) -> tuple[StepResult, int | None] | None:
        """Run one rung: its result and the use measured after it (``None``: it failed or
        must not run blind)."""
        name = label(item)
        step = f"reclaim step {_shown(name)}"
        if before is None and (valid_cost(item) or 0.0) >= Cost.PROCESS:
            # once while memory stays unknown, not on every climb of the ladder
            self._faults.failed(step, "not run: memory use is unknown", kind="unknown")
            return None
        start = time.perf_counter()
        try:
            claimed = int(item.reclaim(remaining))
        except Exception as error:  # a reclaimable must never break the ladder
            self._faults.failed(step, error, kind=type(error).__name__)
            return None
        self._faults.recovered(step)
        self.trim_step.trim()
        after = self._measure()
        measured = max(before - after, 0) if before is not None and after is not None else None
        took_s = time.perf_counter() - start
        return StepResult(name, claimed, measured, took_s), after

    def run(self, needed_bytes: int) -> ReclaimReport:
        """Free at least *needed_bytes* plus the minimum reclaim, cheapest step first."""
        if isinstance(needed_bytes, bool) or not isinstance(needed_bytes, int):
            raise InvalidType(
                f"{_shown(needed_bytes)} is not a number of bytes; expected an integer"
            )
        self._tell_left_out()
        target = max(needed_bytes, 0) + self.min_reclaim_bytes
        results: list[StepResult] = []
        held: list[str] = []
        freed_total = 0
        before = self._measure()
        for item in self.steps():
            if freed_total >= target:
                break
            stepped = self._step(item, target - freed_total, before)
            if stepped is None:
                continue
            result, before = stepped
            freed = _freed(result)
            freed_total += freed
            with self._tally_lock:
                by_step = self.freed_bytes_by_step
                by_step[result.name] = by_step.get(result.name, 0) + freed
            results.append(result)
            _log_step(result, target - freed_total + freed)
            if freed <= 0 and (why := _held(item)) is not None:
                held.append(why)
        all_measured = all(result.measured_bytes is not None for result in results)
        report = ReclaimReport(target, freed_total, tuple(results), all_measured)
        self.last_report = report
        if results:
            self._log_climb(report, held)
        return report

    def _log_climb(self, report: ReclaimReport, held: list[str]) -> None:
        """The climb's line: INFO when it freed something; when it freed nothing, INFO
        once per episode (what is held, and why), DEBUG on every later climb (a long
        WARNING with nothing to free climbs every few seconds)."""
        if report.freed_bytes <= 0:
            if self._told_nothing:
                level = logging.DEBUG
            else:
                self._told_nothing, level = True, logging.INFO
            emit(
                _logger,
                level,
                "reclaim: nothing left to reclaim (0 B of %s in %s)%s; said again "
                "once memory is freed or the level is back to OK",
                format_bytes(report.target_bytes),
                _steps_count(len(report.steps)),
                f"; held: {', '.join(held)}" if held else "",
                extra=fields("reclaim", freed_bytes=0, target_bytes=report.target_bytes),
            )
            return
        self._told_nothing = False
        emit(
            _logger,
            logging.INFO,
            "reclaim: freed %s%s of %s in %s",
            format_bytes(report.freed_bytes),
            "" if report.measured else " (partly claimed, unmeasured)",
            format_bytes(report.target_bytes),
            _steps_count(len(report.steps)),
            extra=fields(
                "reclaim",
                freed_bytes=report.freed_bytes if report.measured else None,
                target_bytes=report.target_bytes,
            ),
        )


def _steps_count(count: int) -> str:
    return "1 step" if count == 1 else f"{count} steps"


def _held(item: Reclaimable) -> str | None:
    """Why *item* (a step that freed nothing) holds its memory, when it says: a loaded
    model not idle for its minimum (``"m (used 3 s ago, min idle 30 s)"``)."""
    try:
        min_idle_s = getattr(item, "reclaim_min_idle_s", None)
        if not getattr(item, "loaded", False) or not isinstance(min_idle_s, (int, float)):
            return None
        idle_s = float(item.idle_s())  # type: ignore[attr-defined]
        if idle_s >= min_idle_s:
            return None
        return f"{label(item)} (used {idle_s:.0f} s ago, min idle {min_idle_s:g} s)"
    except Exception:  # a description only: an item that cannot say is left out
        return None


def _log_step(result: StepResult, remaining_bytes: int) -> None:
    """One line per rung that ran: what it freed (measured, else its claim), with fields;
    INFO when it freed something, DEBUG when not (they repeat at every climb)."""
    emit(
        _logger,
        logging.INFO if _freed(result) > 0 else logging.DEBUG,
        "reclaim step %s: freed %s%s",
        result.name,
        format_bytes(_freed(result)),
        "" if result.measured_bytes is not None else " (claimed, unmeasured)",
        extra=fields(
            "reclaim_step",
            step=result.name,
            freed_bytes=result.measured_bytes,
            claimed_bytes=result.claimed_bytes,
            target_bytes=remaining_bytes,
        ),
    )


def _freed(result: StepResult) -> int:
    """What a step counts towards the target: measured, else its claim."""
    if result.measured_bytes is not None:
        return result.measured_bytes
    return max(result.claimed_bytes, 0)


for _public in (Cost, Reclaimable, ProcessStopper, StopAction, StopCandidate, Registry):
    _public.__module__ = __name__
del _public
