"""Rules over heat: a temperature sensor above its high mark, a fan spinning fast for long,
and macOS's thermal pressure.

They judge ``snapshot.heat`` (:class:`~resguard.snapshot.HeatInfo`): a Monitor samples it
only for a policy with a rule that reads it, and every rule here says so the way the
process rules do, by naming the field in ``reads`` (``("heat",)``; see
:meth:`Policy.needs <resguard.rules.Policy.needs>`). While ``snapshot.heat`` is ``None``
the rules are inactive, unless a fault explains it: then the sample is unknown and a
firing rule keeps firing with its last figures, as :class:`~resguard.rules.Threshold` does.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar, Final

import attrs

from resguard._errors import InvalidType, InvalidValue
from resguard.rules._figures import duration, explain, plain_number, rule_level, rule_name
from resguard.rules._sustain import Sustain, firing_breach
from resguard.rules._table import sustained_rows
from resguard.rules._verdict import (
    THERMAL_STATES,
    Breach,
    Level,
    Offender,
    printable,
    since_wall,
)
from resguard.snapshot import Snapshot
from resguard.units import format_duration, shown

__all__ = ["FanThreshold", "SensorThreshold", "ThermalPressure", "thermal_rank"]

_HOTTEST_C: Final = 300.0  # no laptop or server part reports more; a typo if above
_FASTEST_RPM: Final = 100_000.0
_ALIASES: Final = {"fair": "moderate", "serious": "heavy", "critical": "trapping"}


def _figure(value: object, what: str, unit: str, maximum: float) -> float:
    """A figure in *unit* (``"°C"`` or ``"rpm"``): a number, or text with the unit."""
    example = "85" if unit == "°C" else "3000"
    hint = f"expected a number of {unit} from 0 to {maximum:g}, e.g. {example}"
    text: object = value
    if isinstance(value, str):
        stripped = value.strip()
        for suffix in (unit, unit.lstrip("°"), unit.upper(), unit.lstrip("°").lower()):
            if stripped.endswith(suffix):
                stripped = stripped[: -len(suffix)]
                break
        text = stripped
    return plain_number(text, what, hint, typed=value, maximum=maximum)


class _RowsState:
    """A per-row heat rule's memory: each firing or pending row's :class:`Sustain`, and
    the last breach (repeated while the heat reading is unknown)."""

    __slots__ = ("last", "rows")

    def __init__(self) -> None:
        self.rows: dict[Hashable, Sustain] = {}
        self.last: Breach | None = None

    def __repr__(self) -> str:
        return f"_RowsState({len(self.rows)} rows, firing={self.last is not None})"


class _HeatRows(abc.ABC):
    """What the sensor and fan rules share: per-row sustain over one of ``heat``'s tables,
    the breach naming the firing rows (``"chip label"``) and the unknown sample."""

    __slots__ = ("_clear", "_threshold", "for_s", "level", "metric", "name", "reads", "unit")

    table: ClassVar[str]  # "sensors" or "fans"
    _clear: float
    _threshold: float
    for_s: float
    level: Level
    metric: str
    name: str
    reads: tuple[str, ...]
    unit: str

    def _rows(self, snapshot: Snapshot) -> Sequence[Any] | None:
        heat = snapshot.heat
        return None if heat is None else getattr(heat, self.table)

    @abc.abstractmethod
    def _value(self, row: Any) -> float | None:
        """The figure compared with the threshold (``None``: the row cannot be judged)."""

    @abc.abstractmethod
    def _shown(self, row: Any) -> float:
        """The figure the offender is named with."""

    def _crossed(self, offender_row: Any) -> float:
        """The threshold the breach reports, for its worst row."""
        return self._threshold

    def new_state(self) -> _RowsState:
        return _RowsState()

    def _unjudged(self, snapshot: Snapshot) -> str | None:
        """Why some row of the table cannot be judged: a NaN or infinite figure (a
        hand-built or hostile record; the readers never make one), which
        :class:`~resguard.rules.Policy` lists in ``Verdict.unknown`` so the verdict is
        never a plain OK over a sensor nobody could read; ``None`` when every row can be."""
        rows = self._rows(snapshot)
        if not rows:
            return None
        bad = [row for row in rows if self._figures_broken(row)]
        if not bad:
            return None
        named = ", ".join(printable(f"{row.chip} {row.label}".strip()) for row in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        return f"{self.metric}: {named}{more} read no finite figure"

    @abc.abstractmethod
    def _figures_broken(self, row: Any) -> bool:
        """Whether *row*'s figures are there but not finite (NaN, infinite)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({shown(self.name)}, level={shown(self.level)})"

    def step(self, snapshot: Snapshot, state: _RowsState, now: float) -> Breach | None:
        rows = self._rows(snapshot)
        if rows is None:
            last = state.last
            if explain(snapshot, "heat"):  # unknown: firing keeps firing, pending pending
                return None if last is None else attrs.evolve(last, held_s=now - last.since)
            state.rows.clear()
            state.last = None
            return None
        named: list[tuple[Offender, Any]] = []

        def offender(row: Any, value: float, since: float) -> Offender:
            label = f"{row.chip} {row.label}".strip()
            item = Offender(None, label, self._shown(row), since, unit=self.unit)
            named.append((item, row))
            return item

        sustained_rows(
            rows,
            self._value,
            _row_key,
            (self._threshold, self._clear),
            state.rows,
            now,
            self.for_s,
            offender,
        )
        if not named:
            state.last = None
            return None
        named.sort(key=lambda pair: -pair[0].value)
        offenders = tuple(item for item, _ in named)
        since = min(item.since for item in offenders)
        state.last = Breach(
            self.name,
            self.metric,
            ">",
            offenders[0].value,
            self._crossed(named[0][1]),
            self.level,
            since,
            since_wall(snapshot, since),
            now - since,
            self.unit,
            offenders,
        )
        return state.last


def _row_key(row: Any) -> Hashable:
    return (row.chip, row.label)


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _suffix(for_s: float) -> str:
    return f" for {format_duration(for_s)}" if for_s else ""


class SensorThreshold(_HeatRows):
    """Any temperature sensor above its own high mark, or above a fixed °C, sustained per
    sensor; the breach names the sensors (``pid`` ``None``, name ``"chip label"``).

    ``SensorThreshold(above_high=True, for_="30s")`` fires when a sensor has read above
    the ``high`` mark its driver reports for 30 s (sensors without one are skipped) and
    clears at ``high - margin_celsius`` °C. ``SensorThreshold(celsius_above=90, clear=85)`` uses
    a fixed figure instead (``clear`` defaults to it). Same per-row semantics as
    :class:`~resguard.rules.ProcessThreshold` (identity = ``(chip, label)``).
    """

    __slots__ = ("above_high", "celsius_above", "margin_celsius")
    table = "sensors"

    def __init__(
        self,
        *,
        above_high: bool = False,
        celsius_above: float | str | None = None,
        for_: float | str = 0,
        clear: float | str | None = None,
        margin_celsius: float | str = 0,
        level: Level | str = Level.WARNING,
        name: str | None = None,
    ) -> None:
        if not isinstance(above_high, bool):
            raise InvalidType(f"above_high={shown(above_high)} is not True or False")
        if above_high == (celsius_above is not None):
            raise InvalidValue(
                "SensorThreshold needs exactly one of above_high=True or celsius_above= "
                f"(got above_high={shown(above_high)}, celsius_above={shown(celsius_above)})"
            )
        self.above_high = above_high
        self.metric, self.unit = "heat.sensors.current_celsius", "celsius"
        self.for_s = duration(for_, "for_")
        self.level = rule_level(level)
        self.reads: tuple[str, ...] = ("heat",)
        if above_high:
            if clear is not None:
                raise InvalidValue(
                    f"clear={shown(clear)} is for celsius_above=; with above_high=True "
                    "the rule clears margin_celsius= degrees below each sensor's high mark"
                )
            self.celsius_above = None
            self.margin_celsius = _figure(margin_celsius, "margin_celsius", "°C", _HOTTEST_C)
            self._threshold, self._clear = 0.0, -self.margin_celsius
            default = "a sensor above its high mark"
        else:
            self.margin_celsius = 0.0
            self.celsius_above = _figure(celsius_above, "celsius_above", "°C", _HOTTEST_C)
            cleared = (
                self.celsius_above if clear is None else _figure(clear, "clear", "°C", _HOTTEST_C)
            )
            if cleared > self.celsius_above:
                raise InvalidValue(
                    f"clear={shown(clear)} is above celsius_above={shown(celsius_above)}; "
                    "the clear level must be at or below the firing level"
                )
            self._threshold, self._clear = self.celsius_above, cleared
            default = f"a sensor above {self.celsius_above:g} °C"
        self.name = rule_name(name, default + _suffix(self.for_s))

    def _value(self, row: Any) -> float | None:
        current = _finite(row.current_celsius)
        if current is None or not self.above_high:
            return current
        high = _finite(row.high_celsius)
        return None if high is None or high <= 0 else current - high  # 0 °C: no real mark

    def _shown(self, row: Any) -> float:
        return float(row.current_celsius)

    def _figures_broken(self, row: Any) -> bool:
        if _finite(row.current_celsius) is None:
            return True
        high = row.high_celsius  # None: the chip has no mark, which is no fault
        return self.above_high and high is not None and _finite(high) is None

    def _crossed(self, offender_row: Any) -> float:
        if self.above_high:
            return float(offender_row.high_celsius)
        return self._threshold


class FanThreshold(_HeatRows):
    """Any fan above an rpm, sustained per fan ("fans running continuously"); the breach
    names the fans (``"chip label"``, their rpm).

    ``FanThreshold(rpm_above=4000, for_="5m")`` fires when a fan has spun faster than
    4000 rpm for five minutes, and clears at ``clear`` rpm (default: the same figure).
    There is no default figure: what is fast depends on the fan.
    """

    __slots__ = ("rpm_above",)
    table = "fans"

    def __init__(
        self,
        *,
        rpm_above: float | str,
        for_: float | str = 0,
        clear: float | str | None = None,
        level: Level | str = Level.WARNING,
        name: str | None = None,
    ) -> None:
        self.rpm_above = _figure(rpm_above, "rpm_above", "rpm", _FASTEST_RPM)
        cleared = self.rpm_above if clear is None else _figure(clear, "clear", "rpm", _FASTEST_RPM)
        if cleared > self.rpm_above:
            raise InvalidValue(
                f"clear={shown(clear)} is above rpm_above={shown(rpm_above)}; "
                "the clear level must be at or below the firing level"
            )
        self.metric, self.unit = "heat.fans.rpm", "rpm"
        self._threshold, self._clear = self.rpm_above, cleared
        self.for_s = duration(for_, "for_")
        self.level = rule_level(level)
        self.reads = ("heat",)
        self.name = rule_name(name, f"a fan above {self.rpm_above:g} rpm" + _suffix(self.for_s))

    def _value(self, row: Any) -> float | None:
        return _finite(row.rpm)

    def _shown(self, row: Any) -> float:
        return float(row.rpm)

    def _figures_broken(self, row: Any) -> bool:
        return _finite(row.rpm) is None


def thermal_rank(state: object) -> int | None:
    """The rank of a thermal state's name in :data:`~resguard.rules.THERMAL_STATES`
    (``"heavy"`` → 2), case and spaces ignored; Apple's other names map to the same ranks
    (fair → moderate, serious → heavy, critical → trapping). ``None`` for anything else.

    A snapshot carries its own rank (``heat.thermal_rank``, found from ``pmset -g
    therm``'s figures when read); this ranks a name a person typed, as
    :class:`ThermalPressure`'s ``at_least``.
    """
    if not isinstance(state, str):
        return None
    name = " ".join(state.lower().split())
    name = _ALIASES.get(name, name)
    return THERMAL_STATES.index(name) if name in THERMAL_STATES else None


class ThermalPressure:
    """macOS's thermal pressure (``heat.thermal_pressure``, from ``pmset -g therm``) at or
    above a state, sustained for ``for_``; clears as soon as the state drops below it
    (the kernel debounces its own level, as for memory pressure).

    ``ThermalPressure("heavy", level="warning")`` fires while the Mac says heavy or worse.
    It judges ``heat.thermal_rank``, the rank found from pmset's figures when the heat
    was read (its warning levels and CPU speed limits; see :doc:`platforms`); a heat
    record without a rank is "condition false". Inactive everywhere but macOS
    (``thermal_rank`` is ``None`` there).
    """

    __slots__ = ("at_least", "for_s", "level", "metric", "name", "rank", "reads")

    def __init__(
        self,
        at_least: str = "heavy",
        *,
        for_: float | str = 0,
        level: Level | str = Level.WARNING,
        name: str | None = None,
    ) -> None:
        rank = thermal_rank(at_least)
        expected = ", ".join(repr(state) for state in THERMAL_STATES[1:])
        if not isinstance(at_least, str):
            raise InvalidType(
                f"at_least={shown(at_least)} is not a thermal state; expected {expected}"
            )
        if rank is None or rank == 0:
            raise InvalidValue(
                f"at_least={shown(at_least)} is not a thermal state a rule can fire at; "
                f"expected {expected}"
            )
        self.at_least, self.rank = THERMAL_STATES[rank], rank
        self.metric = "heat.thermal_pressure"
        self.for_s = duration(for_, "for_")
        self.level = rule_level(level)
        self.reads = ("heat",)
        self.name = rule_name(
            name, f"macOS thermal pressure {self.at_least} or worse" + _suffix(self.for_s)
        )

    def __repr__(self) -> str:
        return f"ThermalPressure({shown(self.name)}, level={shown(self.level)})"

    def new_state(self) -> Sustain:
        return Sustain(self.for_s)

    def step(self, snapshot: Snapshot, state: Sustain, now: float) -> Breach | None:
        heat = snapshot.heat
        if heat is None and explain(snapshot, "heat"):  # unknown: no evidence either way
            return self._breach(snapshot, state, now)
        rank = None if heat is None else heat.thermal_rank
        trigger = rank is not None and rank >= self.rank
        if not state.advance(now, trigger):
            return None
        assert rank is not None
        state.last_value, state.last_threshold = float(rank), float(self.rank)
        return self._breach(snapshot, state, now)

    def _breach(self, snapshot: Snapshot, state: Sustain, now: float) -> Breach | None:
        return firing_breach(self, state, snapshot, now, ">=", "thermal_pressure")
