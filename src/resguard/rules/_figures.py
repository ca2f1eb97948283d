"""Reading a rule's arguments: metric paths, levels, durations and threshold figures.

A threshold figure is a :class:`Bound`: a fixed number in the metric's unit, or, for a
byte metric, a :class:`~resguard.units.Amount` that may be a share of a limit read from
each snapshot judged (``"85%"`` of ``memory.limit``, or of ``swap.total`` for ``swap.*``,
of ``gpu.memory.total``, the fullest GPU's, for ``gpu.memory.*``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any, Final

from resguard._errors import InvalidType, InvalidValue, UnknownMetric
from resguard.rules._verdict import Level
from resguard.snapshot import Snapshot, metric_paths, metric_unit
from resguard.units import (
    Amount,
    format_bytes,
    is_percent,
    is_plain_number,
    named,
    parse_bytes,
    parse_duration,
    shown,
)

__all__ = [
    "OPS",
    "Bound",
    "byte_amount",
    "check_can_fire",
    "check_clear_side",
    "check_metric",
    "compile_getter",
    "duration",
    "explain",
    "metric_kind",
    "parse_bound",
    "plain_number",
    "rule_level",
    "rule_name",
]

OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_paths_cache: dict[str, Any] = {}


def known_paths() -> dict[str, Any]:
    if not _paths_cache:
        _paths_cache.update(metric_paths())
    return _paths_cache


def check_metric(metric: object) -> str:
    """Return *metric* if it is a numeric snapshot path, else raise naming close matches."""
    if not isinstance(metric, str):
        raise InvalidType(
            f"{shown(metric)} is not a metric name; expected a dotted path such as 'memory.percent'"
        )
    paths = known_paths()
    if metric not in paths:
        import difflib  # only on this error path: keeps `import resguard` light

        close = difflib.get_close_matches(metric, paths, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownMetric(
            f"unknown metric {shown(metric)}{hint} "
            f"(resguard.snapshot.metric_paths() lists them all)"
        )
    return metric


def metric_kind(metric: str) -> str:
    """How a rule reads figures for *metric*: ``"bytes"`` (a size or a share of the
    limit), ``"percent"`` or ``""`` (a plain number), from the snapshot's unit metadata."""
    unit = metric_unit(metric)
    return unit if unit in ("bytes", "percent") else ""


def compile_getter(metric: str) -> Callable[[Snapshot], Any]:
    """A fast reader of a dotted path; ``None`` when a part on the way is ``None``."""
    get = operator.attrgetter(metric)

    def getter(snapshot: Snapshot) -> Any:
        try:
            return get(snapshot)
        except AttributeError:  # e.g. pressure.memory is None: no PSI on this kernel
            return None

    return getter


def rule_level(value: object) -> Level:
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


def duration(value: object, what: str) -> float:
    return named(what, parse_duration, value)


def rule_name(name: object, default: str) -> str:
    """A rule's name: a string, or *default* for ``None``."""
    if name is None:
        return default
    if not isinstance(name, str):
        raise InvalidType(f"name={shown(name)} is not a rule name; expected a string or None")
    return name


def plain_number(
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
        if not is_plain_number(value):
            raise InvalidValue(f"{what}={quoted} is not a number; {hint}")
        number = float(value.strip())  # float() strips less whitespace than \s matches
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


def percent_maximum(metric: str) -> float | None:
    """100 for percentages that cannot exceed it; ``None`` for CPU percent of a process
    (100 per core)."""
    return None if metric.endswith("cpu_percent") else 100.0


_SHARE_OF: Final = {"swap": "swap.total", "gpu": "gpu.memory.total"}  # else memory.limit
_DERIVED_SECTIONS: Final = frozenset({"memory", "swap"})  # percent, used... from each other


def explain(snapshot: Snapshot, path: str) -> str | None:
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


class Bound:
    """A threshold figure: fixed, or a share of a limit read from each snapshot judged.

    A byte figure keeps the :class:`~resguard.units.Amount` it was given as (``amount``).
    A share resolves to the exact fraction of the limit current in the snapshot (``85%`` of
    10 bytes is 8.5, not :meth:`Amount.resolve <resguard.units.Amount.resolve>`'s whole
    bytes), so a threshold compares as it always did.
    """

    __slots__ = ("_limit", "amount", "fixed", "fraction", "limit_path", "text")

    def __init__(
        self, fixed: float | None, text: str, amount: Amount | None = None, limit_path: str = ""
    ) -> None:
        self.fixed, self.text, self.amount, self.limit_path = fixed, text, amount, limit_path
        self.fraction = 0.0 if amount is None or amount.percent is None else amount.percent / 100
        self._limit = operator.attrgetter(limit_path) if limit_path else None

    @classmethod
    def of_bytes(cls, amount: Amount, limit_path: str) -> Bound:
        """A byte figure: *amount*'s bytes, or its share of the limit at *limit_path*."""
        if amount.percent is not None:
            return cls(None, f"{amount.percent:g}% of {limit_path}", amount, limit_path)
        assert amount.bytes is not None
        return cls(float(amount.bytes), format_bytes(amount.bytes), amount)

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


def byte_amount(value: object, metric: str, what: str) -> Amount:
    """*value* for a byte metric: a size or a share of the limit, as an Amount; the errors
    name the argument *what* (and *metric* for a size) in the rules' wording."""
    if is_percent(value):
        assert isinstance(value, str)
        hint = "expected e.g. '85%' (of the effective memory limit)"
        share = plain_number(value.strip()[:-1], what, hint, typed=value)
        if share > 100:
            raise InvalidValue(f"{what}={shown(value)} is above 100%; {hint}")
    else:
        try:
            parse_bytes(value)  # type: ignore[arg-type]
        except (InvalidValue, InvalidType) as error:
            raise type(error)(f"{what} for {metric}: {error}") from None
    return Amount(value, positive=False)  # type: ignore[arg-type]  # checked above


def parse_bound(value: object, kind: str, metric: str, what: str) -> Bound:
    """Read a threshold figure for a metric of *kind* (see the module docstring)."""
    if kind == "percent":
        maximum = percent_maximum(metric)
        if maximum is None:  # a process's CPU, counted as top counts it
            hint = f"{metric} is a share of one core (100 = one core): expected e.g. 90 or '90%'"
        else:
            hint = f"{metric} is a percentage: expected e.g. 85 or '85%' (at most 100)"
        text = value.strip()[:-1] if isinstance(value, str) and is_percent(value) else value
        number = plain_number(text, what, hint, typed=value, maximum=maximum)
        return Bound(number, f"{number:g}%")
    if kind == "bytes":
        limit = _SHARE_OF.get(metric.partition(".")[0], "memory.limit")
        return Bound.of_bytes(byte_amount(value, metric, what), limit)
    number = plain_number(value, what, f"{metric} takes a plain number")
    return Bound(number, f"{number:g}")


def check_clear_side(
    op: str,
    value: Bound,
    clear: Bound,
    typed: tuple[object, object] | None = None,
    argument: str = "value",
) -> None:
    """Refuse a clear level on the wrong side of the firing level; the error quotes
    *typed* (the value and the clear as passed; default: their normalised text) and names
    the firing figure's *argument*."""
    if value.fixed is None or clear.fixed is None:
        if (value.fixed is None) != (clear.fixed is None) or value.limit_path != clear.limit_path:
            return  # mixed forms: checked at evaluation (hold is at least trigger)
        above, below = value.fraction, clear.fraction
    else:
        above, below = value.fixed, clear.fixed
    typed_value, typed_clear = (value.text, clear.text) if typed is None else typed
    quoted = f"clear={shown(typed_clear)} is {{}} {argument}={shown(typed_value)}"
    if op in (">", ">=") and below > above:
        raise InvalidValue(
            f"{quoted.format('above')}; for {shown(op)} the clear level must be at or "
            "below the firing level"
        )
    if op in ("<", "<=") and below < above:
        raise InvalidValue(
            f"{quoted.format('below')}; for {shown(op)} the clear level must be at or "
            "above the firing level"
        )


def check_can_fire(metric: str, kind: str, op: str, value: Bound, typed: object) -> None:
    """Reject a fixed threshold no measurement can cross (every metric is at least 0)."""
    fixed = value.fixed
    if fixed is None:
        return
    maximum = percent_maximum(metric) if kind == "percent" else None
    if op == ">" and maximum is not None and fixed >= maximum:
        raise InvalidValue(
            f"{metric} > {shown(typed)} can never fire: {metric} is at most "
            f"{maximum:g}; use a lower value or '>='"
        )
    if op == "<" and fixed <= 0:
        raise InvalidValue(f"{metric} < {shown(typed)} can never fire: {metric} is at least 0")
