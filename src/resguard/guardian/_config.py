"""The guardian's ``[guardian]`` table (in ``resguard.toml``, or ``[tool.resguard.guardian]``
in a ``pyproject.toml``), checked key by key into a :class:`GuardianConfig`: the preset,
dry-run, the interval, the journal, the extra rules and the actions. Every error is a
:class:`~resguard.ConfigError` naming the file, the entry and the value as typed; nothing
is half-applied (the whole table is checked before anything is built)."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from typing import Any

import attrs

from resguard._errors import ConfigError, InvalidType, InvalidValue
from resguard._modules.clock import Clock, monotonic
from resguard._modules.tomlfile import check_keys, read_toml, search_config
from resguard.guardian._actions import ACTIONS, PROCESS_ACTIONS, ActionSpec
from resguard.reclaim import pattern_problem
from resguard.rules import Level, Policy, ProcessCount, ProcessThreshold, Rule, Threshold
from resguard.units import format_duration, parse_duration

__all__ = [
    "MAX_INTERVAL_S",
    "MIN_INTERVAL_S",
    "PRESETS",
    "GuardianConfig",
    "interval_problem",
    "load_config",
    "load_policy",
    "parse_config",
    "preset_problem",
]

PRESETS = ("laptop", "service", "none")
"""Every value ``preset`` accepts (``none``: only the rules of the file)."""

MIN_INTERVAL_S = 0.01  # shorter is a busy loop: every tick scans the process table
MAX_INTERVAL_S = 86400.0
_LAPTOP_KEYS = ("fan_rpm_above", "sensor_celsius_above")  # the laptop preset's options
_TOP_KEYS = ("preset", "dry_run", "interval", "journal", *_LAPTOP_KEYS, "rule", "action")
_RULE_COMMON = ("name", "for", "clear", "level")
_RULE_FORMS: dict[str, tuple[str, ...]] = {
    "threshold": ("metric", "op", "value", "cooldown"),
    "process": ("process_cpu_percent_above",),
    "count": ("processes_cpu_percent_above", "at_least", "cooldown"),
}
_ACTION_KEYS = ("when", "do", "match", "cooldown", "idle_for", "by", "grace", "hold")
_ACTION_ONLY = {"idle_for": "ollama-unload-idle", "by": "renice", "grace": "stop"}
_HOLD_FOR = ("pause", "renice")  # the actions undone when their rule has been clear a while
_MAX_S = {"cooldown": 86400.0, "hold": 86400.0, "grace": 600.0, "idle_for": 7 * 86400.0}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
_LEVELS = ("WARNING", "CRITICAL")
_FOR_ARGUMENT = re.compile(r"(?<![\w.])for_(?!\w)")
_CPU_ARGUMENT = re.compile(r"(?<![\w.])cpu_percent_above(?!\w)")


@attrs.frozen
class GuardianConfig:
    """The guardian's configuration, checked. ``path`` is the file it came from (``None``
    for the defaults: no file found); ``rules`` are the file's own rules, judged beside
    the preset's; ``interval_s`` is the time between two evaluations; ``fan_rpm_above``
    and ``sensor_celsius_above`` are the laptop preset's options
    (:func:`resguard.presets.laptop`)."""

    path: str | None = None
    preset: str = "laptop"
    dry_run: bool = True
    interval_s: float = 2.0
    journal: str | None = None
    fan_rpm_above: float | str | None = None
    sensor_celsius_above: float | str | None = None
    rules: tuple[Rule, ...] = ()
    actions: tuple[ActionSpec, ...] = ()

    def __attrs_post_init__(self) -> None:
        # built by hand as well as from a file: the same checks as the file's keys
        if (problem := preset_problem(self.preset)) is not None:
            raise InvalidValue(f"preset={self.preset!r}: {problem}")
        if (problem := _dry_run_problem(self.dry_run)) is not None:
            raise InvalidType(f"dry_run={self.dry_run!r}: {problem}")
        if (problem := interval_problem(self.interval_s)) is not None:
            if _not_a_number(self.interval_s):
                raise InvalidType(f"interval_s={self.interval_s!r}: {problem}")
            raise InvalidValue(f"interval_s={self.interval_s!r}: {problem}")
        indexes = [action.index for action in self.actions]
        if len(set(indexes)) != len(indexes):
            raise InvalidValue(f"actions with indexes {indexes}: each action needs its own index")

    def policy(self, *, clock: Clock = monotonic) -> Policy:
        """The preset's rules and the file's, judged together; a rule of the file named as
        a preset rule replaces it (in its place)."""
        options = {key: getattr(self, key) for key in _LAPTOP_KEYS}
        own = {rule.name: rule for rule in self.rules}
        preset = [own.get(rule.name, rule) for rule in _preset_rules(self.preset, clock, options)]
        replaced = {rule.name for rule in preset}
        return Policy([*preset, *(r for r in self.rules if r.name not in replaced)], clock=clock)


def preset_problem(value: object) -> str | None:
    """What is wrong with *value* as the guardian's ``preset``; ``None`` when nothing."""
    return None if value in PRESETS else f"expected one of {', '.join(PRESETS)}"


def _dry_run_problem(value: object) -> str | None:
    return None if isinstance(value, bool) else "expected true or false"


def _not_a_number(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float))


def interval_problem(seconds: object) -> str | None:
    """What is wrong with *seconds* as the time between two evaluations (the file's
    ``interval``, ``--interval``, ``GuardianConfig(interval_s=)``); ``None`` when nothing."""
    if _not_a_number(seconds):
        return "expected a number of seconds"
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:  # type: ignore[operator]
        return (
            f"expected from {format_duration(MIN_INTERVAL_S)} to "
            f"{format_duration(MAX_INTERVAL_S)} between two evaluations"
        )
    return None


def _preset_rules(preset: str, clock: Clock, options: Mapping[str, Any]) -> list[Rule]:
    from resguard import presets

    if preset == "none":
        return []
    if preset == "service":
        return list(presets.service(clock=clock).rules)
    return list(presets.laptop(clock=clock, **options).rules)


def _error(path: str, key: str, value: object, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {key} = {value!r}: {problem}", path=path, key=key, value=value)


def _seconds(path: str, key: str, value: object) -> float:
    try:
        return parse_duration(value)  # type: ignore[arg-type]
    except (InvalidValue, InvalidType) as error:
        # the units' own words say why (negative, too large), not only that it is not one
        why = str(error).split(";", 1)[0].split(": ", 1)
        because = f" ({why[1]})" if len(why) == 2 else ""
        raise _error(
            path, key, value, f'is not a duration{because}; expected e.g. "30s" or "5m"'
        ) from None


def _text(path: str, key: str, value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _error(path, key, value, f"expected {what} (a non-empty string)")
    return value


def _bounded(path: str, key: str, value: object) -> float:
    """A duration key of an action, from 0 to its upper bound (``_MAX_S``)."""
    seconds = _seconds(path, key, value)
    most = _MAX_S[key.rsplit(".", 1)[-1]]
    if not 0 <= seconds <= most:
        raise _error(path, key, value, f"expected from 0s to {format_duration(most)}")
    return seconds


# --------------------------------------------------------------------------- rules ---


def _rule_form(path: str, prefix: str, table: Mapping[str, Any]) -> str:
    forms = [form for form, keys in _RULE_FORMS.items() if keys[0] in table]
    if len(forms) != 1:
        raise _error(
            path,
            prefix,
            dict(table),
            "needs exactly one of metric (with op and value), process_cpu_percent_above, "
            "or processes_cpu_percent_above (with at_least)",
        )
    form = forms[0]
    check_keys(path, prefix, table, (*_RULE_COMMON, *_RULE_FORMS[form]))
    return form


def _rule_arguments(path: str, prefix: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments every rule type shares, checked."""
    name = _text(path, f"{prefix}.name", table.get("name"), "a name")
    if _CONTROL.search(name):  # it reaches the log, the verdict and the terminal
        raise _error(path, f"{prefix}.name", name, "holds a control or bidi character")
    arguments: dict[str, Any] = {"name": name}
    if "for" in table:
        arguments["for_"] = _seconds(path, f"{prefix}.for", table["for"])
    if "cooldown" in table:
        arguments["cooldown"] = _seconds(path, f"{prefix}.cooldown", table["cooldown"])
    if "level" in table:
        level = table["level"]
        if not isinstance(level, str) or level.upper() not in _LEVELS:
            raise _error(path, f"{prefix}.level", level, 'expected "warning" or "critical"')
        arguments["level"] = Level[level.upper()]
    if "clear" in table:
        arguments["clear"] = table["clear"]
    return arguments


def _as_typed(message: str, form: str) -> str:
    """A rule constructor's *message* with its Python argument names as the file's keys
    (``for_`` is ``for``, ``cpu_percent_above`` the form's ``..._cpu_percent_above``)."""
    message = _FOR_ARGUMENT.sub("for", message)
    if form == "threshold":
        return message
    return _CPU_ARGUMENT.sub(_RULE_FORMS[form][0], message)


def _rule(path: str, prefix: str, table: object) -> Rule:
    if not isinstance(table, Mapping):
        raise _error(path, prefix, table, "is not a table; expected name, metric, op, value ...")
    form = _rule_form(path, prefix, table)
    arguments = _rule_arguments(path, prefix, table)
    try:
        if form == "threshold":
            for key in ("op", "value"):
                if key not in table:
                    raise _error(path, prefix, dict(table), f"a metric rule needs {key}")
            return Threshold(table["metric"], table["op"], table["value"], **arguments)
        if form == "process":
            return ProcessThreshold(
                cpu_percent_above=table["process_cpu_percent_above"], **arguments
            )
        if "at_least" not in table:
            raise _error(path, prefix, dict(table), "processes_cpu_percent_above needs at_least")
        return ProcessCount(
            cpu_percent_above=table["processes_cpu_percent_above"],
            at_least=table["at_least"],
            **arguments,
        )
    except (InvalidValue, InvalidType) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(
            f"{path}: {prefix} (name = {arguments['name']!r}): {_as_typed(str(error), form)}",
            path=path,
            key=prefix,
            value=dict(table),
        ) from None


# ------------------------------------------------------------------------- actions ---


def _patterns(path: str, key: str, value: object) -> tuple[re.Pattern[str], ...]:
    expected = 'expected a list of regular expressions, e.g. ["chrome.*--type=renderer"]'
    if not isinstance(value, list) or not value:
        raise _error(path, key, value, expected)
    patterns = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise _error(path, key, value, f"{item!r} is not a pattern; {expected}")
        try:
            compiled = re.compile(item)
        except (re.error, RecursionError, OverflowError) as exc:
            raise _error(path, key, item, f"is not a regular expression ({exc})") from None
        problem = pattern_problem(compiled)
        if problem is not None:
            raise _error(path, key, item, problem)
        patterns.append(compiled)
    return tuple(patterns)


def _renice_by(path: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 19:
        raise _error(path, key, value, "expected a whole number from 1 to 19 (lower priority only)")
    return value


def _action(path: str, prefix: str, index: int, table: object, names: frozenset[str]) -> ActionSpec:
    if not isinstance(table, Mapping):
        raise _error(path, prefix, table, "is not a table; expected when, do, ...")
    check_keys(path, prefix, table, _ACTION_KEYS)
    do = table.get("do")
    if do not in ACTIONS:
        raise _error(path, f"{prefix}.do", do, f"expected one of {', '.join(ACTIONS)}")
    when = _text(path, f"{prefix}.when", table.get("when"), "a rule's name or a level")
    if when.upper() in _LEVELS:
        when = when.upper()
    elif when not in names:
        close = _close_names(when, names)
        hint = f"; did you mean {close!r}?" if close else ""
        raise _error(
            path, f"{prefix}.when", when, f"names no rule{hint} (or give warning or critical)"
        )
    for key, only in _ACTION_ONLY.items():
        if key in table and do != only:
            raise _error(path, f"{prefix}.{key}", table[key], f"is for do = {only!r} only")
    fields: dict[str, Any] = {}
    if do in PROCESS_ACTIONS:
        if "match" not in table:
            raise _error(
                path, prefix, dict(table), f"do = {do!r} acts on processes: it needs match"
            )
        fields["match"] = _patterns(path, f"{prefix}.match", table["match"])
    elif "match" in table:
        raise _error(path, f"{prefix}.match", table["match"], "is for renice, pause and stop")
    if "hold" in table and do not in _HOLD_FOR:
        raise _error(path, f"{prefix}.hold", table["hold"], "is for do = 'pause' or 'renice' only")
    for key, field in (
        ("cooldown", "cooldown_s"),
        ("idle_for", "idle_for_s"),
        ("grace", "grace_s"),
        ("hold", "hold_s"),
    ):
        if key in table:
            fields[field] = _bounded(path, f"{prefix}.{key}", table[key])
    if "by" in table:
        fields["renice_by"] = _renice_by(path, f"{prefix}.by", table["by"])
    return ActionSpec(index=index, when=when, do=str(do), **fields)


def _close_names(when: str, names: frozenset[str]) -> str | None:
    """The rule *when* most likely meant: one whose name starts with or holds it (a preset
    rule's short name, ``runaway``), else the closest spelling."""
    folded = when.casefold()
    holding = sorted(name for name in names if folded in name.casefold())
    if holding:
        return min(holding, key=lambda name: (not name.casefold().startswith(folded), len(name)))
    close = difflib.get_close_matches(when, sorted(names), n=1, cutoff=0.5)
    return close[0] if close else None


# --------------------------------------------------------------------------- table ---


def _entries(path: str, base: str, table: Mapping[str, Any], key: str) -> list[object]:
    raw = table.get(key, [])
    if not isinstance(raw, list):
        raise _error(path, f"{base}.{key}", raw, f"expected [[{base}.{key}]] tables")
    return raw


def _scalars(path: str, base: str, table: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    preset = table.get("preset", "laptop")
    dry_run = table.get("dry_run", True)
    for key, value, check in (
        ("preset", preset, preset_problem),
        ("dry_run", dry_run, _dry_run_problem),
    ):
        problem = check(value)
        if problem is not None:
            raise _error(path, f"{base}.{key}", value, problem)
    fields["preset"], fields["dry_run"] = preset, dry_run
    if "interval" in table:
        interval_s = _seconds(path, f"{base}.interval", table["interval"])
        problem = interval_problem(interval_s)
        if problem is not None:
            raise _error(path, f"{base}.interval", table["interval"], problem)
        fields["interval_s"] = interval_s
    if "journal" in table:
        fields["journal"] = _text(path, f"{base}.journal", table["journal"], "a file path")
    for key in _LAPTOP_KEYS:
        if key not in table:
            continue
        if preset != "laptop":
            raise _error(path, f"{base}.{key}", table[key], 'is an option of preset = "laptop"')
        fields[key] = table[key]
    return fields


def _laptop_options(path: str, base: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The laptop preset's options, each checked by building the preset with it."""
    options = {key: fields[key] for key in _LAPTOP_KEYS if key in fields}
    for key, value in options.items():
        try:
            _preset_rules("laptop", monotonic, {key: value})
        except (InvalidValue, InvalidType) as error:
            raise _error(path, f"{base}.{key}", value, str(error)) from None
    return options


def _section(data: Mapping[str, Any], path: str) -> tuple[Mapping[str, Any] | None, str]:
    """The ``[guardian]`` table of a parsed file (``None`` when it has none) and its
    dotted name."""
    base = "guardian"
    if "tool" in data:
        base = "tool.resguard.guardian"
        tool = data["tool"]
        resguard = tool.get("resguard", {}) if isinstance(tool, Mapping) else {}
        resguard = resguard if isinstance(resguard, Mapping) else {}
        for key in resguard:
            if key != "guardian" and difflib.get_close_matches(str(key), ["guardian"], cutoff=0.7):
                raise _error(
                    path,
                    f"tool.resguard.{key}",
                    resguard[key],
                    f"unknown key {key!r}; did you mean 'guardian'?",
                )
        section = resguard.get("guardian")
    else:
        for key in data:
            if key not in ("guardian", "budget"):
                raise _error(
                    path, key, data[key], f"unknown key {key!r}; expected a [guardian] table"
                )
        section = data.get("guardian")
    if section is not None and not isinstance(section, Mapping):
        raise _error(path, base, section, "is not a table")
    return section, base


def parse_config(data: Mapping[str, Any], path: str = "<config>") -> GuardianConfig:
    """The guardian's configuration from parsed TOML (a ``resguard.toml``'s top level or a
    pyproject's); the defaults when it has no ``[guardian]`` table."""
    if not isinstance(data, Mapping):
        raise InvalidType(f"parse_config({data!r}): expected the parsed TOML as a mapping")
    table, base = _section(data, path)
    if table is None:
        return GuardianConfig(path=path)
    check_keys(path, base, table, _TOP_KEYS)
    fields = _scalars(path, base, table)
    rules = tuple(
        _rule(path, f"{base}.rule[{index}]", entry)
        for index, entry in enumerate(_entries(path, base, table, "rule"))
    )
    options = _laptop_options(path, base, fields)
    preset_names = {rule.name for rule in _preset_rules(fields["preset"], monotonic, options)}
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.name.upper() in _LEVELS:
            raise _error(
                path,
                f"{base}.rule[{index}].name",
                rule.name,
                "is a level's name (an action's when = it means every rule at that level)",
            )
        if rule.name in seen:  # a preset rule's name replaces that rule
            raise _error(
                path, f"{base}.rule[{index}].name", rule.name, "is already used by another rule"
            )
        seen.add(rule.name)
    names = frozenset(seen | preset_names)
    actions = tuple(
        _action(path, f"{base}.action[{index}]", index, entry, names)
        for index, entry in enumerate(_entries(path, base, table, "action"))
    )
    return GuardianConfig(path=path, rules=rules, actions=actions, **fields)


def _has_guardian(data: Mapping[str, Any]) -> bool:
    """Whether parsed TOML holds the guardian's table (a pyproject's
    ``[tool.resguard.guardian]``, a resguard.toml's ``[guardian]``), however spelled."""
    if "tool" in data:
        tool = data["tool"]
        data = tool.get("resguard", {}) if isinstance(tool, Mapping) else {}
        data = data if isinstance(data, Mapping) else {}
    # a misspelt table ([guardain]) is found and reported, never passed over
    return any(difflib.get_close_matches(str(key), ["guardian"], cutoff=0.7) for key in data)


def load_config(path: str | os.PathLike[str] | None = None) -> GuardianConfig:
    """The guardian's configuration from *path* (which must hold the guardian's table),
    else from the file the search finds (a ``resguard.toml`` with a ``[guardian]`` table
    or a ``pyproject.toml`` with ``[tool.resguard.guardian]``, by their parsed TOML, here
    or above, then
    ``resguard.toml`` in the user config directory); the defaults (the laptop preset,
    dry-run, no actions) when there is none."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise InvalidType(f"load_config({path!r}): expected the path of a TOML file or None")
    if path is None:
        found = search_config(pyproject_wants=_has_guardian, file_wants=_has_guardian)
        if found is None:
            return GuardianConfig()
        path = found
    data, shown = read_toml(path, noun="a guardian configuration")
    if _section(data, shown)[0] is None:
        where = "[tool.resguard.guardian]" if "tool" in data else "[guardian]"
        raise ConfigError(
            f"{shown}: has no {where} table; the guardian's keys go there (see "
            "resguard guardian --help)",
            path=shown,
            key=where.strip("[]"),
        )
    return parse_config(data, shown)


def load_policy(path: str | os.PathLike[str] | None = None, *, clock: Clock = monotonic) -> Policy:
    """The policy a guardian configuration judges by: its preset's rules and its own
    (``resguard watch --config PATH`` shows what the guardian would see)."""
    return load_config(path).policy(clock=clock)
