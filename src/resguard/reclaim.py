"""The reclaim ladder: things that hold memory they can give back, cheapest first.

Anything that can free memory on request (caches, lazy models, idle Ollama models)
implements :class:`Reclaimable` and registers with :func:`register`. The registry keeps
weak references, so registering never keeps an object alive. Costs order the ladder:
lower cost is reclaimed first (see :class:`Cost`).
"""

from __future__ import annotations

import gc
import math
import os
import re
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

import attrs

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.clockcheck import checked_clock
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard._modules.render import ValueMixin
from resguard._probes.identity import Identity, ProcessHandle, ProcStat, read_stat
from resguard._probes.procfs import PAGE_SIZE
from resguard.units import format_bytes

__all__ = [
    "DEFAULT_PROTECTED_NAMES",
    "Cost",
    "GarbageCollect",
    "Ladder",
    "MallocTrim",
    "ProcessStopper",
    "ReclaimReport",
    "Reclaimable",
    "StepResult",
    "StopAction",
    "StopCandidate",
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

    def __new__(cls, *args: object, **kwargs: object) -> Cost:
        raise InvalidType(
            "Cost is a set of ranks, not a value to construct; expected one "
            "of Cost.GC, Cost.CACHE, Cost.MODEL, Cost.PROCESS (or any float)"
        )


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


def _shown(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__, or an int too long to print
        return f"<a {type(value).__name__}>"
    return text if len(text) <= 200 else text[:200] + "..."


def _check_reclaimable(item: object, where: str) -> Reclaimable:
    if not isinstance(item, Reclaimable):
        raise InvalidType(
            f"{_shown(item)} is not a Reclaimable; {where} expected an object "
            "with name, cost, reclaimable_bytes() and reclaim(target_bytes)"
        )
    return item


def _reclaimables(extra: object) -> tuple[Reclaimable, ...]:
    if isinstance(extra, (str, bytes)) or not isinstance(extra, Iterable):
        raise InvalidType(f"extra={_shown(extra)} is not a list of Reclaimables")
    return tuple(_check_reclaimable(item, "Ladder(extra=...)") for item in extra)


def _valid_cost(item: Reclaimable) -> float | None:
    """*item*'s cost, or ``None`` when it is not a finite number (or reading it failed)."""
    try:
        cost = item.cost
    except Exception:
        return None
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost):
        return None
    return float(cost)


def register(item: Reclaimable) -> None:
    """Put *item* on the ladder, held by a weak reference."""
    _check_reclaimable(item, "register()")
    cost = _valid_cost(item)
    if cost is None:
        raise InvalidValue(
            f"{_shown(getattr(item, 'cost', None))} is not a cost for "
            f"{_shown(item)}; expected a finite number (see resguard.Cost)"
        )
    key = id(item)

    def _forget(_: weakref.ref[Reclaimable], key: int = key) -> None:
        with _lock:
            if _registry.get(key) is _:
                del _registry[key]

    try:
        ref = weakref.ref(item, _forget)
    except TypeError:
        raise InvalidType(
            f"{_shown(item)} cannot be held by a weak reference; expected an "
            "object that allows one (add '__weakref__' to its __slots__)"
        ) from None
    with _lock:
        _registry[key] = ref


def unregister(item: Reclaimable) -> None:
    """Take *item* off the ladder; a no-op when it is not on it."""
    _check_reclaimable(item, "unregister()")
    with _lock:
        ref = _registry.get(id(item))
        if ref is not None and ref() is item:
            del _registry[id(item)]


def registered() -> list[Reclaimable]:
    """The live reclaimables, cheapest first (ties keep registration order).

    An item whose cost is no longer a finite number is left out, with a warning.
    """
    with _lock:
        refs = list(_registry.values())
    items = [item for item in (ref() for ref in refs) if item is not None]
    return _by_cost(items)


_bad_costs = FaultLog(_logger)


def _by_cost(items: Iterable[Reclaimable]) -> list[Reclaimable]:
    ranked: list[tuple[float, Reclaimable]] = []
    for item in items:
        cost = _valid_cost(item)
        if cost is None:
            _bad_costs.failed(
                f"the cost of reclaimable {getattr(item, 'name', '?')!r}",
                "not a finite number; left off the ladder",
            )
            continue
        ranked.append((cost, item))
    ranked.sort(key=lambda pair: pair[0])
    return [item for _, item in ranked]


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


DEFAULT_PROTECTED_NAMES = frozenset(
    {
        "init",
        "systemd",
        "systemd-journal",
        "systemd-logind",
        "systemd-udevd",
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
    }
)
"""Process names (``comm``) the stopper never touches, whatever the patterns say: losing
one of these takes the machine, the session or the remote login with it."""

_KILL_WAIT_S = 5.0  # how long to wait for a SIGKILLed process to become a zombie


@attrs.frozen
class StopCandidate(ValueMixin):
    """A process that matched a pattern: its exact identity (PID and start time in clock
    ticks), what it is, and why it is protected (``None`` when it may be stopped)."""

    pid: int
    start_ticks: int
    name: str
    cmdline: str
    uid: int | None
    rss: int
    protected: str | None


@attrs.frozen
class StopAction(ValueMixin):
    """What the process stopper did, or would do in dry-run.

    ``signal`` is the signal that ended the process (``"SIGTERM"`` when it exited within
    the grace period, ``"SIGKILL"`` only when escalation was needed), the signal a dry run
    would send first, or ``"none"`` when nothing was sent; ``done`` says whether the
    process is stopped (a zombie its parent has not reaped counts as stopped).
    """

    pid: int
    name: str
    cmdline: str
    rss: int
    signal: str
    done: bool
    reason: str
    start_ticks: int | None = None


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidType(f"{name}={_shown(value)} is not a bool; expected True or False")
    return value


def _compile_patterns(patterns: object) -> tuple[re.Pattern[str], ...]:
    expected = "expected a list of regular expressions (strings), e.g. [r'^python worker']"
    if isinstance(patterns, (str, bytes)):
        raise InvalidType(f"{_shown(patterns)} is one string; {expected}")
    if not isinstance(patterns, Iterable):
        raise InvalidType(f"{_shown(patterns)} is not a list of patterns; {expected}")
    compiled = []
    for pattern in list(patterns):
        if isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str):
            regex = pattern
        elif isinstance(pattern, str):
            try:
                regex = re.compile(pattern)
            except (re.error, RecursionError, OverflowError) as error:
                raise InvalidValue(
                    f"{_shown(pattern)} is not a regular expression: {error}; {expected}"
                ) from None
        else:
            raise InvalidType(
                f"{_shown(pattern)} in {_shown(patterns)} is not a pattern; {expected}"
            )
        if regex.search("") is not None:
            raise InvalidValue(
                f"{regex.pattern!r} matches an empty string, so it matches "
                "every process; expected a pattern that names what may be "
                "stopped"
            )
        compiled.append(regex)
    return tuple(compiled)


def _protected_names(protect: object) -> frozenset[str]:
    expected = "expected a list of process names, e.g. ['postgres']"
    if isinstance(protect, (str, bytes)):
        raise InvalidType(f"protect={_shown(protect)} is one string; {expected}")
    if not isinstance(protect, Iterable):
        raise InvalidType(f"protect={_shown(protect)} is not a list of names; {expected}")
    names = list(protect)
    for name in names:
        if not isinstance(name, str):
            raise InvalidType(f"{_shown(name)} in protect is not a process name; {expected}")
    return DEFAULT_PROTECTED_NAMES | frozenset(names)


def _read_cmdline(proc: str, pid: int) -> str:
    try:
        fd = os.open(f"{proc}/{pid}/cmdline", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        raw = os.read(fd, 65536)
    except OSError:
        return ""
    finally:
        os.close(fd)
    return " ".join(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)


ACTIONS_KEPT = 1000
"""How many of its latest actions a :class:`ProcessStopper` keeps in ``actions``."""
_DRY_RUN_LOGGED_MAX = 4096  # identities remembered for logging a dry run once each


class ProcessStopper:
    """The opt-in last step: stop processes whose name or command line matches a pattern.

    Off unless constructed with ``enabled=True``; with ``dry_run=True`` (the default) it
    only reports what it would do. It sends SIGTERM, then SIGKILL after *grace*. It never
    touches PID 1, this process, its parent, a process of another user, a kernel thread or
    a process named in :data:`DEFAULT_PROTECTED_NAMES` or *protect*.

    A process is identified by its PID and exact start time; on Linux >= 5.3 the signals
    go through a pidfd opened while that identity is verified, so a process that took over
    a PID is never signalled (elsewhere the start time is re-checked before each signal).
    A process that exits, even as a zombie its parent has not reaped yet, counts as
    stopped at once: the grace wait ends there.
    """

    name = "stop processes"
    cost = Cost.PROCESS

    def __init__(
        self,
        patterns: Iterable[str | re.Pattern[str]],
        *,
        enabled: bool = False,
        dry_run: bool = True,
        grace: float | str = "5s",
        protect: Iterable[str] = (),
    ) -> None:
        from resguard.units import parse_duration

        compiled = _compile_patterns(patterns)
        enabled = _check_flag(enabled, "enabled")
        dry_run = _check_flag(dry_run, "dry_run")
        grace_s = parse_duration(grace)
        protected_names = _protected_names(protect)
        self.patterns = compiled
        self.enabled = enabled
        self.dry_run = dry_run
        self.grace_s = grace_s
        self.protected_names = protected_names
        self.actions: list[StopAction] = []
        self._dry_run_logged: set[tuple[int, int]] = set()
        self._proc = "/proc"
        self._use_pidfd = True  # tests turn it off to exercise the fallback
        self._clock: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], None] = time.sleep

    @staticmethod
    def protected(pid: int, uid: int | None) -> str | None:
        """Why *pid* must never be stopped, or ``None`` when it may be."""
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise InvalidType(f"pid={_shown(pid)} is not a process id; expected an integer")
        if pid <= 1:
            return "PID 1" if pid == 1 else "not one process (a group or every process)"
        if pid == os.getpid():
            return "this process"
        if pid == os.getppid():
            return "this process's parent"
        if uid is None or uid != os.getuid():
            return "another user's process"
        return None

    def _why_protected(self, pid: int, uid: int | None, stat: ProcStat) -> str | None:
        reason = self.protected(pid, uid)
        if reason is not None:
            return reason
        if stat.kernel_thread:
            return "a kernel thread"
        if stat.name in self.protected_names:
            return f"a protected name ({stat.name})"
        return None

    def _matches(self, name: str, command: str) -> bool:
        return any(pattern.search(command) or pattern.search(name) for pattern in self.patterns)

    def candidates(self) -> list[StopCandidate]:
        """Matching processes, largest first, each with the reason it is protected (or None).

        Each is read as one process: its start time is read before and after its command
        line and owner, and a process whose PID changed hands in between is left out.
        """
        found: list[StopCandidate] = []
        try:
            entries = list(os.scandir(self._proc))
        except OSError:
            return []
        for entry in entries:
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            first = read_stat(pid, self._proc)
            if first is None or first.exited:
                continue
            try:
                uid: int | None = entry.stat(follow_symlinks=False).st_uid
            except OSError:
                continue
            command = _read_cmdline(self._proc, pid) or first.name
            if not self._matches(first.name, command):
                continue
            second = read_stat(pid, self._proc)
            if second is None or second.start_ticks != first.start_ticks:
                continue  # gone, or its PID changed hands while it was read
            found.append(
                StopCandidate(
                    pid=pid,
                    start_ticks=first.start_ticks,
                    name=first.name,
                    cmdline=command,
                    uid=uid,
                    rss=first.rss_pages * PAGE_SIZE,
                    protected=self._why_protected(pid, uid, first),
                )
            )
        found.sort(key=lambda candidate: candidate.rss, reverse=True)
        return found

    def reclaimable_bytes(self) -> int:
        if not self.enabled:
            return 0
        return sum(candidate.rss for candidate in self.candidates() if candidate.protected is None)

    def reclaim(self, target_bytes: int) -> int:
        if isinstance(target_bytes, bool) or not isinstance(target_bytes, int):
            raise InvalidType(
                f"{_shown(target_bytes)} is not a number of bytes; expected an integer"
            )
        if not self.enabled:
            return 0
        freed = 0
        for candidate in self.candidates():
            if freed >= target_bytes:
                break
            action = self.stop(candidate)
            self.actions.append(action)
            if len(self.actions) > ACTIONS_KEPT:  # a long WARNING must not grow it forever
                del self.actions[:-ACTIONS_KEPT]
            if action.done or action.reason.startswith("dry run"):
                freed += candidate.rss
        return freed

    def stop(self, candidate: StopCandidate) -> StopAction:
        """Stop one candidate (as :meth:`candidates` listed it) and say what happened.

        Nothing is sent when it is protected, in dry run, or when the process with that
        identity has exited or its PID belongs to another process now.
        """
        if not isinstance(candidate, StopCandidate):
            raise InvalidType(
                f"{_shown(candidate)} is not a StopCandidate; expected one "
                "from ProcessStopper.candidates()"
            )
        for field in ("pid", "start_ticks"):
            value = getattr(candidate, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidType(
                    f"candidate.{field}={_shown(value)} is not a whole number; "
                    "expected a StopCandidate from ProcessStopper.candidates()"
                )
        if candidate.pid <= 0 or candidate.start_ticks < 0:
            # os.kill(0) and os.kill(-1) signal whole groups: never let such a PID near it
            raise InvalidValue(
                f"candidate.pid={candidate.pid!r} (start_ticks="
                f"{candidate.start_ticks!r}) is not one process; expected a "
                "StopCandidate from ProcessStopper.candidates()"
            )

        def action(signal_name: str, done: bool, reason: str) -> StopAction:
            return StopAction(
                candidate.pid,
                candidate.name,
                candidate.cmdline,
                candidate.rss,
                signal_name,
                done,
                reason,
                candidate.start_ticks,
            )

        if candidate.protected is not None:
            return action("none", False, f"protected: {candidate.protected}")
        if not self.enabled:
            return action("none", False, "not enabled")
        if self.dry_run:
            seen = (candidate.pid, candidate.start_ticks)
            if seen not in self._dry_run_logged:  # once per process, not per climb
                if len(self._dry_run_logged) >= _DRY_RUN_LOGGED_MAX:
                    self._dry_run_logged.clear()
                self._dry_run_logged.add(seen)
                _logger.warning(
                    "dry run: would stop pid %d (%s, %s)",
                    candidate.pid,
                    candidate.name,
                    format_bytes(candidate.rss),
                )
            return action(
                "SIGTERM",
                False,
                f"dry run: would send SIGTERM, then SIGKILL after {self.grace_s:g} s",
            )
        identity = Identity(candidate.pid, candidate.start_ticks)
        handle = ProcessHandle.open(identity, self._proc, use_pidfd=self._use_pidfd)
        if handle is None:
            return action(
                "none",
                False,
                "gone before it was signalled (it exited, or its "
                "PID belongs to another process now)",
            )
        with handle:
            try:
                uid: int | None = os.stat(f"{self._proc}/{candidate.pid}").st_uid
            except OSError:
                uid = None
            stat = handle.stat()  # the owner read above is this process's
            reason = self._why_protected(candidate.pid, uid, stat) if stat is not None else None
            if reason is not None:
                return action("none", False, f"protected: {reason}")
            try:
                result = self._terminate(handle, action)
            except PermissionError as error:
                return action("none", False, f"not permitted: {error.strerror}")
        _logger.warning(
            "stopping pid %d (%s, %s): %s, %s",
            candidate.pid,
            candidate.name,
            format_bytes(candidate.rss),
            result.signal,
            result.reason,
        )
        return result

    def _terminate(
        self, handle: ProcessHandle, action: Callable[[str, bool, str], StopAction]
    ) -> StopAction:
        if not handle.send(signal.SIGTERM):
            return action("none", True, "exited before it was signalled")
        if handle.wait_exited(self.grace_s, clock=self._clock, sleep=self._sleep):
            return action("SIGTERM", True, "exited within the grace period after SIGTERM")
        if not handle.send(signal.SIGKILL):
            return action("SIGTERM", True, "exited at the end of the grace period")
        if handle.wait_exited(_KILL_WAIT_S, clock=self._clock, sleep=self._sleep):
            return action(
                "SIGKILL", True, f"still running {self.grace_s:g} s after SIGTERM; killed"
            )
        return action(
            "SIGKILL", False, f"still running {_KILL_WAIT_S:g} s after SIGKILL (uninterruptible?)"
        )


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


class Ladder:
    """Climbs the registered reclaimables cheapest first until enough memory is back.

    *measure* returns the memory in use now (bytes, or ``None`` when unknown), and is
    called before and after each step: the ladder trusts measurements, not what a step
    claims (freed Python objects often stay in CPython's arenas). After each step
    ``malloc_trim`` hands the heap pages it freed back to the OS. It stops once the
    measured total reaches the target, which :meth:`run` computes as what is needed plus
    *min_reclaim_bytes*. While memory cannot be measured, a step's claim is counted
    instead, and no rung of :attr:`Cost.PROCESS` or above runs: processes are never
    stopped on a number nobody could read.
    """

    def __init__(
        self,
        measure: Callable[[], int | None],
        *,
        min_reclaim: int | str = "16MiB",
        gc_step: GarbageCollect | None = None,
        trim_step: MallocTrim | None = None,
        extra: Iterable[Reclaimable] = (),
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
        extra_items = _reclaimables(extra)
        self.measure = measure
        self.min_reclaim_bytes = min_reclaim_bytes
        self.gc_step = gc_step if gc_step is not None else GarbageCollect()
        self.trim_step = trim_step if trim_step is not None else MallocTrim()
        self.extra = extra_items
        self.last_report: ReclaimReport | None = None
        self._faults = FaultLog(_logger)

    def steps(self) -> list[Reclaimable]:
        """The rungs in order: gc, then every registered item by cost."""
        return _by_cost([self.gc_step, *registered(), *self.extra])

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

    def run(self, needed_bytes: int) -> ReclaimReport:
        """Free at least *needed_bytes* plus the minimum reclaim, cheapest step first."""
        if isinstance(needed_bytes, bool) or not isinstance(needed_bytes, int):
            raise InvalidType(
                f"{_shown(needed_bytes)} is not a number of bytes; expected an integer"
            )
        target = max(needed_bytes, 0) + self.min_reclaim_bytes
        results: list[StepResult] = []
        freed_total = 0
        all_measured = True
        before = self._measure()
        for item in self.steps():
            if freed_total >= target:
                break
            step = f"reclaim step {_shown(getattr(item, 'name', item))}"
            if before is None and (_valid_cost(item) or 0.0) >= Cost.PROCESS:
                # once while memory stays unknown, not on every climb of the ladder
                self._faults.failed(step, "not run: memory use is unknown", kind="unknown")
                continue
            remaining = target - freed_total
            start = time.perf_counter()
            try:
                claimed = int(item.reclaim(remaining))
            except Exception as error:  # a reclaimable must never break the ladder
                self._faults.failed(step, error, kind=type(error).__name__)
                continue
            self._faults.recovered(step)
            self.trim_step.trim()
            after = self._measure()
            measured = max(before - after, 0) if before is not None and after is not None else None
            before = after
            if measured is None:
                all_measured = False
            freed_total += measured if measured is not None else max(claimed, 0)
            results.append(
                StepResult(str(item.name), claimed, measured, time.perf_counter() - start)
            )
        report = ReclaimReport(target, freed_total, tuple(results), all_measured)
        self.last_report = report
        if results:
            _logger.info(
                "reclaim: freed %s%s of %s in %d steps",
                format_bytes(freed_total),
                "" if all_measured else " (partly claimed, unmeasured)",
                format_bytes(target),
                len(results),
            )
        return report
