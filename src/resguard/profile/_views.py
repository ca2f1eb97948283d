"""How a profile shows itself: the HTML summary of a notebook, and the plot of memory and
CPU over time (two panels on a shared time axis).

The plot draws only series read at every sample (RSS, RSS with children, tracemalloc,
CPU), so its lines share their instants. USS is left out: it is read every
``uss_interval`` (1 s by default) because one read of ``/proc/self/smaps_rollup`` grows
with resident memory (the kernel walks every page): 4–11 ms at 200 MiB and 13–19 ms at
1 GiB, against 0.06–0.27 ms for a whole sample without it (benchmarks/bench_uss.py, 2-core
VM), which at ``interval="100ms"`` would be up to a fifth of a core. A line through its two
or three readings drew flat at 40 MiB while RSS rose by 190 MiB between them.
``peak_uss`` stays in the summary, named with its interval."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from resguard._modules.render import html_table, percent_text
from resguard.units import format_duration, format_size

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from resguard.profile import Profile

__all__ = ["plot", "summary_html"]


_ABSENT_WHEN_NOT_ASKED = frozenset({"peak_uss", "peak_traced", "peak_psi_memory_some_avg10"})
_BYTE_FIGURES = frozenset(
    {
        "baseline_rss",
        "peak_rss",
        "peak_rss_delta",
        "peak_total_rss",
        "peak_children_rss",
        "peak_uss",
        "peak_traced",
        "min_available",
        "limit",
    }
)

_PERCENT_FIGURES = frozenset({"mean_cpu_percent", "peak_cpu_percent", "peak_psi_memory_some_avg10"})


def summary_html(prof: Profile) -> str:
    """The headline figures of *prof* as an HTML table (unknown figures say so)."""
    rows: list[tuple[str, Any]] = []
    for key, value in prof.summary().items():
        if key == "label" or (value is None and key in _ABSENT_WHEN_NOT_ASKED):
            continue
        if value is None:
            rows.append((key, "unknown"))
        elif key == "duration_s":
            rows.append(("duration", format_duration(value)))
        elif key == "peak_uss" and prof.uss_interval_s is not None:
            every = format_duration(prof.uss_interval_s)
            rows.append((f"peak_uss (read every {every})", format_size(value)))
        elif key in _BYTE_FIGURES:
            rows.append((key, format_size(value)))
        elif key in _PERCENT_FIGURES:
            rows.append((key, percent_text(value)))
        elif key == "cpu_seconds":
            rows.append((key, format_duration(value)))
        else:
            rows.append((key, value))
    title = f"resguard profile{': ' + prof.label if prof.label else ''}"
    return html_table(rows, title)


_MIB = 1024.0 * 1024.0


def plot(prof: Profile, figure_class: Any, title: str | None) -> Figure:
    """The figure of *prof* (see :meth:`Profile.plot`), made with *figure_class*."""
    samples = prof.samples
    times = [sample.elapsed_s for sample in samples]
    figure: Figure = figure_class(figsize=(8, 5), layout="constrained")
    memory_axis, cpu_axis = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    _memory_curves(memory_axis, prof, times)
    _peak_and_limit(memory_axis, prof)
    memory_axis.set_ylabel("MiB")
    memory_axis.set_ylim(bottom=0)
    memory_axis.legend(loc="best", fontsize="small")
    memory_axis.grid(alpha=0.3)
    cpu_axis.plot(times, [s.cpu_percent for s in samples], color="tab:gray", drawstyle="steps-pre")
    cpu_axis.set_ylabel("CPU %")
    cpu_axis.set_xlabel("seconds")
    cpu_axis.set_ylim(bottom=0)
    cpu_axis.grid(alpha=0.3)
    heading = title or f"resguard profile{': ' + prof.label if prof.label else ''}"
    figure.suptitle(f"{heading} — {format_duration(prof.duration)}, {len(samples)} samples")
    return figure


def _curve(values: Iterable[int | None]) -> list[float]:
    """MiB; an unknown value is a gap (NaN), not zero."""
    return [float("nan") if value is None else value / _MIB for value in values]


def _memory_curves(axis: Any, prof: Profile, times: list[float]) -> None:
    """RSS, and where they were sampled RSS with children and traced bytes: the series
    read at every sample (USS is not, see the module docstring)."""
    samples = prof.samples
    axis.plot(
        times,
        _curve(s.rss for s in samples),
        label="RSS",
        color="tab:blue",
        marker="." if len(samples) < 50 else None,
    )
    if any(s.children_rss for s in samples):
        axis.plot(
            times,
            _curve(s.total_rss for s in samples),
            label="RSS + children",
            color="tab:purple",
            linestyle="--",
        )
    if any(s.traced_bytes is not None for s in samples):
        axis.plot(
            times,
            [(s.traced_bytes or 0) / _MIB for s in samples],
            label="tracemalloc",
            color="tab:orange",
        )


def _peak_and_limit(axis: Any, prof: Profile) -> None:
    """The peak marked; the limit drawn when it is within reach of the curve, else named."""
    peak = prof.peak_rss
    known = [s for s in prof.samples if s.rss is not None]
    peak_sample = max(known, key=lambda s: s.rss or 0) if known else None
    if peak is not None and peak_sample is not None and peak_sample.rss is not None:
        axis.axhline(peak / _MIB, color="tab:red", linewidth=0.8, linestyle="--")
        axis.plot(
            [peak_sample.elapsed_s],
            [peak_sample.rss / _MIB],
            "o",
            color="tab:red",
            label=f"peak {format_size(peak)} (+{format_size(prof.peak_rss_delta)})",
        )
    limit = prof.limit
    if limit and peak and limit <= 4 * peak:
        axis.axhline(
            limit / _MIB, color="black", linewidth=1.2, label=f"limit {format_size(limit)}"
        )
    elif limit:
        axis.plot([], [], " ", label=f"limit {format_size(limit)} (off scale)")
