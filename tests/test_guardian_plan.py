"""The guardian's decisions (resguard.guardian.Planner): which actions fire for a verdict,
the cooldown per (action, rule), notify once per breach, and pause/renice undone when
their rules clear; property tests over any sequence of verdicts."""

from __future__ import annotations

from collections import defaultdict

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resguard.guardian import ActionSpec, Decision, Planner
from resguard.rules import Breach, Level, Offender, Verdict

RULES = ("runaway", "memory", "heat")


def breach(rule: str, level: Level = Level.WARNING) -> Breach:
    return Breach(rule, "m", ">", 1.0, 0.0, level, 0.0, 0.0, 0.0)


def verdict(*breaches: Breach) -> Verdict:
    level = max((b.level for b in breaches), default=Level.OK)
    return Verdict(level, tuple(breaches))


def spec(
    index: int, do: str, when: str = "runaway", cooldown_s: float = 60.0, hold_s: float = 0.0
) -> ActionSpec:
    """An action; *hold_s* 0 (undone at the first clear verdict) unless a test says."""
    return ActionSpec(index=index, when=when, do=do, cooldown_s=cooldown_s, hold_s=hold_s)


def fired(planner: Planner, v: Verdict, now: float) -> list[tuple[str, str]]:
    return [(s.do, b.rule) for s, b in planner.step(v, now).fire]


def test_an_action_fires_at_once_when_its_rule_breaches_and_not_for_other_rules() -> None:
    planner = Planner([spec(0, "pause")])
    assert fired(planner, verdict(breach("memory")), 0.0) == []
    assert fired(planner, verdict(breach("runaway")), 1.0) == [("pause", "runaway")]


def test_a_holding_breach_fires_again_only_after_the_cooldown() -> None:
    planner = Planner([spec(0, "stop", cooldown_s=10)])
    v = verdict(breach("runaway"))
    assert fired(planner, v, 0.0) == [("stop", "runaway")]
    assert fired(planner, v, 9.9) == []
    assert fired(planner, v, 10.0) == [("stop", "runaway")]


def test_the_cooldown_outlives_the_breach_a_flapping_rule_does_not_fire_faster() -> None:
    planner = Planner([spec(0, "renice", cooldown_s=30)])
    assert fired(planner, verdict(breach("runaway")), 0.0) == [("renice", "runaway")]
    planner.step(verdict(), 1.0)
    assert fired(planner, verdict(breach("runaway")), 2.0) == []
    assert fired(planner, verdict(breach("runaway")), 30.0) == [("renice", "runaway")]


def test_notify_fires_once_per_breach_not_per_tick_and_again_after_it_cleared() -> None:
    planner = Planner([spec(0, "notify", cooldown_s=0)])
    v = verdict(breach("runaway"))
    assert fired(planner, v, 0.0) == [("notify", "runaway")]
    assert [fired(planner, v, t) for t in (1.0, 100.0, 1000.0)] == [[], [], []]
    planner.step(verdict(), 1001.0)
    assert fired(planner, v, 1002.0) == [("notify", "runaway")]


def test_a_level_action_covers_every_rule_at_or_above_it_each_with_its_own_cooldown() -> None:
    planner = Planner([spec(0, "notify", when="WARNING")])
    v = verdict(breach("memory", Level.CRITICAL), breach("runaway", Level.WARNING))
    assert sorted(fired(planner, v, 0.0)) == [("notify", "memory"), ("notify", "runaway")]
    critical_only = Planner([spec(0, "notify", when="CRITICAL")])
    assert fired(critical_only, v, 0.0) == [("notify", "memory")]


def test_pause_is_cleared_once_when_its_rule_clears_and_only_after_it_fired() -> None:
    planner = Planner([spec(0, "pause"), spec(1, "notify")])
    assert planner.step(verdict(), 0.0).clear == ()  # never fired: nothing to undo
    planner.step(verdict(breach("runaway")), 1.0)
    planner.step(verdict(breach("runaway")), 2.0)
    cleared = planner.step(verdict(), 3.0).clear
    assert [s.do for s in cleared] == ["pause"]  # notify has nothing to undo
    assert planner.step(verdict(), 4.0).clear == ()


def test_a_level_pause_is_cleared_only_when_no_rule_it_acted_for_holds() -> None:
    planner = Planner([spec(0, "pause", when="WARNING", cooldown_s=0)])
    planner.step(verdict(breach("memory"), breach("runaway")), 0.0)
    assert planner.step(verdict(breach("memory")), 1.0).clear == ()
    assert [s.do for s in planner.step(verdict(), 2.0).clear] == ["pause"]


# ----------------------------------------------------------------------- properties ---

ACTIONS = [
    spec(0, "notify", when="runaway", cooldown_s=5),
    spec(1, "pause", when="WARNING", cooldown_s=7),
    spec(2, "stop", when="memory", cooldown_s=0),
    spec(3, "notify", when="CRITICAL", cooldown_s=0),
    spec(4, "renice", when="heat", cooldown_s=3),
]

ticks = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=20, allow_nan=False),  # time since the last tick
        st.dictionaries(st.sampled_from(RULES), st.sampled_from([Level.WARNING, Level.CRITICAL])),
    ),
    max_size=60,
)


Tick = tuple[float, dict[str, Level]]


def _run(sequence: list[Tick]) -> list[tuple[float, dict[str, Level], Decision]]:
    planner = Planner(ACTIONS)
    now = 0.0
    history: list[tuple[float, dict[str, Level], Decision]] = []
    for step_s, present in sequence:
        now += step_s
        v = verdict(*(breach(rule, level) for rule, level in present.items()))
        history.append((now, present, planner.step(v, now)))
    return history


def _covers(action: ActionSpec, rule: str, present: dict[str, Level]) -> bool:
    """Whether *action* covers *rule*'s breach in a tick where *present* holds."""
    if rule not in present:
        return False
    if action.when in ("WARNING", "CRITICAL"):
        return present[rule] >= Level[action.when]
    return rule == action.when


@settings(max_examples=300, deadline=None)
@given(ticks)
def test_no_action_fires_for_a_rule_more_often_than_its_cooldown(sequence: list[Tick]) -> None:
    last: dict[tuple[int, str], float] = {}
    for now, present, decision in _run(sequence):
        for action, hit in decision.fire:
            assert hit.rule in present  # only for a breach that holds now
            key = (action.index, hit.rule)
            if key in last:
                assert now - last[key] >= action.cooldown_s
            last[key] = now


@settings(max_examples=300, deadline=None)
@given(ticks)
def test_notify_fires_at_most_once_per_breach_episode(sequence: list[Tick]) -> None:
    count: dict[tuple[int, str], int] = defaultdict(int)
    for _, present, decision in _run(sequence):
        for key in list(count):
            if not _covers(ACTIONS[key[0]], key[1], present):
                del count[key]  # the episode ended: the action no longer covers the rule
        for action, hit in decision.fire:
            if action.do == "notify":
                count[(action.index, hit.rule)] += 1
                assert count[(action.index, hit.rule)] == 1


@settings(max_examples=300, deadline=None)
@given(ticks)
def test_a_holding_breach_is_acted_on_as_soon_as_its_cooldown_allows(sequence: list[Tick]) -> None:
    last: dict[tuple[int, str], float] = {}
    for now, present, decision in _run(sequence):
        done = {(a.index, b.rule) for a, b in decision.fire}
        for action in ACTIONS:
            if action.do == "notify":
                continue
            for rule in present:
                covered = _covers(action, rule, present)
                due = (action.index, rule) not in last or (
                    now - last[(action.index, rule)] >= action.cooldown_s
                )
                assert ((action.index, rule) in done) == (covered and due)
        last.update(dict.fromkeys(done, now))


@settings(max_examples=300, deadline=None)
@given(ticks)
def test_pause_and_renice_are_cleared_once_after_firing_when_nothing_they_cover_holds(
    sequence: list[Tick],
) -> None:
    armed: set[int] = set()
    for _, present, decision in _run(sequence):
        for action in decision.clear:
            assert action.do in ("pause", "renice")
            assert action.index in armed
            armed.discard(action.index)
        armed |= {a.index for a, _ in decision.fire if a.do in ("pause", "renice")}
        for index in armed:
            action = ACTIONS[index]
            still = any(_covers(action, rule, present) for rule in present)
            assert still  # an armed action whose rules all cleared was cleared this tick


def test_a_firing_that_found_nothing_to_act_on_does_not_start_the_cooldown() -> None:
    pause, notify = spec(0, "pause"), spec(1, "notify")
    planner = Planner([pause, notify])
    v = verdict(breach("runaway"))
    assert fired(planner, v, 0.0) == [("pause", "runaway"), ("notify", "runaway")]
    planner.found_nothing(pause, "runaway")  # no culprit matched: as if it never fired
    assert fired(planner, v, 1.0) == [("pause", "runaway")]
    assert fired(planner, v, 2.0) == []  # this one counted: the cooldown holds
    planner.found_nothing(pause, "runaway")  # not fired at the last step: changes nothing
    assert fired(planner, v, 3.0) == []


def test_two_actions_with_one_index_are_refused_they_would_share_their_state() -> None:
    from resguard import InvalidValue
    from resguard.guardian import GuardianConfig

    twins = [spec(3, "pause"), spec(3, "notify")]
    with pytest.raises(InvalidValue, match="each action needs its own index"):
        Planner(twins)
    with pytest.raises(InvalidValue, match="each action needs its own index"):
        GuardianConfig(actions=tuple(twins))


def test_actions_are_known_by_their_index_whatever_their_position() -> None:
    planner = Planner([spec(7, "pause"), spec(2, "renice", cooldown_s=10)])
    v = verdict(breach("runaway"))
    decision = planner.step(v, 0.0)
    planner.found_nothing(decision.fire[1][0], "runaway")  # the renice found nothing
    assert fired(planner, v, 1.0) == [("renice", "runaway")]  # only it may fire again
    assert [s.index for s in planner.step(verdict(), 2.0).clear] == [7, 2]


def test_a_pause_holds_until_its_rule_has_been_clear_for_the_hold() -> None:
    planner = Planner([spec(0, "pause", hold_s=10)])
    planner.step(verdict(breach("runaway")), 0.0)
    assert planner.step(verdict(), 1.0).clear == ()  # paused, it burns nothing: still held
    assert planner.step(verdict(), 10.9).clear == ()
    assert [s.do for s in planner.step(verdict(), 11.0).clear] == ["pause"]
    assert planner.step(verdict(), 30.0).clear == ()  # once


def test_a_breach_within_the_hold_restarts_it() -> None:
    planner = Planner([spec(0, "pause", cooldown_s=0, hold_s=10)])
    planner.step(verdict(breach("runaway")), 0.0)
    planner.step(verdict(), 1.0)
    planner.step(verdict(breach("runaway")), 8.0)  # back: the clear time starts again
    assert planner.step(verdict(), 9.0).clear == ()
    assert planner.step(verdict(), 18.0).clear == ()
    assert [s.do for s in planner.step(verdict(), 19.0).clear] == ["pause"]


def test_the_hold_defaults_to_the_cooldown() -> None:
    action = ActionSpec(index=0, when="runaway", do="pause", cooldown_s=42)
    assert action.hold == 42
    planner = Planner([action])
    planner.step(verdict(breach("runaway")), 0.0)
    assert planner.step(verdict(), 1.0).clear == ()  # clear from here
    assert planner.step(verdict(), 42.9).clear == ()
    assert [s.do for s in planner.step(verdict(), 43.0).clear] == ["pause"]


def _named(rule: str, *pids: int) -> Breach:
    offenders = tuple(Offender(pid, f"p{pid}", 99.0, 0.0) for pid in pids)
    return attrs.evolve(breach(rule), offenders=offenders)


def test_a_process_action_fires_within_its_cooldown_for_a_culprit_it_has_not_named() -> None:
    planner = Planner([spec(0, "stop", cooldown_s=300)])
    assert fired(planner, verdict(_named("runaway", 11)), 0.0) == [("stop", "runaway")]
    assert fired(planner, verdict(_named("runaway", 11)), 5.0) == []  # the same one: cooldown
    # a second runaway: acted on now, not in five minutes
    assert fired(planner, verdict(_named("runaway", 11, 22)), 10.0) == [("stop", "runaway")]
    assert fired(planner, verdict(_named("runaway", 22)), 15.0) == []
    assert fired(planner, verdict(_named("runaway", 11, 22)), 299.0) == []
    assert fired(planner, verdict(_named("runaway", 22)), 310.0) == [("stop", "runaway")]
