"""The slow sources' answers, checked before they reach a snapshot."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from resguard._errors import InvalidValue
from resguard._probes import cgroup as _cgroup
from resguard._probes.reporting import log_faults
from resguard.snapshot import Fault, HeatReader, MemoryInfo, Snapshot
from resguard.units import shown

if TYPE_CHECKING:
    from resguard.monitor._state import Source
    from resguard.processes import ProcessTable

__all__ = [
    "SOURCE_FIELDS",
    "BuiltinSources",
    "binding_cgroup",
    "declared_fields",
    "sample_sources",
    "source_fault",
    "source_fields",
    "subscriber_name",
]

SOURCE_FIELDS = frozenset(attrs.fields_dict(Snapshot)) - {
    "memory",
    "swap",
    "cpu",
    "pressure",
    "process",
    "taken_at",
    "monotonic",
    "faults",
}
"""The snapshot fields a slow source may fill in (``processes``, ``containers``, ``ollama``,
``heat``, ``cgroup_pids``)."""


def _source_value_ok(field: str, value: object) -> bool:
    """Whether *value* can stand in the snapshot's *field* (rules, metrics and the CLI
    read it without checking again)."""
    from resguard.snapshot import ContainersInfo, HeatInfo, OllamaModelInfo, ProcessInfo

    if value is None:
        return True
    if field == "containers":
        return isinstance(value, ContainersInfo)
    if field == "heat":
        return isinstance(value, HeatInfo)
    if field == "cgroup_pids":
        return isinstance(value, tuple) and all(type(item) is int and item > 0 for item in value)
    row = ProcessInfo if field == "processes" else OllamaModelInfo
    return isinstance(value, tuple) and all(isinstance(item, row) for item in value)


def source_fields(result: object) -> dict[str, Any]:
    """A source's answer, checked: a dict of snapshot fields a source may fill in, each of
    its field's type (a garbage value would fail every rule and every scrape after it)."""
    if not isinstance(result, dict) or not all(key in SOURCE_FIELDS for key in result):
        raise InvalidValue(
            f"sample() returned {shown(result)[:200]}; expected a dict with "
            f"keys among {sorted(SOURCE_FIELDS)}"
        )
    for field, value in result.items():
        if not _source_value_ok(field, value):
            raise InvalidValue(
                f"sample() returned {field}={shown(value)[:200]}; expected "
                f"what Snapshot.{field} holds, or None"
            )
    return result


def declared_fields(source: object) -> tuple[str, ...]:
    """The fields a source fills in (``source.fields``), set to None while it fails."""
    fields = getattr(source, "fields", ())
    if isinstance(fields, str) or not isinstance(fields, (list, tuple, frozenset, set)):
        return ()
    return tuple(field for field in fields if field in SOURCE_FIELDS)


def subscriber_name(subscriber: object) -> str:
    try:
        return f"resguard subscriber {subscriber!r}"
    except Exception:  # a repr that raises must not stop the loop either
        return f"resguard subscriber {type(subscriber).__qualname__} at {id(subscriber):#x}"


def source_fault(field: str, source: str, error: BaseException) -> Fault:
    return Fault(field, source, "unreadable", f"{type(error).__name__}: {error}")


def binding_cgroup(memory: MemoryInfo) -> str | None:
    """The cgroup directory whose limit *memory* reports (``memory.source == "cgroup"``:
    ``source_detail`` is that directory's limit file), else ``None``: the host's or an
    rlimit's limit binds, and the processes to judge are the host's."""
    if memory.source != "cgroup" or not memory.source_detail.startswith("/"):
        return None
    return os.path.dirname(memory.source_detail)


class BuiltinSources:
    """The monitor's own slow readers: the process table (with the members of the
    binding memory cgroup, ``cgroup_pids``, on the linux backend) and heat; each ``None``
    when neither the policy nor the caller asked for it."""

    def __init__(
        self,
        process_table: ProcessTable | None,
        heat: HeatReader | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.process_table = process_table
        self.heat = heat
        self.members = process_table is not None and process_table.backend == "linux"
        self._clock = clock
        self._lock = threading.Lock()
        self._failing: frozenset[str] = frozenset()

    def cgroup_pids(self, memory: MemoryInfo) -> tuple[tuple[int, ...] | None, tuple[Fault, ...]]:
        """The pids of the binding memory cgroup and its descendants (``None`` when no
        cgroup's limit binds, or they could not be read: then one warning and a fault)."""
        directory = binding_cgroup(memory)
        found = _cgroup.member_pids(directory) if directory is not None else None
        faults: tuple[Fault, ...] = ()
        pids: tuple[int, ...] | None = None
        if isinstance(found, _cgroup.MemberDamage):
            faults = (Fault("cgroup_pids", found.path, found.kind, found.detail),)
        else:
            pids = found
        with self._lock:
            self._failing = log_faults(faults, self._failing, self._clock())
        return pids, faults


def _sample_builtin(
    builtin: BuiltinSources,
    memory: MemoryInfo,
    failed: Callable[[str, BaseException], None],
    worked: Callable[[str], None],
    updates: dict[str, Any],
    faults: dict[str, tuple[Fault, ...]],
) -> None:
    process_table = builtin.process_table
    if process_table is not None:
        try:
            updates["processes"] = tuple(process_table.sample())
            if process_table.faults:  # damaged rows were skipped: say so
                faults["process table"] = process_table.faults
            worked("process table")
        except Exception as error:
            failed("process table", error)
            faults["process table"] = (source_fault("processes", "process table", error),)
        if builtin.members:
            try:
                updates["cgroup_pids"], member_faults = builtin.cgroup_pids(memory)
                if member_faults:
                    faults["cgroup members"] = member_faults
                worked("cgroup members")
            except Exception as error:  # member_pids never raises; the last net
                failed("cgroup members", error)
                updates["cgroup_pids"] = None
                faults["cgroup members"] = (source_fault("cgroup_pids", "cgroup members", error),)
    if builtin.heat is not None:
        try:
            updates["heat"] = builtin.heat.read()
            if builtin.heat.faults:
                faults["heat"] = builtin.heat.faults
            worked("heat")
        except Exception as error:  # read() never raises; the last net
            failed("heat", error)
            updates["heat"] = None
            faults["heat"] = (source_fault("heat", "heat", error),)


def sample_sources(
    builtin: BuiltinSources,
    sources: Sequence[Source],
    failed: Callable[[str, BaseException], None],
    worked: Callable[[str], None],
    memory: MemoryInfo,
) -> tuple[dict[str, Any], dict[str, tuple[Fault, ...]]]:
    """Sample the monitor's own readers (the process table, the cgroup's members, heat)
    and every source once: the snapshot fields they fill in, and the faults of each by
    name (*memory* is the latest reading, whose binding cgroup's members are read). A
    failing one is *failed*; its declared fields become ``None`` and its faults name
    them, so rules on them report *unknown*."""
    updates: dict[str, Any] = {}
    faults: dict[str, tuple[Fault, ...]] = {}
    _sample_builtin(builtin, memory, failed, worked, updates, faults)
    for source in sources:
        name = source.name
        try:
            updates.update(source_fields(source.sample()))
            worked(name)
        except Exception as error:
            failed(name, error)
            fields = declared_fields(source)
            for field in fields:
                updates[field] = None
            faults[name] = tuple(source_fault(field, name, error) for field in fields)
    return updates, faults
