"""Hostile inputs: every public function and constructor that takes a size, duration,
percentage, level, threshold or policy either accepts a value or refuses it with a
:class:`resguard.ResguardError` (value errors also ``ValueError``, type errors also
``TypeError``), never anything else: no ``OverflowError`` from ``10**400``, no raw
``TypeError`` from ``None``, no ``re.error`` from a pattern.

Each case replaces one argument of a valid call with what hypothesis draws: arbitrary
text, numbers, None, bools, NaN, ±inf, huge integers, containers and callables. Nothing
here starts a thread or sets a limit for real: monitors are only built, and
``limit_self`` runs against a recording ``setrlimit``. tests/test_bad_input.py checks the
messages for a fixed list of garbage; this file checks the error *types* for everything.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import resguard as rg
from resguard import ResguardError, reclaim
from resguard import budget as budgets

HUGE = [10**400, -(10**400), 2**64, 2**63 - 1, -(2**63), 10**17 + 1]
AWKWARD_TEXT = [
    "1e999",
    "-1e999",
    "1e400MB",
    "nan",
    "NaN%",
    "inf",
    "-inf",
    "infs",
    "10**400",
    "1" * 400,
    "0x10",
    "1_000",
    "١٢٣",
    "50%",
    "0%",
    "150%",
    "-5%",
    "1ns",
    "0s",
    "-1s",
    "5m",
    "1e-400s",
    "200MB",
    "1.5GiB",
    "8 EiB",
    "20 GB/s",
    "",
    " ",
    "\x00",
    "(",
    "[",
    "*",
    "a{1000000}",
    "CRITICAL",
    "critical",
    "warning",
    "OK",
    ">",
    ">=",
    "memory.percent",
    "process.rss",
    "admit",
    "refuse",
    "cancel",
    "cpu",
    "memory",
    "true",
    "false",
    "/",
    "/nonexistent",
    "/proc",
    ".",
]
HOSTILE: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e-320, 1e308]),
    st.text(max_size=20),
    st.sampled_from(AWKWARD_TEXT),
    st.sampled_from(
        [
            b"1MB",
            bytearray(b"5"),
            1j,
            object(),
            type,
            int,
            len,
            print,
            lambda: 5,
            lambda: None,
            lambda: "1GB",
            (lambda *a: 1),
        ]
    ),
    st.lists(st.one_of(st.integers(), st.text(max_size=3), st.none()), max_size=3),
    st.tuples(st.integers(), st.integers()),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sets(st.integers(), max_size=2),
)


def _setrlimit_recorder(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    import resource

    calls: list[object] = []
    monkeypatch.setattr(resource, "setrlimit", lambda *args: calls.append(args))
    return calls


def _positional(fn: Callable[..., Any], **base: Any) -> Callable[[str, Any], Any]:
    """A call of *fn* with *base* keyword arguments and one of them replaced."""

    def call(parameter: str, value: Any) -> Any:
        return fn(**{**base, parameter: value})

    return call


def _budget_table(parameter: str, value: Any) -> Any:
    table: dict[str, Any] = {"name": "a", "process": "x", "max": "1MB"}
    if parameter in ("machine", "container", "ollama"):
        del table["process"]
        if parameter == "ollama":
            table["host"] = "http://127.0.0.1:1"
    table[parameter] = value
    return budgets.parse({"budget": [table]}, "hostile.toml")


def _closed(make: Callable[..., Any], **base: Any) -> Callable[[str, Any], Any]:
    """Like _positional, for objects that hold a connection: closed when built."""

    def call(parameter: str, value: Any) -> Any:
        made = make(**{**base, parameter: value})
        made.close()

    return call


async def _app(scope: Any, receive: Any, send: Any) -> None:  # an ASGI app never called
    raise AssertionError("not called")


_SNAPSHOTS: list[Any] = []


def _snap() -> Any:
    if not _SNAPSHOTS:
        _SNAPSHOTS.append(rg.snapshot())
    return _SNAPSHOTS[0]


def _ollama() -> Any:
    return pytest.importorskip("resguard.ollama")


def _docker() -> Any:
    return pytest.importorskip("resguard.docker")


def _asgi() -> Any:
    import resguard.asgi

    return resguard.asgi


def _machine_budget() -> list[Any]:
    return budgets.parse({"budget": [{"name": "m", "machine": True, "max": "1GB"}]})


def _rules(value: Any) -> Any:
    return [rg.Threshold("memory.percent", ">", 80), value]


# name -> (call(parameter, value), parameters to replace)
_GC_STEP = reclaim.GarbageCollect()

TARGETS: dict[str, tuple[Callable[[str, Any], Any], tuple[str, ...]]] = {
    "parse_bytes": (lambda _, v: rg.parse_bytes(v), ("value",)),
    "parse_duration": (lambda _, v: rg.parse_duration(v), ("value",)),
    "parse_percent": (lambda _, v: rg.parse_percent(v), ("value",)),
    "resolve_bytes": (
        lambda p, v: rg.resolve_bytes(v, 2**30) if p == "value" else rg.resolve_bytes("50%", v),
        ("value", "limit_bytes"),
    ),
    "format_bytes": (
        _positional(rg.format_bytes, n_bytes=1000),
        ("n_bytes", "binary", "precision"),
    ),
    "format_duration": (lambda _, v: rg.format_duration(v), ("seconds",)),
    "Threshold": (
        _positional(rg.Threshold, metric="memory.percent", op=">", value=80),
        ("metric", "op", "value", "level", "for_", "clear", "cooldown", "name"),
    ),
    "ProcessThreshold": (
        _positional(rg.ProcessThreshold, rss_above="1GB"),
        ("cpu_percent_above", "rss_above", "for_", "clear", "level", "name"),
    ),
    "ProcessCount": (
        _positional(rg.ProcessCount, rss_above="1GB"),
        (
            "cpu_percent_above",
            "rss_above",
            "at_least",
            "for_",
            "clear",
            "cooldown",
            "level",
            "name",
        ),
    ),
    "ContainerThreshold": (
        _positional(rg.ContainerThreshold, percent_above=90),
        ("percent_above", "used_above", "for_", "clear", "level", "name"),
    ),
    "LeakDetector": (
        _positional(rg.LeakDetector),
        ("metric", "growth", "window", "level", "clear", "points", "min_fill", "name"),
    ),
    "TimeToLimit": (
        _positional(rg.TimeToLimit),
        ("within", "level", "metric", "limit", "window", "clear", "points", "min_fill", "name"),
    ),
    "Policy": (lambda p, v: rg.Policy(v if p == "rules" else _rules(v)), ("rules", "a rule")),
    "Policy.clock": (lambda _, v: rg.Policy([], clock=v), ("clock",)),
    "presets.laptop": (lambda _, v: rg.presets.laptop(clock=v), ("clock",)),
    "presets.service": (lambda _, v: rg.presets.service(clock=v), ("clock",)),
    "Sustain": (_positional(rg.rules.Sustain), ("for_s", "cooldown_s")),
    "Amount": (
        lambda p, v: rg.Amount(v) if p == "value" else rg.Amount(1, positive=v),
        ("value", "positive"),
    ),
    "Monitor": (
        _positional(rg.Monitor, reclaim=False),
        (
            "interval",
            "policy",
            "sources",
            "slow_interval",
            "min_interval",
            "relaxed_interval",
            "relax_below",
            "adaptive",
            "events",
            "psi_trigger",
            "cgroup",
            "sampler",
            "reclaim",
            "reclaim_to",
            "ladder",
            "stale_after",
            "clock",
        ),
    ),
    "Guard": (
        _positional(rg.Guard),
        (
            "memory",
            "rss",
            "level",
            "max_concurrent",
            "reserve",
            "wait",
            "monitor",
            "max_age",
            "retry_after",
            "on_breach",
            "on_unknown",
            "name",
            "clock",
        ),
    ),
    "Guard.admit": (lambda p, v: rg.Guard().admit(**{p: v}), ("reserve", "wait", "on_breach")),
    "limit_self": (_positional(rg.limit_self, memory="1TiB"), ("memory", "kind")),
    "LRUCache.shrink": (lambda _, v: rg.LRUCache(max_items=10).shrink(v), ("amount",)),
    "Ladder.run": (lambda _, v: rg.Ladder(measure=lambda: None).run(v), ("needed_bytes",)),
    # one step for every example: its own throttle then spares the run a full collection of
    # the whole test process per example (17 s late in CI's suite)
    "GarbageCollect.reclaim": (lambda _, v: _GC_STEP.reclaim(v), ("target_bytes",)),
    "ProcessStopper.reclaim": (
        lambda _, v: reclaim.ProcessStopper(["^no-such-program-x$"]).reclaim(v),
        ("target_bytes",),
    ),
    "Policy.evaluate": (
        lambda p, v: rg.presets.laptop().evaluate(**{"snapshot": _snap(), p: v}),
        ("snapshot", "state", "now"),
    ),
    "LRUCache": (
        _positional(rg.LRUCache, max_items=10),
        ("max_bytes", "max_items", "ttl", "sizeof", "on_evict", "name", "clock"),
    ),
    "memoize": (
        lambda p, v: rg.memoize(v) if p == "func" else rg.memoize(**{p: v}),
        ("func", "max_bytes", "max_items", "ttl", "key", "typed", "merge", "sizeof", "name"),
    ),
    "LazyModel": (
        _positional(rg.LazyModel, load=object, size=1, register=False, sweep=False),
        ("load", "unload", "size", "idle_ttl", "name", "guard", "pool", "wait"),
    ),
    "ModelPool": (_positional(rg.ModelPool), ("budget", "guard", "models", "name")),
    "ProcessStopper": (
        _positional(reclaim.ProcessStopper, patterns=["^no-such-program-x$"]),
        ("patterns", "enabled", "dry_run", "grace", "protect"),
    ),
    "GarbageCollect": (_positional(reclaim.GarbageCollect), ("max_share",)),
    "Ladder": (
        _positional(rg.Ladder, measure=lambda: 0),
        ("measure", "min_reclaim", "gc_step", "trim_step", "extra"),
    ),
    "Sampler": (
        _positional(rg.Sampler),
        ("roots", "cgroup", "limits_max_age_s", "slow_files_max_age_s"),
    ),
    "top_processes": (_positional(rg.top_processes, n=3), ("n", "by", "group")),
    "profile": (
        _positional(rg.profile),
        ("interval", "children", "tracemalloc", "uss_interval", "label"),
    ),
    "Profile": (_positional(rg.Profile), ("sampler",)),
    "budget.parse": (
        _budget_table,
        (
            "name",
            "process",
            "cmdline",
            "container",
            "ollama",
            "machine",
            "target",
            "min",
            "max",
            "level",
            "for",
            "clear",
            "cooldown",
            "host",
        ),
    ),
    "OllamaModels": (
        _closed(_ollama().OllamaModels, host="http://127.0.0.1:1", register=False),
        (
            "host",
            "timeout",
            "load_timeout",
            "max_answer",
            "keep_alive",
            "default_keep_alive",
            "guard",
            "size_factor",
            "unload_timeout",
            "reclaim_min_idle",
        ),
    ),
    "Containers": (
        _closed(_docker().Containers),
        ("method", "timeout", "timeout_s", "cgroup_root", "max_workers"),
    ),
    "GuardMiddleware": (
        _positional(_asgi().GuardMiddleware, app=_app, start_monitor=False),
        ("guard", "monitor", "exclude", "readiness_path", "reserve", "wait", "unready_level"),
    ),
    "budget.Budget": (
        _positional(
            budgets.Budget, name="a", kind="process", pattern="x", min_bytes=None, max_bytes=1
        ),
        (
            "name",
            "kind",
            "pattern",
            "min_bytes",
            "max_bytes",
            "level",
            "for_s",
            "host",
            "clear_bytes",
            "cooldown_s",
        ),
    ),
    "budget.Budgets.measure": (
        _positional(
            budgets.Budgets(_budget_table("max", "1GB") + (_machine_budget())).measure,
            processes=[],
            containers=[],
            ollama=[],
            machine_used=0,
        ),
        ("processes", "containers", "ollama", "machine_used"),
    ),
    "budget.load": (lambda _, v: budgets.load(v), ("path",)),
    "budget.Budgets": (lambda _, v: budgets.Budgets(v), ("budgets",)),
    "budget.find_config": (lambda _, v: budgets.find_config(v), ("start",)),
}
# RESGUARD_HOSTILE_EXAMPLES=2000 for a longer hunt than the suite's default.
EXAMPLES = int(os.environ.get("RESGUARD_HOSTILE_EXAMPLES", "40"))
CASES = [(name, parameter) for name, (_, parameters) in TARGETS.items() for parameter in parameters]


def _call(name: str, parameter: str, value: Any) -> None:
    build = TARGETS[name][0]
    try:
        build(parameter, value)
    except ResguardError as error:
        if not str(error):
            pytest.fail(f"{name}({parameter}={value!r}) raised an empty message")
    except Exception as error:
        pytest.fail(
            f"{name}({parameter}={value!r}) raised {type(error).__name__}: {error}"
            f" (expected a ResguardError)"
        )


@pytest.mark.parametrize(("name", "parameter"), CASES, ids=[f"{n}-{p}" for n, p in CASES])
@pytest.mark.filterwarnings(
    "ignore:Containers\\(timeout_s=:DeprecationWarning"
)  # fuzzed on purpose
@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=HOSTILE)
@example(value=10**400)
@example(value=None)
@example(value=math.nan)
@example(value=True)
@example(value="1e999")
@example(value=type)
@example(value="\x00")
@example(value="9" * 400)
@example(value="\u0660")  # an Arabic-Indic zero: a host name httpx refuses with InvalidURL
def test_hostile_values_are_accepted_or_refused_with_a_resguard_error(
    name: str, parameter: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if name == "limit_self":
        _setrlimit_recorder(monkeypatch)  # never limit this test process for real
    before = set(threading.enumerate())
    _call(name, parameter, value)
    started = [thread.name for thread in set(threading.enumerate()) - before]
    assert started == [], f"{name}({parameter}={value!r}) started threads {started}"


def test_the_cases_cover_every_listed_kind_of_input() -> None:
    """A new public constructor must be added here: the list is checked against names."""
    assert {name.split(".")[0] for name in TARGETS} >= {
        "parse_bytes",
        "parse_duration",
        "parse_percent",
        "resolve_bytes",
        "Threshold",
        "ProcessThreshold",
        "ProcessCount",
        "ContainerThreshold",
        "LeakDetector",
        "TimeToLimit",
        "Policy",
        "presets",
        "Sustain",
        "Amount",
        "Monitor",
        "Guard",
        "limit_self",
        "LRUCache",
        "memoize",
        "LazyModel",
        "ModelPool",
        "ProcessStopper",
        "GarbageCollect",
        "Ladder",
        "Sampler",
        "top_processes",
        "profile",
        "budget",
    }
