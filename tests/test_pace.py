"""Polling paced by the distance to the nearest memory edge (issue 15, item 2): never a
fixed share of the limit, near an edge as fast as *min_interval*, with no edge relaxed."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import overload

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard.monitor._pace import DEFAULT_FILL_BYTES_PER_S, SAFETY_FACTOR, paced_interval_s
from resguard.rules import Policy, Threshold, memory_edges_bytes
from resguard.testing import make_snapshot

from factories import GiB

MiB = 2**20
MIN_S, RELAXED_S = 0.010, 0.200  # the Monitor's defaults
RATE = DEFAULT_FILL_BYTES_PER_S

sizes = st.integers(0, 2**40)
edge_lists = st.lists(sizes, max_size=8)
rates = st.one_of(st.none(), st.floats(-1.0, 1e12, allow_nan=False))


def pace(used: int | None, edges: list[int] | tuple[int, ...], fill: float | None = None) -> float:
    return paced_interval_s(used, edges, fill, min_interval_s=MIN_S, relaxed_interval_s=RELAXED_S)


# --- properties ---------------------------------------------------------------------------


@given(st.one_of(st.none(), sizes), edge_lists, rates)
def test_the_interval_is_always_within_min_and_relaxed(
    used: int | None, edges: list[int], fill: float | None
) -> None:
    assert MIN_S <= pace(used, edges, fill) <= RELAXED_S


@given(sizes, edge_lists, rates)
def test_no_edge_is_relaxed_and_unknown_use_is_the_fastest(
    used: int, edges: list[int], fill: float | None
) -> None:
    assert pace(used, [], fill) == RELAXED_S
    assert pace(None, edges, fill) == MIN_S  # blind is not calm


@given(sizes, sizes, sizes, rates)
def test_a_nearer_edge_never_gives_a_longer_wait(
    used: int, edge: int, nearer: int, fill: float | None
) -> None:
    if abs(nearer - used) > abs(edge - used):
        edge, nearer = nearer, edge
    assert pace(used, [nearer], fill) <= pace(used, [edge], fill)
    assert pace(used, [edge, nearer], fill) == pace(used, [nearer], fill)  # the nearest counts


@given(sizes, edge_lists, st.floats(0.0, 1e12), st.floats(0.0, 1e12))
def test_a_faster_fill_never_gives_a_longer_wait(
    used: int, edges: list[int], fill: float, faster: float
) -> None:
    fill, faster = sorted((fill, faster))
    assert pace(used, edges, faster) <= pace(used, edges, fill)


@given(sizes, st.integers(0, 2**34), edge_lists, rates)
def test_an_edge_as_far_below_counts_as_one_as_far_above(
    used: int, distance: int, others: list[int], fill: float | None
) -> None:
    used += distance  # room below
    assert pace(used, [used + distance], fill) == pace(used, [used - distance], fill)
    assert pace(used, [*others, used + distance], fill) == pace(
        used, [used - distance, *others], fill
    )


@given(sizes, edge_lists)
def test_a_slow_or_missing_fill_rate_is_the_default_rate(used: int, edges: list[int]) -> None:
    default = pace(used, edges, None)
    for slow in (0.0, -5.0, 1.0, RATE / 2, float("nan")):
        assert pace(used, edges, slow) == default


@given(sizes, st.integers(1, 2**40))
def test_between_the_clamps_the_wait_is_the_distance_at_the_rate_over_the_safety_factor(
    used: int, distance: int
) -> None:
    expected = distance / RATE / SAFETY_FACTOR
    got = pace(used, [used + distance])
    assert got == (min(max(expected, MIN_S), RELAXED_S))
    if MIN_S < expected < RELAXED_S:
        assert math.isclose(got * RATE * SAFETY_FACTOR, distance)


def test_the_minimum_wins_when_the_clamps_cross() -> None:
    assert paced_interval_s(0, [10**12], None, min_interval_s=0.5, relaxed_interval_s=0.1) == 0.5
    assert paced_interval_s(0, [], None, min_interval_s=0.5, relaxed_interval_s=0.1) == 0.5


# --- sorted edges found by bisection, and edges no float can hold ------------------------


class CountedEdges(Sequence[int]):
    """A sorted sequence of *n* evenly spaced edges that counts the items read from it."""

    def __init__(self, n: int, step: int) -> None:
        self.n, self.step, self.reads = n, step, 0

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...
    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        if isinstance(index, slice):
            raise TypeError("no slices: the pacing reads items")
        if not -self.n <= index < self.n:
            raise IndexError(index)
        self.reads += 1
        return (index % self.n) * self.step

    def __iter__(self) -> Iterator[int]:
        raise AssertionError("the sorted edges were scanned, not bisected")


def sorted_pace(
    used: int | None,
    edges: Sequence[int],
    skip: Collection[int] = (),
    more: Iterable[int] = (),
    fill: float | None = None,
) -> float:
    return paced_interval_s(
        used,
        more,
        fill,
        min_interval_s=MIN_S,
        relaxed_interval_s=RELAXED_S,
        sorted_edges_bytes=edges,
        skip_bytes=skip,
    )


def test_a_million_sorted_edges_are_bisected_not_scanned_on_each_tick() -> None:
    edges = CountedEdges(10**6, GiB)
    used = 500_000 * GiB + 300 * MiB  # paced between the clamps: a wrong edge shows
    assert MIN_S < sorted_pace(used, edges) == pace(used, [500_000 * GiB]) < RELAXED_S
    assert edges.reads <= 2 * 20 + 4  # two log2(10**6) searches at most
    edges.reads = 0
    skip = {499_999 * GiB, 500_000 * GiB, 500_001 * GiB}  # armed: they need no pacing
    assert MIN_S < sorted_pace(used, edges, skip) == pace(used, [500_002 * GiB]) < RELAXED_S
    assert edges.reads <= 2 * 20 + 4 + len(skip) + 2


@given(
    st.one_of(st.none(), sizes),
    st.lists(sizes, max_size=12),
    st.lists(sizes, max_size=3),
    st.data(),
    rates,
)
def test_sorted_edges_less_the_skipped_pace_as_the_same_edges_in_any_order(
    used: int | None,
    edges: list[int],
    more: list[int],
    data: st.DataObject,
    fill: float | None,
) -> None:
    ordered = tuple(sorted(set(edges)))
    skip = set(data.draw(st.lists(st.sampled_from(ordered), max_size=4))) if ordered else set()
    counted = [edge for edge in ordered if edge not in skip]
    assert sorted_pace(used, ordered, skip, more, fill) == pace(used, [*counted, *more], fill)


def test_an_edge_too_big_for_a_float_is_far_not_an_error() -> None:
    assert pace(100, [10**400]) == RELAXED_S
    assert pace(10**400, [0]) == RELAXED_S
    assert pace(100, [10**400, 100 + MiB]) == MIN_S
    assert sorted_pace(100, (10**300, 10**400)) == RELAXED_S
    assert sorted_pace(100, (-(10**400), 10**400), (), [100 + MiB]) == MIN_S


@given(
    st.one_of(st.none(), huge := st.integers(-(2**2000), 2**2000)),
    st.lists(huge, max_size=8),
    st.lists(huge, max_size=3),
    rates,
)
def test_any_integers_give_a_finite_wait_within_the_clamps(
    used: int | None, edges: list[int], more: list[int], fill: float | None
) -> None:
    for wait in (
        pace(used, [*edges, *more], fill),
        sorted_pace(used, sorted(edges), (), more, fill),
    ):
        assert math.isfinite(wait)
        assert MIN_S <= wait <= RELAXED_S


# --- concrete cases: a policy's edges, as the Monitor feeds them ------------------------


def interval_at(percent: float, limit: int, fill: float | None = None) -> float:
    policy = Policy([Threshold("memory.percent", ">=", 50)])
    memory = make_snapshot(memory_percent=percent, limit=limit).memory
    return pace(memory.used, memory_edges_bytes(policy, memory), fill)


def test_at_45_percent_under_a_threshold_at_50_percent_of_256_mib_it_polls_at_min() -> None:
    assert interval_at(45, 256 * MiB) == MIN_S  # 12.8 MiB away: 1.1 ms at 6000 MiB/s


def test_far_from_every_edge_it_relaxes_and_comes_back_as_use_nears_one() -> None:
    # 45 % of a 64 GiB host away from the edge: 2.4 s at the default rate, relaxed
    assert interval_at(5, 64 * GiB) == RELAXED_S
    # nearer, shorter, in proportion to the distance: 40 % of 16 GiB is 6.4 GiB: 0.53 s;
    # 2 % is 328 MiB: 27 ms; 0.2 % is 33 MiB: 2.7 ms, so min
    assert interval_at(10, 16 * GiB) == RELAXED_S
    assert interval_at(48, 16 * GiB) == pytest.approx(0.32 * GiB / RATE / SAFETY_FACTOR)
    assert MIN_S < interval_at(48, 16 * GiB) < RELAXED_S
    assert interval_at(49.8, 16 * GiB) == MIN_S
    # and the other side: a firing rule clearing as use falls
    assert interval_at(52, 16 * GiB) == interval_at(48, 16 * GiB)


def test_in_a_small_cgroup_every_edge_is_near_at_the_default_rate() -> None:
    # 256 MiB fills in 43 ms at 6000 MiB/s: 45 % of it away (115 MiB) is 9.6 ms, min;
    # only a measured slow fill could relax it, and a measured rate never lowers the default
    assert interval_at(5, 256 * MiB) == MIN_S
    assert interval_at(5, 256 * MiB, fill=1 * MiB) == MIN_S


# --- the arithmetic of the benchmark's reactions (events off) -----------------------------


def reaction_s(start: int, edge: int, fill: float, *, limit: int) -> float:
    """Seconds from a steady fill's crossing of *edge* to the first paced sample that sees
    it, the loop sampling at each paced interval from *start* (at the fill's own measured
    rate, as a Monitor that measures it would pass)."""
    now, used = 0.0, start
    crossing = (edge - start) / fill
    while used < edge:
        now += pace(used, [edge], fill)
        used = min(start + int(fill * now), limit)
    return now - crossing


@pytest.mark.parametrize(
    ("limit", "start_percent", "edge_percent"),
    [
        (256 * MiB, 5, 50),
        (256 * MiB, 45, 50),
        (256 * MiB, 85, 95),
        (16 * GiB, 10, 80),
        (16 * GiB, 75, 80),
    ],
)
@pytest.mark.parametrize("fill", [1 * MiB * 1000, RATE, SAFETY_FACTOR * RATE])
def test_a_steady_climb_is_seen_within_min_interval_of_its_crossing(
    limit: int, start_percent: int, edge_percent: int, fill: float
) -> None:
    # 1 MiB/ms (the benchmark's climb), the default rate and the fastest the safety factor
    # covers: the crossing is seen no later than min_interval after it (10 ms <= 20 ms)
    start, edge = limit * start_percent // 100, limit * edge_percent // 100
    reaction = reaction_s(start, edge, fill, limit=limit)
    assert -1e-9 <= reaction <= MIN_S + 1e-9


@pytest.mark.parametrize("start_percent", [5, 40, 45])
def test_a_sudden_jump_is_seen_within_the_interval_in_force_when_it_came(
    start_percent: int,
) -> None:
    # a jump of 60 % of 256 MiB past a threshold at 50 %: no rate predicts it, so it is seen
    # at the next sample, at most the interval in force, min_interval here (10 ms <= 20 ms)
    assert interval_at(start_percent, 256 * MiB) == MIN_S
