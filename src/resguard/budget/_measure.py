"""Measuring budgets: each component's use from the process table, Docker and Ollama (or
from data handed in), the report with its score, and the Monitor source for the rules."""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from resguard._errors import InvalidType, InvalidValue
from resguard.budget._match import (
    CmdlineCache,
    container_matches,
    model_matches,
    process_matches,
)
from resguard.budget._rule import BudgetRule
from resguard.budget._values import Budget, BudgetReport, ComponentUse, efficiency_score
from resguard.snapshot import ContainerStats, OllamaModelInfo, ProcessInfo
from resguard.units import MAX_BYTES

__all__ = ["BudgetSource", "Budgets"]


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
        self._cmdlines = CmdlineCache()

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
            hits = [row for row in processes if process_matches(budget, pattern, row)]
            used = sum(row.rss for row in hits if row.rss is not None)  # unknown: left out
            members = [f"{row.name}[{row.pid}]" for row in hits]
        elif budget.kind in ("container", "image") and containers is not None:
            assert pattern is not None
            items = [item for item in containers if container_matches(budget, pattern, item)]
            used = sum(item.memory_used for item in items if item.memory_used is not None)
            members = [item.name for item in items]
        elif budget.kind == "ollama" and ollama is not None:
            assert pattern is not None
            models = [item for item in ollama if model_matches(pattern, item)]
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
        snapshot only: give the Monitor :meth:`as_source` (the process table with command
        lines) and a Docker / Ollama source for container and model budgets."""
        return [BudgetRule(self, budget) for budget in self.budgets]

    def as_source(self, name: str = "budgets") -> BudgetSource:
        """A Monitor source filling ``snapshot.processes`` (with command lines)."""
        return BudgetSource(self, name)

    def source(self, name: str = "budgets") -> BudgetSource:
        """Deprecated name of :meth:`as_source` (every Monitor source is ``as_source()``)."""
        warnings.warn("Budgets.source() is deprecated; use as_source()", DeprecationWarning, 2)
        return self.as_source(name)


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


def _docker_containers() -> tuple[tuple[ContainerStats, ...] | None, str]:
    try:
        from resguard.docker import Containers
    except ImportError as exc:
        return None, f"docker package missing ({exc})"
    containers = Containers(timeout=5.0)
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
