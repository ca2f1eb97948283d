"""The decisions of resguard.ollama without a server: the pure functions of _core, and
each call's steps (the I/O it asks for, in order) driven by a scripted face."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard import OllamaError, ResourceExhausted
from resguard.ollama import _core
from resguard.ollama._book import Book
from resguard.ollama._steps import HEADROOM, NOW, Procedures, Request, Sleep, Steps
from resguard.snapshot import OllamaModelInfo
from resguard.testing import ManualClock

WALL_S = 1_700_000_000.0


def info(name: str, size: int = 100, idle_since: float | None = None) -> OllamaModelInfo:
    return OllamaModelInfo(
        name=name, size=size, size_vram=0, expires_at=None, idle_since=idle_since
    )


# ---------------------------------------------------------------- pure functions
def test_idle_since_takes_the_later_evidence_and_says_none_when_there_is_none() -> None:
    since = _core.idle_since
    assert (
        since(wall_now=WALL_S, busy=True, expires_at=None, keep_alive_s=None, idle_for_s=None)
        == WALL_S
    )
    assert (
        since(wall_now=WALL_S, busy=False, expires_at=None, keep_alive_s=None, idle_for_s=None)
        is None
    )
    from_keep_alive = since(
        wall_now=WALL_S, busy=False, expires_at=WALL_S + 240, keep_alive_s=300, idle_for_s=None
    )
    assert from_keep_alive == WALL_S - 60
    own_record_later = since(
        wall_now=WALL_S, busy=False, expires_at=WALL_S + 240, keep_alive_s=300, idle_for_s=10
    )
    assert own_record_later == WALL_S - 10
    forever = since(
        wall_now=WALL_S, busy=False, expires_at=WALL_S + 10**10, keep_alive_s=300, idle_for_s=None
    )
    assert forever is None  # a model kept "forever" says nothing about its last use
    assert (
        since(
            wall_now=WALL_S, busy=False, expires_at=WALL_S, keep_alive_s=math.inf, idle_for_s=None
        )
        is None
    )


def test_victims_are_idle_unused_models_least_recently_used_first() -> None:
    infos = [
        info("new", idle_since=WALL_S - 10),
        info("unknown"),
        info("old", idle_since=WALL_S - 500),
        info("busy", idle_since=WALL_S - 900),
    ]

    def busy(name: str) -> bool:
        return name == "busy"

    order = _core.victims(infos, wall_now=WALL_S, busy=busy)
    assert [i.name for i in order] == ["unknown", "old", "new"]
    assert [i.name for i in _core.victims(infos, wall_now=WALL_S, busy=busy, exclude="old")] == [
        "unknown",
        "new",
    ]
    idle_long = _core.victims(infos, wall_now=WALL_S, busy=busy, min_idle_s=60)
    assert [i.name for i in idle_long] == ["old"]  # an unknown idle time is not "idle for 60 s"


def test_plan_unloads_takes_the_shortest_prefix_that_frees_enough() -> None:
    candidates = [info("a", 100), info("b", 300), info("c", 50)]
    assert [i.name for i in _core.plan_unloads(candidates, 0)] == []
    assert [i.name for i in _core.plan_unloads(candidates, 100)] == ["a"]
    assert [i.name for i in _core.plan_unloads(candidates, 101)] == ["a", "b"]
    assert [i.name for i in _core.plan_unloads(candidates, 10**9)] == ["a", "b", "c"]


def test_shortfall_and_estimate() -> None:
    assert _core.shortfall_bytes(100, None) == 0  # unknown headroom: admitted
    assert _core.shortfall_bytes(100, 100) == 0
    assert _core.shortfall_bytes(100, 30) == 70
    assert _core.estimate_bytes("m:1b", {"m:1b": 7}, {"m:1b": 1}, 1.25) == 7
    assert _core.estimate_bytes("m:1b", {}, {"m:1b": 3}, 1.25) == 4  # rounded up
    assert _core.estimate_bytes("m:1b", {}, {}, 1.25) is None
    refusal = _core.refused("m:1b", 100, 30, 20)
    assert isinstance(refusal, ResourceExhausted)
    assert refusal.numbers == {"size_bytes": 100, "headroom_bytes": 30, "freed_bytes": 20}


# ---------------------------------------------------------------- the steps, scripted
class Script:
    """A face that answers each effect from *answer* and records what was asked."""

    def __init__(self, answer: Callable[[Any], Any]) -> None:
        self.answer = answer
        self.asked: list[str] = []
        self.clock_s = 0.0

    def run(self, steps: Steps[Any]) -> Any:
        value: Any = None
        error: Exception | None = None
        while True:
            try:
                effect = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            if effect is NOW:
                self.clock_s += 0.001
                value = self.clock_s
                continue
            self.asked.append(describe(effect))
            try:
                value = self.answer(effect)
            except Exception as failure:
                error = failure


def describe(effect: Any) -> str:
    if isinstance(effect, Request):
        return f"{effect.method} {effect.kwargs.get('model', '')}".strip()
    if isinstance(effect, Sleep):
        return "sleep"
    assert effect is HEADROOM
    return "headroom"


def procedures() -> Procedures:
    clock = ManualClock()
    book = Book(
        "http://standin",
        keep_alive_s=None,
        default_keep_alive_s=None,
        clock=clock,
        wall_clock=lambda: WALL_S,
    )
    return Procedures(
        book, size_factor=1.25, unload_timeout_s=1.0, reclaim_min_idle_s=0.0, reserves=False
    )


def test_ensure_of_a_loaded_model_is_one_ps_request() -> None:
    steps = procedures()
    script = Script(lambda effect: (info("m:1b"),))
    assert script.run(steps.ensure("M:1B", None)).name == "m:1b"
    assert script.asked == ["ps"]


def test_ensure_unloads_the_least_recently_used_idle_model_to_make_room() -> None:
    steps = procedures()
    loaded = {
        "old:1b": info("old:1b", 500, WALL_S - 900),
        "new:1b": info("new:1b", 500, WALL_S - 5),
    }

    def answer(effect: Any) -> Any:
        if effect is HEADROOM:
            return 200
        if effect.method == "ps":
            return tuple(loaded.values())
        if effect.method == "list":
            return {"big:1b": 400}
        if effect.kwargs.get("keep_alive") == 0:
            loaded.pop(effect.kwargs["model"])
            return None
        loaded["big:1b"] = info("big:1b", 500)
        return None

    assert script_run(steps.ensure("big:1b", None), answer) == [
        "ps",
        "list",
        "headroom",
        "ps",
        "ps",
        "generate old:1b",
        "ps",
        "generate big:1b",
        "ps",
    ]
    assert set(loaded) == {"new:1b", "big:1b"}


def script_run(steps: Steps[Any], answer: Callable[[Any], Any]) -> list[str]:
    script = Script(answer)
    script.run(steps)
    return script.asked


def test_ensure_refuses_without_a_load_when_unloading_is_not_enough() -> None:
    steps = procedures()

    def answer(effect: Any) -> Any:
        if effect is HEADROOM:
            return 10
        if effect.method == "ps":
            return ()
        return {"big:1b": 400}

    script = Script(answer)
    with pytest.raises(ResourceExhausted) as caught:
        script.run(steps.ensure("big:1b", None))
    assert caught.value.numbers["size_bytes"] == 500
    assert not any(asked.startswith("generate") for asked in script.asked)


def test_unload_polls_until_gone_and_gives_up_after_its_wait() -> None:
    steps = procedures()
    script = Script(
        lambda effect: (info("m:1b"),) if getattr(effect, "method", "") == "ps" else None
    )
    with pytest.raises(OllamaError, match=r"still lists 'm:1b' 1 s after"):
        script.run(steps.unload("m:1b", 1.0))
    assert script.asked[:3] == ["ps", "generate m:1b", "ps"]
    assert "sleep" in script.asked  # it waited between polls (the face does the waiting)


def test_a_failed_request_is_thrown_into_the_steps_and_the_ladder_logs_it() -> None:
    steps = procedures()

    def answer(effect: Any) -> Any:
        raise OllamaError("down")

    assert Script(answer).run(steps.reclaimable_bytes("test")) == 0
    assert Script(answer).run(steps.sample("test")) == {"ollama": None}


@given(st.integers(1, 10**13), st.integers(0, 10**13))
def test_ollamas_own_refusal_is_read_with_its_numbers(need: int, available: int) -> None:
    said = (
        f"model requires more system memory ({need / 2**30:.1f} GiB) "
        f"than is available ({available / 2**30:.1f} GiB)"
    )
    refused = _core.refused_by_server("m:1b", "http://h:11434", f"HTTP 500: {said}")
    assert refused is not None
    assert refused.reason == "memory"
    assert abs(refused.numbers["size_bytes"] - need) <= 0.05 * 2**30 + 1
    assert abs(refused.numbers["headroom_bytes"] - available) <= 0.05 * 2**30 + 1


@given(st.text())
def test_any_other_error_is_not_a_refusal(message: str) -> None:
    if "requires more system memory" not in message:
        assert _core.refused_by_server("m:1b", "http://h:11434", message) is None


def test_the_ladder_counts_a_model_of_unknown_idle_time_as_the_oldest() -> None:
    infos = [info("known", idle_since=WALL_S - 5), info("unknown"), info("old", idle_since=0.0)]
    ladder = _core.victims(
        infos, wall_now=WALL_S, busy=lambda _: False, min_idle_s=30.0, unknown_is_idle=True
    )
    assert [i.name for i in ladder] == ["unknown", "old"]  # "known" was used 5 s ago
    explicit = _core.victims(infos, wall_now=WALL_S, busy=lambda _: False, min_idle_s=30.0)
    assert [i.name for i in explicit] == ["old"]  # unload_idle(min_idle=) leaves unknowns alone


@given(st.one_of(st.integers(), st.booleans(), st.none(), st.floats(), st.text(max_size=5)))
def test_a_learned_size_is_a_whole_number_of_bytes_from_1_to_1_pib_or_unknown(
    reported: object,
) -> None:
    learned = _core.learned_bytes(reported)
    plausible = (
        isinstance(reported, int)
        and not isinstance(reported, bool)
        and 0 < reported <= _core.MAX_LOADED_BYTES
    )
    assert learned == (reported if plausible else None)
