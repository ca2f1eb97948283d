"""The Monitor's arguments, checked once: every bad one is an error naming it."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from resguard._errors import InvalidType, InvalidValue, ResguardError
from resguard._probes.backend import BACKENDS, Backend
from resguard.processes import ProcessTable
from resguard.rules import Policy
from resguard.snapshot import Sampler
from resguard.units import format_duration, named, parse_duration, parse_percent, shown

if TYPE_CHECKING:
    from resguard._modules.clock import Clock
    from resguard.monitor._sources import BuiltinSources
    from resguard.monitor._state import Source

__all__ = [
    "MIN_INTERVAL_S",
    "Options",
    "builtin_sources",
    "check_policy",
    "check_sampler",
    "check_sources",
    "process_table",
]

MIN_INTERVAL_S = 0.001
"""The floor of every interval: a shorter one would keep a core busy sampling."""


@attrs.frozen
class Options:
    """The loop's timing and reclaim settings, in seconds and percent."""

    interval_s: float
    slow_interval_s: float
    min_interval_s: float
    relaxed_interval_s: float
    relax_below_percent: float | None
    reclaim_to_percent: float
    adaptive: bool
    psi_trigger: bool
    events: bool
    reclaim: bool
    stale_after_s: float
    reclaim_process: bool = False

    @classmethod
    def parse(
        cls,
        *,
        interval: object,
        slow_interval: object,
        min_interval: object,
        relaxed_interval: object,
        relax_below: object,
        adaptive: object,
        psi_trigger: object,
        events: object,
        reclaim: object,
        reclaim_to: object,
        stale_after: object,
    ) -> Options:
        interval_s = _interval(interval, "interval")
        relaxed_s = max(_interval(relaxed_interval, "relaxed_interval"), interval_s)
        adaptive_flag = _flag(adaptive, "adaptive")
        return cls(
            interval_s=interval_s,
            slow_interval_s=_interval(slow_interval, "slow_interval"),
            min_interval_s=min(_interval(min_interval, "min_interval"), interval_s),
            relaxed_interval_s=relaxed_s,
            relax_below_percent=(
                None if relax_below is None else named("relax_below", parse_percent, relax_below)
            ),
            reclaim_to_percent=named("reclaim_to", parse_percent, reclaim_to),
            adaptive=adaptive_flag,
            psi_trigger=_flag(psi_trigger, "psi_trigger"),
            events=_flag(events, "events"),
            reclaim=_reclaim(reclaim) != "off",
            stale_after_s=_stale_after(
                stale_after, relaxed_s, relaxed_s if adaptive_flag else interval_s
            ),
            reclaim_process=_reclaim(reclaim) == "process",
        )


def _reclaim(value: object) -> str:
    """``reclaim=``: ``"off"`` (False), ``"own"`` (True: what was registered with this
    monitor) or ``"process"`` (the process-wide registry too)."""
    if value == "process" and isinstance(value, str):
        return "process"
    if not isinstance(value, bool):
        raise InvalidType(
            f"reclaim={shown(value)} is not a reclaim choice; expected True (what was "
            'registered with this monitor), "process" (the process-wide registry too) or False'
        )
    return "own" if value else "off"


def _interval(value: object, name: str) -> float:
    """A duration of at least :data:`MIN_INTERVAL_S`, or an error naming *name*."""
    seconds = named(name, parse_duration, value)
    if seconds < MIN_INTERVAL_S:
        raise InvalidValue(
            f"{name}={shown(value)} is shorter than the floor of 1ms (a busy "
            f'loop); expected a duration such as "50ms"'
        )
    return seconds


def _stale_after(value: object, relaxed_s: float, longest_wait_s: float) -> float:
    """The age past which a state is stale: above the fast loop's longest wait."""
    if value is None:
        return max(1.0, 5 * relaxed_s)
    seconds = _interval(value, "stale_after")
    if seconds <= longest_wait_s:
        raise InvalidValue(
            f"stale_after={shown(value)} is not above the longest wait of the fast "
            f"loop ({format_duration(longest_wait_s)}): every state would be stale; "
            f"expected e.g. {format_duration(5 * longest_wait_s)!r}"
        )
    return seconds


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidType(f"{name}={shown(value)} is not a bool; expected True or False")
    return value


def check_policy(policy: object) -> Policy:
    """*policy*, or the service preset for ``None``."""
    if policy is None:
        from resguard import presets

        policy = presets.service()
    if not isinstance(policy, Policy):
        raise InvalidType(
            f"policy={shown(policy)} is not a resguard.Policy; expected "
            "Policy([...]) or a preset such as resguard.presets.service()"
        )
    return policy


def check_sources(sources: object) -> tuple[Source, ...]:
    expected = "expected a list of sources (objects with a name and a sample() method)"
    if isinstance(sources, (str, bytes)) or not isinstance(sources, (list, tuple, Sequence)):
        raise InvalidType(f"sources={shown(sources)} is not a list of sources; {expected}")
    for source in sources:
        if not isinstance(getattr(source, "name", None), str) or not callable(
            getattr(source, "sample", None)
        ):
            raise InvalidType(f"{shown(source)} in sources is not a source; {expected}")
    return tuple(sources)


def check_sampler(sampler: object, cgroup: object) -> Sampler:
    """The sampler given, or one for *cgroup* (``None``: this process's own)."""
    if sampler is None:
        return _sampler_for(cgroup)
    if cgroup is not None:
        raise InvalidValue(
            f"cgroup={shown(cgroup)} and sampler= both given; pass "
            "Sampler(cgroup=...) as sampler=, or cgroup= alone"
        )
    if not callable(getattr(sampler, "sample", None)):
        raise InvalidType(f"sampler={shown(sampler)} is not a resguard.Sampler")
    return sampler  # type: ignore[return-value]  # duck-typed: anything with sample()


def _sampler_for(cgroup: object) -> Sampler:
    """A Sampler for *cgroup* (``None``: this process's own), failing now if it is not
    a cgroup directory, not on the first sample. The Sampler's check is the one: it refuses
    a cgroup off Linux, an empty path and one that is no cgroup directory."""
    if cgroup is None:
        return Sampler()
    if not isinstance(cgroup, (str, os.PathLike)):
        raise InvalidType(
            f"cgroup={shown(cgroup)} is not a path; expected a cgroup "
            "directory such as '/sys/fs/cgroup/system.slice/web.service'"
        )
    try:
        sampler = Sampler(cgroup=cgroup)
    except ResguardError:
        raise
    except (OSError, ValueError) as error:
        raise InvalidValue(f"cgroup={shown(cgroup)} is not a cgroup directory: {error}") from error
    return sampler


def process_table(sampler: object) -> ProcessTable:
    """The Monitor's process table, on its sampler's backend so that one Monitor measures
    one way (``Sampler(backend="psutil")`` lists processes through psutil too); on the
    default backend for a sampler without one and for a linux sampler off Linux (one
    re-rooted on a fixture tree: there is no ``/proc`` to list there)."""
    backend = getattr(sampler, "backend", None)
    if backend not in BACKENDS or (backend == "linux" and not sys.platform.startswith("linux")):
        return ProcessTable()
    return ProcessTable(backend="linux" if backend == "linux" else "psutil")


def builtin_sources(
    policy: Policy, sampler: object, *, heat: object, processes: object, clock: Clock
) -> BuiltinSources:
    """The monitor's own slow readers: the process table when a rule reads ``processes``
    (or ``cgroup_pids``) or *processes* is True, heat when a rule reads ``heat`` or *heat*
    is True (or the :class:`~resguard.snapshot.HeatReader` to read through), each on the
    sampler's backend."""
    from resguard.monitor._sources import BuiltinSources
    from resguard.snapshot import HeatReader

    if isinstance(heat, HeatReader):
        given: HeatReader | None = heat
    elif isinstance(heat, bool):
        given = None
    else:
        raise InvalidType(
            f"heat={shown(heat)} is not a bool; expected True, False or a "
            "resguard.snapshot.HeatReader"
        )
    wants_heat = given is not None or heat is True or policy.needs("heat")
    wants_processes = (
        _flag(processes, "processes") or policy.needs("processes") or policy.needs("cgroup_pids")
    )
    table = process_table(sampler) if wants_processes else None
    reader = given
    if reader is None and wants_heat:
        reader = HeatReader(backend=_heat_backend(sampler), clock=clock)
    return BuiltinSources(table, reader, clock=clock)


def _heat_backend(sampler: object) -> Backend:
    """Heat on the sampler's backend; the default one for a sampler without one, and for
    a linux sampler off Linux (re-rooted on a fixture tree: there is no hwmon there)."""
    backend = getattr(sampler, "backend", None)
    if backend not in BACKENDS or (backend == "linux" and not sys.platform.startswith("linux")):
        from resguard._probes.backend import default_backend

        return default_backend()
    return "linux" if backend == "linux" else "psutil"
