"""The guardian's [guardian] table (resguard.guardian.load_config / load_policy): every
key, the defaults, the search shared with budgets, and errors that quote the file, the
entry and the value as typed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resguard import ConfigError, ResguardError
from resguard.budget import load as load_budgets
from resguard.guardian import GuardianConfig, load_config, load_policy, parse_config
from resguard.rules import Level, ProcessCount, ProcessThreshold, Threshold

FULL = """
[guardian]
preset = "none"
dry_run = false
interval = "500ms"
journal = "/tmp/guardian.jsonl"

[[guardian.rule]]
name = "runaway"
process_cpu_percent_above = 90
for = "60s"
clear = 80

[[guardian.rule]]
name = "busy"
processes_cpu_percent_above = 50
at_least = 2
for = "10s"

[[guardian.rule]]
name = "memory high"
metric = "memory.percent"
op = ">="
value = "90%"
clear = 85
level = "critical"
cooldown = "1m"

[[guardian.action]]
when = "runaway"
do = "pause"
match = ["python3 -c", "^chrome$"]
cooldown = "30s"

[[guardian.action]]
when = "critical"
do = "ollama-unload-idle"
idle_for = "2m"

[[guardian.action]]
when = "busy"
do = "renice"
match = ["cc1"]
by = 5

[[guardian.action]]
when = "memory high"
do = "stop"
match = ["renderer"]
grace = "3s"

[[guardian.action]]
when = "warning"
do = "notify"
"""


def write(tmp_path: Path, text: str, name: str = "resguard.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_key_of_the_table_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert (config.preset, config.dry_run, config.interval_s) == ("none", False, 0.5)
    assert config.journal == "/tmp/guardian.jsonl"
    runaway, busy, memory = config.rules
    assert isinstance(runaway, ProcessThreshold)
    assert runaway.for_s == 60
    assert isinstance(busy, ProcessCount)
    assert busy.at_least == 2
    assert busy.for_s == 10
    assert isinstance(memory, Threshold)
    assert memory.level == Level.CRITICAL
    assert memory.cooldown_s == 60
    pause, unload, renice, stop, notify = config.actions
    assert [p.pattern for p in pause.match] == ["python3 -c", "^chrome$"]
    assert (pause.when, pause.do, pause.cooldown_s, pause.index) == ("runaway", "pause", 30, 0)
    assert (unload.when, unload.idle_for_s) == ("CRITICAL", 120)
    assert renice.renice_by == 5
    assert stop.grace_s == 3
    assert (notify.when, notify.do, notify.cooldown_s) == ("WARNING", "notify", 60)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"preset": "desk"}, "preset='desk'"),
        ({"dry_run": 1}, "dry_run=1"),
        ({"interval_s": 0.0}, "interval_s=0.0"),
        ({"interval_s": "2s"}, "interval_s='2s'"),
    ],
)
def test_a_config_built_by_hand_is_checked_as_the_file_is(
    fields: dict[str, Any], error: str
) -> None:
    with pytest.raises(ResguardError, match=re.escape(error)):
        GuardianConfig(**fields)


def test_without_a_guardian_table_the_defaults_are_dry_run_laptop_and_no_actions() -> None:
    config = parse_config({}, "resguard.toml")
    assert config == GuardianConfig(path="resguard.toml")
    assert (config.preset, config.dry_run, config.interval_s, config.actions) == (
        "laptop",
        True,
        2.0,
        (),
    )


def test_the_policy_is_the_preset_and_the_files_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[guardian]\npreset = "laptop"\n[[guardian.rule]]\nname = "mine"\n'
        'metric = "memory.percent"\nop = ">"\nvalue = 50\n',
    )
    from resguard import presets

    names = [rule.name for rule in load_policy(path).rules]
    assert names == [*(rule.name for rule in presets.laptop().rules), "mine"]
    none = write(tmp_path, '[guardian]\npreset = "none"\n', "none.toml")
    assert load_policy(none).rules == ()


def test_an_action_may_name_a_rule_of_the_preset(tmp_path: Path) -> None:
    from resguard import presets

    name = presets.laptop().rules[0].name
    config = load_config(
        write(
            tmp_path,
            f'[[guardian.action]]\nwhen = "{name}"\ndo = "notify"\n'.replace(
                "[[guardian.action]]", "[guardian]\n[[guardian.action]]"
            ),
        )
    )
    assert config.actions[0].when == name


def test_a_pyproject_holds_it_under_tool_resguard_guardian(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[tool.resguard.guardian]\npreset = "service"\n[[tool.resguard.guardian.action]]\n'
        'when = "warning"\ndo = "notify"\n',
        "pyproject.toml",
    )
    config = load_config(path)
    assert config.preset == "service"
    assert config.actions[0].do == "notify"
    bad = write(tmp_path, '[tool.resguard.guardian]\npreset = "nope"\n', "bad.toml")
    with pytest.raises(ConfigError, match=r"tool\.resguard\.guardian\.preset = 'nope'"):
        load_config(bad)


def test_the_laptop_presets_heat_options_are_keys_of_the_table(tmp_path: Path) -> None:
    path = write(tmp_path, '[guardian]\nfan_rpm_above = 4000\nsensor_celsius_above = "90"\n')
    config = load_config(path)
    assert (config.fan_rpm_above, config.sensor_celsius_above) == (4000, "90")
    names = [rule.name for rule in config.policy().rules]
    assert "fans above 4000 rpm for 5m" in names
    assert "a sensor above 90 °C for 30s" in names
    without = [rule.name for rule in parse_config({}, "x").policy().rules]
    assert not any(name.startswith("fans above") for name in without)  # no fan rule unless asked


BAD = [
    ('preset = "desktop"', "guardian.preset = 'desktop'", "laptop, service, none"),
    ('dry_run = "yes"', "guardian.dry_run = 'yes'", "true or false"),
    ('interval = "0s"', "guardian.interval = '0s'", "from 10ms to 24h"),
    ('interval = "1us"', "guardian.interval = '1us'", "from 10ms to 24h"),
    ('interval = "soon"', "guardian.interval = 'soon'", "not a duration"),
    ("intervall = 3", "guardian.intervall = 3", "did you mean 'interval'"),
    ("journal = 5", "guardian.journal = 5", "a file path"),
    ("fan_rpm_above = -3", "guardian.fan_rpm_above = -3", "rpm from 0"),
    ("sensor_celsius_above = true", "guardian.sensor_celsius_above = True", "°C"),
    (
        'preset = "service"\nfan_rpm_above = 4000',
        "guardian.fan_rpm_above = 4000",
        'an option of preset = "laptop"',
    ),
    (
        '[[guardian.rule]]\nname = "x"\nmetric = "memory.prcent"\nop = ">"\nvalue = 5',
        "guardian.rule[0] (name = 'x')",
        "memory.percent",
    ),
    (
        '[[guardian.rule]]\nname = "x"\nmetric = "memory.percent"\nop = "=>"\nvalue = 5',
        "guardian.rule[0] (name = 'x')",
        "'=>'",
    ),
    (
        '[[guardian.rule]]\nname = "x"\nmetric = "memory.percent"\nvalue = 5',
        "guardian.rule[0]",
        "needs op",
    ),
    ('[[guardian.rule]]\nname = "x"\nfor = "1s"', "guardian.rule[0]", "needs exactly one of"),
    (
        '[[guardian.rule]]\nname = "x"\nprocess_cpu_percent_above = 90\nat_least = 2',
        "guardian.rule[0].at_least = 2",
        "unknown key",
    ),
    (
        "[[guardian.rule]]\nprocess_cpu_percent_above = 90",
        "guardian.rule[0].name = None",
        "a name",
    ),
    (
        '[[guardian.rule]]\nname = "x"\nprocess_cpu_percent_above = 90\nlevel = "severe"',
        "guardian.rule[0].level = 'severe'",
        '"warning" or "critical"',
    ),
    (
        '[[guardian.rule]]\nname = "x"\nprocess_cpu_percent_above = 90\nfor = "long"',
        "guardian.rule[0].for = 'long'",
        "not a duration",
    ),
    (
        '[[guardian.rule]]\nname = "x"\nprocess_cpu_percent_above = 9\n'
        '[[guardian.rule]]\nname = "x"\nprocess_cpu_percent_above = 8',
        "guardian.rule[1].name = 'x'",
        "already used by another rule",
    ),
    (
        '[[guardian.rule]]\nname = "Critical"\nprocess_cpu_percent_above = 9',
        "guardian.rule[0].name = 'Critical'",
        "is a level's name",
    ),
    (
        '[[guardian.rule]]\nname = "x"\nprocessescpu = 3',
        "guardian.rule[0]",
        "needs exactly one of",
    ),
    (
        '[[guardian.action]]\nwhen = "warning"\ndo = "kill"',
        "guardian.action[0].do = 'kill'",
        "stop",
    ),
    (
        '[[guardian.action]]\nwhen = "warning"\ndo = "stop"',
        "guardian.action[0]",
        "it needs match",
    ),
    (
        '[[guardian.action]]\nwhen = "warning"\ndo = "pause"\nmatch = []',
        "guardian.action[0].match = []",
        "a list of regular expressions",
    ),
    (
        '[[guardian.action]]\nwhen = "warning"\ndo = "pause"\nmatch = "python"',
        "guardian.action[0].match = 'python'",
        "a list of regular expressions",
    ),
    (
        '[[guardian.action]]\nwhen = "warning"\ndo = "pause"\nmatch = ["(unclosed"]',
        "guardian.action[0].match = '(unclosed'",
        "not a regular expression",
    ),
    (
        '[[guardian.action]]\nwhen = "warning"\ndo = "notify"\nmatch = ["x"]',
        "guardian.action[0].match",
        "renice, pause and stop",
    ),
    (
        '[[guardian.action]]\nwhen = "nothing"\ndo = "notify"',
        "guardian.action[0].when = 'nothing'",
        "names no rule",
    ),
    (
        '[[guardian.action]]\nwhen = "warning"\ndo = "notify"\nby = 3',
        "guardian.action[0].by = 3",
        "for do = 'renice' only",
    ),
    (
        '[[guardian.action]]\nwhen = "warning"\ndo = "renice"\nmatch = ["x"]\nby = 20',
        "guardian.action[0].by = 20",
        "1 to 19",
    ),
    (
        '[[guardian.action]]\nwhen = "warning"\ndo = "renice"\nmatch = ["x"]\nby = -5',
        "guardian.action[0].by = -5",
        "lower priority only",
    ),
    (
        '[[guardian.action]]\nwhen = "warning"\ndo = "stop"\nmatch = ["x"]\ngrace = "x"',
        "guardian.action[0].grace = 'x'",
        "not a duration",
    ),
    (
        '[[guardian.action]]\nwhen = "warning"\ndo = "notify"\ncooldwn = "1m"',
        "guardian.action[0].cooldwn",
        "did you mean 'cooldown'",
    ),
]


@pytest.mark.parametrize(("body", "where", "expected"), BAD)
def test_a_bad_entry_is_one_config_error_naming_file_entry_value_and_what_is_expected(
    tmp_path: Path, body: str, where: str, expected: str
) -> None:
    path = write(tmp_path, "[guardian]\n" + body + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert where in message, message
    assert expected in message, message
    assert isinstance(caught.value, ValueError)


def test_an_unknown_top_level_table_of_a_resguard_toml_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[gaurdian]\npreset = 'laptop'\n")
    with pytest.raises(ConfigError, match=r"gaurdian = .*unknown key 'gaurdian'"):
        load_config(path)


def test_budgets_and_the_guardian_share_one_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[budget]]\nname = "me"\nprocess = "python"\nmax = "1GiB"\n'
        '[guardian]\n[[guardian.action]]\nwhen = "warning"\ndo = "notify"\n',
    )
    assert [budget.name for budget in load_budgets(path).budgets] == ["me"]
    assert load_config(path).actions[0].do == "notify"


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with nothing above it that counts, and an empty user config."""
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return work


def test_the_search_takes_the_working_directory_then_above_then_the_user_config_dir(
    isolated: Path, tmp_path: Path
) -> None:
    assert load_config() == GuardianConfig()  # nothing anywhere: the defaults
    user = tmp_path / "xdg" / "resguard" / "resguard.toml"
    user.parent.mkdir(parents=True)
    user.write_text('[guardian]\npreset = "service"\n')
    assert load_config().preset == "service"
    assert load_config().path == str(user)
    (isolated.parent / "pyproject.toml").write_text("[tool.resguard]\nbudget = []\n")
    assert load_config().path == str(user)  # a pyproject without the guardian's table
    (isolated.parent / "pyproject.toml").write_text('[tool.resguard.guardian]\npreset = "none"\n')
    assert load_config().preset == "none"
    (isolated / "resguard.toml").write_text('[[budget]]\nname = "a"\nmachine = true\nmax = 1\n')
    assert load_config().preset == "none"  # a resguard.toml of budgets alone is not the guardian's
    (isolated / "resguard.toml").write_text("[guardian]\ndry_run = false\n")
    assert load_config().dry_run is False
    assert load_config().preset == "laptop"


def test_budgets_search_the_user_config_dir_last_too(isolated: Path, tmp_path: Path) -> None:
    from resguard.budget import find_config

    assert find_config() is None
    user = tmp_path / "xdg" / "resguard" / "resguard.toml"
    user.parent.mkdir(parents=True)
    user.write_text('[[budget]]\nname = "me"\nprocess = "python"\nmax = "1GiB"\n')
    assert find_config() == user


def test_a_file_named_on_purpose_without_the_guardians_table_is_an_error(tmp_path: Path) -> None:
    budgets = write(tmp_path, '[[budget]]\nname = "a"\nmachine = true\nmax = 1\n')
    with pytest.raises(ConfigError, match=r"resguard\.toml: has no \[guardian\] table"):
        load_config(budgets)
    typo = write(tmp_path, "[tool.resguard.guardain]\npreset = 'none'\n", "pyproject.toml")
    with pytest.raises(ConfigError, match=r"tool\.resguard\.guardain = .*did you mean 'guardian'"):
        load_config(typo)
    empty = write(tmp_path, "[tool.resguard]\n", "other.toml")
    with pytest.raises(ConfigError, match=r"has no \[tool\.resguard\.guardian\] table"):
        load_config(empty)


def test_a_missing_or_broken_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[guardian\n"))
    with pytest.raises(ResguardError, match="expected the path"):
        load_config(3)  # type: ignore[arg-type]


toml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["laptop", "warning", "notify", "pause", "30s", "memory.percent", ">"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
keys = st.sampled_from(
    [
        "preset",
        "dry_run",
        "interval",
        "journal",
        "name",
        "metric",
        "op",
        "value",
        "for",
        "clear",
        "level",
        "when",
        "do",
        "match",
        "by",
        "grace",
        "idle_for",
        "cooldown",
        "process_cpu_percent_above",
        "processes_cpu_percent_above",
        "at_least",
    ]
)
entries = st.dictionaries(keys, toml_values, max_size=6)
tables = st.fixed_dictionaries(
    {},
    optional={
        "preset": toml_values,
        "dry_run": toml_values,
        "interval": toml_values,
        "fan_rpm_above": toml_values,
        "sensor_celsius_above": toml_values,
        "rule": st.lists(entries, max_size=3),
        "action": st.lists(entries, max_size=3),
    },
)


@settings(max_examples=300, deadline=None)
@given(tables)
def test_any_table_is_a_config_or_one_resguard_error_never_another_exception(
    table: dict[str, Any],
) -> None:
    failure: ResguardError | None = None
    try:
        config = parse_config({"guardian": table}, "fuzz.toml")
    except ResguardError as error:
        failure = error
    if failure is not None:
        assert isinstance(failure, (ValueError, TypeError))
        assert str(failure).startswith("fuzz.toml: ")
        return
    assert isinstance(config, GuardianConfig)
    for action in config.actions:
        if action.do in ("renice", "pause", "stop"):
            assert action.match  # a process action always has an opt-in pattern


@pytest.mark.parametrize(
    ("rule", "key"),
    [
        ({"process_cpu_percent_above": -5}, "process_cpu_percent_above=-5"),
        ({"processes_cpu_percent_above": -5, "at_least": 2}, "processes_cpu_percent_above=-5"),
    ],
)
def test_a_rules_error_names_the_files_keys_not_pythons_arguments(
    rule: dict[str, Any], key: str
) -> None:
    data = {"guardian": {"preset": "none", "rule": [{"name": "x", **rule}]}}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "r.toml")
    message = str(caught.value)
    assert f"guardian.rule[0] (name = 'x'): {key} is not a number" in message
    assert not re.search(r"(?<![\w])cpu_percent_above", message)


def test_the_rule_errors_python_names_are_translated_where_they_appear() -> None:
    from resguard.guardian._config import _as_typed

    said = "for_: -1 is not a duration; cpu_percent_above=5 ... process cpu_percent is a share"
    assert _as_typed(said, "process") == (
        "for: -1 is not a duration; process_cpu_percent_above=5 ... process cpu_percent is a share"
    )
    assert _as_typed(said, "count").startswith("for: -1")
    assert "processes_cpu_percent_above=5" in _as_typed(said, "count")


@pytest.mark.parametrize("interval_s", [0.001, 100_000.0])
def test_an_interval_out_of_bounds_is_refused_with_one_message_wherever_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], interval_s: float
) -> None:
    import io

    from resguard import InvalidValue
    from resguard.cli import main

    expected = "expected from 10ms to 24h00m between two evaluations"
    with pytest.raises(InvalidValue, match=expected):
        GuardianConfig(interval_s=interval_s)
    with pytest.raises(ConfigError, match=expected):
        parse_config({"guardian": {"interval": interval_s}}, "g.toml")
    path = write(tmp_path, '[guardian]\npreset = "none"\n')
    argv = ["guardian", "--config", str(path), "--once", "--interval", f"{interval_s}s"]
    assert main(argv, out=io.StringIO()) == 2
    error = capsys.readouterr().err
    assert "--interval" in error
    assert expected in error


def test_a_bad_search_start_is_an_error_naming_the_function_called() -> None:
    from resguard import InvalidType
    from resguard._modules.tomlfile import search_config
    from resguard.budget import find_config

    with pytest.raises(InvalidType, match=r"^search_config\(5\)"):
        search_config(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidType, match=r"^find_config\(5\)"):
        find_config(5)  # type: ignore[arg-type]
