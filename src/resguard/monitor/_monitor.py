"""The :class:`Monitor` itself: sampling, publishing, subscribers, its life cycle."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import attrs

from resguard._errors import InvalidState, InvalidType, InvalidValue
from resguard._modules import forks
from resguard._modules.clock import Clock
from resguard._modules.clockcheck import checked_clock
from resguard._modules.faults import FaultLog
from resguard._modules.log import (
    emit,
    fields,
    flush_refusals,
    get_logger,
    verdict_fields,
)
from resguard._modules.waiter import Waiter
from resguard.monitor import _decide, _events, _loops, _steps
from resguard.monitor._options import (
    Options,
    builtin_sources,
    check_policy,
    check_sampler,
    check_sources,
)
from resguard.monitor._sources import sample_sources, subscriber_name
from resguard.monitor._state import Source, State, Subscriber, monotonic_now
from resguard.reclaim import Ladder, ReclaimReport, Registry
from resguard.rules import Level, Policy
from resguard.snapshot import Fault, HeatReader, Sampler, Snapshot
from resguard.units import shown

__all__ = ["Monitor"]

_logger = get_logger("resguard")


def _package_constant(name: str) -> float:
    """A tunable of ``resguard.monitor`` read when it is used, so that setting it on the
    public module takes effect (tests shorten the waits)."""
    from resguard import monitor as package

    return float(getattr(package, name))


class Monitor:
    """Samples in the background and keeps the latest :class:`State` in ``state``.

    Arguments:
        interval: the fast loop's period (default ``"50ms"``; every interval is at least
            ``"1ms"``: a shorter one would be a busy loop).
        policy: the rules to judge by (default :func:`resguard.presets.service`).
        sources: extra sources for the slow loop (Docker containers, Ollama models).
        slow_interval: the slow loop's period (default ``"2s"``).
        min_interval: the fastest the adaptive fast loop may go (default ``"10ms"``).
        relaxed_interval: the longest wait (default ``"200ms"``): while the verdict is
            OK and known, the wait is paced by the distance from memory use to the nearest
            edge of the policy and the watched guards (:meth:`watch_edges`) at the fill
            rate, between *min_interval* and this; a kernel event still wakes it at once.
        relax_below: one more edge to pace by, as a percent of the limit (default none):
            no longer a level below which all is calm, which a fixed share never is.
        adaptive: pace the interval as above; ``False`` keeps *interval*.
        events: wake on the kernel's memory events (default True: cgroup v1 thresholds
            at the edges and OOM notifications, v2 ``memory.events``, PSI triggers), then
            sample at *min_interval* for :data:`~resguard.monitor.BURST_S`; ``False``
            polls only. Where nothing can be armed the monitor says why once, and polls.
        psi_trigger: arm PSI triggers among the events (Linux only).
        cgroup: judge this cgroup directory's memory instead of this process's own.
        reclaim: climb the reclaim ladder on WARNING (at once, then once per *slow_interval*):
            ``True`` (default) gc and what was registered with it (:attr:`reclaimables`),
            ``"process"`` the process-wide registry too (as before), ``False`` never.
        reclaim_to: the memory use the ladder aims for, as a percent of the effective
            limit (default ``"80%"``, the presets' clear level).
        stale_after: how old the state may grow before it is *stale* (default the larger
            of 1 s and 5 × *relaxed_interval*; it must exceed the longest wait of the fast
            loop). See :meth:`unknown_reason`.
        clock: monotonic seconds, the clock of the sampler's snapshots (default
            :func:`time.monotonic`); :meth:`unknown_reason`, the reclaim pace and the slow
            loop's schedule read it for "now".
        heat: sample ``snapshot.heat`` even when no rule reads it: True, or the
            :class:`~resguard.snapshot.HeatReader` to read through.
        processes: sample the process table (and ``cgroup_pids``) even when no rule
            reads it.

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
        relax_below: float | str | None = None,
        adaptive: bool = True,
        events: bool = True,
        psi_trigger: bool = True,
        cgroup: str | None = None,
        sampler: Sampler | None = None,
        reclaim: bool | str = True,
        reclaim_to: float | str = "80%",
        ladder: Ladder | None = None,
        stale_after: float | str | None = None,
        clock: Clock | None = None,
        heat: bool | HeatReader = False,
        processes: bool = False,
    ) -> None:
        options = Options.parse(
            interval=interval,
            slow_interval=slow_interval,
            min_interval=min_interval,
            relaxed_interval=relaxed_interval,
            relax_below=relax_below,
            adaptive=adaptive,
            psi_trigger=psi_trigger,
            events=events,
            reclaim=reclaim,
            reclaim_to=reclaim_to,
            stale_after=stale_after,
        )
        self._clock: Clock = checked_clock(clock) if clock is not None else time.monotonic
        self.policy = check_policy(policy)
        self._sources = check_sources(sources)
        self._sampler = check_sampler(sampler, cgroup)
        self._builtin = builtin_sources(
            self.policy, self._sampler, heat=heat, processes=processes, clock=self._clock
        )
        self._set_options(options)
        self.ladder = _ladder(ladder, self._measure_used, options)
        self._init_state()
        forks.register(self)
        try:
            first = self._sampler.sample(children=False)
        except Exception as error:  # the sampler degrades to None; this is a bug
            raise InvalidState(
                f"the monitor could not take its first sample: {type(error).__name__}: {error}"
            ) from error
        self.state: State = self._make_state(first)

    def _set_options(self, options: Options) -> None:
        self._options = options
        self.interval_s = options.interval_s
        self.slow_interval_s = options.slow_interval_s
        self.min_interval_s = options.min_interval_s
        self.relaxed_interval_s = options.relaxed_interval_s
        self.relax_below_percent = options.relax_below_percent
        self.reclaim_to_percent = options.reclaim_to_percent
        self.adaptive = options.adaptive
        self.psi_trigger = options.psi_trigger
        self.events = options.events
        self.stale_after_s = options.stale_after_s

    def _init_state(self) -> None:
        self._policy_state = self.policy.new_state()
        self._failures = _Failures(self._clock)
        self._failed, self._worked = self._failures.failed, self._failures.worked
        self._source_faults: dict[str, tuple[Fault, ...]] = {}
        self._extra: dict[str, Any] = {}
        self._subscribers: list[Subscriber] = []
        self._history: _decide.History = deque(maxlen=64)
        self._schedule = _decide.SlowSchedule(self._options.slow_interval_s)
        self._slow_waiter = Waiter()
        self._run: _loops.Run | None = None  # the background threads' run, while they run
        self._threads: list[threading.Thread] = []
        self._events = _events.EventHub(
            self._failed, self._worked, lambda: bool(self._failures.memo.failing)
        )
        self._wakeups = _events.Wakeups(self._events, None)  # the running loops' events
        self._tasks: _loops.TaskRun | None = None  # under async with
        self._sequence = 0
        self._new_locks()
        self.ticks = 0

    def _new_locks(self) -> None:
        self._tick_lock = threading.Lock()
        self._extra_lock = threading.Lock()
        self._life_lock = threading.Lock()  # start() and stop() one at a time
        self._schedule_lock = threading.Lock()

    @property
    def reclaimables(self) -> Registry:
        """What its ladder climbs besides gc: ``register=monitor`` puts things here."""
        return self.ladder.reclaimables

    @property
    def last_reclaim(self) -> ReclaimReport | None:
        """The report of the ladder's latest climb (``ladder.last_report``), or ``None``."""
        return self.ladder.last_report

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
            if self._failures.memo.failing:
                self._worked("the monitor's sample")
            self.state = state
            _decide.remember(self._history, state.snapshot)
        if state.level != previous.level:
            self._level_changed(state, previous)
        if self._options.reclaim and state.level >= Level.WARNING:
            with self._schedule_lock:
                news = self._schedule.want_climb()
            if news:
                self._slow_waiter.wake()
        return state

    def sample_slow(self) -> None:
        """Sample the process table (with the binding cgroup's members), heat and every
        source once (what the slow loop does); the first two when asked for.

        A failing source is logged once per kind of error; its fields become ``None`` and
        ``snapshot.faults`` names it, so rules on them report *unknown*."""
        updates, faults = sample_sources(
            self._builtin, self._sources, self._failed, self._worked, self.state.snapshot.memory
        )
        with self._extra_lock:
            self._extra.update(updates)
            self._source_faults = faults

    def reclaim_now(self) -> ReclaimReport:
        """Climb the ladder until memory use is back at ``reclaim_to`` (plus the minimum);
        while the limit or the use is unknown, by the ladder's minimum."""
        memory = self._sampler.sample(children=False).memory
        return self.ladder.run(_decide.reclaim_needed_bytes(memory, self.reclaim_to_percent))

    def _level_changed(self, state: State, previous: State) -> None:
        _log_level_change(state, previous, self.ladder)
        for subscriber in list(self._subscribers):
            try:
                subscriber(state, previous)
            except Exception as error:
                self._failed(subscriber_name(subscriber), error)
            else:
                if self._failures.memo.failing:
                    self._worked(subscriber_name(subscriber))

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(new_state, old_state)`` on every level change; returns an
        unsubscribe function. Exceptions in a callback never stop sampling: they are logged
        once per kind of error."""
        if not callable(callback):
            raise InvalidType(
                f"{shown(callback)} is not callable; expected a function (new_state, old_state)"
            )
        self._subscribers.append(callback)
        return _unsubscriber(self._subscribers, callback)

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
        return dict(self._failures.memo.errors)

    def unknown_reason(self, now: float | None = None) -> str | None:
        """Why the current state cannot be trusted, or ``None`` when it is fresh and known.

        ``"stale: last sample 3.2 s ago"`` when the state is older than ``stale_after``
        at monotonic time *now* (default: the monitor's clock), else ``"unknown: ..."`` with
        the verdict's unknowns (``"unknown: memory.percent: /proc/meminfo empty"``).
        """
        now_s = self._clock() if now is None else monotonic_now(now)
        return _decide.unknown_reason(self.state, now_s, self.stale_after_s)

    def next_interval_s(self) -> float:
        """How long the fast loop waits now (``_decide.next_interval_s``): paced by the
        nearest edge unless kernel thresholds cover the edges, *min_interval* in a burst
        after an event, at most *interval* while the verdict is not OK or not known."""
        state = self.state
        edges = self._events.edges(self.policy, state.snapshot.memory)
        burst, covered = self._clock() < self._events.burst_until_s, self._wakeups.covered
        return _decide.next_interval_s(
            self._options, state, self._history, edges, burst=burst, covered=covered
        )

    # -- kernel events (the plumbing is in _events) ---------------------------------------

    def watch_edges(self, provider: _events.EdgeProvider) -> Callable[[], None]:
        """Arm the events and pace the polling at *provider*'s memory edges too
        (``provider.memory_edges_bytes(memory)``: a guard's budget edge), until the
        returned function is called or the provider is collected (held weakly). Each
        call is one watch: a provider watched twice counts until both are undone."""
        return self._events.watch(provider)

    def subscribe_events(self, callback: _events.EventSubscriber) -> Callable[[], None]:
        """Call ``callback(event)`` with every kernel memory event (an OOM kill is one of
        kind ``"oom_kill"``); returns an unsubscribe function. Exceptions in a callback
        are logged once per kind of error."""
        return self._events.subscribe(callback)

    @property
    def event_counts(self) -> dict[str, int]:
        """Kernel memory events seen, by kind (every kind of ``EVENT_KINDS``, from 0)."""
        return self._events.counted()

    @property
    def events_armed(self) -> tuple[str, ...]:
        """What the running loops have armed, readable (``()``: they poll, or stopped)."""
        return self._wakeups.armed

    @property
    def triggered_wakeups(self) -> int:
        """How often a kernel event woke the fast loop (not its timer)."""
        return self._events.wakeups

    # -- the loops' steps -----------------------------------------------------------------

    # -- threads --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the background loops run (threads, or tasks under ``async with``)."""
        return self._run is not None or self._tasks is not None

    def start(self) -> Monitor:
        """Start the background threads (idempotent)."""
        with self._life_lock:
            if self.running:
                return self  # already running, as threads or as tasks
            self._slow_waiter = Waiter()
            run = _loops.Run(wakeups := _steps.open_wakeups(self), self._slow_waiter)
            # the first state after start() has the slow fields (processes, sources),
            # unless a source hangs: then start() returns anyway, and they follow
            steps = _steps.steps_for(self, wakeups)
            threads = run.start_threads(steps, _package_constant("FIRST_SLOW_WAIT_S"))
            self._run, self._threads, self._wakeups = run, threads, wakeups
        return self

    def stop(self) -> None:
        """Stop the background threads and wait for them (up to :data:`JOIN_TIMEOUT_S` each).

        Safe from anywhere, a subscriber included (the monitor's own thread is not waited
        for: it ends when the callback returns); a later :meth:`start` starts fresh threads
        even while an old one is still finishing."""
        with self._life_lock:
            run, threads = self._run, self._threads
            self._run, self._threads = None, []
            self._wakeups = _events.Wakeups(self._events, None)
        if run is None:
            return
        run.request_stop()
        current = threading.current_thread()
        join_timeout_s = _package_constant("JOIN_TIMEOUT_S")
        for thread in threads:
            if thread is not current:
                thread.join(timeout=join_timeout_s)
        if not any(thread.is_alive() for thread in threads):
            run.close()  # else the fast loop closes its own pipe when it ends

    def _after_fork_in_child(self) -> None:
        # the parent's threads do not exist here: the monitor is stopped, start() restarts
        # it, and no lock may stay held by a thread that is gone
        run, self._run, self._threads = self._run, None, []
        tasks, self._tasks = self._tasks, None
        self._wakeups = _events.Wakeups(self._events, None)
        self._new_locks()
        self._slow_waiter = Waiter()
        for gone in (run, tasks):  # the kernel side's close is safe in a child
            if gone is not None:
                gone.abandon()

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
        with self._life_lock:
            if self.running:  # two sets of loops would sample and reclaim twice
                raise InvalidState(
                    "the monitor is already running (start() or another "
                    "async with); use one of them"
                )
            self._slow_waiter = Waiter()
            self._tasks = tasks = _loops.TaskRun(_steps.open_wakeups(self), self._slow_waiter)
        try:
            await tasks.enter(_steps.steps_for(self, tasks.wakeups))
        except BaseException:
            self._tasks = None
            raise
        self._wakeups = tasks.wakeups
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tasks, self._tasks = self._tasks, None
        self._wakeups = _events.Wakeups(self._events, None)
        assert tasks is not None, "__aexit__ without __aenter__"
        return await tasks.exit(exc_type, exc, tb, _package_constant("JOIN_TIMEOUT_S"))


def _ladder(ladder: object, measure: Callable[[], int | None], options: Options) -> Ladder:
    """The ladder given, or the monitor's own (with the process-wide registry's items for
    ``reclaim="process"``)."""
    if ladder is None:
        return Ladder(measure, process=options.reclaim_process)
    if not isinstance(ladder, Ladder):
        raise InvalidType(f"ladder={shown(ladder)} is not a resguard.reclaim.Ladder")
    if options.reclaim_process and not ladder.process:
        raise InvalidValue(
            f'reclaim="process" with ladder={shown(ladder)}, which does not climb the '
            "process-wide registry; expected Ladder(..., process=True), or reclaim=True"
        )
    return ladder


def _log_level_change(state: State, previous: State, ladder: Ladder) -> None:
    """The level-change line, with its rule and culprits as fields; the refusals of the
    episode are told before the line that ends it. Never raises (:func:`emit`). Back
    below WARNING, *ladder*'s next climb that frees nothing says so again."""
    if state.level < Level.WARNING:
        ladder.end_episode()
    flush_refusals()
    extra = {
        **fields("level_change", previous_level=previous.level.name),
        **verdict_fields(state.verdict),  # level, rule, rules, culprits
    }
    line = "level %s -> %s%s"
    emit(
        _logger,
        _line_level(state.level, previous.level),
        line,
        previous.level.name,
        state.level.name,
        _details(state),
        extra=extra,
    )


def _line_level(level: Level, previous: Level) -> int:
    """The logging level of a change to *level*: ERROR for CRITICAL (an ERROR filter shows
    it), WARNING for a climb to WARNING, INFO for a way down."""
    if level >= Level.CRITICAL:
        return logging.ERROR
    return logging.WARNING if level > previous else logging.INFO


def _details(state: State) -> str:
    """What the level-change line adds after the levels: the verdict's reason without the
    level it starts with (``"level OK -> WARNING: memory.percent …"``, not ``"WARNING:
    WARNING: …"``; ``"level WARNING -> OK"``, not ``"… OK: OK"``)."""
    reason = state.verdict.reason
    name = state.level.name
    if reason.startswith(name):
        return reason[len(name) :]
    return f": {reason}"


def _unsubscriber(subscribers: list[Subscriber], callback: Subscriber) -> Callable[[], None]:
    """The function that takes *callback* out of *subscribers* (again: nothing)."""

    def unsubscribe() -> None:
        try:
            subscribers.remove(callback)
        except ValueError:
            pass

    return unsubscribe


class _Failures:
    """What is failing (``memo``, decided by ``_decide.FailureMemo``), logged once per kind
    (``FaultLog``) at the monitor's clock."""

    __slots__ = ("_clock", "_log", "memo")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._log = FaultLog(_logger)  # its lines never raise into the loops
        self.memo = _decide.FailureMemo()

    def failed(self, source: str, error: BaseException) -> None:
        if self.memo.failed(source, error, self._clock()):
            self._log.failed(source, error)

    def worked(self, source: str) -> None:
        if self.memo.worked(source):
            self._log.recovered(source)
