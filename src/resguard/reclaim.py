"""The reclaim ladder: things that hold memory they can give back, cheapest first.

Anything that can free memory on request (caches, lazy models, idle Ollama models)
implements :class:`Reclaimable` and registers with :func:`register`. The registry keeps
weak references, so registering never keeps an object alive. Costs order the ladder:
lower cost is reclaimed first (see :class:`Cost`).
"""

from __future__ import annotations

import gc
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import attrs

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.log import get_logger
from resguard._modules.render import ValueMixin
from resguard.snapshot import ProcessInfo
from resguard.units import format_bytes

__all__ = [
    "Cost",
    "GarbageCollect",
    "Ladder",
    "MallocTrim",
    "ProcessStopper",
    "ReclaimReport",
    "Reclaimable",
    "StepResult",
    "StopAction",
    "register",
    "registered",
    "unregister",
]


class Cost:
    """Cost ranks on the ladder; a reclaimable's ``cost`` is a float, lower goes first.

    Models use ``MODEL + reload time in seconds`` so that a model that reloads quickly is
    unloaded before one that takes a minute, and every model after every cache.
    """

    GC = 0.0
    CACHE = 1.0
    MODEL = 10.0
    PROCESS = 1000.0


@runtime_checkable
class Reclaimable(Protocol):
    """Something that holds memory it can give back on request."""

    @property
    def name(self) -> str:
        """A short name for logs and metrics."""
        ...

    @property
    def cost(self) -> float:
        """Where it stands on the ladder; see :class:`Cost`."""
        ...

    def reclaimable_bytes(self) -> int:
        """Bytes it could free now (its own accounting; the ladder re-measures)."""
        ...

    def reclaim(self, target_bytes: int) -> int:
        """Free about *target_bytes* (more is fine) and return the bytes it believes it freed."""
        ...


_logger = get_logger("resguard")
_lock = threading.Lock()
_registry: dict[int, weakref.ref[Reclaimable]] = {}


def register(item: Reclaimable) -> None:
    """Put *item* on the ladder, held by a weak reference."""
    key = id(item)

    def _forget(_: weakref.ref[Reclaimable], key: int = key) -> None:
        with _lock:
            if _registry.get(key) is _:
                del _registry[key]

    with _lock:
        _registry[key] = weakref.ref(item, _forget)


def unregister(item: Reclaimable) -> None:
    """Take *item* off the ladder; a no-op when it is not on it."""
    with _lock:
        ref = _registry.get(id(item))
        if ref is not None and ref() is item:
            del _registry[id(item)]


def registered() -> list[Reclaimable]:
    """The live reclaimables, cheapest first (ties keep registration order)."""
    with _lock:
        refs = list(_registry.values())
    items = [item for item in (ref() for ref in refs) if item is not None]
    return sorted(items, key=lambda item: item.cost)


# ---------------------------------------------------------------------------------------
# Built-in steps


class GarbageCollect:
    """``gc.collect()``, throttled so that collections take at most *max_share* of wall time.

    After a collection that took *d* seconds the next one may run only after ``d /
    max_share`` seconds, so a process under pressure does not spend itself collecting.
    """

    name = "gc.collect"
    cost = Cost.GC

    def __init__(self, max_share: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < max_share <= 1:
            raise InvalidValue(
                f"{max_share!r} is not a share of wall time; expected 0 < share <= 1")
        self.max_share = max_share
        self._clock = clock
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


@attrs.frozen
class StopAction(ValueMixin):
    """What the process stopper did, or would do in dry-run: the process and the signal."""

    pid: int
    name: str
    cmdline: str
    rss: int
    signal: str
    done: bool
    reason: str


class ProcessStopper:
    """The opt-in last step: stop processes whose name or command line matches a pattern.

    Off unless constructed with ``enabled=True``; with ``dry_run=True`` (the default) it
    only reports what it would do. It sends SIGTERM, then SIGKILL after *grace_s*. It never
    touches PID 1, this process, its parent, or a process of another user.
    """

    name = "stop processes"
    cost = Cost.PROCESS

    def __init__(self, patterns: Sequence[str], *, enabled: bool = False, dry_run: bool = True,
                 grace: float | str = "5s") -> None:
        from resguard.units import parse_duration

        if isinstance(patterns, str):
            raise InvalidType(f"{patterns!r} is one string; expected a list of patterns")
        self.patterns = tuple(re.compile(pattern) for pattern in patterns)
        self.enabled = enabled
        self.dry_run = dry_run
        self.grace_s = parse_duration(grace)
        self.actions: list[StopAction] = []

    @staticmethod
    def protected(pid: int, uid: int | None) -> str | None:
        """Why *pid* must never be stopped, or ``None`` when it may be."""
        if pid == 1:
            return "PID 1"
        if pid == os.getpid():
            return "this process"
        if pid == os.getppid():
            return "this process's parent"
        if uid is None or uid != os.getuid():
            return "another user's process"
        return None

    def candidates(self) -> list[tuple[ProcessInfo, str | None]]:
        """Matching processes, largest first, each with the reason it is protected (or None)."""
        from resguard.processes import ProcessTable

        rows = ProcessTable().top(10_000, by="memory")
        matches = []
        for row in rows:
            command = " ".join(row.cmdline) or row.name
            if any(pattern.search(command) or pattern.search(row.name)
                   for pattern in self.patterns):
                matches.append((row, self.protected(row.pid, row.uid)))
        return matches

    def reclaimable_bytes(self) -> int:
        if not self.enabled:
            return 0
        return sum(row.rss for row, reason in self.candidates() if reason is None)

    def reclaim(self, target_bytes: int) -> int:
        if not self.enabled:
            return 0
        freed = 0
        for row, reason in self.candidates():
            if freed >= target_bytes:
                break
            command = " ".join(row.cmdline) or row.name
            if reason is not None:
                self.actions.append(StopAction(row.pid, row.name, command, row.rss, "none",
                                               False, f"protected: {reason}"))
                continue
            if self.dry_run:
                self.actions.append(StopAction(row.pid, row.name, command, row.rss, "SIGTERM",
                                               False, "dry run"))
                _logger.warning("dry run: would stop pid %d (%s, %s)", row.pid, row.name,
                                format_bytes(row.rss))
                freed += row.rss
                continue
            signal_name = self._stop(row.pid, row.create_time)
            self.actions.append(StopAction(row.pid, row.name, command, row.rss, signal_name,
                                           signal_name != "gone", "matched a pattern"))
            _logger.warning("stopped pid %d (%s, %s) with %s", row.pid, row.name,
                            format_bytes(row.rss), signal_name)
            freed += row.rss
        return freed

    def _stop(self, pid: int, create_time: float) -> str:
        import psutil

        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - create_time) > 1:
                return "gone"  # the pid was reused by another process
            process.terminate()
            try:
                process.wait(self.grace_s)
                return "SIGTERM"
            except psutil.TimeoutExpired:
                process.kill()
                return "SIGKILL"
        except psutil.NoSuchProcess:
            return "gone"


# ---------------------------------------------------------------------------------------
# The ladder


@attrs.frozen
class StepResult(ValueMixin):
    """One rung: what the reclaimable claimed, what re-measuring showed, and the time taken."""

    name: str
    claimed_bytes: int
    measured_bytes: int
    duration_s: float


@attrs.frozen
class ReclaimReport(ValueMixin):
    """One climb of the ladder: the target, the steps taken and the measured total freed."""

    target_bytes: int
    freed_bytes: int
    steps: tuple[StepResult, ...]

    @property
    def reached(self) -> bool:
        return self.freed_bytes >= self.target_bytes


class Ladder:
    """Climbs the registered reclaimables cheapest first until enough memory is back.

    *measure* returns the memory in use now (bytes), and is called before and after each
    step: the ladder trusts measurements, not what a step claims (freed Python objects
    often stay in CPython's arenas). After each step ``malloc_trim`` hands the heap pages
    it freed back to the OS. It stops once the measured total reaches the target, which
    :meth:`run` computes as what is needed plus *min_reclaim_bytes*.
    """

    def __init__(self, measure: Callable[[], int], *, min_reclaim: int | str = "16MiB",
                 gc_step: GarbageCollect | None = None, trim_step: MallocTrim | None = None,
                 extra: Sequence[Reclaimable] = ()) -> None:
        from resguard.units import parse_bytes

        self.measure = measure
        self.min_reclaim_bytes = parse_bytes(min_reclaim)
        self.gc_step = gc_step if gc_step is not None else GarbageCollect()
        self.trim_step = trim_step if trim_step is not None else MallocTrim()
        self.extra = tuple(extra)
        self.last_report: ReclaimReport | None = None

    def steps(self) -> list[Reclaimable]:
        """The rungs in order: gc, then every registered item by cost."""
        items: list[Reclaimable] = [self.gc_step, *registered(), *self.extra]
        return sorted(items, key=lambda item: item.cost)

    def run(self, needed_bytes: int) -> ReclaimReport:
        """Free at least *needed_bytes* plus the minimum reclaim, cheapest step first."""
        target = max(needed_bytes, 0) + self.min_reclaim_bytes
        results: list[StepResult] = []
        freed_total = 0
        before = self.measure()
        for item in self.steps():
            if freed_total >= target:
                break
            remaining = target - freed_total
            start = time.perf_counter()
            try:
                claimed = int(item.reclaim(remaining))
            except Exception:  # a reclaimable must never break the ladder
                _logger.exception("reclaim step %r failed", getattr(item, "name", item))
                continue
            self.trim_step.trim()
            after = self.measure()
            measured = max(before - after, 0)
            before = after
            freed_total += measured
            results.append(StepResult(str(item.name), claimed, measured,
                                      time.perf_counter() - start))
        report = ReclaimReport(target, freed_total, tuple(results))
        self.last_report = report
        if results:
            _logger.info("reclaim: freed %s of %s in %d steps", format_bytes(freed_total),
                         format_bytes(target), len(results))
        return report
