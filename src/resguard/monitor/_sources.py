"""The slow sources' answers, checked before they reach a snapshot."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from resguard._errors import InvalidValue
from resguard.snapshot import Fault, Snapshot
from resguard.units import shown

if TYPE_CHECKING:
    from resguard.monitor._state import Source
    from resguard.processes import ProcessTable

__all__ = [
    "SOURCE_FIELDS",
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


def sample_sources(
    process_table: ProcessTable | None,
    sources: Sequence[Source],
    failed: Callable[[str, BaseException], None],
    worked: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, tuple[Fault, ...]]]:
    """Sample the process table and every source once: the snapshot fields they fill in,
    and the faults of each by name. A failing one is *failed*; its declared fields become
    ``None`` and its faults name them, so rules on them report *unknown*."""
    updates: dict[str, Any] = {}
    faults: dict[str, tuple[Fault, ...]] = {}
    if process_table is not None:
        try:
            updates["processes"] = tuple(process_table.sample())
            if process_table.faults:  # damaged rows were skipped: say so
                faults["process table"] = process_table.faults
            worked("process table")
        except Exception as error:
            failed("process table", error)
            faults["process table"] = (source_fault("processes", "process table", error),)
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
