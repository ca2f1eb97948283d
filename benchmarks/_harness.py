"""A small timing harness: each figure is printed beside its alternative from the same run.

Every benchmark module exposes ``run(table: Table) -> None`` and adds rows with
:meth:`Table.compare` (timings) or :meth:`Table.note` (other figures); ``benchmarks/run.py``
runs them and prints one Markdown table that can be pasted into docs/performance.md as it
is. A row's target is either plain text (context, never judged) or a :class:`Target`: a
comparison the table evaluates on the row's own figures, so **met** / **missed** is never
typed by hand.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Table", "Target", "empty_call_s", "format_s", "per_call_s"]


def _empty() -> None:
    """The baseline every timing subtracts: the loop and one call of a Python function."""


def _loop_s(fn: Callable[[], object], number: int, timer: Callable[[], float]) -> float:
    start = timer()
    for _ in range(number):
        fn()
    return timer() - start


def per_call_s(
    fn: Callable[[], object],
    *,
    repeat: int = 5,
    min_time_s: float = 0.2,
    timer: Callable[[], float] = time.perf_counter,
    baseline: Callable[[], object] | None = _empty,
) -> float:
    """Net seconds per call of *fn*: the median over *repeat* rounds of at least *min_time_s*,
    each round less the same loop calling an empty function (*baseline*) timed beside it.

    A benchmark wraps what it times in a lambda or closure on both sides of a comparison;
    that call (about 40 ns here) would otherwise be added to both figures and pull every
    ratio towards 1. The net figure can be 0 or below for what costs less than that call.
    ``baseline=None`` gives the gross figure.
    """
    number = 1
    while True:  # find a loop count that runs long enough to time well
        elapsed = _loop_s(fn, number, timer)
        if elapsed >= min_time_s / 5 or number >= 1 << 24:
            break
        number *= 4
    rounds = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            elapsed = _loop_s(fn, number, timer)
            if baseline is not None:
                elapsed -= _loop_s(baseline, number, timer)
            rounds.append(elapsed / number)
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(rounds)


def empty_call_s() -> float:
    """Seconds per call of the empty function that :func:`per_call_s` subtracts."""
    return per_call_s(_empty, baseline=None)


def format_s(seconds: float) -> str:
    """*seconds* in the unit that keeps three or four significant digits (signed)."""
    if seconds < 0:
        return "-" + format_s(-seconds)

    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _format_bound(value: float, unit: str) -> str:
    if unit == "s":
        return format_s(value)
    return f"{value:g}{unit}" if unit.startswith("×") else f"{value:g} {unit}"


@dataclass(frozen=True)
class Target:
    """A target as a comparison: the row's *quantity* against *bound*.

    *quantity* is ``"ours"`` (resguard's figure itself), ``"ours/theirs"`` (resguard's
    figure as a multiple of the alternative's: the cost ratio) or ``"theirs/ours"`` (how
    many times cheaper resguard is). *at_most* says which side of the bound meets it. Build
    one with the class methods, which also write the text the target cell shows.
    """

    quantity: str
    bound: float
    at_most: bool
    text: str

    @classmethod
    def ours_at_most(cls, bound: float, unit: str = "s", *, what: str = "") -> Target:
        """resguard's figure ≤ *bound* (seconds unless *unit* says otherwise)."""
        text = f"{what + ' ' if what else ''}≤ {_format_bound(bound, unit)}"
        return cls("ours", bound, True, text)

    @classmethod
    def ours_at_least(cls, bound: float, unit: str = "s", *, what: str = "") -> Target:
        """resguard's figure ≥ *bound*."""
        text = f"{what + ' ' if what else ''}≥ {_format_bound(bound, unit)}"
        return cls("ours", bound, False, text)

    @classmethod
    def cost_at_most(cls, times: float, *, of: str = "the alternative", text: str = "") -> Target:
        """resguard's figure ≤ *times* the alternative's (a cost ratio)."""
        return cls("ours/theirs", times, True, text or f"≤ {times:g}× {of}")

    @classmethod
    def speedup_at_least(cls, times: float, *, text: str = "") -> Target:
        """The alternative's figure ≥ *times* resguard's (resguard *times* cheaper)."""
        return cls("theirs/ours", times, False, text or f"≥ {times:g}× cheaper")

    @classmethod
    def faster(cls) -> Target:
        """resguard's figure below the alternative's."""
        return cls("theirs/ours", 1.0, False, "faster (> 1×)")

    def value(self, ours: float, theirs: float | None) -> float | None:
        """The quantity this target judges, or None where a figure it needs is missing."""
        if self.quantity == "ours":
            return ours
        if theirs is None:
            return None
        if self.quantity == "ours/theirs":
            return ours / theirs if theirs > 0 else float("inf")
        return theirs / ours if ours > 0 else float("inf")

    def met(self, ours: float | None, theirs: float | None) -> bool | None:
        """Whether the figures meet the target; None when they were not measured."""
        if ours is None:
            return None
        value = self.value(ours, theirs)
        if value is None:
            return None
        if self.quantity == "theirs/ours" and self.bound == 1.0 and not self.at_most:
            return value > 1.0  # "faster" means strictly
        return value <= self.bound if self.at_most else value >= self.bound


@dataclass(frozen=True)
class Row:
    """One printed row; *met* is None for a context row or a figure not measured."""

    what: str
    ours: str
    alternative: str
    theirs: str
    ratio: str
    target: str
    met: bool | None
    judged: bool  # the row had a Target (met None then means: not measured)

    @property
    def verdict(self) -> str:
        if not self.judged:
            return ""
        if self.met is None:
            return "not measured"
        return "**met**" if self.met else "**missed**"


class Table:
    """Rows of (what, resguard figure, alternative, its figure, ratio, target, verdict)."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def compare(
        self,
        what: str,
        ours_s: float,
        alternative: str,
        theirs_s: float,
        target: Target | str = "",
    ) -> float:
        """Add a timing row; the ratio is theirs / ours (above 1 means resguard is faster)."""
        ratio = theirs_s / ours_s if ours_s > 0 else float("inf")
        self._add(
            what,
            format_s(ours_s),
            alternative,
            format_s(theirs_s),
            f"{ratio:.1f}×",
            target,
            ours_s,
            theirs_s,
        )
        return ratio

    def note(
        self,
        what: str,
        ours: str,
        alternative: str = "",
        theirs: str = "",
        ratio: str = "",
        target: Target | str = "",
        *,
        ours_value: float | None = None,
        theirs_value: float | None = None,
    ) -> None:
        """Add a row of figures that are not timings (CPU %, bytes, errors).

        A :class:`Target` is judged on *ours_value* (and *theirs_value*, for a ratio); a
        row without them is "not measured" (a skipped part, a feature not there yet).
        """
        self._add(what, ours, alternative, theirs, ratio, target, ours_value, theirs_value)

    def _add(
        self,
        what: str,
        ours: str,
        alternative: str,
        theirs: str,
        ratio: str,
        target: Target | str,
        ours_value: float | None,
        theirs_value: float | None,
    ) -> None:
        if isinstance(target, Target):
            row = Row(
                what,
                ours,
                alternative,
                theirs,
                ratio,
                target.text,
                target.met(ours_value, theirs_value),
                True,
            )
        else:
            row = Row(what, ours, alternative, theirs, ratio, target, None, False)
        self.rows.append(row)

    def markdown(self) -> str:
        header = (
            "benchmark",
            "resguard",
            "alternative",
            "alternative's figure",
            "speed-up (alt/ours)",
            "target",
            "",
        )
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            cells = (
                row.what,
                row.ours,
                row.alternative,
                row.theirs,
                row.ratio,
                row.target,
                row.verdict,
            )
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line counting the judged targets, then one line per missed or unmeasured one."""
        judged = [row for row in self.rows if row.judged]
        met = sum(1 for row in judged if row.met is True)
        missed = [row for row in judged if row.met is False]
        unmeasured = [row for row in judged if row.met is None]
        lines = [
            f"Targets: {len(judged)} judged, {met} met, {len(missed)} missed, "
            f"{len(unmeasured)} not measured."
        ]
        lines += [f"- missed: {row.what}: {row.ours} (target {row.target})" for row in missed]
        lines += [f"- not measured: {row.what} ({row.ours})" for row in unmeasured]
        return "\n".join(lines)
