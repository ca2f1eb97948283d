"""The guardian end to end against the Ollama stand-in (the official ``ollama`` client
makes the requests): its loop, under a memory rule that holds, unloads only the model
that is idle, journals it with the bytes freed, and never unloads a model in use."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resguard.guardian import Guardian, Journal, load_config
from resguard.guardian._effects import MachineEffects
from resguard.guardian._notify import Notifier
from resguard.guardian._unload import ModelUnloader
from resguard.testing.ollama import CATALOGUE, OffsetClock, OllamaStandIn

from support import wait_until

ollama = pytest.importorskip("ollama")

IDLE, BUSY = "qwen2.5:0.5b", "llama3.2:1b"
SIZES = {model.name: model.loaded_bytes for model in CATALOGUE}
KEEP_ALIVE_S = 3600.0

CONFIG = """
[guardian]
preset = "none"
dry_run = false

[[guardian.rule]]
name = "memory squeeze"   # holds on any machine: the squeeze is a rule that fires
metric = "memory.used"
op = ">="
value = 1
level = "critical"

[[guardian.action]]
when = "critical"
do = "ollama-unload-idle"
idle_for = "5m"
"""


@pytest.fixture
def server(ollama_server_factory: Callable[..., OllamaStandIn]) -> OllamaStandIn:
    return ollama_server_factory(default_keep_alive_s=KEEP_ALIVE_S)


def _use(server: OllamaStandIn, name: str) -> None:
    with ollama.Client(host=server.host) as client:
        client.generate(model=name, prompt="hello")
    wait_until(lambda: _in_flight(server, name) == 0, what=f"{name}'s request to end")


def _in_flight(server: OllamaStandIn, name: str) -> int:
    runner = server._runners.get(name)
    return runner.in_flight if runner is not None else 0


@pytest.fixture
def guardian(
    tmp_path: Path, server: OllamaStandIn, ollama_clock: OffsetClock
) -> Iterator[Guardian]:
    path = tmp_path / "resguard.toml"
    path.write_text(CONFIG)
    unloader = ModelUnloader(server.host, keep_alive=KEEP_ALIVE_S, wall_clock=ollama_clock)
    effects = MachineEffects(notifier=Notifier(which=lambda name: None), unloader=unloader)
    guardian = Guardian(load_config(path), effects, journal=Journal(tmp_path / "j.jsonl"))
    yield guardian
    guardian.close()


def _journal(guardian: Guardian) -> list[dict[str, Any]]:
    assert guardian.journal.path is not None
    return [json.loads(line) for line in Path(guardian.journal.path).read_text().splitlines()]


def test_under_a_memory_squeeze_only_the_idle_model_is_unloaded_and_journalled(
    server: OllamaStandIn, ollama_clock: OffsetClock, guardian: Guardian
) -> None:
    _use(server, IDLE)
    ollama_clock.advance(600)  # IDLE idle for 10 minutes
    _use(server, BUSY)  # BUSY used just now
    verdict = guardian.tick()
    assert [breach.rule for breach in verdict.breaches] == ["memory squeeze"]
    assert server.loaded_names() == [BUSY]
    [line] = _journal(guardian)
    assert (line["rule"], line["action"], line["target"]) == (
        "memory squeeze",
        "ollama-unload-idle",
        {"model": IDLE},
    )
    assert (line["result"], line["dry_run"], line["freed_bytes"]) == ("done", False, SIZES[IDLE])


def test_a_model_with_a_request_in_flight_is_never_unloaded_by_the_guardian(
    server: OllamaStandIn, ollama_clock: OffsetClock, guardian: Guardian
) -> None:
    _use(server, BUSY)
    ollama_clock.advance(600)  # it looks idle by its expiry ...
    client = ollama.Client(host=server.host)
    stream = client.generate(model=BUSY, prompt="word " * 400_000, stream=True)
    try:
        next(iter(stream))  # ... but it is answering a request now
        wait_until(lambda: _in_flight(server, BUSY) == 1, what="the request in flight")
        guardian.tick()
        assert server.loaded_names() == [BUSY]
        assert _in_flight(server, BUSY) == 1  # never cut short
    finally:
        stream.close()
        client.close()
    [line] = _journal(guardian)
    assert line["target"] == {"model": BUSY}
    assert line["result"].startswith("skipped: a request is in flight")
    assert line["freed_bytes"] is None
