"""The judge layer: rules over snapshots, combined into a :class:`Policy` that yields a
:class:`Verdict` (OK, WARNING or CRITICAL plus the breaches that decided it).

Rules
    :class:`Threshold` compares one snapshot field, named by its dotted path
    (``"memory.percent"``, ``"pressure.memory.some.avg10"``, ``"process.rss"``), with a
    value; :class:`ProcessThreshold` and :class:`ProcessCount` judge the process table;
    :class:`LeakDetector` and :class:`TimeToLimit` judge a metric's trend.

Semantics of a threshold (``op`` is ``>``, ``>=``, ``<`` or ``<=``)
    *trigger*: ``metric op value``. *hold*: ``metric op clear`` (``clear`` defaults to
    ``value``; for ``>``/``>=`` it must not be above ``value``, for ``<``/``<=`` not below).

    * An idle rule starts *pending* at the first sample where *trigger* holds, and stays
      pending while *trigger* keeps holding; any sample where it does not resets it.
    * A pending rule *fires* once it has been pending for ``for_`` seconds (``for_=0``: at
      once) and its cooldown has run out.
    * A firing rule keeps firing while *hold* holds (hysteresis: a metric hovering around
      ``value`` does not flap), and clears at the first sample where it does not; clearing
      starts the cooldown: the rule cannot fire again for ``cooldown`` seconds.
    * A metric that is ``None`` in a snapshot because the machine does not have it (no PSI
      on this kernel, no containers sampled) counts as "condition false": the rule is
      inactive and never an error.
    * A metric that is ``None`` because a source could not be read (a :class:`Fault` in
      ``snapshot.faults`` covers it, or the limit a percentage resolves against) is
      *unknown*: the rule cannot judge, and the verdict lists it in ``Verdict.unknown`` with
      the reason. An unknown sample is no evidence either way, so it changes nothing: a
      firing rule **keeps firing** (its breach repeats the last measured value, ``held_s``
      keeps growing), a pending rule stays pending without firing, an idle rule stays idle.
      A demanding user does not want a CRITICAL to flap to OK because ``/proc/meminfo`` could
      not be read for one tick; the rule clears on the first *known* sample where it no
      longer holds.
    * A rule whose ``step`` raises (a bug in a custom rule) does not stop the others: the
      verdict lists it in ``Verdict.unknown`` and the error is logged once per kind.

Values and units
    For a *percent* metric (``*.percent``, ``*_percent``, PSI ``avg10``/``avg60``/``avg300``)
    ``85``, ``"85"`` and ``"85%"`` all mean 85 percent. For a *byte* metric (``total``,
    ``limit``, ``used``, ``available``, ``free``, ``rss``, ``vms``, ``uss``,
    ``children_rss``) a value is a size (``"2GiB"``, ``"500MB"``, a number of bytes) or a
    percentage of the effective memory limit ``memory.limit`` of the snapshot being judged
    (``"85%"``; for ``swap.*`` of ``swap.total``). Other metrics (counts, seconds, load)
    take plain numbers. A percentage that cannot exceed 100 (memory, swap and host CPU
    percent, PSI, a container's share of its limit) rejects a figure above 100, and a
    threshold that can never fire (``> 100`` of such a percentage, ``< 0``) is rejected.
    Every bad argument raises :class:`~resguard.InvalidValue` or
    :class:`~resguard.InvalidType` quoting it as passed.

State and time
    Rules keep no state themselves: a :class:`PolicyState` (from :meth:`Policy.new_state`)
    holds every rule's memory of the past, and ``now`` (monotonic seconds, default
    ``snapshot.monotonic``) is passed in, so tests inject time instead of sleeping.
    A metric named wrongly fails when the rule is built (:class:`~resguard.UnknownMetric`
    with close matches), never at evaluation.
"""

from __future__ import annotations

import bisect
import collections
import enum
import math
import operator
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Final, Protocol, runtime_checkable

import attrs

from resguard._errors import InvalidType, InvalidValue, UnknownMetric
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard._modules.render import ValueMixin, records_table
from resguard.rules._sustain import Sustain
from resguard.snapshot import ProcessInfo, Snapshot, metric_paths
from resguard.units import (
    _PLAIN_NUMBER,
    format_bytes,
    format_duration,
    named,
    parse_bytes,
    parse_duration,
    shown,
)

__all__ = [
    "Breach",
    "ContainerThreshold",
    "LeakDetector",
    "Level",
    "Offender",
    "Policy",
    "PolicyState",
    "ProcessCount",
    "ProcessThreshold",
    "Rule",
    "Sustain",
    "Threshold",
    "TimeToLimit",
    "Verdict",
]

_logger = get_logger("resguard")


class Level(enum.IntEnum):
    """How bad things are; a verdict's level is the highest level among its breaches."""

    OK = 0
    WARNING = 1
    CRITICAL = 2


# --------------------------------------------------------------------------- values ---


@attrs.frozen(slots=True)
class Offender(ValueMixin):
    """A process (or container) named by a table breach: its value (CPU percent, RSS bytes,
    percent of a container's limit) and since when (monotonic seconds) it has been above
    the threshold. ``pid`` is ``None`` and ``id`` the container id for containers."""

    pid: int | None
    name: str
    value: float
    since: float
    id: str | None = None

    @property
    def label(self) -> str:
        """``"1234 python"`` for a process, ``"3f2a1b9c0d4e postgres"`` for a container."""
        return f"{self.pid if self.pid is not None else (self.id or '')[:12]} {self.name}"


@attrs.frozen(slots=True)
class Breach(ValueMixin):
    """One rule that fires.

    ``rule`` is the rule's name, ``metric`` the field it judges, ``value`` the measured
    figure (for a leak the estimated growth over the window, for a time-to-limit the
    estimated seconds left, for a process count the number of processes), ``threshold``
    the figure it crossed (in the same unit, ``unit`` being ``"bytes"``, ``"percent"``,
    ``"seconds"``, ``"count"`` or ``""``). ``since``/``since_wall`` tell since when the
    condition has held (monotonic and epoch seconds), ``held_s`` for how long.
    """

    rule: str
    metric: str
    op: str
    value: float
    threshold: float
    level: Level
    since: float
    since_wall: float
    held_s: float
    unit: str = ""
    offenders: tuple[Offender, ...] = ()
    estimate_s: float | None = None

    @property
    def message(self) -> str:
        """A one-line description for logs and the CLI."""
        text = f"{self.rule}: {_format_value(self.value, self.unit)}"
        if self.offenders:
            shown = ", ".join(
                f"{o.label} {_format_value(o.value, self.unit)}" for o in self.offenders[:3]
            )
            more = len(self.offenders) - 3
            text += f" ({shown}{f', +{more} more' if more > 0 else ''})"
        if self.held_s >= 1:
            text += f" for {_format_value(self.held_s, 'seconds')}"
        return text


def _format_value(value: float, unit: str) -> str:
    """*value* in *unit* for a message; never raises (a NaN or infinite figure a custom
    rule or a hostile source produced is shown as it is, not an error in a log line)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return shown(value)
    if not _finite(value):
        return "never" if unit == "seconds" and value > 0 else f"{shown(value)}"
    if unit == "bytes":
        return format_bytes(value)
    if unit == "percent":
        return f"{value:.1f}%"
    if unit == "seconds":
        return "never" if math.isinf(value) else format_duration(max(value, 0.0))
    if unit == "count":
        return f"{value:.0f}"
    return f"{value:g}"


@attrs.frozen(slots=True)
class Verdict(ValueMixin):
    """The judgement of one snapshot: the highest breach level and the breaches.

    ``unknown`` lists what the policy could not judge, one reason each
    (``"memory.percent: /proc/meminfo empty"``): a rule's metric (or the limit its
    percentage resolves against) was unknown because a source could not be read, or a
    rule failed. ``level`` is the level of what *could* be judged; ``known`` tells whether
    that was everything.
    """

    level: Level
    breaches: tuple[Breach, ...] = ()
    unknown: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no rule fires (see ``known`` for whether every rule could judge)."""
        return self.level == Level.OK

    @property
    def known(self) -> bool:
        """True when every rule could judge (``unknown`` is empty)."""
        return not self.unknown

    @property
    def reason(self) -> str:
        """A short text: ``"OK"`` or the level and the breaches, the worst first, then what
        is unknown: ``"OK (unknown: memory.percent: /proc/meminfo empty)"``."""
        if not self.breaches:
            text = "OK"
        else:
            worst = sorted(self.breaches, key=lambda breach: -breach.level)
            text = f"{self.level.name}: " + "; ".join(breach.message for breach in worst)
        if self.unknown:
            text += f" (unknown: {'; '.join(self.unknown)})"
        return text

    def _repr_html_(self) -> str:
        table = records_table(self.breaches, ("rule", "level", "value", "threshold", "held_s"))
        unknown = "".join(f"<p>unknown: {_html_escape(item)}</p>" for item in self.unknown)
        return f"<p><b>{self.level.name}</b></p>" + (table if self.breaches else "") + unknown


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)


OK_VERDICT: Final = Verdict(Level.OK, ())


# ------------------------------------------------------------------- rule protocol ---


@runtime_checkable
class Rule(Protocol):
    """What a policy needs from a rule; write your own by providing these four members.

    ``step`` judges one snapshot at monotonic time *now* given the rule's own *state*
    (made by ``new_state``, mutated by ``step`` only) and returns a breach or ``None``.
    A rule may also have ``reads``, the snapshot paths it judges: when one of them is
    ``None`` because of a fault, the verdict lists it in ``Verdict.unknown``.
    """

    name: str
    level: Level

    def new_state(self) -> Any: ...

    def step(self, snapshot: Snapshot, state: Any, now: float) -> Breach | None: ...


# --------------------------------------------------------------------- validation ---

_BYTE_LEAVES: Final = frozenset(
    {"total", "limit", "used", "available", "free", "rss", "vms", "uss", "children_rss"}
)
_PSI_LEAVES: Final = frozenset({"avg10", "avg60", "avg300"})
_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_paths_cache: dict[str, Any] = {}


def _known_paths() -> dict[str, Any]:
    if not _paths_cache:
        _paths_cache.update(metric_paths())
    return _paths_cache


def _check_metric(metric: object) -> str:
    """Return *metric* if it is a numeric snapshot path, else raise naming close matches."""
    if not isinstance(metric, str):
        raise InvalidType(
            f"{shown(metric)} is not a metric name; expected a dotted path such as 'memory.percent'"
        )
    paths = _known_paths()
    if metric not in paths:
        import difflib  # only on this error path: keeps `import resguard` light

        close = difflib.get_close_matches(metric, paths, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownMetric(
            f"unknown metric {shown(metric)}{hint} "
            f"(resguard.snapshot.metric_paths() lists them all)"
        )
    return metric


def _metric_kind(metric: str) -> str:
    leaf = metric.rsplit(".", 1)[-1]
    if leaf in _BYTE_LEAVES:
        return "bytes"
    if leaf.endswith("percent") or leaf in _PSI_LEAVES:
        return "percent"
    return ""


def compile_getter(metric: str) -> Callable[[Snapshot], Any]:
    """A fast reader of a dotted path; ``None`` when a part on the way is ``None``."""
    get = operator.attrgetter(metric)

    def getter(snapshot: Snapshot) -> Any:
        try:
            return get(snapshot)
        except AttributeError:  # e.g. pressure.memory is None: no PSI on this kernel
            return None

    return getter


def _finite(number: float) -> bool:
    """True for a number inside float range that is not NaN or infinite (big ints too)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _level(value: object) -> Level:
    """A rule's level: WARNING or CRITICAL (a rule that fires at OK would say nothing)."""
    if isinstance(value, bool) or not isinstance(value, (Level, str, int)):
        raise InvalidType(
            f"level={shown(value)} is not a level; expected Level.WARNING, "
            f"Level.CRITICAL, 'warning' or 'critical'"
        )
    level: Level | None = None
    if isinstance(value, Level):
        level = value
    elif isinstance(value, str) and value.strip().upper() in Level.__members__:
        level = Level[value.strip().upper()]
    elif isinstance(value, int) and not isinstance(value, bool) and value in (1, 2):
        level = Level(value)
    if level is None or level == Level.OK:
        raise InvalidValue(
            f"level={shown(value)} is not a level a rule can fire at; expected "
            f"Level.WARNING, Level.CRITICAL, 'warning' or 'critical'"
        )
    return level


def _duration(value: object, what: str) -> float:
    return named(what, parse_duration, value)


def _name(name: object, default: str) -> str:
    """A rule's name: a string, or *default* for ``None``."""
    if name is None:
        return default
    if not isinstance(name, str):
        raise InvalidType(f"name={shown(name)} is not a rule name; expected a string or None")
    return name


def _plain_number(
    value: object, what: str, hint: str, typed: object = None, maximum: float | None = None
) -> float:
    """*value* (a number or numeric text) as a finite float from 0 to *maximum*; errors
    quote *typed* (default: *value*) as passed. Never ``OverflowError``: ``10**400`` and
    ``"1e999"`` are too large."""
    quoted = shown(value if typed is None else typed)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidType(f"{what}={quoted} is not a number; {hint}")
    number: int | float
    if isinstance(value, str):
        if not _PLAIN_NUMBER.fullmatch(value):
            raise InvalidValue(f"{what}={quoted} is not a number; {hint}")
        number = float(value)
    else:
        number = value
    if (isinstance(number, float) and math.isnan(number)) or number < 0:
        raise InvalidValue(f"{what}={quoted} is not a number of at least 0; {hint}")
    if maximum is not None and number > maximum:
        raise InvalidValue(f"{what}={quoted} is above {maximum:g}; {hint}")
    try:
        result = float(number)
    except OverflowError:
        result = math.inf
    if math.isinf(result):
        raise InvalidValue(f"{what}={quoted} is too large; {hint}")
    return result


def _percent_maximum(metric: str) -> float | None:
    """100 for percentages that cannot exceed it; ``None`` for CPU percent of a process
    (100 per core)."""
    return None if metric.endswith("cpu_percent") else 100.0


_DERIVED_SECTIONS: Final = frozenset({"memory", "swap"})  # percent, used... from each other


def _explain(snapshot: Snapshot, path: str) -> str | None:
    """Why *path* is unknown in *snapshot*: the fault covering it (or, for a derived figure
    such as ``memory.percent``, a fault in the same section), else ``None``."""
    faults = snapshot.faults
    if not faults:
        return None
    fault = snapshot.fault_for(path)
    if fault is None:
        section = path.split(".", 1)[0]
        if section not in _DERIVED_SECTIONS:
            return None
        fault = next((item for item in faults if item.field.split(".", 1)[0] == section), None)
        if fault is None:
            return None
    return f"{path}: {fault.source} {fault.kind}"


class _Bound:
    """A threshold figure: fixed, or a fraction of a limit read from each snapshot."""

    __slots__ = ("_limit", "fixed", "fraction", "limit_path", "text")

    def __init__(
        self, fixed: float | None, fraction: float = 0.0, limit_path: str = "", text: str = ""
    ) -> None:
        self.fixed, self.fraction, self.limit_path, self.text = fixed, fraction, limit_path, text
        self._limit = operator.attrgetter(limit_path) if limit_path else None

    def resolve(self, snapshot: Snapshot) -> float | None:
        """The figure for *snapshot*; ``None`` when the limit it is a share of is unknown."""
        if self.fixed is not None:
            return self.fixed
        assert self._limit is not None
        try:
            limit = self._limit(snapshot)
        except AttributeError:
            return None
        return None if limit is None else self.fraction * float(limit)


def _parse_bound(value: object, kind: str, metric: str, what: str) -> _Bound:
    """Read a threshold figure for a metric of *kind* (see the module docstring)."""
    percent_text = (
        value.strip()[:-1] if isinstance(value, str) and value.strip().endswith("%") else None
    )
    if kind == "percent":
        maximum = _percent_maximum(metric)
        hint = f"{metric} is a percentage: expected e.g. 85 or '85%'" + (
            " (at most 100)" if maximum is not None else ""
        )
        text = value if percent_text is None else percent_text
        number = _plain_number(text, what, hint, typed=value, maximum=maximum)
        return _Bound(number, text=f"{number:g}%")
    if kind == "bytes":
        if percent_text is not None:
            hint = "expected e.g. '85%' (of the effective memory limit)"
            share = _plain_number(percent_text, what, hint, typed=value)
            if share > 100:
                raise InvalidValue(f"{what}={shown(value)} is above 100%; {hint}")
            limit = "swap.total" if metric.startswith("swap.") else "memory.limit"
            return _Bound(None, share / 100, limit, text=f"{share:g}% of {limit}")
        try:
            size = parse_bytes(value)  # type: ignore[arg-type]
        except (InvalidValue, InvalidType) as error:
            raise type(error)(f"{what} for {metric}: {error}") from None
        return _Bound(float(size), text=format_bytes(size))
    hint = f"{metric} takes a plain number"
    number = _plain_number(value, what, hint)
    return _Bound(number, text=f"{number:g}")


def _check_clear_side(op: str, value: _Bound, clear: _Bound) -> None:
    if value.fixed is None or clear.fixed is None:
        if (value.fixed is None) != (clear.fixed is None) or value.limit_path != clear.limit_path:
            return  # mixed forms: checked at evaluation (hold is at least trigger)
        above, below = value.fraction, clear.fraction
    else:
        above, below = value.fixed, clear.fixed
    if op in (">", ">=") and below > above:
        raise InvalidValue(
            f"clear={shown(clear.text)} is above value={shown(value.text)}; "
            f"for {shown(op)} the clear level must be at or below the firing "
            f"level"
        )
    if op in ("<", "<=") and below < above:
        raise InvalidValue(
            f"clear={shown(clear.text)} is below value={shown(value.text)}; "
            f"for {shown(op)} the clear level must be at or above the firing "
            f"level"
        )


def _check_can_fire(metric: str, kind: str, op: str, value: _Bound, typed: object) -> None:
    """Reject a fixed threshold no measurement can cross (every metric is at least 0)."""
    fixed = value.fixed
    if fixed is None:
        return
    maximum = _percent_maximum(metric) if kind == "percent" else None
    if op == ">" and maximum is not None and fixed >= maximum:
        raise InvalidValue(
            f"{metric} > {shown(typed)} can never fire: {metric} is at most "
            f"{maximum:g}; use a lower value or '>='"
        )
    if op == "<" and fixed <= 0:
        raise InvalidValue(f"{metric} < {shown(typed)} can never fire: {metric} is at least 0")


# ------------------------------------------------------------------ sustain logic ---


Sustain.__module__ = __name__  # documented and shown as resguard.rules.Sustain
SustainState = Sustain  # the name before the machine was public


def _since_wall(snapshot: Snapshot, since: float) -> float:
    return snapshot.taken_at + (since - snapshot.monotonic)


# ---------------------------------------------------------------------- threshold ---


class Threshold:
    """``metric op value``, sustained for ``for_``, cleared at ``clear``, then ``cooldown``.

    ``Threshold("memory.percent", ">=", 85, level=Level.WARNING, clear=80)`` fires when
    memory reaches 85 % of the effective limit and stays firing until it drops below 80 %.
    See the module docstring for the exact semantics and the forms of *value*.
    """

    __slots__ = (
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
        self.metric = _check_metric(metric)
        expected = ", ".join(repr(o) for o in _OPS)
        if not isinstance(op, str):
            raise InvalidType(f"op={shown(op)} is not a comparison; expected one of {expected}")
        if op not in _OPS:
            raise InvalidValue(f"op={shown(op)} is not a comparison; expected one of {expected}")
        self.op = op
        self.kind = _metric_kind(metric)
        self._value = _parse_bound(value, self.kind, metric, "value")
        self._clear = (
            self._value if clear is None else _parse_bound(clear, self.kind, metric, "clear")
        )
        _check_clear_side(op, self._value, self._clear)
        _check_can_fire(metric, self.kind, op, self._value, value)
        self.value, self.clear = value, (value if clear is None else clear)
        self.level = _level(level)
        self.for_s = _duration(for_, "for_")
        self.cooldown_s = _duration(cooldown, "cooldown")
        self._compare = _OPS[op]
        self._get = operator.attrgetter(metric)  # precompiled; step() maps a None part to None
        self._fixed_value, self._fixed_clear = self._value.fixed, self._clear.fixed
        self.name = _name(name, f"{metric} {op} {self._value.text}")
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
            if any(_explain(snapshot, path) for path in self.reads):
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
        since = state.firing_since
        assert since is not None
        state.last_value, state.last_threshold = float(measured), float(threshold)
        return Breach(
            self.name,
            self.metric,
            self.op,
            float(measured),
            threshold,
            self.level,
            since,
            _since_wall(snapshot, since),
            now - since,
            self.kind,
        )

    def _held(self, snapshot: Snapshot, state: Sustain, now: float) -> Breach | None:
        """A firing rule's breach at an unknown sample: the last known figures, still held."""
        since = state.firing_since
        if since is None:
            return None
        return Breach(
            self.name,
            self.metric,
            self.op,
            state.last_value,
            state.last_threshold,
            self.level,
            since,
            _since_wall(snapshot, since),
            now - since,
            self.kind,
        )


# ----------------------------------------------------------------- process table ---

_PROCESS_FIELDS: Final = {"cpu_percent": "percent", "rss": "bytes"}
_MAX_PIDS: Final = 2**22  # PID_MAX_LIMIT on 64-bit Linux


def _process_bounds(
    rule: str,
    cpu_percent_above: float | str | None,
    rss_above: float | str | None,
    clear: float | str | None,
) -> tuple[str, _Bound, _Bound]:
    chosen = [
        (field, value)
        for field, value in (("cpu_percent", cpu_percent_above), ("rss", rss_above))
        if value is not None
    ]
    if len(chosen) != 1:
        raise InvalidValue(
            f"{rule} needs exactly one of cpu_percent_above= or rss_above= (got {len(chosen)})"
        )
    field, raw = chosen[0]
    kind = _PROCESS_FIELDS[field]
    value = _parse_bound(raw, kind, f"process {field}", f"{field}_above")
    cleared = value if clear is None else _parse_bound(clear, kind, f"process {field}", "clear")
    _check_clear_side(">", value, cleared)
    return field, value, cleared


class ProcessThreshold:
    """Any single process above a CPU percent (or RSS), sustained per process.

    ``ProcessThreshold(cpu_percent_above=100, for_="30s")`` fires when one process has used
    more than one full core for 30 s. Each process is tracked by its identity
    ``(pid, create_time)`` with the threshold semantics of the module docstring (per process
    pending, firing, and ``clear`` hysteresis; no cooldown). The breach names every firing
    process (:class:`Offender`). Inactive while ``snapshot.processes`` is ``None``; state is
    kept only for processes above ``clear`` in the latest table, so it stays bounded.
    ``rss_above`` takes a size or a percentage of ``memory.limit``.
    """

    __slots__ = (
        "_clear",
        "_get",
        "_value",
        "field",
        "for_s",
        "kind",
        "level",
        "metric",
        "name",
        "reads",
    )

    def __init__(
        self,
        *,
        cpu_percent_above: float | str | None = None,
        rss_above: float | str | None = None,
        for_: float | str = 0,
        clear: float | str | None = None,
        level: Level | str = Level.WARNING,
        name: str | None = None,
    ) -> None:
        self.field, self._value, self._clear = _process_bounds(
            "ProcessThreshold", cpu_percent_above, rss_above, clear
        )
        self.kind = _PROCESS_FIELDS[self.field]
        self.metric = f"processes.{self.field}"
        self._get = operator.attrgetter(self.field)
        self.for_s = _duration(for_, "for_")
        self.level = _level(level)
        self.name = _name(
            name,
            f"a process {self.field} > {self._value.text}"
            + (f" for {format_duration(self.for_s)}" if self.for_s else ""),
        )
        self.reads = _table_reads("processes", self._value)

    def __repr__(self) -> str:
        return f"ProcessThreshold({shown(self.name)}, level={shown(self.level)})"

    def new_state(self) -> dict[tuple[int, float], list[Any]]:
        """Per process identity: ``[pending_since, firing]``."""
        return {}

    def step(
        self, snapshot: Snapshot, state: dict[tuple[int, float], list[Any]], now: float
    ) -> Breach | None:
        processes = snapshot.processes
        if processes is None:
            if state:
                state.clear()
            return None
        threshold, clear = _table_bounds(self, snapshot)
        if threshold is None or clear is None:
            return None  # the limit a share resolves against is unknown: state kept as is
        get = self._get
        rows = (
            (get(process), (process.pid, process.create_time), process) for process in processes
        )
        offenders = _sustained_rows(
            rows,
            threshold,
            clear,
            state,
            now,
            self.for_s,
            lambda process, value, since: Offender(process.pid, process.name, value, since),
        )
        return _table_breach(self, snapshot, offenders, threshold, now)


def _table_reads(table: str, value: _Bound) -> tuple[str, ...]:
    return (table, value.limit_path) if value.limit_path else (table,)


def _table_bounds(rule: Any, snapshot: Snapshot) -> tuple[float | None, float | None]:
    """A table rule's (threshold, clear) for *snapshot*; ``None`` where a limit is unknown."""
    threshold, clear = rule._value.resolve(snapshot), rule._clear.resolve(snapshot)
    if threshold is None or clear is None:
        return None, None
    return threshold, min(clear, threshold)


def _sustained_rows(
    rows: Iterable[tuple[Any, Hashable, Any]],
    threshold: float,
    clear: float,
    state: dict[Any, list[Any]],
    now: float,
    for_s: float,
    offender: Callable[[Any, float, float], Offender],
) -> list[Offender]:
    """The threshold semantics per table row: *rows* are (value, identity, row); *state*
    maps identities to ``[pending_since, firing]`` and is rebuilt with only the rows above
    *clear*, so it stays bounded. Returns the firing rows as offenders."""
    previous = dict(state) if state else None
    state.clear()
    offenders: list[Offender] = []
    for value, key, row in rows:
        if value is None or value <= clear:
            continue  # neither triggers nor holds: forgotten
        entry = previous.get(key) if previous else None
        if entry is None or not entry[1]:
            if value <= threshold:
                continue  # pending needs the trigger on every sample
            if entry is None:
                entry = [now, False]
            if now - entry[0] >= for_s:
                entry[1] = True
        state[key] = entry
        if entry[1]:
            offenders.append(offender(row, float(value), entry[0]))
    return offenders


def _table_breach(
    rule: Any, snapshot: Snapshot, offenders: list[Offender], threshold: float, now: float
) -> Breach | None:
    """One breach naming every offender, the worst first; ``None`` without offenders."""
    if not offenders:
        return None
    offenders.sort(key=lambda item: -item.value)
    since = min(item.since for item in offenders)
    return Breach(
        rule.name,
        rule.metric,
        ">",
        offenders[0].value,
        threshold,
        rule.level,
        since,
        _since_wall(snapshot, since),
        now - since,
        rule.kind,
        tuple(offenders),
    )


class ContainerThreshold:
    """Any single container above a share of its memory limit (or a working-set size),
    sustained per container, naming the containers.

    ``ContainerThreshold(percent_above=90, for_="30s")`` fires when a container has used
    more than 90 % of its own limit for 30 s; ``used_above="2GiB"`` judges the working set
    instead (containers without a limit have no percent and are skipped by the first form).
    Inactive while ``snapshot.containers`` is ``None`` (no Docker source, or the engine is
    down). Same per-row semantics as :class:`ProcessThreshold`, identity = container id.
    """

    __slots__ = (
        "_clear",
        "_get",
        "_value",
        "field",
        "for_s",
        "kind",
        "level",
        "metric",
        "name",
        "reads",
    )

    def __init__(
        self,
        *,
        percent_above: float | str | None = None,
        used_above: float | str | None = None,
        for_: float | str = 0,
        clear: float | str | None = None,
        level: Level | str = Level.WARNING,
        name: str | None = None,
    ) -> None:
        chosen = [
            (field, value)
            for field, value in (("memory_percent", percent_above), ("memory_used", used_above))
            if value is not None
        ]
        if len(chosen) != 1:
            raise InvalidValue(
                "ContainerThreshold needs exactly one of percent_above= or "
                f"used_above= (got {len(chosen)})"
            )
        self.field, raw = chosen[0]
        self.kind = "percent" if self.field == "memory_percent" else "bytes"
        what = "percent_above" if self.kind == "percent" else "used_above"
        if self.kind == "bytes" and isinstance(raw, str) and raw.strip().endswith("%"):
            raise InvalidValue(
                f"used_above={shown(raw)} must be a size such as '2GiB'; for a "
                "share of the container's limit use percent_above="
            )
        self._value = _parse_bound(raw, self.kind, f"container {self.field}", what)
        self._clear = (
            self._value
            if clear is None
            else _parse_bound(clear, self.kind, f"container {self.field}", "clear")
        )
        _check_clear_side(">", self._value, self._clear)
        self.metric = f"containers.{self.field}"
        self._get = operator.attrgetter(self.field)
        self.for_s = _duration(for_, "for_")
        self.level = _level(level)
        self.name = _name(
            name,
            (
                f"a container {'memory' if self.kind == 'bytes' else 'memory % of limit'} > "
                f"{self._value.text}"
                + (f" for {format_duration(self.for_s)}" if self.for_s else "")
            ),
        )
        self.reads = ("containers",)

    def __repr__(self) -> str:
        return f"ContainerThreshold({shown(self.name)}, level={shown(self.level)})"

    def new_state(self) -> dict[str, list[Any]]:
        """Per container id: ``[pending_since, firing]``."""
        return {}

    def step(self, snapshot: Snapshot, state: dict[str, list[Any]], now: float) -> Breach | None:
        containers = snapshot.containers
        if containers is None:
            if state:
                state.clear()
            return None
        threshold, clear = _table_bounds(self, snapshot)
        if threshold is None or clear is None:
            return None
        get = self._get
        rows = ((get(item), item.id, item) for item in containers.items)
        offenders = _sustained_rows(
            rows,
            threshold,
            clear,
            state,
            now,
            self.for_s,
            lambda item, value, since: Offender(None, item.name, value, since, item.id),
        )
        return _table_breach(self, snapshot, offenders, threshold, now)


class ProcessCount:
    """At least ``at_least`` processes above a CPU percent (or RSS) at once, sustained.

    ``ProcessCount(cpu_percent_above=50, at_least=2, for_="10s")`` fires when two or more
    processes have each used more than half a core for 10 s (not necessarily the same
    ones). Trigger: count above the value ≥ ``at_least``; hold: count above ``clear`` ≥
    ``at_least``; ``for_``/``cooldown`` as for :class:`Threshold`. The breach's value is the
    count and it names the processes above ``clear``. Inactive while
    ``snapshot.processes`` is ``None``.
    """

    __slots__ = (
        "_clear",
        "_get",
        "_value",
        "at_least",
        "cooldown_s",
        "field",
        "for_s",
        "kind",
        "level",
        "metric",
        "name",
        "reads",
    )

    def __init__(
        self,
        *,
        cpu_percent_above: float | str | None = None,
        rss_above: float | str | None = None,
        at_least: int = 2,
        for_: float | str = 0,
        clear: float | str | None = None,
        cooldown: float | str = 0,
        level: Level | str = Level.WARNING,
        name: str | None = None,
    ) -> None:
        self.field, self._value, self._clear = _process_bounds(
            "ProcessCount", cpu_percent_above, rss_above, clear
        )
        expected = f"expected an int from 1 to {_MAX_PIDS} (the most processes Linux allows)"
        if isinstance(at_least, bool) or not isinstance(at_least, int):
            raise InvalidType(f"at_least={shown(at_least)} is not a count; {expected}")
        if not 1 <= at_least <= _MAX_PIDS:
            raise InvalidValue(f"at_least={shown(at_least)} is not a count; {expected}")
        self.at_least = at_least
        self.kind = _PROCESS_FIELDS[self.field]
        self.metric = f"processes.{self.field}"
        self._get = operator.attrgetter(self.field)
        self.for_s = _duration(for_, "for_")
        self.cooldown_s = _duration(cooldown, "cooldown")
        self.level = _level(level)
        self.name = _name(
            name,
            f"{at_least}+ processes {self.field} > {self._value.text}"
            + (f" for {format_duration(self.for_s)}" if self.for_s else ""),
        )
        self.reads = _table_reads("processes", self._value)

    def __repr__(self) -> str:
        return f"ProcessCount({shown(self.name)}, level={shown(self.level)})"

    def new_state(self) -> Sustain:
        return Sustain(self.for_s, self.cooldown_s)

    def step(self, snapshot: Snapshot, state: Sustain, now: float) -> Breach | None:
        processes = snapshot.processes
        if processes is None and state.pending_since is None and state.firing_since is None:
            return None
        above: list[ProcessInfo] = []
        triggering = 0
        threshold, clear = _table_bounds(self, snapshot)
        if processes is not None and (threshold is None or clear is None):
            return None  # the limit a share resolves against is unknown: state kept as is
        if processes is not None:
            assert threshold is not None
            assert clear is not None
            get = self._get
            for process in processes:
                value = get(process)
                if value is not None and value > clear:
                    above.append(process)
                    if value > threshold:
                        triggering += 1
        trigger = triggering >= self.at_least
        hold = len(above) >= self.at_least
        if not trigger and state.pending_since is None and state.firing_since is None:
            return None
        if not state.advance(now, trigger, hold):
            return None
        since = state.firing_since
        assert since is not None
        get = self._get
        offenders = sorted(
            (Offender(p.pid, p.name, float(get(p)), since) for p in above),
            key=lambda offender: -offender.value,
        )
        return Breach(
            self.name,
            self.metric,
            ">=",
            float(len(above)),
            float(self.at_least),
            self.level,
            since,
            _since_wall(snapshot, since),
            now - since,
            "count",
            tuple(offenders),
        )


# ----------------------------------------------------------------------- trends ---


class SeriesState:
    """A metric's recent history, downsampled into at most ``points`` bucket means.

    ``times``/``values`` are the closed buckets' mean time and mean value; the open bucket
    is accumulated in ``bucket``, ``time_sum``, ``value_sum``, ``count``. With
    ``robust=True`` the slopes between every pair of closed buckets are kept sorted in
    ``slopes`` and updated as buckets come and go (about ``2 * points`` insertions per
    bucket instead of a full Theil-Sen recomputation). ``slope`` is the latest estimate
    (per second; ``None`` until there is enough data).
    """

    __slots__ = (
        "bucket",
        "count",
        "firing_since",
        "last_estimate",
        "points",
        "slope",
        "slopes",
        "time_sum",
        "times",
        "value_sum",
        "values",
    )

    def __init__(self, points: int, *, robust: bool = False) -> None:
        self.points = points
        self.times: collections.deque[float] = collections.deque()
        self.values: collections.deque[float] = collections.deque()
        self.slopes: list[float] | None = [] if robust else None
        self.bucket = -math.inf
        self.time_sum = 0.0
        self.value_sum = 0.0
        self.count = 0
        self.slope: float | None = None
        self.firing_since: float | None = None
        self.last_estimate: float | None = None

    def add(self, now: float, value: float, width_s: float, window_s: float) -> bool:
        """Add a sample; return whether the closed buckets changed."""
        bucket = now // width_s
        changed = False
        if bucket != self.bucket:
            horizon = now - window_s
            while self.times and self.times[0] < horizon:
                self._pop()
                changed = True
            if self.count:
                mean_t = self.time_sum / self.count
                # a bucket out of order (a clock that went back) is dropped, not inserted
                if mean_t >= horizon and (not self.times or mean_t > self.times[-1]):
                    if len(self.times) >= self.points:
                        self._pop()
                    self._push(mean_t, self.value_sum / self.count)
                    changed = True
            self.bucket, self.time_sum, self.value_sum, self.count = bucket, 0.0, 0.0, 0
        self.time_sum += now
        self.value_sum += value
        self.count += 1
        return changed

    def _push(self, t: float, x: float) -> None:
        slopes = self.slopes
        if slopes is not None:
            insort = bisect.insort
            for earlier_t, earlier_x in zip(self.times, self.values, strict=True):
                insort(slopes, (x - earlier_x) / (t - earlier_t))
        self.times.append(t)
        self.values.append(x)

    def _pop(self) -> None:
        t0, x0 = self.times.popleft(), self.values.popleft()
        slopes = self.slopes
        if slopes is None:
            return
        find = bisect.bisect_left
        for t, x in zip(self.times, self.values, strict=True):
            slope = (x - x0) / (t - t0)  # computed exactly as when it was inserted
            index = find(slopes, slope)
            if index < len(slopes) and slopes[index] == slope:
                del slopes[index]
            else:  # cannot happen with IEEE arithmetic; rebuild rather than drift
                slopes[:] = sorted(_pair_slopes(list(self.times), list(self.values)))
                return

    def median_slope(self) -> float | None:
        """The Theil-Sen slope of the closed buckets (needs ``robust=True``)."""
        return _median(self.slopes) if self.slopes else None

    def span_s(self) -> float:
        return self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0


def _pair_slopes(ts: list[float], xs: list[float]) -> list[float]:
    slopes: list[float] = []
    for i in range(len(ts) - 1):
        t0, x0 = ts[i], xs[i]
        slopes.extend(
            [
                (x1 - x0) / (t1 - t0)
                for t1, x1 in zip(ts[i + 1 :], xs[i + 1 :], strict=True)
                if t1 != t0
            ]
        )
    return slopes


def theil_sen_slope(times: Iterable[float], values: Iterable[float]) -> float | None:
    """The median of the slopes between every pair of points (robust to outliers: up to
    29 % of the points may be arbitrary); ``None`` with fewer than two distinct times."""
    return _median(sorted(_pair_slopes(list(times), list(values))))


def _median(ordered: list[float]) -> float | None:
    if not ordered:
        return None
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def least_squares_slope(times: Iterable[float], values: Iterable[float]) -> float | None:
    """The ordinary least-squares slope; ``None`` with fewer than two distinct times."""
    ts, xs = list(times), list(values)
    n = len(ts)
    if n < 2:
        return None
    mean_t, mean_x = sum(ts) / n, sum(xs) / n
    var = sum((t - mean_t) ** 2 for t in ts)
    if var == 0:
        return None
    return sum((t - mean_t) * (x - mean_x) for t, x in zip(ts, xs, strict=True)) / var


def _series_window(
    window: object, points: object, min_fill: float, *, fewest_points: int
) -> tuple[float, int, float, float]:
    """Check a trend rule's window: (window_s, points, min_fill, bucket width_s)."""
    window_s = _duration(window, "window")
    if window_s <= 0:
        raise InvalidValue(f"window={shown(window)} must be longer than 0 s")
    if isinstance(points, bool) or not isinstance(points, int):
        raise InvalidType(f"points={shown(points)} is not a count from {fewest_points} to 1000")
    if not fewest_points <= points <= 1000:
        raise InvalidValue(f"points={shown(points)} is not a count from {fewest_points} to 1000")
    if isinstance(min_fill, bool) or not isinstance(min_fill, (int, float)):
        raise InvalidType(f"min_fill={shown(min_fill)} is not a share in (0, 1]")
    if not 0 < min_fill <= 1:
        raise InvalidValue(f"min_fill={shown(min_fill)} is not a share in (0, 1]")
    return window_s, points, float(min_fill), window_s / points


class LeakDetector:
    """Growth of a metric over a window, robust to noise: a leak.

    ``LeakDetector("process.rss", growth="50MB", window="10m")`` fires when the metric's
    trend grows by more than 50 MB per 10 minutes. Samples are averaged into at most
    ``points`` buckets per window (bounded memory whatever the sampling rate); when a bucket
    closes, the Theil-Sen slope (median of pairwise slopes, robust to spikes such as a
    transient allocation) of the buckets in the window is updated, and the estimated
    growth is that slope times the window. An estimate needs buckets covering at least
    ``min_fill`` of the window. The rule fires while the estimate is above ``growth`` and,
    once firing, until it drops to ``clear`` (default: half of ``growth``). A leak at
    exactly the ``growth`` rate is at the edge (the estimate is as often above as below);
    one 20 % faster is found reliably with noise of ±20 MB.
    """

    __slots__ = (
        "_get",
        "clear",
        "growth",
        "kind",
        "level",
        "metric",
        "min_fill",
        "name",
        "points",
        "reads",
        "width_s",
        "window_s",
    )

    def __init__(
        self,
        metric: str = "process.rss",
        growth: float | str = "50MB",
        window: float | str = "10m",
        level: Level | str = Level.WARNING,
        clear: float | str | None = None,
        points: int = 60,
        min_fill: float = 0.5,
        name: str | None = None,
    ) -> None:
        self.metric = _check_metric(metric)
        self.kind = _metric_kind(metric)
        self.growth = self._amount(growth, "growth")
        if self.growth <= 0:
            raise InvalidValue(f"growth={shown(growth)} must be above 0")
        self.clear = self.growth / 2 if clear is None else self._amount(clear, "clear")
        if self.clear > self.growth:
            raise InvalidValue(f"clear={shown(clear)} is above growth={shown(growth)}")
        self.window_s, self.points, self.min_fill, self.width_s = _series_window(
            window, points, min_fill, fewest_points=8
        )
        self.level = _level(level)
        self._get = operator.attrgetter(metric)
        growth_text = format_bytes(self.growth) if self.kind == "bytes" else f"{self.growth:g}"
        self.name = _name(
            name, f"{metric} grows > {growth_text} per {format_duration(self.window_s)}"
        )
        self.reads = (metric,)

    def _amount(self, value: object, what: str) -> float:
        """A growth figure in the metric's unit (a size for a byte metric)."""
        if self.kind != "bytes":
            return _plain_number(value, what, f"{self.metric} takes a plain number")
        try:
            return float(parse_bytes(value))  # type: ignore[arg-type]
        except (InvalidValue, InvalidType) as error:
            raise type(error)(f"{what} for {self.metric}: {error}") from None

    def __repr__(self) -> str:
        return f"LeakDetector({shown(self.name)}, level={shown(self.level)})"

    def new_state(self) -> SeriesState:
        return SeriesState(self.points, robust=True)

    def step(self, snapshot: Snapshot, state: SeriesState, now: float) -> Breach | None:
        try:
            value = self._get(snapshot)
        except AttributeError:
            value = None
        if value is None:  # unknown (explained by a fault): a firing leak keeps firing
            if (
                state.firing_since is None
                or state.last_estimate is None
                or not _explain(snapshot, self.metric)
            ):
                return None
            held_since = state.firing_since
            return Breach(
                self.name,
                self.metric,
                ">",
                state.last_estimate,
                self.growth,
                self.level,
                held_since,
                _since_wall(snapshot, held_since),
                now - held_since,
                self.kind,
            )
        if now // self.width_s == state.bucket:  # the common case: same bucket, same estimate
            state.time_sum += now
            state.value_sum += value
            state.count += 1
        elif state.add(now, float(value), self.width_s, self.window_s):
            enough = (
                len(state.times) >= 8
                and state.span_s() >= self.min_fill * self.window_s - 2 * self.width_s
            )
            state.slope = state.median_slope() if enough else None
            estimate = None if state.slope is None else state.slope * self.window_s
            state.last_estimate = estimate
            if state.firing_since is not None:
                if estimate is None or estimate <= self.clear:
                    state.firing_since = None
            elif estimate is not None and estimate > self.growth:
                state.firing_since = now
        since = state.firing_since
        if since is None:
            return None
        estimate = state.last_estimate
        assert estimate is not None
        return Breach(
            self.name,
            self.metric,
            ">",
            estimate,
            self.growth,
            self.level,
            since,
            _since_wall(snapshot, since),
            now - since,
            self.kind,
        )


class TimeToLimit:
    """Seconds until a metric reaches its limit at the measured fill rate.

    ``TimeToLimit(within="5m")`` estimates when ``memory.used`` reaches ``memory.limit``:
    the least-squares slope of the samples of the last ``window`` (bucketed as in
    :class:`LeakDetector`) gives the fill rate, and the estimate is
    ``(limit - current value) / rate`` (infinite when not growing, 0 at or past the limit).
    It fires when the estimate is below ``within`` and, once firing, until it reaches
    ``clear`` (default: 1.5 times ``within``). ``limit`` is a metric path or a size. The
    breach's ``value`` and ``estimate_s`` are the estimate in seconds.
    """

    __slots__ = (
        "_get",
        "_get_limit",
        "clear_s",
        "level",
        "limit",
        "metric",
        "min_fill",
        "name",
        "points",
        "reads",
        "width_s",
        "window_s",
        "within_s",
    )

    def __init__(
        self,
        within: float | str = "5m",
        level: Level | str = Level.WARNING,
        metric: str = "memory.used",
        limit: str | float = "memory.limit",
        window: float | str = "1m",
        clear: float | str | None = None,
        points: int = 30,
        min_fill: float = 0.25,
        name: str | None = None,
    ) -> None:
        self.metric = _check_metric(metric)
        self.within_s = _duration(within, "within")
        if self.within_s <= 0:
            raise InvalidValue(
                f"within={shown(within)} can never fire: an estimate is never "
                "below 0 s; expected e.g. '5m'"
            )
        self.clear_s = self.within_s * 1.5 if clear is None else _duration(clear, "clear")
        if self.clear_s < self.within_s:
            raise InvalidValue(f"clear={shown(clear)} is shorter than within={shown(within)}")
        self.window_s, self.points, self.min_fill, self.width_s = _series_window(
            window, points, min_fill, fewest_points=4
        )
        self.limit = limit
        fixed_limit: float | None = None
        if isinstance(limit, str):
            try:
                fixed_limit = float(parse_bytes(limit))
            except InvalidValue:
                _check_metric(limit)
        else:
            try:
                fixed_limit = float(parse_bytes(limit))
            except (InvalidValue, InvalidType) as error:
                raise type(error)(
                    f"limit={shown(limit)} is not a metric path or a size: {error}"
                ) from None
        if fixed_limit is not None:
            constant = fixed_limit
            self._get_limit: Callable[[Snapshot], Any] = lambda snapshot: constant
        else:
            assert isinstance(limit, str)
            self._get_limit = compile_getter(limit)
        self.level = _level(level)
        self._get = compile_getter(metric)
        self.name = _name(name, f"{metric} reaches {limit} within {format_duration(self.within_s)}")
        self.reads = (metric,) if fixed_limit is not None else (metric, str(limit))

    def __repr__(self) -> str:
        return f"TimeToLimit({shown(self.name)}, level={shown(self.level)})"

    def new_state(self) -> SeriesState:
        return SeriesState(self.points)

    def estimate_s(self, state: SeriesState) -> float | None:
        """The latest estimate in seconds (``inf`` when not filling), ``None`` before enough
        samples; for live views that show it while the rule does not fire."""
        return state.last_estimate

    def step(self, snapshot: Snapshot, state: SeriesState, now: float) -> Breach | None:
        value, limit = self._get(snapshot), self._get_limit(snapshot)
        if value is None or limit is None:
            held_since, held = state.firing_since, state.last_estimate
            if (
                held_since is not None
                and held is not None
                and any(_explain(snapshot, path) for path in self.reads)
            ):
                # unknown: a firing forecast keeps firing with its last estimate
                return Breach(
                    self.name,
                    self.metric,
                    "<",
                    held,
                    self.within_s,
                    self.level,
                    held_since,
                    _since_wall(snapshot, held_since),
                    now - held_since,
                    "seconds",
                    (),
                    held,
                )
            state.last_estimate = None
            state.firing_since = None
            return None
        if now // self.width_s == state.bucket:  # the common case: same bucket, same slope
            state.time_sum += now
            state.value_sum += value
            state.count += 1
        elif state.add(now, float(value), self.width_s, self.window_s):
            enough = (
                len(state.times) >= 3
                and state.span_s() >= self.min_fill * self.window_s - 2 * self.width_s
            )
            state.slope = least_squares_slope(state.times, state.values) if enough else None
        slope = state.slope
        remaining = float(limit) - float(value)
        if slope is None:
            estimate = None
        elif remaining <= 0:
            estimate = 0.0
        else:
            estimate = remaining / slope if slope > 0 else math.inf
        state.last_estimate = estimate
        if state.firing_since is not None:
            if estimate is None or estimate >= self.clear_s:
                state.firing_since = None
                return None
        elif estimate is not None and estimate < self.within_s:
            state.firing_since = now
        else:
            return None
        since = state.firing_since
        assert estimate is not None
        return Breach(
            self.name,
            self.metric,
            "<",
            estimate,
            self.within_s,
            self.level,
            since,
            _since_wall(snapshot, since),
            now - since,
            "seconds",
            (),
            estimate,
        )


# ------------------------------------------------------------------------ policy ---


def _is_breach(value: object) -> bool:
    """Whether a rule's answer is a :class:`Breach` a verdict can be made of (a subclass,
    at a real :class:`Level`)."""
    return isinstance(value, Breach) and isinstance(value.level, Level)


_RELOG_AFTER_S: Final = 60.0  # a flapping rule's failure is logged again after this long


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

    Evaluation is pure apart from the :class:`PolicyState` passed in (or, when none is
    passed, the policy's own ``state``), and ``now`` defaults to ``snapshot.monotonic``. A
    Monitor keeps one ``state = policy.new_state()`` and calls
    ``policy.evaluate(snapshot, state)`` for each snapshot. A state is not thread-safe: use
    one per thread.
    """

    __slots__ = ("_failing", "_faults", "_logged_at", "_reads", "_steps", "rules", "state")

    def __init__(self, rules: Iterable[Rule]) -> None:
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
        self._steps = tuple(rule.step for rule in self.rules)
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
        self._faults = FaultLog(_logger)
        self._failing: dict[int, str] = {}  # rule index -> kind of error, logged once
        self._logged_at: dict[tuple[int, str], float] = {}  # (index, kind) -> logged when
        self.state = self.new_state()

    def __repr__(self) -> str:
        return f"Policy([{', '.join(repr(rule) for rule in self.rules)}])"

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

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
        elif isinstance(now, bool) or not isinstance(now, (int, float)):
            raise InvalidType(f"now={shown(now)} is not a monotonic time in seconds")
        elif not _finite(now):
            raise InvalidValue(f"now={shown(now)} is not a finite monotonic time in seconds")
        breaches: list[Breach] | None = None
        failed: dict[int, str] | None = None  # rule index -> reason
        for index, step, rule_state in zip(
            range(len(self._steps)), self._steps, state.rule_states, strict=True
        ):
            try:
                breach = step(snapshot, rule_state, now)
            except Exception as error:  # a broken rule must not silence the others
                failed = {} if failed is None else failed
                failed[index] = self._rule_failed(index, error)
                continue
            if breach is not None:
                if not (type(breach) is Breach and type(breach.level) is Level) and not _is_breach(
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
        if failed:
            unknown = (*unknown, *failed.values())
        if breaches is None:
            return Verdict(Level.OK, (), unknown) if unknown else OK_VERDICT
        return Verdict(max(breach.level for breach in breaches), tuple(breaches), unknown)

    def _unknown(self, snapshot: Snapshot) -> tuple[str, ...]:
        """The reasons the rules' metrics are unknown in *snapshot* (one per metric)."""
        reasons: dict[str, None] = {}
        for path, get in self._reads:
            if get(snapshot) is None:
                reason = _explain(snapshot, path)
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
            now = time.monotonic()
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
