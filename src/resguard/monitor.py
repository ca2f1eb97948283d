"""The Monitor: samples in the background and publishes the latest verdict.

Readers (guards, middleware, metrics) pay one attribute read: ``monitor.state`` is replaced
whole, atomically, after every sample. Two loops run:

* the **fast loop** samples memory, CPU, PSI and this process every *interval* (faster as
  headroom shrinks at the measured fill rate, and at once when a PSI trigger fires),
  evaluates the policy and publishes the new :class:`State`;
* the **slow loop** samples what is costly or may block (the process table, Docker,
  Ollama) every *slow_interval* and climbs the reclaim ladder when the verdict says
  WARNING or worse, so a slow source never delays a verdict.

A thread runs each loop by default (``with monitor:`` or :meth:`Monitor.start`); under
``async with monitor:`` they are anyio tasks and the slow work runs in worker threads.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol

import attrs

from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard._modules.render import ValueMixin, flatten, html_table
from resguard._probes.psi import open_trigger
from resguard.processes import ProcessTable
from resguard.reclaim import Ladder, ReclaimReport
from resguard.rules import Level, Policy, ProcessCount, ProcessThreshold, Verdict
from resguard.snapshot import Sampler, Snapshot
from resguard.units import parse_duration, parse_percent

__all__ = ["Monitor", "Source", "State"]

_logger = get_logger("resguard")


class Source(Protocol):
    """Something the slow loop samples: ``sample()`` returns snapshot fields to merge,
    e.g. ``{"containers": ContainersInfo}``; a failing source is logged once."""

    @property
    def name(self) -> str: ...

    def sample(self) -> dict[str, Any]: ...


@attrs.frozen
class State(ValueMixin):
    """What the monitor last saw and concluded; ``sequence`` counts samples from 1."""

    snapshot: Snapshot
    verdict: Verdict
    sequence: int

    @property
    def level(self) -> Level:
        return self.verdict.level

    def _repr_html_(self) -> str:
        return html_table([("level", self.verdict.level.name), ("reason", self.verdict.reason),
                           *flatten(self.snapshot)], f"resguard state #{self.sequence}")


Subscriber = Callable[[State, "State | None"], object]


class Monitor:
    """Samples in the background and keeps the latest :class:`State` in ``state``.

    Arguments:
        interval: the fast loop's period (default ``"50ms"``).
        policy: the rules to judge by (default :func:`resguard.presets.service`).
        sources: extra sources for the slow loop (Docker containers, Ollama models).
        slow_interval: the slow loop's period (default ``"2s"``).
        min_interval: the fastest the adaptive fast loop may go (default ``"10ms"``).
        relaxed_interval: the period while all is calm: verdict OK, memory below
            *relax_below* (default ``"50%"``) of the limit and not jumping (default
            ``"200ms"``; a PSI trigger still wakes the loop at once).
        adaptive: sample faster while memory fills up (by the measured fill rate) and
            slower while all is calm; ``False`` keeps *interval*.
        psi_trigger: wake at once when the kernel reports memory stalls (PSI trigger).
        cgroup: judge this cgroup directory's memory instead of this process's own.
        reclaim: climb the reclaim ladder on WARNING (default True).
        reclaim_to: the memory use the ladder aims for, as a percent of the effective
            limit (default ``"80%"``, the presets' clear level).
    """

    def __init__(
        self,
        interval: float | str = "50ms",
        policy: Policy | None = None,
        *,
        sources: Sequence[Source] = (),
        slow_interval: float | str = "2s",
        min_interval: float | str = "10ms",
        relaxed_interval: float | str = "200ms",
        relax_below: float | str = "50%",
        adaptive: bool = True,
        psi_trigger: bool = True,
        cgroup: str | None = None,
        sampler: Sampler | None = None,
        reclaim: bool = True,
        reclaim_to: float | str = "80%",
        ladder: Ladder | None = None,
    ) -> None:
        self.interval_s = _positive_duration(interval, "interval")
        self.slow_interval_s = _positive_duration(slow_interval, "slow_interval")
        self.min_interval_s = min(_positive_duration(min_interval, "min_interval"),
                                  self.interval_s)
        self.relaxed_interval_s = max(_positive_duration(relaxed_interval, "relaxed_interval"),
                                      self.interval_s)
        self.relax_below_percent = parse_percent(relax_below)
        if policy is None:
            from resguard import presets

            policy = presets.service()
        self.policy = policy
        if not isinstance(self.policy, Policy):
            raise TypeError(f"{policy!r} is not a resguard.Policy")
        self.reclaim_to_percent = parse_percent(reclaim_to)
        self.adaptive = adaptive
        self.psi_trigger = psi_trigger
        self._sampler = sampler if sampler is not None else Sampler(cgroup=cgroup)
        self._sources = tuple(sources)
        needs_processes = any(isinstance(rule, (ProcessThreshold, ProcessCount))
                              for rule in self.policy.rules)
        self._process_table = ProcessTable() if needs_processes else None
        self._policy_state = self.policy.new_state()
        self._faults = FaultLog(_logger)
        self._extra: dict[str, Any] = {}
        self._extra_lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self._history: deque[tuple[float, int]] = deque(maxlen=64)
        self._reclaim_enabled = reclaim
        self.ladder = ladder if ladder is not None else Ladder(self._measure_used)
        self.last_reclaim: ReclaimReport | None = None
        self._reclaim_wanted = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._task_group: Any = None
        self._wake_read, self._wake_write = -1, -1
        self._trigger_fd: int | None = None
        self._sequence = 0
        self._tick_lock = threading.Lock()
        self.ticks = 0
        self.triggered_wakeups = 0
        self.state: State = self._make_state(self._sampler.sample(children=False))

    # -- sampling -------------------------------------------------------------------------

    def _measure_used(self) -> int:
        return self._sampler.sample(children=False).memory.used

    def _make_state(self, snap: Snapshot) -> State:
        with self._extra_lock:
            extra = dict(self._extra)
        if extra:
            snap = attrs.evolve(snap, **extra)
        verdict = self.policy.evaluate(snap, state=self._policy_state, now=snap.monotonic)
        self._sequence += 1
        return State(snap, verdict, self._sequence)

    def sample_now(self) -> State:
        """Take one fast sample, judge it, publish it and tell subscribers of a level change.

        The background loops call this; tests and simple scripts may call it directly.
        """
        with self._tick_lock:
            previous = self.state
            state = self._make_state(self._sampler.sample(children=False))
            self.state = state
            self.ticks += 1
            memory = state.snapshot.memory
            self._history.append((state.snapshot.monotonic, memory.used))
        if state.level != previous.level:
            self._level_changed(state, previous)
        if self._reclaim_enabled and state.level >= Level.WARNING:
            self._reclaim_wanted.set()
        return state

    def sample_slow(self) -> None:
        """Sample the process table and every source once (what the slow loop does)."""
        updates: dict[str, Any] = {}
        if self._process_table is not None:
            try:
                updates["processes"] = tuple(self._process_table.sample())
                self._faults.recovered("process table")
            except Exception as error:
                self._faults.failed("process table", error)
        for source in self._sources:
            try:
                updates.update(source.sample())
                self._faults.recovered(source.name)
            except Exception as error:
                self._faults.failed(source.name, error)
                for field in getattr(source, "fields", ()):
                    updates[field] = None
        with self._extra_lock:
            self._extra.update(updates)

    def reclaim_now(self) -> ReclaimReport:
        """Climb the ladder until memory use is back at ``reclaim_to`` (plus the minimum)."""
        memory = self._sampler.sample(children=False).memory
        goal = memory.limit * self.reclaim_to_percent / 100
        report = self.ladder.run(int(memory.used - goal))
        self.last_reclaim = report
        return report

    def _level_changed(self, state: State, previous: State) -> None:
        log = _logger.warning if state.level > previous.level else _logger.info
        log("level %s -> %s: %s", previous.level.name, state.level.name, state.verdict.reason)
        for subscriber in list(self._subscribers):
            try:
                subscriber(state, previous)
            except Exception:
                _logger.exception("resguard subscriber %r failed", subscriber)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(new_state, old_state)`` on every level change; returns an
        unsubscribe function. Exceptions in a callback are logged and never stop sampling."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            try:
                self._subscribers.remove(callback)
            except ValueError:
                pass

        return unsubscribe

    @property
    def faults(self) -> dict[str, str]:
        """Sources failing now, with their last error (each logged once)."""
        return self._faults.failing()

    def next_interval_s(self) -> float:
        """How long the fast loop waits now.

        *relaxed_interval* while all is calm (verdict OK, memory below *relax_below* of the
        limit, and not growing by a point of the limit between the last two samples);
        *interval* otherwise; shorter still while memory fills up, so that the limit is
        seen coming at least 20 samples ahead at the measured fill rate.
        """
        if not self.adaptive:
            return self.interval_s
        state, history = self.state, self._history
        memory = state.snapshot.memory
        interval = self.interval_s
        if len(history) >= 2:
            (t0, used0), (t1, used1) = history[0], history[-1]
            jump = history[-1][1] - history[-2][1]
            calm = (state.verdict.level == Level.OK
                    and memory.percent < self.relax_below_percent
                    and jump < memory.limit / 100)
            if calm:
                interval = self.relaxed_interval_s
            if len(history) >= 4 and t1 > t0 and used1 > used0:
                seconds_to_limit = memory.available / ((used1 - used0) / (t1 - t0))
                interval = min(interval, max(self.min_interval_s, seconds_to_limit / 20))
        return interval

    # -- threads --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the background loops run (threads, or tasks under ``async with``)."""
        return bool(self._threads) or self._task_group is not None

    def start(self) -> Monitor:
        """Start the background threads (idempotent)."""
        if self._threads:
            return self
        self._stop.clear()
        self._wake_read, self._wake_write = os.pipe()
        if self.psi_trigger:
            path = self._trigger_path()
            self._trigger_fd = open_trigger(path) if path else None
        self.sample_slow()
        self._threads = [
            threading.Thread(target=self._fast_loop, name="resguard-monitor", daemon=True),
            threading.Thread(target=self._slow_loop, name="resguard-monitor-slow", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _trigger_path(self) -> str | None:
        source = self.state.snapshot.pressure.source
        if source is None:
            return None
        if source == "system":
            return "/proc/pressure/memory"
        return os.path.join(source, "memory.pressure")

    def stop(self) -> None:
        """Stop the background threads and wait for them."""
        self._stop.set()
        self._reclaim_wanted.set()
        if self._wake_write >= 0:
            os.write(self._wake_write, b"x")
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
        for fd in (self._wake_read, self._wake_write, self._trigger_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self._wake_read = self._wake_write = -1
        self._trigger_fd = None

    def _fast_loop(self) -> None:
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        if self._trigger_fd is not None:
            poller.register(self._trigger_fd, select.POLLPRI)
        while not self._stop.is_set():
            try:
                self.sample_now()
            except Exception:  # pragma: no cover - a bug, but the loop must survive it
                _logger.exception("resguard monitor sample failed")
            events = poller.poll(self.next_interval_s() * 1000)
            if any(fd == self._trigger_fd for fd, _ in events):
                self.triggered_wakeups += 1

    def _slow_loop(self) -> None:
        next_slow = time.monotonic() + self.slow_interval_s
        while not self._stop.is_set():
            self._reclaim_wanted.wait(max(next_slow - time.monotonic(), 0))
            if self._stop.is_set():
                return
            if self._reclaim_wanted.is_set():
                self._reclaim_wanted.clear()
                if self.state.level >= Level.WARNING:
                    self._safe_reclaim()
            if time.monotonic() >= next_slow:
                self.sample_slow()
                next_slow = time.monotonic() + self.slow_interval_s

    def _safe_reclaim(self) -> None:
        try:
            self.reclaim_now()
        except Exception:  # pragma: no cover - steps are guarded; this is the last net
            _logger.exception("resguard reclaim failed")

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- anyio ----------------------------------------------------------------------------

    async def __aenter__(self) -> Monitor:
        import anyio

        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._fast_task)
        self._task_group.start_soon(self._slow_task)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        task_group, self._task_group = self._task_group, None
        task_group.cancel_scope.cancel()
        return bool(await task_group.__aexit__(exc_type, exc, tb))

    async def _fast_task(self) -> None:
        import anyio

        while True:
            self.sample_now()
            await anyio.sleep(self.next_interval_s())

    async def _slow_task(self) -> None:
        import anyio

        while True:
            await anyio.to_thread.run_sync(self.sample_slow)
            with anyio.move_on_after(self.slow_interval_s):
                while not self._reclaim_wanted.is_set():
                    await anyio.sleep(self.interval_s)
            if self._reclaim_wanted.is_set():
                self._reclaim_wanted.clear()
                if self.state.level >= Level.WARNING:
                    await anyio.to_thread.run_sync(self._safe_reclaim)


def _positive_duration(value: float | str, name: str) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        from resguard._errors import InvalidValue

        raise InvalidValue(f"{name}={value!r} must be a positive duration, e.g. \"50ms\"")
    return seconds
