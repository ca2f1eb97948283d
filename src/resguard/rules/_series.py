"""A metric's recent history, bucketed with bounded memory, and the slopes of it."""

from __future__ import annotations

import bisect
import collections
import math
from collections.abc import Iterable

from resguard._errors import InvalidType, InvalidValue
from resguard.rules._figures import duration
from resguard.units import shown

__all__ = ["SeriesState", "least_squares_slope", "series_window", "theil_sen_slope"]


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

    def restart(self) -> None:
        """Forget the history (the firing state and the last estimate are the rule's)."""
        self.times.clear()
        self.values.clear()
        if self.slopes is not None:
            self.slopes.clear()
        self.bucket = -math.inf
        self.time_sum = self.value_sum = 0.0
        self.count = 0
        self.slope = None

    def fitted(self, now: float) -> float | None:
        """The trend line's value at *now* (``None`` without a slope): through the means of
        the closed buckets, or with ``robust=True`` through their median intercept (a spike
        moves it no more than it moves the slope)."""
        slope = self.slope
        if slope is None or not self.times:
            return None
        if self.slopes is None:
            count = len(self.times)
            return sum(self.values) / count + slope * (now - sum(self.times) / count)
        intercepts = sorted(x - slope * t for t, x in zip(self.times, self.values, strict=True))
        middle = _median(intercepts)
        return None if middle is None else middle + slope * now

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


def series_window(
    window: object, points: object, min_fill: float, *, fewest_points: int
) -> tuple[float, int, float, float]:
    """Check a trend rule's window: (window_s, points, min_fill, bucket width_s)."""
    window_s = duration(window, "window")
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
