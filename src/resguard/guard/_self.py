"""``limit_self``: a runaway allocation raises MemoryError instead of an OOM kill."""

from __future__ import annotations

import sys
from typing import Any, Literal

from resguard._errors import InvalidState, InvalidType, InvalidValue
from resguard._probes.backend import default_backend
from resguard.guard._args import amount_argument
from resguard.snapshot import default_sampler, invalidate_limits
from resguard.units import Amount, format_bytes, shown

__all__ = ["limit_self", "limits_generation"]

try:
    import resource as _resource
except ImportError:  # Windows: no rlimits
    _resource_module: Any = None
else:
    _resource_module = _resource

# below this (plus what the process already uses) a self-limit leaves nothing to run on
_SELF_LIMIT_MARGIN_BYTES = 32 * 2**20


class _Generation:
    """Bumped by :func:`limit_self`: every guard's cached snapshot (limits included) is out
    of date once it moved."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


limits_generation = _Generation()


_STATUS_PATH = "/proc/self/status"  # a module global: tests point it at a missing file


class _Usage:
    """What this process already uses of an rlimit and where that was read; *unmeasurable*
    says why the sensing backend can never tell (then no Guard could see the limit)."""

    __slots__ = ("bytes", "counted", "unmeasurable")

    def __init__(self, used: int | None, counted: str, unmeasurable: str | None = None) -> None:
        self.bytes = used
        self.counted = counted
        self.unmeasurable = unmeasurable


def _status_bytes(kind: str) -> int | None:
    """``VmData`` (or ``VmSize`` for ``"as"``) of ``/proc/self/status``, where there is one."""
    field = "VmData:" if kind == "data" else "VmSize:"
    try:
        with open(_STATUS_PATH, encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _process_usage(kind: str, backend: str) -> _Usage:
    """What the process already uses of the rlimit *kind*, read first as the *backend*
    that Guards measure with reads it (the linux backend: the kernel's count in
    ``/proc/self/status``; psutil: ``memory_info()``'s ``vms``, or ``data``, which psutil
    has on Linux and the BSDs but not on macOS or Windows), else the other way."""
    field = "data" if kind == "data" else "vms"
    status = _Usage(_status_bytes(kind), "VmData" if kind == "data" else "VmSize")
    if backend == "linux" and status.bytes is not None:
        return status
    try:
        import psutil

        info = psutil.Process().memory_info()
    except Exception:  # no psutil, or it failed: /proc's count, or the margin alone
        return status
    value = getattr(info, field, None)
    if not isinstance(value, bool) and isinstance(value, int) and value >= 0:
        return _Usage(value, f"memory_info().{field}")
    if backend == "psutil" and kind == "data" and not hasattr(info, "data"):
        why = f"psutil has no data-segment size on this platform ({sys.platform})"
        return _Usage(status.bytes, status.counted, why)
    return status


def _check_room(memory: object, limit: int, kind: str) -> None:
    """Refuse a *limit* no Guard could measure (psutil without a data segment) or one the
    process would fail under at its next allocation: below what it already uses plus
    32 MiB."""
    usage = _process_usage(kind, default_backend())
    if usage.unmeasurable is not None:
        raise InvalidState(
            f"limit_self(kind={kind!r}) is not available here: {usage.unmeasurable}, so "
            "no Guard could see how close this process is to the limit (they would admit "
            "everything, or refuse everything with on_unknown='refuse'); nothing was set. "
            "Use kind='as' with a limit above the process's virtual size, or Guards alone"
        )
    used = usage.bytes
    floor = (used if used is not None else 0) + _SELF_LIMIT_MARGIN_BYTES
    if limit < floor:
        uses = (
            f"already uses {format_bytes(used)} of it ({usage.counted})"
            if used is not None
            else "needs some to run"
        )
        raise InvalidValue(
            f"memory={shown(memory)} is {format_bytes(limit)}, too small to run on: this process "
            f"{uses}; expected at least {format_bytes(floor)}"
        )


def _wanted_bytes(memory: int | str, kind: str) -> int:
    """*memory* in bytes; a share is of the effective limit without this process's own
    limit of that *kind* (so that setting it again does not compound)."""
    wanted: Amount = amount_argument("memory", memory)
    own = "RLIMIT_AS" if kind == "as" else "RLIMIT_DATA"
    limit_bytes = default_sampler().limit_without_rlimit(own) if wanted.is_share else None
    limit = wanted.resolve(limit_bytes)
    if limit is None:
        raise InvalidState(
            f"memory={shown(memory)} is a percent of the effective memory "
            f"limit, which is unknown now; give a size, e.g. '2GiB'"
        )
    return limit


def limit_self(memory: int | str, *, kind: Literal["as", "data"] = "data") -> int:
    """Set this process's soft RLIMIT_DATA (or RLIMIT_AS) so that a runaway allocation
    raises MemoryError instead of getting the process OOM-killed; returns the bytes set.

    ``"80%"`` means 80 % of the effective memory limit as it is without this process's own
    limit of that *kind*, so calling it again sets the same limit instead of 80 % of the
    last one. RLIMIT_DATA counts heap and
    anonymous mappings, which is what a runaway Python allocation grows; RLIMIT_AS also
    counts reserved address space (thread stacks, mapped files) and is stricter.

    The limit must leave room to run: it is refused below what the process already uses of
    it (``VmData``, or ``VmSize`` for ``"as"``; psutil's ``memory_info()`` ``data`` or
    ``vms`` where there is no ``/proc``) plus 32 MiB, since the process would fail at its
    next allocation. ``kind="data"`` raises :class:`~resguard.InvalidState` where the
    sensing backend cannot measure the data segment (psutil on macOS and Windows): Guards
    could not see the limit. It takes effect at once for every Sampler in the process (their
    cached limits are dropped) and every Guard's cached snapshot, so the next admission
    already sees it; a Monitor's state shows it from its next sample. Every argument is
    checked before the limit is set: a refused call changes nothing. Where Python has no
    ``resource`` module (Windows) it raises :class:`~resguard.InvalidState` saying that it
    is not available on this platform.
    """
    if not isinstance(kind, str) or kind not in ("as", "data"):
        raise InvalidValue(f"kind={shown(kind)}; expected 'as' or 'data'")
    if memory is None:
        raise InvalidType("memory=None is not a size; expected e.g. '2GiB' or '80%'")
    limit = _wanted_bytes(memory, kind)
    name = "RLIMIT_AS" if kind == "as" else "RLIMIT_DATA"
    which = getattr(_resource_module, name, None)
    if which is None:
        raise InvalidState(
            f"limit_self is not available on this platform: Python's resource module "
            f"{'has no ' + name if _resource_module is not None else 'is missing'} here"
        )
    _check_room(memory, limit, kind)
    _, hard = _resource_module.getrlimit(which)
    if hard != _resource_module.RLIM_INFINITY and limit > hard:
        raise InvalidValue(
            f"memory={shown(memory)} is above the hard limit of {format_bytes(hard)}"
        )
    try:
        _resource_module.setrlimit(which, (limit, hard))
    except (OSError, ValueError) as error:  # a kernel that refuses the value (macOS)
        raise InvalidState(
            f"memory={shown(memory)}: the system refused {name}={limit}: {error}"
        ) from error
    limits_generation.value += 1
    invalidate_limits()
    return limit
