"""The parts of a profile that decide, with no thread and no clock of their own: the
:class:`Sample` record, when the next sample and USS reading are due (:class:`Cadence`),
the CPU share between two samples, argument checks, and the process-wide share of
tracemalloc."""

from __future__ import annotations

import math
import sys
import threading
import tracemalloc as _tracemalloc
from collections.abc import Iterable

import attrs

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.render import ValueMixin
from resguard.units import parse_duration

__all__ = [
    "FIELDS",
    "Cadence",
    "Sample",
    "check_flag",
    "check_interval",
    "cpu_percent",
    "highest",
    "read_hwm_bytes",
    "tracing_begin",
    "tracing_end",
]

_BYTES = {"unit": "bytes"}
_PERCENT = {"unit": "percent"}


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

    elapsed_s: float = attrs.field(metadata={"unit": "seconds"})
    rss: int | None = attrs.field(metadata=_BYTES)
    children_rss: int | None = attrs.field(metadata=_BYTES)
    uss: int | None = attrs.field(metadata=_BYTES)
    cpu_percent: float = attrs.field(metadata=_PERCENT)
    available: int | None = attrs.field(metadata=_BYTES)
    used: int | None = attrs.field(metadata=_BYTES)
    limit: int | None = attrs.field(metadata=_BYTES)
    psi_memory_some_avg10: float | None = attrs.field(metadata=_PERCENT)
    traced_bytes: int | None = attrs.field(metadata=_BYTES)

    @property
    def total_rss(self) -> int | None:
        """RSS of this process plus its descendants, bytes (``None`` when this process's RSS
        is unknown; descendants of unknown size are left out)."""
        if self.rss is None:
            return None
        return self.rss + (self.children_rss or 0)


FIELDS = tuple(field.name for field in attrs.fields(Sample))


def highest(values: Iterable[int | None]) -> int | None:
    """The largest known value; ``None`` when none is known."""
    known = [value for value in values if value is not None]
    return max(known) if known else None


def read_hwm_bytes() -> int | None:
    """This process's lifetime peak RSS: ``VmHWM`` of ``/proc/self/status``, else
    ``getrusage``'s ``ru_maxrss`` where the platform has it (macOS, the BSDs), else ``None``."""
    try:
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _maxrss_bytes()


def _maxrss_bytes() -> int | None:
    """``ru_maxrss`` in bytes (macOS counts bytes, Linux and the BSDs KiB); ``None``
    without the resource module (Windows) or when the call fails."""
    try:
        import resource
    except ImportError:
        return None
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(peak, int) or peak <= 0:
        return None
    return peak if sys.platform == "darwin" else peak * 1024


_MIN_INTERVAL_S = 0.001  # below this the sampler thread is a busy loop


def check_interval(value: float | str | None, what: str, *, optional: bool) -> float | None:
    """Seconds of a sampling interval given as ``"100ms"`` or seconds (``None`` where
    *optional*); an interval below 1 ms is refused: it would keep a core busy."""
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


def check_flag(value: object, what: str) -> bool:
    """A bool argument; a string such as ``"false"`` (which is truthy) is refused."""
    if not isinstance(value, bool):
        raise InvalidType(f"{what}={value!r} is not a bool; expected True or False")
    return value


def cpu_percent(previous: tuple[float, float] | None, now_s: float, cpu_s: float) -> float:
    """This process's CPU percent (100 = one core) between the *previous* ``(time, CPU
    seconds)`` and now; 0 for the first sample or when no time passed."""
    if previous is None:
        return 0.0
    elapsed = now_s - previous[0]
    return max(100.0 * (cpu_s - previous[1]) / elapsed, 0.0) if elapsed > 0 else 0.0


class Cadence:
    """When the next sample and the next USS reading are due, by the profile's clock.

    A sample that falls behind (the GIL held by C code for longer than an interval) is
    skipped, not made up for by a burst of samples.
    """

    __slots__ = ("_next_s", "_next_uss_s", "interval_s", "uss_interval_s")

    def __init__(self, interval_s: float, uss_interval_s: float | None) -> None:
        self.interval_s = interval_s
        self.uss_interval_s = uss_interval_s
        self._next_s = math.inf
        self._next_uss_s = -math.inf

    def stop(self) -> None:
        """No sample is due until :meth:`start`; the next one (the first or the final
        sample of a block) reads USS."""
        self._next_s = math.inf
        self._next_uss_s = -math.inf

    def start(self, now_s: float) -> None:
        """Sampling starts at *now_s*: the next sample is due one interval on."""
        self._next_s = now_s + self.interval_s

    def due(self, now_s: float) -> bool:
        """Whether a sample is due at *now_s*."""
        return now_s >= self._next_s

    def wait_s(self, now_s: float) -> float:
        """Seconds from *now_s* until the next sample is due (0: now)."""
        return max(self._next_s - now_s, 0.0)

    def sampled(self, now_s: float) -> None:
        """A sample was taken; *now_s* is the time after it."""
        self._next_s += self.interval_s
        if self._next_s < now_s:  # fell behind: skip, do not burst
            self._next_s = now_s + self.interval_s

    def uss_due(self, now_s: float) -> bool:
        """Whether the sample at *now_s* should read USS (it costs milliseconds)."""
        return self.uss_interval_s is not None and now_s >= self._next_uss_s

    def uss_read(self, now_s: float) -> None:
        """USS was read at *now_s*: the next read is one USS interval on."""
        if self.uss_interval_s is not None:
            self._next_uss_s = now_s + self.uss_interval_s


_tracing_lock = threading.Lock()
_tracing_users = 0
_tracing_ours = False


def tracing_begin() -> None:
    """Start tracemalloc for a profile, or share tracing that is on.

    tracemalloc is process-wide: overlapping traced profiles share one trace, and each
    start resets the peak (an overlapping profile's ``peak_traced`` covers from the later
    start). Tracing that was on before stays on."""
    global _tracing_users, _tracing_ours
    with _tracing_lock:
        if _tracing_users == 0:
            if _tracemalloc.is_tracing():
                _tracing_ours = False
            else:
                _tracemalloc.start()
                _tracing_ours = True
        _tracemalloc.reset_peak()
        _tracing_users += 1


def tracing_end() -> None:
    """A profile is done with tracing; the last one stops what a profile started."""
    global _tracing_users, _tracing_ours
    with _tracing_lock:
        _tracing_users -= 1
        if _tracing_users == 0 and _tracing_ours:
            _tracemalloc.stop()
            _tracing_ours = False
