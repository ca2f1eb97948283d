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
``clear``
    a size at or below the ceiling: a firing rule keeps firing until the use drops to it
    (hysteresis, so a component hovering around its ceiling does not flap; default: the
    ceiling).
``cooldown``
    how long a rule that cleared stays quiet (``"1m"``; default 0).
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

from typing import Any

from resguard.budget._config import find_config as find_config
from resguard.budget._config import load, rules
from resguard.budget._config import parse as parse
from resguard.budget._measure import Budgets
from resguard.budget._measure import BudgetSource as BudgetSource
from resguard.budget._rule import BudgetRule
from resguard.budget._values import (
    SELECTORS as SELECTORS,
)
from resguard.budget._values import (
    Budget,
    BudgetReport,
    ComponentUse,
    efficiency_score,
)

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

for _public in (
    Budget,
    BudgetReport,
    BudgetRule,
    BudgetSource,
    Budgets,
    ComponentUse,
    efficiency_score,
    find_config,
    load,
    parse,
    rules,
):
    _public.__module__ = __name__  # reprs, pickles and the API docs show resguard.budget
del _public

_MOVED = frozenset({"cli", "format_report"})  # the command, now in resguard.cli.budget


def __getattr__(name: str) -> Any:
    """``resguard.budget.cli`` and ``format_report`` moved to :mod:`resguard.cli.budget`
    (presentation lives in the command line); the old names still work, with a warning."""
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(
            f"resguard.budget.{name} moved to resguard.cli.budget.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("resguard.cli.budget"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
