"""Rules over tables: any one process (or container) above a figure, sustained per row,
and a count of processes above a figure.

:class:`ProcessThreshold` and :class:`ContainerThreshold` are two faces of one per-row
threshold (:class:`PerRowThreshold`): the faces say which table, what identifies a row
and how an offender is named; the parsing and the per-row sustain are written once.
"""

from __future__ import annotations

import abc
import operator
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, ClassVar, Final

from resguard._errors import InvalidType, InvalidValue
from resguard.rules._culprits import judged_rows
from resguard.rules._figures import (
    Bound,
    check_clear_side,
    duration,
    metric_kind,
    parse_bound,
    rule_level,
    rule_name,
)
from resguard.rules._sustain import Sustain
from resguard.rules._verdict import Breach, Level, Offender, since_wall
from resguard.snapshot import ContainerStats, ProcessInfo, Snapshot
from resguard.units import format_duration, is_percent, shown

__all__ = ["ContainerThreshold", "PerRowThreshold", "ProcessCount", "ProcessThreshold"]

_MAX_PIDS: Final = 2**22  # PID_MAX_LIMIT on 64-bit Linux

Figure = tuple[str, str, object]  # (argument, field of a row, value as given)


def _row_unit(field: str) -> str | None:
    """An offender's unit for a process field: a CPU percent is a share of one core."""
    return "core_percent" if field == "cpu_percent" else None


def _process_figures(cpu_percent_above: object, rss_above: object) -> tuple[Figure, ...]:
    return (
        ("cpu_percent_above", "cpu_percent", cpu_percent_above),
        ("rss_above", "rss", rss_above),
    )


def choose_bounds(
    rule: str,
    table: str,
    noun: str,
    figures: tuple[Figure, ...],
    clear: object,
    share_hint: str = "",
) -> tuple[str, str, Bound, Bound]:
    """The one figure given among *figures* for a field of *table*'s rows (its unit from
    the snapshot's metadata), and its clear level: ``(field, kind, value, clear)``. With
    *share_hint*, a byte figure given as a share is refused with that hint."""
    chosen = [figure for figure in figures if figure[2] is not None]
    if len(chosen) != 1:
        arguments = " or ".join(f"{figure[0]}=" for figure in figures)
        raise InvalidValue(f"{rule} needs exactly one of {arguments} (got {len(chosen)})")
    argument, field, raw = chosen[0]
    kind = metric_kind(f"{table}.{field}")
    if share_hint and kind == "bytes" and is_percent(raw):
        raise InvalidValue(f"{argument}={shown(raw)} must be a size such as '2GiB'; {share_hint}")
    label = f"{noun} {field}"
    value = parse_bound(raw, kind, label, argument)
    cleared = value if clear is None else parse_bound(clear, kind, label, "clear")
    check_clear_side(">", value, cleared, (raw, clear), argument)
    return field, kind, value, cleared


def table_reads(table: str, value: Bound) -> tuple[str, ...]:
    return (table, value.limit_path) if value.limit_path else (table,)


def resolve_pair(
    value: Bound, clear: Bound, snapshot: Snapshot
) -> tuple[float | None, float | None]:
    """A table rule's (threshold, clear) for *snapshot*; ``None`` where a limit is unknown."""
    threshold, cleared = value.resolve(snapshot), clear.resolve(snapshot)
    if threshold is None or cleared is None:
        return None, None
    return threshold, min(cleared, threshold)


def sustained_rows(
    rows: Iterable[Any],
    get: Callable[[Any], Any],
    key: Callable[[Any], Hashable],
    bounds: tuple[float, float],
    state: dict[Any, Sustain],
    now: float,
    for_s: float,
    offender: Callable[[Any, float, float], Offender],
) -> list[Offender]:
    """The threshold semantics per row (one :class:`Sustain` per identity ``key(row)``);
    *state* is rebuilt with only the rows above the clear level, so it stays bounded.
    Returns the firing rows as offenders."""
    threshold, clear = bounds
    previous = dict(state) if state else None
    state.clear()
    offenders: list[Offender] = []
    for row in rows:
        value = get(row)
        if value is None or value <= clear:
            continue  # neither triggers nor holds: forgotten
        identity = key(row)
        sustain = previous.get(identity) if previous else None
        if sustain is None or sustain.firing_since is None:
            if value <= threshold:
                continue  # pending needs the trigger on every sample
            if sustain is None:
                sustain = Sustain(for_s)
        state[identity] = sustain
        if sustain.advance(now, True):
            since = sustain.firing_since
            assert since is not None
            offenders.append(offender(row, float(value), since))
    return offenders


class PerRowThreshold(abc.ABC):
    """Any single row of a table above a figure, sustained per row: the threshold
    semantics of the module docstring per row (pending, firing, ``clear`` hysteresis; no
    cooldown), naming every firing row (:class:`Offender`) in one breach. Inactive while
    the table is ``None``. A face sets the class attributes and the three row hooks."""

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

    table: ClassVar[str]  # the snapshot's table: "processes", "containers"
    noun: ClassVar[str]  # a row in error messages: "process", "container"

    def _setup(
        self,
        figures: tuple[Figure, ...],
        for_: float | str,
        clear: float | str | None,
        level: Level | str,
        name: str | None,
        share_hint: str = "",
    ) -> None:
        self.field, self.kind, self._value, self._clear = choose_bounds(
            type(self).__name__, self.table, self.noun, figures, clear, share_hint
        )
        self.metric = f"{self.table}.{self.field}"
        self._get = operator.attrgetter(self.field)
        self.for_s = duration(for_, "for_")
        self.level = rule_level(level)
        self.name = rule_name(
            name,
            f"{self._subject()} > {self._value.text}"
            + (f" for {format_duration(self.for_s)}" if self.for_s else ""),
        )
        self.reads = table_reads(self.table, self._value)

    @abc.abstractmethod
    def _subject(self) -> str:
        """What the default name says is above the figure: ``"a process rss"``."""

    @abc.abstractmethod
    def _rows(self, snapshot: Snapshot) -> Sequence[Any] | None:
        """The table's rows in *snapshot*; ``None`` when it was not sampled."""

    @staticmethod
    @abc.abstractmethod
    def _key(row: Any) -> Hashable:
        """A row's identity across snapshots."""

    @abc.abstractmethod
    def _offender(self, row: Any, value: float, since: float) -> Offender:
        """The offender a firing row is named by in the breach."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({shown(self.name)}, level={shown(self.level)})"

    def new_state(self) -> dict[Hashable, Sustain]:
        """Per row identity: its :class:`Sustain` (only rows above ``clear`` are kept)."""
        return {}

    def step(self, snapshot: Snapshot, state: dict[Hashable, Sustain], now: float) -> Breach | None:
        rows = self._rows(snapshot)
        if rows is None:
            if state:
                state.clear()
            return None
        threshold, clear = resolve_pair(self._value, self._clear, snapshot)
        if threshold is None or clear is None:
            return None  # the limit a share resolves against is unknown: state kept as is
        offenders = sustained_rows(
            rows, self._get, self._key, (threshold, clear), state, now, self.for_s, self._offender
        )
        if not offenders:
            return None
        offenders.sort(key=lambda item: -item.value)
        since = min(item.since for item in offenders)
        return Breach(
            self.name,
            self.metric,
            ">",
            offenders[0].value,
            threshold,
            self.level,
            since,
            since_wall(snapshot, since),
            now - since,
            self.kind,
            tuple(offenders),
        )


class ProcessThreshold(PerRowThreshold):
    """Any single process above a CPU percent (or RSS), sustained per process.

    ``ProcessThreshold(cpu_percent_above=100, for_="30s")`` fires when one process has used
    more than one full core for 30 s. Each process is tracked by its identity
    ``(pid, create_time)`` with the threshold semantics of the module docstring (per process
    pending, firing, and ``clear`` hysteresis; no cooldown). The breach names every firing
    process (:class:`Offender`). Inactive while ``snapshot.processes`` is ``None``; state is
    kept only for processes above ``clear`` in the latest table, so it stays bounded.
    ``rss_above`` takes a size or a percentage of ``memory.limit``. Kernel threads, the
    process that took the snapshot (resguard itself) and, for CPU, a row whose figure is
    its average since it started (``cpu_since_start``: its first scan) are not judged
    (see ``judged_rows`` in ``resguard.rules._culprits``).
    """

    __slots__ = ()
    table = "processes"
    noun = "process"

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
        self._setup(_process_figures(cpu_percent_above, rss_above), for_, clear, level, name)

    def _subject(self) -> str:
        return f"a process {self.field}"

    def _rows(self, snapshot: Snapshot) -> Sequence[ProcessInfo] | None:
        rows = snapshot.processes
        return (
            None if rows is None else judged_rows(snapshot, rows, cpu=self.field == "cpu_percent")
        )

    @staticmethod
    def _key(row: ProcessInfo) -> Hashable:
        return (row.pid, row.create_time)

    def _offender(self, row: ProcessInfo, value: float, since: float) -> Offender:
        return Offender(row.pid, row.name, value, since, unit=_row_unit(self.field))


class ContainerThreshold(PerRowThreshold):
    """Any single container above a share of its memory limit (or a working-set size),
    sustained per container, naming the containers.

    ``ContainerThreshold(percent_above=90, for_="30s")`` fires when a container has used
    more than 90 % of its own limit for 30 s; ``used_above="2GiB"`` judges the working set
    instead (containers without a limit have no percent and are skipped by the first form).
    Inactive while ``snapshot.containers`` is ``None`` (no Docker source, or the engine is
    down). Same per-row semantics as :class:`ProcessThreshold`, identity = container id.
    """

    __slots__ = ()
    table = "containers"
    noun = "container"

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
        figures = (
            ("percent_above", "memory_percent", percent_above),
            ("used_above", "memory_used", used_above),
        )
        hint = "for a share of the container's limit use percent_above="
        self._setup(figures, for_, clear, level, name, share_hint=hint)

    def _subject(self) -> str:
        return f"a container {'memory' if self.kind == 'bytes' else 'memory % of limit'}"

    def _rows(self, snapshot: Snapshot) -> Sequence[ContainerStats] | None:
        containers = snapshot.containers
        return None if containers is None else containers.items

    @staticmethod
    def _key(row: ContainerStats) -> Hashable:
        return row.id

    def _offender(self, row: ContainerStats, value: float, since: float) -> Offender:
        return Offender(None, row.name, value, since, row.id)


class ProcessCount:
    """At least ``at_least`` processes above a CPU percent (or RSS) at once, sustained.

    ``ProcessCount(cpu_percent_above=50, at_least=2, for_="10s")`` fires when two or more
    processes have each used more than half a core for 10 s (not necessarily the same
    ones). Trigger: count above the value ≥ ``at_least``; hold: count above ``clear`` ≥
    ``at_least``; ``for_``/``cooldown`` as for :class:`Threshold`. The breach's value is the
    count and it names the processes above ``clear``. Inactive while
    ``snapshot.processes`` is ``None``. The rows counted are
    those of :class:`ProcessThreshold` (no kernel thread, not resguard itself, no
    first-scan CPU figure), as for :class:`ProcessThreshold`.
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
        self.field, self.kind, self._value, self._clear = choose_bounds(
            "ProcessCount",
            "processes",
            "process",
            _process_figures(cpu_percent_above, rss_above),
            clear,
        )
        expected = f"expected an int from 1 to {_MAX_PIDS} (the most processes Linux allows)"
        if isinstance(at_least, bool) or not isinstance(at_least, int):
            raise InvalidType(f"at_least={shown(at_least)} is not a count; {expected}")
        if not 1 <= at_least <= _MAX_PIDS:
            raise InvalidValue(f"at_least={shown(at_least)} is not a count; {expected}")
        self.at_least = at_least
        self.metric = f"processes.{self.field}"
        self._get = operator.attrgetter(self.field)
        self.for_s = duration(for_, "for_")
        self.cooldown_s = duration(cooldown, "cooldown")
        self.level = rule_level(level)
        self.name = rule_name(
            name,
            f"{at_least}+ processes {self.field} > {self._value.text}"
            + (f" for {format_duration(self.for_s)}" if self.for_s else ""),
        )
        self.reads = table_reads("processes", self._value)

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
        threshold, clear = resolve_pair(self._value, self._clear, snapshot)
        if processes is not None and (threshold is None or clear is None):
            return None  # the limit a share resolves against is unknown: state kept as is
        if processes is not None:
            assert threshold is not None
            assert clear is not None
            get = self._get
            for process in judged_rows(snapshot, processes, cpu=self.field == "cpu_percent"):
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
        unit = _row_unit(self.field)
        offenders = sorted(
            (Offender(p.pid, p.name, float(get(p)), since, unit=unit) for p in above),
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
            since_wall(snapshot, since),
            now - since,
            "count",
            tuple(offenders),
        )
