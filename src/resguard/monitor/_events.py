"""The Monitor's kernel memory events: who is told, what is counted, where it is armed.

The kernel side (:mod:`resguard._probes.memevents`) opens and drains the descriptors; this
module is the monitor's side of them:

* :class:`EventHub` (one per monitor) holds the ``subscribe_events`` callbacks, the counts
  by kind, the providers of memory edges (``watch_edges``, held weakly) and the end of the
  current *burst*: after an event the fast loop samples at ``min_interval`` for
  :data:`resguard.monitor.BURST_S`, then relaxes (Android lmkd's pattern);
* :class:`Wakeups` (one per start of the loops) owns that run's
  :class:`~resguard._probes.memevents.MemoryEvents`: it arms them at the edges after every
  tick, drains what woke the loop and closes them when the run ends;
* :class:`Forwarder` is the thread that waits on the descriptors for ``async with
  monitor:`` (a PSI trigger signals ``POLLPRI`` only, which an event loop's
  ``wait_readable`` does not see) and hands what is ready to the fast task.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.log import emit, get_logger
from resguard._modules.waiter import Waiter, WakePipe
from resguard.snapshot import MemoryInfo, Snapshot
from resguard.units import shown

if TYPE_CHECKING:
    from resguard._probes.memevents import MemoryEvent, MemoryEvents
    from resguard.rules import Policy

__all__ = [
    "EVENT_KINDS",
    "EdgeProvider",
    "EventHub",
    "EventSubscriber",
    "Forwarder",
    "Wakeups",
    "open_events",
]

EVENT_KINDS = ("threshold", "oom", "oom_kill", "high", "max", "pressure")
"""Every kind of :class:`~resguard.monitor.MemoryEvent` (counted from 0)."""

EventSubscriber = Callable[["MemoryEvent"], object]

MAX_PROVIDER_EDGES = 1024
"""The most edges one provider's ``memory_edges_bytes`` may give: it is read lazily up to
one more than this (an endless iterator never hangs the loop), and more is a fault."""

_logger = get_logger("resguard.monitor")
_said: set[tuple[bool, str]] = set()  # (partly, reason) said in this process: one line each
_said_lock = threading.Lock()


class EdgeProvider(Protocol):
    """Something with memory edges to be woken at (a guard's budget edge)."""

    def memory_edges_bytes(self, memory: MemoryInfo) -> Iterable[int]: ...


def sampler_root(sampler: object) -> str | None:
    """The root a sampler reads the kernel's files under: ``/``, a fixture tree's root
    (``Roots(proc=ROOT/proc, ...)``), or ``None`` when its ``/proc`` is elsewhere."""
    roots = getattr(sampler, "roots", None)  # Sampler.roots; a stand-in may have none
    proc = os.path.normpath(str(getattr(roots, "proc", "/proc")))
    if proc == "/proc":
        return "/"
    return os.path.dirname(proc) if os.path.basename(proc) == "proc" else None


def say_polling(why: str, *, partly: bool = False) -> None:
    """Say once per process and reason that the monitor polls instead of waking on events
    (*partly*: it wakes on some, and polls for what could not be armed)."""
    with _said_lock:
        if (partly, why) in _said:
            return
        _said.add((partly, why))
    if partly:
        emit(
            _logger,
            logging.INFO,
            "the monitor wakes on some kernel memory events, not all (%s)",
            why,
        )
    else:
        emit(
            _logger,
            logging.INFO,
            "the monitor polls at its paced interval: no kernel memory events (%s)",
            why,
        )


def binding_of(memory: MemoryInfo) -> tuple[str, str] | None:
    """Where *memory*'s limit comes from (the events are armed there); ``None`` while
    the limit is unknown (no reason to re-open anything)."""
    return None if memory.limit is None else (memory.source, memory.source_detail)


def open_events(snapshot: Snapshot, *, psi: bool, root: str | None) -> MemoryEvents | None:
    """The kernel memory events for *snapshot*'s memory (its cgroup, else the host), or
    ``None`` when nothing could be armed (said once, see :func:`say_polling`). *root*
    re-roots the kernel's files (``/``; ``None``: a tree whose root is not known)."""
    from resguard._probes.memevents import MemoryEvents

    if root is None:  # a fixture tree that cannot be re-rooted: its files, but no PSI
        root, psi = "/", False
    events = MemoryEvents.open(snapshot.memory, snapshot.pressure.source, psi=psi, root=root)
    if events.available:
        if events.why_not:
            say_polling(events.why_not, partly=True)
        return events
    say_polling(events.why_not or "nothing to arm here")
    events.close()
    return None


class EventHub:
    """One monitor's event subscribers, counts, edge providers and burst (any thread)."""

    def __init__(
        self,
        failed: Callable[[str, BaseException], None],
        worked: Callable[[str], None],
        failing: Callable[[], bool],
    ) -> None:
        self._failed, self._worked, self._failing = failed, worked, failing
        self._lock = threading.Lock()
        self.subscribers: list[EventSubscriber] = []
        self.counts: dict[str, int] = dict.fromkeys(EVENT_KINDS, 0)
        self.wakeups = 0  # fast-loop wake-ups by an event (not by the timer)
        self.burst_until_s = float("-inf")
        self._providers: dict[int, tuple[weakref.ref[Any], int]] = {}  # ref, its watches
        self._watches = 0  # grows at every watch and unwatch: a re-watch recomputes
        self._edges_policy: Policy | None = None
        self._edges_key: tuple[int | None, ...] | None = None  # limit, watches, providers
        self._edges: tuple[int, ...] = ()

    # -- edges ----------------------------------------------------------------------------

    def watch(self, provider: object) -> Callable[[], None]:
        """Count *provider*'s memory edges until the returned function is called or the
        provider is collected (held weakly)."""
        if not callable(getattr(provider, "memory_edges_bytes", None)):
            raise InvalidType(
                f"{shown(provider)} has no memory_edges_bytes(memory) method; expected "
                "a resguard.Guard or an object with one"
            )
        try:
            ref: weakref.ref[Any] = weakref.ref(provider)
        except TypeError:
            raise InvalidType(
                f"{shown(provider)} cannot be weakly referenced; the monitor holds edge "
                "providers weakly (give its class a __weakref__ slot)"
            ) from None
        key, done = id(provider), list[bool]()
        with self._lock:
            held = self._providers.get(key)
            same = held is not None and held[0] is ref  # CPython hands out one ref per object
            self._providers[key] = (ref, held[1] + 1 if same and held else 1)
            self._watches += 1

        def unwatch() -> None:  # one watch's: the provider counts until its last is undone
            with self._lock:
                held = self._providers.get(key)
                if done or held is None or held[0] is not ref:
                    return
                done.append(True)
                if held[1] > 1:
                    self._providers[key] = (ref, held[1] - 1)
                else:
                    del self._providers[key]
                self._watches += 1

        return unwatch

    def providers(self) -> list[Any]:
        """The watched providers still alive (the collected ones are forgotten)."""
        with self._lock:
            alive = [(key, ref()) for key, (ref, _) in self._providers.items()]
            for key, provider in alive:
                if provider is None:
                    del self._providers[key]
        return [provider for _, provider in alive if provider is not None]

    def edges(self, policy: Policy, memory: MemoryInfo) -> tuple[int, ...]:
        """The memory.used values (bytes) where the policy or a watched provider changes
        its mind, at *memory*'s limit: recomputed when the policy, the limit or the
        providers change (a provider whose edges moved watches itself again)."""
        providers = self.providers()
        key = (memory.limit, self._watches, *map(id, providers))
        if policy is self._edges_policy and key == self._edges_key:
            return self._edges
        from resguard.rules import memory_edges_bytes

        found = set(memory_edges_bytes(policy, memory))
        for provider in providers:
            source = f"the edges of {_name(provider)}"
            try:
                found.update(provider_edges(provider, memory))
            except Exception as error:  # a provider's bug must not stop the loop
                self._failed(source, error)
            else:
                if self._failing():
                    self._worked(source)
        limit = memory.limit
        edges = tuple(sorted(e for e in found if e >= 0 and (limit is None or e <= limit)))
        self._edges_policy, self._edges_key, self._edges = policy, key, edges
        return edges

    # -- events ---------------------------------------------------------------------------

    def subscribe(self, callback: object) -> Callable[[], None]:
        if not callable(callback):
            raise InvalidType(f"{shown(callback)} is not callable; expected a function (event)")
        self.subscribers.append(callback)

        def unsubscribe() -> None:
            try:
                self.subscribers.remove(callback)
            except ValueError:
                pass

        return unsubscribe

    def counted(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def deliver(self, events: Iterable[MemoryEvent], now_s: float, burst_s: float) -> None:
        """Count *events*, say an OOM kill at WARNING (once for the batch), tell the
        subscribers and start a burst of fast samples (not for pressure alone)."""
        batch = tuple(events)
        if not batch:
            return
        with self._lock:
            for event in batch:
                self.counts[event.kind] = self.counts.get(event.kind, 0) + event.count
            # pressure alone is sampled at once but starts no burst: a PSI trigger also
            # fires on a calm host's passing stalls, and the edges still pace the loop
            if any(event.kind != "pressure" for event in batch):
                self.burst_until_s = now_s + burst_s
        kills = [event for event in batch if event.kind == "oom_kill"]
        if kills:
            emit(
                _logger,
                logging.WARNING,
                "OOM kill in %s: %s",
                os.path.dirname(kills[0].source) or kills[0].source,
                "; ".join(event.detail for event in kills),
            )
        for callback in list(self.subscribers):
            for event in batch:
                try:
                    callback(event)
                except Exception as error:
                    self._failed(_name(callback), error)
                else:
                    if self._failing():
                        self._worked(_name(callback))


def _name(thing: object) -> str:
    from resguard.monitor._sources import subscriber_name

    return subscriber_name(thing)


def provider_edges(provider: Any, memory: MemoryInfo) -> tuple[int, ...]:
    """*provider*'s edges at *memory*: byte counts (``int``, not ``bool``, at least 0), at
    most :data:`MAX_PROVIDER_EDGES`; anything else raises and none of them counts (a
    provider half-read is no provider's wish)."""
    from itertools import islice

    given = provider.memory_edges_bytes(memory)
    edges = tuple(islice(iter(given), MAX_PROVIDER_EDGES + 1))
    if len(edges) > MAX_PROVIDER_EDGES:
        raise InvalidValue(
            f"memory_edges_bytes gave more than {MAX_PROVIDER_EDGES} edges; expected a "
            "few memory.used values in bytes"
        )
    for edge in edges:
        if type(edge) is not int or edge < 0:
            raise InvalidValue(
                f"memory_edges_bytes gave {shown(edge)}; expected memory.used values as "
                "int byte counts, 0 or more"
            )
    return edges


class Wakeups:
    """One run's kernel events: armed at the edges after each tick, drained when they
    wake the loop, closed once when the run ends (or in a forked child). When the limit
    that binds moves elsewhere (removed, or a parent's binds now), *opener* opens the
    events of the new place and the old ones are closed."""

    def __init__(
        self,
        hub: EventHub,
        events: MemoryEvents | None,
        *,
        opener: Callable[[Snapshot], MemoryEvents | None] | None = None,
        binding: tuple[str, str] | None = None,
    ) -> None:
        self.hub = hub
        self.events = events
        self.descriptors: tuple[tuple[int, int], ...] = ()  # published after each tick
        self._generation = -1  # of the descriptors published
        self._opener, self._binding = opener, binding
        self._lost = False  # its cgroup was removed: open anew once a limit binds
        self._closed = False

    @property
    def armed(self) -> tuple[str, ...]:
        return () if self.events is None or self._closed else tuple(self.events.armed)

    @property
    def covered(self) -> tuple[int, ...]:
        """The edges usage thresholds cover (cgroup v1: the kernel wakes the loop before
        use rises through them), which pacing by distance need not watch; empty when
        none (v2, the host, no events, or every threshold already passed)."""
        if self.events is None or self._closed:
            return ()
        return self.events.covered_edges_bytes

    def after_tick(self, policy: Policy, snapshot: Snapshot, now_s: float, burst_s: float) -> None:
        """Arm at the edges of *snapshot*'s limit (the kernel side re-registers only what
        changed; the events of another place when the limit moved), read the counters no
        descriptor signals (v2 ``memory.events`` on a fixture tree, v1's ``oom_kill``: one
        ``pread``) and publish the descriptors."""
        if self._closed:
            return
        memory = snapshot.memory
        binding = binding_of(memory)
        if self._opener is not None:
            if binding is not None and (binding != self._binding or self._lost):
                self._reopen(snapshot, binding)  # moved, or back after its cgroup went
            elif self.events is not None and self.events.gone:
                self._lose()
        events = self.events
        if events is None:
            return
        events.arm(self.hub.edges(policy, memory), memory.used)
        self.hub.deliver(events.read(()), now_s, burst_s)
        if events.generation != self._generation:
            self._generation = events.generation
            self.descriptors = events.descriptors()

    def _reopen(self, snapshot: Snapshot, binding: tuple[str, str]) -> None:
        assert self._opener is not None
        if self.events is not None:
            self.events.close()
        self._binding, self._generation, self.descriptors = binding, -1, ()
        was_lost, self.events = self._lost, self._opener(snapshot)
        # still gone (the limit read before the removal was seen): try again next tick
        self._lost = (was_lost and self.events is None) or bool(self.events and self.events.gone)

    def _lose(self) -> None:
        """The cgroup armed was removed: close its events (they pin the dead memcg and
        will never fire) and poll until a limit binds again, then open that one's."""
        assert self.events is not None
        emit(
            _logger,
            logging.INFO,
            "the monitor's cgroup was removed: its kernel memory events are closed, and "
            "the monitor polls until a limit binds again (%s)",
            self._binding[1] if self._binding else "?",
        )
        self.events.close()
        self.events, self._generation, self.descriptors = None, -1, ()
        self._lost = True

    def woken(self, fds: Iterable[int], now_s: float, burst_s: float) -> str | None:
        """The descriptors *fds* are ready: drain them and deliver what they said; why
        to leave them out of the poll for a while, if so: ``"pressure"`` when they said
        pressure alone (v1's ``pressure_level`` may fire hundreds of times a second under
        reclaim), ``"silent"`` when they said nothing while the set stayed the same (a
        descriptor that stays ready without saying anything must not make a busy loop).
        A wake-up that said nothing is not counted; when the set changed (the kernel
        side's re-arm), the new one is published now."""
        events = self.events
        if events is None or self._closed:
            return None
        said = events.read(tuple(fds))
        if not said:
            if events.generation == self._generation:
                return "silent"
            self._generation = events.generation
            self.descriptors = events.descriptors()
            return None
        self.hub.wakeups += 1
        self.hub.deliver(said, now_s, burst_s)
        return "pressure" if all(event.kind == "pressure" for event in said) else None

    def close(self) -> None:
        self._closed = True
        self.descriptors = ()
        if self.events is not None:
            self.events.close()


class Mute:
    """Descriptors left out of the poll for a while: those that just woke the loop with
    pressure alone, for *min_interval* (a storm of them must not become a busy loop,
    while a threshold or an OOM still wakes it at once). On *clock*, the clock of the
    poll's timeout: real time (``time.monotonic``) in the loops, whatever the monitor's
    clock, since a hold on a clock that does not move would never end."""

    __slots__ = ("clock", "fds", "until_s")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.fds: frozenset[int] = frozenset()
        self.until_s = float("-inf")

    def hold(self, fds: Iterable[int], hold_s: float) -> None:
        self.fds, self.until_s = frozenset(fds), self.clock() + hold_s

    def active(
        self, descriptors: tuple[tuple[int, int], ...]
    ) -> tuple[tuple[tuple[int, int], ...], float | None]:
        """The descriptors to poll now, and how long until the muted ones come back."""
        left_s = self.until_s - self.clock()
        if left_s <= 0 or not self.fds:
            return descriptors, None
        return tuple(item for item in descriptors if item[0] not in self.fds), left_s


class Forwarder:
    """The thread that waits on a run's descriptors for the fast task (``async with``).

    It polls its wake pipe and every descriptor the task published after its tick, hands
    the ready ones to the task through a :class:`~resguard._modules.waiter.Waiter` and
    waits until the task has drained them (a level-triggered descriptor would wake it
    again at once). Only the task touches the events object; a change of descriptors or
    a stop writes to the pipe, which wakes the poll. The thread closes its pipe when it
    ends (or :meth:`close` does, when it never started).
    """

    def __init__(self, wakeups: Wakeups, waiter: Waiter) -> None:
        self.wakeups, self.waiter = wakeups, waiter
        self.stop = threading.Event()
        self.drained = threading.Event()
        self.ready: tuple[int, ...] = ()
        self.mute = Mute()  # set by the task before it calls done()
        self.pipe = WakePipe()
        self.thread = threading.Thread(target=self._run, name="resguard-events", daemon=True)
        self._seen: tuple[tuple[int, int], ...] = ()

    def start(self) -> None:
        self.thread.start()

    def take(self) -> tuple[int, ...]:
        """The descriptors found ready (the task drains them, then calls :meth:`done`)."""
        ready, self.ready = self.ready, ()
        return ready

    def done(self) -> None:
        self.drained.set()

    def published(self) -> None:
        """The task published its descriptors after a tick: re-poll if they changed."""
        if self.wakeups.descriptors != self._seen:
            self.pipe.poke()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self._wait_once()
        finally:
            self.pipe.close()

    def _wait_once(self) -> None:
        poller = select.poll()
        poller.register(self.pipe.read_fd, select.POLLIN)
        self._seen = self.wakeups.descriptors
        active, muted_s = self.mute.active(self._seen)
        for fd, mask in active:
            poller.register(fd, mask)
        # no timeout but the mute's: a stop or new descriptors write to the pipe
        timeout_ms = None if muted_s is None else muted_s * 1000
        # POLLNVAL: closed by a re-arm since it was published; the task pokes the pipe
        ready = [
            fd
            for fd, mask in poller.poll(timeout_ms)
            if fd != self.pipe.read_fd and not mask & select.POLLNVAL
        ]
        self.pipe.drain()
        if ready and not self.stop.is_set():
            self.drained.clear()
            self.ready = tuple(ready)
            self.waiter.wake()
            while not self.stop.is_set() and not self.drained.wait(0.5):
                pass

    def abandon(self) -> None:
        """In a forked child: the thread is gone; close this process's copy of the pipe."""
        self.stop.set()
        self.pipe.abandon()

    def close(self, join_timeout_s: float) -> None:
        """Stop the thread and wait for it (up to *join_timeout_s*)."""
        self.stop.set()
        self.drained.set()
        self.pipe.poke()
        if self.thread.ident is None:
            self.pipe.close()
        else:
            self.thread.join(join_timeout_s)
