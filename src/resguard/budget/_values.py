"""The values of the budget package: a declared budget, a measured component, the
report, and the efficiency score."""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.render import ValueMixin, records_table
from resguard.rules import Level
from resguard.units import MAX_SECONDS, format_size

__all__ = ["SELECTORS", "Budget", "BudgetReport", "ComponentUse", "efficiency_score"]

SELECTORS = ("process", "cmdline", "container", "image", "ollama", "machine")


@attrs.frozen
class Budget(ValueMixin):
    """One declared budget (see :mod:`resguard.budget` for the keys). ``clear_bytes``
    (``None``: the ceiling) is where a firing rule clears (hysteresis), ``cooldown_s`` how
    long it then stays quiet."""

    name: str
    kind: str
    pattern: str | None
    min_bytes: int | None
    max_bytes: int
    level: Level = Level.WARNING
    for_s: float = 0.0
    host: str | None = None
    clear_bytes: int | None = None
    cooldown_s: float = 0.0

    def __attrs_post_init__(self) -> None:
        # A Budget built by hand gets the checks parse() makes, so status() cannot fail later.
        _check_selector(self)
        _check_sizes(self)
        _check_rule(self)

    @property
    def range_text(self) -> str:
        if self.min_bytes is None:
            return f"≤ {format_size(self.max_bytes)}"
        return f"{format_size(self.min_bytes)}–{format_size(self.max_bytes)}"

    @property
    def clear_at_bytes(self) -> int:
        """Use at or below which a firing rule clears (the ceiling unless ``clear`` says)."""
        return self.max_bytes if self.clear_bytes is None else self.clear_bytes

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


def _check_selector(budget: Budget) -> None:
    if not isinstance(budget.name, str) or not budget.name:
        raise InvalidType(f"Budget name={budget.name!r}: expected a non-empty string")
    if budget.kind not in SELECTORS:
        raise InvalidValue(f"Budget kind={budget.kind!r}: expected one of {', '.join(SELECTORS)}")
    if budget.kind == "machine" and budget.pattern is not None:
        raise InvalidValue(f"Budget pattern={budget.pattern!r}: a machine budget has none")
    if budget.kind != "machine":
        if not isinstance(budget.pattern, str):
            raise InvalidType(
                f"Budget pattern={budget.pattern!r}: expected a regular expression string"
            )
        try:
            re.compile(budget.pattern)
        except re.error as exc:
            raise InvalidValue(
                f"Budget pattern={budget.pattern!r} is not a regular expression ({exc})"
            ) from None


def _check_sizes(budget: Budget) -> None:
    sizes = (
        ("max_bytes", budget.max_bytes),
        ("min_bytes", budget.min_bytes),
        ("clear_bytes", budget.clear_bytes),
    )
    for what, size in sizes:
        if size is None and what != "max_bytes":
            continue
        if isinstance(size, bool) or not isinstance(size, int):
            raise InvalidType(
                f"Budget {what}={size!r}: expected a whole number of bytes "
                f"(resguard.parse_bytes reads sizes such as '200MB')"
            )
        if size < 0:
            raise InvalidValue(f"Budget {what}={size!r}: expected 0 or more bytes")
    if budget.min_bytes is not None and budget.min_bytes > budget.max_bytes:
        raise InvalidValue(
            f"Budget min_bytes={budget.min_bytes!r} is above max_bytes={budget.max_bytes!r}"
        )
    if budget.clear_bytes is not None and budget.clear_bytes > budget.max_bytes:
        raise InvalidValue(
            f"Budget clear_bytes={budget.clear_bytes!r} is above max_bytes={budget.max_bytes!r}; "
            f"a rule clears at or below its ceiling"
        )


def _seconds_ok(value: object) -> bool:
    """Seconds from 0 to MAX_SECONDS (NaN fails the comparison; a huge int is compared
    exactly, never converted to a float that overflows)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and 0 <= value <= MAX_SECONDS
    )


def _check_rule(budget: Budget) -> None:
    if not isinstance(budget.level, Level):
        raise InvalidType(f"Budget level={budget.level!r}: expected a resguard.Level")
    if not _seconds_ok(budget.for_s):
        raise InvalidValue(f"Budget for_s={budget.for_s!r}: expected seconds, 0 or more")
    if budget.host is not None and not isinstance(budget.host, str):
        raise InvalidType(f"Budget host={budget.host!r}: expected a URL string or None")
    if not _seconds_ok(budget.cooldown_s):
        raise InvalidValue(f"Budget cooldown_s={budget.cooldown_s!r}: expected seconds, 0 or more")


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
