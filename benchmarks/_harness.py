"""A small timing harness: each figure is printed beside its alternative from the same run.

Every benchmark module exposes ``run(table: Table) -> None`` and adds rows with
:meth:`Table.compare`; ``benchmarks/run.py`` runs them and prints one Markdown table that
can be pasted into docs/performance.md as it is.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

__all__ = ["Table", "per_call_s"]


def per_call_s(fn: Callable[[], object], *, repeat: int = 5, min_time_s: float = 0.2) -> float:
    """Seconds per call of *fn*: the median over *repeat* rounds of at least *min_time_s*."""
    number = 1
    while True:  # find a loop count that runs long enough to time well
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s / 5 or number >= 1 << 24:
            break
        number *= 4
    rounds = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            rounds.append((time.perf_counter() - start) / number)
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(rounds)


def _format_s(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


class Table:
    """Rows of (what, resguard figure, alternative, its figure, ratio, target)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str, str]] = []

    def compare(
        self, what: str, ours_s: float, alternative: str, theirs_s: float, target: str = ""
    ) -> float:
        """Add a timing row; the ratio is theirs / ours (above 1 means resguard is faster)."""
        ratio = theirs_s / ours_s if ours_s > 0 else float("inf")
        self.rows.append(
            (what, _format_s(ours_s), alternative, _format_s(theirs_s), f"{ratio:.1f}×", target)
        )
        return ratio

    def note(
        self,
        what: str,
        ours: str,
        alternative: str = "",
        theirs: str = "",
        ratio: str = "",
        target: str = "",
    ) -> None:
        """Add a row of figures that are not timings (CPU %, latency medians, errors)."""
        self.rows.append((what, ours, alternative, theirs, ratio, target))

    def markdown(self) -> str:
        header = (
            "benchmark",
            "resguard",
            "alternative",
            "alternative's figure",
            "speed-up (alt/ours)",
            "target",
        )
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows
        ]
        return "\n".join(lines)
