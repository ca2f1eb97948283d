"""``limit_self``: a runaway allocation raises MemoryError instead of an OOM kill."""

from __future__ import annotations

from typing import Any, Literal

from resguard._errors import InvalidState, InvalidType, InvalidValue
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


def _process_usage_bytes(kind: str) -> int | None:
    """What the process already uses of the rlimit *kind* (VmData or VmSize), if known."""
    field = "VmData:" if kind == "data" else "VmSize:"
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


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
    it (``VmData``, or ``VmSize`` for ``"as"``) plus 32 MiB, since the process would fail at
    its next allocation. It takes effect at once for every Sampler in the process (their
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
    used = _process_usage_bytes(kind)
    floor = (used if used is not None else 0) + _SELF_LIMIT_MARGIN_BYTES
    if limit < floor:
        counted = "VmData" if kind == "data" else "VmSize"
        uses = (
            f"already uses {format_bytes(used)} of it ({counted})"
            if used is not None
            else "needs some to run"
        )
        raise InvalidValue(
            f"memory={shown(memory)} is {format_bytes(limit)}, too small to run on: this process "
            f"{uses}; expected at least {format_bytes(floor)}"
        )
    name = "RLIMIT_AS" if kind == "as" else "RLIMIT_DATA"
    which = getattr(_resource_module, name, None)
    if which is None:
        raise InvalidState(
            f"limit_self is not available on this platform: Python's resource module "
            f"{'has no ' + name if _resource_module is not None else 'is missing'} here"
        )
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
