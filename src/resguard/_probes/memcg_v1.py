"""cgroup v1 memory notifications, registered through ``cgroup.event_control``: usage
thresholds on ``memory.usage_in_bytes``, OOM notifications on ``memory.oom_control`` and
``memory.pressure_level``; each is one eventfd the kernel signals. The part of
:mod:`resguard._probes.memevents` that is v1's (see its docstring for the whole).

Registering is writing ``"<eventfd> <fd of the file> [<argument>]"`` to the control file;
unregistering is closing the eventfd (the kernel drops the entry when it is released).
The file's descriptor is needed only while registering, but the usage, limit and
``oom_control`` ones are kept: they are re-read with ``pread`` (the gap, the limit, the
kill counter).

A threshold registration makes the kernel wait out an RCU grace period (8–16 ms each on
this kernel), so thresholds are registered by one worker thread per set, nearest to
current use first, new ones before the old are dropped (coverage never lapses), and never
more than :data:`MAX_EDGES` at once however fast the wish changes.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Iterable

import attrs

__all__ = [
    "MAX_EDGES",
    "FdTable",
    "V1Notifier",
    "Watch",
    "nearest_edges",
    "pread_text",
    "rearm_slack_bytes",
    "shut",
    "usage_thresholds",
]

MAX_EDGES = 32
"""The most usage thresholds armed at once (each is one eventfd and a kernel entry)."""

_SLACK_MIN_BYTES = 4 * 2**20
_SHOWN_EDGES = 8  # edges named in the readable line; the rest are counted
_READ_BYTES = 4096
_PRESSURE_LEVELS = ("medium", "critical")  # "low" is any reclaim at all: noise
_POLLIN = 0x001  # select.POLLIN on every Linux


def nearest_edges(
    edges_bytes: Iterable[object], used_bytes: int, count: int = MAX_EDGES
) -> tuple[int, ...]:
    """The *count* edges nearest to *used_bytes*, sorted and without repeats; what is not
    a non-negative integer is left out (never raises)."""
    unique = sorted({edge for edge in edges_bytes if type(edge) is int and edge >= 0})
    if len(unique) <= count:
        return tuple(unique)
    low = high = bisect.bisect_left(unique, used_bytes)
    while high - low < count:
        if low == 0:
            high += 1
        elif high == len(unique) or used_bytes - unique[low - 1] <= unique[high] - used_bytes:
            low -= 1
        else:
            high += 1
    return tuple(unique[low:high])


def usage_thresholds(
    edges_bytes: Iterable[int], gap_bytes: int, limit_bytes: int | None
) -> dict[int, tuple[int, ...]]:
    """Each ``memory.usage_in_bytes`` value to register, mapped to the ``memory.used``
    edges it stands for: ``edge + gap``, clamped into ``1 .. limit - 1`` (usage never goes
    past the limit; clamping may merge edges). Empty when the limit leaves no room."""
    if limit_bytes is not None and limit_bytes < 2:
        return {}
    found: dict[int, list[int]] = {}
    for edge in sorted(set(edges_bytes)):
        value = max(edge + gap_bytes, 1)
        if limit_bytes is not None:
            value = min(value, limit_bytes - 1)
        found.setdefault(value, []).append(edge)
    return {value: tuple(edges) for value, edges in found.items()}


def rearm_slack_bytes(limit_bytes: int | None) -> int:
    """How far the usage-to-used gap may move before thresholds are registered again:
    1 % of the limit, at least 4 MiB (a registration is cheap, but cache churn moves the
    gap all the time, and a crossing missed by less is caught by the next sample)."""
    return max(_SLACK_MIN_BYTES, (limit_bytes or 0) // 100)


def pread_text(fd: int) -> str | None:
    """The file behind *fd* from its start (a seq file is generated anew), or ``None``."""
    try:
        return os.pread(fd, _READ_BYTES, 0).decode("ascii", "replace")
    except OSError:
        return None


def _number(text: str | None) -> int | None:
    value = (text or "").strip()
    if not text or not text.endswith("\n") or not value.isdigit() or len(value) > 20:
        return None
    return int(value)


def _oom_kills_of(fd: int | None) -> int | None:
    """The ``oom_kill`` counter of a ``memory.oom_control`` read through *fd*."""
    text = pread_text(fd) if fd is not None else None
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill" and value.isdigit() and value.isascii() and len(value) <= 20:
            return int(value)
    return None


def _why(error: OSError) -> str:
    return str(error.strerror or error)


@attrs.define
class Watch:
    """One armed descriptor: what a ready one is reported as."""

    kind: str  # "threshold", "oom", "pressure", "rearmed" (eventfds), "psi" (a PSI trigger)
    mask: int  # what to poll it for
    source: str
    detail: str
    value_bytes: int | None = None  # a threshold's usage value
    muted_until_s: float | None = None  # not polled until then (a pressure level's hold-off)


class FdTable:
    """What one :class:`~resguard._probes.memevents.MemoryEvents` shares with its parts:
    the descriptors it must close (and what each is for), the lock over them and its
    watches, whether it is closed, and the generation of its descriptor set."""

    def __init__(self) -> None:
        self.owned: dict[int, str] = {}
        self.lock = threading.RLock()  # a finalizer may run while its own thread holds it
        self.changed = threading.Condition(self.lock)
        self.closed = False
        self.generation = 0

    def is_closed(self) -> bool:
        """Whether the owner was closed (read afresh: another thread may close it)."""
        return self.closed

    def own(self, fd: int, what: str) -> int:
        """Take *fd* (to be closed by :meth:`close_all`) and return it."""
        self.owned[fd] = what
        return fd

    def open_read(self, path: str) -> int | None:
        """A kept read-only descriptor of *path*, or ``None`` when it cannot be opened."""
        try:
            return self.own(os.open(path, os.O_RDONLY | os.O_CLOEXEC), path)
        except OSError:
            return None

    def disown(self, fd: int | None) -> None:
        """Close *fd* if it is still owned."""
        if fd is not None and self.owned.pop(fd, None) is not None:
            close_quietly(fd)

    def close_all(self) -> None:
        """Close everything still owned."""
        close_all(self.owned)

    def renew_locks(self) -> None:
        """Fresh locks in a forked child (a parent's thread may have held them)."""
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)


def close_quietly(fd: int) -> None:
    """Close *fd*, ignoring that it may be closed already."""
    try:
        os.close(fd)
    except OSError:
        pass


def close_all(owned: dict[int, str]) -> None:
    """Close every descriptor of *owned* and empty it (in place: a finalizer holds it)."""
    for fd in list(owned):
        close_quietly(fd)
    owned.clear()


class V1Notifier:
    """The eventfds of one v1 memory cgroup: :meth:`open` registers the OOM and pressure
    level notifications, :meth:`arm` the usage thresholds. Its descriptors live in the
    shared *fds* table and its armed ones in *watches*; *reasons* collects why something
    could not be armed. Not thread-safe alone (:class:`MemoryEvents` holds the lock)."""

    def __init__(self, fds: FdTable, watches: dict[int, Watch], reasons: list[str]) -> None:
        self.fds, self.watches, self.reasons = fds, watches, reasons
        self.lines: list[str] = []  # what is armed besides the thresholds
        self.threshold_problem: str | None = None  # why the last arm() missed some
        self.oom_path = ""
        self.usage_path = ""
        self._control_fd: int | None = None
        self._usage_fd: int | None = None
        self._limit_fd: int | None = None
        self._oom_fd: int | None = None
        self._rearmed_fd: int | None = None
        self._oom_kills: int | None = None
        self._edges: tuple[int, ...] | None = None
        self._gap_bytes = 0
        self._limit_bytes: int | None = None
        self._slack_bytes = rearm_slack_bytes(None)
        self._given: tuple[object, ...] = ()  # the edges of the last arm(), as given
        self._unique: tuple[int, ...] = ()  # ... sorted, without repeats
        self._wanted: dict[int, tuple[int, ...]] = {}  # usage value -> its edges
        self._usage_bytes = 0  # usage when they were asked for (nearest first)
        self._usage_now_bytes = 0  # usage at the last arm()
        self._asked = self._done = 0
        self._worker: threading.Thread | None = None
        self.registering = threading.Lock()  # held while the worker writes a registration

    @property
    def thresholds_ready(self) -> bool:
        """Whether :meth:`arm` can register thresholds (the control and usage files)."""
        return self._control_fd is not None and self._usage_fd is not None

    @property
    def watches_oom(self) -> bool:
        """Whether the ``oom_kill`` counter is read (the ``oom_control`` file is open)."""
        return self._oom_fd is not None

    def open(self, directory: str, limit_path: str, limit_bytes: int | None) -> None:
        """Register what *directory* offers (OOM, pressure levels); thresholds wait for
        :meth:`arm`. What fails is said in :attr:`reasons`."""
        if not hasattr(os, "eventfd"):
            self.reasons.append("this Python has no os.eventfd (cgroup v1 events need one)")
            return
        control = directory + "/cgroup.event_control"
        if not os.path.exists(control):
            self.reasons.append(f"{directory} has no cgroup.event_control")
            return
        try:
            self._control_fd = self.fds.own(os.open(control, os.O_WRONLY | os.O_CLOEXEC), control)
        except OSError as error:
            self.reasons.append(f"cannot write {control} ({_why(error)})")
            return
        if not self._control_checks_registrations(control):
            return
        self.usage_path = directory + "/memory.usage_in_bytes"
        self._usage_fd = self.fds.open_read(self.usage_path)
        self._limit_fd = self.fds.open_read(limit_path)
        self._limit_bytes = limit_bytes
        self._slack_bytes = rearm_slack_bytes(limit_bytes)
        if self._usage_fd is None:
            self.reasons.append(f"cannot read {self.usage_path}, so no usage thresholds")
        else:
            self._open_rearmed()
        self._arm_oom(directory)
        self._arm_pressure_levels(directory)

    def _open_rearmed(self) -> None:
        """The eventfd the worker signals when it changed the descriptors, so that a
        poller blocked on the old set wakes and polls the new one."""
        try:
            fd = self.fds.own(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK), "re-armed")
        except OSError as error:
            self.reasons.append(f"no eventfd ({_why(error)})")
            self._usage_fd = None  # no thresholds: a poller would not see them armed
            return
        self._rearmed_fd = fd
        self.watches[fd] = Watch("rearmed", _POLLIN, self.usage_path, "thresholds re-armed")

    def _signal_rearmed(self) -> None:
        """Wake the poller (call it holding the lock: the descriptor stays open)."""
        if self._rearmed_fd is not None and not self.fds.is_closed():
            try:
                os.eventfd_write(self._rearmed_fd, 1)
            except OSError:  # the counter is full: the poller is awake anyway
                pass

    def _control_checks_registrations(self, control: str) -> bool:
        """Whether *control* is the kernel's: it refuses a registration that names no
        eventfd, where a plain file (a fixture tree) takes anything."""
        assert self._control_fd is not None
        try:
            os.write(self._control_fd, b"resguard-probe")
        except OSError:
            return True
        self.reasons.append(f"{control} is not a kernel control file (it took anything)")
        self.fds.disown(self._control_fd)
        self._control_fd = None
        return False

    def _register(self, target_fd: int, argument: str, source: str) -> int | str:
        """A new eventfd registered on *target_fd* with *argument*, or why not."""
        assert self._control_fd is not None
        try:
            efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        except OSError as error:
            return f"no eventfd ({_why(error)})"
        line = f"{efd} {target_fd} {argument}".rstrip()
        try:
            os.write(self._control_fd, line.encode())
        except OSError as error:
            close_quietly(efd)
            return f"the kernel refused a registration on {source} ({_why(error)})"
        return efd  # not owned yet: the caller owns it under the lock

    def _arm_oom(self, directory: str) -> None:
        self.oom_path = directory + "/memory.oom_control"
        self._oom_fd = self.fds.open_read(self.oom_path)
        if self._oom_fd is None:
            self.reasons.append(f"cannot read {self.oom_path}")
            return
        self._oom_kills = _oom_kills_of(self._oom_fd)
        efd = self._register(self._oom_fd, "", self.oom_path)
        if isinstance(efd, str):
            self.reasons.append(efd)
            return
        self.fds.own(efd, self.oom_path)
        self.watches[efd] = Watch("oom", _POLLIN, self.oom_path, "OOM in the cgroup")
        self.lines.append(f"v1 OOM notifications on {self.oom_path}")

    def _arm_pressure_levels(self, directory: str) -> None:
        path = directory + "/memory.pressure_level"
        if not os.path.exists(path):
            self.reasons.append(f"{directory} has no memory.pressure_level")
            return
        fd = self.fds.open_read(path)
        if fd is None:
            self.reasons.append(f"cannot read {path}")
            return
        levels = []
        for level in _PRESSURE_LEVELS:
            efd = self._register(fd, level, path)
            if isinstance(efd, str):
                self.reasons.append(efd)
                continue
            self.fds.own(efd, path)
            self.watches[efd] = Watch("pressure", _POLLIN, path, f"pressure_level {level}")
            levels.append(level)
        self.fds.disown(fd)  # the kernel keeps what it needs; the eventfds are ours
        if levels:
            self.lines.append(f"v1 pressure_level {' and '.join(levels)} on {path}")

    def oom_kills(self) -> tuple[int, int] | None:
        """``(before, now)`` of the ``oom_kill`` counter when it grew since the last call,
        else ``None``. It grows after the OOM notification (when the victim is chosen),
        so it is read on every read, not only when the OOM eventfd is ready."""
        kills = _oom_kills_of(self._oom_fd)
        if kills is None:
            return None
        before, self._oom_kills = self._oom_kills, kills
        return None if before is None or kills <= before else (before, kills)

    def arm(self, edges_bytes: Iterable[int], used_bytes: int | None) -> None:
        """Ask for thresholds at the :data:`MAX_EDGES` edges nearest to current use, each
        at ``edge + gap - slack``, never below the edge (see memevents' docstring);
        nothing when the edges and the gap (within :func:`rearm_slack_bytes`) are as
        asked before. Call it holding the lock.

        The kernel takes a grace period (8–16 ms measured here) per threshold registered,
        so the registering is done by a worker thread, nearest first, never by the
        caller: the descriptors change as it goes (``fds.generation`` grows)."""
        if self._usage_fd is None or self._control_fd is None:
            return
        usage = _number(pread_text(self._usage_fd))
        if usage is None:
            return
        gap = self._gap_bytes
        if type(used_bytes) is int and used_bytes >= 0:
            gap = max(usage - used_bytes, 0)
        given = edges_bytes if isinstance(edges_bytes, tuple) else tuple(edges_bytes)
        if given != self._given:
            self._given, self._unique = given, nearest_edges(given, 0, len(given))
        edges = self._unique
        if len(edges) > MAX_EDGES:
            edges = nearest_edges(edges, usage - gap)
        self._usage_now_bytes = usage
        if edges == self._edges and abs(gap - self._gap_bytes) <= self._slack_bytes:
            return  # the path of almost every tick: one pread
        limit = _number(pread_text(self._limit_fd)) if self._limit_fd is not None else None
        if limit is not None and limit < 1 << 62:  # v1's "no limit" is a huge number
            self._limit_bytes = limit
        self._slack_bytes = rearm_slack_bytes(self._limit_bytes)
        self._edges, self._gap_bytes = edges, gap
        # a slack early: until the next re-arm the gap may shrink by up to the slack (reclaim
        # taking inactive cache), and a threshold at edge + gap would then fire late or never
        self._wanted = usage_thresholds(edges, max(gap - self._slack_bytes, 0), self._limit_bytes)
        self._usage_bytes = usage
        self._asked += 1
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(
                target=_register_forever, args=(self,), name="resguard-memevents", daemon=True
            )
            self._worker.start()
        self.fds.changed.notify_all()

    def covered_edges_bytes(self) -> tuple[int, ...]:
        """The edges whose threshold is armed above usage at the last :meth:`arm` (under
        the lock): the kernel wakes the loop before ``memory.used`` crosses them. An edge
        whose threshold usage has passed (it fired early, or was registered below usage)
        is not covered: nothing wakes the loop when ``memory.used`` crosses it."""
        armed = {w.value_bytes for w in self.watches.values() if w.kind == "threshold"}
        return tuple(
            sorted(
                edge
                for value, edges in self._wanted.items()
                if value in armed and value > self._usage_now_bytes
                for edge in edges
            )
        )

    def settled(self) -> bool:
        """Whether the worker has done what the last :meth:`arm` asked (under the lock)."""
        return self._done == self._asked

    def register_pending(self) -> bool:
        """The worker's step: register the wanted thresholds not yet armed, nearest to
        current use first, then close those no longer wanted. ``False`` once closed."""
        with self.fds.changed:
            while not self.fds.closed and self._done == self._asked:
                self.fds.changed.wait()
            if self.fds.closed:
                return False
            asked, wanted = self._asked, self._wanted
            armed = {w.value_bytes for w in self.watches.values() if w.kind == "threshold"}
            missing = sorted(set(wanted) - armed, key=lambda v: abs(v - self._usage_bytes))
            self._make_room(len(armed) + len(missing) - MAX_EDGES, wanted)
        failed: list[str] = []
        for value in missing:
            # close() waits on it before closing anything: no registration is written to
            # a closed (or reused) descriptor, and none is left unowned when it returns
            with self.registering:
                if self.fds.is_closed() or self._usage_fd is None:
                    return False
                efd = self._register(self._usage_fd, str(value), self.usage_path)
                with self.fds.lock:
                    if isinstance(efd, str):
                        failed.append(efd)
                    elif self.fds.is_closed():  # closed while the kernel took it
                        close_quietly(efd)
                        return False
                    else:
                        self._add_threshold(efd, value, wanted[value], first=value == missing[0])
                    if self._asked != asked:
                        return True  # asked again meanwhile: start over from the new wish
        with self.fds.changed:
            if self._asked == asked and not self.fds.closed:
                self._drop_unwanted(wanted)
                self.threshold_problem = (
                    f"{len(failed)} usage thresholds not armed: {failed[0]}" if failed else None
                )
                self._done = asked
                self._signal_rearmed()
                self.fds.changed.notify_all()
        return True

    def _add_threshold(self, efd: int, value: int, edges: tuple[int, ...], first: bool) -> None:
        self.fds.own(efd, self.usage_path)
        detail = _threshold_detail(value, edges)
        self.watches[efd] = Watch("threshold", _POLLIN, self.usage_path, detail, value)
        self.fds.generation += 1
        if first:
            self._signal_rearmed()  # the nearest one: poll it at once

    def _make_room(self, excess: int, wanted: dict[int, tuple[int, ...]]) -> None:
        """Drop *excess* thresholds no longer wanted, the farthest from use first, so that
        a wish that changes on every tick (before a batch ends, when the rest are dropped)
        never piles up more than :data:`MAX_EDGES`."""
        if excess <= 0:
            return
        unwanted = [
            (abs(watch.value_bytes - self._usage_bytes), fd)
            for fd, watch in self.watches.items()
            if watch.kind == "threshold"
            and watch.value_bytes is not None
            and watch.value_bytes not in wanted
        ]
        for _, fd in sorted(unwanted, reverse=True)[:excess]:
            del self.watches[fd]
            self.fds.disown(fd)
            self.fds.generation += 1

    def _drop_unwanted(self, wanted: dict[int, tuple[int, ...]]) -> None:
        """Close the thresholds not in *wanted* (and repeats); closing an eventfd is the
        kernel's unregistration, and it costs the caller nothing."""
        kept: set[int] = set()
        for fd, watch in list(self.watches.items()):
            if watch.kind != "threshold":
                continue
            value = watch.value_bytes
            if value is not None and value in wanted and value not in kept:
                kept.add(value)
                watch.detail = _threshold_detail(value, wanted[value])
                continue
            del self.watches[fd]
            self.fds.disown(fd)
            self.fds.generation += 1

    def armed_lines(self) -> list[str]:
        """What is armed, the thresholds first."""
        if not self.thresholds_ready:
            return list(self.lines)
        from resguard.units import format_bytes

        armed = {w.value_bytes for w in self.watches.values() if w.kind == "threshold"}
        edges = sorted(edge for value in armed for edge in self._wanted.get(value or -1, ()))
        shown = ", ".join(format_bytes(edge) for edge in edges[:_SHOWN_EDGES])
        if len(edges) > _SHOWN_EDGES:
            shown += f" and {len(edges) - _SHOWN_EDGES} more"
        at = f" (memory.used {shown})" if edges else ""
        return [f"v1 usage thresholds at {len(armed)}{at} on {self.usage_path}", *self.lines]

    def join_worker(self, timeout_s: float) -> None:
        """Wait up to *timeout_s* for a stopping worker to end (not from the worker)."""
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout_s)

    def after_fork_in_child(self) -> None:
        """In a forked child: no worker runs there, and its lock may have been held."""
        self.registering = threading.Lock()
        self._worker = None

    def forget(self) -> None:
        """Drop every descriptor reference (the shared table has closed them)."""
        self._control_fd = self._usage_fd = self._limit_fd = self._oom_fd = None
        self._rearmed_fd = None
        self.lines.clear()


def _register_forever(notifier: V1Notifier) -> None:
    """The worker thread's body: register what is asked until the owner is closed (an
    unexpected error ends it; the next :meth:`V1Notifier.arm` starts another)."""
    try:
        while notifier.register_pending():
            pass
    except Exception:  # a worker never takes the process down; polling goes on
        return


def shut(fds: FdTable, notifier: V1Notifier) -> None:
    """Close *fds* for good: mark it closed (the worker stops), wait for a registration
    being written, then close every descriptor. Idempotent. Never call it holding
    ``fds.lock`` (the worker takes ``registering``, then the lock)."""
    with fds.changed:
        fds.closed = True
        fds.changed.notify_all()
    with notifier.registering, fds.lock:
        fds.close_all()
        fds.generation += 1
    notifier.join_worker(timeout_s=1.0)


def _threshold_detail(value_bytes: int, edges: tuple[int, ...]) -> str:
    shown = ", ".join(str(edge) for edge in edges[:3]) + (", ..." if len(edges) > 3 else "")
    return f"usage crossed {value_bytes} B (memory.used edge {shown} B)"
