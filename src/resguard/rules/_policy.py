"""Policy: rules judged together into a verdict, each rule's state kept in a PolicyState."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.clock import Clock, monotonic
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard.rules._edges import rules_edges_bytes
from resguard.rules._figures import compile_getter, explain
from resguard.rules._verdict import OK_VERDICT, Breach, Level, Rule, Verdict, finite, is_breach
from resguard.snapshot import MemoryInfo, Snapshot
from resguard.units import shown

__all__ = ["Policy", "PolicyState"]

_logger = get_logger("resguard")

_RELOG_AFTER_S: Final = 60.0  # a flapping rule's failure is logged again after this long


def _check_now(now: object) -> None:
    """Refuse a *now* that is not a finite number of seconds (an int is one)."""
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise InvalidType(f"now={shown(now)} is not a monotonic time in seconds")
    if not finite(now):
        raise InvalidValue(f"now={shown(now)} is not a finite monotonic time in seconds")


class PolicyState:
    """Every rule's memory of the past for one :class:`Policy`; one per evaluator thread.

    ``rule_states[i]`` belongs to ``policy.rules[i]``.
    """

    __slots__ = ("policy", "rule_states")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.rule_states: tuple[Any, ...] = tuple(rule.new_state() for rule in policy.rules)

    def __repr__(self) -> str:
        return f"PolicyState({len(self.rule_states)} rules)"


class Policy:
    """A set of rules judged together: ``policy.evaluate(snapshot) -> Verdict``.

    ``clock`` (monotonic seconds) only paces the log of a failing rule (a rule failing on
    every other sample is logged again after a minute); judging uses ``now`` alone.

    Evaluation is pure apart from the :class:`PolicyState` passed in (or, when none is
    passed, the policy's own ``state``), and ``now`` defaults to ``snapshot.monotonic``. A
    Monitor keeps one ``state = policy.new_state()`` and calls
    ``policy.evaluate(snapshot, state)`` for each snapshot. A state is not thread-safe: use
    one per thread.
    """

    __slots__ = (
        "_edges",
        "_failing",
        "_faults",
        "_logged_at",
        "_reads",
        "_steps",
        "_unjudged",
        "clock",
        "rules",
        "state",
    )

    def __init__(self, rules: Iterable[Rule], *, clock: Clock = monotonic) -> None:
        if isinstance(rules, (str, bytes)) or not isinstance(rules, Iterable):  # type: ignore[unreachable]
            raise InvalidType(f"{shown(rules)} is not a list of rules")
        checked = []
        for rule in rules:
            if not isinstance(rule, Rule):
                raise InvalidType(
                    f"{shown(rule)} is not a rule; expected a Threshold, "
                    "ProcessThreshold, ProcessCount, ContainerThreshold, "
                    "LeakDetector, TimeToLimit or an object with name, level, "
                    "new_state() and step()"
                )
            checked.append(rule)
        self.rules: tuple[Rule, ...] = tuple(checked)
        self._steps = tuple(enumerate(rule.step for rule in self.rules))  # (index, step)
        reads: dict[str, Callable[[Snapshot], Any]] = {}
        for rule in self.rules:
            paths = getattr(rule, "reads", ())
            if isinstance(paths, str) or not isinstance(paths, Iterable):
                raise InvalidType(
                    f"{shown(rule)}.reads={shown(paths)} is not a sequence of metric paths"
                )
            for path in paths:
                if not isinstance(path, str):
                    raise InvalidType(f"{shown(rule)}.reads has {shown(path)}, not a metric path")
                reads.setdefault(path, compile_getter(path))
        self._reads = tuple(reads.items())
        # the heat rules say when a row of their table holds a NaN or infinite figure
        self._unjudged: tuple[Callable[[Snapshot], str | None], ...] = tuple(
            check for rule in self.rules if callable(check := getattr(rule, "_unjudged", None))
        )
        if not callable(clock):
            raise InvalidType(
                f"clock={shown(clock)} is not a clock; expected a function returning "
                "monotonic seconds, such as time.monotonic"
            )
        self.clock = clock
        self._faults = FaultLog(_logger)
        self._failing: dict[int, str] = {}  # rule index -> kind of error, logged once
        self._logged_at: dict[tuple[int, str], float] = {}  # (index, kind) -> logged when
        # the last memory edges: (rules, limit, edges), replaced whole (threads share it)
        self._edges: tuple[tuple[Rule, ...], int | None, tuple[int, ...]] | None = None
        self.state = self.new_state()

    def __repr__(self) -> str:
        return f"Policy([{', '.join(repr(rule) for rule in self.rules)}])"

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def needs(self, field: str) -> bool:
        """Whether a rule reads the snapshot field *field* or a path under it (its
        ``reads``): ``policy.needs("processes")``, ``policy.needs("heat")``. A Monitor
        samples the slow sources (the process table, heat) only for a policy that needs
        them; a custom rule asks for one by naming it in ``reads``."""
        if not isinstance(field, str):
            raise InvalidType(f"field={shown(field)} is not a snapshot field name")
        under = field + "."
        return any(path == field or path.startswith(under) for path, _ in self._reads)

    def memory_edges_bytes(self, memory: MemoryInfo) -> tuple[int, ...]:
        """Every ``memory.used`` value (bytes, sorted, unique, from 0 to ``memory.limit``)
        at which one of the rules changes its mind (a memory threshold's value and clear
        value, resolved against *memory*'s limit; see :func:`resguard.rules.memory_edges_bytes`).
        A Monitor polls faster near them and arms the kernel's thresholds there. The answer
        is kept until the limit (or ``rules``) changes: a call on every tick costs a lookup."""
        if type(memory) is not MemoryInfo and not isinstance(memory, MemoryInfo):
            raise InvalidType(f"memory={shown(memory)} is not a resguard.snapshot.MemoryInfo")
        limit = memory.limit
        last = self._edges
        if last is not None and last[1] == limit and last[0] is self.rules:
            return last[2]
        edges = rules_edges_bytes(self.rules, memory)
        self._edges = (self.rules, limit, edges)
        return edges

    def new_state(self) -> PolicyState:
        """A fresh state: no rule pending, firing or cooling down, no history."""
        return PolicyState(self)

    def reset(self) -> None:
        """Forget the history kept in the policy's own ``state``."""
        self.state = self.new_state()

    def evaluate(
        self, snapshot: Snapshot, state: PolicyState | None = None, now: float | None = None
    ) -> Verdict:
        """Judge *snapshot* at monotonic time *now*; advance *state* by one sample."""
        if not isinstance(snapshot, Snapshot):
            raise InvalidType(f"{shown(snapshot)} is not a resguard.Snapshot")
        if state is None:
            state = self.state
        elif not isinstance(state, PolicyState):
            raise InvalidType(
                f"state={shown(state)} is not a PolicyState; make it with policy.new_state()"
            )
        elif state.policy is not self:
            raise InvalidValue(
                "this PolicyState belongs to another policy; make it with policy.new_state()"
            )
        if now is None:
            now = snapshot.monotonic
        elif type(now) is not float or not -math.inf < now < math.inf:  # a finite float: fast
            _check_now(now)
        breaches: list[Breach] | None = None
        failed: dict[int, str] | None = None  # rule index -> reason
        # the states were made for these rules (checked above): same length, no strict zip
        for (index, step), rule_state in zip(self._steps, state.rule_states, strict=False):
            try:
                breach = step(snapshot, rule_state, now)
            except Exception as error:  # a broken rule must not silence the others
                failed = {} if failed is None else failed
                failed[index] = self._rule_failed(index, error)
                continue
            if breach is not None:
                if not (type(breach) is Breach and type(breach.level) is Level) and not is_breach(
                    breach
                ):
                    # garbage from a custom rule is that rule failing, not the policy
                    failed = {} if failed is None else failed
                    failed[index] = self._rule_failed(
                        index,
                        InvalidValue(
                            f"step() returned {shown(breach)[:80]}; expected a Breach or None"
                        ),
                    )
                    continue
                if breaches is None:
                    breaches = [breach]
                else:
                    breaches.append(breach)
        if self._failing:
            self._recover(failed)
        unknown = self._unknown(snapshot) if snapshot.faults else ()
        if self._unjudged:
            unknown = (*unknown, *_unjudged(self._unjudged, snapshot))
        if failed:
            unknown = (*unknown, *failed.values())
        if breaches is None:
            return Verdict(Level.OK, (), unknown) if unknown else OK_VERDICT
        if len(breaches) == 1:  # the common firing case: no generator for the max
            return Verdict(breaches[0].level, (breaches[0],), unknown)
        return Verdict(max(breach.level for breach in breaches), tuple(breaches), unknown)

    def _unknown(self, snapshot: Snapshot) -> tuple[str, ...]:
        """The reasons the rules' metrics are unknown in *snapshot* (one per metric)."""
        reasons: dict[str, None] = {}
        for path, get in self._reads:
            if get(snapshot) is None:
                reason = explain(snapshot, path)
                if reason is not None:
                    reasons[reason] = None
        return tuple(reasons)

    def _rule_failed(self, index: int, error: Exception) -> str:
        """Log a failing rule once per kind of error; return the reason for the verdict."""
        rule = self.rules[index]
        kind = type(error).__name__
        reason = f"rule {shown(rule.name)} failed: {kind}: {error}"
        if self._failing.get(index) != kind:
            self._failing[index] = kind
            # a rule failing on every other sample is one warning a minute, not two a flap
            now = self.clock()
            if now - self._logged_at.get((index, kind), -math.inf) >= _RELOG_AFTER_S:
                self._logged_at[(index, kind)] = now
                self._faults.failed(f"rule {shown(rule.name)}", f"{kind}: {error}")
        return reason

    def _recover(self, failed: dict[int, str] | None) -> None:
        """Log once for each rule that failed before and worked this time."""
        for index in list(self._failing):
            if (failed is None or index not in failed) and self._failing.pop(
                index, None
            ) is not None:  # pop: states in other threads share this
                self._faults.recovered(f"rule {self.rules[index].name!r}")


def _unjudged(checks: Iterable[Callable[[Snapshot], str | None]], snapshot: Snapshot) -> list[str]:
    """The heat rules' reasons a row of *snapshot* could not be judged (a NaN or infinite
    figure), once each; a check that fails on a record it cannot read says nothing."""
    reasons: dict[str, None] = {}
    for check in checks:
        try:
            reason = check(snapshot)
        except Exception:  # a garbled hand-built record: the rule's own step reports it
            continue
        if reason:
            reasons[reason] = None
    return list(reasons)
