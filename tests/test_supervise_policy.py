"""The supervisor's decisions without a process: backoff, restart policy, exit kinds."""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard import InvalidType, InvalidValue
from resguard.supervise import RESTART_POLICIES, Backoff, Exit, Plan, RunConfig

seconds = st.floats(min_value=0, max_value=1e6, allow_nan=False)
codes = st.integers(min_value=-64, max_value=255).filter(lambda code: code != 0)
exits = st.builds(
    Exit,
    returncode=st.integers(min_value=-64, max_value=255),
    oom_kills=st.one_of(st.none(), st.integers(min_value=0, max_value=3)),
    run_s=st.floats(min_value=0, max_value=100, allow_nan=False),
)


@given(seconds, seconds, st.integers(min_value=1, max_value=100_000))
def test_backoff_starts_at_the_initial_wait_doubles_and_never_passes_its_cap(
    initial_s: float, max_s: float, restart: int
) -> None:
    initial_s, max_s = sorted((initial_s, max_s))  # a cap below the first wait is refused
    backoff = Backoff(initial_s, max_s)
    cap_s = max_s
    delay_s = backoff.delay_s(restart)
    assert 0 <= delay_s <= cap_s
    assert backoff.delay_s(1) == initial_s
    assert backoff.delay_s(restart + 1) >= delay_s
    if delay_s < cap_s:
        assert backoff.delay_s(restart + 1) == pytest.approx(min(2 * delay_s, cap_s))


def test_backoff_of_a_huge_restart_number_is_the_cap_not_an_overflow() -> None:
    assert Backoff(0.05, 30).delay_s(10**6) == 30
    assert Backoff(5e-324, 1e6).delay_s(1090) == 2.0**15  # 2.0**1089 alone overflows
    assert Backoff(5e-324, 1e6).delay_s(1100) == 1e6
    assert [Backoff(0.05, 1).delay_s(n) for n in range(1, 7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1]


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_a_backoff_that_is_no_duration_is_refused_quoting_it(bad: float) -> None:
    with pytest.raises(InvalidValue, match=f"initial_s={bad!r} is out of range"):
        Backoff(bad)


@given(st.floats(allow_nan=True))
def test_a_duration_is_accepted_exactly_when_finite_and_in_range(value: float) -> None:
    """A backoff may be 0 s; a stable run must be longer than 0 s."""
    makers: list[tuple[Callable[[], object], str, bool]] = [
        (lambda: Backoff(value, value), "initial_s", math.isfinite(value) and value >= 0),
        (lambda: Plan(stable_s=value), "stable_s", math.isfinite(value) and value > 0),
    ]
    for make, name, accepted in makers:
        if accepted:
            make()
        else:
            with pytest.raises(InvalidValue, match=re.escape(f"{name}={value!r} is out of")):
                make()


@pytest.mark.parametrize("bad", [True, "1s", None])
def test_a_backoff_that_is_not_a_number_is_a_type_error_quoting_it(bad: object) -> None:
    with pytest.raises(InvalidType, match=f"max_s={bad!r} is not a number"):
        Backoff(1.0, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("stable_s", [0, 0.0, -1.0, float("nan"), float("inf")])
def test_a_plan_whose_stable_run_is_not_positive_is_refused_so_it_cannot_restart_forever(
    stable_s: float,
) -> None:
    with pytest.raises(InvalidValue, match=f"stable_s={stable_s!r} is out of range"):
        Plan("always", 2, stable_s=stable_s)


@pytest.mark.parametrize(
    ("field", "bad", "error"),
    [
        ("stable_s", 0.0, InvalidValue),
        ("stable_s", "10s", InvalidType),
        ("stop_timeout_s", -1.0, InvalidValue),
        ("stop_timeout_s", float("nan"), InvalidValue),
        ("stop_timeout_s", None, InvalidType),
        ("backoff_s", -0.5, InvalidValue),
        ("backoff_max_s", float("inf"), InvalidValue),
        ("backoff_max_s", True, InvalidType),
        ("max_restarts", -1, InvalidValue),
        ("max_restarts", 2.0, InvalidType),
        ("restart", "sometimes", InvalidValue),
    ],
)
def test_a_run_config_refuses_a_bad_value_when_made_quoting_it(
    field: str, bad: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=re.escape(f"{field}={bad!r}")):
        RunConfig(("true",), **{field: bad})  # type: ignore[arg-type]


@given(st.sampled_from(RESTART_POLICIES), st.integers(min_value=0, max_value=6), st.lists(exits))
def test_restarts_in_a_row_never_pass_max_restarts_and_each_waits_the_backoff(
    policy: str, max_restarts: int, runs: list[Exit]
) -> None:
    plan = Plan(policy, max_restarts, Backoff(0.05, 1.0), stable_s=1000.0)  # type: ignore[arg-type]
    for streak, ended in enumerate(runs, start=1):
        decision = plan.after(ended)
        assert decision.exit_code == ended.exit_code
        if not decision.restart:
            break
        assert streak <= max_restarts
        assert decision.restart_number == streak
        assert decision.delay_s == Backoff(0.05, 1.0).delay_s(streak)
        assert policy != "never"
        assert policy == "always" or ended.failed


@given(st.integers(min_value=0, max_value=5), st.floats(min_value=0, max_value=9.99))
def test_a_clean_exit_is_not_restarted_on_failure(restarts: int, run_s: float) -> None:
    plan = Plan("on-failure", 5, stable_s=10.0)
    for _ in range(restarts):
        assert plan.after(Exit(1, run_s=run_s)).restart
    decision = plan.after(Exit(0, run_s=run_s))
    assert not decision.restart
    assert decision.exit_code == 0
    assert "clean exit" in decision.reason


@given(exits)
def test_after_a_stop_signal_nothing_is_restarted_whatever_the_policy(ended: Exit) -> None:
    for policy in RESTART_POLICIES:
        plan = Plan(policy, 10)
        plan.stop()
        decision = plan.after(ended)
        assert (decision.restart, decision.exit_code) == (False, ended.exit_code)


def test_a_stable_run_resets_the_restart_count_and_the_backoff() -> None:
    plan = Plan("on-failure", 2, Backoff(1.0, 60.0), stable_s=10.0)
    assert [plan.after(Exit(1, run_s=0.5)).delay_s for _ in range(2)] == [1.0, 2.0]
    stable = plan.after(Exit(1, run_s=10.0))  # ran long enough: a fresh streak
    assert (stable.restart, stable.delay_s, stable.restart_number) == (True, 1.0, 1)
    assert plan.after(Exit(1, run_s=0.5)).delay_s == 2.0
    gave_up = plan.after(Exit(1, run_s=0.5))
    assert not gave_up.restart
    assert "gave up after 2 restart(s)" in gave_up.reason


def test_max_restarts_2_is_three_runs_and_the_last_one_s_code_is_the_exit_code() -> None:
    plan = Plan("on-failure", 2, Backoff(0.05))
    oom = Exit(-signal.SIGKILL, oom_kills=1, run_s=0.3)
    decisions = [plan.after(oom) for _ in range(3)]
    assert [d.restart for d in decisions] == [True, True, False]
    assert decisions[-1].exit_code == 137
    assert (plan.runs, plan.oom_kills) == (3, 3)


@pytest.mark.parametrize(
    ("ended", "kind", "code", "failed"),
    [
        (Exit(0), "exited", 0, False),
        (Exit(3), "exited", 3, True),
        (Exit(-signal.SIGTERM), "killed", 143, True),
        (Exit(-signal.SIGKILL, oom_kills=0), "killed", 137, True),
        (Exit(-signal.SIGKILL, oom_kills=None), "killed", 137, True),
        (Exit(-signal.SIGKILL, oom_kills=1), "oom-killed", 137, True),
        (Exit(1, oom_kills=2), "exited", 1, True),  # a helper was OOM-killed, main exited
    ],
)
def test_an_oom_kill_is_sigkill_with_the_counter_up_not_a_crash(
    ended: Exit, kind: str, code: int, failed: bool
) -> None:
    assert (ended.kind, ended.exit_code, ended.failed) == (kind, code, failed)


def test_exits_are_described_as_a_shell_would_report_them() -> None:
    assert Exit(-signal.SIGKILL, oom_kills=1).describe() == (
        "OOM-killed (exit 137, SIGKILL); 1 OOM kill in its budget"
    )
    assert Exit(-signal.SIGTERM).describe() == "killed by SIGTERM (exit 143)"
    assert Exit(1, oom_kills=2).describe() == "exited 1; 2 OOM kills in its budget"


@pytest.mark.parametrize(
    ("policy", "max_restarts", "match"),
    [
        ("sometimes", 1, "restart='sometimes'"),
        ("always", -1, "max_restarts=-1"),
    ],
)
def test_a_bad_policy_is_refused_quoting_it(policy: str, max_restarts: int, match: str) -> None:
    with pytest.raises(InvalidValue, match=match):
        Plan(policy, max_restarts)  # type: ignore[arg-type]


def test_a_count_of_restarts_that_is_not_an_integer_is_a_type_error() -> None:
    with pytest.raises(InvalidType, match="max_restarts=True is not an integer"):
        Plan("never", True)


@given(st.lists(st.tuples(codes, st.booleans()), max_size=30), st.integers(1, 4))
def test_a_stable_run_always_starts_a_fresh_streak(
    runs: list[tuple[int, bool]], max_restarts: int
) -> None:
    plan = Plan("on-failure", max_restarts, Backoff(1.0, 8.0), stable_s=10.0)
    streak = 0
    for code, stable in runs:
        decision = plan.after(Exit(code, run_s=10.0 if stable else 0.1))
        streak = 1 if stable else streak + 1
        if streak > max_restarts:
            assert not decision.restart
            break
        assert decision.restart
        assert decision.restart_number == streak
        assert decision.delay_s == min(2.0 ** (streak - 1), 8.0)


def test_a_death_by_sigpipe_is_a_clean_end_not_restarted_on_failure() -> None:
    ended = Exit(-signal.SIGPIPE)
    assert (ended.failed, ended.exit_code) == (False, 141)
    decision = Plan("on-failure").after(ended)
    assert (decision.restart, decision.exit_code) == (False, 141)
    assert Plan("always").after(ended).restart


def test_a_backoff_cap_below_its_first_wait_is_refused() -> None:
    with pytest.raises(InvalidValue, match=r"max_s=1\.0 is below initial_s=5\.0"):
        Backoff(5.0, 1.0)
    with pytest.raises(InvalidValue, match=r"backoff_max_s=1\.0 is below backoff_s=5\.0"):
        RunConfig(("true",), backoff_s=5.0, backoff_max_s=1.0)


def test_oom_kills_are_unknown_once_a_run_s_could_not_be_counted() -> None:
    plan = Plan("always", 3)
    plan.after(Exit(-9, oom_kills=1))
    assert plan.oom_kills == 1
    plan.after(Exit(1, oom_kills=None))  # RLIMIT_AS: no counter
    plan.after(Exit(-9, oom_kills=1))
    assert plan.oom_kills is None


def test_a_command_that_could_not_be_started_is_not_restarted_nor_counted_as_a_run() -> None:
    plan = Plan("always", 5)
    ended = Exit(127, started=False)
    assert (ended.kind, ended.failed) == ("not-started", True)
    decision = plan.after(ended)
    assert (decision.restart, decision.exit_code, plan.runs) == (False, 127, 0)
    assert ended.describe() == "could not be started (exit 127)"
