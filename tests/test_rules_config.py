"""The rule constructors a configuration file calls (a guardian's ``[[guardian.rule]]``:
``metric``+``op``+``value`` or ``process_cpu_percent_above``, with ``for``, ``clear``,
``level``, ``name``) refuse bad input with a ResguardError quoting the value as typed."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import resguard
from resguard.rules import Level, ProcessCount, ProcessThreshold, Threshold


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"metric": "memory.percnt"}, resguard.UnknownMetric, "did you mean 'memory.percent'"),
        ({"metric": 3}, resguard.InvalidType, "3 is not a metric name"),
        ({"op": "=>"}, resguard.InvalidValue, "op='=>' is not a comparison"),
        ({"op": 1}, resguard.InvalidType, "op=1 is not a comparison"),
        ({"value": "lots"}, resguard.InvalidValue, "value='lots' is not a number"),
        ({"value": True}, resguard.InvalidType, "value=True is not a number"),
        ({"value": 150}, resguard.InvalidValue, "value=150 is above 100"),
        ({"value": "150%"}, resguard.InvalidValue, "value='150%' is above 100"),
        ({"value": [80]}, resguard.InvalidType, r"value=\[80\] is not a number"),
        ({"clear": 90}, resguard.InvalidValue, "clear=90 is above value=80"),
        ({"clear": "seventy"}, resguard.InvalidValue, "clear='seventy' is not a number"),
        ({"for_": "1 minute"}, resguard.InvalidValue, "for_: '1 minute' is not a duration"),
        ({"for_": -3}, resguard.InvalidValue, "for_: -3 is not a duration"),
        ({"level": "fatal"}, resguard.InvalidValue, "level='fatal' is not a level"),
        ({"level": 0}, resguard.InvalidValue, "level=0 is not a level"),
        ({"name": 5}, resguard.InvalidType, "name=5 is not a rule name"),
    ],
)
def test_a_bad_threshold_entry_is_refused_quoting_it(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    entry: dict[str, object] = {"metric": "memory.percent", "op": ">", "value": 80, **kwargs}
    with pytest.raises(error, match=message):
        Threshold(**entry)  # type: ignore[arg-type]
    assert issubclass(error, resguard.ResguardError)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"cpu_percent_above": "ninety"}, resguard.InvalidValue, "cpu_percent_above='ninety'"),
        ({"cpu_percent_above": -5}, resguard.InvalidValue, "cpu_percent_above=-5"),
        ({"cpu_percent_above": math.nan}, resguard.InvalidValue, "cpu_percent_above=nan"),
        ({"cpu_percent_above": {"a": 1}}, resguard.InvalidType, "cpu_percent_above={'a': 1}"),
        ({"cpu_percent_above": None}, resguard.InvalidValue, "exactly one of"),
        ({"clear": 95}, resguard.InvalidValue, "clear=95 is above cpu_percent_above=90"),
        ({"clear": "95%"}, resguard.InvalidValue, "clear='95%' is above cpu_percent_above=90"),
        ({"for_": "forever"}, resguard.InvalidValue, "for_: 'forever' is not a duration"),
        ({"level": "info"}, resguard.InvalidValue, "level='info'"),
        ({"name": ["x"]}, resguard.InvalidType, r"name=\['x'\]"),
    ],
)
def test_a_bad_process_cpu_entry_is_refused_quoting_it(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    entry: dict[str, object] = {"cpu_percent_above": 90, **kwargs}
    with pytest.raises(error, match=message):
        ProcessThreshold(**entry)  # type: ignore[arg-type]


def test_a_process_cpu_figure_is_explained_as_a_share_of_a_core() -> None:
    with pytest.raises(resguard.InvalidValue, match=r"share of one core \(100 = one core\)"):
        ProcessThreshold(cpu_percent_above="x")
    assert ProcessThreshold(cpu_percent_above=240).name == "a process cpu_percent > 240%"


def test_a_count_rule_names_its_figure_in_a_bad_clear() -> None:
    with pytest.raises(resguard.InvalidValue, match="clear=60 is above cpu_percent_above=50"):
        ProcessCount(cpu_percent_above=50, clear=60)


def test_a_config_entry_as_toml_gives_it_builds_the_rule() -> None:
    rule = Threshold(
        "cpu.percent", ">", "80%", for_="1m", clear=70, level="critical", name="machine busy"
    )
    assert (rule.for_s, rule.level, rule.name) == (60.0, Level.CRITICAL, "machine busy")
    busy = ProcessThreshold(cpu_percent_above=90.0, for_=60, clear="80", level="WARNING")
    assert (busy.for_s, busy.level) == (60.0, Level.WARNING)


# ---------------------------------------------------------------------- properties ---


def reads_as_a_number(text: str) -> bool:
    try:
        float(text.strip().removesuffix("%").strip())
    except ValueError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=12))
def test_any_text_that_is_no_number_is_refused_quoting_it(value: str) -> None:
    assume(not reads_as_a_number(value))
    with pytest.raises((resguard.InvalidValue, resguard.InvalidType)) as threshold:
        Threshold("cpu.percent", ">", value)
    with pytest.raises((resguard.InvalidValue, resguard.InvalidType)) as process:
        ProcessThreshold(cpu_percent_above=value)
    assert repr(value) in str(threshold.value)
    assert repr(value) in str(process.value)


@settings(max_examples=200, deadline=None)
@given(
    value=st.floats(0, 99.9) | st.integers(0, 99),
    gap=st.floats(0, 50),
    for_s=st.floats(0, 86_400),
)
def test_any_sensible_percent_entry_builds_with_its_clear_below(
    value: float, gap: float, for_s: float
) -> None:
    clear = max(0.0, value - gap)
    rule = Threshold("memory.percent", ">", value, clear=clear, for_=for_s)
    assert rule.for_s == for_s
    process = ProcessThreshold(cpu_percent_above=value * 3, clear=clear * 3, for_=for_s)
    assert process.for_s == for_s


@settings(max_examples=200, deadline=None)
@given(value=st.floats(0, 99), above=st.floats(0.001, 50))
def test_a_clear_above_the_value_is_always_refused_naming_both(value: float, above: float) -> None:
    with pytest.raises(resguard.InvalidValue, match=f"is above cpu_percent_above={value!r}"):
        ProcessThreshold(cpu_percent_above=value, clear=value + above)
    with pytest.raises(resguard.InvalidValue, match=f"is above value={value!r}"):
        Threshold("memory.percent", ">", value, clear=min(100.0, value + above))
