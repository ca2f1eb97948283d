"""A policy's memory edges: every ``memory.used`` value at which one of its rules changes
its mind, in bytes against the current limit (issue 15, item 2), and only those."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from resguard import InvalidType, presets
from resguard.rules import (
    LeakDetector,
    Level,
    Policy,
    ProcessCount,
    Rule,
    Threshold,
    TimeToLimit,
    memory_edges_bytes,
)
from resguard.snapshot import MemoryInfo
from resguard.testing import make_snapshot

from factories import GiB

MiB = 2**20
LIMIT = 256 * MiB


def memory(limit: int | None = LIMIT, used: int | None = 0) -> MemoryInfo:
    known = limit is not None and used is not None
    return MemoryInfo(
        total=32 * GiB,
        limit=limit,
        used=used,
        available=limit - used if known else None,  # type: ignore[operator]
        percent=(100 * used / limit if limit else 100.0) if known else None,  # type: ignore[operator]
        source="cgroup" if limit is not None else "unknown",
        source_detail="memory.limit_in_bytes",
        cgroup="/test",
    )


def edges(rules: Iterable[Rule], limit: int | None = LIMIT) -> tuple[int, ...]:
    return memory_edges_bytes(Policy(list(rules)), memory(limit))


def share(percent: float, limit: int = LIMIT) -> int:
    return math.ceil(limit * percent / 100)  # rounded up, as an edge is


# --- every kind of memory figure --------------------------------------------------------


def test_a_percent_threshold_has_its_value_and_its_clear_as_edges() -> None:
    rule = Threshold("memory.percent", ">=", 50, clear=45)
    assert edges([rule]) == (share(45), share(50)) == (120795956, 134217728)


def test_a_byte_threshold_as_a_size_or_as_a_share_of_the_limit() -> None:
    assert edges([Threshold("memory.used", ">", "100MiB", clear="90MiB")]) == (90 * MiB, 100 * MiB)
    assert edges([Threshold("memory.used", ">", "75%", clear="70%")]) == (share(70), share(75))
    # a share follows the limit of the memory given; a size does not
    assert edges([Threshold("memory.used", ">", "75%")], limit=GiB) == (share(75, GiB),)
    assert edges([Threshold("memory.used", ">", "100MiB")], limit=GiB) == (100 * MiB,)


def test_an_available_threshold_is_an_edge_at_the_limit_less_the_figure() -> None:
    rule = Threshold("memory.available", "<", "32MiB", clear="64MiB")
    assert edges([rule]) == (LIMIT - 64 * MiB, LIMIT - 32 * MiB)
    assert edges([Threshold("memory.available", "<=", "10%")]) == (share(90),)


def test_a_leak_rule_on_memory_has_its_only_above_figure_as_an_edge() -> None:
    assert edges([LeakDetector("memory.used", only_above="200MiB")]) == (200 * MiB,)
    assert edges([LeakDetector("memory.percent", growth=5, only_above=60)]) == (share(60),)
    assert edges([LeakDetector("memory.used")]) == ()  # a trend alone has no edge


def test_rules_without_a_memory_level_have_no_edge() -> None:
    rules: list[Rule] = [
        TimeToLimit(within="2m"),  # a fill rate, not a level
        Threshold("swap.used", ">", "1GiB"),
        Threshold("pressure.memory.some.avg10", ">", 10),
        Threshold("cpu.percent", ">", 80),
        Threshold("memory.limit", "<", "1GiB"),  # the limit itself, not its use
        ProcessCount(cpu_percent_above=50, at_least=2),
        LeakDetector("process.rss"),
    ]
    assert edges(rules) == ()


def test_a_rule_of_ones_own_gives_its_edges_through_memory_edges_bytes() -> None:
    class MachineBudget:
        name, level, reads = "budget machine", Level.WARNING, ("memory.used",)

        def new_state(self) -> None:
            return None

        def step(self, snapshot: object, state: object, now: float) -> None:
            return None

        def memory_edges_bytes(self, memory: MemoryInfo) -> list[float]:
            assert memory.limit is not None
            return [memory.limit / 2, 10 * MiB, float("nan"), -1.0, 2 * memory.limit]

    class Broken(MachineBudget):
        def memory_edges_bytes(self, memory: MemoryInfo) -> list[float]:
            raise RuntimeError("a bug in a custom rule")

    assert edges([MachineBudget(), Broken()]) == (10 * MiB, LIMIT // 2)


def test_the_presets_edges_are_their_memory_levels_and_clear_levels() -> None:
    service = memory_edges_bytes(presets.service(), memory())
    assert service == tuple(share(p) for p in (75, 80, 85, 90))
    laptop = memory_edges_bytes(presets.laptop(), memory(16 * GiB))
    assert laptop == tuple(share(p, 16 * GiB) for p in (80, 85, 90, 95))


def test_an_unknown_limit_skips_the_edges_that_need_it_and_keeps_fixed_sizes() -> None:
    rules = [
        Threshold("memory.percent", ">=", 80),
        Threshold("memory.used", ">", "75%"),
        Threshold("memory.available", "<", "100MiB"),
        Threshold("memory.used", ">", "3GiB", clear="2GiB"),
    ]
    assert edges(rules, limit=None) == (2 * GiB, 3 * GiB)
    assert memory_edges_bytes(presets.service(), memory(None, None)) == ()


def test_edges_outside_zero_to_the_limit_are_left_out_and_duplicates_merged() -> None:
    rules = [
        Threshold("memory.used", ">", "2GiB"),  # above a 1 GiB limit: never reached
        Threshold("memory.available", "<", "2GiB"),  # the same: used below 0
        Threshold("memory.percent", ">=", 50),
        Threshold("memory.used", ">=", "50%"),
        Threshold("memory.available", "<=", "50%"),
    ]
    assert edges(rules, limit=GiB) == (GiB // 2,)


# --- the cache ----------------------------------------------------------------------------


def test_the_answer_is_kept_until_the_limit_or_the_rules_change() -> None:
    policy = Policy([Threshold("memory.percent", ">=", 50)])
    first = policy.memory_edges_bytes(memory(used=1))
    assert memory_edges_bytes(policy, memory(used=2)) is first  # same limit: kept
    assert policy.memory_edges_bytes(memory(GiB)) == (GiB // 2,)  # another limit: anew
    policy.rules = (Threshold("memory.percent", ">=", 25),)
    assert policy.memory_edges_bytes(memory(GiB)) == (GiB // 4,)


# --- the edges are exactly where a memory threshold changes its mind --------------------

METRICS = ("memory.percent", "memory.used", "memory.available")


@st.composite
def memory_thresholds(draw: st.DrawFn) -> Threshold:
    metric = draw(st.sampled_from(METRICS))
    op = draw(st.sampled_from([">", ">=", "<", "<="]))
    value = draw(st.integers(1, 99))
    gap = draw(st.integers(0, 30))
    clear = min(max(value - gap if op in (">", ">=") else value + gap, 1), 99)
    form = draw(st.sampled_from(["percent", "share", "size"]))
    limit = LIMIT

    def figure(percent: int) -> float | str:
        if metric == "memory.percent":
            return percent
        return f"{percent}%" if form == "share" else str(share(percent, limit))

    return Threshold(metric, op, figure(value), clear=figure(clear), level=Level.WARNING)


def fires(rule: Threshold, used: int, *, after_firing: bool) -> bool:
    """Whether *rule* fires at *used* bytes, fresh or after it fired at a full/empty use."""
    policy = Policy([rule])
    state = policy.new_state()
    if after_firing:
        start = LIMIT if rule.op in (">", ">=") else 0
        if rule.metric == "memory.available":
            start = LIMIT - start
        assert policy.evaluate(make_snapshot(at=0.0, used=start, limit=LIMIT), state).breaches
    verdict = policy.evaluate(make_snapshot(at=1.0, used=used, limit=LIMIT), state)
    return bool(verdict.breaches)


@settings(max_examples=40)  # each example judges 400 snapshots
@given(memory_thresholds())
def test_between_two_edges_a_threshold_does_not_change_its_mind(rule: Threshold) -> None:
    found = edges([rule])
    grid = [LIMIT * step // 100 for step in range(101)]  # every point of the limit
    for low, high in itertools.pairwise(grid):
        if any(low - 2 <= edge <= high + 2 for edge in found):
            continue
        for after_firing in (False, True):
            assert fires(rule, low, after_firing=after_firing) == fires(
                rule, high, after_firing=after_firing
            ), (low, high, after_firing)


@given(memory_thresholds())
def test_at_each_edge_a_threshold_changes_its_mind_fresh_or_while_firing(rule: Threshold) -> None:
    for edge in edges([rule]):
        assume(2 <= edge <= LIMIT - 2)
        assert any(
            fires(rule, edge - 2, after_firing=after) != fires(rule, edge + 2, after_firing=after)
            for after in (False, True)
        ), edge


@pytest.mark.parametrize("limit", [None, 0, 1, LIMIT])
def test_a_policy_without_memory_rules_has_no_edges_whatever_the_limit(limit: int | None) -> None:
    assert edges([Threshold("cpu.percent", ">", 80)], limit=limit) == ()


def test_anything_but_a_policy_and_a_memory_reading_is_refused_by_type() -> None:
    with pytest.raises(InvalidType, match=r"is not a resguard\.rules\.Policy"):
        memory_edges_bytes([Threshold("memory.percent", ">", 50)], memory())  # type: ignore[arg-type]
    with pytest.raises(InvalidType, match=r"is not a resguard\.snapshot\.MemoryInfo"):
        memory_edges_bytes(Policy([]), make_snapshot())  # type: ignore[arg-type]


# --- a rule of one's own that gives too much or the wrong thing ----------------------------


class OwnEdges:
    """A rule of one's own whose ``memory_edges_bytes`` answers *values(memory)*."""

    name, level, reads = "own edges", Level.WARNING, ("memory.used",)

    def __init__(self, values: object) -> None:
        self.values = values

    def new_state(self) -> None:
        return None

    def step(self, snapshot: object, state: object, now: float) -> None:
        return None

    def memory_edges_bytes(self, memory: MemoryInfo) -> object:
        return self.values


def test_an_endless_or_huge_answer_is_read_only_up_to_the_cap_per_rule() -> None:
    from resguard.rules._edges import MAX_OWN_EDGES

    pulled = itertools.count()

    def endless() -> Iterable[int]:  # endless in effect: stops only so the test cannot hang
        for value in itertools.count():
            if next(pulled) > 2**22:
                return
            yield value

    assert edges([OwnEdges(endless())]) == tuple(range(MAX_OWN_EDGES))
    assert next(pulled) <= MAX_OWN_EDGES + 1  # nothing past the cap was asked for
    assert edges([OwnEdges(range(10**9)), OwnEdges([5 * MiB])]) == (
        *range(MAX_OWN_EDGES),
        5 * MiB,
    )


@pytest.mark.parametrize(
    "answer",
    [
        [MiB, "5"],
        ["5", MiB],
        [True, MiB],
        [MiB, False],
        [MiB, None],
        [MiB, b"7"],
        "12345",
        b"\x10\x20",
        bytearray(b"\x10"),
        5,
        None,
    ],
    ids=repr,
)
def test_an_answer_with_anything_but_numbers_gives_none_of_its_edges(answer: object) -> None:
    # a str, bool or other non-number is a broken method: none of its values is used
    # (not the numbers beside it), and a bool is never an edge; the other rules keep theirs
    assert edges([OwnEdges(answer), OwnEdges([3 * MiB])]) == (3 * MiB,)


def test_a_number_too_big_for_a_float_is_past_the_limit_not_a_broken_answer() -> None:
    assert edges([OwnEdges([10**400, MiB, -(10**400)])]) == (MiB,)
    assert edges([OwnEdges([10**400, MiB])], limit=None) == (MiB,)


@given(st.lists(st.integers(-(2**1100), 2**1100) | st.floats(), max_size=20))
def test_any_numbers_give_the_ones_from_zero_to_the_limit_rounded_up(
    values: list[int | float],
) -> None:
    expected = {
        math.ceil(value)
        for value in values
        if 0 <= value <= LIMIT  # NaN: never
    }
    assert edges([OwnEdges(values)]) == tuple(sorted(expected))
