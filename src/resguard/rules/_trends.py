"""Rules on a metric's trend: a leak (growth over a window) and the time to a limit."""

from __future__ import annotations

import abc
import math
import operator
from collections.abc import Callable
from typing import Any, ClassVar

from resguard._errors import InvalidType, InvalidValue
from resguard.rules._culprits import culprit_resource, culprits
from resguard.rules._figures import (
    check_metric,
    compile_getter,
    duration,
    explain,
    metric_kind,
    plain_number,
    rule_level,
    rule_name,
)
from resguard.rules._series import SeriesState, least_squares_slope, series_window
from resguard.rules._verdict import Breach, Level, since_wall
from resguard.snapshot import Snapshot
from resguard.units import format_bytes, format_duration, parse_bytes, shown

__all__ = ["LeakDetector", "TimeToLimit", "Trend"]


class Trend(abc.ABC):
    """What the trend rules share: a metric's samples bucketed over a window and the slope
    of the closed buckets, updated when a bucket closes.

    A fall ends the trend: while the trend matters (the rule fires, or its estimate is
    past its clear line), a sample more than :attr:`fall_share` of a window's worth of the
    trend (slope × window) below where the trend stands (the trend line; the latest
    closed bucket for a forecast) restarts the series from that sample, and a firing rule
    clears there. Memory given back (a reclaim, a process that exited) was
    otherwise judged by the fill before it until enough buckets closed: a forecast kept
    WARNING for seconds at 15 % of the limit, and the ladder climbed all along.
    """

    __slots__ = (
        "_get",
        "level",
        "metric",
        "min_fill",
        "name",
        "points",
        "reads",
        "width_s",
        "window_s",
    )

    fewest: ClassVar[int]  # closed buckets a slope needs
    fall_share: ClassVar[float]  # of the window's trend: a fall below the line that ends it
    _get: Callable[[Snapshot], Any]
    level: Level
    metric: str
    min_fill: float
    name: str
    points: int
    reads: tuple[str, ...]
    width_s: float
    window_s: float

    @abc.abstractmethod
    def _slope(self, state: SeriesState) -> float | None:
        """The slope of *state*'s closed buckets, per second."""

    def _reference(self, state: SeriesState, now: float) -> float | None:
        """Where the trend stands now, that a fall is measured from: the trend line."""
        return state.fitted(now)

    @abc.abstractmethod
    def _matters(self, state: SeriesState) -> bool:
        """Whether the trend is strong enough to fire or keep firing (past the clear line)."""

    def fell(self, state: SeriesState, now: float, value: Any) -> bool:
        """Whether *value* fell by more than the window's trend below the trend line while
        the trend matters (the trend is over): then the series restarts from this sample."""
        slope = state.slope
        if slope is None or not slope > 0 or not self._matters(state):
            return False
        reference = self._reference(state, now)
        if (
            reference is None
            or not float(value) < reference - slope * self.window_s * self.fall_share
        ):
            return False
        state.restart()
        self.feed(state, now, value)
        return True

    def feed(self, state: SeriesState, now: float, value: Any) -> bool:
        """Add a sample to *state*; return whether the closed buckets (so the slope)
        changed. The common case, a sample in the open bucket, is three additions."""
        if now // self.width_s == state.bucket:
            state.time_sum += now
            state.value_sum += value
            state.count += 1
            return False
        if not state.add(now, float(value), self.width_s, self.window_s):
            return False
        enough = (
            len(state.times) >= self.fewest
            and state.span_s() >= self.min_fill * self.window_s - 2 * self.width_s
        )
        state.slope = self._slope(state) if enough else None
        return True


class LeakDetector(Trend):
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
    one 20 % faster is found reliably with noise of ±20 MB. With ``only_above`` the rule
    is quiet (and a firing one clears) while the metric is at or below that figure:
    ``LeakDetector("swap.used", growth="256MiB", window="5m", only_above=0)`` judges swap
    only while some is in use, so a trend that lags behind swap emptied says nothing.
    """

    __slots__ = ("clear", "growth", "kind", "only_above")

    fewest = 8
    fall_share = 1.0  # a window's growth given back: RSS is noisy, the growth small

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
        only_above: float | str | None = None,
    ) -> None:
        self.metric = check_metric(metric)
        self.kind = metric_kind(metric)
        self.only_above = None if only_above is None else self._amount(only_above, "only_above")
        self.growth = self._amount(growth, "growth")
        if self.growth <= 0:
            raise InvalidValue(f"growth={shown(growth)} must be above 0")
        self.clear = self.growth / 2 if clear is None else self._amount(clear, "clear")
        if self.clear > self.growth:
            raise InvalidValue(f"clear={shown(clear)} is above growth={shown(growth)}")
        self.window_s, self.points, self.min_fill, self.width_s = series_window(
            window, points, min_fill, fewest_points=8
        )
        self.level = rule_level(level)
        self._get = operator.attrgetter(metric)
        growth_text = format_bytes(self.growth) if self.kind == "bytes" else f"{self.growth:g}"
        self.name = rule_name(
            name, f"{metric} grows > {growth_text} per {format_duration(self.window_s)}"
        )
        self.reads = (metric,)

    def _amount(self, value: object, what: str) -> float:
        """A growth figure in the metric's unit (a size for a byte metric)."""
        if self.kind != "bytes":
            return plain_number(value, what, f"{self.metric} takes a plain number")
        try:
            return float(parse_bytes(value))  # type: ignore[arg-type]
        except (InvalidValue, InvalidType) as error:
            raise type(error)(f"{what} for {self.metric}: {error}") from None

    def __repr__(self) -> str:
        return f"LeakDetector({shown(self.name)}, level={shown(self.level)})"

    def new_state(self) -> SeriesState:
        return SeriesState(self.points, robust=True)

    def _slope(self, state: SeriesState) -> float | None:
        return state.median_slope()

    def _matters(self, state: SeriesState) -> bool:
        slope = state.slope
        return state.firing_since is not None or (
            slope is not None and slope * self.window_s > self.clear
        )

    def step(self, snapshot: Snapshot, state: SeriesState, now: float) -> Breach | None:
        try:
            value = self._get(snapshot)
        except AttributeError:
            value = None
        if value is None:  # unknown (explained by a fault): a firing leak keeps firing
            if (
                state.firing_since is None
                or state.last_estimate is None
                or not explain(snapshot, self.metric)
            ):
                return None
        elif self.fell(state, now, value):
            state.firing_since = state.last_estimate = None
        else:
            if self.feed(state, now, value):
                estimate = None if state.slope is None else state.slope * self.window_s
                state.last_estimate = estimate
                if state.firing_since is not None:
                    if estimate is None or estimate <= self.clear:
                        state.firing_since = None
                elif estimate is not None and estimate > self.growth:
                    state.firing_since = now
            if self.only_above is not None and value <= self.only_above:
                state.firing_since = None  # e.g. no swap in use: nothing grows now
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
            since_wall(snapshot, since),
            now - since,
            self.kind,
            culprits(snapshot, self.metric, since=since) if culprit_resource(self.metric) else (),
        )


def _limit_getter(limit: object) -> tuple[Callable[[Snapshot], Any], bool]:
    """A reader of a time-to-limit's limit, a metric path or a size; and whether fixed."""
    fixed_limit: float | None = None
    if isinstance(limit, str):
        try:
            fixed_limit = float(parse_bytes(limit))
        except InvalidValue:
            check_metric(limit)
    else:
        try:
            fixed_limit = float(parse_bytes(limit))  # type: ignore[arg-type]
        except (InvalidValue, InvalidType) as error:
            raise type(error)(
                f"limit={shown(limit)} is not a metric path or a size: {error}"
            ) from None
    if fixed_limit is None:
        assert isinstance(limit, str)
        return compile_getter(limit), False
    constant = fixed_limit
    return (lambda snapshot: constant), True


class TimeToLimit(Trend):
    """Seconds until a metric reaches its limit at the measured fill rate.

    ``TimeToLimit(within="5m")`` estimates when ``memory.used`` reaches ``memory.limit``:
    the least-squares slope of the samples of the last ``window`` (bucketed as in
    :class:`LeakDetector`) gives the fill rate, and the estimate is
    ``(limit - current value) / rate`` (infinite when not growing, 0 at or past the limit).
    It fires when the estimate is below ``within`` and, once firing, until it reaches
    ``clear`` (default: 1.5 times ``within``). ``limit`` is a metric path or a size. The
    breach's ``value`` and ``estimate_s`` are the estimate in seconds.
    """

    __slots__ = ("_get_limit", "clear_s", "limit", "within_s")

    fewest = 3
    fall_share = 0.5  # half a window's fill below the latest bucket: half a minute undone

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
        self.metric = check_metric(metric)
        self.within_s = duration(within, "within")
        if self.within_s <= 0:
            raise InvalidValue(
                f"within={shown(within)} can never fire: an estimate is never "
                "below 0 s; expected e.g. '5m'"
            )
        self.clear_s = self.within_s * 1.5 if clear is None else duration(clear, "clear")
        if self.clear_s < self.within_s:
            raise InvalidValue(f"clear={shown(clear)} is shorter than within={shown(within)}")
        self.window_s, self.points, self.min_fill, self.width_s = series_window(
            window, points, min_fill, fewest_points=4
        )
        self.limit = limit
        self._get_limit, fixed = _limit_getter(limit)
        self.level = rule_level(level)
        self._get = compile_getter(metric)
        self.name = rule_name(
            name, f"{metric} reaches {limit} within {format_duration(self.within_s)}"
        )
        self.reads = (metric,) if fixed else (metric, str(limit))

    def __repr__(self) -> str:
        return f"TimeToLimit({shown(self.name)}, level={shown(self.level)})"

    def new_state(self) -> SeriesState:
        return SeriesState(self.points)

    def estimate_s(self, state: SeriesState) -> float | None:
        """The latest estimate in seconds (``inf`` when not filling), ``None`` before enough
        samples; for live views that show it while the rule does not fire."""
        return state.last_estimate

    def _slope(self, state: SeriesState) -> float | None:
        return least_squares_slope(state.times, state.values)

    def _reference(self, state: SeriesState, now: float) -> float | None:
        """The latest closed bucket: a fill that started within the window lies above a
        straight line through all of it, so the line would put the fall too low."""
        return state.values[-1] if state.values else None

    def _matters(self, state: SeriesState) -> bool:
        estimate = state.last_estimate
        return state.firing_since is not None or (estimate is not None and estimate < self.clear_s)

    def step(self, snapshot: Snapshot, state: SeriesState, now: float) -> Breach | None:
        value, limit = self._get(snapshot), self._get_limit(snapshot)
        if value is None or limit is None:
            since, held = state.firing_since, state.last_estimate
            if (
                since is not None
                and held is not None
                and any(explain(snapshot, path) for path in self.reads)
            ):  # unknown: a firing forecast keeps firing with its last estimate
                return self._breach(snapshot, held, since, now)
            state.last_estimate = None
            state.firing_since = None
            return None
        if self.fell(state, now, value):
            state.firing_since = state.last_estimate = None
            return None
        self.feed(state, now, value)
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
        assert since is not None
        return self._breach(snapshot, estimate, since, now)

    def _breach(self, snapshot: Snapshot, estimate: float, since: float, now: float) -> Breach:
        return Breach(
            self.name,
            self.metric,
            "<",
            estimate,
            self.within_s,
            self.level,
            since,
            since_wall(snapshot, since),
            now - since,
            "seconds",
            culprits(snapshot, self.metric, since=since) if culprit_resource(self.metric) else (),
            estimate,
        )
