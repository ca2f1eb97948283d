"""The Monitor samples heat in its slow loop when a rule reads it or it is asked to."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from resguard import InvalidType
from resguard.monitor import Monitor
from resguard.rules import Breach, Level, Policy, ProcessCount, Threshold
from resguard.snapshot import HeatReader, Sampler, Snapshot
from resguard.testing import KernelTree

from support import wait_until


class HotRule:
    """A custom rule that judges heat and says so in ``reads``, as the heat rules do."""

    name = "hot"
    level = Level.WARNING
    reads = ("heat",)

    def new_state(self) -> None:
        return None

    def step(self, snapshot: Snapshot, state: None, now: float) -> Breach | None:
        heat = snapshot.heat
        if heat is None or heat.hottest_celsius is None or heat.hottest_celsius < 90:
            return None
        return Breach(
            rule="hot",
            metric="heat.hottest_celsius",
            op=">=",
            value=heat.hottest_celsius,
            threshold=90.0,
            level=Level.WARNING,
            since=now,
            since_wall=snapshot.taken_at,
            held_s=0.0,
            unit="celsius",
        )


@pytest.fixture
def tree(tmp_path: Path) -> KernelTree:
    tree = KernelTree(tmp_path / "kernel")
    tree.add_hwmon("coretemp", [("Package id 0", 95.0, 84.0, 100.0)])
    tree.add_hwmon("thinkpad", [], [("fan1", 5100.0)])
    return tree


def monitor_on(tree: KernelTree, policy: Policy, **kwargs: Any) -> Monitor:
    return Monitor(policy=policy, sampler=Sampler(tree.roots), reclaim=False, **kwargs)


def test_a_rule_that_reads_heat_makes_the_monitor_sample_it() -> None:
    policy = Policy([HotRule()])
    assert policy.needs("heat")
    assert Policy([Threshold("heat.hottest_celsius", ">", 90)]).needs("heat")
    assert not Policy([Threshold("memory.percent", ">", 90)]).needs("heat")
    assert Monitor(policy=policy, reclaim=False)._builtin.heat is not None


def test_without_such_a_rule_heat_is_not_sampled(tree: KernelTree) -> None:
    monitor = monitor_on(tree, Policy([Threshold("memory.percent", ">", 99)]))
    monitor.sample_slow()
    assert monitor.sample_now().snapshot.heat is None


def test_heat_true_samples_it_and_the_rule_judges_it(tree: KernelTree) -> None:
    reader = HeatReader(hwmon_root=tree.hwmon_root)
    monitor = monitor_on(tree, Policy([HotRule()]), heat=reader)
    monitor.sample_slow()
    state = monitor.sample_now()
    heat = state.snapshot.heat
    assert heat is not None
    assert heat.hottest_celsius == 95.0
    assert heat.fastest_fan_rpm == 5100.0
    assert state.level == Level.WARNING


def test_heat_true_without_a_heat_rule(tree: KernelTree) -> None:
    monitor = monitor_on(
        tree,
        Policy([Threshold("memory.percent", ">", 99)]),
        heat=HeatReader(hwmon_root=tree.hwmon_root),
    )
    with monitor:  # the background loops sample it: the slow one reads, the fast publishes
        wait_until(lambda: monitor.state.snapshot.heat is not None, what="heat in the state")


def test_a_skipped_sensor_reaches_the_snapshot_s_faults_without_making_heat_unknown(
    tree: KernelTree,
) -> None:
    tree.add_hwmon("nvme", [("Composite", 40.0, None, None)])
    tree.damage("hwmon2/temp1_input", "garbage")
    monitor = monitor_on(tree, Policy([HotRule()]), heat=HeatReader(hwmon_root=tree.hwmon_root))
    monitor.sample_slow()
    snap = monitor.sample_now().snapshot
    assert [fault.source for fault in snap.faults] == [tree.path("hwmon2/temp1_input")]
    assert snap.fault_for("heat.hottest_celsius") is None  # the others were read


def test_heat_that_cannot_be_read_is_unknown_to_the_verdict(tree: KernelTree) -> None:
    tree.damage("hwmon0/temp1_input", "unreadable")
    tree.damage("hwmon1/fan1_input", "empty")
    monitor = monitor_on(
        tree,
        Policy([Threshold("heat.hottest_celsius", ">", 90)]),
        heat=HeatReader(hwmon_root=tree.hwmon_root),
    )
    monitor.sample_slow()
    state = monitor.sample_now()
    assert state.snapshot.heat is None
    assert state.snapshot.fault_for("heat.hottest_celsius") is not None
    assert state.verdict.unknown


def test_a_reader_that_raises_is_logged_once_and_heat_is_none(
    tree: KernelTree, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = HeatReader(hwmon_root=tree.hwmon_root)
    monitor = monitor_on(tree, Policy([HotRule()]), heat=reader)
    monitor.sample_slow()

    def broken() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(reader, "read", broken)
    with caplog.at_level(logging.WARNING, logger="resguard"):
        monitor.sample_slow()
        monitor.sample_slow()
    snap = monitor.sample_now().snapshot
    assert snap.heat is None
    assert snap.fault_for("heat") is not None
    assert sum("heat" in record.getMessage() for record in caplog.records) == 1


@pytest.mark.parametrize("heat", ["yes", 1, None])
def test_heat_must_be_a_bool_or_a_reader(heat: object) -> None:
    with pytest.raises(InvalidType, match="heat="):
        Monitor(heat=heat, reclaim=False)  # type: ignore[arg-type]


def test_processes_true_samples_the_table_without_a_process_rule(tree: KernelTree) -> None:
    monitor = Monitor(policy=Policy([Threshold("memory.percent", ">", 99)]), processes=True)
    monitor.sample_slow()
    processes = monitor.sample_now().snapshot.processes
    assert processes is not None
    assert processes
    with pytest.raises(InvalidType, match="processes="):
        Monitor(processes="yes", reclaim=False)  # type: ignore[arg-type]


def test_a_rule_that_reads_processes_makes_the_monitor_sample_them() -> None:
    class Custom(HotRule):
        reads = ("processes",)

    assert Monitor(policy=Policy([Custom()]), reclaim=False)._builtin.process_table is not None
    assert Monitor(policy=Policy([ProcessCount(rss_above="1TiB", at_least=1)]), reclaim=False)
    plain = Monitor(policy=Policy([Threshold("memory.percent", ">", 99)]), reclaim=False)
    assert plain._builtin.process_table is None
