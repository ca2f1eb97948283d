"""Every breach names its culprits: the processes to blame for a memory or CPU metric (top
3 by RSS or CPU, scoped to the cgroup, kernel threads left out) and the rows of a table
rule, each with the unit a person reads it in."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resguard
from resguard.rules import (
    LeakDetector,
    Level,
    Offender,
    Policy,
    ProcessCount,
    ProcessThreshold,
    Threshold,
    culprit_resource,
    culprits,
)
from resguard.snapshot import Fault, ProcessInfo, Snapshot
from resguard.testing import make_process, make_snapshot

from factories import MB, GiB


def table() -> tuple[ProcessInfo, ...]:
    return (
        make_process(10, "python", cpu_percent=97.0, rss=1 * GiB),
        make_process(11, "chrome", cpu_percent=12.0, rss=10 * GiB),
        make_process(12, "ollama", cpu_percent=0.0, rss=int(12.5 * GiB)),
        make_process(13, "editor", cpu_percent=3.0, rss=200 * MB),
        make_process(14, "shell", cpu_percent=0.5, rss=5 * MB),
    )


def kernel_thread(pid: int, name: str, cpu_percent: float = 0.0) -> ProcessInfo:
    """A child of kthreadd (PID 2) without a command line or memory, as Linux lists one."""
    row = make_process(pid, name, cpu_percent=cpu_percent, rss=0)
    return attrs.evolve(row, cmdline=(), ppid=2)


def test_a_memory_metric_names_the_three_largest_by_rss_as_a_share_of_the_limit() -> None:
    snap = make_snapshot(memory_percent=90, limit=16 * GiB, processes=table())
    named = culprits(snap, "memory.percent")
    assert [(o.pid, o.name) for o in named] == [(12, "ollama"), (11, "chrome"), (10, "python")]
    assert [round(o.value, 2) for o in named] == [78.12, 62.5, 6.25]
    assert {o.unit for o in named} == {"memory_percent"}


@pytest.mark.parametrize(
    "metric",
    [
        "memory.percent",
        "memory.used",
        "memory.available",
        "swap.used",
        "swap.percent",
        "pressure.memory.some.avg10",
        "pressure.memory.full.avg60",
        "pressure.memory_level",
        "processes.rss",
        "processes.uss",
    ],
)
def test_memory_swap_and_memory_pressure_blame_memory(metric: str) -> None:
    assert culprit_resource(metric) == "memory"


@pytest.mark.parametrize(
    "metric",
    [
        "cpu.percent",
        "pressure.cpu.some.avg10",
        "cpu.load_1m",
        "cpu.load_15m",
        "processes.cpu_percent",
    ],
)
def test_cpu_metrics_blame_cpu(metric: str) -> None:
    assert culprit_resource(metric) == "cpu"


@pytest.mark.parametrize(
    "metric", ["process.rss", "process.cpu_percent", "containers.memory.total", "taken_at"]
)
def test_this_process_containers_and_times_blame_no_process(metric: str) -> None:
    assert culprit_resource(metric) is None
    assert culprits(make_snapshot(processes=table()), metric) == ()


def test_a_cpu_metric_names_the_busiest_as_a_share_of_a_core() -> None:
    snap = make_snapshot(cpu_percent=100.0, processes=table())
    named = culprits(snap, "cpu.percent")
    assert [(o.pid, o.value, o.unit) for o in named] == [
        (10, 97.0, "core_percent"),
        (11, 12.0, "core_percent"),
        (13, 3.0, "core_percent"),
    ]


def test_only_processes_using_the_resource_are_named() -> None:
    idle = (make_process(1, "a", cpu_percent=0.0), make_process(2, "b", cpu_percent=4.0))
    assert [o.pid for o in culprits(make_snapshot(processes=idle), "cpu.percent")] == [2]


def test_no_process_table_no_culprits() -> None:
    assert culprits(make_snapshot(memory_percent=99), "memory.percent") == ()
    assert culprits(make_snapshot(processes=()), "memory.percent") == ()


def test_the_culprits_of_a_cgroup_limit_are_the_cgroup_members_only() -> None:
    # the 300 MiB cgroup: the host's chrome is larger, the member holds the memory
    host = (
        make_process(500, "chrome", rss=2 * GiB, cpu_percent=40.0),
        make_process(600, "grower", rss=253 * 2**20, cpu_percent=5.0),
        make_process(601, "sh", rss=3 * 2**20),
    )
    snap = attrs.evolve(
        make_snapshot(used=269 * 2**20, limit=300 * 2**20, processes=host),
        cgroup_pids=(600, 601),
    )
    named = culprits(snap, "memory.percent")
    assert [o.name for o in named] == ["grower", "sh"]
    assert named[0].value == pytest.approx(253 / 300 * 100)
    assert [o.name for o in culprits(snap, "cpu.percent")] == ["grower"]


def test_an_empty_cgroup_has_no_culprits_rather_than_the_host_processes() -> None:
    snap = attrs.evolve(make_snapshot(processes=table()), cgroup_pids=())
    assert culprits(snap, "memory.percent") == ()


def test_kernel_threads_are_never_culprits() -> None:
    rows = (
        kernel_thread(2, "kworker/0:1", cpu_percent=80.0),
        make_process(7, "app", cpu_percent=20),
    )
    assert [o.name for o in culprits(make_snapshot(processes=rows), "cpu.percent")] == ["app"]


def test_without_a_limit_the_share_is_of_the_total_and_without_either_bytes() -> None:
    snap = make_snapshot(processes=table())
    no_limit = attrs.evolve(snap, memory=attrs.evolve(snap.memory, limit=None, total=20 * GiB))
    assert culprits(no_limit, "memory.percent")[0].value == pytest.approx(62.5)
    blind = attrs.evolve(snap, memory=attrs.evolve(snap.memory, limit=None, total=None))
    first = culprits(blind, "memory.percent")[0]
    assert (first.value, first.unit) == (12.5 * GiB, "bytes")


def test_n_and_since() -> None:
    snap = make_snapshot(at=50.0, processes=table())
    assert len(culprits(snap, "memory.percent", 5)) == 5
    assert culprits(snap, "memory.percent", 0) == ()
    assert {o.since for o in culprits(snap, "cpu.percent")} == {50.0}
    assert {o.since for o in culprits(snap, "cpu.percent", since=20.0)} == {20.0}


@pytest.mark.parametrize(
    ("n", "error"),
    [(-1, resguard.InvalidValue), ("3", resguard.InvalidType), (True, resguard.InvalidType)],
)
def test_a_bad_count_is_refused_quoting_it(n: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=f"n={n!r}"):
        culprits(make_snapshot(), "memory.percent", n)  # type: ignore[arg-type]


def test_ties_are_named_in_pid_order_every_time() -> None:
    rows = tuple(make_process(pid, f"w{pid}", cpu_percent=50.0) for pid in (9, 3, 7, 5))
    snap = make_snapshot(processes=rows)
    assert [o.pid for o in culprits(snap, "cpu.percent")] == [3, 5, 7]


# ------------------------------------------------------------ in breaches and verdicts ---


def test_a_memory_breach_names_its_culprits_in_the_message_and_the_dict() -> None:
    policy = Policy([Threshold("memory.percent", ">=", 85, name="memory >= 85%")])
    verdict = policy.evaluate(make_snapshot(memory_percent=90, processes=table()))
    (breach,) = verdict.breaches
    assert breach.message == (
        "memory >= 85%: 90.0% (12 ollama 78% of memory, 11 chrome 62% of memory, "
        "10 python 6% of memory)"
    )
    offenders = verdict.to_dict()["breaches"][0]["offenders"]
    assert [(o["pid"], o["name"], o["unit"]) for o in offenders] == [
        (12, "ollama", "memory_percent"),
        (11, "chrome", "memory_percent"),
        (10, "python", "memory_percent"),
    ]


def test_a_total_cpu_breach_names_the_busiest_by_share_of_a_core() -> None:
    policy = Policy([Threshold("cpu.percent", ">", 80, for_="60s")])
    state = policy.new_state()
    verdicts = [
        policy.evaluate(make_snapshot(at=float(t), cpu_percent=100.0, processes=table()), state)
        for t in range(0, 61, 5)
    ]
    assert all(v.ok for v in verdicts[:-1])
    (breach,) = verdicts[-1].breaches
    assert "10 python 97% of a core" in breach.message
    assert breach.offenders[0].since == 0.0  # when the breach began


def test_a_breach_held_through_an_unknown_sample_still_names_culprits() -> None:
    policy = Policy([Threshold("memory.percent", ">=", 85)])
    state = policy.new_state()
    policy.evaluate(make_snapshot(at=0.0, memory_percent=90, processes=table()), state)
    fault = Fault("memory", "/proc/meminfo", "empty", "no lines")
    snap = make_snapshot(at=1.0, memory_percent=90, processes=table())
    blind = attrs.evolve(
        snap, memory=attrs.evolve(snap.memory, percent=None, used=None), faults=(fault,)
    )
    verdict = policy.evaluate(blind, state)
    assert verdict.level is Level.WARNING
    assert [o.name for o in verdict.breaches[0].offenders] == ["ollama", "chrome", "python"]


def test_a_breach_without_a_process_table_names_nobody() -> None:
    verdict = Policy([Threshold("memory.percent", ">=", 85)]).evaluate(
        make_snapshot(memory_percent=90)
    )
    assert verdict.breaches[0].offenders == ()
    assert verdict.breaches[0].message == "memory.percent >= 85%: 90.0%"


def test_swap_growing_names_the_largest_processes_and_a_leak_of_this_process_nobody() -> None:
    swap_rule = LeakDetector("swap.used", growth="100MiB", window="2m")
    own_rule = LeakDetector("process.rss", growth="10MB", window="2m")
    policy = Policy([swap_rule, own_rule])
    state = policy.new_state()
    verdict = None
    for t in range(0, 240, 2):
        snap = make_snapshot(at=float(t), rss=30 * MB + t * MB, processes=table())
        used = t * 2**20
        snap = attrs.evolve(
            snap, swap=attrs.evolve(snap.swap, total=8 * GiB, used=used, free=8 * GiB - used)
        )
        verdict = policy.evaluate(snap, state)
    assert verdict is not None
    by_rule = {b.metric: b for b in verdict.breaches}
    assert [o.name for o in by_rule["swap.used"].offenders] == ["ollama", "chrome", "python"]
    assert by_rule["process.rss"].offenders == ()


def test_process_rules_name_their_processes_by_share_of_a_core() -> None:
    rows = (make_process(1, "renderer", cpu_percent=240.0), make_process(2, "api", cpu_percent=60))
    snap = make_snapshot(processes=rows)
    single = ProcessThreshold(cpu_percent_above=100, name="over a core")
    several = ProcessCount(cpu_percent_above=50, at_least=2, name="busy")
    verdict = Policy([single, several]).evaluate(snap)
    messages = [breach.message for breach in verdict.breaches]
    assert messages == [
        "over a core: 240.0% (1 renderer 240% of a core)",
        "busy: 2 (1 renderer 240% of a core, 2 api 60% of a core)",
    ]


def test_a_process_rss_rule_names_its_processes_in_bytes() -> None:
    rows = (make_process(1, "big", rss=3 * GiB),)
    verdict = Policy([ProcessThreshold(rss_above="2GiB", name="big")]).evaluate(
        make_snapshot(processes=rows)
    )
    assert verdict.breaches[0].message == "big: 3.0 GiB (1 big 3.0 GiB)"
    assert verdict.breaches[0].offenders[0].unit is None  # the breach's own: bytes


def test_offenders_made_the_old_way_still_work() -> None:
    process = Offender(7, "p", 12.0, 0.0)
    container = Offender(None, "postgres", 91.0, 0.0, "3f2a1b9c0d4e5f")
    assert (process.unit, process.id, process.label) == (None, None, "7 p")
    assert (container.unit, container.label) == (None, "3f2a1b9c0d4e postgres")


def test_policy_needs_says_which_slow_sources_its_rules_read() -> None:
    assert Policy([ProcessThreshold(cpu_percent_above=90)]).needs("processes")
    assert Policy([ProcessCount(cpu_percent_above=50)]).needs("processes")
    memory = Policy([Threshold("memory.percent", ">=", 85)])
    assert not memory.needs("processes")  # culprits never make a Monitor sample the table
    assert memory.needs("memory")
    assert not memory.needs("mem")
    with pytest.raises(resguard.InvalidType, match="field=3"):
        memory.needs(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- properties ---

rows_strategy = st.lists(
    st.builds(
        make_process,
        st.integers(1, 60),
        st.sampled_from(["a", "b", "c"]),
        cpu_percent=st.floats(0, 400),
        rss=st.integers(0, 64 * GiB),
    ),
    max_size=25,
    unique_by=lambda row: row.pid,
)


@settings(max_examples=200, deadline=None)
@given(
    rows=rows_strategy,
    scope=st.none() | st.lists(st.integers(1, 60), unique=True).map(lambda p: tuple(sorted(p))),
    metric=st.sampled_from(["memory.percent", "swap.used", "cpu.percent", "cpu.load_5m"]),
    n=st.integers(0, 6),
)
def test_culprits_are_the_top_n_of_the_scope_worst_first(
    rows: list[ProcessInfo], scope: tuple[int, ...] | None, metric: str, n: int
) -> None:
    snap: Snapshot = attrs.evolve(make_snapshot(processes=tuple(rows)), cgroup_pids=scope)
    named = culprits(snap, metric, n)
    cpu = culprit_resource(metric) == "cpu"
    figure = {row.pid: (row.cpu_percent if cpu else row.rss * 100 / (16 * GiB)) for row in rows}
    candidates = [
        row.pid for row in rows if (scope is None or row.pid in scope) and figure[row.pid] > 0
    ]
    assert len(named) == min(n, len(candidates))
    assert all(o.pid in candidates for o in named)
    values = [o.value for o in named]
    assert values == sorted(values, reverse=True)
    for offender in named:
        assert offender.pid is not None
        assert offender.value == pytest.approx(figure[offender.pid])
    left_out = [figure[pid] for pid in candidates if pid not in {o.pid for o in named}]
    assert not named or all(value <= named[-1].value for value in left_out)


def test_a_notebook_shows_each_breach_with_its_culprits() -> None:
    verdict = Policy([Threshold("memory.percent", ">=", 85)]).evaluate(
        make_snapshot(memory_percent=90, processes=table())
    )
    html = verdict._repr_html_()
    assert "<th>culprits</th>" in html
    assert "12 ollama 78% of memory, 11 chrome 62% of memory, 10 python 6% of memory" in html


def test_more_than_three_culprits_are_counted_not_listed() -> None:
    rows = tuple(make_process(pid, f"w{pid}", cpu_percent=60.0) for pid in range(1, 6))
    verdict = Policy([ProcessCount(cpu_percent_above=50)]).evaluate(make_snapshot(processes=rows))
    assert verdict.breaches[0].culprits.endswith(", +2 more")
    assert (
        Policy([Threshold("memory.percent", ">", 1)])
        .evaluate(make_snapshot(memory_percent=5))
        .breaches[0]
        .culprits
        == ""
    )


def test_a_culprit_named_with_control_characters_cannot_forge_a_log_line() -> None:
    rows = (make_process(66, "evil\x1b[2J\nWARNING: fake", cpu_percent=300.0),)
    verdict = Policy([ProcessThreshold(cpu_percent_above=100)]).evaluate(
        make_snapshot(processes=rows)
    )
    message = verdict.breaches[0].message
    assert "\x1b" not in message
    assert "\n" not in message
    assert "66 evil\\x1b[2J\\nWARNING: fake 300% of a core" in message
    assert verdict.breaches[0].offenders[0].name == "evil\x1b[2J\nWARNING: fake"  # data kept


def test_a_custom_rules_odd_offender_still_makes_a_message() -> None:
    odd = Offender(None, None, 1.0, 0.0, id=None)  # type: ignore[arg-type]
    assert odd.label == "None"


def test_a_notebook_verdict_shows_figures_in_their_units_not_raw_numbers() -> None:
    snap = make_snapshot(used=3 * GiB, processes=table())
    html = Policy([Threshold("memory.used", ">=", "1GiB", for_=0)]).evaluate(snap)._repr_html_()
    assert "3.0 GiB" in html
    assert "1.0 GiB" in html
    assert "3221225472" not in html
    assert ">WARNING<" in html
    assert "12 ollama 78% of memory" in html


def test_a_notebook_verdict_escapes_what_it_cannot_judge() -> None:
    snap = make_snapshot(memory_percent=50)
    fault = Fault("memory", "/proc/<mem\x1binfo>", "empty", "no lines")
    blind = attrs.evolve(
        snap, memory=attrs.evolve(snap.memory, percent=None, used=None), faults=(fault,)
    )
    html = Policy([Threshold("memory.percent", ">=", 85)]).evaluate(blind)._repr_html_()
    assert "/proc/&lt;mem\\x1binfo&gt;" in html
    assert "\x1b" not in html
