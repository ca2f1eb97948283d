"""What a judgement is made of: levels, breaches, verdicts and the rule protocol."""

from __future__ import annotations

import enum
import math
from typing import Any, Final, Protocol, runtime_checkable

import attrs

from resguard._modules.render import ValueMixin, rows_table
from resguard._modules.render import printable as escaped
from resguard.snapshot import Snapshot
from resguard.units import format_duration, format_size, shown

__all__ = [
    "OK_VERDICT",
    "THERMAL_STATES",
    "Breach",
    "Level",
    "Offender",
    "Rule",
    "Verdict",
    "finite",
    "format_value",
    "is_breach",
    "printable",
    "since_wall",
    "thermal_state",
]


class Level(enum.IntEnum):
    """How bad things are; a verdict's level is the highest level among its breaches."""

    OK = 0
    WARNING = 1
    CRITICAL = 2


# --------------------------------------------------------------------------- values ---


@attrs.frozen(slots=True)
class Offender(ValueMixin):
    """A culprit a breach names: a process, a container or a sensor; its value and since
    when (monotonic seconds) it has been named.

    ``pid`` is ``None`` for a container (``id`` is its id) and for a sensor or fan (``name``
    is ``"chip label"``). ``unit`` is the value's unit when it is not the breach's:
    ``"core_percent"`` (a process's CPU as ``top`` counts it, 100 = one core),
    ``"memory_percent"`` (a process's RSS as a share of the effective memory limit),
    ``"bytes"``, ``"celsius"``, ``"rpm"``; ``None`` means the breach's own ``unit``. For a
    table rule ``since`` is when the row started to fire; for the culprits of a
    machine-wide breach (:func:`~resguard.rules.culprits`) it is when the breach began.
    """

    pid: int | None
    name: str
    value: float
    since: float
    id: str | None = None
    unit: str | None = None

    @property
    def label(self) -> str:
        """``"1234 python"`` for a process, ``"3f2a1b9c0d4e postgres"`` for a container,
        the name alone for a sensor or a fan (``"coretemp Package id 0"``). Control
        characters in the name are escaped (``\\x1b``): it ends up in logs and terminals."""
        name = printable(self.name)
        if self.pid is not None:
            return f"{self.pid} {name}"
        return f"{printable(self.id[:12])} {name}" if self.id else name


@attrs.frozen(slots=True)
class Breach(ValueMixin):
    """One rule that fires.

    ``rule`` is the rule's name, ``metric`` the field it judges, ``value`` the measured
    figure (for a leak the estimated growth over the window, for a time-to-limit the
    estimated seconds left, for a process count the number of processes), ``threshold``
    the figure it crossed (in the same unit, ``unit`` being ``"bytes"``, ``"percent"``,
    ``"seconds"``, ``"count"``, ``"celsius"``, ``"rpm"``, ``"thermal_pressure"`` (a rank
    in :data:`THERMAL_STATES`) or ``""``). ``offenders`` are the culprits (at most three
    are shown in ``message``; all are in :meth:`to_dict`). ``since``/``since_wall`` tell
    since when the condition has held (monotonic and epoch seconds), ``held_s`` for how
    long.
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
    def culprits(self) -> str:
        """The first three offenders for people: ``"1234 python 97% of a core, 4321
        chrome 62% of memory, +2 more"``; ``""`` when the breach names nobody."""
        shown = ", ".join(
            f"{o.label} {format_value(o.value, o.unit or self.unit)}" for o in self.offenders[:3]
        )
        more = len(self.offenders) - 3
        return shown + (f", +{more} more" if more > 0 else "")

    @property
    def message(self) -> str:
        """A one-line description for logs and the CLI, culprits included."""
        text = f"{self.rule}: {format_value(self.value, self.unit)}"
        if self.offenders:
            text += f" ({self.culprits})"
        if self.held_s >= 1:
            text += f" for {format_value(self.held_s, 'seconds')}"
        return text


def printable(text: object) -> str:
    """*text* with every control character written as its escape (``"a\\nb"``), so a
    process that names itself with a newline or a terminal escape cannot forge a log line
    or clear a screen; what is no string is shown as its repr."""
    return escaped(text) if isinstance(text, str) else shown(text)


_SHARES: Final = {"core_percent": "of a core", "memory_percent": "of memory"}

THERMAL_STATES: Final = ("nominal", "moderate", "heavy", "trapping", "sleeping")
"""macOS thermal pressure states (``pmset -g therm``), mildest first: a rule's rank."""


def thermal_state(rank: float) -> str:
    """The name of a thermal pressure rank (an index in :data:`THERMAL_STATES`)."""
    index = int(rank) if finite(rank) else -1
    return THERMAL_STATES[index] if 0 <= index < len(THERMAL_STATES) else f"{rank:g}"


def _share(value: float) -> str:
    """A culprit's share of a core or of memory: whole percents from 1 %, one decimal
    below (``"0.4%"``: a process holding 300 MB of 64 GiB is not "0%"), ``"<0.1%"`` for
    less."""
    if value >= 0.95 or value <= 0:
        return f"{value:.0f}%"
    return f"{value:.1f}%" if value >= 0.05 else "<0.1%"


def format_value(value: float, unit: str) -> str:
    """*value* in *unit* for a message; never raises (a NaN or infinite figure a custom
    rule or a hostile source produced is shown as it is, not an error in a log line)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return shown(value)
    if not finite(value):
        return "never" if unit == "seconds" and value > 0 else f"{shown(value)}"
    if unit == "bytes":
        return format_size(value)
    if unit == "percent":
        return f"{value:.1f}%"
    if unit == "seconds":
        return "never" if math.isinf(value) else format_duration(max(value, 0.0))
    if unit == "count":
        return f"{value:.0f}"
    if unit in _SHARES:
        return f"{_share(value)} {_SHARES[unit]}"
    if unit == "celsius":
        return f"{value:.0f} °C"
    if unit == "rpm":
        return f"{value:.0f} rpm"
    if unit == "thermal_pressure":
        return thermal_state(value)
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
        import html  # only in a notebook: keeps `import resguard` light

        rows = [
            (
                breach.rule,
                breach.level.name,
                format_value(breach.value, breach.unit),
                format_value(breach.threshold, breach.unit),
                format_value(breach.held_s, "seconds"),
                breach.culprits,
            )
            for breach in self.breaches
        ]
        columns = ("rule", "level", "value", "threshold", "held", "culprits")
        table = rows_table(columns, rows, numeric=frozenset({2, 3, 4})) if rows else ""
        unknown = "".join(f"<p>unknown: {html.escape(escaped(item))}</p>" for item in self.unknown)
        return f"<p><b>{self.level.name}</b></p>" + table + unknown


OK_VERDICT: Final = Verdict(Level.OK, ())


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


def since_wall(snapshot: Snapshot, since: float) -> float:
    """The epoch time of the monotonic time *since*, by the clocks of *snapshot*."""
    return snapshot.taken_at + (since - snapshot.monotonic)


def is_breach(value: object) -> bool:
    """Whether a rule's answer is a :class:`Breach` a verdict can be made of (a subclass,
    at a real :class:`Level`)."""
    return isinstance(value, Breach) and isinstance(value.level, Level)


def finite(number: float) -> bool:
    """True for a number inside float range that is not NaN or infinite (big ints too)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False
