"""What lazy models and pools share: where room comes from, and their argument checks."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from resguard._errors import InvalidType, InvalidValue
from resguard._modules import forks
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard._modules.render import sizes_apart
from resguard.units import MAX_BYTES, named, parse_bytes, parse_duration

__all__ = [
    "DEFAULT_WAIT_S",
    "HEADROOM_DEADLINE_S",
    "HeadroomSource",
    "check_duration",
    "check_flag",
    "faults",
    "headroom_from",
    "log",
    "machine_headroom_bytes",
    "size_of",
    "sizes_apart",
]

log = get_logger("resguard.models")
faults = FaultLog(log)
DEFAULT_WAIT_S = 600.0  # how long a caller waits for a load that another caller runs
HEADROOM_DEADLINE_S = 5.0
"""How long a model load waits for a :class:`HeadroomSource`'s answer before the room
counts as unknown (an Ollama model waits its client's ``timeout``)."""


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


def headroom_from(
    source: HeadroomSource | None, *, deadline_s: float = HEADROOM_DEADLINE_S
) -> int | None:
    """The bytes a model load may take now, as lazy models and pools ask for them.

    From *source* (a :class:`resguard.Guard`, a pool, ``Containers.as_source()``…) or,
    when it is ``None``, from the machine (:func:`machine_headroom_bytes`). ``None`` means
    unknown, never 0: a source that raises, returns ``None``, answers something that is
    not a number of bytes from 0 to :data:`resguard.units.MAX_BYTES` (``True``, ``-5``,
    ``"x"``, NaN, ``10**30``) or gives no answer within *deadline_s* is logged once (and
    its recovery once) and the load is admitted without a headroom check. (A negative
    number from resguard's own sources, a Guard or a pool, is kept: over-committed.)
    """
    where = "the headroom source" if source is not None else "the machine's memory headroom"
    admitted = "model loads are admitted without a headroom check"
    try:
        if source is None:
            headroom: object = machine_headroom_bytes()
        else:
            answered, headroom = _ask(source, deadline_s)
            if not answered:
                faults.failed(
                    where,
                    f"unknown ({source!r} gave no answer within {deadline_s:g} s); {admitted}",
                    kind="hangs",
                )
                return None
    except Exception as error:  # a probe that fails is unknown, never a failed load
        faults.failed(where, f"unknown ({type(error).__name__}: {error}); {admitted}")
        return None
    if headroom is None:
        faults.failed(where, f"unknown (memory could not be read); {admitted}")
        return None
    module = type(source).__module__
    headroom_bytes = _as_bytes(headroom, own=module.partition(".")[0] == "resguard")
    if headroom_bytes is None:
        faults.failed(
            where,
            f"unknown (it gave {headroom!r}, not a number of bytes from 0 to 16 EiB); {admitted}",
            kind="garbage",
        )
        return None
    faults.recovered(where)
    return headroom_bytes


class _Asking:
    """The headroom calls that have not answered yet, by ``id(source)`` (the thread holds
    its source, so that id is not reused meanwhile); a forked child has none of them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: dict[int, threading.Thread] = {}
        forks.register(self)

    def _after_fork_in_child(self) -> None:
        self.lock = threading.Lock()  # a parent's thread may have held it at the fork
        self.threads = {}


_asking = _Asking()


def _ask(source: HeadroomSource, deadline_s: float) -> tuple[bool, object]:
    """``(True, source.headroom_bytes())`` when it answers within *deadline_s* (its
    exception is raised here), ``(False, None)`` when it does not. The call runs in a
    daemon thread; while one has not answered, the source is not asked again (a source
    that hangs costs one thread, not one per load)."""
    key = id(source)
    with _asking.lock:
        pending = _asking.threads.get(key)
        if pending is not None and pending.is_alive():
            return False, None
    box: list[tuple[bool, object]] = []

    def call() -> None:
        try:
            box.append((True, source.headroom_bytes()))
        except BaseException as error:  # handed to the caller, never lost in the thread
            box.append((False, error))

    thread = threading.Thread(target=call, name="resguard-headroom", daemon=True)
    thread.start()
    thread.join(deadline_s)
    with _asking.lock:
        if not box:
            _asking.threads[key] = thread
            return False, None
        _asking.threads.pop(key, None)
    ok, value = box[0]
    if not ok:
        raise value  # type: ignore[misc]
    return True, value


def _as_bytes(value: object, *, own: bool) -> int | None:
    """*value* as bytes of room, or ``None`` when it is not a number of bytes: not a
    bool, a finite int or float at most :data:`MAX_BYTES` and not negative (a negative
    one from resguard's own sources is kept: reservations exceed what is free by that
    much, which an eviction must make up)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value < 0:
        return int(value) if own else None
    return int(value) if value <= MAX_BYTES else None


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
