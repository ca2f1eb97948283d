"""Reading budgets: the TOML tables (a pyproject's ``[tool.resguard]`` or a file of
``[[budget]]`` tables) checked key by key into :class:`Budget` values, and finding the
file (the search and the reader are :mod:`resguard._modules.tomlfile`, shared with the
guardian; a ``[guardian]`` table beside the budgets is the guardian's and left alone)."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resguard._errors import ConfigError, InvalidType, InvalidValue
from resguard._modules.tomlfile import check_keys, read_toml, search_config
from resguard.budget._values import SELECTORS, Budget
from resguard.rules import Level
from resguard.units import Amount, parse_duration

if TYPE_CHECKING:
    from resguard.budget._measure import Budgets
    from resguard.budget._rule import BudgetRule

__all__ = ["find_config", "load", "parse", "rules"]

_KEYS = frozenset(
    {"name", *SELECTORS, "target", "min", "max", "level", "for", "host", "clear", "cooldown"}
)


def _error(path: str, key: str, value: object, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {key} = {value!r}: {problem}", path=path, key=key, value=value)


def _size(path: str, key: str, value: object) -> int:
    """A size in bytes, read as a :class:`resguard.units.Amount` that must not be a share."""
    if isinstance(value, bool):
        raise _error(path, key, value, 'is not a size; expected e.g. "200MB" or "1.5GiB"')
    try:
        amount = Amount(value, positive=False)  # type: ignore[arg-type]
    except (InvalidValue, InvalidType):
        raise _error(
            path, key, value, 'is not a size; expected e.g. "200MB", "1.5GiB" or a number of bytes'
        ) from None
    if amount.bytes is None:
        raise _error(
            path, key, value, 'is a share of a limit; a budget is a size, e.g. "200MB" or "1.5GiB"'
        )
    if amount.bytes < 0:
        raise _error(path, key, value, "is negative; expected a size of 0 or more")
    return amount.bytes


def _seconds(path: str, key: str, value: object) -> float:
    try:
        return parse_duration(value)  # type: ignore[arg-type]
    except (InvalidValue, InvalidType):
        raise _error(path, key, value, 'is not a duration; expected e.g. "30s" or "5m"') from None


def _named(path: str, prefix: str, table: Mapping[str, Any], name: str | None) -> tuple[str, str]:
    """The budget's name and the key prefix its errors are reported under."""
    if name is None:
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _error(path, f"{prefix}.name", name, "every budget needs a name (a string)")
        return name, f"{prefix.rsplit('[', 1)[0]}.{name}"
    if "name" in table and table["name"] != name:
        raise _error(
            path,
            f"{prefix}.name",
            table["name"],
            f"differs from the table's key {name!r}; leave it out",
        )
    return name, prefix


def _selector(path: str, prefix: str, table: Mapping[str, Any]) -> tuple[str, str | None]:
    """The budget's kind and its pattern (``None`` for the machine)."""
    chosen = [key for key in SELECTORS if key in table]
    if len(chosen) != 1:
        raise _error(
            path,
            prefix,
            sorted(chosen) or None,
            f"needs exactly one selector of {', '.join(SELECTORS)}",
        )
    kind = chosen[0]
    raw = table[kind]
    if kind == "machine":
        if raw is not True:
            raise _error(path, f"{prefix}.machine", raw, "expected machine = true")
        return kind, None
    if not isinstance(raw, str) or not raw:
        raise _error(path, f"{prefix}.{kind}", raw, "expected a regular expression string")
    try:
        re.compile(raw)
    except re.error as exc:
        raise _error(
            path, f"{prefix}.{kind}", raw, f"is not a regular expression ({exc})"
        ) from None
    return kind, raw


def _sizes(path: str, prefix: str, table: Mapping[str, Any]) -> tuple[int | None, int, int | None]:
    """``min``, the ceiling (``target`` or ``max``) and ``clear``, in bytes."""
    if "target" in table and "max" in table:
        raise _error(
            path,
            f"{prefix}.target",
            table["target"],
            "give either target or max (they mean the same ceiling), not both",
        )
    if "target" not in table and "max" not in table:
        raise _error(path, prefix, None, 'needs a ceiling: target = "200MB" or max = ...')
    ceiling_key = "target" if "target" in table else "max"
    max_bytes = _size(path, f"{prefix}.{ceiling_key}", table[ceiling_key])
    min_bytes = _size(path, f"{prefix}.min", table["min"]) if "min" in table else None
    if min_bytes is not None and min_bytes > max_bytes:
        raise _error(
            path, f"{prefix}.min", table["min"], f"is above the ceiling {table[ceiling_key]!r}"
        )
    clear_bytes = _size(path, f"{prefix}.clear", table["clear"]) if "clear" in table else None
    if clear_bytes is not None and clear_bytes > max_bytes:
        raise _error(
            path,
            f"{prefix}.clear",
            table["clear"],
            f"is above the ceiling {table[ceiling_key]!r}; a rule clears at or below it",
        )
    return min_bytes, max_bytes, clear_bytes


def _level(path: str, prefix: str, table: Mapping[str, Any]) -> Level:
    level_raw = table.get("level", "warning")
    if not isinstance(level_raw, str) or level_raw.lower() not in ("warning", "critical"):
        raise _error(path, f"{prefix}.level", level_raw, 'expected "warning" or "critical"')
    return Level[level_raw.upper()]


def _budget(path: str, prefix: str, table: object, name: str | None) -> Budget:
    if not isinstance(table, Mapping):
        raise _error(
            path, prefix, table, "is not a table; expected keys such as name, process and max"
        )
    name, prefix = _named(path, prefix, table, name)
    check_keys(path, prefix, table, _KEYS)
    kind, pattern = _selector(path, prefix, table)
    min_bytes, max_bytes, clear_bytes = _sizes(path, prefix, table)
    level = _level(path, prefix, table)
    for_s = _seconds(path, f"{prefix}.for", table["for"]) if "for" in table else 0.0
    host = table.get("host")
    if host is not None and (kind != "ollama" or not isinstance(host, str)):
        raise _error(path, f"{prefix}.host", host, "host is for ollama budgets: a URL string")
    cooldown_s = (
        _seconds(path, f"{prefix}.cooldown", table["cooldown"]) if "cooldown" in table else 0.0
    )
    return Budget(
        name=name,
        kind=kind,
        pattern=pattern,
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        level=level,
        for_s=for_s,
        host=host,
        clear_bytes=clear_bytes,
        cooldown_s=cooldown_s,
    )


def parse(data: Mapping[str, Any], path: str = "<config>") -> list[Budget]:
    """Budgets from parsed TOML: a pyproject's ``[tool.resguard]`` or a file's top level."""
    if not isinstance(data, Mapping):
        raise InvalidType(f"parse({data!r}): expected the parsed TOML as a mapping")
    if not isinstance(path, str):
        raise InvalidType(f"parse(path={path!r}): expected the file's name as a string")
    if "tool" in data:
        tool = data.get("tool")
        section = tool.get("resguard", {}) if isinstance(tool, Mapping) else {}
        prefix = "tool.resguard"
    else:
        section, prefix = data, ""
    if not isinstance(section, Mapping):
        raise _error(path, prefix, section, "is not a table")
    for key in section:
        if key == "guardian":  # the guardian's table, read by resguard.guardian
            continue
        if key != "budget" and difflib.get_close_matches(str(key), ["budget"], cutoff=0.6):
            raise _error(
                path,
                f"{prefix}.{key}".lstrip("."),
                section[key],
                f"unknown key {key!r}; did you mean 'budget'?",
            )
        if not prefix and key != "budget":
            raise _error(
                path,
                key,
                section[key],
                f"unknown key {key!r}; a budget file holds [[budget]] tables",
            )
    raw = section.get("budget", [])
    base = f"{prefix}.budget".lstrip(".")
    budgets: list[Budget] = []
    if isinstance(raw, Mapping):
        for name, table in raw.items():
            budgets.append(_budget(path, f"{base}.{name}", table, str(name)))
    elif isinstance(raw, list):
        for index, table in enumerate(raw):
            budgets.append(_budget(path, f"{base}[{index}]", table, None))
    else:
        raise _error(path, base, raw, "expected [[budget]] tables or [budget.<name>] tables")
    seen: set[str] = set()
    for budget in budgets:
        if budget.name in seen:
            raise _error(path, f"{base}.{budget.name}.name", budget.name, "is used twice")
        seen.add(budget.name)
    return budgets


def find_config(start: str | os.PathLike[str] | None = None) -> Path | None:
    """``resguard.toml``, else a ``pyproject.toml`` with ``[tool.resguard]``, in *start* or
    the nearest directory above it, else ``resguard.toml`` in the user's config directory
    (:func:`search_config`)."""
    return search_config(start, caller="find_config")


def _check_path(path: object, what: str) -> None:
    # an int or a bool would be taken by open() as a file descriptor (True is stdout)
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidType(f"{what}({path!r}): expected the path of a TOML file or None")


def load(path: str | os.PathLike[str] | None = None) -> Budgets:
    """Read budgets from *path* (or the file :func:`find_config` finds)."""
    if path is None:
        found = find_config()
        if found is None:
            raise ConfigError(
                "no budgets found: no resguard.toml, and no pyproject.toml with "
                "[tool.resguard] in this directory or above, nor a resguard.toml in the "
                "user config directory; pass --config FILE",
                path=None,
                key=None,
                value=None,
            )
        path = found
    _check_path(path, "load")
    data, shown = read_toml(path, noun="a budget file")
    from resguard.budget._measure import Budgets

    return Budgets(parse(data, shown), config=shown)


def rules(path: str | os.PathLike[str] | None = None) -> list[BudgetRule]:
    """``load(path).rules()``: the budgets of a file as rules for a :class:`resguard.Policy`."""
    return load(path).rules()
