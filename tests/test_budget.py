"""Budgets: TOML loading with clear errors, live measurement of real processes, containers
and (stand-in) Ollama models, the efficiency score, the CLI and the rules."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard import ConfigError, snapshot
from resguard._errors import InvalidValue
from resguard.budget import (
    Budget,
    BudgetRule,
    Budgets,
    ComponentUse,
    efficiency_score,
    find_config,
    load,
    parse,
)
from resguard.cli.budget import cli
from resguard.monitor import Monitor
from resguard.rules import Level, Policy
from resguard.testing import WALL_OFFSET_S, make_snapshot
from resguard.testing.ollama import OllamaStandIn

from support import free_port, wait_until

MB = 1_000_000


@pytest.fixture
def holder() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A child python holding 60 MB, with a unique marker on its command line."""
    marker = f"resguard-budget-{uuid.uuid4().hex[:12]}"
    code = (
        "import sys; b = bytearray(60_000_000); sys.stdout.write('ready\\n'); "
        "sys.stdout.flush(); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, marker],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        yield marker, child
    finally:
        child.communicate("", timeout=60)


def write(tmp_path: Path, text: str, name: str = "resguard.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------ loading ---


def test_both_table_forms_and_the_pyproject_section(tmp_path: Path) -> None:
    pyproject = write(
        tmp_path,
        """
        [project]
        name = "demo"

        [tool.ruff]
        line-length = 100

        [[tool.resguard.budget]]
        name = "assistant"
        cmdline = "uvicorn assistant"
        min = "100MB"
        max = "200MB"
        level = "critical"
        for = "30s"

        [[tool.resguard.budget]]
        name = "machine"
        machine = true
        target = "20GB"
    """,
        "pyproject.toml",
    )
    budgets = load(pyproject)
    assert [b.name for b in budgets] == ["assistant", "machine"]
    assistant, machine = budgets.budgets
    assert assistant == Budget(
        "assistant", "cmdline", "uvicorn assistant", 100 * MB, 200 * MB, Level.CRITICAL, 30.0
    )
    assert machine.kind == "machine"
    assert machine.max_bytes == 20_000_000_000
    assert machine.min_bytes is None

    mapping = write(
        tmp_path,
        """
        [budget.llm]
        ollama = "gpt-oss:.*"
        target = "13GB"
        host = "http://127.0.0.1:11434"

        [budget.db]
        image = "postgres"
        max = "1GiB"
    """,
    )
    loaded = load(mapping)
    assert [(b.name, b.kind, b.max_bytes) for b in loaded] == [
        ("llm", "ollama", 13 * 10**9),
        ("db", "image", 1024**3),
    ]
    assert loaded.budgets[0].host == "http://127.0.0.1:11434"


def test_the_config_is_found_upwards_and_resguard_toml_wins(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config(deep) is None  # a pyproject without [tool.resguard] does not count
    (tmp_path / "pyproject.toml").write_text(
        "[[tool.resguard.budget]]\nname = 'm'\nmachine = true\nmax = '1GB'\n"
    )
    assert find_config(deep) == tmp_path / "pyproject.toml"
    (tmp_path / "a" / "resguard.toml").write_text("[[budget]]\nname='m'\nmachine=true\nmax=1\n")
    assert find_config(deep) == tmp_path / "a" / "resguard.toml"


BAD = [
    (
        "[[budget]]\nname='a'\nprocess='x'\nmax='200MB'\nmaximum='1GB'\n",
        "budget.a.maximum",
        "1GB",
        "did you mean 'max'",
    ),
    ("[[budget]]\nname='a'\nprocess='x'\nmax='lots'\n", "budget.a.max", "lots", "not a size"),
    ("[[budget]]\nname='a'\nprocess='x'\nmax=true\n", "budget.a.max", True, "not a size"),
    ("[[budget]]\nname='a'\nprocess='x'\nmax='-5MB'\n", "budget.a.max", "-5MB", ""),
    (
        "[[budget]]\nname='a'\nprocess='(x'\nmax='1MB'\n",
        "budget.a.process",
        "(x",
        "regular expression",
    ),
    (
        "[[budget]]\nname='a'\nprocess='x'\ncontainer='y'\nmax='1MB'\n",
        "budget.a",
        ["container", "process"],
        "exactly one selector",
    ),
    (
        "[[budget]]\nname='a'\nprocess='x'\nmin='2MB'\nmax='1MB'\n",
        "budget.a.min",
        "2MB",
        "above the ceiling",
    ),
    ("[[budget]]\nname='a'\nprocess='x'\n", "budget.a", None, "needs a ceiling"),
    (
        "[[budget]]\nname='a'\nprocess='x'\ntarget='1MB'\nmax='1MB'\n",
        "budget.a.target",
        "1MB",
        "not both",
    ),
    (
        "[[budget]]\nname='a'\nprocess='x'\nmax='1MB'\nlevel='panic'\n",
        "budget.a.level",
        "panic",
        "warning",
    ),
    (
        "[[budget]]\nname='a'\nprocess='x'\nmax='1MB'\nfor='a while'\n",
        "budget.a.for",
        "a while",
        "duration",
    ),
    (
        "[[budget]]\nname='a'\nmachine='yes'\nmax='1MB'\n",
        "budget.a.machine",
        "yes",
        "machine = true",
    ),
    ("[[budget]]\nprocess='x'\nmax='1MB'\n", "budget[0].name", None, "needs a name"),
    (
        "[[budget]]\nname='a'\nprocess='x'\nmax='1MB'\n[[budget]]\nname='a'\nmachine=true\n"
        "max='1MB'\n",
        "budget.a.name",
        "a",
        "used twice",
    ),
    ("[[budget]]\nname='a'\nprocess='x'\nmax='1MB'\nhost='h'\n", "budget.a.host", "h", "ollama"),
    (
        "[budgets.a]\nprocess='x'\nmax='1MB'\n",
        "budgets",
        {"a": {"process": "x", "max": "1MB"}},
        "did you mean 'budget'",
    ),
]


@pytest.mark.parametrize(("text", "key", "value", "words"), BAD)
def test_bad_config_names_the_file_the_key_and_the_value(
    tmp_path: Path, text: str, key: str, value: object, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load(path)
    error = raised.value
    assert error.path == str(path)
    assert error.key == key
    assert error.value == value
    message = str(error)
    assert str(path) in message
    assert key in message
    assert repr(value) in message
    assert words in message


def test_bad_config_in_pyproject_names_the_full_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[tool.resguard.budget]]
        name = "assistant"
        process = "uvicorn"
        max = "200 furlongs"
    """,
        "pyproject.toml",
    )
    with pytest.raises(ConfigError, match=r"tool\.resguard\.budget\.assistant\.max") as raised:
        load(path)
    assert raised.value.value == "200 furlongs"


def test_unreadable_and_invalid_toml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file") as missing:
        load(tmp_path / "absent.toml")
    assert missing.value.path == str(tmp_path / "absent.toml")
    broken = write(tmp_path, "[[budget]\nname=")
    with pytest.raises(ConfigError, match="not valid TOML") as raised:
        load(broken)
    assert raised.value.path == str(broken)


def test_cli_reports_bad_config_on_stderr_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[[budget]]\nname='a'\nprocess='x'\nmax='lots'\n")
    out = io.StringIO()
    assert cli(str(path), as_json=False, out=out) == 2
    assert out.getvalue() == ""
    err = capsys.readouterr().err
    assert str(path) in err
    assert "budget.a.max" in err
    assert "'lots'" in err


# ---------------------------------------------------------------------- measuring ---


def test_a_real_process_is_measured_by_command_line_and_name(
    holder: tuple[str, subprocess.Popen[str]],
) -> None:
    marker, child = holder
    budgets = Budgets(
        parse(
            {
                "budget": [
                    {"name": "fits", "cmdline": marker, "min": "10MB", "max": "500MB"},
                    {"name": "tight", "cmdline": marker, "max": "20MB"},
                    {"name": "by-name", "process": "python.*", "max": "1TB"},
                    {"name": "nobody", "cmdline": "no-such-program-" + marker[::-1], "max": "1MB"},
                ]
            }
        )
    )
    report = budgets.measure()
    fits, tight, by_name, nobody = report.components
    assert fits.count == 1
    assert fits.members == (f"{fits.members[0].split('[')[0]}[{child.pid}]",)
    assert fits.used is not None
    assert 60 * MB <= fits.used <= 150 * MB  # 60 MB held plus the interpreter
    assert fits.status == "ok"
    assert tight.used == fits.used
    assert tight.status == "over"
    assert by_name.count >= 1  # the child at least (this process is left out)
    assert any(member.endswith(f"[{child.pid}]") for member in by_name.members)
    assert nobody.status == "absent"
    assert nobody.used == 0
    assert report.over == (tight,)
    assert report.score == pytest.approx(efficiency_score(report.components))


def test_docker_down_and_ollama_down_are_unavailable_not_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    path = write(
        tmp_path,
        f"""
        [[budget]]
        name = "containers"
        container = ".*"
        max = "5GB"

        [[budget]]
        name = "llm"
        ollama = ".*"
        max = "13GB"
        host = "http://127.0.0.1:{free_port()}"

        [[budget]]
        name = "machine"
        machine = true
        max = "1PB"
    """,
    )
    out = io.StringIO()
    assert cli(str(path), as_json=True, out=out) == 0
    result = json.loads(out.getvalue())
    by_name = {item["name"]: item for item in result["components"]}
    assert by_name["containers"]["status"] == "unavailable"
    assert "Docker" in by_name["containers"]["detail"]
    assert by_name["llm"]["status"] == "unavailable"
    assert "Ollama" in by_name["llm"]["detail"]
    assert by_name["machine"]["status"] == "ok"
    assert result["score"] == 100.0  # only the machine was measured, and it is within

    text = io.StringIO()
    assert cli(str(path), as_json=False, out=text) == 0
    assert "unavailable" in text.getvalue()


def test_ollama_models_are_measured_through_the_stand_in(ollama_server: OllamaStandIn) -> None:
    from resguard.ollama import OllamaModels

    with OllamaModels(ollama_server.host, timeout=10, register=False) as models:
        info = models.ensure("qwen2.5:0.5b")
    budgets = Budgets(
        parse(
            {
                "budget": [
                    {
                        "name": "small",
                        "ollama": "qwen2.5:.*",
                        "max": info.size + 1,
                        "host": ollama_server.host,
                    },
                    {
                        "name": "tiny",
                        "ollama": "qwen2.5:0.5b",
                        "max": "1MB",
                        "host": ollama_server.host,
                    },
                    {
                        "name": "gpt",
                        "ollama": "gpt-oss:.*",
                        "max": "13GB",
                        "host": ollama_server.host,
                    },
                ]
            }
        )
    )
    small, tiny, gpt = budgets.measure().components
    assert (small.used, small.status, small.members) == (info.size, "ok", ("qwen2.5:0.5b",))
    assert tiny.status == "over"
    assert gpt.status == "absent"


def _cli_config(tmp_path: Path, marker: str, container: str, host: str) -> Path:
    return write(
        tmp_path,
        f"""
        [[tool.resguard.budget]]
        name = "service"
        cmdline = "{marker}"
        min = "10MB"
        max = "500MB"

        [[tool.resguard.budget]]
        name = "containers"
        container = "{container}"
        max = "5GB"

        [[tool.resguard.budget]]
        name = "llm"
        ollama = "qwen2.5:.*"
        max = "100MB"
        host = "{host}"
    """,
        "pyproject.toml",
    )


@pytest.mark.docker
def test_cli_with_a_process_a_container_and_a_model(
    tmp_path: Path,
    holder: tuple[str, subprocess.Popen[str]],
    docker_run: Any,
    ollama_server: OllamaStandIn,
) -> None:
    from resguard.docker import Containers
    from resguard.ollama import OllamaModels

    from plugins.docker import HOLD, wait_for

    marker, _ = holder
    name = f"resguard-budget-{uuid.uuid4().hex[:8]}"
    docker_run(HOLD.format(kib=16 * 1024), memory="64m", name=name)
    with Containers() as containers:
        wait_for(
            lambda: [
                c for c in containers.stats() if c.name == name and c.memory_used > 8 * 1024 * 1024
            ],
            what="the container to hold its memory",
        )
    with OllamaModels(ollama_server.host, timeout=10, register=False) as models:
        model = models.ensure("qwen2.5:0.5b")  # 397 MB as Ollama reports it: over 100 MB
    path = _cli_config(tmp_path, marker, name, ollama_server.host)

    out = io.StringIO()
    assert cli(str(path), as_json=False, out=out) == 1  # the model is over its budget
    text = out.getvalue()
    assert "COMPONENT" in text
    assert "efficiency score:" in text
    lines = {line.split()[0]: line for line in text.splitlines()[2:] if line.strip()}
    assert " ok " in lines["service"]
    assert " ok " in lines["containers"]
    assert name in lines["containers"]
    assert " over " in lines["llm"]

    out = io.StringIO()
    assert cli(str(path), as_json=True, out=out) == 1
    result = json.loads(out.getvalue())
    components = {item["name"]: item for item in result["components"]}
    assert components["containers"]["count"] == 1
    assert components["containers"]["used"] >= 8 * 1024 * 1024
    assert components["llm"]["used"] == model.size
    used = [components[key]["used"] for key in ("service", "containers", "llm")]
    within = [
        min(u, components[key]["max_bytes"])
        for u, key in zip(used, ("service", "containers", "llm"), strict=True)
    ]
    assert result["score"] == pytest.approx(100 * sum(within) / sum(used))
    # the text run measured a moment earlier: same form, figures may differ by a little
    shown = re.search(r"efficiency score: ([0-9]+)/100", text)
    assert shown
    assert float(shown.group(1)) == pytest.approx(result["score"], abs=5)


# -------------------------------------------------------------------------- score ---

uses = st.lists(
    st.tuples(
        st.integers(0, 10**12),
        st.integers(1, 10**12),
        st.sampled_from(["ok", "over", "absent", "unavailable"]),
    ),
    max_size=12,
)


@given(uses)
def test_score_is_the_share_of_measured_bytes_within_budget(
    rows: list[tuple[int, int, str]],
) -> None:
    components = [
        ComponentUse(
            f"c{i}",
            "process",
            "x",
            None if status == "unavailable" else used,
            None,
            ceiling,
            status,
            1,
        )
        for i, (used, ceiling, status) in enumerate(rows)
    ]
    score = efficiency_score(components)
    counted = [
        (used, ceiling) for used, ceiling, status in rows if status not in ("absent", "unavailable")
    ]
    total = sum(used for used, _ in counted)
    if total == 0:
        assert score is None
        return
    assert score is not None
    assert 0.0 <= score <= 100.0
    assert score == pytest.approx(100 * sum(min(u, c) for u, c in counted) / total)
    if all(used <= ceiling for used, ceiling in counted):
        assert score == pytest.approx(100.0)


# -------------------------------------------------------------------------- rules ---


def _machine_rule(**keys: object) -> tuple[BudgetRule, Any]:
    """The rule of one machine budget (it judges ``snapshot.memory.used``) and a state."""
    (rule,) = Budgets(parse({"budget": [{"name": "m", "machine": True, **keys}]})).rules()
    return rule, rule.new_state()


def _fired(rule: BudgetRule, state: Any, samples: list[tuple[float, int | None]]) -> list[Any]:
    """The rule's breach (or None) at each (monotonic time, machine bytes used) sample."""
    return [
        rule.step(attrs.evolve(make_snapshot(at=now), memory=_used(now, used)), state, now)
        for now, used in samples
    ]


def _used(now: float, used: int | None) -> Any:
    return attrs.evolve(make_snapshot(at=now).memory, used=used)


def test_a_budget_rule_with_the_defaults_fires_after_for_and_resets_as_before() -> None:
    """Regression: on the shared Sustain machine, a budget without clear or cooldown keeps
    the old behaviour: pending once over, reset by a sample under or without data,
    firing after ``for`` held, clearing at once and free to fire again at once."""
    rule, state = _machine_rule(max="10MB", **{"for": "10s"})
    breaches = _fired(
        rule,
        state,
        [
            (0.0, 11 * MB),  # pending
            (5.0, 9 * MB),  # under: reset
            (6.0, 11 * MB),  # pending again, since 6
            (15.0, 12 * MB),  # 9 s: not yet
            (16.0, 12 * MB),  # 10 s: fires, held since 6
            (17.0, None),  # no data: inactive, the pending state resets
            (18.0, 11 * MB),  # pending since 18
            (27.0, 11 * MB),
            (28.0, 11 * MB),  # fires, since 18
        ],
    )
    assert [breach is not None for breach in breaches] == [False] * 4 + [True] + [False] * 3 + [
        True
    ]
    first, second = breaches[4], breaches[8]
    assert (first.since, first.held_s, first.value, first.threshold) == (6.0, 10.0, 12e6, 10e6)
    assert first.since_wall == WALL_OFFSET_S + 6.0
    assert (second.since, second.held_s) == (18.0, 10.0)
    assert (first.rule, first.metric, first.op, first.unit) == (
        "budget m",
        "budget.m",
        ">",
        "bytes",
    )
    rule, state = _machine_rule(max="10MB")  # for 0: at once, every time it is over
    flips = _fired(rule, state, [(0.0, 11 * MB), (1.0, 10 * MB), (2.0, 11 * MB), (3.0, 11 * MB)])
    assert [breach is not None for breach in flips] == [True, False, True, True]
    assert flips[3].since == 2.0


def test_a_budget_rule_keeps_firing_down_to_clear_then_cools_down() -> None:
    rule, state = _machine_rule(max="10MB", clear="8MB", cooldown="30s")
    breaches = _fired(
        rule,
        state,
        [
            (0.0, 11 * MB),  # over: fires
            (1.0, 9 * MB),  # under the ceiling, above clear: still firing (hysteresis)
            (2.0, 8 * MB),  # at clear: clears, the cooldown starts (until 32)
            (3.0, 11 * MB),  # over, but cooling down
            (31.0, 11 * MB),
            (32.0, 11 * MB),  # the cooldown is over
        ],
    )
    assert [breach is not None for breach in breaches] == [True, True, False, False, False, True]
    assert breaches[1].value == 9e6
    assert breaches[1].threshold == 10e6
    assert breaches[1].since == 0.0
    rule, state = _machine_rule(max="10MB")  # without clear: 9 MB clears at once
    assert [b is not None for b in _fired(rule, state, [(0.0, 11 * MB), (1.0, 9 * MB)])] == [
        True,
        False,
    ]


@given(
    st.lists(
        st.tuples(st.floats(0.0, 4.0), st.integers(0, 20) | st.none()), min_size=1, max_size=25
    ),
    st.sampled_from([None, 5, 8, 10]),
    st.sampled_from([0.0, 2.0, 5.0]),
    st.sampled_from([0.0, 3.0]),
)
def test_a_machine_budget_rule_fires_exactly_as_the_same_threshold(
    steps: list[tuple[float, int | None]],
    clear_mb: int | None,
    for_s: float,
    cooldown_s: float,
) -> None:
    """One meaning of for/clear/cooldown: a machine budget judges memory.used as
    Threshold("memory.used", ">", max, for_=, clear=, cooldown=) does; a sample without
    the figure is no data for the budget, which counts as not over (as 0 bytes would)."""
    from resguard.rules import Threshold

    keys: dict[str, object] = {"max": "10MB", "for": for_s, "cooldown": cooldown_s}
    if clear_mb is not None:
        keys["clear"] = f"{clear_mb}MB"
    rule, state = _machine_rule(**keys)
    threshold = Threshold(
        "memory.used",
        ">",
        10 * MB,
        for_=for_s,
        clear=None if clear_mb is None else clear_mb * MB,
        cooldown=cooldown_s,
    )
    threshold_state = threshold.new_state()
    now = 0.0
    for delta, used_mb in steps:
        now += delta
        snap = make_snapshot(at=now, used=0 if used_mb is None else used_mb * MB)
        seen = snap if used_mb is not None else attrs.evolve(snap, memory=_used(now, None))
        mine, theirs = rule.step(seen, state, now), threshold.step(snap, threshold_state, now)
        assert (mine is None) == (theirs is None)
        if mine is not None and theirs is not None:
            assert (mine.since, mine.held_s, mine.value) == (
                theirs.since,
                theirs.held_s,
                theirs.value,
            )


def test_clear_and_cooldown_are_read_and_checked() -> None:
    (budget,) = parse({"budget": [{"name": "a", "process": "x", "max": "2GB", "clear": "1.5GB"}]})
    assert (budget.clear_bytes, budget.clear_at_bytes, budget.cooldown_s) == (
        15 * 10**8,
        15 * 10**8,
        0,
    )
    (budget,) = parse({"budget": [{"name": "a", "process": "x", "max": "2GB", "cooldown": "1m"}]})
    assert (budget.clear_bytes, budget.clear_at_bytes, budget.cooldown_s) == (None, 2 * 10**9, 60)
    bad: list[tuple[dict[str, object], str, str]] = [
        ({"clear": "3GB"}, "budget.a.clear", "above the ceiling"),
        ({"clear": "lots"}, "budget.a.clear", "is not a size"),
        ({"cooldown": "soon"}, "budget.a.cooldown", "is not a duration"),
        ({"clear": "50%"}, "budget.a.clear", "is a share of a limit"),
    ]
    for keys, key, problem in bad:
        table = {"name": "a", "process": "x", "max": "2GB", **keys}
        with pytest.raises(ConfigError, match=problem) as raised:
            parse({"budget": [table]}, "f.toml")
        assert raised.value.key == key
    with pytest.raises(InvalidValue, match="clear_bytes"):
        Budget("a", "machine", None, None, 10, clear_bytes=11)
    with pytest.raises(InvalidValue, match="cooldown_s"):
        Budget("a", "machine", None, None, 10, cooldown_s=-1.0)


def test_rules_fire_over_budget_after_for_and_clear_below(
    holder: tuple[str, subprocess.Popen[str]],
) -> None:
    marker, _ = holder
    budgets = Budgets(
        parse(
            {
                "budget": [
                    {
                        "name": "tight",
                        "cmdline": marker,
                        "max": "20MB",
                        "for": "10s",
                        "level": "critical",
                    },
                    {"name": "loose", "cmdline": marker, "max": "10GB"},
                ]
            }
        )
    )
    policy = Policy(budgets.rules())
    rows = budgets.as_source().sample()["processes"]
    assert isinstance(rows, tuple)
    snap = attrs.evolve(snapshot(), processes=rows)
    state = policy.new_state()
    assert policy.evaluate(snap, state, now=100.0).level == Level.OK  # pending
    verdict = policy.evaluate(snap, state, now=111.0)
    assert verdict.level == Level.CRITICAL
    (breach,) = verdict.breaches
    assert breach.rule == "budget tight"
    assert breach.metric == "budget.tight"
    assert breach.value > 20 * MB
    assert breach.threshold == 20 * MB
    assert breach.held_s == pytest.approx(11.0)
    # without the process table the rule is inactive (and its pending state resets)
    assert policy.evaluate(attrs.evolve(snap, processes=None), state, now=112.0).ok
    # rows without command lines (as the Monitor's own table makes them) are completed
    bare = tuple(attrs.evolve(row, cmdline=()) for row in snap.processes or ())
    state = policy.new_state()
    policy.evaluate(attrs.evolve(snap, processes=bare), state, now=0.0)
    assert policy.evaluate(attrs.evolve(snap, processes=bare), state, now=10.0).level == 2


def test_machine_budget_in_a_running_monitor(holder: tuple[str, subprocess.Popen[str]]) -> None:
    marker, _ = holder
    budgets = Budgets(
        parse(
            {
                "budget": [
                    {"name": "machine", "machine": True, "max": "1MB"},
                    {"name": "service", "cmdline": marker, "max": "20MB"},
                ]
            }
        )
    )
    with Monitor(
        interval="50ms",
        policy=Policy(budgets.rules()),
        reclaim=False,
        sources=[budgets.as_source()],
        slow_interval="100ms",
    ) as monitor:

        def both_fire() -> bool:
            rules = {b.rule for b in monitor.state.verdict.breaches}
            return rules == {"budget machine", "budget service"}

        wait_until(both_fire, timeout_s=30, what="both budget rules to fire in the monitor")
    assert monitor.state.verdict.level == Level.WARNING


def test_the_resguard_budget_command(
    tmp_path: Path, holder: tuple[str, subprocess.Popen[str]]
) -> None:
    marker, _ = holder
    path = write(
        tmp_path,
        f"""
        [[tool.resguard.budget]]
        name = "service"
        cmdline = "{marker}"
        max = "20MB"
    """,
        "pyproject.toml",
    )
    over = subprocess.run(
        [sys.executable, "-m", "resguard", "budget", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert over.returncode == 1, over.stderr
    assert "service" in over.stdout
    assert "over" in over.stdout
    assert "efficiency score:" in over.stdout
    # found without --config, from a subdirectory
    (tmp_path / "sub").mkdir()
    found = subprocess.run(
        [sys.executable, "-m", "resguard", "budget", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path / "sub",
    )
    assert found.returncode == 1, found.stderr
    report = json.loads(found.stdout)
    assert report["config"] == str(path)
    assert report["components"][0]["status"] == "over"
    bad = write(tmp_path, "[[budget]]\nname='a'\ncmdline='x'\nmax='lots'\n", "bad.toml")
    failed = subprocess.run(
        [sys.executable, "-m", "resguard", "budget", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 2
    assert "budget.a.max" in failed.stderr


names_st = st.text(
    st.characters(categories=("L", "N"), max_codepoint=0x2FF), min_size=1, max_size=12
)


@given(
    names_st,
    st.integers(0, 10**9),
    st.one_of(st.none(), st.integers(0, 10**13)),
    st.sampled_from(["B", "kB", "MB", "GiB"]),
)
def test_parsed_sizes_round_trip(name: str, amount: int, floor: int | None, unit: str) -> None:
    from resguard.units import parse_bytes

    table: dict[str, object] = {"name": name, "process": "x", "max": f"{amount}{unit}"}
    ceiling = parse_bytes(f"{amount}{unit}")
    if floor is not None:
        table["min"] = floor
    if floor is not None and floor > ceiling:
        with pytest.raises(ConfigError) as raised:
            parse({"budget": [table]}, "f.toml")
        assert raised.value.key == f"budget.{name}.min"
        return
    (budget,) = parse({"budget": [table]}, "f.toml")
    assert (budget.name, budget.max_bytes, budget.min_bytes) == (name, ceiling, floor)


_LOWERCASE: tuple[Literal["Ll"]] = ("Ll",)


@given(
    st.text(st.characters(categories=_LOWERCASE), min_size=1, max_size=10).filter(
        lambda key: (
            key
            not in {
                "name",
                "process",
                "cmdline",
                "container",
                "image",
                "ollama",
                "machine",
                "target",
                "min",
                "max",
                "level",
                "for",
                "host",
                "clear",
                "cooldown",
            }
        )
    ),
    st.integers() | st.text(max_size=5),
)
def test_any_unknown_key_is_named(key: str, value: object) -> None:
    table = {"name": "a", "process": "x", "max": "1MB", key: value}
    with pytest.raises(ConfigError) as raised:
        parse({"budget": [table]}, "f.toml")
    assert raised.value.key == f"budget.a.{key}"
    assert raised.value.value == value
    assert "f.toml" in str(raised.value)


def test_module_level_rules_load_the_file(tmp_path: Path) -> None:
    from resguard import budget

    path = write(tmp_path, "[[budget]]\nname='m'\nmachine=true\nmax='1MB'\nlevel='critical'\n")
    (rule,) = budget.rules(path)
    verdict = Policy([rule]).evaluate(snapshot())
    assert verdict.level == Level.CRITICAL
    assert verdict.breaches[0].metric == "budget.m"


# -------------------------------------------------------------------- hostile files ---

VALID = b"[[budget]]\nname = 'a'\nprocess = 'x'\nmax = '1MB'\n"


@pytest.mark.parametrize(
    ("content", "text"),
    [
        (VALID.replace(b"'a'", b"'\xff\xfe'"), "not UTF-8"),
        (b"a = " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"a = " + b"{b=" * 5_000 + b"1" + b"}" * 5_000, "nested too deeply"),
        (b"a." * 10_000 + b"b = 1\n", "dotted key"),
        (VALID + b"#" * (1 << 20), "larger than"),
    ],
)
def test_a_hostile_file_is_a_config_error_naming_the_file(
    tmp_path: Path, content: bytes, text: str
) -> None:
    path = tmp_path / "budgets.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=text) as raised:
        load(path)
    assert raised.value.path == str(path)
    assert str(path) in str(raised.value)


def test_a_non_utf8_pyproject_above_is_found_and_reported_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_bytes(b"# \xff\n[tool.resguard]\n")
    assert find_config(tmp_path) == tmp_path / "pyproject.toml"
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(find_config(tmp_path))


@pytest.mark.parametrize("path", [1, True, 2.5, b"\xff".decode("latin-1").encode(), ["a"]])
def test_load_refuses_a_path_that_is_not_a_path(path: object) -> None:
    """An int or a bool would be opened as a file descriptor (True is stdout) and closed."""
    from resguard import InvalidType

    with pytest.raises(InvalidType, match=re.escape(repr(path))):
        load(path)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (lambda: parse(["budget"]), "expected the parsed TOML"),  # type: ignore[arg-type]
        (lambda: parse({}, path=5), "path=5"),  # type: ignore[arg-type]
        (lambda: Budgets("abc"), "'abc'"),  # type: ignore[arg-type]
        (lambda: Budgets([5]), "5 is not a Budget"),  # type: ignore[list-item]
        (lambda: Budgets([], config=3), "config=3"),  # type: ignore[arg-type]
        (lambda: efficiency_score([None]), "None is not a ComponentUse"),  # type: ignore[list-item]
        (lambda: find_config(5), "find_config(5)"),  # type: ignore[arg-type]
    ],
)
def test_public_functions_refuse_the_wrong_types(call: Any, text: str) -> None:
    from resguard import InvalidType

    with pytest.raises(InvalidType, match=re.escape(text)):
        call()


def test_cli_reports_a_non_utf8_file_on_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "budgets.toml"
    path.write_bytes(b"\xff\xfe")
    assert cli(str(path), as_json=False, out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "not UTF-8" in err


def test_unknown_process_memory_is_left_out_and_unknown_machine_use_is_unavailable() -> None:
    budgets = parse(
        {
            "budget": [
                {"name": "p", "process": "x", "max": "1MB"},
                {"name": "m", "machine": True, "max": "1GB"},
            ]
        }
    )
    row = _process_row()
    rows = [attrs.evolve(row, name="x", rss=None), attrs.evolve(row, name="x", rss=5 * MB)]
    report = Budgets(budgets).measure(processes=rows, machine_used=None)
    by_name = {item.name: item for item in report.components}
    assert by_name["p"].used == 5 * MB
    assert by_name["p"].count == 2
    with pytest.MonkeyPatch.context() as patch:
        module = sys.modules["resguard.snapshot"]
        real = module.snapshot

        def blind(**kwargs: Any) -> Any:
            snap = real(**kwargs)
            return attrs.evolve(snap, memory=attrs.evolve(snap.memory, used=None))

        patch.setattr(module, "snapshot", blind)
        machine = Budgets(budgets).measure(processes=rows).components[1]
    assert machine.used is None
    assert machine.status == "unavailable"
    assert "unknown" in machine.detail


def _process_row() -> Any:
    from resguard.processes import ProcessTable

    return ProcessTable().sample()[0]


def test_a_path_with_a_nul_or_a_name_too_long_is_a_resguard_error_not_os_error() -> None:
    from resguard import InvalidValue

    with pytest.raises(ConfigError, match="NUL"):
        load("budgets\x00.toml")
    with pytest.raises(InvalidValue, match="NUL"):
        find_config("a\x00b")
    assert find_config("x" * 400) in (None, find_config())  # too long: nothing there


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"name": ""}, "name=''"),
        ({"kind": "disk"}, "kind='disk'"),
        ({"pattern": "("}, "pattern='('"),
        ({"pattern": None}, "pattern=None"),
        ({"max_bytes": "200MB"}, "max_bytes='200MB'"),
        ({"max_bytes": True}, "max_bytes=True"),
        ({"max_bytes": -1}, "max_bytes=-1"),
        ({"min_bytes": 5, "max_bytes": 1}, "min_bytes=5"),
        ({"level": "warning"}, "level='warning'"),
        ({"for_s": float("nan")}, "for_s=nan"),
        ({"host": 5}, "host=5"),
    ],
)
def test_a_budget_built_by_hand_is_checked_like_a_parsed_one(
    kwargs: dict[str, Any], text: str
) -> None:
    from resguard import InvalidType, InvalidValue

    fields = {
        "name": "a",
        "kind": "process",
        "pattern": "x",
        "min_bytes": None,
        "max_bytes": 1,
        **kwargs,
    }
    with pytest.raises((InvalidType, InvalidValue), match=re.escape(text)):
        Budget(**fields)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"processes": 5}, "processes=5"),
        ({"processes": [1, 2]}, "ProcessInfo rows"),
        ({"containers": "abc"}, "containers='abc'"),
        ({"ollama": {"a": 1}}, "ollama={'a': 1}"),
        ({"machine_used": "1GB"}, "machine_used='1GB'"),
        ({"machine_used": 10**400}, "expected 0 to"),
        ({"machine_used": -1}, "machine_used=-1"),
    ],
)
def test_measure_refuses_data_of_the_wrong_shape(kwargs: dict[str, Any], text: str) -> None:
    from resguard import InvalidType, InvalidValue

    budgets = Budgets(
        parse(
            {
                "budget": [
                    {"name": "p", "process": "x", "max": "1MB"},
                    {"name": "m", "machine": True, "max": "1GB"},
                ]
            }
        )
    )
    data: dict[str, Any] = {"processes": [], "containers": [], "ollama": [], "machine_used": 0}
    with pytest.raises((InvalidType, InvalidValue), match=re.escape(text)):
        budgets.measure(**{**data, **kwargs})


def test_the_score_of_sums_beyond_float_range_is_exact() -> None:
    big = 10**400  # 100.0 * big overflowed a float
    items = [
        ComponentUse("a", "process", "x", big * 3, None, big, "over", 1),
        ComponentUse("b", "process", "y", big, None, big, "ok", 1),
    ]
    assert efficiency_score(items) == 50.0


def test_the_command_moved_to_resguard_cli_and_the_old_names_still_work(tmp_path: Path) -> None:
    import resguard.budget
    import resguard.cli.budget

    for name in ("cli", "format_report"):
        with pytest.warns(DeprecationWarning, match=f"resguard.cli.budget.{name}"):
            assert getattr(resguard.budget, name) is getattr(resguard.cli.budget, name)
    with pytest.raises(AttributeError):
        resguard.budget.no_such_name  # noqa: B018


@pytest.mark.parametrize("field", ["for_s", "cooldown_s"])
@pytest.mark.parametrize("seconds", [10**400, float("nan"), float("inf"), -1])
def test_a_budget_duration_out_of_range_is_an_invalid_value_not_an_overflow(
    field: str, seconds: float
) -> None:
    duration: dict[str, Any] = {field: seconds}
    with pytest.raises(InvalidValue, match=field):
        Budget(name="a", kind="process", pattern="x", min_bytes=None, max_bytes=1, **duration)


def test_budgets_source_is_the_deprecated_name_of_as_source() -> None:
    budgets = Budgets(parse({"budget": [{"name": "a", "process": "python", "max": "1GB"}]}))
    with pytest.warns(DeprecationWarning, match="as_source"):
        source = budgets.source("mine")
    assert type(source) is type(budgets.as_source("mine"))
    assert source.name == "mine"
