"""Policy evaluation cost: the laptop preset vs a hand-written if-chain on the same snapshot.

The if-chain is what a script would write: memory percent and PSI compared with constants,
no grace periods, hysteresis, trends or process tracking. The preset does all of that, so the
ratio shows what the judge layer's bookkeeping costs per snapshot.
"""

from __future__ import annotations

from resguard import presets
from resguard.rules import Policy, Threshold
from resguard.snapshot import Snapshot
from resguard.testing import make_process, make_snapshot

from _harness import Table, Target, per_call_s


def if_chain(snapshot: Snapshot) -> int:
    """The hand-written alternative: one pass of comparisons with plain ints for levels
    (0 OK, 1 WARNING, 2 CRITICAL), no memory of the past."""
    level = 0
    percent = snapshot.memory.percent or 0.0
    if percent >= 95:
        level = 2
    elif percent >= 85:
        level = 1
    pressure = snapshot.pressure.memory
    if pressure is not None:
        if pressure.full is not None and pressure.full.avg10 > 5:
            level = 2
        elif pressure.some.avg10 > 10 and level < 1:
            level = 1
    return level


def if_chain_with_processes(snapshot: Snapshot) -> int:
    level = if_chain(snapshot)
    if snapshot.processes is not None:
        busy = [p for p in snapshot.processes if p.cpu_percent > 50]
        if (len(busy) >= 2 or any(p.cpu_percent > 100 for p in busy)) and level < 1:
            level = 1
    return level


class _Ticking:
    """Evaluate with *now* advancing by *step_s* per call, as a Monitor would."""

    def __init__(self, policy: Policy, snapshot: Snapshot, step_s: float) -> None:
        self.policy, self.snapshot, self.step_s = policy, snapshot, step_s
        self.state = policy.new_state()
        self.now = snapshot.monotonic

    def __call__(self) -> object:
        self.now += self.step_s
        return self.policy.evaluate(self.snapshot, self.state, self.now)


def run(table: Table) -> None:
    quiet = make_snapshot(memory_percent=40.0, psi_some=0.5, psi_full=0.0)
    theirs = per_call_s(lambda: if_chain(quiet))
    laptop = _Ticking(presets.laptop(), quiet, 0.05)
    table.compare(
        "laptop preset, one snapshot (no process table), 50 ms cadence",
        per_call_s(laptop),
        "hand-written if-chain",
        theirs,
        Target.ours_at_most(10e-6, what="a few µs:"),
    )
    service = _Ticking(presets.service(), quiet, 0.05)
    table.compare(
        "service preset, one snapshot, 50 ms cadence",
        per_call_s(service),
        "hand-written if-chain",
        theirs,
        Target.ours_at_most(10e-6, what="a few µs:"),
    )
    thresholds = Policy(presets.laptop().rules[:4])
    state = thresholds.new_state()
    table.compare(
        "4 memory/PSI thresholds only (same rules as the if-chain)",
        per_call_s(lambda: thresholds.evaluate(quiet, state)),
        "hand-written if-chain",
        theirs,
    )
    busy = make_snapshot(memory_percent=90.0, psi_some=12.0)
    firing = Policy([Threshold("memory.percent", ">=", 85, clear=80)])
    firing_state = firing.new_state()
    table.compare(
        "one firing threshold (builds a Breach and Verdict)",
        per_call_s(lambda: firing.evaluate(busy, firing_state)),
        "hand-written if-chain",
        per_call_s(lambda: if_chain(busy)),
    )
    rows = tuple(
        make_process(pid, f"p{pid}", cpu_percent=(pid % 97) * 0.5) for pid in range(1, 301)
    )
    table_snapshot = make_snapshot(memory_percent=40.0, processes=rows)
    with_table = _Ticking(presets.laptop(), table_snapshot, 0.05)
    table.compare(
        "laptop preset with a 300-process table",
        per_call_s(with_table),
        "if-chain over the same table",
        per_call_s(lambda: if_chain_with_processes(table_snapshot)),
    )
