"""The guardian's ``ollama-unload-idle`` against the Ollama stand-in, driven by the
official ``ollama`` client: only idle models are unloaded, never one with a request in
flight, and an Ollama that is down or hangs is skipped within a deadline."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resguard.guardian._actions import ActionSpec
from resguard.guardian._effects import MachineEffects
from resguard.guardian._notify import Notifier
from resguard.guardian._unload import UNREACHABLE, ModelUnloader
from resguard.rules import Breach, Level
from resguard.testing import make_snapshot
from resguard.testing.misbehaving import MisbehavingServer
from resguard.testing.ollama import CATALOGUE, OffsetClock, OllamaStandIn

from support import free_port, wait_until

ollama = pytest.importorskip("ollama")

IDLE, BUSY = "qwen2.5:0.5b", "llama3.2:1b"
SIZES = {model.name: model.loaded_bytes for model in CATALOGUE}
KEEP_ALIVE_S = 3600.0  # the server's OLLAMA_KEEP_ALIVE in these tests


def _breach() -> Breach:
    return Breach(
        rule="memory",
        metric="memory.percent",
        op=">=",
        value=96.0,
        threshold=95.0,
        level=Level.CRITICAL,
        since=0.0,
        since_wall=0.0,
        held_s=10.0,
        unit="percent",
    )


def _spec(idle_for_s: float = 300.0) -> ActionSpec:
    return ActionSpec(index=0, when="CRITICAL", do="ollama-unload-idle", idle_for_s=idle_for_s)


@pytest.fixture
def server(ollama_server_factory: Callable[..., OllamaStandIn]) -> OllamaStandIn:
    return ollama_server_factory(default_keep_alive_s=KEEP_ALIVE_S)


@pytest.fixture
def effects(server: OllamaStandIn, ollama_clock: OffsetClock) -> Iterator[MachineEffects]:
    unloader = ModelUnloader(server.host, keep_alive=KEEP_ALIVE_S, wall_clock=ollama_clock)
    machine = MachineEffects(notifier=Notifier(which=lambda name: None), unloader=unloader)
    yield machine
    machine.close()


def _act(effects: MachineEffects, *, dry_run: bool = False) -> list[Any]:
    return effects.act(_spec(), _breach(), make_snapshot(), dry_run=dry_run)


def _in_flight(server: OllamaStandIn, name: str) -> int:
    runner = server._runners.get(name)
    return runner.in_flight if runner is not None else 0


def _use(server: OllamaStandIn, name: str, **request: Any) -> None:
    """A finished request on *name*: the stand-in answers before it ends the request
    (as Ollama does), so wait until it has, and the expiry is final, before time moves."""
    with ollama.Client(host=server.host) as client:
        client.generate(model=name, **request)
    wait_until(lambda: _in_flight(server, name) == 0, what=f"{name}'s request to end")


@pytest.fixture
def busy_request(server: OllamaStandIn) -> Iterator[Callable[[str], None]]:
    """Start a streamed generate on a model and stop reading it: the stand-in's answer
    fills the socket buffers and the request stays in flight until the stream is closed."""
    streams: list[Any] = []

    def start(name: str) -> None:
        client = ollama.Client(host=server.host)
        stream = client.generate(model=name, prompt="word " * 400_000, stream=True)
        next(iter(stream))  # the request is in flight from here
        streams.append((client, stream))
        wait_until(lambda: _in_flight(server, name) == 1, what=f"{name} to be in flight")

    yield start
    for client, stream in streams:
        stream.close()
        client.close()


def test_only_the_idle_model_is_unloaded_and_its_size_is_reported_freed(
    server: OllamaStandIn, ollama_clock: OffsetClock, effects: MachineEffects
) -> None:
    _use(server, IDLE, prompt="hello")
    ollama_clock.advance(600)  # IDLE has been idle 10 minutes; BUSY is used now
    _use(server, BUSY, prompt="still here")
    runner = server.runner_pids()[IDLE]
    [outcome] = _act(effects)
    assert (outcome.result, outcome.target.model) == ("done", IDLE)
    assert outcome.freed_bytes == SIZES[IDLE]
    assert server.loaded_names() == [BUSY]
    assert runner not in server.runner_pids().values()


def test_a_model_with_a_request_in_flight_is_never_unloaded(
    server: OllamaStandIn,
    ollama_clock: OffsetClock,
    effects: MachineEffects,
    busy_request: Callable[[str], None],
) -> None:
    _use(server, IDLE, prompt="hello")
    _use(server, BUSY, prompt="hello")
    ollama_clock.advance(600)  # both look idle for 10 minutes by their expiry...
    busy_request(BUSY)  # ...but BUSY is answering a request now
    acted = _act(effects)
    outcomes = {outcome.target.model: outcome for outcome in acted}
    assert outcomes[IDLE].result == "done"
    assert outcomes[BUSY].result.startswith("skipped: a request is in flight")
    assert outcomes[BUSY].freed_bytes is None
    assert server.loaded_names() == [BUSY]
    assert _in_flight(server, BUSY) == 1  # it was never cut short
    unloads = [body for method, path, body in server.requests if body.get("keep_alive") == 0]
    assert [body["model"] for body in unloads] == [IDLE]


def test_a_model_that_is_stopping_is_left_to_ollama(
    server: OllamaStandIn,
    ollama_clock: OffsetClock,
    effects: MachineEffects,
    busy_request: Callable[[str], None],
) -> None:
    _use(server, BUSY, prompt="hello")
    ollama_clock.advance(600)
    busy_request(BUSY)
    with ollama.Client(host=server.host) as client:
        client.generate(
            model=BUSY, prompt="", keep_alive=0
        )  # Ollama waits for the request  # Ollama waits for the request
    [outcome] = _act(effects)
    assert outcome.result.startswith(("skipped: stopping", "skipped: no model idle"))
    assert server.loaded_names() == [BUSY]


def test_a_model_used_within_idle_for_is_kept(
    server: OllamaStandIn, ollama_clock: OffsetClock, effects: MachineEffects
) -> None:
    _use(server, IDLE, prompt="hello")
    ollama_clock.advance(120)  # idle 2 minutes, the action wants 5
    [outcome] = _act(effects)
    assert outcome.result == "skipped: no model idle for 5m00s"
    assert server.loaded_names() == [IDLE]


def test_a_dry_run_sends_nothing_to_ollama_not_even_the_check(
    server: OllamaStandIn, ollama_clock: OffsetClock, effects: MachineEffects
) -> None:
    _use(server, IDLE, prompt="hello")
    ollama_clock.advance(600)
    posts = len(server.requests)
    [outcome] = _act(effects, dry_run=True)
    assert (outcome.result, outcome.target.model, outcome.dry_run) == ("would", IDLE, True)
    assert len(server.requests) == posts  # no no-op, no unload
    assert server.loaded_names() == [IDLE]


def test_ollama_down_is_skipped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    effects = MachineEffects(
        notifier=Notifier(which=lambda name: None), unloader=ModelUnloader(host, timeout_s=2)
    )
    with caplog.at_level(logging.WARNING, logger="resguard"):
        first, second = _act(effects), _act(effects)
    assert [o.reason for o in first + second] == [UNREACHABLE, UNREACHABLE]
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1


def test_a_hanging_ollama_is_skipped_within_the_deadline() -> None:
    with MisbehavingServer("hang") as hanging:
        unloader = ModelUnloader(hanging.host, timeout_s=0.5)
        started = time.monotonic()
        [outcome] = unloader.unload_idle(300.0, dry_run=False)
        took_s = time.monotonic() - started
        unloader.close()
    assert (outcome.status, outcome.reason) == ("skipped", UNREACHABLE)
    assert took_s < 5.0


def test_the_unload_check_keeps_the_loaded_context_length(
    server: OllamaStandIn, ollama_clock: OffsetClock, effects: MachineEffects
) -> None:
    """The no-op asks for the runner's own num_ctx, so Ollama has no reason to reload it."""
    _use(server, IDLE, prompt="hello")
    ollama_clock.advance(600)
    [outcome] = _act(effects)
    assert outcome.result == "done"
    [check] = [
        body
        for method, path, body in server.requests
        if path == "/api/generate" and not body.get("prompt") and "keep_alive" not in body
    ]
    assert check["options"] == {"num_ctx": 4096}
    assert re.fullmatch(IDLE.replace(".", r"\."), check["model"])


def test_the_guardian_under_a_memory_squeeze_unloads_only_the_idle_model_and_journals_it(
    tmp_path: Path,
    server: OllamaStandIn,
    ollama_clock: OffsetClock,
    effects: MachineEffects,
    busy_request: Callable[[str], None],
) -> None:
    from resguard.guardian import Guardian, Journal, load_config

    config_path = tmp_path / "resguard.toml"
    config_path.write_text(
        """
[guardian]
preset = "none"
dry_run = false

[[guardian.rule]]
name = "squeeze"
metric = "memory.percent"
op = ">="
value = 0
level = "critical"

[[guardian.action]]
when = "squeeze"
do = "ollama-unload-idle"
idle_for = "5m"
"""
    )
    _use(server, IDLE, prompt="hello")
    _use(server, BUSY, prompt="hello")
    ollama_clock.advance(600)
    busy_request(BUSY)
    journal = tmp_path / "journal.jsonl"
    guardian = Guardian(load_config(config_path), effects, journal=Journal(journal))
    try:
        guardian.tick()
    finally:
        guardian.close()
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    done = [line for line in lines if line["result"] == "done"]
    assert [(line["action"], line["target"]["model"]) for line in done] == [
        ("ollama-unload-idle", IDLE)
    ]
    assert done[0]["freed_bytes"] == SIZES[IDLE]
    assert (done[0]["rule"], done[0]["dry_run"]) == ("squeeze", False)
    assert server.loaded_names() == [BUSY]
