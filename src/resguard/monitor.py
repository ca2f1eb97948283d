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

Failures never stop the loops: a sample, a source, a rule, a subscriber or a reclaim step
that raises is logged once per kind of error (and once when it works again), and the loop
goes on. A tick that cannot produce a state publishes nothing, so the state grows *stale*:
its age (:meth:`State.age_s`) passes ``stale_after`` and :meth:`Monitor.unknown_reason`
says so, for guards and readiness checks that must not trust an old verdict forever.
"""

from __future__ import annotations

import math
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol

import attrs

from resguard._errors import InvalidState, InvalidType, InvalidValue, ResguardError
from resguard._modules import forks
from resguard._modules.clock import Clock
from resguard._modules.clockcheck import checked_clock
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard._modules.render import ValueMixin, flatten, html_table
from resguard._probes.psi import open_trigger
from resguard.processes import ProcessTable
from resguard.reclaim import Ladder, ReclaimReport
from resguard.rules import Level, Policy, ProcessCount, ProcessThreshold, Verdict
from resguard.snapshot import Fault, Sampler, Snapshot
from resguard.units import format_duration, named, parse_duration, parse_percent, shown

__all__ = ["Monitor", "Source", "State"]

_logger = get_logger("resguard")

JOIN_TIMEOUT_S = 10.0
"""How long :meth:`Monitor.stop` waits for each background thread (one blocked in a
subscriber or a source finishes on its own, and closes its own pipe)."""

FIRST_SLOW_WAIT_S = 2.0
"""How long :meth:`Monitor.start` waits for the first slow sample (the process table and
the sources), so that it never hangs on a source that does not answer."""

RELOG_AFTER_S = 60.0
"""A failure that comes back after its source worked again is logged again only after this
long (per kind of error): an intermittent fault is one warning, not one per tick."""


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

    def age_s(self, now: float | None = None) -> float:
        """Seconds since this state's snapshot was taken, at monotonic time *now* (default
        :func:`time.monotonic`, the clock of the snapshots); never negative."""
        now = time.monotonic() if now is None else _monotonic_now(now)
        return max(now - self.snapshot.monotonic, 0.0)

    def _repr_html_(self) -> str:
        return html_table(
            [
                ("level", self.verdict.level.name),
                ("reason", self.verdict.reason),
                *flatten(self.snapshot),
            ],
            f"resguard state #{self.sequence}",
        )


Subscriber = Callable[[State, "State | None"], object]


class Monitor:
    """Samples in the background and keeps the latest :class:`State` in ``state``.

    Arguments:
        interval: the fast loop's period (default ``"50ms"``; every interval is at least
            ``"1ms"``: a shorter one would be a busy loop).
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
        reclaim: climb the reclaim ladder on WARNING (default True): at once when the
            verdict reaches it, then at most once per *slow_interval* while it lasts.
        reclaim_to: the memory use the ladder aims for, as a percent of the effective
            limit (default ``"80%"``, the presets' clear level).
        stale_after: how old the state may grow before it is *stale* (default the larger
            of 1 s and 5 × *relaxed_interval*; it must exceed the longest wait of the fast
            loop). See :meth:`unknown_reason`.
        clock: monotonic seconds, the clock of the sampler's snapshots (default
            :func:`time.monotonic`); :meth:`unknown_reason` reads it for "now".

    Every bad argument raises :class:`~resguard.InvalidValue` or
    :class:`~resguard.InvalidType` naming it, before anything is started.
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
        stale_after: float | str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.interval_s = _interval(interval, "interval")
        self.slow_interval_s = _interval(slow_interval, "slow_interval")
        self.min_interval_s = min(_interval(min_interval, "min_interval"), self.interval_s)
        self.relaxed_interval_s = max(
            _interval(relaxed_interval, "relaxed_interval"), self.interval_s
        )
        self.relax_below_percent = _percent(relax_below, "relax_below")
        self.reclaim_to_percent = _percent(reclaim_to, "reclaim_to")
        self.adaptive = _flag(adaptive, "adaptive")
        self.psi_trigger = _flag(psi_trigger, "psi_trigger")
        self._reclaim_enabled = _flag(reclaim, "reclaim")
        longest_wait_s = self.relaxed_interval_s if self.adaptive else self.interval_s
        if stale_after is None:
            self.stale_after_s = max(1.0, 5 * self.relaxed_interval_s)
        else:
            self.stale_after_s = _interval(stale_after, "stale_after")
            if self.stale_after_s <= longest_wait_s:
                raise InvalidValue(
                    f"stale_after={shown(stale_after)} is not above the longest wait of the fast "
                    f"loop ({format_duration(longest_wait_s)}): every state would be stale; "
                    f"expected e.g. {format_duration(5 * longest_wait_s)!r}"
                )
        self._clock: Clock = checked_clock(clock) if clock is not None else time.monotonic
        if policy is None:
            from resguard import presets

            policy = presets.service()
        if not isinstance(policy, Policy):
            raise InvalidType(
                f"policy={shown(policy)} is not a resguard.Policy; expected "
                "Policy([...]) or a preset such as resguard.presets.service()"
            )
        self.policy = policy
        checked_sources = _sources(sources)
        if ladder is not None and not isinstance(ladder, Ladder):
            raise InvalidType(f"ladder={shown(ladder)} is not a resguard.reclaim.Ladder")
        if sampler is not None:
            if cgroup is not None:
                raise InvalidValue(
                    f"cgroup={shown(cgroup)} and sampler= both given; pass "
                    "Sampler(cgroup=...) as sampler=, or cgroup= alone"
                )
            if not callable(getattr(sampler, "sample", None)):
                raise InvalidType(f"sampler={shown(sampler)} is not a resguard.Sampler")
        self._sampler = sampler if sampler is not None else _sampler_for(cgroup)
        self._sources = checked_sources
        needs_processes = any(
            isinstance(rule, (ProcessThreshold, ProcessCount)) for rule in self.policy.rules
        )
        self._process_table = ProcessTable() if needs_processes else None
        self._policy_state = self.policy.new_state()
        self._faults = FaultLog(_logger)
        self._failing: dict[str, str] = {}  # source -> kind of error logged for it
        self._errors: dict[str, str] = {}  # source -> its latest error
        self._logged_at: dict[tuple[str, str], float] = {}  # (source, kind) -> last logged
        self._source_faults: dict[str, tuple[Fault, ...]] = {}
        self._extra: dict[str, Any] = {}
        self._extra_lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self._history: deque[tuple[float, int]] = deque(maxlen=64)
        self.ladder = ladder if ladder is not None else Ladder(self._measure_used)
        self.last_reclaim: ReclaimReport | None = None
        self._reclaim_wanted = threading.Event()
        self._next_reclaim_s = -math.inf  # climbs are paced: at most one per slow_interval
        self._run: _Run | None = None  # the background threads' run, while they run
        self._threads: list[threading.Thread] = []
        self._life_lock = threading.Lock()  # start() and stop() one at a time
        self._task_group: Any = None
        self._trigger_fd: int | None = None
        self._sequence = 0
        self._tick_lock = threading.Lock()
        self.ticks = 0
        self.triggered_wakeups = 0
        forks.register(self)
        try:
            first = self._sampler.sample(children=False)
        except Exception as error:  # the sampler degrades to None; this is a bug
            raise InvalidState(
                f"the monitor could not take its first sample: {type(error).__name__}: {error}"
            ) from error
        self.state: State = self._make_state(first)

    # -- failures: logged once per kind ---------------------------------------------------

    def _failed(self, source: str, error: BaseException) -> None:
        """Record that *source* failed; log it the first time and when the kind changes,
        and a flapping source (failing, working, failing...) at most once per
        :data:`RELOG_AFTER_S` for each kind."""
        kind = type(error).__name__
        self._errors[source] = f"{kind}: {error}"
        if self._failing.get(source) == kind:
            return
        self._failing[source] = kind
        now = time.monotonic()
        if now - self._logged_at.get((source, kind), -math.inf) >= RELOG_AFTER_S:
            self._logged_at[(source, kind)] = now
            self._faults.failed(source, error)

    def _worked(self, source: str) -> None:
        """Record that *source* worked (logs once when it ends a failure)."""
        if self._failing.pop(source, None) is not None:
            self._errors.pop(source, None)
            self._faults.recovered(source)

    # -- sampling -------------------------------------------------------------------------

    def _measure_used(self) -> int | None:
        return self._sampler.sample(children=False).memory.used

    def _make_state(self, snap: Snapshot) -> State:
        with self._extra_lock:
            extra = dict(self._extra)
            source_faults = tuple(
                fault for faults in self._source_faults.values() for fault in faults
            )
        if source_faults:
            extra["faults"] = (*snap.faults, *source_faults)
        if extra:
            snap = attrs.evolve(snap, **extra)
        verdict = self.policy.evaluate(snap, state=self._policy_state, now=snap.monotonic)
        self._sequence += 1
        return State(snap, verdict, self._sequence)

    def sample_now(self) -> State:
        """Take one fast sample, judge it, publish it and tell subscribers of a level change.

        Never raises: when sampling or judging fails, the failure is logged once per kind
        and the previous state stays published (it grows stale). The background loops call
        this; tests and simple scripts may call it directly.
        """
        with self._tick_lock:
            previous = self.state
            self.ticks += 1
            try:
                state = self._make_state(self._sampler.sample(children=False))
            except Exception as error:
                self._failed("the monitor's sample", error)
                return previous
            if self._failing:
                self._worked("the monitor's sample")
            self.state = state
            snapshot = state.snapshot
            used = snapshot.memory.used
            if used is None:
                self._history.clear()  # the fill rate needs consecutive known samples
            else:
                self._history.append((snapshot.monotonic, used))
        if state.level != previous.level:
            self._level_changed(state, previous)
        if self._reclaim_enabled and state.level >= Level.WARNING:
            self._reclaim_wanted.set()
        return state

    def sample_slow(self) -> None:
        """Sample the process table and every source once (what the slow loop does).

        A failing source is logged once per kind of error; its fields become ``None`` and
        ``snapshot.faults`` names it, so rules on them report *unknown*."""
        updates: dict[str, Any] = {}
        faults: dict[str, tuple[Fault, ...]] = {}
        if self._process_table is not None:
            try:
                updates["processes"] = tuple(self._process_table.sample())
                if self._process_table.faults:  # damaged rows were skipped: say so
                    faults["process table"] = self._process_table.faults
                self._worked("process table")
            except Exception as error:
                self._failed("process table", error)
                faults["process table"] = (_source_fault("processes", "process table", error),)
        for source in self._sources:
            name = source.name
            try:
                updates.update(_source_fields(source.sample()))
                self._worked(name)
            except Exception as error:
                self._failed(name, error)
                fields = _declared_fields(source)
                for field in fields:
                    updates[field] = None
                faults[name] = tuple(_source_fault(field, name, error) for field in fields)
        with self._extra_lock:
            self._extra.update(updates)
            self._source_faults = faults

    def reclaim_now(self) -> ReclaimReport:
        """Climb the ladder until memory use is back at ``reclaim_to`` (plus the minimum);
        while the limit or the use is unknown, by the ladder's minimum."""
        memory = self._sampler.sample(children=False).memory
        if memory.limit is None or memory.used is None:
            needed = 0
        else:
            needed = int(memory.used - memory.limit * self.reclaim_to_percent / 100)
        report = self.ladder.run(needed)
        self.last_reclaim = report
        return report

    def _level_changed(self, state: State, previous: State) -> None:
        log = _logger.warning if state.level > previous.level else _logger.info
        log("level %s -> %s: %s", previous.level.name, state.level.name, state.verdict.reason)
        for subscriber in list(self._subscribers):
            try:
                subscriber(state, previous)
            except Exception as error:
                self._failed(_subscriber_name(subscriber), error)
            else:
                if self._failing:
                    self._worked(_subscriber_name(subscriber))

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(new_state, old_state)`` on every level change; returns an
        unsubscribe function. Exceptions in a callback never stop sampling: they are logged
        once per kind of error."""
        if not callable(callback):
            raise InvalidType(
                f"{shown(callback)} is not callable; expected a function (new_state, old_state)"
            )
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            try:
                self._subscribers.remove(callback)
            except ValueError:
                pass

        return unsubscribe

    @property
    def clock(self) -> Clock:
        """The monotonic clock the monitor measures ages with (guards share it)."""
        return self._clock

    @property
    def sampler(self) -> Sampler:
        """The sampler behind the fast loop (guards sample through it when it is stale)."""
        return self._sampler

    @property
    def faults(self) -> dict[str, str]:
        """What is failing now (sources, sampling, subscribers, reclaiming), with its latest
        error (each kind logged once)."""
        return dict(self._errors)

    def unknown_reason(self, now: float | None = None) -> str | None:
        """Why the current state cannot be trusted, or ``None`` when it is fresh and known.

        ``"stale: last sample 3.2 s ago"`` when the state is older than ``stale_after``
        at monotonic time *now* (default: the monitor's clock), else ``"unknown: ..."`` with
        the verdict's unknowns (``"unknown: memory.percent: /proc/meminfo empty"``).
        """
        state = self.state
        age_s = state.age_s(self._clock() if now is None else _monotonic_now(now))
        if age_s > self.stale_after_s:
            return f"stale: last sample {age_s:.1f} s ago"
        if state.verdict.unknown:
            return "unknown: " + "; ".join(state.verdict.unknown)
        return None

    def next_interval_s(self) -> float:
        """How long the fast loop waits now.

        *relaxed_interval* while all is calm (verdict OK, memory below *relax_below* of the
        limit, and not growing by a point of the limit between the last two samples);
        *interval* otherwise; shorter still while memory fills up, so that the limit is
        seen coming at least 20 samples ahead at the measured fill rate. Never relaxed
        while memory or part of the verdict is unknown: blind is not calm.
        """
        if not self.adaptive:
            return self.interval_s
        state, history = self.state, self._history
        memory = state.snapshot.memory
        interval = self.interval_s
        percent, limit, available = memory.percent, memory.limit, memory.available
        if len(history) >= 2 and percent is not None and limit is not None:
            (t0, used0), (t1, used1) = history[0], history[-1]
            jump = history[-1][1] - history[-2][1]
            calm = (
                state.verdict.level == Level.OK
                and state.verdict.known
                and percent < self.relax_below_percent
                and jump < limit / 100
            )
            if calm:
                interval = self.relaxed_interval_s
            if len(history) >= 4 and t1 > t0 and used1 > used0 and available is not None:
                seconds_to_limit = available / ((used1 - used0) / (t1 - t0))
                interval = min(interval, max(self.min_interval_s, seconds_to_limit / 20))
        return interval

    # -- threads --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the background loops run (threads, or tasks under ``async with``)."""
        return self._run is not None or self._task_group is not None

    def start(self) -> Monitor:
        """Start the background threads (idempotent)."""
        with self._life_lock:
            if self._run is not None or self._task_group is not None:
                return self  # already running, as threads or as tasks
            trigger_fd = None
            if self.psi_trigger:
                path = self._trigger_path()
                trigger_fd = open_trigger(path) if path else None
            run = _Run(trigger_fd)
            self._trigger_fd = trigger_fd
            try:
                threads = [
                    threading.Thread(
                        target=self._fast_loop, args=(run,), name="resguard-monitor", daemon=True
                    ),
                    threading.Thread(
                        target=self._slow_loop,
                        args=(run,),
                        name="resguard-monitor-slow",
                        daemon=True,
                    ),
                ]
                for thread in threads:
                    thread.start()
                # the first state after start() has the slow fields (processes, sources),
                # unless a source hangs: then start() returns anyway, and they follow
                run.first_slow.wait(FIRST_SLOW_WAIT_S)
            except BaseException:
                run.stop.set()
                run.close()
                self._trigger_fd = None
                raise
            self._run, self._threads = run, threads
        return self

    def _trigger_path(self) -> str | None:
        source = self.state.snapshot.pressure.source
        if source is None:
            return None
        if source == "system":
            return "/proc/pressure/memory"
        return os.path.join(source, "memory.pressure")

    def stop(self) -> None:
        """Stop the background threads and wait for them (up to :data:`JOIN_TIMEOUT_S` each).

        Safe from anywhere, a subscriber included (the monitor's own thread is not waited
        for: it ends when the callback returns); a later :meth:`start` starts fresh threads
        even while an old one is still finishing."""
        with self._life_lock:
            run, threads = self._run, self._threads
            self._run, self._threads = None, []
            self._trigger_fd = None
        if run is None:
            return
        run.request_stop()
        self._reclaim_wanted.set()
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(timeout=JOIN_TIMEOUT_S)
        if not any(thread.is_alive() for thread in threads):
            run.close()  # else the fast loop closes its own pipe when it ends

    def _after_fork_in_child(self) -> None:
        # the parent's threads do not exist here: the monitor is stopped, start() restarts
        # it, and no lock may stay held by a thread that is gone
        run, self._run, self._threads = self._run, None, []
        self._trigger_fd = None
        self._task_group = None
        self._tick_lock = threading.Lock()
        self._extra_lock = threading.Lock()
        self._life_lock = threading.Lock()
        self._reclaim_wanted = threading.Event()
        if run is not None:
            run.abandon()

    def _fast_loop(self, run: _Run) -> None:
        try:
            poller = select.poll()
            poller.register(run.wake_read, select.POLLIN)
            if run.trigger_fd is not None:
                poller.register(run.trigger_fd, select.POLLPRI)
            while not run.stop.is_set():
                wait_s = self._tick()
                if run.stop.is_set():
                    return
                events = poller.poll(wait_s * 1000)
                if any(fd == run.trigger_fd for fd, _ in events):
                    self.triggered_wakeups += 1
        finally:
            if run.stop.is_set():
                run.close()

    def _slow_loop(self, run: _Run) -> None:
        self._safe_sample_slow()
        run.first_slow.set()
        next_slow = time.monotonic() + self.slow_interval_s
        while not run.stop.is_set():
            now = time.monotonic()
            if now >= self._next_reclaim_s:  # a climb may start as soon as one is wanted
                self._reclaim_wanted.wait(max(next_slow - now, 0))
            else:  # the last climb was recent: wanted or not, wait for its pace
                run.stop.wait(max(min(next_slow, self._next_reclaim_s) - now, 0))
            if run.stop.is_set():
                return
            if self._maybe_reclaim():
                self._safe_reclaim()
            if time.monotonic() >= next_slow:
                self._safe_sample_slow()
                next_slow = time.monotonic() + self.slow_interval_s

    def _maybe_reclaim(self) -> bool:
        """Climb the ladder if a climb is wanted (the verdict is WARNING or worse) and the
        last one is at least *slow_interval* ago; whether it is time to climb. Every fast
        tick at WARNING asks for a climb: without this pace the ladder (a process scan,
        a garbage collection) would run at the fast loop's rate."""
        if not self._reclaim_wanted.is_set() or time.monotonic() < self._next_reclaim_s:
            return False
        self._reclaim_wanted.clear()
        if self.state.level < Level.WARNING:
            return False
        self._next_reclaim_s = time.monotonic() + self.slow_interval_s
        return True

    def _tick(self) -> float:
        """One fast-loop step: sample, then how long to wait; never raises."""
        try:
            self.sample_now()
            return self.next_interval_s()
        except Exception as error:  # a bug; the loop goes on at its base pace
            self._failed("the monitor's interval", error)
            return self.interval_s

    def _safe_reclaim(self) -> None:
        try:
            self.reclaim_now()
            if self._failing:
                self._worked("reclaiming")
        except Exception as error:  # steps are guarded; this is the last net
            self._failed("reclaiming", error)

    def _safe_sample_slow(self) -> None:
        try:
            self.sample_slow()
        except Exception as error:  # sources are guarded one by one; this is the last net
            self._failed("the monitor's slow sample", error)

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- anyio ----------------------------------------------------------------------------

    async def __aenter__(self) -> Monitor:
        import anyio

        with self._life_lock:
            if self.running:  # two sets of loops would sample and reclaim twice
                raise InvalidState(
                    "the monitor is already running (start() or another "
                    "async with); use one of them"
                )
            self._task_group = task_group = anyio.create_task_group()
        try:
            await task_group.__aenter__()
        except BaseException:
            self._task_group = None
            raise
        task_group.start_soon(self._fast_task)
        task_group.start_soon(self._slow_task)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group, self._task_group = self._task_group, None
        task_group.cancel_scope.cancel()
        return bool(await task_group.__aexit__(exc_type, exc, tb))

    async def _fast_task(self) -> None:
        import anyio

        while True:
            await anyio.sleep(self._tick())

    async def _slow_task(self) -> None:
        import anyio

        # a source or a reclaim step that hangs must not hang leaving ``async with``: the
        # worker thread is abandoned at cancellation and finishes on its own
        while True:
            await anyio.to_thread.run_sync(self._safe_sample_slow, abandon_on_cancel=True)
            with anyio.move_on_after(self.slow_interval_s):
                while not self._reclaim_wanted.is_set() or (
                    time.monotonic() < self._next_reclaim_s
                ):
                    await anyio.sleep(self.interval_s)
            if self._maybe_reclaim():
                await anyio.to_thread.run_sync(self._safe_reclaim, abandon_on_cancel=True)


class _Run:
    """One :meth:`Monitor.start`: its stop flag, the pipe that wakes the fast loop and the
    PSI trigger; closed exactly once, by :meth:`Monitor.stop` or by the fast loop when it
    ends after stop() stopped waiting for it."""

    __slots__ = ("_closed", "_lock", "first_slow", "stop", "trigger_fd", "wake_read", "wake_write")

    def __init__(self, trigger_fd: int | None) -> None:
        self.stop = threading.Event()
        self.first_slow = threading.Event()  # the slow loop's first sample is done
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_write, False)
        self.trigger_fd = trigger_fd
        self._lock = threading.Lock()
        self._closed = False

    def request_stop(self) -> None:
        self.stop.set()
        with self._lock:
            if not self._closed:
                try:
                    os.write(self.wake_write, b"x")
                except OSError:  # full: the loop has a wake-up waiting already
                    pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._close_fds()

    def abandon(self) -> None:
        """In a forked child: close this process's copies, whatever the lock says."""
        self._closed = True
        self.stop.set()
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self.wake_read, self.wake_write, self.trigger_fd):
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _monotonic_now(now: object) -> float:
    """*now* as monotonic seconds, or an error naming it (a huge int is no OverflowError)."""
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise InvalidType(
            f"now={shown(now)} is not a monotonic time in seconds; expected e.g. time.monotonic()"
        )
    try:
        seconds = float(now)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise InvalidValue(f"now={shown(now)} is not a finite monotonic time in seconds")
    return seconds


MIN_INTERVAL_S = 0.001
"""The floor of every interval: a shorter one would keep a core busy sampling."""


def _interval(value: object, name: str) -> float:
    """A duration of at least :data:`MIN_INTERVAL_S`, or an error naming *name*."""
    seconds = named(name, parse_duration, value)
    if seconds < MIN_INTERVAL_S:
        raise InvalidValue(
            f"{name}={shown(value)} is shorter than the floor of 1ms (a busy "
            f'loop); expected a duration such as "50ms"'
        )
    return seconds


def _percent(value: object, name: str) -> float:
    return named(name, parse_percent, value)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidType(f"{name}={shown(value)} is not a bool; expected True or False")
    return value


def _sources(sources: object) -> tuple[Source, ...]:
    expected = "expected a list of sources (objects with a name and a sample() method)"
    if isinstance(sources, (str, bytes)) or not isinstance(sources, (list, tuple, Sequence)):
        raise InvalidType(f"sources={shown(sources)} is not a list of sources; {expected}")
    for source in sources:
        if not isinstance(getattr(source, "name", None), str) or not callable(
            getattr(source, "sample", None)
        ):
            raise InvalidType(f"{shown(source)} in sources is not a source; {expected}")
    return tuple(sources)


def _sampler_for(cgroup: object) -> Sampler:
    """A Sampler for *cgroup* (``None``: this process's own), failing now if it is not
    a cgroup directory, not on the first sample."""
    if cgroup is None:
        return Sampler()
    if not isinstance(cgroup, (str, os.PathLike)):
        raise InvalidType(
            f"cgroup={shown(cgroup)} is not a path; expected a cgroup "
            "directory such as '/sys/fs/cgroup/system.slice/web.service'"
        )
    path = os.fspath(cgroup)
    if not isinstance(path, str) or not os.path.isdir(path):
        raise InvalidValue(
            f"cgroup={shown(cgroup)} is not a cgroup directory (it does not exist "
            "or is not a directory)"
        )
    if not os.path.exists(os.path.join(path, "cgroup.procs")):  # every cgroup, v1 or v2
        raise InvalidValue(
            f"cgroup={shown(cgroup)} is a directory but not a cgroup (it has no "
            "cgroup.procs); expected a directory under /sys/fs/cgroup"
        )
    try:
        return Sampler(cgroup=path)
    except ResguardError:
        raise
    except (OSError, ValueError) as error:
        raise InvalidValue(f"cgroup={shown(cgroup)} is not a cgroup directory: {error}") from error


_SOURCE_FIELDS = frozenset(attrs.fields_dict(Snapshot)) - {
    "memory",
    "swap",
    "cpu",
    "pressure",
    "process",
    "taken_at",
    "monotonic",
    "faults",
}
"""The snapshot fields a slow source may fill in (``processes``, ``containers``, ``ollama``)."""


def _source_value_ok(field: str, value: object) -> bool:
    """Whether *value* can stand in the snapshot's *field* (rules, metrics and the CLI
    read it without checking again)."""
    from resguard.snapshot import ContainersInfo, OllamaModelInfo, ProcessInfo

    if value is None:
        return True
    if field == "containers":
        return isinstance(value, ContainersInfo)
    row = ProcessInfo if field == "processes" else OllamaModelInfo
    return isinstance(value, tuple) and all(isinstance(item, row) for item in value)


def _source_fields(result: object) -> dict[str, Any]:
    """A source's answer, checked: a dict of snapshot fields a source may fill in, each of
    its field's type (a garbage value would fail every rule and every scrape after it)."""
    if not isinstance(result, dict) or not all(key in _SOURCE_FIELDS for key in result):
        raise InvalidValue(
            f"sample() returned {shown(result)[:200]}; expected a dict with "
            f"keys among {sorted(_SOURCE_FIELDS)}"
        )
    for field, value in result.items():
        if not _source_value_ok(field, value):
            raise InvalidValue(
                f"sample() returned {field}={shown(value)[:200]}; expected "
                f"what Snapshot.{field} holds, or None"
            )
    return result


def _declared_fields(source: object) -> tuple[str, ...]:
    """The fields a source fills in (``source.fields``), set to None while it fails."""
    fields = getattr(source, "fields", ())
    if isinstance(fields, str) or not isinstance(fields, (list, tuple, frozenset, set)):
        return ()
    return tuple(field for field in fields if field in _SOURCE_FIELDS)


def _subscriber_name(subscriber: object) -> str:
    try:
        return f"resguard subscriber {subscriber!r}"
    except Exception:  # a repr that raises must not stop the loop either
        return f"resguard subscriber {type(subscriber).__qualname__} at {id(subscriber):#x}"


def _source_fault(field: str, source: str, error: BaseException) -> Fault:
    return Fault(field, source, "unreadable", f"{type(error).__name__}: {error}")
