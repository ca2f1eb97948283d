"""A budget as a rule: fires while a component's use in the snapshot is over its ceiling,
through the shared :class:`resguard.rules.Sustain` machine (``for``, ``clear``,
``cooldown`` as every rule has them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from resguard.budget._match import CmdlineCache
from resguard.budget._values import Budget
from resguard.rules import Breach, Sustain
from resguard.snapshot import ProcessInfo, Snapshot

if TYPE_CHECKING:
    from resguard.budget._measure import Budgets

__all__ = ["BudgetRule"]


class _RuleState:
    __slots__ = ("cmdlines", "sustain")

    def __init__(self, budget: Budget) -> None:
        self.sustain = Sustain(for_s=budget.for_s, cooldown_s=budget.cooldown_s)
        self.cmdlines = CmdlineCache()


class BudgetRule:
    """A budget as a rule (the :class:`resguard.rules.Rule` protocol): fires once the
    component's use in the snapshot has been above its ceiling for ``for`` seconds, keeps
    firing while it stays above ``clear`` (default: the ceiling), then stays quiet for
    ``cooldown`` seconds. Data missing from the snapshot (no process table, no containers)
    counts as not over: the rule is inactive."""

    def __init__(self, budgets: Budgets, budget: Budget) -> None:
        self.budgets = budgets
        self.budget = budget
        self.name = f"budget {budget.name}"
        self.level = budget.level

    def __repr__(self) -> str:
        return f"BudgetRule({self.budget.name!r}, max={self.budget.max_bytes})"

    def new_state(self) -> _RuleState:
        return _RuleState(self.budget)

    def _used(self, snapshot: Snapshot, state: _RuleState) -> int | None:
        budget = self.budget
        processes: Sequence[ProcessInfo] | None = snapshot.processes
        if (
            processes is not None
            and budget.kind == "cmdline"
            and any(not row.cmdline for row in processes)
        ):
            processes = state.cmdlines.fill(processes)
        containers = snapshot.containers.items if snapshot.containers is not None else None
        return self.budgets.use(
            budget,
            processes=processes,
            containers=containers,
            ollama=snapshot.ollama,
            machine_used=snapshot.memory.used,
        ).used

    def step(self, snapshot: Snapshot, state: _RuleState, now: float) -> Breach | None:
        budget = self.budget
        used = self._used(snapshot, state)
        over = used is not None and used > budget.max_bytes
        held = used is not None and used > budget.clear_at_bytes
        if not state.sustain.advance(now, over, hold=held):
            return None
        since = state.sustain.firing_since
        assert since is not None
        assert used is not None
        return Breach(
            self.name,
            f"budget.{budget.name}",
            ">",
            float(used),
            float(budget.max_bytes),
            self.level,
            since,
            snapshot.taken_at + (since - snapshot.monotonic),
            now - since,
            "bytes",
        )
