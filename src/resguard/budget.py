"""Memory budgets per component: declared in TOML, measured live, scored, and judged as rules.

A *budget* names a component — processes (by name or command line), containers (by name
or image), Ollama models, or the whole machine — and the memory it may use::

    # pyproject.toml (or a separate file: the same tables without the "tool.resguard." prefix)
    [[tool.resguard.budget]]
    name = "assistant"
    cmdline = "uvicorn assistant"    # regex searched in the command line
    min = "100MB"                    # a range ...
    max = "200MB"

    [[tool.resguard.budget]]
    name = "containers"
    container = ".*"                 # regex on container names: all of them, summed
    target = "5GB"                   # ... or a single ceiling

    [[tool.resguard.budget]]
    name = "llm"
    ollama = "gpt-oss:.*"
    target = "13GB"

    [[tool.resguard.budget]]
    name = "machine"
    machine = true
    max = "20GB"

The mapping form works too: ``[tool.resguard.budget.assistant]`` with the same keys (the
table's key is the name). Keys of a budget:

``name``
    unique, shown in reports (implied by the key in the mapping form).
selector, exactly one of
    ``process`` (regex matched in full against the process name or the base name of its
    program), ``cmdline`` (regex searched in the command line joined by spaces),
    ``container`` (regex matched in full against container names), ``image`` (regex
    matched in full against the image, with or without its tag), ``ollama`` (regex matched
    in full against model names, with or without ``:latest``), ``machine = true`` (the
    effective memory used, as :attr:`resguard.MemoryInfo.used`).
``target`` or ``max``, and optionally ``min``
    sizes (``"200MB"``, ``"1.5GiB"``, a number of bytes). ``target`` is a ceiling, the
    same as ``max``; ``min`` marks a component using suspiciously little (status ``under``).
``level``
    ``"warning"`` (default) or ``"critical"``: the level of its rule (:meth:`Budgets.rules`).
``for``
    how long it must be over before its rule fires (``"30s"``; default 0).
``host``
    for ``ollama`` budgets, the Ollama server (default ``$OLLAMA_HOST`` or localhost).

A component's *use* is the sum over everything its selector matches: RSS of the matching
processes (shared pages are counted in each process, as ``ps`` does), working set of the
matching containers, reported size of the matching Ollama models. Its *status* is ``ok``,
``over`` (above max), ``under`` (below min), ``absent`` (nothing matched: use 0) or
``unavailable`` (Docker or Ollama could not be asked).

**Efficiency score** (0–100): the share of the measured bytes that lie within budget,
``100 × Σ min(use, max) / Σ use`` over the components that were measured and matched
something. A component at twice its budget contributes half of its bytes; absent and
unavailable components do not count; the score is ``None`` when nothing was measured.
It answers "how much of the memory in use is memory we planned for" and weighs a 5 GB
container over budget far more than a 20 MB helper.

Errors in the file raise :class:`resguard.ConfigError` naming the file, the key
(``tool.resguard.budget.assistant.max``) and the bad value.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from resguard._errors import ConfigError, InvalidType, InvalidValue
from resguard._modules.render import ValueMixin, records_table
from resguard.rules import Breach, Level
from resguard.snapshot import ContainerStats, OllamaModelInfo, ProcessInfo, Snapshot
from resguard.units import MAX_BYTES, format_bytes, parse_bytes, parse_duration

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "Budget",
    "BudgetReport",
    "BudgetRule",
    "Budgets",
    "ComponentUse",
    "efficiency_score",
    "load",
    "rules",
]

SELECTORS = ("process", "cmdline", "container", "image", "ollama", "machine")
_KEYS = frozenset({"name", *SELECTORS, "target", "min", "max", "level", "for", "host"})
_DEFAULT_FILES = ("resguard.toml", "pyproject.toml")
_MAX_CONFIG_BYTES = 1 << 20
_DEEP_DOTTED_KEY = re.compile(r"""(?:(?:[\w-]+|"[^"\n]*"|'[^'\n]*')[ \t]*\.[ \t]*){99,}""")


@attrs.frozen
class Budget(ValueMixin):
    """One declared budget (see the module docstring for the keys)."""

    name: str
    kind: str
    pattern: str | None
    min_bytes: int | None
    max_bytes: int
    level: Level = Level.WARNING
    for_s: float = 0.0
    host: str | None = None

    def __attrs_post_init__(self) -> None:
        # A Budget built by hand gets the checks parse() makes, so status() cannot fail later.
        if not isinstance(self.name, str) or not self.name:
            raise InvalidType(f"Budget name={self.name!r}: expected a non-empty string")
        if self.kind not in SELECTORS:
            raise InvalidValue(f"Budget kind={self.kind!r}: expected one of {', '.join(SELECTORS)}")
        if self.kind == "machine" and self.pattern is not None:
            raise InvalidValue(f"Budget pattern={self.pattern!r}: a machine budget has none")
        if self.kind != "machine":
            if not isinstance(self.pattern, str):
                raise InvalidType(
                    f"Budget pattern={self.pattern!r}: expected a regular expression string"
                )
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise InvalidValue(
                    f"Budget pattern={self.pattern!r} is not a regular expression ({exc})"
                ) from None
        for what, size in (("max_bytes", self.max_bytes), ("min_bytes", self.min_bytes)):
            if size is None and what == "min_bytes":
                continue
            if isinstance(size, bool) or not isinstance(size, int):
                raise InvalidType(
                    f"Budget {what}={size!r}: expected a whole number of bytes "
                    f"(resguard.parse_bytes reads sizes such as '200MB')"
                )
            if size < 0:
                raise InvalidValue(f"Budget {what}={size!r}: expected 0 or more bytes")
        if self.min_bytes is not None and self.min_bytes > self.max_bytes:
            raise InvalidValue(
                f"Budget min_bytes={self.min_bytes!r} is above max_bytes={self.max_bytes!r}"
            )
        if not isinstance(self.level, Level):
            raise InvalidType(f"Budget level={self.level!r}: expected a resguard.Level")
        if (
            isinstance(self.for_s, bool)
            or not isinstance(self.for_s, (int, float))
            or not 0 <= self.for_s < float("inf")
        ):
            raise InvalidValue(f"Budget for_s={self.for_s!r}: expected seconds, 0 or more")
        if self.host is not None and not isinstance(self.host, str):
            raise InvalidType(f"Budget host={self.host!r}: expected a URL string or None")

    @property
    def range_text(self) -> str:
        if self.min_bytes is None:
            return f"≤ {format_bytes(self.max_bytes, binary=False)}"
        return (
            f"{format_bytes(self.min_bytes, binary=False)}–"
            f"{format_bytes(self.max_bytes, binary=False)}"
        )

    def status(self, used: int | None, count: int) -> str:
        """``ok``, ``over``, ``under``, ``absent`` (nothing matched) or ``unavailable``."""
        if used is None:
            return "unavailable"
        if count == 0 and self.kind != "machine":
            return "absent"
        if used > self.max_bytes:
            return "over"
        if self.min_bytes is not None and used < self.min_bytes:
            return "under"
        return "ok"


@attrs.frozen
class ComponentUse(ValueMixin):
    """A budget measured: bytes used (``None`` when unavailable), how many things matched
    and which (``members``), the status, and why it is unavailable (``detail``)."""

    name: str
    kind: str
    pattern: str | None
    used: int | None
    min_bytes: int | None
    max_bytes: int
    status: str
    count: int
    members: tuple[str, ...] = ()
    detail: str = ""


@attrs.frozen
class BudgetReport(ValueMixin):
    """Every component against its budget, the efficiency score (0–100 or ``None``) and
    the file the budgets came from."""

    components: tuple[ComponentUse, ...]
    score: float | None
    config: str | None
    taken_at: float

    @property
    def over(self) -> tuple[ComponentUse, ...]:
        return tuple(item for item in self.components if item.status == "over")

    def _repr_html_(self) -> str:
        score = "n/a" if self.score is None else f"{self.score:.0f}/100"
        return records_table(
            self.components,
            ("name", "kind", "used", "min_bytes", "max_bytes", "status", "count"),
            f"resguard budgets — efficiency {score}",
        )


def efficiency_score(components: Iterable[ComponentUse]) -> float | None:
    """``100 × Σ min(use, max) / Σ use`` over measured components that matched something."""
    within = total = 0
    for item in components:
        if not isinstance(item, ComponentUse):
            raise InvalidType(f"efficiency_score: {item!r} is not a ComponentUse")
        if item.used is None or item.status == "absent":
            continue
        total += item.used
        within += min(item.used, item.max_bytes)
    if total == 0:
        return None
    return 100 * within / total  # int / int: exact for sums beyond float range


# ------------------------------------------------------------------------- loading ---


def _error(path: str, key: str, value: object, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {key} = {value!r}: {problem}", path=path, key=key, value=value)


def _size(path: str, key: str, value: object) -> int:
    if isinstance(value, bool):
        raise _error(path, key, value, 'is not a size; expected e.g. "200MB" or "1.5GiB"')
    try:
        size = parse_bytes(value)  # type: ignore[arg-type]
    except (InvalidValue, InvalidType):
        raise _error(
            path, key, value, 'is not a size; expected e.g. "200MB", "1.5GiB" or a number of bytes'
        ) from None
    if size < 0:
        raise _error(path, key, value, "is negative; expected a size of 0 or more")
    return size


def _budget(path: str, prefix: str, table: object, name: str | None) -> Budget:
    if not isinstance(table, Mapping):
        raise _error(
            path, prefix, table, "is not a table; expected keys such as name, process and max"
        )
    if name is None:
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _error(path, f"{prefix}.name", name, "every budget needs a name (a string)")
        prefix = f"{prefix.rsplit('[', 1)[0]}.{name}"
    elif "name" in table and table["name"] != name:
        raise _error(
            path,
            f"{prefix}.name",
            table["name"],
            f"differs from the table's key {name!r}; leave it out",
        )
    for key in table:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), sorted(_KEYS), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _error(
                path,
                f"{prefix}.{key}",
                table[key],
                f"unknown key {key!r}{hint} (known: {', '.join(sorted(_KEYS))})",
            )
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
    pattern: str | None = None
    if kind == "machine":
        if raw is not True:
            raise _error(path, f"{prefix}.machine", raw, "expected machine = true")
    else:
        if not isinstance(raw, str) or not raw:
            raise _error(path, f"{prefix}.{kind}", raw, "expected a regular expression string")
        try:
            re.compile(raw)
        except re.error as exc:
            raise _error(
                path, f"{prefix}.{kind}", raw, f"is not a regular expression ({exc})"
            ) from None
        pattern = raw
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
    level_raw = table.get("level", "warning")
    if not isinstance(level_raw, str) or level_raw.lower() not in ("warning", "critical"):
        raise _error(path, f"{prefix}.level", level_raw, 'expected "warning" or "critical"')
    level = Level[level_raw.upper()]
    for_s = 0.0
    if "for" in table:
        try:
            for_s = parse_duration(table["for"])
        except (InvalidValue, InvalidType):
            raise _error(
                path,
                f"{prefix}.for",
                table["for"],
                'is not a duration; expected e.g. "30s" or "5m"',
            ) from None
    host = table.get("host")
    if host is not None and (kind != "ollama" or not isinstance(host, str)):
        raise _error(path, f"{prefix}.host", host, "host is for ollama budgets: a URL string")
    return Budget(
        name=name,
        kind=kind,
        pattern=pattern,
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        level=level,
        for_s=for_s,
        host=host,
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
    the nearest directory above it."""
    if start is not None and not isinstance(start, (str, os.PathLike)):
        raise InvalidType(f"find_config({start!r}): expected a directory path or None")
    if start is not None and "\x00" in os.fsdecode(start):
        raise InvalidValue(f"find_config({start!r}): a path cannot hold a NUL character")
    here = Path(start or os.getcwd()).resolve()
    for directory in (here, *here.parents):
        for name in _DEFAULT_FILES:
            candidate = directory / name
            try:
                if not candidate.is_file():
                    continue
            except OSError:  # a name too long, a loop of links: nothing to read there
                continue
            if name == "pyproject.toml":
                try:  # bytes: a file that is not UTF-8 is found here and reported by load()
                    text = candidate.read_bytes()
                except OSError:
                    continue
                if b"[tool.resguard" not in text:
                    continue
            return candidate
    return None


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
                "[tool.resguard] in this directory or above; pass --config FILE",
                path=None,
                key=None,
                value=None,
            )
        path = found
    _check_path(path, "load")
    shown = os.fsdecode(path)
    if "\x00" in shown:
        raise ConfigError(f"{shown!r}: a path cannot hold a NUL character", path=shown)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_CONFIG_BYTES + 1)
        if len(raw) > _MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{shown}: larger than {format_bytes(_MAX_CONFIG_BYTES)}; a budget "
                f"file is a few tables",
                path=shown,
            )
        text = raw.decode("utf-8")
        if _DEEP_DOTTED_KEY.search(text):  # tomllib needs memory quadratic in a key's length
            raise ConfigError(
                f"{shown}: a dotted key of 100 parts or more; a budget file needs a few", path=shown
            )
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such file", path=shown) from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot be read ({exc})", path=shown) from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib lets the decoding error out
        raise ConfigError(
            f"{shown}: not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r}"
            f" at offset {exc.start}); TOML files are UTF-8",
            path=shown,
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML ({exc})", path=shown) from None
    except RecursionError:
        raise ConfigError(
            f"{shown}: arrays or tables nested too deeply to read", path=shown
        ) from None
    return Budgets(parse(data, shown), config=shown)


def rules(path: str | os.PathLike[str] | None = None) -> list[BudgetRule]:
    """``load(path).rules()``: the budgets of a file as rules for a :class:`resguard.Policy`."""
    return load(path).rules()


# ----------------------------------------------------------------------- measuring ---


def _fullmatch(pattern: re.Pattern[str], *candidates: str) -> bool:
    return any(pattern.fullmatch(candidate) for candidate in candidates if candidate)


def _process_matches(budget: Budget, pattern: re.Pattern[str], row: ProcessInfo) -> bool:
    if budget.kind == "process":
        program = os.path.basename(row.cmdline[0]) if row.cmdline else ""
        return _fullmatch(pattern, row.name, program)
    return bool(pattern.search(" ".join(row.cmdline)))


def _container_matches(budget: Budget, pattern: re.Pattern[str], item: ContainerStats) -> bool:
    if budget.kind == "container":
        return _fullmatch(pattern, item.name)
    return _fullmatch(pattern, item.image, item.image.rsplit(":", 1)[0])


def _model_matches(pattern: re.Pattern[str], item: OllamaModelInfo) -> bool:
    name = item.name
    return _fullmatch(pattern, name, name.removesuffix(":latest"))


def _read_cmdline(proc: str, pid: int) -> tuple[str, ...]:
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return ()
    return tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)


class _CmdlineCache:
    """Command lines by process identity (they rarely change): one read per process."""

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = proc
        self._known: dict[tuple[int, float], tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def fill(self, rows: Sequence[ProcessInfo]) -> list[ProcessInfo]:
        result, current = [], {}
        with self._lock:
            for row in rows:
                key = (row.pid, row.create_time)
                cmdline = row.cmdline or self._known.get(key)
                if cmdline is None:
                    cmdline = _read_cmdline(self._proc, row.pid)
                current[key] = cmdline
                result.append(row if row.cmdline else attrs.evolve(row, cmdline=cmdline))
            self._known = current
        return result


class Budgets:
    """A set of budgets: measure them (:meth:`measure`), or judge them in a Monitor
    (:meth:`rules` with :meth:`source`)."""

    def __init__(self, budgets: Iterable[Budget], *, config: str | None = None) -> None:
        if isinstance(budgets, (str, bytes, Mapping)) or not isinstance(budgets, Iterable):
            raise InvalidType(
                f"Budgets({budgets!r}): expected an iterable of Budget values "
                f"(resguard.budget.load reads them from a file)"
            )
        self.budgets: tuple[Budget, ...] = tuple(budgets)
        for item in self.budgets:
            if not isinstance(item, Budget):
                raise InvalidType(f"Budgets(...): {item!r} is not a Budget")
        if config is not None and not isinstance(config, str):
            raise InvalidType(f"Budgets(config={config!r}): expected the file's name or None")
        self.config = config
        self._patterns = {b.name: re.compile(b.pattern) for b in self.budgets if b.pattern}
        self._cmdlines = _CmdlineCache()

    def __iter__(self) -> Any:
        return iter(self.budgets)

    def __len__(self) -> int:
        return len(self.budgets)

    def kinds(self) -> set[str]:
        return {budget.kind for budget in self.budgets}

    def use(
        self,
        budget: Budget,
        *,
        processes: Sequence[ProcessInfo] | None = None,
        containers: Sequence[ContainerStats] | None = None,
        ollama: Sequence[OllamaModelInfo] | None = None,
        machine_used: int | None = None,
        detail: str = "",
    ) -> ComponentUse:
        """One budget against given data (``None`` data: the component is unavailable)."""
        if not isinstance(budget, Budget):
            raise InvalidType(f"use({budget!r}): expected a Budget of this set")
        _check_data(
            processes=processes, containers=containers, ollama=ollama, machine_used=machine_used
        )
        used: int | None = None
        members: list[str] = []
        pattern = self._patterns.get(budget.name)
        if budget.kind in ("process", "cmdline") and processes is not None:
            assert pattern is not None
            hits = [row for row in processes if _process_matches(budget, pattern, row)]
            used = sum(row.rss for row in hits if row.rss is not None)  # unknown: left out
            members = [f"{row.name}[{row.pid}]" for row in hits]
        elif budget.kind in ("container", "image") and containers is not None:
            assert pattern is not None
            items = [item for item in containers if _container_matches(budget, pattern, item)]
            used = sum(item.memory_used for item in items if item.memory_used is not None)
            members = [item.name for item in items]
        elif budget.kind == "ollama" and ollama is not None:
            assert pattern is not None
            models = [item for item in ollama if _model_matches(pattern, item)]
            used = sum(item.size for item in models if item.size is not None)
            members = [item.name for item in models]
        elif budget.kind == "machine" and machine_used is not None:
            used = machine_used
            members = ["machine"]
        count = len(members)
        return ComponentUse(
            name=budget.name,
            kind=budget.kind,
            pattern=budget.pattern,
            used=used,
            min_bytes=budget.min_bytes,
            max_bytes=budget.max_bytes,
            status=budget.status(used, count),
            count=count,
            members=tuple(members),
            detail=detail if used is None else "",
        )

    def processes(self) -> list[ProcessInfo]:
        """Every process (RSS, names and, for command-line budgets, command lines), except
        this one."""
        from resguard.processes import ProcessTable

        rows = [row for row in ProcessTable().sample() if row.pid != os.getpid()]
        if "cmdline" in self.kinds() or "process" in self.kinds():
            rows = self._cmdlines.fill(rows)
        return rows

    def measure(
        self,
        *,
        processes: Sequence[ProcessInfo] | None = None,
        containers: Sequence[ContainerStats] | None = None,
        ollama: Sequence[OllamaModelInfo] | None = None,
        machine_used: int | None = None,
    ) -> BudgetReport:
        """Measure every budget; data not passed in is read now (processes from /proc,
        containers from Docker, models from Ollama, the machine from a snapshot). Docker or
        Ollama being absent or down makes those components ``unavailable``, never an error."""
        _check_data(
            processes=processes, containers=containers, ollama=ollama, machine_used=machine_used
        )
        kinds = self.kinds()
        details: dict[str, str] = {}
        if processes is None and kinds & {"process", "cmdline"}:
            processes = self.processes()
        if containers is None and kinds & {"container", "image"}:
            containers, details["container"] = _docker_containers()
            details["image"] = details["container"]
        ollama_by_host: dict[str | None, tuple[Sequence[OllamaModelInfo] | None, str]] = {}
        if machine_used is None and "machine" in kinds:
            from resguard.snapshot import snapshot

            machine_used = snapshot(children=False).memory.used
            if machine_used is None:
                details["machine"] = "the machine's memory use is unknown (no source read)"
        components = []
        for budget in self.budgets:
            models = ollama
            detail = details.get(budget.kind, "")
            if budget.kind == "ollama" and models is None:
                if budget.host not in ollama_by_host:
                    ollama_by_host[budget.host] = _ollama_models(budget.host)
                models, detail = ollama_by_host[budget.host]
            components.append(
                self.use(
                    budget,
                    processes=processes,
                    containers=containers,
                    ollama=models,
                    machine_used=machine_used,
                    detail=detail,
                )
            )
        return BudgetReport(
            tuple(components), efficiency_score(components), self.config, time.time()
        )

    # -- judge layer ----------------------------------------------------------------------

    def rules(self) -> list[BudgetRule]:
        """One rule per budget for :class:`resguard.Policy`: it fires at the budget's level
        while the component is over its ceiling (for ``for`` seconds). It reads the
        snapshot only: give the Monitor :meth:`source` (the process table with command
        lines) and a Docker / Ollama source for container and model budgets."""
        return [BudgetRule(self, budget) for budget in self.budgets]

    def source(self, name: str = "budgets") -> BudgetSource:
        """A Monitor source filling ``snapshot.processes`` (with command lines)."""
        return BudgetSource(self, name)


_ROW_TYPES = {"processes": ProcessInfo, "containers": ContainerStats, "ollama": OllamaModelInfo}


def _check_data(*, machine_used: object, **rows: object) -> None:
    """Data handed to use()/measure(): sequences of rows (or None) and a byte count."""
    for what, value in rows.items():
        row_type = _ROW_TYPES[what]
        if value is None:
            continue
        if (
            isinstance(value, (str, bytes, Mapping))
            or not isinstance(value, Sequence)
            or not all(isinstance(row, row_type) for row in value)
        ):
            raise InvalidType(
                f"{what}={value!r}: expected a sequence of {row_type.__name__} rows or None"
            )
    if machine_used is not None and (
        isinstance(machine_used, bool) or not isinstance(machine_used, int)
    ):
        raise InvalidType(f"machine_used={machine_used!r}: expected a number of bytes or None")
    if machine_used is not None and not 0 <= machine_used <= MAX_BYTES:
        raise InvalidValue(f"machine_used={machine_used!r}: expected 0 to {MAX_BYTES} bytes")


class BudgetSource:
    """Monitor source: ``{"processes": rows}`` with command lines, for process budgets."""

    fields = ("processes",)

    def __init__(self, budgets: Budgets, name: str = "budgets") -> None:
        self.budgets = budgets
        self.name = name

    def sample(self) -> dict[str, object]:
        return {"processes": tuple(self.budgets.processes())}


class _RuleState:
    __slots__ = ("cmdlines", "since")

    def __init__(self) -> None:
        self.since: float | None = None
        self.cmdlines = _CmdlineCache()


class BudgetRule:
    """A budget as a rule (the :class:`resguard.rules.Rule` protocol): fires while the
    component's use in the snapshot is above its ceiling for ``for`` seconds. Data missing
    from the snapshot (no process table, no containers) keeps it inactive."""

    def __init__(self, budgets: Budgets, budget: Budget) -> None:
        self.budgets = budgets
        self.budget = budget
        self.name = f"budget {budget.name}"
        self.level = budget.level

    def __repr__(self) -> str:
        return f"BudgetRule({self.budget.name!r}, max={self.budget.max_bytes})"

    def new_state(self) -> _RuleState:
        return _RuleState()

    def step(self, snapshot: Snapshot, state: _RuleState, now: float) -> Breach | None:
        budget = self.budget
        processes: Sequence[ProcessInfo] | None = snapshot.processes
        if (
            processes is not None
            and budget.kind == "cmdline"
            and any(not row.cmdline for row in processes)
        ):
            processes = state.cmdlines.fill(processes)
        containers = snapshot.containers.items if snapshot.containers is not None else None
        component = self.budgets.use(
            budget,
            processes=processes,
            containers=containers,
            ollama=snapshot.ollama,
            machine_used=snapshot.memory.used,
        )
        if component.used is None or component.used <= budget.max_bytes:
            state.since = None
            return None
        if state.since is None:
            state.since = now
        if now - state.since < budget.for_s:
            return None
        return Breach(
            self.name,
            f"budget.{budget.name}",
            ">",
            float(component.used),
            float(budget.max_bytes),
            self.level,
            state.since,
            snapshot.taken_at + (state.since - snapshot.monotonic),
            now - state.since,
            "bytes",
        )


def _docker_containers() -> tuple[tuple[ContainerStats, ...] | None, str]:
    try:
        from resguard.docker import Containers
    except ImportError as exc:
        return None, f"docker package missing ({exc})"
    containers = Containers(timeout_s=5.0)
    try:
        return containers.stats(), ""
    except Exception as exc:  # engine down, socket missing: the component is unavailable
        return None, f"Docker: {exc}"
    finally:
        try:
            containers.close()
        except Exception:
            pass


def _ollama_models(host: str | None) -> tuple[tuple[OllamaModelInfo, ...] | None, str]:
    try:
        from resguard.ollama import OllamaModels
    except ImportError as exc:
        return None, f"ollama package missing ({exc})"
    try:
        with OllamaModels(host, timeout=5.0, register=False) as models:
            return models.loaded(), ""
    except Exception as exc:  # server down or refusing: the component is unavailable
        return None, f"Ollama: {exc}"
