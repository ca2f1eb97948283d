"""Threshold: one snapshot field against a figure, sustained, with hysteresis and cooldown."""

from __future__ import annotations

import operator

from resguard._errors import InvalidType, InvalidValue
from resguard.rules._culprits import culprit_resource, culprits
from resguard.rules._figures import (
    OPS,
    check_can_fire,
    check_clear_side,
    check_metric,
    duration,
    explain,
    metric_kind,
    parse_bound,
    rule_level,
    rule_name,
)
from resguard.rules._sustain import Sustain, firing_breach
from resguard.rules._verdict import Breach, Level
from resguard.snapshot import Snapshot
from resguard.units import shown

__all__ = ["Threshold"]


class Threshold:
    """``metric op value``, sustained for ``for_``, cleared at ``clear``, then ``cooldown``.

    ``Threshold("memory.percent", ">=", 85, level=Level.WARNING, clear=80)`` fires when
    memory reaches 85 % of the effective limit and stays firing until it drops below 80 %.
    A breach of a memory or CPU metric names its culprits (:func:`~resguard.rules.culprits`:
    the top 3 processes by RSS or CPU, when the snapshot has the process table).
    See the module docstring for the exact semantics and the forms of *value*.
    """

    __slots__ = (
        "_blames",
        "_clear",
        "_compare",
        "_fixed_clear",
        "_fixed_value",
        "_get",
        "_value",
        "clear",
        "cooldown_s",
        "for_s",
        "kind",
        "level",
        "metric",
        "name",
        "op",
        "reads",
        "value",
    )

    def __init__(
        self,
        metric: str,
        op: str,
        value: float | str,
        level: Level | str = Level.WARNING,
        for_: float | str = 0,
        clear: float | str | None = None,
        cooldown: float | str = 0,
        name: str | None = None,
    ) -> None:
        self.metric = check_metric(metric)
        expected = ", ".join(repr(o) for o in OPS)
        if not isinstance(op, str):
            raise InvalidType(f"op={shown(op)} is not a comparison; expected one of {expected}")
        if op not in OPS:
            raise InvalidValue(f"op={shown(op)} is not a comparison; expected one of {expected}")
        self.op = op
        self.kind = metric_kind(metric)
        self._value = parse_bound(value, self.kind, metric, "value")
        self._clear = (
            self._value if clear is None else parse_bound(clear, self.kind, metric, "clear")
        )
        check_clear_side(op, self._value, self._clear, (value, clear))
        check_can_fire(metric, self.kind, op, self._value, value)
        self.value, self.clear = value, (value if clear is None else clear)
        self.level = rule_level(level)
        self.for_s = duration(for_, "for_")
        self.cooldown_s = duration(cooldown, "cooldown")
        self._compare = OPS[op]
        self._get = operator.attrgetter(metric)  # precompiled; step() maps a None part to None
        self._fixed_value, self._fixed_clear = self._value.fixed, self._clear.fixed
        self.name = rule_name(name, f"{metric} {op} {self._value.text}")
        self._blames = culprit_resource(metric) is not None
        self.reads: tuple[str, ...] = (
            metric,
            *dict.fromkeys(
                bound.limit_path for bound in (self._value, self._clear) if bound.limit_path
            ),
        )

    def __repr__(self) -> str:
        return (
            f"Threshold({self.metric!r}, {self.op!r}, {shown(self.value)}, "
            f"level={self.level!r}, for_={self.for_s!r}, clear={shown(self.clear)}, "
            f"cooldown={self.cooldown_s!r}, name={self.name!r})"
        )

    def new_state(self) -> Sustain:
        return Sustain(self.for_s, self.cooldown_s)

    def step(self, snapshot: Snapshot, state: Sustain, now: float) -> Breach | None:
        try:
            measured = self._get(snapshot)
        except AttributeError:  # a part on the way is None (no PSI, no containers)
            measured = None
        fixed = self._fixed_value
        threshold = (
            fixed if fixed is not None or measured is None else self._value.resolve(snapshot)
        )
        clear = self._fixed_clear
        if clear is None and measured is not None and threshold is not None:
            clear = self._clear.resolve(snapshot)
        if measured is None or threshold is None or clear is None:
            if state.pending_since is None and state.firing_since is None:
                return None
            if any(explain(snapshot, path) for path in self.reads):
                return self._held(snapshot, state, now)  # unknown: no evidence either way
            trigger = hold = False
            measured, threshold = 0.0, 0.0
        else:
            trigger = self._compare(measured, threshold)
            if not trigger and state.firing_since is None:
                state.pending_since = None
                return None  # the common case: idle and staying idle
            hold = trigger or self._compare(measured, clear)
        if not state.advance(now, trigger, hold):
            return None
        state.last_value, state.last_threshold = float(measured), float(threshold)
        return self._held(snapshot, state, now)

    def _held(self, snapshot: Snapshot, state: Sustain, now: float) -> Breach | None:
        """A firing rule's breach from its last known figures (at an unknown sample too)."""
        return firing_breach(
            self,
            state,
            snapshot,
            now,
            self.op,
            self.kind,
            (lambda since: culprits(snapshot, self.metric, since=since)) if self._blames else None,
        )
