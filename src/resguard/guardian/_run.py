"""The guardian's loop: observe the machine through a :class:`~resguard.Monitor`, decide
with the :class:`Planner`, act through the :class:`Effects`, journal every outcome.

The monitor judges the machine, not the guardian's own cgroup: on Linux its sampler reads
the root memory cgroup (the host's memory, where Ollama and the browser live), elsewhere
psutil's host-wide figures. A failing effect (a bug, a process gone) is journalled as
``failed: ...`` and never stops the loop.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import partial

from resguard._modules.log import get_logger
from resguard.guardian._actions import ActionSpec, Effects, Outcome
from resguard.guardian._config import GuardianConfig
from resguard.guardian._journal import Journal
from resguard.guardian._plan import UNDONE_ON_CLEAR, Planner, matches
from resguard.monitor import Monitor, State
from resguard.rules import Breach, Verdict
from resguard.snapshot import Sampler, Snapshot, default_backend

__all__ = ["Guardian", "host_sampler"]

_logger = get_logger("resguard.guardian")
_CGROUP_ROOT = "/sys/fs/cgroup"
_ONCE = (
    "--once does not pause or renice: it exits at once and would undo it as it exits "
    "(run the guardian, or use dry-run to see what it would do)"
)


def host_sampler() -> Sampler:
    """A sampler of the whole machine's memory: the root memory cgroup on Linux (v2's
    ``/sys/fs/cgroup``, v1's ``/sys/fs/cgroup/memory``), the default sampler (host-wide)
    where there is none or the backend is psutil."""
    if default_backend() == "linux":
        v2 = os.path.exists(os.path.join(_CGROUP_ROOT, "cgroup.controllers"))
        root = _CGROUP_ROOT if v2 else os.path.join(_CGROUP_ROOT, "memory")
        try:
            return Sampler(cgroup=root)
        except Exception as error:  # a container without its cgroup tree: its own view
            _logger.info("the host's memory cgroup %s cannot be read (%s)", root, error)
    return Sampler()


class Guardian:
    """One guardian: ``tick()`` observes, decides and acts once; ``run(stop)`` ticks every
    ``interval_s`` until *stop* is set; ``close()`` resumes what it paused.

    *effects* defaults to this machine's (signals through pidfds, the Ollama of
    ``$OLLAMA_HOST``, desktop notifications); *dry_run* (default the configuration's)
    makes every effect say what it would do.
    *monitor* defaults to one with the configuration's policy over :func:`host_sampler`,
    sampling the process table whatever the rules read (breaches name their culprits from
    it, process actions pick their targets in it) and not reclaiming (the guardian acts
    only through its actions).
    """

    def __init__(
        self,
        config: GuardianConfig,
        effects: Effects | None = None,
        *,
        journal: Journal | None = None,
        monitor: Monitor | None = None,
        dry_run: bool | None = None,
        once: bool = False,
    ) -> None:
        self.config = config
        self.effects = effects if effects is not None else _machine_effects()
        self.journal = journal if journal is not None else Journal(config.journal)
        self.dry_run = config.dry_run if dry_run is None else dry_run
        self.monitor = monitor if monitor is not None else _monitor_for(config)
        self.planner = Planner(config.actions)
        self.ticks = 0
        self._closed = False
        self.once = once
        self._nothing: dict[tuple[int, str], str] = {}  # the last "found nothing" journalled
        self._skipped: dict[tuple[int, str], set[tuple[int | None, str]]] = {}

    def observe(self) -> State:
        """Sample the process table and the machine and judge them (no action)."""
        self.monitor.sample_slow()
        return self.monitor.sample_now()

    def act(self, state: State) -> Verdict:
        """Decide on *state* and carry the decision out; returns its verdict."""
        self.ticks += 1
        try:
            due = self.effects.pending()
        except Exception as error:  # an effect's bug must not stop the guardian
            _logger.warning("the guardian could not finish its pending actions: %s", error)
            due = []
        for rule, outcome in due:
            self.journal.write(rule, outcome)
        decision = self.planner.step(state.verdict, state.snapshot.monotonic)
        for spec, breach in decision.fire:
            early = (spec.index, breach.rule) in decision.early
            act = partial(self._act, spec, breach, state.snapshot)
            outcomes = self._do(spec, breach.rule, act, quiet_nothing=early)
            if all(_found_nothing(outcome) for outcome in outcomes):
                self.planner.found_nothing(spec, breach.rule)
        for spec in decision.clear:
            self._do(spec, spec.when, partial(self.effects.clear, spec, dry_run=self.dry_run))
        holding = {
            (spec.index, breach.rule)
            for spec in self.planner.actions
            for breach in state.verdict.breaches
            if matches(spec, breach)
        }
        for key in [key for key in self._skipped if key not in holding]:
            del self._skipped[key]  # a new episode says its skips again
        return state.verdict

    def tick(self) -> Verdict:
        """``act(observe())``."""
        return self.act(self.observe())

    def recover(self) -> None:
        """Resume (journalled) what an earlier guardian paused and never resumed."""
        try:
            outcomes = self.effects.recover()
        except Exception as error:  # a bug in the effects: said, not raised at start
            _logger.warning("the guardian could not resume what was left paused: %s", error)
            return
        for outcome in outcomes:
            self.journal.write(None, outcome)

    def run(self, stop: threading.Event) -> None:
        """:meth:`recover`, tick every ``config.interval_s`` until *stop* is set, then
        :meth:`close`."""
        try:
            self.recover()
            while not stop.is_set():
                self.tick()
                stop.wait(self.config.interval_s)
        finally:
            self.close()

    def close(self) -> None:
        """Resume every process still paused (journalled); once."""
        if self._closed:
            return
        self._closed = True
        try:
            outcomes = self.effects.close()
        except Exception as error:  # a bug in the effects: said, not raised at shutdown
            _logger.warning("the guardian could not resume what it paused: %s", error)
            return
        for outcome in outcomes:
            self.journal.write(None, outcome)

    def _act(self, spec: ActionSpec, breach: Breach, snapshot: Snapshot) -> list[Outcome]:
        if self.once and spec.do in UNDONE_ON_CLEAR and not self.dry_run:
            return [Outcome(spec.do, None, False, "refused", _ONCE)]
        return self.effects.act(spec, breach, snapshot, dry_run=self.dry_run)

    def _do(
        self,
        spec: ActionSpec,
        rule: str,
        call: Callable[[], list[Outcome]],
        *,
        quiet_nothing: bool = False,
    ) -> list[Outcome]:
        """*call*'s outcomes, journalled (but a found-nothing when *quiet_nothing*: an
        early firing that found nothing, see :class:`Decision`)."""
        try:
            outcomes = call()
        except Exception as error:  # an effect's bug must not stop the guardian
            outcomes = [
                Outcome(spec.do, None, self.dry_run, "failed", f"{type(error).__name__}: {error}")
            ]
        key = (spec.index, rule)
        skipped = self._skipped.setdefault(key, set())
        now_skipped = set()
        for outcome in outcomes:
            if _found_nothing(outcome):
                if quiet_nothing or self._nothing.get(key) == outcome.result:
                    continue  # said once; a culprit that never matches is not news each tick
                self._nothing[key] = outcome.result
            else:
                self._nothing.pop(key, None)
            if outcome.status == "skipped" and outcome.target is not None:
                said = (outcome.target.pid, outcome.result)
                now_skipped.add(said)
                if said in skipped:
                    continue  # the same process skipped for the same reason: said once
            self.journal.write(rule, outcome)
        self._skipped[key] = now_skipped
        return outcomes


def _found_nothing(outcome: Outcome) -> bool:
    """An outcome that touched nothing: skipped before any process or model was chosen
    (no culprit matches ``match``, no idle model). A refusal is not one: the action is
    configured so that it can never act, and its cooldown holds it back."""
    return outcome.target is None and outcome.status == "skipped"


def _machine_effects() -> Effects:
    from resguard.guardian._effects import MachineEffects
    from resguard.guardian._paused import default_paused_path

    return MachineEffects(paused_dir=default_paused_path())


def _monitor_for(config: GuardianConfig) -> Monitor:
    return Monitor(
        interval=config.interval_s,
        policy=config.policy(),
        sampler=host_sampler(),
        processes=True,  # culprits and process actions need the table whatever the rules read
        reclaim=False,
        adaptive=False,
        psi_trigger=False,
    )
