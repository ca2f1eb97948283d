"""Profile the memory and CPU of a block of code: a time series, the peak, a table, a plot.

``with resguard.profile(interval="100ms") as prof: ...`` (or ``@resguard.profile()`` on a
function) samples this process in a background thread while the block runs:

* **RSS** of this process, and the summed RSS of its descendants (``children=True``): what
  the operating system charges, what an OOM killer or a cgroup limit sees;
* **USS** (unique set size, from ``/proc/self/smaps_rollup``) at the slower
  ``uss_interval`` because a read costs 13–19 ms at 1 GiB resident (the kernel walks
  every page; benchmarks/bench_uss.py); it is in the samples and the summary, not in the
  plot, whose lines are all read at every sample;
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
that were asked for. They differ on purpose: ``numpy.zeros(25_000_000)`` (190.7 MiB) is
allocated with ``calloc``, whose large blocks are fresh ``mmap`` pages the kernel maps
lazily, so RSS does not grow until the pages are written, while tracemalloc reports the
full 190.7 MiB at once (numpy reports its data buffers to tracemalloc in its own domain).
``numpy.ones`` writes every page and shows in both. A ``bytearray(n)`` is filled with
zeros by ``memset`` and is resident at once. Conversely memory that C libraries allocate
without telling tracemalloc (a C extension's own ``malloc``, mmap'd model weights) shows in
RSS only. tests/test_profile.py checks each of these statements.

**Overhead** (benchmarks/bench_profile.py, 2-core Linux VM). One sample reads a handful of
small kernel files: about 0.1 ms (70–270 µs measured, the high end on a loaded machine),
about what ``psutil``'s ``memory_info`` + ``cpu_times`` + ``virtual_memory`` cost together.
A block also pays a fixed 1–3 ms (starting the thread, the first and last samples) plus
the USS reads at those two (13–19 ms each at 1 GiB resident).
So a CPU-bound pure-Python loop runs about 0.1 % slower at ``interval="100ms"`` and about
1 % slower at ``"10ms"`` (the sampler briefly takes the GIL); the measured slowdown of a
0.5 s loop stayed within the machine's noise (±5 %) at both intervals.
``tracemalloc=True`` costs far more: an allocation-heavy loop ran about 10× slower.

**Sampling and the GIL.** The sampler is a Python thread, so it cannot sample while C code
holds the GIL (a 200 MiB ``memset`` takes a quarter of a second); the high-water mark above
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
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar, overload

from resguard._errors import InvalidState, InvalidType
from resguard._modules.clock import Clock
from resguard._modules.clockcheck import checked_clock
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard._modules.waiter import Waiter
from resguard.profile._core import (
    FIELDS,
    Cadence,
    Sample,
    check_flag,
    check_interval,
    cpu_percent,
    highest,
    read_hwm_bytes,
    tracing_begin,
    tracing_end,
)
from resguard.snapshot import Sampler
from resguard.units import format_duration, format_size

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Profile", "Sample", "profile"]

Sample.__module__ = __name__  # reprs, pickles and the API docs name the public module

_logger = get_logger("resguard")
_F = TypeVar("_F", bound=Callable[..., Any])
_NOTEBOOK_EXTRA = (
    "pip install 'resguard[notebook]' (from a checkout of resguard: pip install -e '.[notebook]')"
)


class _AlreadyRunning(InvalidState):
    """Entering a profile that is running (the decorator then profiles with a copy)."""


class Profile:
    """Samples this process while a block runs; a context manager and a decorator.

    Made by :func:`profile` (see there for the arguments). After the block:
    :attr:`samples`, :attr:`duration`, :attr:`peak_rss`, :attr:`baseline_rss`,
    :meth:`to_dataframe`, :meth:`to_csv`, :meth:`plot`; in a notebook the object shows an
    HTML summary. A profile can be entered again (or decorate a function called many
    times): each run replaces the previous run's samples. It is not re-entrant.

    *clock* (monotonic seconds, default :func:`time.monotonic`) times the samples and the
    block, *cpu_clock* (default :func:`time.process_time`) this process's CPU seconds; a
    test passes :class:`resguard.testing.ManualClock` for both and drives the sampling
    with :meth:`tick`. *sampler* reads the kernel's files (a :class:`~resguard.Sampler`; by
    default one of its own, timed by *clock*).
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
        clock: Clock = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        interval_s = check_interval(interval, "interval", optional=False)
        assert interval_s is not None
        self.interval_s: float = interval_s
        self.uss_interval_s = check_interval(uss_interval, "uss_interval", optional=True)
        self.children = check_flag(children, "children")
        self.tracemalloc = check_flag(tracemalloc, "tracemalloc")
        if label is not None and not isinstance(label, str):
            raise InvalidType(f"label={label!r} is not a string; expected a name or None")
        self.label = label
        if sampler is not None and not isinstance(sampler, Sampler):
            raise InvalidType(
                f"sampler={sampler!r} is not a resguard.Sampler; expected a Sampler or None"
            )
        self._clock = checked_clock(clock)
        self._cpu_clock = checked_clock(cpu_clock, "cpu_clock")
        self._sampler = sampler if sampler is not None else Sampler(clock=self._clock)
        self._faults = FaultLog(_logger)
        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._running = False
        self._stopping = False
        self._rows: list[Sample] = []
        self._samples: tuple[Sample, ...] = ()
        self._waiter = Waiter()
        self._thread: threading.Thread | None = None
        self._cadence = Cadence(self.interval_s, self.uss_interval_s)
        self._start_s = 0.0
        self._start_cpu_s = 0.0
        self._block_start_s = 0.0
        self._previous: tuple[float, float] | None = None  # (time, CPU seconds) last sampled
        self._hwm_start: int | None = None
        self._hwm_end: int | None = None
        self._traced_peak: int | None = None
        self._duration_s = 0.0
        self._cpu_s = 0.0

    # -- sampling -------------------------------------------------------------------------

    def tick(self) -> Sample | None:
        """Take the sample that is due by the profile's clock, if one is, and return it.

        The background thread calls this each time it wakes; a test that gave the profile
        a :class:`~resguard.testing.ManualClock` advances it and calls this to sample
        without the thread's timing (at most one sample per due time, whoever asks).
        ``None`` when the profile is not running or no sample is due yet.
        """
        with self._tick_lock:
            if not self._running or not self._cadence.due(self._clock()):
                return None
            sample = self._record()
            self._cadence.sampled(self._clock())
            return sample

    def _take(self) -> Sample:
        now = self._clock()
        cpu_s = self._cpu_clock()
        want_uss = self._cadence.uss_due(now)
        snap = self._sampler.sample(uss=want_uss, children=self.children)
        if want_uss:
            self._cadence.uss_read(now)
        percent = cpu_percent(self._previous, now, cpu_s)
        self._previous = (now, cpu_s)
        memory_psi = snap.pressure.memory
        traced = _tracemalloc.get_traced_memory()[0] if self.tracemalloc else None
        return Sample(
            elapsed_s=now - self._start_s,
            rss=snap.process.rss,
            children_rss=snap.process.children_rss,
            uss=snap.process.uss,
            cpu_percent=percent,
            available=snap.memory.available,
            used=snap.memory.used,
            limit=snap.memory.limit,
            psi_memory_some_avg10=memory_psi.some.avg10 if memory_psi is not None else None,
            traced_bytes=traced,
        )

    def _record(self) -> Sample | None:
        try:
            sample = self._take()
        except Exception as error:  # a probe must never break the profiled block
            self._faults.failed("profile", error)
            return None
        with self._lock:
            self._rows.append(sample)
        return sample

    def _loop(self) -> None:
        while True:
            self._waiter.wait_thread(self._cadence.wait_s(self._clock()))
            if self._stopping:
                return
            self.tick()

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
        self._stopping = False
        self._traced_peak = None
        if self.tracemalloc:
            tracing_begin()
        self._hwm_start = read_hwm_bytes()
        self._cadence.stop()  # the first sample reads USS
        self._start_s = self._clock()
        self._previous = None
        self._record()
        self._start_cpu_s = self._cpu_clock()
        self._cadence.start(self._clock())
        self._thread = threading.Thread(target=self._loop, name="resguard-profile", daemon=True)
        self._thread.start()
        self._block_start_s = self._clock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = self._clock()
        cpu_s = self._cpu_clock()
        if not self._running:  # an exit without an entry would unbalance tracemalloc's users
            raise InvalidState("this profile is not running: __exit__ without __enter__")
        self._stopping = True
        self._waiter.wake()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._tick_lock:
            self._cadence.stop()  # the final sample reads USS too
            self._record()
        self._hwm_end = read_hwm_bytes()
        if self.tracemalloc:
            self._traced_peak = _tracemalloc.get_traced_memory()[1]
            tracing_end()
        with self._lock:
            self._samples = tuple(self._rows)
            self._rows = []
            self._running = False
        self._duration_s = end - self._block_start_s
        self._cpu_s = cpu_s - self._start_cpu_s

    # -- decorator ------------------------------------------------------------------------

    def __call__(self, fn: _F) -> _F:
        """Profile each call of *fn* (sync or async); the last call's figures stay here.

        A call that starts while this profile is busy (another thread, recursion) is
        profiled by a fresh copy with the same settings, which is then dropped."""
        return _decorate(self, fn)

    @contextlib.contextmanager
    def _claim(self) -> Iterator[Profile]:
        """Run the block under this profile, or under a copy when this one is running."""
        try:
            target = self.__enter__()
        except _AlreadyRunning:
            target = Profile(
                self.interval_s,
                children=self.children,
                tracemalloc=self.tracemalloc,
                uss_interval=self.uss_interval_s,
                label=self.label,
                sampler=self._sampler,
                clock=self._clock,
                cpu_clock=self._cpu_clock,
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
            return max(self._clock() - self._block_start_s, 0.0)
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
        peak = highest(sample.rss for sample in self.samples)
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
        return highest(sample.total_rss for sample in self.samples)

    @property
    def peak_children_rss(self) -> int | None:
        """The highest sampled summed RSS of this process's descendants, bytes."""
        return highest(sample.children_rss for sample in self.samples)

    @property
    def peak_uss(self) -> int | None:
        """The highest USS read, bytes (``None`` when USS was not sampled). USS is read
        at the first and the last sample and every ``uss_interval`` between, so a peak
        between two reads is missed: compare with :attr:`peak_rss`, read at every sample."""
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
            f"{format_duration(self.duration)}, peak RSS {format_size(self.peak_rss)} "
            f"(+{format_size(self.peak_rss_delta)})>"
        )

    def _repr_html_(self) -> str:
        from resguard.profile._views import summary_html

        return summary_html(self)

    # -- exports --------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """The samples as plain dicts (one per sample, columns as in :class:`Sample`)."""
        return [{name: getattr(sample, name) for name in FIELDS} for sample in self.samples]

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
        return pandas.DataFrame(self.rows(), columns=list(FIELDS))

    def plot(self, *, title: str | None = None) -> Figure:
        """Memory and CPU over time as a matplotlib Figure (two panels, shared time axis).

        The top panel shows RSS (and children, traced bytes when sampled) with the peak
        marked; USS is not drawn (it is read only every ``uss_interval``, see
        :attr:`peak_uss`); the effective limit is drawn when it is within reach of the curve,
        else named in the legend. The bottom panel shows CPU percent. The figure is made
        without pyplot (no GUI, no global state); notebooks show it as PNG.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError(f"Profile.plot() needs matplotlib: {_NOTEBOOK_EXTRA}") from error
        from resguard.profile._views import plot

        return plot(self, Figure, title)


def _decorate(prof: Profile, fn: _F) -> _F:
    """*fn* (sync or async) with each call run under *prof* (see :meth:`Profile.__call__`)."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with prof._claim():
                return await fn(*args, **kwargs)

        async_wrapper.profile = prof  # type: ignore[attr-defined]
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with prof._claim():
            return fn(*args, **kwargs)

    wrapper.profile = prof  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _write_csv(handle: IO[str], samples: Sequence[Sample]) -> None:
    writer = csv.writer(handle)
    writer.writerow(FIELDS)
    for sample in samples:
        writer.writerow(
            ["" if getattr(sample, name) is None else getattr(sample, name) for name in FIELDS]
        )


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
        uss_interval: how often to read USS (``None``: never); a read costs 13–19 ms
            at 1 GiB resident, so it is not read at every sample nor drawn in the plot.
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
