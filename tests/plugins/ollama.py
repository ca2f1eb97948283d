"""Fixtures for the ollama tests: the stand-in Ollama server of resguard.testing.ollama."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resguard.testing.ollama import OffsetClock, OllamaStandIn


@pytest.fixture
def ollama_clock() -> OffsetClock:
    """Wall clock (epoch seconds) shared by the stand-in and resguard; ``advance()`` jumps."""
    return OffsetClock()


@pytest.fixture
def ollama_server_factory(ollama_clock: OffsetClock) -> Iterator[Callable[..., OllamaStandIn]]:
    """Start stand-in servers with chosen options; all are stopped (runners killed) after."""
    servers: list[OllamaStandIn] = []

    def start(**options: Any) -> OllamaStandIn:
        options.setdefault("clock", ollama_clock)
        server = OllamaStandIn(**options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def ollama_server(ollama_server_factory: Callable[..., OllamaStandIn]) -> OllamaStandIn:
    """A running stand-in with the default catalogue; ``.host`` is its URL."""
    return ollama_server_factory()
