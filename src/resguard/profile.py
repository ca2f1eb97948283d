"""Profile the memory and CPU of a block of code: a time series, the peak, a table, a plot.

``with resguard.profile(interval="100ms") as prof: ...`` (or ``@resguard.profile()`` on a
function) samples this process in a background thread while the block runs:

* **RSS** of this process, and the summed RSS of its descendants (``children=True``): what
  the operating system charges, what an OOM killer or a cgroup limit sees;
* **USS** (unique set size, from ``/proc/self/smaps``) at the slower ``uss_interval``
  because reading it costs milliseconds;
* **CPU percent** of this process between two samples (100 = one full core, all threads);
* the machine's **headroom**: ``memory.available`` and ``memory.limit`` of a
  :class:`resguard.Snapshot` (cgroup-aware), and **PSI** memory ``some avg10``;
* with ``tracemalloc=True``, the bytes **traced by** :mod:`tracemalloc` (Python-level
  allocations, including numpy's, which registers its buffers with tracemalloc).

The block runs exactly once. A sample is taken just before and just after it, so even a
1 µs block has two samples, and the peak always includes the final one. Between samples the
kernel's high-water mark (``VmHWM``) is consulted: when the block pushed this process's RSS
above any earlier peak of its life, ``peak_rss`` is that exact peak even if it fell between
two samples.

**Two views of memory.** RSS counts pages that are resident; tracemalloc counts bytes
that were asked for. They differ on purpose: ``numpy.zeros(25_000_000)`` (200 MB) is
allocated with ``calloc``, whose large blocks are fresh ``mmap`` pages the kernel maps
lazily, so RSS does not grow until the pages are written, while tracemalloc reports the
full 200 MB at once (numpy reports its data buffers to tracemalloc in its own domain).
``numpy.ones`` writes every page and shows in both. A ``bytearray(n)`` is filled with
zeros by ``memset`` and is resident at once. Conversely memory that C libraries allocate
without telling tracemalloc (a C extension's own ``malloc``, mmap'd model weights) shows in
RSS only. tests/test_profile.py checks each of these statements.

**Overhead** (benchmarks/bench_profile.py, 2-core Linux VM). One sample reads a handful of
small kernel files: about 0.1 ms (70–270 µs measured, the high end on a loaded machine),
about what ``psutil``'s ``memory_info`` + ``cpu_times`` + ``virtual_memory`` cost together.
A block also pays a fixed 1–3 ms (starting the thread, the first and last samples, USS).
So a CPU-bound pure-Python loop runs about 0.1 % slower at ``interval="100ms"`` and about
1 % slower at ``"10ms"`` (the sampler briefly takes the GIL); the measured slowdown of a
0.5 s loop stayed within the machine's noise (±5 %) at both intervals.
``tracemalloc=True`` costs far more: an allocation-heavy loop ran about 10× slower.

**Sampling and the GIL.** The sampler is a Python thread, so it cannot sample while C code
holds the GIL (a 200 MB ``memset`` takes a quarter of a second); the high-water mark above
still catches such a block's peak when it is a new one.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import inspect
import os
import sys
import threading
import time
import tracemalloc as _tracemalloc
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar, overload

import attrs

from resguard._errors import InvalidState, InvalidType, InvalidValue
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard._modules.render import ValueMixin, html_table
from resguard.snapshot import Sampler, Snapshot
from resguard.units import format_bytes, format_duration, parse_duration

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Profile", "Sample", "profile"]

_logger = get_logger("resguard")
_F = TypeVar("_F", bound=Callable[..., Any])
_NOTEBOOK_EXTRA = "pip install 'resguard[notebook]'"


@attrs.frozen
class Sample(ValueMixin):
    """One reading while a profiled block ran.

    ``elapsed_s`` is seconds since the block started; ``rss``/``children_rss``/``uss`` are
    bytes of this process and of its descendants (``uss`` only on samples where it was read,
    else ``None``); ``cpu_percent`` is this process's CPU use since the previous sample
    (100 = one core); ``available``/``used``/``limit`` are the effective memory figures of
    the machine or cgroup; ``psi_memory_some_avg10`` is a percent (``None`` without PSI);
    ``traced_bytes`` is tracemalloc's current total (``None`` unless ``tracemalloc=True``).
    A figure the kernel files could not give (a damaged or missing source) is ``None``:
    unknown, never zero.
    """

    elapsed_s: float
    rss: int | None
    children_rss: int | None
    uss: int | None
    cpu_percent: float
    available: int | None
    used: int | None
    limit: int | None
    psi_memory_some_avg10: float | None
    traced_bytes: int | None

    @property
    def total_rss(self) -> int | None:
        """RSS of this process plus its descendants, bytes (``None`` when this process's RSS
        is unknown; descendants of unknown size are left out)."""
        if self.rss is None:
            return None
        return self.rss + (self.children_rss or 0)


_FIELDS = tuple(field.name for field in attrs.fields(Sample))


def _highest(values: Iterable[int | None]) -> int | None:
    """The largest known value; ``None`` when none is known."""
    known = [value for value in values if value is not None]
    return max(known) if known else None


def _read_hwm_bytes() -> int | None:
    """This process's lifetime peak RSS (``VmHWM``), or ``None`` where it is not readable."""
    try:
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


_MIN_INTERVAL_S = 0.001  # below this the sampler thread is a busy loop


def _check_interval(value: float | str | None, what: str, *, optional: bool) -> float | None:
    if value is None:
        if optional:
            return None
        raise InvalidType(f"{what}=None is not a duration; expected e.g. '100ms'")
    try:
        seconds = parse_duration(value)
    except InvalidType as error:
        raise InvalidType(f"{what}: {error}") from None
    except InvalidValue as error:
        raise InvalidValue(f"{what}: {error}") from None
    if seconds <= 0:
        raise InvalidValue(f"{what}={value!r} must be above zero, e.g. '100ms'")
    if seconds < _MIN_INTERVAL_S:
        raise InvalidValue(
            f"{what}={value!r} is below the 1ms floor (a shorter interval "
            f"would keep a core busy sampling); expected e.g. '100ms'"
        )
    return seconds


def _check_flag(value: object, what: str) -> bool:
    """A bool argument; a string such as ``"false"`` (which is truthy) is refused."""
    if not isinstance(value, bool):
        raise InvalidType(f"{what}={value!r} is not a bool; expected True or False")
    return value


_tracing_lock = threading.Lock()
_tracing_users = 0
_tracing_ours = False


def _tracing_begin() -> bool:
    """Start tracemalloc for a profile (or share tracing that is on); True if we started it.

    tracemalloc is process-wide: overlapping traced profiles share one trace, and each
    start resets the peak (an overlapping profile's ``peak_traced`` covers from the later
    start). Tracing that was on before stays on."""
    global _tracing_users, _tracing_ours
    with _tracing_lock:
        started = False
        if _tracing_users == 0:
            if _tracemalloc.is_tracing():
                _tracing_ours = False
            else:
                _tracemalloc.start()
                _tracing_ours = started = True
        _tracemalloc.reset_peak()
        _tracing_users += 1
        return started


def _tracing_end() -> None:
    global _tracing_users, _tracing_ours
    with _tracing_lock:
        _tracing_users -= 1
        if _tracing_users == 0 and _tracing_ours:
            _tracemalloc.stop()
            _tracing_ours = False


class _AlreadyRunning(InvalidState):
    """Entering a profile that is running (the decorator then profiles with a copy)."""


class Profile:
    """Samples this process while a block runs; a context manager and a decorator.

    Made by :func:`profile` (see there for the arguments). After the block:
    :attr:`samples`, :attr:`duration`, :attr:`peak_rss`, :attr:`baseline_rss`,
    :meth:`to_dataframe`, :meth:`to_csv`, :meth:`plot`; in a notebook the object shows an
    HTML summary. A profile can be entered again (or decorate a function called many
    times): each run replaces the previous run's samples. It is not re-entrant.
    """

    def __init__(
        self,
        interval: float | str = "100ms",
        *,
        children: bool = True,
        tracemalloc: bool = False,
        uss_interval: float | str | None = "1s",
        label: str | None = None,
        sampler: Sampler | None = None,
    ) -> None:
        self.interval_s = _check_interval(interval, "interval", optional=False)
        self.uss_interval_s = _check_interval(uss_interval, "uss_interval", optional=True)
        self.children = _check_flag(children, "children")
        self.tracemalloc = _check_flag(tracemalloc, "tracemalloc")
        if label is not None and not isinstance(label, str):
            raise InvalidType(f"label={label!r} is not a string; expected a name or None")
        self.label = label
        if sampler is not None and not isinstance(sampler, Sampler):
            raise InvalidType(
                f"sampler={sampler!r} is not a resguard.Sampler; expected a Sampler or None"
            )
        self._sampler = sampler if sampler is not None else Sampler()
        self._faults = FaultLog(_logger)
        self._lock = threading.Lock()
        self._running = False
        self._rows: list[Sample] = []
        self._samples: tuple[Sample, ...] = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_monotonic = 0.0
        self._start_cpu_s = 0.0
        self._block_start = 0.0
        self._previous: tuple[float, float] = (0.0, 0.0)
        self._next_uss = 0.0
        self._hwm_start: int | None = None
        self._hwm_end: int | None = None
        self._traced_peak: int | None = None
        self._started_tracing = False
        self._duration_s = 0.0
        self._cpu_s = 0.0
        self._last_snapshot: Snapshot | None = None

    # -- sampling -------------------------------------------------------------------------

    def _take(self) -> Sample:
        now = time.monotonic()
        cpu_s = time.process_time()
        want_uss = self.uss_interval_s is not None and now >= self._next_uss
        snap = self._sampler.sample(uss=want_uss, children=self.children)
        if want_uss and self.uss_interval_s is not None:
            self._next_uss = now + self.uss_interval_s
        previous_now, previous_cpu = self._previous
        elapsed = now - previous_now
        cpu_percent = (
            100.0 * (cpu_s - previous_cpu) / elapsed if elapsed > 0 and previous_now else 0.0
        )
        self._previous = (now, cpu_s)
        memory_psi = snap.pressure.memory
        traced = _tracemalloc.get_traced_memory()[0] if self.tracemalloc else None
        self._last_snapshot = snap
        return Sample(
            elapsed_s=now - self._start_monotonic,
            rss=snap.process.rss,
            children_rss=snap.process.children_rss,
            uss=snap.process.uss,
            cpu_percent=max(cpu_percent, 0.0),
            available=snap.memory.available,
            used=snap.memory.used,
            limit=snap.memory.limit,
            psi_memory_some_avg10=memory_psi.some.avg10 if memory_psi is not None else None,
            traced_bytes=traced,
        )

    def _record(self) -> None:
        try:
            sample = self._take()
        except Exception as error:  # a probe must never break the profiled block
            self._faults.failed("profile", error)
            return
        with self._lock:
            self._rows.append(sample)

    def _loop(self) -> None:
        assert self.interval_s is not None
        deadline = time.monotonic() + self.interval_s
        while not self._stop.wait(max(deadline - time.monotonic(), 0.0)):
            self._record()
            deadline += self.interval_s
            now = time.monotonic()
            if deadline < now:  # fell behind (a long GIL hold): skip, do not burst
                deadline = now + self.interval_s

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> Profile:
        with self._lock:
            if self._running:
                raise _AlreadyRunning(
                    "this profile is already running; profiles are not "
                    "re-entrant (make another one with resguard.profile())"
                )
            self._running = True
            self._rows = []
        self._stop.clear()
        self._traced_peak = None
        self._started_tracing = False
        if self.tracemalloc:
            self._started_tracing = _tracing_begin()
        self._hwm_start = _read_hwm_bytes()
        self._next_uss = 0.0
        self._start_monotonic = time.monotonic()
        self._previous = (0.0, 0.0)
        self._record()
        self._start_cpu_s = time.process_time()
        self._thread = threading.Thread(target=self._loop, name="resguard-profile", daemon=True)
        self._thread.start()
        self._block_start = time.monotonic()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = time.monotonic()
        cpu_s = time.process_time()
        if not self._running:  # an exit without an entry would unbalance tracemalloc's users
            raise InvalidState("this profile is not running: __exit__ without __enter__")
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._next_uss = 0.0  # the final sample reads USS too
        self._record()
        self._hwm_end = _read_hwm_bytes()
        if self.tracemalloc:
            self._traced_peak = _tracemalloc.get_traced_memory()[1]
            _tracing_end()
        with self._lock:
            self._samples = tuple(self._rows)
            self._rows = []
            self._running = False
        self._duration_s = end - self._block_start
        self._cpu_s = cpu_s - self._start_cpu_s

    # -- decorator ------------------------------------------------------------------------

    def __call__(self, fn: _F) -> _F:
        """Profile each call of *fn* (sync or async); the last call's figures stay here.

        A call that starts while this profile is busy (another thread, recursion) is
        profiled by a fresh copy with the same settings, which is then dropped."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._claim():
                    return await fn(*args, **kwargs)

            async_wrapper.profile = self  # type: ignore[attr-defined]
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._claim():
                return fn(*args, **kwargs)

        wrapper.profile = self  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    @contextlib.contextmanager
    def _claim(self) -> Iterator[Profile]:
        """Run the block under this profile, or under a copy when this one is running."""
        try:
            target = self.__enter__()
        except _AlreadyRunning:
            target = Profile(
                self.interval_s or 0.1,
                children=self.children,
                tracemalloc=self.tracemalloc,
                uss_interval=self.uss_interval_s,
                label=self.label,
            ).__enter__()
        try:
            yield target
        except BaseException as error:
            target.__exit__(type(error), error, error.__traceback__)
            raise
        target.__exit__(None, None, None)

    # -- results --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    @property
    def samples(self) -> tuple[Sample, ...]:
        """The samples of the last run (while running: those taken so far)."""
        if self._running:
            with self._lock:
                return tuple(self._rows)
        return self._samples

    @property
    def duration(self) -> float:
        """Seconds the block ran (the last run; while running, so far)."""
        if self._running:
            return max(time.monotonic() - self._block_start, 0.0)
        return self._duration_s

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds this process used while the block ran (all threads)."""
        return self._cpu_s

    @property
    def baseline_rss(self) -> int | None:
        """This process's RSS just before the block started, bytes (``None`` before any run
        or when it could not be read)."""
        samples = self.samples
        return samples[0].rss if samples else None

    @property
    def peak_rss(self) -> int | None:
        """The highest RSS of this process while the block ran, bytes (``None`` when no
        sample could read it).

        The highest sample, or the kernel's high-water mark when the block set a new
        lifetime peak (so a spike between two samples is not missed).
        """
        peak = _highest(sample.rss for sample in self.samples)
        start, end = self._hwm_start, self._hwm_end
        if not self._running and start is not None and end is not None and end > start:
            peak = end if peak is None else max(peak, end)
        return peak

    @property
    def peak_rss_delta(self) -> int | None:
        """``peak_rss - baseline_rss``: what the block added at its peak, bytes (``None``
        when either is unknown)."""
        peak, baseline = self.peak_rss, self.baseline_rss
        if peak is None or baseline is None:
            return None
        return peak - baseline

    @property
    def peak_total_rss(self) -> int | None:
        """The highest sampled RSS of this process plus its descendants, bytes."""
        return _highest(sample.total_rss for sample in self.samples)

    @property
    def peak_children_rss(self) -> int | None:
        """The highest sampled summed RSS of this process's descendants, bytes."""
        return _highest(sample.children_rss for sample in self.samples)

    @property
    def peak_uss(self) -> int | None:
        """The highest USS read (``None`` when USS was not sampled)."""
        values = [sample.uss for sample in self.samples if sample.uss is not None]
        return max(values) if values else None

    @property
    def peak_traced(self) -> int | None:
        """tracemalloc's peak of traced bytes during the block (``tracemalloc=True`` only).

        The peak is tracemalloc's own (exact, not sampled); it counts what was traced while
        the block ran, including memory traced before the block that was still alive."""
        return self._traced_peak

    @property
    def min_available(self) -> int | None:
        """The lowest available memory seen (bytes, effective limit; ``None`` if unknown)."""
        known = [sample.available for sample in self.samples if sample.available is not None]
        return min(known) if known else None

    @property
    def limit(self) -> int | None:
        """The effective memory limit at the end of the block, bytes (the last one read;
        ``None`` if unknown)."""
        known = [sample.limit for sample in self.samples if sample.limit is not None]
        return known[-1] if known else None

    @property
    def mean_cpu_percent(self) -> float:
        """CPU seconds over wall seconds of the block, in percent (100 = one core)."""
        return 100.0 * self._cpu_s / self._duration_s if self._duration_s > 0 else 0.0

    @property
    def peak_cpu_percent(self) -> float:
        """The highest CPU percent between two samples."""
        return max((sample.cpu_percent for sample in self.samples[1:]), default=0.0)

    def summary(self) -> dict[str, Any]:
        """The headline figures as a plain dict (bytes, seconds, percent)."""
        psi = [s.psi_memory_some_avg10 for s in self.samples if s.psi_memory_some_avg10 is not None]
        return {
            "label": self.label,
            "duration_s": self.duration,
            "samples": len(self.samples),
            "baseline_rss": self.baseline_rss,
            "peak_rss": self.peak_rss,
            "peak_rss_delta": self.peak_rss_delta,
            "peak_total_rss": self.peak_total_rss,
            "peak_children_rss": self.peak_children_rss,
            "peak_uss": self.peak_uss,
            "peak_traced": self.peak_traced,
            "cpu_seconds": self.cpu_seconds,
            "mean_cpu_percent": self.mean_cpu_percent,
            "peak_cpu_percent": self.peak_cpu_percent,
            "min_available": self.min_available,
            "limit": self.limit,
            "peak_psi_memory_some_avg10": max(psi) if psi else None,
        }

    def __repr__(self) -> str:
        state = "running" if self._running else f"{len(self._samples)} samples"
        return (
            f"<resguard.Profile {self.label or ''}{' ' if self.label else ''}{state}, "
            f"{format_duration(self.duration)}, peak RSS {_bytes_text(self.peak_rss)} "
            f"(+{_bytes_text(self.peak_rss_delta)})>"
        )

    def _repr_html_(self) -> str:
        rows: list[tuple[str, Any]] = []
        for key, value in self.summary().items():
            if key == "label" or (value is None and key in _ABSENT_WHEN_NOT_ASKED):
                continue
            if value is None:
                rows.append((key, "unknown"))
            elif key == "duration_s":
                rows.append(("duration", format_duration(value)))
            elif key in {
                "baseline_rss",
                "peak_rss",
                "peak_rss_delta",
                "peak_total_rss",
                "peak_children_rss",
                "peak_uss",
                "peak_traced",
                "min_available",
                "limit",
            }:
                rows.append((key, format_bytes(value)))
            else:
                rows.append((key, value))
        title = f"resguard profile{': ' + self.label if self.label else ''}"
        return html_table(rows, title)

    # -- exports --------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """The samples as plain dicts (one per sample, columns as in :class:`Sample`)."""
        return [{name: getattr(sample, name) for name in _FIELDS} for sample in self.samples]

    def to_csv(self, path: str | os.PathLike[str] | IO[str]) -> None:
        """Write the samples as CSV with a header row (stdlib only; empty cells for None)."""
        if hasattr(path, "write"):
            _write_csv(path, self.samples)  # type: ignore[arg-type]
            return
        if not isinstance(path, (str, os.PathLike)):  # an int would be a file descriptor
            raise InvalidType(f"to_csv({path!r}): expected a path or a text file")
        with open(path, "w", newline="", encoding="utf-8") as handle:
            _write_csv(handle, self.samples)

    def to_dataframe(self) -> Any:
        """The samples as a ``pandas.DataFrame`` (one row per sample, ``elapsed_s`` first)."""
        try:
            import pandas
        except ImportError as error:
            raise ImportError(f"Profile.to_dataframe() needs pandas: {_NOTEBOOK_EXTRA}") from error
        return pandas.DataFrame(self.rows(), columns=list(_FIELDS))

    def plot(self, *, title: str | None = None) -> Figure:
        """Memory and CPU over time as a matplotlib Figure (two panels, shared time axis).

        The top panel shows RSS (and USS, children, traced bytes when sampled) with the
        peak marked; the effective limit is drawn when it is within reach of the curve,
        else named in the legend. The bottom panel shows CPU percent. The figure is made
        without pyplot (no GUI, no global state); notebooks show it as PNG.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError(f"Profile.plot() needs matplotlib: {_NOTEBOOK_EXTRA}") from error
        return _plot(self, Figure, title)


_ABSENT_WHEN_NOT_ASKED = frozenset({"peak_uss", "peak_traced", "peak_psi_memory_some_avg10"})


def _bytes_text(value: int | None) -> str:
    return "unknown" if value is None else format_bytes(value)


def _write_csv(handle: IO[str], samples: Sequence[Sample]) -> None:
    writer = csv.writer(handle)
    writer.writerow(_FIELDS)
    for sample in samples:
        writer.writerow(
            ["" if getattr(sample, name) is None else getattr(sample, name) for name in _FIELDS]
        )


def _plot(prof: Profile, figure_class: Any, title: str | None) -> Figure:
    samples = prof.samples
    mib = 1024.0 * 1024.0
    times = [sample.elapsed_s for sample in samples]

    def curve(values: Iterable[int | None]) -> list[float]:  # unknown: a gap, not zero
        return [float("nan") if value is None else value / mib for value in values]

    figure: Figure = figure_class(figsize=(8, 5), layout="constrained")
    memory_axis, cpu_axis = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    memory_axis.plot(
        times,
        curve(s.rss for s in samples),
        label="RSS",
        color="tab:blue",
        marker="." if len(samples) < 50 else None,
    )
    if any(s.children_rss for s in samples):
        memory_axis.plot(
            times,
            curve(s.total_rss for s in samples),
            label="RSS + children",
            color="tab:purple",
            linestyle="--",
        )
    uss = [(s.elapsed_s, s.uss / mib) for s in samples if s.uss is not None]
    if uss:
        memory_axis.plot(
            *zip(*uss, strict=True), label="USS", color="tab:green", linestyle=":", marker="x"
        )
    if any(s.traced_bytes is not None for s in samples):
        memory_axis.plot(
            times,
            [(s.traced_bytes or 0) / mib for s in samples],
            label="tracemalloc",
            color="tab:orange",
        )
    peak = prof.peak_rss
    known = [s for s in samples if s.rss is not None]
    peak_sample = max(known, key=lambda s: s.rss or 0) if known else None
    if peak is not None and peak_sample is not None and peak_sample.rss is not None:
        memory_axis.axhline(peak / mib, color="tab:red", linewidth=0.8, linestyle="--")
        memory_axis.plot(
            [peak_sample.elapsed_s],
            [peak_sample.rss / mib],
            "o",
            color="tab:red",
            label=f"peak {format_bytes(peak)} (+{_bytes_text(prof.peak_rss_delta)})",
        )
    limit = prof.limit
    if limit and peak and limit <= 4 * peak:
        memory_axis.axhline(
            limit / mib, color="black", linewidth=1.2, label=f"limit {format_bytes(limit)}"
        )
    elif limit:
        memory_axis.plot([], [], " ", label=f"limit {format_bytes(limit)} (off scale)")
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


@overload
def profile(fn: _F, /) -> _F: ...
@overload
def profile(
    fn: None = None,
    /,
    *,
    interval: float | str = "100ms",
    children: bool = True,
    tracemalloc: bool = False,
    uss_interval: float | str | None = "1s",
    label: str | None = None,
) -> Profile: ...
def profile(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    interval: float | str = "100ms",
    children: bool = True,
    tracemalloc: bool = False,
    uss_interval: float | str | None = "1s",
    label: str | None = None,
) -> Any:
    """Profile memory and CPU of a block: ``with profile() as prof:`` or ``@profile()``.

    Arguments:
        interval: time between samples (``"100ms"``; ``"10ms"`` for short blocks).
        children: add the RSS of descendant processes (``Sample.children_rss``).
        tracemalloc: also trace Python-level allocations (:attr:`Profile.peak_traced`);
            costly, see the module docstring. Tracing already on is kept on.
        uss_interval: how often to read USS (``None``: never); it costs milliseconds.
        label: a name shown in the summary and the plot.

    ``@profile`` without parentheses decorates with the defaults; the wrapped function's
    ``.profile`` attribute is the :class:`Profile` holding the last call's figures.
    Overhead: about 0.1 ms per sample plus 1–3 ms per block, i.e. about 0.1 % of a
    CPU-bound loop at 100 ms and 1 % at 10 ms (benchmarks/bench_profile.py).
    """
    if fn is not None and not callable(fn):
        raise InvalidType(
            f"profile({fn!r}): expected a function to decorate or keyword "
            f"arguments such as interval='100ms'"
        )
    made = Profile(
        interval, children=children, tracemalloc=tracemalloc, uss_interval=uss_interval, label=label
    )
    if fn is not None:
        return made(fn)
    return made


class _CallableModule(types.ModuleType):
    """Makes ``resguard.profile(...)`` work whether the package attribute names this module
    or the function: importing a submodule rebinds the package attribute to the module."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return profile(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
