"""Kernel memory events: descriptors that become ready when memory crosses a line, so the
Monitor can sleep in one ``poll()`` instead of sampling to find out.

What is armed depends on where the limit that binds lives (``MemoryInfo.source`` and
``source_detail``, the same directory ``monitor._sources.binding_cgroup`` names):

- **cgroup v1** (the limit is a ``memory.limit_in_bytes``): usage thresholds, one eventfd
  per edge registered through ``cgroup.event_control`` against ``memory.usage_in_bytes``
  (the kernel signals when usage crosses the value either way); the ``memory.oom_control``
  eventfd (an OOM in the cgroup: an ``oom`` event) and its ``oom_kill`` counter, re-read
  on every :meth:`read` (each kill: an ``oom_kill`` event, as v2 counts both);
  ``memory.pressure_level`` at ``medium`` and ``critical`` where the kernel has it. A
  level that fired is not polled for :data:`PRESSURE_HOLDOFF_S` (the kernel signals it
  hundreds of times a second under reclaim), a threshold for :data:`THRESHOLD_HOLDOFF_S`
  (use hovering at an edge).
  Each threshold registration makes the kernel wait out an RCU grace period (8–16 ms
  measured here), so a worker thread registers them, nearest to current use first, and
  an extra eventfd wakes the poller whenever the set changed
  (:attr:`MemoryEvents.generation` grows: poll :meth:`MemoryEvents.descriptors` anew).
- **cgroup v2** (``memory.max``/``memory.high``): ``memory.events``, polled for
  modification (kernfs signals ``POLLPRI|POLLERR``); :meth:`MemoryEvents.read` re-reads it
  and reports the growth of its ``high``, ``max``, ``oom`` and ``oom_kill`` counters. It
  works when called on every tick too (a fixture tree's regular file never signals).
- **the host** (no cgroup limit binds): only PSI.

With ``psi=True`` a PSI trigger is armed on the memory pressure file the snapshot reads
(the cgroup's ``memory.pressure`` on v2, ``/proc/pressure/memory`` otherwise); which
stall and window the kernel accepted is said in :attr:`MemoryEvents.armed` (unprivileged
windows are multiples of 2 s).

**The gap translation.** Rules and guards speak of ``memory.used``, the working set (usage
minus inactive file cache), but the kernel compares thresholds with
``memory.usage_in_bytes``, which includes that cache. :meth:`MemoryEvents.arm` therefore
registers each edge at ``edge + gap - slack`` (never below the edge), the gap being
``usage_in_bytes - used`` now (usage read with one ``pread``) and the slack
:func:`~resguard._probes.memcg_v1.rearm_slack_bytes` (1 % of the limit, at least 4 MiB).
The gap drifts as cache comes and goes (reclaim takes inactive cache first), so the
thresholds are registered again when the edge set changed or the gap moved by more than
the slack: while the gap shrinks by less than that between two calls, a rising
``memory.used`` reaches the edge no sooner than usage reaches its threshold, so the event
is never late, at most early (one burst of samples). Cache activated or freed by more
than the slack at once moves ``memory.used`` with no change the kernel compares; the
next sample sees that crossing.
An edge whose threshold usage has already passed (it fired early, or use is above it) is
not covered (:attr:`MemoryEvents.covered_edges_bytes`): the Monitor paces its polling by
the distance to it as it does without events. At most
:data:`~resguard._probes.memcg_v1.MAX_EDGES` edges are armed, the nearest to current use.
The v1 registrations themselves are :mod:`resguard._probes.memcg_v1`'s.

Nothing here raises: what cannot be armed (no permission, a missing file, the kernel
refusing a registration, no ``os.eventfd`` or ``select.poll``) leaves
:attr:`MemoryEvents.available` false or the set partial, and :attr:`MemoryEvents.why_not`
says why in one sentence. A fixture tree's plain files are told from the kernel's (a
control file that takes an invalid registration, a PSI file with a size) and never
written into. Every descriptor is closed on every failure path, by
:meth:`MemoryEvents.close` (idempotent, joins the worker, safe in a forked child: it
closes the child's copies only, and the parent's registrations stay) or when the object
is collected.
"""

from __future__ import annotations

import os
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import attrs

from resguard._modules import forks
from resguard._probes.memcg_v1 import (
    MAX_EDGES,
    FdTable,
    V1Notifier,
    Watch,
    nearest_edges,
    pread_text,
    rearm_slack_bytes,
    shut,
    usage_thresholds,
)
from resguard._probes.psi import PsiTrigger, arm_trigger

__all__ = [
    "HOLDOFF_S",
    "MAX_EDGES",
    "PRESSURE_HOLDOFF_S",
    "THRESHOLD_HOLDOFF_S",
    "V2_COUNTERS",
    "MemoryEvent",
    "MemoryEvents",
    "MemoryLike",
    "counter_events",
    "identity_of",
    "nearest_edges",
    "parse_memory_events",
    "rearm_slack_bytes",
    "rerooted",
    "usage_thresholds",
]

PRESSURE_HOLDOFF_S = 1.0
"""How long a v1 pressure level that fired is not polled: the kernel signals it every 512
pages scanned (hundreds of times a second under reclaim), and a Monitor woken that often
would spend a core sampling; what it counts meanwhile is reported after."""

THRESHOLD_HOLDOFF_S = 0.1
"""How long a usage threshold that fired is not polled: use that hovers at an edge with
allocations and frees would cross it thousands of times a second; the Monitor samples at
its fastest for a burst after an event anyway, so nothing is missed meanwhile."""

HOLDOFF_S = {"pressure": PRESSURE_HOLDOFF_S, "threshold": THRESHOLD_HOLDOFF_S}
"""The hold-off of each kind of eventfd (OOM notifications have none: they are rare)."""

V2_COUNTERS = ("high", "max", "oom", "oom_kill")
"""The ``memory.events`` counters reported (``low`` is a protection, not pressure)."""

_READ_BYTES = 4096


class MemoryLike(Protocol):
    """What is read of ``resguard.snapshot.MemoryInfo`` (the sense layer cannot import it)."""

    @property
    def limit(self) -> int | None: ...
    @property
    def source(self) -> str: ...
    @property
    def source_detail(self) -> str: ...


_POLLPRI, _POLLERR = 0x002, 0x008  # select.POLL*: the same on every Linux


@attrs.frozen
class MemoryEvent:
    """One thing the kernel reported about memory since the last :meth:`MemoryEvents.read`.

    ``kind`` is ``"threshold"`` (usage crossed an armed edge, either way), ``"oom"`` (the
    cgroup hit its limit and could not reclaim), ``"oom_kill"`` (the kernel killed a
    process of it), ``"high"``/``"max"`` (v2: usage went over ``memory.high`` / hit
    ``memory.max``) or ``"pressure"`` (a v1 pressure level or a PSI trigger); ``count``
    how many since the last read (at least 1); ``source`` the file it came from; ``detail``
    what it was, for a log line.
    """

    kind: str
    count: int
    source: str
    detail: str


def rerooted(path: str, root: str) -> str:
    """*path* under the fixture *root* (``/`` leaves it alone); a path already under
    *root* (a snapshot taken from that tree names its own files) is kept as it is."""
    if root in ("", "/"):
        return path
    base = os.path.abspath(root).rstrip("/")
    if path == base or path.startswith(base + "/"):
        return path
    return base + "/" + path.lstrip("/")


def identity_of(directory: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of *directory*, ``None`` when it is not there."""
    try:
        stat = os.stat(directory)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def parse_memory_events(text: str | None) -> dict[str, int] | None:
    """The counters of a v2 ``memory.events`` text (``name value`` lines), or ``None``
    when it is not one: cut short, empty, or any line that is not a name and a whole
    number (a damaged file gives no event rather than a wrong one). Never raises."""
    if not text or not text.endswith("\n") or len(text) > _READ_BYTES:
        return None
    counters: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if (
            not name
            or not all(char.isascii() and (char.isalnum() or char == "_") for char in name)
            or not value.isdigit()
            or not value.isascii()
            or len(value) > 20
        ):
            return None
        counters[name] = int(value)
    return counters


def counter_events(
    before: Mapping[str, int], after: Mapping[str, int], source: str
) -> tuple[MemoryEvent, ...]:
    """One event per counter of :data:`V2_COUNTERS` that grew from *before* to *after*;
    a counter that shrank (the cgroup was made anew) or is missing in either gives none."""
    events = []
    for name in V2_COUNTERS:
        old, new = before.get(name), after.get(name)
        if old is not None and new is not None and new > old:
            events.append(MemoryEvent(name, new - old, source, f"{name} {old} -> {new}"))
    return tuple(events)


def _pressure_path(
    pressure_source: str | None, directory: str | None, limit_file: str, root: str
) -> str:
    """The PSI file to arm a trigger on: the one the snapshot reads (*pressure_source*),
    else the v2 cgroup's own, else the host's."""
    if pressure_source is not None and pressure_source.startswith("/"):
        return rerooted(pressure_source, root).rstrip("/") + "/memory.pressure"
    v2 = limit_file != "memory.limit_in_bytes"
    if pressure_source is None and directory is not None and v2:
        return directory + "/memory.pressure"
    return rerooted("/proc/pressure/memory", root)


class MemoryEvents:
    """The armed kernel memory events of one process (see the module docstring): open with
    :meth:`open`, wait on :meth:`descriptors`, drain with :meth:`read`, move the usage
    thresholds with :meth:`arm`, release with :meth:`close`. Thread-safe; never raises."""

    def __init__(self, root: str = "/", clock: Callable[[], float] = time.monotonic) -> None:
        """An empty set (nothing armed); :meth:`open` is how one is made."""
        self._clock = clock
        self._root = root
        self._pid = os.getpid()
        self._fds = FdTable()  # every descriptor this object must close, and the lock
        self._watches: dict[int, Watch] = {}
        self._reasons: list[str] = []
        self._lines: list[str] = []  # what is armed besides v1's
        self._v1 = V1Notifier(self._fds, self._watches, self._reasons)
        self._events_fd: int | None = None  # v2 memory.events
        self._events_path = ""
        self._counters: dict[str, int] | None = None
        self._directory: str | None = None  # the cgroup armed, and which one it was:
        self._identity: tuple[int, int] | None = None  # one removed and made again differs
        forks.register(self)
        weakref.finalize(self, shut, self._fds, self._v1)  # its worker stops with it

    @property
    def generation(self) -> int:
        """Grows whenever :meth:`descriptors` changes (a threshold registered or dropped,
        the set closed): poll the new set then."""
        return self._fds.generation

    @classmethod
    def open(
        cls,
        memory: MemoryLike,
        pressure_source: str | None,
        *,
        psi: bool = True,
        root: str = "/",
        clock: Callable[[], float] = time.monotonic,
    ) -> MemoryEvents:
        """Arm what this kernel offers for the limit *memory* reports (v1, v2 or the
        host, chosen from ``memory.source``/``source_detail``) and, with *psi*, a PSI
        trigger on the pressure file *pressure_source* names (``"system"`` or a cgroup
        directory, as ``PressureInfo.source``). *root* re-roots every path (fixture
        trees); *clock* times the hold-offs of what fired (:data:`HOLDOFF_S`).
        Never raises: see :attr:`available` and :attr:`why_not`."""
        events = cls(root, clock)
        try:
            events._open(memory, pressure_source, psi)
        except Exception as error:  # never raise into the monitor; say it instead
            events._reasons.append(f"arming failed unexpectedly ({error!r})")
            events._release()
        return events

    def _open(self, memory: MemoryLike, pressure_source: str | None, psi: bool) -> None:
        if not sys.platform.startswith("linux"):
            self._reasons.append(f"there are no kernel memory events on {sys.platform}")
            return
        import select

        if not hasattr(select, "poll"):
            self._reasons.append("this Python has no select.poll to wait on kernel events")
            return
        detail = memory.source_detail
        directory = None
        if memory.source == "cgroup" and detail.startswith("/"):
            directory = rerooted(os.path.dirname(detail), self._root)
        limit_file = os.path.basename(detail)
        if directory is not None:
            self._directory, self._identity = directory, identity_of(directory)
        if directory is not None and limit_file == "memory.limit_in_bytes":
            self._v1.open(directory, rerooted(detail, self._root), memory.limit)
        elif directory is not None and limit_file in ("memory.max", "memory.high"):
            self._open_v2(directory)
        if psi:
            self._open_psi(_pressure_path(pressure_source, directory, limit_file, self._root))
        if not self._watches and self._events_fd is None and not self._reasons:
            self._reasons.append(
                f"no cgroup limit binds (the {memory.source} limit does) and PSI is off"
                if directory is None
                else f"nothing could be armed for {detail}"
            )

    def _open_v2(self, directory: str) -> None:
        path = directory + "/memory.events"
        fd = self._fds.open_read(path)
        if fd is None:
            self._reasons.append(f"cannot read {path}")
            return
        self._events_fd, self._events_path = fd, path
        self._counters = parse_memory_events(pread_text(fd))  # the baseline: no event
        self._lines.append(f"v2 memory.events on {path}")

    def _open_psi(self, path: str) -> None:
        trigger = arm_trigger(path)
        if not isinstance(trigger, PsiTrigger):
            self._reasons.append(f"no PSI trigger: {trigger}")
            return
        self._fds.own(trigger.fd, path)
        stall_ms, window_s = trigger.stall_us // 1000, trigger.window_us / 1_000_000
        line = f"PSI some {stall_ms}ms/{window_s:g}s on {path}"
        self._watches[trigger.fd] = Watch("psi", _POLLPRI, path, line)
        self._lines.append(line)

    @property
    def available(self) -> bool:
        """Whether anything is armed at all (v1: thresholds come with :meth:`arm`)."""
        with self._fds.lock:
            if self._fds.closed:
                return False
            return bool(self._watches or self._events_fd is not None or self._v1.thresholds_ready)

    @property
    def why_not(self) -> str | None:
        """Why nothing (or less than this kernel could offer) is armed: one sentence for
        one info log line; ``None`` when all of it is."""
        with self._fds.lock:
            reasons = [*self._reasons, *filter(None, [self._v1.threshold_problem])]
            unique = list(dict.fromkeys(reasons))
            if unique:
                return "; ".join(unique) + "."
            return "closed." if self._fds.closed else None

    @property
    def armed(self) -> tuple[str, ...]:
        """What is armed now, readable (``"v1 usage thresholds at 2 on ..."``, ``"PSI some
        100ms/1s on /proc/pressure/memory"``)."""
        with self._fds.lock:
            if self._fds.closed:
                return ()
            return (*self._v1.armed_lines(), *self._lines)

    def _after_fork_in_child(self) -> None:
        """Close the child's copies at once: no monitor thread survives a fork, and while
        a child holds a copy of a threshold's eventfd the kernel keeps the registration
        the parent dropped (a long-lived forked worker would pile them up)."""
        self._fds.renew_locks()  # a parent's thread may have held them at the fork
        self._v1.after_fork_in_child()
        self._pid = os.getpid()
        self._release()

    def arm(self, edges_bytes: Iterable[int], used_bytes: int | None) -> None:
        """Be woken when ``memory.used`` crosses any of *edges_bytes* (v1 usage
        thresholds; v2 and the host: nothing to arm per byte). *used_bytes* is
        ``memory.used`` now (``None``: the last gap is kept). The thresholds are asked
        for again only when the nearest edges changed or the gap moved by more than
        :func:`rearm_slack_bytes`; a worker thread registers them (the kernel takes
        milliseconds for each), so this returns at once: :attr:`generation` grows as
        they are armed, :meth:`wait_armed` waits for them. Never raises."""
        with self._fds.lock:
            if self._fds.closed or not self._v1.thresholds_ready:
                return
            try:
                self._v1.arm(edges_bytes, used_bytes)
            except Exception as error:  # never raise into the monitor; say it instead
                self._reasons.append(f"re-arming failed unexpectedly ({error!r})")

    def wait_armed(self, timeout_s: float) -> bool:
        """Wait up to *timeout_s* until the thresholds the last :meth:`arm` asked for are
        registered; whether they are (``True`` where there is nothing to wait for)."""
        with self._fds.changed:
            done = self._fds.changed.wait_for(
                lambda: self._fds.closed or self._v1.settled(), timeout=max(timeout_s, 0.0)
            )
            return bool(done) and not self._fds.closed

    @property
    def thresholds_bytes(self) -> tuple[int, ...]:
        """The ``memory.usage_in_bytes`` values armed now (v1), sorted."""
        with self._fds.lock:
            found = (w.value_bytes for w in self._watches.values() if w.kind == "threshold")
            return tuple(sorted(value for value in found if value is not None))

    @property
    def covered_edges_bytes(self) -> tuple[int, ...]:
        """The edges (``memory.used`` values, sorted) the kernel wakes the loop before
        use rises through: a threshold armed for them above usage at the last
        :meth:`arm` (v1). Others, those below use included, are for pacing to watch."""
        with self._fds.lock:
            return () if self._fds.closed else self._v1.covered_edges_bytes()

    def descriptors(self) -> tuple[tuple[int, int], ...]:
        """``(fd, select.POLL* mask)`` of everything armed, to wait on in one ``poll()``;
        ask again when :attr:`generation` changed (after :meth:`arm`)."""
        with self._fds.lock:
            if self._fds.closed:
                return ()
            found = [
                (fd, watch.mask)
                for fd, watch in self._watches.items()
                if watch.muted_until_s is None
            ]
            if self._events_fd is not None:
                found.append((self._events_fd, _POLLPRI | _POLLERR))
            return tuple(found)

    def read(self, ready_fds: Iterable[int] = ()) -> tuple[MemoryEvent, ...]:
        """Drain the ready descriptors (*ready_fds*, as ``poll()`` returned them) into
        events; v2's ``memory.events`` and v1's ``oom_kill`` counter are re-read on every
        call, so calling it on every tick finds what no descriptor signalled. Never
        raises."""
        with self._fds.lock:
            if self._fds.closed:
                return ()
            try:
                events = self._read(ready_fds)  # drained either way: no busy poll
            except Exception:  # never raise into the monitor: the next sample still looks
                return ()
            # a removed cgroup signals every eventfd as it goes offline: none of it is news
            return () if events and self._gone() else events

    @property
    def gone(self) -> bool:
        """Whether the cgroup these events are armed on was removed (a directory made
        again at its path is another cgroup): its descriptors watch a dead memcg, which
        signals each of them once as it goes offline, and will never signal again."""
        with self._fds.lock:
            return self._gone()

    def _gone(self) -> bool:
        directory = self._directory
        if directory is None:
            return False
        return self._identity is None or identity_of(directory) != self._identity

    def _read(self, ready_fds: Iterable[int]) -> tuple[MemoryEvent, ...]:
        events: list[MemoryEvent] = []
        oom_seen = 0
        now_s = self._clock()
        self._unmute(now_s)
        for fd in dict.fromkeys(ready_fds):
            watch = self._watches.get(fd) if type(fd) is int else None
            if watch is None:
                continue
            if watch.kind == "psi":  # poll() said so: that was the trigger's signal
                events.append(MemoryEvent("pressure", 1, watch.source, watch.detail))
                continue
            try:
                count = os.eventfd_read(fd)
            except OSError:  # nothing pending (BlockingIOError): already drained
                continue
            if watch.kind == "rearmed":  # the worker changed the set: no event, a new poll
                continue
            if watch.kind == "oom":
                oom_seen += count
                continue
            if watch.kind == "pressure":  # one event per wake-up, not per kernel signal
                detail = f"{watch.detail} ({count} signal{'s' if count != 1 else ''})"
                events.append(MemoryEvent("pressure", 1, watch.source, detail))
            else:
                events.append(MemoryEvent(watch.kind, count, watch.source, watch.detail))
            holdoff_s = HOLDOFF_S.get(watch.kind)
            if holdoff_s is not None:
                watch.muted_until_s = now_s + holdoff_s
                self._fds.generation += 1
        if self._v1.watches_oom:
            kills = self._v1.oom_kills()
            path = self._v1.oom_path
            # as v2's memory.events counts both: the OOM itself (the eventfd), then each
            # kill (the counter grows when the victim is chosen, before or after this read)
            if oom_seen:
                events.append(MemoryEvent("oom", oom_seen, path, "under_oom"))
            if kills is not None:
                before, now = kills
                events.append(
                    MemoryEvent("oom_kill", now - before, path, f"oom_kill {before} -> {now}")
                )
        if self._events_fd is not None:
            events.extend(self._counter_events())
        return tuple(events)

    def _unmute(self, now_s: float) -> None:
        """Poll again the descriptors whose hold-off is over (what they counted meanwhile
        is reported when poll says they are ready)."""
        for watch in self._watches.values():
            if watch.muted_until_s is not None and now_s >= watch.muted_until_s:
                watch.muted_until_s = None
                self._fds.generation += 1

    def _counter_events(self) -> tuple[MemoryEvent, ...]:
        assert self._events_fd is not None
        counters = parse_memory_events(pread_text(self._events_fd))  # also clears POLLPRI
        if counters is None:
            return ()
        before, self._counters = self._counters, counters
        return () if before is None else counter_events(before, counters, self._events_path)

    def close(self) -> None:
        """Close every descriptor (closing an eventfd unregisters it) and stop the worker;
        idempotent, and safe in a forked child, where it closes only the child's copies
        (the parent's registrations stay). When it returns, nothing of it is open."""
        if os.getpid() != self._pid:
            self._after_fork_in_child()  # the fork hook did it already; cheap to be sure
        self._release()

    def _release(self) -> None:
        shut(self._fds, self._v1)  # not holding the lock: it waits for the worker
        with self._fds.lock:
            self._watches.clear()
            self._lines.clear()
            self._v1.forget()
            self._events_fd = None
