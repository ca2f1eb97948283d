"""The values resguard.docker hands out, and the rules that need no engine: sizes as
Docker reads them, duplicate services, container references and durations."""

from __future__ import annotations

import enum
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.render import ValueMixin
from resguard.units import named, parse_duration

__all__ = [
    "COMPOSE_PROJECT",
    "COMPOSE_SERVICE",
    "UNSET",
    "ContainerLimits",
    "ContainerRef",
    "Duplicate",
    "Unset",
    "container_id",
    "docker_bytes",
    "entry_name",
    "find_duplicates",
    "labels",
    "renamed_timeout",
    "seconds",
    "swap_argument",
]

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


@attrs.frozen(slots=True)
class ContainerRef(ValueMixin):
    """A container named in a report: who it is, not what it uses."""

    id: str
    name: str
    image: str
    image_id: str
    status: str
    created: float  # epoch seconds
    compose_project: str | None = None
    compose_service: str | None = None


@attrs.frozen(slots=True)
class Duplicate(ValueMixin):
    """Containers that run the same service more than once.

    ``reason`` is ``"image"`` (the same image outside one compose project) or
    ``"compose service"`` (the same service name under two or more compose projects);
    ``key`` is the image or service name. ``containers`` are oldest first.
    """

    reason: str
    key: str
    containers: tuple[ContainerRef, ...]


@attrs.frozen(slots=True)
class ContainerLimits(ValueMixin):
    """A container's limits as the engine holds them (what ``docker update`` changes).

    ``memory_limit`` is ``None`` without a limit; ``memswap_limit`` is memory plus swap,
    ``None`` when swap is not limited; ``cpus`` is in cores; ``pids_limit`` ``None`` = none.
    """

    id: str
    name: str
    image: str
    memory_limit: int | None
    memswap_limit: int | None
    cpus: float | None
    pids_limit: int | None

    @property
    def has_memory_limit(self) -> bool:
        """Whether the container cannot grow past a memory limit of its own."""
        return self.memory_limit is not None


# ---------------------------------------------------------------------------------------
# sizes as Docker reads them

_DOCKER_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+) ?(?P<unit>[a-zA-Z]*)")
_DOCKER_UNITS = {"": 1, "b": 1}
for _power, _prefix in enumerate("kmgtp", start=1):
    for _suffix in ("", "b", "ib"):
        _DOCKER_UNITS[_prefix + _suffix] = 1024**_power
_DOCKER_HINT = (
    "expected a size as docker reads it: a number and k, m, g, t or p (binary, "
    "case-insensitive, optional b or ib: '512m', '512MB', '2GiB'), or bytes"
)


def docker_bytes(value: object, what: str = "size") -> int:
    """Bytes from *value* read the way Docker reads ``--memory`` (go-units ``RAMInBytes``).

    A string is a non-negative number, one optional space and an optional unit: ``b``;
    ``k``, ``m``, ``g``, ``t``, ``p``, each alone or followed by ``b`` or ``ib``, any case,
    all **binary** (``"512MB"`` = 512 MiB); a fraction is truncated to whole bytes after
    the unit is applied. An int is bytes. Anything else raises InvalidValue/InvalidType
    quoting *value* as given.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidType(f"{what}={value!r} is not a size; {_DOCKER_HINT}")
    if isinstance(value, str):
        match = _DOCKER_SIZE.fullmatch(value)
        unit = match.group("unit").lower() if match else ""
        if match is None or unit not in _DOCKER_UNITS:
            raise InvalidValue(f"{what}={value!r} is not a size; {_DOCKER_HINT}")
        from fractions import Fraction

        return int(Fraction(match.group("number")) * _DOCKER_UNITS[unit])
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise InvalidValue(f"{what}={value!r} is not a whole number of bytes; {_DOCKER_HINT}")
    number = int(value)
    if number < 0:
        raise InvalidValue(f"{what}={value!r} is below 0 bytes; {_DOCKER_HINT}")
    return number


# ---------------------------------------------------------------------------------------
# duplicates


def find_duplicates(refs: Iterable[ContainerRef]) -> tuple[Duplicate, ...]:
    """The duplicate groups among *refs* (the rule of :meth:`Containers.duplicates`)."""
    by_image: dict[str, list[ContainerRef]] = {}
    by_service: dict[str, list[ContainerRef]] = {}
    for ref in refs:
        by_image.setdefault(ref.image_id or ref.image, []).append(ref)
        if ref.compose_service and ref.compose_project:
            by_service.setdefault(ref.compose_service, []).append(ref)
    groups: list[Duplicate] = []
    seen: set[frozenset[str]] = set()

    def add(reason: str, key: str, members: list[ContainerRef]) -> None:
        ids = frozenset(member.id for member in members)
        if ids in seen:
            return
        seen.add(ids)
        members.sort(key=lambda member: (member.created, member.name))
        groups.append(Duplicate(reason, key, tuple(members)))

    # The more telling reason first: a group found both ways is reported once.
    for service, members in by_service.items():
        if len({member.compose_project for member in members}) >= 2:
            add("compose service", service, members)
    for members in by_image.values():
        owners = {member.compose_project or "container:" + member.id for member in members}
        if len(members) >= 2 and len(owners) >= 2:
            add("image", members[0].image, members)
    return tuple(groups)


# ---------------------------------------------------------------------------------------
# arguments


def container_id(container: object) -> str:
    if isinstance(container, str):
        if not container:
            raise InvalidValue("'' is not a container; give a name, an id or ContainerStats")
        return container
    ident = getattr(container, "id", None)
    if isinstance(ident, str) and ident:
        return ident
    raise InvalidType(
        f"{container!r} is not a container; give a name, an id, "
        "ContainerStats, ContainerLimits or ContainerRef"
    )


def labels(entry: Mapping[str, Any]) -> Mapping[str, str]:
    labels = entry.get("Labels")
    return labels if isinstance(labels, dict) else {}


def entry_name(entry: Mapping[str, Any]) -> str:
    names = entry.get("Names") or []
    return str(names[0]).lstrip("/") if names else str(entry.get("Id", ""))[:12]


def swap_argument(memswap: object) -> int | None:
    if memswap is None:
        return None
    if isinstance(memswap, bool):
        raise InvalidType(f"memswap={memswap!r} is not a size; give e.g. '4GiB', 'unlimited' or -1")
    if memswap in (-1, "-1", "unlimited"):
        return -1
    return docker_bytes(memswap, "memswap")


def seconds(value: object, what: str, *, zero: bool = False) -> float:
    """A duration in seconds (``"10s"`` or a number) above 0 (or at least 0), naming *what*."""
    if isinstance(value, bool):
        raise InvalidType(f"{what}={value!r} must be seconds (a number)")
    seconds = named(what, parse_duration, value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        raise InvalidValue(
            f"{what}={value!r} must be a finite number of seconds "
            f"{'at least' if zero else 'above'} 0"
        )
    return seconds


class Unset(enum.Enum):
    UNSET = "unset"


UNSET = Unset.UNSET
"""The default of a deprecated keyword: not given (``None`` given is a bad value)."""


def renamed_timeout(
    timeout: object, timeout_s: object, where: str, default_s: float
) -> tuple[object, str]:
    """The duration given and the keyword it came by: *timeout* (``None``: *default_s*),
    or the old *timeout_s* (still accepted, with a DeprecationWarning; public durations
    are ``timeout=``; ``timeout_s=None`` stays a bad value, as it always was)."""
    if timeout_s is UNSET:
        return (default_s if timeout is None else timeout), "timeout"
    if timeout is not None:
        raise InvalidValue(
            f"{where}: timeout={timeout!r} and timeout_s={timeout_s!r} both given; "
            "give timeout= alone"
        )
    warnings.warn(
        f"{where}(timeout_s=...) is deprecated; use timeout= (a duration: '10s' or seconds)",
        DeprecationWarning,
        stacklevel=3,
    )
    return timeout_s, "timeout_s"
