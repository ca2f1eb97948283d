"""Shared fixtures. Integration fixtures live in tests/plugins/, one module per part."""

from __future__ import annotations

pytest_plugins = [
    "plugins.integration",
    "plugins.cgroup",
    "plugins.docker",
    "plugins.ollama",
]
