"""What lazy models and pools share: where room comes from, and their argument checks."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard.units import named, parse_bytes, parse_duration

__all__ = [
    "DEFAULT_WAIT_S",
    "HeadroomSource",
    "check_duration",
    "check_flag",
    "faults",
    "headroom_from",
    "log",
    "machine_headroom_bytes",
    "size_of",
]

log = get_logger("resguard.models")
faults = FaultLog(log)
DEFAULT_WAIT_S = 600.0  # how long a caller waits for a load that another caller runs


@runtime_checkable
class HeadroomSource(Protocol):
    """Where a model load asks for room: anything with ``headroom_bytes()``.

    A :class:`resguard.Guard` is one (this process's headroom, minus its reservations), so
    is a :class:`resguard.ModelPool` and :class:`resguard.ollama.OllamaHeadroom` (where an
    Ollama server runs). Write one for numbers resguard cannot read itself, e.g. the host
    of a remote Ollama::

        class NodeHeadroom:
            def headroom_bytes(self) -> int | None:
                return read_mem_available_from_node_exporter()  # None: unknown

        OllamaModels("http://gpu-box:11434", headroom=NodeHeadroom())

    ``None`` means unknown, never 0: the load is admitted and one warning is logged.
    """

    def headroom_bytes(self) -> int | None:
        """Bytes that can be committed now (available memory minus reservations);
        ``None`` when that is unknown."""
        ...


def machine_headroom_bytes() -> int | None:
    """Available memory under the effective limit (cgroup-aware), from a fresh snapshot;
    ``None`` when it could not be read."""
    from resguard.snapshot import snapshot

    available = snapshot(children=False).memory.available
    return None if available is None else int(available)


def headroom_from(source: HeadroomSource | None) -> int | None:
    """The bytes a model load may take now, as lazy models and pools ask for them.

    From *source* (a :class:`resguard.Guard`, a pool, ``Containers.as_source()``…) or,
    when it is ``None``, from the machine (:func:`machine_headroom_bytes`). ``None`` means
    unknown, never 0: a source that returns ``None`` or raises is logged once (and its
    recovery once) and the load is admitted without a headroom check.
    """
    where = "the headroom source" if source is not None else "the machine's memory headroom"
    try:
        headroom = source.headroom_bytes() if source is not None else machine_headroom_bytes()
    except Exception as error:  # a probe that fails is unknown, never a failed load
        faults.failed(
            where,
            f"unknown ({type(error).__name__}: {error}); model loads are "
            "admitted without a headroom check",
        )
        return None
    if headroom is None:
        faults.failed(
            where,
            "unknown (memory could not be read); model loads are admitted without a headroom check",
        )
        return None
    try:
        headroom_bytes = int(headroom)
    except (TypeError, ValueError, OverflowError):  # NaN, inf, junk: unknown, not a failed load
        faults.failed(
            where,
            f"unknown (it gave {headroom!r}, not a number of bytes); model loads are "
            "admitted without a headroom check",
        )
        return None
    faults.recovered(where)
    return headroom_bytes


def size_of(value: int | str | Callable[[], int], what: str) -> int:
    """A model's size in bytes for argument *what* (a callable is asked now)."""
    if callable(value):
        return size_of(value(), what)
    return named(what, parse_bytes, value)


def check_duration(value: object, what: str, *, allow_none: bool = False) -> float | None:
    """*value* as seconds for argument *what*: finite and above 0 (None when allowed)."""
    if value is None and allow_none:
        return None
    seconds = named(what, parse_duration, value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidValue(f"{what}={value!r} must be a duration above 0 (e.g. 30, '10m')")
    return seconds


def check_flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidType(f"{what}={value!r} must be True or False")
    return value
